//! `spec.analysis`: the statistical judge. The canary's samples of each metric are
//! compared with a baseline's (pods of the stable model started beside the canary, or
//! the stable pods themselves) by a Mann-Whitney U test and a Hodges-Lehmann estimate
//! of the shift with its confidence interval, as Kayenta does; `status.analysis` keeps
//! every number that decided.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use super::common::{DNS_LABEL, DURATION, DurationBounds, GoDuration, NO_CREDENTIALS, duration_between};

/// `analysis.step`: one sample per step on each side; at most `MAX_SAMPLES` of them.
pub const ANALYSIS_STEP: DurationBounds = DurationBounds::new("10s", 1, 300);
/// Samples of one metric taken for each side at most (the newest): bounds the answer
/// read from Prometheus and the pairwise differences (`MAX_SAMPLES`² of them).
pub const MAX_SAMPLES: usize = 360;

/// Pod label: what a pod is to the rollout on trial, as queries select it:
/// `canary`, `baseline` (the stable model, started beside the canary), `stable`, or
/// `previous` (an earlier revision's pods: warm, or going away).
pub const LABEL_ROLE: &str = "modelgate.dev/role";

/// A pod's `LABEL_ROLE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Stable,
    Canary,
    Baseline,
    Previous,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
            Role::Baseline => "baseline",
            Role::Previous => "previous",
        }
    }
}

/// The judge: metrics compared between the canary and a baseline at each gate interval
/// while a canary runs (not for a release's first revision, which has nothing to
/// compare with, and not after promotion).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.marginalScore <= self.passScore").message("analysis.marginalScore must not be above analysis.passScore"))]
pub struct Analysis {
    /// Run baseline pods: with each canary step, a ReplicaSet of the stable model of
    /// the canary's size, started with it and receiving the same share of requests,
    /// labelled `modelgate.dev/role: baseline`. They come on top of the stable pods
    /// (never in their place) and go away with the canary. Without it the canary is
    /// compared with the stable pods (`{{revision}}` is then `stable`), which have been
    /// serving, warm, for longer.
    #[serde(default)]
    pub baseline: bool,
    /// Base URL of the Prometheus HTTP API, such as https://prometheus.monitoring:9090,
    /// under the same rules as a prometheus gate's address.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''").message("analysis.address must be an http:// or https:// URL with a host"),
        validation = Rule::new(NO_CREDENTIALS).message("analysis.address must not carry credentials (user:password@); modelgate sends none"),
        validation = Rule::new("!self.contains('?') && !self.contains('#')").message("analysis.address is Prometheus' base URL, such as https://prometheus.monitoring:9090: no '?' query or '#' fragment")
    )]
    pub address: String,
    /// Resolution of the samples (the range query's step): one sample per step on each
    /// side, from the start of the canary's step, at most the newest 360.
    #[serde(default = "default_step")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(DURATION).message("analysis.step must be a duration such as 10s"),
        validation = Rule::new(duration_between!("1s", "5m")).message("analysis.step must be between 1s and 5m, such as 10s")
    )]
    pub step: GoDuration,
    /// Score (the weighted percent of metrics that pass) at or above which the canary
    /// passes.
    #[serde(default = "default_pass_score")]
    #[schemars(range(min = 0, max = 100))]
    pub pass_score: i32,
    /// Score below which the canary fails and rolls back at once; between this and
    /// `passScore` it is marginal and judged again, up to `marginalLimit` times in a row.
    #[serde(default = "default_marginal_score")]
    #[schemars(range(min = 0, max = 100))]
    pub marginal_score: i32,
    /// Marginal judgements in a row that roll back.
    #[serde(default = "default_marginal_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub marginal_limit: i32,
    /// Percent of the metrics' weight that may be without data in a judgement; more
    /// makes it `NoData`, which counts toward `gates.inconclusiveLimit`. No data is
    /// never a pass.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub max_no_data: i32,
    /// What is compared. Names are unique.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(m, self.exists_one(n, n.name == m.name))").message("analysis.metrics: each metric needs a name of its own")
    )]
    pub metrics: Vec<AnalysisMetric>,
}

/// One compared metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisMetric {
    /// Name, shown in status.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(DNS_LABEL).message("analysis metric name must be lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    pub name: String,
    /// PromQL returning one series, asked once for each side: `{{revision}}` is
    /// replaced by `canary`, and by `baseline` (or `stable` without baseline pods), the
    /// pods' `modelgate.dev/role` label; `{{release}}` and `{{namespace}}` as in gates.
    /// Write an error ratio so that it has a value without errors:
    /// `(sum(rate(errors{role="{{revision}}"}[30s])) or vector(0)) / sum(rate(requests{role="{{revision}}"}[30s]))`.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.contains('{{revision}}')").message("analysis metric query must name {{revision}}, so canary and baseline are asked apart"))]
    pub query: String,
    /// The change that fails the canary: `Increase` (latency, errors), `Decrease`
    /// (throughput, a score), or `Either`.
    #[serde(default)]
    pub direction: Direction,
    /// How far, as a fraction of the baseline's median, the canary may be shifted before
    /// the shift counts: `0.1` is 10%. The whole confidence interval must lie beyond it.
    #[serde(default = "default_allowed_change")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub allowed_change: f64,
    /// A critical metric that fails fails the canary, whatever the score.
    #[serde(default)]
    pub critical: bool,
    /// Its share in the score.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
}

/// Which change of a metric fails the canary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Direction {
    /// Higher than the baseline fails (latency, errors).
    Increase,
    /// Lower than the baseline fails (throughput, a quality score).
    Decrease,
    /// Any shift beyond `allowedChange` fails.
    #[default]
    Either,
}

impl Analysis {
    /// The range query's step.
    pub fn step(&self) -> Duration {
        ANALYSIS_STEP.of(&self.step)
    }
}

fn default_step() -> GoDuration {
    ANALYSIS_STEP.default_value()
}

fn default_pass_score() -> i32 {
    95
}

fn default_marginal_score() -> i32 {
    75
}

fn default_marginal_limit() -> i32 {
    3
}

fn default_allowed_change() -> f64 {
    0.1
}

fn default_weight() -> i32 {
    1
}

/// The judge's last word on the canary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// The canary revision judged.
    pub revision: i64,
    /// The last judgement.
    pub result: Judgement,
    /// Weighted percent of the metrics with data that passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<i32>,
    /// Why, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Marginal judgements in a row.
    #[serde(default)]
    pub consecutive_marginal: i32,
    /// Judgements without enough data in a row.
    #[serde(default)]
    pub consecutive_no_data: i32,
    /// When the samples judged end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<Time>,
    /// Each metric's numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStatus>,
}

/// What one judgement decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Judgement {
    /// The score reached `passScore` and no critical metric failed.
    Pass,
    /// Between `marginalScore` and `passScore`: judged again.
    Marginal,
    /// Below `marginalScore`, or a critical metric failed: rolls back.
    Fail,
    /// Too little data to judge (or Prometheus did not answer): never a pass.
    #[default]
    NoData,
    /// Not judged while the canary's or the baseline's pods are not all Ready.
    Waiting,
    /// Not judged: a release's first revision has nothing to compare with.
    Skipped,
}

impl Judgement {
    pub const fn as_str(self) -> &'static str {
        match self {
            Judgement::Pass => "Pass",
            Judgement::Marginal => "Marginal",
            Judgement::Fail => "Fail",
            Judgement::NoData => "NoData",
            Judgement::Waiting => "Waiting",
            Judgement::Skipped => "Skipped",
        }
    }
}

/// How one metric of the canary compares with the baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Classification {
    /// No shift beyond `allowedChange` that the interval is sure of.
    Pass,
    /// Higher than the baseline, surely and by more than allowed.
    High,
    /// Lower than the baseline, surely and by more than allowed.
    Low,
    /// Too few samples on one side.
    #[default]
    NoData,
}

impl Classification {
    pub const fn as_str(self) -> &'static str {
        match self {
            Classification::Pass => "Pass",
            Classification::High => "High",
            Classification::Low => "Low",
            Classification::NoData => "NoData",
        }
    }
}

/// The numbers one metric was judged on. The shift is canary minus baseline, in the
/// metric's unit; relative numbers are over the baseline's median.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// The metric's name.
    pub name: String,
    /// How the canary compares.
    pub classification: Classification,
    /// Samples of the canary.
    pub canary_samples: i32,
    /// Samples of the baseline (or of the stable pods, without baseline pods).
    pub baseline_samples: i32,
    /// The canary's Mann-Whitney U statistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u: Option<f64>,
    /// The two-sided p-value of the U test (normal approximation, continuity and tie
    /// corrections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Hodges-Lehmann estimate of the shift: the median of all canary-baseline differences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
    /// Lower end of the shift's 95% confidence interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// Upper end of the shift's 95% confidence interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// The baseline's median, which `allowedChange` is a fraction of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_median: Option<f64>,
}

//! The judge's questions: each metric's samples for the canary and for the baseline,
//! from the start of the canary's step to now (Prometheus range queries, asked as the
//! prometheus gate asks: endpoints, egress, namespace and sizes held to the
//! installation's rules), judged by `plan::judge`.

use k8s_openapi::jiff::Timestamp;

use super::{
    EgressPolicy, GateContext, PrometheusPolicy,
    prometheus::{self, Server},
    promql, render,
};
use crate::{
    api::{Analysis, AnalysisMetric, AnalysisStatus, Classification, Judgement, MAX_SAMPLES, MetricStatus, Role},
    plan::judge,
};

pub struct Judge {
    analysis: Analysis,
    server: Server,
}

impl Judge {
    pub fn new(analysis: Analysis, egress: EgressPolicy, policy: PrometheusPolicy) -> Result<Self, String> {
        let server = Server::new(&analysis.address, "analysis.address", egress, policy)?;
        Ok(Self { analysis, server })
    }

    /// The role the canary is compared with: baseline pods, or the stable ones.
    fn control(&self) -> Role {
        if self.analysis.baseline { Role::Baseline } else { Role::Stable }
    }

    /// A metric's query for the pods of `role`, placeholders filled, held to the namespace.
    fn query(&self, metric: &AnalysisMetric, role: Role, ctx: &GateContext) -> Result<String, String> {
        let text = render(&metric.query.replace("{{revision}}", role.as_str()), ctx);
        self.server.confined(&text, &ctx.namespace).map_err(|e| format!("analysis metric {}: {e}", metric.name))
    }

    /// What can be said before it ever runs (at `kubectl apply`): where it would
    /// connect, and that every query can be held to the namespace.
    pub fn admissible(&self, sample: &GateContext) -> Result<(), String> {
        for metric in &self.analysis.metrics {
            let query = render(&metric.query.replace("{{revision}}", Role::Canary.as_str()), sample);
            self.server.admissible(&query, &sample.namespace, "analysis.address").map_err(|e| {
                if e.starts_with("analysis.address") { e } else { format!("analysis metric {}: {e}", metric.name) }
            })?;
        }
        Ok(())
    }

    /// Judges the canary of `ctx` on the samples from its step's start to `now`: for
    /// each metric, from when its query reads nothing from before the step (its reach,
    /// `promql::reach`, plus one step for Prometheus to see the pods' new labels).
    pub async fn judge(&self, ctx: &GateContext, now: Timestamp) -> AnalysisStatus {
        let step = i64::try_from(self.analysis.step().as_secs().max(1)).unwrap_or(1);
        let end = now.as_second();
        let earliest = end.saturating_sub(step.saturating_mul(MAX_SAMPLES as i64 - 1));
        let asked = self.analysis.metrics.iter().map(|metric| async move {
            let reach = promql::reach(&metric.query).map(|r| i64::try_from(r.as_secs()).unwrap_or(i64::MAX));
            let from = match (ctx.step_started, reach) {
                (Some(t), Ok(reach)) => t.as_second().saturating_add(reach).saturating_add(step),
                _ => earliest,
            };
            // Nothing to ask before the window opens: no samples yet.
            let window = (from <= end).then(|| {
                [("start", from.max(earliest).to_string()), ("end", end.to_string()), ("step", step.to_string())]
            });
            let (canary, control) = match &window {
                Some(window) => {
                    futures::join!(
                        self.samples(metric, Role::Canary, ctx, window),
                        self.samples(metric, self.control(), ctx, window)
                    )
                }
                None => (Ok(Vec::new()), Ok(Vec::new())),
            };
            match (canary, control) {
                (Ok(canary), Ok(control)) => judge::compare(metric, &canary, &control),
                (Err(why), _) | (_, Err(why)) => MetricStatus {
                    name: format!("{} ({why})", metric.name).chars().take(200).collect(),
                    classification: Classification::NoData,
                    ..Default::default()
                },
            }
        });
        let mut metrics = futures::future::join_all(asked).await;
        let decided = judge::judge(&self.analysis, &metrics);
        // The reason a question went unanswered served the message; the name is the metric's.
        for (m, spec) in metrics.iter_mut().zip(&self.analysis.metrics) {
            m.name.clone_from(&spec.name);
        }
        AnalysisStatus {
            revision: ctx.canary_revision,
            result: decided.judgement,
            score: decided.score,
            message: decided.message,
            metrics,
            ..Default::default()
        }
    }

    async fn samples(
        &self,
        metric: &AnalysisMetric,
        role: Role,
        ctx: &GateContext,
        window: &[(&str, String); 3],
    ) -> Result<Vec<f64>, String> {
        let query = self.query(metric, role, ctx)?;
        let mut params = vec![("query", query)];
        params.extend(window.iter().cloned());
        let data = self.server.ask("api/v1/query_range", &params).await.map_err(|(_, why)| why)?;
        prometheus::samples(&data, MAX_SAMPLES).map_err(|e| format!("{}: {e}", role.as_str()))
    }
}

/// A judgement that could not be made at all (the judge could not be built): `NoData`
/// is never a pass, and says why.
pub fn unjudged(revision: i64, why: String) -> AnalysisStatus {
    AnalysisStatus { revision, result: Judgement::NoData, message: why, ..Default::default() }
}

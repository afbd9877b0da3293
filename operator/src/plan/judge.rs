//! The judge's arithmetic, pure: each metric's canary samples against the baseline's
//! (`compare`), and the metrics into one judgement (`judge`).
//!
//! As Kayenta's Mann-Whitney classifier: the Mann-Whitney U test (statrs, aligned with
//! scipy's asymptotic method) says whether the two differ at all; the Hodges-Lehmann estimate of the shift
//! (the median of every canary-baseline difference) and its distribution-free 95%
//! confidence interval (Hollander & Wolfe, *Nonparametric Statistical Methods*, the
//! large-sample form) say by how much. A metric is High (Low) only when the test rejects
//! equality and the whole interval lies above (below) the allowed change, a fraction of
//! the baseline's median: a shift that is surely there and surely larger than allowed.

use statrs::stats_tests::{
    Alternative,
    mannwhitneyu::{MannWhitneyUMethod, mannwhitneyu},
};

use crate::api::{Analysis, AnalysisMetric, Classification, Direction, Judgement, MetricStatus};

/// Fewer samples than this on either side is no data: no interval means anything.
pub const MIN_SAMPLES: usize = 5;
/// Two-sided 95%: the standard normal's 0.975 quantile.
const Z_95: f64 = 1.959_963_984_540_054;
const ALPHA: f64 = 0.05;

/// One metric's canary samples against the baseline's.
pub fn compare(metric: &AnalysisMetric, canary: &[f64], baseline: &[f64]) -> MetricStatus {
    let counted = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let mut status = MetricStatus {
        name: metric.name.clone(),
        classification: Classification::NoData,
        canary_samples: counted(canary.len()),
        baseline_samples: counted(baseline.len()),
        ..Default::default()
    };
    if canary.len() < MIN_SAMPLES
        || baseline.len() < MIN_SAMPLES
        || !canary.iter().chain(baseline).all(|v| v.is_finite())
    {
        return status;
    }
    let median = median(baseline);
    status.baseline_median = Some(median);
    // The normal approximation with continuity and tie corrections (scipy's
    // `method="asymptotic"`), for every size: statrs' exact path gave p = 1 for two
    // samples that do not overlap at all (5 and 5), which would hide a real shift.
    let method = MannWhitneyUMethod::AsymptoticInclContinuityCorrection;
    let Ok((u, p)) = mannwhitneyu(canary, baseline, method, Alternative::TwoSided) else {
        return status;
    };
    let (shift, lower, upper) = hodges_lehmann(canary, baseline);
    let allowed = metric.allowed_change.abs() * median.abs();
    // Values near f64's end (a crafted answer of 1e308) overflow a difference or a
    // product: every comparison with inf or NaN is false, which would read as a pass.
    // Such numbers decide nothing, and status cannot hold them.
    if ![u, p, shift, lower, upper, median, allowed].iter().all(|v| v.is_finite()) {
        status.baseline_median = None;
        return status;
    }
    (status.u, status.p_value) = (Some(u), Some(p));
    (status.shift, status.lower, status.upper) = (Some(shift), Some(lower), Some(upper));
    let significant = p < ALPHA;
    let up = matches!(metric.direction, Direction::Increase | Direction::Either);
    let down = matches!(metric.direction, Direction::Decrease | Direction::Either);
    status.classification = if significant && up && lower > allowed {
        Classification::High
    } else if significant && down && upper < -allowed {
        Classification::Low
    } else {
        Classification::Pass
    };
    status
}

/// The Hodges-Lehmann shift of `x` over `y` and its 95% confidence interval: the
/// median of the n·m differences x_i - y_j, and the C-th smallest and C-th largest of
/// them, C = floor(n·m/2 - z·sqrt(n·m·(n+m+1)/12)), at least 1 (no tie correction; for
/// small samples the exact quantile R's `wilcox.test` uses gives the same C).
fn hodges_lehmann(x: &[f64], y: &[f64]) -> (f64, f64, f64) {
    let mut differences: Vec<f64> = x.iter().flat_map(|a| y.iter().map(move |b| a - b)).collect();
    differences.sort_by(f64::total_cmp);
    let (n, m) = (x.len() as f64, y.len() as f64);
    let nm = n * m;
    let c = (nm / 2.0 - Z_95 * (nm * (n + m + 1.0) / 12.0).sqrt()).floor().max(1.0) as usize;
    let last = differences.len().saturating_sub(1);
    let at = |i: usize| differences.get(i.min(last)).copied().unwrap_or(f64::NAN);
    (median_sorted(&differences), at(c - 1), at(last.saturating_sub(c - 1)))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    median_sorted(&sorted)
}

fn median_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match (sorted.get(n / 2), n % 2) {
        (Some(mid), 1) => *mid,
        (Some(mid), _) => (sorted.get(n / 2 - 1).copied().unwrap_or(*mid) + mid) / 2.0,
        (None, _) => f64::NAN,
    }
}

/// What a judgement decided, and the numbers it stands on.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    pub judgement: Judgement,
    pub score: Option<i32>,
    pub message: String,
}

/// The metrics' classifications into one judgement: too much weight without data is
/// NoData; a critical metric High or Low fails; otherwise the score (the weighted percent
/// of the metrics with data that pass) against `passScore` and `marginalScore`.
pub fn judge(analysis: &Analysis, metrics: &[MetricStatus]) -> Decided {
    let weight_of =
        |name: &str| analysis.metrics.iter().find(|m| m.name == name).map_or(1, |m| i64::from(m.weight.clamp(1, 100)));
    let critical = |name: &str| analysis.metrics.iter().any(|m| m.name == name && m.critical);
    let total: i64 = metrics.iter().map(|m| weight_of(&m.name)).sum();
    let without: Vec<&MetricStatus> = metrics.iter().filter(|m| m.classification == Classification::NoData).collect();
    let without_weight: i64 = without.iter().map(|m| weight_of(&m.name)).sum();
    // No data is never a pass, whatever `maxNoData` allows: at least one metric must
    // have been judged.
    let with_data = total - without_weight;
    if with_data <= 0 || without_weight * 100 > i64::from(analysis.max_no_data.clamp(0, 100)) * total {
        let names: Vec<String> = without.iter().map(|m| describe(m)).collect();
        return Decided {
            judgement: Judgement::NoData,
            score: None,
            message: format!("too little data: {}", names.join("; ")),
        };
    }
    let failed: Vec<&MetricStatus> =
        metrics.iter().filter(|m| matches!(m.classification, Classification::High | Classification::Low)).collect();
    let with_data = total - without_weight;
    let passing: i64 =
        metrics.iter().filter(|m| m.classification == Classification::Pass).map(|m| weight_of(&m.name)).sum();
    let score = i32::try_from((passing * 100 + with_data / 2) / with_data.max(1)).unwrap_or(0);
    let said: Vec<String> = failed.iter().map(|m| describe(m)).collect();
    if let Some(m) = failed.iter().find(|m| critical(&m.name)) {
        return Decided {
            judgement: Judgement::Fail,
            score: Some(score),
            message: format!("critical metric {} is {}: {}", m.name, m.classification.as_str(), describe(m)),
        };
    }
    let (judgement, verdict) = if score >= analysis.pass_score {
        (Judgement::Pass, format!("score {score} >= passScore {}", analysis.pass_score))
    } else if score < analysis.marginal_score {
        (Judgement::Fail, format!("score {score} < marginalScore {}", analysis.marginal_score))
    } else {
        (Judgement::Marginal, format!("score {score} < passScore {}", analysis.pass_score))
    };
    let message = if said.is_empty() { verdict } else { format!("{verdict}: {}", said.join("; ")) };
    Decided { judgement, score: Some(score), message }
}

/// One metric in a few words: `latency High: +21.4% [+18.9%, +23.8%] p=0.0001 U=576 n=24/24`
/// (relative to the baseline's median where it is not zero, else in the metric's unit).
pub fn describe(m: &MetricStatus) -> String {
    let n = format!("n={}/{}", m.canary_samples, m.baseline_samples);
    let (Some(shift), Some(lower), Some(upper)) = (m.shift, m.lower, m.upper) else {
        return format!("{} {} {n}", m.name, m.classification.as_str());
    };
    let median = m.baseline_median.unwrap_or(0.0);
    let show = |v: f64| {
        if median != 0.0 { format!("{:+.1}%", v / median.abs() * 100.0) } else { format!("{v:+.4}") }
    };
    let p = m.p_value.map_or("p=?".into(), |p| format!("p={p:.2e}"));
    let u = m.u.map_or(String::new(), |u| format!(" U={u}"));
    format!("{} {}: {} [{}, {}] {p}{u} {n}", m.name, m.classification.as_str(), show(shift), show(lower), show(upper))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(direction: Direction, allowed_change: f64) -> AnalysisMetric {
        AnalysisMetric {
            name: "latency".into(),
            query: "q{role=\"{{revision}}\"}".into(),
            direction,
            allowed_change,
            critical: false,
            weight: 1,
        }
    }

    /// The published example (ClickHouse's mannWhitneyUTest test, checked against scipy):
    /// U = 223 and p = 0.5426959774289482, two-sided with the continuity correction.
    #[test]
    fn the_u_test_gives_the_published_values() {
        let left = [
            310.0, 195.0, 530.0, 155.0, 530.0, 245.0, 385.0, 450.0, 465.0, 545.0, 170.0, 180.0, 125.0, 180.0, 230.0,
            75.0, 430.0, 480.0, 495.0, 295.0,
        ];
        let right = [
            116.0, 171.0, 176.0, 421.0, 111.0, 326.0, 481.0, 111.0, 346.0, 441.0, 261.0, 411.0, 206.0, 521.0, 456.0,
            446.0, 296.0, 51.0, 426.0, 261.0,
        ];
        let m = compare(&metric(Direction::Either, 0.1), &left, &right);
        assert_eq!(m.u, Some(223.0));
        assert!((m.p_value.unwrap() - 0.542_695_977_428_948_2).abs() < 1e-9, "{:?}", m.p_value);
        assert_eq!(m.classification, Classification::Pass, "not significant: {}", describe(&m));
    }

    /// Worked by hand: x = 1..=5, y = x + 10. The 25 differences x_i - y_j run from
    /// -14 to -6 (each value d = -10 + (i - j) occurs 5 - |i - j| times); their median
    /// is -10. C = floor(12.5 - 1.96 * sqrt(25 * 11 / 12)) = floor(3.12) = 3 (R's
    /// `qwilcox(0.025, 5, 5)` is 3 too), so the interval is the 3rd smallest (-13) and
    /// the 3rd largest (-7) difference.
    #[test]
    fn the_shift_and_its_interval_are_hodges_lehmanns() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [11.0, 12.0, 13.0, 14.0, 15.0];
        assert_eq!(hodges_lehmann(&x, &y), (-10.0, -13.0, -7.0));
        let m = compare(&metric(Direction::Either, 0.1), &x, &y);
        assert_eq!(m.classification, Classification::Low, "{}", describe(&m));
        assert_eq!(m.baseline_median, Some(13.0));
        // A shift that only lowers the metric does not fail one that may only not rise.
        assert_eq!(compare(&metric(Direction::Increase, 0.1), &x, &y).classification, Classification::Pass);
    }

    fn around(center: f64, n: usize) -> Vec<f64> {
        // Deterministic spread of +-2% around the center.
        (0..n).map(|i| center * (1.0 + 0.04 * ((i * 7 % 11) as f64 / 10.0 - 0.5))).collect()
    }

    #[test]
    fn a_shift_counts_only_when_surely_beyond_the_allowed_change() {
        let baseline = around(50.0, 24);
        // +20% latency: surely above +10%.
        let slower = compare(&metric(Direction::Increase, 0.1), &around(60.0, 24), &baseline);
        assert_eq!(slower.classification, Classification::High, "{}", describe(&slower));
        assert!(slower.p_value.unwrap() < 1e-6 && slower.lower.unwrap() > 5.0, "{}", describe(&slower));
        // +5%: real, but within the allowed 10%.
        let a_little = compare(&metric(Direction::Increase, 0.1), &around(52.5, 24), &baseline);
        assert_eq!(a_little.classification, Classification::Pass, "{}", describe(&a_little));
        // The same samples (A/A) pass; as does a canary that only got faster.
        assert_eq!(
            compare(&metric(Direction::Increase, 0.1), &baseline, &baseline).classification,
            Classification::Pass
        );
        let faster = compare(&metric(Direction::Increase, 0.1), &around(40.0, 24), &baseline);
        assert_eq!(faster.classification, Classification::Pass);
        assert_eq!(
            compare(&metric(Direction::Either, 0.1), &around(40.0, 24), &baseline).classification,
            Classification::Low
        );
    }

    #[test]
    fn errors_where_the_baseline_has_none_are_high() {
        let baseline = vec![0.0; 20];
        let canary: Vec<f64> = (0..20).map(|i| if i % 5 == 0 { 0.0 } else { 0.02 }).collect();
        let m = compare(&metric(Direction::Increase, 0.1), &canary, &baseline);
        assert_eq!(m.classification, Classification::High, "{}", describe(&m));
        assert!(describe(&m).contains("+0.0200"), "{}", describe(&m));
    }

    #[test]
    fn too_few_samples_or_values_that_are_not_numbers_are_no_data() {
        let m = compare(&metric(Direction::Either, 0.1), &[1.0, 2.0, 3.0, 4.0], &around(1.0, 20));
        assert_eq!((m.classification, m.canary_samples), (Classification::NoData, 4));
        let nan = [1.0, 2.0, f64::NAN, 3.0, 4.0, 5.0];
        assert_eq!(
            compare(&metric(Direction::Either, 0.1), &nan, &around(1.0, 20)).classification,
            Classification::NoData
        );
    }

    fn analysis(metrics: Vec<AnalysisMetric>) -> Analysis {
        Analysis {
            baseline: true,
            address: "http://p".into(),
            step: "10s".into(),
            pass_score: 95,
            marginal_score: 75,
            marginal_limit: 3,
            max_no_data: 0,
            metrics,
        }
    }

    fn classified(name: &str, classification: Classification) -> MetricStatus {
        MetricStatus {
            name: name.into(),
            classification,
            canary_samples: 10,
            baseline_samples: 10,
            ..Default::default()
        }
    }

    fn named(name: &str, weight: i32, critical: bool) -> AnalysisMetric {
        AnalysisMetric { name: name.into(), weight, critical, ..metric(Direction::Either, 0.1) }
    }

    #[test]
    fn the_score_is_the_weighted_share_of_passing_metrics() {
        let a = analysis(vec![named("a", 3, false), named("b", 1, false), named("c", 16, false)]);
        let all = [
            classified("a", Classification::Pass),
            classified("b", Classification::Pass),
            classified("c", Classification::Pass),
        ];
        assert_eq!(judge(&a, &all).judgement, Judgement::Pass);
        // b (1 of 20) fails: 95, still a pass.
        let b = [
            classified("a", Classification::Pass),
            classified("b", Classification::High),
            classified("c", Classification::Pass),
        ];
        assert_eq!((judge(&a, &b).judgement, judge(&a, &b).score), (Judgement::Pass, Some(95)));
        // a (3 of 20) fails: 85, marginal.
        let m = [
            classified("a", Classification::Low),
            classified("b", Classification::Pass),
            classified("c", Classification::Pass),
        ];
        assert_eq!((judge(&a, &m).judgement, judge(&a, &m).score), (Judgement::Marginal, Some(85)));
        // c fails: 20, a failure.
        let f = [
            classified("a", Classification::Pass),
            classified("b", Classification::Pass),
            classified("c", Classification::High),
        ];
        let decided = judge(&a, &f);
        assert_eq!((decided.judgement, decided.score), (Judgement::Fail, Some(20)));
        assert!(decided.message.contains("c High"), "{}", decided.message);
    }

    #[test]
    fn a_critical_metric_fails_whatever_the_score_and_missing_data_is_never_a_pass() {
        let a = analysis(vec![named("errors", 1, true), named("latency", 99, false)]);
        let critical = [classified("errors", Classification::High), classified("latency", Classification::Pass)];
        let decided = judge(&a, &critical);
        assert_eq!(decided.judgement, Judgement::Fail);
        assert!(decided.message.starts_with("critical metric errors is High"), "{}", decided.message);
        let missing = [classified("errors", Classification::NoData), classified("latency", Classification::Pass)];
        assert_eq!(judge(&a, &missing).judgement, Judgement::NoData);
        // Where the admin of the spec allows some weight without data, the rest decides.
        let lenient = Analysis { max_no_data: 1, ..a };
        assert_eq!(judge(&lenient, &missing).judgement, Judgement::Pass);
        assert_eq!(judge(&lenient, &[]).judgement, Judgement::NoData);
        // Even where every metric may be without data and any score passes.
        let anything = Analysis { max_no_data: 100, pass_score: 0, marginal_score: 0, ..lenient };
        let none = [classified("errors", Classification::NoData), classified("latency", Classification::NoData)];
        assert_eq!(judge(&anything, &none).judgement, Judgement::NoData);
    }
}

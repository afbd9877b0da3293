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

/// Time for Prometheus to see pods change role after a promotion or a rollback (service
/// discovery, then a scrape; series of the old canary's pods are labelled `canary`
/// until then): three steps, `analysis.step` being at least the scrape interval, and
/// never less than this.
pub const RELABEL_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

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

    /// Judges the canary of `ctx` on the samples from its step's start to `now`. Each
    /// metric's samples start once its query reads nothing from before the step (its
    /// reach, `promql::reach`, plus one step), nor from before the last time pods changed
    /// role (a promotion, a rollback: plus three steps, at least `RELABEL_MARGIN`, for
    /// Prometheus to see the new labels). Until each metric can have `MIN_SAMPLES` samples, the judgement is
    /// `Waiting`, which counts for nothing.
    pub async fn judge(&self, ctx: &GateContext, now: Timestamp) -> AnalysisStatus {
        let revision = ctx.canary_revision;
        let step = i64::try_from(self.analysis.step().as_secs().max(1)).unwrap_or(1);
        let end = now.as_second();
        let earliest = end.saturating_sub(step.saturating_mul(MAX_SAMPLES as i64 - 1));
        let Some(step_started) = ctx.step_started else {
            return unjudged(revision, "the canary's step has no start time yet".into());
        };
        let mut windows = Vec::new();
        for metric in &self.analysis.metrics {
            let reach = match promql::reach(&metric.query) {
                Ok(r) => i64::try_from(r.as_secs()).unwrap_or(i64::MAX),
                Err(e) => return unjudged(revision, format!("analysis metric {}: {e}", metric.name)),
            };
            let after_step = step_started.as_second().saturating_add(reach).saturating_add(step);
            let margin = step.saturating_mul(3).max(RELABEL_MARGIN.as_secs() as i64);
            let after_relabel =
                ctx.relabelled.map_or(i64::MIN, |t| t.as_second().saturating_add(reach).saturating_add(margin));
            let from = after_step.max(after_relabel).max(earliest);
            let ripe = from.saturating_add(step.saturating_mul(judge::MIN_SAMPLES as i64 - 1));
            if ripe > end {
                let message = format!(
                    "waiting for samples: metric {}'s are judged from {} (the step's start, plus its query's reach \
                     of {reach}s and {}s for Prometheus to see pods change role), {} of them by {}",
                    metric.name,
                    Timestamp::from_second(from).map_or("?".into(), |t| t.to_string()),
                    (after_relabel.max(after_step) - reach - step_started.as_second()).max(step),
                    judge::MIN_SAMPLES,
                    Timestamp::from_second(ripe).map_or("?".into(), |t| t.to_string()),
                );
                return AnalysisStatus { revision, result: Judgement::Waiting, message, ..Default::default() };
            }
            windows.push([("start", from.to_string()), ("end", end.to_string()), ("step", step.to_string())]);
        }
        let asked = self.analysis.metrics.iter().zip(&windows).map(|(metric, window)| async move {
            let (canary, control) = futures::join!(
                self.samples(metric, Role::Canary, ctx, window),
                self.samples(metric, self.control(), ctx, window)
            );
            match (canary, control) {
                (Ok(canary), Ok(control)) => (judge::compare(metric, &canary, &control), None),
                (Err(why), _) | (_, Err(why)) => (
                    MetricStatus {
                        name: metric.name.clone(),
                        classification: Classification::NoData,
                        ..Default::default()
                    },
                    Some(format!("{}: {why}", metric.name)),
                ),
            }
        });
        let (mut metrics, unanswered): (Vec<MetricStatus>, Vec<Option<String>>) =
            futures::future::join_all(asked).await.into_iter().unzip();
        if !self.server.numbers_shown() {
            // Queries go unconfined here: the numbers may be of other teams' series.
            for m in &mut metrics {
                (m.shift, m.lower, m.upper, m.baseline_median) = (None, None, None, None);
            }
        }
        let decided = judge::judge(&self.analysis, &metrics);
        let unanswered: Vec<String> = unanswered.into_iter().flatten().collect();
        let message = match unanswered.is_empty() {
            true => decided.message,
            false => format!("{}; not answered: {}", decided.message, unanswered.join("; ")),
        };
        AnalysisStatus {
            revision,
            result: decided.judgement,
            score: decided.score,
            message,
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

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::api::Direction;

    /// A Prometheus on loopback answering range queries: 24 samples of 50 for a query
    /// about the baseline, of `canary` for one about the canary; it hands over each
    /// query it got.
    async fn prometheus(canary: f64) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 16 * 1024];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&request[..n]).lines().next().unwrap_or_default().to_string();
                let url =
                    reqwest::Url::parse(&format!("http://x{}", line.split(' ').nth(1).unwrap_or_default())).unwrap();
                let query =
                    url.query_pairs().find(|(k, _)| k == "query").map(|(_, v)| v.into_owned()).unwrap_or_default();
                let value = if query.contains("canary") { canary } else { 50.0 };
                let values: Vec<String> =
                    (0..24).map(|i| format!("[{i},\"{}\"]", value + f64::from(i % 3) * 0.1)).collect();
                let body = format!(
                    r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{}]}}]}}}}"#,
                    values.join(",")
                );
                let _ = tx.send(format!("{} {query}", url.path()));
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (address, rx)
    }

    fn analysis(address: String) -> Analysis {
        Analysis {
            baseline: true,
            address,
            step: "2s".into(),
            pass_score: 95,
            marginal_score: 75,
            marginal_limit: 3,
            max_no_data: 0,
            metrics: vec![AnalysisMetric {
                name: "latency".into(),
                query: r#"sum(rate(t{role="{{revision}}",namespace="other-team"}[10s]))"#.into(),
                direction: Direction::Increase,
                allowed_change: 0.1,
                critical: true,
                weight: 1,
            }],
        }
    }

    #[tokio::test]
    async fn each_side_is_asked_apart_over_a_range_held_to_the_namespace_and_judged() {
        let egress =
            EgressPolicy { allow: vec!["127.0.0.0/8".parse().unwrap()], allow_http: true, ..Default::default() };
        let policy = PrometheusPolicy { namespace_label: Some("namespace".into()), ..Default::default() };
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let started = Timestamp::from_second(1_800_000_000 - 120).unwrap();
        let ctx = GateContext {
            namespace: "team-a".into(),
            canary_revision: 3,
            step_started: Some(started),
            ..Default::default()
        };
        // Right after the step began: too early for 5 samples after the query's reach.
        let (address, _) = prometheus(60.0).await;
        let judge = Judge::new(analysis(address), egress.clone(), policy.clone()).unwrap();
        let early = judge.judge(&ctx, Timestamp::from_second(1_800_000_000 - 110).unwrap()).await;
        assert_eq!(early.result, Judgement::Waiting, "{}", early.message);
        // A promotion a moment ago: its relabelled pods are waited out too.
        let relabelled =
            GateContext { relabelled: Some(Timestamp::from_second(1_800_000_000 - 5).unwrap()), ..ctx.clone() };
        assert_eq!(judge.judge(&relabelled, now).await.result, Judgement::Waiting);
        let (address, mut asked) = prometheus(60.0).await;
        let judge = Judge::new(analysis(address), egress.clone(), policy.clone()).unwrap();
        let judged = judge.judge(&ctx, now).await;
        assert_eq!(judged.result, Judgement::Fail, "{}", judged.message);
        assert_eq!(judged.metrics[0].classification, Classification::High);
        assert_eq!((judged.metrics[0].canary_samples, judged.metrics[0].baseline_samples), (24, 24));
        let mut queries = [asked.recv().await.unwrap(), asked.recv().await.unwrap()];
        queries.sort();
        for (q, role) in queries.iter().zip(["baseline", "canary"]) {
            assert!(q.starts_with("/api/v1/query_range "), "{q}");
            assert!(q.contains(&format!(r#"role="{role}""#)), "{q}");
            assert!(q.contains(r#"namespace="team-a""#) && !q.contains("other-team"), "{q}");
        }
        // The same numbers on both sides pass.
        let (address, _) = prometheus(50.0).await;
        let judge = Judge::new(analysis(address), egress, policy).unwrap();
        assert_eq!(judge.judge(&ctx, now).await.result, Judgement::Pass);
    }

    #[tokio::test]
    async fn a_prometheus_the_installation_does_not_allow_is_never_asked() {
        let (address, mut asked) = prometheus(60.0).await;
        let policy = PrometheusPolicy {
            endpoints: vec![PrometheusPolicy::endpoint("https://prom.monitoring:9090").unwrap()],
            ..Default::default()
        };
        let refused = Judge::new(analysis(address.clone()), EgressPolicy::default(), policy).err().unwrap();
        assert!(refused.starts_with("analysis.address") && refused.contains("use one of"), "{refused}");
        // Allowed as an endpoint, but loopback is not a place gates may connect to.
        let judge = Judge::new(analysis(address), EgressPolicy::default(), PrometheusPolicy::default()).unwrap();
        let ctx = GateContext {
            namespace: "team-a".into(),
            canary_revision: 3,
            step_started: Some(Timestamp::from_second(1_800_000_000 - 120).unwrap()),
            ..Default::default()
        };
        let judged = judge.judge(&ctx, Timestamp::from_second(1_800_000_000).unwrap()).await;
        assert_eq!(judged.result, Judgement::NoData, "{}", judged.message);
        assert!(judged.message.contains("not queried"), "{}", judged.message);
        assert!(asked.try_recv().is_err(), "nothing was sent");
    }
}

//! The prometheus gate: one instant query against the Prometheus HTTP API, its value
//! held between `min` and `max`. No data, NaN or an unreachable server is inconclusive;
//! a query Prometheus rejects is a failure. Nothing but a value in bounds passes.

use std::{future::Future, pin::Pin, time::Duration};

use serde::Deserialize;
use tracing::debug;

use super::{
    Gate, GateContext,
    egress::{self, EgressPolicy},
    promql, render,
};
use crate::{api::PrometheusCheck, plan::GateResult};

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Prometheus {
    check: PrometheusCheck,
    server: Server,
}

/// A Prometheus a tenant named, as the installation lets gates and the judge ask it:
/// only endpoints the admin allows, only addresses the egress policy allows, every
/// query held to the release's namespace, every answer bounded, never a redirect.
pub struct Server {
    base: reqwest::Url,
    egress: EgressPolicy,
    policy: PrometheusPolicy,
}

/// What status may say when a question got no usable answer: the result it counts as,
/// and our own words (a server's text stays in the operator's log).
pub type Unanswered = (GateResult, String);

/// What the installation allows Prometheus checks, beyond where they may connect.
#[derive(Clone, Debug, Default)]
pub struct PrometheusPolicy {
    /// The Prometheus base URLs checks may name; empty: any the egress policy allows.
    pub endpoints: Vec<reqwest::Url>,
    /// The label every series selector of a query is held to, with the release's
    /// namespace as its value (as a label proxy does); `None`: queries go as written.
    pub namespace_label: Option<String>,
    /// Show the number a Prometheus returned in the release's status (off: only the
    /// verdict and the threshold; a Prometheus the installation allows may hold other
    /// teams' series, and the status is the tenant's to read).
    pub show_values: bool,
}

impl PrometheusPolicy {
    /// The label queries are held to unless the admin names another (or none): the
    /// one Prometheus' Kubernetes discovery and kube-prometheus give a pod's series.
    pub const DEFAULT_NAMESPACE_LABEL: &'static str = "namespace";

    /// A base URL as the admin or a tenant wrote it, in the one form compared.
    pub fn endpoint(address: &str) -> Result<reqwest::Url, String> {
        if address.contains(['?', '#']) {
            return Err(format!("{address:?} must be Prometheus' base URL, without '?' or '#'"));
        }
        reqwest::Url::parse(&format!("{}/", address.trim_end_matches('/')))
            .map_err(|_| format!("{address:?} is not a URL"))
    }
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Data {
    result_type: String,
    result: serde_json::Value,
}

impl Server {
    /// `field` names the address in messages (`prometheus.address`, `analysis.address`).
    pub fn new(address: &str, field: &str, egress: EgressPolicy, policy: PrometheusPolicy) -> Result<Self, String> {
        // A base URL only: with a `?` or `#` in it the tenant would choose the whole
        // request path (`https://prom/internal/admin?next=`), not a Prometheus.
        let base = PrometheusPolicy::endpoint(address).map_err(|e| format!("{field} {e}"))?;
        if !policy.endpoints.is_empty() && !policy.endpoints.contains(&base) {
            let allowed: Vec<&str> = policy.endpoints.iter().map(|u| u.as_str()).collect();
            return Err(format!(
                "{field} {} is not a Prometheus this installation allows; use one of: {}",
                base,
                allowed.join(", ")
            ));
        }
        Ok(Self { base, egress, policy })
    }

    /// Whether numbers read from this Prometheus may reach the release's status: where
    /// the admin shows values, or where every query is held to the release's namespace
    /// (the numbers are then of the team's own series).
    pub fn numbers_shown(&self) -> bool {
        self.policy.show_values || self.policy.namespace_label.is_some()
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, String> {
        self.base.join(path).map_err(|_| "the Prometheus address is not a URL".to_string())
    }

    /// What can be said before asking: where it would connect, and whether `query` can
    /// be held to `namespace`.
    pub fn admissible(&self, query: &str, namespace: &str, field: &str) -> Result<(), String> {
        let url = self.url("api/v1/query")?;
        self.egress.admissible(&url, true).map_err(|refused| format!("{field}: {refused}"))?;
        self.confined(query, namespace).map(|_| ())
    }

    /// The query as it is sent: held to the release's namespace where the installation
    /// says so (the parsed query written out again, never the team's text spliced).
    pub fn confined(&self, query: &str, namespace: &str) -> Result<String, String> {
        match &self.policy.namespace_label {
            Some(label) => promql::confine(query, label, namespace),
            None => Ok(query.to_string()),
        }
    }

    /// Asks `path` (`api/v1/query`, `api/v1/query_range`) with `params`, the query
    /// among them already confined. Our words for anything but a successful answer.
    pub async fn ask(&self, path: &str, params: &[(&str, String)]) -> Result<Data, Unanswered> {
        let mut url = self.url(path).map_err(|e| (GateResult::Fail, e))?;
        let (host, addrs) = match self.egress.resolve(&url, true).await {
            Ok(r) => r,
            Err(refused) => return Err((GateResult::Fail, format!("not queried: {refused}"))),
        };
        let http = egress::client(&host, &addrs, TIMEOUT, None).map_err(|e| (GateResult::Inconclusive, e))?;
        url.query_pairs_mut().extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        let response = match http.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "prometheus: no answer");
                return Err((GateResult::Inconclusive, "Prometheus did not answer".into()));
            }
        };
        let code = response.status();
        if code.is_redirection() {
            return Err((
                GateResult::Fail,
                format!("Prometheus answered a redirect (HTTP {}), which gates do not follow", code.as_u16()),
            ));
        }
        let body = egress::read_capped(response)
            .await
            .map_err(|e| (GateResult::Inconclusive, format!("Prometheus answered HTTP {}: {e}", code.as_u16())))?;
        let Ok(body) = serde_json::from_slice::<Response>(&body) else {
            return Err((
                GateResult::Inconclusive,
                format!("Prometheus answered HTTP {} without a usable body", code.as_u16()),
            ));
        };
        if body.status != "success" {
            // 4xx: the query itself is wrong, which waiting will not fix.
            let result = if code.is_client_error() { GateResult::Fail } else { GateResult::Inconclusive };
            return Err((
                result,
                format!("query refused (HTTP {}); see the operator log or run it in Prometheus", code.as_u16()),
            ));
        }
        body.data.ok_or_else(|| (GateResult::Inconclusive, "no data".into()))
    }
}

impl Prometheus {
    pub fn new(check: PrometheusCheck, egress: EgressPolicy, policy: PrometheusPolicy) -> Result<Self, String> {
        let server = Server::new(&check.address, "prometheus.address", egress, policy)?;
        Ok(Self { check, server })
    }

    /// What `gates::admissible` says of this check: where it would connect, and whether
    /// its query, its placeholders filled from `sample`, can be held to the namespace.
    pub fn admissible(&self, sample: &GateContext) -> Result<(), String> {
        self.server
            .admissible(&render(&self.check.query, sample), &sample.namespace, "prometheus.address")
            .map_err(|e| if e.starts_with("prometheus.address") { e } else { format!("prometheus.query: {e}") })
    }

    /// What status shows is our own words and numbers: the server's text stays in the
    /// operator's log (a tenant must not read a server through the release's status).
    async fn query(&self, ctx: &GateContext) -> (GateResult, String) {
        // A comparison with the stable revision cannot be made for a release's first
        // revision, nor at 100% (the last step, the post-promotion window), where the
        // stable revision serves nothing (its warm pods are out of service): skipped,
        // saying so (pod health still decides), instead of a query about revision "" or
        // about pods without traffic, which never passes and would roll back a healthy
        // revision once its `inconclusiveLimit` runs out.
        if self.check.query.contains("{{stable}}") {
            let skipped = match ctx.stable_revision {
                None => Some(format!(
                    "skipped: revision {} is the release's first, there is no stable revision to compare with",
                    ctx.canary_revision
                )),
                Some(stable) if ctx.weight >= 100 => Some(format!(
                    "skipped: revision {} serves 100%, revision {stable} serves nothing to compare with",
                    ctx.canary_revision
                )),
                Some(_) => None,
            };
            if let Some(message) = skipped {
                return (GateResult::Pass, message);
            }
        }
        let query = match self.server.confined(&render(&self.check.query, ctx), &ctx.namespace) {
            Ok(q) => q,
            Err(e) => return (GateResult::Fail, format!("not queried: {e}")),
        };
        match self.server.ask("api/v1/query", &[("query", query)]).await {
            Err(unanswered) => unanswered,
            Ok(data) => match value(&data) {
                Some(Ok(v)) if v.is_nan() => (GateResult::Inconclusive, "no data (NaN)".into()),
                Some(Ok(v)) => self.judge(v),
                Some(Err(e)) => (GateResult::Inconclusive, e),
                None => (GateResult::Inconclusive, "no data".into()),
            },
        }
    }

    /// The verdict on `v`, said with the number only where the installation shows values.
    fn judge(&self, v: f64) -> (GateResult, String) {
        let shown = self.server.policy.show_values;
        if let Some(min) = self.check.min.filter(|min| v < *min) {
            return (GateResult::Fail, if shown { format!("{v} < min {min}") } else { format!("below min {min}") });
        }
        if let Some(max) = self.check.max.filter(|max| v > *max) {
            return (GateResult::Fail, if shown { format!("{v} > max {max}") } else { format!("above max {max}") });
        }
        if shown {
            return (GateResult::Pass, format!("{v}"));
        }
        let bounds: Vec<String> =
            [self.check.min.map(|m| format!("min {m}")), self.check.max.map(|m| format!("max {m}"))]
                .into_iter()
                .flatten()
                .collect();
        (GateResult::Pass, format!("within {}", bounds.join(", ")))
    }
}

/// The samples of the one series a range query returned (finite values only, the
/// newest `max` of them): empty for no series, an error for more than one.
pub fn samples(data: &Data, max: usize) -> Result<Vec<f64>, String> {
    if data.result_type != "matrix" {
        return Err("the query did not return a range vector; make it an instant vector expression".into());
    }
    let series = data.result.as_array().map(Vec::as_slice).unwrap_or_default();
    let Some(only) = series.first() else { return Ok(Vec::new()) };
    if series.len() > 1 {
        // Not how many: a count of series is data too.
        return Err("the query returned more than one series; make it return one, e.g. with sum()".into());
    }
    let values = only.get("values").and_then(|v| v.as_array()).map(Vec::as_slice).unwrap_or_default();
    let skip = values.len().saturating_sub(max);
    Ok(values
        .iter()
        .skip(skip)
        .filter_map(|pair| pair.get(1)?.as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .collect())
}

/// The one number a query returned: `None` for no data, an error for more than one series.
fn value(data: &Data) -> Option<Result<f64, String>> {
    let sample = match data.result_type.as_str() {
        "scalar" => data.result.get(1).cloned(),
        "vector" => {
            let series = data.result.as_array()?;
            if series.len() > 1 {
                // Not how many: a count of series is data too.
                return Some(
                    Err("the query returned more than one series; make it return one, e.g. with sum()".into()),
                );
            }
            series.first()?.get("value")?.get(1).cloned()
        }
        // The server's word is not echoed into status.
        _ => return Some(Err("the query returned neither an instant vector nor a scalar; use one of those".into())),
    }?;
    let text = sample.as_str()?;
    Some(text.parse::<f64>().map_err(|_| "the value is not a number".to_string()))
}

impl Gate for Prometheus {
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> Pin<Box<dyn Future<Output = (GateResult, String)> + Send + 'a>> {
        Box::pin(self.query(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// A server on loopback that answers every request with `reply`.
    async fn answering(reply: String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(reply.clone().as_bytes()).await;
            }
        });
        address
    }

    fn loopback_allowed() -> EgressPolicy {
        EgressPolicy { allow: vec!["127.0.0.0/8".parse().unwrap()], allow_http: true, ..Default::default() }
    }

    #[test]
    fn the_address_is_a_base_url_not_a_request_path() {
        let check =
            |address: &str| PrometheusCheck { address: address.into(), query: "up".into(), min: None, max: None };
        for bad in ["https://p:9090/internal/admin?next=", "https://p:9090/#frag"] {
            assert!(
                Prometheus::new(check(bad), EgressPolicy::default(), PrometheusPolicy::default()).is_err(),
                "{bad}"
            );
        }
        let prefixed =
            Prometheus::new(check("https://p:9090/prom/"), EgressPolicy::default(), PrometheusPolicy::default())
                .unwrap();
        assert_eq!(prefixed.server.url("api/v1/query").unwrap().as_str(), "https://p:9090/prom/api/v1/query");
    }

    #[test]
    fn only_the_endpoints_the_installation_names() {
        let policy = PrometheusPolicy {
            endpoints: vec![PrometheusPolicy::endpoint("https://prom.monitoring:9090").unwrap()],
            ..Default::default()
        };
        let check =
            |address: &str| PrometheusCheck { address: address.into(), query: "up".into(), min: None, max: None };
        for same in ["https://prom.monitoring:9090", "https://prom.monitoring:9090/"] {
            assert!(Prometheus::new(check(same), EgressPolicy::default(), policy.clone()).is_ok(), "{same}");
        }
        for other in ["https://prom.monitoring:9090/admin", "https://other:9090", "http://prom.monitoring:9090"] {
            let refused = Prometheus::new(check(other), EgressPolicy::default(), policy.clone()).err().unwrap();
            assert!(refused.contains("use one of: https://prom.monitoring:9090/"), "{refused}");
        }
    }

    /// A server on loopback that answers one value and hands over each query it got.
    async fn recording() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 16 * 1024];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&request[..n]).lines().next().unwrap_or_default().to_string();
                let target = line.split(' ').nth(1).unwrap_or_default();
                let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
                let query = url.query_pairs().find(|(k, _)| k == "query").map(|(_, v)| v.into_owned());
                let _ = tx.send(query.unwrap_or_default());
                let body =
                    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.5"]}]}}"#;
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (address, rx)
    }

    #[tokio::test]
    async fn the_query_sent_is_held_to_the_releases_namespace() {
        let (address, mut sent) = recording().await;
        let check = PrometheusCheck {
            address,
            query: r#"sum(rate(errors{release="{{release}}",namespace="other-team"}[1m]))"#.into(),
            min: None,
            max: Some(1.0),
        };
        let policy = PrometheusPolicy { namespace_label: Some("namespace".into()), ..Default::default() };
        let p = Prometheus::new(check, loopback_allowed(), policy).unwrap();
        let ctx = GateContext { namespace: "team-a".into(), release: "fraud".into(), ..Default::default() };
        assert_eq!(p.query(&ctx).await.0, GateResult::Pass);
        let query = sent.recv().await.unwrap();
        assert!(query.contains(r#"namespace="team-a""#) && !query.contains("other-team"), "{query}");
        assert!(query.contains(r#"release="fraud""#), "{query}");
    }

    #[tokio::test]
    async fn a_comparison_with_the_stable_revision_is_skipped_where_the_stable_serves_nothing() {
        let (address, mut sent) = recording().await;
        let query = r#"rate(errors{revision="{{canary}}"}[1m]) - rate(errors{revision="{{stable}}"}[1m])"#;
        let check = PrometheusCheck { address, query: query.into(), min: None, max: Some(1.0) };
        let p = Prometheus::new(check, loopback_allowed(), PrometheusPolicy::default()).unwrap();
        let first = GateContext { canary_revision: 1, stable_revision: None, ..Default::default() };
        let (result, said) = p.query(&first).await;
        assert_eq!(result, GateResult::Pass);
        assert!(said.contains("revision 1 is the release's first"), "{said}");
        assert!(sent.try_recv().is_err(), "nothing is asked of Prometheus");
        // At 100% (the last step, the post-promotion window) the stable serves nothing.
        let full = GateContext { canary_revision: 2, stable_revision: Some(1), weight: 100, ..Default::default() };
        let (result, said) = p.query(&full).await;
        assert_eq!(result, GateResult::Pass);
        assert!(said.contains("revision 1 serves nothing"), "{said}");
        assert!(sent.try_recv().is_err(), "nothing is asked of Prometheus");
        // With a stable revision serving beside it the comparison is made.
        let second = GateContext { canary_revision: 2, stable_revision: Some(1), weight: 50, ..Default::default() };
        assert_eq!(p.query(&second).await.0, GateResult::Pass);
        let asked = sent.recv().await.unwrap();
        assert!(asked.contains(r#"revision="1""#) && asked.contains(r#"revision="2""#), "{asked}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed_and_replies_stay_out_of_status() {
        let ctx = GateContext::default();
        let check = |address: String| PrometheusCheck { address, query: "up".into(), min: None, max: Some(1.0) };
        // A redirect to the metadata service: refused without following it.
        let to_metadata = "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest\r\nContent-Length: 0\r\n\r\n";
        let p = Prometheus::new(
            check(answering(to_metadata.into()).await),
            loopback_allowed(),
            PrometheusPolicy::default(),
        )
        .unwrap();
        let (result, detail) = p.query(&ctx).await;
        assert_eq!(result, GateResult::Fail);
        assert!(detail.contains("redirect") && !detail.contains("169.254"), "{detail}");
        // A refusal whose error text is a secret: status gets the code only.
        let body = r#"{"status":"error","error":"token=s3cr3t-from-another-tenant"}"#;
        let secret = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let p =
            Prometheus::new(check(answering(secret.clone()).await), loopback_allowed(), PrometheusPolicy::default())
                .unwrap();
        let (result, detail) = p.query(&ctx).await;
        assert_eq!(result, GateResult::Fail);
        assert!(detail.contains("HTTP 400") && !detail.contains("s3cr3t"), "{detail}");
        // The installation's defaults: loopback is not queried at all.
        let p = Prometheus::new(check(answering(secret).await), EgressPolicy::default(), PrometheusPolicy::default())
            .unwrap();
        assert!(p.query(&ctx).await.1.starts_with("not queried"));
    }

    fn data(v: serde_json::Value) -> Data {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn values_and_no_data() {
        let one = data(json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]}));
        assert_eq!(value(&one), Some(Ok(0.25)));
        assert_eq!(value(&data(json!({"resultType": "vector", "result": []}))), None);
        assert_eq!(value(&data(json!({"resultType": "scalar", "result": [1.0, "3"]}))), Some(Ok(3.0)));
        let two = data(json!({"resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]}));
        assert!(matches!(value(&two), Some(Err(e)) if e.contains("more than one series") && !e.contains('2')));
        let check = |min, max| {
            Prometheus::new(
                PrometheusCheck { address: "http://127.0.0.1:9".into(), query: "q".into(), min, max },
                EgressPolicy::default(),
                PrometheusPolicy::default(),
            )
            .unwrap()
        };
        assert_eq!(check(None, Some(0.01)).judge(0.02).0, GateResult::Fail);
        assert_eq!(check(None, Some(0.01)).judge(0.01).0, GateResult::Pass);
        assert_eq!(check(Some(0.9), None).judge(0.5).0, GateResult::Fail);
    }

    #[test]
    fn the_number_reaches_status_only_where_the_installation_shows_values() {
        let check = |show_values| {
            let policy = PrometheusPolicy { show_values, ..Default::default() };
            let p = PrometheusCheck {
                address: "http://127.0.0.1:9".into(),
                query: "q".into(),
                min: Some(0.5),
                max: Some(31000.0),
            };
            Prometheus::new(p, EgressPolicy::default(), policy).unwrap()
        };
        assert_eq!(check(false).judge(31337.0), (GateResult::Fail, "above max 31000".into()));
        assert_eq!(check(false).judge(0.25), (GateResult::Fail, "below min 0.5".into()));
        assert_eq!(check(false).judge(7.0), (GateResult::Pass, "within min 0.5, max 31000".into()));
        assert_eq!(check(true).judge(31337.0), (GateResult::Fail, "31337 > max 31000".into()));
        assert_eq!(check(true).judge(7.0), (GateResult::Pass, "7".into()));
    }

    #[test]
    fn a_range_answer_gives_the_newest_finite_samples_of_one_series() {
        let one = data(json!({"resultType": "matrix", "result": [{"metric": {}, "values": [
            [1, "0.5"], [2, "NaN"], [3, "+Inf"], [4, "0.25"], [5, "x"], [6, "0.75"]
        ]}]}));
        assert_eq!(samples(&one, 360), Ok(vec![0.5, 0.25, 0.75]));
        assert_eq!(samples(&one, 2), Ok(vec![0.75]), "the newest 2 (one is not a number)");
        assert_eq!(samples(&data(json!({"resultType": "matrix", "result": []})), 360), Ok(vec![]));
        let two = data(json!({"resultType": "matrix", "result": [{"values": [[1, "1"]]}, {"values": [[1, "2"]]}]}));
        assert!(samples(&two, 360).unwrap_err().contains("more than one series"));
        let instant = data(json!({"resultType": "vector", "result": []}));
        assert!(samples(&instant, 360).is_err());
    }
}

//! Health gates: each provider judges the canary and answers pass, fail or
//! inconclusive. Pod health (`kubernetes`) is always on and is pure; the others call out.

pub mod egress;
mod judge;
pub mod kubernetes;
mod prometheus;
mod promql;
mod webhook;

use std::{future::Future, pin::Pin, time::Duration};

use crate::{
    api::GateCheck,
    plan::{GateOutcome, GateResult},
};

pub use crate::plan::GateContext;

pub use egress::{ApiEndpoints, EgressPolicy};
pub use judge::{Judge, unjudged};
pub use prometheus::{Prometheus, PrometheusPolicy};
pub use webhook::Webhook;

/// One provider of health verdicts.
pub trait Gate: Send + Sync {
    /// Never a pass on error: errors are failures or inconclusive, with the reason.
    fn evaluate<'a>(&'a self, ctx: &'a GateContext) -> Pin<Box<dyn Future<Output = (GateResult, String)> + Send + 'a>>;
}

/// The installation's rules for gate checks (the admin's, never a tenant's).
#[derive(Clone, Debug, Default)]
pub struct GatePolicy {
    /// Where checks may send requests.
    pub egress: EgressPolicy,
    /// Which Prometheus checks may ask, what they may ask and what status shows.
    pub prometheus: PrometheusPolicy,
}

/// A check's provider, or why it could not be built (which counts as a failure).
pub type Provider = Result<Box<dyn Gate>, String>;

/// Builds the provider of a check. `ca_bundle` is the PEM the check names, already read.
pub fn provider(check: &GateCheck, ca_bundle: Option<Vec<u8>>, policy: &GatePolicy) -> Provider {
    let egress = &policy.egress;
    if let Some(p) = &check.prometheus {
        return Ok(Box::new(Prometheus::new(p.clone(), egress.clone(), policy.prometheus.clone())?));
    }
    if let Some(w) = &check.webhook {
        let retries = u32::try_from(w.retries.clamp(0, 10)).unwrap_or(0);
        return Ok(Box::new(Webhook::new(w.url.clone(), w.timeout(), retries, ca_bundle, egress.clone())?));
    }
    Err(format!("gate check {} names no provider", check.name))
}

/// What can be said of a check before it ever runs (at `kubectl apply`), in the words its
/// run would fail with: the address's shape, the Prometheus endpoints the installation
/// names, an address written as an IP that gates may not reach, and a query that cannot
/// be held to the release's namespace. A host name is resolved only when the check runs.
/// `sample` fills a query's placeholders as a run would.
pub fn admissible(check: &GateCheck, sample: &GateContext, policy: &GatePolicy) -> Result<(), String> {
    if let Some(p) = &check.prometheus {
        let prometheus = Prometheus::new(p.clone(), policy.egress.clone(), policy.prometheus.clone())?;
        prometheus.admissible(sample)?;
    }
    if let Some(w) = &check.webhook {
        let url = reqwest::Url::parse(&w.url).map_err(|_| "webhook.url is not a URL".to_string())?;
        policy.egress.admissible(&url, false).map_err(|refused| format!("webhook.url: {refused}"))?;
    }
    Ok(())
}

/// Longest a single check may take, retries included, whatever its settings: a check
/// that has not answered by then is inconclusive (never a pass).
pub const CHECK_DEADLINE: Duration = Duration::from_secs(45);

/// Runs every check of a release once, concurrently, each within `CHECK_DEADLINE`.
pub async fn evaluate_all(checks: &[(String, Provider)], ctx: &GateContext) -> Vec<GateOutcome> {
    let runs = checks.iter().map(|(name, gate)| async move {
        let (result, detail) = match gate {
            Ok(gate) => match tokio::time::timeout(CHECK_DEADLINE, gate.evaluate(ctx)).await {
                Ok(r) => r,
                Err(_) => (GateResult::Inconclusive, format!("no result within {}s", CHECK_DEADLINE.as_secs())),
            },
            Err(e) => (GateResult::Fail, e.clone()),
        };
        GateOutcome { name: name.clone(), result, detail }
    });
    futures::future::join_all(runs).await
}

/// `{{canary}}`, `{{stable}}` and `{{release}}` replaced for a query or a message.
pub fn render(template: &str, ctx: &GateContext) -> String {
    let stable = ctx.stable_revision.map(|r| r.to_string()).unwrap_or_default();
    template
        .replace("{{canary}}", &ctx.canary_revision.to_string())
        .replace("{{stable}}", &stable)
        .replace("{{release}}", &ctx.release)
        .replace("{{namespace}}", &ctx.namespace)
}

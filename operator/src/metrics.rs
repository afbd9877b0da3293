//! What the operator exposes on `/metrics` (OpenMetrics text), and the `/healthz` and
//! `/readyz` endpoints beside it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tracing::info;

use crate::api::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub release: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub namespace: String,
    pub repository: String,
    pub role: &'static str,
}

/// Every metric the operator keeps.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabel, Counter>,
    pub reconcile_seconds: Family<ControllerLabel, Histogram>,
    pub errors: Family<ErrorLabels, Counter>,
    pub phase: Family<PhaseLabels, Gauge>,
    pub rollbacks: Family<ReasonLabel, Counter>,
    pub gate_evaluations: Family<ResultLabel, Counter>,
    pub verification_failures: Family<ReasonLabel, Counter>,
    pub floor_version: Family<RoleLabels, Gauge>,
    pub expiry_seconds: Family<RoleLabels, Gauge>,
    /// Set once the watch caches are filled (and, with leader election, leadership held).
    pub ready: AtomicBool,
}

const PHASES: [Phase; 7] = [
    Phase::Verifying,
    Phase::Progressing,
    Phase::Paused,
    Phase::Promoted,
    Phase::RollingBack,
    Phase::RolledBack,
    Phase::Rejected,
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("modelgate");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_seconds = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile", reconcile_seconds.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("reconcile_errors", "Reconciles that failed, by kind", errors.clone());
        let phase = Family::<PhaseLabels, Gauge>::default();
        registry.register("release_phase", "1 for the phase each release is in, 0 for the others", phase.clone());
        let rollbacks = Family::<ReasonLabel, Counter>::default();
        registry.register("rollbacks", "Rollbacks, by reason", rollbacks.clone());
        let gate_evaluations = Family::<ResultLabel, Counter>::default();
        registry.register("gate_evaluations", "Gate checks evaluated, by result", gate_evaluations.clone());
        let verification_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "verification_failures",
            "Targets refused by TUF verification (releases Rejected), by reason",
            verification_failures.clone(),
        );
        let floor_version = Family::<RoleLabels, Gauge>::default();
        registry.register(
            "repository_floor_version",
            "Highest trusted version of each role (anti-rollback floor)",
            floor_version.clone(),
        );
        let expiry_seconds = Family::<RoleLabels, Gauge>::default();
        registry.register(
            "repository_metadata_expiry_timestamp_seconds",
            "When the trusted metadata of each role expires (Unix time)",
            expiry_seconds.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_seconds,
            errors,
            phase,
            rollbacks,
            gate_evaluations,
            verification_failures,
            floor_version,
            expiry_seconds,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `controller`; its duration is observed when the timer drops.
    pub fn timer(&self, controller: &'static str) -> Timer<'_> {
        self.reconciles.get_or_create(&ControllerLabel { controller }).inc();
        Timer { metrics: self, controller, start: std::time::Instant::now() }
    }

    pub fn set_phase(&self, namespace: &str, release: &str, now: Option<Phase>) {
        for p in PHASES {
            let labels = PhaseLabels { namespace: namespace.into(), release: release.into(), phase: format!("{p:?}") };
            self.phase.get_or_create(&labels).set(i64::from(Some(p) == now));
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an empty page would only mean no metrics.
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

async fn metrics_page(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render())
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds `address` (so a taken port fails the start, not later).
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    Ok(listener)
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    axum::serve(listener, app).await
}

/// Counts a reconcile and observes its duration when dropped.
pub struct Timer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: std::time::Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let labels = ControllerLabel { controller: self.controller };
        self.metrics.reconcile_seconds.get_or_create(&labels).observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_text_with_the_phase_of_each_release() {
        let m = Metrics::default();
        m.set_phase("ml", "fraud", Some(Phase::Paused));
        m.rollbacks.get_or_create(&ReasonLabel { reason: "CrashLoopBackOff".into() }).inc();
        let text = m.render();
        assert!(
            text.contains("modelgate_release_phase{namespace=\"ml\",release=\"fraud\",phase=\"Paused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("modelgate_release_phase{namespace=\"ml\",release=\"fraud\",phase=\"Promoted\"} 0"),
            "{text}"
        );
        assert!(text.contains("modelgate_rollbacks_total{reason=\"CrashLoopBackOff\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}

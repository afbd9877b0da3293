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
use kube::runtime::reflector::Store;
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

use crate::api::{ModelRelease, ModelRepository, Phase};

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
pub struct PhaseLabel {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttentionLabels {
    pub namespace: String,
    pub release: String,
    pub phase: &'static str,
    pub reason: String,
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
    /// Releases per phase (one series per phase, whatever the number of releases).
    pub releases: Family<PhaseLabel, Gauge>,
    /// One series per release that needs a person, at most `MAX_ATTENTION_SERIES`.
    pub attention: Family<AttentionLabels, Gauge>,
    /// How many releases need a person (all of them, also past the series cap).
    pub attention_total: Gauge,
    /// Status writes refused because the release changed since it was read (409): a
    /// decision not made twice (a cache behind, or two operators during a shard move).
    pub stale_writes: Counter,
    pub rollbacks: Family<ReasonLabel, Counter>,
    pub gate_evaluations: Family<ResultLabel, Counter>,
    pub verification_failures: Family<ReasonLabel, Counter>,
    pub floor_version: Family<RoleLabels, Gauge>,
    pub expiry_seconds: Family<RoleLabels, Gauge>,
    /// Set once the watch caches are filled (and, with leader election, leadership held).
    pub ready: AtomicBool,
    /// The watched objects, read at each scrape: the gauges above describe what exists
    /// now, so a deleted release or repository leaves no series behind.
    views: std::sync::Mutex<Views>,
}

/// The stores of each watched scope, by a number handed out when it started.
#[derive(Default)]
struct Views {
    next: u64,
    scopes: std::collections::BTreeMap<u64, (Store<ModelRelease>, Store<ModelRepository>)>,
}

/// A scope's objects in the scrapes while this lives: a namespace that stops being
/// served (its label removed) leaves no series behind.
#[must_use = "the scope's objects leave the metrics when this is dropped"]
pub struct View {
    metrics: Arc<Metrics>,
    id: u64,
}

impl Drop for View {
    fn drop(&mut self) {
        if let Ok(mut views) = self.metrics.views.lock() {
            views.scopes.remove(&self.id);
        }
    }
}

/// Per-release series are kept for releases that need a person, and for no more than
/// this many of them (the total is always exported): a bad day with 10,000 failing
/// releases must not become 10,000 series in every scrape.
pub const MAX_ATTENTION_SERIES: usize = 500;

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
        let releases = Family::<PhaseLabel, Gauge>::default();
        registry.register("releases", "ModelReleases, by phase", releases.clone());
        let attention = Family::<AttentionLabels, Gauge>::default();
        registry.register(
            "release_attention",
            "1 for each release that needs a person (rolling or rolled back, rejected, degraded, trust degraded), \
             with its phase and reason; at most 500 series",
            attention.clone(),
        );
        let attention_total = Gauge::default();
        registry.register("releases_needing_attention", "Releases that need a person", attention_total.clone());
        let stale_writes = Counter::default();
        registry.register(
            "stale_status_writes",
            "Status writes refused because the release changed since it was read (the decision is made again from \
             the newer version)",
            stale_writes.clone(),
        );
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
            releases,
            attention,
            attention_total,
            stale_writes,
            rollbacks,
            gate_evaluations,
            verification_failures,
            floor_version,
            expiry_seconds,
            ready: AtomicBool::new(false),
            views: std::sync::Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `controller`; its duration is observed when the timer drops.
    pub fn timer(&self, controller: &'static str) -> Timer<'_> {
        self.reconciles.get_or_create(&ControllerLabel { controller }).inc();
        Timer { metrics: self, controller, start: std::time::Instant::now() }
    }

    /// Adds the objects of one watched scope to what each scrape reports, until the
    /// returned `View` is dropped.
    pub fn watch(self: &Arc<Self>, releases: Store<ModelRelease>, repositories: Store<ModelRepository>) -> View {
        let mut id = 0;
        if let Ok(mut views) = self.views.lock() {
            id = views.next;
            views.next += 1;
            views.scopes.insert(id, (releases, repositories));
        }
        View { metrics: self.clone(), id }
    }

    /// Sets the gauges that describe objects from what the stores hold now.
    fn refresh_views(&self) {
        let Ok(views) = self.views.lock() else { return };
        // A follower watches nothing and reports no objects; a leader whose last
        // namespace left reports zero of everything.
        if views.next == 0 {
            return;
        }
        let releases: Vec<_> = views.scopes.values().flat_map(|(r, _)| r.state()).collect();
        let repositories: Vec<_> = views.scopes.values().flat_map(|(_, r)| r.state()).collect();
        drop(views);
        self.set_releases(releases.iter().map(|r| &**r));
        self.set_repositories(repositories.iter().map(|r| &**r));
    }

    fn set_releases<'a>(&self, releases: impl Iterator<Item = &'a ModelRelease>) {
        let mut counts = [0_i64; PHASES.len()];
        let mut attention = Vec::new();
        let mut total = 0;
        for release in releases {
            let status = release.status.as_ref();
            let phase = status.and_then(|s| s.phase).unwrap_or_default();
            if let Some(count) = PHASES.iter().position(|p| *p == phase).and_then(|i| counts.get_mut(i)) {
                *count += 1;
            }
            if let Some(reason) = status.and_then(crate::plan::needs_attention) {
                total += 1;
                if attention.len() < MAX_ATTENTION_SERIES {
                    attention.push(AttentionLabels {
                        namespace: release.metadata.namespace.clone().unwrap_or_default(),
                        release: release.metadata.name.clone().unwrap_or_default(),
                        phase: phase.as_str(),
                        reason,
                    });
                }
            }
        }
        for (phase, count) in PHASES.iter().zip(counts) {
            self.releases.get_or_create(&PhaseLabel { phase: phase.as_str() }).set(count);
        }
        self.attention.clear();
        for labels in attention {
            self.attention.get_or_create(&labels).set(1);
        }
        self.attention_total.set(total);
    }

    fn set_repositories<'a>(&self, repositories: impl Iterator<Item = &'a ModelRepository>) {
        self.floor_version.clear();
        self.expiry_seconds.clear();
        for repo in repositories {
            let Some(status) = &repo.status else { continue };
            for (role, state) in [
                ("root", &status.root),
                ("timestamp", &status.timestamp),
                ("snapshot", &status.snapshot),
                ("targets", &status.targets),
            ] {
                let Some(state) = state else { continue };
                let labels = RoleLabels {
                    namespace: repo.metadata.namespace.clone().unwrap_or_default(),
                    repository: repo.metadata.name.clone().unwrap_or_default(),
                    role,
                };
                self.floor_version.get_or_create(&labels).set(state.version);
                if let Some(expires) = &state.expires {
                    self.expiry_seconds.get_or_create(&labels).set(expires.0.as_second());
                }
            }
        }
    }

    pub fn render(&self) -> String {
        self.refresh_views();
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
    fn openmetrics_text_with_counts_per_phase_and_releases_that_need_a_person() {
        use crate::api::{ModelRelease, ModelReleaseStatus};
        let m = Metrics::default();
        let release = |name: &str, phase: Phase, degraded: Option<&str>| {
            let mut r = ModelRelease::new(
                name,
                serde_json::from_value(serde_json::json!({
                    "repositoryRef": {"name": "r"}, "model": {"target": "m"},
                    "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                }))
                .expect("a valid spec"),
            );
            r.metadata.namespace = Some("ml".into());
            let conditions = degraded.map(|reason| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: crate::plan::DEGRADED.into(),
                status: "True".into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            });
            r.status = Some(ModelReleaseStatus {
                phase: Some(phase),
                conditions: conditions.into_iter().collect(),
                ..Default::default()
            });
            r
        };
        let mut all: Vec<_> = (0..2000).map(|i| release(&format!("ok-{i}"), Phase::Promoted, None)).collect();
        all.extend((0..600).map(|i| release(&format!("bad-{i}"), Phase::RolledBack, Some("CrashLoopBackOff"))));
        all.push(release("stuck", Phase::Paused, Some("ProgressDeadlineExceeded")));
        m.set_releases(all.iter());
        m.rollbacks.get_or_create(&ReasonLabel { reason: "CrashLoopBackOff".into() }).inc();
        let text = m.render();
        assert!(text.contains("modelgate_releases{phase=\"Promoted\"} 2000"), "{text}");
        assert!(text.contains("modelgate_releases{phase=\"RolledBack\"} 600"), "{text}");
        assert!(text.contains("modelgate_releases{phase=\"Verifying\"} 0"), "{text}");
        assert!(text.contains("modelgate_releases_needing_attention 601"), "{text}");
        assert!(
            text.contains(
                "modelgate_release_attention{namespace=\"ml\",release=\"bad-0\",phase=\"RolledBack\",reason=\"CrashLoopBackOff\"} 1"
            ),
            "{text}"
        );
        let series = text.lines().filter(|l| l.starts_with("modelgate_release_attention{")).count();
        assert_eq!(series, MAX_ATTENTION_SERIES, "per-release series are capped");
        assert!(!text.contains("release=\"ok-"), "healthy releases have no series of their own");
        assert!(text.contains("modelgate_rollbacks_total{reason=\"CrashLoopBackOff\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));

        // A release that is gone leaves no series behind.
        m.set_releases(std::iter::empty());
        let text = m.render();
        assert!(!text.contains("modelgate_release_attention{"), "{text}");
        assert!(text.contains("modelgate_releases{phase=\"Promoted\"} 0"), "{text}");
    }

    #[test]
    fn a_scope_that_stops_takes_its_releases_out_of_the_scrapes() {
        use kube::runtime::{reflector, watcher};
        let m = Arc::new(Metrics::default());
        let store = |names: &[&str]| {
            let (releases, mut writer) = reflector::store::<ModelRelease>();
            for name in names {
                let spec = serde_json::from_value(serde_json::json!({
                    "repositoryRef": {"name": "r"}, "model": {"target": "m"},
                    "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                }))
                .expect("a valid spec");
                let mut release = ModelRelease::new(name, spec);
                release.metadata.namespace = Some(format!("ns-{name}"));
                writer.apply_watcher_event(&watcher::Event::Apply(release));
            }
            (releases, reflector::store::<ModelRepository>().0)
        };
        // A follower watches nothing and reports no counts at all.
        assert!(!m.render().contains("modelgate_releases{"));
        let (a, a_repos) = store(&["one", "two"]);
        let (b, b_repos) = store(&["three"]);
        let view_a = m.watch(a, a_repos);
        let view_b = m.watch(b, b_repos);
        assert!(m.render().contains("modelgate_releases{phase=\"Verifying\"} 3"));
        drop(view_a);
        assert!(m.render().contains("modelgate_releases{phase=\"Verifying\"} 1"));
        drop(view_b);
        assert!(m.render().contains("modelgate_releases{phase=\"Verifying\"} 0"), "the last namespace left");
    }
}

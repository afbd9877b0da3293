//! The operator's side effects: watches, reconciles (observe, plan, act), status writes
//! through server-side apply, Events, the admission webhook. The only other code that
//! talks to the API server only reads (`readers.rs`, shared with `kubectl modelgate`)
//! or is the plugin, which runs as the person using kubectl.

pub mod admission;
mod api_endpoints;
mod cache;
mod cluster;
mod connections;
mod error;
pub mod gate_runner;
mod index;
mod leader;
mod namespaces;
pub mod release;
pub mod repository;
mod scope;
mod serving_cert;
mod settings;
mod shared_watch;
pub mod trust_cache;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
};
use tracing::info;

pub use error::Error;
pub use trust_cache::TrustCache;

use crate::api::{LABEL_RELEASE, ModelRelease, ModelRepository};
use cache::{CachedPod, CachedReplicaSet};
use index::OwnerIndex;
use scope::scope;
pub use serving_cert::{LIFETIME as CERTIFICATE_LIFETIME, Place as ServingCertPlace};
pub use settings::{LeaderElection, Namespaces, Settings};

/// What a process does with its scopes: leads (reconciles and writes), or stands by
/// (leader election) with a read-only trust view, so that its admission webhook judges
/// models as the leader would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leading,
    /// Repositories are refreshed into this replica's own trust caches; nothing is
    /// written (no status, trust record, copy or Event) and releases are not watched.
    StandingBy,
}

/// What every scope of this process (in one role) shares.
pub struct Shared {
    pub role: Role,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cluster repositories.
    pub cluster: Arc<cluster::Cluster>,
    /// What the admission webhook answers from: each scope adds its view.
    pub admission: Arc<admission::Views>,
}

/// Shared by every reconcile.
pub struct Context {
    pub role: Role,
    pub client: Client,
    /// Repeated events (a repository unreachable at every refresh) become one series.
    pub recorder: Recorder,
    /// Who reports events; rollout events are not merged into series (see `release.rs`).
    pub reporter: Reporter,
    pub trust: TrustCache,
    pub stores: Stores,
    pub fetch_image: String,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub gates: gate_runner::GateRunner,
    pub pod_policy: crate::plan::pod_policy::PodPolicy,
    pub gate_policy: crate::gates::GatePolicy,
    /// Cluster repositories, shared by every scope.
    pub cluster: Arc<cluster::Cluster>,
    pub namespaced_repositories: bool,
    /// Per release UID, the resourceVersion this process last wrote a status over: a
    /// release still at that version in the store is a view older than our own
    /// decision, not worth planning from (the write's watch event is on its way).
    pub written: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Context {
    /// Whether this scope's caches are filled and every repository it sees (cluster
    /// repositories too) has been refreshed since it started, with a verdict on every
    /// model asked about (`TrustCache::settled`).
    fn warm(&self) -> bool {
        let settled = self.stores.repository_uids().iter().all(|uid| self.trust.settled(uid));
        self.stores.ready() && self.cluster.ready() && settled && self.cluster.settled()
    }
}

/// In-memory views of what releases own, kept current by watches (no list per reconcile).
pub struct Stores {
    repositories: Store<ModelRepository>,
    replica_sets: (Store<CachedReplicaSet>, OwnerIndex),
    pods: (Store<CachedPod>, OwnerIndex),
    /// Services made for releases (`spec.service`): one that is in place as it should
    /// be costs no request at all.
    services: Store<Service>,
    /// Set by each watch (releases, repositories, ReplicaSets, pods, Services) at its
    /// first full list.
    synced: [Synced; 5],
}

/// Whether a watch has delivered its first full list. Kept beside the store rather than
/// asked of it: a store's `wait_until_ready` wakes only its last waiter, and the
/// controllers wait on it.
type Synced = Arc<std::sync::atomic::AtomicBool>;

impl Stores {
    /// A replica standing by watches repositories only: the other stores stay empty,
    /// and count as filled.
    fn of_repositories(repositories: Store<ModelRepository>, synced: Synced) -> Self {
        let filled = || Arc::new(std::sync::atomic::AtomicBool::new(true));
        let owned = || OwnerIndex::default();
        Stores {
            repositories,
            replica_sets: (kube::runtime::reflector::store().0, owned()),
            pods: (kube::runtime::reflector::store().0, owned()),
            services: kube::runtime::reflector::store().0,
            synced: [filled(), synced, filled(), filled(), filled()],
        }
    }

    /// Whether every watch has delivered its first full list.
    pub fn ready(&self) -> bool {
        self.synced.iter().all(|s| s.load(std::sync::atomic::Ordering::Acquire))
    }

    pub fn repository(&self, ns: &str, name: &str) -> Option<Arc<ModelRepository>> {
        self.repositories.get(&ObjectRef::new(name).within(ns))
    }

    /// UIDs of every repository that exists now.
    pub fn repository_uids(&self) -> std::collections::HashSet<String> {
        self.repositories.state().iter().filter_map(|r| r.uid()).collect()
    }

    /// Every repository that exists now, with its UID.
    pub fn repositories(&self) -> Vec<(ObjectRef<ModelRepository>, String)> {
        self.repositories.state().iter().filter_map(|r| Some((ObjectRef::from_obj(&**r), r.uid()?))).collect()
    }

    fn owned_by<K>((store, index): &(Store<K>, OwnerIndex), ns: &str, release: &str) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        index
            .owned(ns, release)
            .into_iter()
            .filter_map(|name| store.get(&ObjectRef::new(&name).within(ns)))
            // The store may hold a newer version than the index has seen yet.
            .filter(|o| o.labels().get(LABEL_RELEASE).map(String::as_str) == Some(release))
            .map(|o| (*o).clone())
            .collect()
    }

    pub fn replica_sets(&self, ns: &str, release: &str) -> Vec<CachedReplicaSet> {
        Self::owned_by(&self.replica_sets, ns, release)
    }

    pub fn pods(&self, ns: &str, release: &str) -> Vec<CachedPod> {
        Self::owned_by(&self.pods, ns, release)
    }

    /// The release's Service as last seen, if modelgate made it.
    pub fn service(&self, ns: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(ns))
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Fails with an actionable message when the CRDs are missing. Listing (not reading the
/// CRD objects) needs no permission beyond what the operator uses anyway.
pub async fn ensure_crds_installed(client: &Client, namespace: Option<&str>) -> Result<(), Error> {
    let one = ListParams::default().limit(1);
    let checks = [
        ("modelreleases.modelgate.dev", api::<ModelRelease>(client, namespace).list(&one).await.map(|_| ())),
        ("modelrepositories.modelgate.dev", api::<ModelRepository>(client, namespace).list(&one).await.map(|_| ())),
    ];
    for (crd, result) in checks {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(Error::CrdMissing { crd });
            }
            Err(source) => return Err(Error::Kube { action: "check that the CRDs are installed", source }),
        }
    }
    Ok(())
}

/// Longest the standby view outlives the lease's taking, when the leading caches take
/// long to fill or a repository's first refresh does (a server trickling, failing).
const STANDBY_OVERLAP: std::time::Duration = std::time::Duration::from_secs(120);
/// Longest a follower waits for its standby view before it reports ready anyway.
const STANDBY_READY: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the controllers until SIGTERM or Ctrl-C.
pub async fn run(client: Client, settings: Settings) -> Result<(), Error> {
    // One scope per listed namespace, or one for the whole cluster; namespaces picked
    // by labels get theirs as they come and go.
    let scopes: Vec<Option<String>> = match &settings.namespaces {
        Namespaces::All | Namespaces::Labelled(_) => vec![None],
        Namespaces::Listed(list) => list.iter().cloned().map(Some).collect(),
    };
    for ns in &scopes {
        ensure_crds_installed(&client, ns.as_deref()).await?;
    }
    let shown = match &settings.namespaces {
        Namespaces::All => "<all>".to_string(),
        Namespaces::Listed(list) => list.join(","),
        Namespaces::Labelled(selector) => {
            namespaces::check_selector(&client, selector).await?;
            format!("labelled {selector}")
        }
    };
    info!(namespaces = %shown, "modelgate operator starting");
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let listener = crate::metrics::bind(settings.http_address).await?;
    tokio::spawn(crate::metrics::serve(listener, metrics.clone()));
    // Every replica answers admission reviews, leading or not.
    let views = admission::Views::new(&settings);
    if let Some(webhook) = settings.admission.clone() {
        let (client, views) = (client.clone(), views.clone());
        tokio::spawn(async move {
            if let Err(e) = admission::serve(client, webhook, views).await {
                tracing::error!(error = %e, "the admission webhook stopped; kubectl apply of ModelReleases fails until it is back");
            }
        });
    }
    // Gates may reach nothing until the API server's own addresses are known; the
    // webhook of a replica standing by judges gate addresses by them too.
    tokio::spawn(api_endpoints::watch(client.clone(), settings.gate_policy.egress.api_endpoints.clone()));
    let serving = Serving { client: client.clone(), settings, metrics: metrics.clone(), views, scopes };
    let Some(leader) = &serving.settings.leader_election else {
        serving.serve(Role::Leading).await;
        info!("modelgate operator stopped");
        return Ok(());
    };
    let leader =
        leader::Leader::new(Api::namespaced(client.clone(), &leader.namespace), &leader.name, &leader.identity);
    // A follower is ready once its standby view can judge models (its caches filled and
    // every repository refreshed once), or `STANDBY_READY` at the latest: it answers
    // reviews, and must not hold up a rollout of the operator for long.
    let standby = tokio::spawn(serving.clone().serve(Role::StandingBy));
    tokio::spawn(ready_when_warm(metrics.clone(), serving.views.clone()));
    // A follower stops at once when asked to (it holds nothing).
    tokio::select! {
        won = leader.acquire() => won?,
        () = terminated() => {
            standby.abort();
            info!("modelgate operator stopped while standing by");
            return Ok(());
        }
    }
    // Taking the lease it stays ready: its standby view answers until the leading one
    // can.
    tokio::spawn(retire(standby, serving.views.clone()));
    tokio::select! {
        () = serving.serve(Role::Leading) => leader.release().await,
        lost = leader.hold() => return Err(lost),
    }
    info!("modelgate operator stopped");
    Ok(())
}

/// Reports a follower ready once its standby view is warm, or `STANDBY_READY` after it
/// started.
async fn ready_when_warm(metrics: Arc<crate::metrics::Metrics>, views: Arc<admission::Views>) {
    let started = std::time::Instant::now();
    while !views.warm(Role::StandingBy) && started.elapsed() < STANDBY_READY {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Stops the standby's trust view once the leading one can do without it. Until then it
/// keeps answering what the leading view does not know yet (the webhook asks the newest
/// view first): until every leading scope has its caches filled and has refreshed each
/// of its repositories once, or `STANDBY_OVERLAP` after the lease was taken.
async fn retire(standby: tokio::task::JoinHandle<()>, views: Arc<admission::Views>) {
    let taken = std::time::Instant::now();
    loop {
        // What reviews asked the standby about is asked of the leading view too, which
        // is warm only once it has resolved it.
        views.hand_over();
        if views.warm(Role::Leading) || taken.elapsed() >= STANDBY_OVERLAP {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    standby.abort();
    info!(warm = views.warm(Role::Leading), "the standby trust view stopped: the leading one answers alone");
}

/// What the scopes of one role are made from.
#[derive(Clone)]
struct Serving {
    client: Client,
    settings: Settings,
    metrics: Arc<crate::metrics::Metrics>,
    views: Arc<admission::Views>,
    /// One per listed namespace, or one for the whole cluster (`None`).
    scopes: Vec<Option<String>>,
}

impl Serving {
    /// The cluster repositories and every scope in `role`, until SIGTERM.
    async fn serve(self, role: Role) {
        let Serving { client, settings, metrics, views, scopes } = self;
        let (cluster, cluster_controller) = cluster::Cluster::start(&client, &settings, &metrics, role);
        let shared = Shared { role, metrics, cluster, admission: views };
        let scopes = async {
            if let Namespaces::Labelled(selector) = &settings.namespaces {
                namespaces::serve_labelled(&client, selector, &settings, &shared).await;
            } else {
                // Only the leading scopes make the operator ready (a follower already is).
                let unready =
                    (role == Role::Leading).then(|| Arc::new(std::sync::atomic::AtomicUsize::new(scopes.len())));
                let scopes = scopes.into_iter().map(|ns| scope(&client, ns, &settings, &shared, unready.clone(), None));
                futures::future::join_all(scopes).await;
            }
        };
        // Both stop on SIGTERM; the cluster repositories serve as long as any scope.
        futures::future::join(scopes, cluster_controller).await;
    }
}

/// SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = sigterm => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Tells a scope to stop (its namespace no longer selected): its controllers finish the
/// reconciles in flight, take no more, and its watches end.
type Stop = tokio::sync::watch::Receiver<bool>;

/// Resolves when `stop` says so (or its sender is gone); never without one.
async fn stopped(stop: Option<Stop>) {
    match stop {
        Some(mut stop) => {
            let _ = stop.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}

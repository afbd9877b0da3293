//! The operator's side effects: watches, reconciles (observe, plan, act), status writes
//! through server-side apply, Events, the admission webhook. The only other code that
//! talks to the API server only reads (`readers.rs`, shared with `kubectl modelgate`)
//! or is the plugin, which runs as the person using kubectl.

pub mod admission;
mod api_endpoints;
mod cache;
mod cluster;
mod error;
pub mod gate_runner;
mod index;
mod leader;
mod namespaces;
pub mod release;
pub mod repository;
mod serving_cert;
mod settings;
mod shared_watch;
pub mod trust_cache;

use std::sync::Arc;

use std::future::Future;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        Controller, controller,
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::info;

pub use error::Error;
pub use trust_cache::TrustCache;

use crate::api::{LABEL_RELEASE, ModelRelease, ModelRepository};
use cache::{CachedPod, CachedReplicaSet};
use index::OwnerIndex;
pub use serving_cert::{LIFETIME as CERTIFICATE_LIFETIME, Place as ServingCertPlace};
pub use settings::{LeaderElection, Namespaces, Settings};
use shared_watch::shared_reflector;

/// What every scope of this process shares.
pub struct Shared {
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cluster repositories.
    pub cluster: Arc<cluster::Cluster>,
    /// What the admission webhook answers from: each scope adds its view.
    pub admission: Arc<admission::Views>,
}

/// Shared by every reconcile.
pub struct Context {
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

/// Release reconciles in flight at once: enough to keep the API server busy after a
/// restart with a thousand releases, few enough that their requests do not crowd it.
const RECONCILE_CONCURRENCY: u16 = 32;

/// Releases per page of an initial list: at most about 15 MiB of JSON in flight
/// however a team fills its releases (the etcd limit is 1.5 MiB an object), against
/// 1,000 list requests at 10,000 releases (`tests/bench/scale` measures both).
const RELEASE_PAGE: u32 = 10;

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
    let leader = settings
        .leader_election
        .as_ref()
        .map(|le| leader::Leader::new(Api::namespaced(client.clone(), &le.namespace), &le.name, &le.identity));
    if let Some(leader) = &leader {
        // A follower is ready: it serves its purpose (standing by). Once leading, it is
        // ready again when its caches are filled.
        metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        // A follower stops at once when asked to (it holds nothing).
        tokio::select! {
            won = leader.acquire() => won?,
            () = terminated() => {
                info!("modelgate operator stopped while standing by");
                return Ok(());
            }
        }
        metrics.ready.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    // Gates may reach nothing until the API server's own addresses are known.
    tokio::spawn(api_endpoints::watch(client.clone(), settings.gate_policy.egress.api_endpoints.clone()));
    let (cluster, cluster_controller) = cluster::Cluster::start(&client, &settings, &metrics);
    let shared = Shared { metrics: metrics.clone(), cluster, admission: views };
    let controllers = async {
        let scopes = async {
            if let Namespaces::Labelled(selector) = &settings.namespaces {
                namespaces::serve_labelled(&client, selector, &settings, &shared).await;
            } else {
                let unready = Some(Arc::new(std::sync::atomic::AtomicUsize::new(scopes.len())));
                let scopes = scopes.into_iter().map(|ns| scope(&client, ns, &settings, &shared, unready.clone(), None));
                futures::future::join_all(scopes).await;
            }
        };
        // Both stop on SIGTERM; the cluster repositories serve as long as any scope.
        futures::future::join(scopes, cluster_controller).await;
    };
    match &leader {
        None => {
            controllers.await;
        }
        Some(leader) => {
            tokio::select! {
                _ = controllers => leader.release().await,
                lost = leader.hold() => return Err(lost),
            }
        }
    }
    info!("modelgate operator stopped");
    Ok(())
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

/// The watches and controllers of one namespace (or of the whole cluster, `None`), until
/// SIGTERM or `stop`. `unready`, if given, counts the scopes whose caches are still
/// filling before the operator reports ready.
fn scope(
    client: &Client,
    namespace: Option<String>,
    settings: &Settings,
    shared: &Shared,
    unready: Option<Arc<std::sync::atomic::AtomicUsize>>,
    stop: Option<Stop>,
) -> impl Future<Output = ()> + use<> {
    let (metrics, cluster) = (&shared.metrics, &shared.cluster);
    let ns = namespace.as_deref();
    let reporter = Reporter { controller: "modelgate".into(), instance: std::env::var("POD_NAME").ok() };

    // Releases and what they own are watched once each, into stores that answer
    // reconciles and streams that trigger them (a pod turning bad wakes its release at
    // once). A reconcile waits until the stores are filled, so none decides on a
    // partial view; it does not block on them (the controller must keep consuming the
    // streams for the stores to fill).
    // Initial lists are consistent reads in pages of 500 (the watcher's default): a
    // list "from any version" (`resourceVersion=0`) is served whole, in one response,
    // and at 10,000 releases that one response set the operator's peak memory.
    // Releases, which a team writes and may make 1.5 MiB each, come in pages of
    // `RELEASE_PAGE`: a page is held whole, untrimmed, while it is read.
    let owned = watcher::Config::default().labels(LABEL_RELEASE);
    let (release_store, [release_events], release_synced, release_watch) = shared_reflector(
        api::<ModelRelease>(client, ns),
        watcher::Config::default().page_size(RELEASE_PAGE),
        {
            let policy = settings.pod_policy.clone();
            move |release| cache::release(release, &policy)
        },
        None,
    );
    // ReplicaSets and pods are read straight into what the cache keeps of them
    // (`cache::CachedReplicaSet`, `cache::CachedPod`): never a template or a status.
    let (rs_index, pod_index) = (OwnerIndex::default(), OwnerIndex::default());
    let (rs_store, [rs_events], rs_synced, rs_watch) =
        shared_reflector(api::<CachedReplicaSet>(client, ns), owned.clone(), |_| {}, Some(rs_index.clone()));
    let (repo_store, [repo_events, repo_events_for_releases], repo_synced, repo_watch) =
        shared_reflector(api::<ModelRepository>(client, ns), watcher::Config::default(), |_| {}, None);
    let (pod_store, [pod_events], pod_synced, pod_watch) =
        shared_reflector(api::<CachedPod>(client, ns), owned, |_| {}, Some(pod_index.clone()));
    let (svc_store, [svc_events], svc_synced, svc_watch) = shared_reflector(
        api::<Service>(client, ns),
        watcher::Config::default().labels(LABEL_RELEASE),
        |svc| {
            svc.status = None;
            svc.metadata.annotations = None;
        },
        None,
    );
    // The scope's own tasks: aborted when it ends.
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(svc_watch);
    tasks.spawn(release_watch);
    tasks.spawn(repo_watch);
    let view = metrics.watch(release_store.clone(), repo_store.clone());
    tasks.spawn(rs_watch);
    tasks.spawn(pod_watch);

    let (gates, gates_done) = gate_runner::GateRunner::new();
    let (trust, trust_wakers) = TrustCache::new();
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter.clone()),
        reporter,
        client: client.clone(),
        trust,
        stores: Stores {
            repositories: repo_store.clone(),
            replica_sets: (rs_store, rs_index),
            pods: (pod_store, pod_index),
            services: svc_store,
            synced: [release_synced, repo_synced, rs_synced, pod_synced, svc_synced],
        },
        fetch_image: settings.fetch_image.clone(),
        metrics: metrics.clone(),
        gates,
        pod_policy: settings.pod_policy.clone(),
        gate_policy: settings.gate_policy.clone(),
        cluster: cluster.clone(),
        namespaced_repositories: settings.namespaced_repositories,
        written: std::sync::Mutex::default(),
    });
    shared.admission.serve(namespace.clone(), &context);
    // Health is not work: ready once every scope's caches are filled, with or without
    // releases.
    if let Some(unready) = unready {
        let context = context.clone();
        tasks.spawn(async move {
            while !context.stores.ready() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if unready.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                context.metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    // Gate results and write marks of deleted releases are dropped now and then.
    {
        let (context, releases) = (context.clone(), release_store.clone());
        tasks.spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                let live: std::collections::HashSet<String> = releases.state().iter().filter_map(|r| r.uid()).collect();
                if let Ok(mut written) = context.written.lock() {
                    written.retain(|uid, _| live.contains(uid));
                }
                context.gates.retain(&live);
                let refs = releases
                    .state()
                    .iter()
                    .filter_map(|r| Some(ObjectRef::new(&r.name_any()).within(&r.namespace()?)))
                    .collect();
                context.trust.retain_releases(&refs);
            }
        });
    }

    let repository_controller = Controller::for_shared_stream(repo_events, repo_store)
        .owns(api::<ConfigMap>(client, ns), watcher::Config::default().labels("app.kubernetes.io/managed-by=modelgate"))
        .shutdown_on_signal()
        .graceful_shutdown_on(stopped(stop.clone()))
        // Models releases wait for are resolved by their repository's reconcile.
        .reconcile_on(trust_wakers.repositories)
        .run(
            repository::reconcile,
            |repo, error, ctx| repository::error_policy(repo, error, &ctx.metrics),
            context.clone(),
        )
        // `error_policy` already logged each failure.
        .for_each(|_| async {});

    let releases_of_repository = release_store.clone();
    let releases_of_cluster_repository = release_store.clone();
    let releases_of_namespace = release_store.clone();
    let release_controller = Controller::for_shared_stream(release_events, release_store)
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .owns_shared_stream(rs_events)
        .owns_shared_stream(svc_events)
        .watches_shared_stream(pod_events, |pod: Arc<CachedPod>| {
            let release = pod.labels().get(LABEL_RELEASE)?;
            Some(ObjectRef::new(release).within(&pod.namespace()?))
        })
        // A repository appearing (or changing: refreshed, revoked, expired) re-checks
        // the releases that name it.
        .watches_shared_stream(repo_events_for_releases, move |repo: Arc<ModelRepository>| {
            let ns = repo.namespace();
            let name = repo.name_any();
            releases_of_repository
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace() == ns
                        && r.spec.repository_ref.kind == crate::api::RepositoryKind::ModelRepository
                        && r.spec.repository_ref.name == name
                })
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(cluster.changes(), move |repo: Arc<crate::api::ClusterModelRepository>| {
            let name = repo.name_any();
            releases_of_cluster_repository
                .state()
                .into_iter()
                .filter(|r| {
                    r.spec.repository_ref.kind == crate::api::RepositoryKind::ClusterModelRepository
                        && r.spec.repository_ref.name == name
                })
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        // A namespace relabelled may be one a cluster repository's policy selects, or
        // no longer does.
        .watches_shared_stream(cluster.namespace_changes(), move |namespace| {
            let name = namespace.name_any();
            releases_of_namespace
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace().as_deref() == Some(name.as_str())
                        && r.spec.repository_ref.kind == crate::api::RepositoryKind::ClusterModelRepository
                })
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        // Finished gate checks wake their release, and so do verdicts that arrived or
        // changed.
        .reconcile_on(gates_done)
        .reconcile_on(trust_wakers.releases)
        .reconcile_on(cluster.woken(namespace.clone()))
        .shutdown_on_signal()
        .graceful_shutdown_on(stopped(stop))
        .run(release::reconcile, release::error_policy, context)
        .for_each(|_| async {});
    async move {
        futures::future::join(repository_controller, release_controller).await;
        drop((tasks, view));
    }
}

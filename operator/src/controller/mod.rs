//! The only code that talks to the API server: watches, reconcile (observe, plan, act),
//! status writes through server-side apply.

mod api_endpoints;
mod cluster;
mod error;
pub mod gate_runner;
mod index;
mod leader;
mod namespaces;
pub mod release;
pub mod repository;
pub mod trust_cache;

use std::sync::Arc;

use std::future::Future;

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{ConfigMap, Pod, Service},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        Controller, WatchStreamExt, controller,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

pub use error::Error;
pub use trust_cache::TrustCache;

use crate::api::{
    ANNOTATION_ABORT, ANNOTATION_DROP_WARM, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL, ANNOTATION_RETRY,
    ANNOTATION_ROLLBACK, CACHED_REVISION_HASH, CACHED_TEMPLATE_REFUSALS, LABEL_RELEASE, LABEL_SERVING, ModelRelease,
    ModelRepository,
};
use index::{Index, OwnerIndex};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Which namespaces this operator serves.
    pub namespaces: Namespaces,
    /// Image of the `modelgate fetch` init container in model pods.
    pub fetch_image: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_address: std::net::SocketAddr,
    /// Reconcile only while holding this Lease.
    pub leader_election: Option<LeaderElection>,
    /// What the pods modelgate renders may be (the admin's choice, not a tenant's).
    pub pod_policy: crate::plan::pod_policy::PodPolicy,
    /// Where gate checks may send requests and what they may ask.
    pub gate_policy: crate::gates::GatePolicy,
    /// The operator's namespace: where ClusterModelRepositories keep their pins, CA
    /// bundles and trust records.
    pub trust_namespace: String,
    /// Whether namespaced ModelRepositories vouch for releases (`false`: only cluster
    /// repositories do, `trust.namespacedRepositories` in the chart).
    pub namespaced_repositories: bool,
    /// Which ClusterModelRepositories this installation serves (labels; all when `None`).
    pub cluster_repository_selector: Option<String>,
    /// Whether it serves any (a namespaced install, without cluster-wide rights, does not).
    pub cluster_repositories: bool,
}

/// The namespaces one operator (one shard) serves.
#[derive(Clone, Debug, Default)]
pub enum Namespaces {
    /// Every namespace, with one watch of each kind for the whole cluster.
    #[default]
    All,
    /// These, each with its own watches (the operator's rights may stop at them).
    Listed(Vec<String>),
    /// Those whose labels match this selector, each with its own watches while it does
    /// (`namespaces.rs`).
    Labelled(String),
}

/// The Lease that elects one leader among replicas.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    /// This replica's name in the Lease (the pod name in a cluster).
    pub identity: String,
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
    replica_sets: (Store<ReplicaSet>, OwnerIndex),
    pods: (Store<Pod>, OwnerIndex),
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

    pub fn replica_sets(&self, ns: &str, release: &str) -> Vec<ReplicaSet> {
        Self::owned_by(&self.replica_sets, ns, release)
    }

    pub fn pods(&self, ns: &str, release: &str) -> Vec<Pod> {
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

/// Events each subscriber of a watch holds before the watch waits for it.
const SHARED_BUFFER: usize = 1024;

/// A changed object, as a watch delivered it, for a controller's trigger stream.
type Changes<K> = std::pin::Pin<Box<dyn futures::Stream<Item = Arc<K>> + Send>>;

/// A watch of `api` into a store, `N` streams of its changes for controllers, and the
/// future that drives them. `trim` drops what reconciles never read before an object is
/// stored (managed fields always): memory grows with the number of pods, not with them.
/// `index`, if given, is kept current with the store (for the kinds a release owns).
/// Each stream must be consumed, or the watch waits for it (`SHARED_BUFFER`).
///
/// A change is sent as the object the watch delivered, after the store holds it, so a
/// reconcile it triggers reads at least that state. kube's own shared streams
/// (`store_shared`, `ReflectHandle`) look each change up in the store instead, and when
/// the object is gone by then (a pod deleted right after its last update, as every
/// scale-down does) the handle returns `Pending` without a waker: that stream, and every
/// release's pod events with it, stopped for good. Found on the real node: a canary
/// whose model the pod refused stayed `Progressing` until a timer woke its release.
fn shared_reflector<K, const N: usize>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl Fn(&mut K) + Send + Sync + 'static,
    index: Option<OwnerIndex>,
) -> (Store<K>, [Changes<K>; N], Synced, impl Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..N).map(|_| tokio::sync::mpsc::channel::<Arc<K>>(SHARED_BUFFER)).unzip();
    let senders = Arc::new(senders);
    let mut receivers = receivers.into_iter();
    let changes = std::array::from_fn(|_| {
        let rx = receivers.next();
        let stream = futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            let item = rx.recv().await?;
            Some((item, Some(rx)))
        });
        Box::pin(stream) as Changes<K>
    });
    let drive = watcher(api, config).default_backoff().modify(move |o| {
        o.managed_fields_mut().clear();
        trim(o);
    });
    let synced = Synced::default();
    let seen = synced.clone();
    // A (re-)list's objects reach the store together when it is done: send them then,
    // as the store holds them. Only their names are kept meanwhile: a copy of every
    // object here doubled the caches during a restart's initial lists (the peak RSS of
    // the 10,000-release benchmark).
    let mut listed: Vec<ObjectRef<K>> = Vec::new();
    let listed_from = store.clone();
    let mut listing = index.as_ref().map(|_| Index::default());
    let drive = drive.reflect(writer).for_each(move |event| {
        let changed = match event {
            Ok(watcher::Event::Init) => {
                listed.clear();
                listing = index.as_ref().map(|_| Index::default());
                Vec::new()
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(listing) = listing.as_mut() {
                    listing.apply(&o);
                }
                listed.push(ObjectRef::from_obj(&o));
                Vec::new()
            }
            Ok(watcher::Event::InitDone) => {
                if let (Some(index), Some(fresh)) = (&index, listing.take()) {
                    index.replace(fresh);
                }
                seen.store(true, std::sync::atomic::Ordering::Release);
                std::mem::take(&mut listed).iter().filter_map(|r| listed_from.get(r)).collect()
            }
            Ok(watcher::Event::Apply(o)) => {
                if let Some(index) = &index {
                    index.update(|i| i.apply(&o));
                }
                vec![Arc::new(o)]
            }
            Ok(watcher::Event::Delete(o)) => {
                if let Some(index) = &index {
                    index.update(|i| i.delete(&o));
                }
                vec![Arc::new(o)]
            }
            Err(e) => {
                warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying (check the operator's RBAC)");
                Vec::new()
            }
        };
        let senders = senders.clone();
        async move {
            for object in changed {
                for tx in senders.iter() {
                    // A closed stream is a stopped controller: nothing to wake.
                    let _ = tx.send(object.clone()).await;
                }
            }
        }
    });
    (store, changes, synced, drive)
}

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
    let controllers = async {
        let scopes = async {
            if let Namespaces::Labelled(selector) = &settings.namespaces {
                namespaces::serve_labelled(&client, selector, &settings, &metrics, &cluster).await;
            } else {
                let unready = Some(Arc::new(std::sync::atomic::AtomicUsize::new(scopes.len())));
                let scopes = scopes
                    .into_iter()
                    .map(|ns| scope(&client, ns, &settings, &metrics, &cluster, unready.clone(), None));
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

/// Of an object's labels only modelgate's own are read: a tenant's thousands of labels on
/// a labelled ReplicaSet or pod must not cost the operator memory.
/// A release as the cache keeps it: of its annotations only an SRE's commands, each at
/// most `MAX_COMMAND_BYTES` (kubectl's last-applied copy alone doubles an object; a
/// command is a short token, compared by its first bytes), and instead of its pod
/// template what the reconcile reads of it: the revision hash and the pod policy's
/// refusals (`CACHED_*`). A template is read from the API server when a revision's
/// workload is made. Whatever a team writes, a cached release is small.
fn trim_release(release: &mut ModelRelease, policy: &crate::plan::pod_policy::PodPolicy) {
    let annotations = release.metadata.annotations.get_or_insert_with(Default::default);
    annotations.retain(|k, _| COMMANDS.contains(&k.as_str()));
    for value in annotations.values_mut() {
        if value.len() > MAX_COMMAND_BYTES {
            let mut end = MAX_COMMAND_BYTES;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
        }
    }
    let namespace = release.metadata.namespace.clone().unwrap_or_default();
    let hash = crate::plan::desired_hash(release);
    let refusals = crate::plan::template_refusals(release, &namespace, policy).join("\n");
    let annotations = release.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(CACHED_REVISION_HASH.into(), hash);
    annotations.insert(CACHED_TEMPLATE_REFUSALS.into(), refusals);
    release.spec.template = Default::default();
}

/// The annotations by which an SRE commands a release.
const COMMANDS: [&str; 6] = [
    ANNOTATION_PROMOTE,
    ANNOTATION_PROMOTE_FULL,
    ANNOTATION_ROLLBACK,
    ANNOTATION_RETRY,
    ANNOTATION_ABORT,
    ANNOTATION_DROP_WARM,
];

/// Longest command value kept (the plugin writes a timestamp or `<revision>@<token>`).
const MAX_COMMAND_BYTES: usize = 256;

fn keep_own_labels(meta: &mut kube::api::ObjectMeta) {
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k.starts_with("modelgate.dev/"));
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
    metrics: &Arc<crate::metrics::Metrics>,
    cluster: &Arc<cluster::Cluster>,
    unready: Option<Arc<std::sync::atomic::AtomicUsize>>,
    stop: Option<Stop>,
) -> impl Future<Output = ()> + use<> {
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
            move |release| trim_release(release, &policy)
        },
        None,
    );
    // Of a ReplicaSet only its labels, replica count and its template's serving label
    // are read; of a pod, its labels and status.
    let (rs_index, pod_index) = (OwnerIndex::default(), OwnerIndex::default());
    let (rs_store, [rs_events], rs_synced, rs_watch) = shared_reflector(
        api::<ReplicaSet>(client, ns),
        owned.clone(),
        |rs| {
            let serving =
                rs.spec.template.as_ref().and_then(|t| t.metadata.as_ref()?.labels.as_ref()?.get(LABEL_SERVING));
            rs.spec.template = serving.cloned().map(|v| k8s_openapi::api::core::v1::PodTemplateSpec {
                metadata: Some(kube::api::ObjectMeta {
                    labels: Some([(LABEL_SERVING.to_string(), v)].into()),
                    ..Default::default()
                }),
                spec: None,
            });
            rs.status = None;
            rs.metadata.annotations = None;
            keep_own_labels(&mut rs.metadata);
        },
        Some(rs_index.clone()),
    );
    let (repo_store, [repo_events, repo_events_for_releases], repo_synced, repo_watch) =
        shared_reflector(api::<ModelRepository>(client, ns), watcher::Config::default(), |_| {}, None);
    let (pod_store, [pod_events], pod_synced, pod_watch) = shared_reflector(
        api::<Pod>(client, ns),
        owned,
        |pod| {
            pod.spec = None;
            pod.status = pod.status.take().map(crate::gates::kubernetes::assessed);
            pod.metadata.annotations = None;
            keep_own_labels(&mut pod.metadata);
            // Only the controller reference: a pod counts for a revision only when one
            // of the release's own ReplicaSets controls it.
            if let Some(refs) = pod.metadata.owner_references.as_mut() {
                refs.retain(|o| o.controller == Some(true));
                for o in refs.iter_mut() {
                    o.api_version = String::new();
                    o.kind = String::new();
                    o.name = String::new();
                }
            }
        },
        Some(pod_index.clone()),
    );
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
        .watches_shared_stream(pod_events, |pod: Arc<Pod>| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn heavy(args: usize) -> ModelRelease {
        let big: Vec<String> = (0..args).map(|i| format!("--flag-{i}={}", "x".repeat(1000))).collect();
        serde_json::from_value(json!({
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRelease",
            "metadata": {"name": "m", "namespace": "team", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(100_000),
                "modelgate.dev/promote": "2026-12-06T07:00:00Z",
                "modelgate.dev/retry": "é".repeat(1000),
                "modelgate.dev/filler": "x".repeat(100_000),
                "modelgate.dev/cached-revision-hash": "forged",
            }},
            "spec": {"repositoryRef": {"name": "r"}, "model": {"target": "m/1/model.onnx"},
                     "template": {"spec": {"containers": [{"name": "a", "image": "i", "args": big}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn a_cached_release_keeps_commands_and_what_is_read_of_its_template() {
        let policy = crate::plan::pod_policy::PodPolicy::default();
        for args in [1, 80] {
            let full = heavy(args);
            let mut cached = full.clone();
            trim_release(&mut cached, &policy);
            let annotations = cached.metadata.annotations.clone().unwrap();
            let commands: Vec<&str> = annotations.keys().map(String::as_str).filter(|k| COMMANDS.contains(k)).collect();
            assert_eq!(commands, [ANNOTATION_PROMOTE, ANNOTATION_RETRY]);
            assert_eq!(annotations[ANNOTATION_PROMOTE], "2026-12-06T07:00:00Z");
            assert!(annotations[ANNOTATION_RETRY].len() <= MAX_COMMAND_BYTES);
            assert_eq!(cached.spec.template, Default::default(), "no template is kept");
            assert!(serde_json::to_vec(&cached).unwrap().len() < 2048);
            // The reconcile reads the same from either.
            assert_eq!(crate::plan::desired_hash(&cached), crate::plan::revision_hash(&full.spec));
            assert_eq!(
                crate::plan::template_refusals(&cached, "team", &policy),
                crate::plan::template_refusals(&full, "team", &policy)
            );
            // A note a team wrote on the release it applied is not read.
            assert_eq!(crate::plan::desired_hash(&full), crate::plan::revision_hash(&full.spec));
        }
        let refused = crate::plan::template_refusals(&heavy(80), "team", &policy);
        assert!(refused[0].starts_with("spec.template is 8") && refused[0].contains("at most 64 KiB"), "{refused:?}");
        assert!(crate::plan::template_refusals(&heavy(1), "team", &policy).is_empty());
    }
}

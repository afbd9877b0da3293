//! One scope: the watches, the shared context and the two controllers of one namespace
//! (or of the whole cluster), in the order they are wired up; or, on a replica standing
//! by, its repositories refreshed read-only for the admission webhook.

use std::{future::Future, sync::Arc};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{
    Client, ResourceExt,
    runtime::{
        Controller, controller,
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio::task::JoinSet;

use super::{
    Context, Role, Settings, Shared, Stop, Stores, Synced, TrustCache, api,
    cache::{self, CachedPod, CachedReplicaSet},
    gate_runner,
    index::OwnerIndex,
    release, repository,
    shared_watch::{Changes, shared_reflector},
    stopped,
};
use crate::api::{ClusterModelRepository, LABEL_RELEASE, ModelRelease, ModelRepository, RepositoryKind};

/// Release reconciles in flight at once: enough to keep the API server busy after a
/// restart with a thousand releases, few enough that their requests do not crowd it.
const RECONCILE_CONCURRENCY: u16 = 32;

/// Releases per page of an initial list: at most about 15 MiB of JSON in flight
/// however a team fills its releases (the etcd limit is 1.5 MiB an object), against
/// 1,000 list requests at 10,000 releases (`tests/bench/scale` measures both).
const RELEASE_PAGE: u32 = 10;

/// The watches and controllers of one namespace (or of the whole cluster, `None`), until
/// SIGTERM or `stop`. `unready`, if given, counts the scopes whose caches are still
/// filling before the operator reports ready.
pub(super) fn scope(
    client: &Client,
    namespace: Option<String>,
    settings: &Settings,
    shared: &Shared,
    unready: Option<Arc<std::sync::atomic::AtomicUsize>>,
    stop: Option<Stop>,
) -> futures::future::BoxFuture<'static, ()> {
    match shared.role {
        Role::Leading => leading(client, namespace, settings, shared, unready, stop).boxed(),
        Role::StandingBy => standing_by(client, namespace, settings, shared, stop).boxed(),
    }
}

/// A replica standing by: the repositories of the scope refreshed into a trust cache of
/// its own, which its admission webhook judges models by as the leader's would. Nothing
/// of releases is watched and nothing is written (`repository::refresh` in this role).
fn standing_by(
    client: &Client,
    namespace: Option<String>,
    settings: &Settings,
    shared: &Shared,
    stop: Option<Stop>,
) -> impl Future<Output = ()> + use<> {
    let (repositories, [changes], synced, watch) = shared_reflector(
        api::<ModelRepository>(client, namespace.as_deref()),
        watcher::Config::default(),
        |_| {},
        None,
    );
    let (trust, trust_wakers) = TrustCache::new();
    let stores = Stores::of_repositories(repositories.clone(), synced);
    let context = context(client, settings, shared, trust, stores, gate_runner::GateRunner::new().0);
    shared.admission.serve(namespace, &context);
    // What reviews asked to have resolved is forgotten now and then, as the leader's
    // sweep does (no release asks here): at most `MAX_PREFETCH` are held at a time.
    let sweep = {
        let context = context.clone();
        async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                context.trust.retain_releases(&std::collections::HashSet::new());
                context.cluster.trust.retain_releases(&std::collections::HashSet::new());
            }
        }
    };
    let controller = Controller::for_shared_stream(changes, repositories)
        .shutdown_on_signal()
        .graceful_shutdown_on(stopped(stop))
        .reconcile_on(trust_wakers.repositories)
        .run(repository::reconcile, |repo, error, _| repository::error_policy(repo, error, None), context)
        .for_each(|_| async {});
    async move {
        tokio::select! {
            () = controller => {}
            () = watch => {}
            () = sweep => {}
        }
    }
}

/// The context of one scope's reconciles.
fn context(
    client: &Client,
    settings: &Settings,
    shared: &Shared,
    trust: TrustCache,
    stores: Stores,
    gates: gate_runner::GateRunner,
) -> Arc<Context> {
    let reporter = Reporter { controller: "modelgate".into(), instance: std::env::var("POD_NAME").ok() };
    Arc::new(Context {
        role: shared.role,
        recorder: Recorder::new(client.clone(), reporter.clone()),
        reporter,
        client: client.clone(),
        trust,
        stores,
        fetch_image: settings.fetch_image.clone(),
        metrics: shared.metrics.clone(),
        gates,
        pod_policy: settings.pod_policy.clone(),
        gate_policy: settings.gate_policy.clone(),
        cluster: shared.cluster.clone(),
        namespaced_repositories: settings.namespaced_repositories,
        written: std::sync::Mutex::default(),
    })
}

/// A leading scope: the watches, the context and the two controllers.
fn leading(
    client: &Client,
    namespace: Option<String>,
    settings: &Settings,
    shared: &Shared,
    unready: Option<Arc<std::sync::atomic::AtomicUsize>>,
    stop: Option<Stop>,
) -> impl Future<Output = ()> + use<> {
    let ns = namespace.as_deref();
    // The scope's own tasks: aborted when it ends.
    let mut tasks = JoinSet::new();
    let Watches { releases, replica_sets, repositories, pods, services, synced, repository_changes, release_triggers } =
        watch(client, ns, settings, &mut tasks);
    let view = shared.metrics.watch(releases.clone(), repositories.clone());
    let (gates, gates_done) = gate_runner::GateRunner::new();
    let (trust, trust_wakers) = TrustCache::new();
    let stores = Stores { repositories: repositories.clone(), replica_sets, pods, services, synced };
    let context = context(client, settings, shared, trust, stores, gates);
    shared.admission.serve(namespace.clone(), &context);
    if let Some(unready) = unready {
        tasks.spawn(report_ready(context.clone(), unready));
    }
    tasks.spawn(forget_deleted(context.clone(), releases.clone()));

    let repository_controller = Controller::for_shared_stream(repository_changes, repositories)
        .owns(api::<ConfigMap>(client, ns), watcher::Config::default().labels("app.kubernetes.io/managed-by=modelgate"))
        .shutdown_on_signal()
        .graceful_shutdown_on(stopped(stop.clone()))
        // Models releases wait for are resolved by their repository's reconcile.
        .reconcile_on(trust_wakers.repositories)
        .run(
            repository::reconcile,
            |repo, error, ctx| repository::error_policy(repo, error, Some(&ctx.metrics)),
            context.clone(),
        )
        // `error_policy` already logged each failure.
        .for_each(|_| async {});
    let wakers = ReleaseWakers { gates: gates_done, trust: trust_wakers.releases };
    let release_controller = release_controller(releases, release_triggers, wakers, shared, namespace, stop, context);
    async move {
        futures::future::join(repository_controller, release_controller).await;
        drop((tasks, view));
    }
}

/// What a scope watches: the stores reconciles read, and the streams of changes that
/// wake them.
struct Watches {
    releases: Store<ModelRelease>,
    replica_sets: (Store<CachedReplicaSet>, OwnerIndex),
    repositories: Store<ModelRepository>,
    pods: (Store<CachedPod>, OwnerIndex),
    services: Store<Service>,
    /// Releases, repositories, ReplicaSets, pods, Services.
    synced: [Synced; 5],
    /// Wakes a repository's reconcile.
    repository_changes: Changes<ModelRepository>,
    release_triggers: ReleaseTriggers,
}

/// The watched changes that wake a release's reconcile.
struct ReleaseTriggers {
    releases: Changes<ModelRelease>,
    replica_sets: Changes<CachedReplicaSet>,
    pods: Changes<CachedPod>,
    services: Changes<Service>,
    /// A repository appearing or changing, for the releases that name it.
    repositories: Changes<ModelRepository>,
}

/// What else wakes a release: a finished gate check, a verdict that arrived or changed.
struct ReleaseWakers {
    gates: futures::channel::mpsc::UnboundedReceiver<ObjectRef<ModelRelease>>,
    trust: futures::channel::mpsc::UnboundedReceiver<ObjectRef<ModelRelease>>,
}

/// Releases and what they own are watched once each, into stores that answer
/// reconciles and streams that trigger them (a pod turning bad wakes its release at
/// once). A reconcile waits until the stores are filled, so none decides on a partial
/// view; it does not block on them (the controller must keep consuming the streams for
/// the stores to fill). The watches run in `tasks`.
///
/// Initial lists are consistent reads in pages of 500 (the watcher's default): a list
/// "from any version" (`resourceVersion=0`) is served whole, in one response, and at
/// 10,000 releases that one response set the operator's peak memory. Releases, which a
/// team writes and may make 1.5 MiB each, come in pages of `RELEASE_PAGE`: a page is
/// held whole, untrimmed, while it is read.
fn watch(client: &Client, ns: Option<&str>, settings: &Settings, tasks: &mut JoinSet<()>) -> Watches {
    let owned = watcher::Config::default().labels(LABEL_RELEASE);
    let (releases, [release_changes], release_synced, release_watch) = shared_reflector(
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
    let (rs_store, [replica_set_changes], rs_synced, rs_watch) =
        shared_reflector(api::<CachedReplicaSet>(client, ns), owned.clone(), |_| {}, Some(rs_index.clone()));
    let (repositories, [repository_changes, repository_changes_for_releases], repo_synced, repo_watch) =
        shared_reflector(api::<ModelRepository>(client, ns), watcher::Config::default(), |_| {}, None);
    let (pod_store, [pod_changes], pod_synced, pod_watch) =
        shared_reflector(api::<CachedPod>(client, ns), owned, |_| {}, Some(pod_index.clone()));
    let (services, [service_changes], svc_synced, svc_watch) = shared_reflector(
        api::<Service>(client, ns),
        watcher::Config::default().labels(LABEL_RELEASE),
        |svc| {
            svc.status = None;
            svc.metadata.annotations = None;
        },
        None,
    );
    tasks.spawn(svc_watch);
    tasks.spawn(release_watch);
    tasks.spawn(repo_watch);
    tasks.spawn(rs_watch);
    tasks.spawn(pod_watch);
    Watches {
        releases,
        replica_sets: (rs_store, rs_index),
        repositories,
        pods: (pod_store, pod_index),
        services,
        synced: [release_synced, repo_synced, rs_synced, pod_synced, svc_synced],
        repository_changes,
        release_triggers: ReleaseTriggers {
            releases: release_changes,
            replica_sets: replica_set_changes,
            pods: pod_changes,
            services: service_changes,
            repositories: repository_changes_for_releases,
        },
    }
}

/// Health is not work: ready once every scope's caches are filled, with or without
/// releases.
async fn report_ready(context: Arc<Context>, unready: Arc<std::sync::atomic::AtomicUsize>) {
    while !context.stores.ready() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if unready.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
        context.metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Gate results, write marks and trust requests of deleted releases are dropped now and
/// then.
async fn forget_deleted(context: Arc<Context>, releases: Store<ModelRelease>) {
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
}

/// The release controller: reconciles a release when it, what it owns, its repository
/// or its namespace's labels change, and when a gate check or a verdict arrives.
fn release_controller(
    releases: Store<ModelRelease>,
    triggers: ReleaseTriggers,
    wakers: ReleaseWakers,
    shared: &Shared,
    namespace: Option<String>,
    stop: Option<Stop>,
    context: Arc<Context>,
) -> impl Future<Output = ()> + use<> {
    let cluster = &shared.cluster;
    let (of_repository, of_cluster_repository, of_namespace) = (releases.clone(), releases.clone(), releases.clone());
    Controller::for_shared_stream(triggers.releases, releases)
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .owns_shared_stream(triggers.replica_sets)
        .owns_shared_stream(triggers.services)
        .watches_shared_stream(triggers.pods, |pod: Arc<CachedPod>| {
            let release = pod.labels().get(LABEL_RELEASE)?;
            Some(ObjectRef::new(release).within(&pod.namespace()?))
        })
        // A repository appearing (or changing: refreshed, revoked, expired) re-checks
        // the releases that name it.
        .watches_shared_stream(triggers.repositories, move |repo: Arc<ModelRepository>| {
            let (ns, name) = (repo.namespace(), repo.name_any());
            naming(&of_repository, |r| {
                r.namespace() == ns
                    && r.spec.repository_ref.kind == RepositoryKind::ModelRepository
                    && r.spec.repository_ref.name == name
            })
        })
        .watches_shared_stream(cluster.changes(), move |repo: Arc<ClusterModelRepository>| {
            let name = repo.name_any();
            naming(&of_cluster_repository, |r| {
                r.spec.repository_ref.kind == RepositoryKind::ClusterModelRepository
                    && r.spec.repository_ref.name == name
            })
        })
        // A namespace relabelled may be one a cluster repository's policy selects, or
        // no longer does.
        .watches_shared_stream(cluster.namespace_changes(), move |namespace| {
            let name = namespace.name_any();
            naming(&of_namespace, |r| {
                r.namespace().as_deref() == Some(name.as_str())
                    && r.spec.repository_ref.kind == RepositoryKind::ClusterModelRepository
            })
        })
        .reconcile_on(wakers.gates)
        .reconcile_on(wakers.trust)
        .reconcile_on(cluster.woken(namespace))
        .shutdown_on_signal()
        .graceful_shutdown_on(stopped(stop))
        .run(release::reconcile, release::error_policy, context)
        .for_each(|_| async {})
}

/// The releases in `store` that `names` picks.
fn naming(store: &Store<ModelRelease>, names: impl Fn(&ModelRelease) -> bool) -> Vec<ObjectRef<ModelRelease>> {
    store.state().into_iter().filter(|r| names(r)).map(|r| ObjectRef::from_obj(&*r)).collect()
}

//! Cluster repositories: one watch, one controller and one trust cache for the whole
//! process, read by every scope's releases; the labels of namespaces (policies select
//! by them); and the copies of a cluster repository's trust material in the namespaces
//! of its releases (pods mount ConfigMaps of their own namespace only).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::broadcast;
use tracing::instrument;

use super::{Error, Synced, TrustCache, repository, shared_watch::shared_reflector};
use crate::{
    api::{ClusterModelRepository, FIELD_MANAGER, ModelRelease},
    metrics::Metrics,
    trust::state::{Mirror, state_configmap},
};

/// Wake-ups each scope may fall behind by before it misses one (it then looks again at
/// its next timer: `WAIT_FOR_TRUST` while a verdict is unknown).
const BROADCAST: usize = 4096;

/// What every scope's releases read about cluster repositories.
pub struct Cluster {
    /// Where the pins, CA bundles and trust records of cluster repositories live (the
    /// operator's namespace: tenants cannot write there).
    pub namespace: String,
    repositories: Store<ClusterModelRepository>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    pub trust: TrustCache<ClusterModelRepository>,
    /// What each repository's last refresh verified (by UID: a repository deleted and
    /// made again starts with none): what the copies hold.
    material: Mutex<HashMap<String, Mirror>>,
    /// The digest of the copy last written, by (namespace, repository UID).
    copied: Mutex<HashMap<(String, String), String>>,
    wake: broadcast::Sender<ObjectRef<ModelRelease>>,
    changed: broadcast::Sender<Arc<ClusterModelRepository>>,
    /// Namespaces whose labels (what policies select by) may have changed.
    relabelled: broadcast::Sender<Arc<PartialObjectMeta<Namespace>>>,
    synced: [Synced; 2],
    /// `false` in a namespaced install (no cluster-wide rights): no cluster repositories.
    enabled: std::sync::atomic::AtomicBool,
}

struct Ctx {
    role: super::Role,
    client: Client,
    cluster: Arc<Cluster>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// The cluster repositories' watches and controller; the future runs them until
    /// SIGTERM.
    pub fn start(
        client: &Client,
        settings: &super::Settings,
        metrics: &Arc<Metrics>,
        role: super::Role,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let namespace = settings.trust_namespace.clone();
        let selected = match &settings.cluster_repository_selector {
            Some(selector) => watcher::Config::default().labels(selector),
            None => watcher::Config::default(),
        };
        let (store, [events, changes], repos_synced, repos_watch) =
            shared_reflector(Api::<ClusterModelRepository>::all(client.clone()), selected, |_| {}, None);
        // Only labels are read: what policies select by.
        let (namespaces, [ns_changes], ns_synced, ns_watch) = shared_reflector(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
            |ns| ns.metadata.annotations = None,
            None,
        );
        let (trust, wakers) = TrustCache::new();
        let cluster = Arc::new(Self {
            namespace,
            repositories: store.clone(),
            namespaces,
            trust,
            material: Mutex::default(),
            copied: Mutex::default(),
            wake: broadcast::channel(BROADCAST).0,
            changed: broadcast::channel(BROADCAST).0,
            relabelled: broadcast::channel(BROADCAST).0,
            synced: [repos_synced, ns_synced],
            enabled: std::sync::atomic::AtomicBool::new(true),
        });
        let reporter = Reporter { controller: "modelgate".into(), instance: std::env::var("POD_NAME").ok() };
        let ctx = Arc::new(Ctx {
            role,
            client: client.clone(),
            cluster: cluster.clone(),
            recorder: Recorder::new(client.clone(), reporter),
            metrics: metrics.clone(),
        });
        let controller = Controller::for_shared_stream(events, store)
            .reconcile_on(wakers.repositories)
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {});
        let (wake, changed, relabelled) = (cluster.wake.clone(), cluster.changed.clone(), cluster.relabelled.clone());
        // No receiver (no scope yet) is not an error: nobody waits.
        let forward_wakes = wakers.releases.for_each(move |r| {
            let _ = wake.send(r);
            async {}
        });
        let forward_changes = changes.for_each(move |r| {
            let _ = changed.send(r);
            async {}
        });
        let forward_namespaces = ns_changes.for_each(move |ns| {
            let _ = relabelled.send(ns);
            async {}
        });
        let enabled = settings.cluster_repositories;
        cluster.enabled.store(enabled, std::sync::atomic::Ordering::Release);
        let run = async move {
            if !enabled {
                return;
            }
            let watches = async move {
                tokio::join!(repos_watch, ns_watch);
            };
            tokio::select! {
                () = controller => {}
                () = watches => {}
                () = forward_wakes => {}
                () = forward_changes => {}
                () = forward_namespaces => {}
            }
        };
        (cluster, run)
    }

    /// Whether both watches delivered their first full list (or nothing is watched).
    pub fn ready(&self) -> bool {
        !self.enabled() || self.synced.iter().all(|s| s.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Whether this installation serves cluster repositories at all.
    pub fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether every cluster repository has been refreshed since this view started,
    /// with a verdict on every model asked about.
    pub fn settled(&self) -> bool {
        !self.enabled() || self.repositories.state().iter().filter_map(|r| r.uid()).all(|uid| self.trust.settled(&uid))
    }

    /// Every cluster repository that exists now, with its UID.
    pub fn repositories(&self) -> Vec<(ObjectRef<ClusterModelRepository>, String)> {
        self.repositories.state().iter().filter_map(|r| Some((ObjectRef::from_obj(&**r), r.uid()?))).collect()
    }

    pub fn repository(&self, name: &str) -> Option<Arc<ClusterModelRepository>> {
        self.repositories.get(&ObjectRef::new(name))
    }

    /// A namespace's labels, if the operator has seen the namespace.
    pub fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(&ObjectRef::new(namespace)).map(|ns| ns.labels().clone())
    }

    /// Releases (of namespace `scope`, or all) whose verdicts arrived or changed.
    pub fn woken(&self, scope: Option<String>) -> impl Stream<Item = ObjectRef<ModelRelease>> + Send + use<> {
        received(self.wake.subscribe())
            .filter(move |r| std::future::ready(scope.is_none() || r.namespace.as_deref() == scope.as_deref()))
    }

    /// Cluster repositories that appeared or changed (refreshed, revoked, edited).
    pub fn changes(&self) -> impl Stream<Item = Arc<ClusterModelRepository>> + Send + use<> {
        received(self.changed.subscribe())
    }

    /// Namespaces that appeared or changed: a policy may now select them, or no longer.
    pub fn namespace_changes(&self) -> impl Stream<Item = Arc<PartialObjectMeta<Namespace>>> + Send + use<> {
        received(self.relabelled.subscribe())
    }

    /// The copy of `repository`'s (UID) trust material `namespace` needs: `None` before
    /// its first successful refresh, `Some((mirror, false))` when the one last written
    /// there is current.
    fn copy_due(&self, namespace: &str, uid: &str) -> Option<(Mirror, bool)> {
        let mirror = lock(&self.material).get(uid).cloned()?;
        let key = (namespace.to_string(), uid.to_string());
        let due = lock(&self.copied).get(&key) != Some(&mirror.digest());
        Some((mirror, due))
    }

    fn copied(&self, namespace: &str, uid: &str, digest: String) {
        lock(&self.copied).insert((namespace.to_string(), uid.to_string()), digest);
    }

    /// Forgets what belongs to repositories that no longer exist.
    fn retain(&self, live: &std::collections::HashSet<String>) {
        self.trust.retain(live);
        lock(&self.material).retain(|uid, _| live.contains(uid));
        lock(&self.copied).retain(|(_, uid), _| live.contains(uid));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A broadcast as a stream; a receiver that fell behind skips what it missed.
fn received<T: Clone + Send + 'static>(rx: broadcast::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Name of a cluster repository's trust record in the operator's namespace.
fn record_name(repository: &str) -> String {
    state_configmap(&format!("cmrepo-{repository}"))
}

#[instrument(skip_all, fields(cluster_repository = %repo.name_any()))]
async fn reconcile(repo: Arc<ClusterModelRepository>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let cluster = &ctx.cluster;
    if cluster.ready() {
        cluster.retain(&cluster.repositories.state().iter().filter_map(|r| r.uid()).collect());
    }
    let name = repo.name_any();
    let uid = repo.uid().ok_or(Error::NoUid { kind: "ClusterModelRepository" })?;
    let place = repository::Place {
        role: ctx.role,
        configmaps: Api::namespaced(ctx.client.clone(), &cluster.namespace),
        record: record_name(&name),
        api: Api::all(ctx.client.clone()),
        trust: &cluster.trust,
        recorder: &ctx.recorder,
        metrics: &ctx.metrics,
    };
    // Kept before the status is written: the releases that write wakes find it.
    let keep = |v: &repository::Verified| {
        let mirror = Mirror::new(&name, &v.pinned, v.chain.clone(), v.floors.clone(), v.ca_bundle.as_deref());
        lock(&cluster.material).insert(uid.clone(), mirror);
    };
    repository::refresh(&*repo, &place, keep).await
}

/// A failed reconcile, logged and retried; counted by the leader's metrics only.
fn error_policy(repo: Arc<ClusterModelRepository>, error: &Error, ctx: Arc<Ctx>) -> Action {
    let counted = (ctx.role == super::Role::Leading).then_some(&*ctx.metrics);
    repository::error_policy(repo, error, counted)
}

/// Makes the copy of `repo`'s trust material in `namespace` current, if it is not.
/// `false`: there is nothing to copy yet (the repository was not verified yet).
pub async fn copy_trust(
    client: &Client,
    cluster: &Cluster,
    namespace: &str,
    repo: &ClusterModelRepository,
) -> Result<bool, Error> {
    let name = repo.name_any();
    let uid = repo.uid().ok_or(Error::NoUid { kind: "ClusterModelRepository" })?;
    let Some((mirror, due)) = cluster.copy_due(namespace, &uid) else { return Ok(false) };
    if !due {
        return Ok(true);
    }
    // Owned by the cluster repository (not its controller): deleted with it.
    let mut owner = repo.controller_owner_ref(&()).ok_or(Error::NoUid { kind: "ClusterModelRepository" })?;
    owner.controller = None;
    owner.block_owner_deletion = None;
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": mirror.name, "ownerReferences": [owner],
                     "labels": {"app.kubernetes.io/managed-by": "modelgate", "modelgate.dev/cluster-repository": name}},
        "data": mirror.data,
    });
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(&mirror.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm))
        .await
        .map_err(|source| Error::Kube { action: "copy a cluster repository's trust material", source })?;
    cluster.copied(namespace, &uid, mirror.digest());
    Ok(true)
}

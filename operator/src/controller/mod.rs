//! The only code that talks to the API server: watches, reconcile (observe, plan, act),
//! status writes through server-side apply.

mod error;
mod release;
pub mod repository;
mod trust_cache;
pub mod workload;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{ConfigMap, Pod},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        Controller, WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

pub use error::Error;
pub use trust_cache::TrustCache;

use crate::api::{LABEL_RELEASE, ModelRelease, ModelRepository};

/// How the operator runs.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Watch a single namespace instead of the whole cluster.
    pub namespace: Option<String>,
    /// Image of the `modelgate fetch` init container in model pods.
    pub fetch_image: String,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub trust: TrustCache,
    pub stores: Stores,
    pub fetch_image: String,
}

/// In-memory views of what releases own, kept current by watches (no list per reconcile).
pub struct Stores {
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

impl Stores {
    pub async fn wait_ready(&self) {
        let _ = self.replica_sets.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
    }

    fn owned_by<K>(store: &Store<K>, ns: &str, release: &str) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        store
            .state()
            .into_iter()
            .filter(|o| {
                o.meta().namespace.as_deref() == Some(ns)
                    && o.labels().get(LABEL_RELEASE).map(String::as_str) == Some(release)
            })
            .map(|o| (*o).clone())
            .collect()
    }

    pub fn replica_sets(&self, ns: &str, release: &str) -> Vec<ReplicaSet> {
        Self::owned_by(&self.replica_sets, ns, release)
    }

    pub fn pods(&self, ns: &str, release: &str) -> Vec<Pod> {
        Self::owned_by(&self.pods, ns, release)
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

/// Runs the controllers until SIGTERM or Ctrl-C.
pub async fn run(client: Client, settings: Settings) -> Result<(), Error> {
    let ns = settings.namespace.as_deref();
    ensure_crds_installed(&client, ns).await?;
    info!(namespace = ns.unwrap_or("<all>"), "modelgate operator starting");

    let releases = api::<ModelRelease>(&client, ns);
    let repositories = api::<ModelRepository>(&client, ns);
    let reporter = Reporter { controller: "modelgate".into(), instance: std::env::var("POD_NAME").ok() };

    // Watches of what releases own: the stores answer reconciles, the streams trigger
    // them (a pod turning bad wakes its release at once).
    let owned = watcher::Config::default().labels(LABEL_RELEASE).any_semantic();
    let (rs_store, rs_writer) = reflector::store();
    let rs_stream = watcher(api::<ReplicaSet>(&client, ns), owned.clone())
        .default_backoff()
        .modify(|rs| rs.managed_fields_mut().clear())
        .reflect(rs_writer)
        .touched_objects();
    let (pod_store, pod_writer) = reflector::store();
    let pod_stream = watcher(api::<Pod>(&client, ns), owned)
        .default_backoff()
        .modify(|pod| pod.managed_fields_mut().clear())
        .reflect(pod_writer)
        .touched_objects();

    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        trust: TrustCache::default(),
        stores: Stores { replica_sets: rs_store, pods: pod_store },
        fetch_image: settings.fetch_image.clone(),
    });

    let repository_controller = Controller::new(repositories.clone(), watcher::Config::default().any_semantic())
        .owns(
            api::<ConfigMap>(&client, ns),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=modelgate"),
        )
        .shutdown_on_signal()
        .run(repository::reconcile, repository::error_policy, context.clone())
        .for_each(|result| async move {
            if let Err(err) = result {
                warn!(error = %err, "repository reconcile failed");
            }
        });

    let controller = Controller::new(releases, watcher::Config::default().any_semantic());
    let store = controller.store();
    let release_controller = controller
        .owns_stream(rs_stream)
        .watches_stream(pod_stream, |pod: Pod| {
            let release = pod.labels().get(LABEL_RELEASE)?;
            Some(ObjectRef::new(release).within(&pod.namespace()?))
        })
        // A repository appearing (or changing) re-admits the releases that name it.
        .watches(repositories, watcher::Config::default(), move |repo| {
            let ns = repo.namespace();
            let name = repo.name_any();
            store
                .state()
                .into_iter()
                .filter(|r| r.namespace() == ns && r.spec.repository_ref.name == name)
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(release::reconcile, release::error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                warn!(error = %err, "release reconcile failed");
            }
        });
    futures::join!(repository_controller, release_controller);
    info!("modelgate operator stopped");
    Ok(())
}

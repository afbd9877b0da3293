//! The only code that talks to the API server: watches, reconcile (observe, plan, act),
//! status writes through server-side apply.

mod error;
mod release;
pub mod repository;

use std::sync::Arc;

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    runtime::{
        Controller,
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{info, warn};

pub use error::Error;

use k8s_openapi::api::core::v1::ConfigMap;

use crate::api::{ModelRelease, ModelRepository};

/// How the operator runs.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Watch a single namespace instead of the whole cluster.
    pub namespace: Option<String>,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
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
    let context = Arc::new(Context { recorder: Recorder::new(client.clone(), reporter), client: client.clone() });

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

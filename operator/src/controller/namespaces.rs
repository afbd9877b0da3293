//! Namespaces picked by a label selector (`--namespace-selector`, the chart's labelled
//! shards): each gets its own watches and controllers while its labels match, and loses
//! them when they stop matching. Moving a namespace between shards is then one
//! `kubectl label --overwrite`: the old shard stops, the new one starts, and a rollout in
//! progress is decided once because every decision is a compare-and-swap on the release.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, atomic::AtomicUsize};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PartialObjectMeta},
    runtime::{WatchStreamExt, watcher},
};
use tracing::{info, warn};

use super::{Error, Settings, scope};
use crate::metrics::Metrics;

/// Fails at start, with what to write instead, when the API server refuses the
/// selector or the operator may not list namespaces (the watch would retry forever).
pub async fn check_selector(client: &Client, selector: &str) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.list_metadata(&ListParams::default().labels(selector).limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 400 => {
            Err(Error::BadNamespaceSelector { selector: selector.to_string(), reason: status.message })
        }
        Err(source) => Err(Error::Kube { action: "list the namespaces --namespace-selector picks", source }),
    }
}

/// Serves the namespaces `selector` picks until SIGTERM, then waits for every scope to
/// finish the reconciles it has in flight.
pub async fn serve_labelled(client: &Client, selector: &str, settings: &Settings, metrics: &Arc<Metrics>) {
    // Only names are needed: metadata-only, and nothing kept but the names served.
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let events = watcher::watcher(namespaces, watcher::Config::default().labels(selector)).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut served: HashMap<String, tokio::sync::watch::Sender<bool>> = HashMap::new();
    let mut scopes = tokio::task::JoinSet::new();
    // A (re-)list's names, compared with what is served when it is done.
    let mut listed = BTreeSet::new();
    let mut first_list = true;
    let terminated = super::terminated();
    let mut terminated = std::pin::pin!(terminated);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = &mut terminated => break,
            // Reap finished scopes (namespaces that left) as they end.
            Some(_) = scopes.join_next(), if !scopes.is_empty() => continue,
        };
        let Some(event) = event else { break };
        let mut start = |ns: String, unready: Option<Arc<AtomicUsize>>, served: &mut HashMap<_, _>| {
            if served.contains_key(&ns) {
                return;
            }
            info!(namespace = %ns, selector, "namespace selected: serving it");
            let (stop, stopping) = tokio::sync::watch::channel(false);
            scopes.spawn(scope(client, Some(ns.clone()), settings, metrics, unready, Some(stopping)));
            served.insert(ns, stop);
        };
        let stop = |ns: &str, served: &mut HashMap<String, tokio::sync::watch::Sender<bool>>| {
            if let Some(stop) = served.remove(ns) {
                info!(namespace = %ns, selector, "namespace no longer selected: finishing its reconciles and letting go");
                let _ = stop.send(true);
            }
        };
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(ns)) => {
                listed.insert(ns.name_any());
            }
            Ok(watcher::Event::InitDone) => {
                let gone: Vec<String> = served.keys().filter(|ns| !listed.contains(*ns)).cloned().collect();
                for ns in gone {
                    stop(&ns, &mut served);
                }
                // The operator is ready once the namespaces selected at start have
                // their caches; one selected later does not make it unready.
                let unready = first_list.then(|| Arc::new(AtomicUsize::new(listed.len())));
                if listed.is_empty() && first_list {
                    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                first_list = false;
                for ns in std::mem::take(&mut listed) {
                    start(ns, unready.clone(), &mut served);
                }
            }
            // A label selector's watch reports an object that stops matching as deleted.
            Ok(watcher::Event::Apply(ns)) => start(ns.name_any(), None, &mut served),
            Ok(watcher::Event::Delete(ns)) => stop(&ns.name_any(), &mut served),
            Err(e) => {
                warn!(error = %e, selector, "namespace watch failed; retrying (the operator needs list and watch on namespaces)")
            }
        }
    }
    // SIGTERM: each scope's controllers stop by themselves (`shutdown_on_signal`).
    while scopes.join_next().await.is_some() {}
}

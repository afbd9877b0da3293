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

/// The namespaces being served: each one's scope, and the switch that stops it.
struct Served<'a> {
    client: &'a Client,
    selector: &'a str,
    settings: &'a Settings,
    shared: &'a super::Shared,
    stops: HashMap<String, tokio::sync::watch::Sender<bool>>,
    scopes: tokio::task::JoinSet<()>,
}

impl Served<'_> {
    fn start(&mut self, ns: String, unready: Option<Arc<AtomicUsize>>) {
        if self.stops.contains_key(&ns) {
            return;
        }
        info!(namespace = %ns, selector = self.selector, "namespace selected: serving it");
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let scope = scope(self.client, Some(ns.clone()), self.settings, self.shared, unready, Some(stopping));
        self.scopes.spawn(scope);
        self.stops.insert(ns, stop);
    }

    fn stop(&mut self, ns: &str) {
        if let Some(stop) = self.stops.remove(ns) {
            info!(namespace = %ns, selector = self.selector, "namespace no longer selected: finishing its reconciles and letting go");
            let _ = stop.send(true);
        }
    }
}

/// Serves the namespaces `selector` picks until SIGTERM, then waits for every scope to
/// finish the reconciles it has in flight.
pub async fn serve_labelled(client: &Client, selector: &str, settings: &Settings, shared: &super::Shared) {
    // Only names are needed: metadata-only, and nothing kept but the names served.
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let events = watcher::watcher(namespaces, watcher::Config::default().labels(selector)).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut served =
        Served { client, selector, settings, shared, stops: HashMap::new(), scopes: tokio::task::JoinSet::new() };
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
            Some(_) = served.scopes.join_next(), if !served.scopes.is_empty() => continue,
        };
        let Some(event) = event else { break };
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(ns)) => {
                listed.insert(ns.name_any());
            }
            Ok(watcher::Event::InitDone) => {
                let gone: Vec<String> = served.stops.keys().filter(|ns| !listed.contains(*ns)).cloned().collect();
                for ns in gone {
                    served.stop(&ns);
                }
                // The operator is ready once the namespaces selected at start have
                // their caches; one selected later does not make it unready.
                let unready = first_list.then(|| Arc::new(AtomicUsize::new(listed.len())));
                if listed.is_empty() && first_list {
                    shared.metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                first_list = false;
                for ns in std::mem::take(&mut listed) {
                    served.start(ns, unready.clone());
                }
            }
            // A label selector's watch reports an object that stops matching as deleted.
            Ok(watcher::Event::Apply(ns)) => served.start(ns.name_any(), None),
            Ok(watcher::Event::Delete(ns)) => served.stop(&ns.name_any()),
            Err(e) => {
                warn!(error = %e, selector, "namespace watch failed; retrying (the operator needs list and watch on namespaces)")
            }
        }
    }
    // SIGTERM: each scope's controllers stop by themselves (`shutdown_on_signal`).
    while served.scopes.join_next().await.is_some() {}
}

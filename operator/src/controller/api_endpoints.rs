//! The API server's own addresses (EndpointSlices of Service `default/kubernetes`), kept
//! current for the gates' egress policy: a tenant holds the cluster CA in every
//! namespace (`kube-root-ca.crt`), so the API server behind its Service address must be
//! out of a gate's reach too.

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tracing::warn;

use crate::gates::ApiEndpoints;

/// Watches the slices until the process ends. Until the first list arrives, gates send
/// nothing (`ApiEndpoints::watched`); a watch that cannot list says what RBAC it needs.
pub async fn watch(client: Client, endpoints: ApiEndpoints) {
    let api: Api<EndpointSlice> = Api::namespaced(client, "default");
    let config = watcher::Config::default().labels(crate::readers::API_SERVER_SLICES);
    let (store, writer) = reflector::store();
    let mut events = std::pin::pin!(watcher(api, config).default_backoff().reflect(writer));
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitApply(_) | watcher::Event::Init) => {}
            Ok(_) => {
                let addresses = crate::readers::api_server_addresses(store.state().iter().map(|s| &**s));
                if addresses.is_empty() {
                    warn!(
                        "the kubernetes Service lists no endpoints (an API server without an endpoint reconciler?): \
                         gates are kept only from its Service address and the addresses seen before"
                    );
                }
                endpoints.set(addresses);
            }
            Err(e) => warn!(
                error = %e,
                "cannot read the API server's addresses (EndpointSlices in namespace default): gates send nothing \
                 until they are known; the operator needs get, list and watch on endpointslices there"
            ),
        }
    }
}

//! `modelgate run`: the operator.

use clap::Args;

use crate::controller::{self, Settings};

#[derive(Debug, Args)]
pub struct Run {
    /// Watch only this namespace (namespaced install). Default: all namespaces.
    #[arg(long, env = "MODELGATE_NAMESPACE")]
    namespace: Option<String>,
    /// Image of the init container that fetches and verifies models in model pods;
    /// the chart sets it to the operator's own image.
    #[arg(long, env = "MODELGATE_FETCH_IMAGE", default_value = concat!("modelgate/modelgate:", env!("CARGO_PKG_VERSION")))]
    fetch_image: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`. Loopback by default; the chart
    /// opens it to the pod network for Prometheus and the kubelet's probes.
    #[arg(long, env = "MODELGATE_HTTP_ADDRESS", default_value = "127.0.0.1:8080")]
    http_address: std::net::SocketAddr,
    /// Reconcile only while holding a Lease, so several replicas are safe.
    #[arg(long, env = "MODELGATE_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the watched namespace, else default).
    #[arg(long, env = "MODELGATE_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
}

impl Run {
    pub async fn run(self) -> anyhow::Result<()> {
        // In a pod: the ServiceAccount; outside: $KUBECONFIG or ~/.kube/config.
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("cannot build a Kubernetes client ({e}); run inside a cluster or point KUBECONFIG at one")
        })?;
        let leader_election = self.leader_elect.then(|| controller::LeaderElection {
            namespace: self
                .leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .or_else(|| self.namespace.clone())
                .unwrap_or_else(|| "default".into()),
            name: "modelgate-leader".into(),
            identity: std::env::var("POD_NAME").unwrap_or_else(|_| {
                format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "modelgate".into()), std::process::id())
            }),
        });
        let settings = Settings {
            namespace: self.namespace,
            fetch_image: self.fetch_image,
            http_address: self.http_address,
            leader_election,
        };
        controller::run(client, settings).await?;
        Ok(())
    }
}

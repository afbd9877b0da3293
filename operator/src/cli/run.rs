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
}

impl Run {
    pub async fn run(self) -> anyhow::Result<()> {
        // In a pod: the ServiceAccount; outside: $KUBECONFIG or ~/.kube/config.
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("cannot build a Kubernetes client ({e}); run inside a cluster or point KUBECONFIG at one")
        })?;
        controller::run(client, Settings { namespace: self.namespace, fetch_image: self.fetch_image }).await?;
        Ok(())
    }
}

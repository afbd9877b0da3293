//! `modelgate run`: the operator.

use clap::Args;

use crate::controller::{self, Settings};

#[derive(Debug, Args)]
pub struct Run {
    /// Watch only this namespace (namespaced install). Default: all namespaces.
    #[arg(long, env = "MODELGATE_NAMESPACE")]
    namespace: Option<String>,
}

impl Run {
    pub async fn run(self) -> anyhow::Result<()> {
        // In a pod: the ServiceAccount; outside: $KUBECONFIG or ~/.kube/config.
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("cannot build a Kubernetes client ({e}); run inside a cluster or point KUBECONFIG at one")
        })?;
        controller::run(client, Settings { namespace: self.namespace }).await?;
        Ok(())
    }
}

//! The simulated kubelet of the test control plane; `tests/cluster/up` starts it.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    modelgate::telemetry::init(modelgate::telemetry::LogFormat::Text);
    let client = kube::Client::try_default().await?;
    tokio::select! {
        r = modelgate_tests::kubelet::run(client) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

//! `modelgate tuf`: a TUF client following the tuf-conformance client protocol, so any
//! conformance suite can test modelgate's client workflow as it is.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use k8s_openapi::jiff::Timestamp;
use reqwest::Url;

use crate::trust::{Floors, Store, Transport, TransportOptions, Updater, fetch, target};

#[derive(Debug, Args)]
pub struct Tuf {
    /// Base URL of the repository's metadata.
    #[arg(long)]
    metadata_url: Option<Url>,
    /// Directory of trusted metadata (`<role>.json`, byte for byte as served).
    #[arg(long)]
    metadata_dir: PathBuf,
    /// Target to download (repeatable, fetched in order).
    #[arg(long = "target-name")]
    target_names: Vec<String>,
    /// Where downloaded targets are written.
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// Base URL of the targets.
    #[arg(long)]
    target_base_url: Option<Url>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Store the trusted root; no network access.
    Init {
        /// The trusted root.json.
        trusted_root: PathBuf,
    },
    /// Run the top-level client workflow.
    Refresh,
    /// Refresh, then download each --target-name.
    Download,
}

impl Tuf {
    pub async fn run(self) -> anyhow::Result<()> {
        let store = Store::new(&self.metadata_dir)?;
        // Plain http to loopback is allowed here only: conformance suites serve so.
        let transport = Transport::new(TransportOptions { allow_http_loopback: true, ..Default::default() })?;
        let url = || self.metadata_url.clone().context("--metadata-url is required");
        match self.action {
            Action::Init { trusted_root } => {
                let bytes =
                    std::fs::read(&trusted_root).with_context(|| format!("cannot read {}", trusted_root.display()))?;
                // Trust it only if it is a root signed by its own keys.
                crate::trust::self_signed_root(&bytes)?;
                store.save("root", &bytes)?;
            }
            Action::Refresh => {
                let mut updater = Updater::new(store, transport, url()?, None, Floors::default(), Timestamp::now())?;
                updater.refresh().await?;
            }
            Action::Download => {
                let base = self.target_base_url.clone().context("--target-base-url is required")?;
                let dir = self.target_dir.clone().context("--target-dir is required")?;
                let mut updater = Updater::new(store, transport, url()?, None, Floors::default(), Timestamp::now())?;
                updater.refresh().await?;
                for name in &self.target_names {
                    let info = updater.target(name).await?;
                    let out = dir.join(crate::trust::metadata::quote(name));
                    if target::already_present(&out, &info) {
                        continue;
                    }
                    let url = fetch::target_url(&base, name, &info, updater.consistent_snapshot())?;
                    target::download(updater.transport(), &url, name, &info, &out).await?;
                }
            }
        }
        Ok(())
    }
}

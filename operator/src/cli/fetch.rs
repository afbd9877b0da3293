//! `modelgate fetch` (the init container of every model pod) and `modelgate verify`
//! (the same, for a person at a terminal): run the whole TUF client workflow from the
//! pinned root, then download the target while verifying it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use k8s_openapi::jiff::Timestamp;
use reqwest::Url;

use crate::trust::{Expected, Floors, Store, TargetFile, Transport, TransportOptions, Trusted, Updater, state, target};

/// Where the repository is and what anchors trust in it.
#[derive(Debug, Args)]
pub struct Repository {
    /// Base URL of the TUF metadata (https only).
    #[arg(long, alias = "repository")]
    metadata_url: Url,
    /// Base URL of the targets (https only).
    #[arg(long)]
    targets_url: Url,
    /// The pinned root.json (trust starts here).
    #[arg(long)]
    root: PathBuf,
    /// A recorded chain of later roots (JSON list, oldest first), verified from the
    /// pinned root before it is used; a missing file means none.
    #[arg(long)]
    root_chain: Option<PathBuf>,
    /// PEM bundle of CAs for the repository's certificate.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// Where metadata is kept; a temporary directory by default.
    #[arg(long)]
    metadata_dir: Option<PathBuf>,
    /// Anti-rollback floors (the versions the operator already trusts).
    #[arg(long, default_value_t = 0)]
    min_root_version: u64,
    #[arg(long, default_value_t = 0)]
    min_timestamp_version: u64,
    #[arg(long, default_value_t = 0)]
    min_snapshot_version: u64,
    #[arg(long, default_value_t = 0)]
    min_targets_version: u64,
    /// The TUF target path.
    #[arg(long)]
    target: String,
}

struct Verified {
    info: TargetFile,
    trusted: Trusted,
}

impl Repository {
    async fn verify_into(&self, out: &std::path::Path, expected: Option<&Expected>) -> anyhow::Result<Verified> {
        let ca_bundle = match &self.ca_bundle {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read CA bundle {}", p.display()))?),
            None => None,
        };
        let transport = Transport::new(TransportOptions { ca_bundle, ..Default::default() })?;
        let pin = std::fs::read(&self.root).with_context(|| format!("cannot read root {}", self.root.display()))?;
        let chain = match self.root_chain.as_ref().map(std::fs::read_to_string) {
            Some(Ok(text)) => state::parse_chain(&text)?,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Some(Err(e)) => return Err(e).context("cannot read the root chain"),
            None => Vec::new(),
        };
        let root = state::anchor(&pin, &chain)?;
        let scratch;
        let dir = match &self.metadata_dir {
            Some(d) => d.clone(),
            None => {
                scratch = tempfile::tempdir().context("cannot create a metadata directory")?;
                scratch.path().to_path_buf()
            }
        };
        let floors = Floors {
            root: self.min_root_version,
            timestamp: self.min_timestamp_version,
            snapshot: self.min_snapshot_version,
            targets: self.min_targets_version,
        };
        let mut updater = Updater::new(
            Store::new(&dir)?,
            transport,
            self.metadata_url.clone(),
            Some(&root),
            floors,
            Timestamp::now(),
        )?;
        let trusted = updater.refresh().await?;
        let info = updater.target(&self.target).await?;
        target::check_expected(&self.target, &info, expected)?;
        let url = target::target_url(&self.targets_url, &self.target, &info, updater.consistent_snapshot())?;
        target::download(updater.transport(), &url, &self.target, &info, out).await?;
        Ok(Verified { info, trusted })
    }
}

#[derive(Debug, Args)]
pub struct Fetch {
    #[command(flatten)]
    repository: Repository,
    /// The sha256 the operator verified; the signed one must equal it.
    #[arg(long)]
    sha256: String,
    /// The length the operator verified.
    #[arg(long)]
    length: u64,
    /// Where to write the verified file.
    #[arg(long)]
    out: PathBuf,
}

impl Fetch {
    pub async fn run(self) -> anyhow::Result<()> {
        let expected = Expected { sha256: self.sha256.to_lowercase(), length: self.length };
        self.repository.verify_into(&self.out, Some(&expected)).await?;
        eprintln!(
            "modelgate: verified {} ({} bytes, sha256 {}) into {}",
            self.repository.target,
            self.length,
            expected.sha256,
            self.out.display()
        );
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct Verify {
    #[command(flatten)]
    repository: Repository,
    /// Keep the verified file here (else it is discarded after checking).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Verify {
    pub async fn run(self) -> anyhow::Result<()> {
        let scratch = tempfile::tempdir()?;
        let out = self.out.clone().unwrap_or_else(|| scratch.path().join("target"));
        let Verified { info, trusted } = self.repository.verify_into(&out, None).await?;
        println!("target:    {}", self.repository.target);
        println!("length:    {}", info.length);
        for (alg, hash) in &info.hashes {
            println!("{:<10} {hash}", format!("{alg}:"));
        }
        for (role, (version, expires)) in [
            ("root", trusted.root),
            ("timestamp", trusted.timestamp),
            ("snapshot", trusted.snapshot),
            ("targets", trusted.targets),
        ] {
            println!("{:<10} version {version}, expires {expires}", format!("{role}:"));
        }
        if let Some(path) = &self.out {
            println!("written:   {}", path.display());
        }
        println!("verified:  yes");
        Ok(())
    }
}

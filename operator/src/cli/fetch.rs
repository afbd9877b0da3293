//! `modelgate fetch` (the init container of every model pod) and `modelgate verify`
//! (the same, for a person at a terminal): run the whole TUF client workflow from the
//! pinned root, then download the model's files while verifying them.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use k8s_openapi::jiff::Timestamp;

pub use crate::fetch_command::{Fetch, Repository};
use crate::trust::{
    self, Expected, Floors, ModelSet, Store, Transport, TransportOptions, TrustError, Trusted, Updater,
    fetch::{self, FetchOptions},
    state, target,
};

/// Where the repository is and what anchors trust in it.
struct Verified {
    set: ModelSet,
    trusted: Trusted,
    fetched: u64,
    /// With `--signed`: what was checked of the signature.
    signature: Option<String>,
}

impl Repository {
    /// The floors the pod holds: the operator's, raised by those recorded now (a record
    /// that holds a root chain but no floors was edited).
    fn pod_floors(&self, recorded: bool) -> anyhow::Result<Floors> {
        let given = Floors {
            root: self.min_root_version,
            timestamp: self.min_timestamp_version,
            snapshot: self.min_snapshot_version,
            targets: self.min_targets_version,
        };
        let floors = match self.floors.as_ref().map(std::fs::read_to_string) {
            Some(Ok(text)) => given.raised(state::parse_floors(&text)?),
            // A record without its floors lost them to someone's edit: the pod would
            // start from the floors of the day its ReplicaSet was made.
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound && recorded => {
                return Err(TrustError::TrustState {
                    reason: "the trust record holds a root chain but no floors.json".into(),
                }
                .into());
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => given,
            Some(Err(e)) => return Err(e).context("cannot read the recorded floors"),
            None => given,
        };
        Ok(floors)
    }

    async fn verify_into(&self, out: &std::path::Path, expected: Option<&Expected>) -> anyhow::Result<Verified> {
        let ca_bundle = match &self.ca_bundle {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read CA bundle {}", p.display()))?),
            None => None,
        };
        let transport = Transport::new(TransportOptions { ca_bundle, ..Default::default() })?;
        let pin = std::fs::read(&self.root).with_context(|| format!("cannot read root {}", self.root.display()))?;
        if let Some(want) = &self.root_sha256
            && state::pin_digest(&pin) != *want
        {
            return Err(TrustError::TrustState {
                reason: format!(
                    "the pinned root {} is not the one the operator verified (sha256 {want}): someone edited its copy",
                    self.root.display()
                ),
            }
            .into());
        }
        let (chain, recorded) = match self.root_chain.as_ref().map(std::fs::read_to_string) {
            Some(Ok(text)) => (state::parse_chain(&text)?, true),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), false),
            Some(Err(e)) => return Err(e).context("cannot read the root chain"),
            None => (Vec::new(), false),
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
        let floors = self.pod_floors(recorded)?;
        let mut updater = Updater::new(
            Store::new(&dir)?,
            transport,
            self.metadata_url.clone(),
            Some(&root),
            floors,
            Timestamp::now(),
        )?;
        let trusted = updater.refresh().await?;
        let model = self.model();
        let set = trust::model::resolve(&mut updater, &model).await?;
        if let Some(e) = expected {
            let id = set.identity();
            target::check_expected(&model.display(), &id, e)?;
        }
        // Before any model byte: the statement must name exactly the files about to be
        // fetched (each then verified against the same signed sha256).
        let signature = match self.signed {
            true => {
                let check = trust::SignatureCheck::FilesOnly;
                let now = rustls_pki_types::UnixTime::now();
                trust::model::signature(&mut updater, &self.targets_url, &set, &check, now).await?
            }
            false => None,
        };
        let options = FetchOptions {
            concurrency: self.concurrency.map_or_else(fetch::default_concurrency, usize::from),
            ..Default::default()
        };
        let consistent = updater.consistent_snapshot();
        let fetched = fetch::fetch_set(updater.transport(), &self.targets_url, consistent, &set, out, &options).await?;
        Ok(Verified { set, trusted, fetched, signature })
    }
}

impl Fetch {
    pub async fn run(self) -> anyhow::Result<()> {
        let expected = Expected { sha256: self.sha256.to_lowercase(), length: self.length, files: self.files };
        let started = std::time::Instant::now();
        let v = self.repository.verify_into(&self.out, Some(&expected)).await?;
        eprintln!(
            "modelgate: verified {} ({} files, {} bytes, sha256 {}) into {} in {:.1}s ({} bytes downloaded)",
            v.set.model,
            v.set.files.len(),
            self.length,
            expected.sha256,
            self.out.join(fetch::MODEL_DIR).display(),
            started.elapsed().as_secs_f64(),
            v.fetched,
        );
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct Verify {
    #[command(flatten)]
    repository: Repository,
    /// Keep the verified model in this new directory (else it is discarded after checking).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Verify {
    pub async fn run(self) -> anyhow::Result<()> {
        let parent = match &self.out {
            Some(out) => out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")),
            None => &std::env::temp_dir(),
        };
        let scratch = tempfile::tempdir_in(parent).context("cannot create a scratch directory")?;
        let Verified { set, trusted, signature, .. } = self.repository.verify_into(scratch.path(), None).await?;
        let id = set.identity();
        println!("model:     {}", set.model);
        match set.files.as_slice() {
            [one] => {
                println!("target:    {}", one.target);
                println!("length:    {}", one.info.length);
                for (alg, hash) in &one.info.hashes {
                    println!("{:<10} {hash}", format!("{alg}:"));
                }
            }
            files => {
                println!("files:     {}", files.len());
                println!("length:    {}", id.length);
                println!("manifest:  sha256 {}", id.sha256);
                for f in files {
                    println!("  {}  {:>12}  {}", f.sha256, f.info.length, f.target);
                }
            }
        }
        for (role, (version, expires)) in [
            ("root", trusted.root),
            ("timestamp", trusted.timestamp),
            ("snapshot", trusted.snapshot),
            ("targets", trusted.targets),
        ] {
            println!("{:<10} version {version}, expires {expires}", format!("{role}:"));
        }
        if let Some(signer) = signature {
            println!("signature: names exactly these files; signer {signer}");
        }
        if let Some(path) = &self.out {
            std::fs::rename(scratch.path().join(fetch::MODEL_DIR), path)
                .with_context(|| format!("cannot move the verified model to {}", path.display()))?;
            println!("written:   {}", path.display());
        }
        println!("verified:  yes");
        Ok(())
    }
}

//! The `modelgate fetch` command line: the contract between the operator, which writes
//! it into every model pod's init container, and `modelgate fetch`, which parses it.
//! One type for both: `Fetch::to_args` writes what clap reads back (a unit test holds
//! them together).

use std::path::PathBuf;

use clap::Args;
use reqwest::Url;

use crate::api::ModelRef;

/// Where a model's trust comes from and which model it is.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct Repository {
    /// Base URL of the TUF metadata (https only).
    #[arg(long, alias = "repository")]
    pub metadata_url: Url,
    /// Base URL of the targets (https only).
    #[arg(long)]
    pub targets_url: Url,
    /// The pinned root.json (trust starts here).
    #[arg(long)]
    pub root: PathBuf,
    /// sha256 (hex) the pinned root must have: a pin mounted from a ConfigMap others
    /// can write (a cluster repository's copy in the release's namespace) is refused
    /// unless it is the one the operator verified.
    #[arg(long, value_parser = sha256_hex)]
    pub root_sha256: Option<String>,
    /// A recorded chain of later roots (JSON list, oldest first), verified from the
    /// pinned root before it is used; a missing file means none.
    #[arg(long)]
    pub root_chain: Option<PathBuf>,
    /// PEM bundle of CAs for the repository's certificate.
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
    /// Where metadata is kept; a temporary directory by default.
    #[arg(long)]
    pub metadata_dir: Option<PathBuf>,
    /// Anti-rollback floors (the versions the operator already trusts).
    #[arg(long, default_value_t = 0)]
    pub min_root_version: u64,
    #[arg(long, default_value_t = 0)]
    pub min_timestamp_version: u64,
    #[arg(long, default_value_t = 0)]
    pub min_snapshot_version: u64,
    #[arg(long, default_value_t = 0)]
    pub min_targets_version: u64,
    /// The floors the operator keeps current (trust-state ConfigMap, `floors.json`): they
    /// can only raise the `--min-*-version` floors; a missing file means none.
    #[arg(long)]
    pub floors: Option<PathBuf>,
    /// A TUF target path of the model; repeat it for a model of several files.
    #[arg(long, required_unless_present = "prefix")]
    pub target: Vec<String>,
    /// Every target under this directory (ending with '/') instead of `--target`.
    #[arg(long, conflicts_with = "target")]
    pub prefix: Option<String>,
    /// The model's signature (OpenSSF model signing, the TUF target beside it) must be
    /// signed by the repository and name exactly the model's files with their signed
    /// sha256s; its signer the operator has verified against the security team's policy.
    #[arg(long)]
    pub signed: bool,
    /// Files downloaded at once; one per CPU (at most 8) by default.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: Option<u16>,
}

impl Repository {
    /// The model the arguments name.
    pub fn model(&self) -> ModelRef {
        match &self.prefix {
            Some(p) => ModelRef::Prefix(p.clone()),
            None => ModelRef::of_status("", &self.target),
        }
    }

    /// For a model: its targets (`--target` each) or its prefix.
    pub fn select(&mut self, model: &ModelRef) {
        (self.target, self.prefix) = match model {
            ModelRef::Prefix(p) => (Vec::new(), Some(p.clone())),
            // An image's pod fetches and checks its manifest, as signed now: the node pulls
            // the image by the digest the operator verified.
            ModelRef::File(t) | ModelRef::Image(t) => (vec![t.clone()], None),
            ModelRef::List(l) => (l.clone(), None),
        };
    }

    fn write(&self, args: &mut Vec<String>) {
        let mut flag = |name: &str, value: String| args.extend([format!("--{name}"), value]);
        flag("metadata-url", self.metadata_url.to_string());
        flag("targets-url", self.targets_url.to_string());
        flag("root", self.root.display().to_string());
        let paths =
            [("root-chain", &self.root_chain), ("ca-bundle", &self.ca_bundle), ("metadata-dir", &self.metadata_dir)];
        if let Some(sha256) = &self.root_sha256 {
            flag("root-sha256", sha256.clone());
        }
        for (name, path) in paths {
            if let Some(path) = path {
                flag(name, path.display().to_string());
            }
        }
        for (role, version) in [
            ("root", self.min_root_version),
            ("timestamp", self.min_timestamp_version),
            ("snapshot", self.min_snapshot_version),
            ("targets", self.min_targets_version),
        ] {
            if version > 0 {
                flag(&format!("min-{role}-version"), version.to_string());
            }
        }
        if let Some(floors) = &self.floors {
            flag("floors", floors.display().to_string());
        }
        for target in &self.target {
            flag("target", target.clone());
        }
        if let Some(prefix) = &self.prefix {
            flag("prefix", prefix.clone());
        }
        if let Some(n) = self.concurrency {
            flag("concurrency", n.to_string());
        }
        if self.signed {
            args.push("--signed".into());
        }
    }
}

/// `modelgate fetch`: a model verified into a volume, as the operator verified it.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct Fetch {
    #[command(flatten)]
    pub repository: Repository,
    /// The sha256 the operator verified (of the file, or of a set's manifest); the
    /// signed one must equal it.
    #[arg(long)]
    pub sha256: String,
    /// The length the operator verified (of all files together).
    #[arg(long)]
    pub length: u64,
    /// The number of files the operator verified.
    #[arg(long, default_value_t = 1)]
    pub files: usize,
    /// The volume to fetch into: the verified model appears as `<out>/model`, complete
    /// or not at all; a download interrupted earlier is resumed.
    #[arg(long)]
    pub out: PathBuf,
}

impl Fetch {
    /// The container's arguments (`fetch` first), which parse back into `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["fetch".to_string()];
        self.repository.write(&mut args);
        args.extend([
            "--sha256".into(),
            self.sha256.clone(),
            "--length".into(),
            self.length.to_string(),
            "--files".into(),
            self.files.to_string(),
            "--out".into(),
            self.out.display().to_string(),
        ]);
        args
    }
}

/// A sha256 as 64 lowercase hex digits.
pub fn sha256_hex(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(s.to_string())
    } else {
        Err("expected 64 lowercase hex digits".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        Fetch(Fetch),
    }

    #[test]
    fn what_the_operator_writes_is_what_the_pod_reads() {
        let repository = Repository {
            metadata_url: Url::parse("https://tuf.example:8443/metadata/").unwrap(),
            targets_url: Url::parse("https://tuf.example:8443/targets/").unwrap(),
            root: "/var/run/modelgate/pin/root.json".into(),
            root_sha256: Some("a".repeat(64)),
            root_chain: Some("/var/run/modelgate/trust/chain.json".into()),
            ca_bundle: Some("/var/run/modelgate/ca/ca.crt".into()),
            metadata_dir: None,
            min_root_version: 2,
            min_timestamp_version: 0,
            min_snapshot_version: 7,
            min_targets_version: 3,
            floors: Some("/var/run/modelgate/trust/floors.json".into()),
            target: Vec::new(),
            prefix: None,
            signed: true,
            concurrency: None,
        };
        for model in [
            ModelRef::File("m/1/model.onnx".into()),
            ModelRef::List(vec!["m/1/a.bin".into(), "m/1/b.bin".into()]),
            ModelRef::Prefix("m/1/".into()),
        ] {
            let mut fetch = Fetch {
                repository: repository.clone(),
                sha256: "b".repeat(64),
                length: 42,
                files: 2,
                out: "/var/run/modelgate/model".into(),
            };
            fetch.repository.select(&model);
            let args = fetch.to_args();
            let parsed = Cli::try_parse_from(std::iter::once("modelgate".to_string()).chain(args.clone())).unwrap();
            let Command::Fetch(back) = parsed.command;
            assert_eq!(back, fetch, "{args:?}");
            assert_eq!(back.repository.model(), model);
        }
    }
}

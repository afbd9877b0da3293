//! `modelgate crd`: the CRDs as YAML, on stdout or as files.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::api::crds_yaml;

#[derive(Debug, Args)]
pub struct Crd {
    /// Write one file per CRD into this directory instead of printing them; repeat to
    /// write several copies (the repository's `crds/` and the chart's).
    #[arg(long)]
    out: Vec<PathBuf>,
    /// Also write the API reference (Markdown) generated from the same schemas.
    #[arg(long)]
    reference: Option<PathBuf>,
}

impl Crd {
    pub async fn run(self) -> anyhow::Result<()> {
        let files = crds_yaml();
        if let Some(path) = &self.reference {
            std::fs::write(path, crate::api::reference_markdown())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        if self.out.is_empty() && self.reference.is_none() {
            let docs: Vec<&str> = files.iter().map(|(_, yaml)| yaml.as_str()).collect();
            print!("{}", docs.join("---\n"));
        }
        for dir in &self.out {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, yaml) in &files {
                let path = dir.join(name);
                std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        Ok(())
    }
}

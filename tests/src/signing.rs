//! Model signatures as publishers make them: OpenSSF model signing's reference
//! implementation (`model_signing` from PyPI, in the test venv) signing with keys and
//! certificates that `tests/provenance/pki.py` makes as a security team's tools would.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{harness::repo_root, tuf::python};

/// A signing key pair, a CA, and certificates under it, in a temporary directory.
pub struct Signers {
    dir: tempfile::TempDir,
}

impl Signers {
    /// Keys `alice` and `mallory`, CA `ml`, certificate `ci` for `ml-ci@example.com` and
    /// certificate `old` for the same identity, expired yesterday.
    pub fn new() -> anyhow::Result<Self> {
        let signers = Self { dir: tempfile::tempdir()? };
        for args in [
            &["key", "alice"][..],
            &["key", "mallory"],
            &["ca", "ml"],
            &["cert", "ml", "ci", "ml-ci@example.com"],
            &["cert", "ml", "old", "ml-ci@example.com", "--expired"],
        ] {
            signers.pki(args)?;
        }
        Ok(signers)
    }

    fn pki(&self, args: &[&str]) -> anyhow::Result<()> {
        let (cmd, rest) = args.split_first().context("a command")?;
        let out = Command::new(python())
            .arg(repo_root().join("tests/provenance/pki.py"))
            .arg(cmd)
            .arg(self.dir.path())
            .args(rest)
            .output()
            .context("run tests/provenance/pki.py")?;
        if !out.status.success() {
            bail!("pki.py {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `NAME.pub`, `NAME.pem`, `NAME.key` of this directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Signs `model` (a directory or one file) with key `name` into `out`.
    pub fn sign_with_key(&self, model: &Path, name: &str, out: &Path) -> anyhow::Result<()> {
        let key = self.file(&format!("{name}.key"));
        model_signing(&["sign", "key"], model, &[("--private_key", &key)], out)
    }

    /// Signs `model` with certificate `name` (chained to CA `ml`) into `out`.
    pub fn sign_with_certificate(&self, model: &Path, name: &str, out: &Path) -> anyhow::Result<()> {
        let (key, cert, ca) =
            (self.file(&format!("{name}.key")), self.file(&format!("{name}.pem")), self.file("ml.pem"));
        let options = [("--private_key", &key), ("--signing_certificate", &cert), ("--certificate_chain", &ca)];
        model_signing(&["sign", "certificate"], model, &options, out)
    }
}

fn model_signing(command: &[&str], model: &Path, options: &[(&str, &PathBuf)], out: &Path) -> anyhow::Result<()> {
    let bin = python().with_file_name("model_signing");
    let mut cmd = Command::new(&bin);
    cmd.args(command).arg(model);
    for (flag, path) in options {
        cmd.arg(flag).arg(path);
    }
    let done = cmd.arg("--signature").arg(out).output().with_context(|| format!("run {}", bin.display()))?;
    if !done.status.success() {
        bail!("model_signing {} failed: {}", command.join(" "), String::from_utf8_lossy(&done.stderr));
    }
    Ok(())
}

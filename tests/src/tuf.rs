//! TUF repositories for the trust tests: built by python-tuf (`tests/tuf/scenarios.py`)
//! and served over HTTPS on 127.0.0.1 by `tests/tuf/serve.py` with a fresh test CA.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

use anyhow::{Context, bail};

use crate::harness::repo_root;

/// The Python with python-tuf (`tests/setup` makes it).
pub fn python() -> PathBuf {
    std::env::var_os("MODELGATE_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/modelgate/venv/bin/python")
    })
}

/// All scenarios, generated once per test process.
pub fn scenarios() -> anyhow::Result<&'static Path> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        remove_stale_scenarios();
        let dir = std::env::temp_dir().join(format!("modelgate-tuf-scenarios-{}", std::process::id()));
        let out = Command::new(python())
            .arg(repo_root().join("tests/tuf/scenarios.py"))
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}; run tests/setup", python().display()))?;
        if !out.status.success() {
            return Err(format!("scenarios.py failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(dir)
    });
    dir.as_deref().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Scenario folders of test processes that are gone (a static cannot clean up after
/// itself at exit, so the next run does).
fn remove_stale_scenarios() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("modelgate-tuf-scenarios-").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The real test node's bridge address: on this machine, and the one host address that
/// pods can reach (`tests/cluster/node`).
pub const POD_GATEWAY: &str = "10.244.0.1";

/// A file server on 127.0.0.1 (or on the pod gateway), stopped when dropped (or when this
/// process dies).
pub struct Server {
    child: Child,
    pub host: &'static str,
    pub port: u16,
    /// PEM of the CA that signed the server's certificate (HTTPS only).
    pub ca: Option<PathBuf>,
}

impl Server {
    pub fn https(root: &Path) -> anyhow::Result<Self> {
        Self::start(root, &[])
    }

    /// HTTPS on 127.0.0.1 whose `/slow/...` paths send 6 KiB a second (a benchmark's
    /// trickling repository).
    pub fn https_trickling(root: &Path) -> anyhow::Result<Self> {
        Self::start(root, &["--slow-rate", "6144"])
    }

    pub fn plain_http(root: &Path) -> anyhow::Result<Self> {
        Self::start(root, &["--plain"])
    }

    /// HTTPS on the pod gateway, where the real node's pods (and this machine) reach it.
    pub fn https_for_pods(root: &Path) -> anyhow::Result<Self> {
        Self::start(root, &["--host", POD_GATEWAY])
    }

    fn start(root: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/tuf/serve.py"))
            .arg(root)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start tests/tuf/serve.py")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let ready: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("serve.py said {line:?}"))?;
        let Some(port) = ready["port"].as_u64() else { bail!("serve.py gave no port: {line}") };
        let ca = (!extra.contains(&"--plain")).then(|| PathBuf::from(ready["ca"].as_str().unwrap_or_default()));
        let host = if extra.contains(&POD_GATEWAY) { POD_GATEWAY } else { "127.0.0.1" };
        Ok(Self { child, host, port: port as u16, ca })
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}/{}", self.host, self.port, path.trim_start_matches('/'))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin asks the server to stop and remove its TLS files; kill it only
        // if it does not.
        drop(self.child.stdin.take());
        for _ in 0..40 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! What a cluster test needs: a client, a temporary namespace, kubectl and helm, the
//! operator as a process, and polling with a deadline.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::LazyLock,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The repository root. Read at run time (cargo sets `CARGO_MANIFEST_DIR` for tests):
/// several checkouts may share one target directory, and a path compiled in could name
/// another checkout.
pub fn repo_root() -> PathBuf {
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().unwrap().to_path_buf()
}

/// A client for the test cluster. Fails loudly when no cluster is configured: a
/// cluster test that silently skips proves nothing.
pub async fn client() -> anyhow::Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!("KUBECONFIG is not set: start the test cluster with `eval \"$(tests/cluster/up)\"` or run `tests/run`");
    }
    Client::try_default().await.context("connect to the test cluster")
}

/// Path of a binary built by cargo in this workspace (`modelgate`, `sim-kubelet`).
pub fn cargo_bin(name: &str) -> PathBuf {
    // Test executables live in <target>/<profile>/deps/, benchmarks' in <target>/<profile>/.
    let exe = std::env::current_exe().expect("test executable path");
    let here = exe.parent().expect("target profile dir");
    let dir = if here.ends_with("deps") { here.parent().expect("target profile dir") } else { here };
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is not built; run `cargo build --workspace --bins` first", bin.display());
    bin
}

/// Runs a command with stdin, returning its output (not failing on a non-zero exit).
pub fn run_with_stdin(program: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}; is it on PATH (tests/cluster/up prints the PATH)?"))?;
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes())?;
    }
    drop(input);
    Ok(child.wait_with_output()?)
}

/// `kubectl ARGS` with optional stdin.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
    run_with_stdin("kubectl", args, stdin)
}

/// `kubectl ARGS`, failing unless it exits 0; returns stdout.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let out = kubectl(args, stdin)?;
    if !out.status.success() {
        bail!("kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kubeconfig for the test cluster that authenticates with `token` (a ServiceAccount's).
pub fn token_kubeconfig(token: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let server = kubectl_ok(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"], None)?;
    let ca = kubectl_ok(
        &["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.certificate-authority}"],
        None,
    )?;
    let path = dir.join("token.kubeconfig");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": "sa"}}],
    });
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

/// `helm ARGS`, failing unless it exits 0; returns stdout.
pub fn helm_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = run_with_stdin("helm", args, None)?;
    if !out.status.success() {
        bail!(
            "helm {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` every 100 ms until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            match last_err {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A namespace that exists for one test and is deleted after it, pass or fail.
pub struct TempNamespace {
    pub name: String,
    client: Client,
}

impl TempNamespace {
    pub async fn new(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        let suffix: String = format!("{:x}", rand_suffix());
        let name = format!("{prefix}-{}", &suffix[..6.min(suffix.len())]);
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("modelgate.dev/test".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        // Pods need the namespace's default ServiceAccount, made by the controller-manager.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &name);
        eventually("default ServiceAccount", Duration::from_secs(30), || async {
            Ok(sa.get_opt("default").await?.map(|_| ()))
        })
        .await?;
        Ok(Self { name, client: client.clone() })
    }

    /// Deletes the namespace; call at the end of the test.
    pub async fn delete(self) {
        let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.name, &DeleteParams::default()).await;
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish()
}

/// Runs `body` in a fresh namespace and deletes it afterwards, even when `body` fails.
pub async fn with_temp_ns<F, Fut>(prefix: &str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let client = client().await?;
    let ns = TempNamespace::new(&client, prefix).await?;
    // A panicking test deletes its namespace too: what it started there (an operator
    // installed by the chart, pods) must not act on the tests that come after it.
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(body(client, ns.name.clone()))).await;
    ns.delete().await;
    match result {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// Tests share the cluster-scoped CRDs. Most only need them installed (shared guard);
// the few that delete or re-install them take the exclusive guard.
static CRDS: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

/// Ensures the CRDs from `crds/` are installed and established, and keeps them so
/// while the guard lives.
pub async fn crds_shared() -> anyhow::Result<RwLockReadGuard<'static, ()>> {
    client().await?; // fails with how to start the cluster when none is configured
    let guard = CRDS.read().await;
    install_crds()?;
    Ok(guard)
}

/// Exclusive use of the CRDs, for tests that remove or re-install them.
pub async fn crds_exclusive() -> RwLockWriteGuard<'static, ()> {
    CRDS.write().await
}

/// `kubectl apply --server-side` of `crds/`, then waits until they are established.
pub fn install_crds() -> anyhow::Result<()> {
    let dir = repo_root().join("crds");
    let dir = dir.to_str().unwrap();
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", dir], None)?;
    wait_established(dir)
}

/// `kubectl wait --for=condition=Established`, retried: right after an apply the CRD
/// may have no conditions yet, and kubectl fails instead of waiting.
pub fn wait_established(path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match kubectl_ok(&["wait", "--for=condition=Established", "--timeout=30s", "-f", path], None) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The operator, run as its own process (`modelgate run`), stopped when dropped.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
}

impl Operator {
    /// Starts `modelgate run` watching only `namespace`, logging to a file in the
    /// target directory (printed when a test fails). The tests' Prometheus and webhook
    /// servers listen on plain http and on loopback, which an installation refuses by
    /// default (chart values `gates.allowCidrs`, `gates.allowHttp`): this operator is
    /// given those two settings; `start_strict` runs with the installation defaults.
    pub fn start(namespace: Option<&str>, extra: &[&str]) -> anyhow::Result<Self> {
        let loopback_gates = ["--gate-allow-cidr", "127.0.0.0/8", "--gate-allow-http"];
        Self::start_with(namespace, &[&loopback_gates[..], extra].concat(), None, &[])
    }

    /// `modelgate run` with every setting at the default an installation gets.
    pub fn start_strict(namespace: Option<&str>, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(namespace, extra, None, &[])
    }

    /// Like `start`, with another kubeconfig (another identity) than the test's.
    pub fn start_as(namespace: Option<&str>, extra: &[&str], kubeconfig: Option<&Path>) -> anyhow::Result<Self> {
        let loopback_gates = ["--gate-allow-cidr", "127.0.0.0/8", "--gate-allow-http"];
        Self::start_with(namespace, &[&loopback_gates[..], extra].concat(), kubeconfig, &[])
    }

    /// The general form: arguments, identity and environment.
    ///
    /// The operator serves the ClusterModelRepositories labelled `TEST_LABEL=<namespace>`.
    pub fn start_with(
        namespace: Option<&str>,
        extra: &[&str],
        kubeconfig: Option<&Path>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log = std::env::temp_dir().join(format!("modelgate-{}-{}.log", namespace.unwrap_or("all"), rand_suffix()));
        let file = std::fs::File::create(&log)?;
        // Benchmarks point this at a release build.
        let bin = std::env::var_os("MODELGATE_BIN").map_or_else(|| cargo_bin("modelgate"), PathBuf::from);
        let mut cmd = Command::new(bin);
        let log_level = std::env::var("MODELGATE_LOG").unwrap_or_else(|_| "info,modelgate=debug".into());
        // Many operators run at once in the tests: each serves its endpoints on a free port.
        cmd.args(["run", "--http-address", "127.0.0.1:0"]).args(extra).env("RUST_LOG", log_level);
        if let Some(ns) = namespace {
            cmd.args(["--namespace", ns]);
        }
        // Many operators share one test cluster, where a real one has one installation:
        // each serves only the ClusterModelRepositories labelled for its test.
        if !extra.contains(&"--cluster-repository-selector") {
            let selector = format!("{TEST_LABEL}={}", namespace.unwrap_or("all"));
            cmd.args(["--cluster-repository-selector", &selector]);
        }
        if let Some(path) = kubeconfig {
            cmd.env("KUBECONFIG", path);
        }
        cmd.envs(env.iter().copied());
        let child = cmd.stdout(file.try_clone()?).stderr(file).spawn().context("start modelgate run")?;
        Ok(Self { child, log })
    }

    /// Waits for the process to exit by itself and returns its exit code and log.
    pub fn wait_exit(mut self, timeout: Duration) -> anyhow::Result<(Option<i32>, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status.code(), std::fs::read_to_string(&self.log)?));
            }
            if Instant::now() > deadline {
                bail!("modelgate did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit code.
    pub fn terminate(mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("modelgate did not stop within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address of `/metrics`, `/healthz`, `/readyz`, once the operator logged it.
    pub fn http_address(&self) -> Option<String> {
        let logs = self.logs();
        let line = logs.lines().find(|l| l.contains("serving /metrics"))?;
        let at = line.find("address=")? + "address=".len();
        Some(line[at..].split_whitespace().next()?.to_string())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where the log is written (it stays after the process is gone).
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A number field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:` in KiB, `Threads:`), 0 if
/// the process is gone.
pub fn proc_status(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Label of the ClusterModelRepositories a test's operator serves (its namespace).
pub const TEST_LABEL: &str = "modelgate.dev/test";

//! The OCI registry of the test cluster (CNCF Distribution, started by
//! `tests/cluster/node`): model images pushed to it with buildah, as a publisher would,
//! their manifests read back as the registry serves them, and its access log read to
//! count what the node pulled.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};
use aws_lc_rs::digest::{SHA256, digest};

/// A model image in the registry.
#[derive(Clone, Debug)]
pub struct ModelImage {
    /// `host:port/path`, what a TUF target's custom metadata names.
    pub repository: String,
    /// The manifest exactly as the registry serves it: what the TUF target signs.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of `manifest`.
    pub digest: String,
    /// The layers' digests (`sha256:<hex>`): the model's bytes.
    pub layers: Vec<String>,
}

/// `host:port` of the registry (`tests/cluster/up` prints it).
pub fn registry() -> anyhow::Result<String> {
    std::env::var("MODELGATE_REGISTRY")
        .context("MODELGATE_REGISTRY is not set: start the cluster with tests/cluster/up")
}

fn env_path(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: start the cluster with tests/cluster/up"))
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds an image holding `files` (name, bytes) at its root, one layer (the modelcar
/// shape), and pushes it to `<registry>/<path>:<tag>`.
pub async fn push(path: &str, tag: &str, files: &[(&str, Vec<u8>)]) -> anyhow::Result<ModelImage> {
    let context = tempfile::tempdir()?;
    for (name, bytes) in files {
        std::fs::write(context.path().join(name), bytes)?;
    }
    push_dir(path, tag, context.path()).await
}

/// `push`, of the files in directory `context`.
pub async fn push_dir(path: &str, tag: &str, context: &Path) -> anyhow::Result<ModelImage> {
    let registry = registry()?;
    let work = tempfile::tempdir()?;
    let certs = work.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    std::fs::copy(env_path("MODELGATE_REGISTRY_CA")?, certs.join("ca.crt"))?;
    let container = run(Command::new("buildah").args(["from", "scratch"]))?;
    let built = (|| {
        run(Command::new("buildah").args(["copy", &container]).arg(format!("{}/", context.display())).arg("/"))?;
        let local = format!("localhost/modelgate-test-{}", path.replace('/', "-"));
        run(Command::new("buildah").args(["commit", "-q", &container, &local]))?;
        let digest_file = work.path().join("digest");
        run(Command::new("buildah")
            // Weights barely compress, and gzip would cost more than the transfer.
            .args(["push", "-q", "--format", "oci", "--disable-compression", "--cert-dir"])
            .arg(&certs)
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(&local)
            .arg(format!("docker://{registry}/{path}:{tag}")))?;
        let _ = run(Command::new("buildah").args(["rmi", &local]));
        Ok::<_, anyhow::Error>(std::fs::read_to_string(&digest_file)?.trim().to_string())
    })();
    let _ = run(Command::new("buildah").args(["rm", &container]));
    let pushed = built?;
    let manifest = manifest(path, &pushed).await?;
    let layers = layers(&manifest)?;
    Ok(ModelImage { repository: format!("{registry}/{path}"), digest: pushed, manifest, layers })
}

/// The manifest `<path>@<reference>` as the registry serves it, checked against the
/// digest when `reference` is one.
pub async fn manifest(path: &str, reference: &str) -> anyhow::Result<Vec<u8>> {
    let ca = std::fs::read(env_path("MODELGATE_REGISTRY_CA")?)?;
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca)?)
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let url = format!("https://{}/v2/{path}/manifests/{reference}", registry()?);
    let response = http
        .get(&url)
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("GET {url}"))?;
    let bytes = response.bytes().await?.to_vec();
    if let Some(hex) = reference.strip_prefix("sha256:") {
        anyhow::ensure!(sha256_hex(&bytes) == hex, "the registry served other bytes for {reference}");
    }
    Ok(bytes)
}

/// The layer digests an image manifest lists.
pub fn layers(manifest: &[u8]) -> anyhow::Result<Vec<String>> {
    let value: serde_json::Value = serde_json::from_slice(manifest).context("an OCI image manifest")?;
    Ok(value["layers"]
        .as_array()
        .context("an OCI image manifest has layers")?
        .iter()
        .filter_map(|l| l["digest"].as_str().map(str::to_string))
        .collect())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest(&SHA256, bytes))
}

/// Bytes the registry sent for `path`'s blobs (GET, 200), by its access log.
pub fn blob_bytes(path: &str) -> anyhow::Result<u64> {
    let log = std::fs::read_to_string(Path::new(&env_path("MODELGATE_REGISTRY_LOG")?))?;
    let request = format!("\"GET /v2/{path}/blobs/");
    Ok(log
        .lines()
        .filter(|l| l.contains(&request))
        .filter_map(|l| l.split("\" 200 ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// How many times the registry served blob `digest` of `path` in full (GET, 200), by
/// its access log.
pub fn blob_downloads(path: &str, digest: &str) -> anyhow::Result<usize> {
    let log = std::fs::read_to_string(Path::new(&env_path("MODELGATE_REGISTRY_LOG")?))?;
    let request = format!("\"GET /v2/{path}/blobs/{digest} ");
    Ok(log.lines().filter(|l| l.contains(&request) && l.contains("\" 200 ")).count())
}

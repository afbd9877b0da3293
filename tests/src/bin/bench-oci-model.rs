//! A model as an OCI image against the same model through `modelgate fetch`, on the real
//! node (run by `tests/bench/oci-model`). Each run publishes a fresh model of FILES
//! (default 4) files, SIZE_MIB (default 1024) in all, both ways: as an image in the
//! test cluster's registry (its manifest a TUF target) and as TUF targets under a prefix.
//! For each way, a release of REPLICAS (default 4) pods is created and timed to its first
//! and to all pods Ready; then one pod is deleted and its replacement timed to Ready
//! (`next`: the node has the image; the fetch path downloads the model again). For the
//! image, a rollback is timed too: the release moves to a small second image, then back
//! to the first, whose image is still on the node (`rollback`: to all pods Ready). Bytes
//! are counted where they are served: the registry's access log and the TUF server's log.
//! A third yardstick: a replaced pod of the same release serving a tiny image (the
//! floor: pod start and probes, nothing to load).
//! The median of RUNS (default 3) runs is printed; the fetch path is the yardstick.

use std::{
    io::Read as _,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use modelgate::api::{LABEL_RELEASE, ModelRelease, Outcome};
use modelgate_tests::{
    harness::{Operator, TempNamespace, client, eventually, install_crds, pod_ready},
    images,
    models::{ModelRepo, set_image_target, wait_history},
    node::{self, OPERATOR_IMAGE},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(600);
const MIB: f64 = 1024.0 * 1024.0;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[derive(Default)]
struct Times {
    first: Vec<f64>,
    all: Vec<f64>,
    next: Vec<f64>,
    rollback: Vec<f64>,
    /// A replaced pod of a release serving a tiny image: pod start, probes, no model.
    floor: Vec<f64>,
    mib: Vec<f64>,
    rollback_mib: Vec<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (files, size_mib, replicas, runs) =
        (env_or("FILES", 4), env_or("SIZE_MIB", 1024), env_or("REPLICAS", 4), env_or("RUNS", 3));
    let client = client().await?;
    install_crds()?;
    node::require_images()?;
    let ns = TempNamespace::new(&client, "bench-oci").await?;
    let result = bench(&client, &ns.name, files, size_mib, replicas, runs).await;
    ns.delete().await;
    let (oci, fetch) = result?;
    let line = |name: &str, t: &Times, extra: String| {
        println!(
            "  {name:<6} first Ready {:6.2} s  all Ready {:6.2} s  next pod Ready {:6.2} s  served {:7.1} MiB{extra}",
            median(t.first.clone()),
            median(t.all.clone()),
            median(t.next.clone()),
            median(t.mib.clone())
        )
    };
    println!("model: {files} files, {size_mib} MiB, {replicas} replicas on the real node, median of {runs} runs");
    line("image", &oci, format!("  rollback Ready {:6.2} s", median(oci.rollback.clone())));
    line("fetch", &fetch, String::new());
    println!(
        "  floor  next pod Ready {:6.2} s (a tiny image: pod start and probes, no model to load)",
        median(oci.floor.clone())
    );
    println!(
        "RESULT size_mib={size_mib} replicas={replicas} oci_pulled_mib={:.1} fetch_downloaded_mib={:.1} \
         oci_first_ready_s={:.2} oci_next_ready_s={:.2} fetch_first_ready_s={:.2} fetch_next_ready_s={:.2} \
         oci_rollback_ready_s={:.2} oci_rollback_pulled_mib={:.1} oci_all_ready_s={:.2} fetch_all_ready_s={:.2} \
         floor_next_ready_s={:.2}",
        median(oci.mib.clone()),
        median(fetch.mib.clone()),
        median(oci.first.clone()),
        median(oci.next.clone()),
        median(fetch.first.clone()),
        median(fetch.next.clone()),
        median(oci.rollback.clone()),
        median(oci.rollback_mib.clone()),
        median(oci.all.clone()),
        median(fetch.all.clone()),
        median(oci.floor.clone()),
    );
    Ok(())
}

async fn bench(
    client: &Client,
    ns: &str,
    files: usize,
    size_mib: usize,
    replicas: usize,
    runs: usize,
) -> anyhow::Result<(Times, Times)> {
    let registry = images::registry()?;
    let path = format!("models/{ns}/llm");
    let mut repo = ModelRepo::for_pods("warmup", &["1.0.0"])?;
    let small = images::push(&path, "small", &[("config.json", b"{}\n".to_vec())]).await?;
    repo.add_image("bench/small/manifest.json", &small.manifest, &small.repository)?;
    // Every run's model is published before the repository is registered (a release of
    // a target the operator's last refresh did not list is refused), each with bytes of
    // its own so that no run finds the previous one's layers on the node.
    let mut published = Vec::new();
    for run in 1..=runs {
        let dir = tempfile::tempdir()?;
        let mut random = std::fs::File::open("/dev/urandom")?;
        for i in 0..files {
            let mut bytes = vec![0u8; size_mib * (1 << 20) / files];
            random.read_exact(&mut bytes)?;
            std::fs::write(dir.path().join(format!("model-{i:05}.safetensors")), bytes)?;
        }
        let image = images::push_dir(&path, &format!("r{run}"), dir.path()).await?;
        let manifest = format!("bench/{run}/manifest.json");
        repo.add_image(&manifest, &image.manifest, &image.repository)?;
        repo.add_dir(&format!("bench/{run}/files/"), dir.path())?;
        published.push((manifest, image));
    }
    // The fetch path's files are served from the logging path of the test server.
    let targets = repo.server.url("ranged/targets/");
    let spec = json!({"images": {"registries": [format!("{registry}/models")]}, "targetsUrl": targets});
    repo.register_with(client, ns, spec).await?;
    let operator = Operator::start(Some(ns), &["--fetch-image", OPERATOR_IMAGE])?;
    let api: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    let (mut oci, mut fetch) = (Times::default(), Times::default());
    let log = repo.server_root().join("get-log.jsonl");
    for (run, (manifest, image)) in (1..=runs).zip(published) {
        // The image.
        let name = format!("oci-{run}");
        let before = images::blob_bytes(&path)?;
        // No warm pods: the rollback makes its pods anew, from the image on the node.
        let no_warm = json!({"rollback": {"keepWarm": {"window": "0s"}}});
        let release = node::image_release(&name, &manifest, replicas as i32, no_warm)?;
        let (first, all) = create_and_time(client, &api, ns, &release, replicas).await?;
        oci.first.push(first);
        oci.all.push(all);
        oci.mib.push((images::blob_bytes(&path)? - before) as f64 / MIB);
        oci.next.push(replace_one_pod(client, ns, &name, replicas, Some(&image.digest)).await?);
        set_image_target(&api, &name, "bench/small/manifest.json").await?;
        wait_history(&api, &name, "bench/small/manifest.json", Outcome::Promoted, WAIT).await?;
        wait_ready(client, ns, &name, replicas, Some(&small.digest)).await?;
        oci.floor.push(replace_one_pod(client, ns, &name, replicas, Some(&small.digest)).await?);
        let before_rollback = images::blob_bytes(&path)?;
        let started = Instant::now();
        set_image_target(&api, &name, &manifest).await?;
        wait_ready(client, ns, &name, replicas, Some(&image.digest)).await?;
        oci.rollback.push(started.elapsed().as_secs_f64());
        oci.rollback_mib.push((images::blob_bytes(&path)? - before_rollback) as f64 / MIB);
        api.delete(&name, &DeleteParams::default()).await?;

        // The same model through `modelgate fetch`.
        let name = format!("fetch-{run}");
        let served_before = served(&log)?;
        let mut release = node::release(&name, "", replicas as i32, json!({}))?;
        release.spec.model.target.clear();
        release.spec.model.prefix = Some(format!("bench/{run}/files/"));
        if let Some(c) = release.spec.template.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            c.args = Some(vec!["serve".into(), "--model".into(), "/models".into()]);
        }
        let (first, all) = create_and_time(client, &api, ns, &release, replicas).await?;
        fetch.first.push(first);
        fetch.all.push(all);
        fetch.mib.push((served(&log)? - served_before) as f64 / MIB);
        fetch.next.push(replace_one_pod(client, ns, &name, replicas, None).await?);
        api.delete(&name, &DeleteParams::default()).await?;
        eprintln!(
            "run {run}: image first {:.2} s next {:.2} s rollback {:.2} s; fetch first {:.2} s next {:.2} s",
            oci.first[run - 1],
            oci.next[run - 1],
            oci.rollback[run - 1],
            fetch.first[run - 1],
            fetch.next[run - 1]
        );
    }
    drop(operator);
    Ok((oci, fetch))
}

/// Creates `release` and times it to its first, then to all `replicas` pods Ready.
async fn create_and_time(
    client: &Client,
    api: &Api<ModelRelease>,
    ns: &str,
    release: &ModelRelease,
    replicas: usize,
) -> anyhow::Result<(f64, f64)> {
    let name = release.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    api.create(&PostParams::default(), release).await?;
    wait_ready(client, ns, &name, 1, None).await?;
    let first = started.elapsed().as_secs_f64();
    wait_ready(client, ns, &name, replicas, None).await?;
    Ok((first, started.elapsed().as_secs_f64()))
}

/// Deletes one Ready pod of `release` (mounting `digest`, when given) and times its
/// replacement to Ready; no other revision's pods may be left.
async fn replace_one_pod(
    client: &Client,
    ns: &str,
    release: &str,
    replicas: usize,
    digest: Option<&str>,
) -> anyhow::Result<f64> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{LABEL_RELEASE}={release}");
    let list = eventually("only the serving revision's pods", WAIT, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        Ok((list.items.len() == replicas).then_some(list))
    })
    .await?;
    let victim = list
        .items
        .iter()
        .find(|p| pod_ready(p) && mounts(p, digest))
        .and_then(|p| p.metadata.name.clone())
        .unwrap_or_default();
    let started = Instant::now();
    pods.delete(&victim, &DeleteParams::default().grace_period(0)).await?;
    eventually("the pod gone", WAIT, || async { Ok(pods.get_opt(&victim).await?.is_none().then_some(())) }).await?;
    wait_ready(client, ns, release, replicas, digest).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Whether `pod` mounts the image `digest` (any pod, when none is given).
fn mounts(pod: &Pod, digest: Option<&str>) -> bool {
    digest.is_none_or(|d| serde_json::to_string(&pod.spec).unwrap_or_default().contains(d))
}

/// Waits for `count` Ready pods of `release` (mounting `digest`, when given).
async fn wait_ready(
    client: &Client,
    ns: &str,
    release: &str,
    count: usize,
    digest: Option<&str>,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{LABEL_RELEASE}={release}");
    eventually(&format!("{count} Ready pods of {release}"), WAIT, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
            .filter(|p| mounts(p, digest))
            .count();
        Ok((ready >= count).then_some(()))
    })
    .await
}

/// Bytes the TUF server sent from its logging paths so far.
fn served(log: &std::path::Path) -> anyhow::Result<u64> {
    let Ok(text) = std::fs::read_to_string(log) else { return Ok(0) };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["sent"].as_u64())
        .sum())
}

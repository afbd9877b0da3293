//! One operator, many releases (run by `tests/bench/scale`): RELEASES ModelReleases
//! (default 1000) across NAMESPACES namespaces (default 20), each a one-pod revision of a
//! verified model. Measures:
//! - first convergence (every release Promoted), beside the time the control plane took
//!   to make the last pod Ready: what is left after that is modelgate's own share;
//! - the operator's peak RSS, and its RSS at rest after a minute with nothing to do;
//! - after a graceful restart (SIGTERM, as an upgrade makes it) during which every
//!   release was scaled from 1 to 2 replicas, the time until every release's workload
//!   asks for 2 pods and its status describes the new generation. Yardstick, same run:
//!   the time this program takes to write those scale changes itself;
//! - the number of metric series the operator exports.
//!
//! With BIG_RELEASES=N (240 in the issue that asked for it) it measures memory against
//! what teams write instead: N releases of about 1 MiB each (a template that kubectl
//! accepts, filled with arguments, and a large annotation), the operator's RSS while
//! they arrive and at each of 3 restarts (median), beside its RSS with nothing to hold,
//! measured in the same run: `rss_per_mib_of_objects` is the operator's growth per MiB
//! of releases in the API server.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use modelgate::api::{LABEL_RELEASE, ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, TempNamespace, client, eventually, install_crds, pod_ready, proc_status},
    models::{ModelRepo, release},
};
use serde_json::json;

const PARALLEL: usize = 16;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peak_rss_mib(pid: u32) -> f64 {
    proc_status(pid, "VmHWM:") / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (releases, namespaces) = (env("RELEASES", 1000), env("NAMESPACES", 20));
    let client = client().await?;
    install_crds()?;
    if let Some(big) = std::env::var("BIG_RELEASES").ok().and_then(|v| v.parse().ok()) {
        let ns = TempNamespace::new(&client, "bench-big").await?;
        let result = heavy(&client, &ns.name, big).await;
        ns.delete().await;
        return result;
    }
    let mut spaces = Vec::new();
    for _ in 0..namespaces {
        spaces.push(TempNamespace::new(&client, "bench-scale").await?);
    }
    let names: Vec<String> = spaces.iter().map(|n| n.name.clone()).collect();
    let result = bench(&client, &names, releases).await;
    for ns in spaces {
        ns.delete().await;
    }
    let m = result?;
    let ratio = m.reconverge / m.yardstick.max(0.001);
    println!("{releases} releases in {namespaces} namespaces, one operator");
    println!(
        "  first convergence (every release Promoted): {:.1} s; the control plane made the last pod Ready at {:.1} s",
        m.converge, m.pods_ready
    );
    println!("  peak RSS of the operator: {:.1} MiB; at rest: {:.1} MiB", m.peak_rss, m.steady_rss);
    println!("  restart -> every release re-converged (scaled 1 -> 2 while it was down): {:.1} s", m.reconverge);
    println!("  yardstick: writing those {releases} scale changes from here: {:.1} s (ratio {ratio:.2})", m.yardstick);
    println!("  metric series exported: {}", m.series);
    println!(
        "RESULT releases={releases} namespaces={namespaces} peak_rss_mib={:.1} steady_rss_mib={:.1} reconverge_s={:.1} \
         yardstick_writes_s={:.1} reconverge_ratio={ratio:.2} first_converge_s={:.1} pods_ready_s={:.1} \
         metric_series={}",
        m.peak_rss, m.steady_rss, m.reconverge, m.yardstick, m.converge, m.pods_ready, m.series
    );
    Ok(())
}

/// A release of about 1 MiB as JSON that the API server accepts: 200 arguments of
/// 4,000 bytes (the schema allows 256 of 4,096) and a 200 KB annotation.
fn heavy_release(i: usize) -> anyhow::Result<ModelRelease> {
    let args: Vec<String> = (0..200).map(|a| format!("--a{a}={}", "x".repeat(3990))).collect();
    let mut r = release(&format!("heavy-{i:04}"), "fraud/1.0/model.onnx", 1, json!({}))?;
    r.metadata.annotations = Some([("team.example/notes".to_string(), "n".repeat(200_000))].into());
    if let Some(spec) = r.spec.template.spec.as_mut() {
        spec.containers[0].args = Some(args);
    }
    Ok(r)
}

/// The operator's RSS against releases a team filled as far as the API server allows.
async fn heavy(client: &Client, ns: &str, n: usize) -> anyhow::Result<()> {
    const RESTARTS: usize = 3;
    let repo = ModelRepo::new("fraud", &["1.0"])?;
    repo.register(client, ns).await?;
    let api: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    let releases = mirror(api.clone(), watcher::Config::default());
    let answered = |r: &ModelRelease| {
        r.status.as_ref().and_then(|s| s.observed_generation).is_some_and(|g| Some(g) == r.metadata.generation)
    };
    // Yardstick: the same operator, started the same way, holding nothing.
    let operator = Operator::start(Some(ns), &[])?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let empty = rss_mib(operator.pid());
    let bytes = serde_json::to_vec(&heavy_release(0)?)?.len();
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &heavy_release(i)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await?;
    wait("every heavy release answered", Duration::from_secs(600), async || Ok((count(&releases, answered), n)))
        .await?;
    let arriving = peak_rss_mib(operator.pid());
    let held = rss_mib(operator.pid());
    let refused = releases
        .state()
        .iter()
        .filter(|r| {
            r.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.message.contains("at most 64 KiB")))
        })
        .count();
    eprintln!(
        "{n} releases of {bytes} bytes arrived: peak RSS {arriving:.1} MiB, then {held:.1} MiB; {refused} refused for size"
    );
    let mut operator = operator;
    let mut restarts = Vec::new();
    for round in 0..RESTARTS {
        operator.terminate(Duration::from_secs(30))?;
        operator = Operator::start(Some(ns), &[])?;
        // Ready only once every watch has its initial list: the restart's peak is behind.
        let address =
            eventually("the operator's address", Duration::from_secs(30), async || Ok(operator.http_address())).await?;
        eventually("the restarted operator ready", Duration::from_secs(300), async || {
            let ready = reqwest::get(format!("http://{address}/readyz")).await.is_ok_and(|r| r.status().is_success());
            Ok(ready.then_some(()))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let peak = peak_rss_mib(operator.pid());
        eprintln!("restart {}: peak RSS {peak:.1} MiB", round + 1);
        restarts.push(peak);
    }
    restarts.sort_by(f64::total_cmp);
    let restart = restarts[RESTARTS / 2];
    let objects_mib = (bytes * n) as f64 / (1024.0 * 1024.0);
    let per_mib = (arriving.max(restart) - empty) / objects_mib;
    println!(
        "{n} releases of {:.2} MiB each ({objects_mib:.0} MiB), one operator on their namespace",
        bytes as f64 / 1048576.0
    );
    println!("  yardstick: the operator's RSS holding nothing: {empty:.1} MiB");
    println!("  peak RSS while they arrived: {arriving:.1} MiB; median peak of {RESTARTS} restarts: {restart:.1} MiB");
    println!("  growth per MiB of releases: {per_mib:.3} MiB; {refused} of {n} refused for size");
    println!(
        "RESULT big_releases={n} object_mib={objects_mib:.0} empty_rss_mib={empty:.1} arrive_peak_rss_mib={arriving:.1} \
         restart_peak_rss_mib={restart:.1} rss_per_mib_of_objects={per_mib:.3} refused={refused}"
    );
    operator.terminate(Duration::from_secs(30))?;
    Ok(())
}

struct Measured {
    peak_rss: f64,
    steady_rss: f64,
    reconverge: f64,
    yardstick: f64,
    converge: f64,
    pods_ready: f64,
    series: usize,
}

fn rss_mib(pid: u32) -> f64 {
    proc_status(pid, "VmRSS:") / 1024.0
}

/// Series (sample lines) on the operator's `/metrics` page.
async fn series(operator: &Operator) -> anyhow::Result<usize> {
    let address = operator.http_address().ok_or_else(|| anyhow::anyhow!("the operator logged no address"))?;
    let page = reqwest::get(format!("http://{address}/metrics")).await?.text().await?;
    Ok(page.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count())
}

fn key(r: &ModelRelease) -> (String, String) {
    (r.namespace().unwrap_or_default(), r.name_any())
}

/// A watched copy of `api`'s objects. The progress checks read these instead of
/// listing every release and ReplicaSet each time: at 10,000 releases those lists cost
/// the API server more than the writes being measured.
fn mirror<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    tokio::spawn(watcher(api, config).default_backoff().reflect(writer).for_each(|_| async {}));
    reader
}

fn count<K>(store: &Store<K>, done: impl Fn(&K) -> bool) -> usize
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.state().iter().filter(|o| done(o)).count()
}

async fn wait(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<(usize, usize)>,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut last = (0, 1);
    let poll = Duration::from_millis(250);
    loop {
        // An overloaded API server may drop a request: that is not the answer, ask again.
        match check().await {
            Ok((done, total)) if done >= total => return Ok(start.elapsed().as_secs_f64()),
            Ok(progress) => last = progress,
            Err(e) => eprintln!("{what}: {e:#}; retrying"),
        }
        if start.elapsed() > timeout {
            anyhow::bail!("{what}: only {}/{} after {timeout:?}", last.0, last.1);
        }
        tokio::time::sleep(poll).await;
    }
}

async fn bench(client: &Client, namespaces: &[String], n: usize) -> anyhow::Result<Measured> {
    let repo = ModelRepo::new("fraud", &["1.0"])?;
    for ns in namespaces {
        repo.register(client, ns).await?;
    }
    // Cluster-wide, as the chart installs it. (tests/bench/scale sets MODELGATE_LOG=warn.)
    let start_operator = || Operator::start(None, &[]);
    let operator = start_operator()?;
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let api: Api<ModelRelease> = Api::namespaced(client.clone(), &namespaces[i % namespaces.len()]);
            async move {
                let r = release(&format!("model-{i:04}"), "fraud/1.0/model.onnx", 1, json!({}))?;
                api.create(&PostParams::default(), &r).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;
    let all: Api<ModelRelease> = Api::all(client.clone());
    let releases = mirror(all.clone(), watcher::Config::default());
    let pods = mirror(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(LABEL_RELEASE));
    let replica_sets = mirror(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default().labels(LABEL_RELEASE));
    let promoted = |r: &ModelRelease| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Promoted);
    // The first convergence is bounded by the control plane making n pods; give it the
    // time that takes on two cores (about a minute per thousand), and more.
    let limit = Duration::from_secs((n as u64 / 1000 + 1) * 300).max(Duration::from_secs(1200));
    let mut pods_ready = None;
    wait("first convergence", limit, async || {
        if pods_ready.is_none() && count(&pods, pod_ready) >= n {
            pods_ready = Some(started.elapsed().as_secs_f64());
        }
        Ok((count(&releases, promoted), n))
    })
    .await?;
    let converge = started.elapsed().as_secs_f64();
    let pods_ready = pods_ready.unwrap_or(converge);
    let mut rss = peak_rss_mib(operator.pid());
    eprintln!("converged in {converge:.1} s (pods Ready at {pods_ready:.1} s), operator peak RSS {rss:.1} MiB");
    // At rest: nothing to do for a minute.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let steady_rss = rss_mib(operator.pid());
    let series = series(&operator).await?;
    eprintln!("at rest: RSS {steady_rss:.1} MiB, {series} metric series; restarting");

    // A graceful restart, as an upgrade makes it. (One replica, no leader election: a
    // chart install with leader election hands the Lease over on SIGTERM within 2 s,
    // and after a crash waits out the 15 s lease first.)
    operator.terminate(Duration::from_secs(30))?;
    let list = all.list(&ListParams::default()).await?.items;
    let t = Instant::now();
    stream::iter(list.iter().map(key))
        .map(|(ns, name)| {
            let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
            async move {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}}))).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;
    let yardstick = t.elapsed().as_secs_f64();

    let operator = start_operator()?;
    let reconverge = wait("re-convergence", Duration::from_secs(600), async || {
        let fresh = |r: &ModelRelease| r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation;
        let scaled = |rs: &ReplicaSet| rs.spec.replicas == Some(2);
        Ok((count(&releases, fresh).min(count(&replica_sets, scaled)), n))
    })
    .await?;
    rss = rss.max(peak_rss_mib(operator.pid()));
    Ok(Measured { peak_rss: rss, steady_rss, reconverge, yardstick, converge, pods_ready, series })
}

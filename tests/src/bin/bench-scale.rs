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
    harness::{Operator, TempNamespace, client, install_crds, pod_ready, proc_status},
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

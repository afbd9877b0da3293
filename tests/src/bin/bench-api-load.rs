//! API requests the operator makes (run by `tests/bench/api-load`), counted by the API
//! server itself: `apiserver_request_total` by verb, resource and subresource, read
//! before and after (1) every release rolling out one new revision and (2) a rest.
//!
//! The operator is not the only client, so requests are attributed by what only it
//! does: the ModelRelease and ModelRepository APIs, ReplicaSets and their scale (the
//! controller-manager writes only their status), pod patches (the kubelet writes pod
//! status, the controller-manager creates and the scheduler binds) and Services. Events
//! are counted from the Events themselves: those in the benchmark's namespaces whose
//! `reportingController` is modelgate, each occurrence (a series counts each) one write.
//!
//! With `MODELGATE_AUDIT_LOG` (the cluster started with it, `tests/cluster/up`), the
//! reads and lists of those kinds during the rollout are also told apart by who made
//! them (user and user agent, from the API server's audit log).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use modelgate::api::{ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, TempNamespace, client, install_crds},
    models::{ModelRepo, release, set_target},
};
use serde_json::json;

const PARALLEL: usize = 16;
const V1: &str = "fraud/1.0/model.onnx";
const V2: &str = "fraud/2.0/model.onnx";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `apiserver_request_total`, summed by (verb, group, resource, subresource).
type Counts = BTreeMap<(String, String, String, String), f64>;

async fn snapshot(client: &Client) -> anyhow::Result<Counts> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut counts = Counts::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        // Requests that did something: a refused one (the scheduler still posting Events
        // into namespaces an earlier run deleted) is another client's noise.
        if !labels.contains("code=\"2") {
            continue;
        }
        let label = |key: &str| {
            let at = labels.find(&format!("{key}=\""))? + key.len() + 2;
            let rest = labels.get(at..)?;
            Some(rest.get(..rest.find('"')?)?.to_string())
        };
        let key = (
            label("verb").unwrap_or_default(),
            label("group").unwrap_or_default(),
            label("resource").unwrap_or_default(),
            label("subresource").unwrap_or_default(),
        );
        *counts.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

/// Occurrences of the Events modelgate reported in `namespaces` (a series counts each).
async fn modelgate_events(client: &Client, namespaces: &[String]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for ns in namespaces {
        let api: Api<Event> = Api::namespaced(client.clone(), ns);
        for event in api.list(&ListParams::default()).await?.items {
            if event.reporting_controller.as_deref() == Some("modelgate") {
                total += f64::from(event.series.as_ref().map_or(1, |s| s.count.max(1)));
            }
        }
    }
    Ok(total)
}

/// What the operator did between two snapshots, by kind of request.
#[derive(Debug, Default)]
struct Load {
    status_writes: f64,
    workload_writes: f64,
    pod_writes: f64,
    service_writes: f64,
    event_writes: f64,
    reads: f64,
    lists: f64,
    /// Repository refreshes (per repository, not per release).
    repository_writes: f64,
    repository_reads: f64,
}

impl Load {
    fn release_writes(&self) -> f64 {
        self.status_writes + self.workload_writes + self.pod_writes + self.service_writes + self.event_writes
    }
}

fn load(before: &Counts, after: &Counts, events: f64) -> Load {
    let mut l = Load { event_writes: events, ..Load::default() };
    for ((verb, group, resource, sub), n) in after {
        let n = n - before.get(&(verb.clone(), group.clone(), resource.clone(), sub.clone())).unwrap_or(&0.0);
        if n <= 0.0 || verb == "WATCH" {
            continue;
        }
        let write = matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY");
        match (resource.as_str(), sub.as_str()) {
            ("modelreleases", "status") if write => l.status_writes += n,
            ("modelrepositories", _) | ("configmaps", _) if write => l.repository_writes += n,
            ("replicasets", "" | "scale") if write => l.workload_writes += n,
            ("pods", "") if verb == "PATCH" => l.pod_writes += n,
            ("services", "") if write => l.service_writes += n,
            ("modelreleases" | "modelrepositories" | "replicasets" | "services", _) if verb == "LIST" => l.lists += n,
            // Each refresh reads the pinned root, CA and record: the repository's cost.
            ("configmaps", _) if verb == "GET" => l.repository_reads += n,
            ("modelreleases" | "modelrepositories" | "services", _) if verb == "GET" => l.reads += n,
            _ => {}
        }
    }
    l
}

async fn wait_all(api: &Api<ModelRelease>, n: usize, revision: i64, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let list = api.list(&ListParams::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|r| {
                let s = r.status.as_ref();
                s.and_then(|s| s.phase) == Some(Phase::Promoted)
                    && s.and_then(|s| s.stable.as_ref()).is_some_and(|st| st.revision.number == revision)
            })
            .count();
        if done >= n {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < timeout, "only {done}/{n} releases promoted revision {revision}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (n, namespaces, rest) =
        (env("RELEASES", 100) as usize, env("NAMESPACES", 5) as usize, env("REST_SECONDS", 360));
    let client = client().await?;
    install_crds()?;
    let mut spaces = Vec::new();
    for _ in 0..namespaces {
        spaces.push(TempNamespace::new(&client, "bench-api").await?);
    }
    let names: Vec<String> = spaces.iter().map(|s| s.name.clone()).collect();
    let result = bench(&client, &names, n, rest).await;
    for ns in spaces {
        ns.delete().await;
    }
    let (rollout, idle, steps, window) = result?;
    let per = |x: f64| x / n as f64;
    let writes_per_step = per(rollout.release_writes()) / steps as f64;
    let idle_hour = |x: f64| per(x) * 3600.0 / rest as f64;
    let idle_requests = idle.release_writes() + idle.reads + idle.lists;
    println!("{n} releases in {namespaces} namespaces, one operator; API server's own counts");
    println!("  one rollout ({steps} steps: 50%, a 5 s pause, 100%), per release:");
    println!(
        "    writes {:.2} = status {:.2} + workloads {:.2} + pod labels {:.2} + Services {:.2} + events {:.2}",
        per(rollout.release_writes()),
        per(rollout.status_writes),
        per(rollout.workload_writes),
        per(rollout.pod_writes),
        per(rollout.service_writes),
        per(rollout.event_writes)
    );
    println!(
        "    per step: {writes_per_step:.2} writes; reads {:.2}, lists {:.2} per release",
        per(rollout.reads),
        per(rollout.lists)
    );
    if let Ok(path) = std::env::var("MODELGATE_AUDIT_LOG") {
        println!("    reads and lists during the rollout, by who made them (audit log):");
        let reads = audited_reads(&path, window)?;
        for ((who, verb, resource), count) in &reads {
            println!("      {count:>6} {verb} {resource} by {who}");
        }
        let own: u64 = reads.iter().filter(|((who, _, _), _)| who.contains("(modelgate/")).map(|(_, n)| n).sum();
        println!("      of which the operator's own: {own}");
    }
    println!("  at rest for {rest} s, per release per hour:");
    println!(
        "    writes {:.2}, reads {:.2}, lists {:.2}; repository refreshes (every 10 s) wrote {} and read {} times in all ({} repositories)",
        idle_hour(idle.release_writes()),
        idle_hour(idle.reads),
        idle_hour(idle.lists),
        idle.repository_writes,
        idle.repository_reads,
        namespaces
    );
    println!(
        "RESULT releases={n} steps={steps} writes_per_release_rollout={:.2} writes_per_step={writes_per_step:.2} \
         status_writes_per_step={:.2} requests_per_idle_release_hour={:.2} idle_lists={} repository_writes_idle={} \
         repository_reads_idle={} rest_s={rest}",
        per(rollout.release_writes()),
        per(rollout.status_writes) / steps as f64,
        idle_hour(idle_requests),
        idle.lists,
        idle.repository_writes,
        idle.repository_reads
    );
    Ok(())
}

/// Gets and lists of the kinds counted as the operator's reads, made within `window`,
/// counted by (user and user agent, verb, resource).
fn audited_reads(
    path: &str,
    (from, to): (Timestamp, Timestamp),
) -> anyhow::Result<BTreeMap<(String, String, String), u64>> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let at = text(&event["stageTimestamp"]).parse::<Timestamp>().ok();
        let (verb, resource) = (text(&event["verb"]), text(&event["objectRef"]["resource"]));
        if at.is_none_or(|at| at < from || at > to)
            || !matches!(verb.as_str(), "get" | "list")
            || !matches!(resource.as_str(), "modelreleases" | "modelrepositories" | "services")
        {
            continue;
        }
        let agent = text(&event["userAgent"]);
        let product = agent.split(' ').next().unwrap_or_default();
        let who = format!(
            "{} ({})",
            text(&event["user"]["username"]),
            if product.is_empty() { "no user agent" } else { product }
        );
        *counts.entry((who, verb, resource)).or_insert(0) += 1;
    }
    Ok(counts)
}

async fn bench(
    client: &Client,
    namespaces: &[String],
    n: usize,
    rest: u64,
) -> anyhow::Result<(Load, Load, usize, (Timestamp, Timestamp))> {
    let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
    for ns in namespaces {
        repo.register(client, ns).await?;
    }
    let _operator = Operator::start(None, &[])?;
    // Two pods: 50% is one canary pod, then all. No warm pods (their window would end
    // during the rest, which is a scheduled action, not rest).
    let spec = json!({
        "strategy": {"steps": [{"setWeight": 50}, {"pause": {"duration": "5s"}}]},
        "rollback": {"keepWarm": {"window": "0s"}},
    });
    let steps = 3;
    stream::iter(0..n)
        .map(|i| {
            let api: Api<ModelRelease> = Api::namespaced(client.clone(), &namespaces[i % namespaces.len()]);
            let r = release(&format!("model-{i:04}"), V1, 2, spec.clone());
            async move {
                api.create(&PostParams::default(), &r?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;
    let all: Api<ModelRelease> = Api::all(client.clone());
    wait_all(&all, n, 1, Duration::from_secs(900)).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;

    let (before, events_before) = (snapshot(client).await?, modelgate_events(client, namespaces).await?);
    let rollout_start = Timestamp::now();
    stream::iter(0..n)
        .map(|i| {
            let api: Api<ModelRelease> = Api::namespaced(client.clone(), &namespaces[i % namespaces.len()]);
            async move { set_target(&api, &format!("model-{i:04}"), V2).await }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;
    wait_all(&all, n, 2, Duration::from_secs(900)).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = snapshot(client).await?;
    let window = (rollout_start, Timestamp::now());
    let rollout = load(&before, &after, modelgate_events(client, namespaces).await? - events_before);
    eprintln!("rollout: {rollout:?}; resting {rest} s");

    let (before, events_before) = (snapshot(client).await?, modelgate_events(client, namespaces).await?);
    tokio::time::sleep(Duration::from_secs(rest)).await;
    let after = snapshot(client).await?;
    let idle = load(&before, &after, modelgate_events(client, namespaces).await? - events_before);
    eprintln!("rest: {idle:?}");
    Ok((rollout, idle, steps, window))
}

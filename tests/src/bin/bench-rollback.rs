//! Anomaly -> rollback latency on the test control plane (run by
//! `tests/bench/rollback-latency`). Each run rolls out a new revision to 50%, then has
//! the simulated kubelet crash one canary pod, and times from the moment the pod's
//! failing status is visible in the API to the moment the canary ReplicaSet asks for 0
//! pods and the stable one for all of them. The yardstick, measured the same way in the
//! same run: an annotation written to a pod until it is visible (one API write and read).
//!
//! Then, on the real node, REFUSALS (default 10) pod-side refusals: each run rolls out a
//! model whose bytes were changed on the server, the real pod's `modelgate fetch`
//! refuses it (exit 3), and the time is taken from the moment that status is visible to
//! the moment the canary ReplicaSet asks for 0 pods and the stable one for all of them.
//!
//! Then "rollback to serving", on the real node, SERVE_RUNS (default 3) times with warm
//! pods (the default) and as many without (`keepWarm.window: 0s`): a release of 2
//! replicas whose model takes SERVE_LOAD_MS (default 5000) to load is promoted from
//! revision 1 to 2, an SRE rolls back to 1, and the time is taken from that command to
//! the first prediction revision 1 answers through the release's Service (requests
//! every 10 ms from this machine, as a client would send them) and to revision 1
//! having all its replicas Ready.

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use modelgate::api::{LABEL_RELEASE, LABEL_REVISION, ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, TempNamespace, client, eventually, install_crds},
    kubelet::BEHAVIOR_ANNOTATION,
    models::{ModelRepo, release, wait_phase},
    node,
};
use serde_json::json;

const POLL: Duration = Duration::from_millis(5);
const WAIT: Duration = Duration::from_secs(120);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    // Releases in the same namespace whose gate webhook never answers (issue: gates must
    // not hold the operator hostage); 0 by default.
    let hostages: usize = std::env::var("HOSTAGES").ok().and_then(|r| r.parse().ok()).unwrap_or(0);
    // SLOW_REPOS=1: the hostages live in another namespace instead, on a repository whose
    // metadata trickles at 6 KiB/s, and one operator serves the whole cluster (one scope,
    // as the chart installs it): a slow repository must delay only its own releases.
    let slow_repos: usize = std::env::var("SLOW_REPOS").ok().and_then(|r| r.parse().ok()).unwrap_or(0);
    let client = client().await?;
    install_crds()?;
    let revocation = revocations(&client).await?;
    if std::env::var("ONLY_REVOCATION").is_ok_and(|v| v == "1") {
        println!("RESULT {revocation}");
        return Ok(());
    }
    let ns = TempNamespace::new(&client, "bench-rollback").await?;
    let slow_ns = if slow_repos > 0 { Some(TempNamespace::new(&client, "bench-slow").await?) } else { None };
    let result = bench(client.clone(), &ns.name, runs, hostages, slow_ns.as_ref().map(|n| n.name.as_str())).await;
    ns.delete().await;
    if let Some(slow) = slow_ns {
        slow.delete().await;
    }
    let (latencies, yardstick) = result?;
    let refusals: usize = std::env::var("REFUSALS").ok().and_then(|r| r.parse().ok()).unwrap_or(10);
    let ns = TempNamespace::new(&client, "bench-refusal").await?;
    let result = refusal_runs(client.clone(), &ns.name, refusals).await;
    ns.delete().await;
    let mut refused = result?;
    refused.sort_by(f64::total_cmp);
    let serve_runs: usize = std::env::var("SERVE_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let load_ms: u64 = std::env::var("SERVE_LOAD_MS").ok().and_then(|r| r.parse().ok()).unwrap_or(5000);
    let ns = TempNamespace::new(&client, "bench-serve").await?;
    let result = serve_runs_on_node(client.clone(), &ns.name, serve_runs, load_ms).await;
    ns.delete().await;
    let serve = result?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        if v.is_empty() { f64::NAN } else { percentile(&v, 50.0) }
    };
    let pick = |warm: bool, first: bool| {
        median(serve.iter().filter(|r| r.0 == warm).map(|r| if first { r.1 } else { r.2 }).collect())
    };
    let (serve_warm, serve_cold, ready_warm, ready_cold) =
        (pick(true, true), pick(false, true), pick(true, false), pick(false, false));

    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    // The same latencies, named for what they measured when the hostages were on a
    // trickling repository.
    let slow = if slow_repos > 0 {
        println!(
            "with {hostages} releases on a repository trickling at 6 KiB/s in another namespace, one operator scope"
        );
        format!(" slow_repo_p95_ms={:.0}", percentile(&sorted, 95.0))
    } else {
        String::new()
    };
    let mut yard = yardstick.clone();
    yard.sort_by(f64::total_cmp);
    println!(
        "anomaly -> rollback, {runs} runs (ms): {}",
        latencies.iter().map(|l| format!("{l:.0}")).collect::<Vec<_>>().join(" ")
    );
    println!(
        "  p50 {:.0} ms   p95 {:.0} ms   max {:.0} ms",
        percentile(&sorted, 50.0),
        percentile(&sorted, 95.0),
        sorted[sorted.len() - 1]
    );
    println!("yardstick (pod annotation write -> visible), median {:.0} ms", percentile(&yard, 50.0));
    println!(
        "pod-side refusal -> rollback on the real node, {} runs (ms): {}",
        refused.len(),
        refused.iter().map(|l| format!("{l:.0}")).collect::<Vec<_>>().join(" ")
    );
    let (refusal_p50, refusal_p95) = if refused.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (percentile(&refused, 50.0), percentile(&refused, 95.0))
    };
    for (warm, first, ready) in &serve {
        let mode = if *warm { "warm" } else { "cold" };
        println!(
            "rollback to serving ({mode}, model load {load_ms} ms): first answer {first:.0} ms, all Ready {ready:.0} ms"
        );
    }
    println!(
        "  medians: warm first answer {serve_warm:.0} ms, all Ready {ready_warm:.0} ms; cold first answer {serve_cold:.0} ms, all Ready {ready_cold:.0} ms"
    );
    println!(
        "RESULT runs={runs} hostages={hostages} slow_repos={slow_repos} p50_ms={:.0} p95_ms={:.0} max_ms={:.0} yardstick_write_read_ms={:.0} refusals={} refusal_p50_ms={refusal_p50:.0} refusal_p95_ms={refusal_p95:.0} serve_runs={serve_runs} serve_load_ms={load_ms} serve_warm_ms={serve_warm:.0} serve_cold_ms={serve_cold:.0} ready_warm_ms={ready_warm:.0} ready_cold_ms={ready_cold:.0}{slow} {revocation}",
        percentile(&sorted, 50.0),
        percentile(&sorted, 95.0),
        sorted[sorted.len() - 1],
        percentile(&yard, 50.0),
        refused.len(),
    );
    Ok(())
}

async fn bench(
    client: kube::Client,
    ns: &str,
    runs: usize,
    hostages: usize,
    slow_ns: Option<&str>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
    repo.register(&client, ns).await?;
    // With a slow repository: one operator for the whole cluster, so the slow
    // repository's releases and this one share a scope and its reconcile slots.
    let operator = Operator::start(if slow_ns.is_some() { None } else { Some(ns) }, &[])?;
    let _slow = match slow_ns {
        Some(slow_ns) => Some(slow_repository(&client, slow_ns, hostages).await?),
        None => None,
    };
    let hostages = if slow_ns.is_some() { 0 } else { hostages };
    let releases: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let spec = json!({"strategy": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
    releases.create(&PostParams::default(), &release("fraud", "fraud/1.0/model.onnx", 4, spec)?).await?;
    wait_phase(&releases, "fraud", Phase::Promoted, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.logs()))?;
    let silent = modelgate_tests::hostile::Silent::start().await?;
    for i in 0..hostages {
        let spec = json!({"gates": {"interval": "5s", "checks": [{"name": "judge", "webhook": {
            "url": format!("https://127.0.0.1:{}/hang", silent.port), "timeout": "30s", "retries": 10}}]}});
        releases
            .create(&PostParams::default(), &release(&format!("hostage-{i}"), "fraud/1.0/model.onnx", 1, spec)?)
            .await?;
    }

    let mut latencies = Vec::new();
    let mut yardstick = Vec::new();
    for run in 0..runs {
        // A new revision each run: the same model, a new pod template.
        let patch = json!({"spec": {"model": {"target": "fraud/2.0/model.onnx"},
            "template": {"metadata": {"annotations": {"bench/run": run.to_string()}}}}});
        releases.patch("fraud", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let paused = wait_phase(&releases, "fraud", Phase::Paused, WAIT).await?;
        let status = paused.status.unwrap();
        let (canary, stable) = (status.canary.unwrap().revision.number, status.stable.unwrap().revision.number);
        let selector = format!("{LABEL_RELEASE}=fraud,{LABEL_REVISION}={canary}");
        let victim = eventually("a Ready canary pod", WAIT, || async {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            Ok(list.items.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            }))
        })
        .await?
        .name_any();

        // Yardstick: one write and the read that sees it.
        let start = Instant::now();
        let mark = json!({"metadata": {"annotations": {"bench/mark": run.to_string()}}});
        pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&mark)).await?;
        loop {
            let p = pods.get(&victim).await?;
            if p.annotations().get("bench/mark") == Some(&run.to_string()) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        yardstick.push(start.elapsed().as_secs_f64() * 1000.0);

        // The anomaly: the simulated kubelet crash-loops the pod.
        let crash = json!({"metadata": {"annotations": {BEHAVIOR_ANNOTATION: "CrashLoop"}}});
        pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&crash)).await?;
        let failing_seen = loop {
            let p = pods.get(&victim).await?;
            let crashing = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
                })
            });
            if crashing {
                break Instant::now();
            }
            tokio::time::sleep(POLL).await;
        };
        loop {
            let list = replica_sets.list(&ListParams::default().labels(&format!("{LABEL_RELEASE}=fraud"))).await?;
            let replicas = |rev: i64| {
                list.items
                    .iter()
                    .find(|rs| rs.labels().get(LABEL_REVISION) == Some(&rev.to_string()))
                    .and_then(|rs| rs.spec.replicas)
            };
            if replicas(canary) == Some(0) && replicas(stable) == Some(4) {
                break;
            }
            if failing_seen.elapsed() > WAIT {
                anyhow::bail!("no rollback within {WAIT:?}\n{}", operator.logs());
            }
            tokio::time::sleep(POLL).await;
        }
        let ms = failing_seen.elapsed().as_secs_f64() * 1000.0;
        eprintln!("run {run}: revision {canary} rolled back {ms:.0} ms after its pod failed");
        latencies.push(ms);
        wait_phase(&releases, "fraud", Phase::RolledBack, WAIT).await?;
    }
    if let Some(slow_ns) = slow_ns {
        // What the slow repository's releases were doing meanwhile: still waiting for
        // their verdict, or refused once the role did not arrive within the deadline.
        let hostages: Api<ModelRelease> = Api::namespaced(client.clone(), slow_ns);
        let mut phases = std::collections::BTreeMap::<String, usize>::new();
        for r in hostages.list(&ListParams::default()).await? {
            let s = r.status.unwrap_or_default();
            let phase = s.phase.map_or("none".to_string(), |p| p.as_str().to_string());
            let why = s.conditions.iter().find(|c| c.type_ == "Verified").map(|c| c.reason.clone()).unwrap_or_default();
            *phases.entry(format!("{phase}/{why}")).or_default() += 1;
        }
        println!("the slow repository's releases after the runs (phase/Verified reason): {phases:?}");
    }
    Ok((latencies, yardstick))
}

/// Revocation -> nothing serves: REVOCATIONS (default 5) runs with the repository
/// refreshed every 10 s and REVOCATIONS_DEFAULT (default 2) at the default interval
/// (5m). Each run releases a model of its own repository (4 pods on the simulated
/// node), then the publishers remove it from the signed metadata; timed from the moment
/// the new metadata is on the server to the moment no pod of the release is left (the
/// repository's policy default: a revoked model with nothing trusted to return to is
/// scaled to zero). Returns the RESULT keys, with the yardstick (one pod write until it
/// is visible, the same yardstick as the rollback runs).
async fn revocations(client: &kube::Client) -> anyhow::Result<String> {
    let count = |key: &str, default: usize| std::env::var(key).ok().and_then(|r| r.parse().ok()).unwrap_or(default);
    let mut keys = Vec::new();
    for (interval, runs, key) in
        [("10s", count("REVOCATIONS", 5), "revocation"), ("5m", count("REVOCATIONS_DEFAULT", 2), "revocation_default")]
    {
        if runs == 0 {
            continue;
        }
        let ns = TempNamespace::new(client, "bench-revocation").await?;
        let result = revocation_runs(client, &ns.name, interval, runs).await;
        ns.delete().await;
        let (mut times, mut yard) = result?;
        times.sort_by(f64::total_cmp);
        yard.sort_by(f64::total_cmp);
        println!(
            "revocation -> no pod left, refresh {interval}, {runs} runs (ms): {}; yardstick median {:.0} ms",
            times.iter().map(|l| format!("{l:.0}")).collect::<Vec<_>>().join(" "),
            percentile(&yard, 50.0)
        );
        keys.push(format!(
            "{key}_refresh={interval} {key}_runs={runs} {key}_p50_ms={:.0} {key}_p95_ms={:.0} {key}_yardstick_ms={:.0}",
            percentile(&times, 50.0),
            percentile(&times, 95.0),
            percentile(&yard, 50.0)
        ));
    }
    Ok(keys.join(" "))
}

async fn revocation_runs(
    client: &kube::Client,
    ns: &str,
    interval: &str,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let operator = Operator::start(Some(ns), &[])?;
    let releases: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (mut times, mut yardstick) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let repo = ModelRepo::new("fraud", &["1.0"])?;
        let (repo_name, name) = (format!("repo-{run}"), format!("fraud-{run}"));
        repo.register_as(client, ns, &repo_name, interval).await?;
        let spec = json!({"repositoryRef": {"name": repo_name}});
        releases.create(&PostParams::default(), &release(&name, "fraud/1.0/model.onnx", 4, spec)?).await?;
        wait_phase(&releases, &name, Phase::Promoted, WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.logs()))?;
        let selector = format!("{LABEL_RELEASE}={name}");
        let one = eventually("4 pods", WAIT, || async {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            Ok((list.items.len() == 4).then(|| list.items[0].name_any()))
        })
        .await?;
        // Yardstick: one write and the read that sees it.
        let start = Instant::now();
        let mark = json!({"metadata": {"annotations": {"bench/mark": run.to_string()}}});
        pods.patch(&one, &PatchParams::default(), &Patch::Merge(&mark)).await?;
        while pods.get(&one).await?.annotations().get("bench/mark") != Some(&run.to_string()) {
            tokio::time::sleep(POLL).await;
        }
        yardstick.push(start.elapsed().as_secs_f64() * 1000.0);

        repo.remove(&["fraud/1.0/model.onnx"])?;
        let signed = Instant::now();
        let limit = modelgate::api::parse_duration(interval).unwrap_or(WAIT) + WAIT;
        loop {
            if pods.list(&ListParams::default().labels(&selector)).await?.items.is_empty() {
                break;
            }
            if signed.elapsed() > limit {
                anyhow::bail!("{name} still has pods {limit:?} after its revocation\n{}", operator.logs());
            }
            tokio::time::sleep(POLL * 4).await;
        }
        let ms = signed.elapsed().as_secs_f64() * 1000.0;
        eprintln!("revocation run {run} (refresh {interval}): no pod of {name} left {ms:.0} ms after the revocation");
        times.push(ms);
        wait_phase(&releases, &name, Phase::Revoked, WAIT).await?;
    }
    Ok((times, yardstick))
}

/// A repository whose metadata trickles at 6 KiB/s: its targets are signed by a
/// delegated role of some 470 KB (4,000 entries), which takes longer than the 60 s
/// metadata deadline to arrive, and `hostages` releases in `ns` each name one of them.
async fn slow_repository(client: &kube::Client, ns: &str, hostages: usize) -> anyhow::Result<ModelRepo> {
    let repo = ModelRepo::trickling("fraud", &["1.0"])?;
    repo.delegate("bulk", "bulk/*/*")?;
    repo.bulk_in("bulk", 4000)?;
    repo.register(client, ns).await?;
    let repos: Api<modelgate::api::ModelRepository> = Api::namespaced(client.clone(), ns);
    let slow = json!({"spec": {"metadataUrl": repo.server.url("slow/metadata/")}});
    repos.patch(modelgate_tests::models::REPOSITORY, &PatchParams::default(), &Patch::Merge(&slow)).await?;
    let releases: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    for i in 0..hostages {
        let target = format!("bulk/{i}/x.bin");
        releases.create(&PostParams::default(), &release(&format!("hostage-{i}"), &target, 1, json!({}))?).await?;
    }
    Ok(repo)
}

/// Pod-side refusals on the real node: a tampered model per run, refused by the real
/// `modelgate fetch` init container.
async fn refusal_runs(client: kube::Client, ns: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    if runs == 0 {
        return Ok(Vec::new());
    }
    node::require_images()?;
    let versions: Vec<String> = std::iter::once("1.0".to_string()).chain((1..=runs).map(|i| format!("r{i}"))).collect();
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    let repo = ModelRepo::for_pods("fraud", &versions)?;
    for v in &versions[1..] {
        repo.tamper(&format!("fraud/{v}/model.onnx"))?;
    }
    // The default refresh interval: nothing but the pod's status may lead to the rollback.
    repo.register_as(&client, ns, modelgate_tests::models::REPOSITORY, "5m").await?;
    let operator = Operator::start(Some(ns), &["--fetch-image", node::OPERATOR_IMAGE])?;
    let releases: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    releases.create(&PostParams::default(), &node::release("fraud", "fraud/1.0/model.onnx", 1, json!({}))?).await?;
    wait_phase(&releases, "fraud", Phase::Promoted, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.logs()))?;
    let mut latencies = Vec::new();
    for (run, v) in versions[1..].iter().enumerate() {
        let patch = json!({"spec": {"model": {"target": format!("fraud/{v}/model.onnx")}}});
        releases.patch("fraud", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let started = Instant::now();
        let refused_seen = loop {
            let list = pods.list(&ListParams::default().labels(&format!("{LABEL_RELEASE}=fraud"))).await?;
            let refused = list.items.iter().any(|p| {
                p.status.as_ref().and_then(|s| s.init_container_statuses.as_ref()).is_some_and(|cs| {
                    cs.iter().any(|c| {
                        let t = c.state.as_ref().and_then(|s| s.terminated.as_ref());
                        t.is_some_and(|t| t.exit_code == modelgate::api::FETCH_EXIT_UNTRUSTED)
                    })
                })
            });
            if refused {
                break Instant::now();
            }
            if started.elapsed() > WAIT {
                anyhow::bail!("no pod refused {v} within {WAIT:?}\n{}", operator.logs());
            }
            tokio::time::sleep(POLL * 4).await;
        };
        let status = releases.get("fraud").await?.status.unwrap_or_default();
        let stable = status.stable.map(|s| s.revision.number).unwrap_or(1);
        loop {
            let list = replica_sets.list(&ListParams::default().labels(&format!("{LABEL_RELEASE}=fraud"))).await?;
            let serving = list.items.iter().filter(|rs| rs.spec.replicas.unwrap_or(0) > 0);
            let only_stable: Vec<_> = serving.map(|rs| rs.labels().get(LABEL_REVISION).cloned()).collect();
            if only_stable == [Some(stable.to_string())]
                && releases.get("fraud").await?.status.is_some_and(|s| s.canary.is_none())
            {
                break;
            }
            if refused_seen.elapsed() > WAIT {
                anyhow::bail!("no rollback within {WAIT:?}\n{}", operator.logs());
            }
            tokio::time::sleep(POLL).await;
        }
        let ms = refused_seen.elapsed().as_secs_f64() * 1000.0;
        eprintln!("refusal {run}: {v} rolled back {ms:.0} ms after the pod refused it");
        latencies.push(ms);
        wait_phase(&releases, "fraud", Phase::RolledBack, WAIT).await?;
    }
    Ok(latencies)
}

/// (warm?, ms to the first answer from revision 1, ms to all of revision 1's pods Ready)
async fn serve_runs_on_node(
    client: kube::Client,
    ns: &str,
    runs: usize,
    load_ms: u64,
) -> anyhow::Result<Vec<(bool, f64, f64)>> {
    if runs == 0 {
        return Ok(Vec::new());
    }
    node::require_images()?;
    let behaviour = format!("load_ms={load_ms}");
    let repo = ModelRepo::for_pods("fraud", &[&format!("1.0@{behaviour}"), &format!("2.0@{behaviour}")])?;
    repo.register_as(&client, ns, modelgate_tests::models::REPOSITORY, "5m").await?;
    let operator = Operator::start(Some(ns), &["--fetch-image", node::OPERATOR_IMAGE])?;
    let releases: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // A new connection per request: a kept-alive one stays with the pod it first reached.
    let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).pool_max_idle_per_host(0).build()?;
    let mut results = Vec::new();
    for warm in [true, false] {
        for run in 0..runs {
            let name = format!("{}-{run}", if warm { "warm" } else { "cold" });
            let window = if warm { "10m" } else { "0s" };
            let spec = json!({"service": {"port": 8080}, "rollback": {"keepWarm": {"window": window}}});
            releases.create(&PostParams::default(), &node::release(&name, "fraud/1.0/model.onnx", 2, spec)?).await?;
            let fail = |e: anyhow::Error| anyhow::anyhow!("{name}: {e}\n{}", operator.logs());
            wait_phase(&releases, &name, Phase::Promoted, WAIT).await.map_err(fail)?;
            let patch = json!({"spec": {"model": {"target": "fraud/2.0/model.onnx"}}});
            releases.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            // Promoted, and revision 1 down to its warm pod (out of service) or to none.
            let revision_pods = |revision: i64| {
                let (pods, name) = (pods.clone(), name.clone());
                async move {
                    let selector = format!("{LABEL_RELEASE}={name},{LABEL_REVISION}={revision}");
                    anyhow::Ok(pods.list(&ListParams::default().labels(&selector)).await?.items)
                }
            };
            let want_warm = if warm { 1 } else { 0 };
            eventually("revision 2 promoted, revision 1 warm or gone", WAIT, || async {
                let r = releases.get(&name).await?;
                let s = r.status.unwrap_or_default();
                let promoted = s.phase == Some(Phase::Promoted) && s.stable.is_some_and(|st| st.revision.number == 2);
                let old = revision_pods(1).await?;
                let out =
                    old.iter().all(|p| p.labels().get("modelgate.dev/serving").map(String::as_str) == Some("false"));
                Ok((promoted && old.len() == want_warm && out && ready_count(&revision_pods(2).await?) == 2)
                    .then_some(()))
            })
            .await
            .map_err(fail)?;
            let svc =
                kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns).get(&name).await?;
            let ip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
            let url = format!("http://{ip}:8080/predict");
            let token = format!("1@{run}");
            let annotate = json!({"metadata": {"annotations": {"modelgate.dev/rollback": token}}});
            releases.patch(&name, &PatchParams::default(), &Patch::Merge(&annotate)).await?;
            let started = Instant::now();
            let (mut first, mut all) = (None, None);
            while first.is_none() || all.is_none() {
                if first.is_none()
                    && let Ok(r) = http.get(&url).send().await
                    && r.text().await.is_ok_and(|t| t.contains("\"revision\":\"1\""))
                {
                    first = Some(started.elapsed());
                }
                if all.is_none() && ready_count(&revision_pods(1).await?) >= 2 {
                    all = Some(started.elapsed());
                }
                if started.elapsed() > WAIT {
                    anyhow::bail!("{name}: revision 1 did not serve again within {WAIT:?}\n{}", operator.logs());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1000.0;
            eprintln!(
                "{name}: first answer from revision 1 after {:.0} ms, all Ready after {:.0} ms",
                ms(first),
                ms(all)
            );
            results.push((warm, ms(first), ms(all)));
            releases.delete(&name, &Default::default()).await?;
        }
    }
    Ok(results)
}

fn ready_count(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

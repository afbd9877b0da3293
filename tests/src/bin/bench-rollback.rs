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
    let client = client().await?;
    install_crds()?;
    let ns = TempNamespace::new(&client, "bench-rollback").await?;
    let result = bench(client.clone(), &ns.name, runs, hostages).await;
    ns.delete().await;
    let (latencies, yardstick) = result?;
    let refusals: usize = std::env::var("REFUSALS").ok().and_then(|r| r.parse().ok()).unwrap_or(10);
    let ns = TempNamespace::new(&client, "bench-refusal").await?;
    let result = refusal_runs(client.clone(), &ns.name, refusals).await;
    ns.delete().await;
    let mut refused = result?;
    refused.sort_by(f64::total_cmp);

    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
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
    println!(
        "RESULT runs={runs} hostages={hostages} p50_ms={:.0} p95_ms={:.0} max_ms={:.0} yardstick_write_read_ms={:.0} refusals={} refusal_p50_ms={refusal_p50:.0} refusal_p95_ms={refusal_p95:.0}",
        percentile(&sorted, 50.0),
        percentile(&sorted, 95.0),
        sorted[sorted.len() - 1],
        percentile(&yard, 50.0),
        refused.len(),
    );
    Ok(())
}

async fn bench(client: kube::Client, ns: &str, runs: usize, hostages: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
    repo.register(&client, ns).await?;
    let operator = Operator::start(Some(ns), &[])?;
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
        let (canary, stable) = (status.canary.unwrap().revision, status.stable.unwrap().revision);
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
    Ok((latencies, yardstick))
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
        let stable = status.stable.map(|s| s.revision).unwrap_or(1);
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

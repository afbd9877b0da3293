//! Anomaly -> rollback latency on the test control plane (run by
//! `tests/bench/rollback-latency`). Each run rolls out a new revision to 50%, then has
//! the simulated kubelet crash one canary pod, and times from the moment the pod's
//! failing status is visible in the API to the moment the canary ReplicaSet asks for 0
//! pods and the stable one for all of them. The yardstick, measured the same way in the
//! same run: an annotation written to a pod until it is visible (one API write and read).

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
        "RESULT runs={runs} hostages={hostages} p50_ms={:.0} p95_ms={:.0} max_ms={:.0} yardstick_write_read_ms={:.0}",
        percentile(&sorted, 50.0),
        percentile(&sorted, 95.0),
        sorted[sorted.len() - 1],
        percentile(&yard, 50.0)
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

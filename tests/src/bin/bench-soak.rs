//! Continuous rollouts and rollbacks for MINUTES minutes (run by `tests/bench/soak`):
//! RELEASES releases (default 50) in 5 namespaces cycle through versions 1.0 and 2.0
//! (pass: promoted) and 3.0 (its pods crash: rolled back), each with a webhook gate
//! that passes, against repositories refreshed every 10 s that publish a new version
//! every 5 minutes. The operator's RSS, open file descriptors and tasks are sampled each
//! minute; after the first quarter (warm-up) the RSS must stay within +-10% and its
//! slope is reported. Warnings in the operator's log are counted by message.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use modelgate::api::{ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, TempNamespace, client, install_crds, proc_status},
    models::{ModelRepo, behave, release, set_target, webhook_judge},
};
use serde_json::json;

const VERSIONS: [&str; 3] = ["fraud/1.0/model.onnx", "fraud/2.0/model.onnx", "fraud/3.0/model.onnx"];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Sample {
    minute: f64,
    rss_mib: f64,
    fds: usize,
    tasks: usize,
}

fn sample(pid: u32, start: Instant) -> Sample {
    let field = |name: &str| proc_status(pid, name);
    Sample {
        minute: start.elapsed().as_secs_f64() / 60.0,
        rss_mib: field("VmRSS:") / 1024.0,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0),
        tasks: field("Threads:") as usize,
    }
}

/// Least-squares slope of RSS over time, in MiB per hour.
fn slope(samples: &[&Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) =
        (samples.iter().map(|s| s.minute).sum::<f64>() / n, samples.iter().map(|s| s.rss_mib).sum::<f64>() / n);
    let cov: f64 = samples.iter().map(|s| (s.minute - mx) * (s.rss_mib - my)).sum();
    let var: f64 = samples.iter().map(|s| (s.minute - mx).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var * 60.0 }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (minutes, n) = (env("MINUTES", 60), env("RELEASES", 50) as usize);
    let client = client().await?;
    install_crds()?;
    let mut spaces = Vec::new();
    for _ in 0..5 {
        spaces.push(TempNamespace::new(&client, "bench-soak").await?);
    }
    let names: Vec<String> = spaces.iter().map(|s| s.name.clone()).collect();
    let result = soak(&client, &names, n, minutes).await;
    for ns in spaces {
        ns.delete().await;
    }
    let (samples, rollouts, rollbacks, warnings) = result?;
    let warm = samples.iter().filter(|s| s.minute >= minutes as f64 / 4.0).collect::<Vec<_>>();
    let (first, last) = (warm.first().copied(), samples.last());
    let (Some(first), Some(last)) = (first, last) else { anyhow::bail!("no samples") };
    let lo = warm.iter().map(|s| s.rss_mib).fold(f64::MAX, f64::min);
    let hi = warm.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let band = (hi - lo) / first.rss_mib * 100.0;
    println!("minute  rss_mib  fds  tasks");
    for s in &samples {
        println!("{:6.1}  {:7.1}  {:3}  {:5}", s.minute, s.rss_mib, s.fds, s.tasks);
    }
    println!("after warm-up (minute {:.0} on): RSS {lo:.1}-{hi:.1} MiB, spread {band:.1}% of the start", first.minute);
    println!("{rollouts} rollouts promoted, {rollbacks} rolled back; operator warnings by message:");
    for (message, count) in &warnings {
        println!("  {count:5}  {message}");
    }
    println!(
        "RESULT minutes={minutes} releases={n} rollouts={rollouts} rollbacks={rollbacks} rss_start_mib={:.1} \
         rss_end_mib={:.1} rss_spread_pct={band:.1} rss_slope_mib_per_h={:.2} fds_start={} fds_end={} \
         tasks_start={} tasks_end={} warning_kinds={}",
        first.rss_mib,
        last.rss_mib,
        slope(&warm),
        first.fds,
        last.fds,
        first.tasks,
        last.tasks,
        warnings.len()
    );
    Ok(())
}

type Outcome = (Vec<Sample>, usize, usize, BTreeMap<String, usize>);

async fn soak(client: &Client, namespaces: &[String], n: usize, minutes: u64) -> anyhow::Result<Outcome> {
    let mut repo = ModelRepo::new("fraud", &["1.0", "2.0", "3.0"])?;
    // One judge answers for every namespace; each gets a copy of its CA ConfigMap.
    let first = namespaces.first().ok_or_else(|| anyhow::anyhow!("no namespace"))?;
    let (_judge_dir, _judge) = webhook_judge(client, first).await?;
    let ca = Api::<ConfigMap>::namespaced(client.clone(), first).get("judge-ca").await?;
    for ns in namespaces {
        repo.register(client, ns).await?; // refreshInterval 10s
        behave(client, ns, repo.sha256(VERSIONS[2]), "CrashLoop").await?;
        let copy = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "judge-ca"}, "data": ca.data});
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .patch("judge-ca", &PatchParams::apply("modelgate-bench"), &Patch::Apply(&copy))
            .await?;
    }
    let url = _judge.url("judge");
    let spec = json!({
        "strategy": {"steps": [{"setWeight": 50}, {"pause": {"duration": "10s"}}]},
        "gates": {"interval": "10s", "checks": [{"name": "judge", "webhook": {"url": url, "timeout": "2s", "caBundle": {"configMapRef": {"name": "judge-ca", "key": "ca.crt"}}}}]},
    });
    // Only the soak's namespaces (as a namespaced install runs): other work on the same
    // control plane (the test suite) is not its business.
    let watched = namespaces.join(",");
    let operator = Operator::start(None, &["--namespace", &watched])?;
    stream::iter(0..n)
        .map(|i| {
            let api: Api<ModelRelease> = Api::namespaced(client.clone(), &namespaces[i % namespaces.len()]);
            let r = release(&format!("model-{i:03}"), VERSIONS[0], 2, spec.clone());
            async move {
                api.create(&PostParams::default(), &r?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;

    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let mut samples = vec![sample(operator.pid(), start)];
    let mut next_sample = start + Duration::from_secs(60);
    let mut next_publish = start + Duration::from_secs(300);
    let mut published = 0;
    let (mut rollouts, mut rollbacks) = (0, 0);
    let mut step: BTreeMap<String, usize> = BTreeMap::new();
    let all: Api<ModelRelease> = Api::all(client.clone());
    while Instant::now() < end {
        // Each settled release moves on to its next version.
        for r in all.list(&ListParams::default()).await?.items {
            let status = r.status.as_ref();
            // Settled on the spec as it is now (a status still about the previous
            // target is not an outcome of this one).
            let current = status.and_then(|s| s.observed_generation) == r.metadata.generation;
            let settled = current && matches!(status.and_then(|s| s.phase), Some(Phase::Promoted | Phase::RolledBack));
            let (Some(ns), Some(name)) = (r.metadata.namespace.clone(), r.metadata.name.clone()) else { continue };
            let at = step.entry(format!("{ns}/{name}")).or_default();
            let want = VERSIONS[*at % VERSIONS.len()];
            if settled && r.spec.model.target == want {
                match status.and_then(|s| s.phase) {
                    Some(Phase::Promoted) => rollouts += 1,
                    _ => rollbacks += 1,
                }
                *at += 1;
                let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
                set_target(&api, &name, VERSIONS[*at % VERSIONS.len()]).await?;
            }
        }
        if Instant::now() >= next_publish {
            published += 1;
            repo.add("extra", &[&format!("{published}.0")])?;
            next_publish += Duration::from_secs(300);
        }
        if Instant::now() >= next_sample {
            let s = sample(operator.pid(), start);
            eprintln!(
                "minute {:.0}: RSS {:.1} MiB, {} fds, {} tasks; {rollouts} promoted, {rollbacks} rolled back",
                s.minute, s.rss_mib, s.fds, s.tasks
            );
            samples.push(s);
            next_sample += Duration::from_secs(60);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut warnings: BTreeMap<String, usize> = BTreeMap::new();
    for line in operator.logs().lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")) {
        // The message without timestamps and spans: the text after the level's target.
        let message = line.split(": ").skip(1).collect::<Vec<_>>().join(": ");
        let message: String = message.split(" error=").next().unwrap_or_default().chars().take(120).collect();
        *warnings.entry(message).or_default() += 1;
    }
    Ok((samples, rollouts, rollbacks, warnings))
}

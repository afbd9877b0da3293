//! The judge on real traffic, many times over (run by `tests/bench/judge`): one release
//! of 2 replicas on the real node under steady load (30 requests/s through its
//! Service), the real Prometheus scraping every pod every 2 s, the judge every 10 s
//! (`node::judged_spec`: baseline pods, latency and errors critical) with the demo's
//! threshold gate beside it. RUNS (default 20) rollouts of each of: A/A (new bytes, the
//! same behaviour), +20% latency, +2 points of errors, +50% latency, in turn, each a
//! freshly published version. Counted: A/A rollouts rolled back (false alarms), bad ones
//! rolled back by the judge (caught), and how long the judge took to decide (from the
//! rollout's start to its rollback). The yardstick, measured in the same rollouts: how
//! many of the bad ones the demo's threshold gate failed at least once.

use std::time::Duration;

use kube::{Api, api::PostParams};
use modelgate::api::{ModelRelease, Outcome};
use modelgate_tests::{
    harness::{Operator, TempNamespace, client, eventually, install_crds},
    models::{ModelRepo, REPOSITORY, set_target, wait_stable},
    node::{self, OPERATOR_IMAGE},
    prometheus::Prometheus,
};

const WAIT: Duration = Duration::from_secs(300);
const INTERVAL_S: f64 = 10.0;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A scenario: its name and the behaviour of its model (the stable one: latency 50 ms).
const SCENARIOS: [(&str, &str); 4] = [
    ("aa", "latency_ms=50"),
    ("latency20", "latency_ms=60"),
    ("errors2", "latency_ms=50,errors=0.02"),
    ("latency50", "latency_ms=75"),
];

#[derive(Default, Clone)]
struct Tally {
    rolled_back: usize,
    by_judge: usize,
    by_gate: usize,
    decision_s: Vec<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = env_or("RUNS", 20);
    let client = client().await?;
    install_crds()?;
    node::require_images()?;
    let ns = TempNamespace::new(&client, "bench-judge").await?;
    let result = bench(&client, &ns.name, runs).await;
    ns.delete().await;
    let tallies = result?;
    let t = |name: &str| tallies.iter().find(|(n, _)| *n == name).map(|(_, t)| t.clone()).unwrap_or_default();
    println!("{runs} rollouts of each, 2 replicas, judge every {INTERVAL_S} s on 2 s samples, load 30/s");
    for (name, tally) in &tallies {
        println!(
            "  {name:<10} rolled back {:>2}/{runs} (by the judge {:>2}, threshold gate failed at least once in {:>2})  \
             median decision {:5.1} s",
            tally.rolled_back,
            tally.by_judge,
            tally.by_gate,
            median(tally.decision_s.clone())
        );
    }
    let bad: Vec<f64> = ["latency20", "errors2", "latency50"].iter().flat_map(|n| t(n).decision_s).collect::<Vec<_>>();
    let decision = median(bad);
    println!(
        "RESULT runs={runs} aa_false_rollbacks={} latency20_caught={} errors2_caught={} latency50_caught={} \
         median_decision_s={decision:.1} median_decision_intervals={:.1} gate_latency20_caught={} gate_errors2_caught={} \
         gate_latency50_caught={}",
        t("aa").rolled_back,
        t("latency20").by_judge,
        t("errors2").by_judge,
        t("latency50").by_judge,
        decision / INTERVAL_S,
        t("latency20").by_gate,
        t("errors2").by_gate,
        t("latency50").by_gate,
    );
    Ok(())
}

async fn bench(client: &kube::Client, ns: &str, runs: usize) -> anyhow::Result<Vec<(&'static str, Tally)>> {
    // Every version published before the first rollout: the repository is read as its
    // refresh (5 m) says, not at each new target.
    let version = |run: usize, i: usize| format!("{}.{run}.{i}", i + 2);
    let mut versions = vec!["1.0.0@latency_ms=50".to_string()];
    for run in 0..runs {
        versions.extend(SCENARIOS.iter().enumerate().map(|(i, (_, b))| format!("{}@{b}", version(run, i))));
    }
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    let repo = ModelRepo::for_pods("fraud", &versions)?;
    repo.register_as(client, ns, REPOSITORY, "5m").await?;
    let prometheus = Prometheus::scraping_pods(client, ns).await?;
    let gateway = format!("{}/32", modelgate_tests::tuf::POD_GATEWAY);
    let _operator = Operator::start(Some(ns), &["--fetch-image", OPERATOR_IMAGE, "--gate-allow-cidr", &gateway])?;
    let api: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    let spec = node::judged_spec(&prometheus.url(), "10s");
    api.create(&PostParams::default(), &node::release("fraud", "fraud/1.0.0/model.onnx", 2, spec)?).await?;
    wait_stable(&api, "fraud", 1, WAIT).await?;
    // Enough load for every rollout: 30/s for as long as they may take.
    let seconds = u64::try_from(runs * SCENARIOS.len() * 120).unwrap_or(3600).min(3600);
    let mut load = node::Load::start(client, ns, "fraud", 30, seconds).await?;
    let mut tallies: Vec<(&'static str, Tally)> = SCENARIOS.iter().map(|(n, _)| (*n, Tally::default())).collect();
    for run in 0..runs {
        if run > 0 && run % 7 == 0 {
            // The load generator stops after `seconds`; start it again well before.
            load.stop().await?;
            load = node::Load::start(client, ns, "fraud", 30, seconds).await?;
        }
        for (i, (name, _)) in SCENARIOS.iter().enumerate() {
            let target = format!("fraud/{}/model.onnx", version(run, i));
            set_target(&api, "fraud", &target).await?;
            let entry = eventually(&format!("{target} decided"), WAIT, || async {
                let status = api.get("fraud").await?.status.unwrap_or_default();
                Ok(status.history.iter().rev().find(|h| h.revision.target == target).cloned().map(|h| (h, status)))
            })
            .await?;
            let (h, status) = entry;
            let tally = &mut tallies[i].1;
            let gate_failed = status.gates.iter().any(|g| g.name == "error-ratio" && g.consecutive_failures > 0);
            let why = h.reason.clone().unwrap_or_default();
            tally.by_gate += usize::from(gate_failed || why.contains("error-ratio"));
            if h.outcome == Outcome::RolledBack {
                tally.rolled_back += 1;
                tally.by_judge += usize::from(why.starts_with("Analysis"));
                if let (Some(s), Some(f)) = (&h.started_at, &h.finished_at) {
                    tally.decision_s.push((f.0.as_second() - s.0.as_second()) as f64);
                }
            }
            let took = match (&h.started_at, &h.finished_at) {
                (Some(s), Some(f)) => f.0.as_second() - s.0.as_second(),
                _ => -1,
            };
            eprintln!("run {run} {name}: {} after {took} s {}", h.outcome, why.chars().take(200).collect::<String>());
            // Back to a settled release before the next rollout: the stable revision
            // serving at full size (a rollback finishing, or a promotion's new stable).
            eventually("settled", WAIT, || async {
                let status = api.get("fraud").await?.status.unwrap_or_default();
                let settled = status.canary.is_none()
                    && matches!(
                        status.phase,
                        Some(modelgate::api::Phase::RolledBack | modelgate::api::Phase::Promoted)
                    );
                Ok(settled.then_some(()))
            })
            .await?;
        }
    }
    let outcomes = load.stop().await?;
    eprintln!("load: {outcomes}");
    Ok(tallies)
}

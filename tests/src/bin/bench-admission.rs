//! Admission latency (run by `tests/bench/admission`): CLIENTS concurrent clients
//! (default 20) create ModelReleases with `dryRun=All` (the API server runs validation
//! and admission, webhooks included, and stores nothing) for ROUND_SECONDS (default 20)
//! at a time, alternately in a namespace the operator's webhook judges and in one no
//! webhook matches (the yardstick: the same requests without the webhook, same run).
//! ROUNDS (default 3) of each; every fifth request asks for a privileged pod, which the
//! webhook must refuse with the field named. Reported: the median over rounds of each
//! percentile, the p99 the webhook adds, refusals as expected, and errors (anything else).

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use modelgate::api::ModelRelease;
use modelgate_tests::{
    harness::{Operator, TempNamespace, client, eventually, install_crds},
    models::{ModelRepo, release},
};
use serde_json::json;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What one round measured.
#[derive(Default)]
struct Round {
    latencies_ms: Vec<f64>,
    refused_ok: usize,
    errors: Vec<String>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
}

/// `clients` loops creating releases (dry run) in `ns` for `seconds`.
async fn round(client: &Client, ns: &str, clients: u64, seconds: u64, judged: bool) -> Round {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let loops = (0..clients).map(|c| {
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
        async move {
            let mut r = Round::default();
            let params = PostParams { dry_run: true, ..Default::default() };
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let bad = i.is_multiple_of(5);
                let spec = if bad {
                    json!({"template": {"spec": {"containers": [
                        {"name": "server", "image": "i", "securityContext": {"privileged": true}}]}}})
                } else {
                    json!({})
                };
                let Ok(object) = release(&format!("m-{c}-{i}"), "fraud/1.0/model.onnx", 1, spec) else { continue };
                let started = Instant::now();
                let result = api.create(&params, &object).await;
                r.latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                match result {
                    Ok(_) if !(bad && judged) => {}
                    Err(kube::Error::Api(s)) if bad && judged && s.message.contains("spec.template:") => {
                        r.refused_ok += 1
                    }
                    Ok(_) => r.errors.push("a privileged pod was let through".into()),
                    Err(e) => r.errors.push(e.to_string()),
                }
            }
            r
        }
    });
    let mut all = Round::default();
    for r in futures::future::join_all(loops).await {
        all.latencies_ms.extend(r.latencies_ms);
        all.refused_ok += r.refused_ok;
        all.errors.extend(r.errors);
    }
    all.latencies_ms.sort_by(f64::total_cmp);
    all
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (clients, seconds, rounds) = (env("CLIENTS", 20), env("ROUND_SECONDS", 20), env("ROUNDS", 3));
    let client = client().await?;
    install_crds()?;
    let judged_ns = TempNamespace::new(&client, "bench-admission").await?;
    let plain_ns = TempNamespace::new(&client, "bench-plain").await?;
    let repo = ModelRepo::new("fraud", &["1.0"])?;
    repo.register(&client, &judged_ns.name).await?;
    repo.register(&client, &plain_ns.name).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config_name = format!("modelgate-{}", judged_ns.name);
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": config_name},
        "webhooks": [{
            "name": "modelreleases.modelgate.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 5,
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate-modelrelease")},
            "rules": [{"apiGroups": ["modelgate.dev"], "apiVersions": ["*"], "resources": ["modelreleases"],
                       "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": judged_ns.name}},
        }],
    }))?;
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    configs.create(&PostParams::default(), &config).await?;
    let address = format!("127.0.0.1:{port}");
    let args = [
        "--admission-address",
        &address,
        "--admission-name",
        "127.0.0.1",
        "--admission-webhook-configuration",
        &config_name,
        "--admission-secret",
        "webhook-tls",
        "--trust-namespace",
        &judged_ns.name,
    ];
    let operator = Operator::start(None, &args)?;
    let result = async {
        // Warm: the webhook answers and the repository has a verdict on the model.
        eventually("the webhook warm", Duration::from_secs(120), || async {
            let r = round(&client, &judged_ns.name, 1, 1, true).await;
            Ok((r.errors.is_empty() && !r.latencies_ms.is_empty()).then_some(()))
        })
        .await?;
        let (mut judged, mut plain) = (Vec::new(), Vec::new());
        for n in 0..rounds {
            judged.push(round(&client, &judged_ns.name, clients, seconds, true).await);
            plain.push(round(&client, &plain_ns.name, clients, seconds, false).await);
            eprintln!(
                "round {}: {} reviewed, {} plain",
                n + 1,
                judged[n as usize].latencies_ms.len(),
                plain[n as usize].latencies_ms.len()
            );
        }
        anyhow::Ok((judged, plain))
    }
    .await;
    configs.delete(&config_name, &DeleteParams::default()).await?;
    drop(operator);
    let (judged, plain) = result?;
    let stat = |rounds: &[Round], p: f64| median(rounds.iter().map(|r| percentile(&r.latencies_ms, p)).collect());
    let requests: usize = judged.iter().map(|r| r.latencies_ms.len()).sum();
    let refused_ok: usize = judged.iter().map(|r| r.refused_ok).sum();
    let errors: Vec<&String> = judged.iter().chain(plain.iter()).flat_map(|r| r.errors.iter()).collect();
    let (p50, p95, p99) = (stat(&judged, 0.5), stat(&judged, 0.95), stat(&judged, 0.99));
    let (y50, y95, y99) = (stat(&plain, 0.5), stat(&plain, 0.95), stat(&plain, 0.99));
    println!("{clients} clients, {rounds} rounds of {seconds} s each way, dry-run creates");
    println!("  with the webhook: {requests} requests, p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms");
    println!("  yardstick (no webhook, same run): p50 {y50:.1} ms, p95 {y95:.1} ms, p99 {y99:.1} ms");
    println!("  added at p99: {:.1} ms; refused as expected: {refused_ok}; errors: {}", p99 - y99, errors.len());
    for e in errors.iter().take(5) {
        println!("  error: {e}");
    }
    println!(
        "RESULT requests={requests} p50_ms={p50:.1} p95_ms={p95:.1} p99_ms={p99:.1} yardstick_p50_ms={y50:.1} \
         yardstick_p99_ms={y99:.1} added_p99_ms={:.1} refused_ok={refused_ok} errors={}",
        p99 - y99,
        errors.len()
    );
    Ok(())
}

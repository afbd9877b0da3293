//! On the real node: containers really start, probes really run, `modelgate fetch` really
//! verifies the model in the pod, and every failure a real container can produce rolls
//! its release back while the stable revision keeps serving.

use std::time::{Duration, Instant};

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use modelgate::api::{LABEL_RELEASE, LABEL_REVISION, ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, with_temp_ns},
    models::{ModelRepo, set_target, wait_phase, wait_stable},
    node::{self, OPERATOR_IMAGE},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

/// The operator as the chart runs it, with model pods fetching through the real image.
fn operator(ns: &str) -> anyhow::Result<Operator> {
    node::require_images()?;
    Operator::start(Some(ns), &["--fetch-image", OPERATOR_IMAGE])
}

/// Each failure, in its own release: 1.0.0 is promoted on real pods first, then the bad
/// version rolls out and is rolled back with the reason the real kubelet gave. The
/// repository refreshes at the default interval (5m), so nothing here waits for it: a
/// pod's status alone must lead to the rollback.
#[tokio::test]
async fn real_container_failures_roll_back_and_the_stable_model_keeps_serving() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("node-failures", |client, ns| async move {
        let mut repo = ModelRepo::for_pods(
            "fraud",
            &["1.0.0", "2.0.0@exit=1", "3.0.0@memory_mib=256", "4.0.0@ready=false", "5.0.0"],
        )?;
        repo.add("tampered", &["1.0.0", "2.0.0"])?;
        repo.tamper("tampered/2.0.0/model.onnx")?;
        repo.register_as(&client, &ns, modelgate_tests::models::REPOSITORY, "5m").await?;
        let operator = operator(&ns)?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);

        // (release, first target, bad target, extra spec, the reason it must roll back with)
        let cases = [
            ("crash", "fraud/1.0.0/model.onnx", "fraud/2.0.0/model.onnx", json!({}), "CrashLoopBackOff"),
            ("oom", "fraud/1.0.0/model.onnx", "fraud/3.0.0/model.onnx", json!({}), "OOMKilled"),
            (
                "never-ready",
                "fraud/1.0.0/model.onnx",
                "fraud/4.0.0/model.onnx",
                json!({"gates": {"progressDeadline": "20s"}}),
                "ProgressDeadlineExceeded",
            ),
            ("refused", "tampered/1.0.0/model.onnx", "tampered/2.0.0/model.onnx", json!({}), "TrustFailure"),
        ];
        for (name, first, _, spec, _) in &cases {
            api.create(&PostParams::default(), &node::release(name, first, 1, spec.clone())?).await?;
        }
        let result = async {
            try_join_all(cases.iter().map(|(name, _, _, _, _)| wait_stable(&api, name, 1, WAIT))).await?;
            for (name, ..) in &cases {
                assert_eq!(ready_pods(&client, &ns, name, 1).await?, 1, "{name}: revision 1 serves on the real node");
            }
            try_join_all(cases.iter().map(|(name, _, bad, _, reason)| {
                let (api, client, ns) = (api.clone(), client.clone(), ns.clone());
                async move {
                    let started = Instant::now();
                    set_target(&api, name, bad).await?;
                    let r = wait_phase(&api, name, Phase::RolledBack, WAIT).await?;
                    let took = started.elapsed();
                    let status = r.status.clone().unwrap_or_default();
                    let last = status.history.last().cloned().unwrap_or_default();
                    let why = last.reason.clone().unwrap_or_default();
                    assert!(why.starts_with(reason), "{name}: rolled back for {why:?}, expected {reason}");
                    assert_eq!(status.stable.map(|s| s.revision.number), Some(1), "{name}");
                    // The old model kept serving: its pod stayed Ready throughout.
                    assert_eq!(ready_pods(&client, &ns, name, 1).await?, 1, "{name}: revision 1 still Ready");
                    eprintln!("{name}: rolled back in {took:?}: {why}");
                    anyhow::Ok((name.to_string(), took))
                }
            }))
            .await
        }
        .await;
        let took = result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", operator.logs()))?;
        // A refused model rolls back on the pod's status, not on a repository refresh
        // (5 minutes away): seconds, not minutes.
        let refused = took.iter().find(|(n, _)| n == "refused").map(|(_, t)| *t).unwrap_or_default();
        assert!(refused < Duration::from_secs(30), "a pod-side refusal took {refused:?} to roll back");
        Ok(())
    })
    .await
}

/// An image the node does not have (and may not pull) is reported by name when the
/// progress deadline passes; the stable revision is untouched.
#[tokio::test]
async fn a_missing_image_is_named_when_the_release_rolls_back() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("node-image", |client, ns| async move {
        let repo = ModelRepo::for_pods("fraud", &["1.0.0", "2.0.0"])?;
        repo.register_as(&client, &ns, modelgate_tests::models::REPOSITORY, "5m").await?;
        let operator = operator(&ns)?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        // Long enough for the fetch init container on a busy machine: the missing image
        // shows only once it is done.
        let spec = json!({"gates": {"progressDeadline": "60s"}});
        api.create(&PostParams::default(), &node::release("fraud", "fraud/1.0.0/model.onnx", 1, spec.clone())?).await?;
        let result = async {
            wait_stable(&api, "fraud", 1, WAIT).await?;
            let mut container = node::server_container();
            container["image"] = json!("localhost/no-such-image:1");
            let patch = json!({"spec": {"model": {"target": "fraud/2.0.0/model.onnx"},
                "template": {"spec": {"containers": [container]}}}});
            api.patch("fraud", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
            let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
            let why =
                r.status.unwrap_or_default().history.last().cloned().unwrap_or_default().reason.unwrap_or_default();
            assert!(why.starts_with("ProgressDeadlineExceeded") && why.contains("ErrImageNeverPull"), "{why}");
            assert_eq!(ready_pods(&client, &ns, "fraud", 1).await?, 1);
            anyhow::Ok(())
        }
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", operator.logs()))
    })
    .await
}

async fn ready_pods(client: &Client, ns: &str, release: &str, revision: i64) -> anyhow::Result<usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{LABEL_RELEASE}={release},{LABEL_REVISION}={revision}");
    // A readiness probe on the busy test node may miss once: a pod counts if it is Ready
    // within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| modelgate_tests::harness::pod_ready(p))
            .count();
        if ready > 0 || Instant::now() > deadline {
            return Ok(ready);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A validly signed model that answers one request in five with an error: nothing but
/// its behaviour gives it away. The real Prometheus scrapes the real pods under load from
/// a real client through the release's Service; the gate compares the canary's error
/// ratio with the stable's, passes 2.0.0 (as good as 1.0.0) and rolls 2.4.0 back.
#[tokio::test]
async fn the_prometheus_gate_judges_canaries_on_real_traffic() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("node-traffic", |client, ns| async move {
        let repo = ModelRepo::for_pods("fraud", &["1.0.0", "2.0.0", "2.4.0@errors=0.2"])?;
        repo.register_as(&client, &ns, modelgate_tests::models::REPOSITORY, "5m").await?;
        let prometheus = modelgate_tests::prometheus::Prometheus::scraping_pods(&client, &ns).await?;
        eprintln!("prometheus at {}", prometheus.url());
        let operator = Operator::start(
            Some(&ns),
            &[
                "--fetch-image",
                OPERATOR_IMAGE,
                "--gate-allow-cidr",
                &format!("{}/32", modelgate_tests::tuf::POD_GATEWAY),
            ],
        )?;
        node::require_images()?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        // The gate compares a canary with the stable revision, from the first revision on:
        // for 1.0.0, which has nothing to be compared with, it is skipped, saying so.
        let spec = json!({
            "service": {"port": 8080},
            "strategy": {"steps": [{"setWeight": 50}, {"pause": {"duration": "40s"}}]},
            "gates": {"interval": "10s", "failureLimit": 2, "checks": [{
                "name": "error-ratio",
                "prometheus": {"address": prometheus.url(), "query": node::ERROR_RATIO_VS_STABLE, "max": 0.05},
            }]},
        });
        api.create(&PostParams::default(), &node::release("fraud", "fraud/1.0.0/model.onnx", 2, spec)?).await?;
        let result = async {
            wait_stable(&api, "fraud", 1, WAIT).await?;
            // Promotion clears the gates' status; the post-promotion window's next check
            // (10 s interval) says it again.
            let said = eventually("the skipped comparison reported", Duration::from_secs(60), || async {
                let first = api.get("fraud").await?.status.unwrap_or_default();
                Ok(first.gates.first().and_then(|g| g.last_value.clone()))
            })
            .await?;
            assert!(said.contains("revision 1 is the release's first"), "{said}");
            let load = node::Load::start(&client, &ns, "fraud", 20, 400).await?;
            set_target(&api, "fraud", "fraud/2.0.0/model.onnx").await?;
            wait_stable(&api, "fraud", 2, Duration::from_secs(180)).await?;
            set_target(&api, "fraud", "fraud/2.4.0/model.onnx").await?;
            let r = wait_phase(&api, "fraud", Phase::RolledBack, Duration::from_secs(180)).await?;
            let status = r.status.unwrap_or_default();
            let why = status.history.last().cloned().unwrap_or_default().reason.unwrap_or_default();
            assert!(why.contains("error-ratio"), "rolled back for {why:?}");
            assert_eq!(status.stable.map(|s| s.revision.number), Some(2));
            let outcomes = load.stop().await?;
            eprintln!("load: {outcomes}; rollback: {why}");
            anyhow::Ok(())
        }
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", operator.logs()))
    })
    .await
}

/// The judge on real traffic: the real Prometheus scrapes the real pods of canary,
/// baseline and stable under load through the release's Service. A model as good as the
/// stable one (A/A: other bytes, the same behaviour) is promoted; one 20% slower and one
/// with 2% errors are each rolled back by the judge, while the demo's threshold gate
/// (errors at most 5 points above the stable's) passes them both. A first revision is
/// not judged (nothing to compare with), and says so.
#[tokio::test]
async fn the_judge_compares_canary_and_baseline_pods_on_real_traffic() -> anyhow::Result<()> {
    use modelgate::api::{Classification, Judgement};
    let _crds = crds_shared().await?;
    with_temp_ns("node-judge", |client, ns| async move {
        let versions =
            ["1.0.0@latency_ms=50", "1.1.0@latency_ms=50", "1.2.0@latency_ms=60", "1.3.0@latency_ms=50,errors=0.02"];
        let repo = ModelRepo::for_pods("fraud", &versions)?;
        repo.register_as(&client, &ns, modelgate_tests::models::REPOSITORY, "5m").await?;
        let prometheus = modelgate_tests::prometheus::Prometheus::scraping_pods(&client, &ns).await?;
        let operator = Operator::start(
            Some(&ns),
            &[
                "--fetch-image",
                OPERATOR_IMAGE,
                "--gate-allow-cidr",
                &format!("{}/32", modelgate_tests::tuf::POD_GATEWAY),
            ],
        )?;
        node::require_images()?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let spec = node::judged_spec(&prometheus.url(), "10s");
        api.create(&PostParams::default(), &node::release("fraud", "fraud/1.0.0/model.onnx", 2, spec)?).await?;
        let result = async {
            wait_stable(&api, "fraud", 1, WAIT).await?;
            let first = api.get("fraud").await?.status.unwrap_or_default();
            let skipped = first.analysis.unwrap_or_default();
            assert_eq!(skipped.result, Judgement::Skipped, "{}", skipped.message);
            assert!(skipped.message.contains("first"), "{}", skipped.message);
            let load = node::Load::start(&client, &ns, "fraud", 30, 900).await?;
            // A/A: promoted, on numbers.
            set_target(&api, "fraud", "fraud/1.1.0/model.onnx").await?;
            // The baseline runs beside the canary: the stable model, its own pods, role baseline.
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let roles = eventually("canary and baseline pods", WAIT, || async {
                let list = pods.list(&ListParams::default().labels(LABEL_RELEASE)).await?;
                let roles: Vec<(String, String)> = list
                    .items
                    .iter()
                    .filter_map(|p| {
                        let l = p.metadata.labels.as_ref()?;
                        Some((l.get(modelgate::api::LABEL_ROLE)?.clone(), l.get(LABEL_REVISION)?.clone()))
                    })
                    .collect();
                let has = |role: &str, rev: &str| roles.iter().any(|(r, v)| r == role && v == rev);
                Ok((has("canary", "2") && has("baseline", "1") && has("stable", "1")).then_some(roles))
            })
            .await?;
            eprintln!("roles during the A/A rollout: {roles:?}");
            wait_stable(&api, "fraud", 2, Duration::from_secs(240)).await?;
            let promoted = api.get("fraud").await?.status.unwrap_or_default();
            let judged = promoted.analysis.unwrap_or_default();
            assert_eq!((judged.revision, judged.result), (2, Judgement::Pass), "{}", judged.message);
            for m in &judged.metrics {
                assert_eq!(m.classification, Classification::Pass, "{m:?}");
                assert!(m.canary_samples >= 5 && m.baseline_samples >= 5 && m.p_value.is_some(), "{m:?}");
            }
            // +20% latency and +2 points of errors: each rolled back by the judge, the
            // threshold gate passing.
            for (version, metric) in [("1.2.0", "latency"), ("1.3.0", "errors")] {
                set_target(&api, "fraud", &format!("fraud/{version}/model.onnx")).await?;
                let r = wait_phase(&api, "fraud", Phase::RolledBack, Duration::from_secs(240)).await?;
                let status = r.status.unwrap_or_default();
                let why = status.history.last().cloned().unwrap_or_default().reason.unwrap_or_default();
                eprintln!("{version}: {why}");
                assert!(
                    why.starts_with("AnalysisFailed") && why.contains(&format!("critical metric {metric} is High")),
                    "{why}"
                );
                let judged = status.analysis.unwrap_or_default();
                let m = judged.metrics.iter().find(|m| m.name == metric).cloned().unwrap_or_default();
                assert_eq!(m.classification, Classification::High, "{m:?}");
                assert!(m.p_value.is_some_and(|p| p < 0.05) && m.lower.is_some_and(|l| l > 0.0), "{m:?}");
                let gate = status.gates.iter().find(|g| g.name == "error-ratio").cloned().unwrap_or_default();
                assert_eq!(gate.consecutive_failures, 0, "the threshold gate passed it: {gate:?}");
                assert_eq!(status.stable.map(|s| s.revision.number), Some(2));
                // The baseline went with the canary.
                eventually("the baseline pods gone", WAIT, || async {
                    let list = pods
                        .list(&ListParams::default().labels(&format!("{}=baseline", modelgate::api::LABEL_ROLE)))
                        .await?;
                    Ok(list.items.is_empty().then_some(()))
                })
                .await?;
                set_target(&api, "fraud", "fraud/1.1.0/model.onnx").await?;
                wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
            }
            let outcomes = load.stop().await?;
            eprintln!("load: {outcomes}");
            anyhow::Ok(())
        }
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", operator.logs()))
    })
    .await
}

/// The real node's pods reach this machine's pods and Services and nothing else: not
/// the host's own address outside the pod network, not an outside address named by a
/// Service's EndpointSlice (which kube-proxy would happily forward).
#[tokio::test]
async fn pods_reach_services_on_this_machine_and_nothing_beyond() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    node::require_images()?;
    with_temp_ns("node-net", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        // A server (the example server, answering 503: it has no model) and its Service.
        let mut server = node::server_container();
        server["args"] = json!(["serve", "--model", "/usr/local/bin/model-server"]);
        server["readinessProbe"] = json!(null);
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "server", "labels": {"app": "server"}}, "spec": {"containers": [server]}});
        pods.create(&PostParams::default(), &serde_json::from_value(pod)?).await?;
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server"},
            "spec": {"selector": {"app": "server"}, "ports": [{"port": 8080, "targetPort": 8080}]}});
        let inside = services.create(&PostParams::default(), &serde_json::from_value(svc)?).await?;
        // A Service whose endpoint is outside this machine (TEST-NET-2).
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "outside"},
            "spec": {"ports": [{"port": 80, "targetPort": 80}]}});
        let outside = services.create(&PostParams::default(), &serde_json::from_value(svc)?).await?;
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "outside-1", "labels": {"kubernetes.io/service-name": "outside"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["198.51.100.7"], "conditions": {"ready": true}}],
            "ports": [{"port": 80, "protocol": "TCP"}]});
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(client.clone(), &ns);
        slices.create(&PostParams::default(), &serde_json::from_value(slice)?).await?;
        let ip = |s: &Service| s.spec.as_ref().and_then(|s| s.cluster_ip.clone()).unwrap_or_default();
        // The server answers through its Service (kube-proxy has its rules) before any probe.
        let url = format!("http://{}:8080/predict", ip(&inside));
        eventually("the Service answers", WAIT, || async {
            Ok(reqwest::get(&url).await.ok().map(|r| r.status().as_u16()))
        })
        .await?;
        let dropped_before = dropped()?;

        let probe = |name: &'static str, url: String| {
            let pods = pods.clone();
            async move {
                let mut client = node::server_container();
                client["name"] = json!("client");
                client["args"] = json!(["load", "--url", url, "--rps", "2", "--seconds", "2"]);
                client["readinessProbe"] = json!(null);
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"restartPolicy": "Never", "containers": [client]}});
                pods.create(&PostParams::default(), &serde_json::from_value(pod)?).await?;
                let done = eventually(&format!("{name} finished"), WAIT, || async {
                    let p = pods.get(name).await?;
                    let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
                    Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(()))
                })
                .await;
                done?;
                anyhow::Ok(pods.logs(name, &Default::default()).await?)
            }
        };
        let (to_service, to_host, to_outside) = tokio::try_join!(
            probe("to-service", url.clone()),
            probe("to-host", "http://192.0.2.2:16443/".to_string()),
            probe("to-outside", format!("http://{}:80/", ip(&outside))),
        )?;
        assert!(to_service.contains("503=4"), "a Service on this machine answers: {to_service}");
        assert!(!to_host.contains("200="), "{to_host}");
        assert!(
            to_host.contains("error=4") || to_host.contains("timeout=4"),
            "no route off the pod network: {to_host}"
        );
        assert!(to_outside.contains("error=4") || to_outside.contains("timeout=4"), "{to_outside}");
        assert!(dropped()? > dropped_before, "the node's FORWARD rule dropped the outside-bound packets");
        Ok(())
    })
    .await
}

/// Packets chain MODELGATE-NODE (tests/cluster/node) dropped on their way off the bridge.
fn dropped() -> anyhow::Result<u64> {
    let out = std::process::Command::new("iptables").args(["-L", "MODELGATE-NODE", "-v", "-x", "-n"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.contains("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum())
}

//! Rollouts on the real control plane: the operator verifies each model against a
//! python-tuf repository over HTTPS, runs one ReplicaSet per revision (pods bound and
//! driven by the simulated kubelet), walks the steps, and rolls back by itself on a
//! crash, a failing Prometheus or webhook gate, and a revoked model.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};
use modelgate::api::{
    ANNOTATION_DROP_WARM, ANNOTATION_MODEL_SHA256, ANNOTATION_PROMOTE, ANNOTATION_RETRY, FETCH_CONTAINER,
    LABEL_RELEASE, LABEL_REVISION, LABEL_SERVING, ModelRelease, Phase,
};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, with_temp_ns},
    models::{
        ModelRepo, behave, command, release, revisions, run_fetch, set_target, wait_phase, wait_stable, webhook_judge,
    },
    prometheus::Prometheus,
    tuf::Server,
};
use serde_json::json;

const V1: &str = "fraud/1.0/model.onnx";
const V2: &str = "fraud/2.0/model.onnx";
const V3: &str = "fraud/3.0/model.onnx";
const WAIT: Duration = Duration::from_secs(90);

/// A namespace with a registered repository publishing `versions`, and an operator.
pub async fn rollout_test<F, Fut>(prefix: &str, versions: &[&str], body: F) -> anyhow::Result<()>
where
    F: FnOnce(Client, String, Arc<ModelRepo>, Api<ModelRelease>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let _crds = crds_shared().await?;
    let versions: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
    with_temp_ns(prefix, |client, ns| async move {
        let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
        // Held here too: a body that does not use the repository must not stop its server.
        let repo = Arc::new(ModelRepo::new("fraud", &versions)?);
        repo.register(&client, &ns).await?;
        let operator = Operator::start(Some(&ns), &[])?;
        let api = Api::namespaced(client.clone(), &ns);
        let result = body(client, ns, repo.clone(), api).await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", tail(&operator.logs(), 60)))
    })
    .await
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn history(r: &ModelRelease) -> Vec<(i64, String)> {
    r.status.as_ref().unwrap().history.iter().map(|h| (h.revision.number, h.outcome.to_string())).collect()
}

fn condition(r: &ModelRelease, type_: &str) -> Option<(String, String)> {
    let c = r.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn wait_revisions(client: &Client, ns: &str, want: &[(i64, i32)]) -> anyhow::Result<()> {
    let want: BTreeMap<i64, i32> = want.iter().copied().collect();
    eventually(&format!("ReplicaSets {want:?}"), WAIT, || async {
        Ok((revisions(client, ns, "fraud").await? == want).then_some(()))
    })
    .await
}

async fn event_reasons(client: &Client, ns: &str) -> anyhow::Result<Vec<String>> {
    let events = Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await?;
    Ok(events.items.into_iter().filter_map(|e| e.reason).collect())
}

#[tokio::test]
async fn a_new_model_goes_through_every_step_to_promoted() -> anyhow::Result<()> {
    rollout_test("rollout-happy", &["1.0", "2.0"], |client, ns, repo, api| async move {
        let spec = json!({
            // Long enough a pause to see 25% held: the stable gives up its pod only once
            // the canary's is Ready, so that state begins with Ready, not with the step.
            "strategy": {"steps": [{"setWeight": 25}, {"pause": {"duration": "5s"}}, {"setWeight": 50}, {"pause": {}}]},
            "service": {"port": 8080},
        });
        api.create(&PostParams::default(), &release("fraud", V1, 4, spec)?).await?;
        let r = wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        let stable = r.status.as_ref().unwrap().stable.clone().unwrap();
        assert_eq!((stable.revision.number, stable.revision.sha256.as_deref()), (1, Some(repo.sha256(V1))));

        // Every pod carries the proof: the fetch init container demands the verified
        // digest and length; the server sees the model read-only at mountPath.
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&format!("{LABEL_RELEASE}=fraud")))
            .await?;
        assert_eq!(pods.items.len(), 4);
        for pod in &pods.items {
            assert_eq!(pod.metadata.annotations.as_ref().unwrap()[ANNOTATION_MODEL_SHA256], repo.sha256(V1));
            let spec = pod.spec.as_ref().unwrap();
            let fetch = &spec.init_containers.as_ref().unwrap()[0];
            assert_eq!(fetch.name, FETCH_CONTAINER);
            let args = fetch.args.clone().unwrap();
            let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
            assert_eq!(after("--sha256"), repo.sha256(V1));
            assert_eq!(after("--target"), V1);
            assert!(after("--min-timestamp-version").parse::<u64>()? >= 2, "the pod starts from the operator's floors");
            let mount = spec.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == "/models");
            assert_eq!(mount.and_then(|m| m.read_only), Some(true));
        }
        let svc = Api::<Service>::namespaced(client.clone(), &ns).get("fraud").await?;
        let selector = svc.spec.unwrap().selector.unwrap();
        assert_eq!((selector[LABEL_RELEASE].as_str(), selector[LABEL_SERVING].as_str()), ("fraud", "true"));

        set_target(&api, "fraud", V2).await?;
        wait_revisions(&client, &ns, &[(1, 3), (2, 1)]).await?;
        let paused = eventually("paused at step 3", WAIT, || async {
            let r = api.get("fraud").await?;
            let at3 = r.status.as_ref().and_then(|s| s.canary.as_ref()).is_some_and(|c| c.step == 3 && c.weight == 50);
            Ok((at3 && r.status.as_ref().unwrap().phase == Some(Phase::Paused)).then_some(r))
        })
        .await?;
        assert!(paused.status.unwrap().message.unwrap().contains("waiting for promote"));
        wait_revisions(&client, &ns, &[(1, 2), (2, 2)]).await?;

        command(&api, "fraud", ANNOTATION_PROMOTE, "1").await?;
        let r = wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        assert_eq!(r.status.as_ref().unwrap().stable.as_ref().unwrap().revision.number, 2);
        assert_eq!(history(&r), [(1, "Promoted".into()), (2, "Promoted".into())]);
        // Revision 1 keeps one warm pod (25% of 4) for the post-promotion window: Ready,
        // labelled out of service, and not among the Service's endpoints.
        wait_revisions(&client, &ns, &[(1, 1), (2, 4)]).await?;
        let warm = r.status.as_ref().unwrap().warm.clone().unwrap();
        assert_eq!((warm.revision, warm.replicas), (1, 1));
        let serving = |revision: i64| {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                let selector = format!("{LABEL_RELEASE}=fraud,{LABEL_REVISION}={revision}");
                let pods = Api::<Pod>::namespaced(client, &ns).list(&ListParams::default().labels(&selector)).await?;
                anyhow::Ok(
                    pods.items
                        .iter()
                        .map(|p| p.labels().get(LABEL_SERVING).cloned().unwrap_or_default())
                        .collect::<Vec<_>>(),
                )
            }
        };
        eventually("revision 1's pod out of service", WAIT, || async {
            Ok((serving(1).await? == ["false"] && serving(2).await?.iter().all(|l| l == "true")).then_some(()))
        })
        .await?;
        let endpoints = eventually("the Service's endpoints are revision 2's 4 pods", WAIT, || async {
            let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns)
                .list(&ListParams::default().labels("kubernetes.io/service-name=fraud"))
                .await?;
            let ready = |e: &&k8s_openapi::api::discovery::v1::Endpoint| {
                e.conditions.as_ref().and_then(|c| c.ready) != Some(false)
            };
            let n: usize =
                slices.items.iter().map(|s| s.endpoints.as_ref().map_or(0, |e| e.iter().filter(ready).count())).sum();
            Ok((n == 4).then_some(n))
        })
        .await?;
        assert_eq!(endpoints, 4);
        // An SRE drops the warm pod before its window ends.
        command(&api, "fraud", ANNOTATION_DROP_WARM, "1").await?;
        wait_revisions(&client, &ns, &[(1, 0), (2, 4)]).await?;
        assert!(api.get("fraud").await?.status.unwrap().warm.is_none());
        let reasons = event_reasons(&client, &ns).await?;
        for want in ["RolloutStarted", "StepCompleted", "Promoted"] {
            assert!(reasons.iter().any(|r| r == want), "no {want} event in {reasons:?}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_crashing_canary_is_rolled_back_and_only_retried_on_request() -> anyhow::Result<()> {
    rollout_test("rollout-crash", &["1.0", "2.0"], |client, ns, repo, api| async move {
        let spec = json!({"strategy": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
        api.create(&PostParams::default(), &release("fraud", V1, 2, spec)?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;

        behave(&client, &ns, repo.sha256(V2), "CrashLoop").await?;
        set_target(&api, "fraud", V2).await?;
        let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
        let status = r.status.clone().unwrap();
        assert_eq!(status.stable.as_ref().unwrap().revision.number, 1);
        assert!(status.canary.is_none());
        let last = status.history.last().unwrap();
        assert_eq!((last.revision.number, last.outcome.as_str()), (2, "RolledBack"));
        assert!(last.reason.as_deref().unwrap().starts_with("CrashLoopBackOff"), "{last:?}");
        assert_eq!(condition(&r, "Degraded"), Some(("True".into(), "CrashLoopBackOff".into())));
        wait_revisions(&client, &ns, &[(1, 2), (2, 0)]).await?;
        assert!(event_reasons(&client, &ns).await?.iter().any(|r| r == "RolledBack"));

        // Not retried by itself...
        tokio::time::sleep(Duration::from_secs(3)).await;
        let r = api.get("fraud").await?;
        assert_eq!(r.status.as_ref().unwrap().phase, Some(Phase::RolledBack));
        assert_eq!(revisions(&client, &ns, "fraud").await?, [(1, 2), (2, 0)].into());

        // ... but on request, once fixed.
        behave(&client, &ns, repo.sha256(V2), "Ready").await?;
        command(&api, "fraud", ANNOTATION_RETRY, "1").await?;
        let r = wait_phase(&api, "fraud", Phase::Paused, WAIT).await?;
        assert_eq!(r.status.unwrap().canary.unwrap().revision.number, 2, "the same revision, retried");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_canary_whose_pods_refuse_the_model_is_rolled_back_as_a_trust_failure() -> anyhow::Result<()> {
    rollout_test("rollout-refused", &["1.0", "2.0"], |client, ns, repo, api| async move {
        // The pods really run `modelgate fetch` (the simulated kubelet executes it).
        run_fetch(&client, &ns).await?;
        api.create(&PostParams::default(), &release("fraud", V1, 2, json!({}))?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        // Someone with access to the file server, not to the keys, alters 2.0: the
        // metadata still verifies in the operator, the bytes do not in the pods.
        repo.tamper(V2)?;
        set_target(&api, "fraud", V2).await?;
        let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
        assert_eq!(condition(&r, "Degraded"), Some(("True".into(), "TrustFailure".into())));
        let reason = r.status.unwrap().history.last().unwrap().reason.clone().unwrap();
        assert!(reason.starts_with("TrustFailure") && reason.contains("sha256"), "{reason}");
        wait_revisions(&client, &ns, &[(1, 2), (2, 0)]).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_target_that_fails_verification_is_rejected_and_nothing_runs() -> anyhow::Result<()> {
    rollout_test("rollout-reject", &["1.0"], |client, ns, _repo, api| async move {
        // A first release of an unsigned target: no workload, no pod.
        api.create(&PostParams::default(), &release("ghost", "fraud/9.9/model.onnx", 2, json!({}))?).await?;
        let r = wait_phase(&api, "ghost", Phase::Rejected, WAIT).await?;
        assert_eq!(condition(&r, "Verified"), Some(("False".into(), "UnknownTarget".into())));
        assert!(r.status.unwrap().message.unwrap().contains("nothing was deployed"));
        assert!(revisions(&client, &ns, "ghost").await?.is_empty());

        // A running release asked to serve an unsigned target keeps serving what it had.
        api.create(&PostParams::default(), &release("fraud", V1, 2, json!({}))?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        set_target(&api, "fraud", "fraud/1.1/model.onnx").await?;
        let r = wait_phase(&api, "fraud", Phase::Rejected, WAIT).await?;
        assert!(r.status.as_ref().unwrap().message.as_deref().unwrap().contains("revision 1 keeps serving"));
        assert_eq!(revisions(&client, &ns, "fraud").await?, [(1, 2)].into());
        let pods = Api::<Pod>::namespaced(client.clone(), &ns).list(&ListParams::default()).await?;
        assert_eq!(pods.items.len(), 2, "only the running model's pods exist");
        assert!(event_reasons(&client, &ns).await?.iter().any(|r| r == "Rejected"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_failing_prometheus_gate_rolls_back_during_the_rollout_and_after_promotion() -> anyhow::Result<()> {
    rollout_test("rollout-prom", &["1.0", "2.0", "3.0"], |_client, ns, _repo, api| async move {
        // The exporter: per-revision error counts, as a model server would expose them.
        let exporter_dir = tempfile::tempdir()?;
        let errors = |v2: u32, v3: u32| {
            let metrics = format!(
                "model_errors_total{{release=\"fraud\",revision=\"1\"}} 0\n\
                 model_errors_total{{release=\"fraud\",revision=\"2\"}} {v2}\n\
                 model_errors_total{{release=\"fraud\",revision=\"3\"}} {v3}\n"
            );
            std::fs::write(exporter_dir.path().join("metrics"), metrics)
        };
        errors(0, 7)?;
        let exporter = Server::plain_http(exporter_dir.path())?;
        let prometheus = Prometheus::start(&format!("127.0.0.1:{}", exporter.port), &ns).await?;
        prometheus.wait_for_value("model_errors_total{revision=\"3\"}", Duration::from_secs(30)).await?;

        let spec = json!({
            "strategy": {"steps": [{"setWeight": 50}]},
            "gates": {"interval": "5s", "failureLimit": 2, "checks": [{"name": "errors", "prometheus": {
                "address": prometheus.url(),
                "query": "sum(model_errors_total{release=\"{{release}}\",revision=\"{{canary}}\"})",
                "max": 0
            }}]},
            "rollback": {"postPromotionWindow": "10m"},
        });
        api.create(&PostParams::default(), &release("fraud", V1, 2, spec)?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;

        // 2.0 passes its gates and is promoted, then turns bad within the window.
        set_target(&api, "fraud", V2).await?;
        wait_stable(&api, "fraud", 2, WAIT).await?;
        errors(5, 7)?;
        let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
        let status = r.status.unwrap();
        assert_eq!(status.stable.as_ref().unwrap().revision.number, 1, "back to the previous revision");
        let last = status.history.last().unwrap();
        assert_eq!((last.revision.number, last.outcome.as_str()), (2, "RolledBack"));
        assert!(last.reason.as_deref().unwrap().contains("after promotion"), "{last:?}");

        // 3.0 fails while it is a canary.
        set_target(&api, "fraud", V3).await?;
        eventually("revision 3 rolled back", WAIT, || async {
            let r = api.get("fraud").await?;
            let s = r.status.unwrap_or_default();
            Ok(s.history.last().is_some_and(|h| h.revision.number == 3 && h.outcome == "RolledBack").then_some(s))
        })
        .await?;
        let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
        let status = r.status.unwrap();
        let gate = status.gates.iter().find(|g| g.name == "errors").unwrap();
        assert_eq!((gate.result.as_str(), gate.consecutive_failures), ("Fail", 2));
        // The verdict and the threshold; the number stays in Prometheus (the default).
        assert_eq!(gate.last_value.as_deref(), Some("above max 0"));
        assert!(status.history.last().unwrap().reason.as_deref().unwrap().starts_with("GateFailed"));
        assert_eq!(status.stable.unwrap().revision.number, 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_failing_webhook_gate_rolls_back() -> anyhow::Result<()> {
    rollout_test("rollout-hook", &["1.0", "2.0"], |client, ns, repo, api| async move {
        let (judge_dir, judge) = webhook_judge(&client, &ns).await?;
        let spec = json!({
            "strategy": {"steps": [{"setWeight": 50}, {"pause": {}}]},
            "gates": {"interval": "5s", "failureLimit": 2, "checks": [{"name": "golden-predictions", "webhook": {
                "url": judge.url("judge"), "timeout": "2s",
                "caBundle": {"configMapRef": {"name": "judge-ca", "key": "ca.crt"}}
            }}]},
        });
        api.create(&PostParams::default(), &release("fraud", V1, 2, spec)?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;

        std::fs::write(judge_dir.path().join("webhook-status"), "500")?;
        set_target(&api, "fraud", V2).await?;
        let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
        let gate = r.status.as_ref().unwrap().gates.iter().find(|g| g.name == "golden-predictions").cloned().unwrap();
        assert_eq!(gate.last_value.as_deref(), Some("HTTP 500"), "the code, never the reply's text");

        // What the judge was told about the canary.
        let calls = std::fs::read_to_string(judge_dir.path().join("webhook-requests.jsonl"))?;
        let about_v2: Vec<serde_json::Value> = calls
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<serde_json::Value>, _>>()?
            .into_iter()
            .filter(|c| c["canaryRevision"] == 2)
            .collect();
        let call = about_v2.first().expect("the judge was asked about revision 2");
        assert_eq!(call["release"], "fraud");
        assert_eq!(call["namespace"], ns.as_str());
        assert_eq!(call["stableRevision"], 1);
        assert_eq!(call["target"], V2);
        assert_eq!(call["sha256"], repo.sha256(V2));
        assert_eq!(call["weight"], 50);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_revoked_model_is_rolled_back_to_the_last_trusted_revision() -> anyhow::Result<()> {
    rollout_test("rollout-revoke", &["1.0", "2.0"], |client, ns, repo, api| async move {
        api.create(&PostParams::default(), &release("fraud", V1, 2, json!({}))?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        set_target(&api, "fraud", V2).await?;
        wait_stable(&api, "fraud", 2, WAIT).await?;

        // The publishers revoke 2.0 (new targets metadata without it).
        repo.remove(&[V2])?;
        let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
        let status = r.status.clone().unwrap();
        assert_eq!(status.stable.as_ref().unwrap().revision.number, 1);
        let last = status.history.last().unwrap();
        assert_eq!((last.revision.number, last.outcome.as_str()), (2, "RolledBack"));
        assert!(last.reason.as_deref().unwrap().starts_with("TrustRevoked"), "{last:?}");
        wait_revisions(&client, &ns, &[(1, 2), (2, 0)]).await?;
        assert_eq!(
            condition(&r, "TrustDegraded"),
            Some(("False".into(), "TargetTrusted".into())),
            "revision 1 is trusted"
        );
        Ok(())
    })
    .await
}

/// A server that hides a revocation (it serves the new snapshot and timestamp, but
/// answers 404 for the delegated role that changed) gets what one that shows it gets:
/// the revoked model stops serving. python-tuf, the reference client, refuses the same
/// repository.
#[tokio::test]
async fn a_revocation_the_server_hides_is_still_a_revocation() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("rollout-hidden", |client, ns| async move {
        // 1.0 signed by the top-level targets role, 2.0 by the team's delegated role.
        let mut repo = ModelRepo::new("fraud", &["1.0"])?;
        repo.delegate("fraud-team", "fraud/2.*/*")?;
        repo.add_in("fraud-team", "fraud", &["2.0"])?;
        repo.register(&client, &ns).await?;
        let operator = Operator::start(Some(&ns), &[])?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let result = async {
            api.create(&PostParams::default(), &release("fraud", V1, 2, json!({}))?).await?;
            wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
            set_target(&api, "fraud", V2).await?;
            wait_stable(&api, "fraud", 2, WAIT).await?;

            // The team revokes 2.0; the server hides the new fraud-team.json.
            repo.remove_in("fraud-team", &[V2])?;
            repo.hide("fraud-team")?;
            let work = tempfile::tempdir()?;
            let root = work.path().join("root.json");
            std::fs::write(&root, repo.root_json()?)?;
            let reference = std::process::Command::new(modelgate_tests::tuf::python())
                .arg(modelgate_tests::harness::repo_root().join("tests/bench/ngclient.py"))
                .args([&repo.server.url("metadata/"), &repo.server.url("targets/")])
                .arg(&root)
                .arg(work.path())
                .arg(V2)
                .env("SSL_CERT_FILE", repo.server.ca.as_ref().unwrap())
                .output()?;
            let said = String::from_utf8_lossy(&reference.stderr);
            assert!(!reference.status.success() && said.contains("404"), "python-tuf must refuse: {said}");

            let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
            let status = r.status.clone().unwrap();
            assert_eq!(status.stable.as_ref().unwrap().revision.number, 1, "back to the revision still trusted");
            let last = status.history.last().unwrap();
            assert_eq!((last.revision.number, last.outcome.as_str()), (2, "RolledBack"));
            let reason = last.reason.as_deref().unwrap_or_default();
            assert!(reason.contains("fraud-team") && reason.contains("did not deliver"), "{reason}");
            wait_revisions(&client, &ns, &[(1, 2), (2, 0)]).await?;
            assert!(event_reasons(&client, &ns).await?.contains(&"RolledBack".to_string()));
            Ok::<_, anyhow::Error>(())
        }
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", tail(&operator.logs(), 60)))
    })
    .await
}

#[tokio::test]
async fn an_operator_killed_mid_rollout_resumes_without_a_second_canary() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("rollout-restart", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        repo.register(&client, &ns).await?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let mut operator = Operator::start(Some(&ns), &[])?;
        let spec = json!({"strategy": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]}});
        api.create(&PostParams::default(), &release("fraud", V1, 4, spec)?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;

        // Never more than one revision besides the stable one has pods, whatever happens.
        let at_most_one_canary = || async {
            let rs = revisions(&client, &ns, "fraud").await?;
            assert!(rs.keys().all(|r| *r == 1 || *r == 2), "only revisions 1 and 2 exist: {rs:?}");
            anyhow::Ok(())
        };

        // Killed (SIGKILL) right after the spec change, wherever it was.
        set_target(&api, "fraud", V2).await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(operator);
        at_most_one_canary().await?;
        operator = Operator::start(Some(&ns), &[])?;
        wait_revisions(&client, &ns, &[(1, 3), (2, 1)]).await?;
        wait_phase(&api, "fraud", Phase::Paused, WAIT).await?;

        // Killed while paused; promoted while it is down.
        drop(operator);
        command(&api, "fraud", ANNOTATION_PROMOTE, "1").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(revisions(&client, &ns, "fraud").await?, [(1, 3), (2, 1)].into(), "nothing moves while it is down");
        operator = Operator::start(Some(&ns), &[])?;
        wait_revisions(&client, &ns, &[(1, 1), (2, 3)]).await?;
        let r = wait_phase(&api, "fraud", Phase::Paused, WAIT).await?;
        assert_eq!(r.status.as_ref().unwrap().canary.as_ref().unwrap().step, 3, "the promote was used once");

        // Killed just after the last promote.
        command(&api, "fraud", ANNOTATION_PROMOTE, "2").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(operator);
        at_most_one_canary().await?;
        let _operator = Operator::start(Some(&ns), &[])?;
        let r = wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        wait_revisions(&client, &ns, &[(1, 1), (2, 4)]).await?; // (revision 1's pod stays warm)
        assert_eq!(history(&r), [(1, "Promoted".into()), (2, "Promoted".into())], "no step lost or repeated");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_spec_change_mid_rollout_supersedes_the_canary() -> anyhow::Result<()> {
    rollout_test("rollout-supersede", &["1.0", "2.0", "3.0"], |client, ns, _repo, api| async move {
        let spec = json!({"strategy": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
        api.create(&PostParams::default(), &release("fraud", V1, 2, spec)?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        set_target(&api, "fraud", V2).await?;
        wait_phase(&api, "fraud", Phase::Paused, WAIT).await?;
        wait_revisions(&client, &ns, &[(1, 1), (2, 1)]).await?;

        set_target(&api, "fraud", V3).await?;
        wait_revisions(&client, &ns, &[(1, 1), (2, 0), (3, 1)]).await?;
        let r = wait_phase(&api, "fraud", Phase::Paused, WAIT).await?;
        assert_eq!(r.status.as_ref().unwrap().canary.as_ref().unwrap().revision.number, 3);
        assert_eq!(history(&r), [(1, "Promoted".into()), (2, "Superseded".into())]);

        command(&api, "fraud", ANNOTATION_PROMOTE, "1").await?;
        let r = wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        assert_eq!(r.status.unwrap().stable.unwrap().revision.number, 3);
        // Revision 1, the stable one before 3, keeps its warm pod (25% of 2, at least one).
        wait_revisions(&client, &ns, &[(1, 1), (2, 0), (3, 2)]).await?;
        Ok(())
    })
    .await
}

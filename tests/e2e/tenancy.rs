//! A tenant cannot take the operator apart: pods the admin's policy forbids are not
//! created, a Service someone else owns is left alone, gates reach only what the
//! installation allows and cannot hold the operator hostage, a tampered trust record
//! is refused (a new pin re-anchors), and a restarted operator decides at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use modelgate::api::{ANNOTATION_RETRY, ModelRelease, ModelRepository, Phase};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, with_temp_ns},
    hostile::{Endless, Silent},
    models::{
        ModelRepo, REPOSITORY, behave, command, release, revisions, set_target, simulated, wait_phase, wait_stable,
        webhook_judge,
    },
};
use serde_json::json;

use crate::rollout::rollout_test;

const V1: &str = "fraud/1.0/model.onnx";
const V2: &str = "fraud/2.0/model.onnx";
const WAIT: Duration = Duration::from_secs(90);

fn condition(r: &ModelRelease, type_: &str) -> Option<(String, String, String)> {
    let c = r.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn events(client: &Client, ns: &str) -> anyhow::Result<Vec<(String, String)>> {
    let list =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await?;
    Ok(list.items.into_iter().map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default())).collect())
}

#[tokio::test]
async fn a_pod_the_policy_forbids_is_refused_and_the_running_model_keeps_serving() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("tenant-pod", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        repo.register(&client, &ns).await?;
        // The chart passes the operator's own ServiceAccount; here it is "modelgate" in this namespace.
        let sa = format!("{ns}/modelgate");
        let _operator = Operator::start(Some(&ns), &["--service-account", &sa])?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &release("fraud", V1, 2, json!({}))?).await?;
        api.create(&PostParams::default(), &release("other", V1, 1, json!({}))?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;

        let refused = [
            (json!({"containers": [{"name": "server", "image": "s:1", "securityContext": {"privileged": true}}]}), "privileged"),
            (json!({"hostNetwork": true, "containers": [{"name": "server", "image": "s:1"}]}), "hostNetwork"),
            (
                json!({"containers": [{"name": "server", "image": "s:1"}], "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}),
                "hostPath",
            ),
            (json!({"serviceAccountName": "modelgate", "containers": [{"name": "server", "image": "s:1"}]}), "own ServiceAccount"),
            // The tenant's bytes where the verified model should be (subPath over the file).
            (
                json!({"containers": [{"name": "server", "image": "s:1", "volumeMounts": [{"name": "mine", "mountPath": "/models/model.onnx", "subPath": "evil"}]}],
                       "volumes": [{"name": "mine", "emptyDir": {}}]}),
                "inside model.mountPath",
            ),
        ];
        let edit = |target: &'static str, pod: serde_json::Value| {
            let api = api.clone();
            async move {
                // A read-modify-write: the operator's status writes move the
                // resourceVersion, so a conflict is retried on a fresh read.
                for _ in 0..10 {
                    let mut r = api.get("fraud").await?;
                    r.spec.model.target = target.into();
                    r.spec.template = serde_json::from_value(json!({"spec": pod.clone()}))?;
                    match api.replace("fraud", &PostParams::default(), &r).await {
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        other => {
                            other?;
                            return anyhow::Ok(());
                        }
                    }
                }
                anyhow::bail!("fraud kept changing under the edit")
            }
        };
        for (pod, word) in refused {
            edit(V2, pod).await?;
            let r = wait_phase(&api, "fraud", Phase::Rejected, WAIT).await?;
            let (status, reason, message) = condition(&r, "Accepted").unwrap_or_default();
            assert_eq!((status.as_str(), reason.as_str()), ("False", "PodRefused"), "{word}");
            assert!(message.contains(word), "{word}: {message}");
            assert_eq!(condition(&r, "Degraded").map(|c| c.0), Some("True".into()));
            let s = r.status.as_ref().unwrap();
            assert_eq!(s.stable.as_ref().map(|s| s.revision.number), Some(1), "revision 1 keeps serving");
            assert!(s.canary.is_none());
            assert_eq!(revisions(&client, &ns, "fraud").await?.get(&1), Some(&2), "{word}: stable pods untouched");
            assert_eq!(revisions(&client, &ns, "fraud").await?.len(), 1, "{word}: no workload for the refused pod");
            // Back to what runs: the stable revision again.
            let mut back = json!({"containers": [{"name": "server", "image": "model-server:1"}]});
            for (k, v) in simulated().as_object().into_iter().flatten() {
                back[k] = v.clone();
            }
            edit(V1, back).await?;
            wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        }
        assert!(events(&client, &ns).await?.iter().any(|(reason, note)| reason == "PodRefused" && note.contains("privileged")));
        // Meanwhile the other release rolled out as usual.
        set_target(&api, "other", V2).await?;
        wait_stable(&api, "other", 2, WAIT).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_service_the_release_does_not_own_is_left_alone() -> anyhow::Result<()> {
    rollout_test("tenant-svc", &["1.0"], |client, ns, _repo, api| async move {
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let theirs: Service = serde_json::from_value(json!({
            "metadata": {"name": "fraud"},
            "spec": {"selector": {"app": "payments"}, "ports": [{"port": 80}]}
        }))?;
        services.create(&PostParams::default(), &theirs).await?;
        api.create(&PostParams::default(), &release("fraud", V1, 1, json!({"service": {"port": 8080}}))?).await?;
        let r = eventually("ServiceReady=False", WAIT, || async {
            let r = api.get("fraud").await?;
            Ok(condition(&r, "ServiceReady").is_some_and(|c| c.0 == "False").then_some(r))
        })
        .await?;
        let (_, reason, message) = condition(&r, "ServiceReady").unwrap_or_default();
        assert_eq!(reason, "ServiceNotOwned");
        assert!(message.contains("does not belong to this release"), "{message}");
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        let svc = services.get("fraud").await?;
        assert_eq!(svc.spec.unwrap().selector.unwrap().get("app").map(String::as_str), Some("payments"));
        assert!(svc.metadata.owner_references.unwrap_or_default().is_empty(), "not taken over");
        // Deleting the release leaves the Service where it was.
        api.delete("fraud", &DeleteParams::foreground()).await?;
        eventually("release gone", WAIT, || async { Ok(api.get_opt("fraud").await?.is_none().then_some(())) }).await?;
        assert!(services.get_opt("fraud").await?.is_some());
        Ok(())
    })
    .await
}

/// A tenant makes a ReplicaSet with the next revision's name and labels (the hash is
/// predictable) and a pod that fetches nothing: modelgate never adopts, scales or
/// counts it, says so, and carries on once it is gone.
#[tokio::test]
async fn a_replica_set_the_release_did_not_make_is_never_its_revision() -> anyhow::Result<()> {
    rollout_test("tenant-rs", &["1.0", "2.0"], |client, ns, _repo, api| async move {
        api.create(&PostParams::default(), &release("fraud", V1, 2, json!({}))?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        let mut next = api.get("fraud").await?;
        next.spec.model.target = V2.into();
        let hash = modelgate::plan::desired_hash(&next);
        let name = format!("fraud-{hash}");
        let labels = json!({"modelgate.dev/release": "fraud", "modelgate.dev/revision-hash": hash});
        let mut template = release("fraud", V1, 1, json!({}))?.spec.template;
        template.metadata = Some(serde_json::from_value(json!({"labels": labels}))?);
        let theirs: k8s_openapi::api::apps::v1::ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": template}
        }))?;
        let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), &ns);
        sets.create(&PostParams::default(), &theirs).await?;

        set_target(&api, "fraud", V2).await?;
        let r = eventually("ForeignWorkloads=True", WAIT, || async {
            let r = api.get("fraud").await?;
            Ok(condition(&r, "ForeignWorkloads").is_some_and(|c| c.0 == "True").then_some(r))
        })
        .await?;
        let (_, reason, message) = condition(&r, "ForeignWorkloads").unwrap_or_default();
        assert_eq!(reason, "NotControlled");
        assert!(message.contains(&name), "{message}");
        assert!(events(&client, &ns).await?.iter().any(|(reason, _)| reason == "ForeignWorkload"));
        // Some seconds of the operator at work: theirs is neither scaled nor adopted.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let still = sets.get(&name).await?;
        assert_eq!(still.spec.replicas, Some(0), "never scaled");
        assert!(still.metadata.owner_references.unwrap_or_default().is_empty(), "never adopted");
        assert_eq!(revisions(&client, &ns, "fraud").await?.get(&1), Some(&2), "revision 1 keeps serving");

        // Gone: the release makes its own and goes on.
        sets.delete(&name, &DeleteParams::background()).await?;
        eventually("their ReplicaSet gone", WAIT, || async { Ok(sets.get_opt(&name).await?.is_none().then_some(())) })
            .await?;
        wait_stable(&api, "fraud", 2, WAIT).await?;
        let mine = sets.get(&name).await?;
        assert!(mine.owner_references().iter().any(|o| o.controller == Some(true) && o.kind == "ModelRelease"));
        Ok(())
    })
    .await
}

/// Someone with rights over ReplicaSets (here the cluster admin; the chart's
/// workloadGuard refuses everyone else) swaps the image in the spec's revision's
/// template: modelgate puts its own template back, records it, and says what happened.
#[tokio::test]
async fn a_changed_pod_template_is_put_back_and_reported() -> anyhow::Result<()> {
    rollout_test("tenant-drift", &["1.0"], |client, ns, _repo, api| async move {
        api.create(&PostParams::default(), &release("fraud", V1, 1, json!({}))?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let recorded = |rs: &k8s_openapi::api::apps::v1::ReplicaSet| {
            rs.annotations().get(modelgate::api::ANNOTATION_TEMPLATE_SHA256).cloned()
        };
        let image = |rs: &k8s_openapi::api::apps::v1::ReplicaSet| {
            rs.spec.template.as_ref().and_then(|t| t.spec.as_ref()).map(|s| s.containers[0].image.clone())
        };
        let made = eventually("the template recorded", WAIT, || async {
            let list = sets.list(&ListParams::default().labels("modelgate.dev/release=fraud")).await?.items;
            Ok(list.into_iter().find(|rs| recorded(rs).is_some()))
        })
        .await?;
        let template = made.spec.template.clone().unwrap();
        assert_eq!(recorded(&made), Some(modelgate::workload::template_sha256(&template)));
        let name = made.name_any();
        let swap = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "attacker.example/server:1"}]);
        sets.patch(&name, &PatchParams::default(), &Patch::<()>::Json(serde_json::from_value(swap)?)).await?;

        let back = eventually("the template put back", WAIT, || async {
            let rs = sets.get(&name).await?;
            Ok((image(&rs) == image(&made) && rs.metadata.generation > made.metadata.generation).then_some(rs))
        })
        .await?;
        let now = back.spec.template.clone().unwrap();
        assert_eq!(recorded(&back), Some(modelgate::workload::template_sha256(&now)), "recorded again");
        let said = events(&client, &ns).await?;
        let (_, note) = said.iter().find(|(reason, _)| reason == "WorkloadChanged").cloned().unwrap_or_default();
        assert!(note.contains(&name) && note.contains("put back"), "{said:?}");
        let r = eventually("WorkloadChanged=False", WAIT, || async {
            let r = api.get("fraud").await?;
            Ok(condition(&r, "WorkloadChanged").is_some_and(|c| c.0 == "False").then_some(r))
        })
        .await?;
        assert_eq!(condition(&r, "WorkloadChanged").unwrap_or_default().1, "AsMade");
        assert_eq!(revisions(&client, &ns, "fraud").await?.get(&1), Some(&1), "revision 1 keeps serving");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn gates_reach_only_what_the_installation_allows() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("tenant-egress", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0"])?;
        repo.register(&client, &ns).await?;
        // The defaults a `helm install` gets: no loopback, no plain http.
        let operator = Operator::start_strict(Some(&ns), &[])?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let endless = Endless::start().await?;
        let silent = Silent::start().await?;
        let spec = json!({"gates": {"interval": "5s", "failureLimit": 1, "checks": [
            {"name": "errors", "prometheus": {"address": format!("http://127.0.0.1:{}", endless.port), "query": "up", "max": 1}},
            {"name": "judge", "webhook": {"url": format!("https://127.0.0.1:{}/judge", silent.port)}},
            {"name": "metadata", "webhook": {"url": "https://169.254.169.254/latest/meta-data/"}},
        ]}});
        api.create(&PostParams::default(), &release("fraud", V1, 1, spec)?).await?;
        let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await.map_err(|e| anyhow::anyhow!("{e}\n{}", operator.logs()))?;
        let gates = r.status.as_ref().unwrap().gates.clone();
        let value = |name: &str| gates.iter().find(|g| g.name == name).and_then(|g| g.last_value.clone()).unwrap_or_default();
        assert!(value("errors").contains("gates.allowHttp"), "{gates:?}");
        assert!(value("judge").contains("loopback"), "{gates:?}");
        assert!(value("metadata").contains("metadata"), "{gates:?}");
        assert!(gates.iter().all(|g| g.result == "Fail"), "{gates:?}");
        Ok(())
    })
    .await
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::test]
async fn gates_cannot_hold_the_operator_hostage() -> anyhow::Result<()> {
    rollout_test("tenant-hostage", &["1.0", "2.0"], |client, ns, repo, api| async move {
        let silent = Silent::start().await?;
        let endless = Endless::start().await?;
        // A release whose Prometheus streams without end: its answer is cut off at 64 KiB.
        let spec = json!({"gates": {"interval": "5s", "checks": [{"name": "errors", "prometheus": {
            "address": format!("http://127.0.0.1:{}", endless.port), "query": "up", "max": 1}}]}});
        api.create(&PostParams::default(), &release("streamed", V1, 1, spec)?).await?;
        let value = eventually("the endless answer judged", WAIT, || async {
            let r = api.get("streamed").await?;
            Ok(r.status.and_then(|s| s.gates.first().and_then(|g| g.last_value.clone())))
        })
        .await?;
        assert!(value.contains("larger than 64 KiB"), "the endless answer is cut off: {value:?}");

        // 40 releases whose webhook never answers (the longest timeout and most retries
        // the API allows): their checks fill every slot this namespace may use.
        for i in 0..40 {
            let spec = json!({"gates": {"interval": "5s", "checks": [{"name": "judge", "webhook": {
                "url": format!("https://127.0.0.1:{}/hang", silent.port), "timeout": "30s", "retries": 10}}]}});
            api.create(&PostParams::default(), &release(&format!("hostage-{i}"), V1, 1, spec)?).await?;
        }
        api.create(&PostParams::default(), &release("fraud", V1, 2, json!({"strategy": {"steps": [{"setWeight": 50}, {"pause": {}}]}}))?)
            .await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        // Every hostage is out (its checks started or queued) by now.
        eventually("every hostage rolling out", WAIT, || async {
            let list = api.list(&ListParams::default()).await?;
            let out = list.items.iter().filter(|r| r.name_any().starts_with("hostage-") && r.status.as_ref().is_some_and(|s| s.canary.is_some())).count();
            Ok((out == 40).then_some(()))
        })
        .await?;

        behave(&client, &ns, repo.sha256(V2), "CrashLoop").await?;
        set_target(&api, "fraud", V2).await?;
        let started = Instant::now();
        wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
        let took = started.elapsed();
        let operator_pid = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()))
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains(&ns) && c.contains("run"))
            });
        let rss = operator_pid.map_or(0.0, rss_mib);
        eprintln!("hostage test: crash to RolledBack in {took:?} (canary created and crashed within it); operator RSS {rss:.1} MiB");
        // Generous against CI noise; the rollback-latency benchmark measures it properly.
        assert!(took < Duration::from_secs(20), "rollback took {took:?} while gates hung");
        assert!(rss < 256.0, "operator RSS {rss:.1} MiB");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_operator_with_nothing_to_do_is_ready() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("tenant-ready", |_client, ns| async move {
        let operator = Operator::start(Some(&ns), &[])?;
        let address = eventually("metrics address", WAIT, || async { Ok(operator.http_address()) }).await?;
        let http = reqwest::Client::new();
        eventually("/readyz 200 with zero releases", Duration::from_secs(30), || async {
            let r = http.get(format!("http://{address}/readyz")).send().await?;
            Ok(r.status().is_success().then_some(()))
        })
        .await
    })
    .await
}

async fn repository_condition(api: &Api<ModelRepository>) -> anyhow::Result<Option<(String, String)>> {
    let r = api.get(REPOSITORY).await?;
    Ok(r.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Trusted")).map(|c| (c.status, c.reason)))
}

#[tokio::test]
async fn a_tampered_trust_record_is_refused_and_a_new_pin_re_anchors() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("tenant-anchor", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        let attacker = ModelRepo::new("fraud", &["1.0"])?;
        repo.register(&client, &ns).await?;
        let repos: Api<ModelRepository> = Api::namespaced(client.clone(), &ns);
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let operator = Operator::start(Some(&ns), &[])?;
        api.create(&PostParams::default(), &release("fraud", V1, 1, json!({}))?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        let record = cms.get("ml-models-trust-state").await?;
        let data = record.data.clone().unwrap_or_default();
        assert_eq!(data.get("roots.json").map(String::as_str), Some("[]"), "no rotation yet: an empty chain");
        assert!(data.contains_key("pinned-root-sha256"));
        let recorded = repos.get(REPOSITORY).await?.status.and_then(|s| s.pinned_root_sha256);
        assert_eq!(recorded.as_deref(), data.get("pinned-root-sha256").map(String::as_str), "status records the pin");

        // Someone with edit changes one key of the record, the pin it names: that is not
        // a re-pin by the security team (no ReAnchored in its name), it is tampering.
        let patch = json!({"data": {"pinned-root-sha256": "0".repeat(64)}});
        cms.patch("ml-models-trust-state", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let restarted = Operator::start(Some(&ns), &[])?;
        drop(operator);
        eventually("repository refused for a forged pin in the record", WAIT, || async {
            Ok(repository_condition(&repos).await?.filter(|c| c.1 == "TrustStateTampered").map(|_| ()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", restarted.logs()))?;
        assert!(!events(&client, &ns).await?.iter().any(|(r, _)| r == "ReAnchored"), "no false re-anchoring alarm");
        // The runbook's remedy: delete the record; it is rebuilt from the pin.
        cms.delete("ml-models-trust-state", &Default::default()).await?;
        eventually("trusted again, the record rebuilt", WAIT, || async {
            let trusted = repository_condition(&repos).await?.is_some_and(|c| c.0 == "True");
            Ok((trusted && cms.get_opt("ml-models-trust-state").await?.is_some()).then_some(()))
        })
        .await?;
        drop(restarted);

        // Someone with edit in the namespace replaces the record with a root of other keys.
        let forged = serde_json::to_string(&[attacker.root_json()?])?;
        let patch = json!({"data": {"roots.json": forged}});
        cms.patch("ml-models-trust-state", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let operator = Operator::start(Some(&ns), &[])?;
        eventually("repository refused", WAIT, || async {
            Ok(repository_condition(&repos).await?.filter(|c| c.1 == "TrustStateTampered").map(|_| ()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.logs()))?;
        // The Event follows the status write: wait for it too.
        eventually("a TrustStateTampered event", WAIT, || async {
            let found = events(&client, &ns)
                .await?
                .iter()
                .any(|(r, n)| r == "TrustStateTampered" && n.contains("trust record"));
            Ok(found.then_some(()))
        })
        .await?;
        // Nothing new starts on it, and what it vouched for stops serving (the default:
        // a model nothing trusted vouches for is a revoked one).
        set_target(&api, "fraud", V2).await?;
        let r = eventually("revision 2 refused, revision 1 revoked", WAIT, || async {
            let r = api.get("fraud").await?;
            let status = r.status.clone().unwrap_or_default();
            let refused = status.history.iter().any(|h| h.revision.target == V2);
            Ok((refused && status.phase == Some(Phase::Revoked)).then_some(r))
        })
        .await?;
        assert!(r.status.as_ref().unwrap().message.as_deref().unwrap_or("").contains("trust record"));
        let running = revisions(&client, &ns, "fraud").await?;
        assert_eq!(running, [(1, 0)].into(), "no workload for revision 2, none of revision 1 serves");

        // The security team re-pins (the same root, re-serialised: a different pin):
        // a deliberate, visible re-anchoring that sets the record aside.
        let root: serde_json::Value = serde_json::from_str(&repo.root_json()?)?;
        let pin = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ml-root-v2"},
                         "data": {"root.json": serde_json::to_string_pretty(&root)?}});
        cms.patch("ml-root-v2", &PatchParams::apply("security-team"), &Patch::Apply(&pin)).await?;
        let repin = json!({"spec": {"trustedRoot": {"configMapRef": {"name": "ml-root-v2", "key": "root.json"}}}});
        repos.patch(REPOSITORY, &PatchParams::default(), &Patch::Merge(&repin)).await?;
        eventually("repository trusted again", WAIT, || async {
            Ok(repository_condition(&repos).await?.filter(|c| c.0 == "True").map(|_| ()))
        })
        .await?;
        assert!(events(&client, &ns).await?.iter().any(|(r, _)| r == "ReAnchored"));
        let data = cms.get("ml-models-trust-state").await?.data.unwrap_or_default();
        assert_eq!(data.get("roots.json").map(String::as_str), Some("[]"), "the forged chain is gone");
        command(&api, "fraud", ANNOTATION_RETRY, "after-repin").await?;
        wait_stable(&api, "fraud", 2, WAIT).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_restarted_operator_verifies_a_new_target_at_once() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("tenant-restart", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        // An hour between refreshes: a restart must not wait for the next one.
        repo.register_as(&client, &ns, REPOSITORY, "1h").await?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        // A judge that passes until told otherwise (the post-promotion window keeps asking).
        let (judge_dir, judge) = webhook_judge(&client, &ns).await?;
        let spec = json!({"gates": {"interval": "5s", "failureLimit": 2, "checks": [{"name": "judge", "webhook": {
            "url": judge.url("judge"), "caBundle": {"configMapRef": {"name": "judge-ca", "key": "ca.crt"}}}}]}});
        let operator = Operator::start(Some(&ns), &[])?;
        api.create(&PostParams::default(), &release("fraud", V1, 1, spec)?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        drop(operator);

        let _operator = Operator::start(Some(&ns), &[])?;
        let started = Instant::now();
        set_target(&api, "fraud", V2).await?;
        wait_stable(&api, "fraud", 2, Duration::from_secs(60)).await?;
        eprintln!("restart: new target promoted {:?} after the restart", started.elapsed());
        // Its checks turn bad in the post-promotion window: back to revision 1 within a
        // few gate intervals, though the repository is not refreshed for an hour.
        std::fs::write(judge_dir.path().join("webhook-status"), "500")?;
        let failing = Instant::now();
        wait_stable(&api, "fraud", 1, Duration::from_secs(60)).await?;
        let took = failing.elapsed();
        eprintln!("restart: failing gate rolled back in {took:?}");
        assert!(took < Duration::from_secs(45), "{took:?} is more than a few 5 s intervals");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn many_repositories_leave_no_temporary_files() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("tenant-repos", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0"])?;
        let names: Vec<String> = (0..20).map(|i| format!("repo-{i}")).collect();
        for name in &names {
            repo.register_as(&client, &ns, name, "10s").await?;
        }
        let tmp = tempfile::tempdir()?;
        let tmp_s = tmp.path().to_str().unwrap_or_default().to_string();
        let _operator = Operator::start_with(Some(&ns), &[], None, &[("TMPDIR", tmp_s.as_str())])?;
        let repos: Api<ModelRepository> = Api::namespaced(client.clone(), &ns);
        eventually("20 repositories trusted", WAIT, || async {
            let list = repos.list(&ListParams::default()).await?;
            let trusted = list
                .items
                .iter()
                .filter(|r| {
                    r.status
                        .as_ref()
                        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Trusted" && c.status == "True"))
                })
                .count();
            Ok((trusted == names.len()).then_some(()))
        })
        .await?;
        // Refreshed at least twice each by now (10s interval); nothing written to disk.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let left: Vec<_> = std::fs::read_dir(tmp.path())?.flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "temporary files: {left:?}");
        let states = Api::<ConfigMap>::namespaced(client.clone(), &ns).list(&ListParams::default()).await?;
        let records = states.items.iter().filter(|c| c.name_any().ends_with("-trust-state")).count();
        assert_eq!(records, names.len());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn one_operator_serves_exactly_the_namespaces_it_is_given() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("tenant-scope-a", |client, a| async move {
        with_temp_ns("tenant-scope-b", |_, b| async move {
            with_temp_ns("tenant-scope-c", |_, c| async move {
                let repo = ModelRepo::new("fraud", &["1.0"])?;
                for ns in [&a, &b, &c] {
                    repo.register(&client, ns).await?;
                    let api: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
                    api.create(&PostParams::default(), &release("fraud", V1, 1, json!({}))?).await?;
                }
                // The chart's `rbac.namespaces` becomes this list.
                let _operator = Operator::start(Some(&format!("{a},{b}")), &[])?;
                for ns in [&a, &b] {
                    wait_phase(&Api::namespaced(client.clone(), ns), "fraud", Phase::Promoted, WAIT).await?;
                }
                let outside: Api<ModelRelease> = Api::namespaced(client.clone(), &c);
                assert!(outside.get("fraud").await?.status.is_none(), "a namespace not listed is not touched");
                Ok(())
            })
            .await
        })
        .await
    })
    .await
}

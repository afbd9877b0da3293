//! The simulated kubelet makes a Deployment's pods Ready through the real
//! controller-manager, and makes chosen pods fail the way tests ask.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use modelgate_tests::{
    harness::{eventually, with_temp_ns},
    kubelet::{BEHAVIOR_ANNOTATION, BEHAVIOR_CONFIGMAP},
    models::simulated,
};
use serde_json::json;

fn deployment(name: &str, replicas: i32, digest: &str) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"modelgate.dev/model-sha256": digest}},
                "spec": {
                    "initContainers": [{"name": "fetch", "image": "modelgate:test"}],
                    "containers": [{"name": "server", "image": "server:1"}],
                    "nodeSelector": simulated()["nodeSelector"],
                    "tolerations": simulated()["tolerations"],
                }
            }
        }
    }))?)
}

fn waiting_reason(pod: &Pod, init: bool) -> Option<String> {
    let status = pod.status.as_ref()?;
    let list = if init { status.init_container_statuses.as_ref()? } else { status.container_statuses.as_ref()? };
    list.first()?.state.as_ref()?.waiting.as_ref()?.reason.clone()
}

fn restarts(pod: &Pod, init: bool) -> i32 {
    let Some(status) = pod.status.as_ref() else { return 0 };
    let list = if init { &status.init_container_statuses } else { &status.container_statuses };
    list.iter().flatten().map(|c| c.restart_count).max().unwrap_or(0)
}

#[tokio::test]
async fn deployment_pods_become_ready_and_a_chosen_pod_crash_loops() -> anyhow::Result<()> {
    with_temp_ns("kubelet", |client, ns| async move {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        deployments.create(&PostParams::default(), &deployment("web", 2, "aaaa")?).await?;

        // The real deployment and replicaset controllers create the pods; the simulated
        // kubelet binds them and reports them Ready; the Deployment counts them.
        eventually("2 ready replicas", Duration::from_secs(60), || async {
            let d = deployments.get("web").await?;
            Ok((d.status.and_then(|s| s.ready_replicas) == Some(2)).then_some(()))
        })
        .await?;

        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        assert_eq!(list.items.len(), 2);
        let victim = list.items[0].name_any();
        let bystander = list.items[1].name_any();
        let patch = json!({"metadata": {"annotations": {BEHAVIOR_ANNOTATION: "CrashLoop"}}});
        pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&patch)).await?;

        let crashed =
            eventually("the chosen pod to crash-loop with rising restarts", Duration::from_secs(30), || async {
                let pod = pods.get(&victim).await?;
                let ok =
                    waiting_reason(&pod, false).as_deref() == Some("CrashLoopBackOff") && restarts(&pod, false) >= 3;
                Ok(ok.then_some(pod))
            })
            .await?;
        let ready = crashed.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        // The other pod is untouched, and the Deployment sees one ready replica.
        let other = pods.get(&bystander).await?;
        assert_eq!(restarts(&other, false), 0);
        eventually("1 ready replica", Duration::from_secs(30), || async {
            let d = deployments.get("web").await?;
            Ok((d.status.and_then(|s| s.ready_replicas) == Some(1)).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pods_fail_by_model_digest_from_the_configmap() -> anyhow::Result<()> {
    with_temp_ns("kubelet-digest", |client, ns| async move {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let rules: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": BEHAVIOR_CONFIGMAP},
            "data": {"bad1": "InitFailed: sha256 mismatch: model is not what was signed", "oom2": "OOMKilled"}
        }))?;
        cms.create(&PostParams::default(), &rules).await?;
        deployments.create(&PostParams::default(), &deployment("tampered", 1, "bad1")?).await?;
        deployments.create(&PostParams::default(), &deployment("hungry", 1, "oom2")?).await?;
        deployments.create(&PostParams::default(), &deployment("fine", 1, "good3")?).await?;

        let init_failed =
            eventually("the tampered model's init container to fail", Duration::from_secs(60), || async {
                let list = pods.list(&ListParams::default().labels("app=tampered")).await?;
                Ok(list.items.into_iter().find(|p| waiting_reason(p, true).as_deref() == Some("CrashLoopBackOff")))
            })
            .await?;
        let status = init_failed.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let last = status.init_container_statuses.unwrap()[0].last_state.clone().unwrap().terminated.unwrap();
        assert_eq!(last.message.as_deref(), Some("sha256 mismatch: model is not what was signed"));

        let oom = eventually("the hungry model to be OOM-killed", Duration::from_secs(60), || async {
            let list = pods.list(&ListParams::default().labels("app=hungry")).await?;
            Ok(list.items.into_iter().find(|p| restarts(p, false) >= 1))
        })
        .await?;
        let last = oom.status.unwrap().container_statuses.unwrap()[0].last_state.clone().unwrap().terminated.unwrap();
        assert_eq!(last.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(last.exit_code, 137);

        eventually("the untouched model to be ready", Duration::from_secs(60), || async {
            let d = deployments.get("fine").await?;
            Ok((d.status.and_then(|s| s.ready_replicas) == Some(1)).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

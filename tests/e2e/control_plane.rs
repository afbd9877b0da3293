//! The control plane itself failing under a rollout. A test binary of its own: cargo runs
//! test binaries one after another, so no other test sees the API server go away.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::events::v1::Event;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use modelgate::api::{ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, repo_root, with_temp_ns},
    models::{ModelRepo, release, revisions, set_target, wait_phase},
};
use serde_json::json;

const V1: &str = "fraud/1.0/model.onnx";
const V2: &str = "fraud/2.0/model.onnx";

/// `tests/cluster/restart COMPONENT SECONDS`: SIGKILL, down for a while, started again.
async fn restart(component: &str, down_seconds: u32) -> anyhow::Result<()> {
    let script: PathBuf = repo_root().join("tests/cluster/restart");
    let component = component.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script).args([component.as_str(), &down_seconds.to_string()]).output()
    })
    .await??;
    anyhow::ensure!(out.status.success(), "restart failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn pid_alive(component: &str) -> bool {
    let dir = std::env::var("MODELGATE_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/modelgate/cluster"));
    std::fs::read_to_string(dir.join(format!("pids/{component}.pid")))
        .ok()
        .is_some_and(|pid| PathBuf::from(format!("/proc/{}", pid.trim())).exists())
}

#[tokio::test]
async fn a_rollout_completes_across_a_kube_apiserver_restart_with_one_canary() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("apiserver-restart", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        repo.register(&client, &ns).await?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let operator = Operator::start(Some(&ns), &[])?;
        let steps = json!({"strategy": {"steps": [
            {"setWeight": 25}, {"pause": {"duration": "5s"}}, {"setWeight": 50}, {"pause": {"duration": "5s"}},
        ]}});
        api.create(&PostParams::default(), &release("fraud", V1, 4, steps)?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, Duration::from_secs(90)).await?;

        set_target(&api, "fraud", V2).await?;
        // In the first pause (one canary pod Ready): the API server dies and comes back
        // 3 s later. The next step's pods are created, bound and made Ready after it.
        eventually("revision 2 at its first pause", Duration::from_secs(60), || async {
            let r = api.get("fraud").await?;
            Ok(r.status.and_then(|s| s.canary).is_some_and(|c| c.step >= 1).then_some(()))
        })
        .await?;
        restart("kube-apiserver", 3).await?;

        let r = wait_phase(&api, "fraud", Phase::Promoted, Duration::from_secs(120))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n--- operator log ---\n{}", operator.logs()))?;
        let history: Vec<_> = r
            .status
            .as_ref()
            .map(|s| s.history.iter().map(|h| (h.revision.number, h.outcome.to_string())).collect())
            .unwrap_or_default();
        assert_eq!(history, [(1, "Promoted".to_string()), (2, "Promoted".to_string())], "each revision decided once");
        let rs = revisions(&client, &ns, "fraud").await?;
        assert!(rs.keys().all(|r| *r == 1 || *r == 2), "no second canary: {rs:?}");
        assert_eq!(rs.get(&2), Some(&4), "revision 2 serves every replica: {rs:?}");
        let events = Api::<Event>::namespaced(client.clone(), &ns).list(&ListParams::default()).await?;
        let started = events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("RolloutStarted"))
            .filter(|e| e.note.as_deref().is_some_and(|n| n.starts_with("revision 2 ")))
            .count();
        assert!(started <= 1, "revision 2 started once, not {started} times");
        assert!(pid_alive("sim-kubelet"), "the simulated kubelet outlives the API server restart");
        Ok(())
    })
    .await
}

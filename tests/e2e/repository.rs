//! The ModelRepository controller against a python-tuf repository over HTTPS: it trusts
//! the repository, records floors in status and the newest root in a ConfigMap it owns,
//! refuses a rollback with a condition and an Event, and keeps refusing after a restart
//! because the floors live in the cluster, not in the operator.

use std::time::Duration;

use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use modelgate::api::ModelRepository;
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, with_temp_ns},
    tuf::{Server, scenarios},
};
use serde_json::json;

fn condition(r: &ModelRepository, type_: &str) -> Option<(String, String)> {
    let c = r.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn repository_is_trusted_then_a_rollback_is_refused_across_restarts() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    let root = scenarios()?;
    let server = Server::https(root)?;
    with_temp_ns("repository", |client, ns| async move {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let repos: Api<ModelRepository> = Api::namespaced(client.clone(), &ns);
        let pinned = std::fs::read_to_string(root.join("rollback_timestamp/root.json"))?;
        let ca = std::fs::read_to_string(server.ca.as_ref().unwrap())?;
        for (name, key, value) in [("ml-root", "root.json", pinned), ("corp-ca", "ca.crt", ca)] {
            let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}, "data": {key: value}}))?;
            cms.create(&PostParams::default(), &cm).await?;
        }
        let repo: ModelRepository = serde_json::from_value(json!({
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRepository", "metadata": {"name": "ml-models"},
            "spec": {
                "metadataUrl": server.url("rollback_timestamp/phase1/metadata/"),
                "targetsUrl": server.url("rollback_timestamp/phase1/targets/"),
                "trustedRoot": {"configMapRef": {"name": "ml-root", "key": "root.json"}},
                "caBundle": {"configMapRef": {"name": "corp-ca", "key": "ca.crt"}},
                "refreshInterval": "10s"
            }
        }))?;
        repos.create(&PostParams::default(), &repo).await?;
        let operator = Operator::start(Some(&ns), &[])?;

        let trusted = eventually("Trusted=True", Duration::from_secs(30), || async {
            let r = repos.get("ml-models").await?;
            Ok((condition(&r, "Trusted").map(|c| c.0).as_deref() == Some("True")).then_some(r))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.logs()))?;
        let status = trusted.status.unwrap();
        assert_eq!(status.timestamp.as_ref().unwrap().version, 2);
        assert_eq!(status.root.as_ref().unwrap().version, 1);
        assert!(status.timestamp.unwrap().expires.is_some());

        // The roots after the pin (none yet) are recorded in a ConfigMap the repository
        // owns, with the pin they start from.
        let state = cms.get("ml-models-trust-state").await?;
        let owner = &state.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ModelRepository", "ml-models"));
        let data = state.data.unwrap();
        assert_eq!(data["roots.json"], "[]");
        assert_eq!(data["pinned-root-sha256"].len(), 64);
        // ...and the floors pods started later read (they only raise their own).
        let floors: serde_json::Value = serde_json::from_str(&data["floors.json"])?;
        let now = repos.get("ml-models").await?.status.unwrap_or_default();
        let version = |r: &Option<modelgate::api::RoleState>| r.as_ref().map_or(0, |r| r.version);
        let want = json!({"root": version(&now.root), "timestamp": version(&now.timestamp),
                          "snapshot": version(&now.snapshot), "targets": version(&now.targets)});
        assert_eq!((floors.clone(), floors["timestamp"].as_u64()), (want, Some(2)), "the status's floors");
        assert_eq!(
            now.pinned_root_sha256.as_deref(),
            Some(data["pinned-root-sha256"].as_str()),
            "status records the pin"
        );

        // The server now offers timestamp v1: a rollback.
        let patch = json!({"spec": {"metadataUrl": server.url("rollback_timestamp/phase2/metadata/")}});
        repos.patch("ml-models", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let refused = eventually("RollbackDetected=True", Duration::from_secs(30), || async {
            let r = repos.get("ml-models").await?;
            Ok((condition(&r, "RollbackDetected").map(|c| c.0).as_deref() == Some("True")).then_some(r))
        })
        .await?;
        assert_eq!(condition(&refused, "Trusted"), Some(("False".into(), "RollbackDetected".into())));
        assert_eq!(refused.status.unwrap().timestamp.unwrap().version, 2, "a refused refresh must not lower the floor");
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        eventually("a RollbackDetected Event", Duration::from_secs(20), || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find(|e| e.reason.as_deref() == Some("RollbackDetected")))
        })
        .await?;

        // A new operator process has no local state, yet refuses too: the floor is in status.
        drop(operator);
        let operator = Operator::start(Some(&ns), &[])?;
        eventually("the restarted operator to refuse the rollback", Duration::from_secs(30), || async {
            Ok(operator.logs().contains("RollbackDetected").then_some(()))
        })
        .await?;
        let r = repos.get("ml-models").await?;
        assert_eq!(condition(&r, "Trusted").map(|c| c.0).as_deref(), Some("False"));
        assert_eq!(r.status.unwrap().timestamp.unwrap().version, 2);

        // An unreachable repository is a condition, not a crash.
        let patch = json!({"spec": {"metadataUrl": "https://127.0.0.1:1/metadata/"}});
        repos.patch("ml-models", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        eventually("Unreachable=True", Duration::from_secs(30), || async {
            let r = repos.get("ml-models").await?;
            Ok((condition(&r, "Unreachable").map(|c| c.0).as_deref() == Some("True")).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

//! `modelgate run` against the real API server: it reconciles ModelReleases, writes
//! `status.observedGeneration` and conditions, follows spec changes and repository
//! changes, and stops cleanly on SIGTERM.

use std::time::Duration;

use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use modelgate::api::{ModelRelease, ModelRepository};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, with_temp_ns},
    models::simulated,
};
use serde_json::json;

fn accepted(r: &ModelRelease) -> Option<(String, String, Option<i64>)> {
    let status = r.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == "Accepted")?;
    Some((c.status.clone(), c.reason.clone(), status.observed_generation))
}

#[tokio::test]
async fn operator_reconciles_releases_and_follows_spec_changes() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("operator", |client, ns| async move {
        let operator = Operator::start(Some(&ns), &[])?;
        let releases: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let repos: Api<ModelRepository> = Api::namespaced(client.clone(), &ns);

        let release: ModelRelease = serde_json::from_value(json!({
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRelease",
            "metadata": {"name": "fraud"},
            "spec": {"repositoryRef": {"name": "ml-models"}, "model": {"target": "fraud/1.0/model.onnx"},
                     "template": {"spec": {"containers": [{"name": "server", "image": "server:1"}],
                                          "nodeSelector": simulated()["nodeSelector"],
                                          "tolerations": simulated()["tolerations"]}}}
        }))?;
        releases.create(&PostParams::default(), &release).await?;

        // The repository does not exist yet: not accepted, and the message says why.
        let observed = eventually("status for generation 1", Duration::from_secs(30), || async {
            let r = releases.get("fraud").await?;
            Ok(accepted(&r).filter(|(_, _, g)| *g == Some(1)).map(|a| (a, r)))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\noperator log:\n{}", operator.logs()))?;
        assert_eq!((observed.0.0.as_str(), observed.0.1.as_str()), ("False", "RepositoryNotFound"));
        let status = observed.1.status.unwrap();
        assert!(status.message.unwrap().contains("ml-models"));
        assert_eq!(status.phase, Some(modelgate::api::Phase::Verifying));

        // Creating the repository re-admits the release without any change to it.
        let repo: ModelRepository = serde_json::from_value(json!({
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRepository",
            "metadata": {"name": "ml-models"},
            "spec": {"metadataUrl": "https://tuf.example.com/metadata/", "targetsUrl": "https://tuf.example.com/targets/",
                     "trustedRoot": {"configMapRef": {"name": "root", "key": "root.json"}}}
        }))?;
        repos.create(&PostParams::default(), &repo).await?;
        eventually("Accepted=True", Duration::from_secs(30), || async {
            let r = releases.get("fraud").await?;
            Ok(accepted(&r).filter(|(s, reason, _)| s == "True" && reason == "RepositoryFound"))
        })
        .await?;

        // A spec change is a new generation; the operator observes it.
        let patch = json!({"spec": {"model": {"target": "fraud/2.0/model.onnx"}}});
        releases.patch("fraud", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let (_, _, generation) = eventually("status for generation 2", Duration::from_secs(30), || async {
            let r = releases.get("fraud").await?;
            Ok(accepted(&r).filter(|(_, _, g)| *g == Some(2)))
        })
        .await?;
        assert_eq!(generation, Some(2));
        let r = releases.get("fraud").await?;
        let cond = r.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Accepted").unwrap();
        assert_eq!(cond.observed_generation, Some(2));

        // Field manager is modelgate, through the status subresource.
        let managers = r.metadata.managed_fields.unwrap_or_default();
        assert!(
            managers.iter().any(|m| m.manager.as_deref() == Some("modelgate") && m.subresource.as_deref() == Some("status")),
            "no status field manager `modelgate`: {managers:?}"
        );

        let code = operator.terminate(Duration::from_secs(10))?;
        assert_eq!(code, Some(0), "SIGTERM should stop the operator cleanly");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn operator_logs_json_when_asked() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("operator-json", |_client, ns| async move {
        let operator = Operator::start(Some(&ns), &["--log-format", "json"])?;
        let line = eventually("a JSON start line", Duration::from_secs(30), || async {
            Ok(operator.logs().lines().find(|l| l.contains("operator starting")).map(str::to_string))
        })
        .await?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["namespaces"], ns.as_str());
        Ok(())
    })
    .await
}

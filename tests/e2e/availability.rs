//! Two replicas with leader election: one reconciles, the other takes over when it dies.
//! And what the operator exposes: `/metrics` (OpenMetrics), `/healthz`, `/readyz`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::PostParams};
use modelgate::api::{ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, with_temp_ns},
    models::{ModelRepo, release, set_target, wait_phase, wait_stable},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn two_replicas_elect_one_leader_which_fails_over_and_reports_metrics() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("leader", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        repo.register(&client, &ns).await?;
        let elect = ["--leader-elect", "--leader-election-namespace", ns.as_str()];
        let a = Operator::start(Some(&ns), &elect)?;
        let b = Operator::start(Some(&ns), &elect)?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &release("fraud", "fraud/1.0/model.onnx", 2, json!({}))?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;

        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let lease = leases.get("modelgate-leader").await?;
        let holder = lease.spec.unwrap().holder_identity.unwrap();
        let won = |op: &Operator| op.logs().contains("leader election won");
        let (leader, follower) = match (won(&a), won(&b)) {
            (true, false) => (a, b),
            (false, true) => (b, a),
            other => anyhow::bail!("exactly one replica must lead, got {other:?}"),
        };
        assert!(follower.logs().contains("another replica leads; waiting"));
        assert!(!follower.logs().contains("phase changed"), "the follower reconciled:\n{}", follower.logs());

        // The leader's endpoints.
        let address = leader.http_address().expect("the leader logged its address");
        let get = |path: &str| {
            let url = format!("http://{address}{path}");
            async move { anyhow::Ok(reqwest::get(url).await?) }
        };
        assert_eq!(get("/healthz").await?.status(), 200);
        assert_eq!(get("/readyz").await?.status(), 200);
        let page = get("/metrics").await?.text().await?;
        for want in [
            format!("modelgate_release_phase{{namespace=\"{ns}\",release=\"fraud\",phase=\"Promoted\"}} 1"),
            "modelgate_reconciles_total{controller=\"release\"}".to_string(),
            "modelgate_reconcile_duration_seconds_bucket{".to_string(),
            format!(
                "modelgate_repository_floor_version{{namespace=\"{ns}\",repository=\"ml-models\",role=\"timestamp\"}} 2"
            ),
        ] {
            assert!(page.contains(&want), "no {want} in\n{page}");
        }
        let follower_address = follower.http_address().expect("the follower serves health too");
        let ready = reqwest::get(format!("http://{follower_address}/readyz")).await?.status();
        assert_eq!(ready, 200, "a follower standing by is ready (it must not hold up a rollout of the operator)");

        // The leader dies; the follower takes the lease and carries on.
        drop(leader);
        set_target(&api, "fraud", "fraud/2.0/model.onnx").await?;
        eventually("the follower to take over", Duration::from_secs(40), || async {
            let lease = leases.get("modelgate-leader").await?.spec.unwrap();
            Ok((lease.holder_identity.as_deref() != Some(holder.as_str())).then_some(lease))
        })
        .await?;
        let r = wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        wait_stable(&api, "fraud", 2, WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", r.status, follower.logs()))?;
        assert!(follower.logs().contains("leader election won"));
        Ok(())
    })
    .await
}

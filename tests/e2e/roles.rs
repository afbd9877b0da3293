//! The split of power, acted out by each role the chart ships (impersonation, roles as
//! `helm template` renders them): the security team (`<release>-trust-admin`) owns a
//! ClusterModelRepository, its pin and its policy; an ML team with only the built-in
//! `edit` in its namespace (modelgate-edit aggregated into it) releases within that
//! policy and cannot widen it, keep a revoked model serving, or touch the pin; `view`
//! reads and changes nothing.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::ConfigMap};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use modelgate::api::{ClusterModelRepository, ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, helm_ok, kubectl_ok, repo_root, with_temp_ns},
    models::{ModelRepo, register_cluster, release, set_target, wait_phase},
};
use serde_json::json;

const V1: &str = "fraud/1.0/model.onnx";
const V2: &str = "fraud/2.0/model.onnx";
const WAIT: Duration = Duration::from_secs(90);

/// A client that acts as `user` (the test's admin may impersonate).
async fn client_as(user: &str) -> anyhow::Result<Client> {
    let mut config = kube::Config::infer().await?;
    config.auth_info.impersonate = Some(user.into());
    Ok(Client::try_from(config)?)
}

fn forbidden<T>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test]
async fn the_security_team_owns_cluster_trust_and_a_team_with_edit_releases_within_it() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("trust-admin", |_, trust_ns| async move {
        with_temp_ns("team", |admin, ns| async move {
            // The chart's roles, as an installation in `trust_ns` renders them.
            let release_name = format!("mg-{ns}");
            let chart = repo_root().join("charts/modelgate");
            let roles = helm_ok(&[
                "template",
                &release_name,
                &chart.to_string_lossy(),
                "-n",
                &trust_ns,
                "--show-only",
                "templates/trust-rbac.yaml",
            ])?;
            kubectl_ok(&["apply", "-f", "-"], Some(&roles))?;
            // The full name the chart gives them (`<fullname>-trust-admin`).
            let admin_role = roles
                .lines()
                .filter_map(|l| l.trim().strip_prefix("name: "))
                .find(|n| n.ends_with("-trust-admin"))
                .unwrap_or_default()
                .to_string();
            let result = act_out(&admin, &trust_ns, &ns, &admin_role).await;
            let _ = kubectl_ok(&["delete", "--ignore-not-found", "-f", "-"], Some(&roles));
            result
        })
        .await
    })
    .await
}

async fn act_out(admin: &Client, trust_ns: &str, ns: &str, admin_role: &str) -> anyhow::Result<()> {
    let (team, reader, security) = ("alice@ml", "bob@ml", "carol@security");
    kubectl_ok(&["create", "rolebinding", "team-edit", "-n", ns, "--clusterrole", "edit", "--user", team], None)?;
    kubectl_ok(&["create", "rolebinding", "team-view", "-n", ns, "--clusterrole", "view", "--user", reader], None)?;
    let binding = format!("{ns}-carol");
    kubectl_ok(&["create", "clusterrolebinding", &binding, "--clusterrole", admin_role, "--user", security], None)?;
    kubectl_ok(&["create", "rolebinding", "security", "-n", trust_ns, "--role", admin_role, "--user", security], None)?;
    let result = async {
        // The security team registers the repository: team `ns` may release fraud 1.x.
        let carol = client_as(security).await?;
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        let policy = json!({"allow": [{"namespaces": [ns], "paths": ["fraud/1.*/**"]}]});
        register_cluster(&repo, &carol, trust_ns, &format!("shared-{ns}"), ns, policy).await?;
        let repo_name = format!("shared-{ns}");
        let operator = Operator::start(Some(ns), &["--trust-namespace", trust_ns])?;

        // The team cannot touch what vouches for its models.
        let alice = client_as(team).await?;
        let theirs: Api<ClusterModelRepository> = Api::all(alice.clone());
        let widen = json!({"spec": {"policy": {"allow": [{"namespaces": [ns], "paths": ["**"]}], "onRevocation": "Alert"}}});
        assert!(forbidden(theirs.patch(&repo_name, &PatchParams::default(), &Patch::Merge(&widen)).await));
        let pin = json!({"data": {"root.json": "{}"}});
        let pins: Api<ConfigMap> = Api::namespaced(alice.clone(), trust_ns);
        assert!(forbidden(pins.patch("ml-root", &PatchParams::default(), &Patch::Merge(&pin)).await));
        let mut own = serde_json::from_value::<ClusterModelRepository>(json!({
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "ClusterModelRepository", "metadata": {"name": format!("mine-{ns}")},
            "spec": {"metadataUrl": "https://example.invalid/m/", "targetsUrl": "https://example.invalid/t/",
                     "trustedRoot": {"configMapRef": {"name": "r", "key": "root.json"}},
                     "policy": {"allow": [{"namespaceSelector": {}, "paths": ["**"]}]}}
        }))?;
        own.metadata.namespace = None;
        assert!(forbidden(theirs.create(&PostParams::default(), &own).await), "a team cannot register a repository");

        // With only `edit` (modelgate-edit aggregated into it) the team releases from it,
        // asking to keep serving a revoked model (which the policy overrides).
        let releases: Api<ModelRelease> = Api::namespaced(alice.clone(), ns);
        let spec = json!({"repositoryRef": {"kind": "ClusterModelRepository", "name": repo_name},
                          "rollback": {"onRevocation": "Alert"}});
        let mine = release("fraud", V1, 2, spec)?;
        eventually("modelgate-edit aggregated into edit", WAIT, || async {
            match releases.create(&PostParams::default(), &mine).await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        let admin_view: Api<ModelRelease> = Api::namespaced(admin.clone(), ns);
        wait_phase(&admin_view, "fraud", Phase::Promoted, WAIT).await.map_err(|e| anyhow::anyhow!("{e}\n{}", operator.logs()))?;

        // `view` reads, and changes nothing.
        let bob: Api<ModelRelease> = Api::namespaced(client_as(reader).await?, ns);
        assert!(bob.get("fraud").await.is_ok());
        let pause = json!({"spec": {"paused": true}});
        assert!(forbidden(bob.patch("fraud", &PatchParams::default(), &Patch::Merge(&pause)).await));

        // A path the policy does not give the team is refused; the running model stays.
        set_target(&releases, "fraud", V2).await?;
        let refused = eventually("2.0 refused by the policy", WAIT, || async {
            let r = admin_view.get("fraud").await?;
            let status = r.status.unwrap_or_default();
            let rejected = status.history.iter().any(|h| h.revision.target == V2 && h.reason.as_deref() == Some("NotAllowedByPolicy"));
            let said = status.conditions.iter().find(|c| c.message.contains("spec.policy.allow")).map(|c| c.message.clone());
            Ok(said.filter(|_| rejected))
        })
        .await?;
        assert!(refused.contains(&repo_name) && refused.contains("fraud/1.*/**"), "{refused}");
        let r = admin_view.get("fraud").await?;
        assert_eq!(r.status.and_then(|s| s.stable).map(|s| s.revision.target).as_deref(), Some(V1));

        // A repository whose policy gives this namespace nothing vouches for nothing here.
        let elsewhere = json!({"allow": [{"namespaces": ["another-team"], "paths": ["**"]}]});
        register_cluster(&repo, &carol, trust_ns, &format!("other-{ns}"), ns, elsewhere).await?;
        let spec = json!({"repositoryRef": {"kind": "ClusterModelRepository", "name": format!("other-{ns}")}});
        releases.create(&PostParams::default(), &release("elsewhere", V1, 1, spec)?).await?;
        let r = wait_phase(&admin_view, "elsewhere", Phase::Rejected, WAIT).await?;
        let message = r.status.and_then(|s| s.message).unwrap_or_default();
        assert!(message.contains("does not allow namespace"), "{message}");
        let sets: Api<ReplicaSet> = Api::namespaced(admin.clone(), ns);
        let made = sets.list(&ListParams::default().labels("modelgate.dev/release=elsewhere")).await?;
        assert!(made.items.is_empty(), "nothing is deployed");

        // The security team revokes 1.0: it stops serving, whatever the release asked.
        repo.remove(&[V1])?;
        let r = wait_phase(&admin_view, "fraud", Phase::Revoked, WAIT).await?;
        let message = r.status.and_then(|s| s.message).unwrap_or_default();
        assert!(message.contains("scaled to zero"), "{message}");
        let replicas: Vec<i32> = sets
            .list(&ListParams::default().labels("modelgate.dev/release=fraud"))
            .await?
            .items
            .iter()
            .map(|rs| rs.spec.replicas.unwrap_or(0))
            .collect();
        assert_eq!(replicas, vec![0], "the revoked model serves nothing");
        anyhow::Ok(())
    }
    .await;
    let _ = kubectl_ok(&["delete", "clusterrolebinding", &binding, "--ignore-not-found"], None);
    for name in [format!("shared-{ns}"), format!("other-{ns}")] {
        let _ = kubectl_ok(&["delete", "clustermodelrepository", &name, "--ignore-not-found"], None);
    }
    result
}

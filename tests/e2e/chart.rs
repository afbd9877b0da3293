//! The Helm chart: lints, installs into the real control plane with its CRDs (the
//! operator pod runs on the simulated node), holds least-privilege RBAC and hardened
//! pod security, and uninstalls without deleting the CRDs.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, rbac::v1::ClusterRole};
use kube::Api;
use modelgate_tests::harness::{
    crds_exclusive, eventually, helm_ok, install_crds, kubectl_ok, repo_root, with_temp_ns,
};

fn chart() -> String {
    repo_root().join("charts/modelgate").to_string_lossy().into_owned()
}

#[tokio::test]
async fn chart_lints_installs_and_uninstalls_keeping_crds() -> anyhow::Result<()> {
    let _exclusive = crds_exclusive().await;
    helm_ok(&["lint", "--strict", &chart()])?;

    with_temp_ns("chart", |client, ns| async move {
        // The chart owns the CRDs; remove the copies other tests applied with kubectl.
        let crds = repo_root().join("crds");
        kubectl_ok(&["delete", "-f", crds.to_str().unwrap(), "--ignore-not-found", "--wait=true"], None)?;

        let release = format!("mg-{ns}");
        helm_ok(&["install", &release, &chart(), "-n", &ns, "--wait", "--timeout", "120s"])?;

        for crd in ["modelreleases.modelgate.dev", "modelrepositories.modelgate.dev"] {
            let keep = kubectl_ok(
                &["get", "crd", crd, "-o", "jsonpath={.metadata.annotations.helm\\.sh/resource-policy}"],
                None,
            )?;
            assert_eq!(keep, "keep", "{crd} lacks helm.sh/resource-policy: keep");
        }

        // The operator Deployment is available (its pod runs on the simulated node) and
        // hardened as the values promise.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let d = eventually("operator deployment available", Duration::from_secs(60), || async {
            let d = deployments.get(&format!("{release}-modelgate")).await?;
            Ok((d.status.as_ref().and_then(|s| s.available_replicas) == Some(1)).then_some(d))
        })
        .await?;
        let pod = d.spec.template.spec.unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), vec!["ALL".to_string()]);
        let resources = pod.containers[0].resources.clone().unwrap();
        assert!(resources.limits.is_some() && resources.requests.is_some());

        // Least privilege: no wildcards, no Secrets, status written only via its subresource.
        let role = Api::<ClusterRole>::all(client.clone()).get(&format!("{release}-modelgate")).await?;
        for rule in role.rules.unwrap_or_default() {
            let all = [
                rule.verbs.clone(),
                rule.resources.clone().unwrap_or_default(),
                rule.api_groups.clone().unwrap_or_default(),
            ]
            .concat();
            assert!(!all.iter().any(|s| s == "*"), "wildcard in {rule:?}");
            assert!(
                !rule.resources.clone().unwrap_or_default().iter().any(|r| r == "secrets"),
                "secret access in {rule:?}"
            );
            assert!(!rule.verbs.iter().any(|v| matches!(v.as_str(), "deletecollection" | "update")), "{rule:?}");
            let resources = rule.resources.clone().unwrap_or_default();
            if rule.verbs.iter().any(|v| v == "delete") {
                // Only old revisions' workloads are ever deleted.
                assert_eq!(resources, ["replicasets"], "{rule:?}");
            }
            if rule.verbs.iter().any(|v| matches!(v.as_str(), "patch" | "create")) {
                // Writes: status subresources, the trust-state ConfigMaps, Events, and
                // what a release runs (its ReplicaSets, their scale, its Service).
                let ok = |r: &String| {
                    r.ends_with("/status")
                        || ["configmaps", "events", "replicasets", "replicasets/scale", "services"]
                            .contains(&r.as_str())
                };
                assert!(resources.iter().all(ok), "write beyond status, trust state, events and workloads: {rule:?}");
            }
            assert!(
                !resources.iter().any(|r| r == "pods")
                    || rule.verbs.iter().all(|v| matches!(v.as_str(), "get" | "list" | "watch")),
                "pods are only watched: {rule:?}"
            );
            // The user's specs are never written.
            if rule
                .resources
                .clone()
                .unwrap_or_default()
                .iter()
                .any(|r| r == "modelreleases" || r == "modelrepositories")
            {
                assert!(rule.verbs.iter().all(|v| matches!(v.as_str(), "get" | "list" | "watch")), "{rule:?}");
            }
        }

        // The chart's RBAC is enough: the operator, run with only the chart's
        // ServiceAccount token, trusts a repository and admits a release.
        operator_works_with_the_chart_identity(&client, &ns, &release).await?;

        helm_ok(&["uninstall", &release, "-n", &ns, "--wait"])?;
        let names = kubectl_ok(&["get", "crd", "-o", "name"], None)?;
        assert!(names.contains("modelreleases.modelgate.dev"), "helm uninstall deleted the CRDs: {names}");
        Ok(())
    })
    .await?;
    // Hand the CRDs back to kubectl for the other tests.
    install_crds()
}

#[tokio::test]
async fn namespaced_install_renders_a_role_and_watches_one_namespace() -> anyhow::Result<()> {
    let out = helm_ok(&[
        "template",
        "mg",
        &chart(),
        "-n",
        "team-a",
        "--set",
        "rbac.clusterWide=false",
        "--set",
        "crds.install=false",
    ])?;
    assert!(out.contains("kind: Role\n") && out.contains("kind: RoleBinding"), "{out}");
    assert!(!out.contains("kind: ClusterRole"), "{out}");
    assert!(out.contains("MODELGATE_NAMESPACE"), "{out}");
    assert!(!out.contains("CustomResourceDefinition"), "crds.install=false still renders CRDs");
    Ok(())
}

async fn operator_works_with_the_chart_identity(client: &kube::Client, ns: &str, release: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::PostParams;
    use modelgate::api::{ModelRelease, ModelRepository};
    use modelgate_tests::{
        harness::{Operator, token_kubeconfig},
        tuf::{Server, scenarios},
    };
    use serde_json::json;

    let root = scenarios()?;
    let server = Server::https(root)?;
    let work = tempfile::tempdir()?;
    let token = kubectl_ok(&["create", "token", &format!("{release}-modelgate"), "-n", ns], None)?;
    let kubeconfig = token_kubeconfig(&token, work.path())?;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let pinned = std::fs::read_to_string(root.join("ok_basic/root.json"))?;
    let ca = std::fs::read_to_string(server.ca.as_ref().unwrap())?;
    for (name, key, value) in [("root", "root.json", pinned), ("ca", "ca.crt", ca)] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}, "data": {key: value}}))?,
        )
        .await?;
    }
    let repos: Api<ModelRepository> = Api::namespaced(client.clone(), ns);
    repos
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRepository", "metadata": {"name": "ml"},
            "spec": {"metadataUrl": server.url("ok_basic/phase1/metadata/"), "targetsUrl": server.url("ok_basic/phase1/targets/"),
                     "trustedRoot": {"configMapRef": {"name": "root", "key": "root.json"}},
                     "caBundle": {"configMapRef": {"name": "ca", "key": "ca.crt"}}}
        }))?)
        .await?;
    let releases: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    releases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRelease", "metadata": {"name": "fraud"},
                "spec": {"repositoryRef": {"name": "ml"}, "model": {"target": "fraud/1.0/model.onnx"},
                         "template": {"spec": {"containers": [{"name": "s", "image": "s:1"}]}}}
            }))?,
        )
        .await?;

    let operator = Operator::start_as(Some(ns), &[], Some(&kubeconfig))?;
    let trusted = |c: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], t: &str| {
        c.iter().any(|c| c.type_ == t && c.status == "True")
    };
    eventually(
        "the repository Trusted and the release Accepted, as the chart's ServiceAccount",
        Duration::from_secs(60),
        || async {
            let repo = repos.get("ml").await?;
            let rel = releases.get("fraud").await?;
            let ok = repo.status.is_some_and(|s| trusted(&s.conditions, "Trusted"))
                && rel.status.is_some_and(|s| trusted(&s.conditions, "Accepted"));
            Ok(ok.then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\noperator log:\n{}", operator.logs()))?;
    // The trust state ConfigMap was written, and nothing was forbidden on the way.
    cms.get("ml-trust-state").await?;
    let logs = operator.logs();
    assert!(!logs.contains("forbidden") && !logs.contains("Forbidden"), "RBAC denied something:\n{logs}");
    Ok(())
}

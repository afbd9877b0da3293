//! The Helm chart: lints, installs the operator image `tests/images` built onto the real
//! node (`helm install --wait`), holds least-privilege RBAC and hardened pod security,
//! hands leadership over when the leader pod goes, upgrades, and uninstalls without
//! deleting the CRDs or the users' releases.

use serde::Deserialize as _;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::{apps::v1::Deployment, rbac::v1::ClusterRole};
use kube::Api;
use modelgate_tests::harness::{
    crds_exclusive, eventually, helm_ok, install_crds, kubectl, kubectl_ok, repo_root, with_temp_ns,
};

fn chart() -> String {
    repo_root().join("charts/modelgate").to_string_lossy().into_owned()
}

/// Values for the test cluster's real node: the locally built image, never pulled.
fn node_values() -> String {
    repo_root().join("charts/modelgate/ci/test-node-values.yaml").to_string_lossy().into_owned()
}

/// `helm install` of the chart onto the real node, with `extra` arguments.
fn install_on_node(release: &str, ns: &str, extra: &[&str]) -> anyhow::Result<String> {
    let values = node_values();
    let chart = chart();
    helm_ok(&[&["install", release, chart.as_str(), "-n", ns, "-f", values.as_str()], extra].concat())
}

#[tokio::test]
async fn chart_lints_installs_and_uninstalls_keeping_crds() -> anyhow::Result<()> {
    let _exclusive = crds_exclusive().await;
    helm_ok(&["lint", "--strict", &chart()])?;
    // Every values file under ci/ lints and renders.
    for entry in std::fs::read_dir(repo_root().join("charts/modelgate/ci"))? {
        let values = entry?.path().to_string_lossy().into_owned();
        helm_ok(&["lint", "--strict", &chart(), "-f", &values])?;
        helm_ok(&["template", "ci", &chart(), "-f", &values])?;
    }
    // values.schema.json: a wrong type or value fails with the field named.
    for (set, field) in
        [("replicas=abc", "/replicas"), ("podSecurity=open", "/podSecurity"), ("logFormat=xml", "/logFormat")]
    {
        let out = modelgate_tests::harness::run_with_stdin("helm", &["template", "x", &chart(), "--set", set], None)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(field), "--set {set}: {stderr}");
    }
    // Shards: one Deployment and one Lease each, the namespaces split between them; a
    // namespace in two shards is refused with both names.
    let sharded = repo_root().join("charts/modelgate/ci/sharded-values.yaml").to_string_lossy().into_owned();
    let rendered = helm_ok(&["template", "mg", &chart(), "-f", &sharded])?;
    let deployments: Vec<Deployment> = serde_yaml::Deserializer::from_str(&rendered)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|v| v["kind"] == "Deployment")
        .map(serde_yaml::from_value)
        .collect::<Result<_, _>>()?;
    let env_of = |d: &Deployment, key: &str| {
        let containers = &d.spec.template.spec.as_ref().unwrap().containers;
        containers[0].env.iter().flatten().find(|e| e.name == key).and_then(|e| e.value.clone())
    };
    let shards: Vec<_> = deployments
        .iter()
        .map(|d| {
            (
                d.metadata.name.clone().unwrap(),
                env_of(d, "MODELGATE_NAMESPACE"),
                env_of(d, "MODELGATE_LEADER_ELECTION_NAME"),
            )
        })
        .collect();
    assert_eq!(
        shards,
        [
            ("mg-modelgate-a".into(), Some("team-a,team-b".into()), Some("modelgate-leader-a".into())),
            ("mg-modelgate-b".into(), Some("team-c".into()), Some("modelgate-leader-b".into())),
        ],
        "{rendered}"
    );
    // A disruption budget per shard: one over all shards would let a drain take every
    // replica of one shard.
    let budgets = helm_ok(&["template", "mg", &chart(), "-f", &sharded, "--set", "podDisruptionBudget.enabled=true"])?;
    let selectors: Vec<_> = serde_yaml::Deserializer::from_str(&budgets)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|v| v["kind"] == "PodDisruptionBudget")
        .map(|v| (v["metadata"]["name"].clone(), v["spec"]["selector"]["matchLabels"]["modelgate.dev/shard"].clone()))
        .collect();
    let want = |name: &str, shard: &str| (name.into(), serde_yaml::Value::from(shard));
    assert_eq!(selectors, [want("mg-modelgate-a", "a"), want("mg-modelgate-b", "b")], "{budgets}");
    let out = modelgate_tests::harness::run_with_stdin(
        "helm",
        &["template", "x", &chart(), "-f", &sharded, "--set", "shards[1].namespaces[0]=team-b"],
        None,
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(r#"namespace "team-b" is in shards "a" and "b""#), "{stderr}");
    // Labelled shards: each serves the namespaces labelled with its name, which the
    // ClusterRole lets it watch; mixing them with listed shards, or with namespaced
    // RBAC, is refused with what to write instead.
    let labelled = repo_root().join("charts/modelgate/ci/labelled-shards-values.yaml").to_string_lossy().into_owned();
    let rendered = helm_ok(&["template", "mg", &chart(), "-f", &labelled])?;
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .collect();
    let selectors: Vec<_> = docs
        .iter()
        .filter(|v| v["kind"] == "Deployment")
        .map(|v| serde_yaml::from_value::<Deployment>(v.clone()))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .map(|d| (env_of(d, "MODELGATE_NAMESPACE_SELECTOR"), env_of(d, "MODELGATE_NAMESPACE")))
        .collect();
    assert_eq!(
        selectors,
        [(Some("modelgate.dev/shard=a".into()), None), (Some("modelgate.dev/shard=b".into()), None)],
        "{rendered}"
    );
    let role = docs
        .iter()
        .find(|v| v["kind"] == "ClusterRole" && v["metadata"]["name"] == "mg-modelgate")
        .expect("the operator's ClusterRole");
    let watches_namespaces = role["rules"].as_sequence().into_iter().flatten().any(|rule| {
        rule["resources"].as_sequence().is_some_and(|r| r.iter().any(|r| r == "namespaces"))
            && rule["verbs"].as_sequence().is_some_and(|v| v.iter().any(|v| v == "watch"))
    });
    assert!(watches_namespaces, "{role:?}");
    // Of the operator's own role; cluster repositories' policies read namespace labels
    // through the `-cluster-trust` role.
    let listed = helm_ok(&["template", "mg", &chart()])?;
    let operator_role = serde_yaml::Deserializer::from_str(&listed)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .find(|v| v["kind"] == "ClusterRole" && v["metadata"]["name"] == "mg-modelgate")
        .expect("the operator's ClusterRole");
    let reads_namespaces = operator_role["rules"]
        .as_sequence()
        .into_iter()
        .flatten()
        .any(|rule| rule["resources"].as_sequence().is_some_and(|r| r.iter().any(|r| r == "namespaces")));
    assert!(!reads_namespaces, "only labelled shards may read namespaces: {operator_role:?}");
    for (set, message) in [
        (
            "shards[2].name=c,shards[2].namespaces[0]=team-c",
            "these shards list their namespaces: c; these do not: a, b.",
        ),
        ("rbac.clusterWide=false", "set rbac.clusterWide=true, or list each shard's namespaces"),
    ] {
        let args = ["template", "x", &chart(), "-f", &labelled, "--set", set];
        let out = modelgate_tests::harness::run_with_stdin("helm", &args, None)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(message), "--set {set}: {stderr}");
    }

    // crds.keep: false drops the keep annotation (and the install notes warn).
    let unkept = helm_ok(&["template", "x", &chart(), "--set", "crds.keep=false"])?;
    assert!(!unkept.contains("helm.sh/resource-policy"));

    with_temp_ns("chart", |client, ns| async move {
        // The chart owns the CRDs; remove the copies other tests applied with kubectl.
        let crds = repo_root().join("crds");
        kubectl_ok(&["delete", "-f", crds.to_str().unwrap(), "--ignore-not-found", "--wait=true"], None)?;

        let release = format!("mg-{ns}");
        modelgate_tests::node::require_images()?;
        // Two replicas with leader election, as the chart's defaults run it; `--wait`
        // returns once both pods are Ready (ready with zero releases).
        let started = std::time::Instant::now();
        // The workload guard on, for this namespace only (other tests run operators of
        // their own in this cluster).
        let guarded = format!("workloadGuard.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={ns}");
        let installed = install_on_node(
            &release,
            &ns,
            &[
                "--set",
                "replicas=2",
                "--set",
                "workloadGuard.enabled=true",
                "--set",
                &guarded,
                "--set",
                &format!("admission.namespaceSelector.matchLabels.modelgate\\.dev/admission-test={ns}"),
                "--wait",
                "--timeout",
                "120s",
            ],
        )?;
        eprintln!("helm install --wait: {:?}", started.elapsed());
        assert!(
            installed.contains("kubectl apply -f cluster-repository.yaml"),
            "NOTES.txt says what to apply next: {installed}"
        );

        for crd in ["modelreleases.modelgate.dev", "modelrepositories.modelgate.dev"] {
            let keep = kubectl_ok(
                &["get", "crd", crd, "-o", "jsonpath={.metadata.annotations.helm\\.sh/resource-policy}"],
                None,
            )?;
            assert_eq!(keep, "keep", "{crd} lacks helm.sh/resource-policy: keep");
        }

        // The operator Deployment is available on the real node and hardened as the values
        // promise.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let d = deployments.get(&format!("{release}-modelgate")).await?;
        assert_eq!(d.status.as_ref().and_then(|s| s.ready_replicas), Some(2), "{:?}", d.status);
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
                // Pods: only their serving label, which the admission policy enforces (below).
                let ok = |r: &String| {
                    r.ends_with("/status")
                        || ["configmaps", "events", "replicasets", "replicasets/scale", "services", "pods"]
                            .contains(&r.as_str())
                };
                assert!(resources.iter().all(ok), "write beyond status, trust state, events and workloads: {rule:?}");
            }
            assert!(
                !resources.iter().any(|r| r == "pods")
                    || rule.verbs.iter().all(|v| matches!(v.as_str(), "get" | "list" | "watch" | "patch")),
                "pods are only watched and labelled: {rule:?}"
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

        // The chart's RBAC is enough: the operator pods, with only the chart's
        // ServiceAccount, roll a model out on real pods, hand over when the leader pod
        // is deleted, and the next rollout completes under the new leader.
        operator_pods_release_and_hand_over(&client, &ns, &release).await?;

        // The admission webhook, served by the operator pods through the chart's Service
        // with the certificate they issued: a team's release the pod policy forbids is
        // refused at `kubectl apply`, the field named. (Judged only in a namespace
        // labelled for this test: the operator's own is never matched.)
        let team = format!("{ns}-team");
        kubectl_ok(&["create", "namespace", &team], None)?;
        kubectl_ok(&["label", "namespace", &team, &format!("modelgate.dev/admission-test={ns}")], None)?;
        let privileged = serde_json::json!({"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRelease",
            "metadata": {"name": "fraud", "namespace": team},
            "spec": {"repositoryRef": {"name": "fraud"}, "model": {"target": "fraud/1.0/model.onnx"},
                "template": {"spec": {"containers": [{"name": "server", "image": "i", "securityContext": {"privileged": true}}]}}}})
        .to_string();
        let said = eventually("the webhook refusing", Duration::from_secs(60), || async {
            let o = kubectl(&["apply", "-f", "-"], Some(&privileged))?;
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            Ok((!o.status.success() && stderr.contains("denied the request")).then_some(stderr))
        })
        .await?;
        assert!(said.contains("spec.template:") && said.contains("privileged"), "{said}");
        kubectl_ok(&["delete", "namespace", &team, "--wait=false"], None)?;

        // `patch pods` moves a pod in or out of service and nothing else: the chart's
        // admission policy refuses any other change the operator's identity makes.
        let pod = kubectl_ok(&["get", "pods", "-n", &ns, "-l", "modelgate.dev/release=fraud", "-o", "name"], None)?;
        let pod = pod.lines().next().context("a model pod")?.to_string();
        let operator = format!("system:serviceaccount:{ns}:{release}-modelgate");
        let as_operator = |args: &[&str]| {
            let mut all = vec!["--as", operator.as_str(), "-n", ns.as_str()];
            all.extend_from_slice(args);
            kubectl(&all, None)
        };
        let o = as_operator(&["label", &pod, "--overwrite", "modelgate.dev/serving=true"])?;
        assert!(o.status.success(), "the serving label is the operator's: {}", String::from_utf8_lossy(&o.stderr));
        for change in [
            vec!["label", &pod, "--overwrite", "modelgate.dev/release=other"],
            vec!["annotate", &pod, "--overwrite", "x=y"],
            vec!["label", &pod, "--overwrite", "modelgate.dev/serving=maybe"],
        ] {
            let o = as_operator(&change)?;
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success() && stderr.contains("modelgate may change only"), "{change:?}: {stderr}");
        }
        let image =
            serde_json::json!({"spec": {"containers": [{"name": "server", "image": "localhost/other:1"}]}}).to_string();
        let o = as_operator(&["patch", &pod, "-p", &image])?;
        assert!(!o.status.success(), "the operator cannot change what a pod runs");

        // A team with `edit` cannot put anything but modelgate's own workloads behind a
        // release (workloadGuard): not by relabelling, forging or editing.
        kubectl_ok(&["create", "rolebinding", "dev-edit", "-n", &ns, "--clusterrole", "edit", "--user", "dev@team"], None)?;
        let as_team = |args: &[&str], stdin: Option<&str>| {
            let mut all = vec!["--as", "dev@team", "-n", ns.as_str()];
            all.extend_from_slice(args);
            kubectl(&all, stdin)
        };
        let refused = |o: std::process::Output, says: &str, what: &str| {
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(!o.status.success() && stderr.contains(says), "{what}: {stderr}");
        };
        let o = as_team(&["annotate", &pod, "--overwrite", "team/note=ok"], None)?;
        assert!(o.status.success(), "annotating is the team's: {}", String::from_utf8_lossy(&o.stderr));
        refused(as_team(&["label", &pod, "--overwrite", "modelgate.dev/release=other"], None)?, "labels, owners", "relabel");
        let swap = r#"{"spec":{"initContainers":[{"name":"modelgate-fetch","image":"localhost/other:1"}]}}"#;
        refused(as_team(&["patch", &pod, "-p", swap], None)?, "labels, owners and spec", "fetch image swap");
        let rs = kubectl_ok(&["get", "rs", "-n", &ns, "-l", "modelgate.dev/release=fraud", "-o", "name"], None)?;
        let rs = rs.lines().next().context("a revision's ReplicaSet")?.to_string();
        let drift = r#"{"spec":{"template":{"metadata":{"annotations":{"team/drift":"x"}}}}}"#;
        refused(as_team(&["patch", &rs, "--type", "merge", "-p", drift], None)?, "only modelgate makes or changes", "template edit");
        let release_uid = kubectl_ok(&["get", "mr", "fraud", "-n", &ns, "-o", "jsonpath={.metadata.uid}"], None)?;
        let forged = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "fraud-forged", "ownerReferences": [{"apiVersion": "modelgate.dev/v1alpha1",
                "kind": "ModelRelease", "name": "fraud", "uid": release_uid.trim(), "controller": true}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "forged"}},
                     "template": {"metadata": {"labels": {"app": "forged"}},
                                  "spec": {"containers": [{"name": "s", "image": "localhost/other:1"}]}}}
        });
        refused(as_team(&["create", "-f", "-"], Some(&forged.to_string()))?, "only modelgate makes or changes", "forged owner");
        let impostor = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "impostor", "labels": {"modelgate.dev/release": "fraud", "modelgate.dev/serving": "true"}},
            "spec": {"containers": [{"name": "s", "image": "localhost/other:1"}]}
        });
        refused(as_team(&["create", "-f", "-"], Some(&impostor.to_string()))?, "only the ReplicaSets modelgate made", "impostor pod");
        // Nor through another controller: a Deployment's ReplicaSet is refused, so it
        // never gets a pod behind the release's Service.
        let deployment = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "lookalike"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"modelgate.dev/release": "fraud"}},
                     "template": {"metadata": {"labels": {"modelgate.dev/release": "fraud", "modelgate.dev/serving": "true"}},
                                  "spec": {"containers": [{"name": "s", "image": "localhost/other:1"}]}}}
        });
        let o = as_team(&["create", "-f", "-"], Some(&deployment.to_string()))?;
        assert!(o.status.success(), "a Deployment is the team's to make: {}", String::from_utf8_lossy(&o.stderr));
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let lookalikes = kubectl_ok(&["get", "rs,pods", "-n", &ns, "-l", "modelgate.dev/release=fraud", "-o", "name"], None)?;
        assert!(!lookalikes.contains("lookalike"), "the Deployment's ReplicaSet and pods never exist: {lookalikes}");

        // An upgrade to two replicas with a disruption budget, and a change that reaches
        // the CRDs (a label, standing in for a new schema): Helm applies both, because
        // the chart renders its CRDs as templates rather than from Helm's never-upgraded
        // crds/ directory.
        helm_ok(&[
            "upgrade",
            &release,
            &chart(),
            "-n",
            &ns,
            "--wait",
            "--timeout",
            "120s",
            "-f",
            &node_values(),
            "--set",
            "replicas=2",
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set-string",
            "commonLabels.upgraded=yes",
        ])?;
        let d = deployments.get(&format!("{release}-modelgate")).await?;
        assert_eq!(d.spec.replicas, Some(2));
        kubectl_ok(&["get", "pdb", &format!("{release}-modelgate"), "-n", &ns], None)?;
        let label = kubectl_ok(
            &["get", "crd", "modelreleases.modelgate.dev", "-o", "jsonpath={.metadata.labels.upgraded}"],
            None,
        )?;
        assert_eq!(label, "yes", "helm upgrade did not update the CRDs");

        // Uninstall keeps the CRDs and the users' releases.
        helm_ok(&["uninstall", &release, "-n", &ns, "--wait"])?;
        let names = kubectl_ok(&["get", "crd", "-o", "name"], None)?;
        assert!(names.contains("modelreleases.modelgate.dev"), "helm uninstall deleted the CRDs: {names}");
        let left = kubectl_ok(&["get", "modelreleases", "-n", &ns, "-o", "name"], None)?;
        assert!(left.contains("modelrelease.modelgate.dev/fraud"), "helm uninstall deleted a release: {left}");
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
    // People's roles (modelgate-edit, -view) are ClusterRoles to aggregate; nothing
    // binds the operator to one.
    assert!(!out.contains("kind: ClusterRoleBinding"), "{out}");
    assert!(!out.contains("-cluster-trust"), "no cluster repositories in a namespaced install: {out}");
    assert!(out.contains("name: MODELGATE_CLUSTER_REPOSITORIES\n              value: \"false\""), "{out}");
    assert!(out.contains("MODELGATE_NAMESPACE"), "{out}");
    assert!(!out.contains("CustomResourceDefinition"), "crds.install=false still renders CRDs");
    Ok(())
}

async fn operator_pods_release_and_hand_over(client: &kube::Client, ns: &str, release: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::{
        coordination::v1::Lease,
        core::v1::{ConfigMap, Pod},
    };
    use kube::api::{DeleteParams, ListParams, PostParams};
    use modelgate::api::{ANNOTATION_PROMOTE, ModelRelease, Phase};
    use modelgate_tests::{
        models::{ModelRepo, command, set_target, wait_phase, wait_stable},
        node,
    };
    use serde_json::json;

    let repo = ModelRepo::for_pods("fraud", &["1.0", "2.0"])?;
    repo.register(client, ns).await?;
    let releases: Api<ModelRelease> = Api::namespaced(client.clone(), ns);
    let spec = json!({"strategy": {"steps": [{"setWeight": 50}, {"pause": {}}]}, "service": {"port": 8080}});
    releases.create(&PostParams::default(), &node::release("fraud", "fraud/1.0/model.onnx", 2, spec)?).await?;
    let wait = Duration::from_secs(120);
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let holder = || async {
        let lease = leases.get_opt("modelgate-leader").await?;
        anyhow::Ok(lease.and_then(|l| l.spec?.holder_identity))
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let operator_pods = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    let logs = || async {
        let mut all = String::new();
        for pod in pods.list(&operator_pods).await?.items {
            let name = pod.metadata.name.unwrap_or_default();
            all += &kubectl_ok(&["logs", &name, "-n", ns], None).unwrap_or_default();
        }
        anyhow::Ok(all)
    };
    let rollout = async {
        wait_phase(&releases, "fraud", Phase::Promoted, wait).await?;
        let leader = holder().await?.context("a leader holds the Lease")?;
        // The leader pod goes (a node drain, a rolling update): the other replica takes
        // over and the next rollout completes.
        let gone = std::time::Instant::now();
        pods.delete(&leader, &DeleteParams::default()).await?;
        let next = eventually("a new leader", Duration::from_secs(60), || async {
            Ok(holder().await?.filter(|h| *h != leader))
        })
        .await?;
        let handover = gone.elapsed();
        eprintln!("leader {leader} deleted; {next} leads after {handover:?}");
        // The leaving leader gives the Lease up on SIGTERM: no waiting out its 15 s.
        assert!(handover < Duration::from_secs(5), "handover took {handover:?}");
        set_target(&releases, "fraud", "fraud/2.0/model.onnx").await?;
        wait_phase(&releases, "fraud", Phase::Paused, wait).await?;
        command(&releases, "fraud", ANNOTATION_PROMOTE, "1").await?;
        wait_stable(&releases, "fraud", 2, wait).await
    };
    rollout.await.map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // The trust state ConfigMap was written, and nothing was forbidden on the way.
    Api::<ConfigMap>::namespaced(client.clone(), ns).get("ml-models-trust-state").await?;
    let logs = logs().await?;
    assert!(logs.contains("leader election won"), "{logs}");
    assert!(!logs.contains("forbidden") && !logs.contains("Forbidden"), "RBAC denied something:\n{logs}");
    Ok(())
}

#[tokio::test]
async fn a_namespaced_install_holds_rights_only_in_its_namespaces() -> anyhow::Result<()> {
    let _crds = modelgate_tests::harness::crds_shared().await?;
    with_temp_ns("chart-scope", |_client, ns| async move {
        with_temp_ns("chart-team-a", |_client, team_a| async move {
            with_temp_ns("chart-team-b", |_client, team_b| async move {
                let release = format!("mg-{ns}");
                let namespaces = format!("rbac.namespaces={{{team_a},{team_b}}}");
                install_on_node(
                    &release,
                    &ns,
                    &["--set", "crds.install=false", "--set", "rbac.clusterWide=false", "--set", &namespaces],
                )?;
                let sa = format!("system:serviceaccount:{ns}:{release}-modelgate");
                let can = |verb: &str, resource: &str, namespace: &str| {
                    let out = modelgate_tests::harness::kubectl(
                        &["auth", "can-i", verb, resource, "-n", namespace, "--as", &sa],
                        None,
                    )?;
                    anyhow::Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
                };
                for (verb, resource) in [("create", "replicasets"), ("patch", "configmaps"), ("create", "services")] {
                    assert!(can(verb, resource, &team_a)?, "{verb} {resource} in {team_a}");
                    assert!(can(verb, resource, &team_b)?, "{verb} {resource} in {team_b}");
                    assert!(!can(verb, resource, "kube-system")?, "{verb} {resource} in kube-system");
                    assert!(!can(verb, resource, "default")?, "{verb} {resource} in default");
                }
                assert!(!can("list", "modelreleases.modelgate.dev", "kube-system")?);
                // Beyond them, only the API server's addresses, read so gates avoid them.
                assert!(can("watch", "endpointslices.discovery.k8s.io", "default")?);
                assert!(!can("create", "endpointslices.discovery.k8s.io", "default")?);
                // The operator is told exactly those namespaces.
                let env = kubectl_ok(
                    &[
                        "get",
                        "deploy",
                        &format!("{release}-modelgate"),
                        "-n",
                        &ns,
                        "-o",
                        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"MODELGATE_NAMESPACE\")].value}",
                    ],
                    None,
                )?;
                assert_eq!(env, format!("{team_a},{team_b}"));
                helm_ok(&["uninstall", &release, "-n", &ns])?;
                Ok(())
            })
            .await
        })
        .await
    })
    .await
}

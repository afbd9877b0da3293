//! Invalid ModelReleases and ModelRepositories are rejected by `kubectl apply` against the
//! real API server (schema and CEL rules in the CRDs), each with a message naming the
//! field; a valid one is accepted with its defaults filled in.

use modelgate_tests::harness::{crds_shared, kubectl, kubectl_ok, repo_root, with_temp_ns};
use serde_json::{Value, json};

fn release() -> Value {
    json!({
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRelease",
        "metadata": {"name": "fraud-detector"},
        "spec": {
            "repositoryRef": {"name": "ml-models"},
            "model": {"target": "fraud-detector/2.4.0/model.onnx"},
            "replicas": 4,
            "template": {"spec": {"containers": [{"name": "server", "image": "registry.local/onnx-server:1"}]}},
            "strategy": {"steps": [{"setWeight": 10}, {"pause": {"duration": "2m"}}, {"setWeight": 50}, {"pause": {}}]},
            "gates": {"interval": "30s", "failureLimit": 2, "checks": [
                {"name": "error-rate", "prometheus": {"address": "http://prometheus.monitoring:9090", "query": "sum(rate(errors[1m]))", "max": 0.01}},
                {"name": "golden", "webhook": {"url": "https://evaluator.fraud/check", "timeout": "10s"}}
            ]},
            "rollback": {"automatic": true, "postPromotionWindow": "10m", "onRevocation": "Rollback"}
        }
    })
}

fn repository() -> Value {
    json!({
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRepository",
        "metadata": {"name": "ml-models"},
        "spec": {
            "metadataUrl": "https://tuf.example.com/metadata/",
            "targetsUrl": "https://tuf.example.com/targets/",
            "trustedRoot": {"configMapRef": {"name": "ml-models-root", "key": "root.json"}},
            "refreshInterval": "5m"
        }
    })
}

/// Sets `value` at a JSON pointer (creating objects on the way); `Value::Null` removes it.
fn with(mut doc: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut node = &mut doc;
    for part in parent.split('/').skip(1) {
        node = match node {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
            other => other.as_object_mut().unwrap().entry(part).or_insert(json!({})),
        };
    }
    match (node, value) {
        (Value::Object(map), Value::Null) => {
            map.remove(key);
        }
        (Value::Object(map), v) => {
            map.insert(key.to_string(), v);
        }
        (Value::Array(items), v) => items[key.parse::<usize>().unwrap()] = v,
        _ => panic!("bad pointer {pointer}"),
    }
    doc
}

struct Case {
    name: &'static str,
    manifest: Value,
    /// Every fragment must appear in kubectl's error.
    expect: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let r = release;
    let repo = repository;
    vec![
        Case {
            name: "http repository metadata",
            manifest: with(repo(), "/spec/metadataUrl", json!("http://tuf.example.com/metadata/")),
            expect: &["spec.metadataUrl", "https://"],
        },
        Case {
            name: "http targets",
            manifest: with(repo(), "/spec/targetsUrl", json!("http://tuf.example.com/targets/")),
            expect: &["spec.targetsUrl", "https://"],
        },
        Case {
            name: "repository url without host",
            manifest: with(repo(), "/spec/metadataUrl", json!("https:///metadata")),
            expect: &["spec.metadataUrl", "with a host"],
        },
        Case {
            name: "refresh too often",
            manifest: with(repo(), "/spec/refreshInterval", json!("1s")),
            expect: &["spec.refreshInterval", "between 10s and 24h"],
        },
        Case {
            name: "a provenance policy that accepts no signer",
            manifest: with(repo(), "/spec/provenance", json!({"certificates": []})),
            expect: &["spec.provenance", "needs publicKeys or certificates"],
        },
        Case {
            name: "a signing CA for no identity",
            manifest: with(
                repo(),
                "/spec/provenance",
                json!({"certificates": [{"caBundle": {"configMapRef": {"name": "ca", "key": "ca.pem"}}, "identities": []}]}),
            ),
            expect: &["spec.provenance.certificates[0].identities"],
        },
        Case {
            name: "an image registry given as a URL",
            manifest: with(repo(), "/spec/images", json!({"registries": ["https://registry.example.com/models"]})),
            expect: &["spec.images.registries", "no scheme"],
        },
        Case {
            name: "an image policy that lists no registry",
            manifest: with(repo(), "/spec/images", json!({"registries": []})),
            expect: &["spec.images.registries"],
        },
        Case {
            name: "refresh not a duration",
            manifest: with(repo(), "/spec/refreshInterval", json!("five minutes")),
            expect: &["spec.refreshInterval", "duration such as"],
        },
        Case {
            name: "root configmap name invalid",
            manifest: with(repo(), "/spec/trustedRoot/configMapRef/name", json!("Root_CM")),
            expect: &["spec.trustedRoot.configMapRef.name", "ConfigMap name"],
        },
        Case {
            name: "root missing",
            manifest: with(repo(), "/spec/trustedRoot", Value::Null),
            expect: &["spec.trustedRoot", "Required value"],
        },
        Case {
            name: "weight over 100",
            manifest: with(r(), "/spec/strategy/steps/0/setWeight", json!(150)),
            expect: &["spec.strategy.steps[0].setWeight", "100"],
        },
        Case {
            name: "weight negative",
            manifest: with(r(), "/spec/strategy/steps/0/setWeight", json!(-5)),
            expect: &["spec.strategy.steps[0].setWeight", "0"],
        },
        Case {
            name: "weights decrease",
            manifest: with(r(), "/spec/strategy/steps/2/setWeight", json!(5)),
            expect: &["spec.strategy.steps", "must not decrease"],
        },
        Case {
            name: "step with both actions",
            manifest: with(r(), "/spec/strategy/steps/0/pause", json!({"duration": "1m"})),
            expect: &["spec.strategy.steps[0]", "exactly one of setWeight or pause"],
        },
        Case {
            name: "empty step",
            manifest: with(r(), "/spec/strategy/steps/0", json!({})),
            expect: &["spec.strategy.steps[0]", "exactly one of setWeight or pause"],
        },
        Case {
            name: "pause malformed",
            manifest: with(r(), "/spec/strategy/steps/1/pause/duration", json!("2 minutes")),
            expect: &["spec.strategy.steps[1].pause.duration", "duration such as"],
        },
        Case {
            name: "pause zero",
            manifest: with(r(), "/spec/strategy/steps/1/pause/duration", json!("0s")),
            expect: &["spec.strategy.steps[1].pause.duration", "between 1s and 168h"],
        },
        Case {
            name: "failureLimit zero",
            manifest: with(r(), "/spec/gates/failureLimit", json!(0)),
            expect: &["spec.gates.failureLimit", "1"],
        },
        Case {
            name: "gate interval negative",
            manifest: with(r(), "/spec/gates/interval", json!("-30s")),
            expect: &["spec.gates.interval", "duration such as"],
        },
        Case {
            name: "target empty",
            manifest: with(r(), "/spec/model/target", json!("")),
            expect: &["spec.model.target"],
        },
        Case {
            name: "target absolute",
            manifest: with(r(), "/spec/model/target", json!("/etc/passwd")),
            expect: &["spec.model.target", "leading '/'"],
        },
        Case {
            name: "target escapes",
            manifest: with(r(), "/spec/model/target", json!("models/../../secret")),
            expect: &["spec.model.target", "'..'"],
        },
        Case {
            name: "target and prefix both",
            manifest: with(r(), "/spec/model/prefix", json!("llama/8b/")),
            expect: &["spec.model", "exactly one way"],
        },
        Case {
            name: "an analysis metric that does not tell canary from baseline",
            manifest: with(
                r(),
                "/spec/analysis",
                json!({"address": "https://prom:9090", "metrics": [{"name": "latency", "query": "sum(rate(t[1m]))"}]}),
            ),
            expect: &["spec.analysis.metrics[0].query", "{{revision}}"],
        },
        Case {
            name: "an analysis whose marginal score is above its pass score",
            manifest: with(
                r(),
                "/spec/analysis",
                json!({"address": "https://prom:9090", "passScore": 80, "marginalScore": 90,
                    "metrics": [{"name": "latency", "query": "t{role=\"{{revision}}\"}"}]}),
            ),
            expect: &["spec.analysis", "marginalScore must not be above"],
        },
        Case {
            name: "an analysis address with a query string",
            manifest: with(
                r(),
                "/spec/analysis",
                json!({"address": "https://prom:9090/x?next=/admin",
                    "metrics": [{"name": "latency", "query": "t{role=\"{{revision}}\"}"}]}),
            ),
            expect: &["spec.analysis.address", "base URL"],
        },
        Case {
            name: "target and image both",
            manifest: with(r(), "/spec/model/image", json!({"target": "llm/3.0.0/manifest.json"})),
            expect: &["spec.model", "exactly one way", "image (an OCI image"],
        },
        Case {
            name: "image target escapes",
            manifest: with(
                with(r(), "/spec/model/target", Value::Null),
                "/spec/model/image",
                json!({"target": "llm/../../manifest.json"}),
            ),
            expect: &["spec.model.image.target", "'..'"],
        },
        Case {
            name: "no model files",
            manifest: with(r(), "/spec/model/target", Value::Null),
            expect: &["spec.model", "exactly one way"],
        },
        Case {
            name: "prefix not a directory",
            manifest: with(with(r(), "/spec/model/target", Value::Null), "/spec/model/prefix", json!("llama/8b")),
            expect: &["spec.model.prefix", "ends with '/'"],
        },
        Case {
            name: "prefix escapes",
            manifest: with(with(r(), "/spec/model/target", Value::Null), "/spec/model/prefix", json!("llama/../../x/")),
            expect: &["spec.model.prefix", "'..'"],
        },
        Case {
            name: "targets with one name twice",
            manifest: with(
                with(r(), "/spec/model/target", Value::Null),
                "/spec/model/targets",
                json!(["a/weights.bin", "b/weights.bin"]),
            ),
            expect: &["spec.model.targets", "last segment"],
        },
        Case {
            name: "targets with a control character",
            manifest: with(with(r(), "/spec/model/target", Value::Null), "/spec/model/targets", json!(["a/w\n.bin"])),
            expect: &["spec.model.targets", "control characters"],
        },
        Case {
            name: "targets too many",
            manifest: with(
                with(r(), "/spec/model/target", Value::Null),
                "/spec/model/targets",
                json!((0..65).map(|i| format!("m/{i}.bin")).collect::<Vec<_>>()),
            ),
            expect: &["spec.model.targets", "64"],
        },
        Case {
            name: "mountPath relative",
            manifest: with(r(), "/spec/model/mountPath", json!("models")),
            expect: &["spec.model.mountPath", "absolute"],
        },
        Case {
            name: "replicas zero",
            manifest: with(r(), "/spec/replicas", json!(0)),
            expect: &["spec.replicas", "1"],
        },
        Case {
            name: "repositoryRef not a DNS label",
            manifest: with(r(), "/spec/repositoryRef/name", json!("ML_Models")),
            expect: &["spec.repositoryRef.name", "ModelRepository"],
        },
        Case {
            name: "gate check name invalid",
            manifest: with(r(), "/spec/gates/checks/0/name", json!("Error Rate")),
            expect: &["spec.gates.checks[0].name", "lowercase"],
        },
        Case {
            name: "duplicate gate check names",
            manifest: with(r(), "/spec/gates/checks/1/name", json!("error-rate")),
            expect: &["spec.gates.checks[1]", "Duplicate value"],
        },
        Case {
            name: "gate check with two providers",
            manifest: with(
                r(),
                "/spec/gates/checks/1/prometheus",
                json!({"address": "http://p:9090", "query": "up", "min": 1}),
            ),
            expect: &["spec.gates.checks[1]", "exactly one of prometheus or webhook"],
        },
        Case {
            name: "prometheus without bounds",
            manifest: with(r(), "/spec/gates/checks/0/prometheus/max", Value::Null),
            expect: &["spec.gates.checks[0].prometheus", "min, max or both"],
        },
        Case {
            name: "prometheus min above max",
            manifest: with(r(), "/spec/gates/checks/0/prometheus/min", json!(0.5)),
            expect: &["spec.gates.checks[0].prometheus", "min must not be greater than max"],
        },
        Case {
            name: "webhook over http",
            manifest: with(r(), "/spec/gates/checks/1/webhook/url", json!("http://evaluator.fraud/check")),
            expect: &["spec.gates.checks[1].webhook.url", "https://"],
        },
        Case {
            name: "unknown revocation action",
            manifest: with(r(), "/spec/rollback/onRevocation", json!("Ignore")),
            expect: &["spec.rollback.onRevocation", "Unsupported value"],
        },
        Case {
            name: "reserved template label",
            manifest: with(r(), "/spec/template/metadata", json!({"labels": {"modelgate.dev/revision": "9"}})),
            expect: &["spec.template", "reserved prefix modelgate.dev/"],
        },
        Case {
            name: "reserved template annotation",
            manifest: with(r(), "/spec/template/metadata", json!({"annotations": {"modelgate.dev/model-sha256": "0"}})),
            expect: &["spec.template", "annotations must not use the reserved prefix modelgate.dev/"],
        },
        Case {
            name: "arguments stuffed into a container",
            manifest: with(r(), "/spec/template/spec/containers/0/args", json!(vec!["--x"; 300])),
            expect: &["spec.template.spec.containers[0].args", "must have at most 256 items"],
        },
        Case {
            name: "an environment value of 20 KB",
            manifest: with(
                r(),
                "/spec/template/spec/containers/0/env",
                json!([{"name": "BLOB", "value": "x".repeat(20_000)}]),
            ),
            expect: &["spec.template.spec.containers[0].env[0].value", "may not be more than 16384 bytes"],
        },
        Case {
            name: "template without containers",
            manifest: with(r(), "/spec/template/spec/containers", Value::Null),
            expect: &["spec.template.spec.containers", "Required value"],
        },
        Case {
            name: "a duration too large to compute",
            manifest: with(r(), "/spec/rollback/postPromotionWindow", json!("99999999999999999999h")),
            expect: &["spec.rollback.postPromotionWindow", "duration such as 10m"],
        },
        Case {
            name: "post-promotion window past its maximum",
            manifest: with(r(), "/spec/rollback/postPromotionWindow", json!("200h")),
            expect: &["spec.rollback.postPromotionWindow", "at most 168h"],
        },
        Case {
            name: "gate interval below its floor",
            manifest: with(r(), "/spec/gates/interval", json!("1ms")),
            expect: &["spec.gates.interval", "between 5s and 1h"],
        },
        Case {
            name: "progress deadline past its maximum",
            manifest: with(r(), "/spec/gates/progressDeadline", json!("48h")),
            expect: &["spec.gates.progressDeadline", "between 10s and 24h"],
        },
        Case {
            name: "webhook timeout past its maximum",
            manifest: with(r(), "/spec/gates/checks/1/webhook/timeout", json!("5m")),
            expect: &["spec.gates.checks[1].webhook.timeout", "between 1s and 30s"],
        },
        Case {
            name: "query of blanks",
            manifest: with(r(), "/spec/gates/checks/0/prometheus/query", json!("   ")),
            expect: &["spec.gates.checks[0].prometheus.query", "not blanks"],
        },
        Case {
            name: "credentials in the prometheus address",
            manifest: with(r(), "/spec/gates/checks/0/prometheus/address", json!("https://u:p@prometheus:9090")),
            expect: &["spec.gates.checks[0].prometheus.address", "credentials"],
        },
        Case {
            name: "credentials in the webhook url",
            manifest: with(r(), "/spec/gates/checks/1/webhook/url", json!("https://u:p@evaluator.fraud/check")),
            expect: &["spec.gates.checks[1].webhook.url", "credentials"],
        },
        Case {
            name: "credentials in the repository url",
            manifest: with(repo(), "/spec/metadataUrl", json!("https://u:p@tuf.example.com/metadata/")),
            expect: &["spec.metadataUrl", "credentials"],
        },
        Case {
            name: "mountPath over the root",
            manifest: with(r(), "/spec/model/mountPath", json!("//")),
            expect: &["spec.model.mountPath", "plain absolute path"],
        },
        Case {
            name: "mountPath dot",
            manifest: with(r(), "/spec/model/mountPath", json!("/.")),
            expect: &["spec.model.mountPath", "plain absolute path"],
        },
        Case {
            name: "mountPath over /proc",
            manifest: with(r(), "/spec/model/mountPath", json!("/proc")),
            expect: &["spec.model.mountPath", "/proc"],
        },
        Case {
            name: "mountPath over the token",
            manifest: with(r(), "/spec/model/mountPath", json!("/var/run/secrets/kubernetes.io/serviceaccount")),
            expect: &["spec.model.mountPath", "ServiceAccount token"],
        },
        Case {
            name: "a target given as a URL",
            manifest: with(r(), "/spec/model/target", json!("https://tuf.example.com/targets/model.onnx")),
            expect: &["spec.model.target", "not a URL"],
        },
        Case {
            name: "dotted release name with a Service",
            manifest: with(with(r(), "/metadata/name", json!("fraud.v2")), "/spec/service", json!({"port": 8080})),
            expect: &["without '.'", "spec.service"],
        },
        Case {
            name: "repository named so no release can name it",
            manifest: with(repo(), "/metadata/name", json!("ml.models")),
            expect: &["metadata.name", "DNS label"],
        },
        Case {
            name: "repository name too long",
            manifest: with(repo(), "/metadata/name", json!("m".repeat(64))),
            expect: &["metadata.name", "at most 63 characters"],
        },
        Case {
            name: "empty container list",
            manifest: with(r(), "/spec/template/spec/containers", json!([])),
            expect: &["spec.template", "at least one"],
        },
        Case {
            name: "duplicate container names",
            manifest: with(
                r(),
                "/spec/template/spec/containers",
                json!([{"name": "server", "image": "a:1"}, {"name": "server", "image": "b:1"}]),
            ),
            expect: &["spec.template", "a name of its own"],
        },
        Case {
            name: "a container mounting the model volume",
            manifest: with(
                r(),
                "/spec/template/spec/containers/0/volumeMounts",
                json!([{"name": "modelgate-model", "mountPath": "/models"}]),
            ),
            expect: &["spec.template", "reserved"],
        },
        Case {
            name: "a Prometheus address that chooses the request path",
            manifest: with(
                r(),
                "/spec/gates",
                json!({"checks": [{"name": "p", "prometheus": {"address": "https://prom:9090/internal/admin?next=", "query": "up", "max": 1}}]}),
            ),
            expect: &["prometheus.address", "no '?' query"],
        },
        Case {
            name: "release name too long",
            manifest: with(r(), "/metadata/name", json!("a".repeat(60))),
            expect: &["metadata.name", "at most 52 characters"],
        },
    ]
}

#[tokio::test]
async fn invalid_manifests_are_rejected_by_kubectl_apply_with_the_field_named() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("validation", |_client, ns| async move {
        let cases = cases();
        assert!(cases.len() >= 15);
        let mut failures = Vec::new();
        for case in &cases {
            let yaml = serde_yaml::to_string(&case.manifest)?;
            let out = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&yaml))?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                failures.push(format!("{}: accepted, expected a rejection", case.name));
            } else if let Some(missing) = case.expect.iter().find(|f| !stderr.contains(*f)) {
                failures.push(format!("{}: error lacks {missing:?}: {stderr}", case.name));
            }
        }
        // Nothing was created by any rejected manifest.
        let left = kubectl_ok(&["get", "modelreleases,modelrepositories", "-n", &ns, "-o", "name"], None)?;
        assert!(left.trim().is_empty(), "rejected manifests left objects behind: {left}");
        assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn valid_manifests_are_accepted_and_defaulted() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("valid", |_client, ns| async move {
        for doc in [repository(), release()] {
            kubectl_ok(&["apply", "-n", &ns, "-f", "-"], Some(&serde_yaml::to_string(&doc)?))?;
        }
        // A minimal release gets the documented defaults from the schema.
        let minimal = json!({
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRelease", "metadata": {"name": "minimal"},
            "spec": {"repositoryRef": {"name": "ml-models"}, "model": {"target": "m/1/model.onnx"},
                     "template": {"spec": {"containers": [{"name": "s", "image": "s:1"}]}}}
        });
        kubectl_ok(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(&serde_yaml::to_string(&minimal)?))?;
        // A model shipped as an image, and a repository that lists where images come from.
        let mut image = minimal.clone();
        image["metadata"]["name"] = json!("image");
        image["spec"]["model"] = json!({"image": {"target": "llm/3.0.0/manifest.json"}});
        kubectl_ok(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(&serde_yaml::to_string(&image)?))?;
        let mut images = repository();
        images["metadata"]["name"] = json!("with-images");
        images["spec"]["images"] = json!({"registries": ["registry.example.com:5000/models", "registry.example.com"]});
        kubectl_ok(&["apply", "-n", &ns, "-f", "-"], Some(&serde_yaml::to_string(&images)?))?;
        let got: Value = serde_json::from_str(&kubectl_ok(&["get", "mr", "minimal", "-n", &ns, "-o", "json"], None)?)?;
        let spec = &got["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["model"]["mountPath"], "/models");
        assert_eq!(spec["gates"]["interval"], "30s");
        assert_eq!(spec["gates"]["failureLimit"], 2);
        assert_eq!(spec["rollback"]["automatic"], true);
        assert_eq!(spec["rollback"]["onRevocation"], "Rollback");
        // Short names and printer columns work.
        let table = kubectl_ok(&["get", "mr", "-n", &ns], None)?;
        for column in ["PHASE", "STABLE", "CANARY", "WEIGHT", "AGE"] {
            assert!(table.contains(column), "kubectl get mr lacks {column}: {table}");
        }
        let table = kubectl_ok(&["get", "mrepo", "-n", &ns], None)?;
        for column in ["TRUSTED", "ROOT", "TIMESTAMP-EXPIRES", "AGE"] {
            assert!(table.contains(column), "kubectl get mrepo lacks {column}: {table}");
        }
        let explain = kubectl_ok(&["explain", "modelrelease.spec.strategy"], None)?;
        assert!(explain.contains("setWeight") || explain.contains("steps"), "{explain}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn who_vouches_for_a_release_cannot_change_under_it() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("immutable", |_client, ns| async move {
        kubectl_ok(&["apply", "-n", &ns, "-f", "-"], Some(&serde_yaml::to_string(&release())?))?;
        let moved = with(release(), "/spec/repositoryRef/name", json!("other-models"));
        let out = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&serde_yaml::to_string(&moved)?))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a changed repositoryRef was accepted");
        assert!(stderr.contains("spec.repositoryRef cannot change"), "{stderr}");
        let kept =
            kubectl_ok(&["get", "mr", "fraud-detector", "-n", &ns, "-o", "jsonpath={.spec.repositoryRef.name}"], None)?;
        assert_eq!(kept, "ml-models");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_documented_examples_are_valid() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("examples", |_client, ns| async move {
        let dir = repo_root().join("docs/examples");
        let out = kubectl_ok(&["apply", "--dry-run=server", "-n", &ns, "-f", dir.to_str().unwrap()], None)?;
        assert!(out.contains("modelrelease.modelgate.dev/fraud-detector created (server dry run)"), "{out}");
        assert!(out.contains("modelrepository.modelgate.dev/ml-models created (server dry run)"), "{out}");
        assert!(out.contains("clustermodelrepository.modelgate.dev/ml-models created (server dry run)"), "{out}");
        Ok(())
    })
    .await
}

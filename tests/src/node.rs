//! The real node of the test cluster (`tests/cluster/node`): the images our scripts
//! build for it, and model releases whose pods really run there.

use std::process::Command;

use anyhow::{Context as _, bail};
use modelgate::api::{ANNOTATION_MODEL_SHA256, LABEL_REVISION, ModelRelease};
use serde_json::{Value, json};

/// The operator's image (`modelgate run`, `modelgate fetch`), built by `tests/images`.
pub const OPERATOR_IMAGE: &str = concat!("localhost/modelgate:", env!("CARGO_PKG_VERSION"));
/// The example model server's image (`tests/model-server`).
pub const SERVER_IMAGE: &str = concat!("localhost/modelgate-example-server:", env!("CARGO_PKG_VERSION"));

/// Fails with what to run when the node's containerd lacks our images (`tests/run` and
/// `tests/demo` build them; `tests/cluster/up` re-imports the last build).
pub fn require_images() -> anyhow::Result<()> {
    let cache = std::env::var("MODELGATE_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/modelgate", std::env::var("HOME").unwrap_or_default()));
    let state = std::env::var("MODELGATE_CLUSTER_DIR").unwrap_or_else(|_| format!("{cache}/cluster"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "\"$(ls -d {cache}/bin/node-*/ | tail -1)ctr\" --address {state}/node/containerd.sock -n k8s.io images ls -q"
        ))
        .output()
        .context("list the node's images")?;
    let listed = String::from_utf8_lossy(&out.stdout);
    for image in [OPERATOR_IMAGE, SERVER_IMAGE] {
        if !listed.lines().any(|l| l == image) {
            bail!("the test node has no {image}: run tests/images (tests/run does)");
        }
    }
    Ok(())
}

/// A ModelRelease whose `replicas` pods run the example model server on the real node,
/// with the model's digest and the revision passed in through the downward API and a
/// readiness probe; `spec` is merged over it.
pub fn release(name: &str, target: &str, replicas: i32, spec: Value) -> anyhow::Result<ModelRelease> {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"containers": [server_container()]}});
    crate::models::release(name, target, replicas, spec)
}

/// `release` of a model shipped as an OCI image: `manifest_target` is the TUF target of
/// its manifest; the node mounts the image at /models and the server reads it there.
pub fn image_release(name: &str, manifest_target: &str, replicas: i32, spec: Value) -> anyhow::Result<ModelRelease> {
    let mut spec = spec;
    spec["model"] = json!({"image": {"target": manifest_target}, "mountPath": "/models"});
    let mut container = server_container();
    container["args"] = json!(["serve", "--model", "/models", "--image"]);
    spec["template"] = json!({"spec": {"containers": [container]}});
    crate::models::release(name, "", replicas, spec)
}

/// The example model server's container, hardened as Pod Security `restricted` asks.
pub fn server_container() -> Value {
    json!({
        "name": "server",
        "image": SERVER_IMAGE,
        "imagePullPolicy": "Never",
        "args": ["serve", "--model", "/models/model.onnx"],
        "env": [
            {"name": "MODEL_SHA256", "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{ANNOTATION_MODEL_SHA256}']")}}},
            {"name": "REVISION", "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.labels['{LABEL_REVISION}']")}}},
        ],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}

/// PromQL for the prometheus gate: the canary's share of 5xx answers minus the stable's,
/// over the last 30 s (`{{canary}}`, `{{stable}}` and `{{release}}` are filled in by
/// modelgate). No canary traffic yet gives no value: inconclusive, never a pass.
pub const ERROR_RATIO_VS_STABLE: &str = "\
(sum(rate(model_requests_total{release=\"{{release}}\",revision=\"{{canary}}\",code=~\"5..\"}[30s])) or vector(0))
  / sum(rate(model_requests_total{release=\"{{release}}\",revision=\"{{canary}}\"}[30s]))
- (
(sum(rate(model_requests_total{release=\"{{release}}\",revision=\"{{stable}}\",code=~\"5..\"}[30s])) or vector(0))
  / sum(rate(model_requests_total{release=\"{{release}}\",revision=\"{{stable}}\"}[30s]))
)";

/// PromQL for the judge: the mean time to answer a prediction of the pods of one role
/// (`{{revision}}`: canary, baseline), over the last 10 s.
pub const LATENCY_BY_ROLE: &str = "\
sum(rate(model_request_duration_seconds_sum{release=\"{{release}}\",role=\"{{revision}}\"}[10s]))
  / sum(rate(model_request_duration_seconds_count{release=\"{{release}}\",role=\"{{revision}}\"}[10s]))";

/// PromQL for the judge: the share of 5xx answers of the pods of one role, over the last
/// 10 s (zero, not no data, while there are none).
pub const ERRORS_BY_ROLE: &str = "\
(sum(rate(model_requests_total{release=\"{{release}}\",role=\"{{revision}}\",code=~\"5..\"}[10s])) or vector(0))
  / sum(rate(model_requests_total{release=\"{{release}}\",role=\"{{revision}}\"}[10s]))";

/// The spec of a release judged on real traffic: a 50% step beside baseline pods, the
/// judge every `interval` on latency and errors (both critical: +10% latency or any
/// surely-there rise in errors fails), and the demo's threshold gate (the canary's error
/// ratio at most 0.05 above the stable's) beside it.
pub fn judged_spec(prometheus: &str, interval: &str) -> Value {
    json!({
        "service": {"port": 8080},
        "strategy": {"steps": [{"setWeight": 50}, {"pause": {"duration": "10s"}}]},
        "gates": {"interval": interval, "checks": [{
            "name": "error-ratio",
            "prometheus": {"address": prometheus, "query": ERROR_RATIO_VS_STABLE, "max": 0.05},
        }]},
        "analysis": {
            "baseline": true,
            "address": prometheus,
            "step": "2s",
            "metrics": [
                {"name": "latency", "query": LATENCY_BY_ROLE, "direction": "Increase", "allowedChange": 0.1, "critical": true},
                {"name": "errors", "query": ERRORS_BY_ROLE, "direction": "Increase", "allowedChange": 0.1, "critical": true},
            ],
        },
    })
}

/// The example load generator (`model-server load`) sending predictions to a release's
/// Service from this machine, as its users would; bounded by rate and duration.
pub struct Load {
    child: tokio::process::Child,
}

impl Load {
    pub async fn start(client: &kube::Client, ns: &str, service: &str, rps: u32, seconds: u64) -> anyhow::Result<Self> {
        let svc = kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns).get(service).await?;
        let ip = svc.spec.and_then(|s| s.cluster_ip).context("the release's Service has a ClusterIP")?;
        let child = tokio::process::Command::new(crate::harness::cargo_bin("model-server"))
            .args(["load", "--url", &format!("http://{ip}:8080/predict")])
            .args(["--rps", &rps.to_string(), "--seconds", &seconds.to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start model-server load")?;
        Ok(Self { child })
    }

    /// Stops the load and returns its summary (status codes and counts so far).
    pub async fn stop(self) -> anyhow::Result<String> {
        if let Some(pid) = self.child.id() {
            Command::new("kill").args(["-INT", &pid.to_string()]).status()?;
        }
        let out = self.child.wait_with_output().await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

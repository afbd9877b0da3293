//! Models shipped as OCI images, on the real node: the TUF target is the image's
//! manifest, the node pulls the image by that digest from the test cluster's registry
//! (CNCF Distribution, over TLS) and mounts it read-only into the serving pods.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use modelgate::api::{ANNOTATION_MODEL_SHA256, HistoryEntry, LABEL_RELEASE, LABEL_REVISION, ModelRelease, Outcome};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, pod_ready, with_temp_ns},
    images::{self, ModelImage},
    models::{ModelRepo, set_image_target, wait_history},
    node::{self, OPERATOR_IMAGE},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(150);

/// A model of two files, the first carrying the example server's behaviour header.
fn model_files(version: &str, behaviour: &str) -> Vec<(&'static str, Vec<u8>)> {
    let header = if behaviour.is_empty() { String::new() } else { format!("modelgate-example-model\n{behaviour}\n\n") };
    let weights = format!("weights of llm {version}\n").into_bytes().repeat(64 * 1024);
    vec![("config.json", format!("{header}{{\"version\": \"{version}\"}}\n").into_bytes()), ("weights.bin", weights)]
}

fn reference(image: &ModelImage) -> String {
    format!("{}@{}", image.repository, image.digest)
}

/// 1.0.0 is released to 4 replicas on the one real node: each blob is pulled once. A tag
/// moved to other bytes changes nothing; a crashing image, a digest the registry lacks
/// and a registry the repository does not list each leave 1.0.0 serving; 3.0.0 is
/// promoted, then revoked in TUF, and the rollback to 1.0.0 pulls nothing.
#[tokio::test]
async fn an_image_model_is_pulled_once_per_node_by_its_signed_digest_and_rolls_back() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("images", |client, ns| async move {
        node::require_images()?;
        let registry = images::registry()?;
        let path = format!("models/{ns}/llm");
        let v1 = images::push(&path, "1.0.0", &model_files("1.0.0", "")).await?;
        let v2 = images::push(&path, "2.0.0", &model_files("2.0.0", "exit=1")).await?;
        let v3 = images::push(&path, "3.0.0", &model_files("3.0.0", "")).await?;
        // A manifest never pushed: its digest is unknown to the registry.
        let mut unknown: serde_json::Value = serde_json::from_slice(&v1.manifest)?;
        unknown["annotations"] = json!({"modelgate.test/never-pushed": "true"});
        let unknown = serde_json::to_vec(&unknown)?;

        let mut repo = ModelRepo::for_pods("fraud", &["1.0.0"])?;
        repo.add_image("llm/1.0.0/manifest.json", &v1.manifest, &v1.repository)?;
        repo.add_image("llm/2.0.0/manifest.json", &v2.manifest, &v2.repository)?;
        repo.add_image("llm/3.0.0/manifest.json", &v3.manifest, &v3.repository)?;
        repo.add_image("llm/9.0.0/manifest.json", &unknown, &v1.repository)?;
        repo.add_image("llm/4.0.0/manifest.json", &v3.manifest, "registry.other.example/models/llm")?;
        // A CNCF ModelPack artifact: containerd 2.4 would mount it as an empty directory.
        let modelpack = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
            "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": v1.layers[0], "size": 1},
            "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": v1.layers[0], "size": 1}],
        });
        repo.add_image("llm/5.0.0/manifest.json", &serde_json::to_vec(&modelpack)?, &v1.repository)?;
        repo.register_with(&client, &ns, json!({"images": {"registries": [format!("{registry}/models")]}})).await?;
        let operator = Operator::start(Some(&ns), &["--fetch-image", OPERATOR_IMAGE])?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let spec = json!({"gates": {"progressDeadline": "40s"}});
        api.create(&PostParams::default(), &node::image_release("llm", "llm/1.0.0/manifest.json", 4, spec)?).await?;

        let result = async {
            let first = wait_outcome(&api, "llm/1.0.0/manifest.json", Outcome::Promoted).await?;
            assert_eq!(first.revision.image.as_deref(), Some(reference(&v1).as_str()), "status names the image");
            assert_eq!(first.revision.sha256.as_deref(), v1.digest.strip_prefix("sha256:"));
            let pods = serving(&client, &ns, first.revision.number, 4).await?;
            for pod in &pods {
                assert_eq!(mounted(pod), Some(reference(&v1)), "the pod mounts the image by its digest");
                let annotations = pod.metadata.annotations.clone().unwrap_or_default();
                assert_eq!(
                    annotations.get(ANNOTATION_MODEL_SHA256).map(String::as_str),
                    v1.digest.strip_prefix("sha256:")
                );
            }
            for layer in &v1.layers {
                assert_eq!(images::blob_downloads(&path, layer)?, 1, "4 replicas on one node pull {layer} once");
            }
            // What an SRE sees: the image beside the revision.
            let status = plugin(&ns, &["status", "llm"])?;
            assert!(status.contains(&format!("image {}", reference(&v1))), "{status}");

            // The tag moves to other bytes: a pod made again still mounts 1.0.0's digest.
            let moved = images::push(&path, "1.0.0", &model_files("1.0.0-moved", "")).await?;
            assert_ne!(moved.digest, v1.digest);
            let victim = pods.first().and_then(|p| p.metadata.name.clone()).unwrap_or_default();
            Api::<Pod>::namespaced(client.clone(), &ns).delete(&victim, &DeleteParams::default()).await?;
            let pods = serving(&client, &ns, first.revision.number, 4).await?;
            assert!(pods.iter().all(|p| mounted(p) == Some(reference(&v1))));
            for layer in &moved.layers {
                assert_eq!(images::blob_downloads(&path, layer)?, 0, "the moved tag's bytes are never pulled");
            }

            // A crashing image is rolled back on its pods' status.
            set_image(&api, "llm/2.0.0/manifest.json").await?;
            let crashed = wait_outcome(&api, "llm/2.0.0/manifest.json", Outcome::RolledBack).await?;
            let why = crashed.reason.unwrap_or_default();
            assert!(why.starts_with("CrashLoopBackOff"), "{why}");
            // A digest the registry does not have: the pull failure is named.
            set_image(&api, "llm/9.0.0/manifest.json").await?;
            let missing = wait_outcome(&api, "llm/9.0.0/manifest.json", Outcome::RolledBack).await?;
            let why = missing.reason.unwrap_or_default();
            assert!(why.contains("ImagePull"), "{why}");
            // A registry the repository's owners did not list: refused before any pod.
            set_image(&api, "llm/4.0.0/manifest.json").await?;
            let elsewhere = wait_outcome(&api, "llm/4.0.0/manifest.json", Outcome::Rejected).await?;
            let why = elsewhere.reason.unwrap_or_default();
            assert!(why.starts_with("NotAllowedByPolicy"), "{why}");
            let release = api.get("llm").await?;
            let message = release.status.clone().unwrap_or_default().message.unwrap_or_default();
            assert!(message.contains("registry.other.example/models/llm"), "{message}");
            // `kubectl modelgate plan` holds it to the same list.
            let plan = plugin(&ns, &["plan", "llm"])?;
            assert!(plan.contains("REFUSED") && plan.contains("registry.other.example/models/llm"), "{plan}");
            // What the node would mount empty: refused before any pod, saying why.
            set_image(&api, "llm/5.0.0/manifest.json").await?;
            let modelpack = wait_outcome(&api, "llm/5.0.0/manifest.json", Outcome::Rejected).await?;
            let why = modelpack.reason.unwrap_or_default();
            assert!(why.starts_with("UnsupportedImage"), "{why}");
            let message = api.get("llm").await?.status.unwrap_or_default().message.unwrap_or_default();
            assert!(message.contains("ModelPack"), "{message}");
            assert_eq!(serving(&client, &ns, first.revision.number, 4).await?.len(), 4, "1.0.0 served throughout");

            // 3.0.0 is promoted, then revoked: back to 1.0.0, whose image is still on the node.
            set_image(&api, "llm/3.0.0/manifest.json").await?;
            let third = wait_outcome(&api, "llm/3.0.0/manifest.json", Outcome::Promoted).await?;
            assert_eq!(third.revision.image.as_deref(), Some(reference(&v3).as_str()));
            repo.remove(&["llm/3.0.0/manifest.json"])?;
            wait_outcome(&api, "llm/3.0.0/manifest.json", Outcome::RolledBack).await?;
            let back = serving(&client, &ns, first.revision.number, 4).await?;
            assert!(back.iter().all(|p| mounted(p) == Some(reference(&v1))));
            for layer in &v1.layers {
                assert_eq!(images::blob_downloads(&path, layer)?, 1, "the rollback pulled nothing");
            }
            anyhow::Ok(())
        }
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", operator.logs()))
    })
    .await
}

/// `kubectl modelgate ARGS -n NS`, which must succeed (a refusal it reports is a success); its output.
fn plugin(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let bin = modelgate_tests::harness::cargo_bin("kubectl-modelgate");
    let out = std::process::Command::new(bin).args(["-n", ns]).args(args).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "kubectl modelgate {args:?}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

async fn set_image(api: &Api<ModelRelease>, target: &str) -> anyhow::Result<()> {
    set_image_target(api, "llm", target).await
}

/// The newest history entry of `target` once it has `outcome`.
async fn wait_outcome(api: &Api<ModelRelease>, target: &str, outcome: Outcome) -> anyhow::Result<HistoryEntry> {
    wait_history(api, "llm", target, outcome, WAIT).await
}

/// The image reference a pod's model volume names.
fn mounted(pod: &Pod) -> Option<String> {
    let volumes = pod.spec.as_ref()?.volumes.as_ref()?;
    volumes.iter().find_map(|v| v.image.as_ref()?.reference.clone())
}

/// Waits for `count` Ready pods of `revision`, and returns them.
async fn serving(client: &Client, ns: &str, revision: i64, count: usize) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{LABEL_RELEASE}=llm,{LABEL_REVISION}={revision}");
    eventually(&format!("{count} Ready pods of revision {revision}"), WAIT, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let ready: Vec<Pod> =
            list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p)).collect();
        Ok((ready.len() == count).then_some(ready))
    })
    .await
}

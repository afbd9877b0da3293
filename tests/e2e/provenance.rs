//! Who made a model, required beside TUF: models signed with OpenSSF model signing
//! (bundles made by `model_signing`, the reference implementation, with keys and
//! certificates) published as TUF targets beside the model, and a repository whose
//! `provenance` (the security team's) names the signers it accepts. Releases run on the
//! simulated node; the real node's `modelgate fetch --signed` is in `node.rs`.

use std::{path::Path, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use modelgate::api::{ClusterModelRepository, ModelRelease, ModelRepository, Phase};
use modelgate::api::{FETCH_CONTAINER, LABEL_RELEASE};
use modelgate_tests::{
    harness::{Operator, cargo_bin, crds_shared, eventually, kubectl_ok, pod_ready, run_with_stdin, with_temp_ns},
    models::{ModelRepo, REPOSITORY, register_cluster_with, release, wait_phase, wait_stable},
    node::{self, OPERATOR_IMAGE},
    signing::Signers,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// A model directory of two files whose bytes name it.
fn model_dir(root: &Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("weights"))?;
    std::fs::write(dir.join("config.json"), format!("{{\"model\": \"{name}\"}}\n"))?;
    std::fs::write(dir.join("weights/w.bin"), name.repeat(4096))?;
    Ok(dir)
}

/// The security team's ConfigMaps: the accepted key (alice's) and the CA.
async fn signer_config_maps(client: &kube::Client, ns: &str, signers: &Signers) -> anyhow::Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for (name, key, file) in [("model-signers", "keys.pem", "alice.pub"), ("signing-ca", "ca.pem", "ml.pem")] {
        let data = std::fs::read_to_string(signers.file(file))?;
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {key: data}});
        cms.patch(name, &PatchParams::apply("modelgate-tests"), &Patch::Apply(&cm)).await?;
    }
    Ok(())
}

/// A release of `model`: a target path, or a prefix when it ends with '/'.
fn release_of(name: &str, model: &str) -> anyhow::Result<ModelRelease> {
    let mut source = model_source(model);
    if let Some(fields) = source.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    release(name, "", 1, json!({"model": source}))
}

fn model_source(model: &str) -> serde_json::Value {
    match model.ends_with('/') {
        true => json!({"prefix": model, "target": null, "mountPath": "/models"}),
        false => json!({"target": model, "prefix": null, "mountPath": "/models"}),
    }
}

/// Changes a release's model (a new revision), as `kubectl patch --type merge` would.
async fn set_model(api: &Api<ModelRelease>, name: &str, model: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"model": model_source(model)}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

fn provenance() -> serde_json::Value {
    json!({"provenance": {
        "publicKeys": {"configMapRef": {"name": "model-signers", "key": "keys.pem"}},
        "certificates": [{
            "caBundle": {"configMapRef": {"name": "signing-ca", "key": "ca.pem"}},
            "identities": ["ml-ci@example.com"],
        }],
    }})
}

/// Every way a signature can be wrong, each refused with its reason and the running
/// model left alone; signed models released with their signer in status; and a
/// signature revoked from the repository rolls its model back like a revoked model.
#[tokio::test]
async fn signed_models_are_released_with_their_signer_and_every_other_is_refused_with_the_reason() -> anyhow::Result<()>
{
    let _crds = crds_shared().await?;
    with_temp_ns("provenance", |client, ns| async move {
        let signers = Signers::new()?;
        let work = tempfile::tempdir()?;
        let sig = |name: &str| work.path().join(format!("{name}.sig"));
        let mut repo = ModelRepo::new("fraud", &["1.0"])?;

        // Signed as published: by the accepted key, by a certificate for the accepted
        // identity, and one file by the key.
        let key = model_dir(work.path(), "by-key")?;
        signers.sign_with_key(&key, "alice", &sig("by-key"))?;
        let cert = model_dir(work.path(), "by-cert")?;
        signers.sign_with_certificate(&cert, "ci", &sig("by-cert"))?;
        let single = model_dir(work.path(), "single")?.join("config.json");
        signers.sign_with_key(&single, "alice", &sig("single"))?;
        // Wrong: another key; an expired certificate; a file published that the
        // signature does not list; a file changed after signing.
        let stranger = model_dir(work.path(), "stranger")?;
        signers.sign_with_key(&stranger, "mallory", &sig("stranger"))?;
        let expired = model_dir(work.path(), "expired")?;
        signers.sign_with_certificate(&expired, "old", &sig("expired"))?;
        let extra = model_dir(work.path(), "extra")?;
        signers.sign_with_key(&extra, "alice", &sig("extra"))?;
        std::fs::write(extra.join("weights/unsigned.bin"), "added after signing")?;
        let tampered = model_dir(work.path(), "tampered")?;
        signers.sign_with_key(&tampered, "alice", &sig("tampered"))?;
        std::fs::write(tampered.join("weights/w.bin"), "other weights")?;
        for name in ["by-key", "by-cert", "stranger", "expired", "extra", "tampered"] {
            repo.add_dir(&format!("llm/{name}/"), &work.path().join(name))?;
            repo.add_file(&format!("llm/{name}.sig"), &sig(name))?;
        }
        repo.add_file("single/config.json", &single)?;
        repo.add_file("single/config.json.sig", &sig("single"))?;

        signer_config_maps(&client, &ns, &signers).await?;
        repo.register_with(&client, &ns, provenance()).await?;
        let operator = Operator::start(Some(&ns), &[])?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let result = async {
            for (name, target) in [("key", "llm/by-key/"), ("cert", "llm/by-cert/"), ("single", "single/config.json")] {
                api.create(&PostParams::default(), &release_of(name, target)?).await?;
            }
            let signer = |r: &ModelRelease| r.status.as_ref()?.stable.as_ref()?.revision.signer.clone();
            let by_key = wait_phase(&api, "key", Phase::Promoted, WAIT).await?;
            let by_key = signer(&by_key).unwrap_or_default();
            assert!(by_key.starts_with("key sha256:") && by_key.len() == "key sha256:".len() + 64, "{by_key}");
            let by_cert = signer(&wait_phase(&api, "cert", Phase::Promoted, WAIT).await?).unwrap_or_default();
            assert!(by_cert == "ml-ci@example.com (issuer CN=ml model signing CA)", "{by_cert}");
            assert_eq!(signer(&wait_phase(&api, "single", Phase::Promoted, WAIT).await?), Some(by_key.clone()));

            // Each wrong signature: a new revision of the running release, refused with
            // its reason; revision 1 keeps serving.
            for (target, reason, said) in [
                ("fraud/1.0/model.onnx", "SignatureMissing", "the repository signs no \"fraud/1.0/model.onnx.sig\""),
                ("llm/stranger/", "UnknownSigner", "whom the repository's provenance policy does not accept"),
                ("llm/expired/", "SignerCertificateRejected", "it has expired"),
                ("llm/extra/", "SignedFilesMismatch", "does not name 1 of the model's files: \"weights/unsigned.bin\""),
                ("llm/tampered/", "SignedFilesMismatch", "other bytes than the signer did for \"weights/w.bin\""),
            ] {
                set_model(&api, "key", target).await?;
                let status = eventually(&format!("{target} rejected"), WAIT, || async {
                    let status = api.get("key").await?.status.unwrap_or_default();
                    let rejected = status.phase == Some(Phase::Rejected)
                        && status.history.last().is_some_and(|h| h.revision.target == target);
                    Ok(rejected.then_some(status))
                })
                .await?;
                let last = status.history.last().cloned().unwrap_or_default();
                assert_eq!((last.revision.target.as_str(), last.reason.as_deref()), (target, Some(reason)));
                let message = status.message.unwrap_or_default();
                assert!(message.contains(said) && message.contains("revision 1 keeps serving"), "{message}");
                assert_eq!(status.stable.map(|s| s.revision.number), Some(1), "{target}");
            }

            // A certificate-signed revision 2; then its signature is revoked (new targets
            // metadata without it): back to revision 1, as for a revoked model.
            set_model(&api, "key", "llm/by-cert/").await?;
            let r = wait_phase(&api, "key", Phase::Promoted, WAIT).await?;
            let stable = r.status.and_then(|s| s.stable).unwrap_or_default();
            assert_eq!(stable.revision.signer, Some(by_cert));
            repo.remove(&["llm/by-cert.sig"])?;
            let r = wait_phase(&api, "key", Phase::RolledBack, WAIT).await?;
            let status = r.status.unwrap_or_default();
            assert_eq!(status.stable.map(|s| s.revision.number), Some(1));
            let last = status.history.last().cloned().unwrap_or_default();
            assert!(last.reason.as_deref().unwrap_or("").starts_with("TrustRevoked"), "{last:?}");
            wait_stable(&api, "key", 1, WAIT).await?;
            // The release of the same model elsewhere is revoked too.
            let cert = wait_phase(&api, "cert", Phase::Revoked, WAIT).await?;
            let message = cert.status.and_then(|s| s.message).unwrap_or_default();
            assert!(message.contains("no model signature"), "{message}");

            // The signers' ConfigMap goes: nothing is vouched for by a policy that cannot
            // be read (a new release waits, saying why); what serves keeps serving.
            Api::<ConfigMap>::namespaced(client.clone(), &ns).delete("model-signers", &Default::default()).await?;
            let repos: Api<ModelRepository> = Api::namespaced(client.clone(), &ns);
            eventually("the repository reports its signer policy unusable", WAIT, || async {
                let status = repos.get(REPOSITORY).await?.status.unwrap_or_default();
                Ok(status.conditions.iter().any(|c| c.message.contains("model-signers")).then_some(()))
            })
            .await?;
            api.create(&PostParams::default(), &release_of("later", "llm/by-key/")?).await?;
            let waiting = eventually("the new release waits on the signer policy", WAIT, || async {
                let status = api.get("later").await?.status.unwrap_or_default();
                let message = status.message.unwrap_or_default();
                Ok((status.phase == Some(Phase::Verifying) && message.contains("signer policy cannot be used"))
                    .then_some(message))
            })
            .await?;
            assert!(waiting.contains("model-signers"), "{waiting}");
            let single = api.get("single").await?.status.unwrap_or_default();
            assert_eq!(single.phase, Some(Phase::Promoted), "the running model keeps serving");
            anyhow::Ok(())
        }
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", operator.logs()))
    })
    .await
}

/// `modelgate fetch --signed` (what a signed revision's pod runs) and `modelgate verify
/// --signed` check the signature beside the model before any model byte: it must be
/// signed by the repository and name exactly the files about to be fetched.
#[tokio::test]
async fn the_pods_fetch_checks_the_signatures_file_list_before_the_model() -> anyhow::Result<()> {
    let signers = Signers::new()?;
    let work = tempfile::tempdir()?;
    let mut repo = ModelRepo::new("fraud", &["1.0"])?;
    for name in ["good", "extra"] {
        let dir = model_dir(work.path(), name)?;
        signers.sign_with_key(&dir, "alice", &work.path().join(format!("{name}.sig")))?;
    }
    std::fs::write(work.path().join("extra/weights/unsigned.bin"), "added after signing")?;
    for name in ["good", "extra"] {
        repo.add_dir(&format!("llm/{name}/"), &work.path().join(name))?;
        repo.add_file(&format!("llm/{name}.sig"), &work.path().join(format!("{name}.sig")))?;
    }
    let root = work.path().join("root.json");
    std::fs::write(&root, repo.root_json()?)?;
    let ca = repo.server.ca.clone().unwrap_or_default();
    let verify = |prefix: &str, signed: bool| {
        let (metadata, targets) = (repo.server.url("metadata/"), repo.server.url("targets/"));
        let mut args = vec!["verify", "--metadata-url", &metadata, "--targets-url", &targets, "--prefix", prefix];
        let (root, ca) = (root.to_string_lossy(), ca.to_string_lossy());
        args.extend(["--root", &root, "--ca-bundle", &ca]);
        if signed {
            args.push("--signed");
        }
        let out = run_with_stdin(cargo_bin("modelgate").to_str().unwrap_or_default(), &args, None)?;
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        anyhow::Ok((out.status.success(), said))
    };
    let (ok, said) = verify("llm/good/", true)?;
    assert!(ok && said.contains("verified:  yes"), "{said}");
    let (ok, said) = verify("llm/extra/", true)?;
    assert!(!ok && said.contains("does not name 1 of the model's files: \"weights/unsigned.bin\""), "{said}");
    // Without a signature beside it: refused when one is asked for, as before when not.
    let (ok, said) = verify("fraud/1.0/", true)?;
    assert!(!ok && said.contains("no model signature: the repository signs no \"fraud/1.0.sig\""), "{said}");
    assert!(verify("fraud/1.0/", false)?.0);
    Ok(())
}

/// On the real node: a signed model's pod runs `modelgate fetch --signed` in the
/// operator's image, and serves.
#[tokio::test]
async fn a_signed_model_is_checked_again_in_its_pod_on_the_real_node() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("provenance-node", |client, ns| async move {
        node::require_images()?;
        let signers = Signers::new()?;
        let work = tempfile::tempdir()?;
        let mut repo = ModelRepo::for_pods("fraud", &["1.0.0"])?;
        let model = repo.server_root().join("targets/fraud/1.0.0/model.onnx");
        let sig = work.path().join("model.onnx.sig");
        signers.sign_with_key(&model, "alice", &sig)?;
        repo.add_file("fraud/1.0.0/model.onnx.sig", &sig)?;
        signer_config_maps(&client, &ns, &signers).await?;
        let root = repo.root_json()?;
        modelgate_tests::models::register_repository_with(
            &client,
            &ns,
            REPOSITORY,
            "5m",
            &root,
            &repo.server,
            provenance(),
        )
        .await?;
        let operator = Operator::start(Some(&ns), &["--fetch-image", OPERATOR_IMAGE])?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &node::release("fraud", "fraud/1.0.0/model.onnx", 1, json!({}))?).await?;
        let result = async {
            wait_stable(&api, "fraud", 1, Duration::from_secs(120)).await?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let pod = eventually("a Ready pod", Duration::from_secs(30), || async {
                let list = pods.list(&ListParams::default().labels(&format!("{LABEL_RELEASE}=fraud"))).await?;
                Ok(list.items.into_iter().find(pod_ready))
            })
            .await?;
            let init = pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()).and_then(|c| c.first());
            let args = init.and_then(|c| c.args.clone()).unwrap_or_default();
            assert!(args.iter().any(|a| a == "--signed"), "{args:?}");
            let name = pod.metadata.name.clone().unwrap_or_default();
            let log =
                pods.logs(&name, &LogParams { container: Some(FETCH_CONTAINER.into()), ..Default::default() }).await?;
            assert!(log.contains("modelgate: verified fraud/1.0.0/model.onnx"), "{log}");
            anyhow::Ok(())
        }
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", operator.logs()))
    })
    .await
}

/// On a ClusterModelRepository the security team requires signatures (its signers'
/// ConfigMaps in the operator's namespace); a team with `edit` in its namespace releases
/// signed models from it and can neither lift the requirement nor add a signer.
#[tokio::test]
async fn a_cluster_repository_requires_signatures_a_team_cannot_lift() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("provenance-trust", |admin, trust_ns| async move {
        with_temp_ns("provenance-team", |_, ns| async move {
            let signers = Signers::new()?;
            let work = tempfile::tempdir()?;
            let mut repo = ModelRepo::new("fraud", &["1.0"])?;
            let dir = model_dir(work.path(), "signed")?;
            signers.sign_with_certificate(&dir, "ci", &work.path().join("signed.sig"))?;
            repo.add_dir("llm/signed/", &dir)?;
            repo.add_file("llm/signed.sig", &work.path().join("signed.sig"))?;
            signer_config_maps(&admin, &trust_ns, &signers).await?;
            let name = format!("signed-{ns}");
            let policy = json!({"allow": [{"namespaces": [ns], "paths": ["**"]}]});
            register_cluster_with(&repo, &admin, &trust_ns, &name, &ns, policy, provenance()).await?;
            let team = "dave@ml";
            kubectl_ok(
                &["create", "rolebinding", "team-edit", "-n", &ns, "--clusterrole", "edit", "--user", team],
                None,
            )?;
            let result = async {
                let operator = Operator::start(Some(&ns), &["--trust-namespace", &trust_ns])?;
                // The team cannot lift the requirement or add its own key.
                let mut config = kube::Config::infer().await?;
                config.auth_info.impersonate = Some(team.into());
                let dave = kube::Client::try_from(config)?;
                let repos: Api<ClusterModelRepository> = Api::all(dave.clone());
                let lift = json!({"spec": {"provenance": null}});
                let lifted = repos.patch(&name, &PatchParams::default(), &Patch::Merge(&lift)).await;
                assert!(matches!(lifted, Err(kube::Error::Api(ref s)) if s.code == 403), "{lifted:?}");
                let keys: Api<ConfigMap> = Api::namespaced(dave.clone(), &trust_ns);
                let mine = json!({"data": {"keys.pem": std::fs::read_to_string(signers.file("mallory.pub"))?}});
                let added = keys.patch("model-signers", &PatchParams::default(), &Patch::Merge(&mine)).await;
                assert!(matches!(added, Err(kube::Error::Api(ref s)) if s.code == 403), "{added:?}");

                let api: Api<ModelRelease> = Api::namespaced(admin.clone(), &ns);
                let on_cluster = |model: &str| -> anyhow::Result<ModelRelease> {
                    let mut r = release_of("x", model)?;
                    r.spec.repository_ref =
                        serde_json::from_value(json!({"kind": "ClusterModelRepository", "name": name}))?;
                    Ok(r)
                };
                let mut signed = on_cluster("llm/signed/")?;
                signed.metadata.name = Some("signed".into());
                let mut unsigned = on_cluster("fraud/1.0/model.onnx")?;
                unsigned.metadata.name = Some("unsigned".into());
                api.create(&PostParams::default(), &signed).await?;
                api.create(&PostParams::default(), &unsigned).await?;
                let r = wait_phase(&api, "signed", Phase::Promoted, WAIT).await?;
                let signer = r.status.and_then(|s| s.stable).and_then(|s| s.revision.signer).unwrap_or_default();
                assert_eq!(signer, "ml-ci@example.com (issuer CN=ml model signing CA)");
                let r = wait_phase(&api, "unsigned", Phase::Rejected, WAIT).await?;
                let message = r.status.and_then(|s| s.message).unwrap_or_default();
                assert!(message.contains("no model signature"), "{message}");
                drop(operator);
                anyhow::Ok(())
            }
            .await;
            let _ = kubectl_ok(&["delete", "clustermodelrepository", &name, "--ignore-not-found"], None);
            result
        })
        .await
    })
    .await
}

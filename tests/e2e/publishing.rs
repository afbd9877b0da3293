//! `docs/publishing.md` as written: the python-tuf commands of its guide run exactly as
//! the page shows them (in order, from the repository's root, with `REPO` and `MODEL`
//! set), the result is served over HTTPS, `modelgate verify` accepts the signed model and
//! refuses the revoked one, and a release from it is promoted on the test cluster; the
//! guide's tuftool commands publish a repository `modelgate verify` accepts.

use std::time::Duration;

use anyhow::Context;
use kube::{Api, api::PostParams};
use modelgate::api::{ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, cargo_bin, crds_shared, repo_root, with_temp_ns},
    models::{REPOSITORY, register_repository, release, wait_phase},
    tuf::{Server, python},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// The shell blocks of the guide's python-tuf section: the commands to run, and the
/// `modelgate verify` example (its URLs are placeholders, so the test runs it with the
/// server's).
fn guide() -> anyhow::Result<(String, String)> {
    let blocks = shell_blocks("## With python-tuf")?;
    let (verify, commands): (Vec<String>, Vec<String>) =
        blocks.into_iter().partition(|b| b.contains("modelgate verify"));
    // pip needs the package index; the test's Python has python-tuf already.
    let all = commands.join("\n");
    let script: Vec<&str> = all.lines().filter(|l| !l.trim_start().starts_with("pip ")).collect();
    Ok((script.join("\n"), verify.join("\n")))
}

#[tokio::test]
async fn the_publishing_guide_works_as_written() -> anyhow::Result<()> {
    let (script, verify) = guide()?;
    for step in ["init", "add-file", "delegate", "remove", "rotate", "refresh"] {
        assert!(script.contains(&format!("modelrepo.py {step} ")), "the guide shows `{step}`:\n{script}");
    }
    let work = tempfile::tempdir()?;
    let (repo, model) = (work.path().join("ml-models"), work.path().join("model.onnx"));
    std::fs::write(&model, b"onnx weights of the published model\n".repeat(512))?;
    let python_dir = python().parent().context("the venv's bin directory")?.to_path_buf();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(repo_root())
        .env("REPO", &repo)
        .env("MODEL", &model)
        .env("PATH", format!("{}:{}", python_dir.display(), std::env::var("PATH").unwrap_or_default()))
        .output()?;
    assert!(out.status.success(), "the guide's commands failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let server = Server::https(&repo.join("public"))?;
    let verify_as_written = |target: &str| {
        let line = verify
            .replace("https://tuf.example.com/metadata/", &server.url("metadata/"))
            .replace("https://tuf.example.com/targets/", &server.url("targets/"))
            .replace("fraud-detector/1.0.0/model.onnx", target)
            .replace("modelgate verify", &format!("{} verify", cargo_bin("modelgate").display()));
        std::process::Command::new("bash")
            .args([
                "-euo",
                "pipefail",
                "-c",
                &format!("{} --ca-bundle {}", line.trim_end(), server.ca.as_ref().unwrap().display()),
            ])
            .env("REPO", &repo)
            .output()
    };
    let ok = verify_as_written("fraud-detector/1.0.0/model.onnx")?;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("root:      version 2"), "rotated once");
    let revoked = verify_as_written("fraud-detector/2.0.0/model.onnx")?;
    assert!(!revoked.status.success(), "the revoked target must be refused");
    assert!(String::from_utf8_lossy(&revoked.stderr).contains("not listed by any trusted targets role"));

    // And a release from it, as the security team and an ML team would make one.
    let root = std::fs::read_to_string(repo.join("root.json"))?;
    let model = std::fs::read(&model)?;
    released(server, root, "publishing", "fraud-detector/1.0.0/model.onnx", &model).await
}

/// The guide's tuftool commands (init, add, delegate, the team's files, revoke, rotate,
/// refresh), run as written in a folder with the files to sign; the result verified by
/// `modelgate verify` and released from on the test cluster.
#[tokio::test]
async fn the_tuftool_commands_of_the_guide_publish_a_repository_modelgate_verifies() -> anyhow::Result<()> {
    let script = shell_blocks("## With tuftool")?;
    for step in ["tuftool create", "tuftool update", "add-role", "update-delegated-targets", "remove-key"] {
        assert!(script.iter().any(|b| b.contains(step)), "the guide shows `{step}`");
    }
    let work = tempfile::tempdir()?;
    let files = [
        ("models", "fraud-detector-1.0.0.onnx"),
        ("more-models", "fraud-detector-1.1.0.onnx"),
        ("team-models", "fraud-detector-2.0.0.onnx"),
    ];
    for (dir, name) in files {
        std::fs::create_dir(work.path().join(dir))?;
        std::fs::write(work.path().join(dir).join(name), format!("onnx weights of {name}\n").repeat(256))?;
    }
    let tools = std::env::var("MODELGATE_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/modelgate")
        })
        .join("tools/bin");
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script.join("\n")])
        .current_dir(work.path())
        .env("PATH", format!("{}:{}", tools.display(), std::env::var("PATH").unwrap_or_default()))
        .output()?;
    assert!(out.status.success(), "the guide's tuftool commands failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let server = Server::https(&work.path().join("repo"))?;
    let pin = work.path().join("repo/metadata/1.root.json");
    let verify = |target: &str| {
        std::process::Command::new(cargo_bin("modelgate"))
            .args(["verify", "--metadata-url", &server.url("metadata/"), "--targets-url", &server.url("targets/")])
            .arg("--root")
            .arg(&pin)
            .arg("--ca-bundle")
            .arg(server.ca.as_ref().unwrap())
            .args(["--target", target])
            .output()
    };
    let added = verify("fraud-detector-1.1.0.onnx")?;
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let shown = String::from_utf8_lossy(&added.stdout);
    assert!(shown.contains("root:      version 3") && shown.contains("timestamp: version 7"), "{shown}");
    let revoked = verify("fraud-detector-2.0.0.onnx")?;
    assert!(!revoked.status.success(), "the team's revoked file must be refused");
    assert!(String::from_utf8_lossy(&revoked.stderr).contains("not listed by any trusted targets role"));

    let root = std::fs::read_to_string(&pin)?;
    let model = std::fs::read(work.path().join("models/fraud-detector-1.0.0.onnx"))?;
    released(server, root, "publishing-tuftool", "fraud-detector-1.0.0.onnx", &model).await
}

/// Registers the repository `server` serves, pinned to `root`, in a new namespace, and
/// releases `target` from it: promoted, serving the sha256 of `model`, the file signed.
async fn released(server: Server, root: String, prefix: &str, target: &str, model: &[u8]) -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    let want = hex_sha256(model);
    with_temp_ns(prefix, |client, ns| async move {
        register_repository(&client, &ns, REPOSITORY, "10s", &root, &server).await?;
        let _operator = Operator::start(Some(&ns), &[])?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &release("fraud", target, 1, json!({}))?).await?;
        let r = wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        let sha = r.status.and_then(|s| s.stable).and_then(|s| s.revision.sha256).unwrap_or_default();
        assert_eq!(sha, want, "the release serves the very file the publisher signed");
        Ok(())
    })
    .await
}

/// The guide's image steps, run as written against the test cluster's registry (which
/// buildah on this machine trusts) into a fresh repository: the signed target is the
/// manifest the registry serves, its sha256 the digest buildah pushed, its custom
/// metadata the repository, and `modelgate verify` accepts it.
#[tokio::test]
async fn the_image_publishing_steps_work_as_written() -> anyhow::Result<()> {
    let script = shell_blocks("## A model as an OCI image")?.join("\n");
    let registry = modelgate_tests::images::registry()?;
    let work = tempfile::tempdir()?;
    let (repo, model) = (work.path().join("ml-models"), work.path().join("llm"));
    std::fs::create_dir_all(&model)?;
    std::fs::write(model.join("config.json"), b"{\"layers\": 2}\n")?;
    std::fs::write(model.join("weights.bin"), b"weights\n".repeat(4096))?;
    let python_dir = python().parent().context("the venv's bin directory")?.to_path_buf();
    let bash = |script: &str| {
        std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(work.path())
            .env("REPO", &repo)
            .env("REGISTRY", &registry)
            .env("MODEL_DIR", &model)
            .env("CURL_CA_BUNDLE", std::env::var("MODELGATE_REGISTRY_CA")?)
            .env("PATH", format!("{}:{}", python_dir.display(), std::env::var("PATH").unwrap_or_default()))
            .output()
            .map_err(anyhow::Error::from)
    };
    let modelrepo = repo_root().join("tests/tuf/modelrepo.py");
    let init = bash(&format!("python3 {} init \"$REPO\"", modelrepo.display()))?;
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let script = script.replace("tests/tuf/modelrepo.py", &modelrepo.display().to_string());
    let out = bash(&script)?;
    assert!(out.status.success(), "the guide's image steps failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let digest = std::fs::read_to_string(work.path().join("llm.digest"))?;
    let signed: serde_json::Value = serde_json::from_slice(&std::fs::read(repo.join("public/metadata/targets.json"))?)?;
    let target = &signed["signed"]["targets"]["llm/3.0.0/manifest.json"];
    assert_eq!(
        Some(format!("sha256:{}", target["hashes"]["sha256"].as_str().unwrap_or_default())),
        Some(digest.trim().to_string())
    );
    assert_eq!(target["custom"]["oci"]["repository"], format!("{registry}/models/llm"));
    let served = modelgate_tests::images::manifest("models/llm", digest.trim()).await?;
    assert_eq!(std::fs::read(repo.join("public/targets/llm/3.0.0/manifest.json"))?, served);
    let server = Server::https(&repo.join("public"))?;
    let verify = std::process::Command::new(cargo_bin("modelgate"))
        .args(["verify", "--metadata-url", &server.url("metadata/"), "--targets-url", &server.url("targets/")])
        .arg("--root")
        .arg(repo.join("root.json"))
        .arg("--ca-bundle")
        .arg(server.ca.as_ref().context("an HTTPS server")?)
        .args(["--target", "llm/3.0.0/manifest.json"])
        .output()?;
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    Ok(())
}

/// The shell blocks of one `## ` section of docs/publishing.md, in order.
fn shell_blocks(heading: &str) -> anyhow::Result<Vec<String>> {
    let page = std::fs::read_to_string(repo_root().join("docs/publishing.md"))?;
    let section = page
        .split(heading)
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .with_context(|| format!("docs/publishing.md has no section {heading:?}"))?;
    Ok(section.split("```sh\n").skip(1).filter_map(|b| b.split("```").next()).map(str::to_string).collect())
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

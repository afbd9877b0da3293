//! Models of many files, fetched the way a pod's init container fetches them: a
//! python-tuf repository with a 30-shard model in hashed-bin delegations, a tuftool
//! repository with a list, served over real HTTPS by a server that drops connections,
//! ignores ranges or changes a file mid-download. These need no Kubernetes cluster.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use modelgate_tests::{
    harness::{cargo_bin, repo_root, run_with_stdin},
    tuf::{Server, python},
};
use serde_json::Value;

const PREFIX: &str = "llama/8b/2026-11-01/";

struct Repo {
    _work: tempfile::TempDir,
    dir: PathBuf,
    files: Vec<String>,
    server: Server,
}

/// `repos.py sharded`: 30 shards (`mib` MiB in all) and a config under PREFIX in 16 bins.
fn sharded(mib: u32) -> anyhow::Result<Repo> {
    let work = tempfile::tempdir()?;
    let dir = work.path().join("repo");
    let script = repo_root().join("tests/tuf/repos.py");
    let mib = mib.to_string();
    let args = [script.to_str().unwrap(), "sharded", dir.to_str().unwrap(), PREFIX, "30", &mib, "16"];
    let o = run_with_stdin(python().to_str().unwrap(), &args, None)?;
    anyhow::ensure!(o.status.success(), "repos.py: {}", String::from_utf8_lossy(&o.stderr));
    let files = String::from_utf8(o.stdout)?.lines().map(str::to_string).collect();
    let server = Server::https(&dir)?;
    Ok(Repo { _work: work, dir, files, server })
}

impl Repo {
    fn args(&self, verb: &str, targets_path: &str, model: &[&str]) -> Vec<String> {
        let mut v = vec![
            verb.to_string(),
            "--metadata-url".into(),
            self.server.url("metadata/"),
            "--targets-url".into(),
            self.server.url(targets_path),
            "--root".into(),
            self.dir.join("root.json").to_string_lossy().into_owned(),
            "--ca-bundle".into(),
            self.server.ca.as_ref().unwrap().to_string_lossy().into_owned(),
        ];
        v.extend(model.iter().map(|s| s.to_string()));
        v
    }

    /// `modelgate verify` of the prefix: the identity the operator would put in the pod.
    fn identity(&self) -> anyhow::Result<(String, String, String)> {
        let o = modelgate(&self.args("verify", "targets/", &["--prefix", PREFIX]))?;
        let out = String::from_utf8_lossy(&o.stdout);
        anyhow::ensure!(o.status.success(), "verify: {}", String::from_utf8_lossy(&o.stderr));
        let field = |name: &str| {
            out.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().trim_start_matches("sha256 ").to_string())
        };
        Ok((field("manifest:").unwrap(), field("length:").unwrap(), field("files:").unwrap()))
    }

    fn fetch(&self, targets_path: &str, volume: &Path) -> anyhow::Result<Output> {
        let (sha256, length, files) = self.identity()?;
        let mut args = self.args("fetch", targets_path, &["--prefix", PREFIX]);
        args.extend(["--sha256", &sha256, "--length", &length, "--files", &files, "--out"].map(String::from));
        args.push(volume.to_string_lossy().into_owned());
        modelgate(&args)
    }

    /// GETs the server logged for ranged paths: (path, first byte, bytes sent).
    fn gets(&self) -> Vec<(String, u64, u64)> {
        let text = std::fs::read_to_string(self.dir.join("get-log.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                (
                    v["path"].as_str().unwrap_or("").to_string(),
                    v["start"].as_u64().unwrap(),
                    v["sent"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn file_len(&self, index: usize) -> u64 {
        std::fs::metadata(self.dir.join("targets").join(&self.files[index])).map_or(0, |m| m.len())
    }

    fn assert_complete(&self, volume: &Path) {
        let model = volume.join("model");
        for f in &self.files {
            let rel = f.strip_prefix(PREFIX).unwrap();
            assert_eq!(
                std::fs::read(model.join(rel)).unwrap(),
                std::fs::read(self.dir.join("targets").join(f)).unwrap(),
                "{f}"
            );
        }
        let mut names: Vec<_> = std::fs::read_dir(&model).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names.len(), self.files.len() + 1, "the files and the manifest, nothing else: {names:?}");
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(model.join(".modelgate-manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["files"].as_array().unwrap().len(), self.files.len());
    }
}

fn modelgate(args: &[String]) -> anyhow::Result<Output> {
    let bin = cargo_bin("modelgate");
    run_with_stdin(bin.to_str().unwrap(), &args.iter().map(String::as_str).collect::<Vec<_>>(), None)
}

#[tokio::test]
async fn a_sharded_model_in_hashed_bins_is_fetched_whole_through_dropped_connections() -> anyhow::Result<()> {
    let repo = sharded(6)?;
    let (_, length, files) = repo.identity()?;
    assert_eq!(files, "31", "30 shards and the config; the decoy a bin is not trusted for and the neighbours are not");
    let work = tempfile::tempdir()?;
    let volume = work.path().join("vol");
    // Every first answer is cut halfway: each file resumes with a Range request.
    let o = repo.fetch("flaky/targets/", &volume)?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    repo.assert_complete(&volume);
    let gets = repo.gets();
    let sent: u64 = gets.iter().map(|g| g.2).sum();
    let resumed = gets.iter().filter(|g| g.1 > 0).count();
    assert_eq!(resumed, 31, "each file resumed once, from where it was cut: {gets:?}");
    assert_eq!(sent, length.parse::<u64>()?, "no byte was downloaded twice");
    assert!(stderr.contains("fetched 31/31 files"), "progress is logged: {stderr}");
    assert!(!volume.join(".partial").exists() && !volume.join(".incoming").exists(), "no staging left");

    // A second run over a complete directory downloads nothing and keeps it.
    let o = repo.fetch("flaky/targets/", &volume)?;
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("(0 bytes downloaded)"));
    Ok(())
}

#[tokio::test]
async fn a_file_changed_during_the_download_is_refused_and_never_resumed_from() -> anyhow::Result<()> {
    let repo = sharded(6)?;
    let work = tempfile::tempdir()?;
    let volume = work.path().join("vol");
    let o = repo.fetch("changing/targets/", &volume)?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(modelgate::api::FETCH_EXIT_UNTRUSTED), "{stderr}");
    assert!(stderr.contains("but the signed metadata says"), "{stderr}");
    assert!(!volume.join("model").exists(), "nothing becomes visible");
    // What stays to resume from is only ever a true beginning of its file: the bytes
    // that failed verification were deleted.
    for part in std::fs::read_dir(volume.join(".partial"))? {
        let part = part?;
        let index: usize = part.file_name().to_str().unwrap().parse()?;
        let kept = std::fs::read(part.path())?;
        let whole = std::fs::read(repo.dir.join("targets").join(&repo.files[index]))?;
        assert!(whole.starts_with(&kept), "{} keeps bytes that are not its file's", repo.files[index]);
    }
    // The next attempt against an honest server completes.
    let o = repo.fetch("targets/", &volume)?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    repo.assert_complete(&volume);
    Ok(())
}

#[tokio::test]
async fn a_killed_fetch_resumes_and_a_server_without_ranges_gets_a_full_download() -> anyhow::Result<()> {
    let repo = sharded(6)?;
    let work = tempfile::tempdir()?;
    // What an init container killed mid-file leaves: true first halves of two files...
    let volume = work.path().join("vol");
    let partial = volume.join(".partial");
    std::fs::create_dir_all(&partial)?;
    let shard = |i: usize| std::fs::read(repo.dir.join("targets").join(&repo.files[i])).unwrap();
    // (sorted by target: 0 is config.json, 1.. the shards)
    let half = shard(1).len() / 2;
    std::fs::write(partial.join("1"), &shard(1)[..half])?;
    // ...and a first half that is not the file's (a disk error, or a server that lied):
    // resumed from, but caught by hashing the whole file, deleted, and refused.
    let mut bad = shard(2)[..half].to_vec();
    bad[10] ^= 1;
    std::fs::write(partial.join("2"), &bad)?;
    let o = repo.fetch("ranged/targets/", &volume)?;
    assert_eq!(o.status.code(), Some(modelgate::api::FETCH_EXIT_UNTRUSTED), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!partial.join("2").exists(), "the partial file that failed verification is gone");
    let o = repo.fetch("ranged/targets/", &volume)?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    repo.assert_complete(&volume);
    // (in the first run, or in this one if the refusal stopped the first before it)
    let gets = repo.gets();
    assert!(gets.iter().any(|g| g.0.ends_with(&repo.files[1]) && g.1 == half as u64), "resumed: {gets:?}");

    // A server that ignores Range (the plain paths answer 200 with the whole file):
    // the partial bytes are dropped, not appended to.
    let volume = work.path().join("vol2");
    std::fs::create_dir_all(volume.join(".partial"))?;
    std::fs::write(volume.join(".partial/1"), &shard(1)[..half])?;
    let o = repo.fetch("targets/", &volume)?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    repo.assert_complete(&volume);

    Ok(())
}

#[tokio::test]
async fn a_killed_fetch_resumes_where_its_files_stopped() -> anyhow::Result<()> {
    // 1 MiB shards: half a shard is more than a download's write buffer, so some of it
    // is on disk when the process dies.
    let repo = sharded(30)?;
    let work = tempfile::tempdir()?;
    let volume = work.path().join("vol");
    let (sha256, length, files) = repo.identity()?;
    let mut args = repo.args("fetch", "stall/targets/", &["--prefix", PREFIX]);
    args.extend(["--sha256", &sha256, "--length", &length, "--files", &files, "--out"].map(String::from));
    args.push(volume.to_string_lossy().into_owned());
    let mut child =
        std::process::Command::new(cargo_bin("modelgate")).args(&args).stderr(std::process::Stdio::null()).spawn()?;
    let on_disk = || -> Vec<(usize, u64)> {
        let Ok(dir) = std::fs::read_dir(volume.join(".partial")) else { return vec![] };
        dir.filter_map(|e| {
            let e = e.ok()?;
            let len = e.metadata().ok()?.len();
            Some((e.file_name().to_str()?.parse().ok()?, len)).filter(|_| len > 0)
        })
        .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while on_disk().is_empty() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the stalled fetch wrote nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill()?;
    child.wait()?;
    let had = on_disk();
    let o = repo.fetch("ranged/targets/", &volume)?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    repo.assert_complete(&volume);
    let gets = repo.gets();
    for (index, len) in &had {
        let file = &repo.files[*index];
        assert!(
            gets.iter().any(|g| g.0.ends_with(file.as_str()) && g.1 == *len),
            "{file} resumed from {len}: {gets:?}"
        );
    }
    let resumed: u64 = gets.iter().filter(|g| g.1 > 0).map(|g| g.2).sum();
    let saved: u64 = had.iter().map(|h| h.1).sum();
    assert_eq!(resumed + saved, had.iter().map(|(i, _)| repo.file_len(*i)).sum::<u64>());
    Ok(())
}

#[tokio::test]
async fn a_list_of_files_published_with_tuftool_verifies_as_one_model() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let names = ["config.json", "tokenizer.json", "weights.safetensors"];
    let mut paths = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let p = work.path().join(name);
        std::fs::write(&p, (0..50_000u32 * (i as u32 + 1)).map(|b| (b * 31 % 251) as u8).collect::<Vec<_>>())?;
        paths.push(p.to_string_lossy().into_owned());
    }
    let dir = work.path().join("published");
    let script = repo_root().join("tests/tuf/tuftool-repo");
    let mut args = vec![dir.to_string_lossy().into_owned()];
    args.extend(paths.iter().cloned());
    let o = run_with_stdin(script.to_str().unwrap(), &args.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    assert!(o.status.success(), "tuftool-repo: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::copy(dir.join("root.json"), dir.join("repo/root.json"))?;
    let server = Server::https(&dir.join("repo"))?;
    let repo = Repo { _work: tempfile::tempdir()?, dir: dir.join("repo"), files: vec![], server };
    // tuftool publishes with consistent snapshots: targets are fetched by hash-prefixed names.
    let list: Vec<&str> = names.iter().flat_map(|n| ["--target", n]).collect();
    let out = work.path().join("model");
    let mut verify = repo.args("verify", "targets/", &list);
    verify.extend(["--out".to_string(), out.to_string_lossy().into_owned()]);
    let o = modelgate(&verify)?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("files:     3") && stdout.contains("model:     config.json (+2 more)"), "{stdout}");
    for (name, path) in names.iter().zip(&paths) {
        assert_eq!(std::fs::read(out.join(name))?, std::fs::read(path)?);
    }
    // A list naming a file the repository does not sign is refused as a whole.
    let mut missing = verify.clone();
    missing.truncate(missing.len() - 2);
    missing.extend(["--target".into(), "vocab.txt".into()]);
    let o = modelgate(&missing)?;
    assert_eq!(o.status.code(), Some(modelgate::api::FETCH_EXIT_UNTRUSTED));
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"vocab.txt\" is not listed"));
    Ok(())
}

#[tokio::test]
async fn a_prefix_past_the_file_limit_is_refused_with_the_limit() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let dir = work.path().join("repo");
    let script = repo_root().join("tests/tuf/repos.py");
    // 1024 shards + config.json = 1025 files, in 16 bins.
    let args = [script.to_str().unwrap(), "sharded", dir.to_str().unwrap(), "huge/", "1024", "1", "16"];
    let o = run_with_stdin(python().to_str().unwrap(), &args, None)?;
    anyhow::ensure!(o.status.success(), "repos.py: {}", String::from_utf8_lossy(&o.stderr));
    let server = Server::https(&dir)?;
    let repo = Repo { _work: work, dir, files: vec![], server };
    let o = modelgate(&repo.args("verify", "targets/", &["--prefix", "huge/"]))?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(modelgate::api::FETCH_EXIT_UNTRUSTED), "{stderr}");
    assert!(stderr.contains("more than 1024 targets under \"huge/\""), "{stderr}");
    Ok(())
}

/// On the real node: a release moves from one file to a sharded model under a prefix;
/// the pods' `modelgate fetch` verifies every shard and the example server checks the
/// manifest against the digest its pod was promised; status and `kubectl get` show the
/// set; revoking one shard rolls back to the one-file revision.
#[tokio::test]
async fn a_sharded_release_serves_on_real_pods_and_a_revoked_shard_rolls_it_back() -> anyhow::Result<()> {
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use modelgate::api::{ModelRelease, Phase};
    use modelgate_tests::{
        harness::{Operator, crds_shared, kubectl_ok, with_temp_ns},
        models::{ModelRepo, wait_phase, wait_stable},
        node::{self, OPERATOR_IMAGE},
    };
    use serde_json::json;
    // Eight shards through real pods, on two cores busy with the rest of the suite.
    const WAIT: Duration = Duration::from_secs(240);

    let _crds = crds_shared().await?;
    with_temp_ns("node-shards", |client, ns| async move {
        node::require_images()?;
        let mut repo = ModelRepo::for_pods("llm", &["1.0.0"])?;
        let shards = repo.add_shards("llm/2.0.0/", 8)?;
        repo.register(&client, &ns).await?;
        let operator = Operator::start(Some(&ns), &["--fetch-image", OPERATOR_IMAGE])?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &node::release("llm", "llm/1.0.0/model.onnx", 2, json!({}))?).await?;
        let result = async {
            wait_stable(&api, "llm", 1, WAIT).await?;
            let mut container = node::server_container();
            container["args"] = json!(["serve", "--model", "/models"]);
            let patch = json!({"spec": {"model": {"target": null, "prefix": "llm/2.0.0/"},
                "template": {"spec": {"containers": [container]}}}});
            api.patch("llm", &PatchParams::default(), &Patch::Merge(&patch)).await?;
            wait_stable(&api, "llm", 2, WAIT).await?;
            let r = api.get("llm").await?;
            let stable = r.status.clone().unwrap_or_default().stable.unwrap_or_default();
            let total: i64 = shards
                .iter()
                .map(|s| std::fs::metadata(repo.server_root().join("targets").join(s)).map_or(0, |m| m.len() as i64))
                .sum();
            assert_eq!(
                (stable.revision.target.as_str(), stable.revision.files, stable.revision.length),
                ("llm/2.0.0/", Some(8), Some(total))
            );
            let wide = kubectl_ok(&["get", "mr", "llm", "-n", &ns, "-o", "wide"], None)?;
            // Columns by their position in the header: an empty CANARY leaves only blanks.
            let (header, row) = (wide.lines().next().unwrap_or(""), wide.lines().nth(1).unwrap_or(""));
            let col = |name: &str| {
                let at = header.find(name)?;
                row.get(at..)?.split_whitespace().next()
            };
            assert_eq!((col("STABLE"), col("FILES")), (Some("llm/2.0.0/"), Some("8")), "{wide}");
            // The init container told how far it was, and the server checked every file.
            let pods = kubectl_ok(&["get", "pods", "-n", &ns, "-l", "modelgate.dev/revision=2", "-o", "name"], None)?;
            let pod = pods.lines().next().unwrap_or_default().to_string();
            let fetch_log = kubectl_ok(&["logs", "-n", &ns, &pod, "-c", "modelgate-fetch"], None)?;
            assert!(fetch_log.contains("fetched 8/8 files"), "{fetch_log}");
            let server_log = kubectl_ok(&["logs", "-n", &ns, &pod, "-c", "server"], None)?;
            assert!(
                server_log.contains(&format!("sha256 {}", stable.revision.sha256.clone().unwrap_or_default())),
                "{server_log}"
            );

            // One shard revoked: the set the repository signs is no longer the verified one.
            repo.remove(&[shards[3].as_str()])?;
            let r = wait_phase(&api, "llm", Phase::RolledBack, WAIT).await?;
            let status = r.status.unwrap_or_default();
            assert_eq!(status.stable.map(|s| s.revision.number), Some(1));
            let last = status.history.last().cloned().unwrap_or_default();
            assert_eq!((last.revision.number, last.revision.files), (2, Some(8)));
            assert!(last.reason.unwrap_or_default().starts_with("TrustRevoked"));
            anyhow::Ok(())
        }
        .await;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", operator.logs()))
    })
    .await
}

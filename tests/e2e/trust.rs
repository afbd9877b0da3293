//! The TUF client against repositories made by python-tuf, served over real HTTPS: every
//! attack class ends in its exact refusal and writes nothing; the good paths verify.
//! These need no Kubernetes cluster.

use std::{path::Path, time::Duration};

use anyhow::Context;

use k8s_openapi::jiff::Timestamp;
use modelgate::trust::{
    Floors, Reason, Store, Transport, TransportOptions, TrustError, Trusted, Updater, fetch, target,
};
use modelgate_tests::{
    harness::{cargo_bin, run_with_stdin},
    tuf::{Server, scenarios},
};
use reqwest::Url;
use serde_json::Value;

struct Client<'a> {
    server: &'a Server,
    options: TransportOptions,
}

impl Client<'_> {
    /// One full client run at time `now` (the clock is an input, so a test can move it):
    /// refresh, find the target, download it to `out`.
    async fn run_at(
        &self,
        base: &str,
        pinned_root: &[u8],
        metadata_dir: &Path,
        name: &str,
        out: &Path,
        now: Timestamp,
    ) -> Result<Trusted, TrustError> {
        let mut options = self.options.clone();
        options.ca_bundle = Some(std::fs::read(self.server.ca.as_ref().unwrap()).unwrap());
        let transport = Transport::new(options)?;
        let metadata_url = Url::parse(&self.server.url(&format!("{base}/metadata/"))).unwrap();
        let mut updater = Updater::new(
            Store::new(metadata_dir)?,
            transport,
            metadata_url,
            Some(pinned_root),
            Floors::default(),
            now,
        )?;
        let trusted = updater.refresh().await?;
        let info = updater.target(name).await?;
        let targets = Url::parse(&self.server.url(&format!("{base}/targets/"))).unwrap();
        let url = fetch::target_url(&targets, name, &info, updater.consistent_snapshot())?;
        target::download(updater.transport(), &url, name, &info, out).await?;
        Ok(trusted)
    }
}

#[tokio::test]
async fn every_attack_is_refused_and_every_good_repository_verifies() -> anyhow::Result<()> {
    let root = scenarios()?;
    let server = Server::https(root)?;
    let client = Client { server: &server, options: TransportOptions::default() };
    let mut names: Vec<String> =
        std::fs::read_dir(root)?.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert!(names.iter().filter(|n| !n.starts_with("ok_")).count() >= 20, "need at least 20 attack classes: {names:?}");

    let mut failures = Vec::new();
    for name in &names {
        let dir = root.join(name);
        let expect: Value = serde_json::from_slice(&std::fs::read(dir.join("expect.json"))?)?;
        let pinned = std::fs::read(dir.join("root.json"))?;
        let target = expect["target"].as_str().unwrap();
        let phases: Vec<&str> = expect["phases"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let work = tempfile::tempdir()?;
        let metadata = work.path().join("metadata");

        let mut outcome = None;
        for (i, phase) in phases.iter().enumerate() {
            let last = i + 1 == phases.len();
            // A freeze is the same metadata seen again later: move the client's clock.
            let advance = if last { expect["advance_clock"].as_i64().unwrap_or(0) } else { 0 };
            let now = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(advance);
            let out = work.path().join(if last { "final.onnx" } else { "earlier.onnx" });
            let result = client.run_at(&format!("{name}/{phase}"), &pinned, &metadata, target, &out, now).await;
            if !last {
                if let Err(e) = result {
                    failures.push(format!("{name}: {phase} should succeed: {e}"));
                }
                continue;
            }
            outcome = Some((result, out));
        }
        let (result, out) = outcome.unwrap();
        match (result, expect["error"].as_str()) {
            (Ok(trusted), None) => {
                let served = std::fs::read(dir.join(phases.last().unwrap()).join("targets").join(target));
                let got = std::fs::read(&out)?;
                if let Ok(served) = served
                    && served != got
                {
                    failures.push(format!("{name}: downloaded bytes differ from the served target"));
                }
                if let Some(want) = expect["trusted"].as_object() {
                    let have = [
                        ("root", trusted.root.0),
                        ("timestamp", trusted.timestamp.0),
                        ("snapshot", trusted.snapshot.0),
                        ("targets", trusted.targets.0),
                    ];
                    for (role, version) in have {
                        if let Some(w) = want.get(role)
                            && w.as_u64() != Some(version)
                        {
                            failures.push(format!("{name}: trusted {role} version {version}, want {w}"));
                        }
                    }
                }
            }
            (Ok(_), Some(want)) => failures.push(format!("{name}: succeeded, expected {want}")),
            (Err(e), None) => failures.push(format!("{name}: failed unexpectedly: {e}")),
            (Err(e), Some(want)) => {
                let role = expect["role"].as_str().unwrap_or_default();
                if e.reason().as_str() != want || !e.to_string().contains(role) {
                    failures.push(format!("{name}: got {} ({e}), want {want} naming {role:?}", e.reason()));
                }
                if out.exists() {
                    failures.push(format!("{name}: refused, yet {} was written", out.display()));
                }
                let leftovers: Vec<_> = std::fs::read_dir(work.path())?
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|f| f.starts_with(".modelgate-"))
                    .collect();
                if !leftovers.is_empty() {
                    failures.push(format!("{name}: temporary files left: {leftovers:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} scenarios wrong:\n{}", failures.len(), names.len(), failures.join("\n"));
    Ok(())
}

/// The reference client decides every scenario as modelgate does: python-tuf's ngclient
/// (`tests/tuf/reference.py`) refuses exactly the scenarios modelgate refuses, hidden
/// updates included (a 404 for metadata the trusted snapshot lists is a failed update).
#[tokio::test]
async fn python_tuf_refuses_exactly_what_modelgate_refuses() -> anyhow::Result<()> {
    let root = scenarios()?;
    let server = Server::https(root)?;
    let out = std::process::Command::new(modelgate_tests::tuf::python())
        .arg(modelgate_tests::harness::repo_root().join("tests/tuf/reference.py"))
        .arg(server.url(""))
        .arg(root)
        .env("SSL_CERT_FILE", server.ca.as_ref().unwrap())
        .output()?;
    assert!(out.status.success(), "reference.py: {}", String::from_utf8_lossy(&out.stderr));
    let reference: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout)?;
    let mut differ = Vec::new();
    for (name, outcome) in &reference {
        let expect: Value = serde_json::from_slice(&std::fs::read(root.join(name).join("expect.json"))?)?;
        let we_refuse = expect["error"].is_string();
        let they_refuse = outcome["ok"] == Value::Bool(false);
        if we_refuse != they_refuse {
            differ.push(format!("{name}: modelgate expects {}, python-tuf says {outcome}", expect["error"]));
        }
    }
    // Every scenario but the one that moves the clock (python-tuf reads the real one).
    assert!(reference.len() >= 38, "{} scenarios run by python-tuf", reference.len());
    for hidden in ["hidden_delegated_update", "hidden_snapshot_update"] {
        assert_eq!(reference[hidden]["ok"], Value::Bool(false), "{hidden}: {}", reference[hidden]);
    }
    assert!(differ.is_empty(), "python-tuf and modelgate differ:\n{}", differ.join("\n"));
    Ok(())
}

#[tokio::test]
async fn slow_retrieval_is_cut_off() -> anyhow::Result<()> {
    let root = scenarios()?;
    let server = Server::https(root)?;
    let options = TransportOptions { grace: Duration::from_secs(1), min_bytes_per_sec: 1024, ..Default::default() };
    let client = Client { server: &server, options };
    let work = tempfile::tempdir()?;
    let pinned = std::fs::read(root.join("ok_basic/root.json"))?;
    let out = work.path().join("model.onnx");
    // Metadata arrives at full speed; the target drips at 64 bytes a second.
    let mut options = client.options.clone();
    options.ca_bundle = Some(std::fs::read(server.ca.as_ref().unwrap())?);
    let transport = Transport::new(options)?;
    let mut updater = Updater::new(
        Store::new(work.path().join("metadata"))?,
        transport,
        Url::parse(&server.url("ok_basic/phase1/metadata/"))?,
        Some(&pinned),
        Floors::default(),
        Timestamp::now(),
    )?;
    updater.refresh().await?;
    let info = updater.target("fraud/1.0/model.onnx").await?;
    let url = Url::parse(&server.url("slow/ok_basic/phase1/targets/fraud/1.0/model.onnx"))?;
    let started = std::time::Instant::now();
    let err = target::download(updater.transport(), &url, "fraud/1.0/model.onnx", &info, &out).await.unwrap_err();
    assert!(err.to_string().contains("slow retrieval"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(!out.exists());
    Ok(())
}

#[tokio::test]
async fn plain_http_and_floors_are_enforced() -> anyhow::Result<()> {
    let root = scenarios()?;
    let pinned = std::fs::read(root.join("ok_basic/root.json"))?;
    let work = tempfile::tempdir()?;
    let http = Url::parse("http://127.0.0.1:1/metadata/")?;
    let err = Updater::new(
        Store::new(work.path())?,
        Transport::new(TransportOptions::default())?,
        http,
        Some(&pinned),
        Floors::default(),
        Timestamp::now(),
    )
    .err()
    .expect("plain http must be refused");
    assert_eq!(err.reason(), Reason::Insecure);

    // Floors from the cluster survive an empty metadata directory: an earlier pod saw
    // timestamp v5, or root v2; a repository offering v1 is a rollback.
    let server = Server::https(root)?;
    for (floors, role) in [
        (Floors { timestamp: 5, ..Default::default() }, "timestamp"),
        (Floors { root: 2, ..Default::default() }, "root"),
    ] {
        let options =
            TransportOptions { ca_bundle: Some(std::fs::read(server.ca.as_ref().unwrap())?), ..Default::default() };
        let mut updater = Updater::new(
            Store::new(work.path().join(role))?,
            Transport::new(options)?,
            Url::parse(&server.url("ok_basic/phase1/metadata/"))?,
            Some(&pinned),
            floors,
            Timestamp::now(),
        )?;
        let err = updater.refresh().await.unwrap_err();
        assert_eq!(err.reason(), Reason::RollbackDetected, "{err}");
        assert!(err.to_string().starts_with(role), "{err}");
    }
    Ok(())
}

/// A local copy older than the floors another process recorded (a replica standing by
/// reads the leader's; `modelgate fetch --metadata-dir` may be given raised floors) gives
/// way to the server's version at those floors: a model revoked in it is no longer
/// vouched for by the old copy kept under the new number.
#[tokio::test]
async fn a_local_copy_older_than_the_floors_gives_way_to_the_newer_version() -> anyhow::Result<()> {
    let root = scenarios()?;
    let base = "ok_revoked_in_a_newer_version";
    let pinned = std::fs::read(root.join(base).join("root.json"))?;
    let server = Server::https(root)?;
    let work = tempfile::tempdir()?;
    let updater = |phase: &str, floors: Floors| -> anyhow::Result<Updater> {
        let ca_bundle = Some(std::fs::read(server.ca.as_ref().context("https")?)?);
        let transport = Transport::new(TransportOptions { ca_bundle, ..Default::default() })?;
        let url = Url::parse(&server.url(&format!("{base}/{phase}/metadata/")))?;
        Ok(Updater::new(Store::new(work.path())?, transport, url, Some(&pinned), floors, Timestamp::now())?)
    };
    let mut before = updater("phase1", Floors::default())?;
    assert_eq!(before.refresh().await?.timestamp.0, 1);
    before.target("fraud/2.0/model.onnx").await?;
    // Another process trusted version 2 of everything; this one's copy is at 1.
    let floors = Floors { timestamp: 2, snapshot: 2, targets: 2, ..Default::default() };
    let mut after = updater("phase2", floors)?;
    let trusted = after.refresh().await?;
    assert_eq!((trusted.timestamp.0, trusted.snapshot.0, trusted.targets.0), (2, 2, 2));
    let revoked = after.target("fraud/2.0/model.onnx").await.unwrap_err();
    assert_eq!(revoked.reason(), Reason::UnknownTarget, "{revoked}");
    after.target("fraud/1.0/model.onnx").await?;
    Ok(())
}

fn sha256_of(path: &Path) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &std::fs::read(path).unwrap()))
}

#[tokio::test]
async fn fetch_and_verify_commands() -> anyhow::Result<()> {
    let root = scenarios()?;
    let server = Server::https(root)?;
    let work = tempfile::tempdir()?;
    let model = root.join("ok_basic/phase1/targets/fraud/1.0/model.onnx");
    let sha = sha256_of(&model);
    let len = std::fs::metadata(&model)?.len().to_string();
    let bin = cargo_bin("modelgate");
    let bin = bin.to_str().unwrap();
    let base = [
        "--metadata-url".to_string(),
        server.url("ok_basic/phase1/metadata/"),
        "--targets-url".into(),
        server.url("ok_basic/phase1/targets/"),
        "--root".into(),
        root.join("ok_basic/root.json").to_string_lossy().into_owned(),
        "--ca-bundle".into(),
        server.ca.as_ref().unwrap().to_string_lossy().into_owned(),
        "--target".into(),
        "fraud/1.0/model.onnx".into(),
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["fetch".to_string()];
        v.extend(base.iter().cloned());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // The operator-verified digest matches: the file is written.
    let volume = work.path().join("volume");
    let out = volume.join("model/model.onnx");
    let a = args(&["--sha256", &sha, "--length", &len, "--out", volume.to_str().unwrap()]);
    let o = run_with_stdin(bin, &a.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out)?, std::fs::read(&model)?);
    let listing: Vec<_> = std::fs::read_dir(volume.join("model"))?.map(|e| e.unwrap().file_name()).collect();
    assert_eq!(listing, ["model.onnx"], "the model directory holds the model and nothing else");
    // Readable by whatever user the model server runs as; writable by none.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out)?.permissions().mode() & 0o777, 0o444);

    // Recorded floors (the trust-state ConfigMap's floors.json) only raise the pod's:
    // above what the server offers, a rollback refused with exit code 3; below, nothing
    // changes; garbage, refused as a tampered record.
    let floors = work.path().join("floors.json");
    let verify = |extra: &[&str]| {
        let mut v = vec!["verify".to_string()];
        v.extend(base.iter().cloned());
        v.extend(["--floors".to_string(), floors.to_string_lossy().into_owned()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        run_with_stdin(bin, &v.iter().map(String::as_str).collect::<Vec<_>>(), None)
    };
    std::fs::write(&floors, r#"{"root": 1, "timestamp": 9, "snapshot": 1, "targets": 1}"#)?;
    let o = verify(&["--min-timestamp-version", "1"])?;
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{said}");
    assert!(said.contains("timestamp metadata version 1 is older than the trusted version 9"), "{said}");
    std::fs::write(&floors, r#"{"root": 0, "timestamp": 0, "snapshot": 0, "targets": 0}"#)?;
    assert!(verify(&[])?.status.success(), "floors at 0 change nothing");
    std::fs::write(&floors, r#"{"timestamp": "lots"}"#)?;
    let o = verify(&[])?;
    assert!(String::from_utf8_lossy(&o.stderr).contains("recorded floors"), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&floors)?;
    assert!(verify(&[])?.status.success(), "no recorded floors: none");

    // A digest the operator did not verify: refused with exit code 3 (a trust failure,
    // which the pod's gate names as such), one line, nothing written.
    let volume2 = work.path().join("volume2");
    let out2 = volume2.join("model");
    let wrong = "0".repeat(64);
    let a = args(&["--sha256", &wrong, "--length", &len, "--out", volume2.to_str().unwrap()]);
    let o = run_with_stdin(bin, &a.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(modelgate::api::FETCH_EXIT_UNTRUSTED));
    assert!(stderr.contains("differs from the expected"), "{stderr}");
    assert_eq!(stderr.trim().lines().filter(|l| l.starts_with("modelgate:")).count(), 1, "{stderr}");
    assert!(!out2.exists());

    // verify prints what it verified.
    let mut v = vec!["verify".to_string()];
    v.extend(base.iter().cloned());
    let o = run_with_stdin(bin, &v.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        format!("sha256:    {sha}"),
        format!("length:    {len}"),
        "timestamp: version 1".into(),
        "verified:  yes".into(),
    ] {
        assert!(stdout.contains(&want), "verify output lacks {want:?}:\n{stdout}");
    }
    Ok(())
}

#[tokio::test]
async fn conformance_client_protocol() -> anyhow::Result<()> {
    let root = scenarios()?;
    let server = Server::plain_http(root)?;
    let work = tempfile::tempdir()?;
    let meta = work.path().join("metadata");
    let targets = work.path().join("targets");
    let bin = cargo_bin("modelgate");
    let bin = bin.to_str().unwrap();
    let meta_s = meta.to_str().unwrap();
    let pinned = root.join("ok_delegated_target/root.json");
    let url = server.url("ok_delegated_target/phase1/metadata");
    let turl = server.url("ok_delegated_target/phase1/targets/");

    let targets_s = targets.to_str().unwrap().to_string();
    let download = |name: &str| {
        let args = [
            "tuf",
            "--metadata-url",
            &url,
            "--metadata-dir",
            meta_s,
            "--target-name",
            name,
            "--target-dir",
            &targets_s,
            "--target-base-url",
            &turl,
            "download",
        ];
        run_with_stdin(bin, &args, None)
    };
    let o = run_with_stdin(bin, &["tuf", "--metadata-dir", meta_s, "init", pinned.to_str().unwrap()], None)?;
    assert!(o.status.success(), "init: {}", String::from_utf8_lossy(&o.stderr));
    let o = run_with_stdin(bin, &["tuf", "--metadata-url", &url, "--metadata-dir", meta_s, "refresh"], None)?;
    assert!(o.status.success(), "refresh: {}", String::from_utf8_lossy(&o.stderr));
    let o = download("fraud/1.0/model.onnx")?;
    assert!(o.status.success(), "download: {}", String::from_utf8_lossy(&o.stderr));

    // Only role files, byte for byte as served.
    let mut files: Vec<String> = std::fs::read_dir(&meta)?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    assert_eq!(files, ["fraud-team.json", "root.json", "snapshot.json", "targets.json", "timestamp.json"]);
    for f in ["timestamp.json", "snapshot.json", "fraud-team.json"] {
        assert_eq!(
            std::fs::read(meta.join(f))?,
            std::fs::read(root.join("ok_delegated_target/phase1/metadata").join(f))?,
            "{f}"
        );
    }
    let fetched = targets.join("fraud%2F1.0%2Fmodel.onnx");
    assert!(fetched.exists());

    // A target already present with matching hashes is not fetched (nor rewritten) again.
    let before = std::fs::metadata(&fetched)?.modified()?;
    std::thread::sleep(Duration::from_millis(20));
    let o = download("fraud/1.0/model.onnx")?;
    assert!(o.status.success(), "second download: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::metadata(&fetched)?.modified()?, before, "an up-to-date target was fetched again");

    // The protocol's exit codes: 0 for success, 1 for any failure (3, which `modelgate
    // fetch` uses for a trust verdict, is not part of it).
    let o = download("nope")?;
    assert_eq!(o.status.code(), Some(1), "download of an unknown target");
    let garbage = work.path().join("garbage.json");
    std::fs::write(&garbage, "{\"signed\": {}}")?;
    let fresh = work.path().join("fresh");
    let fresh_s = fresh.to_str().unwrap();
    let o = run_with_stdin(bin, &["tuf", "--metadata-dir", fresh_s, "init", garbage.to_str().unwrap()], None)?;
    assert_eq!(o.status.code(), Some(1), "init with a root that is not one");
    let attack = root.join("rollback_timestamp");
    let o = run_with_stdin(
        bin,
        &["tuf", "--metadata-dir", fresh_s, "init", attack.join("root.json").to_str().unwrap()],
        None,
    )?;
    assert!(o.status.success());
    for phase in ["phase1", "phase2"] {
        let url = server.url(&format!("rollback_timestamp/{phase}/metadata"));
        let o = run_with_stdin(bin, &["tuf", "--metadata-url", &url, "--metadata-dir", fresh_s, "refresh"], None)?;
        let want = if phase == "phase1" { Some(0) } else { Some(1) };
        assert_eq!(o.status.code(), want, "refresh of {phase}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = run_with_stdin(
        bin,
        &["tuf", "--metadata-url", "http://127.0.0.1:9/nothing", "--metadata-dir", meta_s, "refresh"],
        None,
    )?;
    assert_eq!(o.status.code(), Some(1), "refresh of an unreachable repository");
    Ok(())
}

/// A client session (in memory, as the operator's) on scenario `base`'s first phase,
/// served over HTTPS; the server lives as long as the returned handle.
fn scenario_session(base: &str, now: Timestamp) -> anyhow::Result<(Server, Updater)> {
    let root = scenarios()?;
    let server = Server::https(root)?;
    let ca = std::fs::read(server.ca.as_ref().context("an HTTPS server")?)?;
    let transport = Transport::new(TransportOptions { ca_bundle: Some(ca), ..Default::default() })?;
    let url = Url::parse(&server.url(&format!("{base}/phase1/metadata/")))?;
    let pinned = std::fs::read(root.join(base).join("root.json"))?;
    let updater = Updater::new(Store::memory(), transport, url, Some(&pinned), Floors::default(), now)?;
    Ok((server, updater))
}

#[tokio::test]
async fn a_delegated_role_is_checked_for_expiry_at_every_lookup() -> anyhow::Result<()> {
    // One long-lived session (as the operator keeps between refreshes): the delegated
    // role that vouches for the target expires before the top-level metadata does.
    let now = Timestamp::now();
    let (_server, mut updater) = scenario_session("ok_delegation_expiring_first", now)?;
    updater.refresh().await?;
    assert!(updater.target("fraud/1.0/model.onnx").await.is_ok());
    updater.set_now(now + k8s_openapi::jiff::SignedDuration::from_hours(3 * 24));
    let stale = updater.target("fraud/1.0/model.onnx").await.unwrap_err();
    assert_eq!(stale.reason(), Reason::Expired, "{stale}");
    assert!(stale.to_string().contains("fraud-team"), "{stale}");
    Ok(())
}

#[tokio::test]
async fn a_delegated_role_is_verified_against_each_delegator_that_names_it() -> anyhow::Result<()> {
    // python-tuf's repository: role "shared" signed by the key "a" names, also
    // delegated by "b" with another key. The first lookup (through "a") passes; the
    // second (through "b") must not reuse that verdict.
    let base = "ok_delegations_checked_per_delegator";
    let root = scenarios()?;
    let (_server, mut updater) = scenario_session(base, Timestamp::now())?;
    updater.refresh().await?;
    assert!(updater.target("fraud/1.0/model.onnx").await.is_ok());
    let second = updater.target("payments/1.0/model.onnx").await.unwrap_err();
    assert_eq!(second.reason(), Reason::BadSignature, "{second}");
    assert!(second.to_string().contains("shared"), "{second}");
    // The same in the conformance client: one run, two targets, exit code 1, and the
    // first target (verified) written.
    let work = tempfile::tempdir()?;
    let meta = work.path().join("metadata");
    let targets = work.path().join("targets");
    let bin = cargo_bin("modelgate");
    let bin = bin.to_str().unwrap();
    let plain = Server::plain_http(root)?;
    let o = run_with_stdin(
        bin,
        &["tuf", "--metadata-dir", meta.to_str().unwrap(), "init", root.join(base).join("root.json").to_str().unwrap()],
        None,
    )?;
    assert!(o.status.success());
    let url = plain.url(&format!("{base}/phase1/metadata"));
    let turl = plain.url(&format!("{base}/phase1/targets/"));
    let args = [
        "tuf",
        "--metadata-url",
        &url,
        "--metadata-dir",
        meta.to_str().unwrap(),
        "--target-name",
        "fraud/1.0/model.onnx",
        "--target-name",
        "payments/1.0/model.onnx",
        "--target-dir",
        targets.to_str().unwrap(),
        "--target-base-url",
        &turl,
        "download",
    ];
    let o = run_with_stdin(bin, &args, None)?;
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(targets.join("fraud%2F1.0%2Fmodel.onnx").exists());
    assert!(!targets.join("payments%2F1.0%2Fmodel.onnx").exists());
    Ok(())
}

#[tokio::test]
async fn a_repository_published_with_tuftool_verifies() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let model = work.path().join("model.bin");
    std::fs::write(&model, (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>())?;
    let repo = work.path().join("published");
    let script = modelgate_tests::harness::repo_root().join("tests/tuf/tuftool-repo");
    let o = run_with_stdin(script.to_str().unwrap(), &[repo.to_str().unwrap(), model.to_str().unwrap()], None)?;
    assert!(o.status.success(), "tuftool-repo: {}", String::from_utf8_lossy(&o.stderr));

    let server = Server::https(&repo)?;
    let client = Client { server: &server, options: TransportOptions::default() };
    let pinned = std::fs::read(repo.join("root.json"))?;
    let out = work.path().join("out/model.onnx");
    let trusted =
        client.run_at("repo", &pinned, &work.path().join("metadata"), "model.onnx", &out, Timestamp::now()).await?;
    assert_eq!(std::fs::read(&out)?, std::fs::read(&model)?);
    // Readable by whatever user the model server runs as; writable by none.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out)?.permissions().mode() & 0o777, 0o444);
    assert_eq!(trusted.timestamp.0, 1);
    Ok(())
}

//! `kubectl modelgate` against a release on the real control plane: each verb is an
//! ordinary write, refused with a reason when it makes no sense.

use std::time::Duration;

use kube::api::PostParams;
use modelgate::api::Phase;
use modelgate_tests::{
    harness::{cargo_bin, kubectl_ok, run_with_stdin, token_kubeconfig},
    models::{release, set_target, wait_phase},
};
use serde_json::json;

use crate::rollout::rollout_test;

const V1: &str = "fraud/1.0/model.onnx";
const V2: &str = "fraud/2.0/model.onnx";
const WAIT: Duration = Duration::from_secs(90);

/// Runs the plugin in `ns`: (success, stdout, stderr).
fn plugin(ns: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let bin = cargo_bin("kubectl-modelgate");
    let args: Vec<&str> = [&["-n", ns][..], args].concat();
    let out = run_with_stdin(bin.to_str().unwrap(), &args, None)?;
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    Ok((out.status.success(), stdout, stderr))
}

#[tokio::test]
async fn the_kubectl_plugin_steers_a_release() -> anyhow::Result<()> {
    rollout_test("plugin", &["1.0", "2.0"], |_client, ns, repo, api| async move {
        let spec = json!({"strategy": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
        api.create(&PostParams::default(), &release("fraud", V1, 2, spec)?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;

        let (ok, _, err) = plugin(&ns, &["promote", "fraud"])?;
        assert!(!ok && err.contains("no rollout in progress (phase Promoted): nothing to promote"), "{err}");
        let (ok, _, err) = plugin(&ns, &["retry", "fraud"])?;
        assert!(!ok && err.contains("only a RolledBack or Rejected release can be retried"), "{err}");
        let (ok, _, err) = plugin(&ns, &["status", "nope"])?;
        assert!(!ok && err.contains("modelrelease \"nope\" not found"), "{err}");

        set_target(&api, "fraud", V2).await?;
        wait_phase(&api, "fraud", Phase::Paused, WAIT).await?;
        let (ok, out, err) = plugin(&ns, &["status", "fraud"])?;
        assert!(ok, "{err}");
        assert!(out.contains("Phase:     Paused"), "{out}");
        assert!(out.contains(&format!("Canary:    revision 2  {V2}  sha256 {}", &repo.sha256(V2)[..12])), "{out}");
        assert!(out.contains("Trusted=True"), "{out}");
        assert!(out.contains("RolloutStarted"), "{out}");

        let (ok, out, err) = plugin(&ns, &["plan", "fraud"])?;
        assert!(ok, "{err}");
        assert!(out.contains(&format!("Verify:    {V2}: trusted, sha256 {}", repo.sha256(V2))), "{out}");
        assert!(out.contains("0. setWeight 50%: canary 1 pod(s), stable 1"), "{out}");
        assert!(out.contains("name: modelgate-fetch"), "{out}");

        let (ok, out, _) = plugin(&ns, &["promote", "fraud"])?;
        assert!(ok && out.contains("promoted"), "{out}");
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        let (ok, out, _) = plugin(&ns, &["history", "fraud"])?;
        assert!(ok);
        assert!(out.lines().nth(1).unwrap().starts_with(&format!("1         {V1}")), "{out}");
        assert!(out.contains("serving: revision 2"), "{out}");

        // Back to revision 1 on request.
        let (ok, out, err) = plugin(&ns, &["rollback", "fraud"])?;
        assert!(ok && out.contains("rolling back to revision 1"), "{out}{err}");
        let r = wait_phase(&api, "fraud", Phase::RolledBack, WAIT).await?;
        assert_eq!(r.status.unwrap().stable.unwrap().revision.number, 1);

        // Revision 2's model is revoked: returning to it is refused, with the reason.
        repo.remove(&[V2])?;
        let (ok, _, err) = plugin(&ns, &["rollback", "fraud", "--to-revision", "2"])?;
        assert!(!ok && err.contains("refusing to roll back to revision 2") && err.contains("not trusted"), "{err}");
        let (ok, _, err) = plugin(&ns, &["rollback", "fraud", "--to-revision", "7"])?;
        assert!(!ok && err.contains("revision 7 of fraud was never promoted"), "{err}");

        // Someone without permission is told which one is missing.
        let token = kubectl_ok(&["create", "token", "default", "-n", &ns], None)?;
        let work = tempfile::tempdir()?;
        let kubeconfig = token_kubeconfig(token.trim(), work.path())?;
        let out = std::process::Command::new(cargo_bin("kubectl-modelgate"))
            .args(["-n", &ns, "promote", "fraud"])
            .env("KUBECONFIG", &kubeconfig)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("forbidden: you may not get modelreleases"), "{err}");
        assert!(err.contains(&format!("kubectl auth can-i get modelreleases -n {ns}")), "{err}");

        let (ok, _, _) = plugin(&ns, &["pause", "fraud"])?;
        assert!(ok);
        assert!(api.get("fraud").await?.spec.paused);
        let (ok, _, _) = plugin(&ns, &["resume", "fraud"])?;
        assert!(ok && !api.get("fraud").await?.spec.paused);
        Ok(())
    })
    .await
}

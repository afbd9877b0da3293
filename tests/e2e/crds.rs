//! The generated CRDs install with client-side and server-side `kubectl apply`, and the
//! operator refuses to start without them, saying how to install them.

use std::time::Duration;

use modelgate_tests::harness::{
    Operator, crds_exclusive, install_crds, kubectl, kubectl_ok, repo_root, wait_established,
};

#[tokio::test]
async fn crds_install_client_and_server_side_and_operator_needs_them() -> anyhow::Result<()> {
    let _exclusive = crds_exclusive().await;
    let dir = repo_root().join("crds");
    let dir = dir.to_str().unwrap();

    // Without CRDs the operator exits at once and says how to install them.
    kubectl_ok(&["delete", "-f", dir, "--ignore-not-found", "--wait=true"], None)?;
    let (code, log) = Operator::start(None, &[])?.wait_exit(Duration::from_secs(30))?;
    assert_eq!(code, Some(1), "operator without CRDs: {log}");
    assert!(log.contains("is not installed") && log.contains("modelgate crd | kubectl apply --server-side"), "{log}");

    // Client-side apply stores the whole CRD in an annotation; it must fit.
    let out = kubectl(&["apply", "-f", dir], None)?;
    assert!(out.status.success(), "client-side apply: {}", String::from_utf8_lossy(&out.stderr));
    wait_established(dir)?;
    // And server-side apply over it (what the docs recommend), idempotently twice.
    install_crds()?;
    let out = kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", dir], None)?;
    assert!(out.contains("serverside-applied"), "{out}");
    let names = kubectl_ok(&["get", "crd", "-o", "name"], None)?;
    assert!(
        names.contains("modelreleases.modelgate.dev") && names.contains("modelrepositories.modelgate.dev"),
        "{names}"
    );
    Ok(())
}

//! The admission webhook over the real API server, with real kubectl: what the operator
//! would refuse is refused at `kubectl apply` (and `--dry-run=server`) with the field
//! named, an update to a revoked model is refused while the running revision serves, a
//! webhook that is down fails applies clearly (or, with the break-glass policy, lets the
//! controller refuse in status), and a certificate rotation under load loses nothing.
//!
//! The operator runs on this machine, as in the other tests; the webhook configuration
//! calls it at `https://127.0.0.1:<port>` (the chart's Service form is the chart test's).

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use modelgate::api::{ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, kubectl, with_temp_ns},
    models::{ModelRepo, release, revisions, wait_phase},
};
use serde_json::json;

const V1: &str = "fraud/1.0/model.onnx";
const V2: &str = "fraud/2.0/model.onnx";
const WAIT: Duration = Duration::from_secs(90);

/// A free port on loopback for the webhook.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The webhook configuration of one test: its namespace only, calling `port`.
async fn configure(client: &Client, ns: &str, port: u16, policy: &str) -> anyhow::Result<String> {
    let name = format!("modelgate-{ns}");
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "modelreleases.modelgate.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": policy,
            "timeoutSeconds": 5,
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate-modelrelease")},
            "rules": [{"apiGroups": ["modelgate.dev"], "apiVersions": ["*"], "resources": ["modelreleases"],
                       "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
        }],
    }))?;
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    api.create(&PostParams::default(), &config).await?;
    Ok(name)
}

fn webhook_args(ns: &str, port: u16, config: &str) -> Vec<String> {
    [
        "--admission-address",
        &format!("127.0.0.1:{port}"),
        "--admission-name",
        "127.0.0.1",
        "--admission-webhook-configuration",
        config,
        "--admission-secret",
        "webhook-tls",
        "--trust-namespace",
        ns,
    ]
    .map(String::from)
    .to_vec()
}

/// `kubectl apply` of `manifest` in `ns`: (succeeded, stdout and stderr).
fn apply(ns: &str, manifest: &ModelRelease, extra: &[&str]) -> anyhow::Result<(bool, String)> {
    let yaml = serde_json::to_string(manifest)?;
    let out = kubectl(&[&["apply", "-n", ns, "-f", "-"], extra].concat(), Some(&yaml))?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), said))
}

/// One test's namespace, repository, operator with the webhook on, and its configuration
/// (deleted at the end, whatever happens).
async fn admission_test<F, Fut>(prefix: &str, policy: &'static str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Client, String, ModelRepo, Operator, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let _crds = crds_shared().await?;
    with_temp_ns(prefix, |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        repo.register(&client, &ns).await?;
        let port = free_port()?;
        let config = configure(&client, &ns, port, policy).await?;
        let args = webhook_args(&ns, port, &config);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let operator = Operator::start(Some(&ns), &args)?;
        let logs = operator.log_path();
        let result = body(client.clone(), ns, repo, operator, config.clone()).await;
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(client);
        configs.delete(&config, &DeleteParams::default()).await?;
        result.map_err(|e| {
            anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", std::fs::read_to_string(logs).unwrap_or_default())
        })
    })
    .await
}

fn privileged() -> anyhow::Result<ModelRelease> {
    release(
        "fraud",
        V1,
        1,
        json!({"template": {"spec": {"containers": [{"name": "server", "image": "i", "securityContext": {"privileged": true}}]}}}),
    )
}

/// Waits until the webhook answers (its certificate issued and in the configuration).
async fn answering(ns: &str) -> anyhow::Result<()> {
    eventually("the webhook answering", WAIT, || async {
        let (ok, said) = apply(ns, &privileged()?, &["--dry-run=server"])?;
        Ok((!ok && said.contains("denied the request")).then_some(()))
    })
    .await
}

#[tokio::test]
async fn what_the_operator_would_refuse_is_refused_at_apply() -> anyhow::Result<()> {
    admission_test("admission", "Fail", |client, ns, repo, operator, _config| async move {
        // Held for the whole test (a closure parameter not used in the block is dropped).
        let _operator = operator;
        answering(&ns).await?;
        // A pod the policy forbids, named and explained.
        let (ok, said) = apply(&ns, &privileged()?, &[])?;
        assert!(!ok && said.contains("spec.template:") && said.contains("privileged"), "{said}");
        // Gates the installation forbids (this operator allows only loopback, for the
        // tests' own servers): the metadata address.
        let metadata = release(
            "fraud",
            V1,
            1,
            json!({"gates": {"checks": [{"name": "judge", "webhook": {"url": "https://169.254.169.254/latest/meta-data/"}}]}}),
        )?;
        let (ok, said) = apply(&ns, &metadata, &[])?;
        assert!(!ok && said.contains("spec.gates.checks[0]: webhook.url: 169.254.169.254 is an address gates may not reach"), "{said}");
        // A target the repository does not sign: not known at the first look (let through
        // with a warning, nothing stored with --dry-run=server), refused once looked up.
        let unsigned = release("fraud", "fraud/9.9/model.onnx", 1, json!({}))?;
        let (ok, said) = apply(&ns, &unsigned, &["--dry-run=server"])?;
        assert!(ok || said.contains("spec.model.target"), "{said}");
        let said = eventually("the unsigned target refused", WAIT, || async {
            let (ok, said) = apply(&ns, &unsigned, &["--dry-run=server"])?;
            Ok((!ok).then_some(said))
        })
        .await?;
        assert!(said.contains("spec.model.target: fraud/9.9/model.onnx is not trusted by ml-models"), "{said}");
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        assert!(api.get_opt("fraud").await?.is_none(), "--dry-run=server stored nothing");

        // A good release goes through, and runs.
        let (ok, said) = apply(&ns, &release("fraud", V1, 2, json!({}))?, &[])?;
        assert!(ok, "{said}");
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        let generation = api.get("fraud").await?.metadata.generation;

        // 2.0 revoked: once the repository's next refresh has seen it (10 s here),
        // moving the release to it is refused, and 1.0 keeps serving.
        repo.remove(&[V2])?;
        let moved = release("fraud", V2, 2, json!({}))?;
        eventually("the revocation seen", WAIT, || async {
            let (ok, _) = apply(&ns, &moved, &["--dry-run=server"])?;
            Ok((!ok).then_some(()))
        })
        .await?;
        let (ok, said) = apply(&ns, &moved, &[])?;
        assert!(!ok, "{said}");
        assert!(said.contains("spec.model.target: fraud/2.0/model.onnx is not trusted by ml-models"), "{said}");
        let r = api.get("fraud").await?;
        assert_eq!(r.metadata.generation, generation, "nothing stored");
        assert_eq!(r.status.and_then(|s| s.phase), Some(Phase::Promoted));
        assert_eq!(revisions(&client, &ns, "fraud").await?.get(&1), Some(&2), "revision 1 keeps serving");
        // A command is not a change to judge.
        let out = kubectl(&["annotate", "-n", &ns, "mr/fraud", "modelgate.dev/retry=1", "--overwrite"], None)?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_webhook_that_is_down_fails_clearly_and_break_glass_leaves_it_to_the_controller() -> anyhow::Result<()> {
    admission_test("admission-down", "Fail", |client, ns, _repo, operator, config| async move {
        answering(&ns).await?;
        drop(operator);
        let (ok, said) = apply(&ns, &release("fraud", V1, 1, json!({}))?, &[])?;
        assert!(!ok && said.contains("failed calling webhook"), "{said}");

        // Break glass: the API server stores releases unjudged; the controller (here
        // without the webhook) still refuses what it must, in status.
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let ignore = json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]);
        configs.patch(&config, &PatchParams::default(), &Patch::<()>::Json(serde_json::from_value(ignore)?)).await?;
        let (ok, said) = eventually("applies let through", WAIT, || async {
            let (ok, said) = apply(&ns, &privileged()?, &[])?;
            Ok(ok.then_some((ok, said)))
        })
        .await?;
        assert!(ok, "{said}");
        let _controller = Operator::start(Some(&ns), &[])?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let r = wait_phase(&api, "fraud", Phase::Rejected, WAIT).await?;
        let message = r.status.and_then(|s| s.message).unwrap_or_default();
        assert!(message.contains("privileged"), "{message}");
        Ok(())
    })
    .await
}

/// Certificates of 90 s: a new pair every minute or so. Dry-run applies go on all along, and
/// none fails.
#[tokio::test]
async fn a_certificate_rotation_under_load_loses_no_admission() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("admission-rotate", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0"])?;
        repo.register(&client, &ns).await?;
        let port = free_port()?;
        let config = configure(&client, &ns, port, "Fail").await?;
        let mut args = webhook_args(&ns, port, &config);
        args.extend(["--admission-certificate-lifetime".into(), "90".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let operator = Operator::start(Some(&ns), &args)?;
        let result = async {
            answering(&ns).await?;
            let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
            let first = secrets.get("webhook-tls").await?.metadata.resource_version;
            // A steady stream (5 reviews a second, through the API server as kubectl
            // sends them), light enough not to crowd the tests running beside it.
            let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
            let dry_run = PostParams { dry_run: true, ..Default::default() };
            let (mut answered, mut failed) = (0, Vec::new());
            let started = Instant::now();
            let mut rotated_at = None;
            while started.elapsed() < Duration::from_secs(150) {
                match api.create(&dry_run, &privileged()?).await {
                    Err(kube::Error::Api(s)) if s.message.contains("spec.template:") => answered += 1,
                    other => failed.push(format!("{other:?}")),
                }
                if rotated_at.is_none() && secrets.get("webhook-tls").await?.metadata.resource_version != first {
                    rotated_at = Some(Instant::now());
                }
                // Past the rotation and the new certificate's first served seconds.
                if rotated_at.is_some_and(|at| at.elapsed() > Duration::from_secs(25)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let rotated = rotated_at.is_some();
            assert!(rotated, "no rotation in {:?}", started.elapsed());
            assert!(failed.is_empty(), "{} answered, failed: {failed:?}", answered);
            eprintln!("{answered} reviews answered across a rotation, none failed");
            anyhow::Ok(())
        }
        .await;
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        configs.delete(&config, &DeleteParams::default()).await?;
        result.map_err(|e| anyhow::anyhow!("{e:#}\n--- operator log ---\n{}", operator.logs()))
    })
    .await
}

/// A replica standing by (leader election) judges models from trust caches of its own,
/// refreshed read-only: an unsigned target and a revoked one are refused by it, signed
/// ones pass without a warning, it writes nothing while it stands by, and while it takes the lease over no answer is a
/// model let through unjudged.
#[tokio::test]
async fn a_replica_standing_by_judges_models_as_the_leader_does() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("admission-standby", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        repo.register(&client, &ns).await?;
        let (leader_port, standby_port) = (free_port()?, free_port()?);
        // The API server calls only the replica that stands by.
        let config = configure(&client, &ns, standby_port, "Fail").await?;
        let elect = ["--leader-elect", "--leader-election-namespace", ns.as_str()];
        let start = |port: u16| {
            let args = [webhook_args(&ns, port, &config), elect.map(String::from).to_vec()].concat();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Operator::start(Some(&ns), &args)
        };
        let leader = start(leader_port)?;
        eventually("the first replica leading", WAIT, || async {
            Ok(leader.logs().contains("leader election won").then_some(()))
        })
        .await?;
        let standby = start(standby_port)?;
        let result = async {
            answering(&ns).await?;
            let refused = |target: &'static str| {
                let ns = ns.clone();
                async move {
                    let manifest = release("fraud", target, 1, json!({}))?;
                    eventually(&format!("{target} refused by the replica standing by"), WAIT, || async {
                        let (ok, said) = apply(&ns, &manifest, &["--dry-run=server"])?;
                        Ok((!ok).then_some(said))
                    })
                    .await
                }
            };
            let said = refused("fraud/9.9/model.onnx").await?;
            assert!(said.contains("spec.model.target: fraud/9.9/model.onnx is not trusted by ml-models"), "{said}");
            // Signed models go through, without a warning once the standby has loaded them
            // (the first look starts the load).
            for target in [V1, V2] {
                let manifest = release("fraud", target, 1, json!({}))?;
                eventually(&format!("{target} admitted without a warning"), WAIT, || async {
                    let (ok, said) = apply(&ns, &manifest, &["--dry-run=server"])?;
                    assert!(ok, "{said}");
                    Ok((!said.contains("Warning")).then_some(()))
                })
                .await?;
            }
            // Revoked after the standby loaded it: refused once a refresh has seen it (its
            // copy of the metadata is older than the leader's floors by then).
            repo.remove(&[V2])?;
            let said = refused(V2).await?;
            assert!(said.contains("spec.model.target: fraud/2.0/model.onnx is not trusted by ml-models"), "{said}");
            assert!(!standby.logs().contains("leader election won"), "{}", standby.logs());
            // Nothing written by the standby: every Event of the namespace is the leader's
            // (the repository's refreshes), and the standby logged no write.
            assert!(!standby.logs().contains("repository event"), "{}", standby.logs());

            // The leader goes; while the standby takes the lease and fills its caches, and
            // after its standby view stopped, every answer on the unsigned model is a
            // refusal.
            drop(leader);
            let unsigned = release("fraud", "fraud/9.9/model.onnx", 1, json!({}))?;
            let mut answers = 0;
            let until = Instant::now() + WAIT;
            let mut leading_since = None;
            while leading_since.is_none_or(|at: Instant| at.elapsed() < Duration::from_secs(5)) {
                anyhow::ensure!(Instant::now() < until, "the standby did not take the lease over");
                let (ok, said) = apply(&ns, &unsigned, &["--dry-run=server"])?;
                assert!(!ok && said.contains("is not trusted by ml-models"), "answer {answers}: {said}");
                answers += 1;
                if leading_since.is_none() && standby.logs().contains("the standby trust view stopped") {
                    leading_since = Some(Instant::now());
                }
            }
            assert!(answers > 10, "{answers} answers");
            assert!(standby.logs().contains("leader election won"));
            Ok(())
        }
        .await;
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(client);
        configs.delete(&config, &DeleteParams::default()).await?;
        result.map_err(|e: anyhow::Error| anyhow::anyhow!("{e:#}\n--- standby's log ---\n{}", standby.logs()))
    })
    .await
}

/// A client on the pod network that opens connections to the webhook and sends nothing
/// holds at most 32 of them (one address's share of 256), each at most a few seconds:
/// the ones beyond are closed at once, the rest when the handshake's deadline passes,
/// and the API server's reviews are answered throughout.
#[tokio::test]
async fn idle_connections_to_the_webhook_are_capped_and_closed() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    admission_test("admission-idle", "Fail", |client, ns, _repo, operator, config| async move {
        let _operator = operator;
        answering(&ns).await?;
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(client);
        let url =
            configs.get(&config).await?.webhooks.unwrap_or_default()[0].client_config.url.clone().unwrap_or_default();
        let port: u16 = url.trim_start_matches("https://127.0.0.1:").split('/').next().unwrap_or_default().parse()?;
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await?);
        }
        // Each read ends when the server closes the connection (EOF or reset).
        let opened = Instant::now();
        let closed = futures::future::join_all(idle.into_iter().map(|mut c| async move {
            let mut buf = [0u8; 16];
            let ended = tokio::time::timeout(Duration::from_secs(30), c.read(&mut buf)).await;
            ended.is_ok().then(|| opened.elapsed())
        }))
        .await;
        let within = |s: u64| closed.iter().filter(|c| c.is_some_and(|at| at < Duration::from_secs(s))).count();
        assert_eq!(closed.iter().filter(|c| c.is_none()).count(), 0, "every idle connection is closed: {closed:?}");
        assert!(within(2) >= 168, "those beyond 32 closed at once: {} within 2 s", within(2));
        assert!(within(10) == 200, "all within the handshake's deadline: {closed:?}");
        // And the webhook answers.
        let (ok, said) = apply(&ns, &privileged()?, &["--dry-run=server"])?;
        assert!(!ok && said.contains("spec.template:"), "{said}");
        Ok(())
    })
    .await
}

//! Two replicas with leader election: one reconciles, the other takes over when it dies.
//! And what the operator exposes: `/metrics` (OpenMetrics), `/healthz`, `/readyz`.

use std::time::Duration;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Namespace, events::v1::Event};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use modelgate::api::{ModelRelease, Phase};
use modelgate_tests::{
    harness::{Operator, crds_shared, eventually, with_temp_ns},
    models::{ModelRepo, release, set_target, wait_phase, wait_stable},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn two_replicas_elect_one_leader_which_fails_over_and_reports_metrics() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("leader", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        repo.register(&client, &ns).await?;
        let elect = ["--leader-elect", "--leader-election-namespace", ns.as_str()];
        let a = Operator::start(Some(&ns), &elect)?;
        let b = Operator::start(Some(&ns), &elect)?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &release("fraud", "fraud/1.0/model.onnx", 2, json!({}))?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;

        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let lease = leases.get("modelgate-leader").await?;
        let holder = lease.spec.unwrap().holder_identity.unwrap();
        let won = |op: &Operator| op.logs().contains("leader election won");
        let (leader, follower) = match (won(&a), won(&b)) {
            (true, false) => (a, b),
            (false, true) => (b, a),
            other => anyhow::bail!("exactly one replica must lead, got {other:?}"),
        };
        assert!(follower.logs().contains("another replica leads; waiting"));
        assert!(!follower.logs().contains("phase changed"), "the follower reconciled:\n{}", follower.logs());

        // The leader's endpoints.
        let address = leader.http_address().expect("the leader logged its address");
        let get = |path: &str| {
            let url = format!("http://{address}{path}");
            async move { anyhow::Ok(reqwest::get(url).await?) }
        };
        assert_eq!(get("/healthz").await?.status(), 200);
        assert_eq!(get("/readyz").await?.status(), 200);
        let page = get("/metrics").await?.text().await?;
        for want in [
            "modelgate_releases{phase=\"Promoted\"} 1".to_string(),
            "modelgate_releases_needing_attention 0".to_string(),
            "modelgate_reconciles_total{controller=\"release\"}".to_string(),
            "modelgate_reconcile_duration_seconds_bucket{".to_string(),
            format!(
                "modelgate_repository_floor_version{{namespace=\"{ns}\",repository=\"ml-models\",role=\"timestamp\"}} 2"
            ),
        ] {
            assert!(page.contains(&want), "no {want} in\n{page}");
        }
        let follower_address = follower.http_address().expect("the follower serves health too");
        // A follower standing by is ready once its own trust view is warm, 30 s at the
        // latest: it must not hold up a rollout of the operator.
        eventually("the follower ready", Duration::from_secs(35), || async {
            let ready = reqwest::get(format!("http://{follower_address}/readyz")).await?.status();
            Ok((ready == 200).then_some(()))
        })
        .await?;

        // The leader dies; the follower takes the lease and carries on.
        drop(leader);
        set_target(&api, "fraud", "fraud/2.0/model.onnx").await?;
        eventually("the follower to take over", Duration::from_secs(40), || async {
            let lease = leases.get("modelgate-leader").await?.spec.unwrap();
            Ok((lease.holder_identity.as_deref() != Some(holder.as_str())).then_some(lease))
        })
        .await?;
        let r = wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        wait_stable(&api, "fraud", 2, WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("{e}: {:?}\n{}", r.status, follower.logs()))?;
        assert!(follower.logs().contains("leader election won"));
        Ok(())
    })
    .await
}

/// A rolling update of the operator: the leader gets SIGTERM, gives its Lease up, and the
/// follower leads within two seconds instead of waiting out the 15-second lease.
#[tokio::test]
async fn on_sigterm_the_leader_hands_over_within_two_seconds() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("handover", |client, ns| async move {
        let elect = ["--leader-elect", "--leader-election-namespace", ns.as_str()];
        let a = Operator::start(Some(&ns), &elect)?;
        let b = Operator::start(Some(&ns), &elect)?;
        let won = |op: &Operator| op.logs().contains("leader election won");
        let waiting = |op: &Operator| op.logs().contains("another replica leads; waiting");
        eventually("one leader and one follower", WAIT, || async {
            Ok(((won(&a) && waiting(&b)) || (won(&b) && waiting(&a))).then_some(()))
        })
        .await?;
        let (leader, follower) = if won(&a) { (a, b) } else { (b, a) };
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let before = leases.get("modelgate-leader").await?.spec.and_then(|s| s.holder_identity);
        let asked = std::time::Instant::now();
        assert_eq!(leader.terminate(Duration::from_secs(10))?, Some(0));
        eventually("the follower to lead", Duration::from_secs(20), || async { Ok(won(&follower).then_some(())) })
            .await?;
        let handover = asked.elapsed();
        let after = leases.get("modelgate-leader").await?.spec.and_then(|s| s.holder_identity);
        assert_ne!(before, after, "the Lease changed hands");
        eprintln!("SIGTERM -> new leader in {handover:?}");
        assert!(handover < Duration::from_secs(2), "handover took {handover:?}");
        Ok(())
    })
    .await
}

/// A namespace moved from one shard to another mid-rollout, the way a `helm upgrade` of
/// the chart's `shards` does it: the new shard's operator starts serving the namespace
/// while the old one still does, then the old one stops. For that overlap two operators
/// decide on the same release; each decision is a compare-and-swap on the release, so
/// every step is taken once and the rollout completes once.
#[tokio::test]
async fn a_namespace_moved_between_shards_mid_rollout_completes_the_rollout_once() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    with_temp_ns("shard-move", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        repo.register(&client, &ns).await?;
        let shard = |name: &str| {
            let lease = format!("modelgate-leader-{name}");
            let args = ["--leader-elect", "--leader-election-namespace", ns.as_str(), "--leader-election-name", &lease];
            Operator::start(Some(&ns), &args)
        };
        let a = shard("a")?;
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let steps = json!({"strategy": {"steps": [
            {"setWeight": 25}, {"pause": {"duration": "4s"}}, {"setWeight": 50}, {"pause": {"duration": "4s"}},
            {"setWeight": 75}, {"pause": {"duration": "4s"}},
        ]}});
        api.create(&PostParams::default(), &release("fraud", "fraud/1.0/model.onnx", 4, steps)?).await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        set_target(&api, "fraud", "fraud/2.0/model.onnx").await?;
        eventually("revision 2 at its first pause", WAIT, || async {
            let r = api.get("fraud").await?;
            Ok(r.status.and_then(|s| s.canary).is_some_and(|c| c.step >= 1).then_some(()))
        })
        .await?;

        // Shard b takes the namespace; shard a keeps it for a while longer (its old pod
        // still runs during the upgrade), then goes.
        let b = shard("b")?;
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        eventually("shard b leading its own Lease", WAIT, || async {
            Ok(leases.get_opt("modelgate-leader-b").await?.and_then(|l| l.spec?.holder_identity).map(|_| ()))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let a_log = a.logs();
        assert_eq!(a.terminate(Duration::from_secs(10))?, Some(0), "shard a stops cleanly");

        let r = wait_phase(&api, "fraud", Phase::Promoted, WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n--- shard a ---\n{a_log}\n--- shard b ---\n{}", b.logs()))?;
        let history: Vec<_> =
            r.status.as_ref().unwrap().history.iter().map(|h| (h.revision.number, h.outcome.to_string())).collect();
        assert_eq!(history, [(1, "Promoted".to_string()), (2, "Promoted".to_string())]);
        each_step_once(&client, &ns, 2, 6).await?;
        assert!(b.logs().contains("phase changed"), "shard b took part:\n{}", b.logs());
        Ok(())
    })
    .await
}

/// Every step of `revision` completed once, and it was promoted once, by the events the
/// operators published. (Events are published after the status that records them: wait
/// for the last one.)
async fn each_step_once(client: &kube::Client, ns: &str, revision: u32, steps: u32) -> anyhow::Result<()> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let prefix = format!("revision {revision} ");
    let notes = || async {
        let notes: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|e| e.reason.as_deref().is_some_and(|r| r == "StepCompleted" || r == "Promoted"))
            .filter_map(|e| e.note.clone())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        anyhow::Ok(notes)
    };
    eventually("the Promoted event", Duration::from_secs(20), || async {
        Ok(notes().await?.iter().any(|n| n.contains("promoted")).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // a second Promoted, if any, would be in by now
    let notes = notes().await?;
    for step in 0..steps {
        let count = notes.iter().filter(|n| n.contains(&format!("completed step {step};"))).count();
        assert_eq!(count, 1, "step {step} completed {count} times: {notes:#?}");
    }
    assert_eq!(notes.iter().filter(|n| n.contains("promoted")).count(), 1, "{notes:#?}");
    Ok(())
}

/// Labelled shards (`--namespace-selector`, the chart's shards without lists): a shard
/// serves a namespace from the moment the namespace carries its label, and relabelling
/// the namespace mid-rollout moves it in one step. The old shard finishes its reconciles
/// in flight and lets go, the new one picks the rollout up, every step is taken once.
#[tokio::test]
async fn a_relabelled_namespace_moves_between_shards_mid_rollout_and_completes_the_rollout_once() -> anyhow::Result<()>
{
    let _crds = crds_shared().await?;
    with_temp_ns("shard-label", |client, ns| async move {
        let repo = ModelRepo::new("fraud", &["1.0", "2.0"])?;
        repo.register(&client, &ns).await?;
        // Label values unique to this test: other tests' namespaces are never picked.
        let label = |shard: &str| format!("{ns}-{shard}");
        let shard = |name: &str| {
            let lease = format!("modelgate-leader-{name}");
            let selector = format!("modelgate.dev/shard={}", label(name));
            let args = [
                "--namespace-selector",
                &selector,
                "--leader-elect",
                "--leader-election-namespace",
                ns.as_str(),
                "--leader-election-name",
                &lease,
            ];
            Operator::start(None, &args)
        };
        let (a, b) = (shard("a")?, shard("b")?);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let give_to = |shard: &str| {
            let patch = json!({"metadata": {"labels": {"modelgate.dev/shard": label(shard)}}});
            let (namespaces, ns) = (namespaces.clone(), ns.clone());
            async move { namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(&patch)).await }
        };
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let steps = json!({"strategy": {"steps": [
            {"setWeight": 25}, {"pause": {"duration": "4s"}}, {"setWeight": 50}, {"pause": {"duration": "4s"}},
            {"setWeight": 75}, {"pause": {"duration": "4s"}},
        ]}});
        api.create(&PostParams::default(), &release("fraud", "fraud/1.0/model.onnx", 4, steps)?).await?;
        // A leading shard with no namespace to serve is ready (`helm install --wait`
        // must not hang on it); the unlabelled namespace is nobody's, so the release
        // is left alone.
        for operator in [&a, &b] {
            eventually("each shard leading and ready with no namespace", WAIT, || async {
                let Some(address) = operator.http_address() else { return Ok(None) };
                if !operator.logs().contains("leader election won") {
                    return Ok(None);
                }
                let ready = reqwest::get(format!("http://{address}/readyz")).await?.status();
                Ok((ready == 200).then_some(()))
            })
            .await?;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(api.get("fraud").await?.status.is_none(), "an unlabelled namespace was served");

        give_to("a").await?;
        wait_phase(&api, "fraud", Phase::Promoted, WAIT).await?;
        set_target(&api, "fraud", "fraud/2.0/model.onnx").await?;
        eventually("revision 2 at its first pause", WAIT, || async {
            let r = api.get("fraud").await?;
            Ok(r.status.and_then(|s| s.canary).is_some_and(|c| c.step >= 1).then_some(()))
        })
        .await?;

        give_to("b").await?;
        let r = wait_phase(&api, "fraud", Phase::Promoted, WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n--- shard a ---\n{}\n--- shard b ---\n{}", a.logs(), b.logs()))?;
        let history: Vec<_> =
            r.status.as_ref().unwrap().history.iter().map(|h| (h.revision.number, h.outcome.to_string())).collect();
        assert_eq!(history, [(1, "Promoted".to_string()), (2, "Promoted".to_string())]);
        each_step_once(&client, &ns, 2, 6).await?;
        let (a_log, b_log) = (a.logs(), b.logs());
        assert!(a_log.contains("namespace no longer selected"), "shard a let go:\n{a_log}");
        assert!(b_log.contains("namespace selected") && b_log.contains("phase changed"), "shard b took over:\n{b_log}");
        // Shard a's watches of the namespace are gone with it: it reports no release.
        let releases_of = |operator: &Operator| {
            let url = format!("http://{}/metrics", operator.http_address().unwrap_or_default());
            async move {
                let page = reqwest::get(url).await?.text().await?;
                anyhow::Ok(
                    page.lines().find(|l| l.starts_with("modelgate_releases{phase=\"Promoted\"}")).map(str::to_owned),
                )
            }
        };
        assert_eq!(releases_of(&a).await?.as_deref(), Some("modelgate_releases{phase=\"Promoted\"} 0"), "{a_log}");
        assert_eq!(releases_of(&b).await?.as_deref(), Some("modelgate_releases{phase=\"Promoted\"} 1"), "{b_log}");
        // Both stop cleanly, with or without namespaces to serve.
        assert_eq!(a.terminate(Duration::from_secs(10))?, Some(0), "{a_log}");
        assert_eq!(b.terminate(Duration::from_secs(10))?, Some(0), "{b_log}");
        Ok(())
    })
    .await
}

/// A selector the API server refuses stops the operator at start with what to write
/// instead (its namespace watch would otherwise retry forever); it and `--namespace`
/// exclude each other.
#[tokio::test]
async fn a_namespace_selector_the_api_server_refuses_stops_the_operator_with_an_example() -> anyhow::Result<()> {
    let _crds = crds_shared().await?;
    let (code, log) =
        Operator::start(None, &["--namespace-selector", "shard in (a"])?.wait_exit(Duration::from_secs(30))?;
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("is not a label selector the API server accepts") && log.contains("modelgate.dev/shard=a"),
        "{log}"
    );
    let (code, log) = Operator::start(Some("default"), &["--namespace-selector", "modelgate.dev/shard=a"])?
        .wait_exit(Duration::from_secs(30))?;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("cannot be used with"), "{log}");
    Ok(())
}

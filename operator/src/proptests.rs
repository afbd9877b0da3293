//! Properties over hostile input: whatever a tenant writes in a ModelRelease, whatever a
//! status holds (an older operator, a hand edit) and whatever the cluster and the
//! repository report, the planner, the workload renderer and the plugin's views return
//! an answer and never panic; the planner's answer stays within its own bounds.

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::api::ObjectMeta;
use proptest::prelude::*;
use serde_json::json;

use crate::{
    api::{
        CanaryStatus, ConfigMapKeyRef, ConfigMapSource, FETCH_CONTAINER, GateCheck, GateStatus, Gates, HistoryEntry,
        ModelRef, ModelRelease, ModelReleaseSpec, ModelReleaseStatus, ModelRepository, ModelRepositorySpec,
        ModelSource, Outcome, Pause, Phase, PrometheusCheck, RepositoryRef, RevisionRef, RevisionStatus,
        RevocationAction, RollbackPolicy, Step, WebhookCheck,
    },
    plan::{
        self, Commands, GateOutcome, GateResult, Observed, PodHealth, PodProblem, Repository, Verdict, Workload,
        pod_policy::{Level, PodPolicy},
    },
    workload,
};

/// Strings a hostile tenant or signer would try: empty, huge numbers, control and
/// multi-byte characters, durations at and past every bound.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("99999999999999999999h".to_string()),
        Just("99999h99999h99999h99999h".to_string()),
        Just("0s".to_string()),
        Just("1ms".to_string()),
        Just("é".repeat(7)),
        Just("\u{1b}[2J".to_string()),
        "[0-9.hms]{0,24}",
        "[a-f0-9]{0,70}",
        ".{0,40}",
    ]
}

/// Seconds anywhere in the range jiff accepts, with weight on its edges (where adding a
/// duration overflows) and on the present.
fn seconds() -> impl Strategy<Value = i64> {
    const MIN: i64 = -377_705_116_800;
    const MAX: i64 = 253_402_207_200;
    prop_oneof![
        1 => MIN..=MAX,
        3 => (MAX - 3600)..=MAX,
        1 => (MAX - 30 * 24 * 3600)..=MAX,
        1 => MIN..=(MIN + 3600),
        2 => 1_790_000_000i64..1_790_100_000,
    ]
}

fn time() -> impl Strategy<Value = Option<Time>> {
    proptest::option::of(seconds().prop_map(|s| Time(Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH))))
}

fn spec() -> impl Strategy<Value = ModelReleaseSpec> {
    let steps = proptest::collection::vec(
        (proptest::option::of(any::<i32>()), proptest::option::of(proptest::option::of(text()))),
        0..5,
    );
    let checks = proptest::collection::vec(("[a-c]{1,2}", any::<bool>()), 0..3);
    let templates = prop_oneof![
        Just(json!({})),
        Just(json!({"spec": {"containers": []}})),
        Just(json!({"spec": {"containers": [{"name": "s", "image": "i"}]}})),
        Just(
            json!({"spec": {"hostNetwork": true, "containers": [{"name": "s", "image": "i", "securityContext": {"privileged": true}}]}})
        ),
        Just(
            json!({"spec": {"containers": [{"name": "s", "image": "i", "volumeMounts": [{"name": "modelgate-model", "mountPath": "/x"}]}]}})
        ),
    ];
    (
        (text(), text(), any::<i32>(), templates, steps, any::<bool>()),
        (text(), text(), text(), any::<i32>(), any::<i32>(), checks, text(), any::<bool>()),
    )
        .prop_map(
            |(
                (target, mount_path, replicas, template, steps, paused),
                (interval, deadline, window, failure_limit, inconclusive_limit, checks, timeout, automatic),
            )| {
                ModelReleaseSpec {
                    analysis: None,
                    repository_ref: RepositoryRef { kind: Default::default(), name: "repo".into() },
                    model: ModelSource { target, mount_path, ..Default::default() },
                    replicas,
                    template: serde_json::from_value(template).unwrap_or_default(),
                    strategy: crate::api::Strategy {
                        steps: steps
                            .into_iter()
                            .map(|(w, p)| Step {
                                set_weight: w,
                                pause: p.map(|duration| Pause { duration: duration.map(Into::into) }),
                            })
                            .collect(),
                        traffic: Default::default(),
                    },
                    gates: Gates {
                        interval: interval.into(),
                        failure_limit,
                        inconclusive_limit,
                        progress_deadline: deadline.into(),
                        checks: checks
                            .into_iter()
                            .map(|(name, webhook)| GateCheck {
                                name,
                                prometheus: (!webhook).then(|| PrometheusCheck {
                                    address: "https://p".into(),
                                    query: "q".into(),
                                    min: None,
                                    max: Some(1.0),
                                }),
                                webhook: webhook.then(|| WebhookCheck {
                                    url: "https://w".into(),
                                    timeout: timeout.clone().into(),
                                    retries: 1,
                                    ca_bundle: None,
                                }),
                            })
                            .collect(),
                    },
                    rollback: RollbackPolicy {
                        automatic,
                        post_promotion_window: window.into(),
                        on_revocation: RevocationAction::Rollback,
                        keep_warm: Default::default(),
                    },
                    paused,
                    service: None,
                }
            },
        )
}

fn phase() -> impl Strategy<Value = Option<Phase>> {
    proptest::option::of(prop_oneof![
        Just(Phase::Verifying),
        Just(Phase::Progressing),
        Just(Phase::Paused),
        Just(Phase::Promoted),
        Just(Phase::RollingBack),
        Just(Phase::RolledBack),
        Just(Phase::Rejected),
    ])
}

fn hash() -> impl Strategy<Value = String> {
    prop_oneof![Just("h1".to_string()), Just("h2".to_string()), text()]
}

fn revision() -> impl Strategy<Value = RevisionRef> {
    (any::<i64>(), hash(), text(), proptest::option::of(text())).prop_map(|(number, hash, target, sha256)| {
        RevisionRef { number, hash, target, sha256, length: Some(1), ..Default::default() }
    })
}

fn status() -> impl Strategy<Value = Option<ModelReleaseStatus>> {
    let stable = proptest::option::of(
        (revision(), time()).prop_map(|(revision, promoted_at)| RevisionStatus { revision, promoted_at }),
    );
    let canary = proptest::option::of((revision(), any::<i32>(), any::<i32>(), time()).prop_map(
        |(revision, step, weight, step_started_at)| CanaryStatus {
            revision,
            step,
            weight,
            started_at: None,
            step_started_at,
            ..Default::default()
        },
    ));
    let gates = proptest::collection::vec(
        (
            "[a-c]{1,2}",
            prop_oneof![Just(GateResult::Pass), Just(GateResult::Fail), Just(GateResult::Inconclusive)],
            any::<i32>(),
            any::<i32>(),
            time(),
        )
            .prop_map(|(name, result, f, i, last)| GateStatus {
                name,
                result,
                last_value: None,
                consecutive_failures: f,
                consecutive_inconclusive: i,
                last_evaluated: last,
            }),
        0..3,
    );
    let history = proptest::collection::vec(
        (
            revision(),
            prop_oneof![
                Just(Outcome::Promoted),
                Just(Outcome::RolledBack),
                Just(Outcome::Rejected),
                Just(Outcome::Superseded)
            ],
        )
            .prop_map(|(revision, outcome)| HistoryEntry { revision, outcome, ..Default::default() }),
        0..25,
    );
    proptest::option::of((phase(), stable, canary, gates, history).prop_map(
        |(phase, stable, canary, gates, history)| ModelReleaseStatus {
            phase,
            stable,
            canary,
            gates,
            history,
            ..Default::default()
        },
    ))
}

fn observed() -> impl Strategy<Value = Observed> {
    let verdict = prop_oneof![
        (text(), any::<i64>(), any::<i64>()).prop_map(|(sha256, length, files)| Verdict::Trusted {
            sha256,
            length,
            files,
            signer: None,
            image: None,
        }),
        (any::<bool>(), text()).prop_map(|(policy, message)| Verdict::Untrusted {
            reason: if policy {
                crate::plan::Untrusted::NotAllowedByPolicy
            } else {
                crate::plan::Untrusted::Trust(crate::trust::Reason::UnknownTarget)
            },
            message
        }),
        text().prop_map(|message| Verdict::Unknown { message }),
    ];
    let problem = proptest::option::of(prop_oneof![
        (text(), text()).prop_map(|(reason, message)| PodProblem::Hard { reason, message }),
        text().prop_map(|message| PodProblem::Untrusted { message }),
        (text(), text()).prop_map(|(reason, message)| PodProblem::Waiting { reason, message }),
    ]);
    let gate = ("[a-c]{1,2}", 0..3u8, text()).prop_map(|(name, r, detail)| GateOutcome {
        name,
        result: [GateResult::Pass, GateResult::Fail, GateResult::Inconclusive][usize::from(r % 3)],
        detail,
    });
    (
        proptest::collection::btree_map(text().prop_map(|t| ModelRef::from(t.as_str())), verdict, 0..4),
        proptest::collection::btree_map(hash(), (any::<i64>(), any::<i32>()), 0..3),
        proptest::collection::btree_map(hash(), (any::<i32>(), problem), 0..3),
        proptest::collection::vec(gate, 0..3),
        proptest::collection::vec(proptest::option::of(text()), 5),
        proptest::option::of(text()),
        any::<bool>(),
    )
        .prop_map(|(verdicts, workloads, pods, gates, commands, refusal, found)| Observed {
            // Some runs see a workload whose template someone changed.
            changed: workloads.keys().take(usize::from(!found)).map(|h| (h.clone(), format!("fraud-{h}"))).collect(),
            repository: if found { Repository::Found { on_revocation: None } } else { Repository::Missing },
            verdicts,
            workloads: workloads
                .into_iter()
                .map(|(h, (revision, replicas))| (h, Workload { revision, replicas }))
                .collect(),
            pods: pods
                .into_iter()
                .map(|(h, (ready, problem))| {
                    (h, PodHealth { ready, problem, created: ready, scheduled: ready, initialized: ready })
                })
                .collect::<BTreeMap<_, _>>(),
            gates,
            gates_started: None,
            analysis: None,
            commands: Commands {
                promote: commands.first().cloned().flatten(),
                promote_full: commands.get(1).cloned().flatten(),
                retry: commands.get(2).cloned().flatten(),
                abort: commands.get(3).cloned().flatten(),
                rollback: commands.get(4).cloned().flatten(),
                drop_warm: commands.get(5).cloned().flatten(),
            },
            refusal,
            service_conflict: None,
            foreign: if found { Vec::new() } else { vec!["fraud-0a1b2".into()] },
        })
}

fn release(spec: ModelReleaseSpec, status: Option<ModelReleaseStatus>) -> ModelRelease {
    let mut r = ModelRelease::new("fraud", spec);
    r.metadata = ObjectMeta {
        name: Some("fraud".into()),
        namespace: Some("team".into()),
        uid: Some("u".into()),
        generation: Some(3),
        ..Default::default()
    };
    r.status = status;
    r
}

/// Runs a property on a thread with room for proptest's nested strategies (a debug
/// build of these generators needs more than a test thread's 2 MiB stack).
fn check<S, F>(strategy: S, test: F)
where
    S: Strategy + Send + 'static,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
{
    let run = move || {
        let mut runner =
            proptest::test_runner::TestRunner::new(ProptestConfig { cases: 4096, ..ProptestConfig::default() });
        runner.run(&strategy, test).map_err(|e| e.to_string())
    };
    let outcome = std::thread::Builder::new().stack_size(64 << 20).spawn(run).map(|t| t.join());
    match outcome {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(failure))) => panic!("{failure}"),
        Ok(Err(_)) => panic!("the property panicked"),
        Err(e) => panic!("cannot start the property thread: {e}"),
    }
}

#[test]
fn the_planner_answers_whatever_it_is_given() {
    check((spec(), status(), observed(), seconds(), any::<u8>()), |(spec, mut status, mut obs, now, mode)| {
        // Tie the generated status to the spec often enough that every rule runs: the
        // canary (or the stable) is the spec's revision, its target trusted as recorded.
        let desired = plan::revision_hash(&spec);
        if let Some(s) = status.as_mut() {
            if mode & 1 == 1
                && let Some(c) = s.canary.as_mut()
            {
                c.revision.hash.clone_from(&desired);
                if mode & 4 == 4 {
                    let sha256 = c.revision.sha256.clone().unwrap_or_default();
                    obs.verdicts.insert(
                        c.revision.model(),
                        Verdict::Trusted { sha256, length: 1, files: 1, signer: None, image: None },
                    );
                    obs.refusal = None;
                    obs.repository = Repository::Found { on_revocation: None };
                }
            }
            if mode & 2 == 2
                && let Some(st) = s.stable.as_mut()
            {
                st.revision.hash.clone_from(&desired);
                if mode & 8 == 8 {
                    let sha256 = st.revision.sha256.clone().unwrap_or_default();
                    obs.verdicts.insert(
                        st.revision.model(),
                        Verdict::Trusted { sha256, length: 1, files: 1, signer: None, image: None },
                    );
                    obs.repository = Repository::Found { on_revocation: None };
                }
            }
        }
        let release = release(spec, status);
        let now = Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH);
        let _ = plan::gates_due(&release, now);
        let plan = plan::plan(&release, &obs, now);
        let before = release.status.as_ref().map_or(0, |s| s.history.len());
        prop_assert!(plan.status.history.len() <= plan::MAX_HISTORY.max(before));
        prop_assert!(plan.requeue >= std::time::Duration::from_secs(1));
        prop_assert!(plan.requeue <= std::time::Duration::from_secs(1800));
        for g in &plan.status.gates {
            prop_assert!(g.last_value.as_ref().is_none_or(|v| v.len() <= 310));
        }
        // The views an SRE reads never panic either.
        let mut shown = release.clone();
        shown.status = Some(plan.status);
        let _ = crate::plugin::history_view(&shown);
        Ok(())
    });
}

#[test]
fn rendering_refuses_or_renders_never_panics() {
    check((spec(), text(), any::<i64>(), any::<i32>(), 0..3u8), |(spec, sha256, length, replicas, level)| {
        let release = release(spec, None);
        let repo = ModelRepository::new(
            "repo",
            ModelRepositorySpec {
                metadata_url: "https://tuf/m/".into(),
                targets_url: "https://tuf/t/".into(),
                trusted_root: ConfigMapSource {
                    config_map_ref: ConfigMapKeyRef { name: "r".into(), key: "root.json".into() },
                },
                ca_bundle: None,
                provenance: None,
                images: None,
                refresh_interval: "5m".into(),
            },
        );
        let policy = PodPolicy {
            level: [Level::Privileged, Level::Baseline, Level::Restricted][usize::from(level % 3)],
            operator_service_account: Some(("team".into(), "modelgate".into())),
        };
        let model = release.spec.model.model();
        let revision = plan::Revision {
            number: 1,
            hash: "h1",
            model,
            sha256: &sha256,
            length,
            files: 1,
            signed: false,
            image: None,
        };
        match workload::replica_set(
            &release,
            &workload::TrustFiles::namespaced("repo", &repo.spec),
            &revision,
            replicas,
            "img",
            &policy,
            Default::default(),
        ) {
            Ok(rs) => {
                // A rendered pod always starts with the fetch and mounts the model read-only.
                prop_assert_eq!(&rs["spec"]["template"]["spec"]["initContainers"][0]["name"], FETCH_CONTAINER);
                for c in rs["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten() {
                    let mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
                    prop_assert!(
                        mounts.iter().filter(|m| m["name"] == "modelgate-model").all(|m| m["readOnly"] == true)
                    );
                }
            }
            Err(refused) => prop_assert!(!refused.0.is_empty()),
        }
        Ok(())
    });
}

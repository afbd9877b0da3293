//! The rollout rules, phase by phase. A `World` plays the controller: it feeds each
//! plan's status back into the release and its scale into the observed workloads, and
//! (unless told otherwise) makes every asked-for pod Ready.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use serde_json::json;

use super::*;
use crate::api::{
    GateCheck, Gates, ModelReleaseSpec, ModelReleaseStatus, ModelSource, Pause, Phase, PrometheusCheck, RepositoryRef,
    RevocationAction, RollbackPolicy, Step, Strategy,
};

const V1: &str = "fraud/1.0/model.onnx";
const V2: &str = "fraud/2.0/model.onnx";
const V3: &str = "fraud/3.0/model.onnx";

fn sha(target: &str) -> String {
    format!("{:0>64}", target.len() + target.as_bytes()[6] as usize)
}

fn at(sec: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + sec).unwrap()
}

fn weight(w: i32) -> Step {
    Step { set_weight: Some(w), pause: None }
}

fn pause(d: Option<&str>) -> Step {
    Step { set_weight: None, pause: Some(Pause { duration: d.map(Into::into) }) }
}

fn gate(name: &str) -> GateCheck {
    GateCheck {
        name: name.into(),
        prometheus: Some(PrometheusCheck {
            address: "http://p:9090".into(),
            query: "q".into(),
            min: None,
            max: Some(0.0),
        }),
        webhook: None,
    }
}

struct World {
    release: ModelRelease,
    obs: Observed,
    /// Make every asked-for pod Ready when a plan scales a workload.
    auto_ready: bool,
    last: Option<Plan>,
}

impl World {
    fn new(steps: Vec<Step>) -> Self {
        let mut release = ModelRelease::new(
            "fraud",
            ModelReleaseSpec {
                analysis: None,
                repository_ref: RepositoryRef { kind: Default::default(), name: "ml-models".into() },
                model: ModelSource { target: V1.into(), mount_path: "/models".into(), ..Default::default() },
                replicas: 4,
                template: serde_json::from_value(json!({"spec": {"containers": [{"name": "s", "image": "srv:1"}]}}))
                    .unwrap(),
                strategy: Strategy { steps, traffic: Default::default() },
                gates: Gates::default(),
                rollback: RollbackPolicy::default(),
                paused: false,
                service: None,
            },
        );
        release.metadata = ObjectMeta {
            name: Some("fraud".into()),
            namespace: Some("ml".into()),
            generation: Some(1),
            ..Default::default()
        };
        let mut obs = Observed { repository: Repository::Found { on_revocation: None }, ..Default::default() };
        for t in [V1, V2, V3] {
            obs.verdicts.insert(
                t.into(),
                Verdict::Trusted { sha256: sha(t), length: 100, files: 1, signer: None, image: None },
            );
        }
        World { release, obs, auto_ready: true, last: None }
    }

    /// A world where V1 is already promoted and serving.
    fn serving_v1(steps: Vec<Step>) -> Self {
        let mut w = Self::new(steps);
        w.settle(0);
        assert_eq!(w.phase(), Phase::Promoted);
        w
    }

    fn set_target(&mut self, target: &str) {
        self.release.spec.model.target = target.into();
        self.release.metadata.generation = Some(self.release.metadata.generation.unwrap() + 1);
    }

    fn run(&mut self, now: i64) -> &Plan {
        let plan = plan(&self.release, &self.obs, at(now));
        self.obs.gates.clear();
        self.obs.gates_started = None;
        self.release.status = Some(plan.status.clone());
        for (hash, replicas) in &plan.scale {
            let revision = self.obs.workloads.get(hash).map_or(0, |w| w.revision);
            self.obs.workloads.insert(hash.clone(), Workload { revision, replicas: *replicas });
            if self.auto_ready {
                self.obs.pods.entry(hash.clone()).or_default().ready = *replicas;
            }
        }
        for hash in &plan.prune {
            self.obs.workloads.remove(hash);
        }
        self.last = Some(plan);
        self.last.as_ref().unwrap()
    }

    /// Runs until the status stops changing (as the controller would, event by event).
    fn settle(&mut self, now: i64) -> &Plan {
        for _ in 0..20 {
            let before = self.release.status.clone();
            self.run(now);
            if self.release.status == before {
                break;
            }
        }
        self.last.as_ref().unwrap()
    }

    fn status(&self) -> &ModelReleaseStatus {
        self.release.status.as_ref().unwrap()
    }

    fn phase(&self) -> Phase {
        self.status().phase.unwrap()
    }

    fn canary_hash(&self) -> String {
        self.status().canary.as_ref().unwrap().revision.hash.clone()
    }

    fn stable_hash(&self) -> String {
        self.status().stable.as_ref().unwrap().revision.hash.clone()
    }

    fn replicas(&self, hash: &str) -> i32 {
        self.obs.workloads.get(hash).map_or(0, |w| w.replicas)
    }

    fn condition(&self, type_: &str) -> (String, String) {
        let c = self.status().conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    fn events(&self) -> Vec<&'static str> {
        self.last.as_ref().unwrap().events.iter().map(|e| e.reason.as_str()).collect()
    }

    fn pods(&mut self, hash: &str, problem: Option<PodProblem>) {
        self.obs.pods.entry(hash.into()).or_default().problem = problem;
    }

    fn gate(&mut self, name: &str, result: GateResult) {
        self.obs.gates.push(GateOutcome { name: name.into(), result, detail: format!("{result:?}") });
    }
}

#[test]
fn a_repository_kind_the_installation_does_not_serve_is_not_accepted_and_changes_nothing() {
    for (repository, reason) in [
        (Repository::NamespacedDisabled, "NamespacedRepositoriesDisabled"),
        (Repository::ClusterDisabled, "ClusterRepositoriesDisabled"),
    ] {
        let mut w = World::serving_v1(vec![]);
        let stable = w.stable_hash();
        w.obs.repository = repository;
        w.set_target(V2);
        let plan = w.run(10).clone();
        assert_eq!(w.condition(ACCEPTED), ("False".into(), reason.into()));
        assert!(w.status().message.as_deref().unwrap().contains("new release"), "{:?}", w.status().message);
        assert_eq!((plan.scale.get(&stable), plan.scale.len()), (Some(&4), 1), "nothing changes");
    }
}

#[test]
fn missing_repository_is_not_accepted_and_changes_nothing() {
    let mut w = World::serving_v1(vec![]);
    let stable = w.stable_hash();
    w.obs.repository = Repository::Missing;
    w.set_target(V2);
    let plan = w.run(10).clone();
    assert_eq!(w.condition(ACCEPTED), ("False".into(), "RepositoryNotFound".into()));
    assert!(w.status().message.as_deref().unwrap().contains("fix spec.repositoryRef.name"));
    assert_eq!(plan.scale.get(&stable), Some(&4), "the running model keeps running");
    assert_eq!(plan.scale.len(), 1, "nothing new is created");
    assert_eq!(w.status().observed_generation, Some(2));
}

#[test]
fn first_revision_goes_to_full_size_then_is_promoted() {
    let mut w = World::new(vec![weight(10), pause(None)]);
    w.auto_ready = false;
    let plan = w.run(0).clone();
    assert_eq!(w.phase(), Phase::Progressing);
    let canary = w.status().canary.clone().unwrap();
    assert_eq!((canary.revision.number, canary.weight, canary.step), (1, 100, 2), "no steps without a stable revision");
    assert_eq!(plan.scale[&canary.revision.hash], 4);
    assert_eq!(w.condition(VERIFIED).0, "True");
    assert_eq!(w.events(), ["RolloutStarted"]);
    w.obs.pods.insert(canary.revision.hash.clone(), PodHealth::all_ready(3));
    w.run(5);
    assert_eq!(w.phase(), Phase::Progressing);
    assert!(w.status().message.as_deref().unwrap().contains("3/4 canary pods Ready"));
    w.obs.pods.insert(canary.revision.hash.clone(), PodHealth::all_ready(4));
    w.run(6);
    assert_eq!(w.phase(), Phase::Promoted);
    let stable = w.status().stable.clone().unwrap();
    assert_eq!((stable.revision.number, stable.revision.sha256.as_deref()), (1, Some(sha(V1).as_str())));
    assert_eq!(w.status().history.last().unwrap().outcome, "Promoted");
    assert_eq!(w.events(), ["Promoted"]);
}

#[test]
fn steps_walk_in_order_with_pauses_and_promote() {
    let mut w = World::serving_v1(vec![weight(25), pause(None), weight(50), pause(Some("2m"))]);
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.auto_ready = false;

    w.run(100);
    let v2 = w.canary_hash();
    assert_eq!(w.status().canary.as_ref().unwrap().revision.number, 2);
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (1, 4), "25% of 4 = 1 canary pod; 4 stable until it is Ready");
    assert_eq!(w.phase(), Phase::Progressing);

    w.obs.pods.insert(v2.clone(), PodHealth::all_ready(1));
    w.run(110);
    assert_eq!(w.replicas(&v1), 3, "a Ready canary pod takes one stable pod's place");
    assert_eq!(w.phase(), Phase::Paused, "a pause without a duration waits");
    assert!(w.status().message.as_deref().unwrap().contains("waiting for promote"));
    w.run(5000);
    assert_eq!(w.phase(), Phase::Paused, "... however long it takes");

    w.obs.commands.promote = Some("t1".into());
    w.run(5010);
    let canary = w.status().canary.clone().unwrap();
    assert_eq!((canary.step, canary.weight), (2, 50));
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (2, 3), "1 of 2 canary pods Ready so far");
    assert_eq!(w.status().commands.as_ref().unwrap().promote.as_deref(), Some("t1"));
    w.run(5011);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 2, "a promote is used once");

    w.obs.pods.insert(v2.clone(), PodHealth::all_ready(2));
    w.run(5020);
    assert_eq!(w.phase(), Phase::Paused);
    assert_eq!(w.last.as_ref().unwrap().requeue, Duration::from_secs(120), "wakes when the pause ends");
    w.run(5139);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 3);
    w.run(5140);
    let canary = w.status().canary.clone().unwrap();
    assert_eq!((canary.step, canary.weight), (4, 100));
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (4, 2), "2 of 4 canary pods Ready so far");

    w.obs.pods.insert(v2.clone(), PodHealth::all_ready(4));
    w.run(5150);
    assert_eq!(w.phase(), Phase::Promoted);
    assert_eq!(w.stable_hash(), v2);
    assert_eq!(w.replicas(&v1), 1, "the old revision keeps a warm pod (25% of 4) for a fast rollback");
    assert!(w.obs.workloads.contains_key(&v1));
}

#[test]
fn an_untrusted_target_is_rejected_and_nothing_is_deployed() {
    let mut w = World::serving_v1(vec![weight(50)]);
    let v1 = w.stable_hash();
    w.obs.verdicts.insert(
        V2.into(),
        Verdict::Untrusted {
            reason: Untrusted::Trust(crate::trust::Reason::UnknownTarget),
            message: "not listed by any trusted targets role".into(),
        },
    );
    w.set_target(V2);
    let plan = w.run(10).clone();
    assert_eq!(w.phase(), Phase::Rejected);
    assert_eq!(w.condition(VERIFIED), ("False".into(), "UnknownTarget".into()));
    assert!(w.status().message.as_deref().unwrap().contains("revision 1 keeps serving"));
    assert_eq!(plan.scale, [(v1, 4)].into(), "no workload for the rejected revision");
    assert_eq!(w.status().history.last().unwrap().outcome, "Rejected");
    assert_eq!(w.events(), ["Rejected"]);
    assert_eq!(w.last.as_ref().unwrap().events[0].cause.as_deref(), Some("UnknownTarget"));
    w.run(20);
    assert_eq!(w.events(), Vec::<&str>::new(), "rejected once, not again on every reconcile");
}

#[test]
fn an_unknown_verdict_waits_in_verifying() {
    let mut w = World::new(vec![]);
    w.obs.verdicts.insert(V1.into(), Verdict::Unknown { message: "the repository has not been refreshed yet".into() });
    let plan = w.run(0).clone();
    assert_eq!(w.phase(), Phase::Verifying);
    assert!(plan.scale.is_empty());
    assert_eq!(plan.requeue, Duration::from_secs(5));
    assert_eq!(w.condition(VERIFIED).0, "Unknown");
}

#[test]
fn a_crashing_canary_rolls_back_and_is_not_retried_until_asked() {
    let mut w = World::serving_v1(vec![weight(50), pause(None)]);
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.run(10);
    let v2 = w.canary_hash();
    w.pods(&v2, Some(PodProblem::Hard { reason: "CrashLoopBackOff".into(), message: "pod x: crash-looping".into() }));
    w.obs.pods.get_mut(&v1).unwrap().ready = 2;
    w.auto_ready = false;
    w.run(12);
    assert_eq!(w.phase(), Phase::RollingBack);
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (0, 4), "canary to 0, stable full, in the same decision");
    assert_eq!(w.condition(DEGRADED), ("True".into(), "CrashLoopBackOff".into()));
    let last = w.status().history.last().unwrap().clone();
    assert_eq!((last.revision.number, last.outcome.as_str()), (2, "RolledBack"));
    assert!(last.reason.unwrap().starts_with("CrashLoopBackOff"));
    assert_eq!(w.events(), ["RolledBack"]);
    // The rollback's cause travels with the decision (the metric counts it by cause).
    assert_eq!(w.last.as_ref().unwrap().events[0].cause.as_deref(), Some("CrashLoopBackOff"));

    w.obs.pods.get_mut(&v1).unwrap().ready = 4;
    w.run(15);
    assert_eq!(w.phase(), Phase::RolledBack);
    w.pods(&v2, None);
    w.run(100);
    assert!(w.status().canary.is_none(), "the failed revision is not retried by itself");
    assert_eq!(w.phase(), Phase::RolledBack);

    w.obs.commands.retry = Some("r1".into());
    w.auto_ready = true;
    w.run(200);
    let canary = w.status().canary.clone().unwrap();
    assert_eq!(
        (canary.revision.number, canary.revision.hash.as_str()),
        (2, v2.as_str()),
        "a retry reuses the revision and its workload"
    );
    assert_eq!(w.replicas(&v2), 2);
}

#[test]
fn a_new_spec_mid_rollout_supersedes_the_canary() {
    let mut w = World::serving_v1(vec![weight(50), pause(None)]);
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.settle(10);
    let v2 = w.canary_hash();
    assert_eq!(w.phase(), Phase::Paused);
    w.set_target(V3);
    w.run(20);
    let canary = w.status().canary.clone().unwrap();
    assert_eq!((canary.revision.number, canary.revision.target.as_str(), canary.weight), (3, V3, 50));
    assert_eq!((w.replicas(&v2), w.replicas(&canary.revision.hash), w.replicas(&v1)), (0, 2, 4), "never two canaries");
    let superseded = w.status().history.last().unwrap();
    assert_eq!((superseded.revision.number, superseded.outcome.as_str()), (2, "Superseded"));
    assert_eq!(w.events(), ["Superseded", "RolloutStarted"]);
    w.run(21);
    assert_eq!(w.replicas(&v1), 2, "the stable gives way once the new canary's pods are Ready");

    // Back to the stable spec: the canary goes, nothing new starts.
    w.set_target(V1);
    w.run(30);
    assert!(w.status().canary.is_none());
    assert_eq!(w.phase(), Phase::Promoted);
    assert_eq!(w.replicas(&v1), 4);
}

#[test]
fn gates_decide_progress_and_rollback() {
    struct Case {
        name: &'static str,
        results: &'static [GateResult],
        step: i32,
        rolled_back: Option<&'static str>,
    }
    use GateResult::*;
    let cases = [
        Case { name: "one pass advances", results: &[Pass], step: 1, rolled_back: None },
        Case { name: "no data is not a pass", results: &[Inconclusive], step: 0, rolled_back: None },
        Case { name: "a single failure holds", results: &[Fail], step: 0, rolled_back: None },
        Case {
            name: "flapping never reaches the limit",
            results: &[Fail, Pass, Fail, Pass, Fail],
            step: 2,
            rolled_back: None,
        },
        Case { name: "failureLimit in a row", results: &[Fail, Fail], step: -1, rolled_back: Some("GateFailed") },
        Case {
            name: "inconclusiveLimit in a row",
            results: &[Inconclusive, Inconclusive, Inconclusive],
            step: -1,
            rolled_back: Some("GateInconclusive"),
        },
        Case { name: "a pass resets the count", results: &[Fail, Pass, Fail], step: 1, rolled_back: None },
    ];
    for case in cases {
        let mut w = World::serving_v1(vec![weight(25), weight(50)]);
        w.release.spec.gates = Gates { checks: vec![gate("errors")], inconclusive_limit: 3, ..Default::default() };
        w.set_target(V2);
        w.run(100);
        for (i, r) in case.results.iter().enumerate() {
            w.gate("errors", *r);
            w.run(101 + i as i64);
        }
        let canary = w.status().canary.as_ref();
        assert_eq!(canary.map_or(-1, |c| c.step), case.step, "{}", case.name);
        match case.rolled_back {
            Some(reason) => {
                assert_eq!(w.phase(), Phase::RollingBack, "{}", case.name);
                assert_eq!(w.condition(DEGRADED).1, reason, "{}", case.name);
            }
            None => assert!(canary.is_some(), "{}: no rollback", case.name),
        }
    }
}

#[test]
fn gates_must_pass_after_the_step_began() {
    let mut w = World::serving_v1(vec![weight(25), weight(50), weight(75)]);
    w.release.spec.gates.checks = vec![gate("errors")];
    w.set_target(V2);
    w.run(100);
    w.gate("errors", GateResult::Pass);
    w.run(100);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 0, "a pass in the second the step began does not count");
    w.gate("errors", GateResult::Pass);
    w.run(130);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 1);
    w.run(131);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 1, "the old pass does not carry into the next step");
    assert!(gates_due(&w.release, at(160)));
    assert!(!gates_due(&w.release, at(159)));
}

#[test]
fn a_check_started_before_the_step_began_does_not_pass_the_step() {
    let mut w = World::serving_v1(vec![weight(25), weight(50)]);
    w.release.spec.gates.checks = vec![gate("errors")];
    w.set_target(V2);
    w.run(100);
    // Finished at 130, but started at 90: it measured the revision before this step.
    w.gate("errors", GateResult::Pass);
    w.obs.gates_started = Some(at(90));
    w.run(130);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 0);
    assert_eq!(w.status().gates[0].last_evaluated.as_ref().unwrap().0, at(90), "recorded at its start");
    // Started at 120, within the step: it counts.
    w.gate("errors", GateResult::Pass);
    w.obs.gates_started = Some(at(120));
    w.run(131);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 1);
}

#[test]
fn scaling_the_release_while_a_canary_runs_keeps_the_ratio() {
    let mut w = World::serving_v1(vec![weight(25), pause(None)]);
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.settle(10);
    let v2 = w.canary_hash();
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (1, 3));
    w.release.spec.replicas = 10;
    w.run(20);
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (3, 9), "ceil(10 x 25%) = 3; one of them Ready so far");
    w.run(21);
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (3, 7), "all three Ready");
    w.release.spec.replicas = 1;
    w.run(30);
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (1, 1), "at least one canary pod once weight > 0");
    assert!(w.last.as_ref().unwrap().idle.contains(&v1), "the stable's pod stays only warm, out of service");
}

#[test]
fn pod_failures_and_deadlines() {
    struct Case {
        name: &'static str,
        problem: Option<PodProblem>,
        after: i64,
        want: Option<&'static str>,
    }
    let hard = |r: &str| Some(PodProblem::Hard { reason: r.into(), message: "m".into() });
    let waiting = Some(PodProblem::Waiting { reason: "ImagePullBackOff".into(), message: "back-off".into() });
    let cases = [
        Case { name: "OOM kill rolls back at once", problem: hard("OOMKilled"), after: 1, want: Some("OOMKilled") },
        Case {
            name: "a refused model is a trust failure",
            problem: Some(PodProblem::Untrusted { message: "sha256 mismatch".into() }),
            after: 1,
            want: Some("TrustFailure"),
        },
        Case { name: "image pull waits for the deadline", problem: waiting.clone(), after: 599, want: None },
        Case {
            name: "image pull past the deadline",
            problem: waiting,
            after: 600,
            want: Some("ProgressDeadlineExceeded"),
        },
        Case { name: "not ready past the deadline", problem: None, after: 600, want: Some("ProgressDeadlineExceeded") },
        Case { name: "not ready within the deadline", problem: None, after: 300, want: None },
    ];
    for case in cases {
        let mut w = World::serving_v1(vec![weight(50)]);
        w.set_target(V2);
        w.auto_ready = false;
        w.run(1000);
        let v2 = w.canary_hash();
        w.pods(&v2, case.problem.clone());
        w.run(1000 + case.after);
        match case.want {
            Some(reason) => {
                assert_eq!(w.phase(), Phase::RollingBack, "{}", case.name);
                assert_eq!(w.condition(DEGRADED).1, reason, "{}", case.name);
            }
            None => {
                assert_eq!(w.phase(), Phase::Progressing, "{}", case.name);
                assert!(
                    w.last.as_ref().unwrap().requeue <= Duration::from_secs(600),
                    "{}: wakes for the deadline",
                    case.name
                );
            }
        }
    }
}

#[test]
fn the_deadline_measures_progress_not_the_control_plane_queue() {
    // Pods that a busy control plane creates, binds and starts slowly are progress: the
    // 10-minute deadline counts from the last step forward, not from the step's start.
    let mut w = World::serving_v1(vec![weight(50)]);
    w.set_target(V2);
    w.auto_ready = false;
    w.run(1000);
    let v2 = w.canary_hash();
    let stage = |w: &mut World, created, scheduled, initialized, ready| {
        let pods = w.obs.pods.entry(v2.clone()).or_default();
        (pods.created, pods.scheduled, pods.initialized, pods.ready) = (created, scheduled, initialized, ready);
    };
    for (t, counts) in [(1500, (1, 0, 0, 0)), (2000, (2, 1, 0, 0)), (2500, (2, 2, 1, 0)), (3000, (2, 2, 2, 1))] {
        stage(&mut w, counts.0, counts.1, counts.2, counts.3);
        w.run(t);
        assert_eq!(w.phase(), Phase::Progressing, "at {t}s, after progress at {t}s: {:?}", w.status().message);
        let pods = w.status().canary.as_ref().unwrap().pods.clone().unwrap();
        assert_eq!(pods.last_progress_time, Some(Time(at(t))), "progress recorded at {t}s");
    }
    // Going back (a pod deleted and made again, readiness flapping) is not progress; a
    // count that only returns to where it was is not either.
    stage(&mut w, 1, 1, 1, 1);
    w.run(3300);
    stage(&mut w, 2, 2, 2, 1);
    w.run(3400);
    assert_eq!(w.status().canary.as_ref().unwrap().pods.as_ref().unwrap().last_progress_time, Some(Time(at(3000))));
    assert!(w.last.as_ref().unwrap().requeue <= Duration::from_secs(200), "wakes when the deadline would pass");
    w.run(3599);
    assert_eq!(w.phase(), Phase::Progressing);
    w.run(3600);
    assert_eq!(w.phase(), Phase::RollingBack, "10 minutes without progress: {:?}", w.status().message);
    assert_eq!(w.condition(DEGRADED).1, "ProgressDeadlineExceeded");
    assert!(w.status().message.as_deref().unwrap().contains("no progress for 10m"), "{:?}", w.status().message);
}

#[test]
fn a_first_revision_past_its_deadline_is_stalled_not_rolled_back_to_nothing() {
    let mut w = World::new(vec![]);
    w.auto_ready = false;
    w.run(0);
    let v1 = w.canary_hash();
    w.obs.pods.insert(v1.clone(), PodHealth { created: 4, scheduled: 4, ..Default::default() });
    w.run(10);
    w.pods(&v1, Some(PodProblem::Waiting { reason: "ImagePullBackOff".into(), message: "back-off".into() }));
    w.run(610);
    assert_eq!(w.phase(), Phase::Progressing, "not rolled back: there is nothing to roll back to");
    assert_eq!(w.condition(PROGRESSING), ("False".into(), "ProgressDeadlineExceeded".into()));
    assert_eq!(w.condition(DEGRADED), ("True".into(), "ProgressDeadlineExceeded".into()));
    assert_eq!(w.events(), ["ProgressDeadlineExceeded"]);
    let message = w.status().message.clone().unwrap();
    assert!(message.contains("stalled") && message.contains("ImagePullBackOff"), "{message}");
    assert_eq!(w.last.as_ref().unwrap().scale.get(&v1), Some(&4), "its pods are kept");
    assert!(w.status().history.is_empty(), "nothing is recorded as rolled back");
    w.run(700);
    assert!(w.events().is_empty(), "said once");

    // The pods come up after all: the rollout goes on by itself.
    w.obs.pods.insert(v1.clone(), PodHealth::all_ready(4));
    w.settle(800);
    assert_eq!(w.phase(), Phase::Promoted);
    assert_eq!(w.condition(DEGRADED).0, "False");
}

#[test]
fn without_automatic_rollback_a_failure_holds_and_waits_for_abort() {
    let mut w = World::serving_v1(vec![weight(50)]);
    w.release.spec.rollback.automatic = false;
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.run(10);
    let v2 = w.canary_hash();
    w.pods(&v2, Some(PodProblem::Hard { reason: "CrashLoopBackOff".into(), message: "m".into() }));
    w.run(11);
    assert_eq!(w.phase(), Phase::Paused);
    assert_eq!(w.condition(DEGRADED), ("True".into(), "CrashLoopBackOff".into()));
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (2, 2), "nothing moves by itself");
    assert_eq!(w.events(), ["RollbackNeeded"]);
    w.run(12);
    assert_eq!(w.events(), Vec::<&str>::new());
    w.obs.commands.abort = Some("a".into());
    w.run(13);
    assert_eq!(w.phase(), Phase::RollingBack);
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (0, 4));
}

#[test]
fn spec_paused_holds_the_step_but_not_the_gates() {
    let mut w = World::serving_v1(vec![weight(25), weight(50)]);
    w.release.spec.paused = true;
    w.release.spec.gates.checks = vec![gate("errors")];
    w.set_target(V2);
    w.run(10);
    w.gate("errors", GateResult::Pass);
    w.run(40);
    assert_eq!(w.phase(), Phase::Paused);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 0);
    w.gate("errors", GateResult::Fail);
    w.run(70);
    w.gate("errors", GateResult::Fail);
    w.run(100);
    assert_eq!(w.phase(), Phase::RollingBack, "a paused rollout still rolls back");
    w.release.spec.paused = false;
}

#[test]
fn a_revoked_stable_returns_to_the_newest_trusted_revision() {
    let mut w = World::serving_v1(vec![]);
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.settle(10);
    let v2 = w.stable_hash();
    w.set_target(V3);
    w.settle(20);
    let v3 = w.stable_hash();
    assert_eq!(w.status().stable.as_ref().unwrap().revision.number, 3);

    // v3 revoked, v2 too: back to v1, never to v2.
    let revoked = Verdict::Untrusted {
        reason: Untrusted::Trust(crate::trust::Reason::UnknownTarget),
        message: "not listed".into(),
    };
    w.obs.verdicts.insert(V3.into(), revoked.clone());
    w.obs.verdicts.insert(V2.into(), revoked.clone());
    w.auto_ready = false;
    w.run(30);
    assert_eq!(w.phase(), Phase::RollingBack);
    assert_eq!(w.stable_hash(), v1);
    assert_eq!((w.replicas(&v1), w.replicas(&v2), w.replicas(&v3)), (4, 0, 0), "revoked v2 is not kept warm");
    assert_eq!(w.condition(DEGRADED).1, "TrustRevoked");
    let last = w.status().history.last().unwrap();
    assert_eq!((last.revision.number, last.outcome.as_str()), (3, "RolledBack"));
    w.obs.pods.insert(v1.clone(), PodHealth::all_ready(4));
    w.run(31);
    assert_eq!(w.phase(), Phase::RolledBack);
    assert_eq!(w.condition(TRUST_DEGRADED), ("False".into(), "TargetTrusted".into()));
    w.run(40);
    assert!(w.status().canary.is_none(), "the revoked spec is not rolled out again");

    // Now v1 is revoked too: nothing trusted is left, so it serves nothing and says so.
    w.obs.verdicts.insert(V1.into(), revoked);
    let plan = w.run(50).clone();
    assert_eq!(w.stable_hash(), v1);
    assert_eq!(w.phase(), Phase::Revoked);
    assert_eq!(plan.scale.get(&v1), Some(&0), "a revoked model with nothing to return to is scaled to zero");
    assert_eq!(w.condition(TRUST_DEGRADED), ("True".into(), "UnknownTarget".into()));
    assert_eq!(w.condition(READY), ("False".into(), "Revoked".into()));
    assert!(w.status().conditions.iter().any(|c| c.message.contains("no earlier revision is still trusted")));
    assert_eq!(w.events(), ["RollbackImpossible"]);
    w.run(51);
    assert!(w.events().is_empty(), "said once");

    // Trust in it returns (the revocation itself is revoked): it serves again.
    w.obs
        .verdicts
        .insert(V1.into(), Verdict::Trusted { sha256: sha(V1), length: 1, files: 1, signer: None, image: None });
    let plan = w.run(60).clone();
    assert_eq!(plan.scale.get(&v1), Some(&4));
    assert_eq!(w.phase(), Phase::RolledBack, "back where it was: v3 stays rolled back");
}

#[test]
fn a_cluster_repository_that_stops_revoked_models_overrides_a_release_that_only_alerts() {
    let mut w = World::serving_v1(vec![]);
    let v1 = w.stable_hash();
    w.release.spec.rollback.on_revocation = RevocationAction::Alert;
    w.obs.repository = Repository::Found { on_revocation: Some(RevocationAction::Rollback) };
    let revoked = Verdict::Untrusted {
        reason: Untrusted::Trust(crate::trust::Reason::UnknownTarget),
        message: "not listed".into(),
    };
    w.obs.verdicts.insert(V1.into(), revoked);
    let plan = w.run(10).clone();
    assert_eq!(plan.scale.get(&v1), Some(&0), "the security team's policy wins");
    assert_eq!(w.phase(), Phase::Revoked);
    assert_eq!(w.events(), ["RollbackImpossible"]);
    // The spec is the revoked revision itself: said once, and it stays down.
    let plan = w.run(11).clone();
    assert!(w.events().is_empty(), "said once: {:?}", w.events());
    assert_eq!((w.phase(), plan.scale.get(&v1)), (Phase::Revoked, Some(&0)));
    // After a restart nothing is known yet: still nothing serves.
    w.obs.verdicts.insert(V1.into(), Verdict::Unknown { message: "not refreshed yet".into() });
    let plan = w.run(12).clone();
    assert_eq!((w.phase(), plan.scale.get(&v1)), (Phase::Revoked, Some(&0)));
    w.obs.verdicts.insert(
        V1.into(),
        Verdict::Untrusted {
            reason: Untrusted::Trust(crate::trust::Reason::UnknownTarget),
            message: "not listed".into(),
        },
    );

    // A model the policy does not allow this namespace is never rolled out.
    let refused = Verdict::Untrusted { reason: Untrusted::NotAllowedByPolicy, message: "not allowed".into() };
    w.obs.verdicts.insert(V2.into(), refused);
    w.set_target(V2);
    let plan = w.run(20).clone();
    assert_eq!(plan.scale.len(), 1, "nothing new is created");
    assert_eq!(plan.scale.get(&v1), Some(&0));
    assert_eq!(w.phase(), Phase::Revoked, "the outage is what an SRE must see first");
    let rejected = w.status().history.last().map(|h| (h.revision.number, h.reason.clone()));
    assert_eq!(rejected, Some((2, Some("NotAllowedByPolicy".to_string()))), "{:?}", w.status().history);
}

#[test]
fn revocation_alert_only_keeps_serving() {
    let mut w = World::serving_v1(vec![]);
    w.release.spec.rollback.on_revocation = RevocationAction::Alert;
    w.set_target(V2);
    w.settle(10);
    let v2 = w.stable_hash();
    w.obs
        .verdicts
        .insert(V2.into(), Verdict::Trusted { sha256: sha(V3), length: 100, files: 1, signer: None, image: None });
    w.run(20);
    assert_eq!(w.stable_hash(), v2);
    assert_eq!(w.condition(TRUST_DEGRADED), ("True".into(), "TargetChanged".into()));
}

#[test]
fn the_same_image_digest_signed_in_another_registry_is_a_change() {
    let image = crate::api::ModelRef::Image("llm/1/manifest.json".into());
    let trusted = |registry: &str| Verdict::Trusted {
        sha256: sha(V1),
        length: 900,
        files: 1,
        signer: None,
        image: Some(format!("{registry}/models/llm@sha256:{}", sha(V1))),
    };
    let mut w = World::new(vec![]);
    w.release.spec.model = ModelSource {
        image: Some(crate::api::ImageSource { target: "llm/1/manifest.json".into() }),
        mount_path: "/models".into(),
        ..Default::default()
    };
    w.obs.verdicts.insert(image.clone(), trusted("reg-a.example"));
    w.settle(0);
    assert_eq!(w.phase(), Phase::Promoted);
    let stable = w.status().stable.clone().unwrap().revision;
    assert_eq!(stable.image, Some(format!("reg-a.example/models/llm@sha256:{}", sha(V1))));
    assert_eq!(stable.model(), image, "status keeps the model an image");
    let hash = w.stable_hash();
    // Re-signed with the same digest, to be pulled from elsewhere: never followed quietly.
    w.obs.verdicts.insert(image, trusted("reg-b.example"));
    w.run(20);
    assert_eq!(w.condition(TRUST_DEGRADED), ("True".into(), "TargetChanged".into()));
    assert_ne!(w.phase(), Phase::Promoted);
    let workload = crate::plan::verified_revision(w.status(), &hash).map(|r| r.image.map(str::to_string));
    assert!(!matches!(workload, Some(Some(ref i)) if i.starts_with("reg-b")), "{workload:?}");
}

#[test]
fn post_promotion_window_rolls_back_to_the_previous_revision() {
    let mut w = World::serving_v1(vec![weight(50)]);
    w.release.spec.gates.checks = vec![gate("errors")];
    w.release.spec.rollback.post_promotion_window = "10m".into();
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.run(100);
    w.gate("errors", GateResult::Pass);
    w.run(130);
    w.gate("errors", GateResult::Pass);
    w.run(160);
    assert_eq!(w.phase(), Phase::Promoted);
    assert!(gates_due(&w.release, at(190)), "gates keep running in the window");
    assert!(!gates_due(&w.release, at(160 + 600)), "... and stop after it");
    w.gate("errors", GateResult::Fail);
    w.run(190);
    w.gate("errors", GateResult::Fail);
    w.run(220);
    assert_eq!(w.phase(), Phase::RollingBack);
    assert_eq!(w.stable_hash(), v1);
    assert_eq!(w.replicas(&v1), 4);
    assert!(w.status().message.as_deref().unwrap().contains("after promotion"));
}

#[test]
fn the_plan_is_idempotent_so_restarts_change_nothing() {
    // Replaying any reached state with the same observations yields the same status,
    // the same scale and no event: a restarted operator picks up where it was.
    let mut w = World::serving_v1(vec![weight(25), pause(Some("1m")), weight(50), pause(None)]);
    w.set_target(V2);
    for now in [10, 20, 90, 100, 110] {
        let seen = w.obs.clone();
        w.run(now);
        // As if the operator died after writing status, before scaling anything.
        let again = plan(&w.release, &seen, at(now));
        assert_eq!(Some(&again.status), w.release.status.as_ref(), "at {now}");
        assert_eq!(again.scale, w.last.as_ref().unwrap().scale, "at {now}");
        assert!(again.events.is_empty(), "at {now}: {:?}", again.events);
    }
}

#[test]
fn history_is_bounded_and_old_workloads_are_pruned() {
    let mut w = World::serving_v1(vec![]);
    for i in 0..30 {
        w.release.spec.template.metadata =
            Some(ObjectMeta { annotations: Some([("v".to_string(), i.to_string())].into()), ..Default::default() });
        w.settle(10 + i);
    }
    assert_eq!(w.status().history.len(), rollout::MAX_HISTORY);
    assert_eq!(w.status().stable.as_ref().unwrap().revision.number, 31);
    assert!(w.obs.workloads.len() <= 6, "{} workloads kept", w.obs.workloads.len());
}

#[test]
fn revision_identity() {
    let w = World::new(vec![]);
    let mut spec = w.release.spec.clone();
    let a = revision_hash(&spec);
    spec.replicas = 9;
    spec.strategy.steps.push(weight(5));
    assert_eq!(revision_hash(&spec), a, "scale and strategy are not part of a revision");
    spec.model.target = V2.into();
    let b = revision_hash(&spec);
    assert_ne!(b, a);
    assert_eq!(a.len(), 10);
    // Each image target is a revision of its own (found by the real-node test: without
    // it a new image target changed nothing).
    spec.model.target.clear();
    spec.model.image = Some(crate::api::ImageSource { target: "llm/1/manifest.json".into() });
    let one = revision_hash(&spec);
    spec.model.image = Some(crate::api::ImageSource { target: "llm/2/manifest.json".into() });
    assert_ne!(revision_hash(&spec), one);
    assert_ne!(one, b);
}

#[test]
fn rollback_on_request_returns_to_a_trusted_earlier_revision_only() {
    let mut w = World::serving_v1(vec![]);
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.settle(10);
    w.set_target(V3);
    w.settle(20);
    assert_eq!(w.status().stable.as_ref().unwrap().revision.number, 3);

    // Revision 2 is no longer signed: refused, with the reason, nothing moves.
    w.obs.verdicts.insert(
        V2.into(),
        Verdict::Untrusted {
            reason: Untrusted::Trust(crate::trust::Reason::UnknownTarget),
            message: "not listed".into(),
        },
    );
    w.obs.commands.rollback = Some("2@a".into());
    w.run(30);
    assert_eq!(w.status().stable.as_ref().unwrap().revision.number, 3);
    // (and its warm pod, kept since revision 3's promotion, is dropped: not trusted)
    assert_eq!(w.events(), ["RollbackRefused", "WarmDropped"]);
    assert!(w.last.as_ref().unwrap().events[0].message.contains("no longer trusted"));

    w.obs.commands.rollback = Some("1@b".into());
    w.run(40);
    assert_eq!(w.phase(), Phase::RollingBack);
    assert_eq!(w.stable_hash(), v1);
    assert_eq!(w.replicas(&v1), 4);
    assert_eq!(w.status().history.last().unwrap().outcome, "RolledBack");
    w.run(41);
    assert!(w.status().canary.is_none(), "the spec's revision is not rolled out again by itself");

    w.obs.commands.rollback = Some("9@c".into());
    w.run(50);
    assert_eq!(w.events(), ["RollbackRefused"], "an unknown revision");
}

#[test]
fn rollback_on_request_during_a_canary_and_promote_full() {
    let mut w = World::serving_v1(vec![weight(10), pause(None), weight(50), pause(None)]);
    w.release.spec.rollback.automatic = false;
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.settle(10);
    let v2 = w.canary_hash();
    w.obs.commands.promote_full = Some("f".into());
    w.run(20);
    let canary = w.status().canary.clone().unwrap();
    assert_eq!((canary.step, canary.weight), (4, 100), "promote-full skips to the end");
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (4, 3), "the stable keeps its pods until the canary's are Ready");

    w.obs.commands.rollback = Some("1@x".into());
    w.run(30);
    assert_eq!(w.phase(), Phase::RollingBack, "a person's rollback happens even without automatic rollback");
    assert!(w.status().canary.is_none());
    assert_eq!((w.replicas(&v2), w.replicas(&v1)), (0, 4));
}

#[test]
fn the_previous_revision_stays_warm_out_of_service_and_a_rollback_serves_from_it() {
    let mut w = World::serving_v1(vec![weight(50)]);
    w.release.spec.gates.checks = vec![gate("errors")];
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.run(100);
    let v2 = w.canary_hash();
    w.gate("errors", GateResult::Pass);
    w.run(130);
    w.run(131);
    // At 100% with every canary pod Ready, v1 keeps its warm pod, already out of service.
    assert_eq!(w.replicas(&v1), 1, "25% of 4 replicas stay warm");
    assert!(w.last.as_ref().unwrap().idle.contains(&v1));
    w.gate("errors", GateResult::Pass);
    w.run(160);
    assert_eq!(w.phase(), Phase::Promoted);
    let warm = w.status().warm.clone().expect("v1 is warm");
    assert_eq!((warm.hash.as_str(), warm.replicas), (v1.as_str(), 1));
    assert_eq!(warm.until.unwrap().0, at(160 + 600), "for the post-promotion window by default");
    let plan = w.last.as_ref().unwrap();
    assert_eq!((plan.scale[&v1], plan.scale[&v2]), (1, 4));
    assert!(plan.idle.contains(&v1) && !plan.idle.contains(&v2));

    // The window's gate fails: back to v1, whose warm pod serves at once.
    w.gate("errors", GateResult::Fail);
    w.run(190);
    w.gate("errors", GateResult::Fail);
    w.run(220);
    assert_eq!((w.phase(), w.stable_hash()), (Phase::RollingBack, v1.clone()));
    let plan = w.last.as_ref().unwrap();
    assert!(plan.idle.is_empty(), "v1 is back in service: {:?}", plan.idle);
    assert_eq!((plan.scale[&v1], plan.scale[&v2]), (4, 0));
    assert!(w.status().warm.is_none());
    assert!(w.status().message.as_deref().unwrap().contains("1 warm pod(s) serve at once"));
}

#[test]
fn warm_pods_go_when_their_window_ends_or_when_asked() {
    let mut w = World::serving_v1(vec![]);
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.settle(100);
    assert_eq!(w.phase(), Phase::Promoted);
    assert_eq!(w.replicas(&v1), 1, "{:?}", w.status());
    assert!(w.last.as_ref().unwrap().requeue <= Duration::from_secs(600), "wakes up when the window ends");
    w.run(100 + 599);
    assert_eq!(w.replicas(&v1), 1);
    w.run(100 + 600);
    assert_eq!(w.replicas(&v1), 0, "the window is over");
    assert!(w.status().warm.is_none());

    // Asked: `modelgate.dev/drop-warm`.
    let v2 = w.stable_hash();
    w.set_target(V3);
    w.settle(1000);
    assert_eq!(w.replicas(&v2), 1);
    w.obs.commands.drop_warm = Some("t1".into());
    w.run(1010);
    assert_eq!(w.replicas(&v2), 0);
    assert!(w.status().warm.is_none());
    assert_eq!(w.last.as_ref().unwrap().events.first().map(|e| e.reason.as_str()), Some("WarmDropped"));

    // Off: `keepWarm.window: 0s`, or with the post-promotion window off.
    w.release.spec.rollback.keep_warm.window = Some("0s".into());
    let v3 = w.stable_hash();
    w.set_target(V1);
    w.settle(2000);
    assert_eq!(w.replicas(&v3), 0);
    assert!(w.status().warm.is_none() && w.last.as_ref().unwrap().idle.is_empty());
}

#[test]
fn ready_means_the_spec_serves_at_full_size_with_nothing_in_progress() {
    let mut w = World::new(vec![weight(50), pause(None)]);
    w.auto_ready = false;
    w.run(0);
    assert_eq!(w.condition(READY), ("False".into(), "RolloutInProgress".into()));
    assert_eq!(w.status().ready.as_deref(), Some("0/4"));
    let first = w.canary_hash();
    w.obs.pods.insert(first.clone(), PodHealth::all_ready(4));
    w.run(1);
    assert_eq!(w.phase(), Phase::Promoted);
    assert_eq!(w.condition(READY), ("True".into(), "Serving".into()));
    assert_eq!(w.status().ready.as_deref(), Some("4/4"));
    // A pod lost: not Ready until it is back.
    w.obs.pods.insert(first.clone(), PodHealth::all_ready(3));
    w.run(2);
    assert_eq!(w.condition(READY), ("False".into(), "PodsNotReady".into()));
    assert_eq!(w.status().ready.as_deref(), Some("3/4"));
    w.obs.pods.insert(first.clone(), PodHealth::all_ready(4));
    // A new spec: in progress until promoted; a rollback leaves it False (another revision serves).
    w.auto_ready = true;
    w.set_target(V2);
    w.run(3);
    assert_eq!(w.condition(READY), ("False".into(), "RolloutInProgress".into()));
    let v2 = w.canary_hash();
    w.pods(&v2, Some(PodProblem::Hard { reason: "CrashLoopBackOff".into(), message: "crash".into() }));
    w.settle(4);
    assert_eq!(w.phase(), Phase::RolledBack);
    assert_eq!(w.condition(READY), ("False".into(), "NotServingSpec".into()));
    // At rest, a second plan writes nothing new.
    let before = w.status().clone();
    w.run(100);
    assert_eq!(w.status(), &before, "no status change at rest");
}

#[test]
fn replica_sets_the_release_did_not_make_are_named_once_and_never_counted() {
    let mut w = World::serving_v1(vec![]);
    assert!(w.status().conditions.iter().all(|c| c.type_ != FOREIGN_WORKLOADS), "absent until there are some");
    w.obs.foreign = vec!["fraud-0a1b2".into()];
    let plan = w.run(10).clone();
    assert_eq!(w.condition(FOREIGN_WORKLOADS), ("True".into(), "NotControlled".into()));
    assert_eq!(w.events(), ["ForeignWorkload"]);
    assert!(!plan.scale.contains_key("0a1b2"), "never scaled");
    w.run(11);
    assert!(w.events().is_empty(), "said once");
    w.obs.foreign.clear();
    w.run(12);
    assert_eq!(w.condition(FOREIGN_WORKLOADS), ("False".into(), "AllControlled".into()));
}

#[test]
fn a_changed_template_is_reported_once_and_only_the_spec_revision_is_put_back() {
    let mut w = World::serving_v1(vec![weight(25), pause(None)]);
    let v1 = w.stable_hash();
    assert!(w.status().conditions.iter().all(|c| c.type_ != WORKLOAD_CHANGED), "absent until it happens");
    w.obs.changed = vec![(v1.clone(), format!("fraud-{v1}"))];
    let plan = w.run(10).clone();
    assert_eq!(plan.restore.as_ref(), Some(&v1), "the spec's revision is rendered again");
    assert_eq!(plan.scale.get(&v1), Some(&4), "and keeps serving meanwhile");
    assert_eq!(w.condition(WORKLOAD_CHANGED), ("True".into(), "TemplateChanged".into()));
    assert_eq!(w.events(), ["WorkloadChanged"]);
    w.run(11);
    assert!(w.events().is_empty(), "said once");
    w.obs.changed.clear();
    assert_eq!(w.run(12).restore, None);
    assert_eq!(w.condition(WORKLOAD_CHANGED), ("False".into(), "AsMade".into()));

    // Mid-rollout the stable revision is an earlier one: its spec is gone, it is only reported.
    w.set_target(V2);
    w.settle(20);
    assert_eq!(w.phase(), Phase::Paused);
    w.obs.changed = vec![(v1.clone(), format!("fraud-{v1}"))];
    let plan = w.run(30).clone();
    assert_eq!(plan.restore, None, "an earlier revision cannot be rendered again");
    let message = w.status().conditions.iter().find(|c| c.type_ == WORKLOAD_CHANGED).unwrap().message.clone();
    assert!(message.contains("cannot be made again"), "{message}");
    assert!(plan.scale.get(&v1).is_some_and(|n| *n > 0), "its pods are left as they are");
    let canary = w.canary_hash();
    w.obs.changed.push((canary.clone(), format!("fraud-{canary}")));
    assert_eq!(w.run(31).restore, Some(canary), "the canary is the spec's revision");
}

#[test]
fn a_paused_rollout_does_not_keep_a_revoked_stable_serving() {
    let mut w = World::serving_v1(vec![weight(25), pause(None)]);
    let v1 = w.stable_hash();
    w.set_target(V2);
    w.settle(10);
    assert_eq!(w.phase(), Phase::Paused);
    let revoked = Verdict::Untrusted {
        reason: Untrusted::Trust(crate::trust::Reason::UnknownTarget),
        message: "not listed".into(),
    };
    w.obs.verdicts.insert(V1.into(), revoked);
    let plan = w.run(20).clone();
    assert_eq!(plan.scale.get(&v1), Some(&0), "the revoked stable serves nothing while the rollout waits");
    assert_eq!(plan.scale.get(&w.canary_hash()), Some(&1), "the canary keeps its share");
}

#[test]
fn the_same_bytes_signed_anew_name_their_new_signer_once() {
    let mut w = World::serving_v1(vec![]);
    let signed = |signer: &str| Verdict::Trusted {
        sha256: sha(V1),
        length: 100,
        files: 1,
        signer: Some(signer.into()),
        image: None,
    };
    w.obs.verdicts.insert(V1.into(), signed("key sha256:aa"));
    w.run(50);
    assert_eq!(w.status().stable.as_ref().and_then(|s| s.revision.signer.as_deref()), Some("key sha256:aa"));
    assert_eq!(w.events(), ["SignerChanged"]);
    w.obs.verdicts.insert(V1.into(), signed("key sha256:bb"));
    w.run(51);
    assert_eq!(w.status().stable.as_ref().and_then(|s| s.revision.signer.as_deref()), Some("key sha256:bb"));
    assert_eq!(w.events(), ["SignerChanged"]);
    assert_eq!(w.phase(), Phase::Promoted, "the same bytes keep serving");
    w.run(52);
    assert!(w.events().is_empty(), "said once");
}

fn judged(w: &World, result: crate::api::Judgement) -> crate::api::AnalysisStatus {
    crate::api::AnalysisStatus {
        revision: w.status().canary.as_ref().map_or(0, |c| c.revision.number),
        result,
        message: format!("judged {}", result.as_str()),
        ..Default::default()
    }
}

fn with_judge(w: &mut World, baseline: bool) {
    w.release.spec.analysis = Some(crate::api::Analysis {
        baseline,
        address: "http://p:9090".into(),
        step: "10s".into(),
        pass_score: 95,
        marginal_score: 75,
        marginal_limit: 2,
        max_no_data: 0,
        metrics: vec![crate::api::AnalysisMetric {
            name: "latency".into(),
            query: "q{role=\"{{revision}}\"}".into(),
            direction: crate::api::Direction::Increase,
            allowed_change: 0.1,
            critical: true,
            weight: 1,
        }],
    });
}

#[test]
fn baseline_pods_of_the_stable_model_run_beside_each_canary_step_and_go_with_it() {
    let mut w = World::serving_v1(vec![weight(25), weight(50)]);
    with_judge(&mut w, true);
    let stable = w.stable_hash();
    let key = baseline_key(&stable);
    assert_eq!(baseline_of(&key), Some(stable.as_str()));
    assert_eq!(baseline_of(&stable), None);
    w.set_target(V2);
    w.settle(10);
    let canary = w.canary_hash();
    // Canary and baseline the same size; the stable keeps its pods until canary pods are Ready.
    assert_eq!((w.replicas(&canary), w.replicas(&key)), (1, 1));
    assert_eq!(w.replicas(&stable), 3, "the stable gives up a pod for a Ready canary pod only");
    assert_eq!(role_of(w.status(), &key), crate::api::Role::Baseline);
    assert_eq!(role_of(w.status(), &canary), crate::api::Role::Canary);
    assert_eq!(role_of(w.status(), &stable), crate::api::Role::Stable);
    // Not judged yet: the step waits for the judge.
    assert!(w.status().message.as_deref().unwrap().contains("waiting for the judge"), "{:?}", w.status().message);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 0);
    // Judged while the baseline is not all Ready: shown, counted for nothing.
    w.obs.pods.get_mut(&key).unwrap().ready = 0;
    w.obs.analysis = Some(judged(&w, crate::api::Judgement::Pass));
    w.obs.gates_started = Some(at(20));
    w.run(21);
    w.obs.analysis = None;
    assert_eq!(w.status().analysis.as_ref().unwrap().result, crate::api::Judgement::Waiting);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 0, "a judgement on pods not Ready passes nothing");
    // Ready, and passed: the next step, a baseline of the new size.
    w.obs.pods.get_mut(&key).unwrap().ready = 1;
    w.obs.analysis = Some(judged(&w, crate::api::Judgement::Pass));
    w.obs.gates_started = Some(at(30));
    w.run(31);
    w.obs.analysis = None;
    w.settle(31);
    assert_eq!(w.status().canary.as_ref().unwrap().step, 1);
    assert_eq!((w.replicas(&canary), w.replicas(&key)), (2, 2));
    // A failure rolls back at once; the baseline goes with the canary.
    w.obs.analysis = Some(judged(&w, crate::api::Judgement::Fail));
    w.obs.gates_started = Some(at(60));
    w.run(61);
    w.obs.analysis = None;
    assert_eq!(w.phase(), Phase::RollingBack);
    let last = w.status().history.last().unwrap();
    assert!(last.reason.as_deref().unwrap().starts_with("AnalysisFailed"), "{:?}", last.reason);
    w.settle(62);
    assert!(!w.obs.workloads.contains_key(&key), "the baseline is pruned with the canary");
    assert_eq!(w.replicas(&stable), 4);
}

#[test]
fn marginal_and_no_data_judgements_roll_back_at_their_limits_and_a_first_revision_is_skipped() {
    // A first revision: nothing to compare with, skipped and promoted on pod health.
    let mut w = World::new(vec![weight(25), weight(50)]);
    with_judge(&mut w, false);
    w.settle(0);
    assert_eq!(w.phase(), Phase::Promoted);
    let skipped = w.status().analysis.clone().unwrap();
    assert_eq!(skipped.result, crate::api::Judgement::Skipped);
    assert!(skipped.message.contains("first"), "{}", skipped.message);
    assert!(!analysis_due(&w.release, at(100)), "no judge after promotion");
    // Marginal twice (marginalLimit 2) rolls back.
    w.set_target(V2);
    w.settle(10);
    assert!(analysis_due(&w.release, at(10)));
    for (i, t) in [20, 60].into_iter().enumerate() {
        w.obs.analysis = Some(judged(&w, crate::api::Judgement::Marginal));
        w.obs.gates_started = Some(at(t));
        w.run(t + 1);
        w.obs.analysis = None;
        assert_eq!(w.status().analysis.as_ref().unwrap().consecutive_marginal, i as i32 + 1);
    }
    assert_eq!(w.phase(), Phase::RollingBack);
    assert!(w.status().history.last().unwrap().reason.as_deref().unwrap().starts_with("AnalysisMarginal"));
    // No data, `gates.inconclusiveLimit` (5) times, rolls back too; a pass between resets.
    w.settle(70);
    w.set_target(V3);
    w.settle(80);
    let mut t = 100;
    for result in [
        crate::api::Judgement::NoData,
        crate::api::Judgement::Pass,
        crate::api::Judgement::NoData,
        crate::api::Judgement::NoData,
        crate::api::Judgement::NoData,
        crate::api::Judgement::NoData,
    ] {
        assert_eq!(w.phase(), Phase::Progressing, "at {t}");
        w.obs.analysis = Some(judged(&w, result));
        w.obs.gates_started = Some(at(t));
        w.run(t + 1);
        w.obs.analysis = None;
        t += 40;
    }
    assert_eq!(w.status().analysis.as_ref().unwrap().consecutive_no_data, 4);
    w.obs.analysis = Some(judged(&w, crate::api::Judgement::NoData));
    w.obs.gates_started = Some(at(t));
    w.run(t + 1);
    assert_eq!(w.phase(), Phase::RollingBack);
    assert!(w.status().history.last().unwrap().reason.as_deref().unwrap().starts_with("AnalysisNoData"));
}

#[test]
fn baseline_pods_that_never_become_ready_roll_back_at_the_deadline_and_none_start_for_an_untrusted_stable() {
    let mut w = World::serving_v1(vec![weight(25), weight(50)]);
    with_judge(&mut w, true);
    let stable = w.stable_hash();
    let key = baseline_key(&stable);
    w.set_target(V2);
    w.auto_ready = false;
    w.settle(10);
    let canary = w.canary_hash();
    w.obs.pods.entry(canary.clone()).or_default().ready = 1;
    w.settle(11);
    assert_eq!(w.replicas(&key), 1, "asked for");
    // The baseline never comes up (its ReplicaSet was not made, say): the progress
    // deadline (10m) from the step's start rolls back, saying why.
    w.settle(500);
    assert_eq!(w.phase(), Phase::Progressing);
    w.settle(10 + 600);
    assert!(matches!(w.phase(), Phase::RollingBack | Phase::RolledBack), "{:?}", w.phase());
    let why = w.status().history.last().unwrap().reason.clone().unwrap();
    assert!(why.starts_with("BaselineNotReady") && why.contains(&key), "{why}");
    // An earlier revision's pods are `previous`, not `stable`.
    assert_eq!(role_of(w.status(), &canary), crate::api::Role::Previous);

    // A stable model no longer trusted, kept serving (onRevocation: Alert): no new pods of it.
    let mut w = World::serving_v1(vec![weight(25), weight(50)]);
    with_judge(&mut w, true);
    w.release.spec.rollback.on_revocation = RevocationAction::Alert;
    let stable = w.stable_hash();
    w.obs.verdicts.insert(
        V1.into(),
        Verdict::Untrusted { reason: Untrusted::Trust(crate::trust::Reason::UnknownTarget), message: "revoked".into() },
    );
    w.set_target(V2);
    w.settle(10);
    assert!(w.status().canary.is_some());
    assert!(!w.obs.workloads.contains_key(&baseline_key(&stable)), "no baseline of an untrusted model");
}

use kube::api::ObjectMeta;

use super::*;
use crate::api::{ModelReleaseSpec, ModelSource, RepositoryRef};

fn release(generation: i64) -> ModelRelease {
    let mut r = ModelRelease::new(
        "fraud",
        ModelReleaseSpec {
            repository_ref: RepositoryRef { name: "ml-models".into() },
            model: ModelSource { target: "fraud/1.0/model.onnx".into(), mount_path: "/models".into() },
            replicas: 2,
            template: Default::default(),
            strategy: Default::default(),
            gates: Default::default(),
            rollback: Default::default(),
        },
    );
    r.metadata = ObjectMeta {
        name: Some("fraud".into()),
        namespace: Some("ml".into()),
        generation: Some(generation),
        ..Default::default()
    };
    r
}

fn at(min: u32) -> Timestamp {
    format!("2026-11-26T12:{min:02}:00Z").parse().unwrap()
}

#[test]
fn admission_table() {
    struct Case {
        name: &'static str,
        found: bool,
        want_status: &'static str,
        want_reason: &'static str,
    }
    let cases = [
        Case { name: "repository exists", found: true, want_status: "True", want_reason: "RepositoryFound" },
        Case { name: "repository missing", found: false, want_status: "False", want_reason: "RepositoryNotFound" },
    ];
    for c in cases {
        let s = status(&release(3), &Observed { repository_found: c.found }, at(0));
        let cond = s.conditions.iter().find(|c| c.type_ == ACCEPTED).unwrap();
        assert_eq!(cond.status, c.want_status, "{}", c.name);
        assert_eq!(cond.reason, c.want_reason, "{}", c.name);
        assert_eq!(cond.observed_generation, Some(3), "{}", c.name);
        assert_eq!(s.observed_generation, Some(3), "{}", c.name);
        assert_eq!(s.phase, Some(Phase::Verifying), "{}", c.name);
    }
}

#[test]
fn missing_repository_message_says_what_to_do() {
    let s = status(&release(1), &Observed { repository_found: false }, at(0));
    let msg = s.message.unwrap();
    assert!(
        msg.contains("\"ml-models\"") && msg.contains("\"ml\"") && msg.contains("spec.repositoryRef.name"),
        "{msg}"
    );
}

#[test]
fn unchanged_observation_gives_identical_status() {
    // Idempotence: the controller writes only when this differs from what is stored.
    let mut r = release(1);
    let first = status(&r, &Observed { repository_found: true }, at(0));
    r.status = Some(first.clone());
    let second = status(&r, &Observed { repository_found: true }, at(7));
    assert_eq!(first, second);
}

#[test]
fn new_generation_is_observed_and_transition_time_kept() {
    let mut r = release(1);
    r.status = Some(status(&r, &Observed { repository_found: true }, at(0)));
    r.metadata.generation = Some(2);
    let s = status(&r, &Observed { repository_found: true }, at(9));
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(s.conditions[0].observed_generation, Some(2));
    assert_eq!(s.conditions[0].last_transition_time.0, at(0));
}

//! The kubernetes gate, always on: what the pods of one revision say about it. Pure, so
//! a pod event can be judged the moment it arrives.

use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};

use crate::{
    api::{ConditionStatus, FETCH_CONTAINER, FETCH_EXIT_UNTRUSTED},
    plan::{PodHealth, PodProblem},
};

/// Restarts of one container that count as a crash loop even before the kubelet says so.
const MAX_RESTARTS: i32 = 3;
/// Waiting reasons that may clear up by themselves (an image can be pushed, or loaded onto
/// the node for `imagePullPolicy: Never`); they count after the progress deadline.
const SLOW: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "ContainerCreating",
    "PodInitializing",
    "CreateContainerConfigError",
];

/// What one pod says of its revision, as one pod's `PodHealth` (nothing for a pod on
/// its way out). The watch cache keeps this instead of the pod's status: a ready pod is
/// a few counters, a failing one a reason and a message of at most `MAX_MESSAGE_BYTES`
/// (a termination message is the pod's to write).
pub fn health_of(pod: &str, deleting: bool, status: Option<&PodStatus>) -> PodHealth {
    let Some(status) = status.filter(|_| !deleting) else {
        return if deleting { PodHealth::default() } else { PodHealth { created: 1, ..Default::default() } };
    };
    let is = |type_: &str| {
        status.conditions.iter().flatten().any(|c| c.type_ == type_ && c.status == ConditionStatus::True.as_str())
    };
    let mut problem = problem_of(
        pod,
        &status.phase,
        status.init_container_statuses.iter().flatten(),
        status.container_statuses.iter().flatten(),
    );
    if let Some(
        PodProblem::Untrusted { message } | PodProblem::Hard { message, .. } | PodProblem::Waiting { message, .. },
    ) = problem.as_mut()
    {
        crate::text::cut(message, MAX_MESSAGE_BYTES);
    }
    PodHealth {
        created: 1,
        scheduled: i32::from(is("PodScheduled")),
        initialized: i32::from(is("Initialized")),
        ready: i32::from(is("Ready")),
        problem,
    }
}

/// Ready pods and the worst problem among the pods of one revision.
pub fn assess<'a>(pods: impl IntoIterator<Item = &'a PodHealth>) -> PodHealth {
    let mut health = PodHealth::default();
    for pod in pods {
        health.created += pod.created;
        health.scheduled += pod.scheduled;
        health.initialized += pod.initialized;
        health.ready += pod.ready;
        health.problem = worst(health.problem.take(), pod.problem.clone());
    }
    health
}

fn problem_of<'a>(
    pod: &str,
    phase: &Option<String>,
    inits: impl Iterator<Item = &'a ContainerStatus>,
    containers: impl Iterator<Item = &'a ContainerStatus>,
) -> Option<PodProblem> {
    let mut found = None;
    for c in inits {
        let terminated = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
        let Some(t) = terminated.filter(|t| t.exit_code != 0) else { continue };
        let message = t.message.clone().unwrap_or_default().trim().to_string();
        let problem = if c.name == FETCH_CONTAINER && t.exit_code == FETCH_EXIT_UNTRUSTED {
            PodProblem::Untrusted { message: format!("pod {pod}: {message}") }
        } else if c.name == FETCH_CONTAINER {
            PodProblem::Hard {
                reason: "FetchFailed".into(),
                message: format!("pod {pod}: the model could not be fetched: {message}"),
            }
        } else {
            PodProblem::Hard {
                reason: "InitContainerFailed".into(),
                message: format!("pod {pod}: init container {} exited {}: {message}", c.name, t.exit_code),
            }
        };
        found = worst(found, Some(problem));
    }
    for c in containers {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        let problem = if last.or(now).is_some_and(|t| t.reason.as_deref() == Some("OOMKilled")) {
            Some(PodProblem::Hard {
                reason: "OOMKilled".into(),
                message: format!("pod {pod}: container {} was OOM-killed ({} restarts)", c.name, c.restart_count),
            })
        } else if waiting.is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            || c.restart_count >= MAX_RESTARTS
        {
            let exit = last.map(|t| format!(", last exit code {}", t.exit_code)).unwrap_or_default();
            Some(PodProblem::Hard {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "pod {pod}: container {} is crash-looping ({} restarts{exit})",
                    c.name, c.restart_count
                ),
            })
        } else if let Some(w) = waiting.filter(|w| w.reason.as_deref().is_some_and(|r| SLOW.contains(&r))) {
            let reason = w.reason.clone().unwrap_or_default();
            Some(PodProblem::Waiting {
                reason: reason.clone(),
                message: format!("pod {pod}: container {}: {}", c.name, w.message.clone().unwrap_or(reason)),
            })
        } else {
            None
        };
        found = worst(found, problem);
    }
    if found.is_none() && phase.as_deref() == Some("Failed") {
        found = Some(PodProblem::Hard { reason: "PodFailed".into(), message: format!("pod {pod} failed") });
    }
    found
}

/// Longest message of a container's state kept (a termination message may be 4 KiB, and
/// it is the pod's to write): enough for what `modelgate fetch` says when it refuses.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Trust failures first, then hard failures, then slow ones.
fn worst(a: Option<PodProblem>, b: Option<PodProblem>) -> Option<PodProblem> {
    fn rank(p: &Option<PodProblem>) -> u8 {
        match p {
            Some(PodProblem::Untrusted { .. }) => 3,
            Some(PodProblem::Hard { .. }) => 2,
            Some(PodProblem::Waiting { .. }) => 1,
            None => 0,
        }
    }
    if rank(&b) > rank(&a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    fn of(pod: &Pod) -> PodHealth {
        health_of("p", pod.metadata.deletion_timestamp.is_some(), pod.status.as_ref())
    }

    #[test]
    fn pod_states_and_what_they_mean() {
        let ready = pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}));
        let crash = pod(
            json!({"containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        let oom = pod(
            json!({"containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
            "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        let refused = pod(
            json!({"initContainerStatuses": [{"name": "modelgate-fetch", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 3, "message": "sha256 mismatch"}}}]}),
        );
        let fetch_down = pod(
            json!({"initContainerStatuses": [{"name": "modelgate-fetch", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
            "state": {"terminated": {"exitCode": 1, "message": "connection refused"}}}]}),
        );
        let pulling = pod(
            json!({"containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}),
        );

        assert_eq!(assess([&of(&ready), &of(&ready)]), PodHealth { ready: 2, created: 2, ..Default::default() });
        let bound = pod(json!({"conditions": [{"type": "PodScheduled", "status": "True"}]}));
        let fetched = pod(json!({"conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "False"}]}));
        assert_eq!(
            assess([&of(&bound), &of(&fetched), &of(&pod(json!({})))]),
            PodHealth { created: 3, scheduled: 2, initialized: 1, ready: 0, problem: None },
            "each stage a pod reaches counts (progressDeadline measures them)"
        );
        assert!(
            matches!(assess([&of(&ready), &of(&crash)]).problem, Some(PodProblem::Hard { reason, .. }) if reason == "CrashLoopBackOff")
        );
        assert!(matches!(assess([&of(&oom)]).problem, Some(PodProblem::Hard { reason, .. }) if reason == "OOMKilled"));
        assert!(
            matches!(assess([&of(&crash), &of(&refused), &of(&pulling)]).problem, Some(PodProblem::Untrusted { message }) if message.contains("sha256 mismatch"))
        );
        assert!(
            matches!(assess([&of(&fetch_down)]).problem, Some(PodProblem::Hard { reason, .. }) if reason == "FetchFailed")
        );
        assert!(
            matches!(assess([&of(&pulling)]).problem, Some(PodProblem::Waiting { reason, .. }) if reason == "ImagePullBackOff")
        );
        let mut leaving = crash.clone();
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
        assert_eq!(assess([&of(&leaving)]), PodHealth::default(), "pods on their way out do not count");
    }

    #[test]
    fn a_pod_is_kept_as_its_health_with_a_bounded_message() {
        let long = "x".repeat(4096);
        let full = pod(json!({
            "phase": "Running", "hostIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "False", "message": long}],
            "initContainerStatuses": [{"name": "modelgate-fetch", "image": "i", "imageID": "x", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 3, "message": long}}}],
        }));
        let Some(PodProblem::Untrusted { message }) = of(&full).problem else { panic!("{:?}", of(&full)) };
        assert_eq!(message.len(), MAX_MESSAGE_BYTES);
        assert!(message.starts_with("pod p: xxx"));
        assert_eq!(health_of("p", false, None), PodHealth { created: 1, ..Default::default() });
    }
}

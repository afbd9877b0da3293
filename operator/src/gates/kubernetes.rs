//! The kubernetes gate, always on: what the pods of one revision say about it. Pure, so
//! a pod event can be judged the moment it arrives.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodStatus,
};

use crate::{
    api::{FETCH_CONTAINER, FETCH_EXIT_UNTRUSTED},
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

/// Ready pods and the worst problem among `pods` (all of one revision).
pub fn assess<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> PodHealth {
    let mut health = PodHealth::default();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let status = pod.status.clone().unwrap_or_default();
        let is = |type_: &str| status.conditions.iter().flatten().any(|c| c.type_ == type_ && c.status == "True");
        health.created += 1;
        health.scheduled += i32::from(is("PodScheduled"));
        health.initialized += i32::from(is("Initialized"));
        health.ready += i32::from(is("Ready"));
        let name = pod.metadata.name.clone().unwrap_or_default();
        let problem = problem_of(
            &name,
            &status.phase,
            status.init_container_statuses.iter().flatten(),
            status.container_statuses.iter().flatten(),
        );
        health.problem = worst(health.problem.take(), problem);
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

/// What `assess` reads of a pod's status, and nothing else: the watch cache keeps a pod
/// this small (addresses, images, container IDs, times and resources go), and a message
/// a container wrote is cut to `MAX_MESSAGE_BYTES`.
pub fn assessed(status: PodStatus) -> PodStatus {
    fn bounded(mut message: String) -> String {
        crate::text::cut(&mut message, MAX_MESSAGE_BYTES);
        message
    }
    fn state(s: ContainerState) -> ContainerState {
        ContainerState {
            running: s.running.map(|_| Default::default()),
            waiting: s.waiting.map(|w| ContainerStateWaiting { reason: w.reason, message: w.message.map(bounded) }),
            terminated: s.terminated.map(|t| ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: t.reason,
                message: t.message.map(bounded),
                signal: t.signal,
                ..Default::default()
            }),
        }
    }
    let containers = |list: Option<Vec<ContainerStatus>>| {
        list.map(|list| {
            list.into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    ready: c.ready,
                    restart_count: c.restart_count,
                    state: c.state.map(state),
                    last_state: c.last_state.map(state),
                    ..Default::default()
                })
                .collect()
        })
    };
    PodStatus {
        phase: status.phase,
        conditions: status.conditions.map(|list| {
            list.into_iter().map(|c| PodCondition { type_: c.type_, status: c.status, ..Default::default() }).collect()
        }),
        init_container_statuses: containers(status.init_container_statuses),
        container_statuses: containers(status.container_statuses),
        ..Default::default()
    }
}

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
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
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

        assert_eq!(assess([&ready, &ready]), PodHealth { ready: 2, created: 2, ..Default::default() });
        let bound = pod(json!({"conditions": [{"type": "PodScheduled", "status": "True"}]}));
        let fetched = pod(json!({"conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "False"}]}));
        assert_eq!(
            assess([&bound, &fetched, &pod(json!({}))]),
            PodHealth { created: 3, scheduled: 2, initialized: 1, ready: 0, problem: None },
            "each stage a pod reaches counts (progressDeadline measures them)"
        );
        assert!(
            matches!(assess([&ready, &crash]).problem, Some(PodProblem::Hard { reason, .. }) if reason == "CrashLoopBackOff")
        );
        assert!(matches!(assess([&oom]).problem, Some(PodProblem::Hard { reason, .. }) if reason == "OOMKilled"));
        assert!(
            matches!(assess([&crash, &refused, &pulling]).problem, Some(PodProblem::Untrusted { message }) if message.contains("sha256 mismatch"))
        );
        assert!(
            matches!(assess([&fetch_down]).problem, Some(PodProblem::Hard { reason, .. }) if reason == "FetchFailed")
        );
        assert!(
            matches!(assess([&pulling]).problem, Some(PodProblem::Waiting { reason, .. }) if reason == "ImagePullBackOff")
        );
        let mut leaving = crash.clone();
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
        assert_eq!(assess([&leaving]), PodHealth::default(), "pods on their way out do not count");

        // As the watch cache keeps them, every pod says the same.
        let trimmed = |p: &Pod| Pod { status: p.status.clone().map(assessed), ..p.clone() };
        for p in [&ready, &crash, &oom, &refused, &fetch_down, &pulling, &bound, &fetched] {
            assert_eq!(assess([&trimmed(p)]), assess([p]), "{p:?}");
        }
    }

    #[test]
    fn a_cached_pod_keeps_what_is_assessed_and_a_bounded_message() {
        let long = "x".repeat(4096);
        let full = pod(json!({
            "phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.1.0.1", "qosClass": "Burstable",
            "conditions": [{"type": "Ready", "status": "True", "message": long, "lastTransitionTime": "2026-12-06T00:00:00Z"}],
            "initContainerStatuses": [{"name": "modelgate-fetch", "image": "registry/fetch@sha256:0", "imageID": "x",
                "containerID": "containerd://0", "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 3, "message": long, "containerID": "containerd://0"}}}],
        }));
        let kept = assessed(full.status.clone().unwrap());
        assert_eq!(kept.host_ip, None);
        assert_eq!(kept.pod_ip, None);
        assert_eq!(kept.conditions.as_ref().unwrap()[0].message, None);
        let fetch = &kept.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!((fetch.image.as_str(), fetch.container_id.as_deref()), ("", None));
        let message = fetch.state.as_ref().unwrap().terminated.as_ref().unwrap().message.as_deref().unwrap();
        assert_eq!(message.len(), MAX_MESSAGE_BYTES);
        assert!(serde_json::to_vec(&kept).unwrap().len() < 1400);
    }
}

//! What a simulated pod does, and the pod status that shows it. Pure: the kubelet loop
//! decides *when*, this module decides *what the API should say*.

use std::{fmt, str::FromStr};

use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod,
        PodCondition, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

/// Pod annotation a test sets to choose how that pod behaves.
pub const BEHAVIOR_ANNOTATION: &str = "sim.modelgate.dev/behavior";
/// Namespaced ConfigMap whose keys are model sha256 digests (the value of the
/// `modelgate.dev/model-sha256` pod annotation) and whose values are behaviours: every
/// pod serving that model behaves so. Lets a test say "v3 crashes" before v3 has pods.
pub const BEHAVIOR_CONFIGMAP: &str = "sim-kubelet";
pub const NODE_NAME: &str = "sim-node";
/// The simulated node's taint (`NoSchedule`) and the label naming each test node's kind
/// (`real` or `simulated`).
pub const SIMULATED_TAINT: &str = "modelgate.dev/simulated";
pub const SIMULATED_LABEL: &str = "modelgate.dev/node";
pub const NODE_IP: &str = "10.0.0.10";

/// How a simulated pod behaves. Parsed from `Name` or `Name:message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Containers run and pass readiness.
    Ready,
    /// Containers run but never become ready.
    NotReady,
    /// The main container exits 1 again and again (CrashLoopBackOff, rising restarts).
    CrashLoop,
    /// The main container is OOM-killed again and again.
    OomKilled,
    /// The first init container fails again and again; the message is its termination
    /// message (what `modelgate fetch` would print).
    InitFailed(String),
    /// Like `InitFailed`, with the exit code `modelgate fetch` uses when it refuses a
    /// model that does not match what was signed (a tampered file).
    FetchRefused(String),
    /// The image cannot be pulled.
    ImagePullBackOff,
}

impl Behavior {
    /// Whether restarts keep rising while the pod behaves so.
    pub fn restarts(&self) -> bool {
        matches!(self, Behavior::CrashLoop | Behavior::OomKilled | Behavior::InitFailed(_) | Behavior::FetchRefused(_))
    }
}

impl FromStr for Behavior {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, message) = s.split_once(':').map_or((s, None), |(n, m)| (n, Some(m.trim())));
        Ok(match name.trim() {
            "Ready" => Behavior::Ready,
            "NotReady" => Behavior::NotReady,
            "CrashLoop" | "CrashLoopBackOff" => Behavior::CrashLoop,
            "OOMKilled" | "OomKilled" => Behavior::OomKilled,
            "InitFailed" => Behavior::InitFailed(message.unwrap_or("init container failed").to_string()),
            "FetchRefused" => {
                Behavior::FetchRefused(message.unwrap_or("the model does not match what was signed").to_string())
            }
            "ImagePullBackOff" => Behavior::ImagePullBackOff,
            other => {
                return Err(format!(
                    "unknown behaviour {other:?}; use Ready, NotReady, CrashLoop, OOMKilled, InitFailed[:message], FetchRefused[:message] or ImagePullBackOff"
                ));
            }
        })
    }
}

impl fmt::Display for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behavior::Ready => f.write_str("Ready"),
            Behavior::NotReady => f.write_str("NotReady"),
            Behavior::CrashLoop => f.write_str("CrashLoop"),
            Behavior::OomKilled => f.write_str("OOMKilled"),
            Behavior::InitFailed(m) => write!(f, "InitFailed:{m}"),
            Behavior::FetchRefused(m) => write!(f, "FetchRefused:{m}"),
            Behavior::ImagePullBackOff => f.write_str("ImagePullBackOff"),
        }
    }
}

/// A stable pod IP in 10.244.0.0/16 derived from the pod's UID.
pub fn pod_ip(uid: &str) -> String {
    let h = uid.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("10.244.{}.{}", (h >> 8) % 256, (h % 254) + 1)
}

fn cond(type_: &str, ok: bool, reason: Option<&str>, now: &Time) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(Into::into),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: Some(message.into()) }),
        ..Default::default()
    }
}

fn terminated(code: i32, reason: &str, message: Option<&str>, at: &Time) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.into()),
            message: message.map(Into::into),
            started_at: Some(at.clone()),
            finished_at: Some(at.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running(at: &Time) -> ContainerState {
    ContainerState { running: Some(ContainerStateRunning { started_at: Some(at.clone()) }), ..Default::default() }
}

fn status_of(
    name: &str,
    image: &str,
    ready: bool,
    restarts: i32,
    state: ContainerState,
    last: Option<ContainerState>,
) -> ContainerStatus {
    let started = state.running.is_some();
    ContainerStatus {
        name: name.into(),
        image: image.into(),
        image_id: format!("sim://{image}"),
        container_id: Some(format!("sim://{name}")),
        ready,
        started: Some(started),
        restart_count: restarts,
        state: Some(state),
        last_state: last,
        ..Default::default()
    }
}

/// The status a pod bound to the simulated node should have. `restarts` is the restart
/// count to report for the failing container (the loop raises it over time).
pub fn desired_status(pod: &Pod, behavior: &Behavior, restarts: i32, now: Timestamp) -> PodStatus {
    let now = Time(now);
    let spec = pod.spec.clone().unwrap_or_default();
    let old = pod.status.clone().unwrap_or_default();
    let started_at = old.start_time.clone().unwrap_or_else(|| now.clone());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let inits = spec.init_containers.unwrap_or_default();

    let init_failure = match behavior {
        Behavior::InitFailed(m) => Some((1, m)),
        Behavior::FetchRefused(m) => Some((modelgate::api::FETCH_EXIT_UNTRUSTED, m)),
        _ => None,
    };
    let init_blocked = init_failure.is_some() && !inits.is_empty();
    let mut init_statuses = Vec::new();
    for (i, c) in inits.iter().enumerate() {
        let image = c.image.clone().unwrap_or_default();
        init_statuses.push(match behavior {
            _ if i == 0 && init_failure.is_some() => {
                let (code, msg) = init_failure.expect("checked");
                status_of(
                    &c.name,
                    &image,
                    false,
                    restarts,
                    waiting("CrashLoopBackOff", &format!("back-off restarting failed container {} in pod", c.name)),
                    Some(terminated(code, "Error", Some(msg), &now)),
                )
            }
            _ if init_blocked => status_of(&c.name, &image, false, 0, waiting("PodInitializing", ""), None),
            _ => status_of(&c.name, &image, false, 0, terminated(0, "Completed", None, &started_at), None),
        });
    }

    let crash_message = |c: &str| format!("back-off restarting failed container {c} in pod");
    let mut main_statuses = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let image = c.image.clone().unwrap_or_default();
        let first = i == 0;
        main_statuses.push(match behavior {
            _ if init_blocked => status_of(&c.name, &image, false, 0, waiting("PodInitializing", ""), None),
            Behavior::Ready => status_of(&c.name, &image, true, 0, running(&started_at), None),
            Behavior::NotReady => status_of(&c.name, &image, false, 0, running(&started_at), None),
            Behavior::CrashLoop if first => status_of(
                &c.name,
                &image,
                false,
                restarts,
                waiting("CrashLoopBackOff", &crash_message(&c.name)),
                Some(terminated(1, "Error", None, &now)),
            ),
            Behavior::OomKilled if first => status_of(
                &c.name,
                &image,
                false,
                restarts,
                waiting("CrashLoopBackOff", &crash_message(&c.name)),
                Some(terminated(137, "OOMKilled", None, &now)),
            ),
            Behavior::ImagePullBackOff => status_of(
                &c.name,
                &image,
                false,
                0,
                waiting("ImagePullBackOff", &format!("Back-off pulling image \"{image}\"")),
                None,
            ),
            // Side containers of a crashing pod keep running.
            _ => status_of(&c.name, &image, true, 0, running(&started_at), None),
        });
    }

    let all_ready = main_statuses.iter().all(|s| s.ready);
    let pending = init_blocked || *behavior == Behavior::ImagePullBackOff;
    let not_ready = (!all_ready).then_some("ContainersNotReady");
    let mut conditions = vec![
        cond("PodReadyToStartContainers", true, None, &now),
        cond("Initialized", !init_blocked, init_blocked.then_some("ContainersNotInitialized"), &now),
        cond("ContainersReady", all_ready, not_ready, &now),
        cond("Ready", all_ready, not_ready, &now),
        cond("PodScheduled", true, None, &now),
    ];
    // Keep transition times of conditions whose status did not change.
    for c in &mut conditions {
        if let Some(prev) = old.conditions.iter().flatten().find(|p| p.type_ == c.type_ && p.status == c.status) {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    let ip = pod_ip(&uid);
    PodStatus {
        phase: Some(if pending { "Pending" } else { "Running" }.into()),
        conditions: Some(conditions),
        host_ip: Some(NODE_IP.into()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP { ip: NODE_IP.into() }]),
        pod_ip: Some(ip.clone()),
        pod_ips: Some(vec![PodIP { ip }]),
        start_time: Some(started_at),
        // Set by the API server at creation, immutable after.
        qos_class: old.qos_class.clone(),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(main_statuses),
        ..Default::default()
    }
}

/// The parts of a status that matter for deciding whether to write; timestamps aside.
pub fn fingerprint(status: &PodStatus) -> String {
    let containers = |v: &Option<Vec<ContainerStatus>>| {
        v.iter()
            .flatten()
            .map(|c| {
                let state = c.state.as_ref().map(|s| {
                    if s.running.is_some() {
                        "running".to_string()
                    } else if let Some(w) = &s.waiting {
                        format!("waiting:{}", w.reason.clone().unwrap_or_default())
                    } else if let Some(t) = &s.terminated {
                        format!("terminated:{}", t.exit_code)
                    } else {
                        String::new()
                    }
                });
                format!("{}:{}:{}:{:?}", c.name, c.ready, c.restart_count, state)
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let conditions =
        status.conditions.iter().flatten().map(|c| format!("{}={}", c.type_, c.status)).collect::<Vec<_>>().join(",");
    format!(
        "{:?}|{:?}|{}|{}|{}",
        status.phase,
        status.pod_ip,
        conditions,
        containers(&status.init_container_statuses),
        containers(&status.container_statuses)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn pod(with_init: bool) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta { uid: Some("u-1".into()), ..Default::default() },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "server".into(),
                    image: Some("srv:1".into()),
                    ..Default::default()
                }],
                init_containers: with_init.then(|| {
                    vec![Container { name: "fetch".into(), image: Some("mg:1".into()), ..Default::default() }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ready(s: &PodStatus) -> bool {
        s.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
    }

    #[test]
    fn parses_behaviours_and_messages() {
        assert_eq!("CrashLoop".parse::<Behavior>().unwrap(), Behavior::CrashLoop);
        assert_eq!(
            "InitFailed: sha256 mismatch".parse::<Behavior>().unwrap(),
            Behavior::InitFailed("sha256 mismatch".into())
        );
        assert_eq!("FetchRefused:x".parse::<Behavior>().unwrap(), Behavior::FetchRefused("x".into()));
        assert!("Explode".parse::<Behavior>().unwrap_err().contains("CrashLoop"));
    }

    #[test]
    fn each_behaviour_shows_like_a_kubelet_would() {
        let now = Timestamp::now();
        let s = desired_status(&pod(true), &Behavior::Ready, 0, now);
        assert!(ready(&s));
        assert_eq!(s.phase.as_deref(), Some("Running"));

        let s = desired_status(&pod(false), &Behavior::CrashLoop, 3, now);
        assert!(!ready(&s));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.restart_count, 3);
        assert_eq!(c.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("CrashLoopBackOff"));

        let s = desired_status(&pod(false), &Behavior::OomKilled, 1, now);
        let last = s.container_statuses.as_ref().unwrap()[0].last_state.clone().unwrap();
        assert_eq!(last.terminated.unwrap().reason.as_deref(), Some("OOMKilled"));

        let s = desired_status(&pod(true), &Behavior::InitFailed("bad digest".into()), 2, now);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(init.last_state.clone().unwrap().terminated.unwrap().message.as_deref(), Some("bad digest"));

        let s = desired_status(&pod(false), &Behavior::NotReady, 0, now);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(!ready(&s));
    }

    #[test]
    fn fingerprint_ignores_time_but_not_restarts() {
        let a = desired_status(&pod(false), &Behavior::CrashLoop, 1, Timestamp::now());
        let b = desired_status(
            &pod(false),
            &Behavior::CrashLoop,
            1,
            Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(5),
        );
        let c = desired_status(&pod(false), &Behavior::CrashLoop, 2, Timestamp::now());
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}

//! A simulated kubelet, for what the real node of the test cluster cannot do on two cores
//! (thousands of pods) or on demand (a failure at a chosen moment). It registers one
//! Node, tainted so that only pods that tolerate it are scheduled there, and writes the
//! status of the pods bound to it the way a kubelet would, including the failures tests
//! ask for (see [`behavior`]). Its pods never run; everything else is real.

pub mod behavior;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{ConfigMap, Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo, Pod},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, Time},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::json;
use tracing::{debug, info, warn};

pub use behavior::{BEHAVIOR_ANNOTATION, BEHAVIOR_CONFIGMAP, Behavior, NODE_NAME, SIMULATED_LABEL, SIMULATED_TAINT};

/// Pod annotation set by modelgate with the digest of the model a pod serves.
const MODEL_ANNOTATION: &str = modelgate::api::ANNOTATION_MODEL_SHA256;
/// A crash-looping container restarts this often (a real kubelet backs off from 10 s;
/// tests want to see the count rise quickly).
const RESTART_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
const FIELD_MANAGER: &str = "sim-kubelet";

struct Kubelet {
    client: Client,
    configmaps: reflector::Store<ConfigMap>,
    /// Last restart bump per pod UID.
    bumps: Mutex<HashMap<String, Instant>>,
    /// What the real `modelgate fetch` init container did, per pod UID (see `fetch`).
    fetched: Mutex<HashMap<String, Option<Behavior>>>,
}

/// Runs until the process is stopped.
pub async fn run(client: Client) -> anyhow::Result<()> {
    register_node(&client).await?;
    info!(node = NODE_NAME, "simulated node registered");

    let (cm_store, cm_writer) = reflector::store::<ConfigMap>();
    let cm_watch = reflector(
        cm_writer,
        watcher(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={BEHAVIOR_CONFIGMAP}")),
        ),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| async {});
    tokio::spawn(cm_watch);

    let kubelet = Arc::new(Kubelet {
        client: client.clone(),
        configmaps: cm_store,
        bumps: Mutex::default(),
        fetched: Mutex::default(),
    });

    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let pods = reflector(pod_writer, watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()))
        .default_backoff()
        .touched_objects();

    // Restarts rise and ConfigMap rules change without pod events: re-check every pod.
    // Its own task, giving way now and then: with 20,000 pods a sweep is long, and the
    // heartbeat and pod events must not wait for it.
    tokio::spawn({
        let kubelet = kubelet.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let started = Instant::now();
                let pods = pod_store.state();
                for (i, pod) in pods.iter().enumerate() {
                    kubelet.sync(pod).await;
                    if i % 64 == 63 {
                        tokio::task::yield_now().await;
                    }
                }
                if started.elapsed() > Duration::from_secs(2) {
                    debug!(pods = pods.len(), seconds = started.elapsed().as_secs_f64(), "slow sweep");
                }
            }
        }
    });
    // A real kubelet's node lease is renewed by its own loop, first: a node that misses
    // it for 40 s is tainted unreachable and, 5 minutes later, its pods are evicted.
    tokio::spawn({
        let client = client.clone();
        async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = heartbeat(&client).await {
                    warn!(error = %e, "node heartbeat failed");
                }
            }
        }
    });
    // A watch error (the API server restarting, a timeout) is retried with backoff, as
    // a kubelet does: the stream goes on, so the node outlives its control plane.
    let events = pods.for_each_concurrent(16, |pod| {
        let kubelet = kubelet.clone();
        async move {
            match pod {
                Ok(pod) => kubelet.sync(&pod).await,
                Err(e) => warn!(error = %e, "pod watch failed; retrying"),
            }
        }
    });
    events.await;
    anyhow::bail!("pod watch ended")
}

impl Kubelet {
    /// The behaviour chosen for a pod: its annotation first, then the namespace's
    /// ConfigMap entry for its model digest, else Ready.
    fn behavior(&self, pod: &Pod) -> Behavior {
        let annotations = pod.annotations();
        let chosen = annotations.get(BEHAVIOR_ANNOTATION).cloned().or_else(|| {
            let digest = annotations.get(MODEL_ANNOTATION)?;
            let ns = pod.namespace()?;
            let cm = self.configmaps.get(&reflector::ObjectRef::new(BEHAVIOR_CONFIGMAP).within(&ns))?;
            cm.data.as_ref()?.get(digest).cloned()
        });
        match chosen.map(|s| s.parse::<Behavior>()) {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                warn!(pod = %pod.name_any(), error = %e, "ignoring behaviour");
                Behavior::Ready
            }
            None => Behavior::Ready,
        }
    }

    async fn sync(&self, pod: &Pod) {
        if let Err(e) = self.try_sync(pod).await {
            // Conflicts and vanished pods are normal churn; the next event retries.
            let churn =
                matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 404 || s.code == 409);
            if churn {
                debug!(pod = %pod.name_any(), error = %e, "sync failed");
            } else {
                warn!(pod = %pod.name_any(), error = %e, "sync failed");
            }
        }
    }

    async fn try_sync(&self, pod: &Pod) -> anyhow::Result<()> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());

        if pod.metadata.deletion_timestamp.is_some() {
            // A kubelet confirms deletion once containers stopped; ours stop at once.
            if node.as_deref() == Some(NODE_NAME) {
                let dp = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
                api.delete(&name, &dp).await?;
                self.bumps.lock().unwrap().remove(&pod.uid().unwrap_or_default());
                self.fetched.lock().unwrap().remove(&pod.uid().unwrap_or_default());
            }
            return Ok(());
        }
        // kube-scheduler binds pods; this kubelet only runs what is bound to its node.
        match node.as_deref() {
            Some(NODE_NAME) => self.write_status(&api, pod).await,
            Some(_) | None => Ok(()),
        }
    }

    async fn write_status(&self, api: &Api<Pod>, pod: &Pod) -> anyhow::Result<()> {
        let behavior = match self.fetch(pod).await {
            Some(outcome) => outcome,
            None => self.behavior(pod),
        };
        let uid = pod.uid().unwrap_or_default();
        let current = pod.status.clone().unwrap_or_default();
        let current_restarts = current
            .container_statuses
            .iter()
            .flatten()
            .chain(current.init_container_statuses.iter().flatten())
            .map(|c| c.restart_count)
            .max()
            .unwrap_or(0);
        let restarts = if behavior.restarts() {
            let mut bumps = self.bumps.lock().unwrap();
            let due = bumps.get(&uid).is_none_or(|t| t.elapsed() >= RESTART_EVERY);
            if due {
                bumps.insert(uid.clone(), Instant::now());
                current_restarts + 1
            } else {
                current_restarts.max(1)
            }
        } else {
            0
        };
        let desired = behavior::desired_status(pod, &behavior, restarts, Timestamp::now());
        if behavior::fingerprint(&desired) == behavior::fingerprint(&current) {
            return Ok(());
        }
        let patch = json!({"status": desired});
        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        debug!(pod = %pod.name_any(), %behavior, restarts, "status written");
        Ok(())
    }
}

impl Kubelet {
    /// With `run-fetch: "true"` in the namespace's `sim-kubelet` ConfigMap, the pod's
    /// `modelgate-fetch` init container really runs, on this machine: its ConfigMap and
    /// emptyDir volumes become directories, its paths are mapped into them, and the
    /// modelgate binary next to this one verifies and downloads the model. Its exit code
    /// and message become the pod's status (exit 3: the model was refused). `None`: not
    /// asked for, no such init container, or the fetch succeeded (the pod then behaves as
    /// the other rules say); `NotReady` while it runs.
    async fn fetch(&self, pod: &Pod) -> Option<Behavior> {
        let ns = pod.namespace()?;
        let cm = self.configmaps.get(&reflector::ObjectRef::new(BEHAVIOR_CONFIGMAP).within(&ns))?;
        if cm.data.as_ref()?.get(RUN_FETCH).map(String::as_str) != Some("true")
            || pod.annotations().contains_key(BEHAVIOR_ANNOTATION)
        {
            return None;
        }
        let spec = pod.spec.as_ref()?;
        let init = spec.init_containers.iter().flatten().find(|c| c.name == modelgate::api::FETCH_CONTAINER)?;
        let uid = pod.uid()?;
        {
            let mut fetched = self.fetched.lock().unwrap();
            match fetched.get(&uid) {
                Some(Some(Behavior::Ready)) => return None,
                Some(Some(done)) => return Some(done.clone()),
                Some(None) => return Some(Behavior::NotReady),
                None => {
                    fetched.insert(uid.clone(), None);
                }
            }
        }
        let outcome = match run_fetch(&self.client, &ns, spec, init).await {
            Ok((0, _)) => Behavior::Ready,
            Ok((code, message)) if code == modelgate::api::FETCH_EXIT_UNTRUSTED => Behavior::FetchRefused(message),
            Ok((_, message)) => Behavior::InitFailed(message),
            Err(e) => Behavior::InitFailed(format!("the simulated kubelet could not run the init container: {e:#}")),
        };
        info!(pod = %pod.name_any(), %outcome, "modelgate-fetch ran");
        self.fetched.lock().unwrap().insert(uid, Some(outcome.clone()));
        (outcome != Behavior::Ready).then_some(outcome)
    }
}

/// Key of the `sim-kubelet` ConfigMap that makes model pods run their fetch for real.
pub const RUN_FETCH: &str = "run-fetch";

async fn run_fetch(
    client: &Client,
    ns: &str,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    init: &k8s_openapi::api::core::v1::Container,
) -> anyhow::Result<(i32, String)> {
    let root = tempfile::tempdir()?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut mounts = Vec::new();
    for m in init.volume_mounts.iter().flatten() {
        let host = root.path().join(&m.name);
        std::fs::create_dir_all(&host)?;
        let volume = spec.volumes.iter().flatten().find(|v| v.name == m.name).context("a mounted volume exists")?;
        if let Some(source) = &volume.config_map {
            let cm = cms.get(&source.name).await?;
            let data = cm.data.unwrap_or_default();
            for item in source.items.iter().flatten() {
                let value = data
                    .get(&item.key)
                    .with_context(|| format!("ConfigMap {} has no key {}", source.name, item.key))?;
                std::fs::write(host.join(&item.path), value)?;
            }
        }
        mounts.push((m.mount_path.clone(), host));
    }
    let args: Vec<String> = init
        .args
        .iter()
        .flatten()
        .map(|a| match mounts.iter().find(|(path, _)| a.starts_with(path.as_str())) {
            Some((path, host)) => format!("{}{}", host.display(), &a[path.len()..]),
            None => a.clone(),
        })
        .collect();
    let bin = std::env::current_exe()?.with_file_name("modelgate");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&bin).args(&args).env("TMPDIR", root.path()).output(),
    )
    .await
    .context("modelgate fetch took longer than 60 s")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
    Ok((out.status.code().unwrap_or(1), message))
}

fn node_status() -> NodeStatus {
    let q = |s: &str| Quantity(s.to_string());
    // Room for 20,000 pods with what modelgate's pods request (the fetch init container
    // asks for 50m CPU: 64 cores held only 1,280 of them, and the 10,000-release
    // benchmark stalled on "Insufficient cpu").
    let resources = [("cpu", q("2000")), ("memory", q("64Ti")), ("pods", q("20000")), ("ephemeral-storage", q("1Ti"))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<std::collections::BTreeMap<_, _>>();
    let now = Time(Timestamp::now());
    let c = |type_: &str, status: &str, reason: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(vec![
            c("Ready", "True", "KubeletReady"),
            c("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            c("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            c("PIDPressure", "False", "KubeletHasSufficientPID"),
        ]),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: behavior::NODE_IP.into() },
            NodeAddress { type_: "Hostname".into(), address: NODE_NAME.into() },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            kubelet_version: "v1.37.2-sim".into(),
            container_runtime_version: "sim://0".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn register_node(client: &Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "type": "simulated", SIMULATED_LABEL: "simulated"}},
        // Only pods that ask for the simulated node come here (`models::simulated`): the
        // real node runs everything else.
        "spec": {"taints": [{"key": SIMULATED_TAINT, "value": "true", "effect": "NoSchedule"}]},
    });
    nodes
        .patch(NODE_NAME, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&node))
        .await
        .context("register the simulated node")?;
    heartbeat(client).await
}

async fn heartbeat(client: &Client) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: kube::api::ObjectMeta { name: Some(NODE_NAME.into()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some(NODE_NAME.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    let mut value = serde_json::to_value(&lease)?;
    value["apiVersion"] = json!("coordination.k8s.io/v1");
    value["kind"] = json!("Lease");
    leases
        .patch(NODE_NAME, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value))
        .await
        .context("renew the node lease")?;
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME}, "status": node_status()});
    nodes
        .patch_status(NODE_NAME, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&status))
        .await
        .context("write node status")?;
    Ok(())
}

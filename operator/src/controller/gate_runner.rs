//! Gate checks run beside the reconciles, never inside them: a release's checks go to a
//! bounded pool when they are due, the reconcile that asked returns at once, and the
//! finished results wake the release again. A webhook that never answers or a
//! Prometheus that streams without end costs one pool slot until `CHECK_DEADLINE`, and
//! never holds up a rollout, a rollback or another tenant's release.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
};

use futures::channel::mpsc;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Semaphore;

use crate::{
    api::{AnalysisStatus, ModelRelease},
    plan::GateOutcome,
};

/// Releases whose checks may run at once; the others queue for a slot.
pub const POOL: usize = 16;
/// Of those, at most this many from one tenant: a team whose checks hang waits for its
/// own slots and leaves the rest of the pool to everyone else, however many namespaces
/// it has. A tenant is the value of the namespace label `modelgate.dev/tenant` (the
/// cluster admin's to set), else the namespace.
pub const PER_TENANT: usize = 4;

/// Namespace label naming the tenant a namespace belongs to, for the gate pool's shares.
pub const TENANT_LABEL: &str = "modelgate.dev/tenant";

/// The key of a namespace's share of the gate pool.
pub fn tenant_of(namespace: &str, labels: Option<&std::collections::BTreeMap<String, String>>) -> String {
    match labels.and_then(|l| l.get(TENANT_LABEL)) {
        Some(tenant) => format!("tenant/{tenant}"),
        None => format!("namespace/{namespace}"),
    }
}

/// A finished run of a release's checks.
#[derive(Clone)]
pub struct Finished {
    pub revision: i64,
    /// When the checks were started: what they measured is from then on.
    pub started: Timestamp,
    pub outcomes: Vec<GateOutcome>,
    /// The judge's judgement, when it ran (counters not folded in).
    pub analysis: Option<AnalysisStatus>,
}

#[derive(Default)]
struct Slot {
    running: bool,
    /// Results of the last finished run: the revision they judged, when the run started.
    done: Option<Finished>,
}

pub struct GateRunner {
    pool: Arc<Semaphore>,
    /// Each tenant's share, by `tenant_of`.
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    wake: mpsc::UnboundedSender<ObjectRef<ModelRelease>>,
}

impl GateRunner {
    /// The runner and the stream of releases to reconcile when their results are in.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ObjectRef<ModelRelease>>) {
        let (wake, woken) = mpsc::unbounded();
        let pool = Arc::new(Semaphore::new(POOL));
        (Self { pool, tenants: Mutex::default(), slots: Arc::default(), wake }, woken)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The finished results for `revision` of release `uid`, once: results for another
    /// revision (the canary changed meanwhile) are dropped.
    pub fn take(&self, uid: &str, revision: i64) -> Option<Finished> {
        let mut slots = self.slots();
        slots.get_mut(uid).and_then(|s| s.done.take()).filter(|f| f.revision == revision)
    }

    /// Gives back results taken by a reconcile whose decision was not written (it was
    /// made on a stale view): the next reconcile judges them, unless newer ones arrived.
    pub fn put_back(&self, uid: &str, finished: Finished) {
        let mut slots = self.slots();
        let slot = slots.entry(uid.to_string()).or_default();
        if slot.done.is_none() {
            slot.done = Some(finished);
        }
    }

    /// Whether a run for release `uid` is queued or in flight.
    pub fn running(&self, uid: &str) -> bool {
        self.slots().get(uid).is_some_and(|s| s.running)
    }

    /// Starts `checks` for `revision` unless a run is already queued or in flight, in the
    /// share of `tenant` (`tenant_of`).
    pub fn start<F>(&self, uid: &str, release: ObjectRef<ModelRelease>, tenant: String, revision: i64, checks: F)
    where
        F: Future<Output = (Vec<GateOutcome>, Option<AnalysisStatus>)> + Send + 'static,
    {
        {
            let mut slots = self.slots();
            let slot = slots.entry(uid.to_string()).or_default();
            if slot.running {
                return;
            }
            slot.running = true;
        }
        let share = {
            let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            tenants.entry(tenant).or_insert_with(|| Arc::new(Semaphore::new(PER_TENANT))).clone()
        };
        let (pool, slots, wake, uid) = (self.pool.clone(), self.slots.clone(), self.wake.clone(), uid.to_string());
        tokio::spawn(async move {
            // The semaphores are never closed; a closed one would only mean shutting down.
            let Ok(_own) = share.acquire_owned().await else { return };
            let Ok(_permit) = pool.acquire_owned().await else { return };
            let started = crate::plan::truncate(Timestamp::now());
            let (outcomes, analysis) = checks.await;
            {
                let mut slots = slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let slot = slots.entry(uid).or_default();
                slot.running = false;
                slot.done = Some(Finished { revision, started, outcomes, analysis });
            }
            let _ = wake.unbounded_send(release);
        });
    }

    /// Forgets releases that no longer exist (their runs finish and are dropped).
    pub fn retain(&self, live: &HashSet<String>) {
        self.slots().retain(|uid, slot| slot.running || live.contains(uid));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    fn release(ns: &str, name: &str) -> ObjectRef<ModelRelease> {
        ObjectRef::new(name).within(ns)
    }

    #[tokio::test]
    async fn a_tenant_whose_checks_hang_in_many_namespaces_leaves_the_pool_to_the_others() {
        let (runner, mut woken) = GateRunner::new();
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..10 {
            let running = running.clone();
            // One team, ten namespaces labelled as its own: one share.
            let ns = format!("greedy-{i}");
            let labels: std::collections::BTreeMap<String, String> =
                [(TENANT_LABEL.to_string(), "greedy".to_string())].into();
            runner.start(
                &format!("hung-{i}"),
                release(&ns, &format!("hung-{i}")),
                tenant_of(&ns, Some(&labels)),
                1,
                async move {
                    running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    futures::future::pending::<()>().await;
                    (Vec::new(), None)
                },
            );
        }
        // Starting again while queued or running is a no-op.
        runner.start("hung-0", release("greedy-0", "hung-0"), "tenant/greedy".into(), 1, async { (Vec::new(), None) });
        assert!(runner.running("hung-0"));
        runner.start("fine", release("other", "fine"), tenant_of("other", None), 7, async {
            (vec![GateOutcome { name: "c".into(), result: crate::plan::GateResult::Pass, detail: "1".into() }], None)
        });
        let woke = tokio::time::timeout(Duration::from_secs(5), woken.next()).await.ok().flatten();
        assert_eq!(woke.map(|r| r.name), Some("fine".to_string()));
        assert_eq!(running.load(std::sync::atomic::Ordering::SeqCst), PER_TENANT, "at most 4 from one tenant");
        assert!(runner.take("fine", 6).is_none(), "results for another revision are dropped");
        runner.start("fine", release("other", "fine"), tenant_of("other", None), 7, async { (Vec::new(), None) });
        let _ = tokio::time::timeout(Duration::from_secs(5), woken.next()).await;
        let finished = runner.take("fine", 7);
        assert!(finished.is_some_and(|f| f.outcomes.is_empty()));
        assert!(runner.take("fine", 7).is_none(), "taken once");
    }
}

//! The operator's live view of each repository: the client of the last successful
//! refresh and the verdict on every model a release asked about.
//!
//! Only a repository's own reconcile touches the network: it refreshes the metadata,
//! then resolves the models its releases wait for (delegated roles included), off the
//! lock. A release reconcile reads the verdicts already loaded and never waits on a
//! server, so a slow or trickling repository delays its own releases and nobody else's.
//! A model nobody has asked about yet is `Unknown` until its repository resolves it;
//! the release is woken when the verdict arrives or changes.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use futures::channel::mpsc;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use crate::{
    api::{ModelRef, ModelRelease, ModelRepository},
    plan::{Untrusted, Verdict},
    trust::{self, Kept, RefreshInput, Refreshed, Session, TrustError, Trusted},
};

/// A verdict and how long it holds: for a trusted model, the earliest expiry of the
/// metadata it was resolved from (top-level and every role loaded), after which it is
/// resolved again; a refusal holds until the next refresh.
#[derive(Clone, Debug, PartialEq)]
struct Resolved {
    verdict: Verdict,
    until: Timestamp,
}

#[derive(Default)]
struct Entry {
    /// The client of the last successful refresh. Out of the entry while the
    /// repository's reconcile resolves models with it (the controller never runs two
    /// reconciles of one repository at once).
    session: Option<Session>,
    /// What that refresh trusted (versions, expiries): floors and expiry checks need
    /// no session.
    trusted: Option<Trusted>,
    /// A refresh refused the repository (attack, expiry, bad signature, metadata the
    /// server hides): nothing in it is trusted until a refresh succeeds again.
    refused: Option<(trust::Reason, String)>,
    /// Verdicts by model (`ModelRef::key`), from the session's metadata.
    verdicts: HashMap<String, Resolved>,
    /// The models releases asked about, with the releases that asked: each is resolved
    /// at every refresh, and its releases woken when its verdict changes.
    wanted: HashMap<String, HashSet<ObjectRef<ModelRelease>>>,
    /// The repository's reconcile was asked to resolve models that have no verdict.
    requested: bool,
    /// The metadata URL, pin digest and signer policy the session was built from.
    anchor: Option<String>,
    /// The repository asks for signatures but its signer policy cannot be used: no
    /// verdict stands (a new model waits, a serving one keeps serving) until it can.
    held: Option<String>,
    /// When admission reviews last asked about each model they asked about: what they
    /// asked is kept while they keep asking (`REVIEWED_KEEP`), not dropped every sweep.
    reviewed: HashMap<String, std::time::Instant>,
    /// When this cache last tried a refresh, and whether it succeeded: what a replica
    /// standing by times its own refreshes by (the leader's status says when the leader
    /// refreshed, not this replica).
    attempted: Option<(Timestamp, bool)>,
    /// The repository's generation that attempt was for: a spec changed since (another
    /// address, another pin) is refreshed at once.
    attempted_generation: Option<i64>,
}

impl Entry {
    /// Puts in new verdicts; returns the releases whose verdict changed.
    fn replace(&mut self, found: Vec<(String, Resolved)>) -> HashSet<ObjectRef<ModelRelease>> {
        let mut changed = HashSet::new();
        for (key, resolved) in found {
            let Some(requesters) = self.wanted.get(&key) else { continue };
            if self.verdicts.get(&key).map(|r| &r.verdict) != Some(&resolved.verdict) {
                changed.extend(requesters.iter().cloned());
            }
            self.verdicts.insert(key, resolved);
        }
        changed
    }

    fn everyone(&self) -> HashSet<ObjectRef<ModelRelease>> {
        self.wanted.values().flatten().cloned().collect()
    }
}

/// Sessions and verdicts by repository UID: a deleted and re-created repository of the
/// same name never inherits the old one's verdicts, and `retain` drops deleted ones.
/// `K` is the kind of repository: the namespaced ModelRepository (one cache per scope)
/// or the ClusterModelRepository (one cache for the process).
pub struct TrustCache<K: kube::Resource<DynamicType = ()> = ModelRepository> {
    repositories: Mutex<HashMap<String, Entry>>,
    /// Repositories with models waiting for a verdict: their reconcile resolves them.
    resolve: mpsc::UnboundedSender<ObjectRef<K>>,
    /// Releases whose verdicts arrived or changed.
    wake: mpsc::UnboundedSender<ObjectRef<ModelRelease>>,
}

/// What the controller wires to the repository and release controllers.
pub struct Wakers<K: kube::Resource<DynamicType = ()> = ModelRepository> {
    pub repositories: mpsc::UnboundedReceiver<ObjectRef<K>>,
    pub releases: mpsc::UnboundedReceiver<ObjectRef<ModelRelease>>,
}

impl<K: kube::Resource<DynamicType = ()>> TrustCache<K> {
    pub fn new() -> (Self, Wakers<K>) {
        let (resolve, repositories) = mpsc::unbounded();
        let (wake, releases) = mpsc::unbounded();
        (Self { repositories: Mutex::default(), resolve, wake }, Wakers { repositories, releases })
    }

    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut map = self.repositories.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(uid.to_string()).or_default())
    }

    fn wake(&self, releases: HashSet<ObjectRef<ModelRelease>>) {
        for release in releases.into_iter().filter(|r| *r != admission()) {
            // The receiver lives as long as the scope's release controller.
            let _ = self.wake.unbounded_send(release);
        }
    }

    /// The models admission reviews asked about lately.
    pub fn reviewed(&self, uid: &str) -> Vec<String> {
        self.with(uid, |e| e.reviewed.keys().cloned().collect())
    }

    /// Whether this repository was refreshed (trusted or refused) and every model asked
    /// about has its verdict: a view in this state answers without "not verified yet".
    pub fn settled(&self, uid: &str) -> bool {
        self.with(uid, |e| {
            let known = |k: &String| e.verdicts.get(k).is_some_and(|r| !matches!(r.verdict, Verdict::Unknown { .. }));
            (e.trusted.is_some() || e.refused.is_some()) && (e.refused.is_some() || e.wanted.keys().all(known))
        })
    }

    /// Whether a refresh of this repository succeeded or was refused since the operator
    /// started: without either, releases have no verdict to decide on.
    pub fn has_verdict(&self, uid: &str) -> bool {
        self.with(uid, |e| e.trusted.is_some() || e.refused.is_some())
    }

    /// Forgets every repository whose UID is not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut map = self.repositories.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|uid, _| live.contains(uid));
    }

    /// Forgets the releases not in `live`, and the models only they asked about.
    pub fn retain_releases(&self, live: &HashSet<ObjectRef<ModelRelease>>) {
        let mut map = self.repositories.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for entry in map.values_mut() {
            entry.reviewed.retain(|_, at| at.elapsed() < REVIEWED_KEEP);
            let reviewed = &entry.reviewed;
            entry.wanted.retain(|key, requesters| {
                requesters.retain(|r| live.contains(r) || (*r == admission() && reviewed.contains_key(key)));
                !requesters.is_empty()
            });
            let wanted = &entry.wanted;
            entry.verdicts.retain(|key, _| wanted.contains_key(key));
        }
    }

    /// `release` now asks about exactly `keys` of this repository: it stops waiting for
    /// the models it asked about before (a spec edited again and again must not grow
    /// what every refresh resolves).
    pub fn asked(&self, uid: &str, release: &ObjectRef<ModelRelease>, keys: &[String]) {
        self.with(uid, |e| {
            e.wanted.retain(|key, requesters| {
                if !keys.contains(key) {
                    requesters.remove(release);
                }
                !requesters.is_empty()
            });
            let wanted = &e.wanted;
            e.verdicts.retain(|key, _| wanted.contains_key(key));
        });
    }

    /// Refreshes a repository, resolves every model its releases asked about against
    /// the new metadata, and keeps both for lookups (waking the releases whose verdict
    /// changed). Returns what to record. The network is used with no lock held.
    pub async fn refresh(&self, uid: &str, mut input: RefreshInput<'_>) -> Result<Kept, TrustError> {
        let now = input.now;
        // Another address or another pin: nothing the old session vouched for stands,
        // even while the new one cannot be reached.
        let signers = input.signature.as_ref().map_or("-", |check| check.fingerprint());
        let anchor = format!("{} {} {signers}", input.metadata_url, trust::state::pin_digest(input.pinned_root));
        let (previous, keys) = self.with(uid, |e| {
            if e.anchor.as_deref() != Some(anchor.as_str()) {
                if e.anchor.is_some() {
                    e.session = None;
                    e.trusted = None;
                    e.verdicts.clear();
                }
                e.anchor = Some(anchor.clone());
            }
            let previous = e.session.as_ref().map(|s| s.updater.store().detached());
            (previous, e.wanted.keys().cloned().collect::<Vec<_>>())
        });
        input.previous = previous;
        match trust::refresh(input).await {
            Ok(Refreshed { kept, mut session }) => {
                let found = resolve_all(&mut session, &keys, now).await;
                let changed = self.with(uid, |e| {
                    e.attempted = Some((now, true));
                    e.trusted = Some(session.updater.trusted());
                    e.session = Some(session);
                    let was_refused = e.refused.take().is_some() | e.held.take().is_some();
                    e.requested = false;
                    let changed = e.replace(found);
                    if was_refused { e.everyone() } else { changed }
                });
                self.wake(changed);
                Ok(kept)
            }
            Err(e) => {
                self.with(uid, |entry| entry.attempted = Some((now, false)));
                if !e.is_transient() {
                    let changed = self.with(uid, |entry| {
                        let first = entry.refused.is_none();
                        entry.refused = Some((e.reason(), e.to_string()));
                        if first { entry.everyone() } else { HashSet::new() }
                    });
                    self.wake(changed);
                }
                Err(e)
            }
        }
    }

    /// The repository's signer policy cannot be used (`why`): every verdict is Unknown
    /// until a refresh with a usable one, so no model is vouched for by a policy that
    /// is no longer the repository's.
    pub fn hold(&self, uid: &str, why: String) {
        let changed = self.with(uid, |e| {
            let first = e.held.is_none();
            e.held = Some(why);
            e.session = None;
            e.verdicts.clear();
            if first { e.everyone() } else { HashSet::new() }
        });
        self.wake(changed);
    }

    /// Resolves, with the current session, the models that have no verdict yet or whose
    /// verdict outlived its metadata; wakes the releases waiting for them.
    pub async fn resolve_pending(&self, uid: &str, now: Timestamp) {
        let taken = self.with(uid, |e| {
            e.requested = false;
            let keys: Vec<String> =
                e.wanted.keys().filter(|k| e.verdicts.get(*k).is_none_or(|r| r.until <= now)).cloned().collect();
            if keys.is_empty() || e.refused.is_some() || e.held.is_some() {
                return None;
            }
            e.session.take().map(|s| (s, keys))
        });
        let Some((mut session, keys)) = taken else { return };
        let found = resolve_all(&mut session, &keys, now).await;
        let changed = self.with(uid, |e| {
            // A refresh in between would have come from this same reconcile: none did.
            e.session.get_or_insert(session);
            e.replace(found)
        });
        self.wake(changed);
    }

    /// When this cache last tried to refresh the repository, and whether it succeeded,
    /// if that attempt was for `generation` of its spec.
    pub fn attempted(&self, uid: &str, generation: Option<i64>) -> Option<(Timestamp, bool)> {
        self.with(uid, |e| e.attempted.filter(|_| e.attempted_generation == generation))
    }

    /// The attempt just made was for `generation` of the repository's spec.
    pub fn attempted_for(&self, uid: &str, generation: Option<i64>) {
        self.with(uid, |e| e.attempted_generation = generation);
    }

    /// When the earliest verdict of a repository stops holding, if any does.
    pub fn next_expiry(&self, uid: &str) -> Option<Timestamp> {
        self.with(uid, |e| e.verdicts.values().map(|r| r.until).min())
    }

    /// The versions this process trusts now, raised to at least `recorded` (the floors
    /// in the repository's status, which may lag behind a refresh that just finished):
    /// what a new pod must not go below.
    pub fn floors(&self, uid: &str, recorded: trust::Floors) -> trust::Floors {
        let Some(t) = self.with(uid, |e| e.trusted.clone()) else { return recorded };
        recorded.raised(trust::Floors {
            root: t.root.0,
            timestamp: t.timestamp.0,
            snapshot: t.snapshot.0,
            targets: t.targets.0,
        })
    }

    /// What the repository says at `now` about the model `key` (`ModelRef::key`), for
    /// `release`. Never waits: a model not resolved yet is `Unknown`, its repository is
    /// asked to resolve it, and the release is woken when it has.
    pub fn lookup(
        &self,
        repository: &ObjectRef<K>,
        uid: &str,
        release: &ObjectRef<ModelRelease>,
        key: &str,
        now: Timestamp,
    ) -> Verdict {
        let (verdict, request) = self.with(uid, |e| {
            e.wanted.entry(key.to_string()).or_default().insert(release.clone());
            judge(e, key, now)
        });
        if request {
            let _ = self.resolve.unbounded_send(repository.clone());
        }
        verdict
    }

    /// What the repository says at `now` about `key`, for an admission review: read
    /// only, so a review (a dry run, a refused request, a request from anyone who can
    /// reach the webhook) never changes what a release waits for. A model with no
    /// verdict yet is `Unknown`, and is resolved in the background (at most
    /// `MAX_PREFETCH` per repository at a time, kept while reviews keep asking, forgotten
    /// at the first sweep of `retain_releases` `REVIEWED_KEEP` after the last), so a
    /// review moments later can answer. A key longer than any model the CRD admits (a
    /// request sent to the webhook by someone other than the API server) is never kept.
    pub fn peek(&self, repository: &ObjectRef<K>, uid: &str, key: &str, now: Timestamp) -> Verdict {
        let (verdict, request) = self.with(uid, |e| {
            let known = e.verdicts.contains_key(key) || e.wanted.contains_key(key);
            let prefetching = e.wanted.values().filter(|r| r.contains(&admission())).count();
            if !known && prefetching < MAX_PREFETCH && key.len() <= MAX_KEY_BYTES {
                e.wanted.entry(key.to_string()).or_default().insert(admission());
            }
            if e.wanted.get(key).is_some_and(|r| r.contains(&admission())) {
                e.reviewed.insert(key.to_string(), std::time::Instant::now());
            }
            judge(e, key, now)
        });
        if request {
            let _ = self.resolve.unbounded_send(repository.clone());
        }
        verdict
    }
}

/// Models resolved ahead for admission reviews, per repository at a time.
const MAX_PREFETCH: usize = 64;
/// The longest model key a release can hold: 64 targets of 256 bytes, newline-joined
/// (`spec.model.targets`; a single target or prefix is at most 1 KiB).
const MAX_KEY_BYTES: usize = crate::api::MAX_TARGET_LIST * 257;
/// How long a model reviews asked about stays resolved after the last review asked.
const REVIEWED_KEEP: std::time::Duration = std::time::Duration::from_secs(120);

/// Who asks on behalf of admission reviews: no release has an empty name, so it is
/// never woken, and `retain_releases` forgets what only it asked once reviews stop
/// asking (`REVIEWED_KEEP`).
fn admission() -> ObjectRef<ModelRelease> {
    ObjectRef::new("").within("")
}

/// The verdict an entry holds on `key` at `now`, and whether its repository must be
/// asked to resolve it.
fn judge(e: &mut Entry, key: &str, now: Timestamp) -> (Verdict, bool) {
    if let Some((reason, message)) = &e.refused {
        let message = format!("the repository is not trusted: {message}");
        return (Verdict::Untrusted { reason: Untrusted::Trust(*reason), message }, false);
    }
    if let Some(why) = &e.held {
        let message =
            format!("the repository's signer policy cannot be used ({why}); nothing is verified until it can");
        return (Verdict::Unknown { message }, false);
    }
    let Some(t) = &e.trusted else {
        let message = "the repository has not been refreshed yet".to_string();
        return (Verdict::Unknown { message }, !std::mem::replace(&mut e.requested, true));
    };
    for (role, (_, expires)) in
        [("root", t.root), ("timestamp", t.timestamp), ("snapshot", t.snapshot), ("targets", t.targets)]
    {
        if expires <= now {
            let e = TrustError::Expired { role: role.into(), expires: expires.to_string() };
            return (Verdict::Untrusted { reason: Untrusted::Trust(e.reason()), message: e.to_string() }, false);
        }
    }
    match e.verdicts.get(key) {
        Some(r) if r.until > now => (r.verdict.clone(), false),
        Some(r) => {
            let message = format!(
                "metadata that vouched for {} expired at {}; the repository has not been refreshed since",
                ModelRef::from_key(key).display(),
                r.until
            );
            let verdict = Verdict::Untrusted { reason: Untrusted::Trust(trust::Reason::Expired), message };
            (verdict, !std::mem::replace(&mut e.requested, true))
        }
        None => {
            let message = "being verified against the repository".to_string();
            (Verdict::Unknown { message }, !std::mem::replace(&mut e.requested, true))
        }
    }
}

/// Resolves each model with `session` at `now`.
async fn resolve_all(session: &mut Session, keys: &[String], now: Timestamp) -> Vec<(String, Resolved)> {
    session.updater.set_now(now);
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let verdict = Verdict::of(session.resolve(&ModelRef::from_key(key), now).await);
        // Only trust runs out; a refusal holds until the next refresh says otherwise.
        let until = match verdict {
            Verdict::Trusted { .. } => session.updater.valid_until(),
            _ => Timestamp::MAX,
        };
        found.push((key.clone(), Resolved { verdict, until }));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(name: &str) -> ObjectRef<ModelRelease> {
        ObjectRef::new(name).within("team")
    }

    /// A cache whose repository `uid` was refreshed `now`, its metadata good for an hour.
    fn refreshed() -> (TrustCache, Wakers, ObjectRef<ModelRepository>, Timestamp, Timestamp) {
        let (cache, wakers) = TrustCache::<ModelRepository>::new();
        let now = Timestamp::now();
        let later = now + k8s_openapi::jiff::SignedDuration::from_hours(1);
        let trusted = Trusted { root: (1, later), timestamp: (1, later), snapshot: (1, later), targets: (1, later) };
        cache.with("uid", |e| e.trusted = Some(trusted));
        (cache, wakers, ObjectRef::new("models").within("team"), now, later)
    }

    #[test]
    fn entries_are_per_uid_and_deleted_repositories_are_forgotten() {
        let (cache, _wakers) = TrustCache::<ModelRepository>::new();
        // A repository of the same name re-created gets a new UID, hence a new entry.
        cache.with("uid-old", |e| e.refused = Some((trust::Reason::BadSignature, "m".into())));
        assert!(cache.has_verdict("uid-old"));
        assert!(!cache.has_verdict("uid-new"));
        let len = || cache.repositories.lock().map(|m| m.len()).unwrap_or(0);
        assert_eq!(len(), 2);
        cache.retain(&["uid-new".to_string()].into());
        assert_eq!(len(), 1);
        assert!(!cache.has_verdict("uid-old"), "a deleted repository's verdict is gone");
    }

    #[test]
    fn a_signer_policy_that_cannot_be_used_leaves_no_verdict_standing() {
        let (cache, mut wakers, repo, now, later) = refreshed();
        let key = "m/1/model.onnx";
        let _ = cache.lookup(&repo, "uid", &release("a"), key, now);
        let answer = Verdict::Trusted { sha256: "a".repeat(64), length: 1, files: 1, signer: None, image: None };
        cache.with("uid", |e| e.replace(vec![(key.to_string(), Resolved { verdict: answer.clone(), until: later })]));
        while wakers.releases.try_recv().is_ok() {}
        assert_eq!(cache.lookup(&repo, "uid", &release("a"), key, now), answer);
        // The ConfigMap of the signers is gone: what was vouched for without it is not.
        cache.hold("uid", "ConfigMap \"model-signers\" named by spec.provenance.publicKeys does not exist".into());
        assert!(wakers.releases.try_recv().is_ok(), "its releases are woken to see it");
        match cache.lookup(&repo, "uid", &release("a"), key, now) {
            Verdict::Unknown { message } => assert!(message.contains("model-signers"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(cache.with("uid", |e| e.session.is_none() && e.verdicts.is_empty()));
    }

    #[test]
    fn a_lookup_never_waits_it_asks_the_repository_once_and_wakes_on_the_answer() {
        let (cache, mut wakers, repo, now, later) = refreshed();
        for name in ["a", "b"] {
            let v = cache.lookup(&repo, "uid", &release(name), "m/1/model.onnx", now);
            assert!(matches!(v, Verdict::Unknown { .. }), "{v:?}");
        }
        // One request however many releases asked.
        assert_eq!(wakers.repositories.try_recv().ok(), Some(repo.clone()));
        assert!(wakers.repositories.try_recv().is_err(), "asked once");
        // The answer wakes both releases; the same answer again wakes nobody.
        let answer = Verdict::Trusted { sha256: "a".repeat(64), length: 1, files: 1, signer: None, image: None };
        let found = || vec![("m/1/model.onnx".to_string(), Resolved { verdict: answer.clone(), until: later })];
        let woken = cache.with("uid", |e| e.replace(found()));
        assert_eq!(woken, [release("a"), release("b")].into());
        assert!(cache.with("uid", |e| e.replace(found())).is_empty());
        assert_eq!(cache.lookup(&repo, "uid", &release("a"), "m/1/model.onnx", now), answer);
        // Past the expiry of the metadata it came from, the verdict no longer holds.
        let after = later + k8s_openapi::jiff::SignedDuration::from_secs(1);
        let stale = cache.lookup(&repo, "uid", &release("a"), "m/1/model.onnx", after);
        assert!(
            matches!(&stale, Verdict::Untrusted { reason: Untrusted::Trust(trust::Reason::Expired), .. }),
            "{stale:?}"
        );
        // A model the release no longer asks about is let go.
        cache.asked("uid", &release("a"), &[]);
        assert_eq!(cache.with("uid", |e| e.wanted["m/1/model.onnx"].len()), 1, "b still asks");
        // A deleted release's models are forgotten with it.
        cache.retain_releases(&[release("b")].into());
        assert_eq!(cache.with("uid", |e| e.wanted.len()), 1);
        cache.retain_releases(&HashSet::new());
        assert_eq!(cache.with("uid", |e| (e.wanted.len(), e.verdicts.len())), (0, 0));
    }

    #[test]
    fn an_admission_review_only_peeks_and_prefetches_a_bounded_few() {
        let (cache, mut wakers, repo, now, later) = refreshed();
        // A release serving m/1 and able to roll back to m/0 has both verdicts.
        let answer = Verdict::Trusted { sha256: "a".repeat(64), length: 1, files: 1, signer: None, image: None };
        for key in ["m/0/model.onnx", "m/1/model.onnx"] {
            cache.lookup(&repo, "uid", &release("a"), key, now);
            cache.with("uid", |e| e.replace(vec![(key.into(), Resolved { verdict: answer.clone(), until: later })]));
        }
        let _ = wakers.repositories.try_recv();
        cache.with("uid", |e| e.requested = false); // as the repository's reconcile leaves it
        // A review of the same release moving to m/2 changes none of that.
        let v = cache.peek(&repo, "uid", "m/2/model.onnx", now);
        assert!(matches!(v, Verdict::Unknown { .. }), "{v:?}");
        assert_eq!(cache.peek(&repo, "uid", "m/0/model.onnx", now), answer, "the rollback target still known");
        assert_eq!(cache.lookup(&repo, "uid", &release("a"), "m/0/model.onnx", now), answer);
        // m/2 is resolved in the background, and nobody is woken for it.
        assert_eq!(wakers.repositories.try_recv().ok(), Some(repo.clone()));
        let woken = cache.with("uid", |e| {
            e.replace(vec![("m/2/model.onnx".into(), Resolved { verdict: answer.clone(), until: later })])
        });
        let _ = cache.peek(&repo, "uid", "m/2/model.onnx", now);
        cache.wake(woken);
        assert!(wakers.releases.try_recv().is_err(), "reviews wake no release");
        // However many reviews, at most MAX_PREFETCH models are resolved ahead.
        for i in 0..1000 {
            cache.peek(&repo, "uid", &format!("x/{i}/model.onnx"), now);
        }
        assert!(cache.with("uid", |e| e.wanted.len()) <= 2 + MAX_PREFETCH);
        // Kept while reviews keep asking; forgotten at the first sweep after that.
        cache.retain_releases(&[release("a")].into());
        assert_eq!(cache.with("uid", |e| e.wanted.len()), 2 + MAX_PREFETCH, "asked moments ago");
        let long_ago = std::time::Instant::now().checked_sub(REVIEWED_KEEP).unwrap();
        cache.with("uid", |e| e.reviewed.values_mut().for_each(|at| *at = long_ago));
        cache.retain_releases(&[release("a")].into());
        assert_eq!(cache.with("uid", |e| e.wanted.len()), 2);
        assert!(cache.with("uid", |e| e.reviewed.is_empty()));
    }
}

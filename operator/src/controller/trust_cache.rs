//! The operator's live view of each repository: the client of the last successful
//! refresh, kept in memory so every release looks its targets up without a network
//! round trip (one refresh per repository per interval, however many releases use it).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::Mutex as AsyncMutex;

use crate::{
    api::ModelRef,
    plan::Verdict,
    trust::{self, Kept, RefreshInput, Refreshed, Session, TrustError},
};

#[derive(Default)]
struct Entry {
    session: Option<Session>,
    /// A refresh refused the repository (attack, expiry, bad signature): nothing in it
    /// is trusted until a refresh succeeds again.
    refused: Option<(String, String)>,
}

/// Sessions by repository UID: a deleted and re-created repository of the same name
/// never inherits the old one's verdicts, and `retain` drops deleted ones.
#[derive(Default)]
pub struct TrustCache {
    repositories: Mutex<HashMap<String, Arc<AsyncMutex<Entry>>>>,
}

impl TrustCache {
    fn entry(&self, uid: &str) -> Arc<AsyncMutex<Entry>> {
        let mut map = self.repositories.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(uid.to_string()).or_default().clone()
    }

    /// Whether a refresh of this repository succeeded or was refused since the operator
    /// started: without either, releases have no verdict to decide on.
    pub async fn has_verdict(&self, uid: &str) -> bool {
        let entry = self.entry(uid);
        let entry = entry.lock().await;
        entry.session.is_some() || entry.refused.is_some()
    }

    /// Forgets every repository whose UID is not in `live`.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        let mut map = self.repositories.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|uid, _| live.contains(uid));
    }

    /// Refreshes a repository and keeps the result for lookups. Returns what to record.
    pub async fn refresh(&self, uid: &str, input: RefreshInput<'_>) -> Result<Kept, TrustError> {
        let result = trust::refresh(input).await;
        let entry = self.entry(uid);
        let mut entry = entry.lock().await;
        match result {
            Ok(Refreshed { kept, session }) => {
                entry.session = Some(session);
                entry.refused = None;
                Ok(kept)
            }
            Err(e) => {
                if !e.is_transient() {
                    entry.refused = Some((e.reason().to_string(), e.to_string()));
                }
                Err(e)
            }
        }
    }

    /// The versions this process trusts now, raised to at least `recorded` (the floors
    /// in the repository's status, which may lag behind a refresh that just finished):
    /// what a new pod must not go below.
    pub async fn floors(&self, uid: &str, recorded: trust::Floors) -> trust::Floors {
        let entry = self.entry(uid);
        let entry = entry.lock().await;
        let Some(session) = entry.session.as_ref() else { return recorded };
        let t = session.updater.trusted();
        trust::Floors {
            root: recorded.root.max(t.root.0),
            timestamp: recorded.timestamp.max(t.timestamp.0),
            snapshot: recorded.snapshot.max(t.snapshot.0),
            targets: recorded.targets.max(t.targets.0),
        }
    }

    /// What the repository says at `now` about the model `key` (`ModelRef::key`).
    pub async fn lookup(&self, uid: &str, key: &str, now: Timestamp) -> Verdict {
        let entry = self.entry(uid);
        let mut entry = entry.lock().await;
        if let Some((reason, message)) = &entry.refused {
            return Verdict::Untrusted {
                reason: reason.clone(),
                message: format!("the repository is not trusted: {message}"),
            };
        }
        let Some(session) = entry.session.as_mut() else {
            return Verdict::Unknown { message: "the repository has not been refreshed yet".into() };
        };
        let t = session.updater.trusted();
        for (role, (_, expires)) in
            [("root", t.root), ("timestamp", t.timestamp), ("snapshot", t.snapshot), ("targets", t.targets)]
        {
            if expires <= now {
                let e = TrustError::Expired { role: role.into(), expires: expires.to_string() };
                return Verdict::Untrusted { reason: e.reason().into(), message: e.to_string() };
            }
        }
        session.updater.set_now(now);
        let model = ModelRef::from_key(key);
        crate::readers::verdict_of(trust::model::resolve(&mut session.updater, &model).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_per_uid_and_deleted_repositories_are_forgotten() {
        let cache = TrustCache::default();
        // A repository of the same name re-created gets a new UID, hence a new entry.
        cache.entry("uid-old").lock().await.refused = Some(("BadSignature".into(), "m".into()));
        assert!(cache.has_verdict("uid-old").await);
        assert!(!cache.has_verdict("uid-new").await);
        let len = || cache.repositories.lock().map(|m| m.len()).unwrap_or(0);
        assert_eq!(len(), 2);
        cache.retain(&["uid-new".to_string()].into());
        assert_eq!(len(), 1);
        assert!(!cache.has_verdict("uid-old").await, "a deleted repository's verdict is gone");
    }
}

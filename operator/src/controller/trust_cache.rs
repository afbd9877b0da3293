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
    plan::Verdict,
    trust::{self, Kept, RefreshInput, Refreshed, Session, TargetFile, TrustError},
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

    /// What the repository says about `target` at `now`.
    pub async fn lookup(&self, uid: &str, target: &str, now: Timestamp) -> Verdict {
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
        verdict_of(target, session.updater.target(target).await)
    }
}

/// What a target lookup means for a release: its digests, a refusal, or (for network
/// trouble) no verdict yet.
pub fn verdict_of(target: &str, found: Result<TargetFile, TrustError>) -> Verdict {
    match found {
        Ok(info) => match (info.hash("sha256"), i64::try_from(info.length)) {
            (Err(e), _) => Verdict::Untrusted { reason: e.reason().into(), message: e.to_string() },
            (Ok(_), Err(_)) => Verdict::Untrusted {
                reason: "Malformed".into(),
                message: format!("target {target:?} is signed with a length beyond any real file ({})", info.length),
            },
            (Ok(Some(sha256)), Ok(length)) => Verdict::Trusted { sha256, length },
            (Ok(None), Ok(_)) => Verdict::Untrusted {
                reason: "NoSha256".into(),
                message: format!(
                    "target {target:?} is signed without a sha256 hash, which modelgate pins pods to; sign it with sha256"
                ),
            },
        },
        Err(e) if e.is_transient() => Verdict::Unknown { message: e.to_string() },
        Err(e) => Verdict::Untrusted { reason: e.reason().into(), message: e.to_string() },
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

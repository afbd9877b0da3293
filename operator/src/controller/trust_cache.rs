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
    trust::{self, RefreshInput, Refreshed, Session, TargetFile, TrustError},
};

#[derive(Default)]
struct Entry {
    session: Option<Session>,
    /// A refresh refused the repository (attack, expiry, bad signature): nothing in it
    /// is trusted until a refresh succeeds again.
    refused: Option<(String, String)>,
}

#[derive(Default)]
pub struct TrustCache {
    repositories: Mutex<HashMap<String, Arc<AsyncMutex<Entry>>>>,
}

/// Cache key of a repository.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl TrustCache {
    fn entry(&self, key: &str) -> Arc<AsyncMutex<Entry>> {
        self.repositories.lock().expect("not poisoned").entry(key.to_string()).or_default().clone()
    }

    /// Refreshes a repository and keeps the result for lookups. Returns what to record.
    pub async fn refresh(&self, key: &str, input: RefreshInput<'_>) -> Result<(trust::Trusted, Vec<u8>), TrustError> {
        let result = trust::refresh(input).await;
        let entry = self.entry(key);
        let mut entry = entry.lock().await;
        match result {
            Ok(Refreshed { trusted, root, session }) => {
                entry.session = Some(session);
                entry.refused = None;
                Ok((trusted, root))
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
    pub async fn lookup(&self, key: &str, target: &str, now: Timestamp) -> Verdict {
        let entry = self.entry(key);
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
        verdict_of(target, session.updater.target(target).await)
    }
}

/// What a target lookup means for a release: its digests, a refusal, or (for network
/// trouble) no verdict yet.
pub fn verdict_of(target: &str, found: Result<TargetFile, TrustError>) -> Verdict {
    match found {
        Ok(info) => match info.hashes.get("sha256") {
            Some(sha256) => Verdict::Trusted { sha256: sha256.to_lowercase(), length: info.length as i64 },
            None => Verdict::Untrusted {
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

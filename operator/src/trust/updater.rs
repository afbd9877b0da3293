//! The TUF client workflow (specification 1.0.x, section 5), step by step: root
//! rotation, timestamp, snapshot, targets, and the lazy pre-order depth-first search of
//! delegations for the one target asked for. python-tuf's ngclient is the reference.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::jiff::Timestamp;
use reqwest::Url;
use tracing::debug;

pub use super::versions::{Floors, Trusted};
use super::{
    Store, TrustError,
    metadata::{
        DelegatedRole, Envelope, Header, MetaFile, MetaList, ROOT, RoleKeys, RootMeta, SNAPSHOT, TARGETS, TIMESTAMP,
        TargetFile, TargetsMeta,
    },
    transport::Transport,
};

/// Size caps for metadata (bytes), and walk limits.
#[derive(Clone, Debug)]
pub struct Limits {
    pub root_max: u64,
    pub timestamp_max: u64,
    pub snapshot_max: u64,
    pub targets_max: u64,
    pub max_root_rotations: u64,
    pub max_delegations: usize,
    /// Roles a prefix lookup may load (every bin of a hashed-bin delegation), and
    /// their bytes in all: the walk holds them in memory.
    pub max_listed_roles: usize,
    pub max_listed_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            root_max: 512 * 1024,
            timestamp_max: 16 * 1024,
            snapshot_max: 2 * 1024 * 1024,
            targets_max: 5 * 1024 * 1024,
            max_root_rotations: 256,
            max_delegations: 32,
            max_listed_roles: 1024,
            max_listed_bytes: 64 * 1024 * 1024,
        }
    }
}

struct Loaded<T> {
    header: Header,
    body: T,
}

/// A targets role as verified, with the delegators whose keys it was verified against:
/// one delegator's verdict says nothing about another's keys and threshold.
struct LoadedTargets {
    header: Header,
    body: TargetsMeta,
    envelope: Envelope,
    verified_for: HashSet<String>,
    /// Size as received, for the byte budget of a prefix walk.
    size: usize,
}

/// One client session against one repository.
pub struct Updater {
    store: Store,
    transport: Transport,
    metadata_url: Url,
    limits: Limits,
    floors: Floors,
    now: Timestamp,
    root: Loaded<RootMeta>,
    /// Each root rotated to in this session, byte for byte, oldest first.
    rotated: Vec<Vec<u8>>,
    timestamp: Option<Loaded<MetaList>>,
    snapshot: Option<Loaded<MetaList>>,
    targets: BTreeMap<String, LoadedTargets>,
    /// Targets roles the server did not deliver in this session, with the error: asked
    /// for again, they fail at once instead of waiting out another slow download.
    undelivered: BTreeMap<String, (u64, String, String)>,
}

/// The size to download for a file its referrer lists: the signed length, but never
/// more than the role's cap (a signer may write any length).
fn capped(what: &str, signed: Option<u64>, cap: u64) -> Result<u64, TrustError> {
    match signed {
        Some(len) if len > cap => {
            Err(TrustError::TooLarge { what: format!("{what} (signed length {len})"), limit: cap })
        }
        Some(len) => Ok(len),
        None => Ok(cap),
    }
}

fn expired(role: &str, header: &Header, now: Timestamp) -> Result<(), TrustError> {
    if header.expires <= now {
        return Err(TrustError::Expired { role: role.to_string(), expires: header.expires.to_string() });
    }
    Ok(())
}

/// Checks a metadata file's bytes against the length and hashes its referrer lists.
pub fn check_meta_file(what: &str, meta: &MetaFile, bytes: &[u8]) -> Result<(), TrustError> {
    if let Some(len) = meta.length
        && bytes.len() as u64 != len
    {
        return Err(TrustError::Hash {
            what: what.to_string(),
            reason: format!("length {} differs from the signed length {len}", bytes.len()),
        });
    }
    if let Some(hashes) = &meta.hashes {
        check_hashes(what, hashes, &Digests::of(bytes))?;
    }
    Ok(())
}

/// sha256 and sha512 of some bytes, hex; `None` where not computed.
pub struct Digests {
    pub sha256: Option<String>,
    pub sha512: Option<String>,
}

impl Digests {
    pub fn of(bytes: &[u8]) -> Self {
        use aws_lc_rs::digest::{SHA256, SHA512, digest};
        Self { sha256: Some(hex::encode(digest(&SHA256, bytes))), sha512: Some(hex::encode(digest(&SHA512, bytes))) }
    }
}

/// Every listed hash we know must match, and at least one must be known.
pub fn check_hashes(what: &str, hashes: &BTreeMap<String, String>, got: &Digests) -> Result<(), TrustError> {
    let mut checked = 0;
    for (alg, want) in hashes {
        let have = match alg.as_str() {
            "sha256" => &got.sha256,
            "sha512" => &got.sha512,
            _ => continue,
        };
        let Some(have) = have else {
            return Err(TrustError::Hash { what: what.to_string(), reason: format!("{alg} was not computed") });
        };
        if !have.eq_ignore_ascii_case(want) {
            return Err(TrustError::Hash {
                what: what.to_string(),
                reason: format!("{alg} is {have}, but the signed metadata says {want}"),
            });
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(TrustError::Hash { what: what.to_string(), reason: "no sha256 or sha512 hash is listed".into() });
    }
    Ok(())
}

/// Parses a root and checks it is signed by a threshold of its own root keys (every
/// root must be, whether pinned, stored or newly fetched).
pub fn self_signed_root(bytes: &[u8]) -> Result<(Header, RootMeta, Envelope), TrustError> {
    let envelope = Envelope::parse(ROOT, bytes)?;
    let header = envelope.header()?;
    let body: RootMeta = envelope.typed()?;
    envelope.verify(&body.keys, body.role(ROOT)?)?;
    Ok((header, body, envelope))
}

/// The version the referring metadata names must be the one received (mix-and-match).
fn check_version(role: &str, expected: u64, got: u64, by: impl Into<String>) -> Result<(), TrustError> {
    if got != expected {
        return Err(TrustError::VersionMismatch { role: role.into(), expected, got, by: by.into() });
    }
    Ok(())
}

impl Updater {
    /// Starts from the trusted root in the store, or `initial_root` when the store has
    /// none (the pinned root). Either must be signed by its own threshold.
    pub fn new(
        store: Store,
        transport: Transport,
        metadata_url: Url,
        initial_root: Option<&[u8]>,
        floors: Floors,
        now: Timestamp,
    ) -> Result<Self, TrustError> {
        transport.check_url(&metadata_url)?;
        let stored = store.load(ROOT);
        let bytes = stored.as_deref().or(initial_root).ok_or_else(|| TrustError::Store {
            path: store.describe(),
            reason: "no trusted root: initialise with the repository's root.json".into(),
        })?;
        let (header, body, _) = self_signed_root(bytes)?;
        if stored.is_none() {
            store.save(ROOT, bytes)?;
        }
        let metadata_url = with_slash(metadata_url);
        Ok(Self {
            store,
            transport,
            metadata_url,
            limits: Limits::default(),
            floors,
            now,
            root: Loaded { header, body },
            rotated: Vec::new(),
            timestamp: None,
            snapshot: None,
            targets: BTreeMap::new(),
            undelivered: BTreeMap::new(),
        })
    }

    fn url(&self, file: &str) -> Result<Url, TrustError> {
        self.metadata_url
            .join(file)
            .map_err(|e| TrustError::Malformed { what: file.into(), reason: format!("not a URL path: {e}") })
    }

    /// The top-level workflow: root, timestamp, snapshot, top-level targets.
    pub async fn refresh(&mut self) -> Result<Trusted, TrustError> {
        self.update_root().await?;
        self.update_timestamp().await?;
        self.update_snapshot().await?;
        self.update_targets(TARGETS, None).await?;
        Ok(self.trusted())
    }

    pub fn trusted(&self) -> Trusted {
        let v = |l: Option<&Header>| l.map_or((0, Timestamp::UNIX_EPOCH), |h| (h.version, h.expires));
        Trusted {
            root: (self.root.header.version, self.root.header.expires),
            timestamp: v(self.timestamp.as_ref().map(|l| &l.header)),
            snapshot: v(self.snapshot.as_ref().map(|l| &l.header)),
            targets: v(self.targets.get(TARGETS).map(|l| &l.header)),
        }
    }

    /// 5.3: walk root versions one by one, each signed by the old and the new keys.
    async fn update_root(&mut self) -> Result<(), TrustError> {
        let start = self.root.header.version;
        loop {
            let next = self.root.header.version + 1;
            if next - start > self.limits.max_root_rotations {
                return Err(TrustError::TooManyRoots { from: start, limit: self.limits.max_root_rotations });
            }
            let url = self.url(&format!("{next}.root.json"))?;
            let bytes = match self.transport.get(&url, self.limits.root_max).await {
                Ok(b) => b,
                Err(TrustError::NotFound { .. }) => break,
                Err(e) => return Err(e),
            };
            // Signed by a threshold of its own keys and of the trusted root's.
            let (header, body, envelope) = self_signed_root(&bytes)?;
            envelope.verify(&self.root.body.keys, self.root.body.role(ROOT)?)?;
            check_version(ROOT, next, header.version, format!("file {next}.root.json"))?;
            debug!(version = next, "root rotated");
            self.store.save(ROOT, &bytes)?;
            self.root = Loaded { header, body };
            self.rotated.push(bytes);
        }
        if self.root.header.version < self.floors.root {
            return Err(TrustError::Rollback {
                role: ROOT.into(),
                trusted: self.floors.root,
                new: self.root.header.version,
            });
        }
        // 5.3.10: a stale final root ends the update (freeze attack).
        expired(ROOT, &self.root.header, self.now)
    }

    /// Local metadata (no expiry check): the floor a new version must not go below.
    /// Metadata the current root no longer vouches for (keys rotated) is dropped: that
    /// is the fast-forward attack recovery.
    fn load_local_meta_list(
        &self,
        role: &str,
        keys: &BTreeMap<String, serde_json::Value>,
        rk: &RoleKeys,
    ) -> Option<Loaded<MetaList>> {
        let bytes = self.store.load(role)?;
        let result = (|| {
            let envelope = Envelope::parse(role, &bytes)?;
            envelope.verify(keys, rk)?;
            Ok::<_, TrustError>(Loaded { header: envelope.header()?, body: envelope.typed()? })
        })();
        match result {
            Ok(l) => Some(l),
            Err(e) => {
                debug!(role, error = %e, "local metadata not trusted any more; ignoring it");
                None
            }
        }
    }

    /// 5.4.
    async fn update_timestamp(&mut self) -> Result<(), TrustError> {
        let rk = self.root.body.role(TIMESTAMP)?.clone();
        self.timestamp = self.load_local_meta_list(TIMESTAMP, &self.root.body.keys, &rk);
        let url = self.url("timestamp.json")?;
        let bytes = self.transport.get(&url, self.limits.timestamp_max).await?;
        let envelope = Envelope::parse(TIMESTAMP, &bytes)?;
        envelope.verify(&self.root.body.keys, &rk)?;
        let header = envelope.header()?;
        let body: MetaList = envelope.typed()?;
        let snapshot_meta = snapshot_entry(&body)?;
        let trusted_version = self.timestamp.as_ref().map_or(0, |t| t.header.version).max(self.floors.timestamp);
        if header.version < trusted_version {
            return Err(TrustError::Rollback { role: TIMESTAMP.into(), trusted: trusted_version, new: header.version });
        }
        let trusted_snapshot = self
            .timestamp
            .as_ref()
            .and_then(|t| snapshot_entry(&t.body).ok())
            .map_or(0, |m| m.version)
            .max(self.floors.snapshot);
        if self.timestamp.as_ref().is_some_and(|t| t.header.version == header.version) {
            // The version of the local trusted copy: keep it, whatever the new bytes say
            // (5.4.3.2). Compared with the copy, not the floor: a copy older than a floor
            // another process recorded (a replica standing by reads the leader's) must
            // give way to the new version, not be kept under its number.
            debug!(version = header.version, "timestamp unchanged");
        } else {
            if snapshot_meta.version < trusted_snapshot {
                return Err(TrustError::Rollback {
                    role: SNAPSHOT.into(),
                    trusted: trusted_snapshot,
                    new: snapshot_meta.version,
                });
            }
            expired(TIMESTAMP, &header, self.now)?;
            self.store.save(TIMESTAMP, &bytes)?;
            self.timestamp = Some(Loaded { header, body });
        }
        match &self.timestamp {
            Some(ts) => expired(TIMESTAMP, &ts.header, self.now),
            None => Err(malformed_order("timestamp")),
        }
    }

    /// 5.5.
    async fn update_snapshot(&mut self) -> Result<(), TrustError> {
        let ts = self.timestamp.as_ref().ok_or_else(|| malformed_order("timestamp"))?;
        let meta = snapshot_entry(&ts.body)?.clone();
        let rk = self.root.body.role(SNAPSHOT)?.clone();
        let local = self.load_local_meta_list(SNAPSHOT, &self.root.body.keys, &rk);
        // An unchanged snapshot is not downloaded again.
        if let Some(l) = local.as_ref()
            && l.header.version == meta.version
            && expired(SNAPSHOT, &l.header, self.now).is_ok()
        {
            self.snapshot = local;
            return Ok(());
        }
        let file = if self.root.body.consistent_snapshot {
            format!("{}.snapshot.json", meta.version)
        } else {
            "snapshot.json".into()
        };
        let limit = capped("snapshot metadata", meta.length, self.limits.snapshot_max)?;
        let bytes = self
            .transport
            .get(&self.url(&file)?, limit)
            .await
            .map_err(|e| undelivered(SNAPSHOT, meta.version, TIMESTAMP, e))?;
        check_meta_file("snapshot metadata", &meta, &bytes)?;
        let envelope = Envelope::parse(SNAPSHOT, &bytes)?;
        envelope.verify(&self.root.body.keys, &rk)?;
        let header = envelope.header()?;
        let body: MetaList = envelope.typed()?;
        check_version(SNAPSHOT, meta.version, header.version, "timestamp")?;
        if let Some(old) = &local {
            for (name, old_meta) in &old.body.meta {
                match body.meta.get(name) {
                    None => {
                        return Err(TrustError::Rollback {
                            role: name.trim_end_matches(".json").into(),
                            trusted: old_meta.version,
                            new: 0,
                        });
                    }
                    Some(m) if m.version < old_meta.version => {
                        return Err(TrustError::Rollback {
                            role: name.trim_end_matches(".json").into(),
                            trusted: old_meta.version,
                            new: m.version,
                        });
                    }
                    _ => {}
                }
            }
        }
        if let Some(t) = body.meta.get("targets.json")
            && t.version < self.floors.targets
        {
            return Err(TrustError::Rollback { role: TARGETS.into(), trusted: self.floors.targets, new: t.version });
        }
        expired(SNAPSHOT, &header, self.now)?;
        self.store.save(SNAPSHOT, &bytes)?;
        self.snapshot = Some(Loaded { header, body });
        Ok(())
    }

    /// 5.6, for the top-level role (`parent` None) or a delegated one. A role loaded
    /// earlier through another delegator is verified again against this one's keys.
    async fn update_targets(&mut self, role: &str, parent: Option<&str>) -> Result<(), TrustError> {
        let delegator = parent.unwrap_or(ROOT);
        let (keys, rk) = match parent {
            None => (self.root.body.keys.clone(), self.root.body.role(TARGETS)?.clone()),
            Some(p) => {
                let delegation = self
                    .targets
                    .get(p)
                    .and_then(|t| t.body.delegations.as_ref())
                    .and_then(|d| d.roles.iter().find(|r| r.name == role).map(|r| (d.keys.clone(), r.keys())));
                delegation.ok_or_else(|| TrustError::Malformed {
                    what: format!("{p} metadata"),
                    reason: format!("it does not delegate to {role}"),
                })?
            }
        };
        if let Some(loaded) = self.targets.get_mut(role) {
            if !loaded.verified_for.contains(delegator) {
                loaded.envelope.verify(&keys, &rk)?;
                loaded.verified_for.insert(delegator.to_string());
            }
            return Ok(());
        }
        let snapshot = self.snapshot.as_ref().ok_or_else(|| malformed_order("snapshot"))?;
        let meta = snapshot.body.meta.get(&format!("{role}.json")).cloned().ok_or_else(|| TrustError::Malformed {
            what: "snapshot metadata".into(),
            reason: format!("it does not list {role}.json"),
        })?;
        // The local copy is used when it is the version the snapshot lists.
        if let Some(bytes) = self.store.load(role)
            && let Ok(loaded) = self.check_targets(role, delegator, &bytes, &keys, &rk, &meta, false)
        {
            self.targets.insert(role.to_string(), loaded);
            return Ok(());
        }
        if let Some((version, by, reason)) = self.undelivered.get(role) {
            return Err(TrustError::MetadataUnavailable {
                role: role.into(),
                version: *version,
                by: by.clone(),
                reason: reason.clone(),
            });
        }
        let encoded = super::store::encode_role(role);
        let file = if self.root.body.consistent_snapshot {
            format!("{}.{encoded}.json", meta.version)
        } else {
            format!("{encoded}.json")
        };
        let limit = capped(&format!("{role} metadata"), meta.length, self.limits.targets_max)?;
        let bytes = match self.transport.get(&self.url(&file)?, limit).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let e = undelivered(role, meta.version, SNAPSHOT, e);
                if let TrustError::MetadataUnavailable { version, by, reason, .. } = &e {
                    self.undelivered.insert(role.to_string(), (*version, by.clone(), reason.clone()));
                }
                return Err(e);
            }
        };
        let loaded = self.check_targets(role, delegator, &bytes, &keys, &rk, &meta, true)?;
        self.store.save(role, &bytes)?;
        self.targets.insert(role.to_string(), loaded);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn check_targets(
        &self,
        role: &str,
        delegator: &str,
        bytes: &[u8],
        keys: &BTreeMap<String, serde_json::Value>,
        rk: &RoleKeys,
        meta: &MetaFile,
        fresh: bool,
    ) -> Result<LoadedTargets, TrustError> {
        if fresh {
            check_meta_file(&format!("{role} metadata"), meta, bytes)?;
        }
        let envelope = Envelope::parse(role, bytes)?;
        envelope.verify(keys, rk)?;
        let header = envelope.header()?;
        check_version(role, meta.version, header.version, "snapshot")?;
        expired(role, &header, self.now)?;
        let body = envelope.typed()?;
        let verified_for = HashSet::from([delegator.to_string()]);
        Ok(LoadedTargets { header, body, envelope, verified_for, size: bytes.len() })
    }

    /// The time expiry is judged against from now on: a long-lived session (the
    /// operator's) moves it forward before each lookup.
    pub fn set_now(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// Until when what this session resolved stays true without a new refresh: the
    /// earliest expiry of the top-level metadata and of every targets role loaded (a
    /// verdict kept between lookups must not outlive the role that vouched for it).
    pub fn valid_until(&self) -> Timestamp {
        let t = self.trusted();
        [t.root.1, t.timestamp.1, t.snapshot.1, t.targets.1]
            .into_iter()
            .chain(self.targets.values().map(|l| l.header.expires))
            .min()
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// The store this session keeps its verified metadata in: a next session over the
    /// same trust anchor starts from it, so a role the snapshot still lists at the same
    /// version is not downloaded again (and a server that stops serving it changes
    /// nothing), while a new version must be delivered.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The roots this session rotated to, oldest first, exactly as served.
    pub fn rotated_roots(&self) -> &[Vec<u8>] {
        &self.rotated
    }

    /// 5.6.7: the lazy pre-order depth-first search for one target. Every role on the
    /// way is checked against the current time, delegated ones included.
    pub async fn target(&mut self, name: &str) -> Result<TargetFile, TrustError> {
        if self.snapshot.is_none() {
            return Err(TrustError::Store {
                path: self.store.describe(),
                reason: "no trusted snapshot yet: refresh before looking up targets".into(),
            });
        }
        let mut stack: Vec<(String, Option<String>)> = vec![(TARGETS.to_string(), None)];
        let mut visited = HashSet::new();
        while let Some((role, parent)) = stack.pop() {
            if visited.len() >= self.limits.max_delegations {
                break;
            }
            if !visited.insert((role.clone(), parent.clone())) {
                continue; // a cycle
            }
            self.update_targets(&role, parent.as_deref()).await?;
            let Some(loaded) = self.targets.get(&role) else { break };
            expired(&role, &loaded.header, self.now)?;
            if let Some(t) = loaded.body.targets.get(name) {
                return Ok(t.clone());
            }
            let mut children = Vec::new();
            if let Some(d) = &loaded.body.delegations {
                for child in &d.roles {
                    if child.delegates(name) {
                        children.push((child.name.clone(), Some(role.clone())));
                        if child.terminating {
                            stack.clear();
                            break;
                        }
                    }
                }
            }
            stack.extend(children.into_iter().rev());
        }
        Err(TrustError::UnknownTarget { target: name.to_string() })
    }

    /// Every target under the directory `prefix`, as `target` would resolve each: the
    /// names come from a pre-order walk of every role that may be trusted for a path
    /// under the prefix (every bin of a hashed-bin delegation), a name counts only when
    /// each delegation on its way is trusted for it, and the winning entry is the one
    /// `target` finds (ordering and terminating delegations decide, as for one file).
    /// Bounded: at most `max_listed_roles` roles of `max_listed_bytes` in all, and
    /// `max_files` names.
    pub async fn targets_under(
        &mut self,
        prefix: &str,
        max_files: usize,
    ) -> Result<Vec<(String, TargetFile)>, TrustError> {
        if self.snapshot.is_none() {
            return Err(malformed_order("snapshot"));
        }
        let depth = prefix.split('/').count().saturating_sub(1);
        let dirs: Vec<&str> = prefix.split('/').take(depth).collect();
        // (role, parent, the delegations on the way to it)
        let mut stack: Vec<(String, Option<String>, Vec<DelegatedRole>)> =
            vec![(TARGETS.to_string(), None, Vec::new())];
        let mut visited = HashSet::new();
        let mut names = std::collections::BTreeSet::new();
        let mut bytes = 0usize;
        while let Some((role, parent, chain)) = stack.pop() {
            if !visited.insert((role.clone(), parent.clone())) {
                continue;
            }
            if visited.len() > self.limits.max_listed_roles {
                return Err(TrustError::TooMany {
                    what: format!("targets roles to search for {prefix:?}"),
                    limit: self.limits.max_listed_roles,
                });
            }
            self.update_targets(&role, parent.as_deref()).await?;
            let Some(loaded) = self.targets.get(&role) else { break };
            expired(&role, &loaded.header, self.now)?;
            bytes = bytes.saturating_add(loaded.size);
            if bytes > self.limits.max_listed_bytes {
                return Err(TrustError::TooMany {
                    what: format!("bytes of targets metadata to search for {prefix:?}"),
                    limit: self.limits.max_listed_bytes,
                });
            }
            for name in loaded.body.targets.keys().filter(|n| n.starts_with(prefix)) {
                if chain.iter().all(|d| d.delegates(name)) && names.insert(name.clone()) && names.len() > max_files {
                    return Err(TrustError::TooMany { what: format!("targets under {prefix:?}"), limit: max_files });
                }
            }
            let mut children = Vec::new();
            if let Some(d) = &loaded.body.delegations {
                for child in d.roles.iter().filter(|c| c.may_delegate_under(&dirs)) {
                    let mut chain = chain.clone();
                    chain.push(child.clone());
                    children.push((child.name.clone(), Some(role.clone()), chain));
                }
            }
            stack.extend(children.into_iter().rev());
        }
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            match self.target(&name).await {
                Ok(info) => found.push((name, info)),
                // Listed by a role that a terminating or earlier delegation shadows for
                // this name: not a target, as TUF resolves it.
                Err(TrustError::UnknownTarget { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// Whether targets are stored under hash-prefixed names.
    pub fn consistent_snapshot(&self) -> bool {
        self.root.body.consistent_snapshot
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

/// A listed file the server did not deliver (not found, refused, too slow, cut off):
/// the update fails for what it vouches for; other errors keep their own reason.
fn undelivered(role: &str, version: u64, by: &str, e: TrustError) -> TrustError {
    match e {
        TrustError::NotFound { .. } | TrustError::Fetch { .. } => {
            TrustError::MetadataUnavailable { role: role.into(), version, by: by.into(), reason: e.to_string() }
        }
        e => e,
    }
}

/// A step of the workflow ran before the one it depends on: a bug, reported as an
/// error rather than a panic.
fn malformed_order(missing: &str) -> TrustError {
    TrustError::Store { path: "client".into(), reason: format!("no trusted {missing} metadata loaded yet") }
}

fn snapshot_entry(ts: &MetaList) -> Result<&MetaFile, TrustError> {
    ts.meta.get("snapshot.json").ok_or_else(|| TrustError::Malformed {
        what: "timestamp metadata".into(),
        reason: "it does not list snapshot.json".into(),
    })
}

fn with_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter().map(|(a, h)| (a.to_string(), h.to_string())).collect()
    }

    #[test]
    fn every_known_hash_must_match_and_one_must_be_known() {
        let d = Digests::of(b"model");
        let sha256 = d.sha256.clone().unwrap();
        let sha512 = d.sha512.clone().unwrap();
        assert!(check_hashes("t", &hashes(&[("sha256", &sha256)]), &d).is_ok());
        assert!(check_hashes("t", &hashes(&[("sha256", &sha256.to_uppercase()), ("sha512", &sha512)]), &d).is_ok());
        assert!(check_hashes("t", &hashes(&[("sha256", &sha256), ("sha512", "00")]), &d).is_err());
        // Unknown algorithms are ignored, but alone they prove nothing.
        assert!(check_hashes("t", &hashes(&[("sha256", &sha256), ("blake9", "zz")]), &d).is_ok());
        assert!(check_hashes("t", &hashes(&[("blake9", "zz")]), &d).is_err());
        assert!(check_hashes("t", &hashes(&[]), &d).is_err());
        // A listed hash that was not computed is a failure, not a pass.
        let partial = Digests { sha256: d.sha256.clone(), sha512: None };
        assert!(check_hashes("t", &hashes(&[("sha256", &sha256), ("sha512", &sha512)]), &partial).is_err());
    }

    #[test]
    fn a_signed_length_never_raises_the_cap() {
        assert_eq!(capped("snapshot", None, 100).unwrap(), 100);
        assert_eq!(capped("snapshot", Some(40), 100).unwrap(), 40);
        assert_eq!(capped("snapshot", Some(u64::MAX), 100).unwrap_err().reason(), crate::trust::Reason::TooLarge);
    }

    #[test]
    fn metadata_files_are_checked_against_length_and_hashes() {
        let bytes = b"{\"signed\":{}}";
        let d = Digests::of(bytes);
        let meta =
            |length, sha: Option<&str>| MetaFile { version: 1, length, hashes: sha.map(|h| hashes(&[("sha256", h)])) };
        assert!(check_meta_file("snapshot", &meta(Some(bytes.len() as u64), d.sha256.as_deref()), bytes).is_ok());
        assert!(check_meta_file("snapshot", &meta(None, None), bytes).is_ok());
        assert_eq!(
            check_meta_file("snapshot", &meta(Some(3), None), bytes).unwrap_err().reason(),
            crate::trust::Reason::HashMismatch
        );
        assert_eq!(
            check_meta_file("snapshot", &meta(None, Some("00")), bytes).unwrap_err().reason(),
            crate::trust::Reason::HashMismatch
        );
    }
}

//! TUF metadata as it arrives: parsed leniently into what the client workflow needs,
//! with signatures checked over the canonical JSON of the `signed` object exactly as
//! received (unknown fields included), so nothing is lost by re-serialisation.
//!
//! Threshold checks use tough's `Root::verify_role`, which counts distinct valid key IDs
//! and refuses duplicate signatures; delegated roles are checked through a synthetic
//! root holding the delegator's keys.

use std::{collections::BTreeMap, marker::PhantomData, num::NonZeroU64};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tough::schema::{Role, RoleType, Signed};

use super::TrustError;

/// Metadata role names.
pub const ROOT: &str = "root";
pub const TIMESTAMP: &str = "timestamp";
pub const SNAPSHOT: &str = "snapshot";
pub const TARGETS: &str = "targets";

/// A metadata file: its `signed` part as received and the signatures over it.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub signed: Value,
    pub signatures: Vec<tough::schema::Signature>,
    /// The name it is verified as (`root`, `targets`, a delegated role name).
    pub role: String,
}

#[derive(Deserialize)]
struct RawEnvelope {
    signed: Value,
    signatures: Vec<tough::schema::Signature>,
}

impl Envelope {
    pub fn parse(role: &str, bytes: &[u8]) -> Result<Self, TrustError> {
        let raw: RawEnvelope = serde_json::from_slice(bytes).map_err(|e| malformed(role, e))?;
        let expected = if matches!(role, ROOT | TIMESTAMP | SNAPSHOT) { role } else { TARGETS };
        match raw.signed.get("_type").and_then(Value::as_str) {
            Some(t) if t == expected => {}
            other => return Err(malformed(role, format!("_type is {other:?}, expected {expected:?}"))),
        }
        Ok(Self { signed: raw.signed, signatures: raw.signatures, role: role.to_string() })
    }

    /// The common header every role carries.
    pub fn header(&self) -> Result<Header, TrustError> {
        let h: Header = serde_json::from_value(self.signed.clone()).map_err(|e| malformed(&self.role, e))?;
        if h.version == 0 {
            return Err(malformed(&self.role, "version must be at least 1"));
        }
        if !h.spec_version.starts_with("1.") {
            return Err(malformed(&self.role, format!("unsupported spec_version {:?}", h.spec_version)));
        }
        Ok(h)
    }

    pub fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T, TrustError> {
        serde_json::from_value(self.signed.clone()).map_err(|e| malformed(&self.role, e))
    }

    /// Checks the signatures against `keys` (a map of key ID to key, as in root or a
    /// delegation) and the role's `keyids`/`threshold`.
    pub fn verify(&self, keys: &BTreeMap<String, Value>, role_keys: &RoleKeys) -> Result<(), TrustError> {
        let kind = match self.role.as_str() {
            ROOT => RoleType::Root,
            TIMESTAMP => RoleType::Timestamp,
            SNAPSHOT => RoleType::Snapshot,
            _ => RoleType::Targets,
        };
        // Only the keys this role may use; a key tough cannot parse cannot sign either.
        let usable: serde_json::Map<String, Value> = role_keys
            .keyids
            .iter()
            .filter_map(|id| keys.get(id).map(|k| (id.clone(), k.clone())))
            .filter(|(id, k)| serde_json::from_value::<tough::schema::Root>(synthetic_root(id, k, kind, 1)).is_ok())
            .collect();
        let root = json!({
            "_type": "root", "spec_version": "1.0.0", "consistent_snapshot": false, "version": 1,
            "expires": "2100-01-01T00:00:00Z", "keys": usable,
            "roles": { kind.to_string(): {"keyids": role_keys.keyids, "threshold": role_keys.threshold} },
        });
        let root: tough::schema::Root = serde_json::from_value(root).map_err(|e| signature(&self.role, e))?;
        let result = match kind {
            RoleType::Root => self.verify_as::<RootMarker>(&root),
            RoleType::Timestamp => self.verify_as::<TimestampMarker>(&root),
            RoleType::Snapshot => self.verify_as::<SnapshotMarker>(&root),
            _ => self.verify_as::<TargetsMarker>(&root),
        };
        result.map_err(|e| signature(&self.role, e))
    }
}

impl Envelope {
    fn verify_as<M: Marker>(&self, root: &tough::schema::Root) -> tough::schema::Result<()> {
        let signed = Raw::<M> { value: self.signed.clone(), _m: PhantomData };
        root.verify_role(&Signed { signed, signatures: self.signatures.clone() })
    }
}

fn synthetic_root(id: &str, key: &Value, kind: RoleType, threshold: u64) -> Value {
    json!({
        "_type": "root", "spec_version": "1.0.0", "consistent_snapshot": false, "version": 1,
        "expires": "2100-01-01T00:00:00Z", "keys": {id: key},
        "roles": { kind.to_string(): {"keyids": [id], "threshold": threshold} },
    })
}

/// Percent-encodes a name for use as one file name (python-tuf's `quote(name, '')`).
pub fn quote(name: &str) -> String {
    super::store::encode_role(name)
}

fn malformed(role: &str, e: impl std::fmt::Display) -> TrustError {
    TrustError::Malformed { what: format!("{role} metadata"), reason: e.to_string() }
}

fn signature(role: &str, e: impl std::fmt::Display) -> TrustError {
    let reason = e.to_string();
    // tough prints the raw key ID structure; say what it means instead.
    let reason = if reason.starts_with("Duplicate key ID") {
        "one key signed more than once (a signature never counts twice)".to_string()
    } else {
        reason
    };
    TrustError::Signature { role: role.to_string(), reason }
}

/// Fields every role has.
#[derive(Clone, Debug, Deserialize)]
pub struct Header {
    pub spec_version: String,
    pub version: u64,
    pub expires: Timestamp,
}

/// `keyids` and `threshold` of a role.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RoleKeys {
    pub keyids: Vec<String>,
    pub threshold: NonZeroU64,
}

/// What the client uses of root.
#[derive(Clone, Debug, Deserialize)]
pub struct RootMeta {
    #[serde(default)]
    pub consistent_snapshot: bool,
    pub keys: BTreeMap<String, Value>,
    pub roles: BTreeMap<String, RoleKeys>,
}

impl RootMeta {
    pub fn role(&self, name: &str) -> Result<&RoleKeys, TrustError> {
        self.roles
            .get(name)
            .ok_or_else(|| TrustError::Malformed { what: "root metadata".into(), reason: format!("no {name} role") })
    }
}

/// A `meta` entry of timestamp or snapshot.
#[derive(Clone, Debug, Deserialize)]
pub struct MetaFile {
    pub version: u64,
    #[serde(default)]
    pub length: Option<u64>,
    #[serde(default)]
    pub hashes: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct MetaList {
    pub meta: BTreeMap<String, MetaFile>,
}

/// A target entry: length and hashes (any of sha256, sha512).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct TargetFile {
    pub length: u64,
    pub hashes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
}

impl TargetFile {
    /// The signed hash of `alg`, checked to be lowercase-able hex of the algorithm's
    /// length: whoever signs a delegated role may write anything there, and the value
    /// ends up in URLs, pod arguments and status.
    pub fn hash(&self, alg: &str) -> Result<Option<String>, TrustError> {
        let Some(value) = self.hashes.get(alg) else { return Ok(None) };
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => value.len(),
        };
        if value.len() != want || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            let shown: String = value.chars().take(20).filter(|c| !c.is_control()).collect();
            return Err(TrustError::Malformed {
                what: "targets metadata".into(),
                reason: format!("the {alg} of a target is not {want} hex digits ({shown:?}...)"),
            });
        }
        Ok(Some(value.to_ascii_lowercase()))
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct TargetsMeta {
    #[serde(default)]
    pub targets: BTreeMap<String, TargetFile>,
    #[serde(default)]
    pub delegations: Option<Delegations>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Delegations {
    pub keys: BTreeMap<String, Value>,
    pub roles: Vec<DelegatedRole>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DelegatedRole {
    pub name: String,
    pub keyids: Vec<String>,
    pub threshold: NonZeroU64,
    #[serde(default)]
    pub terminating: bool,
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub path_hash_prefixes: Option<Vec<String>>,
}

impl DelegatedRole {
    pub fn keys(&self) -> RoleKeys {
        RoleKeys { keyids: self.keyids.clone(), threshold: self.threshold }
    }

    /// Whether this role is trusted for `target` (TUF 5.6.7.2.1).
    pub fn delegates(&self, target: &str) -> bool {
        if let Some(patterns) = &self.paths {
            return patterns.iter().any(|p| path_matches(p, target));
        }
        if let Some(prefixes) = &self.path_hash_prefixes {
            let digest = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, target.as_bytes()));
            return prefixes.iter().any(|p| digest.starts_with(p.as_str()));
        }
        false
    }
}

impl DelegatedRole {
    /// Whether this role may be trusted for some path below the directories `dirs` (a
    /// prefix split at '/'): a hashed-bin role may hold any name, a pattern must match
    /// the directories and go deeper (`*` never crosses '/').
    pub fn may_delegate_under(&self, dirs: &[&str]) -> bool {
        if let Some(patterns) = &self.paths {
            return patterns.iter().any(|p| {
                let segments: Vec<&str> = p.split('/').collect();
                segments.len() > dirs.len() && segments.iter().zip(dirs).all(|(p, d)| glob(p.as_bytes(), d.as_bytes()))
            });
        }
        self.path_hash_prefixes.is_some()
    }
}

/// Shell-style pattern match where `*` does not cross `/` (as python-tuf does): the
/// pattern and the path must have the same number of segments.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let t: Vec<&str> = path.split('/').collect();
    p.len() == t.len() && p.iter().zip(&t).all(|(p, t)| glob(p.as_bytes(), t.as_bytes()))
}

/// `*` (any run) and `?` (any one byte) over one path segment. Greedy with one
/// backtrack point (the last `*`), so at most |p| x |t| steps: a crafted pattern such as
/// `*a*a*a*a*b` cannot make it exponential.
fn glob(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.iter().skip(pi).all(|&c| c == b'*')
}

// tough verifies any `Role`; these wrappers make the received JSON one, serialising
// exactly as received.
trait Marker {
    const TYPE: RoleType;
}
struct RootMarker;
struct TimestampMarker;
struct SnapshotMarker;
struct TargetsMarker;
impl Marker for RootMarker {
    const TYPE: RoleType = RoleType::Root;
}
impl Marker for TimestampMarker {
    const TYPE: RoleType = RoleType::Timestamp;
}
impl Marker for SnapshotMarker {
    const TYPE: RoleType = RoleType::Snapshot;
}
impl Marker for TargetsMarker {
    const TYPE: RoleType = RoleType::Targets;
}

struct Raw<M> {
    value: Value,
    _m: PhantomData<M>,
}

impl<M> Serialize for Raw<M> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<M: Marker> Role for Raw<M> {
    const TYPE: RoleType = M::TYPE;
    fn expires(&self) -> Timestamp {
        self.value.get("expires").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(Timestamp::MIN)
    }
    fn version(&self) -> NonZeroU64 {
        self.value.get("version").and_then(Value::as_u64).and_then(NonZeroU64::new).unwrap_or(NonZeroU64::MIN)
    }
    fn filename(&self, _consistent_snapshot: bool) -> String {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_do_not_cross_directories() {
        assert!(path_matches("models/*", "models/a.onnx"));
        assert!(!path_matches("models/*", "models/v1/a.onnx"));
        assert!(path_matches("models/*/a.onnx", "models/v1/a.onnx"));
        assert!(path_matches("*.onnx", "a.onnx"));
        assert!(!path_matches("*.onnx", "dir/a.onnx"));
        assert!(path_matches("fraud-?/x", "fraud-1/x"));
        assert!(path_matches("*", ""));
        assert!(path_matches("a*b*c", "aXbYc"));
        assert!(!path_matches("a*b*c", "aXbY"));
        assert!(path_matches("*.onnx", ".onnx"));
        assert!(!path_matches("?", ""));
    }

    #[test]
    fn a_crafted_pattern_is_matched_in_polynomial_time() {
        let name = "a".repeat(5000);
        let start = std::time::Instant::now();
        assert!(!path_matches("*a*a*a*a*a*a*a*a*a*a*a*a*b", &name));
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "took {:?}", start.elapsed());
    }
}

//! The record of trust a repository keeps in the cluster: every root that followed the
//! pinned one, in order, in ConfigMap `<repository>-trust-state`. It is only a record:
//! whoever can write ConfigMaps in the namespace can change it, so it is believed only
//! after it has been verified again from the pin, root by root (each signed by a
//! threshold of its predecessor's keys and of its own), by the operator on every
//! refresh and by `modelgate fetch` in every pod. A record that does not chain from the
//! pin is refused, never repaired silently. Pure: no I/O.

use aws_lc_rs::digest::{SHA256, digest};

use super::{TrustError, metadata::ROOT, updater::self_signed_root};

/// Key of the root chain (a JSON array of root.json documents, oldest first, each
/// exactly as the repository served it) in the trust-state ConfigMap.
pub const STATE_CHAIN_KEY: &str = "roots.json";
/// Key of the sha256 of the pinned root the chain starts from: a pin that changed is a
/// deliberate re-anchoring, not a tampered record.
pub const STATE_PIN_KEY: &str = "pinned-root-sha256";
/// Key of the anti-rollback floors the operator trusts now (JSON `{"root": N,
/// "timestamp": N, "snapshot": N, "targets": N}`), kept current on every refresh: a pod
/// started months after its ReplicaSet was made still refuses what today's metadata
/// forbids. A record anyone with `edit` may write, so a pod only ever *raises* the floors
/// its own arguments carry with it.
pub const STATE_FLOORS_KEY: &str = "floors.json";
/// A chain larger than this is not recorded (a ConfigMap holds at most 1 MiB): clients
/// then walk the roots from the repository, as TUF clients do.
pub const MAX_CHAIN_BYTES: usize = 768 * 1024;
/// Most roots a chain may hold.
pub const MAX_CHAIN_ROOTS: usize = 256;

/// Name of the ConfigMap holding a repository's trust record.
pub fn state_configmap(repository: &str) -> String {
    format!("{repository}-trust-state")
}

/// Name of the copy of a ClusterModelRepository's trust material in a release's
/// namespace (pods mount ConfigMaps of their own namespace only).
pub fn mirror_configmap(repository: &str) -> String {
    format!("modelgate-cluster-{repository}")
}

/// Key of the pinned root in a cluster repository's copy.
pub const MIRROR_PIN_KEY: &str = "root.json";
/// Key of the CA bundle in a cluster repository's copy.
pub const MIRROR_CA_KEY: &str = "ca.crt";

/// A ClusterModelRepository's trust material as pods in a release's namespace read it:
/// the pin, the record (chain and floors) and the CA bundle, in one ConfigMap. Anyone
/// with `edit` there can write it, so pods hold the pin to the digest the operator
/// verified (`--root-sha256`, from the repository's status), verify the chain from it
/// and only raise their floors with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    pub name: String,
    pub data: std::collections::BTreeMap<String, String>,
}

impl Mirror {
    pub fn new(repository: &str, pin: &[u8], chain: String, floors: String, ca: Option<&[u8]>) -> Self {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut data: std::collections::BTreeMap<String, String> = [
            (MIRROR_PIN_KEY.to_string(), text(pin)),
            (STATE_CHAIN_KEY.into(), chain),
            (STATE_FLOORS_KEY.into(), floors),
        ]
        .into();
        if let Some(ca) = ca {
            data.insert(MIRROR_CA_KEY.into(), text(ca));
        }
        Self { name: mirror_configmap(repository), data }
    }

    /// Identifies the content, to tell whether a namespace's copy is current.
    pub fn digest(&self) -> String {
        pin_digest(serde_json::to_string(&self.data).unwrap_or_default().as_bytes())
    }
}

/// sha256 of the pinned root, hex.
pub fn pin_digest(pin: &[u8]) -> String {
    hex::encode(digest(&SHA256, pin))
}

/// The floors as recorded.
pub fn render_floors(floors: super::Floors) -> String {
    // Four integers always serialize.
    serde_json::to_string(&floors).unwrap_or_default()
}

/// Parses recorded floors; anything but the four small numbers is tampering.
pub fn parse_floors(text: &str) -> Result<super::Floors, TrustError> {
    if text.len() > 1024 {
        return Err(tampered("the recorded floors are larger than 1 KiB".into()));
    }
    serde_json::from_str(text).map_err(|e| tampered(format!("the recorded floors are not four versions: {e}")))
}

/// Parses a recorded chain; anything but a bounded JSON array of strings is tampering.
pub fn parse_chain(text: &str) -> Result<Vec<Vec<u8>>, TrustError> {
    if text.len() > MAX_CHAIN_BYTES {
        return Err(tampered(format!("the recorded root chain is larger than {MAX_CHAIN_BYTES} bytes")));
    }
    let roots: Vec<String> = serde_json::from_str(text)
        .map_err(|e| tampered(format!("the recorded root chain is not a list of roots: {e}")))?;
    if roots.len() > MAX_CHAIN_ROOTS {
        return Err(tampered(format!("the recorded root chain holds more than {MAX_CHAIN_ROOTS} roots")));
    }
    Ok(roots.into_iter().map(String::into_bytes).collect())
}

/// Renders a chain for the ConfigMap, or `None` when it is too large to record.
pub fn render_chain(chain: &[Vec<u8>]) -> Option<String> {
    let roots: Vec<String> = chain.iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
    let text = serde_json::to_string(&roots).ok()?;
    (text.len() <= MAX_CHAIN_BYTES && roots.len() <= MAX_CHAIN_ROOTS).then_some(text)
}

/// The newest root of `chain`, verified from `pin`: the pin signs itself, and each
/// root is the next version, signed by a threshold of the previous root's keys and of
/// its own. Returns the pin itself for an empty chain.
pub fn anchor(pin: &[u8], chain: &[Vec<u8>]) -> Result<Vec<u8>, TrustError> {
    let (mut header, mut body, _) = self_signed_root(pin)?;
    let mut newest = pin;
    for (i, bytes) in chain.iter().enumerate() {
        let (next_header, next_body, envelope) =
            self_signed_root(bytes).map_err(|e| tampered(format!("recorded root #{} is not a root: {e}", i + 1)))?;
        let role = body.role(ROOT)?;
        envelope.verify(&body.keys, role).map_err(|e| {
            tampered(format!(
                "recorded root version {} is not signed by the keys of version {} that the pin vouches for: {e}",
                next_header.version, header.version
            ))
        })?;
        if next_header.version != header.version.saturating_add(1) {
            return Err(tampered(format!(
                "recorded root version {} does not follow version {}",
                next_header.version, header.version
            )));
        }
        (header, body, newest) = (next_header, next_body, bytes);
    }
    Ok(newest.to_vec())
}

fn tampered(reason: String) -> TrustError {
    TrustError::TrustState { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_floors_are_four_versions_or_tampering() {
        let floors = crate::trust::Floors { root: 2, timestamp: 7, snapshot: 7, targets: 3 };
        assert_eq!(parse_floors(&render_floors(floors)).unwrap(), floors);
        for bad in ["", "[]", r#"{"root": -1}"#, r#"{"root": 1, "timestamp": 1, "snapshot": 1, "targets": 1, "x": 1}"#]
        {
            assert_eq!(parse_floors(bad).unwrap_err().reason(), crate::trust::Reason::TrustStateTampered, "{bad}");
        }
        assert!(parse_floors(&" ".repeat(2000)).is_err(), "bounded");
    }
}

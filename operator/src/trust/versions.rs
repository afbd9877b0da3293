//! The versions trust is measured in: the floors a client must not go below and the
//! versions a refresh trusted. Plain data, no I/O, so the planner can use them.

use k8s_openapi::jiff::Timestamp;

/// Versions below which metadata is refused even when the local directory is empty:
/// the anti-rollback state kept outside the pod (in `ModelRepository.status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Floors {
    pub root: u64,
    pub timestamp: u64,
    pub snapshot: u64,
    pub targets: u64,
}

/// Trusted versions after a refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct Trusted {
    pub root: (u64, Timestamp),
    pub timestamp: (u64, Timestamp),
    pub snapshot: (u64, Timestamp),
    pub targets: (u64, Timestamp),
}

impl Floors {
    /// The higher of each version: floors only ever rise.
    pub fn raised(self, other: Floors) -> Floors {
        Floors {
            root: self.root.max(other.root),
            timestamp: self.timestamp.max(other.timestamp),
            snapshot: self.snapshot.max(other.snapshot),
            targets: self.targets.max(other.targets),
        }
    }
}

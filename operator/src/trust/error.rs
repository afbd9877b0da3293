use thiserror::Error;

/// Why trust in a repository or a target could not be established. Every variant is a
/// reason to refuse: nothing unverified is used, nothing is written.
#[derive(Debug, Error)]
pub enum TrustError {
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },

    #[error("{url} was not found on the repository")]
    NotFound { url: String },

    /// Metadata a trusted referrer lists (the snapshot a timestamp names, a targets role
    /// a snapshot names) that the server does not deliver: a hidden update is never
    /// "nothing changed" (python-tuf fails the update the same way).
    #[error(
        "the repository's signed {by} lists {role} metadata version {version}, but the server did not deliver it \
         ({reason}); until it does, nothing that {role} vouches for is trusted (a hidden update may be a revocation)"
    )]
    MetadataUnavailable { role: String, version: u64, by: String, reason: String },

    #[error("{what} is larger than its limit of {limit} bytes (endless-data attack or wrong length)")]
    TooLarge { what: String, limit: u64 },

    #[error("{what} is not valid TUF metadata: {reason}")]
    Malformed { what: String, reason: String },

    #[error("{role} metadata is not signed by a threshold of trusted keys: {reason}")]
    Signature { role: String, reason: String },

    #[error("{role} metadata expired at {expires}; the repository is stale or frozen by an attacker")]
    Expired { role: String, expires: String },

    #[error("{role} metadata version {new} is older than the trusted version {trusted} (rollback attack)")]
    Rollback { role: String, trusted: u64, new: u64 },

    #[error("{role} metadata has version {got}, but {by} says {expected} (mix-and-match attack)")]
    VersionMismatch { role: String, expected: u64, got: u64, by: String },

    #[error("{what}: {reason}")]
    Hash { what: String, reason: String },

    #[error("root rotation from version {from} exceeds {limit} steps")]
    TooManyRoots { from: u64, limit: u64 },

    #[error(
        "more than {limit} {what}, the most modelgate accepts for one model; publish the model under a prefix of its own"
    )]
    TooMany { what: String, limit: usize },

    #[error("target {target:?} is signed without a sha256 hash, which modelgate pins pods to; sign it with sha256")]
    NoSha256 { target: String },

    #[error("target {target:?} is not listed by any trusted targets role")]
    UnknownTarget { target: String },

    #[error("target {target:?}: {reason}")]
    TargetMismatch { target: String, reason: String },

    #[error("{0}")]
    Insecure(String),

    #[error("local trust state in {path}: {reason}")]
    Store { path: String, reason: String },

    #[error(
        "the repository's trust record does not chain from the pinned root ({reason}); someone changed it: \
         find out who, then delete the repository's <name>-trust-state ConfigMap and modelgate rebuilds it from spec.trustedRoot"
    )]
    TrustState { reason: String },
}

impl TrustError {
    /// Whether the failure may pass by itself (network, local disk) rather than being a
    /// verdict about the repository. Trusted metadata stays usable until it expires.
    pub fn is_transient(&self) -> bool {
        matches!(self, TrustError::Fetch { .. } | TrustError::NotFound { .. } | TrustError::Store { .. })
    }

    /// A short, bounded label for metrics and condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            TrustError::Fetch { .. } => "Unreachable",
            TrustError::NotFound { .. } => "NotFound",
            TrustError::MetadataUnavailable { .. } => "MetadataUnavailable",
            TrustError::TooLarge { .. } => "TooLarge",
            TrustError::Malformed { .. } => "Malformed",
            TrustError::Signature { .. } => "BadSignature",
            TrustError::Expired { .. } => "Expired",
            TrustError::Rollback { .. } => "RollbackDetected",
            TrustError::VersionMismatch { .. } => "VersionMismatch",
            TrustError::Hash { .. } => "HashMismatch",
            TrustError::TooManyRoots { .. } => "TooManyRoots",
            TrustError::UnknownTarget { .. } => "UnknownTarget",
            TrustError::TooMany { .. } => "TooManyFiles",
            TrustError::NoSha256 { .. } => "NoSha256",
            TrustError::TargetMismatch { .. } => "TargetMismatch",
            TrustError::Insecure(_) => "Insecure",
            TrustError::Store { .. } => "StoreError",
            TrustError::TrustState { .. } => "TrustStateTampered",
        }
    }
}

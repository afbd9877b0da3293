use thiserror::Error;

use super::provenance::ProvenanceError;

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

    /// An image model's manifest target that the node could not mount as the model, or
    /// would fetch from where the repository does not allow.
    #[error("image {target:?} cannot serve as a model: {reason}")]
    UnsupportedImage { target: String, reason: String },

    #[error("local trust state in {path}: {reason}")]
    Store { path: String, reason: String },

    /// The model's signature (OpenSSF model signing) is missing or not accepted.
    #[error("{0}")]
    Provenance(#[from] super::provenance::ProvenanceError),

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

    /// Why, as a bounded word for conditions, Events and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            TrustError::Fetch { .. } => Reason::Unreachable,
            TrustError::NotFound { .. } => Reason::NotFound,
            TrustError::MetadataUnavailable { .. } => Reason::MetadataUnavailable,
            TrustError::TooLarge { .. } => Reason::TooLarge,
            TrustError::Malformed { .. } => Reason::Malformed,
            TrustError::Signature { .. } => Reason::BadSignature,
            TrustError::Expired { .. } => Reason::Expired,
            TrustError::Rollback { .. } => Reason::RollbackDetected,
            TrustError::VersionMismatch { .. } => Reason::VersionMismatch,
            TrustError::Hash { .. } => Reason::HashMismatch,
            TrustError::TooManyRoots { .. } => Reason::TooManyRoots,
            TrustError::UnknownTarget { .. } => Reason::UnknownTarget,
            TrustError::TooMany { .. } => Reason::TooManyFiles,
            TrustError::NoSha256 { .. } => Reason::NoSha256,
            TrustError::TargetMismatch { .. } => Reason::TargetMismatch,
            TrustError::Insecure(_) => Reason::Insecure,
            TrustError::UnsupportedImage { .. } => Reason::UnsupportedImage,
            TrustError::Store { .. } => Reason::StoreError,
            TrustError::TrustState { .. } => Reason::TrustStateTampered,
            TrustError::Provenance(e) => match e {
                ProvenanceError::Missing { .. } => Reason::SignatureMissing,
                ProvenanceError::Malformed { .. } => Reason::SignatureMalformed,
                ProvenanceError::UnknownSigner { .. } => Reason::UnknownSigner,
                ProvenanceError::BadSignature { .. } => Reason::ModelSignatureInvalid,
                ProvenanceError::Certificate { .. } => Reason::SignerCertificateRejected,
                ProvenanceError::FilesMismatch { .. } => Reason::SignedFilesMismatch,
            },
        }
    }
}

/// The kind of a `TrustError`, one word each: what conditions, Events and metrics say,
/// and what the planner decides on (never the message's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Unreachable,
    NotFound,
    MetadataUnavailable,
    TooLarge,
    Malformed,
    BadSignature,
    Expired,
    RollbackDetected,
    VersionMismatch,
    HashMismatch,
    TooManyRoots,
    UnknownTarget,
    TooManyFiles,
    NoSha256,
    TargetMismatch,
    Insecure,
    UnsupportedImage,
    StoreError,
    TrustStateTampered,
    SignatureMissing,
    SignatureMalformed,
    UnknownSigner,
    ModelSignatureInvalid,
    SignerCertificateRejected,
    SignedFilesMismatch,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unreachable => "Unreachable",
            Reason::NotFound => "NotFound",
            Reason::MetadataUnavailable => "MetadataUnavailable",
            Reason::TooLarge => "TooLarge",
            Reason::Malformed => "Malformed",
            Reason::BadSignature => "BadSignature",
            Reason::Expired => "Expired",
            Reason::RollbackDetected => "RollbackDetected",
            Reason::VersionMismatch => "VersionMismatch",
            Reason::HashMismatch => "HashMismatch",
            Reason::TooManyRoots => "TooManyRoots",
            Reason::UnknownTarget => "UnknownTarget",
            Reason::TooManyFiles => "TooManyFiles",
            Reason::NoSha256 => "NoSha256",
            Reason::TargetMismatch => "TargetMismatch",
            Reason::Insecure => "Insecure",
            Reason::UnsupportedImage => "UnsupportedImage",
            Reason::StoreError => "StoreError",
            Reason::TrustStateTampered => "TrustStateTampered",
            Reason::SignatureMissing => "SignatureMissing",
            Reason::SignatureMalformed => "SignatureMalformed",
            Reason::UnknownSigner => "UnknownSigner",
            Reason::ModelSignatureInvalid => "ModelSignatureInvalid",
            Reason::SignerCertificateRejected => "SignerCertificateRejected",
            Reason::SignedFilesMismatch => "SignedFilesMismatch",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.as_str().to_owned()
    }
}

use thiserror::Error;

/// Why a reconcile (or the operator) failed.
#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "the CustomResourceDefinition {crd} is not installed in this cluster; install the CRDs with \
         `modelgate crd | kubectl apply --server-side -f -` or `helm install modelgate charts/modelgate`"
    )]
    CrdMissing { crd: &'static str },

    #[error("Kubernetes API request failed ({action}): {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },

    #[error("{kind} has no namespace; modelgate resources are namespaced")]
    NoNamespace { kind: &'static str },

    #[error("{kind} has no UID yet (not stored by the API server); it is reconciled again when it is")]
    NoUid { kind: &'static str },

    #[error(
        "leadership of Lease {lease} was lost (another replica took it, or it could not be renewed); exiting so this replica restarts as a follower"
    )]
    LeadershipLost { lease: String },

    #[error(
        "--namespace-selector {selector:?} is not a label selector the API server accepts ({reason}); \
         write one like modelgate.dev/shard=a"
    )]
    BadNamespaceSelector { selector: String, reason: String },

    #[error(
        "a {kind} named {name:?} already exists and this release did not make it: modelgate never adopts or \
         overwrites an object it did not create; delete it (or rename the release)"
    )]
    NameTaken { kind: &'static str, name: String },

    #[error("cannot render the revision's workload: {0}")]
    Render(String),

    #[error("the admission webhook cannot serve: {0}")]
    Certificate(String),

    #[error(
        "ClusterModelRepository {repository:?} has not been verified by this operator yet, so its pods would have no \
         trust material to read; the revision's workload is made once it has"
    )]
    TrustNotCopied { repository: String },

    #[error("cannot serve metrics and health endpoints: {0}")]
    Http(#[from] std::io::Error),
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::CrdMissing { .. } => "crd_missing",
            Error::Kube { .. } => "kube_api",
            Error::NoNamespace { .. } => "no_namespace",
            Error::NoUid { .. } => "no_uid",
            Error::LeadershipLost { .. } => "leadership_lost",
            Error::BadNamespaceSelector { .. } => "bad_namespace_selector",
            Error::NameTaken { .. } => "name_taken",
            Error::Render(_) => "render",
            Error::Certificate(_) => "certificate",
            Error::TrustNotCopied { .. } => "trust_not_copied",
            Error::Http(_) => "http",
        }
    }
}

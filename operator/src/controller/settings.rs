//! How an operator process is told to run: what the command line (`cli/run.rs`) and so
//! the chart decide, handed to `controller::run` as one value.

use super::admission;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Which namespaces this operator serves.
    pub namespaces: Namespaces,
    /// Image of the `modelgate fetch` init container in model pods.
    pub fetch_image: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_address: std::net::SocketAddr,
    /// Reconcile only while holding this Lease.
    pub leader_election: Option<LeaderElection>,
    /// What the pods modelgate renders may be (the admin's choice, not a tenant's).
    pub pod_policy: crate::plan::pod_policy::PodPolicy,
    /// Where gate checks may send requests and what they may ask.
    pub gate_policy: crate::gates::GatePolicy,
    /// The operator's namespace: where ClusterModelRepositories keep their pins, CA
    /// bundles and trust records.
    pub trust_namespace: String,
    /// Whether namespaced ModelRepositories vouch for releases (`false`: only cluster
    /// repositories do, `trust.namespacedRepositories` in the chart).
    pub namespaced_repositories: bool,
    /// Which ClusterModelRepositories this installation serves (labels; all when `None`).
    pub cluster_repository_selector: Option<String>,
    /// Whether it serves any (a namespaced install, without cluster-wide rights, does not).
    pub cluster_repositories: bool,
    /// The admission webhook, when this process serves it.
    pub admission: Option<admission::AdmissionSettings>,
}

/// The namespaces one operator (one shard) serves.
#[derive(Clone, Debug, Default)]
pub enum Namespaces {
    /// Every namespace, with one watch of each kind for the whole cluster.
    #[default]
    All,
    /// These, each with its own watches (the operator's rights may stop at them).
    Listed(Vec<String>),
    /// Those whose labels match this selector, each with its own watches while it does
    /// (`namespaces.rs`).
    Labelled(String),
}

/// The Lease that elects one leader among replicas.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    /// This replica's name in the Lease (the pod name in a cluster).
    pub identity: String,
}

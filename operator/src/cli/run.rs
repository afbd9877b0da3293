//! `modelgate run`: the operator.

use clap::{Args, builder::TypedValueParser as _};

use crate::{
    controller::{
        self, Namespaces, Settings,
        admission::{AdmissionSettings, Certificate},
    },
    gates::{EgressPolicy, GatePolicy, PrometheusPolicy},
    plan::pod_policy::{Level, PodPolicy},
};

#[derive(Debug, Args)]
pub struct Run {
    /// Watch only these namespaces (repeatable or comma-separated; the chart's
    /// namespaced modes). Default: all namespaces.
    #[arg(long = "namespace", env = "MODELGATE_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Serve the namespaces whose labels match this selector (such as
    /// `modelgate.dev/shard=a`), each from the moment it matches until it stops
    /// matching: the chart's labelled shards. Needs list and watch on namespaces.
    #[arg(long, env = "MODELGATE_NAMESPACE_SELECTOR", conflicts_with = "namespaces")]
    namespace_selector: Option<String>,
    /// Image of the init container that fetches and verifies models in model pods;
    /// the chart sets it to the operator's own image.
    #[arg(long, env = "MODELGATE_FETCH_IMAGE", default_value = concat!("modelgate/modelgate:", env!("CARGO_PKG_VERSION")))]
    fetch_image: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`. Loopback by default; the chart
    /// opens it to the pod network for Prometheus and the kubelet's probes.
    #[arg(long, env = "MODELGATE_HTTP_ADDRESS", default_value = "127.0.0.1:8080")]
    http_address: std::net::SocketAddr,
    /// Reconcile only while holding a Lease, so several replicas are safe.
    #[arg(long, env = "MODELGATE_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the watched namespace, else default).
    #[arg(long, env = "MODELGATE_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease. Each shard (a set of namespaces served by its own operator)
    /// needs its own; replicas of one shard share it.
    #[arg(long, env = "MODELGATE_LEADER_ELECTION_NAME", default_value = "modelgate-leader")]
    leader_election_name: String,
    /// Pod Security Standards level every pod modelgate renders must meet; a release
    /// whose template does not is refused (its running revision keeps serving).
    #[arg(long, env = "MODELGATE_POD_SECURITY", default_value_t = Level::Baseline,
          value_parser = clap::builder::PossibleValuesParser::new(Level::ALL.map(Level::as_str)).map(|s| s.parse::<Level>().unwrap_or_default()))]
    pod_security: Level,
    /// The operator's own ServiceAccount (`namespace/name`; the chart sets it): model
    /// pods may never run as it.
    #[arg(long, env = "MODELGATE_SERVICE_ACCOUNT")]
    service_account: Option<String>,
    /// Address ranges (CIDR) gate checks may reach; repeatable or comma-separated.
    /// Without any: every address except loopback, link-local (cloud metadata) and the
    /// API server. Inside an allowed range, those defaults do not apply.
    #[arg(long, env = "MODELGATE_GATE_ALLOW_CIDRS", value_delimiter = ',')]
    gate_allow_cidr: Vec<ipnet::IpNet>,
    /// Address ranges (CIDR) gate checks may never reach, whatever else is allowed.
    #[arg(long, env = "MODELGATE_GATE_DENY_CIDRS", value_delimiter = ',')]
    gate_deny_cidr: Vec<ipnet::IpNet>,
    /// Allow `http://` Prometheus addresses in gate checks (https only by default).
    #[arg(long, env = "MODELGATE_GATE_ALLOW_HTTP")]
    gate_allow_http: bool,
    /// Show the number a Prometheus check returned in the release's status (by default
    /// only the verdict and the threshold: the Prometheus may hold other teams' data).
    #[arg(long, env = "MODELGATE_GATE_SHOW_VALUES")]
    gate_show_values: bool,
    /// The Prometheus base URLs gate checks may name; repeatable or comma-separated.
    /// Without any: every address the egress rules allow.
    #[arg(long, env = "MODELGATE_GATE_PROMETHEUS_ENDPOINTS", value_delimiter = ',', value_parser = PrometheusPolicy::endpoint)]
    gate_prometheus_endpoint: Vec<reqwest::Url>,
    /// The label every series selector of a gate's query is held to, with the release's
    /// namespace as its value (as a label proxy does); empty: queries go as written, and
    /// a team may read any series the Prometheus holds.
    #[arg(long, env = "MODELGATE_GATE_PROMETHEUS_NAMESPACE_LABEL", default_value = PrometheusPolicy::DEFAULT_NAMESPACE_LABEL)]
    gate_prometheus_namespace_label: String,
    /// Namespace of the pins, CA bundles and trust records of ClusterModelRepositories:
    /// the operator's own, where tenants cannot write (default: $POD_NAMESPACE, else
    /// modelgate-system).
    #[arg(long, env = "MODELGATE_TRUST_NAMESPACE")]
    trust_namespace: Option<String>,
    /// Whether namespaced ModelRepositories vouch for releases. `false`: only the
    /// security team's ClusterModelRepositories do; a release naming a ModelRepository
    /// is not accepted.
    #[arg(long, env = "MODELGATE_NAMESPACED_REPOSITORIES", default_value_t = true, action = clap::ArgAction::Set)]
    namespaced_repositories: bool,
    /// Serve only the ClusterModelRepositories whose labels match this selector (all
    /// by default): for several installations in one cluster, each with its own.
    #[arg(long, env = "MODELGATE_CLUSTER_REPOSITORY_SELECTOR")]
    cluster_repository_selector: Option<String>,
    /// Whether this installation serves ClusterModelRepositories at all (needs read
    /// access to them and to namespaces cluster-wide); the chart's namespaced install
    /// turns it off.
    #[arg(long, env = "MODELGATE_CLUSTER_REPOSITORIES", default_value_t = true, action = clap::ArgAction::Set)]
    cluster_repositories: bool,
    #[command(flatten)]
    admission: Admission,
}

/// The admission webhook that refuses a release at `kubectl apply` (the chart turns it on).
#[derive(Debug, Args)]
struct Admission {
    /// Serve the ModelRelease admission webhook (HTTPS) at this address; off without it.
    #[arg(long, env = "MODELGATE_ADMISSION_ADDRESS")]
    admission_address: Option<std::net::SocketAddr>,
    /// The ValidatingWebhookConfiguration whose CA bundle the operator keeps current.
    #[arg(long, env = "MODELGATE_ADMISSION_WEBHOOK_CONFIGURATION", default_value = "modelgate")]
    admission_webhook_configuration: String,
    /// The Secret (in the operator's namespace) holding the webhook's certificate.
    #[arg(long, env = "MODELGATE_ADMISSION_SECRET", default_value = "modelgate-webhook-tls")]
    admission_secret: String,
    /// DNS names and IP addresses the webhook's certificate is for (repeatable or
    /// comma-separated): the chart sets its Service's names.
    #[arg(long, env = "MODELGATE_ADMISSION_NAMES", value_delimiter = ',')]
    admission_name: Vec<String>,
    /// Seconds the operator's certificates are valid; renewed with a third left.
    #[arg(long, env = "MODELGATE_ADMISSION_CERTIFICATE_LIFETIME", default_value_t = controller::CERTIFICATE_LIFETIME.as_secs())]
    admission_certificate_lifetime: u64,
    /// Serve this certificate (PEM) instead of issuing one: cert-manager's, mounted.
    /// Read again every 30 s; the CA bundle is then cert-manager's to inject.
    #[arg(long, env = "MODELGATE_ADMISSION_CERT_FILE", requires = "admission_key_file")]
    admission_cert_file: Option<std::path::PathBuf>,
    /// The key of `--admission-cert-file`.
    #[arg(long, env = "MODELGATE_ADMISSION_KEY_FILE", requires = "admission_cert_file")]
    admission_key_file: Option<std::path::PathBuf>,
}

impl Admission {
    fn settings(self, namespace: &str) -> anyhow::Result<Option<AdmissionSettings>> {
        let Some(address) = self.admission_address else { return Ok(None) };
        let certificate = match (self.admission_cert_file, self.admission_key_file) {
            (Some(cert), Some(key)) => Certificate::Files { cert, key },
            _ => {
                if self.admission_name.is_empty() {
                    anyhow::bail!(
                        "--admission-address needs --admission-name (the webhook Service's DNS names, such as \
                         modelgate-webhook.modelgate-system.svc) or --admission-cert-file"
                    );
                }
                Certificate::Managed(crate::controller::ServingCertPlace {
                    namespace: namespace.to_string(),
                    secret: self.admission_secret,
                    webhook_configuration: self.admission_webhook_configuration,
                    names: self.admission_name,
                    lifetime: std::time::Duration::from_secs(self.admission_certificate_lifetime.max(60)),
                })
            }
        };
        Ok(Some(AdmissionSettings { address, certificate }))
    }
}

impl Run {
    pub async fn run(self) -> anyhow::Result<()> {
        // In a pod: the ServiceAccount; outside: $KUBECONFIG or ~/.kube/config.
        let client = crate::client::client("operator").await.map_err(|e| {
            anyhow::anyhow!("cannot build a Kubernetes client ({e}); run inside a cluster or point KUBECONFIG at one")
        })?;
        let leader_election = self.leader_elect.then(|| controller::LeaderElection {
            namespace: self
                .leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .or_else(|| self.namespaces.first().cloned())
                .unwrap_or_else(|| "default".into()),
            name: self.leader_election_name.clone(),
            identity: std::env::var("POD_NAME").unwrap_or_else(|_| {
                format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "modelgate".into()), std::process::id())
            }),
        });
        let operator_service_account = match self.service_account.as_deref() {
            Some(full) => {
                let (ns, name) = full.split_once('/').ok_or_else(|| {
                    anyhow::anyhow!(
                        "--service-account {full:?} must be namespace/name, such as modelgate-system/modelgate"
                    )
                })?;
                Some((ns.to_string(), name.to_string()))
            }
            None => None,
        };
        let namespaces = match (self.namespace_selector, self.namespaces) {
            (Some(selector), _) => Namespaces::Labelled(selector),
            (None, list) if list.is_empty() => Namespaces::All,
            (None, list) => Namespaces::Listed(list),
        };
        let trust_namespace = self
            .trust_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "modelgate-system".into());
        let settings = Settings {
            admission: self.admission.settings(&trust_namespace)?,
            namespaces,
            fetch_image: self.fetch_image,
            http_address: self.http_address,
            leader_election,
            pod_policy: PodPolicy { level: self.pod_security, operator_service_account },
            gate_policy: GatePolicy {
                egress: EgressPolicy::from_env(self.gate_allow_cidr, self.gate_deny_cidr, self.gate_allow_http),
                prometheus: PrometheusPolicy {
                    endpoints: self.gate_prometheus_endpoint,
                    namespace_label: Some(self.gate_prometheus_namespace_label).filter(|l| !l.is_empty()),
                    show_values: self.gate_show_values,
                },
            },
            trust_namespace,
            namespaced_repositories: self.namespaced_repositories,
            cluster_repository_selector: self.cluster_repository_selector,
            cluster_repositories: self.cluster_repositories,
        };
        controller::run(client, settings).await?;
        Ok(())
    }
}

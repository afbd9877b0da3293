//! The admission webhook: `POST /validate-modelrelease` over HTTPS, on every replica.
//! Answered from memory (`plan::admission::review` over the policies and the trust
//! caches this replica holds): nothing on the request path waits on a network. A replica
//! standing by (leader election) answers from trust caches of its own, refreshed
//! read-only (`Role::StandingBy`), so it judges models as the leader does.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use axum::{Router, body::Body, routing::post};
use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Client, ResourceExt,
    core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use tracing::{debug, info, warn};

use super::{Context, Error, release, serving_cert};
use crate::{
    api::ModelRelease,
    plan::{self, admission::Facts},
};

/// Where the webhook listens and where its certificate comes from.
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    pub address: std::net::SocketAddr,
    pub certificate: Certificate,
}

#[derive(Clone, Debug)]
pub enum Certificate {
    /// Issued and rotated by the operator (`serving_cert`).
    Managed(serving_cert::Place),
    /// PEM files someone else keeps current (cert-manager's Secret, mounted): read again
    /// every `serving_cert::RELOAD`.
    Files { cert: PathBuf, key: PathBuf },
}

/// Largest AdmissionReview read: a release (at most 1.5 MiB in etcd) and its old self.
const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;
/// Reviews judged at once; the others wait for a slot until `REVIEW_DEADLINE`.
const REVIEWS_AT_ONCE: usize = 4;
/// Connections open at once, in all and from one address (the API server keeps a few
/// pooled per replica, one per review in flight); one beyond is closed at once.
const MAX_CONNECTIONS: usize = 256;
const MAX_CONNECTIONS_PER_SOURCE: usize = 32;
/// Longest a connection waits for a request's headers, idle between requests included.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);
/// Longest a review may take here, well under the API server's timeout (the chart's 5 s).
const REVIEW_DEADLINE: Duration = Duration::from_secs(3);

/// One review, read and judged once a slot is free (judged on a blocking thread); its
/// answer as JSON. The body is read only inside a slot, so at most `REVIEWS_AT_ONCE`
/// bodies are held, and a sender that trickles holds its slot only until the deadline.
async fn judged(views: Arc<Views>, slots: Arc<tokio::sync::Semaphore>, body: Body) -> Option<Vec<u8>> {
    let slot = slots.acquire_owned().await.ok()?;
    let body = match axum::body::to_bytes(body, MAX_REVIEW_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            let refused =
                format!("modelgate could not read the admission review (at most {MAX_REVIEW_BYTES} bytes): {e}");
            return serde_json::to_vec(&AdmissionResponse::invalid(refused).into_review()).ok();
        }
    };
    // The slot goes with the judging: a review still judged when its deadline passed
    // keeps its slot until done, so no more than `REVIEWS_AT_ONCE` ever run.
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        serde_json::to_vec(&views.review(&body)).ok()
    })
    .await
    .ok()
    .flatten()
}

/// The views the webhook answers from: the policies, and the scopes this replica runs
/// (a replica standing by: its read-only ones), each with its trust caches.
pub struct Views {
    pod_policy: plan::pod_policy::PodPolicy,
    gate_policy: crate::gates::GatePolicy,
    scopes: RwLock<Vec<(Option<String>, Weak<Context>)>>,
}

impl Views {
    pub fn new(settings: &super::Settings) -> Arc<Self> {
        Arc::new(Self {
            pod_policy: settings.pod_policy.clone(),
            gate_policy: settings.gate_policy.clone(),
            scopes: RwLock::default(),
        })
    }

    /// A scope now running: it answers for `namespace` (every namespace: `None`) while
    /// its context lives.
    pub fn serve(&self, namespace: Option<String>, context: &Arc<Context>) {
        let mut scopes = self.scopes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        scopes.retain(|(_, c)| c.strong_count() > 0);
        scopes.push((namespace, Arc::downgrade(context)));
    }

    /// The scopes for `namespace` whose caches are filled, the newest first: while a
    /// replica takes the lease, both its standby view and its leading one.
    fn contexts(&self, namespace: &str) -> Vec<Arc<Context>> {
        let scopes = self.scopes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        scopes
            .iter()
            .rev()
            .filter(|(ns, _)| ns.as_deref().is_none_or(|ns| ns == namespace))
            .filter_map(|(_, c)| c.upgrade())
            .filter(|c| c.stores.ready() && c.cluster.ready())
            .collect()
    }

    /// Whether this replica has scopes in `role`, and each has its caches filled and a
    /// verdict from every repository it sees.
    pub fn warm(&self, role: super::Role) -> bool {
        let scopes = self.scopes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let of_role: Vec<_> = scopes.iter().filter_map(|(_, c)| c.upgrade()).filter(|c| c.role == role).collect();
        !of_role.is_empty() && of_role.iter().all(|c| c.warm())
    }

    /// Asks the leading views about every model reviews lately asked the standby views
    /// about, so they resolve them before the standby views stop (`warm` waits for it).
    pub fn hand_over(&self) {
        let contexts: Vec<_> = {
            let scopes = self.scopes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            scopes.iter().filter_map(|(ns, c)| Some((ns.clone(), c.upgrade()?))).collect()
        };
        let now = Timestamp::now();
        let of = |role| contexts.iter().filter(move |(_, c)| c.role == role);
        for (_, standby) in of(super::Role::StandingBy) {
            for (repository, uid) in standby.stores.repositories() {
                let covering = of(super::Role::Leading)
                    .filter(|(ns, _)| ns.is_none() || *ns == repository.namespace)
                    .map(|(_, c)| c);
                for (leading, key) in
                    covering.flat_map(|c| standby.trust.reviewed(&uid).into_iter().map(move |k| (c, k)))
                {
                    leading.trust.peek(&repository, &uid, &key, now);
                }
            }
        }
        // Every scope of a role shares one cluster view: handed over once.
        let standby = of(super::Role::StandingBy).next().map(|(_, c)| &c.cluster);
        let leading = of(super::Role::Leading).next().map(|(_, c)| &c.cluster);
        if let (Some(standby), Some(leading)) = (standby, leading) {
            for (repository, uid) in standby.repositories() {
                for key in standby.trust.reviewed(&uid) {
                    leading.trust.peek(&repository, &uid, &key, now);
                }
            }
        }
    }

    /// The answer to one request.
    fn answer(&self, request: &AdmissionRequest<ModelRelease>) -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        let Some(new) = &request.object else { return response };
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return response;
        }
        let namespace = request.namespace.clone().or_else(|| new.namespace()).unwrap_or_default();
        let mut spec_only = new.clone();
        spec_only.status = None;
        spec_only.metadata.name = Some(request.name.clone()).filter(|n| !n.is_empty()).or(new.metadata.name.clone());
        // The first view that knows the model (asking each starts its load); none: the
        // newest's answer.
        let mut judged = self.contexts(&namespace).into_iter().map(|ctx| {
            let (found, source) = release::repository_of(&ctx, &spec_only, &namespace);
            let verdict = match (&found, &source) {
                (plan::Repository::Found { .. }, Some(source)) => {
                    Some(release::spec_verdict(&ctx, &spec_only, &namespace, source, Timestamp::now()))
                }
                _ => None,
            };
            (Some(found), verdict)
        });
        let newest = judged.next().unwrap_or((None, None));
        let (repository, verdict) = if matches!(newest.1, Some(plan::Verdict::Unknown { .. })) {
            judged.find(|(_, v)| !matches!(v, Some(plan::Verdict::Unknown { .. }))).unwrap_or(newest)
        } else {
            newest
        };
        let facts = Facts { pod_policy: &self.pod_policy, gate_policy: &self.gate_policy, repository, verdict };
        let answer = plan::admission::review(new, request.old_object.as_ref(), &namespace, &facts);
        debug!(release = %request.name, namespace, refused = answer.refusals.len(), warned = answer.warnings.len(), "admission reviewed");
        let mut response = if answer.refusals.is_empty() { response } else { response.deny(answer.message()) };
        if !answer.warnings.is_empty() {
            response.warnings = Some(answer.warnings);
        }
        response
    }

    /// Reads a review and answers it; what cannot be read is refused (a review the API
    /// server sent is always readable: anything else is not from it).
    fn review(&self, body: &[u8]) -> AdmissionReview<kube::core::DynamicObject> {
        let parsed: Result<AdmissionReview<ModelRelease>, _> = serde_json::from_slice(body);
        let request: Result<AdmissionRequest<ModelRelease>, _> = match parsed {
            Ok(review) => {
                review.try_into().map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match request {
            Ok(request) => self.answer(&request).into_review(),
            Err(e) => {
                warn!(error = %e, "admission review not readable; refused");
                AdmissionResponse::invalid(format!("modelgate could not read the admission review: {e}")).into_review()
            }
        }
    }
}

/// Serves the webhook until the process ends. The certificate is loaded before the
/// port opens, and looked at again every `serving_cert::RELOAD`.
pub async fn serve(client: Client, settings: AdmissionSettings, views: Arc<Views>) -> Result<(), Error> {
    // Until a certificate is in hand nothing is served; a conflict with another replica
    // issuing at the same moment, an API server not reachable yet, or files that do not
    // hold a usable pair yet (cert-manager not done) are retried.
    let (tls, (cert, key)) = loop {
        match load(&client, &settings.certificate, true).await {
            Ok(Some(pair)) => match serving_cert::server_config(&pair.0, &pair.1) {
                Ok(config) => break (RustlsConfig::from_config(config), pair),
                Err(e) => warn!(error = %e, "webhook certificate not usable; retrying"),
            },
            Ok(None) => {}
            Err(e) => warn!(error = %e, "webhook certificate not loaded yet; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    tokio::spawn(keep_loaded(client, settings.certificate.clone(), tls.clone(), (cert, key)));
    // Reviews are read and judged off the runtime's workers, a few at a time: the port
    // is reachable from the pod network, and a flood of large reviews must not starve
    // the reconciles, the Lease or the probes.
    let slots = Arc::new(tokio::sync::Semaphore::new(REVIEWS_AT_ONCE));
    let app = Router::new().route(
        "/validate-modelrelease",
        post(move |body: Body| {
            let (views, slots) = (views.clone(), slots.clone());
            async move {
                let review = match tokio::time::timeout(REVIEW_DEADLINE, judged(views, slots, body)).await {
                    Ok(Some(review)) => review,
                    _ => {
                        let busy = "modelgate is too busy to review this request; retry";
                        serde_json::to_vec(&AdmissionResponse::invalid(busy).into_review()).unwrap_or_default()
                    }
                };
                ([(axum::http::header::CONTENT_TYPE, "application/json")], review)
            }
        }),
    );
    info!(address = %settings.address, "admission webhook serving");
    let handle = axum_server::Handle::<std::net::SocketAddr>::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        super::terminated().await;
        // In-flight reviews finish; the API server retries none, so none is cut.
        stopping.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls).handshake_timeout(REVIEW_DEADLINE);
    let mut server = axum_server::bind(settings.address)
        .acceptor(super::connections::Capped::new(acceptor, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE))
        // A connection that sends no whole request in time is closed.
        .first_request_timeout(REVIEW_DEADLINE)
        // HTTP/1.1 only, as the API server calls webhooks (no ALPN is offered): HTTP/2
        // spoken without asking would have no header or idle deadline.
        .http1_only();
    // Later requests' headers, and the idle time before them, are bounded too (hyper's
    // default; a client reusing a connection closed while idle retries, as Go's does).
    server.http_builder().http1().header_read_timeout(IDLE_CONNECTION);
    server
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .map_err(|e| Error::Certificate(format!("cannot listen on {}: {e}", settings.address)))
}

/// Looks at the certificate again every so often, and serves a new one once it may.
async fn keep_loaded(client: Client, certificate: Certificate, reloading: RustlsConfig, mut served: (String, String)) {
    // Often enough that a renewal (a third of the lifetime before expiry) is served
    // in time even for short lifetimes.
    let period = match &certificate {
        Certificate::Managed(place) => (place.lifetime / 12).clamp(Duration::from_secs(1), serving_cert::RELOAD),
        Certificate::Files { .. } => serving_cert::RELOAD,
    };
    loop {
        tokio::time::sleep(period).await;
        match load(&client, &certificate, false).await {
            Ok(Some(pair)) if pair != served => match serving_cert::server_config(&pair.0, &pair.1) {
                Ok(config) => {
                    reloading.reload_from_config(config);
                    info!("webhook certificate reloaded");
                    served = pair;
                }
                Err(e) => warn!(error = %e, "new webhook certificate not usable; serving the old one"),
            },
            Ok(_) => {}
            Err(e) => warn!(error = %e, "webhook certificate not checked; serving the one loaded"),
        }
    }
}

/// The certificate and key to serve now, as PEM; `None`: keep serving the one loaded (a
/// new one is not to be served yet: its CA may not be trusted everywhere). `first`: nothing
/// is served yet, so the newest is better than none.
async fn load(client: &Client, certificate: &Certificate, first: bool) -> Result<Option<(String, String)>, Error> {
    match certificate {
        Certificate::Managed(place) => {
            let now = Timestamp::now();
            let (pair, serve_after) = serving_cert::ensure(client, place, now).await?;
            Ok((first || now.as_second() >= serve_after).then_some((pair.cert, pair.key)))
        }
        Certificate::Files { cert, key } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).map_err(|e| Error::Certificate(format!("cannot read {}: {e}", p.display())))
            };
            Ok(Some((read(cert)?, read(key)?)))
        }
    }
}

//! Reconcile of one repository (a namespaced ModelRepository, or a ClusterModelRepository
//! through `cluster.rs`): refresh its TUF metadata from the newest trusted root, record
//! the anti-rollback floors in status and the root chain in a ConfigMap it owns, and say
//! what went wrong in conditions and Events.

use std::{fmt::Debug, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::ConfigMap, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{Context, Error, TrustCache};
use crate::{
    api::{ClusterModelRepository, FIELD_MANAGER, ModelRepository, ModelRepositorySpec, ModelRepositoryStatus},
    metrics::{ErrorLabels, Metrics},
    plan::repository::{self as plan, Failure, Refresh},
    readers::{pinned_root_and_ca, read_record, signature_check},
    trust::{
        Kept, Record, RefreshInput, SignatureCheck,
        state::{STATE_CHAIN_KEY, STATE_FLOORS_KEY, STATE_PIN_KEY, render_chain, render_floors, state_configmap},
    },
};

/// The two kinds of repository: the same spec and status, kept in different places.
pub trait Repository:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    fn source(&self) -> &ModelRepositorySpec;
    fn trust_status(&self) -> Option<&ModelRepositoryStatus>;
}

impl Repository for ModelRepository {
    fn source(&self) -> &ModelRepositorySpec {
        &self.spec
    }
    fn trust_status(&self) -> Option<&ModelRepositoryStatus> {
        self.status.as_ref()
    }
}

impl Repository for ClusterModelRepository {
    fn source(&self) -> &ModelRepositorySpec {
        &self.spec.repository
    }
    fn trust_status(&self) -> Option<&ModelRepositoryStatus> {
        self.status.as_ref()
    }
}

/// Where one repository's things are, and who it reports to.
pub struct Place<'a, K: Repository> {
    /// Standing by: refreshed into `trust` only, nothing written.
    pub role: super::Role,
    /// ConfigMaps of the pin, the CA bundle and the trust record.
    pub configmaps: Api<ConfigMap>,
    /// Name of the trust record's ConfigMap.
    pub record: String,
    /// Where its status is written.
    pub api: Api<K>,
    pub trust: &'a TrustCache<K>,
    pub recorder: &'a Recorder,
    pub metrics: &'a Metrics,
}

/// What a successful refresh verified, for those who copy it (cluster repositories).
pub struct Verified {
    pub pinned: Vec<u8>,
    pub ca_bundle: Option<Vec<u8>>,
    pub chain: String,
    pub floors: String,
}

#[instrument(skip_all, fields(repository = %repo.name_any(), namespace = repo.namespace().unwrap_or_default()))]
pub async fn reconcile(repo: Arc<ModelRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = repo.namespace().ok_or(Error::NoNamespace { kind: "ModelRepository" })?;
    forget_deleted(&ctx);
    let place = Place {
        role: ctx.role,
        configmaps: Api::namespaced(ctx.client.clone(), &ns),
        record: state_configmap(&repo.name_any()),
        api: Api::namespaced(ctx.client.clone(), &ns),
        trust: &ctx.trust,
        recorder: &ctx.recorder,
        metrics: &ctx.metrics,
    };
    refresh(&*repo, &place, |_| {}).await
}

/// Refreshes `repo` when due. `verified` is given what a refresh that trusted the
/// repository verified, after its record is written and before its status is.
pub async fn refresh<K: Repository>(
    repo: &K,
    place: &Place<'_, K>,
    verified: impl FnOnce(&Verified),
) -> Result<Action, Error> {
    let uid = repo.uid().ok_or(Error::NoUid { kind: "repository" })?;
    let interval = repo.source().refresh_interval();
    let now = Timestamp::now();
    // The leader's reconciles are what the metrics count; a standby's would double them.
    let _timer = (place.role == super::Role::Leading).then(|| place.metrics.timer("repository"));
    let trust = place.trust;
    if let Some(wait) = not_due(repo, place, &uid, interval, now) {
        // Between refreshes: the models releases started waiting for are resolved with
        // the session of the last refresh.
        trust.resolve_pending(&uid, now).await;
        return Ok(Action::requeue(until_next(trust, &uid, wait)));
    }

    // Observe, and verify from the pin.
    let observed = observe(repo, place).await?;
    let (refresh, kept) = verify(repo, trust, &uid, &observed, now).await;
    // Plan.
    let plan = plan::plan(repo.trust_status(), repo.meta().generation, &refresh, interval, now);
    if place.role == super::Role::StandingBy {
        trust.attempted_for(&uid, repo.meta().generation);
        // The leader writes and reports; this replica keeps what it verified (in `trust`),
        // for its admission webhook.
        return Ok(Action::requeue(until_next(trust, &uid, plan.refresh_in)));
    }
    // Write: the root chain first, so status never claims a root we lost.
    if let (Some(kept), Ok(Inputs { pinned, ca_bundle, .. })) = (&kept, observed.inputs) {
        let (chain, floors) = record_chain(repo, place, kept, observed.record.as_ref(), &plan.status).await?;
        verified(&Verified { pinned, ca_bundle, chain, floors });
    }
    if repo.trust_status() != Some(&plan.status) {
        let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": plan.status});
        place
            .api
            .patch_status(&repo.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| Error::Kube { action: "write the repository's status", source })?;
    }
    // Publish.
    for note in plan.notes {
        publish(place.recorder, repo, note).await;
    }
    Ok(Action::requeue(until_next(trust, &uid, plan.refresh_in)))
}

/// How long until the next refresh, when none is due now. A fresh status is only
/// enough while this process holds the verdict it records: after a restart (or on
/// taking the lease) every repository is refreshed at once, so no release waits a whole
/// interval for a verdict; a verdict whose metadata expired needs new metadata.
fn not_due<K: Repository>(
    repo: &K,
    place: &Place<'_, K>,
    uid: &str,
    interval: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let trust = place.trust;
    let expired = trust.next_expiry(uid).is_some_and(|at| at <= now);
    if !trust.has_verdict(uid) || expired {
        return None;
    }
    match place.role {
        super::Role::Leading => plan::next_refresh_in(repo.trust_status(), repo.meta().generation, interval, now),
        super::Role::StandingBy => {
            plan::standby_refresh_in(trust.attempted(uid, repo.meta().generation), interval, now)
        }
    }
}

/// What a refresh starts from, as read from the cluster.
struct Observed {
    /// The trust record as written last, if any (re-verified from the pin by every
    /// reader).
    record: Option<Record>,
    /// The pinned root, the CA bundle and how signatures are checked, or why they
    /// cannot be read.
    inputs: Result<Inputs, String>,
    /// The signer policy (`spec.provenance`) is what could not be read or used.
    signers_unusable: bool,
}

/// What the security team set for a repository, as read from its ConfigMaps.
struct Inputs {
    pinned: Vec<u8>,
    ca_bundle: Option<Vec<u8>>,
    signature: Option<SignatureCheck>,
}

async fn observe<K: Repository>(repo: &K, place: &Place<'_, K>) -> Result<Observed, Error> {
    let record = read_record(&place.configmaps, &place.record)
        .await
        .map_err(|source| Error::Kube { action: "read the trust state ConfigMap", source })?;
    let (inputs, signers_unusable) = match pinned_root_and_ca(&place.configmaps, repo.source()).await {
        Ok((pinned, ca_bundle)) => match signature_check(&place.configmaps, repo.source()).await {
            Ok(signature) => (Ok(Inputs { pinned, ca_bundle, signature }), false),
            Err(e) => (Err(e), true),
        },
        Err(e) => (Err(e), false),
    };
    Ok(Observed { record, inputs, signers_unusable })
}

/// Refreshes the metadata from the pin, the record and the floors in status: what it
/// trusted (and keeps for lookups), or why not.
async fn verify<K: Repository>(
    repo: &K,
    trust: &TrustCache<K>,
    uid: &str,
    observed: &Observed,
    now: Timestamp,
) -> (Refresh, Option<Kept>) {
    let Inputs { pinned, ca_bundle, signature } = match &observed.inputs {
        Ok(inputs) => inputs,
        Err(message) => {
            // Fail closed: what an earlier policy (or none) vouched for does not stand.
            if observed.signers_unusable {
                trust.hold(uid, message.clone());
            }
            return (Refresh::Failed { cause: Failure::Configuration, message: message.clone() }, None);
        }
    };
    let input = RefreshInput {
        metadata_url: &repo.source().metadata_url,
        targets_url: &repo.source().targets_url,
        signature: signature.clone(),
        pinned_root: pinned,
        record: observed.record.clone(),
        ca_bundle: ca_bundle.clone(),
        floors: plan::floors(repo.trust_status()),
        now,
        previous: None,
        recorded_pin: repo.trust_status().and_then(|s| s.pinned_root_sha256.clone()),
    };
    match trust.refresh(uid, input).await {
        Ok(kept) => {
            let refresh = Refresh::Trusted {
                trusted: kept.trusted.clone(),
                pin_sha256: kept.pin_sha256.clone(),
                reanchored: kept.reanchored,
            };
            (refresh, Some(kept))
        }
        Err(e) => (Refresh::Failed { cause: Failure::Trust(e.reason()), message: e.to_string() }, None),
    }
}

/// Writes the trust record (chain, pin digest, floors) when it changed; returns the
/// chain and floors as recorded.
async fn record_chain<K: Repository>(
    repo: &K,
    place: &Place<'_, K>,
    keep: &Kept,
    recorded: Option<&Record>,
    status: &ModelRepositoryStatus,
) -> Result<(String, String), Error> {
    let chain = render_chain(&keep.chain).unwrap_or_else(|| {
        warn!("the root chain is too large to record; pods walk the roots from the repository");
        "[]".into()
    });
    // Pods started later read today's floors from the record (they only raise theirs).
    let floors = render_floors(plan::floors(Some(status)));
    let none = Record::default();
    let recorded = recorded.unwrap_or(&none);
    let unchanged = recorded.pin_sha256.as_deref() == Some(keep.pin_sha256.as_str())
        && recorded.chain.as_deref() == Some(chain.as_str())
        && recorded.floors.as_deref() == Some(floors.as_str());
    if !unchanged {
        let owner = repo.controller_owner_ref(&()).ok_or(Error::NoUid { kind: "repository" })?;
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": place.record, "ownerReferences": [owner],
                         "labels": {"app.kubernetes.io/managed-by": "modelgate", "modelgate.dev/repository": repo.name_any()}},
            "data": {STATE_CHAIN_KEY: chain, STATE_PIN_KEY: keep.pin_sha256, STATE_FLOORS_KEY: floors},
        });
        place
            .configmaps
            .patch(&place.record, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm))
            .await
            .map_err(|source| Error::Kube { action: "record the trusted root chain", source })?;
    }
    Ok((chain, floors))
}

/// The next refresh, or sooner when a verdict's metadata expires before it (a delegated
/// role may expire long before the top-level metadata does).
fn until_next<K: Resource<DynamicType = ()>>(trust: &TrustCache<K>, uid: &str, refresh_in: Duration) -> Duration {
    let expiry = trust.next_expiry(uid).and_then(|at| {
        let left = at.duration_since(Timestamp::now());
        // A second past it, so the lookup then sees it expired.
        Duration::try_from(left).ok().map(|d| d + Duration::from_secs(1))
    });
    expiry.map_or(refresh_in, |d| d.min(refresh_in))
}

/// Drops the sessions of repositories that no longer exist.
fn forget_deleted(ctx: &Context) {
    if ctx.stores.ready() {
        ctx.trust.retain(&ctx.stores.repository_uids());
    }
}

async fn publish<K: Repository>(recorder: &Recorder, repo: &K, note: plan::Note) {
    let reason = note.reason.as_str();
    if note.warning {
        warn!(reason, message = %note.message, "repository event");
    } else {
        info!(reason, message = %note.message, "repository event");
    }
    let type_ = if note.warning { EventType::Warning } else { EventType::Normal };
    let event =
        Event { type_, reason: reason.into(), note: Some(note.message), action: "Refresh".into(), secondary: None };
    if let Err(e) = recorder.publish(&event, &repo.object_ref(&())).await {
        warn!(error = %e, "cannot publish event");
    }
}

/// Logs a failed reconcile and retries it; `metrics` counts it (the leader's only).
pub fn error_policy<K: Repository>(repo: Arc<K>, error: &Error, metrics: Option<&Metrics>) -> Action {
    if let Some(metrics) = metrics {
        metrics.errors.get_or_create(&ErrorLabels { controller: "repository", kind: error.metric_label() }).inc();
    }
    warn!(repository = %repo.name_any(), error = %error, kind = error.metric_label(), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

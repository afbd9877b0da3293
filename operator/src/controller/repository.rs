//! Reconcile of one ModelRepository: refresh its TUF metadata from the newest trusted
//! root, record the anti-rollback floors in status and the newest root in a ConfigMap
//! it owns, and say what went wrong in conditions and Events.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::ConfigMap, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{Context, Error};
use crate::{
    api::{FIELD_MANAGER, ModelRepository},
    metrics::ErrorLabels,
    plan::repository::{self as plan, Refresh, TRUSTED},
    readers::{pinned_root_and_ca, read_record},
    trust::{
        RefreshInput,
        state::{STATE_CHAIN_KEY, STATE_FLOORS_KEY, STATE_PIN_KEY, render_chain, render_floors, state_configmap},
    },
};

#[instrument(skip_all, fields(repository = %repo.name_any(), namespace = repo.namespace().unwrap_or_default()))]
pub async fn reconcile(repo: Arc<ModelRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = repo.namespace().ok_or(Error::NoNamespace { kind: "ModelRepository" })?;
    let name = repo.name_any();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = repo.uid().ok_or(Error::NoUid { kind: "ModelRepository" })?;
    let interval = repo.spec.refresh_interval();
    let now = Timestamp::now();
    let _timer = ctx.metrics.timer("repository");
    forget_deleted(&ctx);
    // A fresh status is only enough while this process holds the verdict it records:
    // after a restart (or on taking the lease) every repository is refreshed at once,
    // so no release waits a whole interval for a verdict.
    // A verdict whose metadata expired needs new metadata, not the same session again.
    let expired = ctx.trust.next_expiry(&uid).is_some_and(|at| at <= now);
    if ctx.trust.has_verdict(&uid)
        && !expired
        && let Some(wait) = plan::next_refresh_in(&repo, interval, now)
    {
        // Between refreshes: the models releases started waiting for are resolved with
        // the session of the last refresh.
        ctx.trust.resolve_pending(&uid, now).await;
        return Ok(Action::requeue(until_next(&ctx, &uid, wait)));
    }

    // Observe: the pinned root, the CA bundle, the recorded root chain, the floors.
    let record = read_record(&cms, &name)
        .await
        .map_err(|source| Error::Kube { action: "read the trust state ConfigMap", source })?;
    let inputs = pinned_root_and_ca(&cms, &repo).await;
    let floors = plan::floors(repo.status.as_ref());
    let recorded = record.clone().unwrap_or_default();
    let (refresh, keep) = match inputs {
        Err(message) => (Refresh::Failed { reason: "ConfigurationError".into(), message }, None),
        Ok((pinned, ca_bundle)) => {
            let input = RefreshInput {
                metadata_url: &repo.spec.metadata_url,
                pinned_root: &pinned,
                record,
                ca_bundle,
                floors,
                now,
                previous: None,
                recorded_pin: repo.status.as_ref().and_then(|s| s.pinned_root_sha256.clone()),
            };
            match ctx.trust.refresh(&uid, input).await {
                Ok(keep) => {
                    let refresh =
                        Refresh::Trusted { trusted: keep.trusted.clone(), pin_sha256: keep.pin_sha256.clone() };
                    (refresh, Some(keep))
                }
                Err(e) => (Refresh::Failed { reason: e.reason().into(), message: e.to_string() }, None),
            }
        }
    };

    // Plan.
    let status = plan::status(&repo, &refresh, now);
    // Act: record the root chain first, so status never claims a root we lost. The
    // record is re-verified from the pin by every reader; an unchanged one is not written.
    if let Some(keep) = &keep {
        if keep.reanchored {
            let message = format!(
                "spec.trustedRoot changed (now sha256 {}): the recorded root chain was set aside and trust re-verified \
                 from the new pin",
                crate::plan::short(&keep.pin_sha256)
            );
            warn!(%message, "trust re-anchored");
            publish(&ctx, &repo, EventType::Warning, "ReAnchored", message).await;
        }
        let chain = render_chain(&keep.chain).unwrap_or_else(|| {
            warn!("the root chain is too large to record; pods walk the roots from the repository");
            "[]".into()
        });
        // Pods started later read today's floors from the record (they only raise theirs).
        let floors = render_floors(plan::floors(Some(&status)));
        let unchanged = recorded.pin_sha256.as_deref() == Some(keep.pin_sha256.as_str())
            && recorded.chain.as_deref() == Some(chain.as_str())
            && recorded.floors.as_deref() == Some(floors.as_str());
        if !unchanged {
            let owner = repo.controller_owner_ref(&()).ok_or(Error::NoUid { kind: "ModelRepository" })?;
            let cm = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": state_configmap(&name), "ownerReferences": [owner],
                             "labels": {"app.kubernetes.io/managed-by": "modelgate", "modelgate.dev/repository": name}},
                "data": {STATE_CHAIN_KEY: chain, STATE_PIN_KEY: keep.pin_sha256, STATE_FLOORS_KEY: floors},
            });
            cms.patch(&state_configmap(&name), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm))
                .await
                .map_err(|source| Error::Kube { action: "record the trusted root chain", source })?;
        }
    }
    let was_trusted =
        repo.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == TRUSTED)).map(|c| c.status.clone());
    if repo.status.as_ref() != Some(&status) {
        let repos: Api<ModelRepository> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"apiVersion": ModelRepository::api_version(&()), "kind": ModelRepository::kind(&()), "status": status});
        repos
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| Error::Kube { action: "write the ModelRepository status", source })?;
    }
    match &refresh {
        Refresh::Trusted { trusted: t, .. } => {
            if was_trusted.as_deref() != Some("True") {
                info!(timestamp = t.timestamp.0, "repository trusted");
                publish(
                    &ctx,
                    &repo,
                    EventType::Normal,
                    "Trusted",
                    format!("verified root v{}, timestamp v{}", t.root.0, t.timestamp.0),
                )
                .await;
            }
        }
        Refresh::Failed { reason, message } => {
            warn!(%reason, %message, "repository not trusted");
            publish(&ctx, &repo, EventType::Warning, reason, message.clone()).await;
        }
    }
    // A failed refresh is tried again soon: releases behind it are untrusted meanwhile.
    let next = match &refresh {
        Refresh::Failed { .. } => interval.min(FAILED_RETRY),
        Refresh::Trusted { .. } => interval,
    };
    Ok(Action::requeue(until_next(&ctx, &uid, next)))
}

/// When a failed refresh is tried again, at the latest.
const FAILED_RETRY: Duration = Duration::from_secs(30);

/// The next refresh, or sooner when a verdict's metadata expires before it (a delegated
/// role may expire long before the top-level metadata does).
fn until_next(ctx: &Context, uid: &str, refresh_in: Duration) -> Duration {
    let expiry = ctx.trust.next_expiry(uid).and_then(|at| {
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

async fn publish(ctx: &Context, repo: &ModelRepository, type_: EventType, reason: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Refresh".into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&event, &repo.object_ref(&())).await {
        warn!(error = %e, "cannot publish event");
    }
}

pub fn error_policy(repo: Arc<ModelRepository>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.get_or_create(&ErrorLabels { controller: "repository", kind: error.metric_label() }).inc();
    warn!(repository = %repo.name_any(), error = %error, kind = error.metric_label(), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

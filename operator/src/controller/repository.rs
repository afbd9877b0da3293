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
    api::{ConfigMapSource, FIELD_MANAGER, ModelRepository, parse_duration},
    metrics::{ErrorLabels, RoleLabels},
    plan::repository::{self as plan, Refresh, TRUSTED},
    trust::RefreshInput,
};

/// Key of the newest trusted root in the trust-state ConfigMap.
pub const STATE_ROOT_KEY: &str = "root.json";

/// Name of the ConfigMap holding a repository's newest trusted root.
pub fn state_configmap(repository: &str) -> String {
    format!("{repository}-trust-state")
}

pub async fn read_source(cms: &Api<ConfigMap>, source: &ConfigMapSource, field: &str) -> Result<Vec<u8>, String> {
    let r = &source.config_map_ref;
    let cm = cms
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("cannot read ConfigMap {:?} for {field}: {e}", r.name))?
        .ok_or_else(|| format!("ConfigMap {:?} named by {field} does not exist", r.name))?;
    cm.data
        .and_then(|d| d.get(&r.key).cloned())
        .map(String::into_bytes)
        .ok_or_else(|| format!("ConfigMap {:?} has no key {:?} (named by {field})", r.name, r.key))
}

/// The newest trusted root kept in the repository's trust state, if any yet.
pub async fn persisted_root(cms: &Api<ConfigMap>, repository: &str) -> Result<Option<String>, kube::Error> {
    let state = cms.get_opt(&state_configmap(repository)).await?;
    Ok(state.and_then(|cm| cm.data).and_then(|mut d| d.remove(STATE_ROOT_KEY)))
}

/// The pinned root and the CA bundle a repository names; an error says which is missing.
pub async fn pinned_root_and_ca(
    cms: &Api<ConfigMap>,
    repo: &ModelRepository,
) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let pinned = read_source(cms, &repo.spec.trusted_root, "spec.trustedRoot").await?;
    let ca = match &repo.spec.ca_bundle {
        Some(src) => Some(read_source(cms, src, "spec.caBundle").await?),
        None => None,
    };
    Ok((pinned, ca))
}

#[instrument(skip_all, fields(repository = %repo.name_any(), namespace = repo.namespace().unwrap_or_default()))]
pub async fn reconcile(repo: Arc<ModelRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = repo.namespace().ok_or(Error::NoNamespace { kind: "ModelRepository" })?;
    let name = repo.name_any();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let interval = parse_duration(&repo.spec.refresh_interval).unwrap_or(Duration::from_secs(300));
    let now = Timestamp::now();
    let _timer = ctx.metrics.timer("repository");
    if let Some(wait) = plan::next_refresh_in(&repo, interval, now) {
        return Ok(Action::requeue(wait));
    }

    // Observe: the pinned root, the CA bundle, the persisted newest root, the floors.
    let persisted = persisted_root(&cms, &name)
        .await
        .map_err(|source| Error::Kube { action: "read the trust state ConfigMap", source })?;
    let inputs = pinned_root_and_ca(&cms, &repo).await;
    let floors = plan::floors(repo.status.as_ref());
    let (refresh, newest_root) = match inputs {
        Err(message) => (Refresh::Failed { reason: "ConfigurationError".into(), message }, None),
        Ok((pinned, ca_bundle)) => {
            let key = super::trust_cache::key(&ns, &name);
            let result = ctx
                .trust
                .refresh(
                    &key,
                    RefreshInput {
                        metadata_url: &repo.spec.metadata_url,
                        pinned_root: &pinned,
                        persisted_root: persisted.as_deref().map(str::as_bytes),
                        ca_bundle,
                        floors,
                        now,
                    },
                )
                .await;
            match result {
                Ok((trusted, root)) => (Refresh::Trusted(trusted), Some(root)),
                Err(e) => (Refresh::Failed { reason: e.reason().into(), message: e.to_string() }, None),
            }
        }
    };

    // Plan.
    let status = plan::status(&repo, &refresh, now);
    for (role, state) in [
        ("root", &status.root),
        ("timestamp", &status.timestamp),
        ("snapshot", &status.snapshot),
        ("targets", &status.targets),
    ] {
        let Some(state) = state else { continue };
        let labels = RoleLabels { namespace: ns.clone(), repository: name.clone(), role };
        ctx.metrics.floor_version.get_or_create(&labels).set(state.version);
        if let Some(expires) = &state.expires {
            ctx.metrics.expiry_seconds.get_or_create(&labels).set(expires.0.as_second());
        }
    }

    // Act: persist the newest root first, so status never claims a root we lost.
    if let Some(root) = newest_root
        && persisted.as_deref().map(str::as_bytes) != Some(root.as_slice())
    {
        let owner = repo.controller_owner_ref(&()).expect("a stored object has a UID");
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": state_configmap(&name), "ownerReferences": [owner],
                         "labels": {"app.kubernetes.io/managed-by": "modelgate", "modelgate.dev/repository": name}},
            "data": {STATE_ROOT_KEY: String::from_utf8_lossy(&root)},
        });
        cms.patch(&state_configmap(&name), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm))
            .await
            .map_err(|source| Error::Kube { action: "persist the newest trusted root", source })?;
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
        Refresh::Trusted(t) => {
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
    Ok(Action::requeue(interval))
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

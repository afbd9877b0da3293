//! Reconcile of one ModelRelease: observe, plan, act.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use super::{Context, Error};
use crate::{
    api::{FIELD_MANAGER, ModelRelease, ModelRepository},
    plan,
};

/// Periodic re-check even without events, so drift is noticed.
const RESYNC: Duration = Duration::from_secs(300);

#[instrument(skip_all, fields(release = %release.name_any(), namespace = release.namespace().unwrap_or_default(), generation = release.metadata.generation))]
pub async fn reconcile(release: Arc<ModelRelease>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = release.namespace().ok_or(Error::NoNamespace { kind: "ModelRelease" })?;

    // Observe.
    let repositories: Api<ModelRepository> = Api::namespaced(ctx.client.clone(), &ns);
    let repository = repositories
        .get_opt(&release.spec.repository_ref.name)
        .await
        .map_err(|source| Error::Kube { action: "read the ModelRepository", source })?;
    let observed = plan::Observed { repository_found: repository.is_some() };

    // Plan.
    let status = plan::status(&release, &observed, Timestamp::now());

    // Act: write only what changed, so a quiet release causes no API traffic.
    if release.status.as_ref() != Some(&status) {
        let releases: Api<ModelRelease> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({
            "apiVersion": ModelRelease::api_version(&()),
            "kind": ModelRelease::kind(&()),
            "status": status,
        });
        releases
            .patch_status(&release.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| Error::Kube { action: "write the ModelRelease status", source })?;
        info!(phase = ?status.phase, accepted = observed.repository_found, "status updated");
    } else {
        debug!("status unchanged");
    }
    Ok(Action::requeue(RESYNC))
}

pub fn error_policy(release: Arc<ModelRelease>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(release = %release.name_any(), error = %error, kind = error.metric_label(), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

//! Reconcile of one ModelRelease: observe (repository, trust verdicts, workloads, pods,
//! gates), plan (pure), act: status first, then workloads, then events.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::ReplicaSet,
        core::v1::{ConfigMap, Pod, Service},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
        reflector::ObjectRef,
    },
};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use super::{
    Context, Error,
    cache::{CachedPod, CachedReplicaSet},
    gate_runner,
};
use crate::{
    api::{
        ANNOTATION_ABORT, ANNOTATION_DROP_WARM, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL, ANNOTATION_RETRY,
        ANNOTATION_ROLLBACK, ANNOTATION_TEMPLATE_SHA256, ClusterModelRepository, FIELD_MANAGER, LABEL_HASH,
        LABEL_REVISION, LABEL_ROLE, LABEL_SERVING, ModelRef, ModelRelease, ModelRepository, RepositoryKind,
    },
    gates,
    metrics::{ErrorLabels, Metrics, ReasonLabel, ResultLabel},
    plan::{self, Commands, Observed, Workload, policy},
    workload,
};

/// When to look again after a status write lost a race (the watch usually wakes the
/// release before this).
const STALE_RETRY: Duration = Duration::from_secs(1);

#[instrument(skip_all, fields(release = %release.name_any(), namespace = release.namespace().unwrap_or_default(), generation = release.metadata.generation))]
pub async fn reconcile(release: Arc<ModelRelease>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = release.namespace().ok_or(Error::NoNamespace { kind: "ModelRelease" })?;
    let now = plan::truncate(Timestamp::now());
    let _timer = ctx.metrics.timer("release");
    let cluster_kind = release.spec.repository_ref.kind == RepositoryKind::ClusterModelRepository;
    if !ctx.stores.ready() || (cluster_kind && !ctx.cluster.ready()) {
        debug!("waiting for the pod and ReplicaSet caches to fill");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if stale(&ctx, &release) {
        // Woken by a pod or ReplicaSet before the watch delivered our own status write:
        // planning now would only be refused (409). The write's event wakes it again.
        debug!("the cached release is older than this process's last decision; waiting for the newer one");
        return Ok(Action::requeue(STALE_RETRY));
    }
    let mut seen = observe(&ctx, &release, &ns, now).await?;
    let plan = plan::plan(&release, &seen.observed, now);
    // Status first: it is the record of the decision, so a restart between the writes
    // resumes from the decision instead of making it again differently.
    if !write_status(&ctx, &release, &ns, &plan, &mut seen).await? {
        return Ok(Action::requeue(STALE_RETRY));
    }
    let acted = act(&ctx, &release, &ns, &plan, &seen).await;
    // The Events report the written decisions, whether or not acting on them failed
    // (a name someone else took fails every retry, and its Event must still be seen).
    publish(&ctx, &release, plan.events).await;
    acted?;
    debug!(requeue_s = plan.requeue.as_secs(), "reconciled");
    Ok(Action::requeue(plan.requeue))
}

/// What one reconcile saw: the planner's input, and the objects acting on its plan needs.
struct Seen {
    observed: Observed,
    repository: Option<Source>,
    replica_sets: Vec<CachedReplicaSet>,
    pods: Vec<CachedPod>,
    /// The Service the spec asks for, and whether it is in place as it should be.
    service: Option<serde_json::Value>,
    service_in_place: bool,
    /// Gate results taken from the runner: put back if the decision is refused.
    finished: Option<gate_runner::Finished>,
}

/// Reads the caches (and, only when the Service is not in place, the API server).
async fn observe(ctx: &Arc<Context>, release: &ModelRelease, ns: &str, now: Timestamp) -> Result<Seen, Error> {
    let name = release.name_any();
    let (found, repository) = repository_of(ctx, release, ns);
    let verdicts = match &repository {
        Some(source) if matches!(found, plan::Repository::Found { .. }) => verdicts(ctx, release, ns, source, now),
        _ => BTreeMap::new(),
    };
    let Owned { replica_sets, foreign, workloads, changed, pods, health } = owned(ctx, release, ns);
    let finished = observe_gates(ctx, release, ns, now);
    let refusal = {
        let found = plan::template_refusals(release, ns, &ctx.pod_policy);
        (!found.is_empty()).then(|| found.join("; "))
    };
    // A Service in place as it should be is left alone (no request); otherwise the name
    // is checked before it is written.
    let service = workload::service(release);
    let service_in_place = service.as_ref().is_some_and(|want| {
        ctx.stores.service(ns, &name).is_some_and(|have| workload::service_matches(release, &have, want))
    });
    let service_conflict = match &service {
        Some(_) if !service_in_place => service_conflict(ctx, release, ns).await?,
        _ => None,
    };
    let annotation = |k: &str| release.annotations().get(k).cloned();
    let commands = Commands {
        promote: annotation(ANNOTATION_PROMOTE),
        promote_full: annotation(ANNOTATION_PROMOTE_FULL),
        retry: annotation(ANNOTATION_RETRY),
        abort: annotation(ANNOTATION_ABORT),
        rollback: annotation(ANNOTATION_ROLLBACK),
        drop_warm: annotation(ANNOTATION_DROP_WARM),
    };
    let observed = Observed {
        repository: found,
        verdicts,
        workloads,
        pods: health,
        gates: finished.as_ref().map(|f| f.outcomes.clone()).unwrap_or_default(),
        gates_started: finished.as_ref().map(|f| f.started),
        analysis: finished.as_ref().and_then(|f| f.analysis.clone()),
        commands,
        refusal,
        service_conflict,
        foreign,
        changed,
    };
    Ok(Seen { observed, repository, replica_sets, pods, service, service_in_place, finished })
}

/// The repository a release names as this scope finds it: what the planner calls that,
/// and the repository itself when there is one.
pub(super) fn repository_of(ctx: &Context, release: &ModelRelease, ns: &str) -> (plan::Repository, Option<Source>) {
    let repo_ref = &release.spec.repository_ref;
    let repository = match repo_ref.kind {
        RepositoryKind::ModelRepository => ctx.stores.repository(ns, &repo_ref.name).map(Source::Namespaced),
        RepositoryKind::ClusterModelRepository => ctx.cluster.repository(&repo_ref.name).map(Source::Cluster),
    };
    let found = match &repository {
        _ if repo_ref.kind == RepositoryKind::ClusterModelRepository && !ctx.cluster.enabled() => {
            plan::Repository::ClusterDisabled
        }
        None => plan::Repository::Missing,
        Some(Source::Namespaced(_)) if !ctx.namespaced_repositories => plan::Repository::NamespacedDisabled,
        Some(Source::Namespaced(_)) => plan::Repository::Found { on_revocation: None },
        Some(Source::Cluster(c)) => plan::Repository::Found { on_revocation: Some(c.spec.policy.on_revocation) },
    };
    (found, repository)
}

/// The repository a release names, of either kind.
pub(super) enum Source {
    Namespaced(Arc<ModelRepository>),
    Cluster(Arc<ClusterModelRepository>),
}

impl Source {
    fn status(&self) -> Option<&crate::api::ModelRepositoryStatus> {
        match self {
            Source::Namespaced(r) => r.status.as_ref(),
            Source::Cluster(r) => r.status.as_ref(),
        }
    }

    /// A verdict held to the registries this repository allows image models from.
    fn within_registries(&self, verdict: plan::Verdict) -> plan::Verdict {
        let (kind_and_name, images) = match self {
            Source::Namespaced(r) => (format!("ModelRepository {:?}", r.name_any()), r.spec.images.as_ref()),
            Source::Cluster(r) => {
                (format!("ClusterModelRepository {:?}", r.name_any()), r.spec.repository.images.as_ref())
            }
        };
        policy::within_registries(&kind_and_name, images, verdict)
    }
}

/// What the repository says of every model the release may need. Verdicts already
/// loaded: no network here (the repository's reconcile resolves). A model a cluster
/// repository's policy does not allow this namespace is not even asked about.
fn verdicts(
    ctx: &Context,
    release: &ModelRelease,
    ns: &str,
    source: &Source,
    now: Timestamp,
) -> BTreeMap<ModelRef, plan::Verdict> {
    let me = ObjectRef::new(&release.name_any()).within(ns);
    let models = plan::models_to_verify(release);
    let verdicts = match source {
        Source::Namespaced(repo) => looked_up(&ctx.trust, repo, &me, models, now),
        Source::Cluster(repo) => {
            let labels = ctx.cluster.labels(ns);
            let namespace = policy::Namespace { name: ns, labels: labels.as_ref() };
            let (allowed, refused): (Vec<_>, Vec<_>) = models
                .into_iter()
                .map(|model| {
                    let allowed = policy::allows(&repo.name_any(), &repo.spec.policy, &namespace, &model);
                    (model, allowed)
                })
                .partition(|(_, allowed)| allowed.is_ok());
            let allowed = allowed.into_iter().map(|(model, _)| model).collect();
            let mut verdicts = looked_up(&ctx.cluster.trust, repo, &me, allowed, now);
            for (model, refusal) in refused {
                let message = refusal.err().unwrap_or_default();
                verdicts
                    .insert(model, plan::Verdict::Untrusted { reason: plan::Untrusted::NotAllowedByPolicy, message });
            }
            verdicts
        }
    };
    verdicts.into_iter().map(|(model, verdict)| (model, source.within_registries(verdict))).collect()
}

/// What the repository says now of the spec's model alone, for an admission review:
/// read only (`TrustCache::peek`), a cluster repository's policy applied first.
pub(super) fn spec_verdict(
    ctx: &Context,
    release: &ModelRelease,
    ns: &str,
    source: &Source,
    now: Timestamp,
) -> plan::Verdict {
    let model = release.spec.model.model();
    let key = model.key();
    let verdict = match source {
        Source::Namespaced(repo) => peeked(&ctx.trust, repo, &key, now),
        Source::Cluster(repo) => {
            let labels = ctx.cluster.labels(ns);
            let namespace = policy::Namespace { name: ns, labels: labels.as_ref() };
            if let Err(message) = policy::allows(&repo.name_any(), &repo.spec.policy, &namespace, &model) {
                return plan::Verdict::Untrusted { reason: plan::Untrusted::NotAllowedByPolicy, message };
            }
            peeked(&ctx.cluster.trust, repo, &key, now)
        }
    };
    source.within_registries(verdict)
}

/// What `trust` says now of `key` in `repo`, read only (`TrustCache::peek`).
fn peeked<K: kube::Resource<DynamicType = ()>>(
    trust: &super::TrustCache<K>,
    repo: &K,
    key: &str,
    now: Timestamp,
) -> plan::Verdict {
    match repo.uid() {
        Some(uid) => trust.peek(&ObjectRef::from_obj(repo), &uid, key, now),
        None => plan::Verdict::Unknown { message: "the repository is not stored yet".into() },
    }
}

/// The verdicts `trust` holds on `models` for release `me`, which asks about exactly
/// those.
fn looked_up<K: kube::Resource<DynamicType = ()>>(
    trust: &super::TrustCache<K>,
    repo: &K,
    me: &ObjectRef<ModelRelease>,
    models: Vec<ModelRef>,
    now: Timestamp,
) -> BTreeMap<ModelRef, plan::Verdict> {
    let Some(uid) = repo.uid() else { return BTreeMap::new() };
    let repo_ref = ObjectRef::from_obj(repo);
    // The cache keeps models by `ModelRef::key` (what its wake-ups and resolutions share).
    let keys: Vec<String> = models.iter().map(ModelRef::key).collect();
    trust.asked(&uid, me, &keys);
    models.into_iter().zip(keys).map(|(model, key)| (model, trust.lookup(&repo_ref, &uid, me, &key, now))).collect()
}

/// Writes the plan's status if it changed. `false`: the release changed since it was
/// read, so nothing was decided and nothing may be acted on.
///
/// The write is a compare-and-swap: the patch carries the resourceVersion the plan was
/// made from, so a decision made on a stale view (a cache behind the API server, or a
/// second operator during a shard hand-over: docs/operations.md) is refused with 409
/// instead of overwriting a newer one. Each decision is made once.
async fn write_status(
    ctx: &Context,
    release: &ModelRelease,
    ns: &str,
    plan: &plan::Plan,
    seen: &mut Seen,
) -> Result<bool, Error> {
    if release.status.as_ref() == Some(&plan.status) {
        debug!("status unchanged");
        return Ok(true);
    }
    let releases: Api<ModelRelease> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": ModelRelease::api_version(&()),
        "kind": ModelRelease::kind(&()),
        "metadata": { "resourceVersion": release.resource_version() },
        "status": plan.status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match releases.patch_status(&release.name_any(), &params, &Patch::Apply(&patch)).await {
        Ok(written) => {
            // Marked only when the write made a new version: a no-op apply (the server
            // already held it) must not leave the release waiting for an event that
            // never comes.
            if let (Some(uid), Some(version)) = (release.uid(), release.resource_version())
                && written.resource_version().as_ref() != Some(&version)
                && let Ok(mut marks) = ctx.written.lock()
            {
                marks.insert(uid, version);
            }
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // The newer version is on its way through the watch, and wakes this release
            // again; the gate results go back for the plan made from it.
            debug!("status changed since it was read; planning again from the newer version");
            ctx.metrics.stale_writes.inc();
            if let (Some(uid), Some(finished)) = (release.uid(), seen.finished.take()) {
                ctx.gates.put_back(&uid, finished);
            }
            return Ok(false);
        }
        Err(source) => return Err(Error::Kube { action: "write the ModelRelease status", source }),
    }
    record(&ctx.metrics, &seen.observed, plan);
    let old_phase = release.status.as_ref().and_then(|s| s.phase);
    if old_phase != plan.status.phase {
        info!(from = ?old_phase, to = ?plan.status.phase, message = plan.status.message.as_deref().unwrap_or(""), "phase changed");
    }
    Ok(true)
}

/// Makes the workloads, serving labels and Service what the written plan says.
async fn act(ctx: &Context, release: &ModelRelease, ns: &str, plan: &plan::Plan, seen: &Seen) -> Result<(), Error> {
    let name = release.name_any();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let desired = plan::desired_hash(release);

    for (hash, replicas) in &plan.scale {
        match seen.replica_sets.iter().find(|rs| rs.labels().get(LABEL_HASH) == Some(hash)) {
            Some(rs) if rs.replicas == Some(*replicas) => {}
            Some(rs) => {
                let scale = json!({"spec": {"replicas": replicas}});
                let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                rs_api
                    .patch_scale(&rs.name_any(), &params, &Patch::Merge(&scale))
                    .await
                    .map_err(|source| Error::Kube { action: "scale a revision's ReplicaSet", source })?;
                debug!(replicaset = %rs.name_any(), replicas, "scaled");
            }
            None if *hash == desired => {
                // Its pods read a cluster repository's trust material from a copy in
                // this namespace: none is made before the copy is.
                if let Some(Source::Cluster(repo)) = &seen.repository
                    && !super::cluster::copy_trust(&ctx.client, &ctx.cluster, ns, repo).await?
                {
                    return Err(Error::TrustNotCopied { repository: repo.name_any() });
                }
                create_workload(ctx, release, &rs_api, plan, seen, hash, *replicas).await?;
            }
            None if plan::baseline_of(hash).is_some() => {
                // Not a reason to stop acting: the rollout's own workloads, labels and
                // Service matter more; the judge waits, and the deadline says why.
                if let Err(e) = create_baseline(release, &rs_api, hash, *replicas).await {
                    warn!(error = %e, "baseline pods not started; retried at the next look");
                }
            }
            None => warn!(hash, "the workload of an earlier revision is gone; it cannot be scaled"),
        }
    }
    record_templates(&rs_api, &seen.replica_sets).await?;
    if let Some(hash) = &plan.restore {
        // Not a reason to stop acting: serving labels, the Service and pruning follow.
        if let Err(e) = restore_template(ctx, release, &rs_api, plan, seen, hash).await {
            warn!(error = %e, "the changed pod template was not put back; retried at the next look");
        }
    }
    pod_labels(ctx, ns, &seen.replica_sets, &seen.pods, plan).await?;
    let service = seen.service.as_ref().filter(|_| !seen.service_in_place && seen.observed.service_conflict.is_none());
    if let Some(svc) = service {
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        services
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(svc))
            .await
            .map_err(|source| Error::Kube { action: "apply the release's Service", source })?;
    }
    for hash in &plan.prune {
        match rs_api.delete(&workload::name(&name, hash), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(Error::Kube { action: "delete an old revision's ReplicaSet", source }),
        }
    }
    // Last, so a copy that cannot be written (a tenant made one of that name immutable)
    // never holds back a scale-down: pods started later read today's floors from it.
    if let Some(Source::Cluster(repo)) = &seen.repository
        && !plan.scale.is_empty()
    {
        super::cluster::copy_trust(&ctx.client, &ctx.cluster, ns, repo).await?;
    }
    Ok(())
}

/// Creates the workload of the spec's revision, from the digests the plan verified, and
/// records its template as the API server holds it.
async fn create_workload(
    ctx: &Context,
    release: &ModelRelease,
    rs_api: &Api<ReplicaSet>,
    plan: &plan::Plan,
    seen: &Seen,
    hash: &str,
    replicas: i32,
) -> Result<(), Error> {
    let Some(rs) = render(ctx, release, plan, seen, hash, replicas).await? else { return Ok(()) };
    create_owned(release, rs_api, &rs).await?;
    info!(hash, replicas, "revision workload created");
    Ok(())
}

/// Creates a ReplicaSet the release controls, and records its template as the API server
/// holds it. One of that name already there must be the release's (the cache has not
/// seen it yet), else its name is taken.
async fn create_owned(release: &ModelRelease, rs_api: &Api<ReplicaSet>, rs: &ReplicaSet) -> Result<(), Error> {
    // A create, not an apply: an apply would merge into a ReplicaSet of that name that
    // someone else made (their extra containers kept) and adopt it.
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match rs_api.create(&params, rs).await {
        Ok(made) => record_template(rs_api, &made).await,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let name = rs.name_any();
            let existing = rs_api
                .get_opt(&name)
                .await
                .map_err(|source| Error::Kube { action: "read a revision's ReplicaSet", source })?;
            if existing.is_some_and(|rs| controlled_by(&rs, release)) {
                Ok(())
            } else {
                Err(Error::NameTaken { kind: "ReplicaSet", name })
            }
        }
        Err(source) => Err(Error::Kube { action: "create a revision's ReplicaSet", source }),
    }
}

fn controlled_by(rs: &ReplicaSet, release: &ModelRelease) -> bool {
    rs.owner_references().iter().any(|o| o.controller == Some(true) && Some(&o.uid) == release.uid().as_ref())
}

/// Starts the baseline pods of workload key `key`: the stable revision's ReplicaSet
/// copied, as the API server holds it (the cache keeps no template), only when the
/// release controls it and its template is still the one modelgate made (else the
/// baseline would run what someone else put there: it is not started, and the judge
/// waits; `WorkloadChanged` says why).
async fn create_baseline(
    release: &ModelRelease,
    rs_api: &Api<ReplicaSet>,
    key: &str,
    replicas: i32,
) -> Result<(), Error> {
    let Some(stable_hash) = plan::baseline_of(key) else { return Ok(()) };
    let name = workload::name(&release.name_any(), stable_hash);
    let stable = rs_api
        .get_opt(&name)
        .await
        .map_err(|source| Error::Kube { action: "read the stable revision's ReplicaSet", source })?;
    let Some(stable) = stable.filter(|rs| controlled_by(rs, release)) else {
        warn!(replicaset = %name, "no stable ReplicaSet of this release to copy; baseline not started");
        return Ok(());
    };
    let recorded = stable.annotations().get(ANNOTATION_TEMPLATE_SHA256).cloned();
    if recorded.is_none() || recorded != stable.spec.template.as_ref().map(workload::template_sha256) {
        warn!(replicaset = %name, "the stable revision's template is not the one modelgate made; baseline not started");
        return Ok(());
    }
    let Some(baseline) = workload::baseline(&stable, key, replicas) else { return Ok(()) };
    create_owned(release, rs_api, &baseline).await?;
    info!(key, replicas, "baseline workload created");
    Ok(())
}

/// The spec's revision's ReplicaSet, rendered from the release as the API server has it
/// now and the trust this process holds; `None` when there is nothing to render yet (no
/// verdict, no pin) or the spec moved on since the plan (the next look sees it).
async fn render(
    ctx: &Context,
    release: &ModelRelease,
    plan: &plan::Plan,
    seen: &Seen,
    hash: &str,
    replicas: i32,
) -> Result<Option<ReplicaSet>, Error> {
    let Some(repository) = &seen.repository else { return Ok(None) };
    let Some(revision) = plan::verified_revision(&plan.status, hash) else { return Ok(None) };
    // The pod starts from what this process trusts now, which may be ahead of the
    // floors the repository's status shows yet.
    let recorded = crate::plan::repository::floors(repository.status());
    let repo_name = &release.spec.repository_ref.name;
    let (trust, floors) = match repository {
        Source::Namespaced(repo) => (
            workload::TrustFiles::namespaced(repo_name, &repo.spec),
            repo.uid().map_or(recorded, |uid| ctx.trust.floors(&uid, recorded)),
        ),
        Source::Cluster(repo) => {
            // The pin the operator verified; before any, there is no verdict to deploy on.
            let Some(pin) = repo.status.as_ref().and_then(|s| s.pinned_root_sha256.clone()) else { return Ok(None) };
            (
                workload::TrustFiles::cluster(repo_name, &repo.spec.repository, &pin),
                repo.uid().map_or(recorded, |uid| ctx.cluster.trust.floors(&uid, recorded)),
            )
        }
    };
    // The cache keeps no pod template: read the release for it, and render only the
    // revision the plan is about (the spec may have changed since; the next look sees it).
    let releases: Api<ModelRelease> = Api::namespaced(ctx.client.clone(), &release.namespace().unwrap_or_default());
    let fresh = releases
        .get(&release.name_any())
        .await
        .map_err(|source| Error::Kube { action: "read the release's pod template", source })?;
    if fresh.uid() != release.uid() || plan::revision_hash(&fresh.spec) != hash {
        debug!(hash, "the spec changed since the plan; its workload waits for the next look");
        return Ok(None);
    }
    match workload::replica_set(&fresh, &trust, &revision, replicas, &ctx.fetch_image, &ctx.pod_policy, floors) {
        Ok(rs) => serde_json::from_value(rs).map(Some).map_err(|e| Error::Render(e.to_string())),
        Err(refused) => {
            // The planner refuses such a spec before it gets here; a policy that
            // changed under a running revision lands here instead.
            warn!(%refused, "the revision's pods are refused; its workload is not rendered");
            Ok(None)
        }
    }
}

/// Puts back the spec's revision's pod template when someone else changed it: rendered
/// again and written over the template alone (a JSON patch, so fields this build does not
/// know survive, and only if the ReplicaSet is still the one seen), keeping its serving
/// label, then recorded. Only the ReplicaSet of the revision's own name. Pods already
/// made from the changed template are not touched (the condition says so): a template
/// can change for reasons of the cluster's own (an upgrade's new defaults), and deleting
/// every serving pod on that would be an outage.
async fn restore_template(
    ctx: &Context,
    release: &ModelRelease,
    rs_api: &Api<ReplicaSet>,
    plan: &plan::Plan,
    seen: &Seen,
    hash: &str,
) -> Result<(), Error> {
    let name = workload::name(&release.name_any(), hash);
    let Some(rs) = seen.replica_sets.iter().find(|rs| rs.name_any() == name) else { return Ok(()) };
    let Some(rendered) = render(ctx, release, plan, seen, hash, rs.replicas.unwrap_or(0)).await? else { return Ok(()) };
    let Some(mut template) = rendered.spec.template else { return Ok(()) };
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        if let Some(serving) = &rs.serving {
            labels.insert(LABEL_SERVING.into(), serving.clone());
        }
        labels.insert(LABEL_ROLE.into(), plan::role_of(&plan.status, hash).as_str().into());
    }
    let patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rs.resource_version()},
        {"op": "replace", "path": "/spec/template", "value": template},
    ]))
    .map_err(|e| Error::Render(e.to_string()))?;
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let put = rs_api
        .patch(&name, &params, &Patch::<()>::Json(patch))
        .await
        .map_err(|source| Error::Kube { action: "put back a revision's pod template", source })?;
    record_template(rs_api, &put).await?;
    warn!(replicaset = %name, "someone else changed the pod template of the spec's revision; put back");
    Ok(())
}

/// Records a ReplicaSet's template as the API server holds it (`ANNOTATION_TEMPLATE_SHA256`).
async fn record_template(rs_api: &Api<ReplicaSet>, rs: &ReplicaSet) -> Result<(), Error> {
    let Some(template) = rs.spec.template.as_ref() else { return Ok(()) };
    let sha256 = workload::template_sha256(template);
    write_record(rs_api, &rs.name_any(), &sha256).await
}

/// Records the templates of the release's ReplicaSets that carry no record yet (made by
/// an earlier version of modelgate, or its record not written): as they are now.
async fn record_templates(rs_api: &Api<ReplicaSet>, replica_sets: &[CachedReplicaSet]) -> Result<(), Error> {
    for rs in replica_sets.iter().filter(|rs| rs.recorded_sha256.is_none()) {
        if let Some(sha256) = &rs.template_sha256 {
            write_record(rs_api, &rs.name_any(), sha256).await?;
        }
    }
    Ok(())
}

async fn write_record(rs_api: &Api<ReplicaSet>, name: &str, sha256: &str) -> Result<(), Error> {
    let patch = json!({"metadata": {"annotations": {ANNOTATION_TEMPLATE_SHA256: sha256}}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match rs_api.patch(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing to record.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube { action: "record a revision's pod template", source }),
    }
}

/// Publishes the plan's Events (after its status is written: they report decisions).
async fn publish(ctx: &Context, release: &ModelRelease, notes: Vec<plan::Note>) {
    // A fresh recorder: a shared one merges events of the same reason into a series that
    // keeps the first message, so "Promoted" for revision 3 would read as revision 2's.
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    for note in notes {
        let event = Event {
            type_: if note.warning { EventType::Warning } else { EventType::Normal },
            reason: note.reason.as_str().into(),
            note: Some(note.message),
            action: "Rollout".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &release.object_ref(&())).await {
            warn!(error = %e, "cannot publish event");
        }
    }
}

/// Puts each revision's pods in or out of service (`modelgate.dev/serving`) and gives
/// them their role (`modelgate.dev/role`: canary, baseline, stable; the judge's queries
/// select on it). Warm pods stay Ready with their model loaded, but no Service that
/// selects the serving label sends them requests. The ReplicaSet's template carries the
/// labels too, so a pod it replaces is born on the right side. Going into service, pods
/// first (that is the rollback that must be fast); going out, the template first (no
/// pod is born serving afterwards).
async fn pod_labels(
    ctx: &Context,
    ns: &str,
    replica_sets: &[CachedReplicaSet],
    pods: &[CachedPod],
    plan: &plan::Plan,
) -> Result<(), Error> {
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    for rs in replica_sets {
        let Some(hash) = rs.labels().get(LABEL_HASH) else { continue };
        let serving = if plan.idle.contains(hash) { "false" } else { "true" };
        let role = plan::role_of(&plan.status, hash).as_str();
        let labelled = |labels: Option<&BTreeMap<String, String>>| {
            labels.is_some_and(|l| {
                l.get(LABEL_SERVING).map(String::as_str) == Some(serving)
                    && l.get(LABEL_ROLE).map(String::as_str) == Some(role)
            })
        };
        let template_ok = rs.serving.as_deref() == Some(serving) && rs.role.as_deref() == Some(role);
        let labels = json!({LABEL_SERVING: serving, LABEL_ROLE: role});
        let patch = json!({"metadata": {"labels": labels}});
        let pods: Vec<&CachedPod> = pods
            .iter()
            .filter(|p| p.labels().get(LABEL_HASH) == Some(hash) && !labelled(p.metadata.labels.as_ref()))
            .collect();
        let template_patch = json!({"spec": {"template": {"metadata": {"labels": labels}}}});
        if !template_ok && serving == "false" {
            rs_api
                .patch(&rs.name_any(), &params, &Patch::Merge(&template_patch))
                .await
                .map_err(|source| Error::Kube { action: "label a revision's pod template", source })?;
        }
        for pod in &pods {
            match pods_api.patch(&pod.name_any(), &params, &Patch::Merge(&patch)).await {
                Ok(_) => {}
                // Deleted meanwhile: nothing to label.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => return Err(Error::Kube { action: "label a revision's pods", source }),
            }
        }
        if !template_ok && serving == "true" {
            rs_api
                .patch(&rs.name_any(), &params, &Patch::Merge(&template_patch))
                .await
                .map_err(|source| Error::Kube { action: "label a revision's pod template", source })?;
        }
        if !pods.is_empty() {
            debug!(hash = %hash, serving, role, pods = pods.len(), "pods labelled");
        }
    }
    Ok(())
}

/// Whether the cached release is the very version this process already decided on.
fn stale(ctx: &Context, release: &ModelRelease) -> bool {
    let (Some(uid), Some(version)) = (release.uid(), release.resource_version()) else { return false };
    ctx.written.lock().is_ok_and(|w| w.get(&uid) == Some(&version))
}

/// Counts what a plan decided, once its status is written (a decision refused as stale
/// is not counted).
fn record(metrics: &Metrics, observed: &Observed, plan: &plan::Plan) {
    for o in &observed.gates {
        metrics.gate_evaluations.get_or_create(&ResultLabel { result: o.result.as_str().into() }).inc();
    }
    for note in &plan.events {
        let family = match note.reason {
            plan::EventReason::RolledBack => &metrics.rollbacks,
            plan::EventReason::Rejected => &metrics.verification_failures,
            _ => continue,
        };
        let reason = note.cause.clone().unwrap_or_else(|| "Unknown".into());
        family.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// The checks finished since the last reconcile, and a new run started when one is due.
/// Never waits for a check: they run in `GateRunner`'s pool.
/// What the release owns, as the stores hold it: its revisions' ReplicaSets and pods,
/// and what the planner reads of them.
struct Owned {
    replica_sets: Vec<CachedReplicaSet>,
    /// Labelled as the release's, not controlled by it.
    foreign: Vec<String>,
    workloads: BTreeMap<String, Workload>,
    /// (hash, ReplicaSet) whose template someone else changed.
    changed: Vec<(String, String)>,
    pods: Vec<CachedPod>,
    health: BTreeMap<String, plan::PodHealth>,
}

fn owned(ctx: &Context, release: &ModelRelease, ns: &str) -> Owned {
    let name = release.name_any();
    // Only what this release controls is a revision: a label is a hint anyone with `edit`
    // can write, an owner reference with `controller: true` and the release's UID is not.
    let uid = release.uid();
    let controls = |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference], owner: &str| {
        refs.iter().any(|o| o.controller == Some(true) && o.uid == owner)
    };
    let (replica_sets, foreign): (Vec<CachedReplicaSet>, Vec<CachedReplicaSet>) = ctx
        .stores
        .replica_sets(ns, &name)
        .into_iter()
        .partition(|rs| uid.as_deref().is_some_and(|uid| controls(rs.owner_references(), uid)));
    let foreign = foreign.iter().map(ResourceExt::name_any).collect();
    let workloads = replica_sets
        .iter()
        .filter_map(|rs| {
            let labels = rs.labels();
            let hash = labels.get(LABEL_HASH)?.clone();
            let revision = labels.get(LABEL_REVISION).and_then(|r| r.parse().ok()).unwrap_or(0);
            let replicas = rs.replicas.unwrap_or(1);
            Some((hash, Workload { revision, replicas }))
        })
        .collect();
    // A template not recorded yet (just made, or made by an earlier version) is recorded
    // as it is by `act`; one that no longer matches its record was changed by someone else.
    let changed = replica_sets
        .iter()
        .filter(|rs| rs.recorded_sha256.is_some() && rs.recorded_sha256 != rs.template_sha256)
        .filter_map(|rs| Some((rs.labels().get(LABEL_HASH)?.clone(), rs.name_any())))
        .collect();
    // Pods count only when one of those ReplicaSets controls them.
    let owned: std::collections::HashSet<String> = replica_sets.iter().filter_map(ResourceExt::uid).collect();
    let pods: Vec<CachedPod> = ctx
        .stores
        .pods(ns, &name)
        .into_iter()
        .filter(|p| p.owner_references().iter().any(|o| o.controller == Some(true) && owned.contains(&o.uid)))
        .collect();
    let mut by_hash: BTreeMap<String, Vec<&plan::PodHealth>> = BTreeMap::new();
    for pod in &pods {
        if let Some(hash) = pod.labels().get(LABEL_HASH) {
            by_hash.entry(hash.clone()).or_default().push(&pod.health);
        }
    }
    let health = by_hash.into_iter().map(|(hash, pods)| (hash, gates::kubernetes::assess(pods))).collect();
    Owned { replica_sets, foreign, workloads, changed, pods, health }
}

fn observe_gates(
    ctx: &Arc<Context>,
    release: &ModelRelease,
    ns: &str,
    now: Timestamp,
) -> Option<gate_runner::Finished> {
    let (Some(uid), Some(gate_ctx)) = (release.uid(), plan::gate_context(release, ns)) else { return None };
    let finished = ctx.gates.take(&uid, gate_ctx.canary_revision);
    // Until the API server's addresses are known no check could be sent: they wait (a
    // check refused for it would count as a failure).
    if finished.is_none()
        && (plan::gates_due(release, now) || plan::analysis_due(release, now))
        && !ctx.gates.running(&uid)
        && ctx.gate_policy.egress.api_endpoints.known()
    {
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        let checks = release.spec.gates.checks.clone();
        let policy = ctx.gate_policy.clone();
        let revision = gate_ctx.canary_revision;
        // The judge compares a canary with a stable model: none for a first revision.
        let judged = plan::analysis_due(release, now).then(|| release.spec.analysis.clone()).flatten();
        // A team's namespaces share one part of the pool (the admin's tenant label).
        let tenant = gate_runner::tenant_of(ns, ctx.cluster.labels(ns).as_ref());
        ctx.gates.start(&uid, ObjectRef::from_obj(release), tenant, revision, async move {
            let providers = crate::readers::gate_providers(&cms, &checks, &policy).await;
            let judge = judged.map(|a| gates::Judge::new(a, policy.egress.clone(), policy.prometheus.clone()));
            let judging = async {
                match &judge {
                    Some(Ok(judge)) => {
                        let judged = tokio::time::timeout(
                            gates::CHECK_DEADLINE,
                            judge.judge(&gate_ctx, plan::truncate(Timestamp::now())),
                        )
                        .await;
                        Some(judged.unwrap_or_else(|_| {
                            let why = format!("no judgement within {}s", gates::CHECK_DEADLINE.as_secs());
                            gates::unjudged(revision, why)
                        }))
                    }
                    Some(Err(why)) => Some(gates::unjudged(revision, why.clone())),
                    None => None,
                }
            };
            let (outcomes, analysis) = futures::join!(gates::evaluate_all(&providers, &gate_ctx), judging);
            for o in &outcomes {
                debug!(check = %o.name, result = ?o.result, detail = %o.detail, "gate evaluated");
            }
            if let Some(a) = &analysis {
                let metrics: Vec<String> = a.metrics.iter().map(plan::judge::describe).collect();
                debug!(result = a.result.as_str(), message = %a.message, metrics = %metrics.join("; "), "canary judged");
            }
            (outcomes, analysis)
        });
    }
    finished
}

/// Whether the release's Service name is taken by a Service it does not own: modelgate
/// never takes over (or deletes with the release) what someone else made.
async fn service_conflict(ctx: &Context, release: &ModelRelease, ns: &str) -> Result<Option<String>, Error> {
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let name = release.name_any();
    let existing =
        services.get_opt(&name).await.map_err(|source| Error::Kube { action: "read the release's Service", source })?;
    let owned = |svc: &Service| svc.owner_references().iter().any(|o| Some(&o.uid) == release.uid().as_ref());
    Ok(existing.filter(|svc| !owned(svc)).map(|_| {
        format!(
            "Service {name:?} already exists and does not belong to this release, so modelgate leaves it alone: \
             delete or rename it, or remove spec.service and select the pods (label modelgate.dev/release={name}) \
             with your own Service"
        )
    }))
}

pub fn error_policy(release: Arc<ModelRelease>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.get_or_create(&ErrorLabels { controller: "release", kind: error.metric_label() }).inc();
    warn!(release = %release.name_any(), error = %error, kind = error.metric_label(), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

//! `kubectl modelgate`: the SRE's view of releases and the verbs that steer them. Every
//! verb is one ordinary API write (an annotation or `spec.paused`) that `kubectl patch`
//! or `kubectl annotate` can make as well; the plugin adds the checks a person needs
//! first (is there a canary to promote? is that revision still trusted?).

mod view;

pub use view::history as history_view;

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use k8s_openapi::{api::core::v1::ConfigMap, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{
    api::{
        ANNOTATION_ABORT, ANNOTATION_DROP_WARM, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL, ANNOTATION_RETRY,
        ANNOTATION_ROLLBACK, ClusterModelRepository, ModelRef, ModelRelease, ModelRepository, ModelRepositorySpec,
        ModelRepositoryStatus, Phase, RepositoryKind,
    },
    plan::{self, Verdict},
    readers::{pinned_root_and_ca, read_record, signature_check},
    trust::{
        self, RefreshInput,
        state::{MIRROR_CA_KEY, MIRROR_PIN_KEY, mirror_configmap, pin_digest, state_configmap},
    },
};

/// Watch and steer modelgate releases.
#[derive(Debug, Parser)]
#[command(name = "kubectl-modelgate", bin_name = "kubectl modelgate", version, about)]
pub struct Plugin {
    /// Namespace of the release (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Phase, revisions, step, gates, trust and recent events of a release.
    Status {
        name: String,
        /// Keep watching, printing the view again whenever it changes.
        #[arg(short, long)]
        watch: bool,
    },
    /// Hold the rollout at its current step (gates and automatic rollback keep running).
    Pause { name: String },
    /// Let a paused rollout go on.
    Resume { name: String },
    /// Pass the current pause; with --full, skip every remaining step.
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
    },
    /// Stop the rollout and return to the stable revision now.
    Abort { name: String },
    /// Roll out again a revision that was rolled back or rejected.
    Retry { name: String },
    /// Return to an earlier promoted revision (default: the previous one).
    Rollback {
        name: String,
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Scale away the previous revision's warm pods now instead of at the end of their
    /// window (rollback.keepWarm); a later rollback to it loads its model again.
    DropWarm { name: String },
    /// Past rollouts, oldest first.
    History { name: String },
    /// Dry run: verify the spec's target, show the steps and the workload that would be
    /// created, and the gate checks. Changes nothing.
    Plan {
        name: String,
        /// Evaluate the gate checks once, from this machine. Off by default: they are
        /// requests to addresses the release's authors chose, sent with your network
        /// position; the operator sends them under the installation's egress policy.
        #[arg(long)]
        run_gates: bool,
        /// With --run-gates: the label Prometheus queries are held to, as the
        /// installation's `gates.prometheusNamespaceLabel` (empty: queries go as written).
        #[arg(long, default_value = crate::gates::PrometheusPolicy::DEFAULT_NAMESPACE_LABEL)]
        prometheus_namespace_label: String,
    },
}

impl Plugin {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = crate::client::client("kubectl-modelgate")
            .await
            .map_err(|e| anyhow!("cannot reach the cluster ({e}); check KUBECONFIG / the current context"))?;
        let ns = self.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        let api: Api<ModelRelease> = Api::namespaced(client.clone(), &ns);
        let name = self.verb.name().to_string();
        let release =
            api.get_opt(&name).await.map_err(|e| explain(e, "get", &ns))?.ok_or_else(|| {
                anyhow!("modelrelease {name:?} not found in namespace {ns:?} (kubectl get mr -n {ns})")
            })?;
        let phase = release.status.as_ref().and_then(|s| s.phase);
        let has_canary = release.status.as_ref().is_some_and(|s| s.canary.is_some());
        let token = Timestamp::now().as_second().to_string();
        match self.verb {
            Verb::Status { watch, .. } => view::status(&client, &api, &ns, &name, watch).await,
            Verb::History { .. } => {
                print!("{}", view::history(&release));
                Ok(())
            }
            Verb::Pause { .. } => patch(&api, &name, &ns, json!({"spec": {"paused": true}}), "paused").await,
            Verb::Resume { .. } => {
                if !release.spec.paused {
                    bail!(
                        "{name} is not paused (spec.paused is false); a rollout waiting at a pause step needs `promote`"
                    );
                }
                patch(&api, &name, &ns, json!({"spec": {"paused": false}}), "resumed").await
            }
            Verb::Promote { full, .. } => {
                if !has_canary {
                    bail!("{name} has no rollout in progress (phase {}): nothing to promote", show(phase));
                }
                let key = if full { ANNOTATION_PROMOTE_FULL } else { ANNOTATION_PROMOTE };
                annotate(&api, &name, &ns, key, &token, if full { "promoted to 100%" } else { "promoted" }).await
            }
            Verb::DropWarm { .. } => {
                let Some(warm) = release.status.as_ref().and_then(|s| s.warm.clone()) else {
                    bail!("{name} keeps no warm pods now (status.warm is empty): nothing to drop");
                };
                let what = format!("dropping {} warm pod(s) of revision {}", warm.replicas, warm.revision);
                annotate(&api, &name, &ns, ANNOTATION_DROP_WARM, &token, &what).await
            }
            Verb::Abort { .. } => {
                if !has_canary {
                    bail!("{name} has no rollout in progress (phase {}): nothing to abort", show(phase));
                }
                annotate(&api, &name, &ns, ANNOTATION_ABORT, &token, "aborted").await
            }
            Verb::Retry { .. } => {
                if !matches!(phase, Some(Phase::RolledBack | Phase::Rejected)) {
                    bail!("{name} is {}: only a RolledBack or Rejected release can be retried", show(phase));
                }
                annotate(&api, &name, &ns, ANNOTATION_RETRY, &token, "retrying").await
            }
            Verb::Rollback { to_revision, .. } => rollback(&client, &api, &ns, &release, to_revision, &token).await,
            Verb::Plan { run_gates, prometheus_namespace_label, .. } => {
                let label = Some(prometheus_namespace_label).filter(|l| !l.is_empty());
                view::plan(&client, &ns, &release, run_gates.then_some(label)).await
            }
        }
    }
}

/// `rollback NAME [--to-revision N]`, by the planner's own rules: which revision, and
/// whether it may serve again.
async fn rollback(
    client: &kube::Client,
    api: &Api<ModelRelease>,
    ns: &str,
    release: &ModelRelease,
    to_revision: Option<i64>,
    token: &str,
) -> anyhow::Result<()> {
    let name = release.name_any();
    let status = release.status.clone().unwrap_or_default();
    let stable = status.stable.as_ref().map(|s| s.revision.number);
    let to = match to_revision {
        Some(n) => n,
        None => plan::previous_promoted(&status)
            .map(|h| h.revision.number)
            .ok_or_else(|| anyhow!("{name} has no earlier promoted revision to return to"))?,
    };
    let entry = plan::promoted_revision(&status, to)
        .ok_or_else(|| anyhow!("revision {to} of {name} was never promoted (kubectl modelgate history {name})"))?;
    if Some(to) != stable {
        let verdict = verify(client, ns, release, &entry.revision.model()).await?;
        if let Some(why) = plan::untrusted_for_rollback(entry, &verdict) {
            bail!("refusing to roll back to revision {to}: {why}");
        }
    }
    let what = format!("rolling back to revision {to}");
    annotate(api, &name, ns, ANNOTATION_ROLLBACK, &format!("{to}@{token}"), &what).await
}

impl Verb {
    fn name(&self) -> &str {
        match self {
            Verb::Status { name, .. }
            | Verb::Pause { name }
            | Verb::Resume { name }
            | Verb::Promote { name, .. }
            | Verb::Abort { name }
            | Verb::DropWarm { name }
            | Verb::Retry { name }
            | Verb::Rollback { name, .. }
            | Verb::History { name }
            | Verb::Plan { name, .. } => name,
        }
    }
}

fn show(phase: Option<Phase>) -> String {
    phase.map_or("without status".into(), |p| format!("{p:?}"))
}

/// A Kubernetes error, with what to do about a missing permission.
fn explain(e: kube::Error, verb: &str, ns: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 403 => anyhow!(
            "forbidden: you may not {verb} modelreleases in namespace {ns:?} ({}); check with `kubectl auth can-i {verb} modelreleases -n {ns}`",
            s.message
        ),
        _ => anyhow!(e),
    }
}

async fn patch(
    api: &Api<ModelRelease>,
    name: &str,
    ns: &str,
    body: serde_json::Value,
    done: &str,
) -> anyhow::Result<()> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await.map_err(|e| explain(e, "patch", ns))?;
    println!("modelrelease.modelgate.dev/{name} {done}");
    Ok(())
}

async fn annotate(
    api: &Api<ModelRelease>,
    name: &str,
    ns: &str,
    key: &str,
    value: &str,
    done: &str,
) -> anyhow::Result<()> {
    patch(api, name, ns, json!({"metadata": {"annotations": {key: value}}}), done).await
}

/// The repository a release names (either kind): its spec, status, and where its pods
/// read their trust material.
pub async fn repository_of(
    client: &Client,
    ns: &str,
    release: &ModelRelease,
) -> anyhow::Result<Option<(ModelRepositorySpec, Option<ModelRepositoryStatus>)>> {
    let name = &release.spec.repository_ref.name;
    Ok(match release.spec.repository_ref.kind {
        RepositoryKind::ModelRepository => {
            Api::<ModelRepository>::namespaced(client.clone(), ns).get_opt(name).await?.map(|r| (r.spec, r.status))
        }
        RepositoryKind::ClusterModelRepository => Api::<ClusterModelRepository>::all(client.clone())
            .get_opt(name)
            .await?
            .map(|r| (r.spec.repository, r.status)),
    })
}

/// What the release's repository says about `model` now, checked from here with the
/// same TUF client the operator uses (the newest trusted root, the floors in status).
pub async fn verify(client: &Client, ns: &str, release: &ModelRelease, model: &ModelRef) -> anyhow::Result<Verdict> {
    let repo_ref = &release.spec.repository_ref;
    let repo_name = &repo_ref.name;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let (spec, status, pinned, ca_bundle, record, signature) = match repo_ref.kind {
        RepositoryKind::ModelRepository => {
            let repo = Api::<ModelRepository>::namespaced(client.clone(), ns)
                .get_opt(repo_name)
                .await?
                .ok_or_else(|| anyhow!("modelrepository {repo_name:?} (spec.repositoryRef) not found in {ns:?}"))?;
            let (pinned, ca_bundle) = pinned_root_and_ca(&cms, &repo.spec).await.map_err(|e| anyhow!(e))?;
            let record = read_record(&cms, &state_configmap(&repo.name_any())).await?;
            let signature = signature_check(&cms, &repo.spec).await.map_err(|e| anyhow!(e))?;
            (repo.spec, repo.status, pinned, ca_bundle, record, signature)
        }
        RepositoryKind::ClusterModelRepository => {
            // Its pin and record are in the operator's namespace; the copy in this one is
            // held to the pin digest the operator recorded in its status.
            let repo = Api::<ClusterModelRepository>::all(client.clone())
                .get_opt(repo_name)
                .await?
                .ok_or_else(|| anyhow!("clustermodelrepository {repo_name:?} (spec.repositoryRef) not found"))?;
            let mirror = cms.get_opt(&mirror_configmap(repo_name)).await?.and_then(|cm| cm.data).unwrap_or_default();
            let pinned = mirror.get(MIRROR_PIN_KEY).cloned().map(String::into_bytes).ok_or_else(|| {
                anyhow!("no copy of {repo_name:?}'s pinned root in {ns:?} yet: the operator makes it with the first revision")
            })?;
            let want = repo.status.as_ref().and_then(|s| s.pinned_root_sha256.clone());
            if want.as_deref() != Some(pin_digest(&pinned).as_str()) {
                return Ok(Verdict::Untrusted {
                    reason: plan::Untrusted::Trust(crate::trust::Reason::TrustStateTampered),
                    message: format!(
                        "the copy of {repo_name:?}'s pinned root in {ns:?} is not the pin the operator verified"
                    ),
                });
            }
            let ca_bundle = mirror.get(MIRROR_CA_KEY).cloned().map(String::into_bytes);
            let record = read_record(&cms, &mirror_configmap(repo_name))
                .await?
                .map(|r| crate::trust::Record { pin_sha256: want.clone(), ..r });
            // Its signers are the security team's, in the operator's namespace: checked
            // here is the statement's file list; who signed, the operator checks.
            let signature = repo.spec.repository.provenance.as_ref().map(|_| crate::trust::SignatureCheck::FilesOnly);
            (repo.spec.repository, repo.status, pinned, ca_bundle, record, signature)
        }
    };
    let refreshed = trust::refresh(RefreshInput {
        metadata_url: &spec.metadata_url,
        targets_url: &spec.targets_url,
        signature,
        pinned_root: &pinned,
        record,
        ca_bundle,
        floors: plan::repository::floors(status.as_ref()),
        now: Timestamp::now(),
        previous: None,
        recorded_pin: status.as_ref().and_then(|s| s.pinned_root_sha256.clone()),
    })
    .await;
    let mut session = match refreshed {
        Ok(r) => r.session,
        Err(e) => return Ok(Verdict::Untrusted { reason: plan::Untrusted::Trust(e.reason()), message: e.to_string() }),
    };
    // As the operator holds it: an image only from the registries the repository lists.
    let verdict = Verdict::of(session.resolve(model, Timestamp::now()).await);
    let kind_and_name = format!("{} {repo_name:?}", release.spec.repository_ref.kind.as_str());
    Ok(plan::policy::within_registries(&kind_and_name, spec.images.as_ref(), verdict))
}

/// Waits between two renderings of `status -w`.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// For `main`: parse, run, and say what failed on one line.
pub async fn main() -> std::process::ExitCode {
    let plugin = Plugin::parse();
    match plugin.run().await.context("kubectl modelgate") {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.chain().skip(1).map(ToString::to_string).collect::<Vec<_>>().join(": "));
            std::process::ExitCode::FAILURE
        }
    }
}

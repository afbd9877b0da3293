//! What `kubectl modelgate status`, `history` and `plan` print.

use std::fmt::Write as _;

use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{ConfigMap, Event},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectList},
};

use super::{WATCH_EVERY, verify};
use crate::{
    api::{LABEL_RELEASE, LABEL_REVISION, ModelRelease},
    gates::{self, GateContext},
    plan::{self, Verdict, pod_policy::PodPolicy},
    workload,
};

/// Text from the cluster (messages, event notes, gate values) may hold terminal
/// control sequences or Unicode format characters (bidirectional overrides, zero-width
/// characters) a tenant or a server wrote; they are shown escaped, never obeyed. The
/// layout's own newlines stay.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if hidden(c) && c != '\n' { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// One field inside a line of output: its newlines escaped as well, so text a tenant
/// wrote (a pod's termination message in a status message) cannot start a line of its
/// own and forge, say, a `Phase: Promoted` line.
pub fn field(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            c if hidden(c) => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Control characters, and the format characters that reorder or hide text on a screen.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{AD}' | '\u{61C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}')
}

fn short(sha: Option<&str>) -> &str {
    sha.map_or("-", plan::short)
}

/// Below a revision's line: who signed its model, and the image its pods mount.
fn provenance_lines(out: &mut String, revision: &crate::api::RevisionRef) -> std::fmt::Result {
    use std::fmt::Write as _;
    if let Some(signer) = &revision.signer {
        writeln!(out, "           signed by {}", field(signer))?;
    }
    if let Some(image) = &revision.image {
        writeln!(out, "           image {}", field(image))?;
    }
    Ok(())
}

/// A signer in a column: a key by the first 8 digits of its id, a certificate by its
/// subject; `-` when the revision was not signed.
fn signer_short(signer: Option<&str>) -> String {
    let Some(signer) = signer else { return "-".into() };
    let brief = match signer.strip_prefix("key sha256:") {
        Some(id) => format!("key {}", id.get(..8).unwrap_or(id)),
        None => signer.split(" (issuer ").next().unwrap_or(signer).to_string(),
    };
    brief.chars().take(24).collect()
}

fn ago(t: Option<k8s_openapi::jiff::Timestamp>) -> String {
    let Some(t) = t else { return "?".into() };
    let secs = (k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// `status NAME [-w]`.
pub async fn status(client: &Client, api: &Api<ModelRelease>, ns: &str, name: &str, watch: bool) -> anyhow::Result<()> {
    let mut last = String::new();
    loop {
        let release = api.get(name).await?;
        let view = printable(&render_status(client, ns, &release).await?);
        if view != last {
            if watch && !last.is_empty() {
                println!("{}", "-".repeat(72));
            }
            print!("{view}");
            last = view;
        }
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

async fn render_status(client: &Client, ns: &str, release: &ModelRelease) -> anyhow::Result<String> {
    let name = release.name_any();
    let status = release.status.clone().unwrap_or_default();
    let sets: ObjectList<ReplicaSet> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{LABEL_RELEASE}={name}")))
        .await?;
    let pods = |revision: i64| {
        let rs = sets.items.iter().find(|rs| rs.labels().get(LABEL_REVISION) == Some(&revision.to_string()));
        let want = rs.and_then(|r| r.spec.replicas).unwrap_or(0);
        let ready = rs.and_then(|r| r.status.as_ref()).and_then(|s| s.ready_replicas).unwrap_or(0);
        format!("pods {ready}/{want} ready")
    };
    let mut out = String::new();
    let phase = status.phase.map_or("-".into(), |p| format!("{p:?}"));
    writeln!(out, "Name:      {name} (namespace {ns})")?;
    writeln!(out, "Phase:     {phase}  {}", field(status.message.as_deref().unwrap_or("")))?;
    match &status.stable {
        Some(s) => writeln!(
            out,
            "Stable:    revision {}  {}  sha256 {}  {}",
            s.revision.number,
            field(&s.revision.target),
            short(s.revision.sha256.as_deref()),
            pods(s.revision.number)
        )?,
        None => writeln!(out, "Stable:    none")?,
    }
    if let Some(s) = &status.stable {
        provenance_lines(&mut out, &s.revision)?;
    }
    match &status.canary {
        Some(c) => writeln!(
            out,
            "Canary:    revision {}  {}  sha256 {}  {}  step {}/{}  weight {}%",
            c.revision.number,
            field(&c.revision.target),
            short(c.revision.sha256.as_deref()),
            pods(c.revision.number),
            c.step,
            release.spec.strategy.steps.len(),
            c.weight
        )?,
        None => writeln!(out, "Canary:    none")?,
    }
    if let Some(c) = &status.canary {
        provenance_lines(&mut out, &c.revision)?;
    }
    if let Some(w) = &status.warm {
        let left = w.until.as_ref().map_or("-".to_string(), |t| {
            let secs = t.0.as_second().saturating_sub(k8s_openapi::jiff::Timestamp::now().as_second()).max(0);
            format!("{}m{:02}s", secs / 60, secs % 60)
        });
        writeln!(
            out,
            "Warm:      revision {}  {}  out of service, {left} left (kubectl modelgate drop-warm {name})",
            w.revision,
            pods(w.revision)
        )?;
    }
    write_gates(&mut out, release, &status)?;
    write_analysis(&mut out, release, &status)?;
    let repo = super::repository_of(client, ns, release).await?;
    write_trust(&mut out, release, repo.and_then(|(_, status)| status).as_ref())?;
    let conditions: Vec<String> =
        status.conditions.iter().map(|c| format!("{}={} ({})", c.type_, c.status, c.reason)).collect();
    writeln!(out, "Conditions: {}", conditions.join(", "))?;
    let events: ObjectList<Event> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("involvedObject.kind=ModelRelease,involvedObject.name={name}")))
        .await?;
    let mut events = events.items;
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0).or(e.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    write_events(&mut out, &events)?;
    Ok(out)
}

/// Each gate's last result.
fn write_gates(out: &mut String, release: &ModelRelease, status: &crate::api::ModelReleaseStatus) -> std::fmt::Result {
    if !status.gates.is_empty() || !release.spec.gates.checks.is_empty() {
        writeln!(out, "Gates:")?;
        for check in &release.spec.gates.checks {
            match status.gates.iter().find(|g| g.name == check.name) {
                Some(g) => writeln!(
                    out,
                    "  {:<20} {:<13} {:<24} failures {} no-data {}  {} ago",
                    g.name,
                    g.result,
                    field(g.last_value.as_deref().unwrap_or("-")),
                    g.consecutive_failures,
                    g.consecutive_inconclusive,
                    ago(g.last_evaluated.as_ref().map(|t| t.0))
                )?,
                None => writeln!(out, "  {:<20} not evaluated yet", check.name)?,
            }
        }
    }
    Ok(())
}

/// The judge's last judgement and the numbers each metric was judged on.
fn write_analysis(
    out: &mut String,
    release: &ModelRelease,
    status: &crate::api::ModelReleaseStatus,
) -> std::fmt::Result {
    let Some(spec) = &release.spec.analysis else { return Ok(()) };
    let against = if spec.baseline { "baseline pods" } else { "the stable pods" };
    let Some(a) = &status.analysis else {
        return writeln!(out, "Analysis:  against {against}, not judged yet");
    };
    let score = a.score.map_or(String::new(), |s| format!(" score {s}"));
    writeln!(
        out,
        "Analysis:  revision {} against {against}: {}{score}  marginal {} no-data {}  {} ago",
        a.revision,
        a.result.as_str(),
        a.consecutive_marginal,
        a.consecutive_no_data,
        ago(a.last_evaluated.as_ref().map(|t| t.0))
    )?;
    if !a.message.is_empty() {
        writeln!(out, "  {}", field(&a.message))?;
    }
    for m in &a.metrics {
        writeln!(out, "  {}", field(&crate::plan::judge::describe(m)))?;
    }
    Ok(())
}

/// What the repository's status says of its trust.
fn write_trust(
    out: &mut String,
    release: &ModelRelease,
    repository: Option<&crate::api::ModelRepositoryStatus>,
) -> std::fmt::Result {
    match repository {
        Some(rs) => {
            let trusted = rs.conditions.iter().find(|c| c.type_ == "Trusted");
            let expires =
                rs.timestamp.as_ref().and_then(|t| t.expires.as_ref()).map_or("?".into(), |t| t.0.to_string());
            writeln!(
                out,
                "Trust:     repository {} Trusted={} ({}), timestamp v{} expires {expires}",
                release.spec.repository_ref.name,
                trusted.map_or("?", |c| c.status.as_str()),
                trusted.map_or("", |c| c.reason.as_str()),
                rs.timestamp.as_ref().map_or(0, |t| t.version),
            )?;
        }
        None => writeln!(out, "Trust:     repository {} has no status yet", release.spec.repository_ref.name)?,
    }
    Ok(())
}

/// The last five Events, oldest first.
fn write_events(out: &mut String, events: &[Event]) -> std::fmt::Result {
    writeln!(out, "Events:")?;
    for e in events.iter().rev().take(5).rev() {
        let at = e.event_time.as_ref().map(|t| t.0).or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        writeln!(
            out,
            "  {:>4} ago  {:<8} {:<17} {}",
            ago(at),
            e.type_.as_deref().unwrap_or(""),
            e.reason.as_deref().unwrap_or(""),
            field(e.message.as_deref().unwrap_or(""))
        )?;
    }
    Ok(())
}

/// `history NAME`: one line per finished rollout.
pub fn history(release: &ModelRelease) -> String {
    let mut out = format!(
        "{:<9} {:<36} {:<14} {:<24} {:<11} {:<21} {}\n",
        "REVISION", "TARGET", "SHA256", "SIGNER", "OUTCOME", "FINISHED", "REASON"
    );
    let status = release.status.clone().unwrap_or_default();
    for h in &status.history {
        let finished = h.finished_at.as_ref().map_or("-".into(), |t| t.0.to_string());
        let _ = writeln!(
            out,
            "{:<9} {:<36} {:<14} {:<24} {:<11} {:<21} {}",
            h.revision.number,
            field(&h.revision.target),
            short(h.revision.sha256.as_deref()),
            field(&signer_short(h.revision.signer.as_deref())),
            h.outcome.as_str(),
            finished,
            field(h.reason.as_deref().unwrap_or(""))
        );
    }
    if let Some(s) = &status.stable {
        let _ = writeln!(out, "\nserving: revision {} ({})", s.revision.number, s.revision.target);
    }
    printable(&out)
}

/// `plan NAME`: what the spec would do, without doing it.
/// `run_gates`: `Some(label)` evaluates the gates once, their Prometheus queries held to
/// `label` (none: as written), as the installation would.
pub async fn plan(
    client: &Client,
    ns: &str,
    release: &ModelRelease,
    run_gates: Option<Option<String>>,
) -> anyhow::Result<()> {
    let model = release.spec.model.model();
    let status = release.status.clone().unwrap_or_default();
    let hash = plan::desired_hash(release);
    println!(
        "Revision:  {hash} ({})",
        if status.stable.as_ref().is_some_and(|s| s.revision.hash == hash) { "the stable one" } else { "new" }
    );
    let verdict = verify(client, ns, release, &model).await?;
    let Some(verified) = print_verdict(&model.display(), &verdict) else { return Ok(()) };
    let first = status.stable.is_none();
    print_steps(release, first);
    // Numbered as the planner numbers it.
    let next = plan::revision_number(&status, &hash);
    let model = release.spec.model.model();
    let revision = plan::Revision {
        number: next,
        hash: &hash,
        model: model.clone(),
        sha256: &verified.sha256,
        length: verified.length,
        files: verified.files,
        signed: verified.signed,
        image: verified.image.as_deref(),
    };
    let first_weight = release.spec.strategy.steps.iter().find_map(|s| s.set_weight).unwrap_or(100);
    let replicas = plan::canary_replicas(release.spec.replicas, if first { 100 } else { first_weight });
    if !print_workload(client, ns, release, &revision, replicas).await? {
        return Ok(());
    }
    if release.spec.gates.checks.is_empty() {
        println!("Gates:     pod health only");
        return Ok(());
    }
    let Some(namespace_label) = run_gates else {
        println!("Gates (not evaluated; --run-gates sends their requests once, from this machine):");
        for check in &release.spec.gates.checks {
            let to = match (&check.prometheus, &check.webhook) {
                (Some(p), _) => format!("prometheus {}", p.address),
                (_, Some(w)) => format!("webhook {}", w.url),
                _ => "-".into(),
            };
            println!("  {:<20} {}", field(&check.name), field(&to));
        }
        return Ok(());
    };
    let ctx = GateContext {
        release: release.name_any(),
        namespace: ns.to_string(),
        canary_revision: next,
        stable_revision: status.stable.as_ref().map(|s| s.revision.number),
        target: model.display(),
        sha256: verified.sha256.clone(),
        step: 0,
        weight: first_weight,
        step_started: None,
        relabelled: None,
    };
    run_gates_once(client, ns, release, namespace_label, &ctx).await
}

/// What the workload needs of a trusted model.
struct Verified {
    sha256: String,
    length: i64,
    files: i64,
    signed: bool,
    image: Option<String>,
}

/// The verdict on the model, as a line; what the workload needs of a trusted one
/// (`None`: refused, and said so).
fn print_verdict(target: &str, verdict: &Verdict) -> Option<Verified> {
    match verdict {
        Verdict::Trusted { sha256, length, files, signer, image } => {
            match files {
                1 => println!("Verify:    {target}: trusted, sha256 {sha256}, {length} bytes"),
                n => println!("Verify:    {target}: trusted, {n} files, {length} bytes, manifest sha256 {sha256}"),
            }
            if let Some(signer) = signer {
                println!("Signed by: {}", field(signer));
            }
            if let Some(image) = image {
                println!("Image:     {}", field(image));
            }
            Some(Verified {
                sha256: sha256.clone(),
                length: *length,
                files: *files,
                signed: signer.is_some(),
                image: image.clone(),
            })
        }
        Verdict::Untrusted { message, .. } | Verdict::Unknown { message } => {
            println!("Verify:    {}", field(&format!("{target}: REFUSED: {message}")));
            println!("           the release would be Rejected; nothing would be deployed");
            None
        }
    }
}

/// The rollout's steps, with the pods each would run.
fn print_steps(release: &ModelRelease, first: bool) {
    let replicas = release.spec.replicas;
    println!("Steps (replicas {replicas}):");
    if first {
        println!("  first revision: straight to 100% ({replicas} pods), then promoted when Ready and passing");
        return;
    }
    for (i, step) in release.spec.strategy.steps.iter().enumerate() {
        match (step.set_weight, &step.pause) {
            (Some(w), _) => {
                let canary = plan::canary_replicas(replicas, w);
                println!("  {i}. setWeight {w}%: canary {canary} pod(s), stable {}", replicas - canary);
            }
            (None, Some(p)) => match &p.duration {
                Some(d) => println!("  {i}. pause {d}"),
                None => println!("  {i}. pause until promoted (kubectl modelgate promote {})", release.name_any()),
            },
            _ => {}
        }
    }
    println!(
        "  {}. 100%: canary {replicas} pod(s), then promoted when Ready and passing",
        release.spec.strategy.steps.len()
    );
}

/// The ReplicaSet the first step would create, as YAML; `false`: the default pod policy
/// refuses it (said so).
async fn print_workload(
    client: &Client,
    ns: &str,
    release: &ModelRelease,
    revision: &plan::Revision<'_>,
    replicas: i32,
) -> anyhow::Result<bool> {
    let repo_ref = &release.spec.repository_ref;
    let (spec, repo_status) = super::repository_of(client, ns, release).await?.ok_or_else(|| {
        anyhow::anyhow!("{} {:?} (spec.repositoryRef) not found", repo_ref.kind.as_str(), repo_ref.name)
    })?;
    let trust = match repo_ref.kind {
        crate::api::RepositoryKind::ModelRepository => workload::TrustFiles::namespaced(&repo_ref.name, &spec),
        crate::api::RepositoryKind::ClusterModelRepository => {
            let pin = repo_status.as_ref().and_then(|s| s.pinned_root_sha256.clone()).unwrap_or_default();
            workload::TrustFiles::cluster(&repo_ref.name, &spec, &pin)
        }
    };
    // The installation's pod policy is the operator's; the plugin checks the default.
    let rs = workload::replica_set(
        release,
        &trust,
        revision,
        replicas,
        concat!("modelgate/modelgate:", env!("CARGO_PKG_VERSION")),
        &PodPolicy::default(),
        plan::repository::floors(repo_status.as_ref()),
    );
    match rs {
        Ok(rs) => {
            println!("Workload that would be created (the fetch image is the operator's own):");
            print!("{}", serde_yaml::to_string(&rs)?.lines().map(|l| format!("  {l}\n")).collect::<String>());
            Ok(true)
        }
        Err(refused) => {
            println!("Workload:  REFUSED by the default pod policy (baseline): {}", field(&refused.to_string()));
            println!("           the release would be Rejected; nothing would be deployed");
            Ok(false)
        }
    }
}

/// Sends each gate's requests once, from this machine, and prints the outcomes.
async fn run_gates_once(
    client: &Client,
    ns: &str,
    release: &ModelRelease,
    namespace_label: Option<String>,
    ctx: &GateContext,
) -> anyhow::Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    // From the SRE's machine, under the installation's defaults: no loopback,
    // link-local or API server, https only, queries held to the release's namespace
    // (by the label the SRE names, `namespace` unless told otherwise).
    let policy = gates::GatePolicy {
        egress: gates::EgressPolicy::from_env(Vec::new(), Vec::new(), false),
        prometheus: gates::PrometheusPolicy { namespace_label, ..Default::default() },
    };
    let egress = &policy.egress;
    // The API server's own addresses too: unread (no right to list them), no request goes.
    let slices = Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(crate::readers::API_SERVER_SLICES))
        .await;
    if let Ok(slices) = slices {
        egress.api_endpoints.set(crate::readers::api_server_addresses(&slices.items));
    }
    let providers = crate::readers::gate_providers(&cms, &release.spec.gates.checks, &policy).await;
    println!("Gates (evaluated once, now, for revision {}):", ctx.canary_revision);
    for o in gates::evaluate_all(&providers, ctx).await {
        println!("  {:<20} {:<13?} {}", field(&o.name), o.result, field(&o.detail));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_sequences_are_shown_not_obeyed() {
        let shown = super::printable("rolled back: \u{1b}[2J\u{1b}]0;owned\u{7}done\r\nnext");
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
        assert!(shown.contains("\\u{1b}[2J") && shown.contains("done") && shown.contains('\n'));
    }

    #[test]
    fn a_field_cannot_forge_a_line_or_reorder_one() {
        let forged = super::field("crashed\nPhase:     Promoted  all fine\u{202E}enod\u{200B}");
        assert!(!forged.contains('\n') && !forged.contains('\u{202E}') && !forged.contains('\u{200B}'), "{forged:?}");
        assert!(forged.contains("crashed\\nPhase:") && forged.contains("\\u{202e}"), "{forged:?}");
        // The whole view keeps its own lines, and escapes what a field let through.
        assert_eq!(super::printable("a\nb\u{2066}"), "a\nb\\u{2066}");
    }
}

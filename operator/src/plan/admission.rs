//! What the admission webhook answers for a ModelRelease at `kubectl apply`: the
//! controller's own refusals, said before anything is stored, so a pipeline fails where
//! the mistake is. Pure: the caller reads the facts from what the operator has loaded.
//!
//! Only what the request changes is judged: an SRE's command on a release whose model
//! was revoked since (a rollback, an abort) must go through, and the controller keeps
//! judging what runs. A model the repository cannot vouch for yet (its metadata not
//! loaded, the repository not made yet) is let through with a warning: refusing it
//! would make "apply the repository and the release together" fail, and the controller
//! refuses it in status moments later if it must.

use crate::{
    api::{ModelRelease, ModelReleaseSpec},
    gates::{self, GatePolicy},
    plan::{
        GateContext, Repository, Verdict,
        pod_policy::{self, PodPolicy},
    },
};

/// What the answer is made from, read from memory by the caller.
pub struct Facts<'a> {
    pub pod_policy: &'a PodPolicy,
    pub gate_policy: &'a GatePolicy,
    /// The repository `spec.repositoryRef` names, as this replica finds it; `None` while
    /// it holds no view of the namespace (a replica standing by, or a namespace it does
    /// not serve).
    pub repository: Option<Repository>,
    /// What that repository says now of the spec's model, when it has said anything.
    pub verdict: Option<Verdict>,
}

/// One refused field and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

/// The webhook's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Empty: allowed.
    pub refusals: Vec<Refusal>,
    /// Shown by kubectl beside an allowed request.
    pub warnings: Vec<String>,
}

impl Answer {
    /// One message naming every refused field, as kubectl prints it after "denied the request: ".
    pub fn message(&self) -> String {
        let parts: Vec<String> = self.refusals.iter().map(|r| format!("{}: {}", r.field, r.message)).collect();
        parts.join("; ")
    }
}

/// Gate checks a release may have (the CRD's bound).
const MAX_CHECKS: usize = 16;

/// Judges `new` (and what changed since `old`, on an update) in `namespace`.
pub fn review(new: &ModelRelease, old: Option<&ModelRelease>, namespace: &str, facts: &Facts) -> Answer {
    let mut answer = Answer::default();
    let was = old.map(|o| &o.spec);
    let spec = &new.spec;
    let changed = |part: fn(&ModelReleaseSpec) -> String| was.is_none_or(|was| part(was) != part(spec));
    // What a check or the judge would be asked about, its placeholders filled as a run would.
    let sample = GateContext {
        release: new.metadata.name.clone().unwrap_or_default(),
        namespace: namespace.to_string(),
        canary_revision: 2,
        stable_revision: Some(1),
        ..Default::default()
    };

    if changed(|s| format!("{:?}{:?}", s.model, s.repository_ref)) {
        model(spec, namespace, facts, &mut answer);
    }
    if changed(|s| format!("{:?}{:?}", s.template, s.model.mount_path)) {
        for refused in pod_policy::check(&spec.template, &spec.model.mount_path, namespace, facts.pod_policy) {
            answer.refusals.push(Refusal { field: "spec.template".into(), message: refused });
        }
    }
    if changed(|s| format!("{:?}", s.gates)) {
        // The schema allows 16; a review that did not come from the API server may hold more.
        if spec.gates.checks.len() > MAX_CHECKS {
            let message = format!("at most {MAX_CHECKS} checks");
            answer.refusals.push(Refusal { field: "spec.gates.checks".into(), message });
            return answer;
        }
        for (i, check) in spec.gates.checks.iter().enumerate() {
            if let Err(refused) = gates::admissible(check, &sample, facts.gate_policy) {
                answer.refusals.push(Refusal { field: format!("spec.gates.checks[{i}]"), message: refused });
            }
        }
    }
    if let Some(analysis) = spec.analysis.as_ref().filter(|_| changed(|s| format!("{:?}", s.analysis))) {
        // The schema allows 16; a review that did not come from the API server may hold more.
        if analysis.metrics.len() > MAX_CHECKS {
            let message = format!("at most {MAX_CHECKS} metrics");
            answer.refusals.push(Refusal { field: "spec.analysis.metrics".into(), message });
            return answer;
        }
        let policy = facts.gate_policy;
        let judge = gates::Judge::new(analysis.clone(), policy.egress.clone(), policy.prometheus.clone());
        if let Err(refused) = judge.and_then(|judge| judge.admissible(&sample)) {
            answer.refusals.push(Refusal { field: "spec.analysis".into(), message: refused });
        }
    }
    answer
}

/// The spec's model against what its repository says now.
fn model(spec: &ModelReleaseSpec, namespace: &str, facts: &Facts, answer: &mut Answer) {
    let m = &spec.model;
    let field = if m.image.is_some() {
        "spec.model.image.target"
    } else if m.prefix.is_some() {
        "spec.model.prefix"
    } else if !m.targets.is_empty() {
        "spec.model.targets"
    } else {
        "spec.model.target"
    };
    let repository = &spec.repository_ref.name;
    let model = m.model().display();
    match (&facts.repository, &facts.verdict) {
        (None, _) => answer.warnings.push(format!(
            "{model} is not verified yet (this replica of modelgate holds no view of namespace {namespace}): \
             modelgate verifies it before anything is deployed (kubectl get mr shows the outcome)"
        )),
        (Some(Repository::Missing), _) => {
            let (_, message) = Repository::Missing.refusal(&spec.repository_ref, namespace);
            answer.warnings.push(format!("{message}; nothing is deployed until it does"));
        }
        (Some(disabled @ (Repository::ClusterDisabled | Repository::NamespacedDisabled)), _) => {
            let (_, message) = disabled.refusal(&spec.repository_ref, namespace);
            answer.refusals.push(Refusal { field: "spec.repositoryRef.kind".into(), message });
        }
        (Some(Repository::Found { .. }), None) => answer.warnings.push(format!(
            "{model} is not verified yet: modelgate verifies it before anything is deployed (kubectl get mr shows \
             the outcome)"
        )),
        (_, Some(Verdict::Unknown { message })) => answer.warnings.push(format!(
            "{model} is not verified yet ({message}): modelgate verifies it before anything is deployed (kubectl get \
             mr shows the outcome)"
        )),
        (_, Some(Verdict::Untrusted { reason, message })) => answer.refusals.push(Refusal {
            field: field.into(),
            message: format!(
                "{model} is not trusted by {repository} ({reason}: {message}); name a model the repository signs \
                 and allows this namespace"
            ),
        }),
        (_, Some(Verdict::Trusted { .. })) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(spec: serde_json::Value) -> ModelRelease {
        let mut base = json!({"repositoryRef": {"name": "fraud"}, "model": {"target": "fraud/1.0/model.onnx"},
            "template": {"spec": {"containers": [{"name": "server", "image": "i"}]}}});
        for (k, v) in spec.as_object().cloned().unwrap_or_default() {
            base[k] = v;
        }
        serde_json::from_value(json!({"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRelease",
            "metadata": {"name": "fraud", "namespace": "team"}, "spec": base}))
        .unwrap()
    }

    fn trusted() -> Option<Verdict> {
        Some(Verdict::Trusted { sha256: "00".into(), length: 1, files: 1, signer: None, image: None })
    }

    fn revoked() -> Option<Verdict> {
        Some(Verdict::Untrusted {
            reason: crate::plan::Untrusted::Trust(crate::trust::Reason::UnknownTarget),
            message: "not listed".into(),
        })
    }

    fn answer(new: &ModelRelease, old: Option<&ModelRelease>, verdict: Option<Verdict>) -> Answer {
        let repository = Some(Repository::Found { on_revocation: None });
        judged(new, old, repository, verdict)
    }

    fn judged(
        new: &ModelRelease,
        old: Option<&ModelRelease>,
        repository: Option<Repository>,
        verdict: Option<Verdict>,
    ) -> Answer {
        // The installation's defaults: queries held to the namespace label.
        let mut gate_policy = GatePolicy::default();
        gate_policy.prometheus.namespace_label = Some(crate::gates::PrometheusPolicy::DEFAULT_NAMESPACE_LABEL.into());
        let pod_policy = PodPolicy::default();
        review(new, old, "team", &Facts { pod_policy: &pod_policy, gate_policy: &gate_policy, repository, verdict })
    }

    #[test]
    fn each_refusal_names_its_field() {
        let fine = release(json!({}));
        assert_eq!(answer(&fine, None, trusted()), Answer::default());

        let a = answer(&fine, None, revoked());
        assert_eq!(a.refusals.len(), 1);
        assert_eq!(a.refusals[0].field, "spec.model.target");
        assert!(a.message().contains("fraud/1.0/model.onnx is not trusted by fraud (UnknownTarget"), "{}", a.message());

        let prefix = release(json!({"model": {"target": "", "prefix": "fraud/1.0/"}}));
        assert_eq!(answer(&prefix, None, revoked()).refusals[0].field, "spec.model.prefix");

        let privileged = release(json!({"template": {"spec": {"containers": [
            {"name": "server", "image": "i", "securityContext": {"privileged": true}}]}}}));
        let a = answer(&privileged, None, trusted());
        assert!(!a.refusals.is_empty() && a.refusals.iter().all(|r| r.field == "spec.template"), "{a:?}");

        let over_model = release(json!({"template": {"spec": {
            "containers": [{"name": "server", "image": "i", "volumeMounts": [{"name": "mine", "mountPath": "/models/model.onnx"}]}],
            "volumes": [{"name": "mine", "emptyDir": {}}]}}}));
        assert!(answer(&over_model, None, trusted()).message().contains("spec.template"));

        let metadata = release(json!({"gates": {"checks": [
            {"name": "judge", "webhook": {"url": "https://169.254.169.254/latest/meta-data/"}},
            {"name": "errors", "prometheus": {"address": "http://prometheus.monitoring:9090", "query": "up", "max": 1}},
            {"name": "elsewhere", "prometheus": {"address": "https://prometheus.monitoring", "query": "up{namespace=\"x\"} + info(up)", "max": 1}},
            {"name": "fine", "webhook": {"url": "https://judge.team.svc/judge"}}]}}));
        let a = answer(&metadata, None, trusted());
        let fields: Vec<&str> = a.refusals.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields, ["spec.gates.checks[0]", "spec.gates.checks[1]", "spec.gates.checks[2]"], "{a:?}");
        assert!(a.refusals[0].message.contains("link-local"), "{a:?}");
        assert!(a.refusals[1].message.contains("gates.allowHttp"), "{a:?}");
        assert!(a.refusals[2].message.contains("prometheus.query"), "{a:?}");
    }

    #[test]
    fn what_cannot_be_told_yet_is_let_through_with_a_warning() {
        let fine = release(json!({}));
        let a = answer(&fine, None, Some(Verdict::Unknown { message: "being verified".into() }));
        assert!(a.refusals.is_empty());
        assert!(a.warnings[0].contains("not verified yet"), "{a:?}");
        let a = judged(&fine, None, Some(Repository::Missing), None);
        assert!(a.refusals.is_empty());
        assert!(a.warnings[0].contains("ModelRepository \"fraud\" does not exist in namespace \"team\""), "{a:?}");
        let a = judged(&fine, None, None, None);
        assert!(a.refusals.is_empty());
        assert!(a.warnings[0].contains("holds no view of namespace team"), "{a:?}");
        // What the installation does not serve is refused.
        let a = judged(&fine, None, Some(Repository::NamespacedDisabled), None);
        assert_eq!(a.refusals[0].field, "spec.repositoryRef.kind");
    }

    #[test]
    fn an_update_is_judged_on_what_it_changes() {
        let running = release(json!({}));
        // A command on a release whose model was revoked since: let through.
        let mut commanded = running.clone();
        commanded.metadata.annotations = Some([("modelgate.dev/rollback".to_string(), "1".to_string())].into());
        assert_eq!(answer(&commanded, Some(&running), revoked()), Answer::default());
        let mut scaled = running.clone();
        scaled.spec.replicas = 4;
        assert_eq!(answer(&scaled, Some(&running), revoked()), Answer::default());
        // A new target that is revoked: refused.
        let mut moved = running.clone();
        moved.spec.model.target = "fraud/2.0/model.onnx".into();
        assert_eq!(answer(&moved, Some(&running), revoked()).refusals[0].field, "spec.model.target");
    }
}

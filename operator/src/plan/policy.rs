//! Whether a cluster repository's policy lets a namespace release a model: the security
//! team's rules, read in one place. Anything that cannot be decided (an unknown
//! namespace's labels, a pattern that does not parse) is a refusal, never an allowance.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobMatcher};
use kube::core::{Selector, SelectorExt};

use super::{Untrusted, Verdict};
use crate::api::{AllowRule, ImagePolicy, ModelRef, RepositoryPolicy, RevocationAction};

/// Why the policy refuses: the condition reason a release shows.
pub const NOT_ALLOWED: &str = "NotAllowedByPolicy";

/// The namespace a release lives in, as the operator sees it. `labels` is `None` when
/// the operator could not read them (they are then matched by no selector).
pub struct Namespace<'a> {
    pub name: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// `Ok` when some rule of `policy` selects `ns` and allows every file of `model`;
/// otherwise the message a release shows, naming the repository and what to ask for.
pub fn allows(repository: &str, policy: &RepositoryPolicy, ns: &Namespace<'_>, model: &ModelRef) -> Result<(), String> {
    let selecting: Vec<&AllowRule> = policy.allow.iter().filter(|rule| selects(rule, ns)).collect();
    if selecting.is_empty() {
        let labels = if ns.labels.is_none() { " (its labels could not be read)" } else { "" };
        return Err(format!(
            "ClusterModelRepository {repository:?} does not allow namespace {:?}{labels}: no rule of its \
             spec.policy.allow selects it; ask the security team to add it",
            ns.name
        ));
    }
    if selecting.iter().any(|rule| covers(rule, model)) {
        return Ok(());
    }
    let patterns: Vec<&str> = selecting.iter().flat_map(|r| r.paths.iter().map(String::as_str)).take(10).collect();
    Err(format!(
        "ClusterModelRepository {repository:?} does not allow namespace {:?} to release {model}: its \
         spec.policy.allow gives this namespace only the paths {patterns:?}",
        ns.name
    ))
}

/// An image model's verdict held to the registries its repository allows
/// (`spec.images.registries`): the image's repository must be one of them or lie below
/// one. A repository that lists none allows no image. Other verdicts pass unchanged.
pub fn within_registries(kind_and_name: &str, images: Option<&ImagePolicy>, verdict: Verdict) -> Verdict {
    let Verdict::Trusted { image: Some(reference), .. } = &verdict else { return verdict };
    let repository = reference.split_once('@').map_or(reference.as_str(), |(r, _)| r);
    let allowed = images.map(|i| i.registries.as_slice()).unwrap_or_default();
    let below = |entry: &String| {
        repository.strip_prefix(entry.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if allowed.iter().any(below) {
        return verdict;
    }
    let message = match allowed {
        [] => format!(
            "{kind_and_name} allows no image models (its spec.images.registries is empty); the image is in \
             {repository:?}: ask the repository's owners to list its registry"
        ),
        list => format!(
            "{kind_and_name} allows images only from {list:?}, and this one is in {repository:?}: ask the \
             repository's owners to list its registry"
        ),
    };
    Verdict::Untrusted { reason: Untrusted::NotAllowedByPolicy, message }
}

/// The reaction to a revoked model: the stricter of the repository's and the release's.
pub fn on_revocation(repository: Option<RevocationAction>, release: RevocationAction) -> RevocationAction {
    match (repository, release) {
        (Some(RevocationAction::Rollback), _) | (_, RevocationAction::Rollback) => RevocationAction::Rollback,
        _ => RevocationAction::Alert,
    }
}

fn selects(rule: &AllowRule, ns: &Namespace<'_>) -> bool {
    if rule.namespaces.iter().any(|n| n == ns.name) {
        return true;
    }
    let (Some(selector), Some(labels)) = (&rule.namespace_selector, ns.labels) else { return false };
    // A selector the API accepted but kube cannot read selects nothing.
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

/// Whether one rule's paths allow every file `model` may name.
fn covers(rule: &AllowRule, model: &ModelRef) -> bool {
    match model {
        ModelRef::File(t) | ModelRef::Image(t) => matches_any(&rule.paths, t),
        ModelRef::List(list) => list.iter().all(|t| matches_any(&rule.paths, t)),
        // Every file under the prefix: only a pattern that is a literal start followed by
        // `**` can vouch for files not yet known.
        // The start must end a segment (`fraud/**`, or `**`): `fraud**` would cover the
        // prefix `fraudulent/` by its start, though `**` there stays within a segment.
        ModelRef::Prefix(prefix) => rule.paths.iter().any(|p| {
            p.strip_suffix("**").is_some_and(|start| {
                (start.is_empty() || start.ends_with('/')) && !has_glob(start) && prefix.starts_with(start)
            })
        }),
    }
}

fn matches_any(patterns: &[String], path: &str) -> bool {
    patterns.iter().filter_map(|p| matcher(p)).any(|m| m.is_match(path))
}

/// `*` and `?` stay within a path segment, `**` crosses them. A pattern that does not
/// parse matches nothing.
fn matcher(pattern: &str) -> Option<GlobMatcher> {
    GlobBuilder::new(pattern).literal_separator(true).build().ok().map(|g| g.compile_matcher())
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: serde_json::Value) -> RepositoryPolicy {
        serde_json::from_value(serde_json::json!({"allow": rules})).unwrap()
    }

    fn ns<'a>(name: &'a str, labels: &'a BTreeMap<String, String>) -> Namespace<'a> {
        Namespace { name, labels: Some(labels) }
    }

    #[test]
    fn an_image_is_allowed_only_from_a_listed_registry_or_below_it() {
        let trusted = |reference: &str| Verdict::Trusted {
            sha256: "0".repeat(64),
            length: 1,
            files: 1,
            signer: None,
            image: Some(format!("{reference}@sha256:{}", "0".repeat(64))),
        };
        let images = ImagePolicy { registries: vec!["reg.example.com:5000/models".into(), "other.example".into()] };
        let verdict = |reference: &str, images: Option<&ImagePolicy>| {
            within_registries("ClusterModelRepository \"shared\"", images, trusted(reference))
        };
        for ok in ["reg.example.com:5000/models/llm", "reg.example.com:5000/models", "other.example/x/y"] {
            assert_eq!(verdict(ok, Some(&images)), trusted(ok), "{ok}");
        }
        for refused in ["reg.example.com:5000/modelsx/llm", "reg.example.com/models/llm", "evil.example/models"] {
            let v = verdict(refused, Some(&images));
            assert!(
                matches!(&v, Verdict::Untrusted { reason: Untrusted::NotAllowedByPolicy, message } if message.contains(refused)),
                "{v:?}"
            );
        }
        let none = verdict("reg.example.com:5000/models/llm", None);
        assert!(matches!(&none, Verdict::Untrusted { message, .. } if message.contains("allows no image")), "{none:?}");
        // A verdict on files, and a refusal, pass unchanged.
        let file = Verdict::Trusted { sha256: "0".repeat(64), length: 1, files: 1, signer: None, image: None };
        assert_eq!(within_registries("r", None, file.clone()), file);
    }

    #[test]
    fn a_namespace_no_rule_selects_is_refused_with_the_repository_named() {
        let p = policy(serde_json::json!([{"namespaces": ["fraud"], "paths": ["**"]}]));
        let none = BTreeMap::new();
        assert!(allows("prod", &p, &ns("fraud", &none), &ModelRef::File("a/m.onnx".into())).is_ok());
        let err = allows("prod", &p, &ns("risk", &none), &ModelRef::File("a/m.onnx".into())).unwrap_err();
        assert!(err.contains("\"prod\"") && err.contains("\"risk\"") && err.contains("spec.policy.allow"), "{err}");
    }

    #[test]
    fn selectors_match_labels_and_unknown_labels_match_nothing() {
        let p = policy(serde_json::json!([{"namespaceSelector": {"matchLabels": {"team": "ml"}}, "paths": ["**"]}]));
        let ml: BTreeMap<String, String> = [("team".to_string(), "ml".to_string())].into();
        let other: BTreeMap<String, String> = [("team".to_string(), "web".to_string())].into();
        let m = ModelRef::File("m".into());
        assert!(allows("r", &p, &ns("a", &ml), &m).is_ok());
        assert!(allows("r", &p, &ns("a", &other), &m).is_err());
        let unknown = Namespace { name: "a", labels: None };
        assert!(allows("r", &p, &unknown, &m).unwrap_err().contains("could not be read"));
        // `{}` selects every namespace whose labels are known.
        let all = policy(serde_json::json!([{"namespaceSelector": {}, "paths": ["**"]}]));
        assert!(allows("r", &all, &ns("x", &other), &m).is_ok());
    }

    #[test]
    fn paths_stay_within_their_segments_unless_double_starred() {
        let p = policy(serde_json::json!([{"namespaces": ["a"], "paths": ["fraud/*.onnx", "shared/**"]}]));
        let none = BTreeMap::new();
        let check = |m: ModelRef| allows("r", &p, &ns("a", &none), &m).is_ok();
        assert!(check(ModelRef::File("fraud/m.onnx".into())));
        assert!(!check(ModelRef::File("fraud/v2/m.onnx".into())), "* does not cross /");
        assert!(!check(ModelRef::File("fraud/m.bin".into())));
        assert!(check(ModelRef::File("shared/x/y/z.bin".into())));
        assert!(check(ModelRef::List(vec!["fraud/a.onnx".into(), "shared/b".into()])));
        assert!(!check(ModelRef::List(vec!["fraud/a.onnx".into(), "other/b".into()])), "every file of a list");
        assert!(check(ModelRef::Prefix("shared/llm/".into())));
        assert!(!check(ModelRef::Prefix("fraud/".into())), "a prefix needs a ** pattern that covers it");
        let loose = policy(serde_json::json!([{"namespaces": ["a"], "paths": ["models/fraud**"]}]));
        let other_team = ModelRef::Prefix("models/fraudulent-team/".into());
        assert!(allows("r", &loose, &ns("a", &none), &other_team).is_err(), "fraud** is not a directory");
        let err = allows("r", &p, &ns("a", &none), &ModelRef::File("other/m".into())).unwrap_err();
        assert!(err.contains("fraud/*.onnx"), "{err}");
    }

    #[test]
    fn every_path_is_said_explicitly_and_a_broken_pattern_allows_nothing() {
        assert!(
            serde_json::from_value::<RepositoryPolicy>(serde_json::json!({"allow": [{"namespaces": ["a"]}]})).is_err()
        );
        let p = policy(serde_json::json!([{"namespaces": ["a"], "paths": ["**"]}]));
        let none = BTreeMap::new();
        assert!(allows("r", &p, &ns("a", &none), &ModelRef::Prefix("x/".into())).is_ok());
        let broken = policy(serde_json::json!([{"namespaces": ["a"], "paths": ["[unclosed"]}]));
        assert!(allows("r", &broken, &ns("a", &none), &ModelRef::File("[unclosed".into())).is_err());
    }

    #[test]
    fn a_release_can_only_make_revocation_stricter() {
        use RevocationAction::{Alert, Rollback};
        assert_eq!(on_revocation(Some(Rollback), Alert), Rollback);
        assert_eq!(on_revocation(Some(Alert), Rollback), Rollback);
        assert_eq!(on_revocation(Some(Alert), Alert), Alert);
        assert_eq!(on_revocation(None, Alert), Alert);
    }
}

//! The documents point at things that exist: every relative Markdown link and every
//! repository path written in backticks (`docs/...`, `tests/...`, `charts/...`,
//! `operator/...`) in the README, CONTRIBUTING and docs/ resolves. Needs no cluster.

use std::path::Path;

use modelgate_tests::harness::repo_root;

fn documents(root: &Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![root.join("README.md"), root.join("CONTRIBUTING.md"), root.join("charts/modelgate/README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            found.push(entry.path());
        }
    }
    found
}

/// `](target)` links that are neither URLs nor anchors, without their `#anchor`.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or_default().trim();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            links.push(target.to_string());
        }
    }
    links
}

/// Paths of this repository written in backticks, such as `docs/trust.md`.
fn backticked_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| ["docs/", "tests/", "charts/", "operator/"].iter().any(|p| s.starts_with(p)))
        .filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c)))
        // Generated or per-user places, not files of the repository.
        .filter(|s| !s.contains("<") && !s.ends_with("/target"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_relative_link_and_path_in_the_documents_exists() {
    let root = repo_root();
    let mut missing = Vec::new();
    let docs = documents(&root);
    assert!(docs.len() >= 12, "found only {} documents", docs.len());
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        let dir = doc.parent().unwrap();
        for link in relative_links(&text) {
            if !dir.join(&link).exists() {
                missing.push(format!("{}: link {link}", doc.strip_prefix(&root).unwrap().display()));
            }
        }
        for path in backticked_paths(&text) {
            if !root.join(&path).exists() {
                missing.push(format!("{}: path `{path}`", doc.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(missing.is_empty(), "documents name what does not exist:\n{}", missing.join("\n"));
}

#[test]
fn the_checks_find_what_they_look_for() {
    assert_eq!(relative_links("see [gates](gates.md#top) and [x](https://e.org)"), ["gates.md"]);
    assert_eq!(
        backticked_paths("run `tests/demo`, read `docs/gates.md`, `kubectl get`"),
        ["tests/demo", "docs/gates.md"]
    );
}

//! The API reference (`docs/api.md`), generated from the CRD schemas like the CRDs
//! themselves, so it cannot drift from what the API server enforces.

use serde_json::Value;

use super::crds;

/// The reference, in Markdown.
#[allow(clippy::expect_used, reason = "our own CRDs, fixed at build time: no input reaches them")]
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# API reference (`modelgate.dev/v1alpha1`)\n\n\
         Generated from the CRD schemas by `modelgate crd --reference docs/api.md`; do not edit.\n\
         Rules listed under a field are enforced by the API server at `kubectl apply`.\n",
    );
    for crd in crds() {
        let v = serde_json::to_value(&crd).expect("a CRD serializes");
        let kind = &crd.spec.names.kind;
        let schema = v.pointer("/spec/versions/0/schema/openAPIV3Schema").expect("a schema");
        out.push_str(&format!("\n## {kind}\n\n"));
        if let Some(d) = schema.get("description").and_then(Value::as_str).filter(|d| !d.starts_with("Auto-generated"))
        {
            out.push_str(&format!("{}\n\n", one_line(d)));
        }
        for rule in rules(schema) {
            out.push_str(&format!("- rule: {rule}\n"));
        }
        out.push_str("\n| field | type | default | description |\n| --- | --- | --- | --- |\n");
        for part in ["spec", "status"] {
            if let Some(s) = schema.pointer(&format!("/properties/{part}")) {
                fields(part, s, &mut out);
            }
        }
    }
    out
}

fn fields(path: &str, node: &Value, out: &mut String) {
    let Some(props) = node.get("properties").and_then(Value::as_object) else { return };
    let required: Vec<&str> =
        node.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, child) in props {
        let p = format!("{path}.{name}");
        let mut kind = child.get("type").and_then(Value::as_str).unwrap_or("object").to_string();
        if kind == "array"
            && let Some(item) = child.pointer("/items/type").and_then(Value::as_str)
        {
            kind = format!("[]{item}");
        }
        if required.contains(&name.as_str()) {
            kind.push_str(", required");
        }
        let default = child.get("default").map_or(String::new(), |d| format!("`{d}`"));
        let mut text = child.get("description").and_then(Value::as_str).map(one_line).unwrap_or_default();
        for (k, label) in [
            ("minimum", "min"),
            ("maximum", "max"),
            ("minLength", "min length"),
            ("maxLength", "max length"),
            ("maxItems", "max items"),
        ] {
            if let Some(n) = child.get(k).and_then(Value::as_f64) {
                text.push_str(&format!(" ({label} {n})"));
            }
        }
        if let Some(values) = child.get("enum").and_then(Value::as_array) {
            let values: Vec<String> = values.iter().map(|v| format!("`{}`", v.as_str().unwrap_or_default())).collect();
            text.push_str(&format!(" One of {}.", values.join(", ")));
        }
        let item_rules = child.get("items").map(rules).unwrap_or_default();
        for rule in rules(child).into_iter().chain(item_rules) {
            text.push_str(&format!(" Rule: {rule}"));
        }
        out.push_str(&format!("| `{p}` | {kind} | {default} | {} |\n", text.replace('|', "\\|")));
        if p == "spec.template" {
            continue; // a PodTemplateSpec: `kubectl explain pod`
        }
        fields(&p, child, out);
        if let Some(items) = child.get("items") {
            fields(&format!("{p}[]"), items, out);
        }
    }
}

fn rules(node: &Value) -> Vec<String> {
    node.get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("message").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_reference_is_up_to_date() {
        let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        let path = std::path::Path::new(&manifest).parent().unwrap().join("docs/api.md");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == reference_markdown(),
            "{} is out of date; run `cargo run -p modelgate -- crd --reference docs/api.md`",
            path.display()
        );
    }

    #[test]
    fn the_reference_names_fields_defaults_and_rules() {
        let md = reference_markdown();
        assert!(md.contains("| `spec.gates.failureLimit` | integer | `2` |"), "{md}");
        assert!(md.contains("each step sets exactly one of setWeight or pause"));
        assert!(md.contains("| `status.phase` | string |"));
        assert!(!md.contains("spec.template.spec.containers"), "the pod template is not expanded");
    }
}

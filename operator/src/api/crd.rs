//! CRD generation. The YAML in `crds/` is this output, committed and checked in CI.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use super::{ClusterModelRepository, ModelRelease, ModelRepository};

/// The CRDs of modelgate, ready to apply.
///
/// The embedded pod template keeps its full structural schema, so the API server rejects
/// a malformed pod spec at `kubectl apply`, but without its field descriptions: they are
/// most of its size, and `kubectl explain pod.spec` already documents them. That keeps
/// the ModelRelease CRD well under the 256 KiB annotation limit of client-side apply.
#[allow(clippy::expect_used, reason = "our own types, fixed at build time: no input reaches them")]
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut release = ModelRelease::crd();
    for version in &mut release.spec.versions {
        let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) else {
            continue;
        };
        let mut json = serde_json::to_value(&*schema).expect("a CRD schema serialises to JSON");
        if let Some(template) = json.pointer_mut("/properties/spec/properties/template") {
            strip_nested_descriptions(template);
            // Bounded lists keep the template's CEL rules (unique names) within the API
            // server's cost budget; a model server's pod needs far fewer.
            for (list, max) in [("containers", 32), ("initContainers", 32), ("volumes", 128)] {
                if let Some(Value::Object(node)) = template.pointer_mut(&format!("/properties/spec/properties/{list}"))
                {
                    node.insert("maxItems".into(), max.into());
                }
            }
            for list in ["containers", "initContainers"] {
                let mounts = format!("/properties/spec/properties/{list}/items/properties/volumeMounts");
                if let Some(Value::Object(node)) = template.pointer_mut(&mounts) {
                    node.insert("maxItems".into(), 64.into());
                }
            }
            // What a team can stuff into a pod without limit is refused at apply, with the
            // field named: arguments, commands, environment, the template's labels and
            // annotations. (The operator keeps no template over 64 KiB in any case; these
            // bounds only make the usual excess an error at `kubectl apply`.)
            for list in ["containers", "initContainers"] {
                let container = format!("/properties/spec/properties/{list}/items/properties");
                for (field, items, length) in [("args", 256, 4096), ("command", 64, 4096), ("env", 256, 0)] {
                    if let Some(Value::Object(node)) = template.pointer_mut(&format!("{container}/{field}")) {
                        node.insert("maxItems".into(), items.into());
                        if length > 0
                            && let Some(Value::Object(item)) = node.get_mut("items")
                        {
                            item.insert("maxLength".into(), length.into());
                        }
                    }
                }
                if let Some(Value::Object(value)) =
                    template.pointer_mut(&format!("{container}/env/items/properties/value"))
                {
                    value.insert("maxLength".into(), 16384.into());
                }
            }
            for (map, entries, length) in [("labels", 64, 63), ("annotations", 64, 16384)] {
                if let Some(Value::Object(node)) =
                    template.pointer_mut(&format!("/properties/metadata/properties/{map}"))
                {
                    node.insert("maxProperties".into(), entries.into());
                    if let Some(Value::Object(value)) = node.get_mut("additionalProperties") {
                        value.insert("maxLength".into(), length.into());
                    }
                }
            }
            // Names are DNS labels (63 characters) in every pod anyway; saying so here
            // lets the API server bound the cost of comparing them.
            for name in [
                "containers/items/properties/name",
                "initContainers/items/properties/name",
                "volumes/items/properties/name",
                "containers/items/properties/volumeMounts/items/properties/name",
                "initContainers/items/properties/volumeMounts/items/properties/name",
            ] {
                if let Some(Value::Object(node)) = template.pointer_mut(&format!("/properties/spec/properties/{name}"))
                {
                    node.insert("maxLength".into(), 63.into());
                }
            }
        }
        *schema = serde_json::from_value(json).expect("a stripped schema is still a schema");
    }
    vec![ClusterModelRepository::crd(), ModelRepository::crd(), release]
}

/// Removes `description` from every schema below `node`, keeping `node`'s own.
fn strip_nested_descriptions(node: &mut Value) {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("description");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if let Value::Object(map) = node {
        for (key, child) in map.iter_mut() {
            if key != "description" {
                strip(child);
            }
        }
    }
}

/// Each CRD as `(file name, YAML)`, the files of `crds/`.
#[allow(clippy::expect_used, reason = "our own types, fixed at build time: no input reaches them")]
pub fn crds_yaml() -> Vec<(String, String)> {
    crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("crd"));
            let yaml = serde_yaml::to_string(&crd).expect("a CRD serialises to YAML");
            (file, format!("# Generated by `modelgate crd`; do not edit.\n{yaml}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_are_up_to_date() {
        // `crds/` is what users apply; the chart carries a copy (Helm reads only files
        // inside the chart). Regenerate both with the command below.
        // At run time: a target directory shared by two checkouts must not compare
        // against the other checkout's files.
        let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        let root = std::path::Path::new(&manifest).parent().unwrap();
        for dir in ["crds", "charts/modelgate/files/crds"] {
            for (name, yaml) in crds_yaml() {
                let path = root.join(dir).join(&name);
                let committed = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    committed == yaml,
                    "{} is out of date; run `cargo run -p modelgate -- crd --out crds --out charts/modelgate/files/crds --reference docs/api.md`",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn release_crd_fits_client_side_apply() {
        // kubectl apply (client side) stores the whole object in an annotation capped at
        // 256 KiB; leave ample room for growth.
        let (_, yaml) = crds_yaml().into_iter().find(|(f, _)| f.starts_with("modelreleases")).unwrap();
        let json = serde_json::to_string(&serde_yaml::from_str::<Value>(&yaml).unwrap()).unwrap();
        assert!(json.len() < 128 * 1024, "ModelRelease CRD is {} bytes of JSON", json.len());
    }

    #[test]
    fn template_keeps_its_structure_but_not_descriptions() {
        let crd = serde_json::to_value(&crds()[2]).unwrap();
        let template =
            crd.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/template").unwrap();
        assert!(template.get("description").is_some());
        let containers = template.pointer("/properties/spec/properties/containers").unwrap();
        assert_eq!(containers["type"], "array");
        assert!(containers.get("description").is_none());
        assert!(serde_json::to_string(template).unwrap().matches("\"description\"").count() == 1);
    }

    #[test]
    fn every_modelgate_field_has_a_description() {
        fn walk(path: &str, v: &Value, missing: &mut Vec<String>) {
            if path.contains(".spec.template.") || path.ends_with(".conditions[]") {
                return; // Kubernetes' own types, documented by `kubectl explain pod`
            }
            if let Some(props) = v.get("properties").and_then(Value::as_object) {
                for (name, child) in props {
                    let p = format!("{path}.{name}");
                    if p.contains(".spec.template.") {
                        continue;
                    }
                    if child.get("description").is_none()
                        && !matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
                    {
                        missing.push(p.clone());
                    }
                    walk(&p, child, missing);
                }
            }
            if let Some(items) = v.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        for crd in crds() {
            let v = serde_json::to_value(&crd).unwrap();
            walk(&crd.spec.names.kind, v.pointer("/spec/versions/0/schema/openAPIV3Schema").unwrap(), &mut missing);
        }
        assert!(missing.is_empty(), "fields without description: {missing:?}");
    }
}

//! Which signed files make a model: one target, an explicit list, every target under
//! a directory prefix, or one target that is an OCI image manifest. One value the spec, the status, the trust lookups and the pod's
//! fetch all agree on, so "the same model" means the same thing everywhere.

use std::fmt;

/// Most files a model may have (a list or a prefix). A prefix that matches more is
/// refused rather than fetched: the bound keeps a lookup's cost and a pod's status small.
pub const MAX_MODEL_FILES: usize = 1024;
/// Most entries of `model.targets` (the list is kept in status for rollback).
pub const MAX_TARGET_LIST: usize = 64;
/// Largest OCI manifest accepted as a model image's target (the size registries refuse
/// manifests above, as the OCI distribution spec lets them).
pub const MAX_IMAGE_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Name of the manifest `modelgate fetch` writes beside a model of several files: the
/// verified paths, lengths and sha256s. Its own sha256 is the revision's identity.
pub const MANIFEST_FILE: &str = ".modelgate-manifest.json";

/// A model as a selection of TUF targets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelRef {
    /// One target; the file keeps its last path segment as its name.
    File(String),
    /// Several targets; each keeps its last path segment as its name.
    List(Vec<String>),
    /// Every target under a directory (ends with `/`); each keeps its path below it.
    Prefix(String),
    /// One target that is an OCI image manifest: its signed sha256 is the image's digest,
    /// and the node pulls and mounts the image (the files are its layers).
    Image(String),
}

/// What marks an image's key: a control character, which no admitted target contains.
const IMAGE_KEY: char = '\u{1}';

impl ModelRef {
    /// The selection a spec's `model` makes (`image`, `prefix`, then `targets`, then
    /// `target`: admission lets only one through). A one-entry list is that one file.
    pub fn of_spec(model: &super::ModelSource) -> Self {
        if let Some(image) = &model.image {
            return Self::Image(image.target.clone());
        }
        match (&model.prefix, model.targets.as_slice()) {
            (Some(p), _) => Self::Prefix(p.clone()),
            (None, [one]) => Self::File(one.clone()),
            (None, []) => Self::File(model.target.clone()),
            (None, list) => Self::List(list.to_vec()),
        }
    }

    /// The selection a revision in status records (`target`, and `targets` for a list).
    pub fn of_status(target: &str, targets: &[String]) -> Self {
        match targets {
            [] => Self::parse_single(target),
            [one] => Self::File(one.clone()),
            list => Self::List(list.to_vec()),
        }
    }

    fn parse_single(target: &str) -> Self {
        if target.ends_with('/') { Self::Prefix(target.to_string()) } else { Self::File(target.to_string()) }
    }

    /// A string naming the selection exactly, for maps keyed by model. Target paths are
    /// admitted without control characters, so a newline cannot occur inside one.
    pub fn key(&self) -> String {
        match self {
            Self::File(t) | Self::Prefix(t) => t.clone(),
            Self::List(l) => l.join("\n"),
            Self::Image(t) => format!("{IMAGE_KEY}{t}"),
        }
    }

    /// The inverse of `key`.
    pub fn from_key(key: &str) -> Self {
        if let Some(image) = key.strip_prefix(IMAGE_KEY) {
            Self::Image(image.to_string())
        } else if key.contains('\n') {
            Self::List(key.split('\n').map(str::to_string).collect())
        } else {
            Self::parse_single(key)
        }
    }

    /// `status.*.target`: the path, the prefix, or the first of a list and a count.
    pub fn display(&self) -> String {
        self.to_string()
    }

    /// `status.*.targets`: the list, for the list form only.
    pub fn list(&self) -> Vec<String> {
        match self {
            Self::List(l) => l.clone(),
            _ => Vec::new(),
        }
    }

    /// Whether the model is several files (a manifest describes it) rather than one.
    pub fn is_set(&self) -> bool {
        matches!(self, Self::List(_) | Self::Prefix(_))
    }

    /// The signed target paths that name the model itself (not a prefix).
    pub fn target_paths(&self) -> &[String] {
        match self {
            Self::File(t) | Self::Image(t) => std::slice::from_ref(t),
            Self::List(l) => l,
            Self::Prefix(_) => &[],
        }
    }
}

/// A target path, or a prefix when it ends in `/` (as `spec.model.target` reads).
impl From<&str> for ModelRef {
    fn from(target: &str) -> Self {
        Self::parse_single(target)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(t) | Self::Prefix(t) | Self::Image(t) => f.write_str(t),
            Self::List(l) => match l.split_first() {
                Some((first, rest)) => write!(f, "{first} (+{} more)", rest.len()),
                None => f.write_str("(no targets)"),
            },
        }
    }
}

/// Where a target of `model` lands below the mount path, or why it cannot: a name
/// that would escape the directory or shadow the manifest.
pub fn mount_path_of(model: &ModelRef, target: &str) -> Result<String, String> {
    let rel = match model {
        ModelRef::File(_) | ModelRef::List(_) | ModelRef::Image(_) => target.rsplit('/').next().unwrap_or(target),
        ModelRef::Prefix(p) => {
            target.strip_prefix(p.as_str()).ok_or_else(|| format!("{target:?} is not under {p:?}"))?
        }
    };
    let bad_segment = rel.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if bad_segment || rel.chars().any(char::is_control) || rel.contains('\\') {
        return Err(format!("target {target:?} has a path that cannot be a file name in the model directory"));
    }
    if model.is_set() && rel == MANIFEST_FILE {
        return Err(format!("target {target:?} would overwrite the manifest {MANIFEST_FILE} modelgate writes"));
    }
    Ok(rel.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_status_names_the_same_model() {
        let models = [
            ModelRef::File("fraud/2.4.0/model.onnx".into()),
            ModelRef::Prefix("llama-3/8b/2026-11-01/".into()),
            ModelRef::List(vec!["a/config.json".into(), "b/weights.bin".into()]),
            ModelRef::Image("llm/3.0.0/manifest.json".into()),
        ];
        for m in models {
            assert_eq!(ModelRef::from_key(&m.key()), m);
            if !matches!(m, ModelRef::Image(_)) {
                assert_eq!(ModelRef::of_status(&m.display(), &m.list()), m);
            }
        }
        // An image and a file of the same path are different models.
        assert_ne!(ModelRef::Image("m".into()).key(), ModelRef::File("m".into()).key());
        assert_eq!(
            ModelRef::List(vec!["a/c.json".into(), "b/w.bin".into(), "x".into()]).display(),
            "a/c.json (+2 more)"
        );
    }

    #[test]
    fn files_land_by_name_or_below_the_prefix_and_never_outside() {
        let p = ModelRef::Prefix("m/1/".into());
        assert_eq!(mount_path_of(&p, "m/1/tokenizer/vocab.json").unwrap(), "tokenizer/vocab.json");
        assert!(mount_path_of(&p, "m/1/../../etc/passwd").is_err());
        assert!(mount_path_of(&p, "m/1//x").is_err());
        assert!(mount_path_of(&p, "m/2/x").is_err());
        assert!(mount_path_of(&p, "m/1/.modelgate-manifest.json").is_err());
        let l = ModelRef::List(vec![]);
        assert_eq!(mount_path_of(&l, "a/b/c.bin").unwrap(), "c.bin");
        assert!(mount_path_of(&l, "a/b/..").is_err());
        assert!(mount_path_of(&ModelRef::File(String::new()), "a/\u{7}").is_err());
    }
}

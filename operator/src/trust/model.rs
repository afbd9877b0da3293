//! A model as its verified files: resolving a `ModelRef` against the signed metadata
//! (one target, a list, or every target under a prefix), the manifest whose sha256 is
//! a set's identity, and the checks that make a set safe to lay out in one directory.

use std::collections::BTreeSet;

use aws_lc_rs::digest::{SHA256, digest};
use serde::Serialize;

use reqwest::Url;
use rustls_pki_types::UnixTime;

use super::{
    TargetFile, TrustError, Updater,
    fetch::target_url,
    provenance::{self, MAX_SIGNATURE_BYTES, Policy, ProvenanceError, check_files, signature_target},
    updater::{Digests, check_hashes},
};
use crate::api::{MAX_IMAGE_MANIFEST_BYTES, MAX_MODEL_FILES, MAX_TARGET_LIST, ModelRef, mount_path_of};

/// One verified file of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// TUF target path.
    pub target: String,
    /// Path below the model directory.
    pub path: String,
    /// Signed sha256, lowercase hex.
    pub sha256: String,
    pub info: TargetFile,
}

/// What identifies a verified model: the file's sha256 (one file) or the manifest's
/// (several), the total length and the count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub sha256: String,
    pub length: u64,
    pub files: usize,
}

/// The files of a model, sorted by target path.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSet {
    pub model: ModelRef,
    pub files: Vec<ModelFile>,
    /// For an image model: the reference the node pulls, `<repository>@sha256:<digest>`.
    pub image: Option<String>,
}

#[derive(Serialize)]
struct Manifest<'a> {
    files: Vec<ManifestEntry<'a>>,
}

#[derive(Serialize)]
struct ManifestEntry<'a> {
    target: &'a str,
    path: &'a str,
    length: u64,
    sha256: &'a str,
}

impl ModelSet {
    /// Checks what the signed entries must satisfy to become one directory: a sha256 on
    /// each, lengths that add up, paths that neither escape nor collide.
    pub fn new(model: ModelRef, found: Vec<(String, TargetFile)>) -> Result<Self, TrustError> {
        let mut files = Vec::with_capacity(found.len());
        let mut paths = BTreeSet::new();
        let mut total = 0u64;
        for (target, info) in found {
            let sha256 = info.hash("sha256")?.ok_or_else(|| TrustError::NoSha256 { target: target.clone() })?;
            total = total.checked_add(info.length).filter(|t| i64::try_from(*t).is_ok()).ok_or_else(|| {
                TrustError::Malformed {
                    what: format!("target {target:?}"),
                    reason: "the signed lengths of the model's files add up beyond any real size".into(),
                }
            })?;
            let path = mount_path_of(&model, &target)
                .map_err(|reason| TrustError::Malformed { what: "the model's files".into(), reason })?;
            if !paths.insert(path.clone()) {
                return Err(TrustError::Malformed {
                    what: "the model's files".into(),
                    reason: format!("two targets would both be written to {path:?}"),
                });
            }
            files.push(ModelFile { target, path, sha256, info });
        }
        // A file and a directory of the same name ("a" and "a/b") cannot both exist.
        for p in &paths {
            let mut dir = p.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                if paths.contains(parent) {
                    return Err(TrustError::Malformed {
                        what: "the model's files".into(),
                        reason: format!("{parent:?} would be both a file and the directory of {p:?}"),
                    });
                }
                dir = parent;
            }
        }
        files.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(Self { model, files, image: None })
    }

    /// The manifest `modelgate fetch` writes beside a set: canonical JSON (sorted by
    /// target), so the operator and every pod derive the same bytes and digest.
    pub fn manifest(&self) -> Vec<u8> {
        let files = self
            .files
            .iter()
            .map(|f| ManifestEntry { target: &f.target, path: &f.path, length: f.info.length, sha256: &f.sha256 })
            .collect();
        // Serializing plain strings and numbers cannot fail; empty bytes would only
        // make every digest comparison fail.
        serde_json::to_vec(&Manifest { files }).unwrap_or_default()
    }

    pub fn identity(&self) -> Identity {
        let length = self.files.iter().map(|f| f.info.length).sum();
        let sha256 = match (&self.model, self.files.as_slice()) {
            (ModelRef::File(_) | ModelRef::Image(_), [one]) => one.sha256.clone(),
            _ => hex::encode(digest(&SHA256, &self.manifest())),
        };
        Identity { sha256, length, files: self.files.len() }
    }
}

/// How a model's signature is checked: against the security team's signers (the
/// operator), or only for the files its statement names (a pod, and `kubectl modelgate`
/// for a cluster repository, whose policy it cannot read: the operator verified the
/// signer, and the repository signs the bundle's bytes).
#[derive(Clone, Debug)]
pub enum SignatureCheck {
    Signers(std::sync::Arc<Policy>),
    FilesOnly,
}

impl SignatureCheck {
    /// What verdicts made with this check depend on.
    pub fn fingerprint(&self) -> &str {
        match self {
            Self::Signers(policy) => policy.fingerprint(),
            Self::FilesOnly => "files-only",
        }
    }
}

/// The signature beside `set`, fetched from `targets` as TUF signs it (its length
/// bounded, its hashes checked) and checked as `check` says: the signer it names, if
/// checked (`FilesOnly` says it was not). A signature the repository does not list is
/// `SignatureMissing`.
pub async fn signature(
    updater: &mut Updater,
    targets: &Url,
    set: &ModelSet,
    check: &SignatureCheck,
    now: UnixTime,
) -> Result<Option<String>, TrustError> {
    let target = signature_target(&set.model);
    let bytes = match small_target(updater, targets, &target, MAX_SIGNATURE_BYTES, "model signature").await {
        Err(TrustError::UnknownTarget { .. }) => return Err(ProvenanceError::Missing { target }.into()),
        found => found?,
    };
    match check {
        SignatureCheck::Signers(policy) => {
            let signed = provenance::verify(policy, &target, &bytes, now)?;
            check_files(&target, &signed.files, set)?;
            Ok(Some(signed.signer))
        }
        SignatureCheck::FilesOnly => {
            check_files(&target, &provenance::statement_of(&target, &bytes)?, set)?;
            Ok(Some(format!("not checked here (the operator checks who signed {target:?})")))
        }
    }
}

/// A small target (a signature, an image manifest) fetched from `targets` as TUF signs
/// it: its signed length bounded by `limit`, its length and hashes checked.
async fn small_target(
    updater: &mut Updater,
    targets: &Url,
    target: &str,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, TrustError> {
    let info = updater.target(target).await?;
    if info.length > limit {
        return Err(TrustError::TooLarge { what: format!("{what} {target:?}"), limit });
    }
    let url = target_url(targets, target, &info, updater.consistent_snapshot())?;
    let bytes = updater.transport().get(&url, info.length).await?;
    if bytes.len() as u64 != info.length {
        return Err(TrustError::Hash {
            what: format!("target {target:?}"),
            reason: format!("length {} differs from the signed length {}", bytes.len(), info.length),
        });
    }
    check_hashes(&format!("target {target:?}"), &info.hashes, &Digests::of(&bytes))?;
    Ok(bytes.to_vec())
}

/// An image model's manifest, fetched as TUF signs it and checked for what the node
/// will do with it (`image::check_manifest`). Nothing else of an image is fetched here.
pub async fn image_manifest(updater: &mut Updater, targets: &Url, set: &ModelSet) -> Result<(), TrustError> {
    let ModelRef::Image(target) = &set.model else { return Ok(()) };
    let bytes = small_target(updater, targets, target, MAX_IMAGE_MANIFEST_BYTES, "image manifest").await?;
    super::image::check_manifest(target, &bytes).map(|_| ())
}

/// The files `model` names, as the repository signs them now.
pub async fn resolve(updater: &mut Updater, model: &ModelRef) -> Result<ModelSet, TrustError> {
    let found = match model {
        ModelRef::Image(t) => {
            let info = updater.target(t).await?;
            let image = super::image::reference(t, &info)?;
            let mut set = ModelSet::new(model.clone(), vec![(t.clone(), info)])?;
            set.image = Some(image);
            return Ok(set);
        }
        ModelRef::File(t) => vec![(t.clone(), updater.target(t).await?)],
        ModelRef::List(list) => {
            if list.len() > MAX_TARGET_LIST {
                return Err(TrustError::TooMany { what: "entries in model.targets".into(), limit: MAX_TARGET_LIST });
            }
            let mut found = Vec::with_capacity(list.len());
            for t in list {
                found.push((t.clone(), updater.target(t).await?));
            }
            found
        }
        ModelRef::Prefix(prefix) => {
            let found = updater.targets_under(prefix, MAX_MODEL_FILES).await?;
            if found.is_empty() {
                return Err(TrustError::UnknownTarget { target: prefix.clone() });
            }
            found
        }
    };
    ModelSet::new(model.clone(), found)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A signed target entry of `len` bytes whose sha256 is `fill` repeated.
    pub(in crate::trust) fn file(len: u64, fill: char) -> TargetFile {
        TargetFile {
            length: len,
            hashes: [("sha256".to_string(), fill.to_string().repeat(64))].into_iter().collect(),
            custom: None,
        }
    }

    #[test]
    fn a_set_is_identified_by_its_canonical_manifest() {
        let prefix = ModelRef::Prefix("m/1/".into());
        let a = ModelSet::new(
            prefix.clone(),
            vec![("m/1/b.bin".into(), file(2, 'b')), ("m/1/a.json".into(), file(1, 'a'))],
        )
        .unwrap();
        let b = ModelSet::new(
            prefix.clone(),
            vec![("m/1/a.json".into(), file(1, 'a')), ("m/1/b.bin".into(), file(2, 'b'))],
        )
        .unwrap();
        assert_eq!(a.identity(), b.identity(), "order of discovery does not matter");
        assert_eq!((a.identity().length, a.identity().files), (3, 2));
        let text = String::from_utf8(a.manifest()).unwrap();
        assert!(text.starts_with(r#"{"files":[{"target":"m/1/a.json","path":"a.json","length":1,"sha256":"aaaa"#));
        let changed =
            ModelSet::new(prefix, vec![("m/1/a.json".into(), file(1, 'a')), ("m/1/b.bin".into(), file(3, 'b'))])
                .unwrap();
        assert_ne!(changed.identity().sha256, a.identity().sha256, "a length is part of the identity");
        // One file keeps the identity it always had: its own sha256.
        let one = ModelSet::new(ModelRef::File("x/m.onnx".into()), vec![("x/m.onnx".into(), file(5, 'c'))]).unwrap();
        assert_eq!(one.identity().sha256, "c".repeat(64));
    }

    #[test]
    fn a_set_that_cannot_be_one_directory_is_refused() {
        let prefix = ModelRef::Prefix("m/".into());
        let clash = ModelSet::new(prefix.clone(), vec![("m/a".into(), file(1, 'a')), ("m/a/b".into(), file(1, 'b'))]);
        assert_eq!(clash.unwrap_err().reason(), crate::trust::Reason::Malformed);
        let list = ModelRef::List(vec!["x/w.bin".into(), "y/w.bin".into()]);
        let same_name = ModelSet::new(list, vec![("x/w.bin".into(), file(1, 'a')), ("y/w.bin".into(), file(1, 'b'))]);
        assert_eq!(same_name.unwrap_err().reason(), crate::trust::Reason::Malformed);
        let huge =
            ModelSet::new(prefix.clone(), vec![("m/a".into(), file(u64::MAX, 'a')), ("m/b".into(), file(1, 'b'))]);
        assert_eq!(huge.unwrap_err().reason(), crate::trust::Reason::Malformed);
        let mut unsigned = file(1, 'a');
        unsigned.hashes.clear();
        assert_eq!(
            ModelSet::new(prefix, vec![("m/a".into(), unsigned)]).unwrap_err().reason(),
            crate::trust::Reason::NoSha256
        );
    }
}

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
    let info = match updater.target(&target).await {
        Err(TrustError::UnknownTarget { .. }) => return Err(ProvenanceError::Missing { target }.into()),
        found => found?,
    };
    if info.length > MAX_SIGNATURE_BYTES {
        return Err(TrustError::TooLarge { what: format!("model signature {target:?}"), limit: MAX_SIGNATURE_BYTES });
    }
    let url = target_url(targets, &target, &info, updater.consistent_snapshot())?;
    let bytes = updater.transport().get(&url, info.length).await?;
    if bytes.len() as u64 != info.length {
        return Err(TrustError::Hash {
            what: format!("target {target:?}"),
            reason: format!("length {} differs from the signed length {}", bytes.len(), info.length),
        });
    }
    check_hashes(&format!("target {target:?}"), &info.hashes, &Digests::of(&bytes))?;
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

/// The image an OCI manifest target pins: the registry repository its signed custom
/// metadata names (`{"oci": {"repository": "host[:port]/path"}}`), at the digest TUF
/// signs. Its length is bounded as a manifest's, since the node fetches those bytes.
pub fn image_reference(target: &str, info: &TargetFile) -> Result<String, TrustError> {
    if info.length > MAX_IMAGE_MANIFEST_BYTES {
        return Err(TrustError::TooLarge {
            what: format!("image manifest {target:?} (an OCI manifest is small; is this the model itself?)"),
            limit: MAX_IMAGE_MANIFEST_BYTES,
        });
    }
    let sha256 = info.hash("sha256")?.ok_or_else(|| TrustError::NoSha256 { target: target.into() })?;
    let malformed = |reason: String| TrustError::Malformed { what: format!("target {target:?}"), reason };
    let repository = info
        .custom
        .as_ref()
        .and_then(|c| c.get("oci"))
        .and_then(|o| o.get("repository"))
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            malformed(
                "an image model's manifest target must name its registry repository in its signed custom \
                 metadata ({\"oci\": {\"repository\": \"registry.example.com/models/llm\"}}); ask its publisher"
                    .into(),
            )
        })?;
    let whole = format!("{repository}@sha256:{}", sha256.to_ascii_lowercase());
    // The parser fills in a default registry (docker.io) and tag; only a reference that
    // names its registry and nothing else survives unchanged.
    let parsed = oci_spec::distribution::Reference::try_from(whole.as_str())
        .ok()
        .filter(|r| r.tag().is_none() && r.whole() == whole && r.repository() != repository);
    match parsed {
        Some(_) => Ok(whole),
        None => {
            let shown: String = repository.chars().take(256).filter(|c| !c.is_control()).collect();
            Err(malformed(format!(
                "its signed oci.repository {shown:?} is not a registry repository such as \
                 registry.example.com/models/llm (host, optional port, path; no tag or digest)"
            )))
        }
    }
}

/// The files `model` names, as the repository signs them now.
pub async fn resolve(updater: &mut Updater, model: &ModelRef) -> Result<ModelSet, TrustError> {
    let found = match model {
        ModelRef::Image(t) => {
            let info = updater.target(t).await?;
            let image = image_reference(t, &info)?;
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
mod tests {
    use super::*;

    fn file(len: u64, fill: char) -> TargetFile {
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
    fn an_image_is_the_signed_repository_at_the_signed_digest_and_nothing_else() {
        let signed = |repository: serde_json::Value, length| TargetFile {
            custom: Some(serde_json::json!({"oci": {"repository": repository}})),
            ..file(length, 'A')
        };
        let digest = format!("sha256:{}", "a".repeat(64));
        for (repository, host) in [("127.0.0.1:5443/models/llm", "127.0.0.1:5443"), ("registry.example.com/m", "")] {
            let reference = image_reference("m/manifest.json", &signed(repository.into(), 900)).unwrap();
            assert_eq!(reference, format!("{repository}@{digest}"));
            assert!(reference.starts_with(host));
        }
        let refused = |info: &TargetFile| image_reference("m/manifest.json", info).unwrap_err().reason();
        use crate::trust::Reason::{Malformed, TooLarge};
        // No registry (the parser would say docker.io), a tag, a digest, a scheme, junk.
        for bad in [
            "llm",
            "library/llm",
            "r.example.com/llm:3.0",
            "r.example.com/llm@sha256:00",
            "https://r.example.com/llm",
            "R.example.com/LLM",
            "r.example.com/llm\n",
            "",
        ] {
            assert_eq!(refused(&signed(bad.into(), 900)), Malformed, "{bad:?}");
        }
        assert_eq!(refused(&signed(serde_json::json!(7), 900)), Malformed);
        assert_eq!(refused(&file(900, 'a')), Malformed, "no custom metadata");
        assert_eq!(refused(&signed("r.example.com/llm".into(), MAX_IMAGE_MANIFEST_BYTES + 1)), TooLarge);
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

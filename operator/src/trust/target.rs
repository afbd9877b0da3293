//! One target: the digest the operator demands and its download into a file
//! (streamed while hashing, never a byte past the signed length; see `fetch`).

use std::path::Path;

use reqwest::Url;

use super::{
    Identity, TrustError,
    fetch::{Progress, fetch_file},
    metadata::TargetFile,
    store::store_err,
    transport::Transport,
};

/// What the operator already verified and demands again (the init container's args).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Of the file, or of a set's manifest.
    pub sha256: String,
    pub length: u64,
    pub files: usize,
}

/// Checks the model as signed now against the operator-given identity.
pub fn check_expected(name: &str, id: &Identity, e: &Expected) -> Result<(), TrustError> {
    let mismatch = |reason: String| TrustError::TargetMismatch { target: name.into(), reason };
    if id.files != e.files {
        return Err(mismatch(format!("the repository now signs {} files, not the expected {}", id.files, e.files)));
    }
    if id.length != e.length {
        return Err(mismatch(format!("signed length {} differs from the expected {}", id.length, e.length)));
    }
    if !id.sha256.eq_ignore_ascii_case(&e.sha256) {
        return Err(mismatch(format!("signed sha256 {} differs from the expected {}", id.sha256, e.sha256)));
    }
    Ok(())
}

/// Downloads `name` to `out`, verified against its signed `info`: streamed to a
/// temporary file while hashing, renamed into place only after every check passed.
pub async fn download(
    transport: &Transport,
    url: &Url,
    name: &str,
    info: &TargetFile,
    out: &Path,
) -> Result<(), TrustError> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
    let tmp = tempfile::Builder::new().prefix(".modelgate-").tempfile_in(dir).map_err(|e| store_err(dir, e))?;
    fetch_file(transport, url, name, info, tmp.path(), &Progress::default()).await?;
    tmp.persist(out).map_err(|e| store_err(out, e.error))?;
    Ok(())
}

/// Whether `path` already holds exactly this target (hashes and length match).
pub fn already_present(path: &Path, info: &TargetFile) -> bool {
    super::fetch::matches_signed(path, info)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::trust::fetch::target_url;

    fn info(hashes: &[(&str, &str)]) -> TargetFile {
        TargetFile {
            length: 10,
            hashes: hashes.iter().map(|(a, h)| (a.to_string(), h.to_string())).collect::<BTreeMap<_, _>>(),
            custom: None,
        }
    }

    #[test]
    fn consistent_snapshot_targets_are_hash_prefixed_in_their_directory() {
        let base = Url::parse("https://tuf.example.com/targets").unwrap();
        let h256 = "ab".repeat(32);
        let i = info(&[("sha256", &h256)]);
        let url = |name: &str, consistent| target_url(&base, name, &i, consistent).unwrap().to_string();
        assert_eq!(
            url("fraud/2.4.0/model.onnx", true),
            format!("https://tuf.example.com/targets/fraud/2.4.0/{h256}.model.onnx")
        );
        assert_eq!(url("model.onnx", true), format!("https://tuf.example.com/targets/{h256}.model.onnx"));
        assert_eq!(url("fraud/2.4.0/model.onnx", false), "https://tuf.example.com/targets/fraud/2.4.0/model.onnx");
        // sha512-only targets use that hash.
        let h512 = "cd".repeat(64);
        let only512 = info(&[("sha512", &h512)]);
        assert_eq!(target_url(&base, "m.bin", &only512, true).unwrap().path(), format!("/targets/{h512}.m.bin"));
        // A hash a signer filled with a path is refused, not joined into the URL.
        let crafted = info(&[("sha256", "../../../admin")]);
        assert_eq!(target_url(&base, "m.bin", &crafted, true).unwrap_err().reason(), crate::trust::Reason::Malformed);
    }

    #[test]
    fn the_operator_given_digest_length_and_count_are_demanded() {
        let id = Identity { sha256: "ABC".into(), length: 10, files: 2 };
        let e = |sha256: &str, length, files| Expected { sha256: sha256.into(), length, files };
        assert!(check_expected("t", &id, &e("abc", 10, 2)).is_ok());
        for wrong in [e("abd", 10, 2), e("abc", 11, 2), e("abc", 10, 1)] {
            assert_eq!(
                check_expected("t", &id, &wrong).unwrap_err().reason(),
                crate::trust::Reason::TargetMismatch,
                "{wrong:?}"
            );
        }
    }
}

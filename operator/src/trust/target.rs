//! Downloading a target: streamed to a temporary file while hashing (memory bounded
//! whatever the size), never a byte past the signed length, renamed into place only
//! after every check passed.

use std::{io::Write, path::Path};

use aws_lc_rs::digest::{Context, SHA256, SHA512};
use bytes::Bytes;
use reqwest::Url;

use super::{
    TrustError,
    metadata::TargetFile,
    store::store_err,
    transport::Transport,
    updater::{Digests, check_hashes},
};

/// What the operator already verified and demands again (the init container's args).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub sha256: String,
    pub length: u64,
}

/// Checks the signed target against the operator-given digest and length.
pub fn check_expected(name: &str, info: &TargetFile, expected: Option<&Expected>) -> Result<(), TrustError> {
    let Some(e) = expected else { return Ok(()) };
    let mismatch = |reason: String| TrustError::TargetMismatch { target: name.into(), reason };
    if info.length != e.length {
        return Err(mismatch(format!("signed length {} differs from the expected {}", info.length, e.length)));
    }
    match info.hashes.get("sha256") {
        Some(h) if h.eq_ignore_ascii_case(&e.sha256) => Ok(()),
        Some(h) => Err(mismatch(format!("signed sha256 {h} differs from the expected {}", e.sha256))),
        None => Err(mismatch("the signed metadata lists no sha256 to compare with the expected one".into())),
    }
}

/// The URL of a target, hash-prefixed when the repository uses consistent snapshots.
pub fn target_url(base: &Url, name: &str, info: &TargetFile, consistent: bool) -> Result<Url, TrustError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let path = if consistent {
        let hash = match info.hash("sha256")? {
            Some(h) => h,
            None => info.hash("sha512")?.ok_or_else(|| TrustError::Hash {
                what: name.into(),
                reason: "no sha256 or sha512 to build a consistent-snapshot name".into(),
            })?,
        };
        match name.rsplit_once('/') {
            Some((dir, file)) => format!("{dir}/{hash}.{file}"),
            None => format!("{hash}.{name}"),
        }
    } else {
        name.to_string()
    };
    base.join(&path).map_err(|e| TrustError::Malformed { what: format!("target {name:?}"), reason: e.to_string() })
}

/// Downloads `name` to `out`, verified against its signed `info`. The network side
/// and the hashing/writing side run on two threads joined by a small bounded queue, so
/// TLS and sha256 each get a core and memory stays bounded.
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
    // Hash only what the signed metadata lists: each algorithm costs a full pass.
    let mut sha256 = info.hashes.contains_key("sha256").then(|| Context::new(&SHA256));
    let mut sha512 = info.hashes.contains_key("sha512").then(|| Context::new(&SHA512));
    let mut file = std::io::BufWriter::with_capacity(1 << 20, tmp);
    let received = transport
        .stream(url, info.length, |chunk: Bytes| {
            if let Some(c) = sha256.as_mut() {
                c.update(&chunk);
            }
            if let Some(c) = sha512.as_mut() {
                c.update(&chunk);
            }
            file.write_all(&chunk).map_err(|e| store_err(dir, e))
        })
        .await
        .map_err(|e| match e {
            TrustError::TooLarge { .. } => TrustError::TargetMismatch {
                target: name.into(),
                reason: format!("the server sent more than the signed length of {} bytes", info.length),
            },
            other => other,
        })?;
    let tmp = file.into_inner().map_err(|e| store_err(dir, e.into_error()))?;
    let hex = |c: Option<Context>| c.map(|c| hex::encode(c.finish()));
    let digests = Digests { sha256: hex(sha256), sha512: hex(sha512) };
    if received != info.length {
        return Err(TrustError::TargetMismatch {
            target: name.into(),
            reason: format!("received {received} bytes, the signed length is {}", info.length),
        });
    }
    check_hashes(&format!("target {name:?}"), &info.hashes, &digests)?;
    tmp.as_file().sync_all().map_err(|e| store_err(out, e))?;
    // Readable by any user in the pod (the model server rarely runs as the fetch's UID),
    // writable by none: the volume is mounted read-only into servers anyway.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o444)).map_err(|e| store_err(out, e))?;
    }
    tmp.persist(out).map_err(|e| store_err(out, e.error))?;
    Ok(())
}

/// Whether `path` already holds exactly this target (hashes and length match).
pub fn already_present(path: &Path, info: &TargetFile) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    bytes.len() as u64 == info.length && check_hashes("local copy", &info.hashes, &Digests::of(&bytes)).is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

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
        assert_eq!(target_url(&base, "m.bin", &crafted, true).unwrap_err().reason(), "Malformed");
    }

    #[test]
    fn the_operator_given_digest_and_length_are_demanded() {
        let i = info(&[("sha256", "ABC"), ("sha512", "x")]);
        assert!(check_expected("t", &i, Some(&Expected { sha256: "abc".into(), length: 10 })).is_ok());
        assert_eq!(
            check_expected("t", &i, Some(&Expected { sha256: "abd".into(), length: 10 })).unwrap_err().reason(),
            "TargetMismatch"
        );
        assert_eq!(
            check_expected("t", &i, Some(&Expected { sha256: "abc".into(), length: 11 })).unwrap_err().reason(),
            "TargetMismatch"
        );
        let only512 = info(&[("sha512", "x")]);
        assert!(check_expected("t", &only512, Some(&Expected { sha256: "abc".into(), length: 10 })).is_err());
        assert!(check_expected("t", &only512, None).is_ok());
    }
}

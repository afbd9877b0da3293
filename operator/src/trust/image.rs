//! A model shipped as an OCI image: which image a signed manifest target pins (the
//! registry repository its custom metadata names, at the digest TUF signs) and whether
//! the node can mount what that manifest describes. Pure: the bytes are fetched by
//! `model::image_manifest`.

use serde::Deserialize;

use super::{TargetFile, TrustError};
use crate::api::MAX_IMAGE_MANIFEST_BYTES;

/// Longest registry repository name (host and path), as the distribution reference
/// grammar containerd parses with allows.
const MAX_NAME: usize = 255;
/// Most layers a model image may have (each is a blob the node pulls).
const MAX_LAYERS: usize = 1024;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const INDEXES: [&str; 2] =
    ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
const CONFIGS: [&str; 2] =
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];
/// The layers containerd unpacks into an image volume. Others it skips, which would
/// mount an empty or partial model (measured with containerd 2.4.2: docs/trust.md).
const LAYERS: [&str; 5] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];
const MODELPACK_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";

/// The image an OCI manifest target pins: the registry repository its signed custom
/// metadata names (`{"oci": {"repository": "host[:port]/path"}}`), at the digest TUF
/// signs. Its length is bounded as a manifest's, since the node fetches those bytes.
pub fn reference(target: &str, info: &TargetFile) -> Result<String, TrustError> {
    if info.length > MAX_IMAGE_MANIFEST_BYTES {
        return Err(TrustError::TooLarge {
            what: format!("image manifest {target:?} (an OCI manifest is small; is this the model itself?)"),
            limit: MAX_IMAGE_MANIFEST_BYTES,
        });
    }
    let sha256 = info.hash("sha256")?.ok_or_else(|| TrustError::NoSha256 { target: target.into() })?;
    let refused = |reason: String| TrustError::UnsupportedImage { target: target.into(), reason };
    let repository = info
        .custom
        .as_ref()
        .and_then(|c| c.get("oci"))
        .and_then(|o| o.get("repository"))
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            refused(
                "its signed custom metadata names no registry repository ({\"oci\": {\"repository\": \
                 \"registry.example.com/models/llm\"}}); ask its publisher to sign one"
                    .into(),
            )
        })?;
    let whole = format!("{repository}@sha256:{}", sha256.to_ascii_lowercase());
    // The parser fills in a default registry (docker.io) and tag: only a reference that
    // names its registry and nothing else survives unchanged. Bounded as containerd
    // bounds a name, so both read the same reference.
    let parsed = oci_spec::distribution::Reference::try_from(whole.as_str())
        .ok()
        .filter(|r| repository.len() <= MAX_NAME && r.tag().is_none() && r.whole() == whole);
    match parsed {
        Some(_) => Ok(whole),
        None => {
            let shown = crate::text::foreign(repository, MAX_NAME);
            Err(refused(format!(
                "its signed oci.repository {shown:?} is not a registry repository such as \
                 registry.example.com/models/llm (host, optional port, path; at most {MAX_NAME} characters; \
                 no tag or digest)"
            )))
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    #[serde(default)]
    urls: Option<serde_json::Value>,
}

/// Whether the node can mount what the signed manifest `bytes` describes, and fetches
/// every byte of it from the registry the repository allows: an image manifest (not an
/// index: sign the platform's manifest), an image config, only layers containerd
/// unpacks, and no descriptor naming other URLs to fetch from.
pub fn check_manifest(target: &str, bytes: &[u8]) -> Result<usize, TrustError> {
    let refused = |reason: String| TrustError::UnsupportedImage { target: target.into(), reason };
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| refused(format!("it is not an OCI image manifest: {}", bounded(&e.to_string()))))?;
    let media_type = manifest.media_type.as_deref().unwrap_or("");
    if INDEXES.contains(&media_type) || manifest.manifests.is_some() {
        return Err(refused(
            "it is an image index; sign the manifest of the platform your nodes run (its digest is in the index)"
                .into(),
        ));
    }
    if !media_type.is_empty() && media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(refused(format!("its mediaType {} is not an image manifest's", bounded(media_type))));
    }
    let config = manifest.config.ok_or_else(|| refused("it has no config".into()))?;
    if config.media_type == MODELPACK_CONFIG {
        return Err(refused(
            "it is a CNCF ModelPack artifact, which containerd mounts as an empty directory (it unpacks image \
             layers only); publish the model as an image whose layers hold its files, or as TUF targets"
                .into(),
        ));
    }
    if !CONFIGS.contains(&config.media_type.as_str()) {
        let artifact = manifest.artifact_type.as_deref().map(|a| format!(" (artifactType {})", bounded(a)));
        return Err(refused(format!(
            "its config is {}{}, not an image config: the node would not mount it as a model",
            bounded(&config.media_type),
            artifact.unwrap_or_default()
        )));
    }
    if manifest.layers.is_empty() || manifest.layers.len() > MAX_LAYERS {
        return Err(refused(format!("it has {} layers; a model image has 1 to {MAX_LAYERS}", manifest.layers.len())));
    }
    for layer in &manifest.layers {
        if !LAYERS.contains(&layer.media_type.as_str()) {
            return Err(refused(format!(
                "a layer is {}, which containerd does not unpack into an image volume",
                bounded(&layer.media_type)
            )));
        }
    }
    if std::iter::once(&config).chain(&manifest.layers).any(|d| d.urls.is_some()) {
        return Err(refused(
            "a descriptor names URLs to fetch it from: nodes would pull from hosts the repository does not list".into(),
        ));
    }
    Ok(manifest.layers.len())
}

/// Text a manifest chose, as it may reach status.
fn bounded(s: &str) -> String {
    crate::text::foreign(s, 120)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::{Reason, model::tests::file};

    #[test]
    fn an_image_is_the_signed_repository_at_the_signed_digest_and_nothing_else() {
        let signed = |repository: serde_json::Value, length| TargetFile {
            custom: Some(serde_json::json!({"oci": {"repository": repository}})),
            ..file(length, 'A')
        };
        let digest = format!("sha256:{}", "a".repeat(64));
        for repository in ["127.0.0.1:5443/models/llm", "registry.example.com/m"] {
            let reference = reference("m/manifest.json", &signed(repository.into(), 900)).unwrap();
            assert_eq!(reference, format!("{repository}@{digest}"));
        }
        let refused = |info: &TargetFile| reference("m/manifest.json", info).unwrap_err().reason();
        let long_host = format!("{}.example.com/m", "h".repeat(300));
        // No registry (the parser would say docker.io), a tag, a digest, a scheme, junk,
        // a name longer than containerd reads.
        for bad in [
            "llm",
            "library/llm",
            "r.example.com/llm:3.0",
            "r.example.com/llm@sha256:00",
            "https://r.example.com/llm",
            "r.example.com/LLM",
            "r.example.com/llm\n",
            "",
            long_host.as_str(),
        ] {
            assert_eq!(refused(&signed(bad.into(), 900)), Reason::UnsupportedImage, "{bad:?}");
        }
        assert_eq!(refused(&signed(serde_json::json!(7), 900)), Reason::UnsupportedImage);
        assert_eq!(refused(&file(900, 'a')), Reason::UnsupportedImage, "no custom metadata");
        assert_eq!(refused(&signed("r.example.com/llm".into(), MAX_IMAGE_MANIFEST_BYTES + 1)), Reason::TooLarge);
    }

    fn manifest(config: &str, layers: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config, "digest": "sha256:00", "size": 2},
            "layers": layers.iter().map(|m| serde_json::json!({"mediaType": m, "digest": "sha256:11", "size": 3})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn only_an_image_whose_every_byte_the_node_mounts_from_the_allowed_registry_is_accepted() {
        let check = |v: &serde_json::Value| check_manifest("m/manifest.json", v.to_string().as_bytes());
        // buildah's and docker's image manifests.
        assert_eq!(check(&manifest(CONFIGS[0], &[LAYERS[0], LAYERS[1]])).unwrap(), 2);
        let mut docker = manifest(CONFIGS[1], &[LAYERS[3]]);
        docker["mediaType"] = DOCKER_MANIFEST.into();
        assert_eq!(check(&docker).unwrap(), 1);

        let message = |v: &serde_json::Value| {
            let e = check(v).unwrap_err();
            assert_eq!(e.reason(), Reason::UnsupportedImage);
            e.to_string()
        };
        // A ModelPack artifact would mount empty: refused, saying so.
        let modelpack = manifest(MODELPACK_CONFIG, &["application/vnd.cncf.model.weight.v1.raw"]);
        assert!(message(&modelpack).contains("ModelPack"));
        // An image with a layer containerd skips, and one with none.
        assert!(
            message(&manifest(CONFIGS[0], &[LAYERS[0], "application/vnd.cncf.model.weight.v1.tar"])).contains("layer")
        );
        assert!(message(&manifest(CONFIGS[0], &[])).contains("0 layers"));
        // Some other artifact.
        assert!(
            message(&manifest("application/vnd.example.config+json", &[LAYERS[0]])).contains("not an image config")
        );
        // An index: the platform's manifest must be signed.
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": INDEXES[0], "manifests": []});
        assert!(message(&index).contains("index"));
        // URLs would send nodes to other hosts.
        let mut foreign = manifest(CONFIGS[0], &[LAYERS[1]]);
        foreign["layers"][0]["urls"] = serde_json::json!(["https://elsewhere.example/blob"]);
        assert!(message(&foreign).contains("URLs"));
        // Not JSON, not a manifest.
        assert_eq!(check_manifest("m", b"\xff\x00").unwrap_err().reason(), Reason::UnsupportedImage);
        assert!(message(&serde_json::json!({"mediaType": "text/plain"})).contains("text/plain"));
    }
}

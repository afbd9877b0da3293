//! What the operator and `kubectl modelgate` both read the same way: a repository's
//! pinned root, CA bundle and trust record (from ConfigMaps), and the providers of a
//! release's gate checks. Owned
//! by neither: the plugin must judge a rollback or a plan exactly as the operator will.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::{
    api::{ConfigMapSource, GateCheck, ModelRepositorySpec, ProvenancePolicy},
    gates,
    trust::{
        Record,
        state::{STATE_CHAIN_KEY, STATE_FLOORS_KEY, STATE_PIN_KEY},
    },
};

pub async fn read_source(cms: &Api<ConfigMap>, source: &ConfigMapSource, field: &str) -> Result<Vec<u8>, String> {
    let r = &source.config_map_ref;
    let cm = cms
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("cannot read ConfigMap {:?} for {field}: {e}", r.name))?
        .ok_or_else(|| format!("ConfigMap {:?} named by {field} does not exist", r.name))?;
    cm.data
        .and_then(|d| d.get(&r.key).cloned())
        .map(String::into_bytes)
        .ok_or_else(|| format!("ConfigMap {:?} has no key {:?} (named by {field})", r.name, r.key))
}

/// The trust record in ConfigMap `name` (unverified: `trust::refresh` checks it).
pub async fn read_record(cms: &Api<ConfigMap>, name: &str) -> Result<Option<Record>, kube::Error> {
    let state = cms.get_opt(name).await?;
    Ok(state.and_then(|cm| cm.data).map(|mut d| Record {
        pin_sha256: d.remove(STATE_PIN_KEY),
        floors: d.remove(STATE_FLOORS_KEY),
        // An older modelgate kept only the newest root: a record to set aside, like a
        // record built on another pin.
        chain: d.remove(STATE_CHAIN_KEY).or_else(|| d.remove("root.json").map(|_| String::new())),
    }))
}

/// The pinned root and the CA bundle a repository names; an error says which is missing.
pub async fn pinned_root_and_ca(
    cms: &Api<ConfigMap>,
    repo: &ModelRepositorySpec,
) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let pinned = read_source(cms, &repo.trusted_root, "spec.trustedRoot").await?;
    let ca = match &repo.ca_bundle {
        Some(src) => Some(read_source(cms, src, "spec.caBundle").await?),
        None => None,
    };
    Ok((pinned, ca))
}

/// The signers a repository's `provenance` accepts, read from its ConfigMaps; an error
/// says which cannot be read or used.
pub async fn provenance_policy(
    cms: &Api<ConfigMap>,
    provenance: &ProvenancePolicy,
) -> Result<crate::trust::provenance::Policy, String> {
    let keys = match &provenance.public_keys {
        Some(src) => Some(read_source(cms, src, "spec.provenance.publicKeys").await?),
        None => None,
    };
    let mut cas = Vec::with_capacity(provenance.certificates.len());
    for (i, signers) in provenance.certificates.iter().enumerate() {
        let field = format!("spec.provenance.certificates[{i}].caBundle");
        cas.push((read_source(cms, &signers.ca_bundle, &field).await?, signers.identities.as_slice()));
    }
    let cas: Vec<(&[u8], &[String])> = cas.iter().map(|(pem, ids)| (pem.as_slice(), *ids)).collect();
    crate::trust::provenance::Policy::new(keys.as_deref(), &cas).map_err(|e| format!("spec.provenance: {e}"))
}

/// How a repository's models' signatures are checked by whoever can read its ConfigMaps
/// (`None`: it asks for none).
pub async fn signature_check(
    cms: &Api<ConfigMap>,
    repo: &ModelRepositorySpec,
) -> Result<Option<crate::trust::SignatureCheck>, String> {
    match &repo.provenance {
        Some(p) => {
            Ok(Some(crate::trust::SignatureCheck::Signers(std::sync::Arc::new(provenance_policy(cms, p).await?))))
        }
        None => Ok(None),
    }
}

/// A provider per check; a webhook CA bundle that cannot be read fails that check.
pub async fn gate_providers(
    cms: &Api<ConfigMap>,
    checks: &[GateCheck],
    policy: &gates::GatePolicy,
) -> Vec<(String, gates::Provider)> {
    let mut providers = Vec::new();
    for check in checks {
        let provider = match check.webhook.as_ref().and_then(|w| w.ca_bundle.as_ref()) {
            Some(src) => match read_source(cms, src, "webhook.caBundle").await {
                Ok(pem) => gates::provider(check, Some(pem), policy),
                Err(e) => Err(e),
            },
            None => gates::provider(check, None, policy),
        };
        providers.push((check.name.clone(), provider));
    }
    providers
}

/// The API server's own addresses, from the EndpointSlices of Service
/// `default/kubernetes` (what the gates' egress policy denies).
pub fn api_server_addresses<'a>(
    slices: impl IntoIterator<Item = &'a k8s_openapi::api::discovery::v1::EndpointSlice>,
) -> Vec<std::net::IpAddr> {
    slices
        .into_iter()
        .flat_map(|slice| slice.endpoints.iter().flatten().flat_map(|e| e.addresses.iter()))
        .filter_map(|a| a.parse().ok())
        .take(1024)
        .collect()
}

/// Label selecting the API server's EndpointSlices in namespace `default`.
pub const API_SERVER_SLICES: &str = "kubernetes.io/service-name=kubernetes";

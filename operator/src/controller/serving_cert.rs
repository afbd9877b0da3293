//! The admission webhook's TLS certificate, issued and rotated by the operator itself
//! (as cert-manager would, without needing it): a CA of its own and a serving
//! certificate, kept in a Secret of the operator's namespace that every replica reads,
//! and the CA put into the ValidatingWebhookConfiguration's `caBundle`.
//!
//! Each rotation makes a new CA and a new serving certificate together, so no CA key is
//! ever stored. The order keeps every admission working: the Secret gets the new pair
//! (one replica wins), the bundle gets the new CA beside the old one, the new
//! certificate is served only once the API server has had time to see that bundle, and
//! the old CA leaves the bundle at the next rotation.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString,
    api::{admissionregistration::v1::ValidatingWebhookConfiguration, core::v1::Secret},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use tracing::{info, warn};

use super::Error;
use crate::api::FIELD_MANAGER;

/// How long a pair (CA and serving certificate) is valid.
pub const LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// How often the Secret and the bundle are looked at (and the served pair reloaded).
pub const RELOAD: Duration = Duration::from_secs(30);
/// How long a new CA sits in the bundle before any replica serves a certificate it
/// signed: the API server reads webhook configurations through a watch, moments late.
const BUNDLE_SETTLE: Duration = Duration::from_secs(10);

/// What the Secret holds: PEM, as `kubernetes.io/tls` Secrets and cert-manager do, plus
/// the bundle of CAs the webhook configuration must trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The serving certificate.
    pub cert: String,
    pub key: String,
    /// The CAs to trust: the one that signed `cert`, and the one before it, if any.
    pub ca_bundle: String,
    /// When `cert` expires (seconds since the epoch).
    pub not_after: i64,
}

/// Where the certificate lives and what it names.
#[derive(Clone, Debug)]
pub struct Place {
    pub namespace: String,
    pub secret: String,
    /// The ValidatingWebhookConfiguration whose webhooks get the bundle.
    pub webhook_configuration: String,
    /// DNS names and IP addresses the serving certificate is for.
    pub names: Vec<String>,
    pub lifetime: Duration,
}

/// A new CA and a serving certificate for `names`, valid `lifetime` from `now`;
/// `previous` CAs are kept in the bundle (the last one only).
pub fn issue(names: &[String], now: Timestamp, lifetime: Duration, previous: Option<&str>) -> Result<Pair, String> {
    let fail = |e: rcgen::Error| format!("could not issue the webhook's certificate: {e}");
    let start = now.as_second().saturating_sub(300);
    let end = now.as_second().saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2));
    let at = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).map_err(|e| format!("bad time: {e}"));

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.distinguished_name.push(DnType::CommonName, format!("modelgate webhook CA {}", now.as_second()));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = at(start)?;
    ca.not_after = at(end)?;
    let ca_key = KeyPair::generate().map_err(fail)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names.to_vec()).map_err(fail)?;
    leaf.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = at(start)?;
    leaf.not_after = at(end)?;
    let leaf_key = KeyPair::generate().map_err(fail)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(fail)?;

    let newest_previous = previous.and_then(|p| p.split_inclusive("-----END CERTIFICATE-----\n").next());
    let ca_bundle = format!("{}{}", ca_cert.pem(), newest_previous.unwrap_or_default());
    Ok(Pair { cert: leaf_cert.pem(), key: leaf_key.serialize_pem(), ca_bundle, not_after: end })
}

/// Whether `pair`, issued for `issued_for` (comma-separated), must be replaced at `now`:
/// under a third of its life left, or not valid for one of `names`. (Extra names are
/// fine: during a rolling upgrade that changes the names, old and new replicas must not
/// take turns re-issuing.)
pub fn due(pair: &Pair, names: &[String], issued_for: &str, now: Timestamp, lifetime: Duration) -> bool {
    let third = i64::try_from(lifetime.as_secs() / 3).unwrap_or(i64::MAX);
    let issued: Vec<&str> = issued_for.split(',').collect();
    pair.not_after.saturating_sub(now.as_second()) < third || names.iter().any(|n| !issued.contains(&n.as_str()))
}

const CERT: &str = "tls.crt";
const KEY: &str = "tls.key";
const BUNDLE: &str = "ca.crt";
const NOT_AFTER: &str = "modelgate.dev/not-after";
const NAMES: &str = "modelgate.dev/names";
const SERVE_AFTER: &str = "modelgate.dev/serve-after";

/// The Secret's pair, the names it was issued for, and when it may be served; `None`
/// when it is missing, incomplete or cannot be served (not PEM, a key that is not the
/// certificate's): such a pair is issued again rather than stopping the webhook.
fn read(secret: &Secret) -> Option<(Pair, String, i64)> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
    let annotations = secret.metadata.annotations.as_ref()?;
    let pair = Pair {
        cert: text(CERT)?,
        key: text(KEY)?,
        ca_bundle: text(BUNDLE)?,
        not_after: annotations.get(NOT_AFTER)?.parse().ok()?,
    };
    if let Err(e) = server_config(&pair.cert, &pair.key) {
        warn!(error = %e, "the webhook's certificate Secret holds a pair that cannot be served; issuing a new one");
        return None;
    }
    let serve_after = annotations.get(SERVE_AFTER).and_then(|a| a.parse().ok()).unwrap_or(0);
    Some((pair, annotations.get(NAMES).cloned().unwrap_or_default(), serve_after))
}

/// The pair to serve, and from when (seconds since the epoch): the Secret's, renewed
/// first when it is due (or missing), and the webhook configuration's bundle made to
/// match it. Every replica calls this. The Secret is written as a compare-and-swap, so
/// of replicas renewing at once one wins and the others take its pair; the bundle gets
/// the new CA beside the old one at once, and the new certificate is served only
/// `BUNDLE_SETTLE` later (the old one, whose CA stays in the bundle, until then).
pub async fn ensure(client: &Client, place: &Place, now: Timestamp) -> Result<(Pair, i64), Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &place.namespace);
    let kube = |action| move |source| Error::Kube { action, source };
    let existing = secrets.get_opt(&place.secret).await.map_err(kube("read the webhook's certificate Secret"))?;
    let current = existing.as_ref().and_then(read);
    if let Some((pair, names, serve_after)) = &current
        && !due(pair, &place.names, names, now, place.lifetime)
    {
        set_bundle(client, place, &pair.ca_bundle).await?;
        return Ok((pair.clone(), *serve_after));
    }
    let previous = current.as_ref().map(|(p, _, _)| p.ca_bundle.as_str());
    let fresh = issue(&place.names, now, place.lifetime, previous).map_err(Error::Certificate)?;
    // Nothing served yet: nothing to wait for.
    let serve_after = if current.is_some() {
        now.as_second().saturating_add(i64::try_from(BUNDLE_SETTLE.as_secs()).unwrap_or(0))
    } else {
        now.as_second()
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(place.secret.clone()),
            namespace: Some(place.namespace.clone()),
            resource_version: existing.as_ref().and_then(|s| s.metadata.resource_version.clone()),
            annotations: Some(
                [
                    (NOT_AFTER.to_string(), fresh.not_after.to_string()),
                    (NAMES.to_string(), place.names.join(",")),
                    (SERVE_AFTER.to_string(), serve_after.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [(CERT, &fresh.cert), (KEY, &fresh.key), (BUNDLE, &fresh.ca_bundle)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let written = match existing {
        Some(_) => secrets.replace(&place.secret, &params, &secret).await,
        None => secrets.create(&params, &secret).await,
    };
    match written {
        Ok(_) => {
            info!(secret = %place.secret, "webhook certificate issued");
            set_bundle(client, place, &fresh.ca_bundle).await?;
            Ok((fresh, serve_after))
        }
        // Another replica renewed first: serve what it wrote.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let theirs = secrets.get(&place.secret).await.map_err(kube("read the webhook's certificate Secret"))?;
            let (theirs, _, serve_after) = read(&theirs).ok_or(Error::Certificate(
                "the webhook's certificate Secret another replica wrote cannot be read".into(),
            ))?;
            set_bundle(client, place, &theirs.ca_bundle).await?;
            Ok((theirs, serve_after))
        }
        Err(source) => Err(Error::Kube { action: "write the webhook's certificate Secret", source }),
    }
}

/// Puts `bundle` into every webhook of the configuration that lacks it (an upgrade of
/// the chart, or someone, may have reset it).
async fn set_bundle(client: &Client, place: &Place, bundle: &str) -> Result<(), Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut config) = api
        .get_opt(&place.webhook_configuration)
        .await
        .map_err(|source| Error::Kube { action: "read the ValidatingWebhookConfiguration", source })?
    else {
        warn!(name = %place.webhook_configuration, "no ValidatingWebhookConfiguration of that name: nothing calls the webhook");
        return Ok(());
    };
    let want = ByteString(bundle.as_bytes().to_vec());
    let webhooks = config.webhooks.get_or_insert_with(Vec::new);
    if webhooks.iter().all(|w| w.client_config.ca_bundle.as_ref() == Some(&want)) {
        return Ok(());
    }
    for w in webhooks.iter_mut() {
        w.client_config.ca_bundle = Some(want.clone());
    }
    config.metadata.managed_fields = None;
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.replace(&place.webhook_configuration, &params, &config).await.map_err(|source| Error::Kube {
        action: "put the CA bundle into the ValidatingWebhookConfiguration",
        source,
    })?;
    info!(name = %place.webhook_configuration, "webhook CA bundle set");
    Ok(())
}

/// TLS 1.2 and 1.3 with the one crypto provider of the binary (aws-lc-rs).
pub fn server_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::Certificate(format!("the webhook's {what}: {e}"));
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate is not PEM", &e))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| bad("key is not PEM", &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad("certificate and key do not match", &e))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_a_ca_and_a_certificate_for_the_names_and_rotation_keeps_the_last_ca() {
        let names = vec!["modelgate.system.svc".to_string(), "127.0.0.1".to_string()];
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let first = issue(&names, now, LIFETIME, None).unwrap();
        assert_eq!(first.ca_bundle.matches("BEGIN CERTIFICATE").count(), 1);
        assert!(first.key.contains("PRIVATE KEY"));
        assert!(!due(&first, &names, &names.join(","), now, LIFETIME));
        let later = Timestamp::from_second(now.as_second() + 250 * 24 * 3600).unwrap();
        assert!(due(&first, &names, &names.join(","), later, LIFETIME), "under a third of its life left");
        assert!(due(&first, &names, "other.svc", now, LIFETIME), "named for something else");

        let second = issue(&names, later, LIFETIME, Some(&first.ca_bundle)).unwrap();
        assert_eq!(second.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2, "the new CA and the one before");
        assert!(second.ca_bundle.ends_with(&first.ca_bundle));
        let third = issue(&names, later, LIFETIME, Some(&second.ca_bundle)).unwrap();
        assert_eq!(third.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2, "never more than two");
        assert!(!third.ca_bundle.contains(&first.ca_bundle));
    }

    fn secret(pair: &Pair) -> Secret {
        let data = [(CERT, &pair.cert), (KEY, &pair.key), (BUNDLE, &pair.ca_bundle)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
            .collect();
        let annotations = [(NOT_AFTER.to_string(), pair.not_after.to_string()), (NAMES.to_string(), "a.svc".into())];
        Secret {
            metadata: ObjectMeta { annotations: Some(annotations.into()), ..Default::default() },
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_whose_pair_cannot_be_served_is_read_as_none_and_so_issued_again() {
        let names = vec!["a.svc".to_string()];
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let good = issue(&names, now, LIFETIME, None).unwrap();
        assert!(read(&secret(&good)).is_some_and(|(pair, ..)| pair == good));
        let other = issue(&names, now, LIFETIME, None).unwrap();
        for bad in [
            Pair { cert: "not PEM".into(), ..good.clone() },
            Pair { key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(), ..good.clone() },
            Pair { key: other.key.clone(), ..good.clone() },
        ] {
            assert!(read(&secret(&bad)).is_none(), "{bad:?}");
        }
    }
}

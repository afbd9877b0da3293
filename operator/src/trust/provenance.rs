//! Who made a model: an OpenSSF model-signing bundle (a Sigstore bundle whose DSSE
//! envelope carries an in-toto statement naming every file of the model with its
//! sha256), verified offline against the signers the security team accepts: EC public
//! keys (model_signing's `key` method) or certificates under a CA for named identities
//! (its `certificate` method). Pure: bytes and a clock in, a signer or a reason out.
//!
//! No crate verifies these bundles offline (sigstore-rs verifies key-signed bundles only
//! against a Rekor entry), so the envelope and statement are read here, to the DSSE
//! protocol and the model_signing v1.0 predicate, on aws-lc-rs (signatures), rustls-webpki
//! (certificate paths) and x509-parser (names and key types).

use std::collections::BTreeMap;

use aws_lc_rs::{
    digest::{SHA256, digest},
    signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ECDSA_P521_SHA512_ASN1, EcdsaVerificationAlgorithm,
        UnparsedPublicKey,
    },
};
use base64::{Engine, engine::general_purpose::STANDARD};
use rustls_pki_types::{CertificateDer, UnixTime, pem::PemObject};
use serde::Deserialize;
use thiserror::Error;
use x509_parser::{
    der_parser::oid::Oid,
    extensions::GeneralName,
    oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521},
    prelude::{FromDer, X509Certificate},
    x509::SubjectPublicKeyInfo,
};

use crate::api::{MAX_MODEL_FILES, ModelRef};

use super::ModelSet;

/// Largest signature target read: a statement of `MAX_MODEL_FILES` entries and a
/// certificate chain fit many times over.
pub const MAX_SIGNATURE_BYTES: u64 = 1 << 20;
/// Most keys, CAs and identities a policy holds, and certificates a bundle carries.
pub const MAX_SIGNERS: usize = 64;
const MAX_CHAIN: usize = 8;

const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER contents.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// The TUF target that carries the signature of `model`: beside the file (`<path>.sig`),
/// beside the directory of a prefix (`<prefix without '/'>.sig`: a prefix takes every
/// file under it, so the signature cannot live inside), or beside a list's first file
/// in sorted order (the order a spec lists them in does not change the model).
pub fn signature_target(model: &ModelRef) -> String {
    match model {
        ModelRef::File(t) | ModelRef::Image(t) => format!("{t}.sig"),
        ModelRef::Prefix(p) => format!("{}.sig", p.trim_end_matches('/')),
        ModelRef::List(l) => format!("{}.sig", l.iter().min().map(String::as_str).unwrap_or("model")),
    }
}

/// Why a model's signature is not accepted. Each is a refusal: a release is `Rejected`
/// with it, a serving model is rolled back as if revoked.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProvenanceError {
    #[error(
        "no model signature: the repository signs no {target:?} beside the model, and its provenance policy \
         requires one: sign the model with model_signing and publish the signature as that target"
    )]
    Missing { target: String },
    #[error("model signature {target:?} is not a model-signing bundle modelgate can read: {reason}")]
    Malformed { target: String, reason: String },
    #[error("model signature {target:?} was made by {signer}, whom the repository's provenance policy does not accept")]
    UnknownSigner { target: String, signer: String },
    #[error(
        "model signature {target:?} does not verify with the key of {signer}: the statement was changed after \
         signing, or forged"
    )]
    BadSignature { target: String, signer: String },
    #[error("model signature {target:?}: the certificate of {signer} is not accepted: {reason}")]
    Certificate { target: String, signer: String, reason: String },
    #[error("model signature {target:?} covers other files than the model's: {reason}")]
    FilesMismatch { target: String, reason: String },
}

/// Whom the security team accepts as a model's signer.
#[derive(Debug, Default)]
pub struct Policy {
    keys: Vec<Key>,
    authorities: Vec<Authority>,
    /// sha256 over every key, CA and identity: another policy, another fingerprint.
    fingerprint: String,
}

#[derive(Debug)]
struct Key {
    spki: Vec<u8>,
    algorithm: &'static EcdsaVerificationAlgorithm,
    /// sha256 of the key's PEM, as model_signing writes it into a bundle's `hint`.
    id: String,
}

#[derive(Debug)]
struct Authority {
    roots: Vec<CertificateDer<'static>>,
    identities: Vec<String>,
}

impl Policy {
    /// From PEM public keys (any number in one bundle) and CA bundles with the identities
    /// each may vouch for. An error names what cannot be used.
    pub fn new(keys_pem: Option<&[u8]>, authorities: &[(&[u8], &[String])]) -> Result<Self, String> {
        let mut keys = Vec::new();
        if let Some(pem) = keys_pem {
            for der in rustls_pki_types::SubjectPublicKeyInfoDer::pem_slice_iter(pem) {
                let der = der.map_err(|e| format!("the provenance public keys are not PEM public keys: {e}"))?;
                let algorithm = ecdsa_of(&der).map_err(|e| format!("a provenance public key {e}"))?;
                let id = hex::encode(digest(&SHA256, python_pem(&der).as_bytes()));
                keys.push(Key { spki: der.to_vec(), algorithm, id });
            }
            if keys.is_empty() {
                return Err("the provenance public keys hold no PEM PUBLIC KEY block".into());
            }
        }
        let mut parsed = Vec::new();
        for (pem, identities) in authorities {
            let roots = CertificateDer::pem_slice_iter(pem)
                .map(|c| c.map(CertificateDer::into_owned))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a provenance CA bundle is not PEM certificates: {e}"))?;
            if roots.is_empty() {
                return Err("a provenance CA bundle holds no PEM CERTIFICATE block".into());
            }
            for root in &roots {
                webpki::anchor_from_trusted_cert(root)
                    .map_err(|e| format!("a provenance CA certificate cannot anchor trust: {e:?}"))?;
            }
            parsed.push(Authority { roots, identities: identities.to_vec() });
        }
        if keys.len() + parsed.len() > MAX_SIGNERS {
            return Err(format!("the provenance policy names more than {MAX_SIGNERS} keys and CAs"));
        }
        let mut all = Vec::new();
        for key in &keys {
            all.extend_from_slice(key.id.as_bytes());
        }
        for authority in &parsed {
            for root in &authority.roots {
                all.extend_from_slice(digest(&SHA256, root).as_ref());
            }
            all.extend_from_slice(authority.identities.join("\n").as_bytes());
            all.push(0);
        }
        let fingerprint = hex::encode(digest(&SHA256, &all));
        Ok(Self { keys, authorities: parsed, fingerprint })
    }

    /// Names this policy: verdicts made under another one do not stand under it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// A signature the policy accepts: who signed, and the files the statement names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// `key sha256:<id>`, or the certificate's subject and issuer.
    pub signer: String,
    /// File name below the model directory (`.` for a single file) to sha256 (hex).
    pub files: BTreeMap<String, String>,
}

/// Verifies the bundle of signature target `target` against `policy` at `now`.
pub fn verify(policy: &Policy, target: &str, bundle: &[u8], now: UnixTime) -> Result<Signed, ProvenanceError> {
    let malformed = |reason: String| ProvenanceError::Malformed { target: target.into(), reason: bounded(&reason) };
    let bundle: Bundle = serde_json::from_slice(bundle).map_err(|e| malformed(e.to_string()))?;
    let (payload, signature) = bundle.envelope(target)?;
    let message = pae(&bundle.dsse_envelope.payload_type, &payload);
    let material = &bundle.verification_material;
    let chain = material.chain().transpose().map_err(malformed)?;
    let signer = match (&material.public_key, chain) {
        (Some(hint), None) => by_key(policy, target, hint.hint.as_deref(), &message, &signature)?,
        (None, Some(chain)) => by_certificate(policy, target, &chain, &message, &signature, now)?,
        _ => return Err(malformed("it carries neither a public key hint nor a certificate chain".into())),
    };
    let files = statement_files(target, &payload)?;
    Ok(Signed { signer, files })
}

/// The files a bundle's statement names, without checking who signed it: for a pod,
/// whose signature bytes the repository signs and the operator has verified.
pub fn statement_of(target: &str, bundle: &[u8]) -> Result<BTreeMap<String, String>, ProvenanceError> {
    let parsed: Bundle = serde_json::from_slice(bundle)
        .map_err(|e| ProvenanceError::Malformed { target: target.into(), reason: bounded(&e.to_string()) })?;
    let (payload, _) = parsed.envelope(target)?;
    statement_files(target, &payload)
}

/// Whether the statement names exactly the model's files with the sha256s TUF signs
/// for them: nothing missing, nothing extra, no other bytes.
pub fn check_files(target: &str, signed: &BTreeMap<String, String>, set: &ModelSet) -> Result<(), ProvenanceError> {
    let mut expected: BTreeMap<&str, &str> = set.files.iter().map(|f| (f.path.as_str(), f.sha256.as_str())).collect();
    // model_signing names the one file of a single-file model ".".
    if let (ModelRef::File(_) | ModelRef::Image(_), [one]) = (&set.model, set.files.as_slice())
        && signed.contains_key(".")
    {
        expected = BTreeMap::from([(".", one.sha256.as_str())]);
    }
    let mismatch = |reason: String| Err(ProvenanceError::FilesMismatch { target: target.into(), reason });
    let missing: Vec<&str> = expected.keys().filter(|n| !signed.contains_key(**n)).copied().collect();
    if !missing.is_empty() {
        return mismatch(format!("it does not name {} of the model's files: {}", missing.len(), some(&missing)));
    }
    let extra: Vec<&str> = signed.keys().map(String::as_str).filter(|n| !expected.contains_key(n)).collect();
    if !extra.is_empty() {
        return mismatch(format!("it names {} files the model does not have: {}", extra.len(), some(&extra)));
    }
    let differ: Vec<&str> = expected
        .iter()
        .filter(|(n, sha)| signed.get(**n).is_none_or(|d| !d.eq_ignore_ascii_case(sha)))
        .map(|(n, _)| *n)
        .collect();
    if !differ.is_empty() {
        return mismatch(format!("the repository signs other bytes than the signer did for {}", some(&differ)));
    }
    Ok(())
}

/// Text a bundle chose (a certificate's names, a file name, a parser's complaint), as it
/// may reach status, conditions and Events.
fn bounded(text: &str) -> String {
    crate::text::foreign(text, 256)
}

fn some(names: &[&str]) -> String {
    let shown: Vec<String> = names.iter().take(3).map(|n| format!("{:?}", bounded(n))).collect();
    match names.len() {
        n if n > 3 => format!("{} and {} more", shown.join(", "), n - 3),
        _ => shown.join(", "),
    }
}

/// DSSE's pre-authentication encoding, what the signature covers.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

fn by_key(
    policy: &Policy,
    target: &str,
    hint: Option<&str>,
    message: &[u8],
    signature: &[u8],
) -> Result<String, ProvenanceError> {
    let verifies = |k: &Key| UnparsedPublicKey::new(k.algorithm, &k.spki).verify(message, signature).is_ok();
    let Some(hint) = hint.filter(|h| !h.is_empty()) else {
        // A bundle from before model_signing named its key: any accepted key may match.
        return policy.keys.iter().find(|k| verifies(k)).map(|k| key_name(&k.id)).ok_or_else(|| {
            ProvenanceError::UnknownSigner { target: target.into(), signer: "a key the bundle does not name".into() }
        });
    };
    let signer = key_name(hint);
    let Some(key) = policy.keys.iter().find(|k| k.id.eq_ignore_ascii_case(hint)) else {
        // The hint is not signed and hashes one PEM spelling of the key: another spelling
        // of an accepted key still counts, under that key's own id.
        return policy
            .keys
            .iter()
            .find(|k| verifies(k))
            .map(|k| key_name(&k.id))
            .ok_or(ProvenanceError::UnknownSigner { target: target.into(), signer });
    };
    if verifies(key) { Ok(signer) } else { Err(ProvenanceError::BadSignature { target: target.into(), signer }) }
}

fn key_name(id: &str) -> String {
    let shown: String = id.chars().filter(char::is_ascii_hexdigit).take(64).collect();
    format!("key sha256:{shown}")
}

fn by_certificate(
    policy: &Policy,
    target: &str,
    chain: &[CertificateDer<'static>],
    message: &[u8],
    signature: &[u8],
    now: UnixTime,
) -> Result<String, ProvenanceError> {
    let malformed = |reason: String| ProvenanceError::Malformed { target: target.into(), reason: bounded(&reason) };
    let [leaf, intermediates @ ..] = chain else { return Err(malformed("its certificate chain is empty".into())) };
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| malformed(format!("its certificate: {e}")))?;
    let issuer = bounded(&cert.issuer().to_string());
    let names = identities_of(&cert);
    // Each authority with an identity this certificate names, and that identity.
    let candidates: Vec<(&Authority, &String)> = policy
        .authorities
        .iter()
        .filter_map(|a| a.identities.iter().find(|i| names.contains(i)).map(|i| (a, i)))
        .collect();
    let Some((_, first)) = candidates.first() else {
        let signer = format!("{} (issuer {issuer})", bounded(&cert.subject().to_string()));
        return Err(ProvenanceError::UnknownSigner { target: target.into(), signer });
    };
    let rejected = |identity: &str, reason: String| ProvenanceError::Certificate {
        target: target.into(),
        signer: format!("{identity} (issuer {issuer})"),
        reason,
    };
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| rejected(first, format!("{e:?}")))?;
    let mut last = String::new();
    let vouched = candidates.iter().find(|(authority, _)| {
        let anchors: Vec<_> = authority.roots.iter().filter_map(|r| webpki::anchor_from_trusted_cert(r).ok()).collect();
        let verified = ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            now,
            webpki::KeyUsage::required_if_present(CODE_SIGNING),
            None,
            None,
        );
        verified.map_err(|e| last = certificate_problem(&e)).is_ok()
    });
    // The signer is the identity the vouching authority accepts, not whatever else the
    // certificate says.
    let Some((_, identity)) = vouched else { return Err(rejected(first, last)) };
    let signer = format!("{identity} (issuer {issuer})");
    match cert.key_usage() {
        Ok(Some(usage)) if !usage.value.digital_signature() => {
            return Err(rejected(identity, "its key usage does not include digitalSignature".into()));
        }
        Err(e) => return Err(rejected(identity, bounded(&format!("its key usage cannot be read: {e}")))),
        _ => {}
    }
    let spki = cert.public_key().raw;
    let algorithm = ecdsa_of(spki).map_err(|e| rejected(identity, format!("its key {e}")))?;
    match UnparsedPublicKey::new(algorithm, spki).verify(message, signature) {
        Ok(()) => Ok(signer),
        Err(_) => Err(ProvenanceError::BadSignature { target: target.into(), signer }),
    }
}

fn certificate_problem(e: &webpki::Error) -> String {
    match e {
        webpki::Error::CertExpired { .. } => "it has expired".into(),
        webpki::Error::CertNotValidYet { .. } => "it is not valid yet".into(),
        webpki::Error::UnknownIssuer => "it was not issued under the policy's CA for this identity".into(),
        webpki::Error::RequiredEkuNotFoundContext(_) => "its extended key usage does not allow code signing".into(),
        other => format!("{other:?}"),
    }
}

/// What a policy's identity may name: the subject alternative names (email addresses,
/// URIs, DNS names) or, only in a certificate without any, the subject's common names
/// (as RFC 6125 does: a CA that lets the requester choose the CN vouches for its SANs).
fn identities_of(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::RFC822Name(s) | GeneralName::URI(s) | GeneralName::DNSName(s) => {
                    names.push((*s).to_string())
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_string).collect();
    }
    names
}

/// The ECDSA algorithm model_signing pairs with the key's curve (its hash follows the
/// curve's size), from a DER SubjectPublicKeyInfo.
fn ecdsa_of(spki: &[u8]) -> Result<&'static EcdsaVerificationAlgorithm, String> {
    let (_, info) = SubjectPublicKeyInfo::from_der(spki).map_err(|e| format!("cannot be read: {e}"))?;
    if info.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err("is not an elliptic-curve key (model_signing signs with P-256, P-384 or P-521)".into());
    }
    let curve: Option<Oid<'_>> = info.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    match curve {
        Some(c) if c == OID_EC_P256 => Ok(&ECDSA_P256_SHA256_ASN1),
        Some(c) if c == OID_NIST_EC_P384 => Ok(&ECDSA_P384_SHA384_ASN1),
        Some(c) if c == OID_NIST_EC_P521 => Ok(&ECDSA_P521_SHA512_ASN1),
        _ => Err("is on a curve model_signing does not sign with (P-256, P-384 or P-521)".into()),
    }
}

/// A public key as Python's `cryptography` writes it (64-column base64, `\n` endings):
/// the bytes whose sha256 model_signing records as the key's hint.
fn python_pem(der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

/// A Sigstore bundle (protobuf JSON: camelCase names, the proto's names accepted too).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    #[serde(alias = "media_type")]
    media_type: String,
    #[serde(alias = "verification_material")]
    verification_material: Material,
    #[serde(alias = "dsse_envelope")]
    dsse_envelope: Envelope,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    #[serde(default, alias = "public_key")]
    public_key: Option<Hint>,
    #[serde(default, alias = "x509_certificate_chain")]
    x509_certificate_chain: Option<Chain>,
    #[serde(default)]
    certificate: Option<RawCertificate>,
}

#[derive(Deserialize)]
struct Hint {
    #[serde(default)]
    hint: Option<String>,
}

#[derive(Deserialize)]
struct Chain {
    certificates: Vec<RawCertificate>,
}

#[derive(Deserialize)]
struct RawCertificate {
    #[serde(alias = "raw_bytes", rename = "rawBytes")]
    raw_bytes: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    #[serde(alias = "payload_type")]
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

impl Material {
    /// The certificates (signing certificate first), decoded, if the bundle has any.
    fn chain(&self) -> Option<Result<Vec<CertificateDer<'static>>, String>> {
        let raw: Vec<&RawCertificate> = match (&self.x509_certificate_chain, &self.certificate) {
            (Some(chain), _) => chain.certificates.iter().collect(),
            (None, Some(one)) => vec![one],
            (None, None) => return None,
        };
        if raw.len() > MAX_CHAIN {
            return Some(Err(format!("its certificate chain has {} certificates, more than {MAX_CHAIN}", raw.len())));
        }
        Some(
            raw.iter()
                .map(|c| STANDARD.decode(&c.raw_bytes).map(CertificateDer::from))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("its certificate: {e}")),
        )
    }
}

impl Bundle {
    /// The envelope's payload and its one signature, decoded; the certificates too.
    fn envelope(&self, target: &str) -> Result<(Vec<u8>, Vec<u8>), ProvenanceError> {
        let malformed = |reason: String| ProvenanceError::Malformed { target: target.into(), reason };
        if !self.media_type.starts_with("application/vnd.dev.sigstore.bundle") {
            return Err(malformed(format!("its media type {:?} is not a Sigstore bundle's", self.media_type)));
        }
        let envelope = &self.dsse_envelope;
        if envelope.payload_type != PAYLOAD_TYPE {
            return Err(malformed(format!("its payload is {:?}, not an in-toto statement", envelope.payload_type)));
        }
        let [signature] = envelope.signatures.as_slice() else {
            return Err(malformed(format!("it has {} signatures; a bundle has one", envelope.signatures.len())));
        };
        let payload = STANDARD.decode(&envelope.payload).map_err(|e| malformed(format!("its payload: {e}")))?;
        let signature = STANDARD.decode(&signature.sig).map_err(|e| malformed(format!("its signature: {e}")))?;
        Ok((payload, signature))
    }
}

/// The file list of a model_signing v1.0 statement, checked for consistency as the
/// reference implementation does (the subject digest is the sha256 of the listed
/// digests in order).
fn statement_files(target: &str, payload: &[u8]) -> Result<BTreeMap<String, String>, ProvenanceError> {
    let malformed = |reason: String| ProvenanceError::Malformed { target: target.into(), reason: bounded(&reason) };
    let statement: Statement = serde_json::from_slice(payload).map_err(|e| malformed(format!("its statement: {e}")))?;
    if statement.type_ != STATEMENT_TYPE {
        return Err(malformed(format!("its statement is {:?}, not an in-toto v1 statement", statement.type_)));
    }
    if statement.predicate_type != PREDICATE_TYPE {
        return Err(malformed(format!(
            "its predicate is {:?}; modelgate reads model_signing's {PREDICATE_TYPE} (sign with model_signing 1.x)",
            statement.predicate_type
        )));
    }
    let serialization = &statement.predicate.serialization;
    if serialization.method != "files" || serialization.hash_type.as_deref().is_some_and(|h| h != "sha256") {
        return Err(malformed(format!(
            "it was serialized with method {:?} and hash {:?}; modelgate compares each file's sha256 with the one \
             TUF signs, so sign with the default method (files, sha256)",
            serialization.method,
            serialization.hash_type.as_deref().unwrap_or("?")
        )));
    }
    let [subject] = statement.subject.as_slice() else {
        return Err(malformed(format!("it has {} subjects; a model signature has one", statement.subject.len())));
    };
    let resources = &statement.predicate.resources;
    if resources.len() > MAX_MODEL_FILES {
        return Err(malformed(format!("it names more than {MAX_MODEL_FILES} files")));
    }
    let mut files = BTreeMap::new();
    let mut all = Vec::with_capacity(resources.len() * 32);
    for r in resources {
        let raw = hex::decode(&r.digest).ok().filter(|d| d.len() == 32 && r.algorithm == "sha256");
        let Some(raw) = raw else {
            return Err(malformed(format!("its entry for {:?} is not a sha256 digest", r.name)));
        };
        all.extend_from_slice(&raw);
        if files.insert(r.name.clone(), r.digest.to_ascii_lowercase()).is_some() {
            return Err(malformed(format!("it names {:?} twice", r.name)));
        }
    }
    let root = hex::encode(digest(&SHA256, &all));
    if subject.digest.get("sha256").is_none_or(|d| !d.eq_ignore_ascii_case(&root)) {
        return Err(malformed("its subject digest does not match the files it lists".into()));
    }
    Ok(files)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<Subject>,
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Deserialize)]
struct Subject {
    digest: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Predicate {
    serialization: Serialization,
    resources: Vec<Resource>,
}

#[derive(Deserialize)]
struct Serialization {
    method: String,
    #[serde(default)]
    hash_type: Option<String>,
}

#[derive(Deserialize)]
struct Resource {
    name: String,
    algorithm: String,
    digest: String,
}

#[cfg(test)]
mod tests {
    //! Against bundles model_signing 1.1.1 made (`tests/provenance/fixtures`), verified
    //! at the time they were made.
    use std::time::Duration;

    use super::*;
    use crate::trust::TargetFile;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/trust/testdata/provenance");

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{DATA}/{name}")).unwrap()
    }

    fn made_at(later: Duration) -> UnixTime {
        let secs: u64 = String::from_utf8(read("now")).unwrap().trim().parse().unwrap();
        UnixTime::since_unix_epoch(Duration::from_secs(secs) + later)
    }

    fn keys() -> Policy {
        Policy::new(Some(&read("alice.pub")), &[]).unwrap()
    }

    fn ca(identity: &str) -> Policy {
        Policy::new(None, &[(&read("ml.pem"), &[identity.to_string()])]).unwrap()
    }

    fn sha(file: &str) -> String {
        hex::encode(digest(&SHA256, &read(&format!("model/{file}"))))
    }

    fn model(files: &[(&str, &str)]) -> ModelSet {
        let found = files
            .iter()
            .map(|(path, sha)| {
                let info = TargetFile {
                    length: 1,
                    hashes: [("sha256".to_string(), sha.to_string())].into_iter().collect(),
                    custom: None,
                };
                (format!("m/1/{path}"), info)
            })
            .collect();
        ModelSet::new(ModelRef::Prefix("m/1/".into()), found).unwrap()
    }

    #[test]
    fn a_bundle_signed_with_an_accepted_key_names_its_key_and_files() {
        let signed = verify(&keys(), "m/1.sig", &read("key.sig"), made_at(Duration::ZERO)).unwrap();
        assert!(signed.signer.starts_with("key sha256:"), "{}", signed.signer);
        let expected =
            BTreeMap::from([("a.bin".to_string(), sha("a.bin")), ("sub/b.bin".to_string(), sha("sub/b.bin"))]);
        assert_eq!(signed.files, expected);
        check_files("m/1.sig", &signed.files, &model(&[("a.bin", &sha("a.bin")), ("sub/b.bin", &sha("sub/b.bin"))]))
            .unwrap();
        // Keys carry no expiry: a year later it still verifies.
        assert!(verify(&keys(), "t", &read("key.sig"), made_at(Duration::from_secs(366 * 86400))).is_ok());
    }

    #[test]
    fn another_key_is_an_unknown_signer_and_a_changed_statement_a_bad_signature() {
        let now = made_at(Duration::ZERO);
        let other = verify(&keys(), "t", &read("mallory.sig"), now).unwrap_err();
        assert!(matches!(other, ProvenanceError::UnknownSigner { .. }), "{other}");
        // The statement rewritten to other bytes, the signature kept.
        let mut bundle: serde_json::Value = serde_json::from_slice(&read("key.sig")).unwrap();
        let payload = STANDARD.decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap();
        let forged = String::from_utf8(payload).unwrap().replace(&sha("a.bin"), &"0".repeat(64));
        bundle["dsseEnvelope"]["payload"] = STANDARD.encode(forged).into();
        let bad = verify(&keys(), "t", &serde_json::to_vec(&bundle).unwrap(), now).unwrap_err();
        assert!(matches!(bad, ProvenanceError::BadSignature { .. }), "{bad}");
        // Without the hint, the key is found by trying each accepted one.
        bundle = serde_json::from_slice(&read("key.sig")).unwrap();
        bundle["verificationMaterial"]["publicKey"] = serde_json::json!({});
        assert!(verify(&keys(), "t", &serde_json::to_vec(&bundle).unwrap(), now).is_ok());
        let unnamed = verify(&keys(), "t", &read("mallory.sig").replace_hint(), now).unwrap_err();
        assert!(matches!(unnamed, ProvenanceError::UnknownSigner { .. }), "{unnamed}");
        // A hint of no accepted key: the accepted keys are tried (the hint is not signed).
        bundle = serde_json::from_slice(&read("key.sig")).unwrap();
        bundle["verificationMaterial"]["publicKey"]["hint"] = "00".repeat(32).into();
        let signed = verify(&keys(), "t", &serde_json::to_vec(&bundle).unwrap(), now).unwrap();
        assert_eq!(signed.signer, verify(&keys(), "t", &read("key.sig"), now).unwrap().signer);
        // Text a bundle chose reaches status bounded, without control characters.
        let long = format!("\n{}", "x".repeat(5000));
        assert!(bounded(&long).chars().count() <= 257 && !bounded(&long).contains('\n'));
    }

    trait ReplaceHint {
        fn replace_hint(&self) -> Vec<u8>;
    }

    impl ReplaceHint for Vec<u8> {
        fn replace_hint(&self) -> Vec<u8> {
            let mut bundle: serde_json::Value = serde_json::from_slice(self).unwrap();
            bundle["verificationMaterial"]["publicKey"] = serde_json::json!({});
            serde_json::to_vec(&bundle).unwrap()
        }
    }

    #[test]
    fn a_certificate_counts_for_the_identities_its_ca_may_vouch_for_while_it_is_valid() {
        let now = made_at(Duration::ZERO);
        let signed = verify(&ca("ml-ci@example.com"), "t", &read("cert.sig"), now).unwrap();
        assert_eq!(signed.signer, "ml-ci@example.com (issuer CN=ml model signing CA)");
        assert!(signed.signer.contains("issuer CN=ml model signing CA"), "{}", signed.signer);
        let stranger = verify(&ca("release-bot@example.com"), "t", &read("cert.sig"), now).unwrap_err();
        assert!(matches!(stranger, ProvenanceError::UnknownSigner { .. }), "{stranger}");
        let expired = verify(&ca("ml-ci@example.com"), "t", &read("expired.sig"), now).unwrap_err();
        assert!(expired.to_string().contains("it has expired"), "{expired}");
        // The signing certificate lives 7 days: verified later, it has expired too.
        let later = verify(&ca("ml-ci@example.com"), "t", &read("cert.sig"), made_at(Duration::from_secs(8 * 86400)));
        assert!(later.unwrap_err().to_string().contains("it has expired"));
        // A key policy does not accept a certificate, nor a CA policy a bare key.
        assert!(matches!(verify(&keys(), "t", &read("cert.sig"), now), Err(ProvenanceError::UnknownSigner { .. })));
        assert!(matches!(
            verify(&ca("ml-ci@example.com"), "t", &read("key.sig"), now),
            Err(ProvenanceError::UnknownSigner { .. })
        ));
    }

    #[test]
    fn the_signed_files_must_be_exactly_the_models() {
        let signed = statement_of("t", &read("key.sig")).unwrap();
        let (a, b) = (sha("a.bin"), sha("sub/b.bin"));
        let mismatch = |set: ModelSet| match check_files("t", &signed, &set) {
            Err(ProvenanceError::FilesMismatch { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(mismatch(model(&[("a.bin", &a)])).contains("names 1 files the model does not have: \"sub/b.bin\""));
        let extra = mismatch(model(&[("a.bin", &a), ("sub/b.bin", &b), ("c.bin", &a)]));
        assert!(extra.contains("does not name 1 of the model's files: \"c.bin\""), "{extra}");
        let tampered = mismatch(model(&[("a.bin", &b), ("sub/b.bin", &b)]));
        assert!(tampered.contains("other bytes than the signer did for \"a.bin\""), "{tampered}");
        // model_signing names a single file ".".
        let single = statement_of("t", &read("single.sig")).unwrap();
        assert_eq!(single, BTreeMap::from([(".".to_string(), a.clone())]));
        let info = TargetFile { length: 1, hashes: [("sha256".into(), a)].into_iter().collect(), custom: None };
        let file = ModelSet::new(ModelRef::File("m/1/a.bin".into()), vec![("m/1/a.bin".into(), info)]).unwrap();
        check_files("t", &single, &file).unwrap();
    }

    #[test]
    fn what_is_not_a_model_signature_is_refused_with_the_reason() {
        let now = made_at(Duration::ZERO);
        let refused = |bytes: &[u8]| match verify(&keys(), "t", bytes, now) {
            Err(ProvenanceError::Malformed { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(!refused(b"not json").is_empty());
        assert!(!refused(&[0xff; 64]).is_empty());
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut bundle: serde_json::Value = serde_json::from_slice(&read("key.sig")).unwrap();
            f(&mut bundle);
            serde_json::to_vec(&bundle).unwrap()
        };
        let two = edit(&|b| {
            let sig = b["dsseEnvelope"]["signatures"][0].clone();
            b["dsseEnvelope"]["signatures"] = serde_json::json!([sig.clone(), sig]);
        });
        assert!(refused(&two).contains("2 signatures"));
        let other_type = edit(&|b| b["dsseEnvelope"]["payloadType"] = "text/plain".into());
        assert!(refused(&other_type).contains("not an in-toto statement"));
        let long_chain = edit(&|b| {
            b["verificationMaterial"] = serde_json::json!({"x509CertificateChain": {"certificates": vec![serde_json::json!({"rawBytes": "AA=="}); 9]}});
        });
        assert!(refused(&long_chain).contains("more than 8"));
        // A statement of another serialization (shards, blake3) cannot be compared.
        let payload = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"m","digest":{"sha256":"00"}}],
            "predicateType":"https://model_signing/signature/v1.0",
            "predicate":{"serialization":{"method":"shards","hash_type":"sha256"},"resources":[]}}"#;
        let err = statement_files("t", payload).unwrap_err().to_string();
        assert!(err.contains("default method (files, sha256)"), "{err}");
        // The subject digest must be that of the listed digests.
        let payload = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"m","digest":{"sha256":"00"}}],
            "predicateType":"https://model_signing/signature/v1.0",
            "predicate":{"serialization":{"method":"files","hash_type":"sha256"},"resources":[]}}"#;
        assert!(statement_files("t", payload).unwrap_err().to_string().contains("subject digest"));
    }

    #[test]
    fn a_policy_of_unusable_keys_or_cas_says_which() {
        assert!(Policy::new(Some(b"no pem here"), &[]).unwrap_err().contains("no PEM PUBLIC KEY"));
        let ed25519 = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert!(Policy::new(Some(ed25519), &[]).unwrap_err().contains("not an elliptic-curve key"));
        assert!(Policy::new(None, &[(b"", &[])]).unwrap_err().contains("no PEM CERTIFICATE"));
    }

    #[test]
    fn the_signature_lives_beside_the_model() {
        assert_eq!(signature_target(&ModelRef::File("f/2/model.onnx".into())), "f/2/model.onnx.sig");
        assert_eq!(signature_target(&ModelRef::Prefix("llm/3.0.0/".into())), "llm/3.0.0.sig");
        assert_eq!(signature_target(&ModelRef::List(vec!["b/w".into(), "a/c.json".into()])), "a/c.json.sig");
    }
}

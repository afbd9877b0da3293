//! One refresh of a repository for the controller: verify the recorded root chain from
//! the pinned root, walk on from its newest root, hold the floors from status, and
//! return what is trusted now plus the chain to record.

use k8s_openapi::jiff::Timestamp;
use reqwest::Url;

use super::{
    Floors, SignatureCheck, Store, Transport, TransportOptions, TrustError, Trusted, Updater,
    state::{anchor, parse_chain, pin_digest},
};

/// What a refresh starts from.
pub struct RefreshInput<'a> {
    pub metadata_url: &'a str,
    /// Where the targets are: read for model signatures and image manifests only (the
    /// models are the pods').
    pub targets_url: &'a str,
    /// How each model's signature is checked, when the repository asks for one.
    pub signature: Option<SignatureCheck>,
    /// The security team's pin (`spec.trustedRoot`): all trust starts here.
    pub pinned_root: &'a [u8],
    /// The trust record kept in the cluster, if any: `(pin digest, root chain)` as read.
    pub record: Option<Record>,
    pub ca_bundle: Option<Vec<u8>>,
    pub floors: Floors,
    pub now: Timestamp,
    /// The verified metadata of the previous session, if any: used only while the pin
    /// is the one it was built on (a re-anchored repository starts from nothing).
    pub previous: Option<Store>,
    /// The pin digest the repository's status recorded (written only by the operator):
    /// what re-anchoring is decided from. `None` for a repository an older modelgate
    /// refreshed: the record decides, as it did then.
    pub recorded_pin: Option<String>,
}

/// The trust-state ConfigMap's data, unverified.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub pin_sha256: Option<String>,
    pub chain: Option<String>,
    /// The floors recorded for pods (`STATE_FLOORS_KEY`), as written.
    pub floors: Option<String>,
}

/// A successful refresh: what to record, and the client to keep.
pub struct Refreshed {
    pub kept: Kept,
    /// The client that refreshed, ready to look up targets (delegated roles load lazily).
    pub session: Session,
}

/// What a successful refresh leaves to record and report.
pub struct Kept {
    pub trusted: Trusted,
    /// Every root after the pin, oldest first: the record to keep.
    pub chain: Vec<Vec<u8>>,
    /// Digest of the pin the chain starts from.
    pub pin_sha256: String,
    /// The pin differs from the one the record was built on: trust was re-anchored.
    pub reanchored: bool,
}

/// A client session kept between refreshes (metadata in memory).
pub struct Session {
    pub updater: Updater,
    /// The targets' base URL.
    pub targets: Url,
    /// How signatures are checked, when they are asked for.
    pub signature: Option<SignatureCheck>,
}

impl Session {
    /// The files `model` names as signed now, and the signer of its signature when the
    /// repository asks for one.
    pub async fn resolve(
        &mut self,
        model: &crate::api::ModelRef,
        now: Timestamp,
    ) -> Result<(super::ModelSet, Option<String>), TrustError> {
        let set = super::model::resolve(&mut self.updater, model).await?;
        super::model::image_manifest(&mut self.updater, &self.targets, &set).await?;
        let Some(check) = &self.signature else { return Ok((set, None)) };
        let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now.as_second()).unwrap_or(0),
        ));
        let signer = super::model::signature(&mut self.updater, &self.targets, &set, check, now).await?;
        Ok((set, signer))
    }
}

/// Whether trust is re-anchored: the pin differs from the one the repository's status
/// recorded (written only by the operator). A record (a ConfigMap anyone with `edit` may
/// write) that names another pin while the pin did not change is tampering, not a
/// re-pin. Without a recorded pin (a repository an older modelgate refreshed), the record
/// decides, as it did then.
pub fn reanchored(recorded_pin: Option<&str>, record: &Record, pin_sha256: &str) -> Result<bool, TrustError> {
    let record_differs = record.chain.is_some() && record.pin_sha256.as_deref() != Some(pin_sha256);
    match recorded_pin {
        Some(recorded) if recorded != pin_sha256 => Ok(true),
        Some(_) if record_differs => Err(TrustError::TrustState {
            reason: "it names another pinned root than the one this repository's status recorded, while \
                     spec.trustedRoot did not change"
                .into(),
        }),
        Some(_) => Ok(false),
        None => Ok(record_differs),
    }
}

pub async fn refresh(input: RefreshInput<'_>) -> Result<Refreshed, TrustError> {
    let url = Url::parse(input.metadata_url)
        .map_err(|e| TrustError::Malformed { what: "metadataUrl".into(), reason: e.to_string() })?;
    let transport = Transport::new(TransportOptions { ca_bundle: input.ca_bundle, ..Default::default() })?;
    let pin_sha256 = pin_digest(input.pinned_root);
    let record = input.record.unwrap_or_default();
    let reanchored = reanchored(input.recorded_pin.as_deref(), &record, &pin_sha256)?;
    let mut chain = match (&record.chain, reanchored) {
        (Some(text), false) => parse_chain(text)?,
        _ => Vec::new(),
    };
    let start = anchor(input.pinned_root, &chain)?;
    // The previous store's root is the newest one verified from this same pin and
    // chain; `anchor` above has just re-checked the record it came from.
    let store = match input.previous {
        Some(previous) if !reanchored => previous,
        _ => Store::memory(),
    };
    let mut updater = Updater::new(store, transport, url, Some(&start), input.floors, input.now)?;
    let targets = Url::parse(input.targets_url)
        .map_err(|e| TrustError::Malformed { what: "targetsUrl".into(), reason: e.to_string() })?;
    let trusted = updater.refresh().await?;
    chain.extend(updater.rotated_roots().iter().cloned());
    let session = Session { updater, targets, signature: input.signature };
    Ok(Refreshed { kept: Kept { trusted, chain, pin_sha256, reanchored }, session })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pin: Option<&str>) -> Record {
        Record { pin_sha256: pin.map(Into::into), chain: Some("[]".into()), floors: None }
    }

    #[test]
    fn only_a_changed_pin_re_anchors_and_a_record_that_disagrees_is_tampering() {
        // The security team changed the pin: re-anchored, whatever the record says.
        assert!(reanchored(Some("old"), &record(Some("old")), "new").unwrap());
        // Someone edited the record's pin key; the pin itself did not change.
        let forged = reanchored(Some("pin"), &record(Some("other")), "pin").unwrap_err();
        assert_eq!(forged.reason(), crate::trust::Reason::TrustStateTampered);
        // All agree, or there is no record yet.
        assert!(!reanchored(Some("pin"), &record(Some("pin")), "pin").unwrap());
        assert!(!reanchored(Some("pin"), &Record::default(), "pin").unwrap());
        // A status from before the pin was recorded: the record decides, as before.
        assert!(reanchored(None, &record(Some("old")), "new").unwrap());
        assert!(!reanchored(None, &record(Some("pin")), "pin").unwrap());
    }
}

//! One refresh of a repository for the controller: verify the recorded root chain from
//! the pinned root, walk on from its newest root, hold the floors from status, and
//! return what is trusted now plus the chain to record.

use k8s_openapi::jiff::Timestamp;
use reqwest::Url;

use super::{
    Floors, Store, Transport, TransportOptions, TrustError, Trusted, Updater,
    state::{anchor, parse_chain, pin_digest},
};

/// What a refresh starts from.
pub struct RefreshInput<'a> {
    pub metadata_url: &'a str,
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
}

/// The trust-state ConfigMap's data, unverified.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub pin_sha256: Option<String>,
    pub chain: Option<String>,
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
}

pub async fn refresh(input: RefreshInput<'_>) -> Result<Refreshed, TrustError> {
    let url = Url::parse(input.metadata_url)
        .map_err(|e| TrustError::Malformed { what: "metadataUrl".into(), reason: e.to_string() })?;
    let transport = Transport::new(TransportOptions { ca_bundle: input.ca_bundle, ..Default::default() })?;
    let pin_sha256 = pin_digest(input.pinned_root);
    let record = input.record.unwrap_or_default();
    // A record built on another pin (or on none: an older modelgate) is set aside.
    let reanchored = record.chain.is_some() && record.pin_sha256.as_deref() != Some(pin_sha256.as_str());
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
    let trusted = updater.refresh().await?;
    chain.extend(updater.rotated_roots().iter().cloned());
    Ok(Refreshed { kept: Kept { trusted, chain, pin_sha256, reanchored }, session: Session { updater } })
}

//! One refresh of a repository for the controller: start from the newest trusted root
//! (persisted in the cluster) or the pinned one, hold the floors from status, and
//! return what is trusted now plus the newest root to persist.

use k8s_openapi::jiff::Timestamp;
use reqwest::Url;

use super::{Floors, Store, Transport, TransportOptions, TrustError, Trusted, Updater};

/// What a refresh starts from.
pub struct RefreshInput<'a> {
    pub metadata_url: &'a str,
    pub pinned_root: &'a [u8],
    /// The newest root trusted earlier (persisted trust state), preferred when present.
    pub persisted_root: Option<&'a [u8]>,
    pub ca_bundle: Option<Vec<u8>>,
    pub floors: Floors,
    pub now: Timestamp,
}

/// A successful refresh.
pub struct Refreshed {
    pub trusted: Trusted,
    /// root.json of the newest trusted root, byte for byte.
    pub root: Vec<u8>,
    /// The client that refreshed, ready to look up targets (delegated roles load lazily).
    pub session: Session,
}

/// An updater and the scratch directory its store lives in.
pub struct Session {
    pub updater: Updater,
    _dir: tempfile::TempDir,
}

pub async fn refresh(input: RefreshInput<'_>) -> Result<Refreshed, TrustError> {
    let url = Url::parse(input.metadata_url)
        .map_err(|e| TrustError::Malformed { what: "metadataUrl".into(), reason: e.to_string() })?;
    let transport = Transport::new(TransportOptions { ca_bundle: input.ca_bundle, ..Default::default() })?;
    // A scratch store per refresh: everything that must survive lives in the cluster.
    let scratch = tempfile::tempdir()
        .map_err(|e| TrustError::Store { path: std::env::temp_dir().display().to_string(), reason: e.to_string() })?;
    let store = Store::new(scratch.path())?;
    let start = input.persisted_root.unwrap_or(input.pinned_root);
    let mut updater = Updater::new(store.clone(), transport, url, Some(start), input.floors, input.now)?;
    let trusted = updater.refresh().await?;
    let root = store.load("root").unwrap_or_else(|| start.to_vec());
    Ok(Refreshed { trusted, root, session: Session { updater, _dir: scratch } })
}

//! Trust: a TUF client that follows the specification's client workflow on tough's
//! key and signature code, with anti-rollback floors that outlive the pod, and the
//! verified download of a target. The rest of modelgate asks "is this target trusted,
//! and what are its length and hashes" and gets an answer or a reason.

mod error;
pub mod fetch;
pub mod image;
pub mod metadata;
pub mod model;
pub mod provenance;
mod refresh;
pub mod state;
mod store;
pub mod target;
mod transport;
mod updater;
pub mod versions;

pub use error::{Reason, TrustError};
pub use metadata::TargetFile;
pub use model::{Identity, ModelFile, ModelSet, SignatureCheck};
pub use refresh::{Kept, Record, RefreshInput, Refreshed, Session, refresh};
pub use store::Store;
pub use target::Expected;
pub use transport::{Transport, TransportOptions};
pub use updater::{Floors, Trusted, Updater, self_signed_root};

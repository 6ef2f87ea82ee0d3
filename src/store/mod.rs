//! The leaf of the architecture: hashes, store paths, derivations and templates, and what a
//! fetch is ([`fetch`]: its spec, pins and records, read by `bramble.lock`) — pure code
//! that does no I/O and never panics on input — plus, in [`local`], the on-disk store.
//!
//! Everything else in Bramble depends on these types; they depend on nothing of Bramble's.

pub mod archive;
pub mod derivation;
pub mod fetch;
pub mod hash;
pub mod limits;
pub mod local;
pub mod order;
pub mod output;
pub mod path;
pub mod template;
pub mod tree;

pub use derivation::{Derivation, DerivationError, Sources, Templates, host_platform};
pub use hash::{Hash, ParseHashError};
pub use limits::BuildLimits;
pub use path::{STORE_DIR, StorePath, StorePathError};
pub use template::{OutputRef, TemplateError};

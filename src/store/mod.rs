//! The leaf of the architecture: hashes, store paths, derivations and templates, the archive
//! format, output hashing and reference scanning, and what a fetch is ([`fetch`]: its spec,
//! pins and records, read by `bramble.lock`). Everything at this level is pure code that
//! does no I/O and never panics on input: the archive encoder and decoder work over any
//! `io::Write`/`io::Read`, and scanning, rewriting and the `h1` hash over byte streams.
//!
//! The I/O lives in [`local`], the on-disk store: its database, locks and gc, and
//! [`local::fs`], which dumps a directory tree into the archive format, restores one and
//! removes one, through directory descriptors.
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

pub use derivation::{Derivation, DerivationError, Sources, Templates, host_platform};
pub use hash::{Hash, ParseHashError};
pub use limits::BuildLimits;
pub use path::{STORE_DIR, StorePath, StorePathError};
pub use template::{OutputRef, TemplateError};

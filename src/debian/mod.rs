//! Debian package sets (DESIGN §9): a list of package names and a suite's pinned `Packages`
//! index become one tree in the store.
//!
//! How it runs. `lib/debian.bramble`'s `packages()` declares a DAO whose builder is the
//! small `bramble-debian` program (`bin/bramble-debian.rs`), run in the sandbox like every
//! DAO: no network, only the fetched index as input. It parses the index ([`index`]),
//! resolves the run-time closure ([`resolve`]) and writes a DAO document ([`document`]):
//! one pinned `builtin:fetch_url` per `.deb` (`mirror://debian/<Filename>`, the index's
//! sha256, unpacked) plus the step that merges the unpacked packages into one tree
//! ([`assemble`]), also run by `bramble-debian`.
//!
//! How `bramble-debian` gets into the sandbox: both steps name the builtin builder
//! `builtin:bramble-debian@N` (`crate::engine::tool::DEBIAN_BUILDER`). The executor copies
//! the program with the dynamic loader and the shared libraries of the running bramble
//! process (both programs are built from this crate, so the tool needs a subset of bramble's
//! libraries) into the sandbox's `/build/.tool/` and runs it through the bundled loader, so
//! the sandbox needs nothing from the host. The derivations record the tool's name and
//! protocol version (`TOOL_VERSION`, bumped when its output changes), never its bytes: the
//! package set's derivation hash, its generated graph and so its `[[dao]]` entry in
//! `bramble.lock` are the same for every build of bramble, and a generator that writes
//! another graph is still caught by the lock's graph check (see `crate::engine::tool`). A
//! separate program, rather than a hidden `bramble` subcommand, keeps the copy a few MB
//! instead of bramble's size (hundreds of MB in a debug build).
//!
//! Pure code apart from [`assemble`], which writes the tree.

pub mod assemble;
pub mod document;
pub mod index;
pub mod resolve;
pub mod version;

pub use index::{IndexError, Package, Relation};
pub use resolve::{ResolveError, Universe};
pub use version::{Version, VersionError};

/// Decompress an index by its magic bytes: xz, gzip, or plain text.
pub fn decompress(bytes: &[u8]) -> Result<String, String> {
    use std::io::Read;
    let mut text = Vec::new();
    let limit = 1u64 << 30;
    if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        xz2::read::XzDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut text)
            .map_err(|e| format!("cannot decompress the xz index: {e}"))?;
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut text)
            .map_err(|e| format!("cannot decompress the gzip index: {e}"))?;
    } else {
        text = bytes.to_vec();
    }
    String::from_utf8(text).map_err(|e| format!("the index is not UTF-8: {e}"))
}

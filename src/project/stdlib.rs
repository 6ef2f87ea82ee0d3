//! Where Bramble's Starlark standard library (`lib/` of the repository) is found, and the
//! module name it is loaded by: `load("bramble/busybox", "busybox")`.
//!
//! `$BRAMBLE_LIB` wins; otherwise an installed layout (`<prefix>/bin/bramble` next to
//! `<prefix>/share/bramble/lib`), otherwise the `lib/` of the source tree the binary was
//! built from (a `cargo build` in a checkout). None found means no standard library: a
//! `load("bramble/...")` then fails with the usual "no module named" error.

use std::path::PathBuf;

use crate::lang::Library;

/// The module name of the standard library.
pub const STDLIB_NAME: &str = "bramble";

/// The standard library, if it can be found.
pub fn standard_library() -> Option<Library> {
    let candidates = std::env::var_os(crate::env::BRAMBLE_LIB)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("../share/bramble/lib"))),
        )
        .chain(std::iter::once(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lib"),
        ));
    for dir in candidates {
        if dir.is_dir() {
            let root = std::fs::canonicalize(&dir).unwrap_or(dir);
            return Some(Library {
                name: STDLIB_NAME.to_owned(),
                root,
            });
        }
    }
    None
}

//! Trusting the store's home: everything bramble reads or writes there must belong to the
//! user running it, with no symlink where a file or directory is expected.
//!
//! A home another user owns (or a `store/`, `tmp/`, `locks/`, `gcroots/`, `temproots/` or
//! database in it) lets that user replace build outputs or read build logs, and a symlink
//! planted at `db.sqlite` makes SQLite create or write a file elsewhere. So [`prepare`]
//! refuses a foreign owner and a symlink with [`Error::UntrustedHome`], never following
//! one (every check is an `lstat`), creates what is missing private (directories 0700,
//! `store/` 0755 so store objects stay readable, `db.sqlite` 0600 — SQLite gives its
//! `-wal` and `-shm` files the database's mode), and takes group and other write (and, for
//! the private parts, read) permission away from what the user owns but left open.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{Error, io_err};

/// The directories of a home and their modes.
const DIRS: [(&str, u32); 5] = [
    ("store", 0o755),
    ("gcroots", 0o700),
    ("tmp", 0o700),
    ("locks", 0o700),
    ("temproots", 0o700),
];

/// The database and the files SQLite keeps beside it.
const DB_FILES: [&str; 3] = ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"];

fn untrusted(path: &Path, reason: String) -> Error {
    Error::UntrustedHome {
        path: path.to_owned(),
        reason,
    }
}

/// Create the home `home` (0700) if it is missing; returns it resolved.
pub(super) fn create(home: &Path) -> Result<std::path::PathBuf, Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .map_err(io_err("create directory", home))?;
    std::fs::canonicalize(home).map_err(io_err("resolve", home))
}

/// Check the resolved home and its layout, creating what is missing (see the module doc).
pub(super) fn prepare(home: &Path) -> Result<(), Error> {
    let me = nix::unistd::geteuid().as_raw();
    check_dir(home, me, None)?;
    for (name, mode) in DIRS {
        let dir = home.join(name);
        match std::fs::DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create directory", &dir)(e)),
        }
        check_dir(&dir, me, Some(mode))?;
    }
    for name in DB_FILES {
        let file = home.join(name);
        match std::fs::symlink_metadata(&file) {
            Ok(meta) => check_file(&file, &meta, me)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound && name == "db.sqlite" => {
                // Created here, private, so SQLite opens (and mirrors the mode of) our file.
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&file)
                {
                    Ok(_) => {}
                    // Another process created it meanwhile: check theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let meta =
                            std::fs::symlink_metadata(&file).map_err(io_err("stat", &file))?;
                        check_file(&file, &meta, me)?;
                    }
                    Err(e) => return Err(io_err("create", &file)(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("stat", &file)(e)),
        }
    }
    Ok(())
}

/// `path` must be a directory (not a symlink) owned by `me`; group and other write is
/// removed, and with `private = Some(mode)` its mode is set to `mode`.
fn check_dir(path: &Path, me: u32, private: Option<u32>) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    if meta.file_type().is_symlink() {
        return Err(untrusted(path, "it is a symlink".into()));
    }
    if !meta.is_dir() {
        return Err(untrusted(path, "it is not a directory".into()));
    }
    owned(path, &meta, me)?;
    let mode = meta.mode() & 0o7777;
    let wanted = private.unwrap_or(mode & !0o022);
    if mode != wanted {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))
            .map_err(io_err("set permissions of", path))?;
    }
    Ok(())
}

/// A database file must be a regular file (not a symlink) owned by `me`; it is made 0600.
fn check_file(path: &Path, meta: &std::fs::Metadata, me: u32) -> Result<(), Error> {
    if meta.file_type().is_symlink() {
        return Err(untrusted(path, "it is a symlink".into()));
    }
    if !meta.is_file() {
        return Err(untrusted(path, "it is not a regular file".into()));
    }
    owned(path, meta, me)?;
    if meta.mode() & 0o077 != 0 {
        // Not a symlink (checked above) in a directory only `me` can write.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("set permissions of", path))?;
    }
    Ok(())
}

fn owned(path: &Path, meta: &std::fs::Metadata, me: u32) -> Result<(), Error> {
    if meta.uid() != me {
        return Err(untrusted(
            path,
            format!(
                "it belongs to uid {}, not to the user running bramble (uid {me})",
                meta.uid()
            ),
        ));
    }
    Ok(())
}

//! Build directories: where one build's `/build` and outputs live on the host.
//!
//! A build directory is created under the store's temporary directory with an unpredictable
//! name and mode 0700, so no other user can reach it and no builder can guess it ahead of time
//! (CVE-2025-46415). Everything below it may have been written by a builder, so it is removed
//! through file descriptors only: entries are unlinked relative to an open directory, never by
//! following a path a builder could have turned into a symlink (CVE-2026-39860), and
//! directories a builder made read-only are made writable through their own descriptor first,
//! so nothing writable is left behind after a failure (CVE-2025-52992).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, fchmod, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Why a build directory could not be created or removed.
#[derive(Debug, thiserror::Error)]
pub enum BuildDirError {
    #[error("cannot create a build directory in `{}`", dir.display())]
    Create { dir: PathBuf, source: io::Error },
    #[error("cannot remove build directory `{}`", path.display())]
    Remove { path: PathBuf, source: io::Error },
}

/// One build's private directory. Removed (by descriptor) when dropped, unless kept.
#[derive(Debug)]
pub struct BuildDir {
    /// The directory holding build directories (the store's temporary directory).
    parent: OwnedFd,
    name: String,
    path: PathBuf,
    keep: bool,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl BuildDir {
    /// Create a fresh build directory `build-<random>` (mode 0700) in `tmp`.
    pub fn create(tmp: &Path) -> Result<BuildDir, BuildDirError> {
        BuildDir::create_prefixed(tmp, "build-")
    }

    /// Create a fresh private directory `<prefix><random>` (mode 0700) in `tmp`.
    pub fn create_prefixed(tmp: &Path, prefix: &str) -> Result<BuildDir, BuildDirError> {
        let create = |source| BuildDirError::Create {
            dir: tmp.to_owned(),
            source,
        };
        std::fs::create_dir_all(tmp).map_err(create)?;
        let parent = openat(nix::fcntl::AT_FDCWD, tmp, DIR_FLAGS, Mode::empty())
            .map_err(|e| create(e.into()))?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .rand_bytes(16)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(tmp)
            .map_err(create)?;
        let path = dir.keep();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("tempfile names are ASCII")
            .to_owned();
        Ok(BuildDir {
            parent,
            name,
            path,
            keep: false,
        })
    }

    /// The directory on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the directory when dropped (`--keep-failed`); returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }

    /// Remove the directory and everything in it now.
    pub fn remove(mut self) -> Result<(), BuildDirError> {
        self.keep = true;
        remove_at(&self.parent, &self.name).map_err(|source| BuildDirError::Remove {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = remove_at(&self.parent, &self.name)
        {
            tracing::warn!(
                "cannot remove build directory `{}`: {e}",
                self.path.display()
            );
        }
    }
}

/// Remove `name` in directory `parent` and everything below it, through descriptors only.
///
/// Subdirectories are moved up into the top directory (`renameat2` with `RENAME_NOREPLACE`)
/// and emptied one level at a time, so at most two directories are open at once however deep
/// a builder nested them, and no path is ever followed.
pub fn remove_at(parent: &impl AsFd, name: &str) -> io::Result<()> {
    let top = match openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
            return unlink_ignoring_missing(parent, name, UnlinkatFlags::NoRemoveDir);
        }
        Err(e) => return Err(e.into()),
    };
    fchmod(&top, Mode::from_bits_truncate(0o700))?;
    let mut fresh = 0u64;
    loop {
        let entries = list(&top)?;
        if entries.is_empty() {
            break;
        }
        for (entry, kind) in entries {
            if !is_dir(&top, &entry, kind)? {
                unlink_ignoring_missing(&top, entry.as_c_str(), UnlinkatFlags::NoRemoveDir)?;
                continue;
            }
            let dir = openat(&top, entry.as_c_str(), DIR_FLAGS, Mode::empty())?;
            fchmod(&dir, Mode::from_bits_truncate(0o700))?;
            for (child, child_kind) in list(&dir)? {
                if is_dir(&dir, &child, child_kind)? {
                    // Moving a directory to another parent rewrites its `..`, which needs
                    // write permission on it (root is never refused): make it writable
                    // through its own descriptor first.
                    let moved = openat(&dir, child.as_c_str(), DIR_FLAGS, Mode::empty())?;
                    fchmod(&moved, Mode::from_bits_truncate(0o700))?;
                    drop(moved);
                    // Move it up to the top directory under a name not in use.
                    loop {
                        fresh += 1;
                        let target = CString::new(format!(".rm-{fresh}")).expect("no NUL");
                        match renameat2(
                            &dir,
                            child.as_c_str(),
                            &top,
                            target.as_c_str(),
                            RenameFlags::RENAME_NOREPLACE,
                        ) {
                            Err(Errno::EEXIST) => continue,
                            other => break other?,
                        }
                    }
                } else {
                    unlink_ignoring_missing(&dir, child.as_c_str(), UnlinkatFlags::NoRemoveDir)?;
                }
            }
            drop(dir);
            unlink_ignoring_missing(&top, entry.as_c_str(), UnlinkatFlags::RemoveDir)?;
        }
    }
    drop(top);
    unlink_ignoring_missing(parent, name, UnlinkatFlags::RemoveDir)
}

/// How deep [`make_private`] sanitises: below that the tree is left as it is, unreachable
/// by others all the same under its private top.
const SANITISE_DEPTH: usize = 128;

/// Make a kept build directory (`--keep-failed`) safe to leave behind (CVE-2025-52992):
/// its top directory 0700, and below it no group or other write permission and no
/// setuid, setgid or sticky bit, whatever the builder chose. Walks through descriptors
/// (`openat` with `O_NOFOLLOW`); symlinks are left alone, never followed. Call it only
/// when no process of the builder runs, so nothing changes between an entry's `lstat`
/// and its `chmod`.
pub fn make_private(path: &Path) -> io::Result<()> {
    let top = openat(nix::fcntl::AT_FDCWD, path, DIR_FLAGS, Mode::empty())?;
    fchmod(&top, Mode::from_bits_truncate(0o700))?;
    sanitise_below(&top, 0)
}

fn sanitise_below(dir: &OwnedFd, depth: usize) -> io::Result<()> {
    if depth >= SANITISE_DEPTH {
        return Ok(());
    }
    for (name, _) in list(dir)? {
        let stat = match fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let kind = stat.st_mode & libc::S_IFMT;
        let mode = stat.st_mode & 0o7777;
        let safe = mode & 0o755;
        match kind {
            libc::S_IFLNK => {}
            libc::S_IFDIR => {
                let child = openat(dir, name.as_c_str(), DIR_FLAGS, Mode::empty())?;
                // The owner keeps full access, so the user can look and remove it.
                fchmod(&child, Mode::from_bits_truncate(safe | 0o700))?;
                sanitise_below(&child, depth + 1)?;
            }
            _ if mode != safe => {
                use nix::sys::stat::{FchmodatFlags, fchmodat};
                let mode = Mode::from_bits_truncate(safe);
                // Never through a symlink; where the C library cannot (no `/proc`), the
                // entry was no symlink at the lstat above and nothing runs to swap it.
                match fchmodat(dir, name.as_c_str(), mode, FchmodatFlags::NoFollowSymlink) {
                    Err(Errno::EOPNOTSUPP) => {
                        fchmodat(dir, name.as_c_str(), mode, FchmodatFlags::FollowSymlink)?
                    }
                    other => other?,
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn unlink_ignoring_missing<P: ?Sized + nix::NixPath>(
    dir: &impl AsFd,
    name: &P,
    flags: UnlinkatFlags,
) -> io::Result<()> {
    match unlinkat(dir, name, flags) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The entries of an open directory (without `.` and `..`), with their type if known.
fn list(dir: &OwnedFd) -> io::Result<Vec<(CString, Option<Type>)>> {
    // Open `.` anew so the directory stream has its own offset and descriptor.
    let mut stream = Dir::openat(dir, ".", DIR_FLAGS, Mode::empty())?;
    let mut out = Vec::new();
    for entry in stream.iter() {
        let entry = entry?;
        let name: &CStr = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        out.push((name.to_owned(), entry.file_type()));
    }
    Ok(out)
}

fn is_dir(dir: &OwnedFd, name: &CStr, kind: Option<Type>) -> io::Result<bool> {
    if let Some(kind) = kind {
        return Ok(kind == Type::Directory);
    }
    let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(stat.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn build_dir_is_private_and_unpredictable() {
        let tmp = tempfile::tempdir().unwrap();
        let a = BuildDir::create(tmp.path()).unwrap();
        let b = BuildDir::create(tmp.path()).unwrap();
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(a.name.len() >= "build-".len() + 16);
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
        let kept = b.keep();
        assert!(kept.exists());
    }

    #[test]
    fn make_private_strips_modes_and_never_follows_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("target");
        std::fs::write(&target, "x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("kept");
        std::fs::create_dir_all(root.join("open/deeper")).unwrap();
        std::fs::write(root.join("open/deeper/f"), "x").unwrap();
        symlink(&target, root.join("open/link")).unwrap();
        symlink(outside.path(), root.join("dir-link")).unwrap();
        for (rel, mode) in [
            ("open/deeper/f", 0o4777),
            ("open/deeper", 0o1777),
            ("open", 0o2777),
            ("", 0o777),
        ] {
            std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        let outside_before = std::fs::metadata(outside.path())
            .unwrap()
            .permissions()
            .mode();
        make_private(&root).unwrap();
        let mode = |rel: &str| {
            std::fs::symlink_metadata(root.join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode("open"), 0o755);
        assert_eq!(mode("open/deeper"), 0o755);
        assert_eq!(mode("open/deeper/f"), 0o755);
        let target_mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(target_mode, 0o666);
        let outside_after = std::fs::metadata(outside.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(outside_after, outside_before);
    }

    #[test]
    fn removal_never_follows_symlinks_and_handles_read_only_and_deep_trees() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "keep me").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = BuildDir::create(tmp.path()).unwrap();
        let root = dir.path().to_owned();
        // What a hostile builder might leave: symlinks out, read-only dirs, deep nesting.
        symlink(outside.path(), root.join("link-to-outside")).unwrap();
        symlink(outside.path().join("precious"), root.join("link-to-file")).unwrap();
        let mut deep = root.join("deep");
        for i in 0..300 {
            deep = deep.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), "x").unwrap();
        symlink(outside.path(), deep.join(".rm-1")).unwrap();
        let ro = root.join("ro");
        std::fs::create_dir_all(ro.join("sub")).unwrap();
        std::fs::write(ro.join("sub/file"), "x").unwrap();
        std::fs::set_permissions(ro.join("sub"), std::fs::Permissions::from_mode(0o500)).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        dir.remove().unwrap();
        assert!(!root.exists());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("precious")).unwrap(),
            "keep me"
        );
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
    }

    #[test]
    fn top_level_symlink_is_unlinked_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "keep me").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        symlink(outside.path(), tmp.path().join("swapped")).unwrap();
        let parent = openat(nix::fcntl::AT_FDCWD, tmp.path(), DIR_FLAGS, Mode::empty()).unwrap();
        remove_at(&parent, "swapped").unwrap();
        assert!(outside.path().join("precious").exists());
        assert!(!tmp.path().join("swapped").exists());
    }
}

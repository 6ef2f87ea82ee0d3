//! Merge unpacked `.deb`s into one tree, as dpkg would install them on a merged-`/usr`
//! system:
//!
//! - `/bin`, `/sbin`, `/lib`, `/lib32`, `/lib64` and `/libx32` of a package go to `usr/`
//!   (bookworm's packages still ship them at the top; the root view links `/bin` to
//!   `usr/bin` etc.).
//! - Every symlink is re-pointed within the tree: an absolute target (`/lib/x86_64-linux-
//!   gnu/libc.so.6`) and a relative one that the move changes are rewritten as the relative
//!   link to the same (merged) place, so links work both at `/usr` in a root view and
//!   through the store path.
//! - `usr/share/doc`, `usr/share/man` and `usr/share/info` are left out (nothing a build
//!   runs reads them; they are a tenth of a toolchain's size).
//! - A path two packages ship is taken from the first package in the order given (sorted by
//!   package name); dpkg would refuse or divert. Files keep their executable bit.
//!
//! The trees are store objects the build reads; the output is written with plain calls,
//! but never through a symlink the merge itself made: an entry below a symlink is skipped.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Top-level directories that merged `/usr` moves below `usr/`.
pub const MERGED: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Directories left out of the tree.
pub const SKIPPED: [&str; 3] = ["usr/share/doc", "usr/share/man", "usr/share/info"];

/// What an assembly did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub symlinks: u64,
    /// Paths a later package also shipped (the first was kept).
    pub duplicates: u64,
}

/// The merged location of a relative path (as components).
fn merged(parts: &[String]) -> Vec<String> {
    match parts.first() {
        Some(first) if MERGED.contains(&first.as_str()) => std::iter::once("usr".to_owned())
            .chain(parts.iter().cloned())
            .collect(),
        _ => parts.to_vec(),
    }
}

/// Normalise `base/target` lexically; `None` if it climbs above the root.
fn normalise(base: &[String], target: &Path) -> Option<Vec<String>> {
    let mut out: Vec<String> = if target.is_absolute() {
        Vec::new()
    } else {
        base.to_vec()
    };
    for c in target.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
        }
    }
    Some(out)
}

/// The relative path from directory `from` to `to`.
fn relative(from: &[String], to: &[String]) -> PathBuf {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..from.len() {
        p.push("..");
    }
    for part in &to[common..] {
        p.push(part);
    }
    if p.as_os_str().is_empty() {
        p.push(".");
    }
    p
}

/// The new target of a symlink at `link` (original location) pointing to `target`.
pub fn retarget(link: &[String], target: &Path) -> PathBuf {
    let parent = &link[..link.len().saturating_sub(1)];
    let Some(abs) = normalise(parent, target) else {
        return target.to_owned();
    };
    let to = merged(&abs);
    let new_link = merged(link);
    relative(&new_link[..new_link.len() - 1], &to)
}

/// Whether `path`'s directories below `out` are real directories (creating missing ones);
/// false if one is a symlink or a file.
fn make_parents(out: &Path, parts: &[String]) -> io::Result<bool> {
    let mut dir = out.to_owned();
    for part in parts {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&dir)?,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> String {
    format!("`{}`: {e}", path.display())
}

/// Merge `trees` into `out` (created).
pub fn assemble(out: &Path, trees: &[PathBuf]) -> Result<Stats, String> {
    fs::create_dir(out).map_err(|e| io_error(out, e))?;
    let mut stats = Stats::default();
    for tree in trees {
        for entry in walkdir::WalkDir::new(tree)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| io_error(tree, e))?;
            let rel = entry
                .path()
                .strip_prefix(tree)
                .map_err(|e| io_error(entry.path(), e))?;
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.is_empty() {
                continue;
            }
            let to = merged(&parts);
            let joined = to.join("/");
            if SKIPPED
                .iter()
                .any(|s| joined == *s || joined.starts_with(&format!("{s}/")))
            {
                continue;
            }
            let dest = out.join(&joined);
            let kind = entry.file_type();
            if !make_parents(out, &to[..to.len() - 1]).map_err(|e| io_error(&dest, e))? {
                stats.duplicates += 1;
                continue;
            }
            let exists = fs::symlink_metadata(&dest).is_ok();
            if kind.is_dir() {
                if !exists {
                    fs::create_dir(&dest).map_err(|e| io_error(&dest, e))?;
                } else if !dest.is_dir() || dest.is_symlink() {
                    stats.duplicates += 1;
                }
                continue;
            }
            if exists {
                stats.duplicates += 1;
                continue;
            }
            if kind.is_symlink() {
                let target = fs::read_link(entry.path()).map_err(|e| io_error(entry.path(), e))?;
                std::os::unix::fs::symlink(retarget(&parts, &target), &dest)
                    .map_err(|e| io_error(&dest, e))?;
                stats.symlinks += 1;
            } else if kind.is_file() {
                fs::copy(entry.path(), &dest).map_err(|e| io_error(&dest, e))?;
                let exec = entry
                    .metadata()
                    .map_err(|e| io_error(entry.path(), e))?
                    .permissions()
                    .mode()
                    & 0o111
                    != 0;
                let mode = if exec { 0o755 } else { 0o644 };
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                    .map_err(|e| io_error(&dest, e))?;
                stats.files += 1;
            }
            // Anything else (a fifo or device in a package) is left out; unpacking refuses them.
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Vec<String> {
        s.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn symlinks_are_retargeted_into_the_merged_tree() {
        let cases = [
            // libc6's loader link.
            (
                "lib64/ld-linux-x86-64.so.2",
                "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
            // An absolute link into usr.
            (
                "usr/lib/x86_64-linux-gnu/libz.so",
                "/lib/x86_64-linux-gnu/libz.so.1",
                "libz.so.1",
            ),
            // A relative link the move would break.
            ("bin/sh", "dash", "dash"),
            ("sbin/x", "../usr/bin/y", "../bin/y"),
            // Unchanged relative links.
            ("usr/bin/cc", "gcc-12", "gcc-12"),
            ("usr/bin/a", "../lib/b", "../lib/b"),
            // Outside the tree's own files: still relative, resolving the same under /usr.
            (
                "usr/bin/awk",
                "/etc/alternatives/awk",
                "../../etc/alternatives/awk",
            ),
        ];
        for (link, target, want) in cases {
            assert_eq!(
                retarget(&parts(link), Path::new(target)),
                Path::new(want),
                "{link}"
            );
        }
        // Climbing above the root: left as it is.
        assert_eq!(
            retarget(&parts("x"), Path::new("../../y")),
            Path::new("../../y")
        );
    }

    #[test]
    fn merges_packages_under_usr() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        for (root, file, body) in [
            (&a, "bin/tool", "a-tool"),
            (&a, "usr/share/doc/a/copyright", "doc"),
            (&a, "lib/x86_64-linux-gnu/liba.so.1", "lib"),
            (&b, "bin/tool", "b-tool"),
            (&b, "usr/bin/other", "other"),
        ] {
            let p = root.join(file);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, body).unwrap();
        }
        fs::set_permissions(a.join("bin/tool"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::create_dir_all(a.join("lib64")).unwrap();
        std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/liba.so.1", a.join("lib64/liba"))
            .unwrap();
        let out = t.path().join("out");
        let stats = assemble(&out, &[a, b]).unwrap();
        assert_eq!(
            fs::read_to_string(out.join("usr/bin/tool")).unwrap(),
            "a-tool"
        );
        assert_ne!(
            fs::metadata(out.join("usr/bin/tool"))
                .unwrap()
                .permissions()
                .mode()
                & 0o111,
            0
        );
        assert_eq!(
            fs::read_to_string(out.join("usr/bin/other")).unwrap(),
            "other"
        );
        assert_eq!(
            fs::read_to_string(out.join("usr/lib64/liba")).unwrap(),
            "lib"
        );
        assert!(!out.join("bin").exists() && !out.join("usr/share/doc").exists());
        assert_eq!(stats.duplicates, 1);
        assert_eq!((stats.files, stats.symlinks), (3, 1));
    }
}

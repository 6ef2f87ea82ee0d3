//! `verify` (re-hash every valid path against the database) and `gc` (delete what no root
//! reaches) for the local store.
//!
//! Roots are: the symlinks under `<home>/gcroots/` (recursively), each followed through up
//! to 16 links until it lands in the store (so a root may point at a project's `result`
//! link); the explicit roots given to [`LocalStore::gc`]; and every path whose lock is held
//! by some process (being built, added or pinned with [`LocalStore::hold`]); and the
//! temporary roots of other live bramble processes (see `temproots`). Everything in
//! their closure lives; the rest is deleted, each path while holding its lock. Unregistered
//! entries of `store/` and temp directories whose lock is free are crash leftovers and are
//! removed too. A root symlink whose chain ends at a missing file is stale and is removed.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::fs;
use super::lock::{self, LockMode, PathLock};
use super::{Error, LocalStore, hash_tree};
use crate::store::{Hash, STORE_DIR, StorePath};

/// Options of [`LocalStore::verify`].
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Delete broken paths (and, since their closure is broken, the paths that refer to
    /// them) with their registrations.
    pub repair: bool,
}

/// One thing `verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyProblem {
    /// Registered but absent from `store/`.
    Missing { path: StorePath },
    /// Present but its archive hash or size differs from the database.
    Mismatch {
        path: StorePath,
        expected: Hash,
        actual: Hash,
        expected_size: u64,
        actual_size: u64,
    },
    /// Present but cannot be archived (e.g. a fifo appeared, permissions broke).
    Unreadable { path: StorePath, error: String },
}

impl VerifyProblem {
    pub fn path(&self) -> &StorePath {
        match self {
            VerifyProblem::Missing { path }
            | VerifyProblem::Mismatch { path, .. }
            | VerifyProblem::Unreadable { path, .. } => path,
        }
    }
}

/// What `verify` found and did.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Number of valid paths checked.
    pub checked: usize,
    pub problems: Vec<VerifyProblem>,
    /// Paths deleted by `--repair` (the broken ones and their referrers).
    pub removed: BTreeSet<StorePath>,
    /// Broken paths `--repair` left alone because they were locked.
    pub skipped_locked: BTreeSet<StorePath>,
}

/// Options of [`LocalStore::gc`].
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Only report what would be deleted.
    pub dry_run: bool,
    /// Roots besides `gcroots/`.
    pub extra_roots: Vec<StorePath>,
}

/// What `gc` deleted (or would delete).
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub dry_run: bool,
    /// Valid paths deleted.
    pub deleted: Vec<StorePath>,
    /// Crash leftovers removed: unregistered store entries and stale temp directories.
    pub leftovers: Vec<PathBuf>,
    /// Stale root symlinks removed.
    pub stale_roots: Vec<PathBuf>,
    /// Bytes of files and symlinks freed (estimated from archive sizes for a dry run).
    pub freed_bytes: u64,
}

impl LocalStore {
    /// Re-hash every valid path and compare with the database.
    pub fn verify(&self, options: &VerifyOptions) -> Result<VerifyReport, Error> {
        let _gc = self.gc_lock(LockMode::Shared)?;
        let paths = self.db().all_paths()?;
        let mut report = VerifyReport {
            checked: paths.len(),
            ..VerifyReport::default()
        };
        for path in paths {
            let host = self.host_path(&path);
            let Some(info) = self.path_info(&path)? else {
                continue;
            };
            match std::fs::symlink_metadata(&host) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    report.problems.push(VerifyProblem::Missing { path });
                    continue;
                }
                Err(source) => {
                    return Err(Error::Io {
                        op: "stat",
                        path: host,
                        source,
                    });
                }
                Ok(_) => {}
            }
            match hash_tree(&host) {
                Ok((hash, size)) if hash == info.archive_hash && size == info.archive_size => {}
                Ok((actual, actual_size)) => report.problems.push(VerifyProblem::Mismatch {
                    path,
                    expected: info.archive_hash,
                    actual,
                    expected_size: info.archive_size,
                    actual_size,
                }),
                Err(e) => report.problems.push(VerifyProblem::Unreadable {
                    path,
                    error: crate::store::local::error_chain(&e),
                }),
            }
        }
        if options.repair && !report.problems.is_empty() {
            let broken: Vec<StorePath> = report.problems.iter().map(|p| p.path().clone()).collect();
            let doomed = self.db().referrers_closure(&broken)?;
            let mut locks: Vec<(StorePath, PathLock)> = Vec::new();
            for path in doomed {
                match self.try_lock(&path)? {
                    Some(l) => locks.push((path, l)),
                    None => {
                        report.skipped_locked.insert(path);
                    }
                }
            }
            // A locked referrer keeps what it refers to: drop those from the removal.
            if !report.skipped_locked.is_empty() {
                let keep = self.closure_of_valid(report.skipped_locked.iter().cloned())?;
                locks.retain(|(p, _)| !keep.contains(p));
            }
            let set: BTreeSet<StorePath> = locks.iter().map(|(p, _)| p.clone()).collect();
            self.db().unregister(&set)?;
            for (path, l) in locks {
                fs::remove(&self.host_path(&path))?;
                lock::remove_locked(l);
                report.removed.insert(path);
            }
        }
        Ok(report)
    }

    fn try_lock(&self, path: &StorePath) -> Result<Option<PathLock>, Error> {
        lock::acquire(
            &self.lock_file(&path.hash().to_string()),
            LockMode::Exclusive,
            false,
        )
    }

    /// Closure of paths, skipping any that are not valid.
    fn closure_of_valid(
        &self,
        roots: impl IntoIterator<Item = StorePath>,
    ) -> Result<BTreeSet<StorePath>, Error> {
        let db = self.db();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<StorePath> = roots.into_iter().collect();
        while let Some(p) = todo.pop() {
            if seen.contains(&p) {
                continue;
            }
            let refs = db.references(&p)?;
            todo.extend(refs.into_iter().filter(|r| !seen.contains(r)));
            seen.insert(p);
        }
        Ok(seen)
    }

    /// The store path a root symlink leads to; `Err(())` if its chain is dead (stale).
    fn resolve_root(&self, link: &Path) -> Result<Option<StorePath>, ()> {
        let mut cur = link.to_owned();
        for _ in 0..16 {
            let target = match std::fs::read_link(&cur) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(()),
                // Not a symlink: a plain file or directory outside the store is no root.
                Err(_) => return Ok(None),
            };
            let target = match cur.parent() {
                Some(parent) if target.is_relative() => parent.join(target),
                _ => target,
            };
            for store in [self.store_dir.as_path(), Path::new(STORE_DIR)] {
                if let Ok(rest) = target.strip_prefix(store) {
                    let first = rest.components().next();
                    if let Some(Component::Normal(name)) = first {
                        return Ok(name.to_str().and_then(|n| n.parse().ok()));
                    }
                }
            }
            cur = target;
        }
        Ok(None)
    }

    /// Delete every store path no root reaches, plus crash leftovers.
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport, Error> {
        let _gc = self.gc_lock(LockMode::Exclusive)?;
        // Every object would look like a crash leftover: refuse (see `repair`).
        self.refuse_if_database_lost()?;
        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        // Roots from gcroots/.
        let mut roots: BTreeSet<StorePath> = options.extra_roots.iter().cloned().collect();
        let gcroots = self.gcroots_dir();
        for entry in walkdir::WalkDir::new(&gcroots)
            .follow_links(false)
            .min_depth(1)
        {
            let entry = entry.map_err(|e| Error::Io {
                op: "list",
                path: gcroots.clone(),
                source: e.into(),
            })?;
            if !entry.path_is_symlink() {
                continue;
            }
            match self.resolve_root(entry.path()) {
                Ok(Some(p)) => {
                    roots.insert(p);
                }
                Ok(None) => {}
                Err(()) => {
                    if !options.dry_run {
                        let _ = std::fs::remove_file(entry.path());
                    }
                    report.stale_roots.push(entry.path().to_owned());
                }
            }
        }
        // Paths other live processes use (their temporary roots).
        roots.extend(super::temproots::live_roots(
            &self.home.join("temproots"),
            &self.temp_roots,
            options.dry_run,
        )?);
        // Paths in use: their lock is held by someone.
        let valid: Vec<StorePath> = self.db().all_paths()?;
        let by_hash: std::collections::HashMap<Hash, StorePath> =
            valid.iter().map(|p| (p.hash(), p.clone())).collect();
        let locks_dir = self.home.join("locks");
        for entry in std::fs::read_dir(&locks_dir).map_err(super::io_err("list", &locks_dir))? {
            let entry = entry.map_err(super::io_err("list", &locks_dir))?;
            let name = entry.file_name();
            let Some(hash) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".lock"))
                .and_then(|h| h.parse::<Hash>().ok())
            else {
                continue;
            };
            if let Some(p) = by_hash.get(&hash)
                && lock::acquire(&entry.path(), LockMode::Exclusive, false)?.is_none()
            {
                roots.insert(p.clone());
            }
        }
        // Dead paths, locked one by one; a path we cannot lock becomes a root. Repeat until
        // the set of dead paths is stable (every dead path locked by us).
        let mut held: Vec<(StorePath, PathLock)> = Vec::new();
        loop {
            let live = self.closure_of_valid(roots.iter().cloned())?;
            held.retain(|(p, _)| !live.contains(p));
            let mut grew = false;
            for p in valid.iter().filter(|p| !live.contains(*p)) {
                if held.iter().any(|(h, _)| h == p) {
                    continue;
                }
                match self.try_lock(p)? {
                    Some(l) => held.push((p.clone(), l)),
                    None => {
                        roots.insert(p.clone());
                        grew = true;
                    }
                }
            }
            if !grew {
                break;
            }
        }
        held.sort_by(|a, b| a.0.cmp(&b.0));
        if options.dry_run {
            for (p, _) in &held {
                if let Some(info) = self.path_info(p)? {
                    report.freed_bytes += info.archive_size;
                }
            }
            report.deleted = held.into_iter().map(|(p, _)| p).collect();
        } else {
            let set: BTreeSet<StorePath> = held.iter().map(|(p, _)| p.clone()).collect();
            self.db().unregister(&set)?;
            for (p, l) in held {
                report.freed_bytes += fs::remove(&self.host_path(&p))?;
                lock::remove_locked(l);
                report.deleted.push(p);
            }
        }
        self.collect_leftovers(&mut report)?;
        Ok(report)
    }

    /// Unregistered entries of `store/` and temp directories nobody holds.
    fn collect_leftovers(&self, report: &mut GcReport) -> Result<(), Error> {
        let dry = report.dry_run;
        let store = self.store_dir.clone();
        for entry in std::fs::read_dir(&store).map_err(super::io_err("list", &store))? {
            let entry = entry.map_err(super::io_err("list", &store))?;
            let name = entry.file_name();
            let parsed: Option<StorePath> = name.to_str().and_then(|n| n.parse().ok());
            let lock = match &parsed {
                Some(p) => {
                    if self.is_valid(p)? {
                        continue;
                    }
                    match self.try_lock(p)? {
                        Some(l) => Some(l),
                        None => continue, // being added right now
                    }
                }
                None => None,
            };
            // Re-check under the lock: an add may have registered it meanwhile.
            if let Some(p) = &parsed
                && self.is_valid(p)?
            {
                continue;
            }
            report.freed_bytes += if dry {
                tree_size(&entry.path())
            } else {
                fs::remove(&entry.path())?
            };
            report.leftovers.push(entry.path());
            drop(lock);
        }
        let tmp = self.home.join("tmp");
        let locks = self.home.join("locks");
        for entry in std::fs::read_dir(&tmp).map_err(super::io_err("list", &tmp))? {
            let entry = entry.map_err(super::io_err("list", &tmp))?;
            let mut lock_name = b"tmp-".to_vec();
            lock_name.extend_from_slice(entry.file_name().as_bytes());
            lock_name.extend_from_slice(b".lock");
            let lock_path = locks.join(OsStr::from_bytes(&lock_name));
            let Some(l) = lock::acquire(&lock_path, LockMode::Exclusive, false)? else {
                continue;
            };
            report.freed_bytes += if dry {
                tree_size(&entry.path())
            } else {
                fs::remove(&entry.path())?
            };
            report.leftovers.push(entry.path());
            if dry {
                drop(l);
            } else {
                lock::remove_locked(l);
            }
        }
        Ok(())
    }
}

/// Sum of file and symlink sizes under `path` (symlinks not followed).
fn tree_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

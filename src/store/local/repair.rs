//! Rebuilding the database from the objects (`bramble store repair --rebuild-db`), and the
//! guard that keeps `gc` from taking a lost database for an empty store.
//!
//! Validity is the database row, so a store whose `db.sqlite` was emptied or deleted looks
//! like a fresh store full of crash leftovers, all of which `gc` would delete. `gc`
//! therefore refuses to run on a database that registers no path while `store/` holds
//! objects ([`Error::DatabaseLost`]).
//!
//! The rebuild re-derives every unregistered object's registration from its contents: its
//! references are the other objects whose hash parts it contains, its self-reference is
//! its own hash part, and the content address of (name, digest modulo self-references,
//! self-reference, references) must give back the object's name — the check every add
//! makes. What passes is registered in one transaction (references before referrers); what
//! does not (wrong contents, a name that is no store path, a reference to something that
//! did not pass) is moved aside to `<home>/lost+found/`, never deleted. Realisations
//! (which build gave which output) and build logs are not in the objects and cannot be
//! recovered: the next build of a derivation runs again and finds its outputs stored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::fs::{self, DumpOptions};
use super::lock::LockMode;
use super::{Error, LocalStore, PathInfo, db, hash_tree, io_err};
use crate::store::archive::Writer;
use crate::store::output::{RefScanner, Rewrite, Tee, content_address};
use crate::store::{Hash, StorePath};

/// What [`LocalStore::rebuild_db`] did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// Paths registered anew.
    pub registered: Vec<StorePath>,
    /// Paths that were already valid (left as they are).
    pub already_valid: usize,
    /// Entries of `store/` moved aside: (from, to, why).
    pub moved_aside: Vec<(PathBuf, PathBuf, String)>,
}

impl LocalStore {
    /// The number of entries of `store/` named like store paths that are not registered,
    /// when the database registers no path at all (else 0): a lost or emptied database.
    pub(super) fn lost_objects(&self) -> Result<usize, Error> {
        if self.db().has_paths()? || !self.home.join(LOST_MARK).exists() {
            return Ok(0);
        }
        let store = &self.store_dir;
        let mut n = 0;
        for entry in std::fs::read_dir(store).map_err(io_err("list", store))? {
            let entry = entry.map_err(io_err("list", store))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.parse::<StorePath>().is_ok())
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Refuse to collect when the database looks lost (see the module doc).
    pub(super) fn refuse_if_database_lost(&self) -> Result<(), Error> {
        match self.lost_objects()? {
            0 => Ok(()),
            objects => Err(Error::DatabaseLost {
                db: self.home.join("db.sqlite"),
                store: self.store_dir.clone(),
                objects,
            }),
        }
    }

    /// Register every object of `store/` the database does not know, after checking that
    /// its contents give its name; move aside what does not pass (see the module doc).
    /// Holds `gc.lock` exclusively: no add, build or gc runs meanwhile.
    pub fn rebuild_db(&self) -> Result<RebuildReport, Error> {
        let _gc = self.gc_lock(LockMode::Exclusive)?;
        let mark = self.home.join(LOST_MARK);
        if mark.exists() {
            std::fs::remove_file(&mark).map_err(io_err("remove", &mark))?;
        }
        let mut report = RebuildReport::default();
        let valid: BTreeSet<StorePath> = self.db().all_paths()?.into_iter().collect();
        report.already_valid = valid.len();
        let store = self.store_dir.clone();
        let mut unregistered: Vec<StorePath> = Vec::new();
        let mut strangers: Vec<std::ffi::OsString> = Vec::new();
        for entry in std::fs::read_dir(&store).map_err(io_err("list", &store))? {
            let name = entry.map_err(io_err("list", &store))?.file_name();
            match name.to_str().and_then(|n| n.parse::<StorePath>().ok()) {
                Some(p) if valid.contains(&p) => {}
                Some(p) => unregistered.push(p),
                None => strangers.push(name),
            }
        }
        unregistered.sort();
        for name in strangers {
            self.move_aside(&name, "its name is not a store path", &mut report)?;
        }
        // Every hash part an object may refer to.
        let by_hash: BTreeMap<Hash, StorePath> = valid
            .iter()
            .chain(&unregistered)
            .map(|p| (p.hash(), p.clone()))
            .collect();
        let mut passed: BTreeMap<StorePath, PathInfo> = BTreeMap::new();
        for path in unregistered {
            match self.check_object(&path, &by_hash) {
                Ok(Some(info)) => {
                    passed.insert(path, info);
                }
                Ok(None) => self.move_aside(
                    path.to_string().as_ref(),
                    "its contents do not give its name",
                    &mut report,
                )?,
                Err(e) => self.move_aside(
                    path.to_string().as_ref(),
                    &format!("it cannot be read: {}", super::error_chain(&e)),
                    &mut report,
                )?,
            }
        }
        // An object referring to one that did not pass is not valid either.
        loop {
            let broken: Vec<StorePath> = passed
                .iter()
                .filter(|(p, info)| {
                    info.references
                        .iter()
                        .any(|r| r != *p && !valid.contains(r) && !passed.contains_key(r))
                })
                .map(|(p, _)| p.clone())
                .collect();
            if broken.is_empty() {
                break;
            }
            for p in broken {
                passed.remove(&p);
                self.move_aside(
                    p.to_string().as_ref(),
                    "it refers to an object that is not valid",
                    &mut report,
                )?;
            }
        }
        // References before referrers (the registration looks references up by name).
        let mut order: Vec<PathInfo> = Vec::with_capacity(passed.len());
        let mut done: BTreeSet<StorePath> = BTreeSet::new();
        while !passed.is_empty() {
            let ready: Vec<StorePath> = passed
                .iter()
                .filter(|(p, info)| {
                    info.references
                        .iter()
                        .all(|r| r == *p || valid.contains(r) || done.contains(r))
                })
                .map(|(p, _)| p.clone())
                .collect();
            if ready.is_empty() {
                // A cycle between objects: impossible for content-addressed paths (each
                // name depends on its references' names); refuse rather than guess.
                let p = passed
                    .keys()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| unreachable!());
                passed.remove(&p);
                self.move_aside(
                    p.to_string().as_ref(),
                    "it is part of a reference cycle",
                    &mut report,
                )?;
                continue;
            }
            for p in ready {
                let info = passed.remove(&p).unwrap_or_else(|| unreachable!());
                done.insert(p);
                order.push(info);
            }
        }
        self.db().register_all(&order, None, &[])?;
        report.registered = order.into_iter().map(|i| i.path).collect();
        Ok(report)
    }

    /// The registration of the unregistered object `path` if its contents give its name.
    fn check_object(
        &self,
        path: &StorePath,
        by_hash: &BTreeMap<Hash, StorePath>,
    ) -> Result<Option<PathInfo>, Error> {
        let host = self.host_path(path);
        let own = path.hash();
        let scanner = RefScanner::new(by_hash.keys().copied().filter(|h| *h != own));
        let mut w = Writer::new(Tee(Sha256::new(), scanner))?;
        let stats = fs::dump(
            &host,
            &mut w,
            &DumpOptions {
                rewrite: Some(Rewrite::to_marker(own)),
                reject_xattrs: false,
            },
        )?;
        let (Tee(sha, scanner), _) = w.finish()?;
        let digest = Hash::from_sha256(&sha.finalize().into());
        let references: BTreeSet<StorePath> = scanner
            .into_found()
            .iter()
            .filter_map(|h| by_hash.get(h).cloned())
            .collect();
        let self_ref = stats.rewrites > 0;
        if content_address(path.name(), digest, self_ref, &references)? != *path {
            return Ok(None);
        }
        let (archive_hash, archive_size) = hash_tree(&host)?;
        let mut references = references;
        if self_ref {
            references.insert(path.clone());
        }
        Ok(Some(PathInfo {
            path: path.clone(),
            archive_hash,
            archive_size,
            references,
            deriver: None,
            registered_at: db::now(),
        }))
    }

    /// Move the entry `name` of `store/` to `<home>/lost+found/` (under a free name).
    fn move_aside(
        &self,
        name: &std::ffi::OsStr,
        why: &str,
        report: &mut RebuildReport,
    ) -> Result<(), Error> {
        use rustix::fs::{Mode, OFlags};
        let aside = self.home.join("lost+found");
        match std::fs::create_dir(&aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create directory", &aside)(e)),
        }
        let from = self.store_dir.join(name);
        // A directory needs write permission on itself to move to another parent.
        match rustix::fs::open(
            &from,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                .map_err(|e| io_err("set permissions of", &from)(e.into()))?,
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {}
            Err(e) => return Err(io_err("open", &from)(e.into())),
        }
        let mut to = aside.join(name);
        let mut n = 0;
        while std::fs::symlink_metadata(&to).is_ok() {
            n += 1;
            let mut numbered = name.to_owned();
            numbered.push(format!(".{n}"));
            to = aside.join(numbered);
        }
        std::fs::rename(&from, &to).map_err(io_err("move aside", &from))?;
        report.moved_aside.push((from, to, why.to_owned()));
        Ok(())
    }
}

/// Made in the home when the database was created while `store/` already held objects.
pub(super) const LOST_MARK: &str = "db-lost";

/// Whether `store` holds anything named like a store object.
pub(super) fn has_objects(store: &std::path::Path) -> Result<bool, Error> {
    let entries = match std::fs::read_dir(store) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("list", store)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", store))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.parse::<StorePath>().is_ok())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

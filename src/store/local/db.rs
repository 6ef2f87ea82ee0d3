//! The SQLite database of a local store: schema, migrations guard, and the queries the store
//! makes. Only [`super`] uses it.
//!
//! The database is opened in WAL mode with a busy timeout, so several bramble processes can
//! share it; every write is one `BEGIN IMMEDIATE` transaction. The schema version lives in
//! `PRAGMA user_version`; a database from a newer bramble is refused before anything in it
//! (or the store) is touched.
//!
//! Reads go through a shared mapping of the database file (`PRAGMA mmap_size`) instead of a
//! `pread` into SQLite's page cache per page: a no-op build looks up every derivation of
//! its graph, which touches most pages of a large store's database. As SQLite documents, an
//! I/O error while reading a mapped page is then a `SIGBUS` rather than an error code; the
//! database lives on the store's local file system, where that is the same failure as the
//! store itself becoming unreadable.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Error, PathInfo};
use crate::store::{Hash, StorePath};

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE valid_paths (
    id            INTEGER PRIMARY KEY,
    path          TEXT    NOT NULL UNIQUE,  -- `<hash>-<name>`
    archive_hash  TEXT    NOT NULL,         -- Hash of the object's archive
    archive_size  INTEGER NOT NULL,         -- bytes of that archive
    deriver       TEXT,                     -- hash of the derivation that built it
    registered_at INTEGER NOT NULL          -- unix seconds
);
CREATE TABLE refs (
    referrer  INTEGER NOT NULL REFERENCES valid_paths(id) ON DELETE CASCADE,
    reference INTEGER NOT NULL REFERENCES valid_paths(id) DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (referrer, reference)
);
CREATE INDEX refs_reference ON refs(reference);
CREATE TABLE realisations (
    build_key TEXT    NOT NULL,
    output    TEXT    NOT NULL,
    path      INTEGER NOT NULL REFERENCES valid_paths(id) ON DELETE CASCADE,
    PRIMARY KEY (build_key, output)
);
CREATE TABLE derivations (
    hash TEXT PRIMARY KEY,                  -- Derivation::hash
    json TEXT NOT NULL                      -- canonical JSON
);
CREATE TABLE build_logs (
    drv_hash   TEXT    PRIMARY KEY,
    log        BLOB    NOT NULL,
    written_at INTEGER NOT NULL
);
";

/// Record a realisation `(build_key, output)` → valid path (by name); changes no row if the
/// path is not valid.
const REGISTER_REALISATION: &str = "INSERT INTO realisations (build_key, output, path)
     SELECT ?1, ?2, id FROM valid_paths WHERE path = ?3
     ON CONFLICT (build_key, output) DO UPDATE SET path = excluded.path";

/// How much of the database file SQLite may map (`PRAGMA mmap_size`).
const MMAP_SIZE: i64 = 256 << 20;

fn db_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Database {
        op,
        path: path.to_owned(),
        source,
    }
}

/// An open database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
    path: std::path::PathBuf,
}

pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Db {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Db, Error> {
        // Never through a symlink (the home was checked; this is the second lock).
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(db_err("open", path))?;
        conn.busy_timeout(Duration::from_secs(120))
            .map_err(db_err("configure", path))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err("read the schema version of", path))?;
        if version > SCHEMA_VERSION {
            return Err(Error::NewerSchema {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err("configure", path))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err("configure", path))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err("configure", path))?;
        // Reads through a mapping of the file (see the module doc); writes still go through
        // the WAL.
        conn.pragma_update(None, "mmap_size", MMAP_SIZE)
            .map_err(db_err("configure", path))?;
        let mut db = Db {
            conn,
            path: path.to_owned(),
        };
        if version < SCHEMA_VERSION {
            db.create_schema()?;
        }
        Ok(db)
    }

    fn create_schema(&mut self) -> Result<(), Error> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err("create the schema of", &path))?;
        // Another process may have created it while we waited for the write lock.
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err("read the schema version of", &path))?;
        if version == 0 {
            tx.execute_batch(SCHEMA)
                .map_err(db_err("create the schema of", &path))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(db_err("create the schema of", &path))?;
        } else if version > SCHEMA_VERSION {
            return Err(Error::NewerSchema {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        tx.commit().map_err(db_err("create the schema of", &path))
    }

    pub fn is_valid(&self, path: &StorePath) -> Result<bool, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM valid_paths WHERE path = ?1")
            .map_err(db_err("query", &self.path))?;
        stmt.exists([path.to_string()])
            .map_err(db_err("query", &self.path))
    }

    /// Register a valid path with its references (which must be valid, or be the path
    /// itself) in one transaction. Registering an already valid path is a no-op.
    pub fn register(&mut self, info: &PathInfo) -> Result<(), Error> {
        self.register_all(std::slice::from_ref(info), None, &[])
    }

    /// Register every path of `infos` (as [`Db::register`]: references valid or among
    /// `infos`, already valid paths left as they are) and, if `build_key` is given, the
    /// realisations `(output, path)` of that key, all in one transaction: either all of it
    /// is registered or none of it.
    pub fn register_all(
        &mut self,
        infos: &[PathInfo],
        build_key: Option<Hash>,
        realisations: &[(&str, &StorePath)],
    ) -> Result<(), Error> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err("begin a transaction on", &path))?;
        {
            let mut id_of = tx
                .prepare_cached("SELECT id FROM valid_paths WHERE path = ?1")
                .map_err(db_err("query", &path))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO valid_paths (path, archive_hash, archive_size, deriver, registered_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_err("register a path in", &path))?;
            let mut insert_ref = tx
                .prepare_cached("INSERT INTO refs (referrer, reference) VALUES (?1, ?2)")
                .map_err(db_err("register a path in", &path))?;
            for info in infos {
                let me = info.path.to_string();
                let exists = id_of.exists([&me]).map_err(db_err("query", &path))?;
                if exists {
                    continue;
                }
                insert
                    .execute(params![
                        me,
                        info.archive_hash.text().as_str(),
                        i64::try_from(info.archive_size).unwrap_or(i64::MAX),
                        info.deriver.map(|d| d.to_string()),
                        info.registered_at,
                    ])
                    .map_err(db_err("register a path in", &path))?;
                let id = tx.last_insert_rowid();
                for reference in &info.references {
                    let rid: Option<i64> = id_of
                        .query_row([reference.to_string()], |r| r.get(0))
                        .optional()
                        .map_err(db_err("query", &path))?;
                    let rid = rid.ok_or_else(|| Error::InvalidReference {
                        path: info.path.clone(),
                        reference: reference.clone(),
                    })?;
                    insert_ref
                        .execute(params![id, rid])
                        .map_err(db_err("register a path in", &path))?;
                }
            }
            if let Some(key) = build_key {
                let mut realise = tx
                    .prepare_cached(REGISTER_REALISATION)
                    .map_err(db_err("register a realisation in", &path))?;
                for (output, target) in realisations {
                    let changed = realise
                        .execute(params![key.text().as_str(), output, target.to_string()])
                        .map_err(db_err("register a realisation in", &path))?;
                    if changed == 0 {
                        return Err(Error::NotValid {
                            path: (*target).clone(),
                        });
                    }
                }
            }
        }
        tx.commit().map_err(db_err("commit to", &path))
    }

    /// The closure of `paths` under references (`paths` included), read in one
    /// transaction with cached statements. Every path must be valid.
    pub fn closure<'p>(
        &self,
        paths: impl IntoIterator<Item = &'p StorePath>,
    ) -> Result<BTreeSet<StorePath>, Error> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(db_err("begin a transaction on", &self.path))?;
        let mut seen = BTreeSet::new();
        {
            let mut id_of = tx
                .prepare_cached("SELECT id FROM valid_paths WHERE path = ?1")
                .map_err(db_err("query", &self.path))?;
            let mut todo: Vec<StorePath> = paths.into_iter().cloned().collect();
            while let Some(p) = todo.pop() {
                if seen.contains(&p) {
                    continue;
                }
                let id: Option<i64> = id_of
                    .query_row([p.to_string()], |r| r.get(0))
                    .optional()
                    .map_err(db_err("query", &self.path))?;
                let id = id.ok_or_else(|| Error::NotValid { path: p.clone() })?;
                let references = self.references_of(id)?;
                todo.extend(references.into_iter().filter(|r| !seen.contains(r)));
                seen.insert(p);
            }
        }
        tx.finish().map_err(db_err("query", &self.path))?;
        Ok(seen)
    }

    pub fn path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, Error> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, archive_hash, archive_size, deriver, registered_at
                 FROM valid_paths WHERE path = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([path.to_string()], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
            })
            .optional()
            .map_err(db_err("query", &self.path))?;
        let Some((id, archive_hash, size, deriver, registered_at)) = row else {
            return Ok(None);
        };
        let corrupt = |what: &str| Error::CorruptDatabase {
            path: self.path.clone(),
            detail: format!("bad {what} for `{path}`"),
        };
        let references = self.references_of(id)?;
        Ok(Some(PathInfo {
            path: path.clone(),
            archive_hash: archive_hash.parse().map_err(|_| corrupt("archive hash"))?,
            archive_size: u64::try_from(size).map_err(|_| corrupt("size"))?,
            references,
            deriver: deriver
                .map(|d| d.parse())
                .transpose()
                .map_err(|_| corrupt("deriver"))?,
            registered_at,
        }))
    }

    fn references_of(&self, id: i64) -> Result<BTreeSet<StorePath>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT v.path FROM refs r JOIN valid_paths v ON v.id = r.reference
                 WHERE r.referrer = ?1",
            )
            .map_err(db_err("query", &self.path))?;
        let rows = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .map_err(db_err("query", &self.path))?;
        let mut out = BTreeSet::new();
        for row in rows {
            let text = row.map_err(db_err("query", &self.path))?;
            out.insert(text.parse().map_err(|_| Error::CorruptDatabase {
                path: self.path.clone(),
                detail: format!("bad store path `{text}`"),
            })?);
        }
        Ok(out)
    }

    /// References of a path by name (empty if it is not valid).
    pub fn references(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, Error> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM valid_paths WHERE path = ?1",
                [path.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("query", &self.path))?;
        match id {
            Some(id) => self.references_of(id),
            None => Ok(BTreeSet::new()),
        }
    }

    /// Whether any path is registered.
    pub fn has_paths(&self) -> Result<bool, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM valid_paths LIMIT 1")
            .map_err(db_err("query", &self.path))?;
        stmt.exists([]).map_err(db_err("query", &self.path))
    }

    /// Every valid path.
    pub fn all_paths(&self) -> Result<Vec<StorePath>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM valid_paths ORDER BY path")
            .map_err(db_err("query", &self.path))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_err("query", &self.path))?;
        let mut out = Vec::new();
        for row in rows {
            let text = row.map_err(db_err("query", &self.path))?;
            out.push(text.parse().map_err(|_| Error::CorruptDatabase {
                path: self.path.clone(),
                detail: format!("bad store path `{text}`"),
            })?);
        }
        Ok(out)
    }

    /// Every valid path that references one of `paths`, transitively, plus `paths`.
    pub fn referrers_closure(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT a.path FROM refs r
                 JOIN valid_paths a ON a.id = r.referrer
                 JOIN valid_paths b ON b.id = r.reference
                 WHERE b.path = ?1",
            )
            .map_err(db_err("query", &self.path))?;
        let mut seen: BTreeSet<StorePath> = BTreeSet::new();
        let mut todo: Vec<StorePath> = paths.to_vec();
        while let Some(p) = todo.pop() {
            if !seen.insert(p.clone()) {
                continue;
            }
            let rows = stmt
                .query_map([p.to_string()], |r| r.get::<_, String>(0))
                .map_err(db_err("query", &self.path))?;
            for row in rows {
                let text = row.map_err(db_err("query", &self.path))?;
                if let Ok(sp) = text.parse() {
                    todo.push(sp);
                }
            }
        }
        Ok(seen)
    }

    /// Delete registrations (their references and realisations go with them), durably.
    ///
    /// The callers (gc, `verify --repair`) delete the objects next. With `synchronous =
    /// NORMAL` a WAL commit reaches the disk only at the next checkpoint, while the kernel
    /// may write the deletions out before: a power loss in between would leave registered
    /// paths without their objects. So this commit syncs the WAL before it returns
    /// (`synchronous = FULL` for this transaction only).
    pub fn unregister(&mut self, paths: &BTreeSet<StorePath>) -> Result<(), Error> {
        let path = self.path.clone();
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db_err("configure", &path))?;
        let committed = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err("begin a transaction on", &path))?;
            for p in paths {
                tx.execute("DELETE FROM valid_paths WHERE path = ?1", [p.to_string()])
                    .map_err(db_err("unregister a path in", &path))?;
            }
            tx.commit().map_err(db_err("commit to", &path))
        })();
        let restored = self
            .conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err("configure", &path));
        committed.and(restored)
    }

    /// Realisation lookups (a realisation known and still valid, else `None`) in one read transaction with one prepared
    /// statement (a no-op build looks up every derivation of the graph).
    pub fn realisations(&self, wanted: &[(Hash, &str)]) -> Result<Vec<Option<StorePath>>, Error> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(db_err("begin a transaction on", &self.path))?;
        let mut found = Vec::with_capacity(wanted.len());
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT v.path FROM realisations r JOIN valid_paths v ON v.id = r.path
                     WHERE r.build_key = ?1 AND r.output = ?2",
                )
                .map_err(db_err("query", &self.path))?;
            for (build_key, output) in wanted {
                // The key's text on the stack and the path parsed from SQLite's own buffer:
                // no string allocated per lookup.
                let path = stmt
                    .query_row(params![build_key.text().as_str(), output], |r| {
                        let text = r.get_ref(0)?.as_str()?;
                        Ok(text.parse::<StorePath>().map_err(|_| text.to_owned()))
                    })
                    .optional()
                    .map_err(db_err("query", &self.path))?;
                found.push(path.transpose().map_err(|t| Error::CorruptDatabase {
                    path: self.path.clone(),
                    detail: format!("bad store path `{t}`"),
                })?);
            }
        }
        tx.finish().map_err(db_err("query", &self.path))?;
        Ok(found)
    }

    pub fn register_realisation(
        &mut self,
        build_key: Hash,
        output: &str,
        path: &StorePath,
    ) -> Result<(), Error> {
        let changed = self
            .conn
            .prepare_cached(REGISTER_REALISATION)
            .and_then(|mut stmt| {
                stmt.execute(params![build_key.text().as_str(), output, path.to_string()])
            })
            .map_err(db_err("register a realisation in", &self.path))?;
        if changed == 0 {
            return Err(Error::NotValid { path: path.clone() });
        }
        Ok(())
    }

    pub fn put_derivation(&self, hash: Hash, json: &str) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO derivations (hash, json) VALUES (?1, ?2)",
                params![hash.to_string(), json],
            )
            .map(|_| ())
            .map_err(db_err("store a derivation in", &self.path))
    }

    pub fn get_derivation(&self, hash: Hash) -> Result<Option<String>, Error> {
        self.conn
            .query_row(
                "SELECT json FROM derivations WHERE hash = ?1",
                [hash.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("query", &self.path))
    }

    pub fn put_log(&self, drv: Hash, log: &[u8]) -> Result<(), Error> {
        self.conn
            .execute(
                "INSERT INTO build_logs (drv_hash, log, written_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (drv_hash) DO UPDATE SET log = excluded.log,
                                                      written_at = excluded.written_at",
                params![drv.to_string(), log, now()],
            )
            .map(|_| ())
            .map_err(db_err("store a build log in", &self.path))
    }

    pub fn get_log(&self, drv: Hash) -> Result<Option<Vec<u8>>, Error> {
        self.conn
            .query_row(
                "SELECT log FROM build_logs WHERE drv_hash = ?1",
                [drv.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("query", &self.path))
    }
}

//! Fetchers: the only builds that touch the network (DESIGN §5).
//!
//! Two builtin builders, named by a derivation's `builder`:
//!
//! - `builtin:fetch_url` — env `url` (http, https or `mirror://NAME/path`, see [`mirror`]),
//!   optional `unpack` (a [`Format`] name:
//!   `tar.gz`, `tar.xz`, `tar.bz2`, `tar.zst`, `tar`, `zip`, `deb`), optional pins `hash`,
//!   `sha256` and `h1`;
//! - `builtin:fetch_git` — env `url` (http(s), a local absolute path or `file://`), `rev` (a
//!   full commit hash), optional pin `hash`.
//!
//! A fetch derivation has no args, no sources, no templates and the single output `out`: it
//! depends on nothing but the outside world, which is why its result must be pinned.
//! The engine runs it in the main process; every other builder runs in a sandbox with an
//! empty network namespace.
//!
//! # What is pinned
//!
//! The pin is the **content hash of the result**: the [`Hash`] of the store archive of the
//! unpacked tree (or of the single downloaded file), the same hash `bramble store verify`
//! checks — like Nix's recursive fixed-output hash. Because a fetched object has no
//! references, its store path is `content_address(name, hash)`: with a pin, bramble knows
//! the output path before downloading anything and skips the download when that path is
//! already valid. The hash also checks the result of unpacking (a decompressor or extractor
//! that behaved differently would be caught), which a hash of the downloaded file alone
//! would not.
//!
//! Upstreams publish the sha256 of their files, so `sha256` (64 hex digits, also written
//! `sha256:<hex>`) is accepted as a pin too: the download is checked against it before
//! unpacking. Both may be given; `bramble.lock` records both for a URL.
//!
//! A Go module's `.zip` or `.mod` may be pinned by `h1` instead ([`h1`]): Go's module hash,
//! as `go.sum` records it, checked on the download (a zip's entries, after a strict check of
//! their names; a `.mod` as `go.mod`) before anything is unpacked or stored. It covers the
//! files, not the zip's own bytes (timestamps, order), so the stored object is the zip as
//! first downloaded; such a fetch is pinned by `h1` alone and `bramble.lock` records nothing
//! for it (it is how the Go module DAO, `crate::golang`, pins what `go.sum` lists).
//!
//! A result that differs from a pin is an error naming the URL, the expected and the actual
//! hash, and nothing is stored.
//!
//! # How a fetch runs in a build
//!
//! 1. The evaluation gets `bramble.lock` applied ([`crate::project::lock::pin`]): a
//!    fetch derivation without a content hash gets the lock's, which renames it and every
//!    derivation depending on it. The pin is thus part of the build key: editing the lock
//!    can never be hidden by a cached realisation. `--locked` (or `CI=true`) refuses a fetch
//!    pinned nowhere.
//! 2. The engine's executor is [`executor::FetchingExecutor`]: fetch derivations run here, in the
//!    main process, with the network; every other derivation goes to the sandbox, which has
//!    an empty network namespace. With a pinned path already in the store nothing is
//!    downloaded.
//! 3. After the build, [`crate::project::lock::record`] records in `bramble.lock` every fetch
//!    that was pinned nowhere (from the build report's [`crate::engine::BuildReport::fetches`],
//!    or from the store's realisation when it was cached).

pub mod apt;
pub mod executor;
pub mod git;
pub mod mirror;
pub mod unpack;
pub mod url;

#[cfg(test)]
pub(crate) mod test_git;
#[cfg(test)]
pub(crate) mod test_http;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::{NullReporter, Reporter};
use crate::store::local::fs::TreeError;
use crate::store::local::{LocalStore, hash_tree};
use crate::store::{Hash, StorePath};

pub use crate::store::fetch::{
    FETCH_GIT, FETCH_URL, FetchRecord, FetchRequest, FetchSpec, H1, InvalidFetch, Pin, h1,
    parse_sha256, sha256_hex,
};
pub use git::GitError;
pub use mirror::{MirrorError, Mirrors};
pub use unpack::{Format, UnpackError, UnpackLimits};
pub use url::{DownloadError, DownloadOptions};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Invalid(#[from] InvalidFetch),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("cannot fetch `{url}` from any of its mirrors (from {origin}):{}", .tried.iter().map(|(u, e)| format!("\n  `{u}`: {}", e.replace('\n', "\n    "))).collect::<String>())]
    Mirrors {
        url: String,
        origin: String,
        /// Each URL tried and why it failed.
        tried: Vec<(String, String)>,
        /// Whether a mirror served a Go module file that did not match its `h1` pin.
        h1_mismatch: bool,
    },
    #[error("cannot unpack `{url}`")]
    Unpack { url: String, source: UnpackError },
    #[error(
        "the {kind} of `{what}` does not match its pin\n  expected: {expected}\n  actual:   {actual}"
    )]
    Mismatch {
        what: String,
        kind: &'static str,
        expected: String,
        actual: String,
    },
    #[error(
        "the Go module hash (h1) of {} does not match its pin (from go.sum)\n  expected: {expected}\n  actual:   {actual}",
        .module.as_ref().map_or_else(|| format!("`{url}`"), |m| format!("`{m}` (`{url}`)"))
    )]
    H1Mismatch {
        url: String,
        /// `<module>@<version>`, when the URL names it.
        module: Option<String>,
        expected: String,
        actual: String,
    },
    #[error("`{url}` is not a valid Go module file: {reason}")]
    GoModule { url: String, reason: String },
    #[error("cannot store the result of fetching `{what}`")]
    Store {
        what: String,
        source: Box<crate::store::local::Error>,
    },
    #[error("cannot hash the result of fetching `{what}`")]
    Tree {
        what: String,
        source: Box<TreeError>,
    },
    #[error("the fetch of `{what}` was interrupted")]
    Join { what: String },
}

impl crate::error::Diagnose for FetchError {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            FetchError::Invalid(e) => e.class(),
            FetchError::Download(e) => e.class(),
            FetchError::Git(e) => e.class(),
            FetchError::Mirror(e) => e.class(),
            // The archive the fetch names is refused (or cannot be read) as a whole.
            FetchError::Mismatch { .. } | FetchError::Unpack { .. } => Class::User,
            FetchError::Store { .. }
            | FetchError::Tree { .. }
            | FetchError::Mirrors { .. }
            | FetchError::H1Mismatch { .. }
            | FetchError::GoModule { .. }
            | FetchError::Join { .. } => Class::Environment,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            FetchError::Invalid(e) => e.hint(),
            FetchError::Download(e) => e.hint(),
            FetchError::Git(e) => e.hint(),
            FetchError::Mirror(e) => e.hint(),
            FetchError::Mirrors {
                h1_mismatch: true, ..
            } => FetchError::H1Mismatch {
                url: String::new(),
                module: None,
                expected: String::new(),
                actual: String::new(),
            }
            .hint(),
            FetchError::Mirrors { .. } => Some(
                "check that the mirrors are up and hold the file; a mirror that serves other content than the pin is skipped".into(),
            ),
            FetchError::Mismatch { .. } => Some(
                "if upstream really changed the content, update the pin (the `hash` argument, or delete the entry from `bramble.lock`); otherwise the download was tampered with or is corrupt".into(),
            ),
            FetchError::H1Mismatch { .. } => Some(
                "the module proxy served other content than `go.sum` records: check the mirror (`BRAMBLE_MIRROR_GOPROXY` or `[mirrors]`); if the module's author really re-tagged the version, `go mod tidy` with a trusted proxy updates `go.sum`".into(),
            ),
            FetchError::GoModule { .. } => Some(
                "a module zip holds only regular files below `<module>@<version>/`; this one was refused on purpose".into(),
            ),
            FetchError::Unpack { .. } => Some(
                "check the `unpack` format; an archive that tries to write outside its directory is refused on purpose".into(),
            ),
            _ => None,
        }
    }
}

/// A verified fetch result on disk, not yet in the store.
#[derive(Debug)]
pub struct FetchedTree {
    /// The tree (or single file).
    pub path: PathBuf,
    pub hash: Hash,
    /// sha256 of the downloaded file (URL fetches).
    pub sha256: Option<[u8; 32]>,
}

/// A fetch result in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: StorePath,
    pub hash: Hash,
    pub sha256: Option<[u8; 32]>,
    /// Whether anything was downloaded (false: the pinned result was already stored).
    pub downloaded: bool,
}

impl Fetched {
    /// What `bramble.lock` records of this result of `req`: `None` when nothing was
    /// downloaded (the store held the pinned result).
    pub fn record(&self, req: &FetchRequest) -> Option<FetchRecord> {
        self.downloaded.then(|| FetchRecord {
            spec: req.spec.clone(),
            hash: self.hash,
            sha256: self.sha256,
        })
    }
}

/// Runs fetches against a store.
#[derive(Clone)]
pub struct Fetcher {
    pub store: Arc<LocalStore>,
    pub download: DownloadOptions,
    pub limits: UnpackLimits,
    /// Where download progress goes ([`crate::engine::Event::Download`]).
    pub progress: Arc<dyn Reporter>,
    /// Every fetch that ran (downloaded and verified), in completion order.
    /// Where `mirror://` URLs are downloaded from.
    pub mirrors: Arc<Mirrors>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("store", &self.store.home())
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    pub fn new(store: Arc<LocalStore>) -> Fetcher {
        Fetcher {
            store,
            download: DownloadOptions::default(),
            limits: UnpackLimits::default(),
            progress: Arc::new(NullReporter),
            mirrors: Arc::default(),
        }
    }

    /// Fetch into the store. With a content-hash pin whose path is already valid, or a
    /// sha256 pin of a file the store already holds the result of
    /// ([`FetchRequest::sha256_key`]), nothing is downloaded. A result that does not match
    /// the pin is an error and nothing is stored.
    pub async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, FetchError> {
        let what = req.spec.to_string();
        let store_err = |source| FetchError::Store {
            what: what.clone(),
            source: Box::new(source),
        };
        // `keep_valid`: a path found is a temporary root of this process from then on.
        if let (Some(path), Some(hash)) = (req.expected_path(), req.pin.hash)
            && self.store.keep_valid(&path).map_err(store_err)?
            && let Some(info) = self.store.path_info(&path).map_err(store_err)?
            && info.archive_hash == hash
        {
            return Ok(Fetched {
                path,
                hash,
                sha256: req.pin.sha256,
                downloaded: false,
            });
        }
        if let Some(sha256) = &req.pin.sha256
            && let Some(key) = req.sha256_key(sha256)
            && let Some(path) = self.store.realisation(key, "out").map_err(store_err)?
            && let Some(info) = self.store.path_info(&path).map_err(store_err)?
            && req.pin.hash.is_none_or(|h| h == info.archive_hash)
        {
            return Ok(Fetched {
                path,
                hash: info.archive_hash,
                sha256: Some(*sha256),
                downloaded: false,
            });
        }
        let tmp = self.store.tmp_dir("fetch").map_err(store_err)?;
        let tree = self.fetch_to(req, tmp.path()).await?;
        let store = self.store.clone();
        let name = req.name.clone();
        let src = tree.path.clone();
        let path = tokio::task::spawn_blocking(move || store.add_dir(&src, &name))
            .await
            .map_err(|_| FetchError::Join { what: what.clone() })?
            .map_err(store_err)?;
        drop(tmp);
        if let Some(sha256) = &tree.sha256
            && let Some(key) = req.sha256_key(sha256)
        {
            self.store
                .register_realisation(key, "out", &path)
                .map_err(store_err)?;
        }
        Ok(Fetched {
            path,
            hash: tree.hash,
            sha256: tree.sha256,
            downloaded: true,
        })
    }

    /// Fetch into a directory below `dir` (an empty scratch directory the caller removes)
    /// and check the pins. Nothing touches the store. A `mirror://` URL is tried at each of
    /// its mirrors in turn until one gives a result that matches the pins.
    pub async fn fetch_to(
        &self,
        req: &FetchRequest,
        dir: &Path,
    ) -> Result<FetchedTree, FetchError> {
        let tree = match &req.spec {
            FetchSpec::Url { url, unpack } => {
                if mirror::MirrorUrl::parse(url)?.is_none() {
                    self.fetch_url_to(req, url, *unpack, dir).await?
                } else {
                    let resolved = self.mirrors.resolve(url)?;
                    let mut tried = Vec::new();
                    let mut h1_mismatch = false;
                    let mut found = None;
                    for (i, candidate) in resolved.urls.iter().enumerate() {
                        let attempt = dir.join(format!("mirror-{i}"));
                        std::fs::create_dir(&attempt).map_err(|source| {
                            FetchError::Download(DownloadError::Io {
                                op: "create directory",
                                path: attempt.clone(),
                                source,
                            })
                        })?;
                        match self.fetch_url_to(req, candidate, *unpack, &attempt).await {
                            Ok(tree) => {
                                found = Some(tree);
                                break;
                            }
                            Err(
                                e @ (FetchError::Download(_)
                                | FetchError::Mismatch { .. }
                                | FetchError::H1Mismatch { .. }
                                | FetchError::GoModule { .. }
                                | FetchError::Unpack { .. }),
                            ) => {
                                h1_mismatch |= matches!(e, FetchError::H1Mismatch { .. });
                                tracing::info!(
                                    "fetching `{url}` from `{candidate}` failed: {}",
                                    crate::store::local::error_chain(&e)
                                );
                                tried.push((
                                    candidate.clone(),
                                    crate::store::local::error_chain(&e),
                                ));
                                let _ = crate::store::local::fs::remove(&attempt);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    let name = mirror::MirrorUrl::parse(url)?.map_or("", |m| m.name);
                    found.ok_or_else(|| FetchError::Mirrors {
                        url: url.clone(),
                        origin: resolved
                            .origin
                            .as_ref()
                            .map_or_else(String::new, |o| o.describe(name)),
                        tried,
                        h1_mismatch,
                    })?
                }
            }
            FetchSpec::Git { url, rev } => {
                let what = req.spec.to_string();
                let out = dir.join("out");
                let (url, rev, dest) = (url.clone(), rev.clone(), out.clone());
                let scratch = dir.join("git");
                std::fs::create_dir(&scratch).map_err(|source| GitError::Io {
                    op: "create directory",
                    path: scratch.clone(),
                    source,
                })?;
                tokio::task::spawn_blocking(move || {
                    let r = git::fetch(&url, &rev, &dest, &scratch);
                    let _ = crate::store::local::fs::remove(&scratch);
                    r
                })
                .await
                .map_err(|_| FetchError::Join { what: what.clone() })??;
                self.check_tree(req, out, None).await?
            }
        };
        Ok(tree)
    }

    /// Download `url` (an http(s) URL: `req`'s own or one of its mirrors) into `<dir>/out`,
    /// unpack it if asked and check the pins.
    async fn fetch_url_to(
        &self,
        req: &FetchRequest,
        url: &str,
        unpack: Option<Format>,
        dir: &Path,
    ) -> Result<FetchedTree, FetchError> {
        let what = req.spec.to_string();
        let out = dir.join("out");
        let file = dir.join("download");
        let got = url::download(url, &file, &self.download, self.progress.as_ref()).await?;
        if let Some(expected) = req.pin.sha256
            && expected != got.sha256
        {
            return Err(FetchError::Mismatch {
                what,
                kind: "sha256",
                expected: sha256_hex(&expected),
                actual: sha256_hex(&got.sha256),
            });
        }
        if let Some(expected) = req.pin.h1 {
            self.check_h1(req, expected, &file).await?;
        }
        match unpack {
            None => std::fs::rename(&file, &out).map_err(|source| {
                FetchError::Download(DownloadError::Io {
                    op: "rename",
                    path: file.clone(),
                    source,
                })
            })?,
            Some(format) => {
                let (limits, dest) = (self.limits, out.clone());
                tokio::task::spawn_blocking(move || unpack::unpack(&file, format, &dest, &limits))
                    .await
                    .map_err(|_| FetchError::Join { what: what.clone() })?
                    .map_err(|source| FetchError::Unpack {
                        url: url.to_owned(),
                        source,
                    })?;
            }
        }
        self.check_tree(req, out, Some(got.sha256)).await
    }

    /// Check the downloaded `file` of `req` against its `h1` pin (before it is unpacked or
    /// stored): the zip's entries (checked strictly, see [`h1`]) or the `.mod` as `go.mod`.
    async fn check_h1(
        &self,
        req: &FetchRequest,
        expected: H1,
        file: &Path,
    ) -> Result<(), FetchError> {
        let url = req.spec.url().to_owned();
        let target = h1::Target::of_url(&url).ok_or_else(|| InvalidFetch::Derivation {
            name: req.name.clone(),
            reason: format!("an `h1` pin needs a `.zip` or `.mod` URL, not `{url}`"),
        })?;
        let (path, u) = (file.to_owned(), url.clone());
        let actual = tokio::task::spawn_blocking(move || hash_h1_file(&path, &u, target))
            .await
            .map_err(|_| FetchError::Join { what: url.clone() })?
            .map_err(|reason| FetchError::GoModule {
                url: url.clone(),
                reason,
            })?;
        if actual != expected {
            return Err(FetchError::H1Mismatch {
                module: module_named(&url, target, file),
                url,
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// Hash the fetched tree at `out` and check it against the content-hash pin.
    async fn check_tree(
        &self,
        req: &FetchRequest,
        out: PathBuf,
        sha256: Option<[u8; 32]>,
    ) -> Result<FetchedTree, FetchError> {
        let what = req.spec.to_string();
        let hashed = out.clone();
        let (hash, _) = tokio::task::spawn_blocking(move || hash_tree(&hashed))
            .await
            .map_err(|_| FetchError::Join { what: what.clone() })?
            .map_err(|source| FetchError::Tree {
                what: what.clone(),
                source: Box::new(source),
            })?;
        if let Some(expected) = req.pin.hash
            && expected != hash
        {
            return Err(FetchError::Mismatch {
                what,
                kind: "content hash",
                expected: expected.to_string(),
                actual: hash.to_string(),
            });
        }
        Ok(FetchedTree {
            path: out,
            hash,
            sha256,
        })
    }
}

/// The `<module>@<version>` (`/go.mod` for a `.mod`) a Go module file is of, for messages:
/// from a `mirror://` URL, else from the top directory of a zip (checked against the URL).
/// Hash the downloaded `file` of `url` as `target` says, checking a zip strictly (see the
/// module docs). The error is a reason, for the caller to wrap with the URL.
fn hash_h1_file(file: &Path, url: &str, target: h1::Target) -> Result<H1, String> {
    let io = |e: std::io::Error| format!("cannot read `{}`: {e}", file.display());
    match target {
        h1::Target::Mod => {
            let f = std::fs::File::open(file).map_err(io)?;
            let mut content = Vec::new();
            f.take(h1::MAX_GO_MOD + 1)
                .read_to_end(&mut content)
                .map_err(io)?;
            if content.len() as u64 > h1::MAX_GO_MOD {
                return Err(format!(
                    "the go.mod is larger than {} bytes",
                    h1::MAX_GO_MOD
                ));
            }
            Ok(h1::hash_mod(&content))
        }
        h1::Target::Zip => {
            let size = std::fs::metadata(file).map_err(io)?.len();
            if size > h1::MAX_ZIP {
                return Err(format!(
                    "the module zip is larger than {} bytes",
                    h1::MAX_ZIP
                ));
            }
            let f = std::fs::File::open(file).map_err(io)?;
            let (h, top) = h1::hash_zip(std::io::BufReader::new(f), None)?;
            if let Some(top) = top
                && !h1::top_fits_url(&top, url)
            {
                return Err(format!(
                    "its files are below `{top}`, which is not the module and version `{url}` names"
                ));
            }
            Ok(h)
        }
    }
}

fn module_named(url: &str, target: h1::Target, file: &Path) -> Option<String> {
    let suffix = if target == h1::Target::Mod {
        "/go.mod"
    } else {
        ""
    };
    if let Some((m, v)) = h1::module_of_url(url) {
        return Some(format!("{m}@{v}{suffix}"));
    }
    if target == h1::Target::Zip {
        let f = std::fs::File::open(file).ok()?;
        let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).ok()?;
        let first = zip.by_index(0).ok()?;
        let name = first.name().ok()?;
        let end = name
            .find('@')
            .and_then(|at| name[at..].find('/').map(|s| at + s))?;
        return Some(name[..end].to_owned());
    }
    None
}

#[cfg(test)]
mod tests;

/// A size from the environment variable `name`, if set and valid (an invalid value is
/// ignored with a warning naming it).
pub(crate) fn size_from_env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match crate::store::limits::parse_size(&value) {
        Ok(n) if n > 0 => Some(n),
        Ok(_) => {
            tracing::warn!("ignoring `{name}`: it must be positive");
            None
        }
        Err(e) => {
            tracing::warn!("ignoring `{name}`: {e}");
            None
        }
    }
}

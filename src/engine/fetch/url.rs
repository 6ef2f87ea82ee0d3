//! Downloading one URL over http or https into a file, hashing it on the way.
//!
//! - The client is `reqwest` with rustls and the `ring` provider (no OpenSSL, no cmake), and
//!   the platform's certificate roots. Proxies from the usual environment variables apply.
//! - Redirects are followed (at most 10). The connect timeout and the idle timeout (no byte
//!   received for that long) are separate; there is no overall deadline, so a large download
//!   on a slow but live link finishes.
//! - Connection errors, timeouts, a body cut short and 5xx/429 answers are retried with
//!   exponential backoff; other 4xx answers (404…) are not: they will not change.
//! - A download larger than [`DownloadOptions::max_bytes`] (default 16 GiB,
//!   `$BRAMBLE_MAX_DOWNLOAD`) is refused: at once when the server announces its size, else
//!   when the bytes received pass it. Nothing is kept.
//! - The body is written to `<dest>.part` while it is hashed (sha256) and renamed to `dest`
//!   only when complete; a failed attempt removes the partial file, so an interrupted
//!   download leaves nothing behind and a retry starts clean.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::engine::{Event, Reporter};

/// How to download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub connect_timeout: Duration,
    /// Give up on an attempt when no byte arrived for this long.
    pub idle_timeout: Duration,
    /// Attempts after the first one.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Largest download accepted, in bytes.
    pub max_bytes: u64,
}

/// Default largest download: 16 GiB (a whole distribution image fits).
pub const DEFAULT_MAX_DOWNLOAD: u64 = 16 << 30;

impl Default for DownloadOptions {
    /// 15 s to connect, 60 s idle, 4 retries (or `$BRAMBLE_FETCH_RETRIES`) from 0.5 s, at
    /// most [`DEFAULT_MAX_DOWNLOAD`] bytes (or `$BRAMBLE_MAX_DOWNLOAD`; a bad value is
    /// ignored with a warning).
    fn default() -> DownloadOptions {
        let retries = std::env::var(crate::env::BRAMBLE_FETCH_RETRIES)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        DownloadOptions {
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            retries,
            backoff: Duration::from_millis(500),
            max_bytes: super::size_from_env(crate::env::BRAMBLE_MAX_DOWNLOAD)
                .unwrap_or(DEFAULT_MAX_DOWNLOAD),
        }
    }
}

/// A completed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub size: u64,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Invalid(#[from] crate::store::fetch::InvalidFetch),
    #[error("cannot download `{url}`: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("cannot download `{url}`: cannot connect")]
    Connect { url: String, source: reqwest::Error },
    #[error("cannot download `{url}`: timed out")]
    Timeout { url: String, source: reqwest::Error },
    #[error("cannot download `{url}`")]
    Transfer { url: String, source: reqwest::Error },
    #[error(
        "cannot download `{url}`: it is larger than the limit of {}",
        crate::store::limits::format_size(*max)
    )]
    TooLarge { url: String, max: u64 },
    #[error("cannot set up the HTTP client")]
    Client { source: reqwest::Error },
    #[error("cannot {op} `{path}`")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::error::Diagnose for DownloadError {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            DownloadError::Invalid(e) => e.class(),
            DownloadError::Status { .. } => Class::User,
            DownloadError::Connect { .. }
            | DownloadError::Timeout { .. }
            | DownloadError::Transfer { .. }
            | DownloadError::TooLarge { .. }
            | DownloadError::Client { .. }
            | DownloadError::Io { .. } => Class::Environment,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            DownloadError::Invalid(e) => e.hint(),
            DownloadError::Status { status: 404, .. } => Some(
                "the file is not at that URL (any more); check the URL, or look for the file on a mirror".into(),
            ),
            DownloadError::Status { status: 401 | 403, .. } => {
                Some("the server refuses access; the URL may need credentials".into())
            }
            DownloadError::Connect { .. } => Some(
                "check that the host name is right and the server is up, and that this machine can reach the network (or a proxy through HTTPS_PROXY)".into(),
            ),
            DownloadError::Timeout { .. } => {
                Some("the server or the network is too slow; try again later".into())
            }
            DownloadError::TooLarge { .. } => Some(format!(
                "if the file is meant to be that large, raise the limit with `{}=SIZE`",
                crate::env::BRAMBLE_MAX_DOWNLOAD
            )),
            _ => None,
        }
    }
}

impl DownloadError {
    fn retryable(&self) -> bool {
        match self {
            DownloadError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            DownloadError::Connect { .. }
            | DownloadError::Timeout { .. }
            | DownloadError::Transfer { .. } => true,
            _ => false,
        }
    }
}

/// Check that `url` is an http or https URL ([`crate::store::fetch::check_http_url`]).
pub fn check_url(url: &str) -> Result<reqwest::Url, DownloadError> {
    Ok(crate::store::fetch::check_http_url(url)?)
}

fn client(options: &DownloadOptions) -> Result<reqwest::Client, DownloadError> {
    // Several clients may race to install it; the first wins and the rest are no-ops.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.idle_timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .user_agent(concat!("bramble/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| DownloadError::Client { source })
}

/// Download `url` to `dest` (whose parent must exist), retrying as described in the module
/// doc; reports progress to `progress`.
pub async fn download(
    url: &str,
    dest: &Path,
    options: &DownloadOptions,
    progress: &dyn Reporter,
) -> Result<Downloaded, DownloadError> {
    let parsed = check_url(url)?;
    let client = client(options)?;
    let part = dest.with_extension("part");
    let mut attempt = 0u32;
    loop {
        let result = attempt_once(&client, url, &parsed, &part, options.max_bytes, progress).await;
        match result {
            Ok((sha256, size)) => {
                std::fs::rename(&part, dest).map_err(|source| DownloadError::Io {
                    op: "rename",
                    path: part.clone(),
                    source,
                })?;
                return Ok(Downloaded {
                    path: dest.to_owned(),
                    sha256,
                    size,
                });
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                if !e.retryable() || attempt >= options.retries {
                    return Err(e);
                }
                let wait = options.backoff.saturating_mul(1 << attempt.min(16));
                tracing::info!(
                    "download of `{url}` failed ({}); retrying in {wait:?}",
                    crate::store::local::error_chain(&e)
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

async fn attempt_once(
    client: &reqwest::Client,
    url: &str,
    parsed: &reqwest::Url,
    part: &Path,
    max_bytes: u64,
    progress: &dyn Reporter,
) -> Result<([u8; 32], u64), DownloadError> {
    let classify = |source: reqwest::Error| {
        let url = url.to_owned();
        if source.is_connect() {
            DownloadError::Connect { url, source }
        } else if source.is_timeout() {
            DownloadError::Timeout { url, source }
        } else {
            DownloadError::Transfer { url, source }
        }
    };
    let mut response = client.get(parsed.clone()).send().await.map_err(classify)?;
    let status = response.status();
    if !status.is_success() {
        return Err(DownloadError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let total = response.content_length();
    let too_large = || DownloadError::TooLarge {
        url: url.to_owned(),
        max: max_bytes,
    };
    if total.is_some_and(|t| t > max_bytes) {
        return Err(too_large());
    }
    let io = |op| {
        move |source| DownloadError::Io {
            op,
            path: part.to_owned(),
            source,
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(part)
        .map_err(io("create"))?;
    let mut sha = Sha256::new();
    let mut done = 0u64;
    let report = |done| {
        progress.event(Event::Download {
            url: url.to_owned(),
            done,
            total,
        })
    };
    report(0);
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        done += chunk.len() as u64;
        if done > max_bytes {
            return Err(too_large());
        }
        sha.update(&chunk);
        file.write_all(&chunk).map_err(io("write"))?;
        report(done);
    }
    file.sync_all().map_err(io("fsync"))?;
    Ok((sha.finalize().into(), done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NullReporter;
    use crate::error::Diagnose;
    use crate::store::fetch::InvalidFetch;

    use crate::engine::fetch::test_http as http;

    fn quick() -> DownloadOptions {
        DownloadOptions {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(10),
            max_bytes: DEFAULT_MAX_DOWNLOAD,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn get(url: &str, dir: &Path) -> Result<Downloaded, DownloadError> {
        rt().block_on(download(url, &dir.join("file"), &quick(), &NullReporter))
    }

    fn leftovers(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn downloads_and_hashes() {
        let server = http::Server::start();
        server.file("/a.txt", "hello\n");
        let dir = tempfile::tempdir().unwrap();
        let d = get(&server.url("/a.txt"), dir.path()).unwrap();
        assert_eq!(std::fs::read(&d.path).unwrap(), b"hello\n");
        assert_eq!(d.size, 6);
        assert_eq!(d.sha256, <[u8; 32]>::from(Sha256::digest(b"hello\n")));
    }

    #[test]
    fn a_download_over_the_limit_is_refused_and_leaves_nothing() {
        let server = http::Server::start();
        server.file("/big", "x".repeat(4096));
        let dir = tempfile::tempdir().unwrap();
        let options = DownloadOptions {
            max_bytes: 1024,
            ..quick()
        };
        let err = rt()
            .block_on(download(
                &server.url("/big"),
                &dir.path().join("file"),
                &options,
                &NullReporter,
            ))
            .unwrap_err();
        assert!(
            matches!(err, DownloadError::TooLarge { max: 1024, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("is larger than the limit of 1 KiB"),
            "{err}"
        );
        assert!(err.hint().unwrap().contains("BRAMBLE_MAX_DOWNLOAD"));
        // Not retried: it will not get smaller.
        assert_eq!(server.hits("/big"), 1);
        assert_eq!(leftovers(dir.path()), 0);
        // At the limit exactly, it is fine.
        let options = DownloadOptions {
            max_bytes: 4096,
            ..quick()
        };
        let d = rt()
            .block_on(download(
                &server.url("/big"),
                &dir.path().join("file"),
                &options,
                &NullReporter,
            ))
            .unwrap();
        assert_eq!(d.size, 4096);
    }

    #[test]
    fn follows_redirects() {
        let server = http::Server::start();
        server.file("/real", "content");
        server.redirect("/old", &server.url("/real"));
        server.redirect("/older", "/old");
        let dir = tempfile::tempdir().unwrap();
        let d = get(&server.url("/older"), dir.path()).unwrap();
        assert_eq!(std::fs::read(&d.path).unwrap(), b"content");
    }

    #[test]
    fn not_found_is_not_retried_and_has_a_hint() {
        let server = http::Server::start();
        let dir = tempfile::tempdir().unwrap();
        let url = server.url("/missing");
        let err = get(&url, dir.path()).unwrap_err();
        assert!(
            matches!(err, DownloadError::Status { status: 404, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&url), "{err}");
        assert!(err.hint().is_some());
        assert_eq!(server.hits("/missing"), 1);
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[test]
    fn server_errors_are_retried() {
        let server = http::Server::start();
        server.flaky("/flaky", 2, 500, "finally");
        let dir = tempfile::tempdir().unwrap();
        let d = get(&server.url("/flaky"), dir.path()).unwrap();
        assert_eq!(std::fs::read(&d.path).unwrap(), b"finally");
        assert_eq!(server.hits("/flaky"), 3);
        // More failures than retries: the last status is reported.
        server.flaky("/down", 10, 503, "never");
        let err = get(&server.url("/down"), dir.path()).unwrap_err();
        assert!(
            matches!(err, DownloadError::Status { status: 503, .. }),
            "{err}"
        );
        assert_eq!(server.hits("/down"), 4);
    }

    #[test]
    fn interrupted_body_leaves_nothing_and_a_retry_succeeds() {
        let server = http::Server::start();
        let body = vec![7u8; 256 << 10];
        server.truncated("/cut", 1, body.clone());
        let dir = tempfile::tempdir().unwrap();
        let d = get(&server.url("/cut"), dir.path()).unwrap();
        assert_eq!(std::fs::read(&d.path).unwrap(), body);
        assert_eq!(server.hits("/cut"), 2);
        assert_eq!(leftovers(dir.path()), 1, "only the finished file");
        // Without retries the cut is an error and nothing is left behind.
        server.truncated("/cut2", 1, body);
        let dir = tempfile::tempdir().unwrap();
        let err = rt()
            .block_on(download(
                &server.url("/cut2"),
                &dir.path().join("file"),
                &DownloadOptions {
                    retries: 0,
                    ..quick()
                },
                &NullReporter,
            ))
            .unwrap_err();
        assert!(matches!(err, DownloadError::Transfer { .. }), "{err}");
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[test]
    fn connection_refused_is_clear() {
        // Bind and drop: nothing listens on that port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/x");
        let dir = tempfile::tempdir().unwrap();
        let err = rt()
            .block_on(download(
                &url,
                &dir.path().join("file"),
                &DownloadOptions {
                    retries: 1,
                    ..quick()
                },
                &NullReporter,
            ))
            .unwrap_err();
        assert!(matches!(err, DownloadError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&url));
        assert!(err.hint().unwrap().contains("server is up"));
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[test]
    fn only_http_and_https() {
        assert!(matches!(
            check_url("ftp://x/y"),
            Err(DownloadError::Invalid(InvalidFetch::Scheme { .. }))
        ));
        assert!(matches!(
            check_url("not a url"),
            Err(DownloadError::Invalid(InvalidFetch::Url { .. }))
        ));
        assert!(check_url("https://example.invalid/a.tar.gz").is_ok());
    }
}

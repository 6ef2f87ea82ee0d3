use super::*;
use crate::build::fetch::test_http::Server;
use sha2::{Digest, Sha256};

struct Env {
    _dir: tempfile::TempDir,
    fetcher: Fetcher,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(&dir.path().join("home")).unwrap());
        let mut fetcher = Fetcher::new(store);
        fetcher.download.retries = 1;
        fetcher.download.backoff = std::time::Duration::from_millis(10);
        Env {
            _dir: dir,
            fetcher,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn fetch(&self, req: &FetchRequest) -> Result<Fetched, FetchError> {
        self.rt.block_on(self.fetcher.fetch(req))
    }

    /// Entries of the store and tmp directories.
    fn stored(&self) -> (usize, usize) {
        let count = |d: &str| {
            std::fs::read_dir(self.fetcher.store.home().join(d))
                .unwrap()
                .count()
        };
        (count("store"), count("tmp"))
    }
}

fn url_req(url: String, unpack: Option<Format>, pin: Pin) -> FetchRequest {
    FetchRequest {
        spec: FetchSpec::Url { url, unpack },
        name: "thing".into(),
        pin,
    }
}

fn targz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn fetches_a_file_and_skips_the_download_once_pinned() {
    let env = Env::new();
    let server = Server::start();
    server.file("/f.txt", "hello\n");
    let first = env
        .fetch(&url_req(server.url("/f.txt"), None, Pin::default()))
        .unwrap();
    assert!(first.downloaded);
    assert_eq!(
        std::fs::read(env.fetcher.store.host_path(&first.path)).unwrap(),
        b"hello\n"
    );
    assert_eq!(first.sha256, Some(Sha256::digest(b"hello\n").into()));
    // The pin names the store path; a pinned fetch of a stored result downloads nothing.
    let pinned = url_req(
        server.url("/f.txt"),
        None,
        Pin {
            hash: Some(first.hash),
            sha256: None,
        },
    );
    assert_eq!(pinned.expected_path(), Some(first.path.clone()));
    let again = env.fetch(&pinned).unwrap();
    assert!(!again.downloaded);
    assert_eq!(again.path, first.path);
    assert_eq!(server.hits("/f.txt"), 1);
    assert_eq!(env.stored(), (1, 0));
}

#[test]
fn a_pin_mismatch_stores_nothing() {
    let env = Env::new();
    let server = Server::start();
    server.file("/f.txt", "evil\n");
    let wrong = Hash::digest(b"something else");
    let err = env
        .fetch(&url_req(
            server.url("/f.txt"),
            None,
            Pin {
                hash: Some(wrong),
                sha256: None,
            },
        ))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            FetchError::Mismatch {
                kind: "content hash",
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains(&server.url("/f.txt")) && text.contains(&wrong.to_string()),
        "{text}"
    );
    assert!(err.hint().is_some());
    let err = env
        .fetch(&url_req(
            server.url("/f.txt"),
            None,
            Pin {
                hash: None,
                sha256: Some([0; 32]),
            },
        ))
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Mismatch { kind: "sha256", .. }),
        "{err}"
    );
    assert_eq!(env.stored(), (0, 0));
}

#[test]
fn unpacks_with_a_sha256_pin() {
    let env = Env::new();
    let server = Server::start();
    let archive = targz(&[("pkg/bin/tool", b"#!/bin/sh\n")]);
    server.file("/pkg.tar.gz", archive.clone());
    let sha: [u8; 32] = Sha256::digest(&archive).into();
    let got = env
        .fetch(&url_req(
            server.url("/pkg.tar.gz"),
            Some(Format::TarGz),
            Pin::parse(&format!("sha256:{}", sha256_hex(&sha))).unwrap(),
        ))
        .unwrap();
    let tool = env.fetcher.store.host_path(&got.path).join("pkg/bin/tool");
    assert_eq!(std::fs::read(&tool).unwrap(), b"#!/bin/sh\n");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&tool).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o555);
    // The recorded content hash is what the store verifies.
    let info = env.fetcher.store.path_info(&got.path).unwrap().unwrap();
    assert_eq!(info.archive_hash, got.hash);
}

#[test]
fn a_hostile_archive_stores_nothing() {
    let env = Env::new();
    let server = Server::start();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    server.file("/evil.tar", b.into_inner().unwrap());
    let err = env
        .fetch(&url_req(
            server.url("/evil.tar"),
            Some(Format::Tar),
            Pin::default(),
        ))
        .unwrap_err();
    assert!(matches!(err, FetchError::Unpack { .. }), "{err}");
    assert_eq!(env.stored(), (0, 0));
}

#[test]
fn fetches_git_commits() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let (first, _) = crate::build::fetch::test_git::make_repo(&repo);
    let req = FetchRequest {
        spec: FetchSpec::Git {
            url: repo.to_string_lossy().into_owned(),
            rev: first,
        },
        name: "src".into(),
        pin: Pin::default(),
    };
    let got = env.fetch(&req).unwrap();
    let root = env.fetcher.store.host_path(&got.path);
    assert_eq!(
        std::fs::read_to_string(root.join("hello.txt")).unwrap(),
        "one\n"
    );
    assert!(!root.join(".git").exists());
    assert_eq!(env.stored(), (1, 0));
}

#[test]
fn derivations_round_trip_and_are_checked() {
    let req = url_req(
        "https://example.invalid/a.deb".into(),
        Some(Format::Deb),
        Pin {
            hash: Some(Hash::digest(b"x")),
            sha256: Some([7; 32]),
        },
    );
    let drv = req.to_derivation();
    assert_eq!(drv.builder, FETCH_URL);
    assert_eq!(FetchRequest::from_derivation(&drv).unwrap(), Some(req));
    let git = FetchRequest {
        spec: FetchSpec::Git {
            url: "https://example.invalid/r.git".into(),
            rev: "a".repeat(40),
        },
        name: "r".into(),
        pin: Pin::default(),
    };
    assert_eq!(
        FetchRequest::from_derivation(&git.to_derivation()).unwrap(),
        Some(git.clone())
    );
    assert_eq!(
        FetchRequest::from_derivation(&Derivation::new("x", "/bin/sh")).unwrap(),
        None
    );
    let mut bad = git.to_derivation();
    bad.env.insert("rev".into(), "main".into());
    assert!(matches!(
        FetchRequest::from_derivation(&bad),
        Err(FetchError::Git(GitError::NotACommitHash { .. }))
    ));
    let mut bad = git.to_derivation();
    bad.env.insert(
        "url".into(),
        format!("{{{{ {}:out }}}}", Hash::digest(b"d")),
    );
    assert!(matches!(
        FetchRequest::from_derivation(&bad),
        Err(FetchError::BadDerivation { .. })
    ));
    let mut bad = git.to_derivation();
    bad.args.push("x".into());
    assert!(matches!(
        FetchRequest::from_derivation(&bad),
        Err(FetchError::BadDerivation { .. })
    ));
}

#[test]
fn pins_parse() {
    let h = Hash::digest(b"x");
    assert_eq!(Pin::parse(&h.to_string()).unwrap().hash, Some(h));
    let hex = "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744";
    let sha = Pin::parse(hex).unwrap().sha256.unwrap();
    assert_eq!(sha256_hex(&sha), hex);
    assert_eq!(
        Pin::parse(&format!("sha256:{hex}")).unwrap().sha256,
        Some(sha)
    );
    assert!(Pin::parse("sha256:abc").is_err());
    assert!(Pin::parse("nonsense").is_err());
}

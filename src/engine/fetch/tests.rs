use std::collections::BTreeMap;

use super::*;
use crate::engine::fetch::test_http::Server;
use crate::error::Diagnose;
use crate::store::Derivation;
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
            h1: None,
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
                h1: None,
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
                h1: None,
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
    let (first, _) = crate::engine::fetch::test_git::make_repo(&repo);
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
            h1: None,
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
        Err(InvalidFetch::NotACommitHash { .. })
    ));
    let mut bad = git.to_derivation();
    bad.env.insert(
        "url".into(),
        format!("{{{{ {}:out }}}}", Hash::digest(b"d")),
    );
    assert!(matches!(
        FetchRequest::from_derivation(&bad),
        Err(InvalidFetch::Derivation { .. })
    ));
    let mut bad = git.to_derivation();
    bad.args.push("x".into());
    assert!(matches!(
        FetchRequest::from_derivation(&bad),
        Err(InvalidFetch::Derivation { .. })
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

fn dead_url() -> String {
    // Bind and drop: nothing listens on that port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/dead")
}

fn env_with_mirror(name: &str, bases: Vec<String>) -> Env {
    let mut env = Env::new();
    env.fetcher.download.retries = 0;
    env.fetcher.mirrors = Arc::new(Mirrors::new(
        vec![mirror::Layer {
            origin: mirror::Origin::Env,
            table: BTreeMap::from([(name.to_owned(), bases)]),
        }],
        None,
    ));
    env
}

#[test]
fn mirror_urls_try_each_mirror_until_one_matches_the_pin() {
    let server = Server::start();
    let archive = targz(&[("pkg/file", b"from the mirror\n")]);
    let sha: [u8; 32] = Sha256::digest(&archive).into();
    // A dead mirror, one without the file (404), one serving other bytes, then the good one.
    server.file(
        "/other/pool/p.tar.gz",
        targz(&[("pkg/file", b"tampered\n")]),
    );
    server.file("/good/pool/p.tar.gz", archive);
    let env = env_with_mirror(
        "test-archive",
        vec![
            dead_url(),
            server.url("/empty"),
            server.url("/other/"),
            server.url("/good"),
        ],
    );
    let req = FetchRequest {
        spec: FetchSpec::Url {
            url: "mirror://test-archive/pool/p.tar.gz".into(),
            unpack: Some(Format::TarGz),
        },
        name: "p".into(),
        pin: Pin {
            hash: None,
            sha256: Some(sha),
            h1: None,
        },
    };
    let got = env.fetch(&req).unwrap();
    let file = env.fetcher.store.host_path(&got.path).join("pkg/file");
    assert_eq!(std::fs::read(file).unwrap(), b"from the mirror\n");
    assert_eq!(server.hits("/empty/pool/p.tar.gz"), 1);
    assert_eq!(server.hits("/other/pool/p.tar.gz"), 1);
    assert_eq!(server.hits("/good/pool/p.tar.gz"), 1);
    // The record (what bramble.lock gets) keeps the mirror URL.
    assert_eq!(got.record(&req).unwrap().spec, req.spec);
    assert_eq!(env.stored(), (1, 0));
}

#[test]
fn a_mirror_url_failing_everywhere_names_every_url_tried() {
    let server = Server::start();
    let dead = dead_url();
    let env = env_with_mirror("m", vec![dead.clone(), server.url("/a")]);
    let err = env
        .fetch(&url_req("mirror://m/x/y.txt".into(), None, Pin::default()))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "cannot fetch `mirror://m/x/y.txt` from any of its mirrors (from `BRAMBLE_MIRROR_M`):"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n  `{dead}/x/y.txt`: cannot download")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\n  `{}`: cannot download `{}`: the server answered 404",
            server.url("/a/x/y.txt"),
            server.url("/a/x/y.txt")
        )),
        "{text}"
    );
    assert!(err.hint().is_some());
    assert_eq!(env.stored(), (0, 0));
    // A name nobody configured is an error before any download.
    let err = env
        .fetch(&url_req("mirror://nowhere/x".into(), None, Pin::default()))
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Mirror(MirrorError::Unconfigured { .. })),
        "{err}"
    );
    // A fetch derivation accepts mirror URLs and checks them.
    let drv = url_req("mirror://m/x".into(), None, Pin::default()).to_derivation();
    assert!(FetchRequest::from_derivation(&drv).unwrap().is_some());
    let drv = url_req("mirror://M/x".into(), None, Pin::default()).to_derivation();
    assert!(matches!(
        FetchRequest::from_derivation(&drv),
        Err(InvalidFetch::MirrorUrl { .. })
    ));
}

#[test]
fn a_sha256_pin_of_a_file_already_fetched_downloads_nothing() {
    let env = Env::new();
    let server = Server::start();
    server.file("/a/pkg.tar.gz", targz(&[("f", b"same bytes\n")]));
    server.file("/b/pkg.tar.gz", targz(&[("f", b"same bytes\n")]));
    let sha: [u8; 32] = Sha256::digest(targz(&[("f", b"same bytes\n")])).into();
    let pin = Pin {
        hash: None,
        sha256: Some(sha),
        h1: None,
    };
    let first = env
        .fetch(&url_req(
            server.url("/a/pkg.tar.gz"),
            Some(Format::TarGz),
            pin,
        ))
        .unwrap();
    assert!(first.downloaded);
    // The same file pinned by its sha256 alone, from another URL (another mirror, another
    // project's copy of a .bramble file): the store's result is used as it is.
    let again = env
        .fetch(&url_req(
            server.url("/b/pkg.tar.gz"),
            Some(Format::TarGz),
            pin,
        ))
        .unwrap();
    assert!(!again.downloaded);
    assert_eq!(again.path, first.path);
    assert_eq!(again.hash, first.hash);
    assert_eq!(server.hits("/a/pkg.tar.gz"), 1);
    assert_eq!(server.hits("/b/pkg.tar.gz"), 0);
    // Unpacked differently, or under another name, it is another result: downloaded.
    let raw = env
        .fetch(&url_req(server.url("/b/pkg.tar.gz"), None, pin))
        .unwrap();
    assert!(raw.downloaded);
    assert_eq!(server.hits("/b/pkg.tar.gz"), 1);
    // Without a sha256 pin nothing can be looked up: downloaded.
    let unpinned = env
        .fetch(&url_req(
            server.url("/a/pkg.tar.gz"),
            Some(Format::TarGz),
            Pin::default(),
        ))
        .unwrap();
    assert!(unpinned.downloaded);
    assert_eq!(unpinned.path, first.path);
}

#[test]
fn an_h1_pin_checks_a_module_zip_and_its_go_mod_before_storing() {
    let env = Env::new();
    let server = Server::start();
    let files: [(&str, &[u8]); 2] = [
        ("example.com/!x@v1.0.0/go.mod", b"module example.com/X\n"),
        ("example.com/!x@v1.0.0/x.go", b"package x\n"),
    ];
    // The names as the zip holds them: the module path unescaped.
    let files = files.map(|(n, b)| (n.replace("!x", "X"), b));
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let zip = h1::zip_of(&entries);
    let (good, _) = h1::hash_zip(std::io::Cursor::new(&zip), None).unwrap();
    server.file("/example.com/!x/@v/v1.0.0.zip", zip.clone());
    server.file("/example.com/!x/@v/v1.0.0.mod", "module example.com/X\n");
    let zip_url = server.url("/example.com/!x/@v/v1.0.0.zip");
    let pin = |h: H1| Pin {
        h1: Some(h),
        ..Pin::default()
    };
    // A tampered zip (one byte of one file) is refused, naming the module and both hashes.
    let mut tampered = files.clone();
    tampered[1].1 = b"package y\n";
    let entries: Vec<(&str, &[u8])> = tampered.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    server.file(
        "/tampered/example.com/!x/@v/v1.0.0.zip",
        h1::zip_of(&entries),
    );
    let err = env
        .fetch(&url_req(
            server.url("/tampered/example.com/!x/@v/v1.0.0.zip"),
            None,
            pin(good),
        ))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FetchError::H1Mismatch { .. }), "{text}");
    assert!(text.contains("`example.com/X@v1.0.0`"), "{text}");
    assert!(text.contains(&format!("expected: {good}")), "{text}");
    assert!(err.hint().unwrap().contains("go.sum"));
    assert_eq!(env.stored(), (0, 0));
    // The right one is stored as the zip file itself.
    let got = env
        .fetch(&url_req(zip_url.clone(), None, pin(good)))
        .unwrap();
    assert_eq!(
        std::fs::read(env.fetcher.store.host_path(&got.path)).unwrap(),
        zip
    );
    // A `.mod` is hashed as `go.mod`.
    let mod_pin = pin(h1::hash_mod(b"module example.com/X\n"));
    let url = server.url("/example.com/!x/@v/v1.0.0.mod");
    env.fetch(&url_req(url.clone(), None, mod_pin)).unwrap();
    let err = env
        .fetch(&url_req(url.clone(), None, pin(good)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("`{url}`")) && err.contains("expected"),
        "{err}"
    );
    // A zip of another module is refused before hashing, whatever the pin.
    server.file("/example.com/y/@v/v1.0.0.zip", zip);
    let err = env
        .fetch(&url_req(
            server.url("/example.com/y/@v/v1.0.0.zip"),
            None,
            pin(good),
        ))
        .unwrap_err();
    assert!(
        matches!(err, FetchError::GoModule { .. })
            && err.to_string().contains("not the module and version"),
        "{err}"
    );
    // The pin needs a `.zip` or `.mod` URL.
    let mut drv = url_req(server.url("/f.tar"), None, pin(good)).to_derivation();
    assert!(
        FetchRequest::from_derivation(&drv)
            .unwrap_err()
            .to_string()
            .contains("names neither")
    );
    drv.env.insert("url".into(), zip_url);
    assert_eq!(
        FetchRequest::from_derivation(&drv).unwrap().unwrap().pin,
        pin(good)
    );
}

//! `mirror://NAME/path` URLs end to end: the real `bramble` binary fetches from a fixture
//! HTTP server on 127.0.0.1 configured as a mirror through each source (the environment,
//! `bramble.toml`, the user's config file, apt sources), falls back from a dead mirror,
//! explains an unconfigured one, and records the `mirror://` URL in `bramble.lock`.
//!
//! bramble runs through the runner (an ordinary user, a private store); every test also gets
//! its own `XDG_CONFIG_HOME` and `BRAMBLE_APT_ROOT`, which it fills.

use std::path::Path;
use std::process::Output;

use crate::support::archive::targz;
use crate::support::{Bramble, http, sha256_hex, stderr, stdout};

/// The archive every test fetches: a `.crate` (a tar.gz), so `unpack = True` must know it.
fn archive() -> Vec<u8> {
    targz(&[("data-1.0/msg.txt", 0o644, b"from a mirror\n")])
}

const FILE: &str = "pool/d/data/data-1.0.crate";

const MODULE: &str = r#"
load("bramble/fetch", "fetch_url")

def data():
    return fetch_url("mirror://test-archive/@FILE@", hash = "sha256:@SHA@", unpack = True, name = "data")

def unpinned():
    return fetch_url("mirror://test-archive/@FILE@", unpack = True, name = "data")

def direct():
    return fetch_url("@DIRECT@", hash = "sha256:@SHA@", unpack = True, name = "data")

def debian():
    return fetch_url("mirror://debian/@FILE@", unpack = True, name = "data")

def nowhere():
    return fetch_url("mirror://nowhere/x.txt")
"#;

/// A project, a store, a user config directory and an apt root, all private to one test,
/// and a fixture server holding the archive under `/a/`, `/b/`, `/c/`, `/debian/` and
/// `/direct/`.
struct Setup {
    bramble: Bramble,
    server: http::Server,
    project: tempfile::TempDir,
    config: tempfile::TempDir,
    apt: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Setup {
    fn new() -> Setup {
        let server = http::Server::start();
        for base in ["a", "b", "c", "debian", "direct"] {
            server.file(&format!("/{base}/{FILE}"), archive());
        }
        let sha = sha256_hex(&archive());
        let module = MODULE
            .replace("@FILE@", FILE)
            .replace("@SHA@", &sha)
            .replace("@DIRECT@", &server.url(&format!("/direct/{FILE}")));
        let bramble = Bramble::new();
        let project = bramble.tempdir();
        std::fs::write(
            project.path().join("bramble.toml"),
            "[package]\nname = \"example.com/mirrors\"\n",
        )
        .unwrap();
        std::fs::write(project.path().join("default.bramble"), module).unwrap();
        bramble.give(project.path());
        Setup {
            server,
            project,
            config: bramble.tempdir(),
            apt: bramble.tempdir(),
            bramble,
            env: Vec::new(),
        }
    }

    fn base(&self, name: &str) -> String {
        self.server.url(&format!("/{name}"))
    }

    fn hits(&self, base: &str) -> usize {
        self.server.hits(&format!("/{base}/{FILE}"))
    }

    /// Append `text` to the project's `bramble.toml`.
    fn manifest(&self, text: &str) {
        let path = self.project.path().join("bramble.toml");
        let mut manifest = std::fs::read_to_string(&path).unwrap();
        manifest.push_str(text);
        std::fs::write(&path, manifest).unwrap();
    }

    /// Write the user's config file.
    fn user_config(&self, text: &str) {
        let dir = self.config.path().join("bramble");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), text).unwrap();
        self.bramble.give(self.config.path());
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.project.path().join("bramble.lock")).unwrap_or_default()
    }

    /// Run bramble through the runner in the project, with this test's config and apt root.
    fn bramble(&self, args: &[&str]) -> Output {
        self.bramble.give(self.project.path());
        self.bramble
            .command(self.project.path(), args)
            .env("XDG_CONFIG_HOME", self.config.path())
            .env("BRAMBLE_APT_ROOT", self.apt.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.bramble(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    }
}

/// The fetched tree holds the archive's file.
fn assert_fetched(out: &Output) {
    let path = stdout(out).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(Path::new(&path).join("data-1.0/msg.txt")).unwrap(),
        "from a mirror\n"
    );
}

#[test]
fn the_environment_names_mirrors_a_dead_one_is_skipped_and_the_lock_keeps_the_mirror_url() {
    let mut s = Setup::new();
    // Nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    s.env.push((
        "BRAMBLE_MIRROR_TEST_ARCHIVE".into(),
        format!("http://127.0.0.1:{port}/dead  {}", s.base("a")),
    ));
    // Lower in precedence: never used.
    s.manifest(&format!(
        "\n[mirrors]\ntest-archive = \"{}\"\n",
        s.base("b")
    ));
    s.user_config(&format!("[mirrors]\ntest-archive = \"{}\"\n", s.base("c")));
    let out = s.ok(&["build", "./:unpinned"]);
    assert_fetched(&out);
    assert_eq!((s.hits("a"), s.hits("b"), s.hits("c")), (1, 0, 0));
    let url = format!("mirror://test-archive/{FILE}");
    assert!(
        stderr(&out).contains(&format!("recorded hash of {url} in bramble.lock")),
        "{}",
        stderr(&out)
    );
    let lock = s.lock();
    assert!(
        lock.contains(&format!("url = \"{url}\"\nunpack = \"tar.gz\"\n")),
        "{lock}"
    );
    assert!(!lock.contains("127.0.0.1"), "{lock}");
    // The pinned build downloads nothing.
    let again = s.ok(&["build", "./:unpinned"]);
    assert_eq!(stdout(&again), stdout(&out));
    assert_eq!(s.hits("a"), 1);
}

#[test]
fn the_project_names_mirrors_before_the_user() {
    let s = Setup::new();
    s.manifest(&format!(
        "\n[mirrors]\ntest-archive = [\"{}\", \"{}\"]\n",
        s.base("missing"),
        s.base("b")
    ));
    s.user_config(&format!("[mirrors]\ntest-archive = \"{}\"\n", s.base("c")));
    let out = s.ok(&["build", "./:data"]);
    assert_fetched(&out);
    assert_eq!(s.server.hits(&format!("/missing/{FILE}")), 1);
    assert_eq!((s.hits("a"), s.hits("b"), s.hits("c")), (0, 1, 0));
}

#[test]
fn the_user_config_names_mirrors() {
    let s = Setup::new();
    s.user_config(&format!(
        "[mirrors]\ntest-archive = [\"{}\"]\n",
        s.base("c")
    ));
    let out = s.ok(&["build", "./:data"]);
    assert_fetched(&out);
    assert_eq!(s.hits("c"), 1);
}

#[test]
fn the_apt_sources_give_the_debian_mirror() {
    let s = Setup::new();
    let dir = s.apt.path().join("etc/apt/sources.list.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("debian.sources"),
        format!(
            "Types: deb\nURIs: {}\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
             Types: deb\nURIs: {}\nSuites: bookworm-security\nComponents: main\n",
            s.base("debian"),
            s.base("a")
        ),
    )
    .unwrap();
    s.bramble.give(s.apt.path());
    let out = s.ok(&["build", "./:debian"]);
    assert_fetched(&out);
    assert_eq!((s.hits("debian"), s.hits("a")), (1, 0));
    assert!(
        s.lock()
            .contains(&format!("url = \"mirror://debian/{FILE}\""))
    );
}

#[test]
fn an_unconfigured_mirror_says_where_to_configure_it() {
    let s = Setup::new();
    let out = s.bramble(&["build", "./:nowhere"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let config = s.config.path().join("bramble/config.toml");
    let expected = format!(
        "error: building `x.txt` failed: cannot fetch `mirror://nowhere/x.txt`: the mirror `nowhere` is not configured\n\
         hint: give its base URL in the environment variable `BRAMBLE_MIRROR_NOWHERE` (several separated by spaces), or in the `[mirrors]` table of the project's `bramble.toml` or of `{}`: `nowhere = \"https://...\"`\n",
        config.display()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    // And for Debian's names, the apt sources that were searched.
    let out = s.bramble(&["build", "./:debian"]);
    assert!(!out.status.success());
    let apt = format!(
        "; no Debian entry was found in the apt sources of `{}`\n",
        s.apt.path().join("etc/apt").display()
    );
    assert!(stderr(&out).contains(&apt), "{}", stderr(&out));
}

#[test]
fn a_user_config_that_is_a_symlink_is_refused() {
    let s = Setup::new();
    s.user_config("[mirrors]\n");
    let file = s.config.path().join("bramble/config.toml");
    let real = s.config.path().join("real.toml");
    std::fs::rename(&file, &real).unwrap();
    std::os::unix::fs::symlink(&real, &file).unwrap();
    s.bramble.give(s.config.path());
    let out = s.bramble(&["build", "./:data"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: cannot read `{}`: it is a symbolic link, not a regular file\nhint: ",
            file.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_sha256_pin_of_a_stored_file_is_not_downloaded_again() {
    let mut s = Setup::new();
    s.env
        .push(("BRAMBLE_MIRROR_TEST_ARCHIVE".into(), s.base("a")));
    let first = s.ok(&["build", "./:data"]);
    assert_eq!(s.hits("a"), 1);
    // The same file, pinned by the same sha256, at another URL (a project that names it
    // directly, or a copy of this one with no lock): the store's result, no request.
    let second = s.ok(&["build", "./:direct"]);
    assert_eq!(stdout(&second), stdout(&first));
    assert_eq!(s.hits("direct"), 0);
    assert!(
        !stderr(&second).contains("downloading"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn bramble_fetch_resolves_mirror_urls_with_the_project_s_table() {
    let s = Setup::new();
    s.manifest(&format!(
        "\n[mirrors]\ntest-archive = \"{}\"\n",
        s.base("b")
    ));
    let url = format!("mirror://test-archive/{FILE}");
    let out = s.ok(&[
        "fetch", &url, "--unpack", "auto", "--name", "data", "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["url"], url.as_str());
    let path = doc["path"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(Path::new(path).join("data-1.0/msg.txt")).unwrap(),
        "from a mirror\n"
    );
    assert_eq!(s.hits("b"), 1);
    // The pin it printed finds the stored result: nothing downloaded.
    let sha = doc["sha256"].as_str().unwrap();
    let again = s.ok(&[
        "fetch",
        &url,
        "--unpack",
        "auto",
        "--name",
        "data",
        "--json",
        "--hash",
        &format!("sha256:{sha}"),
    ]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(doc["downloaded"], false);
    assert_eq!(s.hits("b"), 1);
}

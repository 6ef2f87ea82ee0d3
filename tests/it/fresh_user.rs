//! A user created for the test, with nothing but an account: the default `BRAMBLE_HOME` under
//! its home, a project shaped like README's main job (`examples/hello`) whose busybox comes
//! as a `.deb` from a local HTTP server, built and run with `bramble run ./:main`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::archive::deb;
use crate::support::project::BUSYBOX;
use crate::support::runner::is_root;
use crate::support::{Bramble, http, stderr, stdout};

/// A user made with `useradd -m` under a random name, removed (with its home) when dropped.
struct User {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl User {
    fn create() -> User {
        // A random name: a fresh `RandomState` is randomly seeded.
        let random = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        );
        let name = format!("bramble-{:012x}", random & 0xffff_ffff_ffff);
        let out = Command::new("useradd")
            .args(["-m", "-U", "-s", "/bin/sh", &name])
            .output()
            .expect("run `useradd` (package `passwd`)");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let user = nix::unistd::User::from_name(&name)
            .unwrap()
            .unwrap_or_else(|| panic!("`{name}` is not in the user database"));
        User {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let removed = Command::new("userdel")
            .args(["-r", &self.name])
            .output()
            .map(|o| o.status.success());
        if !matches!(removed, Ok(true)) && !std::thread::panicking() {
            panic!("cannot remove the test user `{}`", self.name);
        }
    }
}

const MODULE: &str = r#"
"""The main job of README with busybox from a local server."""

load("bramble/fetch", "fetch_url")

def busybox():
    return fetch_url("@URL@", unpack = "deb", name = "busybox-static")

def hello():
    bb = busybox()
    return derivation(
        "hello",
        bb.out + "/bin/busybox",
        args = ["sh", "hello.sh"],
        env = {"BUSYBOX": bb.out + "/bin/busybox"},
        sources = files(["hello.sh"]),
    )

def main():
    return run(hello(), "bin/hello")
"#;

#[test]
fn a_fresh_user_builds_and_runs_the_main_job() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set, so this test must run: run the tests as root (it creates a user)"
        );
        eprintln!("skipped: creating a user needs root (useradd)");
        return;
    }
    let server = http::Server::start();
    let busybox = std::fs::read(BUSYBOX)
        .unwrap_or_else(|e| panic!("this test needs `{BUSYBOX}` (busybox-static): {e}"));
    let path = "/pool/main/b/busybox/busybox-static_1.0_amd64.deb";
    server.file(
        path,
        deb("busybox-static", &[("./bin/busybox", 0o755, &busybox)]),
    );

    let user = User::create();
    let dir = user.home.join("hello");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("bramble.toml"),
        "[package]\nname = \"example.com/hello\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("default.bramble"),
        MODULE.replace("@URL@", &server.url(path)),
    )
    .unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello/hello.sh");
    std::fs::copy(example, dir.join("hello.sh")).unwrap();
    for entry in walkdir::WalkDir::new(&dir) {
        std::os::unix::fs::lchown(entry.unwrap().path(), Some(user.uid), Some(user.gid)).unwrap();
    }

    let b = Bramble::for_user(user.uid, user.gid, &user.home);
    let out = b.run(&dir, &["run", "./:main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Hello from a hermetic build\n");
    assert_eq!(server.hits(path), 1);
    // The store is the default one under the user's home, and the user's.
    let store = user.home.join(".local/share/bramble/store");
    assert_eq!(b.store_dir(), store);
    assert_eq!(std::fs::metadata(&store).unwrap().uid(), user.uid);
    // The fetch was pinned in the lock; again, nothing is downloaded, recorded or rebuilt.
    let lock = std::fs::read_to_string(dir.join("bramble.lock")).unwrap();
    assert!(lock.contains(&server.url(path)), "{lock}");
    let again = b.run(&dir, &["run", "./:main"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), "Hello from a hermetic build\n");
    let err = stderr(&again);
    assert!(
        !err.contains("built hello") && !err.contains("downloading") && !err.contains("recorded"),
        "{err}"
    );
    assert_eq!(server.hits(path), 1);
}

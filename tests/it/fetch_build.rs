//! Fetch derivations in real builds: the lock file is recorded and honoured, `--locked`
//! refuses unpinned fetches, a pin mismatch fails the build, and an ordinary builder has no
//! network even to a server on 127.0.0.1 that a fetch reaches.

use std::path::Path;

use crate::support::archive::targz;
use crate::support::{ServedProject, stderr, stdout};

/// The project of [`MODULE`] with its fetches served by its server.
fn project() -> ServedProject {
    ServedProject::new("example.com/fetchtest", |server| {
        server.file("/data.tar.gz", data(b"fetched over http\n"));
        server.file("/other.txt", "another file\n");
        MODULE
            .replace("@DATA@", &server.url("/data.tar.gz"))
            .replace("@OTHER@", &server.url("/other.txt"))
            .replace("@PORT@", server.url("").rsplit(':').next().unwrap())
    })
}

/// The served archive: `data/msg.txt` holding `msg`.
fn data(msg: &[u8]) -> Vec<u8> {
    targz(&[("data/msg.txt", 0o644, msg)])
}

const MODULE: &str = r#"
load("bramble/fetch", "fetch_url")

def busybox():
    return derivation(
        "busybox",
        "busybox",
        args = ["sh", "-c", "mkdir -p $out/bin && cp busybox $out/bin/busybox"],
        sources = files(["busybox"]),
    )

def data():
    return fetch_url("@DATA@", unpack = "tar.gz", name = "data")

def use():
    bb = busybox()
    return derivation("use", bb.out + "/bin/busybox", args = ["sh", "-c", "cat " + data().out + "/data/msg.txt > $out"])

def tool():
    bb = busybox()
    script = (
        "mkdir -p $out/bin; " +
        "echo '#!" + bb.out + "/bin/busybox sh' > $out/bin/show; " +
        "echo 'cat " + data().out + "/data/msg.txt' >> $out/bin/show; " +
        "chmod +x $out/bin/show"
    )
    return derivation("tool", bb.out + "/bin/busybox", args = ["sh", "-c", script])

def other():
    return fetch_url("@OTHER@")

def offline():
    bb = busybox()
    return derivation("offline", bb.out + "/bin/busybox", args = ["sh", "-c", "echo 'GET /data.tar.gz HTTP/1.0' | busybox nc -w 3 127.0.0.1 @PORT@ && echo CONNECTED; exit 1"], env = {"PATH": bb.out + "/bin"})
"#;

#[test]
fn fetches_record_the_lock_and_reuse_it() {
    let p = project();
    let out = p.bramble(&["build", "./:use"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&out).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "fetched over http\n"
    );
    let url = p.server.url("/data.tar.gz");
    assert!(
        stderr(&out).contains(&format!("recorded hash of {url} in bramble.lock")),
        "{}",
        stderr(&out)
    );
    let lock = p.lock();
    assert!(lock.contains(&format!("url = \"{url}\"")), "{lock}");
    assert!(lock.contains("unpack = \"tar.gz\""), "{lock}");
    assert_eq!(p.server.hits("/data.tar.gz"), 1);
    // With the pin from the lock: same result, no download, nothing recorded again.
    let again = p.bramble(&["build", "./:use"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), path);
    assert!(!stderr(&again).contains("recorded"), "{}", stderr(&again));
    assert_eq!(p.server.hits("/data.tar.gz"), 1);
    assert_eq!(p.lock(), lock);
    // Every command sees the lock's pins: `run` neither downloads nor rebuilds the fetch.
    let run = p.bramble(&["run", "./:tool", "bin/show"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run), "fetched over http\n");
    assert!(!stderr(&run).contains("built data"), "{}", stderr(&run));
    assert_eq!(p.server.hits("/data.tar.gz"), 1);
    // --locked accepts it, and refuses a fetch that is pinned nowhere.
    let locked = p.bramble(&["build", "--locked", "./:use"]);
    assert!(locked.status.success(), "{}", stderr(&locked));
    let refused = p.bramble(&["build", "--locked", "./:other"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let err = stderr(&refused);
    assert!(
        err.contains("not pinned in `bramble.lock`") && err.contains("/other.txt"),
        "{err}"
    );
    assert_eq!(p.server.hits("/other.txt"), 0);
}

#[test]
fn a_changed_upstream_fails_the_build_and_stores_nothing() {
    let p = project();
    let out = p.bramble(&["build", "./:data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = stdout(&out).trim().to_owned();
    // Upstream changes its file; a fresh store must refuse it.
    p.server.file("/data.tar.gz", data(b"tampered\n"));
    crate::support::runner::remove_tree(&p.home());
    let out = p.bramble(&["build", "./:data"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let url = p.server.url("/data.tar.gz");
    assert!(
        err.contains(&url) && err.contains("does not match its pin"),
        "{err}"
    );
    assert!(err.contains("expected") && err.contains("actual"), "{err}");
    assert!(!Path::new(&first).exists());
    let stored: Vec<_> = std::fs::read_dir(p.home().join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with("-data"))
        .collect();
    assert!(stored.is_empty(), "{stored:?}");
}

#[test]
fn ordinary_builders_have_no_network() {
    let p = project();
    // A fetch reaches the server...
    let out = p.bramble(&["build", "./:data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hits = p.server.hits("/data.tar.gz");
    // ...a sandboxed builder cannot: its 127.0.0.1 is its own empty loopback.
    let out = p.bramble(&["build", "./:offline"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains("CONNECTED"), "{err}");
    assert_eq!(p.server.hits("/data.tar.gz"), hits);
}

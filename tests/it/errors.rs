//! The errors a user sees from builds, fetches, DAOs and the store, as snapshots (as
//! `lang`'s evaluation errors are): each is run through the real binary and its whole
//! stderr compared, with what differs between runs (temporary directories, store hashes,
//! the fixture server's port, durations) filtered out. A change to any of these messages
//! shows up as a snapshot diff to review (`cargo insta review`).

use std::process::Output;

use crate::support::{ServedProject, stderr};

const MODULE: &str = r#"
load("bramble/fetch", "fetch_url")

def busybox():
    return derivation(
        "busybox",
        "busybox",
        args = ["sh", "-c", "mkdir -p $out/bin && cp busybox $out/bin/busybox"],
        sources = files(["busybox"]),
    )

def _sh(name, script, dao = False):
    return derivation(name, busybox().out + "/bin/busybox", args = ["sh", "-c", script], dao = dao)

def fails():
    return _sh("fails", "echo compiling; echo 'error: it broke' >&2; exit 3")

def no_output():
    return _sh("no-output", "echo nothing written")

def mismatch():
    return fetch_url("@URL@/file.txt", hash = "sha256:" + "0" * 64)

def missing():
    return fetch_url("@URL@/missing.txt", hash = "sha256:" + "0" * 64)

def unconfigured():
    return fetch_url("mirror://nowhere/file.txt", hash = "sha256:" + "0" * 64)

def unpinned():
    return fetch_url("@URL@/file.txt")

def dao_not_json():
    return _sh("dao-not-json", "echo '{not json' > $out", dao = True)

def dao_no_result():
    return _sh("dao-no-result", "echo '{\"version\": 1, \"result\": \"nope\", \"derivations\": {}}' > $out", dao = True)

def dao_outside():
    return _sh("dao-outside", "echo '{\"version\": 1, \"result\": \"x\", \"derivations\": {\"x\": {\"name\": \"x\", \"builder\": \"/bin/sh\", \"args\": [\"-c\", \"cat /etc/passwd > $out\"], \"sources\": \"/etc\"}}}' > $out", dao = True)
"#;

fn project() -> ServedProject {
    ServedProject::new("example.com/errors", |server| {
        server.file("/file.txt", "served\n");
        MODULE.replace("@URL@", &server.url(""))
    })
}

/// The stderr of a failed `bramble` run (exit code 1).
fn error(p: &ServedProject, args: &[&str]) -> String {
    let out: Output = p.bramble(args);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
    text
}

/// Compares `text` with the snapshot `name`, with what differs between runs replaced:
/// `[PROJECT]`, `[HOME]`, `[HASH]`, `[PORT]`, `[TIME]`.
fn check(p: &ServedProject, name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&escape(p.dir.path().to_str().unwrap()), "[PROJECT]");
    settings.add_filter(&escape(p.home().to_str().unwrap()), "[HOME]");
    settings.add_filter(r"/tmp/bramble-test-[A-Za-z0-9]+", "[TMP]");
    settings.add_filter(r"127\.0\.0\.1:[0-9]+", "127.0.0.1:[PORT]");
    settings.add_filter(r"\b[0-9a-z]{32}\b", "[HASH]");
    settings.add_filter(r"\b[0-9]+(\.[0-9]+)?m?s\b", "[TIME]");
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// `text` as a regular expression matching itself.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if ".+*?()|[]{}^$\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[test]
fn build_errors() {
    let p = project();
    check(&p, "build_fails", &error(&p, &["build", "./:fails"]));
    check(
        &p,
        "build_no_output",
        &error(&p, &["build", "./:no_output"]),
    );
}

#[test]
fn fetch_errors() {
    let p = project();
    check(&p, "fetch_mismatch", &error(&p, &["build", "./:mismatch"]));
    check(&p, "fetch_missing", &error(&p, &["build", "./:missing"]));
    check(
        &p,
        "fetch_unconfigured_mirror",
        &error(&p, &["build", "./:unconfigured"]),
    );
    check(
        &p,
        "fetch_unpinned_locked",
        &error(&p, &["build", "--locked", "./:unpinned"]),
    );
}

#[test]
fn dao_errors() {
    let p = project();
    check(
        &p,
        "dao_not_json",
        &error(&p, &["build", "./:dao_not_json"]),
    );
    check(
        &p,
        "dao_no_result",
        &error(&p, &["build", "./:dao_no_result"]),
    );
    check(&p, "dao_outside", &error(&p, &["build", "./:dao_outside"]));
}

#[test]
fn store_errors() {
    let p = project();
    check(
        &p,
        "store_log_not_a_hash",
        &error(&p, &["log", "0123456789abcdfghijklmnpqrsvwxyz"]),
    );
    check(
        &p,
        "store_log_unknown",
        &error(&p, &["log", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]),
    );
    check(
        &p,
        "store_path_info_outside",
        &error(&p, &["store", "path-info", "/etc/passwd"]),
    );
    check(
        &p,
        "store_add_missing",
        &error(&p, &["store", "add", "does-not-exist"]),
    );
    std::fs::write(p.dir.path().join("garbage.nar"), "not an archive").unwrap();
    check(
        &p,
        "store_import_garbage",
        &error(&p, &["store", "import", "--name", "garbage", "garbage.nar"]),
    );
}

//! `bramble fetch` against a fixture HTTP server and a local git repository.

use std::path::Path;
use std::process::Output;

use crate::support::archive::targz;
use crate::support::{Bramble, git, http, sha256_hex, stderr};

/// A store and a directory to run `bramble fetch` in.
struct Env {
    bramble: Bramble,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let bramble = Bramble::new();
        let dir = bramble.tempdir();
        Env { bramble, dir }
    }

    fn bramble(&self, args: &[&str]) -> Output {
        self.bramble.run(self.dir.path(), args)
    }

    fn bramble_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.bramble
            .command(self.dir.path(), args)
            .envs(vars.iter().copied())
            .output()
            .unwrap()
    }

    fn store_entries(&self) -> usize {
        std::fs::read_dir(self.bramble.store_dir())
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// The served archive: an executable `pkg/bin/hi`.
fn package() -> Vec<u8> {
    targz(&[("pkg/bin/hi", 0o755, b"#!/bin/sh\necho hi\n")])
}

#[test]
fn fetch_prints_the_path_and_the_pin_and_checks_it() {
    let env = Env::new();
    let server = http::Server::start();
    server.file("/pkg.tar.gz", package());
    server.redirect("/latest.tar.gz", "/pkg.tar.gz");
    let url = server.url("/latest.tar.gz");
    let out = env.bramble(&["fetch", &url, "--unpack", "auto", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = Path::new(doc["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read(path.join("pkg/bin/hi")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    let hash = doc["hash"].as_str().unwrap().to_owned();
    assert_eq!(doc["downloaded"], true);
    // With the pin, the stored result is reused: no second download.
    let out = env.bramble(&[
        "fetch", &url, "--unpack", "tar.gz", "--hash", &hash, "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["downloaded"], false);
    assert_eq!(server.hits("/pkg.tar.gz"), 1);
    // The sha256 of the file pins it too.
    let sha = sha256_hex(&package());
    let out = env.bramble(&["fetch", &url, "--hash", &format!("sha256:{sha}")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("hash = \""), "{}", stderr(&out));
}

#[test]
fn a_mismatch_is_an_error_and_stores_nothing() {
    let env = Env::new();
    let server = http::Server::start();
    server.file("/f", "changed upstream\n");
    let url = server.url("/f");
    let wrong = "sha256:".to_owned() + &"0".repeat(64);
    let out = env.bramble(&["fetch", &url, "--hash", &wrong]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&url) && err.contains("expected") && err.contains("actual"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(env.store_entries(), 0);
}

#[test]
fn not_found_and_connection_refused_are_clear() {
    let env = Env::new();
    let server = http::Server::start();
    let url = server.url("/nope.tar.gz");
    let out = env.bramble(&["fetch", &url]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot download `{url}`: the server answered 404")),
        "{err}"
    );
    assert!(err.contains("hint: the file is not at that URL"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/x");
    let out = env.bramble_with(&["fetch", &url], &[("BRAMBLE_FETCH_RETRIES", "1")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot download `{url}`: cannot connect")),
        "{err}"
    );
    assert!(
        err.contains("hint: check that the host name is right"),
        "{err}"
    );
}

#[test]
fn git_needs_a_full_commit() {
    let env = Env::new();
    let tmp = env.bramble.tempdir();
    let repo = tmp.path().join("repo");
    let (_, rev) = git::make_repo(&repo);
    // The repository belongs to the user bramble runs as (git refuses others' repositories).
    env.bramble.give(&repo);
    let repo_s = repo.to_string_lossy().into_owned();
    let out = env.bramble(&["fetch", &repo_s, "--rev", "main"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("`main` is not a full commit hash"), "{err}");
    assert!(err.contains("git ls-remote"), "{err}");
    let out = env.bramble(&["fetch", &repo_s, "--rev", &rev[..12]]);
    assert_eq!(out.status.code(), Some(1));
    let out = env.bramble(&["fetch", &repo_s, "--rev", &rev]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(Path::new(&path).join("hello.txt")).unwrap(),
        "two\n"
    );
    assert!(!Path::new(&path).join(".git").exists());
}

/// A project in a temp dir with one `default.bramble`.
fn project(env: &Env, bramble: &str) -> tempfile::TempDir {
    let dir = env.bramble.tempdir();
    std::fs::write(
        dir.path().join("bramble.toml"),
        "[package]\nname = \"example.com/p\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("default.bramble"), bramble).unwrap();
    dir
}

fn eval(env: &Env, dir: &Path, reference: &str) -> Output {
    env.bramble.run(dir, &["eval", "--json", reference])
}

#[test]
fn starlark_fetch_functions_make_fetch_derivations() {
    let env = Env::new();
    let sha = "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744";
    let dir = project(
        &env,
        &format!(
            r#"
load("bramble/fetch", "fetch_url", "fetch_git")

def tarball():
    return fetch_url("https://example.invalid/dl/pkg-1.0.tar.gz?x=1", hash = "sha256:{sha}", unpack = True)

def git():
    return fetch_git("https://example.invalid/r.git", "{rev}")

def branch():
    return fetch_git("https://example.invalid/r.git", "main")

def bad_format():
    return fetch_url("https://example.invalid/a.rar", unpack = True)
"#,
            rev = "a".repeat(40)
        ),
    );
    let out = eval(&env, dir.path(), "./:tarball");
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let drv = doc["derivations"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(drv["builder"], "builtin:fetch_url");
    assert_eq!(drv["name"], "pkg-1.0.tar.gz");
    assert_eq!(drv["env"]["unpack"], "tar.gz");
    assert_eq!(drv["env"]["sha256"], sha);
    let out = eval(&env, dir.path(), "./:git");
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let drv = doc["derivations"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(drv["builder"], "builtin:fetch_git");
    assert_eq!(drv["name"], "r");
    let out = eval(&env, dir.path(), "./:branch");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`main` is not a full commit hash"),
        "{}",
        stderr(&out)
    );
    let out = eval(&env, dir.path(), "./:bad_format");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot tell the archive format"),
        "{}",
        stderr(&out)
    );
}

//! The store as an ordinary user: every store operation through the real `bramble` binary
//! run by the runner (as uid 65534 when the tests run as root, as themselves otherwise), with
//! the store in that user's default `BRAMBLE_HOME` (`$HOME/.local/share/bramble`, owned by the
//! user).
//!
//! Root bypasses the permission checks these cases are about (moving a read-only directory
//! to another parent, removing read-only trees), so none of them can be shown as root.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::support::archive::targz;
use crate::support::project::BUSYBOX;
use crate::support::runner::{UNPRIVILEGED, chmod, is_root};
use crate::support::{Bramble, http, stderr, stdout, with_stdin};

/// The user's store at its default place and a project directory the user owns, holding
/// the static busybox.
struct Env {
    bramble: Bramble,
    project: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let bramble = Bramble::with_default_home();
        let project = bramble.tempdir();
        let env = Env { bramble, project };
        let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
            panic!("these tests need a static busybox at `{BUSYBOX}` (busybox-static): {e}")
        });
        chmod(&env.write("busybox", &busybox), 0o755);
        env
    }

    fn project(&self) -> PathBuf {
        self.project.path().to_owned()
    }

    /// The default `BRAMBLE_HOME` of the user.
    fn home(&self) -> PathBuf {
        self.bramble.home()
    }

    fn store_dir(&self) -> PathBuf {
        self.bramble.store_dir()
    }

    /// Write a file of the project (owned by the user).
    fn write(&self, rel: &str, contents: &[u8]) -> PathBuf {
        let path = self.project().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        self.bramble.give(&self.project());
        path
    }

    /// The `bramble` binary as the user, in the project directory, with the default home.
    fn command(&self, args: &[&str]) -> Command {
        self.bramble.command(&self.project(), args)
    }

    fn bramble(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// [`Env::bramble`], which must succeed and leave nothing behind in `tmp/`.
    fn ok(&self, args: &[&str]) -> Output {
        let out = self.bramble(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        self.assert_clean(&out);
        out
    }

    /// Nothing left in the store's `tmp/`, and no warning about it.
    fn assert_clean(&self, out: &Output) {
        assert!(
            !stderr(out).contains("cannot remove"),
            "warned about a removal: {}",
            stderr(out)
        );
        let left: Vec<_> = std::fs::read_dir(self.home().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in tmp/: {left:?}\n{}", stderr(out));
    }
}

/// A project whose builds leave read-only directories in their build directories and
/// outputs (as unpacked toolchains and Go module caches do).
const MODULE: &str = r#"
load("bramble/fetch", "fetch_url")

def busybox():
    return derivation(
        "busybox",
        "busybox",
        args = ["sh", "-c", "mkdir -p $out/bin $out/share/ro/deep && cp busybox $out/bin/busybox && ln -s busybox $out/bin/sh && chmod 555 $out/share/ro/deep $out/share/ro"],
        sources = files(["busybox"]),
    )

def _sh(name, script, **kwargs):
    return derivation(name, busybox().out + "/bin/busybox", args = ["sh", "-c", script, name], **kwargs)

def greeting():
    return _sh("greeting", "mkdir -p scratch/a/b && echo x > scratch/a/b/f && chmod 500 scratch/a/b scratch/a scratch && echo hello > $out")

def tool():
    bb = busybox()
    return _sh("tool", "mkdir -p $out/bin; printf '#!%s/bin/sh\\necho tool says \"$*\"\\n' > $out/bin/tool; chmod +x $out/bin/tool" % bb.out)

def app():
    return run(tool(), "bin/tool", args = ["a"])

def checker():
    return _sh("checker", "mkdir -p t/u && chmod 500 t/u t; echo checking $1; [ \"$1\" = good ]")

def tests():
    test(checker(), args = ["good"])

GEN = r"""
cat > $out <<EOF
{"version": 1, "result": "x", "derivations": {
  "y": {"name": "y", "builder": "$BB", "args": ["sh", "-c", "mkdir -p \$out/r && echo y > \$out/r/y && chmod 555 \$out/r"]},
  "x": {"name": "x", "builder": "$BB", "args": ["sh", "-c", "cat {{ y:out }}/r/y > \$out; echo x >> \$out"]}
}}
EOF
"""

def generated():
    return _sh("gen", GEN, env = {"BB": busybox().out + "/bin/busybox"}, dao = True)

def data():
    return fetch_url("@DATA@", unpack = "tar.gz", name = "data")

def use_data():
    return _sh("use-data", "cat " + data().out + "/data/ro/msg > $out")
"#;

/// A tarball with a read-only directory `data/ro` holding `msg`.
fn targz_with_read_only_dir() -> Vec<u8> {
    targz(&[
        ("data/ro/", 0o555, b""),
        ("data/ro/msg", 0o444, b"fetched as an ordinary user\n"),
    ])
}

fn project(env: &Env, server: &http::Server) {
    env.write(
        "bramble.toml",
        b"[package]\nname = \"example.com/rootless\"\n",
    );
    env.write(
        "default.bramble",
        MODULE
            .replace("@DATA@", &server.url("/data.tar.gz"))
            .as_bytes(),
    );
}

/// The reproduction of the issue: `store add` of a directory with the default home failed
/// with "cannot move into the store … Permission denied". Also a file, a second add of the
/// same content, export and import, `verify --repair` and `gc`.
#[test]
fn store_add_import_verify_and_gc_as_an_ordinary_user() {
    let env = Env::new();
    let src = env.project().join("src");
    env.write("src/bin/tool", b"#!/bin/sh\necho tool\n");
    chmod(&src.join("bin/tool"), 0o755);
    env.write("src/ro/deep/file", b"read-only\n");
    chmod(&src.join("ro/deep"), 0o555);
    chmod(&src.join("ro"), 0o555);
    std::os::unix::fs::symlink("bin/tool", src.join("link")).unwrap();
    env.bramble.give(&src);

    let out = env.ok(&["store", "add", "src", "--name", "source"]);
    let dir_path = PathBuf::from(stdout(&out).trim());
    assert!(dir_path.starts_with(env.store_dir()), "{dir_path:?}");
    let meta = std::fs::symlink_metadata(&dir_path).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o555, "the object is read-only");
    assert_eq!(
        meta.uid(),
        if is_root() { UNPRIVILEGED } else { meta.uid() }
    );
    assert_eq!(
        std::fs::read_to_string(dir_path.join("ro/deep/file")).unwrap(),
        "read-only\n"
    );
    // The same content again: the same path, stored once.
    let again = env.ok(&["store", "add", "src", "--name", "source"]);
    assert_eq!(PathBuf::from(stdout(&again).trim()), dir_path);

    let out = env.ok(&["store", "add", "src/bin/tool", "--name", "tool"]);
    let file_path = PathBuf::from(stdout(&out).trim());
    assert_eq!(
        std::fs::symlink_metadata(&file_path).unwrap().mode() & 0o7777,
        0o555
    );

    // Export, then import under another name.
    let export = env.bramble(&["store", "export", dir_path.to_str().unwrap()]);
    assert!(export.status.success(), "{}", stderr(&export));
    let archive = env.write("source.archive", &export.stdout);
    let out = env.ok(&[
        "store",
        "import",
        archive.to_str().unwrap(),
        "--name",
        "imported",
    ]);
    let imported = PathBuf::from(stdout(&out).trim());
    assert!(imported.to_str().unwrap().ends_with("-imported"));
    assert_eq!(
        std::fs::symlink_metadata(&imported).unwrap().mode() & 0o7777,
        0o555
    );
    env.ok(&["store", "verify"]);

    // Break the imported object (the test may be root; the user could do the same with a
    // chmod): `verify --repair` removes it, read-only subdirectories and all.
    let deep = imported.join("ro/deep");
    let mode = std::fs::metadata(&deep).unwrap().mode();
    chmod(&deep, 0o755);
    std::fs::write(deep.join("file"), "changed\n").unwrap();
    chmod(&deep, mode & 0o7777);
    let out = env.bramble(&["store", "verify", "--repair"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("removed"), "{}", stdout(&out));
    assert!(!imported.exists());
    env.ok(&["store", "verify"]);

    // No roots: gc deletes both objects.
    let out = env.ok(&["gc"]);
    assert!(
        stderr(&out).contains("deleted 2 store paths"),
        "{}",
        stderr(&out)
    );
    assert!(!dir_path.exists() && !file_path.exists());
}

/// Builds whose outputs and build directories hold read-only directories, `run`, `test`,
/// `shell`, a DAO and a fetch with unpacking, all as the user, leaving nothing in `tmp/`.
#[test]
fn build_run_test_shell_dao_and_fetch_as_an_ordinary_user() {
    let env = Env::new();
    let server = http::Server::start();
    server.file("/data.tar.gz", targz_with_read_only_dir());
    project(&env, &server);

    let out = env.ok(&["build", "./:greeting"]);
    let path = PathBuf::from(stdout(&out).trim());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
    let busybox = std::fs::read_dir(env.store_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with("-busybox"))
        .expect("busybox in the store");
    let ro = busybox.join("share/ro");
    assert_eq!(std::fs::metadata(&ro).unwrap().mode() & 0o7777, 0o555);
    assert_eq!(std::fs::metadata(&busybox).unwrap().mode() & 0o7777, 0o555);

    let out = env.ok(&["run", "./:app"]);
    assert_eq!(stdout(&out), "tool says a\n");

    let out = env.ok(&["test", "./:tests"]);
    assert!(stderr(&out).contains("1 passed"), "{}", stderr(&out));

    let out = with_stdin(
        env.command(&["shell", "./:tool"]),
        b"mkdir -p q/r && chmod 500 q/r q; pwd; exit 0\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "/build\n");
    env.assert_clean(&out);

    let out = env.ok(&["build", "./:generated"]);
    assert_eq!(
        std::fs::read_to_string(stdout(&out).trim()).unwrap(),
        "y\nx\n"
    );

    let out = env.ok(&["build", "./:use_data"]);
    assert_eq!(
        std::fs::read_to_string(stdout(&out).trim()).unwrap(),
        "fetched as an ordinary user\n"
    );

    env.ok(&["store", "verify"]);
    // The result link keeps `use-data` (and only what it refers to); the rest goes.
    env.ok(&["gc"]);
    env.ok(&["store", "verify"]);
}

//! The store as an ordinary user: every store operation through the real `bramble` binary
//! run as uid 65534 (through `setpriv` when the tests run as root, as themselves otherwise),
//! with the binaries and fixtures in a world-readable temp dir and the store in that user's
//! default `BRAMBLE_HOME` (`$HOME/.local/share/bramble`, owned by the user).
//!
//! Root bypasses the permission checks these cases are about (moving a read-only directory
//! to another parent, removing read-only trees), so none of them can be shown as root.

#[path = "support/http.rs"]
mod http;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The unprivileged uid (and gid) bramble runs as when the tests run as root.
const USER: u32 = 65534;

/// Where `busybox-static` installs its binary.
const BUSYBOX: &str = "/bin/busybox";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Give `path` (not following symlinks) to [`USER`] when running as root.
fn give(path: &Path) {
    if is_root() {
        std::os::unix::fs::lchown(path, Some(USER), Some(USER)).unwrap();
    }
}

/// Give the tree at `path` to [`USER`] when running as root.
fn give_tree(path: &Path) {
    for entry in walkdir::WalkDir::new(path) {
        give(entry.unwrap().path());
    }
}

/// A world-readable temp dir holding the binaries, the user's home (with the store at its
/// default place) and a project directory the user owns.
struct Env {
    root: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        assert!(
            Path::new(BUSYBOX).exists(),
            "these tests need a static busybox at `{BUSYBOX}`: apt-get install -y busybox-static"
        );
        let root = tempfile::Builder::new()
            .prefix("bramble-rootless-")
            .tempdir_in("/tmp")
            .unwrap();
        chmod(root.path(), 0o755);
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        chmod(&bin, 0o755);
        let bramble = PathBuf::from(env!("CARGO_BIN_EXE_bramble"));
        let helper = std::env::var_os("BRAMBLE_SANDBOX")
            .map_or_else(|| bramble.with_file_name("bramble-sandbox"), PathBuf::from);
        assert!(
            helper.exists(),
            "the sandbox helper `{}` is missing: `cargo build -p bramble-sandbox`",
            helper.display()
        );
        for (from, name) in [(&bramble, "bramble"), (&helper, "bramble-sandbox")] {
            let to = bin.join(name);
            // A hard link when the temp dir is on the same file system, else a copy.
            if std::fs::hard_link(from, &to).is_err() {
                std::fs::copy(from, &to).unwrap();
            }
            chmod(&to, 0o755);
        }
        for dir in ["user", "project"] {
            let d = root.path().join(dir);
            std::fs::create_dir(&d).unwrap();
            chmod(&d, 0o755);
            give(&d);
        }
        let env = Env { root };
        env.write("busybox", &std::fs::read(BUSYBOX).unwrap());
        chmod(&env.project().join("busybox"), 0o755);
        env
    }

    fn project(&self) -> PathBuf {
        self.root.path().join("project")
    }

    /// The user's `$HOME`.
    fn user_home(&self) -> PathBuf {
        self.root.path().join("user")
    }

    /// The default `BRAMBLE_HOME` of the user.
    fn home(&self) -> PathBuf {
        self.user_home().join(".local/share/bramble")
    }

    fn store_dir(&self) -> PathBuf {
        self.home().join("store")
    }

    /// Write a file of the project (owned by the user).
    fn write(&self, rel: &str, contents: &[u8]) -> PathBuf {
        let path = self.project().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        give_tree(&self.project());
        path
    }

    /// The `bramble` binary as the user, in the project directory, with the default home.
    fn command(&self, args: &[&str]) -> Command {
        let bramble = self.root.path().join("bin/bramble");
        let mut cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={USER}"))
                .arg(format!("--regid={USER}"))
                .arg("--clear-groups")
                .arg(&bramble);
            c
        } else {
            Command::new(&bramble)
        };
        cmd.args(args)
            .current_dir(self.project())
            .env("HOME", self.user_home())
            .env_remove("BRAMBLE_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("BRAMBLE_SANDBOX")
            .env_remove("CI")
            .env_remove("BRAMBLE_LOG")
            .env_remove("RUST_LOG")
            .env("BRAMBLE_FETCH_RETRIES", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
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

fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o555);
    dir.set_size(0);
    dir.set_cksum();
    b.append_data(&mut dir, "data/ro/", std::io::empty())
        .unwrap();
    let msg = b"fetched as an ordinary user\n";
    let mut file = tar::Header::new_gnu();
    file.set_size(msg.len() as u64);
    file.set_mode(0o444);
    file.set_cksum();
    b.append_data(&mut file, "data/ro/msg", &msg[..]).unwrap();
    b.into_inner().unwrap().finish().unwrap()
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
    give_tree(&src);

    let out = env.ok(&["store", "add", "src", "--name", "source"]);
    let dir_path = PathBuf::from(stdout(&out).trim());
    assert!(dir_path.starts_with(env.store_dir()), "{dir_path:?}");
    let meta = std::fs::symlink_metadata(&dir_path).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o555, "the object is read-only");
    assert_eq!(meta.uid(), if is_root() { USER } else { meta.uid() });
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

//! The store as an ordinary user: every store operation through the real `bramble` binary
//! run by the runner (as uid 65534 when the tests run as root, as themselves otherwise), with
//! the store in that user's default `BRAMBLE_HOME` (`$HOME/.local/share/bramble`, owned by the
//! user).
//!
//! Root bypasses the permission checks these cases are about (moving a read-only directory
//! to another parent, removing read-only trees), so none of them can be shown as root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::archive::targz;
use crate::support::project::BUSYBOX;
use crate::support::runner::{UNPRIVILEGED, chmod, is_root};
use crate::support::{Bramble, http, stderr, stdout, with_stdin};

/// The user's store at its default place and a project directory the user owns, holding
/// the static busybox.
struct Env {
    bramble: Bramble,
    project: tempfile::TempDir,
    /// A scratch directory for other homes.
    root: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let bramble = Bramble::with_default_home();
        let project = bramble.tempdir();
        let root = bramble.tempdir();
        let env = Env {
            bramble,
            project,
            root,
        };
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

    /// A file of the user's outside the store (a symlink target for hostile builders).
    fn outside(&self) -> PathBuf {
        self.root.path().join("outside")
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
        self.command_with_home(None, args)
    }

    /// [`Env::command`] with `BRAMBLE_HOME` set to `home` if given.
    fn command_with_home(&self, home: Option<&Path>, args: &[&str]) -> Command {
        let mut cmd = self.bramble.command(&self.project(), args);
        if let Some(home) = home {
            cmd.env("BRAMBLE_HOME", home);
        }
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

def slow():
    return _sh("slow", "touch started; while [ ! -e go ]; do sleep 0.1; done; echo slow > $out")

def after():
    return _sh("after", "cat late.txt $SLOW > $out", env = {"SLOW": slow()}, sources = files(["late.txt"]))

def failing():
    script = (
        "mkdir -p open/deeper sticky ro; echo x > open/deeper/f; chmod 777 open open/deeper; " +
        "chmod 666 open/deeper/f; chmod 1777 sticky; ln -s $OUTSIDE open/link; chmod 555 ro; " +
        "chmod 777 .; exit 1"
    )
    return _sh("failing", script, env = {"OUTSIDE": "@OUTSIDE@"})

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
            .replace("@OUTSIDE@", env.outside().to_str().unwrap())
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
    chmod(&deep.join("file"), 0o644);
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

/// The store path printed by a successful `bramble build`.
fn built(out: &Output) -> PathBuf {
    PathBuf::from(stdout(out).trim())
}

/// An emptied `db.sqlite` while objects exist: `gc` refuses (nothing deleted) and says how
/// to rebuild; `store repair --rebuild-db` re-registers every valid object with its
/// references and moves what is not a valid object aside; then `gc` and `verify` work.
#[test]
fn a_lost_database_is_refused_by_gc_and_rebuilt_from_the_objects() {
    let env = Env::new();
    let server = http::Server::start();
    project(&env, &server);
    // `tool` refers to busybox (its script's `#!` line).
    let tool = built(&env.ok(&["build", "./:tool"]));
    let objects: Vec<PathBuf> = std::fs::read_dir(env.store_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let busybox = objects
        .iter()
        .find(|p| p.to_str().unwrap().ends_with("-busybox"))
        .unwrap()
        .clone();
    let info = |p: &Path| -> serde_json::Value {
        let out = env.ok(&["store", "path-info", "--json", p.to_str().unwrap()]);
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let before = info(&tool);

    // Empty the database, as a truncation or a bad copy would.
    let db = env.home().join("db.sqlite");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(env.home().join(format!("db.sqlite{suffix}")));
    }
    std::fs::write(&db, b"").unwrap();
    let out = env.bramble(&["gc"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("registers no paths"), "{err}");
    assert!(err.contains("bramble store repair --rebuild-db"), "{err}");
    for p in &objects {
        assert!(p.exists(), "gc deleted `{}`", p.display());
    }

    // Something that is no valid object: a stray file and a directory named like an
    // object whose contents do not give its name.
    std::fs::write(env.store_dir().join("stray"), "x").unwrap();
    let fake = env
        .store_dir()
        .join("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-fake");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(fake.join("f"), "not what the name says").unwrap();
    chmod(&fake, 0o555);
    env.bramble.give(&env.store_dir());

    let out = env.ok(&["store", "repair", "--rebuild-db"]);
    let text = stdout(&out);
    for p in &objects {
        assert!(
            text.contains(&format!("registered {}", p.display())),
            "{text}"
        );
    }
    assert!(text.contains("moved aside"), "{text}");
    assert!(!fake.exists() && !env.store_dir().join("stray").exists());
    let aside = env.home().join("lost+found");
    assert!(aside.join("stray").exists());
    assert_eq!(
        std::fs::read_to_string(aside.join(fake.file_name().unwrap()).join("f")).unwrap(),
        "not what the name says"
    );
    assert!(
        stderr(&out).contains("cannot be recovered"),
        "{}",
        stderr(&out)
    );
    let after = info(&tool);
    assert_eq!(after["archive_hash"], before["archive_hash"]);
    assert_eq!(after["references"], before["references"]);
    assert!(
        after["references"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| busybox.to_str().unwrap().ends_with(r.as_str().unwrap())),
        "{after}"
    );
    env.ok(&["store", "verify"]);
    // The `result` link keeps `tool` and, through its reference, busybox.
    env.ok(&["gc"]);
    assert!(tool.exists() && busybox.exists());
    env.ok(&["store", "verify"]);
}

/// Four `bramble build` processes on one project and store, several rounds: every process
/// succeeds (making the same `result` link and gc root at once is no error), each
/// derivation is built once, and the link points at the output.
#[test]
fn concurrent_builds_all_make_their_result_links() {
    let env = Env::new();
    let server = http::Server::start();
    project(&env, &server);
    let mut built_tool = 0;
    let mut path = None;
    for round in 0..5 {
        let children: Vec<_> = (0..4)
            .map(|_| {
                env.command(&["build", "./:tool"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {:?}\n{}",
                out.status,
                stderr(&out)
            );
            built_tool += stderr(&out)
                .lines()
                .filter(|l| l.starts_with("built tool "))
                .count();
            let p = built(&out);
            assert_eq!(path.get_or_insert_with(|| p.clone()), &p);
        }
    }
    assert_eq!(built_tool, 1, "tool was built {built_tool} times");
    let link = std::fs::read_link(env.project().join("result")).unwrap();
    assert_eq!(Some(link), path);
    // Nothing but the link itself is left next to it.
    let names: Vec<String> = std::fs::read_dir(env.project())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("result"))
        .collect();
    assert_eq!(names, ["result"]);
    env.ok(&["gc"]);
    assert!(path.unwrap().exists());
}

/// The build directory (on the host) of the running build whose builder wrote `marker`.
fn wait_for_build_dir(env: &Env, marker: &str) -> PathBuf {
    for _ in 0..1200 {
        if let Ok(tmps) = std::fs::read_dir(env.home().join("tmp")) {
            for tmp in tmps.flatten() {
                for dir in std::fs::read_dir(tmp.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if dir.path().join(marker).exists() {
                        return dir.path();
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no build wrote `{marker}` within a minute");
}

/// `gc` beside a running build keeps what the build process uses: the sources it added
/// during evaluation for a derivation that has not started yet (its temporary roots),
/// besides the inputs of the running build. The build then completes; once its process
/// ended, its temporary roots are gone and `gc` may collect.
#[test]
fn gc_beside_a_build_keeps_what_the_build_uses() {
    let env = Env::new();
    let server = http::Server::start();
    project(&env, &server);
    env.write("late.txt", b"late\n");
    let build = env
        .command(&["build", "./:after"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = wait_for_build_dir(&env, "started");
    // `slow` is running; `after` (whose sources were added during evaluation) waits for it.
    let gc = env.bramble(&["gc"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    let deleted = stdout(&gc);
    assert!(
        !deleted.contains("-source"),
        "gc deleted sources: {deleted}"
    );
    std::fs::write(dir.join("go"), "").unwrap();
    let out = build.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(built(&out)).unwrap(),
        "late\nslow\n"
    );
    env.ok(&["store", "verify"]);
    // The process ended: nothing of it is kept but what the `result` link holds.
    let out = env.ok(&["gc"]);
    assert!(stdout(&out).contains("-source"), "{}", stdout(&out));
    let left: Vec<_> = std::fs::read_dir(env.home().join("temproots"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// A trusted home is private (the database 0600, its directories 0700 but `store/`); a
/// home, or a directory in it, owned by another user is refused with a hint; a symlink
/// planted at `db.sqlite` is refused, never followed.
#[test]
fn an_untrusted_home_is_refused_and_a_trusted_one_is_private() {
    let env = Env::new();
    env.ok(&["store", "add", "busybox", "--name", "bb"]);
    let home = env.home();
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("db.sqlite")), 0o600);
    if home.join("db.sqlite-wal").exists() {
        assert_eq!(mode(&home.join("db.sqlite-wal")), 0o600);
    }
    for dir in ["tmp", "locks", "gcroots", "temproots"] {
        assert_eq!(mode(&home.join(dir)), 0o700, "{dir}");
    }
    assert_eq!(mode(&home.join("store")), 0o755);
    // A database left readable by an older bramble is made private.
    chmod(&home.join("db.sqlite"), 0o644);
    env.ok(&["store", "verify"]);
    assert_eq!(mode(&home.join("db.sqlite")), 0o600);

    // A planted `db.sqlite` symlink in a home of the user's own.
    let planted = env.root.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    let victim = env.root.path().join("victim");
    std::os::unix::fs::symlink(&victim, planted.join("db.sqlite")).unwrap();
    env.bramble.give(&planted);
    let out = env
        .command_with_home(Some(&planted), &["store", "add", "busybox", "--name", "bb"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("db.sqlite`") && err.contains("it is a symlink"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(!victim.exists(), "the symlink was followed");

    if !is_root() {
        eprintln!("skipping the foreign-owner cases: only root can make a home of another uid");
        return;
    }
    // A world-writable home owned by root: only bramble's own check can refuse it.
    let foreign = env.root.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    chmod(&foreign, 0o777);
    let out = env
        .command_with_home(Some(&foreign), &["store", "add", "busybox", "--name", "bb"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("belongs to uid 0"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 0);

    // The user's home, with a `store/` of another owner in it.
    let mixed = env.root.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    env.bramble.give(&mixed);
    std::fs::create_dir(mixed.join("store")).unwrap();
    chmod(&mixed.join("store"), 0o777);
    let out = env
        .command_with_home(Some(&mixed), &["store", "add", "busybox", "--name", "bb"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("store`") && err.contains("belongs to uid 0"),
        "{err}"
    );
    assert!(!mixed.join("db.sqlite").exists());
}

/// `--keep-failed` keeps a private build directory: its top 0700 whatever the builder made
/// of `/build`, no group or other write and no sticky bit below, and the symlink the
/// builder planted left alone (its target unchanged).
#[test]
fn a_kept_build_directory_is_private_and_sanitised() {
    let env = Env::new();
    let server = http::Server::start();
    project(&env, &server);
    std::fs::write(env.outside(), "mine\n").unwrap();
    chmod(&env.outside(), 0o646);
    env.bramble.give(&env.outside());
    let out = env.bramble(&["build", "./:failing", "--keep-failed"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("note: the build directory was kept at `"))
        .and_then(|l| l.strip_suffix('`'))
        .unwrap_or_else(|| panic!("no kept directory named: {err}"));
    let kept = PathBuf::from(kept);
    assert_eq!(mode(&kept), 0o700, "{}", kept.display());
    if is_root() {
        assert_eq!(std::fs::metadata(&kept).unwrap().uid(), UNPRIVILEGED);
    }
    let mut seen = 0;
    for entry in walkdir::WalkDir::new(&kept).min_depth(1) {
        let entry = entry.unwrap();
        if entry.path_is_symlink() {
            continue;
        }
        seen += 1;
        let m = mode(entry.path());
        assert_eq!(m & 0o7022, 0, "`{}` has mode {m:o}", entry.path().display());
    }
    assert!(seen >= 5, "{seen}");
    assert!(kept.join("open/link").is_symlink());
    assert_eq!(mode(&env.outside()), 0o646, "the symlink was followed");
}

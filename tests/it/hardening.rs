//! Hostile input reaching `bramble` from the files it reads and the builds it runs: `.bramble`
//! files that exhaust the evaluator, a hostile `bramble.lock`, builder output printed to a
//! terminal, and a program run by `bramble run` writing to the project.
//!
//! Every test runs the real binary through the runner ([`crate::support::runner`]): as an
//! ordinary user with a store and projects that user owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::Bramble;

/// One test's world: a store and projects owned by the user bramble runs as.
struct World {
    bramble: Bramble,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let bramble = Bramble::new();
        let dir = bramble.tempdir();
        World { bramble, dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Create `rel` (and parents below the world), owned by the user bramble runs as.
    fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(&path).unwrap();
        self.bramble.give(self.dir.path());
        path
    }

    /// Write `rel`, owned by the user bramble runs as.
    fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = Path::new(rel)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            self.mkdir(parent.to_str().unwrap());
        }
        std::fs::write(&path, content).unwrap();
        self.bramble.give(&path);
        path
    }

    /// A project `name` with `bramble.toml` and the given files.
    fn project(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.mkdir(name);
        self.write(
            &format!("{name}/bramble.toml"),
            format!("[package]\nname = \"example.com/{name}\"\n"),
        );
        for (file, content) in files {
            self.write(&format!("{name}/{file}"), content);
        }
        dir
    }

    /// `bramble args…` in `cwd`, through the runner.
    fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        self.bramble.command(cwd, args)
    }

    fn bramble(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd, args).output().unwrap()
    }

    /// Hand `path` to the user bramble runs as.
    fn give(&self, path: &Path) {
        self.bramble.give(path);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A clean user error: exit code 1, no panic, no abort, no "bug" note.
fn assert_user_error(out: &Output) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("overflow"), "{err}");
    assert!(!err.contains("this is a bug"), "{err}");
}

// --- Bad input to the evaluator -------------------------------------------------------------

/// A list too large for starlark-rust's heap made the evaluator thread panic (exit 70, a
/// "bug"); it is a user error naming the statement. (`list(range(n))` fails before it
/// allocates; `[0] * 1000000000` fails the same way after 8 GB, too much for a test.)
#[test]
fn a_huge_list_is_an_error_at_its_statement() {
    let w = World::new();
    let p = w.project(
        "huge",
        &[(
            "default.bramble",
            "def main(n = 2000000000):\n    small = [0] * 10\n    big = list(range(n))\n    return None\n",
        )],
    );
    let out = w.bramble(&p, &["build", "./:main"]);
    assert_user_error(&out);
    assert!(
        stderr(&out).contains("default.bramble:3:5"),
        "{}",
        stderr(&out)
    );
}

/// The same at the top level of a loaded module, and in a constant call starlark-rust folds
/// while compiling a function.
#[test]
fn a_huge_value_in_a_loaded_module_names_the_file_and_line() {
    let w = World::new();
    let p = w.project(
        "huge-load",
        &[
            (
                "default.bramble",
                "load(\"example.com/huge-load/lib\", \"f\")\ndef main():\n    return f()\n",
            ),
            (
                "lib.bramble",
                "X = 1\ndef f():\n    return list(range(2000000000))\n",
            ),
        ],
    );
    let out = w.bramble(&p, &["build", "./:main"]);
    assert_user_error(&out);
    assert!(stderr(&out).contains("lib.bramble:2:1"), "{}", stderr(&out));
}

/// `1+1+…` with a million terms overflowed the evaluation thread's stack (abort, exit 134).
#[test]
fn a_long_expression_is_an_error_not_a_stack_overflow() {
    let w = World::new();
    let sum = vec!["1"; 1_000_000].join("+");
    let p = w.project(
        "long",
        &[(
            "default.bramble",
            &format!("def main():\n    return {sum}\n"),
        )],
    );
    for args in [&["build", "./:main"][..], &["ls", "."]] {
        let out = w.bramble(&p, args);
        assert_user_error(&out);
        let err = stderr(&out);
        assert!(err.contains("default.bramble:2:"), "{err}");
        assert!(err.contains("nested more than"), "{err}");
    }
}

/// Deeply nested brackets, likewise.
#[test]
fn deeply_nested_brackets_are_an_error_not_a_stack_overflow() {
    let w = World::new();
    let n = 1_000_000;
    let nested = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let p = w.project(
        "nested",
        &[(
            "default.bramble",
            &format!("def main():\n    x = 1\n    return {nested}\n"),
        )],
    );
    let out = w.bramble(&p, &["build", "./:main"]);
    assert_user_error(&out);
    let err = stderr(&out);
    assert!(err.contains("default.bramble:3:"), "{err}");
    assert!(err.contains("nested more than"), "{err}");
}

/// Ordinary nesting and long flat lists stay fine.
#[test]
fn a_long_flat_list_and_ordinary_nesting_evaluate() {
    let w = World::new();
    let items = (0..100_000)
        .map(|i| format!("\"a{i}\" + \"b\""))
        .collect::<Vec<_>>()
        .join(", ");
    let p = w.project(
        "flat",
        &[(
            "default.bramble",
            &format!(
                "X = [{items}]\ndef main():\n    if len(X) == 100000:\n        return None\n    fail(\"wrong\")\n"
            ),
        )],
    );
    let out = w.bramble(&p, &["build", "./:main"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

// --- bramble.lock and bramble.toml ----------------------------------------------------------

/// Run `cmd`, killing it after `secs` seconds (then `None`: it hung).
fn output_within(mut cmd: Command, secs: u64) -> Option<Output> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(out) => Some(out.unwrap()),
        Err(_) => {
            // `setpriv` execs bramble: the pid is bramble's.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            None
        }
    }
}

const NOTHING: &str = "def main():\n    return None\n";

/// A lock pinning the same URL twice, with different hashes: the last one won silently.
#[test]
fn a_lock_pinning_a_fetch_twice_is_refused_with_both_lines() {
    let w = World::new();
    let p = w.project("dup", &[("default.bramble", NOTHING)]);
    let (a, b) = ("a".repeat(32), "b".repeat(32));
    w.write(
        "dup/bramble.lock",
        format!(
            "version = 1\n\n[[url]]\nurl = \"http://127.0.0.1:1/x.tar\"\nhash = \"{a}\"\n\n[[url]]\nurl = \"http://127.0.0.1:1/x.tar\"\nhash = \"{b}\"\n"
        ),
    );
    let out = w.bramble(&p, &["build", "./:main"]);
    assert_user_error(&out);
    let err = stderr(&out);
    assert!(
        err.contains("pins `http://127.0.0.1:1/x.tar` twice: on line 3 and on line 7"),
        "{err}"
    );
}

/// A fifo named `bramble.lock` (or `bramble.toml`) hung bramble forever.
#[test]
fn a_fifo_lock_or_manifest_is_refused_at_once() {
    let w = World::new();
    let p = w.project("fifo", &[("default.bramble", NOTHING)]);
    nix::unistd::mkfifo(
        &p.join("bramble.lock"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    w.give(&p.join("bramble.lock"));
    let out = output_within(w.command(&p, &["build", "./:main"]), 30)
        .expect("bramble hung on a fifo `bramble.lock`");
    assert_user_error(&out);
    assert!(
        stderr(&out).contains("bramble.lock`: it is a fifo"),
        "{}",
        stderr(&out)
    );

    let q = w.mkdir("fifo-manifest");
    w.write("fifo-manifest/default.bramble", NOTHING);
    nix::unistd::mkfifo(
        &q.join("bramble.toml"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    w.give(&q.join("bramble.toml"));
    let out = output_within(w.command(&q, &["build", "./:main"]), 30)
        .expect("bramble hung on a fifo `bramble.toml`");
    assert_user_error(&out);
    assert!(
        stderr(&out).contains("bramble.toml`: it is a fifo"),
        "{}",
        stderr(&out)
    );
}

/// A symlinked `bramble.lock` or `bramble.toml` was followed (anywhere on the machine).
#[test]
fn a_symlinked_lock_or_manifest_is_refused() {
    let w = World::new();
    let p = w.project("link", &[("default.bramble", NOTHING)]);
    let elsewhere = w.write("elsewhere.lock", "version = 1\n");
    std::os::unix::fs::symlink(&elsewhere, p.join("bramble.lock")).unwrap();
    w.give(&p.join("bramble.lock"));
    let out = w.bramble(&p, &["build", "./:main"]);
    assert_user_error(&out);
    assert!(
        stderr(&out).contains("bramble.lock`: it is a symbolic link"),
        "{}",
        stderr(&out)
    );

    let q = w.mkdir("link-manifest");
    w.write("link-manifest/default.bramble", NOTHING);
    std::os::unix::fs::symlink(p.join("bramble.toml"), q.join("bramble.toml")).unwrap();
    w.give(&q.join("bramble.toml"));
    let out = w.bramble(&q, &["build", "./:main"]);
    assert_user_error(&out);
    assert!(
        stderr(&out).contains("bramble.toml`: it is a symbolic link"),
        "{}",
        stderr(&out)
    );
}

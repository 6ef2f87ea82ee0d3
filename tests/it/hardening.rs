//! Hostile input reaching `bramble` from the files it reads and the builds it runs: `.bramble`
//! files that exhaust the evaluator, a hostile `bramble.lock`, builder output printed to a
//! terminal, and a program run by `bramble run` writing to the project.
//!
//! Every test runs the real binary through the runner ([`crate::support::runner`]): as an
//! ordinary user with a store and projects that user owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::project::BUSYBOX;
use crate::support::{Bramble, http};

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

// --- Builder output on the terminal ---------------------------------------------------------

const BUSYBOX_MODULE: &str = r#"
def busybox():
    return derivation(
        "busybox",
        "busybox",
        args = ["sh", "-c", "mkdir -p $out/bin && cp busybox $out/bin/busybox && ln -s busybox $out/bin/sh"],
        sources = files(["busybox"]),
    )

def _sh(name, script, **kwargs):
    return derivation(name, busybox().out + "/bin/busybox", args = ["sh", "-c", script], **kwargs)
"#;

/// A project shipping busybox as a source, plus `module`.
fn busybox_project(w: &World, name: &str, module: &str) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).exists(),
        "these tests need a static busybox at `{BUSYBOX}`: apt-get install -y busybox-static"
    );
    let p = w.project(
        name,
        &[("default.bramble", &format!("{BUSYBOX_MODULE}{module}"))],
    );
    std::fs::copy(BUSYBOX, p.join("busybox")).unwrap();
    w.give(&p.join("busybox"));
    p
}

/// `cmd` on a pseudo-terminal (util-linux `script`): what the terminal received.
fn on_terminal(cmd: &Command) -> (bool, Vec<u8>) {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_str().unwrap()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script
        .args(["-qfec", &line, "/dev/null"])
        .current_dir(cmd.get_current_dir().unwrap())
        // The runner's policy: a cleared environment plus its variables.
        .env_clear()
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            script.env(key, value);
        }
    }
    let out = script.output().expect("run `script` (util-linux)");
    (out.status.success(), out.stdout)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The sequences the hostile builder prints: a clipboard write (OSC 52), a window title
/// (OSC 0) and a clear screen.
const HOSTILE: [&[u8]; 3] = [b"\x1b]52;c;aGFja2Vk\x07", b"\x1b]0;pwned\x07", b"\x1b[2J"];

/// The failure report printed the builder's escape sequences raw, to the terminal too.
#[test]
fn a_failing_builders_escape_sequences_never_reach_the_terminal() {
    let w = World::new();
    let p = busybox_project(
        &w,
        "escapes",
        r#"
def evil():
    return _sh("evil", "printf 'before\\033]52;c;aGFja2Vk\\007\\033]0;pwned\\007\\033[2Jafter\\n'; printf 'caf\\303\\251\\ttab\\n'; exit 1")
"#,
    );
    // Not a terminal: the report is sanitised as well (it ends up in logs read on one).
    let out = w.bramble(&p, &["build", "./:evil"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for seq in HOSTILE {
        assert!(!contains(&out.stderr, seq), "{err:?}");
    }
    assert!(
        err.contains(r"  > before\x1b]52;c;aGFja2Vk\x07\x1b]0;pwned\x07\x1b[2Jafter"),
        "{err:?}"
    );
    assert!(err.contains("  > café\ttab"), "{err:?}");

    // On a terminal.
    let (ok, screen) = on_terminal(&w.command(&p, &["build", "./:evil"]));
    let shown = String::from_utf8_lossy(&screen);
    assert!(!ok, "{shown}");
    for seq in HOSTILE {
        assert!(!contains(&screen, seq), "{shown:?}");
    }
    assert!(shown.contains(r"before\x1b]52;c;aGFja2Vk\x07"), "{shown:?}");

    // `bramble log`: raw bytes into a pipe, sanitised on a terminal unless `--raw`.
    let drv = err
        .lines()
        .find_map(|l| l.strip_prefix("hint: the whole log: `bramble log "))
        .and_then(|l| l.strip_suffix('`'))
        .unwrap_or_else(|| panic!("no log hint in {err}"))
        .to_owned();
    let piped = w.bramble(&p, &["log", &drv]);
    assert!(piped.status.success(), "{}", stderr(&piped));
    for seq in HOSTILE {
        assert!(contains(&piped.stdout, seq), "{:?}", piped.stdout);
    }
    let (ok, screen) = on_terminal(&w.command(&p, &["log", &drv]));
    let shown = String::from_utf8_lossy(&screen);
    assert!(ok, "{shown}");
    for seq in HOSTILE {
        assert!(!contains(&screen, seq), "{shown:?}");
    }
    assert!(shown.contains(r"before\x1b]52;c;aGFja2Vk\x07"), "{shown:?}");
    assert!(shown.contains("café\ttab"), "{shown:?}");
    let (ok, screen) = on_terminal(&w.command(&p, &["log", "--raw", &drv]));
    assert!(ok, "{}", String::from_utf8_lossy(&screen));
    assert!(contains(&screen, HOSTILE[0]));
}

// --- `bramble run` and the project directory ------------------------------------------------

const RUN_MODULE: &str = r#"
SCRIPT = """
echo x > planted && echo PROJECT-WRITTEN || echo project-refused
echo x > .git/hooks/post-checkout && echo HOOK-WRITTEN || echo hook-refused
echo x > out/vendored/.git/config && echo NESTED-WRITTEN || echo nested-refused
echo x > out/ok && echo out-written || echo out-refused
"""

def _write(**kwargs):
    return run(busybox(), "bin/busybox", args = ["sh", "-c", SCRIPT], **kwargs)

def default():
    return _write()

def declared():
    return _write(paths = ["out"])

def everything():
    return _write(paths = ["./"])

def everything_read_only():
    return _write(paths = ["./"], read_only_paths = ["./"])

def hooks():
    return _write(paths = [".git/hooks"])
"#;

/// The project was bound read-write: a program run by `bramble run` wrote `.git/hooks/*`,
/// which git later ran on the host. The project is read-only unless `paths` names a part,
/// and version-control metadata is never writable.
#[test]
fn bramble_run_writes_only_declared_paths_and_never_vcs_metadata() {
    let w = World::new();
    let p = busybox_project(&w, "runner", RUN_MODULE);
    w.mkdir("runner/.git/hooks");
    w.mkdir("runner/out/vendored/.git");
    let run = |reference: &str| {
        let out = w.bramble(&p, &["run", reference]);
        assert!(out.status.success(), "{reference}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let hook = p.join(".git/hooks/post-checkout");

    assert_eq!(
        run("./:default"),
        "project-refused\nhook-refused\nnested-refused\nout-refused\n"
    );
    assert_eq!(
        run("./:declared"),
        "project-refused\nhook-refused\nnested-refused\nout-written\n"
    );
    assert!(p.join("out/ok").exists());
    assert_eq!(
        run("./:everything"),
        "PROJECT-WRITTEN\nhook-refused\nnested-refused\nout-written\n"
    );
    assert!(p.join("planted").exists());
    std::fs::remove_file(p.join("planted")).unwrap();
    std::fs::remove_file(p.join("out/ok")).unwrap();
    assert_eq!(
        run("./:everything_read_only"),
        "project-refused\nhook-refused\nnested-refused\nout-refused\n"
    );
    assert!(!hook.exists() && !p.join("out/vendored/.git/config").exists());

    let out = w.bramble(&p, &["run", "./:hooks"]);
    assert_user_error(&out);
    assert!(
        stderr(&out).contains("`paths` entry `.git/hooks` of `run()` is version-control metadata"),
        "{}",
        stderr(&out)
    );
    assert!(!hook.exists());
}

/// `bramble.lock` was written through `.bramble.lock.tmp-<pid>`, opened with `O_TRUNC` and
/// following symlinks: one planted for bramble's pid overwrote its target. The lock is
/// now written through a fresh `O_EXCL` temporary file.
#[test]
fn the_lock_is_never_written_through_a_planted_temporary_file() {
    let server = http::Server::start();
    server.file("/f.txt", "fetched\n");
    let w = World::new();
    let p = w.project(
        "planted",
        &[(
            "default.bramble",
            &format!(
                "load(\"bramble/fetch\", \"fetch_url\")\ndef f():\n    return fetch_url(\"{}\", name = \"f\")\n",
                server.url("/f.txt")
            ),
        )],
    );
    let victim = w.write("victim", "precious\n");
    // Plant the name for every pid the next processes are likely to get.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for pid in last + 1..last + 400 {
        let planted = p.join(format!(".bramble.lock.tmp-{pid}"));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        w.give(&planted);
    }
    let out = w.bramble(&p, &["build", "./:f", "--no-out-link"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let lock = std::fs::read_to_string(p.join("bramble.lock")).unwrap();
    assert!(lock.contains(&server.url("/f.txt")), "{lock}");
    assert!(
        std::fs::symlink_metadata(p.join("bramble.lock"))
            .unwrap()
            .file_type()
            .is_file()
    );
}

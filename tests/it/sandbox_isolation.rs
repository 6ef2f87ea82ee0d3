//! The sandbox's isolation through the real `bramble` binary: who the builder is on the host
//! (an unprivileged id when bramble runs as root), what it can reach in `/proc` and `/dev`,
//! and how its failures are told from the sandbox's own.
//!
//! Tests about root run `bramble` as root ([`Bramble::as_root`]) and skip (saying why) when the
//! test process is not root; the others run it through the runner as an ordinary user.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use crate::support::runner::is_root;
use crate::support::{Bramble, Project, stderr, stdout};

/// Skips a root-only test, loudly, when the tests do not run as root.
macro_rules! root_only {
    () => {
        if !is_root() {
            eprintln!(
                "SKIPPED: this test is about bramble run as root, and the tests are not root"
            );
            return;
        }
    };
}

/// The path after `note: the build directory was kept at `.
fn kept_dir(err: &str) -> std::path::PathBuf {
    err.lines()
        .find_map(|l| l.strip_prefix("note: the build directory was kept at `"))
        .and_then(|l| l.strip_suffix('`'))
        .unwrap_or_else(|| panic!("{err}"))
        .into()
}

/// Every entry of `dir` (itself included, links not followed) with its owner.
fn owners(dir: &Path) -> Vec<(std::path::PathBuf, u32, u32)> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            (e.path().to_owned(), m.uid(), m.gid())
        })
        .collect()
}

/// Defines `busybox()` (copies the shipped static busybox) and `_sh(name, script)`.
const MODULE: &str = r#"
def busybox():
    return derivation(
        "busybox",
        "busybox",
        args = ["sh", "-c", "mkdir -p $out/bin && cp busybox $out/bin/busybox && ln -s busybox $out/bin/sh"],
        sources = files(["busybox"]),
    )

def _sh(name, script):
    return derivation(name, busybox().out + "/bin/busybox", args = ["sh", "-c", script])
"#;

/// A project of [`MODULE`] and `module` with a private store, run by the runner: as an
/// ordinary user, or as root for the tests about root.
struct Isolated {
    project: Project,
}

const PACKAGE: &str = "example.com/isolation";

impl Isolated {
    /// As an ordinary user (uid 65534 when the tests are root).
    fn new(module: &str) -> Isolated {
        Isolated {
            project: Project::new(PACKAGE, &format!("{MODULE}{module}")),
        }
    }

    /// As root (the caller checked that the tests are root).
    fn as_root(module: &str) -> Isolated {
        Isolated {
            project: Project::with(Bramble::as_root(), PACKAGE, &format!("{MODULE}{module}")),
        }
    }

    fn bramble(&self, args: &[&str]) -> Output {
        self.bramble_with(args, &[])
    }

    /// [`Isolated::bramble`] with more environment variables.
    fn bramble_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.project
            .command(args)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }
}

/// Bramble as root: the builder is an unprivileged host id of the documented range (its
/// uid 1000 inside maps there; root's own id only served the helper's setup), it can write
/// its build directory and outputs, and what bramble keeps belongs to root again: the
/// outputs in the store, a failed build's kept directory (links in it not followed).
#[test]
fn as_root_the_builder_is_an_unprivileged_host_id_and_root_owns_what_is_kept() {
    root_only!();
    // A host file owned by another uid, which a kept directory's link points at.
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::chown(victim.path(), Some(12345), Some(12345)).unwrap();
    let p = Isolated::as_root(&format!(
        r#"
def who():
    return _sh("who", "mkdir -p $out/sub && cat /proc/self/uid_map > $out/uid_map && cat /proc/self/gid_map > $out/gid_map && echo x > /build/scratch && echo y > $out/sub/file")

def broken():
    return _sh("broken", "mkdir -p /build/d/e && echo partial > /build/d/e/f && ln -s {victim} /build/link; exit 1")
"#,
        victim = victim.path().display()
    ));
    let out = p.bramble(&["build", "./:who", "--no-out-link"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = std::path::PathBuf::from(stdout(&out).trim());
    for map in ["uid_map", "gid_map"] {
        let text = std::fs::read_to_string(path.join(map)).unwrap();
        let inside = if map == "uid_map" { "1000" } else { "100" };
        let host: u32 = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f[0] == inside)
            .map(|f| f[1].parse().unwrap())
            .unwrap_or_else(|| panic!("{map}: {text}"));
        let range = bramble_sandbox::SANDBOX_ID_BASE
            ..bramble_sandbox::SANDBOX_ID_BASE + bramble_sandbox::SANDBOX_ID_COUNT;
        assert!(range.contains(&host), "{map}: {text}");
    }
    for (entry, uid, gid) in owners(&path) {
        assert_eq!((uid, gid), (0, 0), "{}", entry.display());
    }

    let out = p.bramble(&["build", "./:broken", "--keep-failed"]);
    assert!(!out.status.success());
    let kept = kept_dir(&stderr(&out));
    let entries = owners(&kept);
    assert!(entries.len() >= 5, "{entries:?}");
    for (entry, uid, gid) in entries {
        assert_eq!((uid, gid), (0, 0), "{}", entry.display());
    }
    let victim = victim.path().metadata().unwrap();
    assert_eq!((victim.uid(), victim.gid()), (12345, 12345));
}

/// `BRAMBLE_SANDBOX_IDS` sets the range (for a root whose user namespace maps only some ids):
/// the engine gives the build directories to the id the helper maps. A bad value is an error
/// naming the variable.
#[test]
fn as_root_the_id_range_can_be_set() {
    root_only!();
    let p = Isolated::as_root(
        r#"
def who():
    return _sh("who", "cat /proc/self/uid_map > $out && echo x > /build/scratch")

def other():
    return _sh("other", "echo > $out")
"#,
    );
    let out = p.bramble_with(
        &["build", "./:who", "--no-out-link"],
        &[("BRAMBLE_SANDBOX_IDS", "2000000:1000")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let map = std::fs::read_to_string(stdout(&out).trim()).unwrap();
    let host: u32 = map
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[0] == "1000")
        .and_then(|f| f[1].parse().ok())
        .unwrap_or_else(|| panic!("{map}"));
    assert!((2_000_000..2_001_000).contains(&host), "{map}");

    let out = p.bramble_with(
        &["build", "./:other", "--no-out-link"],
        &[("BRAMBLE_SANDBOX_IDS", "0:10")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`BRAMBLE_SANDBOX_IDS` is `0:10`"),
        "{}",
        stderr(&out)
    );
}

/// A builder's own exit code 127 (a shell's "command not found") is reported as its exit
/// code; only a builder the sandbox could not find is reported as not found, named.
#[test]
fn a_builders_own_127_is_its_exit_code_and_only_a_missing_builder_is_named() {
    let p = Isolated::new(
        r#"
def command_not_found():
    return _sh("command-not-found", "no-such-command-anywhere")

def exits_126():
    return _sh("exits-126", "exit 126")

def missing_builder():
    return derivation("missing-builder", busybox().out + "/bin/no-such-builder")
"#,
    );
    let out = p.bramble(&["build", "./:command_not_found", "--no-out-link"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: building `command-not-found` failed: builder exited with code 127\n"),
        "{err}"
    );
    assert!(err.contains("no-such-command-anywhere: not found"), "{err}");
    assert!(!err.contains("not found in the sandbox"), "{err}");

    let out = p.bramble(&["build", "./:exits_126", "--no-out-link"]);
    let err = stderr(&out);
    assert!(
        err.contains("error: building `exits-126` failed: builder exited with code 126\n"),
        "{err}"
    );
    assert!(!err.contains("not executable"), "{err}");

    let out = p.bramble(&["build", "./:missing_builder", "--no-out-link"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: building `missing-builder` failed: "))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.starts_with("error: building `missing-builder` failed: builder `/bramble/store/")
            && line.ends_with("-busybox/bin/no-such-builder` not found in the sandbox"),
        "{err}"
    );
    assert!(
        err.contains("\nhint: a builder is a file of an input's output"),
        "{err}"
    );
}

/// The script of a builder that tries to write a global sysctl (writing back the value it
/// read: harmless where it succeeds) and to change the host's `/dev/null`, then records
/// what happened in `$out`.
const HOSTILE: &str = r#"
def hostile():
    return _sh("hostile", """
v=$(cat /proc/sys/kernel/core_pattern)
if (echo "$v" > /proc/sys/kernel/core_pattern) 2>/dev/null; then echo sysctl-WRITTEN; else echo sysctl-refused; fi > $out
if touch /dev/null 2>/dev/null; then echo touch-DONE; else echo touch-refused; fi >> $out
if chmod 666 /dev/null 2>/dev/null; then echo chmod-DONE; else echo chmod-refused; fi >> $out
if echo x > /dev/null; then echo null-works; fi >> $out
""")
"#;

fn assert_hostile_build_refused(p: &Isolated) {
    use std::os::unix::fs::MetadataExt;
    let host = |m: std::fs::Metadata| (m.mode(), m.uid(), m.mtime(), m.mtime_nsec());
    let before = host(std::fs::metadata("/dev/null").unwrap());
    let out = p.bramble(&["build", "./:hostile", "--no-out-link"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result = std::fs::read_to_string(stdout(&out).trim()).unwrap();
    assert_eq!(
        result,
        "sysctl-refused\ntouch-refused\nchmod-refused\nnull-works\n"
    );
    assert_eq!(host(std::fs::metadata("/dev/null").unwrap()), before);
}

/// Through the real binary as an ordinary user: a build cannot write sysctls or touch the
/// host's device nodes.
#[test]
fn a_build_cannot_write_sysctls_or_change_host_device_nodes() {
    assert_hostile_build_refused(&Isolated::new(HOSTILE));
}

/// The same with bramble run as root (where a builder used to be host root).
#[test]
fn as_root_a_build_cannot_write_sysctls_or_change_host_device_nodes() {
    root_only!();
    assert_hostile_build_refused(&Isolated::as_root(HOSTILE));
}

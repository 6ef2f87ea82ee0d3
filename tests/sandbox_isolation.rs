//! The sandbox's isolation through the real `bramble` binary: who the builder is on the host
//! (an unprivileged id when bramble runs as root), what it can reach in `/proc` and `/dev`,
//! and how its failures are told from the sandbox's own.
//!
//! Tests about root run `bramble` as root and skip (saying why) when the test process is not
//! root; the others run it as uid 65534 when the test process is root (binaries and
//! fixtures in a world-readable temp dir, a `BRAMBLE_HOME` that uid owns), as the current
//! user otherwise.

mod build_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use build_support::{Fixture, stderr, stdout};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

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

/// Bramble as root: the builder is an unprivileged host id of the documented range (its
/// uid 1000 inside maps there; root's own id only served the helper's setup), it can write
/// its build directory and outputs, and what bramble keeps belongs to root again: the
/// outputs in the store, a failed build's kept directory (links in it not followed).
#[test]
fn as_root_the_builder_is_an_unprivileged_host_id_and_root_owns_what_is_kept() {
    root_only!();
    let f = Fixture::new();
    let who = f.sh(
        "who",
        "mkdir -p $out/sub && cat /proc/self/uid_map > $out/uid_map && \
         cat /proc/self/gid_map > $out/gid_map && echo x > /build/scratch && \
         echo y > $out/sub/file",
    );
    let out = f.build(&[&who], &[&who], &["--no-out-link"]);
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

    // A host file owned by another uid, which a kept directory's link points at.
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::chown(victim.path(), Some(12345), Some(12345)).unwrap();
    let bad = f.sh(
        "broken",
        &format!(
            "mkdir -p /build/d/e && echo partial > /build/d/e/f && ln -s {} /build/link; exit 1",
            victim.path().display()
        ),
    );
    let out = f.build(&[&bad], &[&bad], &["--keep-failed"]);
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

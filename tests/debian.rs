//! Debian package sets end to end (`lib/debian.bramble`): hand-made `.deb`s and a
//! `Packages` index made here, served on 127.0.0.1 as `mirror://debian`. The real `bramble`
//! resolves the closure in the sandbox (alternatives, Provides, versions), fetches and
//! assembles the packages, runs a dynamically linked program of the set in a build through
//! the root view (`derivation(root = ...)`), and `bramble run` sees the same view. An
//! unsatisfiable dependency is an error naming the package and the dependency.
//!
//! The dynamically linked programs are the host's `dash` and `echo` with the host's
//! `libc.so.6` and loader, packaged as Debian would ship them (`/bin`, `/lib`, `/lib64` with
//! an absolute symlink to the loader), so the assembly's merge into `usr/` and the
//! re-pointing of links are what make them run.
//!
//! When the tests run as root, bramble runs as uid 65534 (`setpriv`) from copies of the
//! binaries in a world-readable directory, with a store and project owned by that uid.

#[path = "support/http.rs"]
mod http;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A world-readable directory holding copies of `bramble`, `bramble-sandbox` and
/// `bramble-debian`.
fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("bramble-debian-bin-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bramble = Path::new(env!("CARGO_BIN_EXE_bramble"));
        for name in ["bramble", "bramble-sandbox", "bramble-debian"] {
            let to = dir.join(name);
            std::fs::copy(bramble.with_file_name(name), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    })
}

fn give(path: &Path) {
    if !is_root() {
        return;
    }
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.unwrap();
        std::os::unix::fs::lchown(entry.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    give(dir.path());
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One entry of a package's data: a file (contents, executable) or a symlink.
enum Item {
    File(Vec<u8>, bool),
    Link(&'static str),
}

fn tar_gz(entries: &[(String, Item)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, item) in entries {
        let mut h = tar::Header::new_gnu();
        match item {
            Item::File(data, exec) => {
                h.set_size(data.len() as u64);
                h.set_mode(if *exec { 0o755 } else { 0o644 });
                h.set_cksum();
                b.append_data(&mut h, format!("./{path}"), &data[..])
                    .unwrap();
            }
            Item::Link(to) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, format!("./{path}"), to).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A `.deb`: `debian-binary`, `control.tar.gz`, `data.tar.gz` in an `ar` archive.
fn deb(name: &str, version: &str, mut data: Vec<(String, Item)>) -> Vec<u8> {
    // Every package marks itself, so the test can see which versions were assembled.
    data.push((
        format!("usr/share/marks/{name}"),
        Item::File(version.as_bytes().to_vec(), false),
    ));
    let control = format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\n");
    let control = tar_gz(&[("control".into(), Item::File(control.into_bytes(), false))]);
    let mut out = Vec::new();
    {
        let mut ar = ar::Builder::new(&mut out);
        for (member, body) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control),
            ("data.tar.gz", tar_gz(&data)),
        ] {
            let header = ar::Header::new(member.as_bytes().to_vec(), body.len() as u64);
            ar.append(&header, &body[..]).unwrap();
        }
    }
    out
}

fn host_file(path: &str) -> Vec<u8> {
    std::fs::read(std::fs::canonicalize(path).unwrap()).unwrap()
}

const LIBDIR: &str = "lib/x86_64-linux-gnu";

/// The packages: (name, version, extra control fields, .deb).
fn packages() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let libc = || {
        vec![
            (
                format!("{LIBDIR}/libc.so.6"),
                Item::File(host_file("/lib/x86_64-linux-gnu/libc.so.6"), true),
            ),
            (
                format!("{LIBDIR}/ld-linux-x86-64.so.2"),
                Item::File(host_file("/lib64/ld-linux-x86-64.so.2"), true),
            ),
            (
                "lib64/ld-linux-x86-64.so.2".into(),
                Item::Link("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            ),
        ]
    };
    vec![
        (
            "say",
            "1.0-1",
            "Depends: missing-thing | libc-test (>= 2.36~rc1), shell (>= 2)\n",
            deb(
                "say",
                "1.0-1",
                vec![(
                    "bin/say".into(),
                    Item::File(host_file("/usr/bin/echo"), true),
                )],
            ),
        ),
        (
            "libc-test",
            "2.36-9",
            "",
            deb("libc-test", "2.36-9", libc()),
        ),
        (
            "libc-test",
            "2.36~rc0",
            "",
            deb("libc-test", "2.36~rc0", libc()),
        ),
        (
            "dash-test",
            "0.5.12-2",
            "Pre-Depends: libc-test\nProvides: shell (= 5)\n",
            deb(
                "dash-test",
                "0.5.12-2",
                vec![
                    (
                        "bin/dash".into(),
                        Item::File(host_file("/usr/bin/dash"), true),
                    ),
                    ("bin/sh".into(), Item::Link("dash")),
                ],
            ),
        ),
        // Provides `shell` without a version: never chosen for `shell (>= 2)`, though its
        // name sorts first.
        (
            "aaa-shell",
            "9",
            "Provides: shell\n",
            deb("aaa-shell", "9", Vec::new()),
        ),
        (
            "broken",
            "1",
            "Depends: libc-test, missing-lib (>= 3)\n",
            deb("broken", "1", Vec::new()),
        ),
        ("missing-lib", "2", "", deb("missing-lib", "2", Vec::new())),
    ]
}

const MODULE: &str = r#"
load("bramble/debian", "index", "packages")

def _index():
    return index("dists/test/main/binary-amd64/Packages.gz", "@SHA@")

def set():
    return packages(["say", "dash-test"], index = _index(), name = "test-set")

def greeting():
    return derivation(
        "greeting",
        "/bin/sh",
        args = ["-c", "say hello from the root view > $out"],
        env = {"PATH": "/usr/bin:/bin"},
        root = set(),
    )

def program():
    return derivation(
        "program",
        "/bin/sh",
        args = ["-c", "say 'say run in the same view' > $out"],
        env = {"PATH": "/usr/bin:/bin"},
        root = set(),
    )

def broken():
    return packages(["broken"], index = _index(), name = "broken-set")
"#;

struct Setup {
    server: http::Server,
    home: tempfile::TempDir,
    project: tempfile::TempDir,
    apt: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let server = http::Server::start();
        let mut index = String::new();
        for (name, version, fields, body) in packages() {
            let file = format!("pool/main/{name}_{version}_amd64.deb");
            index.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\n{fields}\
                 Filename: {file}\nSize: {}\nSHA256: {}\nDescription: test\n multi-line\n\n",
                body.len(),
                data_encoding::HEXLOWER.encode(&Sha256::digest(&body)),
            ));
            server.file(&format!("/debian/{file}"), body);
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(index.as_bytes()).unwrap();
        let index = gz.finish().unwrap();
        let sha = data_encoding::HEXLOWER.encode(&Sha256::digest(&index));
        server.file("/debian/dists/test/main/binary-amd64/Packages.gz", index);
        let project = tempfile::tempdir().unwrap();
        std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            project.path().join("bramble.toml"),
            "[package]\nname = \"example.com/debian\"\n",
        )
        .unwrap();
        std::fs::write(
            project.path().join("default.bramble"),
            MODULE.replace("@SHA@", &sha),
        )
        .unwrap();
        give(project.path());
        Setup {
            server,
            home: shared_tempdir(),
            project,
            apt: shared_tempdir(),
        }
    }

    fn bramble(&self, args: &[&str]) -> Output {
        let bramble = binaries().join("bramble");
        let mut cmd = if is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
            ])
            .arg(&bramble);
            cmd
        } else {
            Command::new(&bramble)
        };
        cmd.args(args)
            .current_dir(self.project.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.home.path())
            .env("BRAMBLE_HOME", self.home.path().join("store-home"))
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("BRAMBLE_APT_ROOT", self.apt.path())
            .env("BRAMBLE_MIRROR_DEBIAN", self.server.url("/debian"))
            .env("BRAMBLE_FETCH_RETRIES", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.bramble(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }
}

#[test]
fn a_package_set_is_resolved_assembled_and_runs_in_a_root_view() {
    let s = Setup::new();
    // The set: `say` needs `libc-test (>= 2.36~rc1)` (the first alternative does not
    // exist; 2.36~rc0 is too old) and `shell (>= 2)` (only dash-test's versioned Provides
    // meets it; `aaa-shell` provides it without a version).
    let out = s.ok(&["build", "--no-out-link", "./:set"]);
    let tree = PathBuf::from(text(&out.stdout).trim());
    let mut marks: Vec<String> = std::fs::read_dir(tree.join("usr/share/marks"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let version = std::fs::read_to_string(e.path()).unwrap();
            format!("{} {version}", e.file_name().to_string_lossy())
        })
        .collect();
    marks.sort();
    assert_eq!(
        marks,
        ["dash-test 0.5.12-2", "libc-test 2.36-9", "say 1.0-1"]
    );
    // Merged into usr/, the loader's absolute link re-pointed within the tree.
    assert!(tree.join("usr/bin/say").is_file() && !tree.join("bin").exists());
    assert_eq!(
        std::fs::read_link(tree.join("usr/lib64/ld-linux-x86-64.so.2")).unwrap(),
        Path::new("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    );
    assert!(tree.join("usr/lib64/ld-linux-x86-64.so.2").is_file());
    // The generated graph is recorded like any DAO's; the .debs are pinned by the index.
    let lock = std::fs::read_to_string(s.project.path().join("bramble.lock")).unwrap();
    assert!(
        lock.contains("[[dao]]") && lock.contains("name = \"test-set-set\""),
        "{lock}"
    );
    assert_eq!(s.server.hits("/debian/pool/main/aaa-shell_9_amd64.deb"), 0);

    // A build runs the set's dynamically linked dash and echo through the root view.
    let out = s.ok(&["build", "./:greeting"]);
    let greeting = PathBuf::from(text(&out.stdout).trim());
    assert_eq!(
        std::fs::read_to_string(&greeting).unwrap(),
        "hello from the root view\n"
    );
    // The output refers to its root view, so gc keeps the tree (built with --no-link, so
    // no root of its own) while the output is alive.
    s.ok(&["gc"]);
    assert!(greeting.is_file());
    assert!(
        tree.join("usr/bin/say").is_file(),
        "gc deleted the root view"
    );

    // `bramble run` runs in the same view: /bin/sh and `say` come from the set.
    let out = s.ok(&["build", "--no-out-link", "./:program"]);
    let script = PathBuf::from(text(&out.stdout).trim());
    let script = format!(
        "/bramble/store/{}",
        script.file_name().unwrap().to_string_lossy()
    );
    let out = s.ok(&["run", "./:program", "/bin/sh", &script]);
    assert_eq!(text(&out.stdout), "run in the same view\n");
}

#[test]
fn an_unsatisfiable_dependency_names_the_package_and_the_dependency() {
    let s = Setup::new();
    let out = s.bramble(&["build", "--no-out-link", "./:broken"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "`broken` depends on `missing-lib (>= 3)`, which no package in the index satisfies"
        ),
        "{err}"
    );
}

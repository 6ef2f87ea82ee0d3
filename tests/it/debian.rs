//! Debian package sets end to end (`lib/debian.bramble`): hand-made `.deb`s and a
//! `Packages` index made here, served on 127.0.0.1 as `mirror://debian`. The real `bramble`
//! resolves the closure in the sandbox (alternatives, Provides, versions), fetches and
//! assembles the packages, runs a dynamically linked program of the set in a build through
//! the root view (`derivation(root = ...)`), and `bramble run` and `bramble shell` see the
//! same view. An unsatisfiable dependency is an error naming the package and the dependency.
//!
//! The dynamically linked programs are the host's `dash` and `echo` with the host's
//! `libc.so.6` and loader, packaged as Debian would ship them (`/bin`, `/lib`, `/lib64` with
//! an absolute symlink to the loader), so the assembly's merge into `usr/` and the
//! re-pointing of links are what make them run.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::support::archive::deb_with_links;
use crate::support::{Bramble, ServedProject, sha256_hex, stderr, stdout, with_stdin};

fn host_file(path: &str) -> Vec<u8> {
    std::fs::read(std::fs::canonicalize(path).unwrap()).unwrap()
}

/// A package of the index: every package marks itself (`usr/share/marks/<name>` holding its
/// version), so the test can see which versions were assembled.
fn package(
    name: &str,
    version: &str,
    files: &[(&str, u32, &[u8])],
    links: &[(&str, &str)],
) -> Vec<u8> {
    let mark = format!("./usr/share/marks/{name}");
    let mut entries = files.to_vec();
    entries.push((&mark, 0o644, version.as_bytes()));
    deb_with_links(name, version, &entries, links)
}

/// The packages: (name, version, extra control fields, .deb).
fn packages() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let (libc, loader) = (
        host_file("/lib/x86_64-linux-gnu/libc.so.6"),
        host_file("/lib64/ld-linux-x86-64.so.2"),
    );
    let libc_files: [(&str, u32, &[u8]); 2] = [
        ("./lib/x86_64-linux-gnu/libc.so.6", 0o755, &libc),
        (
            "./lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            0o755,
            &loader,
        ),
    ];
    let libc_links = [(
        "./lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    )];
    let (echo, dash) = (host_file("/usr/bin/echo"), host_file("/usr/bin/dash"));
    vec![
        (
            "say",
            "1.0-1",
            "Depends: missing-thing | libc-test (>= 2.36~rc1), shell (>= 2)\n",
            package("say", "1.0-1", &[("./bin/say", 0o755, &echo)], &[]),
        ),
        (
            "libc-test",
            "2.36-9",
            "",
            package("libc-test", "2.36-9", &libc_files, &libc_links),
        ),
        (
            "libc-test",
            "2.36~rc0",
            "",
            package("libc-test", "2.36~rc0", &libc_files, &libc_links),
        ),
        (
            "dash-test",
            "0.5.12-2",
            "Pre-Depends: libc-test\nProvides: shell (= 5)\n",
            package(
                "dash-test",
                "0.5.12-2",
                &[("./bin/dash", 0o755, &dash)],
                &[("./bin/sh", "dash")],
            ),
        ),
        // Provides `shell` without a version: never chosen for `shell (>= 2)`, though its
        // name sorts first.
        (
            "aaa-shell",
            "9",
            "Provides: shell\n",
            package("aaa-shell", "9", &[], &[]),
        ),
        (
            "broken",
            "1",
            "Depends: libc-test, missing-lib (>= 3)\n",
            package("broken", "1", &[], &[]),
        ),
        (
            "missing-lib",
            "2",
            "",
            package("missing-lib", "2", &[], &[]),
        ),
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

def refers():
    # `@OTHER@`: a store path outside this derivation's closure, written in by the test.
    return derivation(
        "refers",
        "/bin/sh",
        args = ["-c", "say @OTHER@ > $out"],
        env = {"PATH": "/usr/bin:/bin"},
        root = set(),
    )

def broken():
    return packages(["broken"], index = _index(), name = "broken-set")
"#;

/// The project of `MODULE` with the fixture archive served as the `debian` mirror.
fn setup() -> ServedProject {
    ServedProject::new("example.com/debian", |server| {
        let mut index = String::new();
        for (name, version, fields, body) in packages() {
            let file = format!("pool/main/{name}_{version}_amd64.deb");
            index.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\n{fields}\
                 Filename: {file}\nSize: {}\nSHA256: {}\nDescription: test\n multi-line\n\n",
                body.len(),
                sha256_hex(&body),
            ));
            server.file(&format!("/debian/{file}"), body);
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(index.as_bytes()).unwrap();
        let index = gz.finish().unwrap();
        let sha = sha256_hex(&index);
        server.file("/debian/dists/test/main/binary-amd64/Packages.gz", index);
        MODULE.replace("@SHA@", &sha)
    })
    .mirror("debian", "/debian")
}

#[test]
fn a_package_set_is_resolved_assembled_and_runs_in_a_root_view() {
    let s = setup();
    // The set: `say` needs `libc-test (>= 2.36~rc1)` (the first alternative does not
    // exist; 2.36~rc0 is too old) and `shell (>= 2)` (only dash-test's versioned Provides
    // meets it; `aaa-shell` provides it without a version).
    let out = s.ok(&["build", "--no-out-link", "./:set"]);
    let tree = PathBuf::from(stdout(&out).trim());
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
    let lock = std::fs::read_to_string(s.dir.path().join("bramble.lock")).unwrap();
    assert!(
        lock.contains("[[dao]]") && lock.contains("name = \"test-set-set\""),
        "{lock}"
    );
    assert_eq!(s.server.hits("/debian/pool/main/aaa-shell_9_amd64.deb"), 0);

    // A build runs the set's dynamically linked dash and echo through the root view.
    let out = s.ok(&["build", "./:greeting"]);
    let greeting = PathBuf::from(stdout(&out).trim());
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
    // An output refers only to store paths of its closure: a store path it names that the
    // build does not depend on (greeting's, as plain text) is no reference; the root view is.
    let module = s.dir.path().join("default.bramble");
    let text = std::fs::read_to_string(&module).unwrap();
    let other = format!(
        "/bramble/store/{}",
        greeting.file_name().unwrap().to_string_lossy()
    );
    std::fs::write(&module, text.replace("@OTHER@", &other)).unwrap();
    let out = s.ok(&["build", "--no-out-link", "./:refers"]);
    let refers = PathBuf::from(stdout(&out).trim());
    assert_eq!(std::fs::read_to_string(&refers).unwrap(), other + "\n");
    let out = s.ok(&["store", "path-info", "--json", refers.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        info["references"],
        serde_json::json!([tree.file_name().unwrap().to_string_lossy()]),
        "{info}"
    );

    // `bramble run` runs in the same view: /bin/sh and `say` come from the set.
    let out = s.ok(&["build", "--no-out-link", "./:program"]);
    let script = PathBuf::from(stdout(&out).trim());
    let script = format!(
        "/bramble/store/{}",
        script.file_name().unwrap().to_string_lossy()
    );
    let out = s.ok(&["run", "./:program", "/bin/sh", &script]);
    assert_eq!(stdout(&out), "run in the same view\n");

    // `bramble shell` opens the build's environment in the same view: its shell is the
    // set's dash at /bin/sh (the set has no `cat` or `readlink`: dash's builtins read the
    // marks), `say` is on PATH, and /bin links into the read-only /usr.
    let shell = s.command(&["shell", "./:program"]);
    let out = with_stdin(
        shell,
        b"read v < /usr/share/marks/dash-test; say \"shell sees dash $v\"\n\
          [ -L /bin ] && [ -x /bin/dash ] && say linked\n\
          [ -w /usr/bin ] || say read-only\n\
          exit 3\n",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "shell sees dash 0.5.12-2\nlinked\nread-only\n"
    );
}

#[test]
fn an_unsatisfiable_dependency_names_the_package_and_the_dependency() {
    let s = setup();
    let out = s.bramble(&["build", "--no-out-link", "./:broken"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "`broken` depends on `missing-lib (>= 3)`, which no package in the index satisfies"
        ),
        "{err}"
    );
}

/// The lock names `bramble-debian` by builder (`builtin:bramble-debian@N`), not by its
/// bytes: another build of the tool (here the same program with a byte appended, run in a
/// fresh store so it really generates and assembles the set) passes `--locked` with the
/// lock unchanged, while a graph that differs from the recorded one still fails.
#[test]
fn the_lock_of_a_package_set_does_not_depend_on_the_bytes_of_bramble_debian() {
    let s = setup();
    s.ok(&["build", "--no-out-link", "./:set"]);
    let lock_path = s.dir.path().join("bramble.lock");
    let lock = std::fs::read_to_string(&lock_path).unwrap();
    assert_eq!(lock.matches("[[dao]]").count(), 1, "{lock}");

    let other = Bramble::new();
    let tools = other.tempdir();
    let tool = tools.path().join("bramble-debian");
    let mut bytes = std::fs::read(
        PathBuf::from(env!("CARGO_BIN_EXE_bramble")).with_file_name("bramble-debian"),
    )
    .unwrap();
    bytes.push(0);
    std::fs::write(&tool, bytes).unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let build = |bramble: &Bramble, tool: &Path| {
        bramble
            .command(
                s.dir.path(),
                &["build", "--locked", "--no-out-link", "./:set"],
            )
            .env("BRAMBLE_MIRROR_DEBIAN", s.server.url("/debian"))
            .env("BRAMBLE_DEBIAN_TOOL", tool)
            .output()
            .unwrap()
    };
    let out = build(&other, &tool);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let tree = PathBuf::from(stdout(&out).trim());
    assert!(tree.join("usr/bin/say").is_file());
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), lock);

    // The tool named by BRAMBLE_DEBIAN_TOOL is the one that runs: a missing one fails.
    let out = build(&Bramble::new(), &tools.path().join("missing"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    // The generated graph is still checked against the recorded one.
    let graph = lock
        .lines()
        .find_map(|l| l.strip_prefix("graph = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let other_graph = if graph.starts_with('0') { "1" } else { "0" }.to_owned() + &graph[1..];
    std::fs::write(&lock_path, lock.replace(&graph, &other_graph)).unwrap();
    let out = build(&Bramble::new(), &tool);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&other_graph), "{}", stderr(&out));
}

//! Go modules end to end (`lib/go.bramble`, `go_modules`/`go_binary`): a module proxy made
//! here and served on 127.0.0.1 as `mirror://goproxy` (module zips built by the test, their
//! `h1:` hashes in the project's `go.sum`), a program with two dependencies (one with an
//! upper-case path, escaped as `!` + lower case; one version needed only for its `go.mod`).
//!
//! The DAO fetches each module file once, a tampered zip is refused by its `h1:` pin with
//! nothing stored, a bumped dependency re-generates the graph and fetches only itself, and
//! the program compiles offline and runs. The compile needs a Go toolchain without the
//! internet: the host's Debian `golang-1.19-go` (CI installs it), packed with the host's
//! libc and loader into a tarball the fixture server serves, used as the build's root view.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{ServedProject, built_names, http, stderr, stdout};
use bramble::store::fetch::h1;

/// (module path, version, files below `<module>@<version>/`).
type Module = (&'static str, &'static str, Vec<(&'static str, String)>);

fn modules() -> Vec<Module> {
    let greet = |greeting: &str| {
        format!(
            "package greet\n\nimport \"example.com/shout\"\n\n// Hello greets.\nfunc Hello(name string) string {{ return shout.Mark(\"{greeting}, \" + name) }}\n"
        )
    };
    // Greet needs an old shout: go.sum lists that one only by its go.mod.
    let greet_mod = "module example.com/Greet\n\ngo 1.19\n\nrequire example.com/shout v0.0.1\n";
    vec![
        (
            "example.com/Greet",
            "v1.0.0",
            vec![("go.mod", greet_mod.into()), ("greet.go", greet("hello"))],
        ),
        (
            "example.com/Greet",
            "v1.1.0",
            vec![("go.mod", greet_mod.into()), ("greet.go", greet("good day"))],
        ),
        (
            "example.com/shout",
            "v0.0.1",
            vec![("go.mod", "module example.com/shout\n\ngo 1.19\n".into())],
        ),
        (
            "example.com/shout",
            "v0.1.0",
            vec![
                ("go.mod", "module example.com/shout\n\ngo 1.19\n".into()),
                (
                    "shout.go",
                    "package shout\n\nimport \"strings\"\n\n// Mark shouts.\nfunc Mark(s string) string { return strings.ToUpper(s) + \"!\" }\n\n// Upper is unused.\nfunc Upper(s string) string { return strings.ToUpper(s) }\n".into(),
                ),
            ],
        ),
    ]
}

fn zip_of(module: &str, version: &str, files: &[(&str, String)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in files {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file(format!("{module}@{version}/{name}"), opts)
            .unwrap();
        w.write_all(body.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// The proxy path of a module file (`/goproxy/<escaped>/@v/<version>.<ext>`).
fn proxy_path(module: &str, version: &str, ext: &str) -> String {
    format!(
        "/goproxy/{}/@v/{version}.{ext}",
        h1::escape(module).unwrap()
    )
}

const MAIN: &str = "package main\n\nimport (\n\t\"fmt\"\n\n\tgreet \"example.com/Greet\"\n\t\"example.com/shout\"\n)\n\nfunc main() {\n\tfmt.Println(greet.Hello(\"bramble\"), shout.Upper(\"from go\"))\n}\n";

const MODULE: &str = r#"
load("bramble/fetch", "fetch_url")
load("bramble/go", "go_binary", "go_modules")

def _src():
    return files(["go.mod", "go.sum", "*.go"])

def modules():
    return go_modules("hello", _src())

def fetched_modules():
    return go_modules("fetched", fetch_url("@SRC_URL@", unpack = "tar", name = "src"))

def toolchain():
    return fetch_url("@GO_URL@", hash = "sha256:@GO_SHA@", unpack = "tar", name = "host-go")

def hello():
    return go_binary("hello", _src(), go = toolchain(), goroot = "usr/lib/go", root = toolchain(), modfiles = files(["go.mod", "go.sum"]))
"#;

/// The Go project with the fixture modules served as the `goproxy` mirror.
struct Setup {
    project: ServedProject,
    /// (module, version) → (zip, go.mod) as served.
    files: Vec<(String, String, Vec<u8>, String)>,
}

impl std::ops::Deref for Setup {
    type Target = ServedProject;
    fn deref(&self) -> &ServedProject {
        &self.project
    }
}

impl Setup {
    fn new(go: Option<(&str, &str)>) -> Setup {
        let mut files = Vec::new();
        let zeros = "0".repeat(64);
        let (url, sha) = go.unwrap_or(("http://127.0.0.1:1/none.tar", &zeros));
        let project = ServedProject::new("example.com/go", |server| {
            for (module, version, content) in modules() {
                let zip = zip_of(module, version, &content);
                let go_mod = content[0].1.clone();
                server.file(&proxy_path(module, version, "zip"), zip.clone());
                server.file(&proxy_path(module, version, "mod"), go_mod.clone());
                files.push((module.to_owned(), version.to_owned(), zip, go_mod));
            }
            MODULE.replace("@GO_URL@", url).replace("@GO_SHA@", sha)
        })
        .mirror("goproxy", "/goproxy");
        std::fs::write(project.dir.path().join("main.go"), MAIN).unwrap();
        let s = Setup { project, files };
        s.require("v1.0.0");
        s
    }

    /// The h1 of a served module's zip and go.mod.
    fn sums(&self, module: &str, version: &str) -> (String, String) {
        let (_, _, zip, go_mod) = self
            .files
            .iter()
            .find(|(m, v, _, _)| m == module && v == version)
            .unwrap();
        let (zip, _) = h1::hash_zip(std::io::Cursor::new(zip), None).unwrap();
        (zip.to_string(), h1::hash_mod(go_mod.as_bytes()).to_string())
    }

    /// Write go.mod and go.sum requiring Greet at `greet` (and shout v0.1.0).
    fn require(&self, greet: &str) {
        let go_mod = format!(
            "module example.com/hello\n\ngo 1.19\n\nrequire (\n\texample.com/Greet {greet}\n\texample.com/shout v0.1.0\n)\n"
        );
        let (gz, gm) = self.sums("example.com/Greet", greet);
        let (_, old_m) = self.sums("example.com/shout", "v0.0.1");
        let (sz, sm) = self.sums("example.com/shout", "v0.1.0");
        let go_sum = format!(
            "example.com/Greet {greet} {gz}\nexample.com/Greet {greet}/go.mod {gm}\n\
             example.com/shout v0.0.1/go.mod {old_m}\n\
             example.com/shout v0.1.0 {sz}\nexample.com/shout v0.1.0/go.mod {sm}\n"
        );
        std::fs::write(self.dir.path().join("go.mod"), go_mod).unwrap();
        std::fs::write(self.dir.path().join("go.sum"), go_sum).unwrap();
        self.bramble.give(self.dir.path());
    }

    fn hits(&self, module: &str, version: &str, ext: &str) -> usize {
        self.server.hits(&proxy_path(module, version, ext))
    }

    /// Names of the store's objects.
    fn stored(&self) -> Vec<String> {
        std::fs::read_dir(self.bramble.store_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// The error a failed build ends with (from its first `error:` line: the progress lines
/// before it come in any order), compared with the snapshot `name` with the fixture
/// server's port and store hashes filtered out.
fn check_error(out: &Output, name: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let text = stderr(out);
    let at = text.find("error:").unwrap_or(0);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"127\.0\.0\.1:[0-9]+", "127.0.0.1:[PORT]");
    settings.add_filter(r"\b[0-9a-z]{32}\b", "[HASH]");
    settings.bind(|| insta::assert_snapshot!(name, &text[at..]));
}

#[test]
fn the_module_dao_fetches_each_module_file_once_into_a_proxy() {
    let s = Setup::new(None);
    let out = s.ok(&["build", "--no-out-link", "./:modules"]);
    let proxy = PathBuf::from(stdout(&out).trim());
    let v = proxy.join("example.com/!greet/@v");
    assert_eq!(
        std::fs::read_to_string(v.join("v1.0.0.info")).unwrap(),
        r#"{"Version":"v1.0.0"}"#
    );
    assert_eq!(std::fs::read_to_string(v.join("list")).unwrap(), "v1.0.0\n");
    // The files are the fetched ones (symlinks into the store).
    let zip = std::fs::read_link(v.join("v1.0.0.zip")).unwrap();
    assert!(zip.starts_with("/bramble/store"), "{}", zip.display());
    let host = s.bramble.store_dir().join(zip.file_name().unwrap());
    assert_eq!(std::fs::read(host).unwrap(), s.files[0].2);
    // One fetch per module file: both files of the selected versions, only the go.mod of
    // the version go.sum lists by its go.mod.
    for (module, version, zip, m) in [
        ("example.com/Greet", "v1.0.0", 1, 1),
        ("example.com/Greet", "v1.1.0", 0, 0),
        ("example.com/shout", "v0.0.1", 0, 1),
        ("example.com/shout", "v0.1.0", 1, 1),
    ] {
        assert_eq!(s.hits(module, version, "zip"), zip, "{module} {version}");
        assert_eq!(s.hits(module, version, "mod"), m, "{module} {version}");
    }
    // (Links to `/bramble/store/...`: resolved in the sandbox, not on the host.)
    assert!(std::fs::read_link(proxy.join("example.com/shout/@v/v0.0.1.zip")).is_err());
    assert!(std::fs::read_link(proxy.join("example.com/shout/@v/v0.0.1.mod")).is_ok());
    // The generated graph is recorded like any DAO's; h1-pinned fetches need no lock entry.
    let lock = std::fs::read_to_string(s.dir.path().join("bramble.lock")).unwrap();
    assert!(lock.contains("name = \"hello-modules\""), "{lock}");
    assert!(!lock.contains("[[url]]"), "{lock}");
    // Again (and --locked): nothing is fetched or built.
    let out = s.ok(&["build", "--locked", "--no-out-link", "./:modules"]);
    assert_eq!(PathBuf::from(stdout(&out).trim()), proxy);
    assert_eq!(built_names(&out), Vec::<String>::new());
    assert_eq!(s.hits("example.com/Greet", "v1.0.0", "zip"), 1);
}

/// The module's sources may be a directory derivation (here a fetched tar) instead of
/// `files()`: the DAO reads its `go.mod` and `go.sum` by path.
#[test]
fn the_sources_may_be_a_directory_derivation() {
    let s = Setup::new(None);
    let mut tar = tar::Builder::new(Vec::new());
    for file in ["go.mod", "go.sum", "main.go"] {
        tar.append_path_with_name(s.dir.path().join(file), file)
            .unwrap();
    }
    s.server.file("/src.tar", tar.into_inner().unwrap());
    let module = std::fs::read_to_string(s.dir.path().join("default.bramble")).unwrap();
    std::fs::write(
        s.dir.path().join("default.bramble"),
        module.replace("@SRC_URL@", &s.server.url("/src.tar")),
    )
    .unwrap();
    let out = s.ok(&["build", "--no-out-link", "./:fetched_modules"]);
    let proxy = PathBuf::from(stdout(&out).trim());
    assert!(
        std::fs::read_link(proxy.join("example.com/!greet/@v/v1.0.0.zip")).is_ok(),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.hits("example.com/shout", "v0.1.0", "zip"), 1);
}

#[test]
fn a_tampered_module_zip_is_refused_by_its_h1_pin_and_nothing_is_stored() {
    let s = Setup::new(None);
    let mut content = modules().remove(0).2;
    content[1].1 = content[1].1.replace("hello", "HELLO");
    let tampered = zip_of("example.com/Greet", "v1.0.0", &content);
    let (actual, _) = h1::hash_zip(std::io::Cursor::new(&tampered), None).unwrap();
    s.server
        .file(&proxy_path("example.com/Greet", "v1.0.0", "zip"), tampered);
    let out = s.bramble(&["build", "--no-out-link", "./:modules"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let (expected, _) = s.sums("example.com/Greet", "v1.0.0");
    assert!(
        err.contains("the Go module hash (h1) of `example.com/Greet@v1.0.0`")
            && err.contains("mirror://goproxy/example.com/!greet/@v/v1.0.0.zip")
            && err.contains(&format!("expected: {expected}"))
            && err.contains(&format!("actual:   {actual}"))
            && err.contains("hint: the module proxy served other content than `go.sum` records"),
        "{err}"
    );
    check_error(&out, "go_h1_mismatch");
    assert!(
        !s.stored().iter().any(|n| n.contains("Greet-v1.0.0.zip")),
        "{:?}",
        s.stored()
    );
    // A go.mod requirement missing from go.sum names the module and says what to run.
    let go_sum = std::fs::read_to_string(s.dir.path().join("go.sum")).unwrap();
    let without: String = go_sum
        .lines()
        .filter(|l| !l.starts_with("example.com/shout v0.1.0"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(s.dir.path().join("go.sum"), without).unwrap();
    let out = s.bramble(&["build", "--no-out-link", "./:modules"]);
    let err = stderr(&out);
    assert!(
        err.contains("`go.mod` requires `example.com/shout@v0.1.0`, which `go.sum` does not list")
            && err.contains("go mod tidy"),
        "{err}"
    );
    check_error(&out, "go_sum_missing_requirement");
    // A malformed line is named by file and line.
    std::fs::write(
        s.dir.path().join("go.sum"),
        go_sum + "example.com/x v1.0.0\n",
    )
    .unwrap();
    let out = s.bramble(&["build", "--no-out-link", "./:modules"]);
    let err = stderr(&out);
    assert!(err.contains("`go.sum`, line 6: expected"), "{err}");
    check_error(&out, "go_sum_malformed_line");
}

#[test]
fn a_bumped_dependency_regenerates_the_graph_and_fetches_only_itself() {
    let s = Setup::new(None);
    s.ok(&["build", "--no-out-link", "./:modules"]);
    s.require("v1.1.0");
    let out = s.ok(&["build", "--no-out-link", "./:modules"]);
    let built = built_names(&out);
    assert!(built.contains(&"hello-modules".to_owned()), "{built:?}");
    assert!(
        built.contains(&"example.com-Greet-v1.1.0.zip".to_owned()),
        "{built:?}"
    );
    assert!(
        !built.iter().any(|b| b.contains("shout")),
        "an unchanged module was fetched again: {built:?}"
    );
    for (module, version, zip, m) in [
        ("example.com/Greet", "v1.0.0", 1, 1),
        ("example.com/Greet", "v1.1.0", 1, 1),
        ("example.com/shout", "v0.0.1", 0, 1),
        ("example.com/shout", "v0.1.0", 1, 1),
    ] {
        assert_eq!(s.hits(module, version, "zip"), zip, "{module} {version}");
        assert_eq!(s.hits(module, version, "mod"), m, "{module} {version}");
    }
    let proxy = PathBuf::from(stdout(&out).trim());
    assert_eq!(
        std::fs::read_to_string(proxy.join("example.com/!greet/@v/list")).unwrap(),
        "v1.1.0\n"
    );
}

/// The host's Go (Debian's `golang-1.19-go`), with the host's libc and loader, as a tar:
/// `usr/lib/go` (the GOROOT: `bin`, `pkg/tool`, `pkg/include`, `src` without `cmd` and
/// test data; no prebuilt packages, which `-trimpath` would not use),
/// `usr/lib/x86_64-linux-gnu/libc.so.6` and `usr/lib64/ld-linux-x86-64.so.2`.
fn host_go_tar(dir: &Path) -> PathBuf {
    let goroot = Path::new("/usr/lib/go-1.19");
    assert!(
        goroot.join("bin/go").is_file(),
        "this test needs the host's Go 1.19 at `{}`\nhint: apt-get install golang-1.19-go \
         (CI installs it in .ci/run)",
        goroot.display()
    );
    let file = dir.join("go.tar");
    let mut tar = tar::Builder::new(std::io::BufWriter::new(
        std::fs::File::create(&file).unwrap(),
    ));
    tar.follow_symlinks(true);
    for sub in ["bin", "pkg/tool", "pkg/include"] {
        tar.append_dir_all(format!("usr/lib/go/{sub}"), goroot.join(sub))
            .unwrap_or_else(|e| panic!("pack `{sub}`: {e}"));
    }
    tar.append_path_with_name(goroot.join("VERSION"), "usr/lib/go/VERSION")
        .unwrap();
    let src = std::fs::canonicalize(goroot.join("src")).unwrap();
    for entry in walkdir::WalkDir::new(&src)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(&src).unwrap();
            rel != Path::new("cmd") && e.file_name() != "testdata"
        })
    {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&src).unwrap();
        if entry.file_type().is_file() {
            tar.append_path_with_name(entry.path(), Path::new("usr/lib/go/src").join(rel))
                .unwrap();
        }
    }
    for (host, name) in [
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/x86_64-linux-gnu/libc.so.6",
        ),
        (
            "/lib64/ld-linux-x86-64.so.2",
            "usr/lib64/ld-linux-x86-64.so.2",
        ),
    ] {
        tar.append_path_with_name(std::fs::canonicalize(host).unwrap(), name)
            .unwrap();
    }
    tar.into_inner().unwrap().flush().unwrap();
    file
}

#[test]
fn a_go_program_with_two_dependencies_compiles_offline_and_runs() {
    let tars = tempfile::tempdir().unwrap();
    let tar = host_go_tar(tars.path());
    let sha = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut std::fs::File::open(&tar).unwrap(), &mut h).unwrap();
        bramble::engine::fetch::sha256_hex(&h.finalize().into())
    };
    let server_dir = http::Server::start();
    server_dir.dir("/go", tars.path());
    let url = server_dir.url("/go/go.tar");
    let s = Setup::new(Some((&url, &sha)));
    let out = s.ok(&["run", "./:hello", "bin/hello"]);
    assert_eq!(stdout(&out), "HELLO, BRAMBLE! FROM GO\n");
    // Go itself checked every module against go.sum: a go.sum that disagrees with what the
    // proxy (through bramble's pins) served would have failed the compile. Built again:
    // nothing is fetched or compiled (the toolchain's fetch is only re-keyed by the content
    // hash the first build recorded in bramble.lock, its result already stored).
    let out = s.ok(&["build", "--no-out-link", "./:hello"]);
    let built = built_names(&out);
    assert!(
        built.iter().all(|b| b == "host-go"),
        "built again: {built:?}"
    );
    assert_eq!(server_dir.hits("/go/go.tar"), 1);
    for (module, version) in [
        ("example.com/Greet", "v1.0.0"),
        ("example.com/shout", "v0.1.0"),
    ] {
        assert_eq!(s.hits(module, version, "zip"), 1, "{module}");
    }
    let bin = PathBuf::from(stdout(&out).trim()).join("bin/hello");
    assert!(bin.is_file());
    // The compile is reproducible: built again from scratch, bit for bit the same.
    s.ok(&["build", "--check", "--no-out-link", "./:hello"]);
}

//! Shared fixtures of the build integration tests: a private `BRAMBLE_HOME`, a project
//! directory shipping a static busybox (copied from the `busybox-static` package at test
//! time, never committed), and helpers to write derivations and run the real binary.
//! [`Fixture`] builds derivation files; [`Project`] is a `.bramble` project.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bramble::store::{Derivation, Sources, StorePath};

/// Where `busybox-static` installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

pub struct Fixture {
    pub home: tempfile::TempDir,
    pub project: tempfile::TempDir,
    /// The `busybox` derivation: copies the shipped binary to `$out/bin`.
    pub busybox: Derivation,
}

impl Fixture {
    pub fn new() -> Fixture {
        assert!(
            Path::new(BUSYBOX).exists(),
            "these tests need a static busybox at `{BUSYBOX}`: apt-get install -y busybox-static"
        );
        let home = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let src = project.path().join("bootstrap");
        std::fs::create_dir(&src).unwrap();
        std::fs::copy(BUSYBOX, src.join("busybox")).unwrap();
        let mut f = Fixture {
            home,
            project,
            busybox: Derivation::new("busybox", "busybox"),
        };
        let out = f.bramble(&["store", "add", src.to_str().unwrap(), "--name", "source"]);
        assert!(out.status.success(), "store add: {}", stderr(&out));
        let path = StorePath::from_path_str(stdout(&out).trim()).unwrap();
        let mut bb = Derivation::new("busybox", "busybox");
        bb.args = vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p $out/bin && cp busybox $out/bin/busybox && ln -s busybox $out/bin/sh".into(),
        ];
        bb.sources = Some(Sources {
            files: vec!["busybox".into()],
            path,
        });
        f.busybox = bb;
        f
    }

    /// The `bramble` binary with this fixture's store, in the project directory.
    pub fn command(&self, args: &[&str]) -> Command {
        bramble_command(self.home.path(), self.project.path(), args)
    }

    pub fn bramble(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// A derivation running `script` with busybox `sh`; `deps` are templates it may use.
    pub fn sh(&self, name: &str, script: &str) -> Derivation {
        let mut d = Derivation::new(
            name,
            format!("{}/bin/busybox", self.busybox.output_ref("out").template()),
        );
        d.args = vec!["sh".into(), "-c".into(), script.into()];
        d
    }

    /// Write `drvs` (plus busybox) as a derivations file; roots default to the last one.
    pub fn write(&self, file: &str, drvs: &[&Derivation], roots: &[&Derivation]) -> PathBuf {
        let mut all: Vec<serde_json::Value> =
            vec![serde_json::from_str(&self.busybox.canonical_json()).unwrap()];
        for d in drvs {
            all.push(serde_json::from_str(&d.canonical_json()).unwrap());
        }
        let roots: Vec<String> = roots.iter().map(|d| d.hash().to_string()).collect();
        let doc = serde_json::json!({ "derivations": all, "roots": roots });
        let path = self.project.path().join(file);
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    }

    /// `bramble build --derivations <file> <extra…>`.
    pub fn build(&self, drvs: &[&Derivation], roots: &[&Derivation], extra: &[&str]) -> Output {
        let file = self.write("drvs.json", drvs, roots);
        let mut args = vec!["build", "--derivations", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.bramble(&args)
    }

    /// The store directory on the host.
    pub fn store_dir(&self) -> PathBuf {
        self.home.path().join("store")
    }
}

/// A `.bramble` project with a private store: `bramble.toml`, `default.bramble` holding
/// `module`, and the static busybox as the source file `busybox`.
pub struct Project {
    pub home: tempfile::TempDir,
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(package: &str, module: &str) -> Project {
        assert!(
            Path::new(BUSYBOX).exists(),
            "these tests need a static busybox at `{BUSYBOX}`: apt-get install -y busybox-static"
        );
        let home = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bramble.toml"),
            format!("[package]\nname = \"{package}\"\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("default.bramble"), module).unwrap();
        std::fs::copy(BUSYBOX, dir.path().join("busybox")).unwrap();
        Project { home, dir }
    }

    /// The `bramble` binary with this project's store, in the project directory.
    pub fn command(&self, args: &[&str]) -> Command {
        bramble_command(self.home.path(), self.dir.path(), args)
    }

    pub fn bramble(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// [`Project::bramble`], which must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.bramble(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    }

    /// The project's `bramble.lock` (empty if there is none).
    pub fn lock(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bramble.lock")).unwrap_or_default()
    }
}

/// The real `bramble` binary with the private store `home`, run in `dir`. It finds the sandbox
/// helper next to itself, as installed (`cargo nextest run --workspace` builds both). `CI` is
/// removed so unpinned fetches are recorded rather than refused; downloads are not retried.
pub fn bramble_command(home: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bramble"));
    cmd.args(args)
        .current_dir(dir)
        .env("BRAMBLE_HOME", home)
        .env_remove("BRAMBLE_SANDBOX")
        .env("BRAMBLE_FETCH_RETRIES", "0")
        .env("NO_COLOR", "1")
        .env_remove("CI")
        .env_remove("BRAMBLE_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Run `cmd` with `input` on its stdin, capturing stdout and stderr.
pub fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
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

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Lines of stderr that say a derivation was built: `built <name> in …`.
pub fn built_names(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter_map(|l| l.strip_prefix("built "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

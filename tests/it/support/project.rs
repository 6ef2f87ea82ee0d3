//! Project scaffolds: a directory shipping a static busybox (copied from the `busybox-static`
//! package at test time, never committed) with its own store. [`Fixture`] writes derivation
//! files for `bramble build --derivations`; [`Project`] is a `.bramble` project.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bramble::store::{Derivation, Sources, StorePath};

use super::runner::Bramble;
use super::{stderr, stdout};

/// Where `busybox-static` installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

fn busybox_present() {
    assert!(
        Path::new(BUSYBOX).exists(),
        "these tests need a static busybox at `{BUSYBOX}`: apt-get install -y busybox-static"
    );
}

/// A project directory with a store and the derivation that installs busybox from sources.
#[derive(Debug)]
pub struct Fixture {
    pub bramble: Bramble,
    pub project: tempfile::TempDir,
    /// The `busybox` derivation: copies the shipped binary to `$out/bin`.
    pub busybox: Derivation,
}

impl Fixture {
    pub fn new() -> Fixture {
        busybox_present();
        let bramble = Bramble::new();
        let project = bramble.tempdir();
        let src = project.path().join("bootstrap");
        std::fs::create_dir(&src).unwrap();
        std::fs::copy(BUSYBOX, src.join("busybox")).unwrap();
        let mut f = Fixture {
            bramble,
            project,
            busybox: Derivation::new("busybox", "busybox"),
        };
        let out = f.ok(&["store", "add", src.to_str().unwrap(), "--name", "source"]);
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

    /// The `bramble` command with this fixture's store, in the project directory.
    pub fn command(&self, args: &[&str]) -> Command {
        self.bramble.give(self.project.path());
        self.bramble.command(self.project.path(), args)
    }

    pub fn bramble(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// [`Fixture::bramble`], which must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.bramble(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    }

    /// `BRAMBLE_HOME`.
    pub fn home(&self) -> PathBuf {
        self.bramble.home()
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
}

/// A `.bramble` project with a private store: `bramble.toml`, `default.bramble` holding
/// `module`, and the static busybox as the source file `busybox`.
#[derive(Debug)]
pub struct Project {
    pub bramble: Bramble,
    pub dir: tempfile::TempDir,
    /// Variables every command of the project gets (a mirror's base URL).
    env: Vec<(String, String)>,
}

impl Project {
    pub fn new(package: &str, module: &str) -> Project {
        Project::with(Bramble::new(), package, module)
    }

    /// [`Project::new`] run by `bramble` (e.g. [`Bramble::as_root`]).
    pub fn with(bramble: Bramble, package: &str, module: &str) -> Project {
        busybox_present();
        let dir = bramble.tempdir();
        std::fs::write(
            dir.path().join("bramble.toml"),
            format!("[package]\nname = \"{package}\"\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("default.bramble"), module).unwrap();
        std::fs::copy(BUSYBOX, dir.path().join("busybox")).unwrap();
        Project {
            bramble,
            dir,
            env: Vec::new(),
        }
    }

    /// The `bramble` command with this project's store, in the project directory, which is
    /// first handed to the user `bramble` runs as (files the test wrote included).
    pub fn command(&self, args: &[&str]) -> Command {
        self.bramble.give(self.dir.path());
        let mut command = self.bramble.command(self.dir.path(), args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn bramble(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// [`Project::bramble`], which must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.bramble(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    /// `BRAMBLE_HOME`.
    pub fn home(&self) -> PathBuf {
        self.bramble.home()
    }

    /// The project's `bramble.lock` (empty if there is none).
    pub fn lock(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bramble.lock")).unwrap_or_default()
    }
}

/// A [`Project`] with its own fixture HTTP server, for projects whose fetches it serves.
pub struct ServedProject {
    pub project: Project,
    pub server: super::http::Server,
}

impl ServedProject {
    /// The project of `package` whose module is `module(&server)`, written once the server
    /// has started (so it can name the server's URLs).
    pub fn new(package: &str, module: impl FnOnce(&super::http::Server) -> String) -> Self {
        let server = super::http::Server::start();
        let project = Project::new(package, &module(&server));
        ServedProject { project, server }
    }

    /// Serve the mirror `name` (`mirror://NAME/...`) from `path` on the fixture server: every
    /// command gets `BRAMBLE_MIRROR_<NAME>`.
    pub fn mirror(mut self, name: &str, path: &str) -> Self {
        let base = self.server.url(path);
        self.project
            .env
            .push((bramble::env::mirror_var(name), base));
        self
    }
}

impl std::ops::Deref for ServedProject {
    type Target = Project;
    fn deref(&self) -> &Project {
        &self.project
    }
}

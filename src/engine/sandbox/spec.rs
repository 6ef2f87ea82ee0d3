//! The sandbox specs bramble writes: a build's (`build`), a shell in a build's environment
//! (`shell`), a program run from a built output ([`program`], `bramble run`), and the parts
//! they share (the root view, the builder's path, the output variables).
//!
//! Every spec the engine hands the helper is made here, so a build, a shell in its
//! environment and a program run from its output see the same store, root view and
//! variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bramble_sandbox::{Bind, Spec};

use crate::engine::{ExecError, Job, SetupError, tool};
use crate::store::local::LocalStore;
use crate::store::{Derivation, STORE_DIR, StorePath};

use super::background::BuildDirs;

/// The spec of `job`'s build in `dirs`: [`build_spec`], run through its tool if its builder
/// names one, in its root view if it has one; validated. Limits are the executor's to set.
pub(super) fn build(store: &LocalStore, dirs: &BuildDirs, job: &Job) -> Result<Spec, ExecError> {
    let tool = tool::tool_of(&job.drv.builder).map_err(SetupError::Tool)?;
    let mut spec = build_spec(store, dirs, job);
    if let Some(name) = tool {
        add_tool(&mut spec, dirs.dir.path(), name)?;
    }
    if let Some(root) = root_path(&job.drv)? {
        add_root_view(&mut spec, &store.host_path(&root))?;
    }
    spec.validate().map_err(SetupError::Spec)?;
    Ok(spec)
}

/// `spec`, a build's, with a shell in place of the builder and the caller's stdin
/// (`bramble shell`): the builder itself if it is a shell (`sh`, `bash`, `ash`, `dash`),
/// `<builder> sh` if it is a busybox, else `bin/sh` of an input.
pub(super) fn shell(store: &LocalStore, job: &Job, mut spec: Spec) -> Result<Spec, SetupError> {
    let (builder, args) = shell_for(store, job).ok_or_else(|| SetupError::NoShell {
        drv: job.drv.name.clone(),
    })?;
    spec.builder = builder;
    spec.args = args;
    spec.stdin = bramble_sandbox::Stdin::Inherit;
    Ok(spec)
}

fn shell_for(store: &LocalStore, job: &Job) -> Option<(PathBuf, Vec<String>)> {
    let builder = builder_path(&job.drv);
    match builder.file_name().and_then(|n| n.to_str()) {
        Some("busybox") => return Some((builder, vec!["sh".into()])),
        Some("sh" | "bash" | "ash" | "dash") => return Some((builder, Vec::new())),
        _ => {}
    }
    job.inputs
        .iter()
        .find(|p| std::fs::symlink_metadata(store.host_path(p).join("bin/sh")).is_ok())
        .map(|p| (Path::new(&p.in_store_dir()).join("bin/sh"), Vec::new()))
}

/// The sandbox spec of a build: the builder with its arguments and the output variables,
/// the staging directory writable at `/bramble/store`, the build directory writable at
/// `/build`, and every input read-only at its store path.
fn build_spec(store: &LocalStore, dirs: &BuildDirs, job: &Job) -> Spec {
    let drv = &job.drv;
    let mut spec = Spec::new(builder_path(drv));
    spec.args = drv.args.clone();
    spec.env = output_env(drv, job);
    spec.binds.push(Bind {
        source: dirs.staging.path().to_owned(),
        target: STORE_DIR.into(),
        writable: true,
    });
    spec.binds.push(Bind {
        source: dirs.dir.path().to_owned(),
        target: bramble_sandbox::spec::SANDBOX_BUILD_DIR.into(),
        writable: true,
    });
    for input in &job.inputs {
        spec.binds.push(Bind {
            source: store.host_path(input),
            target: input.in_store_dir().into(),
            writable: false,
        });
    }
    spec
}

/// Copy tool `name` into `build_dir`'s `.tool/` and run it as the builder, with the
/// derivation's arguments after the program (see [`crate::engine::tool`]).
fn add_tool(spec: &mut Spec, build_dir: &Path, name: &str) -> Result<(), ExecError> {
    let entries = tool::entries(name).map_err(SetupError::Tool)?;
    let host = build_dir.join(tool::SANDBOX_TOOL_DIR);
    for (file, from) in &entries {
        let to = host.join(file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|source| SetupError::ToolDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::copy(from, &to).map_err(|source| SetupError::CopyTool {
            path: from.clone(),
            tool: name.to_owned(),
            source,
        })?;
    }
    let inside = Path::new(bramble_sandbox::spec::SANDBOX_BUILD_DIR).join(tool::SANDBOX_TOOL_DIR);
    spec.builder = inside.join("lib").join(tool::LOADER);
    let mut args = vec![
        "--library-path".to_owned(),
        inside.join("lib").to_string_lossy().into_owned(),
        inside.join("bin").join(name).to_string_lossy().into_owned(),
    ];
    args.append(&mut spec.args);
    spec.args = args;
    Ok(())
}

/// The directories a root view links at the top of the sandbox (merged `/usr`).
pub const ROOT_VIEW_LINKS: [&str; 4] = ["bin", "sbin", "lib", "lib64"];

/// The store path of a resolved derivation's root view (`Derivation::root`), if it has one.
pub fn root_path(drv: &Derivation) -> Result<Option<StorePath>, ExecError> {
    let Some(root) = &drv.root else {
        return Ok(None);
    };
    let bad = || SetupError::RootNotInStore {
        root: root.clone(),
        drv: drv.name.clone(),
    };
    let rest = root
        .strip_prefix(STORE_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|r| !r.contains('/'))
        .ok_or_else(bad)?;
    Ok(Some(rest.parse().map_err(|_| bad())?))
}

/// Show the tree at `host_root` as the sandbox's root view: its `usr/` read-only at `/usr`,
/// `/bin`, `/sbin`, `/lib`, `/lib64` linking into it. `bramble run` and `bramble shell` use
/// the same view as the build.
pub fn add_root_view(spec: &mut Spec, host_root: &Path) -> Result<(), ExecError> {
    let usr = host_root.join("usr");
    match std::fs::symlink_metadata(&usr) {
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(SetupError::RootWithoutUsr {
                path: host_root.to_owned(),
            }
            .into());
        }
    }
    spec.binds.push(Bind {
        source: usr,
        target: "/usr".into(),
        writable: false,
    });
    for dir in ROOT_VIEW_LINKS {
        spec.symlinks.push(bramble_sandbox::Symlink {
            path: Path::new("/").join(dir),
            to: Path::new("usr").join(dir),
        });
    }
    Ok(())
}

/// A program run from a built output (`bramble run`): what its spec is made of.
#[derive(Debug, Default)]
pub struct Program {
    /// The command: an absolute path, or a path relative to the output (`out`, else the
    /// first).
    pub cmd: String,
    pub args: Vec<String>,
    /// Share the host network (else the sandbox has none).
    pub network: bool,
    /// The derivation's outputs by name: their `bin/` directories make `PATH`, their closure
    /// is bound read-only at `/bramble/store`.
    pub outputs: BTreeMap<String, StorePath>,
    /// The root view the derivation was built in, shown as in its build, with
    /// `/usr/bin:/bin` at the end of `PATH`.
    pub root: Option<StorePath>,
    /// Host paths bound at their own paths, each after the one containing it.
    pub binds: Vec<Bind>,
    /// Paths to hide: each gets a tmpfs, or `empty_dir` bound read-only where the bind
    /// holding it is read-only (a tmpfs cannot be mounted there).
    pub hidden: Vec<PathBuf>,
    pub empty_dir: PathBuf,
    /// The working directory inside.
    pub cwd: PathBuf,
    /// The caller's `TERM`, passed on.
    pub term: Option<String>,
}

/// Why a [`Program`] has no spec.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("the derivation of `{cmd}` has no outputs")]
    NoOutputs { cmd: String },
    #[error(transparent)]
    Closure(crate::store::local::Error),
    #[error(transparent)]
    RootView(ExecError),
    #[error("cannot run `{cmd}`: {problem}")]
    Invalid {
        cmd: String,
        problem: bramble_sandbox::SpecError,
    },
}

impl crate::error::Diagnose for ProgramError {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            ProgramError::NoOutputs { .. } => Class::Internal,
            ProgramError::Closure(e) => e.class(),
            ProgramError::RootView(_) | ProgramError::Invalid { .. } => Class::User,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ProgramError::Closure(e) => e.hint(),
            ProgramError::RootView(e) => e.hint(),
            ProgramError::Invalid { .. } => {
                Some("check the `paths`, `read_only_paths` and `hidden_paths` of `run()`".into())
            }
            ProgramError::NoOutputs { .. } => None,
        }
    }
}

/// The spec of `program`, the caller's stdin, stdout and stderr its own; validated.
pub fn program(store: &LocalStore, program: &Program) -> Result<Spec, ProgramError> {
    let out = program
        .outputs
        .get("out")
        .or_else(|| program.outputs.values().next())
        .ok_or_else(|| ProgramError::NoOutputs {
            cmd: program.cmd.clone(),
        })?;
    let cmd = if program.cmd.starts_with('/') {
        PathBuf::from(&program.cmd)
    } else {
        PathBuf::from(out.in_store_dir()).join(&program.cmd)
    };
    let mut spec = Spec::new(cmd);
    spec.args = program.args.clone();
    spec.stdin = bramble_sandbox::Stdin::Inherit;
    spec.network = if program.network {
        bramble_sandbox::Network::Host
    } else {
        bramble_sandbox::Network::None
    };
    let mut path: Vec<String> = program
        .outputs
        .values()
        .map(|p| format!("{}/bin", p.in_store_dir()))
        .collect();
    if let Some(term) = &program.term {
        spec.env.insert("TERM".into(), term.clone());
    }
    let roots: Vec<StorePath> = program.outputs.values().cloned().collect();
    let closure = store.closure(&roots).map_err(ProgramError::Closure)?;
    for input in &closure {
        spec.binds.push(Bind {
            source: store.host_path(input),
            target: input.in_store_dir().into(),
            writable: false,
        });
    }
    let mut hidden_binds = Vec::new();
    for path in &program.hidden {
        let holder = program
            .binds
            .iter()
            .filter(|b| path.starts_with(&b.target))
            .max_by_key(|b| b.target.components().count());
        if holder.is_some_and(|b| !b.writable) {
            hidden_binds.push(Bind {
                source: program.empty_dir.clone(),
                target: path.clone(),
                writable: false,
            });
        } else {
            spec.tmpfs.push(path.clone());
        }
    }
    spec.binds.extend(program.binds.iter().cloned());
    spec.binds.extend(hidden_binds);
    spec.cwd = program.cwd.clone();
    if let Some(root) = &program.root {
        add_root_view(&mut spec, &store.host_path(root)).map_err(ProgramError::RootView)?;
        path.push("/usr/bin:/bin".into());
    }
    spec.env.insert("PATH".into(), path.join(":"));
    spec.validate().map_err(|problem| ProgramError::Invalid {
        cmd: program.cmd.clone(),
        problem,
    })?;
    Ok(spec)
}

/// The builder as a path inside the sandbox: absolute as given, else a file in `/build`.
pub fn builder_path(drv: &Derivation) -> PathBuf {
    if drv.builder.starts_with('/') {
        PathBuf::from(&drv.builder)
    } else {
        Path::new(bramble_sandbox::spec::SANDBOX_BUILD_DIR)
            .join(drv.builder.trim_start_matches("./"))
    }
}

/// The derivation's env plus `$<output>` for every output (`$out` included), which win over
/// a variable of the same name, as in Nix.
fn output_env(drv: &Derivation, job: &Job) -> BTreeMap<String, String> {
    let mut env = drv.env.clone();
    for output in &drv.outputs {
        let placeholder: StorePath = drv.placeholder(job.build_key, output);
        env.insert(output.clone(), placeholder.in_store_dir());
    }
    env
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Hash;

    #[test]
    fn root_view_errors_name_the_root_and_keep_their_wording() {
        let mut d = Derivation::new("x", "/bin/sh");
        d.root = Some("/tmp/elsewhere".into());
        assert_eq!(
            root_path(&d).unwrap_err().to_string(),
            "cannot run the build: the root view `/tmp/elsewhere` of `x` is not a store path \
             (`root` takes a derivation, e.g. a Debian package set)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::new("/bin/sh");
        let err = add_root_view(&mut spec, dir.path()).unwrap_err();
        assert!(matches!(
            err,
            ExecError::Setup(SetupError::RootWithoutUsr { .. })
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "cannot run the build: the root view `{}` has no `usr` directory (is it a \
                 package set?)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn builder_paths() {
        let mut d = Derivation::new("x", "/bramble/store/abc-sh/bin/sh");
        assert_eq!(builder_path(&d), Path::new("/bramble/store/abc-sh/bin/sh"));
        d.builder = "busybox".into();
        assert_eq!(builder_path(&d), Path::new("/build/busybox"));
        d.builder = "./tools/sh".into();
        assert_eq!(builder_path(&d), Path::new("/build/tools/sh"));
    }

    #[test]
    fn output_variables_point_at_placeholders() {
        let mut d = Derivation::new("multi", "/bin/sh");
        d.outputs = vec!["out".into(), "dev".into()];
        d.env.insert("dev".into(), "overridden".into());
        d.env.insert("other".into(), "kept".into());
        let key = Hash::digest(b"key");
        let job = Job {
            drv_hash: d.hash(),
            drv: Arc::new(d.clone()),
            build_key: key,
            inputs: Default::default(),
        };
        let env = output_env(&d, &job);
        assert_eq!(env["out"], d.placeholder(key, "out").in_store_dir());
        assert_eq!(env["dev"], d.placeholder(key, "dev").in_store_dir());
        assert!(env["dev"].ends_with("-multi-dev"));
        assert_eq!(env["other"], "kept");
    }
}

//! The spec turned into ready-to-use kernel arguments.
//!
//! Everything that can be computed once is computed in advance: C strings for every path,
//! `argv`/`envp` pointer arrays, the id maps, the seccomp programs. The sandbox's init then
//! runs a fixed sequence of system calls without parsing or formatting.
//!
//! Two parts: the [`Base`] does not depend on the spec (id maps, network, seccomp programs,
//! where the new root is mounted) and is always made by the host side before the clone; the
//! [`Plan`] is the spec's own part, made by the host side before the clone too, or by pid 1
//! when the spec comes later (`--warm`, see [`crate::run`]).

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use seccompiler::BpfProgram;

use crate::error::Error;
use crate::spec::Spec;

/// One mount-like step, in application order.
#[derive(Debug)]
pub enum Step {
    /// Bind `binds[index]` (its source is opened by init before the root is replaced).
    Bind { index: usize },
    /// A fresh writable tmpfs at `target`.
    Tmpfs { target: CString },
    /// A symbolic link at `path` pointing to `to`.
    Symlink { path: CString, to: CString },
}

/// One bind, with the host path and the sandbox path relative to the new root.
#[derive(Debug)]
pub struct BindPlan {
    pub source: CString,
    pub source_path: PathBuf,
    /// The source relative to [`Base::root_mountpoint`] when it lies under it (`.` for the
    /// mount point itself): init opens it through a descriptor of the covered directory.
    pub under_root: Option<CString>,
    /// Relative to the new root (no leading `/`), so init can work from inside it.
    pub target: CString,
    pub writable: bool,
}

/// The prepared run.
#[derive(Debug)]
pub struct Plan {
    pub builder: CString,
    pub builder_path: PathBuf,
    /// `argv` strings; `argv_ptrs` points into them and ends with a null pointer.
    #[allow(dead_code, reason = "owns the strings `argv_ptrs` points into")]
    pub argv: Vec<CString>,
    pub argv_ptrs: Vec<*const libc::c_char>,
    #[allow(dead_code, reason = "owns the strings `envp_ptrs` points into")]
    pub envp: Vec<CString>,
    pub envp_ptrs: Vec<*const libc::c_char>,
    pub cwd: CString,
    pub cwd_path: PathBuf,
    pub binds: Vec<BindPlan>,
    pub steps: Vec<Step>,
    /// `step_parents[i]`: the directories to create before `steps[i]`, outermost first. Each
    /// directory appears once in the whole run (many inputs share `/bramble/store`).
    pub step_parents: Vec<Vec<CString>>,
    pub hostname: Vec<u8>,
    /// `RLIMIT_DATA` of every process, in bytes (see [`crate::limits`]).
    pub memory_limit: Option<u64>,
    /// Most processes of the builder (see [`crate::limits`]).
    pub process_limit: Option<u32>,
}

/// What pid 1 needs before it knows the spec.
#[derive(Debug)]
pub struct Base {
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    /// The helper runs as root: the host side writes the maps (an unprivileged id for the
    /// builder, see [`crate::ids`]) and pid 1, root inside until then, switches to these
    /// (uid, gid) inside before the confinement.
    pub switch_to: Option<(u32, u32)>,
    /// That unprivileged host id (for messages).
    pub sandbox_id: Option<u32>,
    /// A fresh network namespace (only `lo`).
    pub new_net: bool,
    pub filters: Vec<BpfProgram>,
    /// Host directory the new root's tmpfs is mounted on, inside our private mount namespace
    /// only: the canonical [`ROOT_MOUNTPOINT`]. Bind sources under it are opened through a
    /// descriptor of the directory taken before it was covered.
    pub root_mountpoint: CString,
    pub root_mountpoint_path: PathBuf,
    /// Pid 1 points the builder's stdin at `/dev/null` itself (the host side's stdin carried
    /// the spec).
    pub null_stdin: bool,
}

/// Where the new root is mounted (before `pivot_root`), resolved through symbolic links.
pub const ROOT_MOUNTPOINT: &str = "/tmp";

impl Base {
    /// The spec-independent part of a run as `uid`/`gid` inside, mapped to the caller's ids,
    /// or with `sandbox_id` (a caller that is root, see [`crate::ids`]) to that host id, the
    /// caller's own ids then mapped as uid/gid 0 (65535 if the builder is 0) for pid 1's setup.
    pub fn new(
        host: (u32, u32),
        inside: (u32, u32),
        new_net: bool,
        null_stdin: bool,
        sandbox_id: Option<u32>,
    ) -> Result<Base, Error> {
        let filters = crate::seccomp::filters().map_err(|e| {
            Error::setup(
                "cannot compile the seccomp filter",
                std::io::Error::other(e),
            )
        })?;
        let mountpoint = std::fs::canonicalize(ROOT_MOUNTPOINT)
            .map_err(|e| Error::setup(format!("cannot resolve `{ROOT_MOUNTPOINT}`"), e))?;
        let map = |inside: u32, host: u32| match sandbox_id {
            None => format!("{inside} {host} 1\n").into_bytes(),
            Some(id) => {
                let own = if inside == 0 { 65535 } else { 0 };
                format!("{own} {host} 1\n{inside} {id} 1\n").into_bytes()
            }
        };
        Ok(Base {
            uid_map: map(inside.0, host.0),
            gid_map: map(inside.1, host.1),
            switch_to: sandbox_id.map(|_| inside),
            sandbox_id,
            new_net,
            filters,
            root_mountpoint: path_c(&mountpoint),
            root_mountpoint_path: mountpoint,
            null_stdin,
        })
    }
}

fn cstring(bytes: &[u8]) -> CString {
    // The spec was validated: no string contains NUL. An empty string is the fallback that
    // keeps this function total; it can only be reached through a validation bug.
    CString::new(bytes).unwrap_or_default()
}

fn path_c(path: &Path) -> CString {
    cstring(path.as_os_str().as_bytes())
}

/// `/a/b` -> `a/b`: a sandbox path relative to the new root.
fn relative(path: &Path) -> CString {
    let bytes = path.as_os_str().as_bytes();
    cstring(bytes.strip_prefix(b"/").unwrap_or(bytes))
}

impl Plan {
    /// Prepares `spec` (already validated, its sources resolved by [`canonical_sources`]).
    pub fn new(spec: &Spec, base: &Base) -> Plan {
        let builder = path_c(&spec.builder);
        let argv: Vec<CString> = std::iter::once(builder.clone())
            .chain(spec.args.iter().map(|a| cstring(a.as_bytes())))
            .collect();
        let envp: Vec<CString> = spec
            .environment()
            .iter()
            .map(|e| cstring(e.as_bytes()))
            .collect();
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let binds: Vec<BindPlan> = spec
            .binds
            .iter()
            .map(|b| BindPlan {
                source: path_c(&b.source),
                source_path: b.source.clone(),
                under_root: b
                    .source
                    .strip_prefix(&base.root_mountpoint_path)
                    .ok()
                    .map(|rel| match rel.as_os_str().is_empty() {
                        true => c".".to_owned(),
                        false => path_c(rel),
                    }),
                target: relative(&b.target),
                writable: b.writable,
            })
            .collect();
        let steps = (0..binds.len())
            .map(|index| Step::Bind { index })
            .chain(spec.tmpfs.iter().map(|t| Step::Tmpfs {
                target: relative(t),
            }))
            .chain(spec.symlinks.iter().map(|s| Step::Symlink {
                path: relative(&s.path),
                to: path_c(&s.to),
            }))
            .collect::<Vec<Step>>();
        let mut created = std::collections::BTreeSet::new();
        let step_parents = steps
            .iter()
            .map(|step| {
                let target = match step {
                    Step::Bind { index } => &binds[*index].target,
                    Step::Tmpfs { target } => target,
                    Step::Symlink { path, .. } => path,
                };
                parents(target)
                    .filter(|p| created.insert(p.clone()))
                    .collect()
            })
            .collect();
        Plan {
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            argv,
            envp,
            builder,
            builder_path: spec.builder.clone(),
            cwd: path_c(&spec.cwd),
            cwd_path: spec.cwd.clone(),
            binds,
            steps,
            step_parents,
            hostname: spec.hostname.as_bytes().to_vec(),
            memory_limit: spec.memory_limit_bytes,
            process_limit: spec.process_limit,
        }
    }
}

/// Resolves the symbolic links in the directory part of every bind source (on the host side,
/// in the caller's mount namespace), keeping the last component as it is: a source that is
/// a link is still recreated as that link. Init then finds sources under the covered
/// [`Base::root_mountpoint`] by a plain prefix test, whatever links led there. A directory
/// that cannot be resolved is left as given: opening the source reports it.
pub fn canonical_sources(spec: &mut Spec) {
    let mut resolved: std::collections::HashMap<PathBuf, Option<PathBuf>> = Default::default();
    for bind in &mut spec.binds {
        let (Some(parent), Some(name)) = (bind.source.parent(), bind.source.file_name()) else {
            continue;
        };
        let real = resolved
            .entry(parent.to_owned())
            .or_insert_with(|| std::fs::canonicalize(parent).ok());
        if let Some(real) = real {
            bind.source = real.join(name);
        }
    }
}

/// `a/b/c` -> [`a`, `a/b`]: the parents of a relative path, outermost first.
pub fn parents(path: &std::ffi::CStr) -> impl Iterator<Item = CString> + '_ {
    let bytes = path.to_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'/')
        .map(move |(i, _)| cstring(&bytes[..i]))
}

/// For messages: a relative target back as its sandbox path.
pub fn sandbox_path(relative: &std::ffi::CStr) -> PathBuf {
    Path::new("/").join(OsStr::from_bytes(relative.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_outermost_first() {
        let p = CString::new("bramble/store/abc").unwrap();
        let got: Vec<_> = parents(&p).collect();
        assert_eq!(got, [c"bramble".to_owned(), c"bramble/store".to_owned()]);
        assert_eq!(parents(&CString::new("x").unwrap()).count(), 0);
        assert_eq!(sandbox_path(&p), Path::new("/bramble/store/abc"));
    }

    #[test]
    fn as_root_the_builder_maps_to_the_sandbox_id_and_root_only_to_0() {
        let base = Base::new((0, 0), (1000, 100), true, false, Some(880_803_999)).unwrap();
        assert_eq!(base.uid_map, b"0 0 1\n1000 880803999 1\n");
        assert_eq!(base.gid_map, b"0 0 1\n100 880803999 1\n");
        assert_eq!(base.switch_to, Some((1000, 100)));
        let base = Base::new((0, 0), (0, 0), true, false, Some(880_803_999)).unwrap();
        assert_eq!(base.uid_map, b"65535 0 1\n0 880803999 1\n");
        let base = Base::new((1000, 100), (1000, 100), true, false, None).unwrap();
        assert_eq!(base.uid_map, b"1000 1000 1\n");
        assert_eq!(base.switch_to, None);
    }

    #[test]
    fn each_parent_directory_is_created_once() {
        let mut spec = Spec::new("/bin/sh");
        for (source, target) in [
            ("/a", "/bramble/store/aaa"),
            ("/b", "/bramble/store/bbb"),
            ("/c", "/build"),
        ] {
            spec.binds.push(crate::spec::Bind {
                source: source.into(),
                target: target.into(),
                writable: false,
            });
        }
        spec.tmpfs.push("/bramble/tmp".into());
        spec.symlinks.push(crate::spec::Symlink {
            path: "/bramble/store/bin/sh".into(),
            to: "/bin/sh".into(),
        });
        let base = Base::new((1000, 100), (1000, 100), true, false, None).unwrap();
        let plan = Plan::new(&spec, &base);
        let c = |s: &str| CString::new(s).unwrap();
        assert_eq!(
            plan.step_parents,
            [
                vec![c("bramble"), c("bramble/store")],
                vec![],
                vec![],
                vec![],
                vec![c("bramble/store/bin")],
            ]
        );
    }

    #[test]
    fn sources_under_the_root_mountpoint_are_found_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("store")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut spec = Spec::new("/bin/sh");
        for (source, target) in [
            (link.join("store"), "/a"),
            (link.join("store/missing"), "/b"),
            (PathBuf::from("/usr"), "/c"),
        ] {
            spec.binds.push(crate::spec::Bind {
                source,
                target: target.into(),
                writable: false,
            });
        }
        canonical_sources(&mut spec);
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(spec.binds[0].source, real.join("store"));
        assert_eq!(spec.binds[1].source, real.join("store/missing"));
        assert_eq!(spec.binds[2].source, Path::new("/usr"));
        let mut base = Base::new((1000, 100), (1000, 100), true, false, None).unwrap();
        base.root_mountpoint_path = real.clone();
        let plan = Plan::new(&spec, &base);
        assert_eq!(plan.binds[0].under_root, Some(c"store".to_owned()));
        assert_eq!(plan.binds[1].under_root, Some(c"store/missing".to_owned()));
        assert_eq!(plan.binds[2].under_root, None);
    }
}

//! The spec turned into ready-to-use kernel arguments, before any namespace exists.
//!
//! Everything that can be computed once is computed here, on the host side: C strings for
//! every path, `argv`/`envp` pointer arrays, the id maps, the seccomp programs. The sandbox's
//! init then runs a fixed sequence of system calls without parsing or formatting.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use seccompiler::BpfProgram;

use crate::error::Error;
use crate::spec::{Network, Spec};

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
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub hostname: Vec<u8>,
    pub new_net: bool,
    pub filters: Vec<BpfProgram>,
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
    /// Prepares `spec` (already validated) for the current user.
    pub fn new(spec: &Spec, host_uid: u32, host_gid: u32) -> Result<Plan, Error> {
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
        let filters = crate::seccomp::filters().map_err(|e| {
            Error::setup(
                "cannot compile the seccomp filter",
                std::io::Error::other(e),
            )
        })?;
        Ok(Plan {
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
            uid_map: format!("{} {host_uid} 1\n", spec.uid).into_bytes(),
            gid_map: format!("{} {host_gid} 1\n", spec.gid).into_bytes(),
            hostname: spec.hostname.as_bytes().to_vec(),
            new_net: spec.network == Network::None,
            filters,
        })
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
        let plan = Plan::new(&spec, 1000, 100).unwrap();
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
}

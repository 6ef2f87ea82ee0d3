//! Tool objects and the `builtin:` builders that run them.
//!
//! A tool is a program of bramble's own (`bramble-debian`, `bramble-go`) with the dynamic loader and the
//! shared libraries of the running bramble process, laid out so that a sandboxed build can
//! run it without anything from the host:
//!
//! ```text
//! bin/<program>
//! lib/ld.so            the loader (run it: `lib/ld.so --library-path lib bin/<program>`)
//! lib/libc.so.6 ...    every shared library mapped into this process
//! ```
//!
//! The tool programs are built from this crate, so the libraries bramble itself loaded are
//! a superset of what they need. The loader is found by name (`ld-*.so*`) among the mapped
//! files; glibc's loader recognises itself by its soname, so `libc.so.6` asking for
//! `ld-linux-x86-64.so.2` is satisfied by `lib/ld.so`.
//!
//! # A tool is not part of any derivation's hash
//!
//! A derivation runs a tool by naming a builtin builder, [`DEBIAN_BUILDER`]
//! (`builtin:bramble-debian@<TOOL_VERSION>`) or [`GO_BUILDER`]
//! (`builtin:bramble-go@<TOOL_VERSION>`): the executor copies the tool's files into
//! `/build/.tool/` of that build's sandbox and runs `lib/ld.so --library-path lib
//! bin/<program> ARGS...` there, in the sandbox like any builder (no network, only the
//! derivation's inputs). The derivation records the tool's *name and protocol version*, not
//! its bytes, as `builtin:fetch_url` records no fetcher code. So a derivation that uses a
//! tool, a DAO's hash and its `[[dao]]` entry in `bramble.lock` are the same for every
//! build of bramble (debug or release, another commit, another machine), and `--locked`
//! keeps passing after an upgrade.
//!
//! What keeps this honest:
//! - a tool's *generated graph* is still checked against the lock: a `bramble-debian` that
//!   resolves or writes a different graph for a recorded package set fails `bramble build`
//!   (the graph hash, `engine::dao::Generated::graph_hash`, covers every generated
//!   derivation, and those name tools by builder too, never by bytes);
//! - [`TOOL_VERSION`] is bumped whenever a tool's output for the same arguments changes
//!   (another document, another assembled tree, other arguments): every derivation that
//!   runs the tool then gets a new hash, so old outputs and lock entries are not reused
//!   for new behaviour. A bramble that finds a builder of another version refuses it with
//!   a hint instead of running the tool it has;
//! - a tool's output is content-addressed like any build's, and `bramble build --check`
//!   rebuilds it with the running bramble's tool.
//!
//! Trade-off: as with Nix's `builtin:fetchurl`, two bramble builds of the same
//! [`TOOL_VERSION`] are trusted to behave the same; a change that forgets the bump is
//! caught only where a lock records the generated graph (DAOs), not for the assembly step.

use std::io;
use std::path::PathBuf;

/// Why a tool cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "the builder `{builder}` needs version {version} of the tool `{tool}`, this bramble has \
         version {TOOL_VERSION}"
    )]
    Version {
        builder: String,
        version: String,
        tool: &'static str,
    },
    #[error("`{name}` is not a bramble tool (the tools are {})", TOOLS.map(|t| format!("`{t}`")).join(", "))]
    Unknown { name: String },
    #[error("cannot find the running bramble")]
    CurrentExe { source: io::Error },
    #[error(
        "the tool `{}` does not exist",
        program.display()
    )]
    Missing {
        program: PathBuf,
        name: String,
        var: &'static str,
    },
    #[error("cannot read `/proc/self/maps`")]
    Maps { source: io::Error },
    #[error("cannot resolve `{}`", path.display())]
    Resolve { path: PathBuf, source: io::Error },
    #[error("no dynamic loader is mapped into bramble (a static build?)")]
    NoLoader,
}

impl crate::error::Diagnose for ToolError {
    fn class(&self) -> crate::error::Class {
        match self {
            ToolError::Version { .. } | ToolError::Unknown { .. } => crate::error::Class::User,
            _ => crate::error::Class::Environment,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ToolError::Version { .. } => Some(
                "use the `lib/` of the same bramble (`load(\"bramble/...\", ...)`), or a bramble \
                 of that version"
                    .into(),
            ),
            ToolError::Missing { name, var, .. } => {
                Some(format!("install `{name}` next to `bramble` or set {var}"))
            }
            _ => None,
        }
    }
}

/// The tools bramble can provide.
pub const TOOLS: [&str; 2] = ["bramble-debian", "bramble-go"];

/// The version of the tools' protocol: their arguments, the documents they write and the
/// trees they assemble. Bump it (and the `@N` in `lib/debian.bramble` and `lib/go.bramble`)
/// whenever any of those changes for the same inputs.
pub const TOOL_VERSION: u32 = 1;

/// The builder of a derivation that runs `bramble-debian` (see the module docs).
pub const DEBIAN_BUILDER: &str = "builtin:bramble-debian@1";

/// The builder of a derivation that runs `bramble-go` (Go modules, `crate::golang`).
pub const GO_BUILDER: &str = "builtin:bramble-go@1";

/// Each tool's builder.
pub const BUILDERS: [(&str, &str); 2] = [
    (DEBIAN_BUILDER, "bramble-debian"),
    (GO_BUILDER, "bramble-go"),
];

/// Where the executor puts a tool's files in the sandbox's build directory.
pub const SANDBOX_TOOL_DIR: &str = ".tool";

/// The tool a builtin `builder` runs, if it names one: `Ok(None)` for a builder that is not
/// a tool's, an error for `builtin:<tool>@N` of another version.
pub fn tool_of(builder: &str) -> Result<Option<&'static str>, ToolError> {
    for (b, tool) in BUILDERS {
        if builder == b {
            return Ok(Some(tool));
        }
        if let Some(version) = builder
            .strip_prefix("builtin:")
            .and_then(|r| r.strip_prefix(tool))
            .and_then(|r| r.strip_prefix('@'))
        {
            return Err(ToolError::Version {
                builder: builder.to_owned(),
                version: version.to_owned(),
                tool,
            });
        }
    }
    Ok(None)
}

/// The file name of the bundled loader.
pub const LOADER: &str = "ld.so";

/// The entries of tool `name`: (path in the object, host file), sorted by the former.
pub fn entries(name: &str) -> Result<Vec<(String, PathBuf)>, ToolError> {
    if !TOOLS.contains(&name) {
        return Err(ToolError::Unknown {
            name: name.to_owned(),
        });
    }
    let var = if name == "bramble-go" {
        crate::env::BRAMBLE_GO_TOOL
    } else {
        crate::env::BRAMBLE_DEBIAN_TOOL
    };
    let program = match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|source| ToolError::CurrentExe { source })?
            .with_file_name(name),
    };
    if !program.is_file() {
        return Err(ToolError::Missing {
            program,
            name: name.to_owned(),
            var,
        });
    }
    bundle(name, program)
}

/// The entries of tool `name` whose program is `program`.
fn bundle(name: &str, program: PathBuf) -> Result<Vec<(String, PathBuf)>, ToolError> {
    let maps =
        std::fs::read_to_string("/proc/self/maps").map_err(|source| ToolError::Maps { source })?;
    let mut entries = vec![(format!("bin/{name}"), program)];
    let mut seen = std::collections::BTreeSet::new();
    let mut loader = None;
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let file = std::path::Path::new(path);
        let Some(base) = file.file_name().and_then(|b| b.to_str()) else {
            continue;
        };
        if !path.starts_with('/') || !base.contains(".so") || !seen.insert(base.to_owned()) {
            continue;
        }
        let real = std::fs::canonicalize(file).map_err(|source| ToolError::Resolve {
            path: file.to_owned(),
            source,
        })?;
        if base.starts_with("ld-") {
            loader = Some(real);
        } else {
            entries.push((format!("lib/{}", soname(base)), real));
        }
    }
    let loader = loader.ok_or(ToolError::NoLoader)?;
    entries.push((format!("lib/{LOADER}"), loader));
    entries.sort();
    Ok(entries)
}

/// The conventional soname of a library file: `liblzma.so.5.4.1` is `liblzma.so.5` (the
/// mapped path is the real file; programs ask for the soname).
fn soname(file: &str) -> &str {
    let Some(at) = file.find(".so.") else {
        return file;
    };
    let major = at + 4;
    match file[major..].find('.') {
        Some(dot) => &file[..major + dot],
        None => file,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tool_object_holds_the_loader_and_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("bramble-debian");
        std::fs::write(&fake, "program").unwrap();
        let entries = super::bundle("bramble-debian", fake.clone()).unwrap();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(entries[0], ("bin/bramble-debian".to_owned(), fake));
        assert!(names.contains(&"lib/ld.so"), "{names:?}");
        assert!(names.contains(&"lib/libc.so.6"), "{names:?}");
        assert_eq!(super::soname("liblzma.so.5.4.1"), "liblzma.so.5");
        assert_eq!(super::soname("libc.so.6"), "libc.so.6");
        assert_eq!(super::soname("libfoo.so"), "libfoo.so");
        assert_eq!(
            super::DEBIAN_BUILDER,
            format!("builtin:bramble-debian@{}", super::TOOL_VERSION)
        );
        assert_eq!(
            super::tool_of(super::DEBIAN_BUILDER).unwrap(),
            Some("bramble-debian")
        );
        assert_eq!(super::tool_of("builtin:fetch_url").unwrap(), None);
        assert!(
            super::tool_of("builtin:bramble-debian@0")
                .unwrap_err()
                .to_string()
                .contains("version 0")
        );
        assert_eq!(
            super::tool_of(super::GO_BUILDER).unwrap(),
            Some("bramble-go")
        );
        let newer = super::tool_of("builtin:bramble-go@7").unwrap_err();
        assert_eq!(
            newer.to_string(),
            format!(
                "the builder `builtin:bramble-go@7` needs version 7 of the tool `bramble-go`, \
                 this bramble has version {}",
                super::TOOL_VERSION
            )
        );
        assert_eq!(
            crate::error::Diagnose::hint(&newer).unwrap(),
            "use the `lib/` of the same bramble (`load(\"bramble/...\", ...)`), or a bramble of \
             that version"
        );
        assert_eq!(
            super::entries("nope").unwrap_err().to_string(),
            "`nope` is not a bramble tool (the tools are `bramble-debian`, `bramble-go`)"
        );
    }
}

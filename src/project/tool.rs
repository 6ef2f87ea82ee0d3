//! Tool objects: a program of bramble's own (`bramble-debian`) with the dynamic loader and
//! shared libraries of the running bramble process, as one store object that a sandboxed
//! build can run without anything from the host:
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

use std::path::PathBuf;

/// The tools bramble can provide.
pub const TOOLS: [&str; 1] = ["bramble-debian"];

/// The file name of the bundled loader.
pub const LOADER: &str = "ld.so";

/// The entries of tool `name`: (path in the object, host file), sorted by the former.
pub fn entries(name: &str) -> Result<Vec<(String, PathBuf)>, String> {
    if !TOOLS.contains(&name) {
        return Err(format!(
            "`{name}` is not a bramble tool (the tools are {})",
            TOOLS.map(|t| format!("`{t}`")).join(", ")
        ));
    }
    let program = match std::env::var_os(crate::env::BRAMBLE_DEBIAN_TOOL).filter(|v| !v.is_empty())
    {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the running bramble: {e}"))?
            .with_file_name(name),
    };
    if !program.is_file() {
        return Err(format!(
            "the tool `{}` does not exist\nhint: install `{name}` next to `bramble` or set {}",
            program.display(),
            crate::env::BRAMBLE_DEBIAN_TOOL
        ));
    }
    bundle(name, program)
}

/// The entries of tool `name` whose program is `program`.
fn bundle(name: &str, program: PathBuf) -> Result<Vec<(String, PathBuf)>, String> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("cannot read `/proc/self/maps`: {e}"))?;
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
        let real = std::fs::canonicalize(file)
            .map_err(|e| format!("cannot resolve `{}`: {e}", file.display()))?;
        if base.starts_with("ld-") {
            loader = Some(real);
        } else {
            entries.push((format!("lib/{}", soname(base)), real));
        }
    }
    let loader = loader.ok_or("no dynamic loader is mapped into bramble (a static build?)")?;
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
        assert!(
            super::entries("nope")
                .unwrap_err()
                .contains("not a bramble tool")
        );
    }
}

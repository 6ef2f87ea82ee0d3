//! Lay out fetched module files as a module proxy that `go` reads through
//! `GOPROXY=file://<dir>` (the GOPROXY protocol on disk):
//!
//! ```text
//! <escaped module>/@v/list                     the versions, one a line
//! <escaped module>/@v/<escaped version>.info   {"Version":"<version>"}
//! <escaped module>/@v/<escaped version>.mod    -> the fetched .mod (a symlink into the store)
//! <escaped module>/@v/<escaped version>.zip    -> the fetched .zip (a module needed only for
//!                                                 its go.mod has none)
//! ```
//!
//! The files are symlinks to the fetched store objects, so the proxy costs nothing to build
//! and refers to them (they are its references, kept by `gc` and mounted with it).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::engine::fetch::h1::unescape;

/// Write the proxy into `out` (created) from `args`: groups of four, `<escaped module>
/// <escaped version> <zip path or -> <mod path or ->`. Returns the number of module versions.
pub fn assemble(out: &Path, args: &[String]) -> Result<usize, String> {
    if !args.len().is_multiple_of(4) {
        return Err(format!(
            "expected groups of `<module> <version> <zip> <mod>`, got {} arguments",
            args.len()
        ));
    }
    let io = |p: &Path, e: std::io::Error| format!("`{}`: {e}", p.display());
    fs::create_dir(out).map_err(|e| io(out, e))?;
    let mut versions: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for group in args.chunks(4) {
        let [module, version, zip, module_file] = group else {
            unreachable!("chunks of four")
        };
        let plain_version = unescape(version)
            .filter(|v| v.starts_with('v') && !v.contains('/'))
            .ok_or_else(|| format!("`{version}` is not an escaped module version"))?;
        if unescape(module).is_none()
            || module.starts_with('/')
            || module
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c == "@v")
        {
            return Err(format!("`{module}` is not an escaped module path"));
        }
        let dir = out.join(module).join("@v");
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        for (ext, target) in [("zip", zip), ("mod", module_file)] {
            if target == "-" {
                continue;
            }
            let link = dir.join(format!("{version}.{ext}"));
            std::os::unix::fs::symlink(target, &link).map_err(|e| io(&link, e))?;
        }
        let info = dir.join(format!("{version}.info"));
        let body = serde_json::json!({ "Version": plain_version }).to_string();
        fs::write(&info, body).map_err(|e| io(&info, e))?;
        versions.entry(module).or_default().push(plain_version);
    }
    let count = versions.values().map(Vec::len).sum();
    for (module, mut list) in versions {
        list.sort();
        let file = out.join(module).join("@v").join("list");
        fs::write(&file, list.join("\n") + "\n").map_err(|e| io(&file, e))?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_layout() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let args: Vec<String> = [
            "example.com/!a",
            "v1.0.0",
            "/z1",
            "/m1",
            "example.com/!a",
            "v1.1.0",
            "-",
            "/m2",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(assemble(&out, &args).unwrap(), 2);
        let v = out.join("example.com/!a/@v");
        assert_eq!(
            fs::read_link(v.join("v1.0.0.zip")).unwrap(),
            Path::new("/z1")
        );
        assert_eq!(
            fs::read_link(v.join("v1.1.0.mod")).unwrap(),
            Path::new("/m2")
        );
        assert!(!v.join("v1.1.0.zip").exists());
        assert_eq!(
            fs::read_to_string(v.join("v1.0.0.info")).unwrap(),
            r#"{"Version":"v1.0.0"}"#
        );
        assert_eq!(
            fs::read_to_string(v.join("list")).unwrap(),
            "v1.0.0\nv1.1.0\n"
        );
        for bad in [
            ["../x", "v1.0.0", "-", "-"],
            ["a", "1.0", "-", "-"],
            ["a/@v/b", "v1.0.0", "-", "-"],
        ] {
            let out = t.path().join("bad");
            let _ = fs::remove_dir_all(&out);
            assert!(assemble(&out, &bad.map(str::to_owned)).is_err(), "{bad:?}");
        }
    }
}

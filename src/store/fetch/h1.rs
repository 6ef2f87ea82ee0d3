//! The `h1:` pin: Go's module hash (`golang.org/x/mod/sumdb/dirhash`, `Hash1`), as `go.sum`
//! records it, and the module paths of the GOPROXY protocol.
//!
//! `Hash1` of a list of files: for each file, sorted by name (byte order), the line
//! `<sha256 of its content, lower-case hex>  <name>\n`; the hash is the sha256 of those lines,
//! written `h1:` + standard base64 (padded). A module's zip is hashed over its entries (names
//! as in the zip, `<module>@<version>/<path>`); a `.mod` file is hashed as the single file
//! `go.mod` (the `<module> <version>/go.mod h1:...` lines of `go.sum`).
//!
//! A fetch pinned by `h1` is checked on the downloaded file, before anything is unpacked or
//! stored. The zip is checked strictly first: no absolute names, no `.`/`..` or empty
//! components, no backslashes, no directory, symlink or special entries, no two names equal
//! up to case, every entry below `<module>@<version>/` (the module and version the URL
//! names, for a `.../<escaped module>/@v/<version>.zip` URL; otherwise one common
//! `<something>@<version>/` prefix), and sizes within Go's own limits.

use std::collections::BTreeSet;
use std::io::Read;

use sha2::{Digest, Sha256};

/// Largest module zip Go accepts (`modzip.MaxZipFile`).
pub const MAX_ZIP: u64 = 500 << 20;
/// Largest `go.mod` Go accepts (`modzip.MaxGoMod`).
pub const MAX_GO_MOD: u64 = 16 << 20;

/// A module hash (`h1:<base64 of 32 bytes>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct H1(pub [u8; 32]);

impl std::fmt::Display for H1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "h1:{}", data_encoding::BASE64.encode(&self.0))
    }
}

impl std::str::FromStr for H1 {
    type Err = String;

    fn from_str(text: &str) -> Result<H1, String> {
        let bad = || format!("`{text}` is not `h1:` followed by the base64 of 32 bytes");
        let b64 = text.strip_prefix("h1:").ok_or_else(bad)?;
        let bytes = data_encoding::BASE64
            .decode(b64.as_bytes())
            .map_err(|_| bad())?;
        bytes.try_into().map(H1).map_err(|_| bad())
    }
}

/// `Hash1` of `files`: (name, sha256 of the content), in any order.
pub fn hash1(files: &[(String, [u8; 32])]) -> Result<H1, String> {
    let mut sorted: Vec<&(String, [u8; 32])> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (name, sha) in sorted {
        if name.contains('\n') {
            return Err(format!("the file name {name:?} holds a newline"));
        }
        h.update(format!("{}  {name}\n", super::sha256_hex(sha)));
    }
    Ok(H1(h.finalize().into()))
}

/// The hash of a `.mod` file: `Hash1` of the single file `go.mod`.
pub fn hash_mod(content: &[u8]) -> H1 {
    hash1(&[("go.mod".to_owned(), Sha256::digest(content).into())])
        .expect("`go.mod` holds no newline")
}

/// The module and version a `mirror://NAME/<escaped module>/@v/<escaped version>.zip` (or
/// `.mod`) URL names, unescaped. `None` for another URL: an http(s) URL's path may start with
/// the proxy's own base path, so only a mirror URL says where the module path begins.
pub fn module_of_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("mirror://")?;
    let (_, path) = rest.split_once('/')?;
    let (module, version) = path_module_version(path)?;
    Some((unescape(module)?, unescape(version)?))
}

/// `(<escaped module or more>, <escaped version>)` of a path ending in
/// `<module>/@v/<version>.zip` (or `.mod`).
fn path_module_version(path: &str) -> Option<(&str, &str)> {
    let path = path.split(['?', '#']).next()?;
    let (module, file) = path.rsplit_once("/@v/")?;
    let version = file
        .strip_suffix(".zip")
        .or_else(|| file.strip_suffix(".mod"))?;
    Some((module, version))
}

/// Whether a zip's top directory `<module>@<version>/` fits the URL it came from: exactly the
/// module and version of a mirror URL; for another URL, the version of its file name and a
/// module path that ends its path (`.../<base>/<module>/@v/<version>.zip`).
pub fn top_fits_url(top: &str, url: &str) -> bool {
    let Some((module, version)) = top.strip_suffix('/').and_then(|t| t.rsplit_once('@')) else {
        return false;
    };
    if let Some((m, v)) = module_of_url(url) {
        return m == module && v == version;
    }
    let Some((path, v)) = url
        .split_once("://")
        .and_then(|(_, r)| path_module_version(r))
        .and_then(|(p, v)| Some((unescape(p)?, unescape(v)?)))
    else {
        return false;
    };
    v == version && (path == module || path.ends_with(&format!("/{module}")))
}

/// What an `h1` pin is checked against, by the URL's file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A module zip: its entries.
    Zip,
    /// A `.mod` file: the single file `go.mod`.
    Mod,
}

impl Target {
    /// The target of a URL ending in `.zip` or `.mod`.
    pub fn of_url(url: &str) -> Option<Target> {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        if path.ends_with(".zip") {
            Some(Target::Zip)
        } else if path.ends_with(".mod") {
            Some(Target::Mod)
        } else {
            None
        }
    }
}

/// Hash a module zip over its entries, after checking every entry name (see the module docs).
/// `prefix` is the `<module>@<version>/` every name must start with, when known. Returns the
/// hash and the `<module>@<version>/` its entries are below (`None` for an empty zip).
pub fn hash_zip<R: Read + std::io::Seek>(
    reader: R,
    prefix: Option<&str>,
) -> Result<(H1, Option<String>), String> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a zip archive: {e}"))?;
    let mut files = Vec::with_capacity(zip.len());
    let mut folded = BTreeSet::new();
    let mut common: Option<String> = prefix.map(str::to_owned);
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| format!("cannot read entry {i}: {e}"))?;
        let name = std::str::from_utf8(f.name_raw())
            .map_err(|_| format!("the name of entry {i} is not UTF-8"))?
            .to_owned();
        check_name(&name)?;
        if f.encrypted() {
            return Err(format!("`{name}` is encrypted"));
        }
        let kind = f.unix_mode().unwrap_or(0) & libc::S_IFMT;
        if f.is_dir() || f.is_symlink() || (kind != 0 && kind != libc::S_IFREG) {
            return Err(format!(
                "`{name}` is not a regular file (a module zip holds only files)"
            ));
        }
        // Every entry below one `<module>@<version>/`.
        let top = match name
            .find('@')
            .and_then(|at| name[at..].find('/').map(|slash| at + slash))
        {
            Some(end) => &name[..=end],
            None => {
                return Err(format!(
                    "`{name}` is not below a `<module>@<version>/` directory"
                ));
            }
        };
        match &common {
            None => common = Some(top.to_owned()),
            Some(p) if name.starts_with(p.as_str()) => {}
            Some(p) => return Err(format!("`{name}` is not below `{p}`")),
        }
        if !folded.insert(name.to_lowercase()) {
            return Err(format!(
                "`{name}` is in the zip twice (names are compared ignoring case)"
            ));
        }
        let mut h = Sha256::new();
        let mut limited = (&mut f).take(MAX_ZIP + 1 - total);
        let n = std::io::copy(&mut limited, &mut h)
            .map_err(|e| format!("cannot read `{name}`: {e}"))?;
        total += n;
        if total > MAX_ZIP {
            return Err(format!(
                "the files of the module zip are larger than {MAX_ZIP} bytes"
            ));
        }
        files.push((name, h.finalize().into()));
    }
    Ok((hash1(&files)?, common))
}

/// An entry name of a module zip: relative, `/`-separated, no `.`, `..` or empty components,
/// no backslash or newline.
fn check_name(name: &str) -> Result<(), String> {
    if name.starts_with('/') {
        return Err(format!("`{name}` is an absolute name"));
    }
    if name.contains('\\') || name.contains('\n') || name.contains('\0') {
        return Err(format!(
            "`{name}` holds a backslash, a newline or a NUL byte"
        ));
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "`{name}` has an empty, `.` or `..` component (a zip entry may not climb out of its module)"
        ));
    }
    Ok(())
}

/// Escape a module path or version for the GOPROXY protocol: every upper-case letter becomes
/// `!` and its lower-case form. `None` for a path that already holds `!`.
pub fn escape(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '!' {
            return None;
        }
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The inverse of [`escape`]; `None` for an escaped path that is not well-formed (an
/// upper-case letter, or `!` not followed by a lower-case letter).
pub fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut bang = false;
    for c in escaped.chars() {
        if bang {
            if !c.is_ascii_lowercase() {
                return None;
            }
            out.push(c.to_ascii_uppercase());
            bang = false;
        } else if c == '!' {
            bang = true;
        } else if c.is_ascii_uppercase() {
            return None;
        } else {
            out.push(c);
        }
    }
    (!bang).then_some(out)
}

/// A zip of `entries` (name, content), stored or deflated (for tests).
#[cfg(test)]
pub(crate) fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (i, (name, body)) in entries.iter().enumerate() {
        let method = if i % 2 == 0 {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        w.start_file(*name, opts).unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: [(&str, &[u8]); 3] = [
        (
            "example.com/a@v1.0.0/go.mod",
            b"module example.com/a\n\ngo 1.19\n",
        ),
        (
            "example.com/a@v1.0.0/a.go",
            b"package a\n\nfunc Hello() string { return \"a\" }\n",
        ),
        ("example.com/a@v1.0.0/LICENSE", b"none\n"),
    ];

    /// Vectors computed by Go itself (go1.19.8, Debian's `golang-1.19-go`): the zip of
    /// `MODULE` served by a `file://` GOPROXY, `GOFLAGS=-mod=mod GONOSUMDB=* go mod download
    /// -json example.com/a@v1.0.0` printed these `Sum` and `GoModSum` (h1 depends only on
    /// names and contents, not on the zip's layout or compression).
    const GO_SUM_ZIP: &str = "h1:OA7LnY1oYP1T3IvELMcxEsinjuvi0jU+H+9bS2wl0j4=";
    const GO_SUM_MOD: &str = "h1:ZAUd/2yOBdp2YItVB+WY5e20QrjfDEAN5lnHVh0qm7A=";

    #[test]
    fn h1_of_a_module_zip_and_its_go_mod_match_go() {
        let zip = zip_of(&MODULE);
        let (h, top) = hash_zip(std::io::Cursor::new(&zip), Some("example.com/a@v1.0.0/")).unwrap();
        assert_eq!(top.as_deref(), Some("example.com/a@v1.0.0/"));
        assert_eq!(h.to_string(), GO_SUM_ZIP);
        assert_eq!(hash_mod(MODULE[0].1).to_string(), GO_SUM_MOD);
        // Independently: the lines, hashed by hand.
        let mut lines = String::new();
        let mut sorted = MODULE.to_vec();
        sorted.sort();
        for (name, body) in sorted {
            lines.push_str(&format!(
                "{}  {name}\n",
                super::super::sha256_hex(&Sha256::digest(body).into())
            ));
        }
        let by_hand = H1(Sha256::digest(lines.as_bytes()).into());
        assert_eq!(h, by_hand);
        // Round trip of the text form.
        assert_eq!(GO_SUM_ZIP.parse::<H1>().unwrap(), h);
        // Another order of entries, the same hash.
        let mut reversed = MODULE.to_vec();
        reversed.reverse();
        assert_eq!(
            hash_zip(std::io::Cursor::new(zip_of(&reversed)), None)
                .unwrap()
                .0,
            h
        );
    }

    #[test]
    fn a_changed_file_changes_the_hash() {
        let mut changed = MODULE.to_vec();
        changed[2] = ("example.com/a@v1.0.0/LICENSE", b"none.\n");
        let (h, _) = hash_zip(std::io::Cursor::new(zip_of(&changed)), None).unwrap();
        assert_ne!(h.to_string(), GO_SUM_ZIP);
    }

    #[test]
    fn bad_zips_are_refused() {
        type Entries<'a> = &'a [(&'a str, &'a [u8])];
        let cases: [(Entries, &str); 7] = [
            (&[("example.com/a@v1.0.0/../x", b"")], "`..`"),
            (&[("/example.com/a@v1.0.0/x", b"")], "absolute"),
            (&[("x.go", b"")], "not below"),
            (
                &[
                    ("example.com/a@v1.0.0/x", b""),
                    ("example.com/b@v1.0.0/y", b""),
                ],
                "not below `example.com/a@v1.0.0/`",
            ),
            (
                &[
                    ("example.com/a@v1.0.0/x", b""),
                    ("example.com/a@v1.0.0/X", b""),
                ],
                "twice",
            ),
            (&[("example.com/a@v1.0.0//x", b"")], "empty"),
            (&[("example.com/a@v1.0.0/a\\b", b"")], "backslash"),
        ];
        for (entries, want) in cases {
            let err = hash_zip(std::io::Cursor::new(zip_of(entries)), None).unwrap_err();
            assert!(err.contains(want), "{entries:?}: {err}");
        }
        // The URL's module and version are enforced.
        let err = hash_zip(
            std::io::Cursor::new(zip_of(&MODULE)),
            Some("example.com/b@v1.0.0/"),
        )
        .unwrap_err();
        assert!(err.contains("not below `example.com/b@v1.0.0/`"), "{err}");
        assert!(
            hash_zip(std::io::Cursor::new(b"not a zip".to_vec()), None)
                .unwrap_err()
                .contains("not a zip")
        );
    }

    #[test]
    fn module_paths_are_escaped_as_goproxy_does() {
        for (path, escaped) in [
            ("github.com/Azure/azure-sdk", "github.com/!azure/azure-sdk"),
            ("example.com/a", "example.com/a"),
            ("v1.0.0-RC1", "v1.0.0-!r!c1"),
        ] {
            assert_eq!(escape(path).as_deref(), Some(escaped));
            assert_eq!(unescape(escaped).as_deref(), Some(path));
        }
        assert_eq!(escape("a!b"), None);
        assert_eq!(unescape("a!B"), None);
        assert_eq!(unescape("aB"), None);
        assert_eq!(unescape("a!"), None);
        assert_eq!(
            module_of_url("mirror://goproxy/github.com/!azure/x/@v/v1.2.3.zip"),
            Some(("github.com/Azure/x".to_owned(), "v1.2.3".to_owned()))
        );
        assert_eq!(
            module_of_url("http://127.0.0.1:1/example.com/a/@v/v1.0.0.mod"),
            None
        );
        assert_eq!(module_of_url("mirror://goproxy/x.zip"), None);
        let top = "example.com/A@v1.0.0/";
        assert!(top_fits_url(
            top,
            "mirror://goproxy/example.com/!a/@v/v1.0.0.zip"
        ));
        assert!(!top_fits_url(
            top,
            "mirror://goproxy/base/example.com/!a/@v/v1.0.0.zip"
        ));
        assert!(!top_fits_url(
            top,
            "mirror://goproxy/example.com/!a/@v/v1.0.1.zip"
        ));
        assert!(top_fits_url(
            top,
            "http://h/base/example.com/!a/@v/v1.0.0.zip"
        ));
        assert!(top_fits_url(top, "http://h/example.com/!a/@v/v1.0.0.zip"));
        assert!(!top_fits_url(top, "http://h/xexample.com/!a/@v/v1.0.0.zip"));
        assert!(!top_fits_url(top, "http://h/example.com/a/@v/v1.0.0.zip"));
        assert!(!top_fits_url(top, "http://h/x.zip"));
        assert_eq!(Target::of_url("http://h/x.zip?a"), Some(Target::Zip));
        assert_eq!(Target::of_url("http://h/x.mod"), Some(Target::Mod));
        assert_eq!(Target::of_url("http://h/x.tar"), None);
    }
}

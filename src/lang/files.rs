//! `files()`: glob patterns relative to the calling file's directory, sorted.
//!
//! Decisions: `*` and `?` never cross a `/`, `**` matches any number of directories; the walk
//! never follows symlinks (a matched symlink is kept as a symlink in the source object);
//! directories themselves are never matched; results are sorted byte-wise so that hashes do
//! not depend on directory iteration order. Patterns may not be absolute or contain `..`: a
//! file set never leaves the directory of the file that asked for it (and so the project).

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::Error;

/// Check one pattern and strip a leading `./`.
fn clean_pattern(pattern: &str) -> Result<&str, Error> {
    let p = pattern.strip_prefix("./").unwrap_or(pattern);
    if p.is_empty() {
        return Err(Error::BadPattern {
            pattern: pattern.to_owned(),
            reason: "the pattern is empty".into(),
        });
    }
    if p.starts_with('/') {
        return Err(Error::BadPattern {
            pattern: pattern.to_owned(),
            reason: "absolute patterns are not allowed: patterns are relative to the calling file's directory".into(),
        });
    }
    if p.split('/').any(|c| c == "..") {
        return Err(Error::BadPattern {
            pattern: pattern.to_owned(),
            reason: "`..` would leave the calling file's directory".into(),
        });
    }
    Ok(p)
}

fn build_set(patterns: &[String]) -> Result<GlobSet, Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let p = clean_pattern(pattern)?;
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::BadPattern {
                pattern: pattern.clone(),
                reason: e.kind().to_string(),
            })?;
        builder.add(glob);
    }
    builder.build().map_err(|e| Error::BadPattern {
        pattern: patterns.join(", "),
        reason: e.to_string(),
    })
}

/// Expand `include` minus `exclude` below `base`. `base_rel` is `base` relative to the
/// project root, for messages. Returns sorted relative `/`-separated paths.
pub fn glob(
    base: &Path,
    base_rel: &str,
    include: &[String],
    exclude: &[String],
    allow_empty: bool,
) -> Result<Vec<String>, Error> {
    let include_set = build_set(include)?;
    let exclude_set = build_set(exclude)?;
    let mut found = Vec::new();
    let walker = walkdir::WalkDir::new(base).follow_links(false).min_depth(1);
    for entry in walker {
        let entry = entry.map_err(|e| Error::Walk {
            path: e
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| base.display().to_string()),
            message: e
                .io_error()
                .map(|io| io.to_string())
                .unwrap_or_else(|| e.to_string()),
        })?;
        let file_type = entry.file_type();
        if file_type.is_dir() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(base) else {
            continue;
        };
        let Some(rel) = rel.to_str() else {
            return Err(Error::NonUtf8Path {
                path: entry.path().display().to_string(),
            });
        };
        if !include_set.is_match(rel) || exclude_set.is_match(rel) {
            continue;
        }
        let shown = join(base_rel, rel);
        if file_type.is_file() {
            // Refuse files we could not copy into the store later.
            std::fs::File::open(entry.path()).map_err(|e| Error::Unreadable {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        } else if !file_type.is_symlink() {
            return Err(Error::SpecialFile {
                path: shown,
                kind: describe(&file_type),
            });
        }
        found.push(rel.to_owned());
    }
    found.sort();
    found.dedup();
    if found.is_empty() && !allow_empty {
        return Err(Error::NoMatch {
            patterns: include.to_vec(),
            dir: if base_rel.is_empty() {
                ".".into()
            } else {
                base_rel.to_owned()
            },
        });
    }
    Ok(found)
}

fn join(base_rel: &str, rel: &str) -> String {
    if base_rel.is_empty() {
        rel.to_owned()
    } else {
        format!("{base_rel}/{rel}")
    }
}

fn describe(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_socket() {
        "a socket"
    } else if file_type.is_fifo() {
        "a fifo"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.txt", "a.txt", "sub/c.txt", "sub/deep/d.txt", "sub/e.go"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        dir
    }

    fn g(dir: &Path, inc: &[&str], exc: &[&str]) -> Result<Vec<String>, Error> {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        glob(dir, "", &s(inc), &s(exc), false)
    }

    #[test]
    fn star_does_not_cross_directories_and_results_are_sorted() {
        let d = tree();
        assert_eq!(g(d.path(), &["*.txt"], &[]).unwrap(), ["a.txt", "b.txt"]);
        assert_eq!(
            g(d.path(), &["**/*.txt"], &["sub/deep/**"]).unwrap(),
            ["a.txt", "b.txt", "sub/c.txt"]
        );
        assert_eq!(
            g(d.path(), &["./sub/**", "sub/e.go"], &[]).unwrap(),
            ["sub/c.txt", "sub/deep/d.txt", "sub/e.go"]
        );
    }

    #[test]
    fn rejects_escapes_and_empty_results() {
        let d = tree();
        assert!(matches!(
            g(d.path(), &["/etc/*"], &[]),
            Err(Error::BadPattern { .. })
        ));
        assert!(matches!(
            g(d.path(), &["../*"], &[]),
            Err(Error::BadPattern { .. })
        ));
        assert!(matches!(
            g(d.path(), &["a/[b"], &[]),
            Err(Error::BadPattern { .. })
        ));
        assert!(matches!(
            g(d.path(), &["*.rs"], &[]),
            Err(Error::NoMatch { .. })
        ));
        assert!(
            glob(d.path(), "", &["*.rs".into()], &[], true)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn rejects_fifos() {
        let d = tree();
        nix::unistd::mkfifo(&d.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            g(d.path(), &["*"], &[]),
            Err(Error::SpecialFile { kind: "a fifo", .. })
        ));
    }
}

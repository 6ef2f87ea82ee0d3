//! Adding a derivation's source files to the store.
//!
//! A source object holds exactly the listed files with their relative layout, regular files
//! keep only their executable bit, symlinks are kept as symlinks. Its address depends only on
//! that content (never on the host path or timestamps), so identical sources dedupe.

use std::path::Path;

use crate::store::{Hash, StorePath};

pub use crate::lang::SourceStore as SourceSink;

/// The store object name of every source object.
pub const SOURCE_NAME: &str = "source";

/// A [`SourceSink`] that computes content addresses without writing anything (`bramble
/// eval`, tests). Addresses: [`Hash::of_fields`] over, per file in order, its path, kind
/// (`f` regular, `x` executable, `l` symlink) and content or link target.
#[derive(Debug, Default)]
pub struct MemorySources;

impl SourceSink for MemorySources {
    fn add_sources(&self, _name: &str, root: &Path, files: &[String]) -> Result<StorePath, String> {
        let hash = content_hash(root, files)?;
        StorePath::new(hash, SOURCE_NAME).map_err(|e| e.to_string())
    }
}

/// The content address of a file set (see [`MemorySources`]).
pub fn content_hash(root: &Path, files: &[String]) -> Result<Hash, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut fields: Vec<Vec<u8>> = Vec::with_capacity(files.len() * 3);
    for file in files {
        let path = root.join(file);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("`{file}`: {e}"))?;
        let (kind, content) = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| format!("`{file}`: {e}"))?;
            (b"l", target.into_os_string().into_encoded_bytes())
        } else if meta.is_file() {
            let content = std::fs::read(&path).map_err(|e| format!("`{file}`: {e}"))?;
            let kind = if meta.permissions().mode() & 0o111 != 0 {
                b"x"
            } else {
                b"f"
            };
            (kind, content)
        } else {
            return Err(format!("`{file}` is not a regular file or symlink"));
        };
        fields.push(file.as_bytes().to_vec());
        fields.push(kind.to_vec());
        fields.push(content);
    }
    let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    Ok(Hash::of_fields("bramble-sources-v1", &refs))
}

//! Unpacking fetched archives: `tar` (plain, gzip, xz, bzip2, zstd), `zip` and Debian `.deb`
//! packages (an `ar` archive whose `data.tar.*` member is extracted). Pure of networking.
//!
//! # A fetched archive is hostile input
//!
//! The extractor never writes outside its target:
//!
//! - entry names are split on `/`; empty and `.` components are dropped; an absolute name or
//!   one with a `..` component is an error (never silently rewritten);
//! - everything is created relative to directory descriptors opened by this code, each
//!   intermediate directory with `O_DIRECTORY | O_NOFOLLOW`, files with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`: a symlink in the archive is created as a symlink and
//!   never followed afterwards, so "symlink `d` → `/etc`, then file `d/passwd`" is an error;
//! - a hardlink may only name a regular file this extraction created earlier; the link is
//!   made with `linkat` between our own descriptors, without following symlinks;
//! - devices, fifos, sockets and encrypted zip entries are errors;
//! - setuid, setgid and sticky bits are **stripped**, as Nix does: a store object cannot carry
//!   them (DESIGN §3), the bits are metadata of the archive rather than content a build could
//!   depend on, and rejecting them would make ordinary `.deb` packages (`mount`, `passwd`)
//!   unfetchable. Only the executable bit survives (0755 for executables, else 0644);
//! - [`UnpackLimits`] bound the bytes actually written (not the sizes the archive claims) and
//!   the number of entries, which defeats zip and tar bombs; the xz decoder's memory is
//!   bounded too.
//!
//! Duplicate names follow tar semantics (a later entry replaces an earlier file or symlink;
//! the replaced entry is unlinked, never written through); a directory is never replaced.
//!
//! A failed extraction leaves nothing: [`unpack`] creates its target itself and removes it
//! (through descriptors) on any error, so the caller never sees a partial tree.
//!
//! Nothing is stripped from the paths: a tarball's top-level directory stays in the result
//! (as with Bazel's `http_archive` without `strip_prefix`), so the tree is exactly what the
//! archive lists.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::store::archive::{COPY_BUFFER, check_target};
pub use crate::store::fetch::Format;
use crate::store::local::fs;

/// Memory the xz decoder may use (its dictionary); xz files made with `-9` need 64 MiB.
const XZ_MEMLIMIT: u64 = 256 << 20;
/// Deepest nesting of a path inside an archive.
const MAX_COMPONENTS: usize = 256;

/// Bounds on what one extraction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Largest sum of bytes written to files.
    pub max_bytes: u64,
    /// Largest number of entries (files, directories, symlinks, hardlinks).
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    /// 16 GiB and 2^20 entries, or `$BRAMBLE_MAX_UNPACKED` and
    /// `$BRAMBLE_MAX_UNPACKED_ENTRIES` (a bad value is ignored with a warning).
    fn default() -> UnpackLimits {
        UnpackLimits {
            max_bytes: super::size_from_env(crate::env::BRAMBLE_MAX_UNPACKED).unwrap_or(16 << 30),
            max_entries: std::env::var(crate::env::BRAMBLE_MAX_UNPACKED_ENTRIES)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or(1 << 20),
        }
    }
}

/// What an extraction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot {op} `{path}`")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the {format} archive `{archive}`")]
    Read {
        format: Format,
        archive: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the zip archive `{archive}`")]
    Zip {
        archive: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("archive entry `{entry}` has an unsafe name: {reason}")]
    UnsafeName { entry: String, reason: &'static str },
    #[error("archive entry `{entry}` would be written through the symlink or file `{through}`")]
    ThroughSymlink { entry: String, through: String },
    #[error("archive entry `{entry}` is a {kind}, which a fetched tree cannot contain")]
    Unsupported { entry: String, kind: &'static str },
    #[error(
        "archive entry `{entry}` is a hardlink to `{target}`, which is not a file unpacked before it"
    )]
    BadHardlink { entry: String, target: String },
    #[error("archive entry `{entry}` has an invalid symlink target: {reason}")]
    BadSymlink { entry: String, reason: &'static str },
    #[error("archive entry `{entry}` replaces a directory")]
    ReplacesDirectory { entry: String },
    #[error("the archive unpacks to more than {max} {what}")]
    TooLarge { what: &'static str, max: u64 },
    #[error("the .deb package `{archive}` has no `data.tar` member")]
    NoDebData { archive: PathBuf },
    #[error("the .deb package `{archive}` has a data member `{member}` of an unknown compression")]
    UnknownDebData { archive: PathBuf, member: String },
}

impl crate::error::Diagnose for UnpackError {
    fn class(&self) -> crate::error::Class {
        match self {
            UnpackError::Io { .. } => crate::error::Class::Environment,
            // An archive that cannot be read or is refused.
            _ => crate::error::Class::User,
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned()
}

/// Unpack the archive `archive` of format `format` into `dest`, which must not exist (its
/// parent must). On error `dest` is removed.
pub fn unpack(
    archive: &Path,
    format: Format,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let file = File::open(archive).map_err(|source| UnpackError::Io {
        op: "open",
        path: archive.to_owned(),
        source,
    })?;
    let mut ex = Extractor::create(dest, *limits)?;
    let result = match format {
        Format::Zip => ex.zip(file, archive),
        Format::Deb => ex.deb(file, archive),
        _ => decompress(format, BufReader::new(file), archive)
            .and_then(|stream| ex.tar(stream, format, archive)),
    };
    ex.conclude(result)
}

/// A reader that decompresses `r` as `format`'s compression (tar formats only).
fn decompress<'a, R: io::BufRead + 'a>(
    format: Format,
    r: R,
    archive: &Path,
) -> Result<Box<dyn Read + 'a>, UnpackError> {
    Ok(match format {
        Format::Tar => Box::new(r),
        Format::TarGz => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Format::TarXz => {
            let stream =
                xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, xz2::stream::CONCATENATED)
                    .map_err(|e| UnpackError::Read {
                        format,
                        archive: archive.to_owned(),
                        source: io::Error::other(e),
                    })?;
            Box::new(xz2::bufread::XzDecoder::new_stream(r, stream))
        }
        Format::TarBz2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        Format::TarZst => Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| {
            UnpackError::Read {
                format,
                archive: archive.to_owned(),
                source: e,
            }
        })?),
        Format::Zip | Format::Deb => unreachable!("not a tar format"),
    })
}

/// Split an archive entry name into safe components.
fn components(entry: &[u8]) -> Result<Vec<CString>, UnpackError> {
    let unsafe_name = |reason| UnpackError::UnsafeName {
        entry: lossy(entry),
        reason,
    };
    if entry.starts_with(b"/") {
        return Err(unsafe_name("absolute names are not allowed"));
    }
    if entry.contains(&0) {
        return Err(unsafe_name("names must not contain NUL"));
    }
    let mut out = Vec::new();
    for c in entry.split(|b| *b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => return Err(unsafe_name("`..` is not allowed")),
            c if c.len() > 255 => return Err(unsafe_name("a component is longer than 255 bytes")),
            c => out.push(CString::new(c).map_err(|_| unsafe_name("NUL in name"))?),
        }
    }
    if out.len() > MAX_COMPONENTS {
        return Err(unsafe_name("nested too deeply"));
    }
    Ok(out)
}

fn join(components: &[CString]) -> String {
    components
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Creates a tree below one directory descriptor.
struct Extractor {
    root: OwnedFd,
    dest: PathBuf,
    limits: UnpackLimits,
    stats: UnpackStats,
    /// Regular files created so far (hardlink targets).
    files: HashSet<Vec<CString>>,
    buf: Vec<u8>,
}

impl Extractor {
    fn create(dest: &Path, limits: UnpackLimits) -> Result<Extractor, UnpackError> {
        let io = |op| {
            move |e: rustix::io::Errno| UnpackError::Io {
                op,
                path: dest.to_owned(),
                source: e.into(),
            }
        };
        rfs::mkdir(dest, Mode::from_raw_mode(0o755)).map_err(io("create directory"))?;
        let root = rfs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("open directory"))?;
        Ok(Extractor {
            root,
            dest: dest.to_owned(),
            limits,
            stats: UnpackStats::default(),
            files: HashSet::new(),
            buf: Vec::new(),
        })
    }

    fn io_err(
        &self,
        op: &'static str,
        rel: &[CString],
    ) -> impl FnOnce(rustix::io::Errno) -> UnpackError {
        let path = self.dest.join(join(rel));
        move |e| UnpackError::Io {
            op,
            path,
            source: e.into(),
        }
    }

    /// On error remove everything written (through descriptors), so no partial tree is left.
    fn conclude(self, result: Result<(), UnpackError>) -> Result<UnpackStats, UnpackError> {
        match result {
            Ok(()) => Ok(self.stats),
            Err(e) => {
                let dest = self.dest.clone();
                drop(self);
                if let Err(rm) = fs::remove(&dest) {
                    tracing::warn!("cannot remove a partial extraction: {rm}");
                }
                Err(e)
            }
        }
    }

    fn count_entry(&mut self) -> Result<(), UnpackError> {
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(UnpackError::TooLarge {
                what: "entries",
                max: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Open (creating as needed) the directory holding `path`'s last component, never
    /// following a symlink. `path` must not be empty.
    fn parent(&self, path: &[CString], entry: &[u8]) -> Result<OwnedFd, UnpackError> {
        let mut dir = rfs::openat(
            &self.root,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.io_err("open directory", &[]))?;
        for (i, c) in path[..path.len() - 1].iter().enumerate() {
            match rfs::mkdirat(&dir, c.as_c_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(self.io_err("create directory", &path[..=i])(e)),
            }
            dir = match rfs::openat(
                &dir,
                c.as_c_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    return Err(UnpackError::ThroughSymlink {
                        entry: lossy(entry),
                        through: join(&path[..=i]),
                    });
                }
                Err(e) => return Err(self.io_err("open directory", &path[..=i])(e)),
            };
        }
        Ok(dir)
    }

    /// Remove a non-directory entry at `name` in `dir` so it can be replaced.
    fn make_room(
        &self,
        dir: BorrowedFd<'_>,
        name: &CString,
        path: &[CString],
        entry: &[u8],
    ) -> Result<(), UnpackError> {
        match rfs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io_err("stat", path)(e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                Err(UnpackError::ReplacesDirectory {
                    entry: lossy(entry),
                })
            }
            Ok(_) => rfs::unlinkat(dir, name.as_c_str(), AtFlags::empty())
                .map_err(self.io_err("remove", path)),
        }
    }

    fn directory(&mut self, entry: &[u8]) -> Result<(), UnpackError> {
        self.count_entry()?;
        let path = components(entry)?;
        if path.is_empty() {
            return Ok(());
        }
        let dir = self.parent(&path, entry)?;
        let name = &path[path.len() - 1];
        match rfs::mkdirat(&dir, name.as_c_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => {
                match rfs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Ok(()),
                    Ok(_) => {
                        self.make_room(dir.as_fd(), name, &path, entry)?;
                        rfs::mkdirat(&dir, name.as_c_str(), Mode::from_raw_mode(0o755))
                            .map_err(self.io_err("create directory", &path))?;
                        self.files.remove(&path);
                        Ok(())
                    }
                    Err(e) => Err(self.io_err("stat", &path)(e)),
                }
            }
            Err(e) => Err(self.io_err("create directory", &path)(e)),
        }
    }

    fn file(
        &mut self,
        entry: &[u8],
        mode: u32,
        contents: &mut dyn Read,
    ) -> Result<(), UnpackError> {
        self.count_entry()?;
        let path = components(entry)?;
        if path.is_empty() {
            return Err(UnpackError::UnsafeName {
                entry: lossy(entry),
                reason: "a file needs a name",
            });
        }
        let dir = self.parent(&path, entry)?;
        let name = &path[path.len() - 1];
        self.make_room(dir.as_fd(), name, &path, entry)?;
        let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let fd = rfs::openat(
            &dir,
            name.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(perm),
        )
        .map_err(self.io_err("create", &path))?;
        let mut out = File::from(fd);
        if self.buf.len() < COPY_BUFFER {
            self.buf.resize(COPY_BUFFER, 0);
        }
        loop {
            let n = match contents.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(UnpackError::Io {
                        op: "read the archive contents of",
                        path: self.dest.join(join(&path)),
                        source,
                    });
                }
            };
            self.stats.bytes += n as u64;
            if self.stats.bytes > self.limits.max_bytes {
                return Err(UnpackError::TooLarge {
                    what: "bytes",
                    max: self.limits.max_bytes,
                });
            }
            out.write_all(&self.buf[..n])
                .map_err(|source| UnpackError::Io {
                    op: "write",
                    path: self.dest.join(join(&path)),
                    source,
                })?;
        }
        // The umask may have cleared bits; set them exactly (never setuid/setgid/sticky).
        rfs::fchmod(&out, Mode::from_raw_mode(perm))
            .map_err(self.io_err("set permissions of", &path))?;
        self.files.insert(path);
        Ok(())
    }

    fn symlink(&mut self, entry: &[u8], target: &[u8]) -> Result<(), UnpackError> {
        self.count_entry()?;
        let path = components(entry)?;
        if path.is_empty() {
            return Err(UnpackError::UnsafeName {
                entry: lossy(entry),
                reason: "a symlink needs a name",
            });
        }
        check_target(target).map_err(|reason| UnpackError::BadSymlink {
            entry: lossy(entry),
            reason,
        })?;
        let dir = self.parent(&path, entry)?;
        let name = &path[path.len() - 1];
        self.make_room(dir.as_fd(), name, &path, entry)?;
        rfs::symlinkat(target, &dir, name.as_c_str())
            .map_err(self.io_err("create symlink", &path))?;
        self.files.remove(&path);
        Ok(())
    }

    fn hardlink(&mut self, entry: &[u8], target: &[u8]) -> Result<(), UnpackError> {
        self.count_entry()?;
        let path = components(entry)?;
        let bad = || UnpackError::BadHardlink {
            entry: lossy(entry),
            target: lossy(target),
        };
        let target_path = components(target)?;
        if path.is_empty() || target_path.is_empty() || !self.files.contains(&target_path) {
            return Err(bad());
        }
        if path == target_path {
            return Ok(());
        }
        let from_dir = self.parent(&target_path, target)?;
        let from = &target_path[target_path.len() - 1];
        // It must still be the regular file we wrote (never a symlink put there later).
        match rfs::statat(&from_dir, from.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
            _ => return Err(bad()),
        }
        let dir = self.parent(&path, entry)?;
        let name = &path[path.len() - 1];
        self.make_room(dir.as_fd(), name, &path, entry)?;
        rfs::linkat(
            &from_dir,
            from.as_c_str(),
            &dir,
            name.as_c_str(),
            AtFlags::empty(),
        )
        .map_err(self.io_err("create hardlink", &path))?;
        self.files.insert(path);
        Ok(())
    }

    fn tar(
        &mut self,
        stream: Box<dyn Read + '_>,
        format: Format,
        archive: &Path,
    ) -> Result<(), UnpackError> {
        let read_err = |source: io::Error| UnpackError::Read {
            format,
            archive: archive.to_owned(),
            source,
        };
        let mut ar = tar::Archive::new(stream);
        for entry in ar.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let name = entry.path_bytes().into_owned();
            let mode = entry.header().mode().unwrap_or(0o644);
            use tar::EntryType as T;
            match entry.header().entry_type() {
                T::Regular | T::Continuous | T::GNUSparse => self.file(&name, mode, &mut entry)?,
                T::Directory => self.directory(&name)?,
                T::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    self.symlink(&name, &target)?
                }
                T::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    self.hardlink(&name, &target)?
                }
                T::XGlobalHeader => {}
                T::Char | T::Block => {
                    return Err(UnpackError::Unsupported {
                        entry: lossy(&name),
                        kind: "device",
                    });
                }
                T::Fifo => {
                    return Err(UnpackError::Unsupported {
                        entry: lossy(&name),
                        kind: "fifo",
                    });
                }
                _ => {
                    return Err(UnpackError::Unsupported {
                        entry: lossy(&name),
                        kind: "tar entry of an unknown type",
                    });
                }
            }
        }
        Ok(())
    }

    fn zip(&mut self, file: File, archive: &Path) -> Result<(), UnpackError> {
        let zip_err = |source| UnpackError::Zip {
            archive: archive.to_owned(),
            source,
        };
        let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;
        if zip.len() as u64 > self.limits.max_entries {
            return Err(UnpackError::TooLarge {
                what: "entries",
                max: self.limits.max_entries,
            });
        }
        for i in 0..zip.len() {
            let mut f = zip.by_index(i).map_err(zip_err)?;
            let name = f.name_raw().to_vec();
            if f.encrypted() {
                return Err(UnpackError::Unsupported {
                    entry: lossy(&name),
                    kind: "encrypted file",
                });
            }
            let mode = f.unix_mode().unwrap_or(0);
            let kind = mode & libc::S_IFMT;
            if f.is_symlink() {
                let mut target = Vec::new();
                (&mut f)
                    .take(4096)
                    .read_to_end(&mut target)
                    .map_err(|source| UnpackError::Read {
                        format: Format::Zip,
                        archive: archive.to_owned(),
                        source,
                    })?;
                self.symlink(&name, &target)?;
            } else if f.is_dir() || kind == libc::S_IFDIR {
                self.directory(&name)?;
            } else if kind == 0 || kind == libc::S_IFREG {
                self.file(&name, mode, &mut f)?;
            } else {
                return Err(UnpackError::Unsupported {
                    entry: lossy(&name),
                    kind: "special file",
                });
            }
        }
        Ok(())
    }

    fn deb(&mut self, file: File, archive: &Path) -> Result<(), UnpackError> {
        let read_err = |source: io::Error| UnpackError::Read {
            format: Format::Deb,
            archive: archive.to_owned(),
            source,
        };
        let mut ar = ar::Archive::new(BufReader::new(file));
        while let Some(member) = ar.next_entry() {
            let member = member.map_err(read_err)?;
            let id = member.header().identifier().to_vec();
            let Some(suffix) = id.strip_prefix(b"data.tar") else {
                continue;
            };
            let format = match suffix {
                b"" => Format::Tar,
                b".gz" => Format::TarGz,
                b".xz" => Format::TarXz,
                b".bz2" => Format::TarBz2,
                b".zst" => Format::TarZst,
                _ => {
                    return Err(UnpackError::UnknownDebData {
                        archive: archive.to_owned(),
                        member: lossy(&id),
                    });
                }
            };
            let stream = decompress(format, BufReader::new(member), archive)?;
            return self.tar(stream, format, archive);
        }
        Err(UnpackError::NoDebData {
            archive: archive.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;

//! The file-system side of the archive format: dump a directory tree into any archive
//! [`Sink`], restore an archive (or any sink stream) into a new directory, and remove a tree.
//!
//! Every operation works through directory file descriptors (`openat`, `mkdirat`,
//! `symlinkat`, `unlinkat`) with `O_NOFOLLOW`, because the trees handled here may have been
//! written by a builder: a symlink planted in such a tree is archived as a symlink, never
//! followed, and a restore never writes through one (new entries are created with
//! `O_CREAT|O_EXCL` / `mkdirat` inside directories we created ourselves).
//!
//! The dumper rejects what the archive cannot represent faithfully: devices, fifos, sockets,
//! setuid/setgid files, hardlinks to files outside the tree (a file whose link count is not
//! fully accounted for inside the tree) and, when asked (build outputs), `user.*`/`trusted.*`
//! extended attributes. `security.*` and `system.*` attributes are set by the host (SELinux
//! labels, default ACLs), not by content, and are ignored; a restore never carries any xattr.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::store::archive::{ArchiveError, Limits, Sink, copy_buffer_len};
use crate::store::output::{Rewrite, RewriteReader};

/// Modification time given to every store object (seconds since the epoch), as in Nix.
pub const STORE_MTIME: i64 = 1;

/// Errors of the file-system side.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot {op} `{path}`")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("`{path}` is a {kind}, which a store object cannot contain")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("`{path}` has the setuid or setgid bit, which a store object cannot carry")]
    Setuid { path: PathBuf },
    #[error("`{path}` is a hardlink to a file outside the tree")]
    ForeignHardlink { path: PathBuf },
    #[error("`{path}` carries the extended attribute `{name}`, which a store object cannot carry")]
    Xattr { path: PathBuf, name: String },
    #[error("`{path}` changed while it was being read")]
    Changed { path: PathBuf },
    #[error("`{path}`: two entries have the same name after rewriting the placeholder")]
    DuplicateAfterRewrite { path: PathBuf },
    #[error("`{path}` nests deeper than {max} directories")]
    TooDeep { path: PathBuf, max: usize },
    #[error("`{path}` has a name the archive format cannot hold: {reason}")]
    BadName { path: PathBuf, reason: &'static str },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> TreeError + 'a {
    move |e| TreeError::Io {
        op,
        path: path.to_owned(),
        source: e.into(),
    }
}

fn std_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TreeError + 'a {
    move |source| TreeError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// How to dump.
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpOptions {
    /// Rewrite a 32-byte string in names, targets and contents while dumping.
    pub rewrite: Option<Rewrite>,
    /// Reject `user.*` and `trusted.*` extended attributes (for build outputs).
    pub reject_xattrs: bool,
}

/// What a dump saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Replacements made by the rewrite.
    pub rewrites: u64,
    /// Sum of file sizes.
    pub file_bytes: u64,
}

/// Split a host path into its parent directory (opened, following symlinks: the caller owns
/// it) and its last component.
fn open_parent(path: &Path) -> Result<(OwnedFd, CString), TreeError> {
    // `.`, `..` and `dir/.` name a directory without a final component: resolve them.
    let resolved;
    let path = if path.file_name().is_none()
        || path.ends_with(".")
        || path.as_os_str().as_bytes().ends_with(b"/.")
    {
        resolved = std::fs::canonicalize(path).map_err(std_err("resolve", path))?;
        resolved.as_path()
    } else {
        path
    };
    let name = path.file_name().ok_or_else(|| TreeError::Io {
        op: "open",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no final component"),
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fd = rfs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("open directory", parent))?;
    let name = CString::new(name.as_bytes()).map_err(|_| TreeError::BadName {
        path: path.to_owned(),
        reason: "a name must not contain NUL",
    })?;
    Ok((fd, name))
}

/// Serialise the tree at `path` (a directory, file or symlink; never followed) into `sink`.
pub fn dump<S>(path: &Path, sink: &mut S, options: &DumpOptions) -> Result<DumpStats, TreeError>
where
    S: Sink,
    S::Error: Into<TreeError>,
{
    let (parent, name) = open_parent(path)?;
    let mut dumper = Dumper {
        options: *options,
        stats: DumpStats::default(),
        links: HashMap::new(),
        max_depth: Limits::default().max_depth,
    };
    let mut rel = path.to_path_buf();
    dumper.node(parent.as_fd(), &name, None, &mut rel, sink, 0)?;
    // Every multiply-linked file must have all its links inside the tree.
    if let Some((_, (_, _, first))) = dumper.links.iter().find(|(_, (n, seen, _))| seen < n) {
        return Err(TreeError::ForeignHardlink {
            path: first.clone(),
        });
    }
    Ok(dumper.stats)
}

struct Dumper {
    options: DumpOptions,
    stats: DumpStats,
    /// (dev, ino) → (nlink, links seen, first path) for files with nlink > 1.
    links: HashMap<(u64, u64), (u64, u64, PathBuf)>,
    max_depth: usize,
}

impl Dumper {
    fn node<S>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        archive_name: Option<&[u8]>,
        path: &mut PathBuf,
        sink: &mut S,
        depth: usize,
    ) -> Result<(), TreeError>
    where
        S: Sink,
        S::Error: Into<TreeError>,
    {
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err("stat", path))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let mode = st.st_mode;
        if kind != FileType::Symlink && mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
            if kind == FileType::Directory {
                // setgid on a directory only decides the group of new files; not content.
            } else {
                return Err(TreeError::Setuid { path: path.clone() });
            }
        }
        match kind {
            FileType::RegularFile => {
                let fd = rfs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
                    Mode::empty(),
                )
                .map_err(io_err("open", path))?;
                let fst = rfs::fstat(&fd).map_err(io_err("stat", path))?;
                if fst.st_ino != st.st_ino
                    || fst.st_dev != st.st_dev
                    || FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile
                    || fst.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0
                {
                    return Err(TreeError::Changed { path: path.clone() });
                }
                self.check_xattrs(&fd, path)?;
                if fst.st_nlink > 1 {
                    let entry = self.links.entry((fst.st_dev, fst.st_ino)).or_insert((
                        fst.st_nlink,
                        0,
                        path.clone(),
                    ));
                    entry.1 += 1;
                }
                let size = u64::try_from(fst.st_size).unwrap_or(0);
                let executable = fst.st_mode & libc::S_IXUSR != 0;
                let mut file = File::from(fd);
                self.stats.file_bytes += size;
                match self.options.rewrite {
                    None => sink
                        .file(archive_name, executable, size, &mut file)
                        .map_err(Into::into),
                    Some(rw) => {
                        let mut reader = RewriteReader::for_size(&mut file, rw, size);
                        let r = sink.file(archive_name, executable, size, &mut reader);
                        self.stats.rewrites += reader.count();
                        r.map_err(Into::into)
                    }
                }
                .map_err(|e| match e {
                    TreeError::Archive(ArchiveError::SizeMismatch { .. }) => {
                        TreeError::Changed { path: path.clone() }
                    }
                    TreeError::Archive(ArchiveError::Write(source)) => TreeError::Io {
                        op: "read",
                        path: path.clone(),
                        source,
                    },
                    other => other,
                })
            }
            FileType::Symlink => {
                let target =
                    rfs::readlinkat(dir, name, Vec::new()).map_err(io_err("read link", path))?;
                let mut target = target.into_bytes();
                if let Some(rw) = self.options.rewrite {
                    self.stats.rewrites += rw.apply(&mut target);
                }
                sink.symlink(archive_name, &target).map_err(Into::into)
            }
            FileType::Directory => {
                if depth + 1 > self.max_depth {
                    return Err(TreeError::TooDeep {
                        path: path.clone(),
                        max: self.max_depth,
                    });
                }
                let fd = rfs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open directory", path))?;
                let fst = rfs::fstat(&fd).map_err(io_err("stat", path))?;
                if fst.st_ino != st.st_ino || fst.st_dev != st.st_dev {
                    return Err(TreeError::Changed { path: path.clone() });
                }
                self.check_xattrs(&fd, path)?;
                // (name on disk, name in the archive), sorted by the archive name.
                let mut entries: Vec<(CString, Vec<u8>)> = Vec::new();
                let mut reader = rfs::Dir::read_from(&fd).map_err(io_err("list", path))?;
                while let Some(entry) = reader.read() {
                    let entry = entry.map_err(io_err("list", path))?;
                    let disk = entry.file_name();
                    if disk.to_bytes() == b"." || disk.to_bytes() == b".." {
                        continue;
                    }
                    let mut archived = disk.to_bytes().to_vec();
                    if let Some(rw) = self.options.rewrite {
                        self.stats.rewrites += rw.apply(&mut archived);
                    }
                    entries.push((disk.to_owned(), archived));
                }
                entries.sort_by(|a, b| a.1.cmp(&b.1));
                if entries.windows(2).any(|w| w[0].1 == w[1].1) {
                    return Err(TreeError::DuplicateAfterRewrite { path: path.clone() });
                }
                sink.begin_directory(archive_name).map_err(Into::into)?;
                for (disk, archived) in &entries {
                    path.push(OsStr::from_bytes(disk.to_bytes()));
                    if let Err(reason) = crate::store::archive::check_name(archived) {
                        return Err(TreeError::BadName {
                            path: path.clone(),
                            reason,
                        });
                    }
                    self.node(fd.as_fd(), disk, Some(archived), path, sink, depth + 1)?;
                    path.pop();
                }
                sink.end_directory().map_err(Into::into)
            }
            FileType::Fifo => Err(TreeError::Unsupported {
                path: path.clone(),
                kind: "fifo",
            }),
            FileType::Socket => Err(TreeError::Unsupported {
                path: path.clone(),
                kind: "socket",
            }),
            FileType::CharacterDevice | FileType::BlockDevice => Err(TreeError::Unsupported {
                path: path.clone(),
                kind: "device",
            }),
            FileType::Unknown => Err(TreeError::Unsupported {
                path: path.clone(),
                kind: "file of unknown type",
            }),
        }
    }

    fn check_xattrs(&self, fd: &OwnedFd, path: &Path) -> Result<(), TreeError> {
        if !self.options.reject_xattrs {
            return Ok(());
        }
        let mut buf = vec![0u8; 4096];
        let len = match rfs::flistxattr(fd, &mut buf[..]) {
            Ok(len) => len,
            // Too many to fit: certainly some we reject; report the first we can name.
            Err(rustix::io::Errno::RANGE) => {
                return Err(TreeError::Xattr {
                    path: path.to_owned(),
                    name: "(many)".to_owned(),
                });
            }
            Err(rustix::io::Errno::NOTSUP) => 0,
            Err(e) => return Err(io_err("list extended attributes of", path)(e)),
        };
        for name in buf[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if name.starts_with(b"user.") || name.starts_with(b"trusted.") {
                return Err(TreeError::Xattr {
                    path: path.to_owned(),
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
        }
        Ok(())
    }
}

/// How to restore.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOptions {
    /// Store permissions: files 0444 (0555 if executable), directories 0555, mtime
    /// [`STORE_MTIME`]. Otherwise files are 0644/0755 and directories 0755.
    pub read_only: bool,
    /// fsync every file and directory written.
    pub fsync: bool,
}

/// A [`Sink`] that creates the tree at a path that must not exist yet.
#[derive(Debug)]
pub struct Restorer {
    options: RestoreOptions,
    /// Open directories: the root's parent first.
    dirs: Vec<OwnedFd>,
    path: PathBuf,
    root: PathBuf,
    buf: Vec<u8>,
    started: bool,
}

impl Restorer {
    /// Prepare to restore at `dest` (its parent must exist; `dest` must not).
    pub fn new(dest: &Path, options: RestoreOptions) -> Result<Restorer, TreeError> {
        let (parent, _) = open_parent(dest)?;
        Ok(Restorer {
            options,
            dirs: vec![parent],
            path: dest.parent().map(Path::to_path_buf).unwrap_or_default(),
            root: dest.to_owned(),
            buf: Vec::new(),
            started: false,
        })
    }

    /// The name to create in the current directory, and its path for messages.
    fn target(&mut self, name: Option<&[u8]>) -> Result<CString, TreeError> {
        let bytes = match name {
            Some(n) => n.to_vec(),
            None => {
                if self.started {
                    return Err(ArchiveError::Misuse("second root node").into());
                }
                self.root
                    .file_name()
                    .map(|n| n.as_bytes().to_vec())
                    .unwrap_or_default()
            }
        };
        self.started = true;
        self.path.push(OsStr::from_bytes(&bytes));
        CString::new(bytes).map_err(|_| TreeError::BadName {
            path: self.path.clone(),
            reason: "a name must not contain NUL",
        })
    }

    fn dir(&self) -> BorrowedFd<'_> {
        // `dirs` always holds at least the root's parent.
        self.dirs[self.dirs.len() - 1].as_fd()
    }

    fn times() -> Timestamps {
        let t = Timespec {
            tv_sec: STORE_MTIME,
            tv_nsec: 0,
        };
        Timestamps {
            last_access: t,
            last_modification: t,
        }
    }

    fn finish_node(&mut self, fd: &OwnedFd, mode: u32) -> Result<(), TreeError> {
        rfs::fchmod(fd, Mode::from_raw_mode(mode))
            .map_err(io_err("set permissions of", &self.path))?;
        if self.options.read_only {
            rfs::futimens(fd, &Self::times()).map_err(io_err("set times of", &self.path))?;
        }
        if self.options.fsync {
            rfs::fsync(fd).map_err(io_err("fsync", &self.path))?;
        }
        Ok(())
    }
}

impl Sink for Restorer {
    type Error = TreeError;

    fn begin_directory(&mut self, name: Option<&[u8]>) -> Result<(), TreeError> {
        let cname = self.target(name)?;
        rfs::mkdirat(self.dir(), &cname, Mode::from_raw_mode(0o700))
            .map_err(io_err("create directory", &self.path))?;
        let fd = rfs::openat(
            self.dir(),
            &cname,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("open directory", &self.path))?;
        self.dirs.push(fd);
        Ok(())
    }

    fn end_directory(&mut self) -> Result<(), TreeError> {
        if self.dirs.len() < 2 {
            return Err(ArchiveError::Misuse("unbalanced directory").into());
        }
        let fd = self.dirs.pop().unwrap_or_else(|| unreachable!());
        let mode = if self.options.read_only { 0o555 } else { 0o755 };
        self.finish_node(&fd, mode)?;
        self.path.pop();
        Ok(())
    }

    fn file(
        &mut self,
        name: Option<&[u8]>,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), TreeError> {
        let cname = self.target(name)?;
        let fd = rfs::openat(
            self.dir(),
            &cname,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_err("create", &self.path))?;
        let mut file = File::from(fd);
        let want = copy_buffer_len(size);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let mut copied = 0u64;
        loop {
            let n = match contents.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ArchiveError::Truncated { offset: 0 }.into());
                }
                Err(source) => {
                    return Err(TreeError::Io {
                        op: "read the contents for",
                        path: self.path.clone(),
                        source,
                    });
                }
            };
            copied += n as u64;
            file.write_all(&self.buf[..n])
                .map_err(std_err("write", &self.path))?;
        }
        if copied != size {
            return Err(TreeError::Changed {
                path: self.path.clone(),
            });
        }
        let fd = OwnedFd::from(file);
        let mode = match (self.options.read_only, executable) {
            (true, true) => 0o555,
            (true, false) => 0o444,
            (false, true) => 0o755,
            (false, false) => 0o644,
        };
        self.finish_node(&fd, mode)?;
        self.path.pop();
        Ok(())
    }

    fn symlink(&mut self, name: Option<&[u8]>, target: &[u8]) -> Result<(), TreeError> {
        let cname = self.target(name)?;
        rfs::symlinkat(target, self.dir(), &cname).map_err(io_err("create symlink", &self.path))?;
        if self.options.read_only {
            rfs::utimensat(
                self.dir(),
                &cname,
                &Self::times(),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io_err("set times of", &self.path))?;
        }
        self.path.pop();
        Ok(())
    }
}

impl Restorer {
    /// fsync the directory holding the root (after the whole tree was written).
    pub fn sync_parent(&self) -> Result<(), TreeError> {
        if let Some(parent) = self.dirs.first() {
            rfs::fsync(parent).map_err(io_err("fsync", &self.root))?;
        }
        Ok(())
    }
}

/// Restore an archive read from `r` at `dest` (which must not exist). On error the partial
/// tree is left for the caller to remove (it is always inside a temporary directory).
pub fn restore<R: Read>(
    r: R,
    dest: &Path,
    limits: &Limits,
    options: RestoreOptions,
) -> Result<(), TreeError> {
    let mut restorer = Restorer::new(dest, options)?;
    crate::store::archive::decode(r, &mut restorer, limits)?;
    if options.fsync {
        restorer.sync_parent()?;
    }
    Ok(())
}

/// Copy the tree at `src` to `dest` (which must not exist) through an archive stream, with
/// an optional rewrite; `dest` gets the permissions of `restore`.
pub fn copy(
    src: &Path,
    dest: &Path,
    dump_options: &DumpOptions,
    options: RestoreOptions,
) -> Result<DumpStats, TreeError> {
    let mut restorer = Restorer::new(dest, options)?;
    let stats = dump(src, &mut restorer, dump_options)?;
    if options.fsync {
        restorer.sync_parent()?;
    }
    Ok(stats)
}

/// fsync every directory and regular file of the tree at `path` (never following symlinks),
/// children before their directory, then the directory holding `path`.
///
/// Restoring without [`RestoreOptions::fsync`], moving the tree to its final name and then
/// calling this makes the whole result durable with one journal commit on ext4: the first
/// fsync commits every metadata change made so far (the creation of the tree and its
/// rename), so the others only wait for their data, whereas syncing before the rename
/// needs a second commit for the rename.
pub fn sync(path: &Path) -> Result<(), TreeError> {
    let (parent, name) = open_parent(path)?;
    sync_at(parent.as_fd(), &name, path, 0)?;
    rfs::fsync(&parent).map_err(io_err("fsync", path))
}

fn sync_at(dir: BorrowedFd<'_>, name: &CStr, path: &Path, depth: usize) -> Result<(), TreeError> {
    // Store objects were restored within the archive's depth limit (one descriptor open per
    // level here).
    let max = Limits::default().max_depth;
    if depth > max {
        return Err(TreeError::TooDeep {
            path: path.to_owned(),
            max,
        });
    }
    let fd = match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // A symlink: its target is in its own inode, created with the directory entry.
        Err(rustix::io::Errno::LOOP) => return Ok(()),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let st = rfs::fstat(&fd).map_err(io_err("stat", path))?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let names = entry_names(&fd, path)?;
        for n in names {
            let child = path.join(OsStr::from_bytes(n.to_bytes()));
            sync_at(fd.as_fd(), &n, &child, depth + 1)?;
        }
    }
    rfs::fsync(&fd).map_err(io_err("fsync", path))
}

/// The names in the open directory `fd` (without `.` and `..`); `path` is for messages.
fn entry_names(fd: &OwnedFd, path: &Path) -> Result<Vec<CString>, TreeError> {
    let mut names = Vec::new();
    let mut reader = rfs::Dir::read_from(fd).map_err(io_err("list", path))?;
    while let Some(entry) = reader.read() {
        let entry = entry.map_err(io_err("list", path))?;
        let n = entry.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    Ok(names)
}

/// Remove the tree at `path` (never following symlinks), making read-only directories
/// writable as needed. A missing path is not an error. Returns the bytes freed (sizes of the
/// files and symlinks removed).
pub fn remove(path: &Path) -> Result<u64, TreeError> {
    let (parent, name) = open_parent(path)?;
    remove_at(parent.as_fd(), &name, path)
}

/// Remove `name` inside the directory `dir`; `path` is for messages. Returns bytes freed.
pub fn remove_at(dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<u64, TreeError> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(0),
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let fd = rfs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("open directory", path))?;
        rfs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(io_err("make writable", path))?;
        let names = entry_names(&fd, path)?;
        let mut freed = 0u64;
        for n in names {
            let child = path.join(OsStr::from_bytes(n.to_bytes()));
            freed += remove_at(fd.as_fd(), &n, &child)?;
        }
        match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(freed),
            Err(e) => Err(io_err("remove directory", path)(e)),
        }
    } else {
        let size = u64::try_from(st.st_size).unwrap_or(0);
        match rfs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(size),
            Err(e) => Err(io_err("remove", path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::archive::{Node, Writer};
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn archive_of(path: &Path) -> Result<Vec<u8>, TreeError> {
        let mut w = Writer::new(Vec::new())?;
        dump(path, &mut w, &DumpOptions::default())?;
        Ok(w.finish()?.0)
    }

    fn make_golden(root: &Path) {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(root.join("bin/hello"), PermissionsExt::from_mode(0o751)).unwrap();
        symlink("bin/hello", root.join("link")).unwrap();
        std::fs::write(root.join("readme"), "hello\n").unwrap();
    }

    #[test]
    fn dump_matches_golden_tree_and_restore_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        make_golden(&root);
        let bytes = archive_of(&root).unwrap();
        assert_eq!(
            bytes,
            crate::store::archive::tests::golden_tree()
                .to_archive()
                .unwrap()
        );

        let dest = tmp.path().join("restored");
        restore(
            bytes.as_slice(),
            &dest,
            &Limits::default(),
            RestoreOptions {
                read_only: true,
                fsync: false,
            },
        )
        .unwrap();
        assert_eq!(archive_of(&dest).unwrap(), bytes);
        let meta = std::fs::metadata(dest.join("bin/hello")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o555);
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&meta), STORE_MTIME);
        let meta = std::fs::metadata(dest.join("readme")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
        remove(&dest).unwrap();
        assert!(!dest.exists());
    }

    #[test]
    fn dump_rejects_what_the_format_cannot_hold() {
        let tmp = tempfile::tempdir().unwrap();
        // setuid
        let root = tmp.path().join("suid");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("x"), "x").unwrap();
        std::fs::set_permissions(root.join("x"), PermissionsExt::from_mode(0o4755)).unwrap();
        assert!(matches!(archive_of(&root), Err(TreeError::Setuid { .. })));
        // fifo
        let root = tmp.path().join("fifo");
        std::fs::create_dir(&root).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("p"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(matches!(
            archive_of(&root),
            Err(TreeError::Unsupported { kind: "fifo", .. })
        ));
        // a hardlink to a file outside the tree, and one inside it
        let root = tmp.path().join("hl");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(tmp.path().join("outside"), "x").unwrap();
        std::fs::hard_link(tmp.path().join("outside"), root.join("inner")).unwrap();
        assert!(matches!(
            archive_of(&root),
            Err(TreeError::ForeignHardlink { .. })
        ));
        let root = tmp.path().join("hl2");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a"), "x").unwrap();
        std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
        let node = Node::from_archive(&archive_of(&root).unwrap(), &Limits::default()).unwrap();
        assert!(matches!(node, Node::Directory { entries } if entries.len() == 2));
    }

    #[test]
    fn restore_never_writes_through_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        // An archive with a symlink `d` → outside, then a file `d/x` can't be expressed
        // (names have no `/`), but a duplicate `d` directory after a symlink `d` can be
        // attempted by a hostile archive: the decoder rejects it as unsorted and the
        // restorer's O_EXCL/mkdirat would refuse it anyway.
        let mut w = Writer::new(Vec::new()).unwrap();
        w.begin_directory(None).unwrap();
        w.symlink(Some(b"d"), outside.as_os_str().as_bytes())
            .unwrap();
        w.end_directory().unwrap();
        let mut bytes = w.finish().unwrap().0;
        // Splice in a second `d` entry (a directory holding `x`) before the final end marker.
        bytes.truncate(bytes.len() - 2);
        bytes.extend_from_slice(
            b"\x01\x00d\x04\x01\x00x\x01\x01\x00\x00\x00\x00\x00\x00\x00!\x00\x00\x00\x00",
        );
        let dest = tmp.path().join("r");
        let err = restore(
            bytes.as_slice(),
            &dest,
            &Limits::default(),
            RestoreOptions {
                read_only: false,
                fsync: false,
            },
        );
        assert!(err.is_err());
        assert!(!outside.join("x").exists());
        // And restoring onto an existing symlink as the root fails instead of following it.
        let link = tmp.path().join("link");
        symlink(&outside, &link).unwrap();
        let tree = crate::store::archive::tests::golden_tree()
            .to_archive()
            .unwrap();
        assert!(
            restore(
                tree.as_slice(),
                &link,
                &Limits::default(),
                RestoreOptions {
                    read_only: false,
                    fsync: false
                }
            )
            .is_err()
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }
}

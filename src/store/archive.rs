//! The archive format: Bramble's deterministic serialisation of a file-system tree (our NAR).
//!
//! An archive is what gets hashed to name a store object, what `verify` re-hashes, and what a
//! binary cache ships. It keeps only what a build may depend on: the tree shape, byte-wise
//! sorted names, file contents, the executable bit and symlink targets. Owners, timestamps,
//! permissions other than "executable", xattrs and hardlinks do not exist in it, so two trees
//! with the same content always produce the same bytes.
//!
//! This module is pure: an encoder ([`Writer`], over any `io::Write`) and a decoder
//! ([`decode`], over any `io::Read`) that both speak the push interface [`Sink`]. The
//! file-system side (dump a directory, restore into one) lives in [`super::local::fs`].
//!
//! # Byte format (version 1)
//!
//! All integers are little-endian and unsigned. There is no padding and no alignment.
//!
//! ```text
//! archive   = magic version node                      ; nothing may follow the root node
//! magic     = "BRAMBLE-ARCHIVE" 0x00                  ; 16 bytes
//! version   = u32                                     ; 1
//! node      = file | exec-file | symlink | directory
//! file      = 0x01 size:u64 contents                  ; exactly `size` bytes of contents
//! exec-file = 0x02 size:u64 contents                  ; same, with the executable bit
//! symlink   = 0x03 len:u16 target                     ; 1..=4095 bytes, no NUL
//! directory = 0x04 entry* 0x00 0x00                   ; a zero name length ends the directory
//! entry     = len:u16 name node                       ; name: 1..=255 bytes
//! ```
//!
//! A name is never empty, `.` or `..`, and contains neither `/` nor NUL. Entries of a
//! directory appear in strictly increasing byte-wise order of their names, so a tree has
//! exactly one encoding (the decoder enforces this: every accepted archive is canonical,
//! which makes its hash a faithful name for its content). The root node may be a file or a
//! symlink as well as a directory.
//!
//! # Hostile input
//!
//! [`decode`] treats its input as untrusted: nesting depth, name and target lengths and the
//! total content size are bounded by [`Limits`], all arithmetic is checked, every name is
//! validated before a sink sees it, and truncation or trailing bytes are errors. It never
//! panics; the file-system sink in [`super::local::fs`] additionally never writes through a
//! symlink.

use std::io::{self, Read, Write};

/// The 16 bytes every archive starts with.
pub const MAGIC: &[u8; 16] = b"BRAMBLE-ARCHIVE\0";
/// The only format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Longest entry name (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target (Linux `PATH_MAX` minus the NUL).
pub const MAX_TARGET_LEN: usize = 4095;

const TAG_END: u16 = 0;
const TAG_FILE: u8 = 1;
const TAG_EXEC: u8 = 2;
const TAG_SYMLINK: u8 = 3;
const TAG_DIRECTORY: u8 = 4;

/// Bounds the decoder enforces on untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest directory nesting (the root directory is depth 1).
    pub max_depth: usize,
    /// Largest sum of all file sizes.
    pub max_total_size: u64,
    /// Largest number of entries (files, directories and symlinks).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 256,
            max_total_size: 1 << 40,
            max_entries: 1 << 24,
        }
    }
}

/// Why an archive could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a bramble archive: bad magic bytes")]
    BadMagic,
    #[error("unsupported archive version {0} (this bramble reads version {VERSION})")]
    UnsupportedVersion(u32),
    #[error("archive is truncated at byte {offset}")]
    Truncated { offset: u64 },
    #[error("unknown node tag {tag:#04x} at byte {offset}")]
    BadTag { tag: u8, offset: u64 },
    #[error("invalid entry name {name:?} at byte {offset}: {reason}")]
    BadName {
        name: String,
        reason: &'static str,
        offset: u64,
    },
    #[error("entry `{name}` at byte {offset} is not in strictly increasing byte order")]
    Unsorted { name: String, offset: u64 },
    #[error("invalid symlink target at byte {offset}: {reason}")]
    BadTarget { reason: &'static str, offset: u64 },
    #[error("archive nests deeper than {max} directories at byte {offset}")]
    TooDeep { max: usize, offset: u64 },
    #[error("archive exceeds the limit of {max} {what} at byte {offset}")]
    TooLarge {
        what: &'static str,
        max: u64,
        offset: u64,
    },
    #[error("unexpected data after the end of the archive at byte {offset}")]
    TrailingData { offset: u64 },
    #[error("reading the archive failed at byte {offset}")]
    Read { offset: u64, source: io::Error },
    #[error("writing the archive failed")]
    Write(#[source] io::Error),
    #[error(
        "file `{name}` changed size while being archived: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("archive writer misuse: {0}")]
    Misuse(&'static str),
}

impl crate::error::Diagnose for ArchiveError {
    fn class(&self) -> crate::error::Class {
        use crate::error::Class;
        match self {
            ArchiveError::Read { .. } | ArchiveError::Write(_) => Class::Environment,
            ArchiveError::Misuse(_) => Class::Internal,
            // A malformed archive, or a file that changed while it was archived.
            _ => Class::User,
        }
    }
}

/// Check one entry name; returns the reason it is invalid.
pub fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("a name must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Err("a name is at most 255 bytes")
    } else if name == b"." || name == b".." {
        Err("`.` and `..` are not names")
    } else if name.contains(&b'/') {
        Err("a name must not contain `/`")
    } else if name.contains(&0) {
        Err("a name must not contain NUL")
    } else {
        Ok(())
    }
}

/// Check one symlink target; returns the reason it is invalid.
pub fn check_target(target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        Err("a symlink target must not be empty")
    } else if target.len() > MAX_TARGET_LEN {
        Err("a symlink target is at most 4095 bytes")
    } else if target.contains(&0) {
        Err("a symlink target must not contain NUL")
    } else {
        Ok(())
    }
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(&name[..name.len().min(300)]).into_owned()
}

/// Receiver of a tree, one node at a time, in archive order.
///
/// `name` is `None` for the root node and the entry name (already validated, in increasing
/// order) otherwise. Every `begin_directory` is matched by one `end_directory`.
pub trait Sink {
    /// The sink's error; decoding errors convert into it.
    type Error: From<ArchiveError>;

    fn begin_directory(&mut self, name: Option<&[u8]>) -> Result<(), Self::Error>;
    fn end_directory(&mut self) -> Result<(), Self::Error>;
    /// A regular file of `size` bytes. The sink should read `contents` to its end; what it
    /// leaves unread is skipped by the caller.
    fn file(
        &mut self,
        name: Option<&[u8]>,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), Self::Error>;
    fn symlink(&mut self, name: Option<&[u8]>, target: &[u8]) -> Result<(), Self::Error>;
}

/// Size of the buffer used to copy file contents: large enough to amortise `read` calls,
/// small enough to stay in the L2 cache between the read and the hash.
pub const COPY_BUFFER: usize = 256 * 1024;

/// The copy buffer a file of `size` bytes needs: [`COPY_BUFFER`], or less for a small file
/// (its size plus one byte, so the read that finds its end, or finds it grew, fits). A
/// build step typically adds a file of a few bytes, through several passes each with a
/// buffer of its own: zeroing 256 KiB for each would cost more than the file.
pub fn copy_buffer_len(size: u64) -> usize {
    usize::try_from(size)
        .map_or(COPY_BUFFER, |s| s.saturating_add(1))
        .min(COPY_BUFFER)
}

/// Streaming archive encoder: a [`Sink`] that writes archive bytes to `W`.
///
/// It checks what it is given (valid, strictly increasing names; balanced directories; file
/// sizes that match their contents), so it never produces an archive [`decode`] rejects.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    /// Last name written at each open directory level (empty before the first entry).
    open: Vec<Vec<u8>>,
    root_done: bool,
    written: u64,
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Start an archive: writes the magic and version.
    pub fn new(out: W) -> Result<Writer<W>, ArchiveError> {
        let mut w = Writer {
            out,
            open: Vec::new(),
            root_done: false,
            written: 0,
            buf: Vec::new(),
        };
        w.put(MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        Ok(w)
    }

    /// Finish: the root node must be complete. Returns the output and the archive size.
    pub fn finish(mut self) -> Result<(W, u64), ArchiveError> {
        if !self.root_done || !self.open.is_empty() {
            return Err(ArchiveError::Misuse(
                "archive finished before its root node",
            ));
        }
        self.out.flush().map_err(ArchiveError::Write)?;
        Ok((self.out, self.written))
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.out.write_all(bytes).map_err(ArchiveError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Write the entry header (name) for a new node, checking position and order.
    fn entry(&mut self, name: Option<&[u8]>) -> Result<(), ArchiveError> {
        match (self.open.last_mut(), name) {
            (None, None) if !self.root_done => Ok(()),
            (None, _) => Err(ArchiveError::Misuse("a node outside the root directory")),
            (Some(_), None) => Err(ArchiveError::Misuse("an unnamed node inside a directory")),
            (Some(last), Some(name)) => {
                check_name(name).map_err(|reason| ArchiveError::BadName {
                    name: lossy(name),
                    reason,
                    offset: self.written,
                })?;
                if !last.is_empty() && name <= last.as_slice() {
                    return Err(ArchiveError::Unsorted {
                        name: lossy(name),
                        offset: self.written,
                    });
                }
                last.clear();
                last.extend_from_slice(name);
                self.put(&(name.len() as u16).to_le_bytes())?;
                self.put(name)
            }
        }
    }

    fn node_done(&mut self) {
        if self.open.is_empty() {
            self.root_done = true;
        }
    }
}

impl<W: Write> Sink for Writer<W> {
    type Error = ArchiveError;

    fn begin_directory(&mut self, name: Option<&[u8]>) -> Result<(), ArchiveError> {
        self.entry(name)?;
        self.put(&[TAG_DIRECTORY])?;
        self.open.push(Vec::new());
        Ok(())
    }

    fn end_directory(&mut self) -> Result<(), ArchiveError> {
        if self.open.pop().is_none() {
            return Err(ArchiveError::Misuse(
                "end of a directory that was not begun",
            ));
        }
        self.put(&TAG_END.to_le_bytes())?;
        self.node_done();
        Ok(())
    }

    fn file(
        &mut self,
        name: Option<&[u8]>,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        self.entry(name)?;
        self.put(&[if executable { TAG_EXEC } else { TAG_FILE }])?;
        self.put(&size.to_le_bytes())?;
        let mut buf = std::mem::take(&mut self.buf);
        let want = copy_buffer_len(size);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut copied = 0u64;
        let result = loop {
            let n = match contents.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(ArchiveError::Write(e)),
            };
            copied += n as u64;
            if copied > size {
                break Ok(());
            }
            if let Err(e) = self.put(&buf[..n]) {
                break Err(e);
            }
        };
        self.buf = buf;
        result?;
        if copied != size {
            return Err(ArchiveError::SizeMismatch {
                name: name.map(lossy).unwrap_or_default(),
                expected: size,
                actual: copied,
            });
        }
        self.node_done();
        Ok(())
    }

    fn symlink(&mut self, name: Option<&[u8]>, target: &[u8]) -> Result<(), ArchiveError> {
        self.entry(name)?;
        check_target(target).map_err(|reason| ArchiveError::BadTarget {
            reason,
            offset: self.written,
        })?;
        self.put(&[TAG_SYMLINK])?;
        self.put(&(target.len() as u16).to_le_bytes())?;
        self.put(target)?;
        self.node_done();
        Ok(())
    }
}

/// A reader that counts its offset and turns early EOF into [`ArchiveError::Truncated`].
struct Input<R> {
    r: R,
    offset: u64,
}

impl<R: Read> Input<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), ArchiveError> {
        let mut done = 0;
        while done < buf.len() {
            match self.r.read(&mut buf[done..]) {
                Ok(0) => {
                    return Err(ArchiveError::Truncated {
                        offset: self.offset + done as u64,
                    });
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ArchiveError::Read {
                        offset: self.offset + done as u64,
                        source,
                    });
                }
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, ArchiveError> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u16(&mut self) -> Result<u16, ArchiveError> {
        let mut b = [0u8; 2];
        self.exact(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, ArchiveError> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, ArchiveError> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// The contents of one file inside the archive, handed to [`Sink::file`]. Reading past the
/// file's end yields EOF; a truncated archive yields an `UnexpectedEof` error.
struct Contents<'a, R> {
    input: &'a mut Input<R>,
    remaining: u64,
}

impl<R: Read> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.input.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive is truncated inside a file",
            ));
        }
        self.remaining -= n as u64;
        self.input.offset += n as u64;
        Ok(n)
    }
}

/// Decode one archive from `r`, driving `sink`. Enforces the format exactly (see the module
/// doc) and the given limits; rejects trailing bytes.
pub fn decode<R: Read, S: Sink>(r: R, sink: &mut S, limits: &Limits) -> Result<(), S::Error> {
    let mut input = Input { r, offset: 0 };
    let mut magic = [0u8; 16];
    input.exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(ArchiveError::BadMagic.into());
    }
    let version = input.u32()?;
    if version != VERSION {
        return Err(ArchiveError::UnsupportedVersion(version).into());
    }
    let mut state = DecodeState {
        limits,
        total_size: 0,
        entries: 0,
    };
    // Explicit stack instead of recursion: one "last name" per open directory.
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut name_buf = Vec::with_capacity(MAX_NAME_LEN);
    // The root node.
    if state.node(&mut input, sink, None, 0)? {
        stack.push(Vec::new());
    }
    while let Some(last) = stack.last_mut() {
        let entry_offset = input.offset;
        let len = input.u16()?;
        if len == TAG_END {
            stack.pop();
            sink.end_directory()?;
            continue;
        }
        let len = usize::from(len);
        name_buf.clear();
        name_buf.resize(len, 0);
        input.exact(&mut name_buf)?;
        check_name(&name_buf).map_err(|reason| ArchiveError::BadName {
            name: lossy(&name_buf),
            reason,
            offset: entry_offset,
        })?;
        if !last.is_empty() && name_buf.as_slice() <= last.as_slice() {
            return Err(ArchiveError::Unsorted {
                name: lossy(&name_buf),
                offset: entry_offset,
            }
            .into());
        }
        last.clear();
        last.extend_from_slice(&name_buf);
        let depth = stack.len();
        if state.node(&mut input, sink, Some(&name_buf), depth)? {
            stack.push(Vec::new());
        }
    }
    // Nothing may follow the root node.
    let mut probe = [0u8; 1];
    loop {
        match input.r.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                return Err(ArchiveError::TrailingData {
                    offset: input.offset,
                }
                .into());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ArchiveError::Read {
                    offset: input.offset,
                    source,
                }
                .into());
            }
        }
    }
}

struct DecodeState<'l> {
    limits: &'l Limits,
    total_size: u64,
    entries: u64,
}

impl DecodeState<'_> {
    /// Decode one node after its name; returns whether it opened a directory.
    fn node<R: Read, S: Sink>(
        &mut self,
        input: &mut Input<R>,
        sink: &mut S,
        name: Option<&[u8]>,
        depth: usize,
    ) -> Result<bool, S::Error> {
        let offset = input.offset;
        self.entries = self.entries.saturating_add(1);
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooLarge {
                what: "entries",
                max: self.limits.max_entries,
                offset,
            }
            .into());
        }
        match input.u8()? {
            tag @ (TAG_FILE | TAG_EXEC) => {
                let size = input.u64()?;
                self.total_size = self
                    .total_size
                    .checked_add(size)
                    .filter(|t| *t <= self.limits.max_total_size)
                    .ok_or(ArchiveError::TooLarge {
                        what: "bytes of file contents",
                        max: self.limits.max_total_size,
                        offset,
                    })?;
                let mut contents = Contents {
                    input,
                    remaining: size,
                };
                let result = sink.file(name, tag == TAG_EXEC, size, &mut contents);
                let remaining = contents.remaining;
                // Skip what the sink left unread; if the archive is truncated there, that is
                // the error to report, whatever the sink said.
                skip(input, remaining)?;
                result?;
                Ok(false)
            }
            TAG_SYMLINK => {
                let len = usize::from(input.u16()?);
                let mut target = vec![0u8; len];
                input.exact(&mut target)?;
                check_target(&target)
                    .map_err(|reason| ArchiveError::BadTarget { reason, offset })?;
                sink.symlink(name, &target)?;
                Ok(false)
            }
            TAG_DIRECTORY => {
                if depth + 1 > self.limits.max_depth {
                    return Err(ArchiveError::TooDeep {
                        max: self.limits.max_depth,
                        offset,
                    }
                    .into());
                }
                sink.begin_directory(name)?;
                Ok(true)
            }
            tag => Err(ArchiveError::BadTag { tag, offset }.into()),
        }
    }
}

/// Skip `n` bytes of file contents, failing on truncation.
fn skip<R: Read>(input: &mut Input<R>, mut n: u64) -> Result<(), ArchiveError> {
    let mut buf = [0u8; 8192];
    while n > 0 {
        let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        input.exact(&mut buf[..want])?;
        n -= want as u64;
    }
    Ok(())
}

/// An in-memory tree, used by tests and small tools: the simplest [`Sink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { executable: bool, contents: Vec<u8> },
    Symlink { target: Vec<u8> },
    Directory { entries: Vec<(Vec<u8>, Node)> },
}

impl Node {
    /// Encode this tree as an archive. Entries must already be sorted and valid.
    pub fn to_archive(&self) -> Result<Vec<u8>, ArchiveError> {
        let mut w = Writer::new(Vec::new())?;
        self.emit(None, &mut w)?;
        Ok(w.finish()?.0)
    }

    /// Decode an archive held in memory.
    pub fn from_archive(bytes: &[u8], limits: &Limits) -> Result<Node, ArchiveError> {
        let mut builder = NodeBuilder::default();
        decode(bytes, &mut builder, limits)?;
        builder
            .root
            .ok_or(ArchiveError::Misuse("archive without a root node"))
    }

    fn emit<S: Sink>(&self, name: Option<&[u8]>, sink: &mut S) -> Result<(), S::Error> {
        match self {
            Node::File {
                executable,
                contents,
            } => sink.file(
                name,
                *executable,
                contents.len() as u64,
                &mut contents.as_slice(),
            ),
            Node::Symlink { target } => sink.symlink(name, target),
            Node::Directory { entries } => {
                sink.begin_directory(name)?;
                for (entry_name, node) in entries {
                    node.emit(Some(entry_name), sink)?;
                }
                sink.end_directory()
            }
        }
    }
}

/// A directory being built: its name (`None` for the root) and its entries so far.
type OpenDirectory = (Option<Vec<u8>>, Vec<(Vec<u8>, Node)>);

#[derive(Default)]
struct NodeBuilder {
    stack: Vec<OpenDirectory>,
    root: Option<Node>,
}

impl NodeBuilder {
    fn place(&mut self, name: Option<&[u8]>, node: Node) {
        match (self.stack.last_mut(), name) {
            (Some((_, entries)), Some(name)) => entries.push((name.to_vec(), node)),
            _ => self.root = Some(node),
        }
    }
}

impl Sink for NodeBuilder {
    type Error = ArchiveError;

    fn begin_directory(&mut self, name: Option<&[u8]>) -> Result<(), ArchiveError> {
        self.stack.push((name.map(<[u8]>::to_vec), Vec::new()));
        Ok(())
    }

    fn end_directory(&mut self) -> Result<(), ArchiveError> {
        let (name, entries) = self
            .stack
            .pop()
            .ok_or(ArchiveError::Misuse("unbalanced directory"))?;
        self.place(name.as_deref(), Node::Directory { entries });
        Ok(())
    }

    fn file(
        &mut self,
        name: Option<&[u8]>,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        let mut data = Vec::with_capacity(usize::try_from(size.min(1 << 20)).unwrap_or(0));
        contents
            .read_to_end(&mut data)
            .map_err(|source| ArchiveError::Read { offset: 0, source })?;
        self.place(
            name,
            Node::File {
                executable,
                contents: data,
            },
        );
        Ok(())
    }

    fn symlink(&mut self, name: Option<&[u8]>, target: &[u8]) -> Result<(), ArchiveError> {
        self.place(
            name,
            Node::Symlink {
                target: target.to_vec(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(contents: &[u8], executable: bool) -> Node {
        Node::File {
            executable,
            contents: contents.to_vec(),
        }
    }

    /// The small fixed tree of the golden vectors:
    /// `/` → `bin/` → `hello` (exec, "#!/bin/sh\necho hi\n"), `link` → `bin/hello`,
    /// `readme` ("hello\n").
    pub(crate) fn golden_tree() -> Node {
        Node::Directory {
            entries: vec![
                (
                    b"bin".to_vec(),
                    Node::Directory {
                        entries: vec![(b"hello".to_vec(), file(b"#!/bin/sh\necho hi\n", true))],
                    },
                ),
                (
                    b"link".to_vec(),
                    Node::Symlink {
                        target: b"bin/hello".to_vec(),
                    },
                ),
                (b"readme".to_vec(), file(b"hello\n", false)),
            ],
        }
    }

    #[test]
    fn golden_archive_bytes() {
        // Computed independently of this code, by hand from the format in the module doc
        // (equivalently, in Python):
        //   import struct
        //   u16 = lambda n: struct.pack('<H', n); u64 = lambda n: struct.pack('<Q', n)
        //   a  = b'BRAMBLE-ARCHIVE\0' + struct.pack('<I', 1) + b'\x04'
        //   a += u16(3) + b'bin' + b'\x04'
        //   a +=   u16(5) + b'hello' + b'\x02' + u64(18) + b'#!/bin/sh\necho hi\n'
        //   a += u16(0)
        //   a += u16(4) + b'link' + b'\x03' + u16(9) + b'bin/hello'
        //   a += u16(6) + b'readme' + b'\x01' + u64(6) + b'hello\n'
        //   a += u16(0)
        let mut expected = Vec::new();
        expected.extend_from_slice(b"BRAMBLE-ARCHIVE\0\x01\x00\x00\x00\x04");
        expected.extend_from_slice(b"\x03\x00bin\x04");
        expected.extend_from_slice(b"\x05\x00hello\x02\x12\x00\x00\x00\x00\x00\x00\x00");
        expected.extend_from_slice(b"#!/bin/sh\necho hi\n");
        expected.extend_from_slice(b"\x00\x00");
        expected.extend_from_slice(b"\x04\x00link\x03\x09\x00bin/hello");
        expected.extend_from_slice(b"\x06\x00readme\x01\x06\x00\x00\x00\x00\x00\x00\x00hello\n");
        expected.extend_from_slice(b"\x00\x00");
        let bytes = golden_tree().to_archive().unwrap();
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), 106);
        // sha256 of those bytes, truncated and printed like every hash (Python:
        // base64.b32encode(hashlib.sha256(a).digest()[:20]).decode().lower()).
        assert_eq!(
            crate::store::Hash::digest(&bytes).to_string(),
            "dk32w6sopdadsj5wnph3ar4gpht4wyg4"
        );
        assert_eq!(
            Node::from_archive(&bytes, &Limits::default()).unwrap(),
            golden_tree()
        );
    }

    #[test]
    fn writer_rejects_bad_names_and_order() {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.begin_directory(None).unwrap();
        assert!(matches!(
            w.symlink(Some(b".."), b"x"),
            Err(ArchiveError::BadName { .. })
        ));
        w.symlink(Some(b"b"), b"x").unwrap();
        assert!(matches!(
            w.symlink(Some(b"a"), b"x"),
            Err(ArchiveError::Unsorted { .. })
        ));
        assert!(matches!(
            w.symlink(Some(b"b"), b"x"),
            Err(ArchiveError::Unsorted { .. })
        ));
        assert!(matches!(
            w.file(Some(b"c"), false, 3, &mut &b"ab"[..]),
            Err(ArchiveError::SizeMismatch { .. })
        ));
    }

    fn decode_err(bytes: &[u8]) -> ArchiveError {
        Node::from_archive(bytes, &Limits::default()).unwrap_err()
    }

    #[test]
    fn decoder_rejects_hostile_input() {
        let good = golden_tree().to_archive().unwrap();
        // Truncated anywhere.
        for cut in 0..good.len() {
            assert!(
                Node::from_archive(&good[..cut], &Limits::default()).is_err(),
                "truncation at {cut} accepted"
            );
        }
        // Trailing data.
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            decode_err(&long),
            ArchiveError::TrailingData { .. }
        ));
        // Bad magic and version.
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(decode_err(&bad), ArchiveError::BadMagic));
        let mut bad = good.clone();
        bad[16] = 2;
        assert!(matches!(
            decode_err(&bad),
            ArchiveError::UnsupportedVersion(2)
        ));
        // `..`, `/` and unsorted names.
        let header = |body: &[u8]| {
            let mut a = MAGIC.to_vec();
            a.extend_from_slice(&VERSION.to_le_bytes());
            a.extend_from_slice(body);
            a
        };
        for (body, what) in [
            (&b"\x04\x02\x00..\x03\x01\x00x\x00\x00"[..], "dotdot"),
            (&b"\x04\x03\x00a/b\x03\x01\x00x\x00\x00"[..], "slash"),
            (&b"\x04\x01\x00/\x03\x01\x00x\x00\x00"[..], "absolute"),
            (
                &b"\x04\x01\x00b\x03\x01\x00x\x01\x00a\x03\x01\x00x\x00\x00"[..],
                "unsorted",
            ),
            (
                &b"\x04\x01\x00a\x03\x01\x00x\x01\x00a\x03\x01\x00x\x00\x00"[..],
                "duplicate",
            ),
            (&b"\x03\x00\x00"[..], "empty target"),
            (&b"\x09"[..], "bad tag"),
            (&b"\x01\xff\xff\xff\xff\xff\xff\xff\xff"[..], "huge file"),
        ] {
            assert!(
                Node::from_archive(&header(body), &Limits::default()).is_err(),
                "{what} accepted"
            );
        }
        // Depth bound.
        let mut deep = header(b"");
        for _ in 0..300 {
            deep.extend_from_slice(b"\x04\x01\x00d");
        }
        deep.truncate(deep.len() - 3);
        assert!(matches!(decode_err(&deep), ArchiveError::TooDeep { .. }));
    }

    fn arb_name() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
            1..8,
        )
        .prop_filter("not . or ..", |n| n != b"." && n != b"..")
    }

    fn arb_tree() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(
                |(executable, contents)| Node::File {
                    executable,
                    contents
                }
            ),
            prop::collection::vec(1u8..=255, 1..16).prop_map(|target| Node::Symlink { target }),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop::collection::btree_map(arb_name(), inner, 0..6).prop_map(|m| Node::Directory {
                entries: m.into_iter().collect(),
            })
        })
    }

    proptest! {
        #[test]
        fn round_trip(tree in arb_tree()) {
            let bytes = tree.to_archive().unwrap();
            let back = Node::from_archive(&bytes, &Limits::default()).unwrap();
            prop_assert_eq!(&back, &tree);
            prop_assert_eq!(back.to_archive().unwrap(), bytes);
        }

        #[test]
        fn random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&VERSION.to_le_bytes());
            bytes.extend_from_slice(&tail);
            let _ = Node::from_archive(&bytes, &Limits::default());
            let _ = Node::from_archive(&tail, &Limits::default());
        }

        #[test]
        fn mutated_archives_decode_canonically_or_fail(
            tree in arb_tree(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = tree.to_archive().unwrap();
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            // Whatever is accepted is canonical: it re-encodes to the same bytes.
            if let Ok(node) = Node::from_archive(&bytes, &Limits::default()) {
                prop_assert_eq!(node.to_archive().unwrap(), bytes);
            }
        }
    }
}

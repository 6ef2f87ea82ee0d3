//! Output hashing modulo self-references, placeholder rewriting and reference scanning. Pure,
//! streaming code: the file-system walk that feeds it is in [`super::local::fs`].
//!
//! # How a content-addressed store path is named
//!
//! A build writes its output at a *placeholder* path (`Derivation::placeholder`). The output
//! may mention its own location (rpaths, `#!` lines, config files), so it cannot be hashed
//! as is. Bramble therefore:
//!
//! 1. serialises the output as an archive in which every occurrence of the placeholder's
//!    32-character hash part — in file contents, symlink targets and entry names — is
//!    replaced by [`SELF_REF_MARKER`] (32 `0` bytes: not base32, so never a real hash);
//!    the sha256 of that archive, truncated like every [`Hash`], is the *modulo digest*;
//! 2. scans the same stream for the hash parts of the candidate references (the input
//!    closure) with [`RefScanner`]; the ones found are the output's references;
//! 3. names the output with [`content_address`]:
//!
//!    ```text
//!    hash = Hash::of_fields("bramble-store-path-v1",
//!                           [name, modulo digest (20 raw bytes), self-ref flag (one byte,
//!                            0 or 1), reference 1, reference 2, ...])
//!    ```
//!
//!    where each reference is the printed store path `<hash>-<name>`, in sorted order, the
//!    output itself excluded (it is the flag). A source added with `add_dir` is the same
//!    thing with no references and flag 0 (its modulo digest is its archive digest);
//! 4. rewrites the placeholder hash to the final hash everywhere ([`Rewrite`]). Both are 32
//!    bytes, so offsets in binaries stay valid.
//!
//! As in Nix, an output that literally contains the marker bytes where it has no
//! self-reference hashes the same as one that had a self-reference there; the flag and the
//! name keep such collisions to contrived cases.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};

use super::hash::{HASH_CHARS, Hash, is_hash_char};
use super::path::StorePath;

/// What self-references are replaced with before hashing.
pub const SELF_REF_MARKER: [u8; HASH_CHARS] = [b'0'; HASH_CHARS];

/// Domain of [`content_address`].
pub const STORE_PATH_DOMAIN: &str = "bramble-store-path-v1";

/// The store path of a content-addressed object; see the module doc for the definition.
pub fn content_address(
    name: &str,
    modulo_digest: Hash,
    self_reference: bool,
    references: &BTreeSet<StorePath>,
) -> Result<StorePath, super::path::StorePathError> {
    let printed: Vec<String> = references.iter().map(ToString::to_string).collect();
    let mut fields: Vec<&[u8]> = vec![
        name.as_bytes(),
        modulo_digest.as_bytes(),
        if self_reference { &[1] } else { &[0] },
    ];
    fields.extend(printed.iter().map(|p| p.as_bytes()));
    StorePath::new(Hash::of_fields(STORE_PATH_DOMAIN, &fields), name)
}

/// Replace every occurrence of one 32-byte string by another of the same length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub from: [u8; HASH_CHARS],
    pub to: [u8; HASH_CHARS],
}

impl Rewrite {
    /// Placeholder hash → marker (for hashing modulo self-references).
    pub fn to_marker(placeholder: Hash) -> Rewrite {
        Rewrite {
            from: hash_text(placeholder),
            to: SELF_REF_MARKER,
        }
    }

    /// Placeholder hash → final hash.
    pub fn to_final(placeholder: Hash, final_hash: Hash) -> Rewrite {
        Rewrite {
            from: hash_text(placeholder),
            to: hash_text(final_hash),
        }
    }

    /// Rewrite a whole buffer in place (names, symlink targets); returns the number of
    /// replacements.
    pub fn apply(&self, bytes: &mut [u8]) -> u64 {
        let mut count = 0;
        let mut p = 0;
        while p + HASH_CHARS <= bytes.len() {
            if bytes[p..p + HASH_CHARS] == self.from {
                bytes[p..p + HASH_CHARS].copy_from_slice(&self.to);
                count += 1;
                p += HASH_CHARS;
            } else {
                p += 1;
            }
        }
        count
    }
}

/// The printed hash as a fixed array.
pub fn hash_text(hash: Hash) -> [u8; HASH_CHARS] {
    let mut out = [0u8; HASH_CHARS];
    out.copy_from_slice(hash.to_string().as_bytes());
    out
}

/// A reader that applies a [`Rewrite`] to a stream, including matches that straddle reads.
#[derive(Debug)]
pub struct RewriteReader<R> {
    inner: R,
    rewrite: Rewrite,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Matches may begin at or after this index; everything before it is final.
    scanned: usize,
    eof: bool,
    count: u64,
}

impl<R: Read> RewriteReader<R> {
    pub fn new(inner: R, rewrite: Rewrite) -> RewriteReader<R> {
        RewriteReader::with_buffer(inner, rewrite, 256 * 1024)
    }

    /// A reader of a file of `size` bytes: its buffer is no larger than the file needs
    /// (a small file is read in one go without zeroing 256 KiB first).
    pub fn for_size(inner: R, rewrite: Rewrite, size: u64) -> RewriteReader<R> {
        let len = usize::try_from(size)
            .map_or(usize::MAX, |s| s.saturating_add(1))
            .clamp(4 * HASH_CHARS, 256 * 1024);
        RewriteReader::with_buffer(inner, rewrite, len)
    }

    /// `len` must leave room to read after an unscanned tail (under [`HASH_CHARS`] bytes).
    fn with_buffer(inner: R, rewrite: Rewrite, len: usize) -> RewriteReader<R> {
        debug_assert!(len > 2 * HASH_CHARS);
        RewriteReader {
            inner,
            rewrite,
            buf: vec![0; len],
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
            count: 0,
        }
    }

    /// Replacements made so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn ready(&self) -> usize {
        if self.eof { self.end } else { self.scanned }
    }

    fn scan(&mut self) {
        let mut p = self.scanned;
        while p + HASH_CHARS <= self.end {
            if self.buf[p..p + HASH_CHARS] == self.rewrite.from {
                self.buf[p..p + HASH_CHARS].copy_from_slice(&self.rewrite.to);
                self.count += 1;
                p += HASH_CHARS;
            } else {
                p += 1;
            }
        }
        self.scanned = p;
    }
}

impl<R: Read> Read for RewriteReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.start >= self.ready() {
            if self.eof {
                return Ok(0);
            }
            // Keep the unscanned tail, refill after it.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
            let n = loop {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other?,
                }
            };
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
            self.scan();
        }
        let n = out.len().min(self.ready() - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// Finds which candidate hashes occur in a byte stream (written to it through `io::Write`).
///
/// Hash parts are runs of exactly 32 base32 characters. The scanner looks at the last byte of
/// each 32-byte window first and jumps a whole window ahead when it is not a base32
/// character, so binary data is skipped at about one comparison per 32 bytes; inside a run
/// of base32 text every window is looked up in a hash map. Matches straddling two writes are
/// found (the last 31 bytes are carried over).
#[derive(Debug)]
pub struct RefScanner {
    candidates: HashMap<[u8; HASH_CHARS], Hash>,
    found: BTreeSet<Hash>,
    carry: Vec<u8>,
    table: [bool; 256],
}

impl RefScanner {
    pub fn new(candidates: impl IntoIterator<Item = Hash>) -> RefScanner {
        let mut table = [false; 256];
        for b in 0..=255u8 {
            table[usize::from(b)] = is_hash_char(b);
        }
        RefScanner {
            candidates: candidates.into_iter().map(|h| (hash_text(h), h)).collect(),
            found: BTreeSet::new(),
            carry: Vec::with_capacity(2 * HASH_CHARS),
            table,
        }
    }

    /// The candidates seen so far.
    pub fn found(&self) -> &BTreeSet<Hash> {
        &self.found
    }

    pub fn into_found(self) -> BTreeSet<Hash> {
        self.found
    }

    fn scan(
        table: &[bool; 256],
        candidates: &HashMap<[u8; HASH_CHARS], Hash>,
        found: &mut BTreeSet<Hash>,
        buf: &[u8],
    ) {
        let n = buf.len();
        let valid = |b: u8| table[usize::from(b)];
        let mut i = 0;
        while i + HASH_CHARS <= n {
            if !valid(buf[i + HASH_CHARS - 1]) {
                i += HASH_CHARS;
                continue;
            }
            // Walk back from the window's last byte to find the start of the run.
            let mut k = i + HASH_CHARS - 1;
            while k > i && valid(buf[k - 1]) {
                k -= 1;
            }
            if k > i {
                i = k;
                continue;
            }
            // buf[i..i+32] is all base32: slide one byte at a time while the run lasts.
            loop {
                if let Some(h) = candidates.get(&buf[i..i + HASH_CHARS]) {
                    found.insert(*h);
                }
                if i + HASH_CHARS < n && valid(buf[i + HASH_CHARS]) {
                    i += 1;
                } else {
                    i += HASH_CHARS + 1;
                    break;
                }
            }
        }
    }
}

impl Write for RefScanner {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.candidates.is_empty() || data.is_empty() {
            return Ok(data.len());
        }
        // Windows that straddle the previous write: carry + the first 31 bytes of data.
        let head = &data[..data.len().min(HASH_CHARS - 1)];
        self.carry.extend_from_slice(head);
        Self::scan(&self.table, &self.candidates, &mut self.found, &self.carry);
        if data.len() >= HASH_CHARS {
            Self::scan(&self.table, &self.candidates, &mut self.found, data);
            self.carry.clear();
            self.carry
                .extend_from_slice(&data[data.len() - (HASH_CHARS - 1)..]);
        } else {
            let excess = self.carry.len().saturating_sub(HASH_CHARS - 1);
            self.carry.drain(..excess);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes to two writers (e.g. a hasher and a [`RefScanner`]).
#[derive(Debug)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.write_all(data)?;
        self.1.write_all(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        Hash::digest(s)
    }

    #[test]
    fn scanner_finds_straddling_and_ignores_partial() {
        let a = h("a");
        let b = h("b");
        let c = h("c");
        let text = format!(
            "\0\0/bramble/store/{a}-x\n{}\0x{b}\0",
            &c.to_string()[..31] // a prefix only: not a reference
        );
        for split in 0..text.len() {
            let mut s = RefScanner::new([a, b, c]);
            s.write_all(&text.as_bytes()[..split]).unwrap();
            for byte in &text.as_bytes()[split..] {
                s.write_all(&[*byte]).unwrap();
            }
            assert_eq!(s.found(), &BTreeSet::from([a, b]), "split at {split}");
        }
        // A hash inside a longer base32 run is still found (as Nix does).
        let mut s = RefScanner::new([a]);
        s.write_all(format!("zz{a}zz").as_bytes()).unwrap();
        assert!(s.found().contains(&a));
    }

    #[test]
    fn rewrite_reader_straddles_reads() {
        let from = h("placeholder");
        let to = h("final");
        let text = format!("{from}..{from}{from}x{}", &from.to_string()[..20]);
        let expected = format!("{to}..{to}{to}x{}", &from.to_string()[..20]);
        /// Hands out one byte per read.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || out.is_empty() {
                    return Ok(0);
                }
                out[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let mut r = RewriteReader::new(Trickle(text.as_bytes()), Rewrite::to_final(from, to));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(r.count(), 3);
        // The smallest buffer (sized for an empty file that then grew), whole-slice reads
        // and reads of one byte: the same result.
        let long = text.repeat(40);
        for trickle in [false, true] {
            let inner: Box<dyn Read> = if trickle {
                Box::new(Trickle(long.as_bytes()))
            } else {
                Box::new(long.as_bytes())
            };
            let mut r = RewriteReader::for_size(inner, Rewrite::to_final(from, to), 0);
            assert_eq!(r.buf.len(), 4 * HASH_CHARS);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected.repeat(40));
            assert_eq!(r.count(), 120);
        }
    }

    #[test]
    fn content_address_golden() {
        // Independent computation (Python):
        //   import hashlib, struct, base64
        //   def of_fields(domain, fields):
        //       h = hashlib.sha256()
        //       for f in [domain] + fields: h.update(struct.pack('<Q', len(f)) + f)
        //       return base64.b32encode(h.digest()[:20]).decode().lower()
        //   digest = hashlib.sha256(b'').digest()[:20]
        //   of_fields(b'bramble-store-path-v1', [b'hello', digest, b'\x00'])
        let p = content_address("hello", Hash::digest(b""), false, &BTreeSet::new()).unwrap();
        assert_eq!(p.to_string(), "zrh4zzduuvaadrjjesb7dtft2q256uxh-hello");
        let with_self = content_address("hello", Hash::digest(b""), true, &BTreeSet::new());
        assert_ne!(with_self.unwrap(), p);
    }

    proptest! {
        #[test]
        fn scanner_agrees_with_naive_search(
            noise in prop::collection::vec(prop_oneof![Just(b'a'), Just(b'7'), Just(0u8), any::<u8>()], 0..300),
            inserts in prop::collection::vec((any::<prop::sample::Index>(), 0usize..3), 0..4),
            chunk in 1usize..50,
        ) {
            let hashes = [h("x"), h("y"), h("z")];
            let mut data = noise.clone();
            for (at, which) in inserts {
                let i = at.index(data.len() + 1);
                let text = hashes[which].to_string();
                data.splice(i..i, text.bytes());
            }
            let naive: BTreeSet<Hash> = hashes
                .iter()
                .filter(|hh| data.windows(32).any(|w| w == hh.to_string().as_bytes()))
                .copied()
                .collect();
            let mut s = RefScanner::new(hashes);
            for piece in data.chunks(chunk) {
                s.write_all(piece).unwrap();
            }
            prop_assert_eq!(s.into_found(), naive);
        }
    }
}

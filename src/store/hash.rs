//! `Hash`: the one hash encoding used everywhere in Bramble.
//!
//! SHA-256, truncated to its first 160 bits (20 bytes), printed as RFC 4648 base32 in lower
//! case without padding: exactly 32 characters from `a-z2-7`. Truncation keeps store paths
//! short while leaving 2^80 collision resistance, the same trade-off Nix makes.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Number of bytes kept from the SHA-256 digest.
pub const HASH_BYTES: usize = 20;
/// Length of the printed form.
pub const HASH_CHARS: usize = 32;

/// A 160-bit truncated SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash([u8; HASH_BYTES]);

/// The printed form of a [`Hash`] was not 32 characters of lower-case base32.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a bramble hash: expected {HASH_CHARS} characters of lower-case base32 (a-z, 2-7)"
)]
pub struct ParseHashError {
    /// The rejected text (cut to a readable length).
    pub input: String,
}

impl crate::error::Diagnose for ParseHashError {
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }
}

/// The encoding, built once: building it takes longer than encoding a hash, and hashes are
/// printed and parsed for every template of every derivation.
fn base32() -> &'static data_encoding::Encoding {
    static ENCODING: std::sync::LazyLock<data_encoding::Encoding> =
        std::sync::LazyLock::new(|| {
            let mut spec = data_encoding::Specification::new();
            spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
            spec.encoding()
                .expect("static base32 specification is valid")
        });
    &ENCODING
}

impl Hash {
    /// Hash a byte string.
    pub fn digest(bytes: impl AsRef<[u8]>) -> Hash {
        Hash::from_sha256(&Sha256::digest(bytes.as_ref()).into())
    }

    /// [`Hash::digest`] of the compact JSON of `value` (as `serde_json::to_vec` writes it),
    /// streamed into the hasher rather than collected in a buffer first.
    pub fn of_json(value: &impl serde::Serialize) -> Hash {
        let mut sink = DigestWriter::new();
        serde_json::to_writer(&mut sink, value).expect("serialising into a hasher cannot fail");
        sink.finish()
    }

    /// Truncate a full SHA-256 digest.
    pub fn from_sha256(full: &[u8; 32]) -> Hash {
        let mut out = [0u8; HASH_BYTES];
        out.copy_from_slice(&full[..HASH_BYTES]);
        Hash(out)
    }

    /// Hash several fields with unambiguous framing (each is length-prefixed), so that
    /// `("ab", "c")` and `("a", "bc")` differ. `domain` separates uses of the hash.
    pub fn of_fields(domain: &str, fields: &[&[u8]]) -> Hash {
        let mut hasher = Sha256::new();
        for field in std::iter::once(domain.as_bytes()).chain(fields.iter().copied()) {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        Hash::from_sha256(&hasher.finalize().into())
    }

    /// The raw 20 bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }

    /// Build from raw bytes.
    pub fn from_bytes(bytes: [u8; HASH_BYTES]) -> Hash {
        Hash(bytes)
    }

    /// The all-zero hash, printed as 32 `a`s.
    pub const fn zero() -> Hash {
        Hash([0; HASH_BYTES])
    }
}

/// An `io::Write` that feeds a SHA-256 hasher through a small buffer: `serde_json` writes
/// token by token, and one `update` per token costs more than the copy.
struct DigestWriter {
    hasher: Sha256,
    buf: [u8; 512],
    len: usize,
}

impl DigestWriter {
    fn new() -> DigestWriter {
        DigestWriter {
            hasher: Sha256::new(),
            buf: [0; 512],
            len: 0,
        }
    }

    fn finish(mut self) -> Hash {
        self.hasher.update(&self.buf[..self.len]);
        Hash::from_sha256(&self.hasher.finalize().into())
    }
}

impl std::io::Write for DigestWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.len + data.len() > self.buf.len() {
            self.hasher.update(&self.buf[..self.len]);
            self.len = 0;
            if data.len() > self.buf.len() {
                self.hasher.update(data);
                return Ok(data.len());
            }
        }
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The printed form of a [`Hash`], on the stack (hashes are printed for every template
/// resolved and every realisation looked up).
#[derive(Debug, Clone, Copy)]
pub struct HashText([u8; HASH_CHARS]);

impl HashText {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base32 is ASCII")
    }
}

impl Hash {
    /// The printed form, without allocating.
    pub fn text(&self) -> HashText {
        let mut out = [0u8; HASH_CHARS];
        base32().encode_mut(&self.0, &mut out);
        HashText(out)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Hash, ParseHashError> {
        let err = || ParseHashError {
            input: s.chars().take(64).collect(),
        };
        if s.len() != HASH_CHARS || !s.bytes().all(is_hash_char) {
            return Err(err());
        }
        let mut bytes = [0u8; HASH_BYTES];
        // 32 base32 characters are exactly 20 bytes; trailing bits that are not zero are
        // rejected, so every hash has one printed form.
        base32()
            .decode_mut(s.as_bytes(), &mut bytes)
            .map_err(|_| err())?;
        Ok(Hash(bytes))
    }
}

/// Whether `b` may appear in a printed hash.
pub fn is_hash_char(b: u8) -> bool {
    b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_vectors() {
        // These values are part of the on-disk format: never change them.
        assert_eq!(
            Hash::digest(b"").to_string(),
            "4oymiquy7qobjgx36tejs35zeqt24qpe"
        );
        assert_eq!(
            Hash::digest(b"bramble").to_string(),
            "r5lev447vmjkibsee5pnnlba25zjbari"
        );
        assert_eq!(Hash::zero().to_string(), "a".repeat(32));
        assert_eq!(
            Hash::of_fields("d", &[b"ab", b"c"]).to_string().len(),
            HASH_CHARS
        );
        assert_ne!(
            Hash::of_fields("d", &[b"ab", b"c"]),
            Hash::of_fields("d", &[b"a", b"bc"])
        );
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "A".repeat(32).as_str(),
            "1".repeat(32).as_str(),
            &"a".repeat(31),
            &"a".repeat(33),
        ] {
            assert!(bad.parse::<Hash>().is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(bytes in any::<[u8; HASH_BYTES]>()) {
            let h = Hash::from_bytes(bytes);
            let text = h.to_string();
            prop_assert_eq!(text.len(), HASH_CHARS);
            prop_assert_eq!(text.parse::<Hash>().unwrap(), h);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Hash>();
        }
    }
}

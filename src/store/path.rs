//! `StorePath`: `<hash>-<name>`, the name of one object in the store.
//!
//! Inside every sandbox (and for `bramble run` / `bramble shell`) the store is mounted at the
//! fixed directory [`STORE_DIR`], so outputs can refer to `/bramble/store/<hash>-<name>`
//! wherever the host keeps its store.

use std::fmt;
use std::str::FromStr;

use super::hash::{HASH_CHARS, Hash};

/// The store directory as builders see it.
pub const STORE_DIR: &str = "/bramble/store";

/// Longest allowed name (the part after `<hash>-`), as in Nix.
pub const MAX_NAME_LEN: usize = 211;

/// A validated store object name: `<hash>-<name>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    hash: Hash,
    name: String,
}

/// Why a string is not a store path or a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    #[error("`{0}` is not a store path: expected `<32-char hash>-<name>`")]
    Shape(String),
    #[error("invalid name `{name}`: {reason}")]
    Name { name: String, reason: &'static str },
}

impl crate::error::Diagnose for StorePathError {
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }
}

/// Check a store object name: 1 to 211 characters from `A-Za-z0-9+-._?=`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    let reason = if name.is_empty() {
        Some("a name must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("a name is at most 211 characters")
    } else if name.starts_with('.') {
        Some("a name must not start with `.`")
    } else if !name.bytes().all(is_name_byte) {
        Some("a name may only contain letters, digits and `+-._?=`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StorePathError::Name {
            name: name.chars().take(240).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+-._?=".contains(&b)
}

impl StorePath {
    /// Build a store path from its parts, validating the name.
    pub fn new(hash: Hash, name: &str) -> Result<StorePath, StorePathError> {
        validate_name(name)?;
        Ok(StorePath {
            hash,
            name: name.to_owned(),
        })
    }

    /// Parse a bare `<hash>-<name>` or a full path `/bramble/store/<hash>-<name>` (or any
    /// path whose last component is a store path, as given on the command line for a host
    /// store). Anything below the store object (`…/bin/sh`) is rejected.
    pub fn from_path_str(s: &str) -> Result<StorePath, StorePathError> {
        let base = s.trim_end_matches('/').rsplit('/').next().unwrap_or(s);
        base.parse()
    }

    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The absolute path as builders see it: `/bramble/store/<hash>-<name>`.
    pub fn in_store_dir(&self) -> String {
        format!("{STORE_DIR}/{self}")
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash, self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<StorePath, StorePathError> {
        let shape = || StorePathError::Shape(s.chars().take(240).collect());
        if s.len() < HASH_CHARS + 2 || s.as_bytes()[HASH_CHARS] != b'-' {
            return Err(shape());
        }
        let hash: Hash = s[..HASH_CHARS].parse().map_err(|_| shape())?;
        StorePath::new(hash, &s[HASH_CHARS + 1..])
    }
}

impl serde::Serialize for StorePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StorePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StorePath, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints() {
        let p: StorePath = "4oymiquy7qobjgx36tejs35zeqt24qpe-hello-1.0"
            .parse()
            .unwrap();
        assert_eq!(p.name(), "hello-1.0");
        assert_eq!(
            p.in_store_dir(),
            "/bramble/store/4oymiquy7qobjgx36tejs35zeqt24qpe-hello-1.0"
        );
        let full = StorePath::from_path_str(
            "/home/u/.local/share/bramble/store/4oymiquy7qobjgx36tejs35zeqt24qpe-hello-1.0",
        )
        .unwrap();
        assert_eq!(full, p);
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "",
            "hello",
            "4oymiquy7qobjgx36tejs35zeqt24qpe",
            "4oymiquy7qobjgx36tejs35zeqt24qpe-",
            "4oymiquy7qobjgx36tejs35zeqt24qpe-.hidden",
            "4oymiquy7qobjgx36tejs35zeqt24qpe-a/b",
            "4oymiquy7qobjgx36tejs35zeqt24qpe-a b",
            "4OYMIQUY7QOBJGX36TEJS35ZEQT24QPE-a",
        ] {
            assert!(bad.parse::<StorePath>().is_err(), "{bad:?} parsed");
        }
        assert!(validate_name(&"a".repeat(211)).is_ok());
        assert!(validate_name(&"a".repeat(212)).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(bytes in any::<[u8; 20]>(), name in "[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]{0,60}") {
            let p = StorePath::new(Hash::from_bytes(bytes), &name).unwrap();
            prop_assert_eq!(p.to_string().parse::<StorePath>().unwrap(), p);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<StorePath>();
        }
    }
}

//! Debian version numbers (`[epoch:]upstream[-revision]`) and their ordering, as dpkg
//! compares them (deb-version(7)): epochs numerically, then upstream version and revision
//! each by alternating non-digit and digit parts, where `~` sorts before everything, even
//! the end of the string, and letters sort before other characters.

use std::cmp::Ordering;
use std::fmt;

/// A parsed version. Comparison follows dpkg; equality is dpkg's too (`1.0` = `0:1.0`).
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u64,
    upstream: String,
    revision: String,
    text: String,
}

/// Why a version string is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a Debian version: {problem}")]
pub struct VersionError {
    pub text: String,
    pub problem: &'static str,
}

impl crate::error::Diagnose for VersionError {
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }
}

impl Version {
    /// Parse `[epoch:]upstream[-revision]`.
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let bad = |problem| VersionError {
            text: text.chars().take(200).collect(),
            problem,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        let (epoch, rest) = match trimmed.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the epoch is not a number"));
                }
                (e.parse().map_err(|_| bad("the epoch is too large"))?, rest)
            }
            None => (0, trimmed),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(bad("the upstream version is empty"));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b".+~-:".contains(&b);
        if !upstream.bytes().all(allowed) || !revision.bytes().all(allowed) {
            return Err(bad("it holds a character other than `A-Za-z0-9.+~-:`"));
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_owned(),
            revision: revision.to_owned(),
            text: trimmed.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Version, VersionError> {
        Version::parse(s)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(&self.upstream, &other.upstream))
            .then_with(|| compare_part(&self.revision, &other.revision))
    }
}

/// The weight of one character in a non-digit run: `~` first, then the end of the run,
/// then letters, then everything else (in byte order).
fn order(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`.
fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // The non-digit run.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // The digit run, compared as a number of any length.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let (si, sj) = (i, j);
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        let by_number = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if by_number != Ordering::Equal {
            return by_number;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn dpkg_ordering() {
        // Each pair: left < right, as `dpkg --compare-versions L lt R` says.
        let less = [
            ("1.0", "1.1"),
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0a"),
            ("1.0a", "1.0+"),
            ("1.0", "1.0.1"),
            ("1.9", "1.10"),
            ("1:0.1", "2:0.0"),
            ("9.9", "1:0.1"),
            ("1.0-1", "1.0-2"),
            ("1.0-1", "1.0-1+b1"),
            ("1.0-1~bpo12+1", "1.0-1"),
            ("2.36-9+deb12u13", "2.36-9+deb12u14"),
            ("12.2.0-14", "12.2.0-14+deb12u1"),
            ("1.35.0-4+deb12u1", "1:1.35.0-4+deb12u1+b1"),
            ("0.0001", "0.2"),
            ("a", "b"),
            ("1.0-0", "1.0-0.1"),
        ];
        for (l, r) in less {
            assert!(v(l) < v(r), "{l} < {r}");
            assert!(v(r) > v(l), "{r} > {l}");
        }
        // Equal: leading zeros in numbers, an explicit zero epoch, an empty revision vs `0`.
        for (l, r) in [
            ("1.01", "1.1"),
            ("0:1.0", "1.0"),
            ("1.0", "1.0-0"),
            ("1.0-", "1.0"),
        ] {
            assert_eq!(v(l), v(r), "{l} = {r}");
        }
    }

    #[test]
    fn malformed_versions_are_refused() {
        for bad in ["", "a:1", ":1", "1.0 2", "-1", "1.0_1"] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
        // Upstream versions may hold hyphens: the last one starts the revision.
        let x = v("1.2-3-4");
        assert_eq!(x.upstream, "1.2-3");
        assert_eq!(x.revision, "4");
        assert_eq!(x.as_str(), "1.2-3-4");
    }
}

//! The default base URLs of `mirror://debian` and `mirror://debian-security`: the machine's
//! apt sources, so on a Debian machine the Debian archive mirror it already uses serves
//! Bramble's downloads with no configuration.
//!
//! Read below a root directory (`/` unless [`crate::env::BRAMBLE_APT_ROOT`] says otherwise):
//! `etc/apt/sources.list` and `etc/apt/sources.list.d/*.list` (one-line format:
//! `deb [options] URI SUITE COMPONENT...`) and `etc/apt/sources.list.d/*.sources` (deb822
//! stanzas with `Types`, `URIs`, `Suites`, optional `Enabled: no`). Files are read in that
//! order, the directory's in name order; URLs keep their first position.
//!
//! An entry counts when its type is `deb` or `deb-src`, its URI is http or https, and its
//! suite is a Debian one: a release code name (`bookworm`, `trixie`, `sid`, ...) or alias
//! (`stable`, `testing`, ...), optionally with a `-updates`, `-backports`,
//! `-proposed-updates` or `-security` suffix. `*-security` (and the older `*/updates`)
//! entries give `debian-security`, the others `debian`. Anything else (another
//! distribution's archive, a third-party repository) is ignored, as are lines this reader
//! does not understand: apt sources are the machine's business, and a missing default only
//! means the mirror must be configured.

use std::path::Path;

/// Release code names and aliases of Debian.
const SUITES: &[&str] = &[
    "buzz",
    "rex",
    "bo",
    "hamm",
    "slink",
    "potato",
    "woody",
    "sarge",
    "etch",
    "lenny",
    "squeeze",
    "wheezy",
    "jessie",
    "stretch",
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "experimental",
    "stable",
    "testing",
    "unstable",
    "oldstable",
    "oldoldstable",
];

/// Whether `name` is one of the mirrors apt sources can configure.
pub fn is_debian_name(name: &str) -> bool {
    name == "debian" || name == "debian-security"
}

/// Which archive an entry's suite belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archive {
    Debian,
    Security,
}

fn classify(suite: &str) -> Option<Archive> {
    let suite = suite.trim_end_matches('/');
    if let Some(base) = suite
        .strip_suffix("-security")
        .or_else(|| suite.strip_suffix("/updates"))
    {
        return SUITES.contains(&base).then_some(Archive::Security);
    }
    let base = ["-updates", "-backports", "-proposed-updates"]
        .iter()
        .find_map(|s| suite.strip_suffix(s))
        .unwrap_or(suite);
    SUITES.contains(&base).then_some(Archive::Debian)
}

/// The base URLs found for the Debian archive and its security archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptMirrors {
    pub debian: Vec<String>,
    pub debian_security: Vec<String>,
}

impl AptMirrors {
    /// The URLs of mirror `name` (`debian` or `debian-security`).
    pub fn get(&self, name: &str) -> Option<&[String]> {
        match name {
            "debian" => Some(&self.debian),
            "debian-security" => Some(&self.debian_security),
            _ => None,
        }
    }

    fn add(&mut self, types: &[&str], uri: &str, suite: &str) {
        if !types.iter().any(|t| *t == "deb" || *t == "deb-src") {
            return;
        }
        let lower = uri.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return;
        }
        let list = match classify(suite) {
            Some(Archive::Debian) => &mut self.debian,
            Some(Archive::Security) => &mut self.debian_security,
            None => return,
        };
        let uri = uri.trim_end_matches('/').to_owned();
        if !list.contains(&uri) {
            list.push(uri);
        }
    }

    /// Add the entries of a file in the one-line format.
    pub fn add_one_line(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace().peekable();
            let Some(kind) = words.next() else { continue };
            // `[arch=amd64 signed-by=...]`, possibly split over several words.
            if words.peek().is_some_and(|w| w.starts_with('[')) {
                for w in words.by_ref() {
                    if w.ends_with(']') {
                        break;
                    }
                }
            }
            let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
                continue;
            };
            self.add(&[kind], uri, suite);
        }
    }

    /// Add the entries of a deb822 `.sources` file.
    pub fn add_deb822(&mut self, text: &str) {
        let mut stanza: Vec<(String, String)> = Vec::new();
        let mut flush = |stanza: &mut Vec<(String, String)>| {
            let field = |name: &str| {
                stanza
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            let enabled = field("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
            if enabled
                && let (Some(types), Some(uris), Some(suites)) =
                    (field("Types"), field("URIs"), field("Suites"))
            {
                let types: Vec<&str> = types.split_whitespace().collect();
                for uri in uris.split_whitespace() {
                    for suite in suites.split_whitespace() {
                        self.add(&types, uri, suite);
                    }
                }
            }
            stanza.clear();
        };
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.trim().is_empty() {
                flush(&mut stanza);
            } else if line.starts_with([' ', '\t']) {
                // A continuation of the previous field.
                if let Some((_, v)) = stanza.last_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                stanza.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        flush(&mut stanza);
    }

    /// Read the apt sources below `root` (see the module doc). Unreadable files are skipped.
    pub fn read(root: &Path) -> AptMirrors {
        let mut found = AptMirrors::default();
        let apt = root.join("etc/apt");
        if let Some(text) = read_text(&apt.join("sources.list")) {
            found.add_one_line(&text);
        }
        let dir = apt.join("sources.list.d");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        for name in names {
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            if name.ends_with(".list") {
                if let Some(text) = read_text(&dir.join(name)) {
                    found.add_one_line(&text);
                }
            } else if name.ends_with(".sources")
                && let Some(text) = read_text(&dir.join(name))
            {
                found.add_deb822(&text);
            }
        }
        found
    }
}

/// A regular file's text, or `None` (missing, unreadable, not a regular file).
fn read_text(path: &Path) -> Option<String> {
    // The machine's own files, written by root: a symlink is followed.
    match crate::config::read_regular_file(path, true) {
        Ok(text) => text,
        Err(e) => {
            tracing::debug!("skipping apt sources `{}`: {e}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_format() {
        let mut m = AptMirrors::default();
        m.add_one_line(
            "# comment\n\
             deb http://mirror.example/debian bookworm main contrib\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://mirror.example/debian/ bookworm-updates main\n\
             deb-src http://src.example/debian bookworm main # trailing\n\
             deb http://security.example/debian-security bookworm-security main\n\
             deb http://old.example/debian-security buster/updates main\n\
             deb https://packages.example/apt cloud-sdk-bookworm main\n\
             deb http://archive.example/ubuntu noble main\n\
             deb file:/srv/debian bookworm main\n\
             deb cdrom:[Debian]/ bookworm main\n\
             garbage\n",
        );
        assert_eq!(
            m.debian,
            [
                "http://mirror.example/debian",
                "https://mirror.example/debian",
                "http://src.example/debian"
            ]
        );
        assert_eq!(
            m.debian_security,
            [
                "http://security.example/debian-security",
                "http://old.example/debian-security"
            ]
        );
    }

    #[test]
    fn deb822_format() {
        let mut m = AptMirrors::default();
        m.add_deb822(
            "Types: deb\n\
             # a comment inside\n\
             URIs: http://a.example/debian\n\
             Suites: bookworm bookworm-updates\n\
             Components: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
             \n\
             Types: deb deb-src\n\
             URIs: http://s.example/debian-security\n\
             \x20http://t.example/debian-security\n\
             Suites: bookworm-security\n\
             Components: main\n\
             \n\
             Types: deb\n\
             URIs: http://off.example/debian\n\
             Suites: trixie\n\
             Enabled: no\n\
             \n\
             Types: deb\n\
             URIs: https://deb.example/node_20.x\n\
             Suites: nodistro\n\
             \n\
             Types: rpm\n\
             URIs: http://rpm.example/debian\n\
             Suites: sid\n",
        );
        assert_eq!(m.debian, ["http://a.example/debian"]);
        assert_eq!(
            m.debian_security,
            [
                "http://s.example/debian-security",
                "http://t.example/debian-security"
            ]
        );
    }

    #[test]
    fn reads_the_files_below_a_root_in_order() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            root.path().join("etc/apt/sources.list"),
            "deb http://one.example/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("b.sources"),
            "Types: deb\nURIs: http://three.example/debian\nSuites: bookworm\n",
        )
        .unwrap();
        std::fs::write(d.join("a.list"), "deb http://two.example/debian sid main\n").unwrap();
        std::fs::write(
            d.join("c.list.disabled"),
            "deb http://no.example/debian sid main\n",
        )
        .unwrap();
        let m = AptMirrors::read(root.path());
        assert_eq!(
            m.debian,
            [
                "http://one.example/debian",
                "http://two.example/debian",
                "http://three.example/debian"
            ]
        );
        assert!(m.debian_security.is_empty());
        // No apt directory at all: nothing.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(AptMirrors::read(empty.path()), AptMirrors::default());
    }
}

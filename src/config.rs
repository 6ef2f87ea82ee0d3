//! The user's configuration file, `$XDG_CONFIG_HOME/bramble/config.toml` (default
//! `~/.config/bramble/config.toml`): settings that belong to a machine or a person rather
//! than to a project, read in this one place.
//!
//! ```toml
//! [mirrors]
//! debian = "https://debian.mirror.example/debian"
//! crates = ["https://a.example/crates", "https://b.example/crates"]
//! ```
//!
//! A missing file is an empty configuration. The file, like every configuration file
//! Bramble reads, must be a regular file: [`read_regular_file`] opens it without following
//! a symbolic link and without blocking on a fifo, and refuses anything else with an error
//! that says so. Unknown keys are errors (a typo should not be silently ignored).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::store::fetch::check_name;

/// Where a mirror's base URLs were configured (`mirror://NAME/...`, see
/// `crate::engine::fetch::mirror`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `BRAMBLE_MIRROR_<NAME>`.
    Env,
    /// The `[mirrors]` table of this `bramble.toml`.
    Project(PathBuf),
    /// The `[mirrors]` table of this user config file.
    User(PathBuf),
    /// The apt sources below this root directory.
    Apt(PathBuf),
}

impl Origin {
    /// Where to look, for messages (`` `BRAMBLE_MIRROR_DEBIAN` ``, `` `[mirrors]` of `…` ``).
    pub fn describe(&self, name: &str) -> String {
        match self {
            Origin::Env => format!("`{}`", crate::env::mirror_var(name)),
            Origin::Project(p) | Origin::User(p) => {
                format!("`[mirrors]` of `{}`", p.display())
            }
            Origin::Apt(root) => format!("the apt sources of `{}`", root.join("etc/apt").display()),
        }
    }
}

/// One configuration source: mirror name → base URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub origin: Origin,
    pub table: BTreeMap<String, Vec<String>>,
}

impl Layer {
    /// The `BRAMBLE_MIRROR_<NAME>` variables among `vars` (values split at white space).
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Layer {
        let mut table = BTreeMap::new();
        for (key, value) in vars {
            let Some(upper) = key.strip_prefix(crate::env::BRAMBLE_MIRROR_PREFIX) else {
                continue;
            };
            let name = upper.to_ascii_lowercase().replace('_', "-");
            if check_name(&name).is_err() {
                continue;
            }
            let urls: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
            if !urls.is_empty() {
                table.insert(name, urls);
            }
        }
        Layer {
            origin: Origin::Env,
            table,
        }
    }
}

/// The largest configuration file read (a `bramble.lock` pinning thousands of fetches is
/// well below).
const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read `{path}`: it is {what}, not a regular file")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("cannot read `{path}`: it is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("invalid `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
}

impl crate::error::Diagnose for ConfigError {
    /// A configuration file is the user's.
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }

    fn hint(&self) -> Option<String> {
        match self {
            ConfigError::NotRegular { .. } => Some(
                "configuration files are read only when they are regular files: replace the link or special file by the file itself".into(),
            ),
            _ => None,
        }
    }
}

/// Read `path` as UTF-8 text if it is a regular file: `Ok(None)` when it does not exist.
/// Opened with `O_NONBLOCK` (a fifo cannot hang the reader) and, unless `follow`, with
/// `O_NOFOLLOW` (a symbolic link is refused).
pub fn read_regular_file(path: &Path, follow: bool) -> Result<Option<String>, ConfigError> {
    use rustix::fs::{FileType, Mode, OFlags};
    let read_err = |source: std::io::Error| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) if !follow => {
            return Err(ConfigError::NotRegular {
                path: path.to_owned(),
                what: "a symbolic link",
            });
        }
        Err(e) => return Err(read_err(e.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| read_err(e.into()))?;
    let what = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a directory"),
        FileType::Fifo => Some("a fifo"),
        FileType::Socket => Some("a socket"),
        _ => Some("a device"),
    };
    if let Some(what) = what {
        return Err(ConfigError::NotRegular {
            path: path.to_owned(),
            what,
        });
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(Some(text))
}

/// Where the user's config file is: `$XDG_CONFIG_HOME/bramble/config.toml`, else
/// `$HOME/.config/bramble/config.toml`; `None` without either variable.
pub fn user_config_path() -> Option<PathBuf> {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("XDG_CONFIG_HOME").map(PathBuf::from)
        && dir.is_absolute()
    {
        return Some(dir.join("bramble/config.toml"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".config/bramble/config.toml"))
}

/// A `[mirrors]` table as written: `name = "url"` or `name = ["url", ...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct MirrorTable(BTreeMap<String, OneOrMany>);

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl MirrorTable {
    /// The table as a [`Layer`] from `origin`; a bad mirror name or an empty list is an
    /// error message.
    pub fn to_layer(&self, origin: Origin) -> Result<Layer, String> {
        let mut table = BTreeMap::new();
        for (name, urls) in &self.0 {
            check_name(name).map_err(|e| format!("[mirrors]: {e}"))?;
            let urls = match urls {
                OneOrMany::One(u) => vec![u.clone()],
                OneOrMany::Many(u) => u.clone(),
            };
            if urls.is_empty() {
                return Err(format!("[mirrors]: `{name}` has no URL"));
            }
            table.insert(name.clone(), urls);
        }
        Ok(Layer { origin, table })
    }
}

/// The user's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserConfig {
    /// The file read (or that would have been).
    pub path: Option<PathBuf>,
    /// Its `[mirrors]`, as the user-config layer of the mirror configuration.
    pub mirrors: Option<Layer>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    mirrors: MirrorTable,
}

impl UserConfig {
    /// Read the file at [`user_config_path`] (none there: the empty configuration).
    pub fn load() -> Result<UserConfig, ConfigError> {
        match user_config_path() {
            Some(path) => UserConfig::read(&path),
            None => Ok(UserConfig::default()),
        }
    }

    /// Read the config file at `path` (missing: the empty configuration).
    pub fn read(path: &Path) -> Result<UserConfig, ConfigError> {
        let Some(text) = read_regular_file(path, false)? else {
            return Ok(UserConfig {
                path: Some(path.to_owned()),
                mirrors: None,
            });
        };
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let file: File = toml::from_str(&text).map_err(|e| parse_err(toml_message(&e, &text)))?;
        let mirrors = file
            .mirrors
            .to_layer(Origin::User(path.to_owned()))
            .map_err(parse_err)?;
        Ok(UserConfig {
            path: Some(path.to_owned()),
            mirrors: Some(mirrors),
        })
    }
}

/// A TOML error's message with the line it is on.
pub fn toml_message(e: &toml::de::Error, text: &str) -> String {
    e.message().to_owned()
        + &e.span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Diagnose;

    #[test]
    fn reads_mirrors_as_one_url_or_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[mirrors]\ndebian = \"http://a/debian\"\ncrates = [\"http://b\", \"http://c\"]\n",
        )
        .unwrap();
        let c = UserConfig::read(&path).unwrap();
        let layer = c.mirrors.unwrap();
        assert_eq!(layer.origin, Origin::User(path.clone()));
        assert_eq!(layer.table["debian"], ["http://a/debian"]);
        assert_eq!(layer.table["crates"], ["http://b", "http://c"]);
        // Missing: empty.
        let missing = UserConfig::read(&dir.path().join("nope.toml")).unwrap();
        assert_eq!(missing.mirrors, None);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, expected) in [
            (
                "[mirrors]\nDebian = \"http://a\"\n",
                "`Debian` is not a mirror name",
            ),
            ("[mirrors]\ndebian = []\n", "`debian` has no URL"),
            ("[mirors]\n", "unknown field `mirors`"),
            ("[mirrors]\ndebian = 3\n", "(line 2)"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = UserConfig::read(&path).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
            assert!(
                e.starts_with(&format!("invalid `{}`", path.display())),
                "{e}"
            );
        }
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "[mirrors]\n").unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = UserConfig::read(&link).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read `{}`: it is a symbolic link, not a regular file",
                link.display()
            )
        );
        assert!(e.hint().is_some());
        // Followed where asked (apt's own files).
        assert_eq!(
            read_regular_file(&link, true).unwrap().unwrap(),
            "[mirrors]\n"
        );
        let fifo = dir.path().join("fifo.toml");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Does not hang on a fifo with no writer.
        let e = UserConfig::read(&fifo).unwrap_err();
        assert!(e.to_string().contains("it is a fifo"), "{e}");
        let e = UserConfig::read(dir.path()).unwrap_err();
        assert!(e.to_string().contains("it is a directory"), "{e}");
    }
}

//! `mirror://NAME/path` URLs (as Nix's `mirror://`): package registries and distribution
//! archives are named, never written by host, so derivations and `bramble.lock` hold the same
//! URL on every machine and a pin does not depend on where a file was downloaded from.
//!
//! The base URLs of a name come from configuration. The first of these that names the
//! mirror gives its whole list (later ones are not appended, so a test or a user can always
//! replace the defaults):
//!
//! 1. the environment: `BRAMBLE_MIRROR_<NAME>` ([`crate::env::mirror_var`]: upper case,
//!    `-` as `_`), several base URLs separated by whitespace;
//! 2. the project's `bramble.toml`, table `[mirrors]`;
//! 3. the user's config file, `$XDG_CONFIG_HOME/bramble/config.toml` (default
//!    `~/.config/bramble/config.toml`), table `[mirrors]` ([`crate::config`]);
//! 4. for `debian` and `debian-security` only, the machine's apt sources ([`super::apt`]).
//!
//! In both tables a mirror is `name = "url"` or `name = ["url", ...]`. `mirror://NAME/a/b`
//! becomes `<base>/a/b` for each base URL, tried in order: a download that fails (a 404, a
//! connection error) or a result that does not match its pin moves on to the next, and when
//! all fail the error names every URL tried.

use std::path::PathBuf;
use std::sync::OnceLock;

pub use crate::config::{Layer, Origin};
pub use crate::store::fetch::{MirrorUrl, SCHEME, check_name};

/// The mirror configuration of one bramble run: layers in precedence order, then (for the
/// Debian names) the apt sources, read the first time they are needed.
#[derive(Debug, Default)]
pub struct Mirrors {
    layers: Vec<Layer>,
    /// The root directory whose `etc/apt` is read; `None`: apt sources are not used.
    apt_root: Option<PathBuf>,
    apt: OnceLock<super::apt::AptMirrors>,
    /// The user's config file, for hints (read or not).
    user_config: Option<PathBuf>,
}

/// The base URLs of one mirror and where they were configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Full URLs of the file, one per base URL, in the order to try them.
    pub urls: Vec<String>,
    /// Where the base URLs were configured (`None`: not a mirror URL).
    pub origin: Option<Origin>,
}

impl Mirrors {
    /// `layers` in precedence order (environment, project, user); `apt_root` for the
    /// defaults of `debian` and `debian-security`.
    pub fn new(layers: Vec<Layer>, apt_root: Option<PathBuf>) -> Mirrors {
        Mirrors {
            layers,
            apt_root,
            apt: OnceLock::new(),
            user_config: None,
        }
    }

    /// Name `path` as the user's config file in hints.
    pub fn with_user_config_path(mut self, path: Option<PathBuf>) -> Mirrors {
        self.user_config = path;
        self
    }

    /// The same configuration with `layer` inserted after the layers that take precedence
    /// over its origin (the project's table goes after the environment, before the user's).
    pub fn with_layer(&self, layer: Layer) -> Mirrors {
        let rank = |o: &Origin| match o {
            Origin::Env => 0,
            Origin::Project(_) => 1,
            Origin::User(_) => 2,
            Origin::Apt(_) => 3,
        };
        let mut layers = self.layers.clone();
        let at = layers
            .iter()
            .position(|l| rank(&l.origin) > rank(&layer.origin))
            .unwrap_or(layers.len());
        layers.insert(at, layer);
        Mirrors::new(layers, self.apt_root.clone()).with_user_config_path(self.user_config.clone())
    }

    /// The URLs to try for `url`: itself when it is not a mirror URL.
    pub fn resolve(&self, url: &str) -> Result<Resolved, MirrorError> {
        let Some(mirror) = MirrorUrl::parse(url)? else {
            return Ok(Resolved {
                urls: vec![url.to_owned()],
                origin: None,
            });
        };
        let (bases, origin) = self
            .bases(mirror.name)
            .ok_or_else(|| MirrorError::Unconfigured {
                url: url.to_owned(),
                name: mirror.name.to_owned(),
                user_config: self.user_config.clone(),
                apt: self
                    .apt_root
                    .as_ref()
                    .filter(|_| super::apt::is_debian_name(mirror.name))
                    .map(|root| root.join("etc/apt")),
            })?;
        let mut urls = Vec::with_capacity(bases.len());
        for base in bases {
            let joined = format!("{}/{}", base.trim_end_matches('/'), mirror.path);
            super::url::check_url(&joined).map_err(|e| MirrorError::BadBase {
                name: mirror.name.to_owned(),
                base: base.clone(),
                origin: origin.describe(mirror.name),
                reason: crate::store::local::error_chain(&e),
            })?;
            urls.push(joined);
        }
        Ok(Resolved {
            urls,
            origin: Some(origin),
        })
    }

    fn bases(&self, name: &str) -> Option<(Vec<String>, Origin)> {
        for layer in &self.layers {
            if let Some(urls) = layer.table.get(name).filter(|u| !u.is_empty()) {
                return Some((urls.clone(), layer.origin.clone()));
            }
        }
        let root = self.apt_root.as_ref()?;
        let apt = self.apt.get_or_init(|| super::apt::AptMirrors::read(root));
        let urls = apt.get(name).filter(|u| !u.is_empty())?;
        Some((urls.to_vec(), Origin::Apt(root.clone())))
    }
}

/// Why a mirror URL cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Invalid(#[from] crate::store::fetch::InvalidFetch),
    #[error("cannot fetch `{url}`: the mirror `{name}` is not configured")]
    Unconfigured {
        url: String,
        name: String,
        /// The user's config file.
        user_config: Option<PathBuf>,
        /// The apt directory that was searched (Debian names only).
        apt: Option<PathBuf>,
    },
    #[error("the base URL `{base}` of mirror `{name}` (from {origin}) is not valid: {reason}")]
    BadBase {
        name: String,
        base: String,
        origin: String,
        reason: String,
    },
}

impl crate::error::Diagnose for MirrorError {
    /// A mirror URL or base names what the user configured.
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }

    /// Where to configure the mirror.
    fn hint(&self) -> Option<String> {
        match self {
            MirrorError::Unconfigured {
                name,
                apt,
                user_config,
                ..
            } => {
                let user = user_config.as_ref().map_or_else(
                    || "$XDG_CONFIG_HOME/bramble/config.toml".to_owned(),
                    |p| p.display().to_string(),
                );
                let mut hint = format!(
                    "give its base URL in the environment variable `{}` (several separated by spaces), or in the `[mirrors]` table of the project's `bramble.toml` or of `{user}`: `{name} = \"https://...\"`",
                    crate::env::mirror_var(name),
                );
                if let Some(apt) = apt {
                    hint.push_str(&format!(
                        "; no Debian entry was found in the apt sources of `{}`",
                        apt.display()
                    ));
                }
                Some(hint)
            }
            MirrorError::BadBase { .. } => {
                Some("a mirror's base URL is an http or https URL".into())
            }
            MirrorError::Invalid(e) => e.hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::Diagnose;
    use crate::store::fetch::InvalidFetch;

    fn layer(origin: Origin, entries: &[(&str, &[&str])]) -> Layer {
        Layer {
            origin,
            table: entries
                .iter()
                .map(|(n, u)| ((*n).to_owned(), u.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
        }
    }

    #[test]
    fn parses_mirror_urls() {
        assert_eq!(MirrorUrl::parse("https://x/y").unwrap(), None);
        assert_eq!(
            MirrorUrl::parse("mirror://debian/pool/main/b/x.deb").unwrap(),
            Some(MirrorUrl {
                name: "debian",
                path: "pool/main/b/x.deb"
            })
        );
        for bad in [
            "mirror://debian",
            "mirror://debian/",
            "mirror://Debian/x",
            "mirror:///x",
            "mirror://de_bian/x",
            "mirror://-x/y",
            "mirror://debian/a b",
        ] {
            assert!(
                matches!(MirrorUrl::parse(bad), Err(InvalidFetch::MirrorUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn env_names_map_to_mirror_names() {
        let l = Layer::from_env([
            (
                "BRAMBLE_MIRROR_DEBIAN_SECURITY".to_owned(),
                " http://a/x  http://b/y ".to_owned(),
            ),
            ("BRAMBLE_MIRROR_EMPTY".to_owned(), "  ".to_owned()),
            ("BRAMBLE_HOME".to_owned(), "/h".to_owned()),
            ("BRAMBLE_MIRROR_".to_owned(), "http://c".to_owned()),
        ]);
        assert_eq!(
            l.table,
            BTreeMap::from([(
                "debian-security".to_owned(),
                vec!["http://a/x".to_owned(), "http://b/y".to_owned()]
            )])
        );
        assert_eq!(
            crate::env::mirror_var("debian-security"),
            "BRAMBLE_MIRROR_DEBIAN_SECURITY"
        );
    }

    #[test]
    fn the_first_layer_naming_a_mirror_wins_and_bases_are_joined() {
        let m = Mirrors::new(
            vec![
                layer(Origin::Env, &[("a", &["http://env/base/", "https://env2"])]),
                layer(
                    Origin::User("/u".into()),
                    &[("a", &["http://user"]), ("b", &["http://user/b"])],
                ),
            ],
            None,
        );
        let r = m.resolve("mirror://a/p/q.deb").unwrap();
        assert_eq!(r.urls, ["http://env/base/p/q.deb", "https://env2/p/q.deb"]);
        assert_eq!(r.origin, Some(Origin::Env));
        let r = m.resolve("mirror://b/x").unwrap();
        assert_eq!(r.urls, ["http://user/b/x"]);
        // A project layer goes between the environment and the user's.
        let m = m.with_layer(layer(
            Origin::Project("/p".into()),
            &[("a", &["http://p"]), ("b", &["http://p"])],
        ));
        assert_eq!(
            m.resolve("mirror://a/x").unwrap().urls,
            ["http://env/base/x", "https://env2/x"]
        );
        assert_eq!(m.resolve("mirror://b/x").unwrap().urls, ["http://p/x"]);
        // Other URLs are themselves.
        assert_eq!(m.resolve("http://h/x").unwrap().urls, ["http://h/x"]);
    }

    #[test]
    fn an_unconfigured_mirror_says_where_to_configure_it() {
        let m = Mirrors::new(vec![layer(Origin::Env, &[("a", &["http://a"])])], None)
            .with_user_config_path(Some("/home/u/.config/bramble/config.toml".into()));
        let e = m.resolve("mirror://pypi/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot fetch `mirror://pypi/x`: the mirror `pypi` is not configured"
        );
        assert_eq!(
            e.hint().unwrap(),
            "give its base URL in the environment variable `BRAMBLE_MIRROR_PYPI` (several separated by spaces), or in the `[mirrors]` table of the project's `bramble.toml` or of `/home/u/.config/bramble/config.toml`: `pypi = \"https://...\"`"
        );
        // A Debian name also says which apt sources were searched.
        let m = Mirrors::new(vec![], Some("/nonexistent-root".into()));
        let e = m.resolve("mirror://debian-security/x").unwrap_err();
        assert!(
            e.hint().unwrap().ends_with(
                "; no Debian entry was found in the apt sources of `/nonexistent-root/etc/apt`"
            ),
            "{:?}",
            e.hint()
        );
    }

    #[test]
    fn a_bad_base_url_names_its_origin() {
        let m = Mirrors::new(
            vec![layer(
                Origin::User("/u/c.toml".into()),
                &[("a", &["ftp://x"])],
            )],
            None,
        );
        let e = m.resolve("mirror://a/x").unwrap_err();
        assert!(e.to_string().contains("`[mirrors]` of `/u/c.toml`"), "{e}");
        assert!(e.to_string().contains("`ftp://x`"), "{e}");
    }
}

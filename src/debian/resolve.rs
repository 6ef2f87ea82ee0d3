//! The run-time dependency closure of a list of packages.
//!
//! Rules (what `apt-get install --no-install-recommends` would pick on an empty system, for
//! the cases package sets meet):
//! - `Depends` and `Pre-Depends` are followed; `Recommends`, `Suggests` and `Essential`
//!   are not (an essential package is in the set only when something asks for it).
//! - An entry `a | b` is satisfied if a package already chosen satisfies one alternative;
//!   otherwise the first alternative that some package of the index satisfies is chosen.
//! - A name is satisfied by the package of that name (the highest version meeting the
//!   constraint) or by a package that `Provides` it: an unversioned requirement by any
//!   provider, a versioned one only by a versioned `Provides` (`Provides: x (= 1.2)`) whose
//!   version meets it. A real package is preferred over a provider; among providers the
//!   alphabetically first one wins, so the choice is deterministic.
//! - Architecture qualifiers (`:any`, `:native`, `:amd64`) are accepted and ignored (the
//!   index holds one architecture plus `all`); entries restricted to other architectures
//!   (`[i386]`) are skipped.
//! - One version per package: a requirement that the version already chosen does not meet
//!   is an error, as is a requirement no package meets. Both name the package that asks
//!   and the requirement.
//!
//! Packages are visited breadth-first in the order they are asked for and listed, so the
//! result is a function of the index and the request only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::index::{Package, Relation};

/// Why a closure cannot be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no package `{0}` in the index")]
    UnknownRequest(String),
    #[error("`{package}` depends on `{requirement}`, which no package in the index satisfies")]
    Unsatisfiable {
        package: String,
        requirement: String,
    },
    #[error(
        "`{package}` depends on `{requirement}`, but `{chosen}` {version} is already chosen (for `{chosen_for}`)"
    )]
    Conflict {
        package: String,
        requirement: String,
        chosen: String,
        version: String,
        chosen_for: String,
    },
}

impl crate::error::Diagnose for ResolveError {
    /// The packages asked for are the user's choice.
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }
}

/// The packages of an index, by name and by what they provide.
#[derive(Debug)]
pub struct Universe<'a> {
    arch: String,
    /// Real packages, highest version first.
    by_name: BTreeMap<&'a str, Vec<&'a Package>>,
    /// Providers of a virtual name, with the provided version if any.
    providers: BTreeMap<&'a str, Vec<(&'a Package, &'a Relation)>>,
}

impl<'a> Universe<'a> {
    pub fn new(packages: &'a [Package], arch: &str) -> Universe<'a> {
        let mut by_name: BTreeMap<&str, Vec<&Package>> = BTreeMap::new();
        let mut providers: BTreeMap<&str, Vec<(&Package, &Relation)>> = BTreeMap::new();
        for p in packages {
            if p.architecture != arch && p.architecture != "all" {
                continue;
            }
            by_name.entry(&p.name).or_default().push(p);
            for prov in &p.provides {
                providers.entry(&prov.name).or_default().push((p, prov));
            }
        }
        for list in by_name.values_mut() {
            list.sort_by(|a, b| b.version.cmp(&a.version));
        }
        for list in providers.values_mut() {
            list.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name).then(b.version.cmp(&a.version)));
        }
        Universe {
            arch: arch.to_owned(),
            by_name,
            providers,
        }
    }

    /// Whether package `p` satisfies `rel`.
    fn satisfies(p: &Package, rel: &Relation) -> bool {
        if p.name == rel.name {
            return match &rel.constraint {
                None => true,
                Some((op, v)) => op.holds(&p.version, v),
            };
        }
        p.provides.iter().any(|prov| {
            prov.name == rel.name
                && match (&rel.constraint, &prov.constraint) {
                    (None, _) => true,
                    (Some((op, want)), Some((_, have))) => op.holds(have, want),
                    (Some(_), None) => false,
                }
        })
    }

    /// The best package of the index for `rel`, if any.
    fn candidate(&self, rel: &Relation) -> Option<&'a Package> {
        if let Some(real) = self.by_name.get(rel.name.as_str())
            && let Some(p) = real.iter().find(|p| Self::satisfies(p, rel))
        {
            return Some(p);
        }
        self.providers
            .get(rel.name.as_str())?
            .iter()
            .map(|(p, _)| *p)
            .find(|p| Self::satisfies(p, rel))
    }
}

/// The closure of `wanted`, sorted by package name.
pub fn closure<'a>(
    universe: &Universe<'a>,
    wanted: &[String],
) -> Result<Vec<&'a Package>, ResolveError> {
    // Chosen package per name, with the name of the package that first asked for it.
    let mut chosen: BTreeMap<&str, (&Package, String)> = BTreeMap::new();
    let mut queue: VecDeque<&Package> = VecDeque::new();
    for name in wanted {
        let rel = Relation {
            name: name.clone(),
            arch_qualifier: None,
            constraint: None,
            restriction: Vec::new(),
        };
        let p = universe
            .candidate(&rel)
            .ok_or_else(|| ResolveError::UnknownRequest(name.clone()))?;
        if chosen.insert(&p.name, (p, "the request".into())).is_none() {
            queue.push_back(p);
        }
    }
    while let Some(p) = queue.pop_front() {
        for group in &p.depends {
            let alts: Vec<&Relation> = group
                .iter()
                .filter(|r| r.applies_on(&universe.arch))
                .collect();
            if alts.is_empty() {
                continue;
            }
            // Already satisfied by a package chosen so far?
            if alts
                .iter()
                .any(|r| chosen.values().any(|(c, _)| Universe::satisfies(c, r)))
            {
                continue;
            }
            let requirement = alts
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(" | ");
            let Some(pick) = alts.iter().find_map(|r| universe.candidate(r)) else {
                return Err(ResolveError::Unsatisfiable {
                    package: p.name.clone(),
                    requirement,
                });
            };
            if let Some((other, by)) = chosen.get(pick.name.as_str()) {
                return Err(ResolveError::Conflict {
                    package: p.name.clone(),
                    requirement,
                    chosen: other.name.clone(),
                    version: other.version.to_string(),
                    chosen_for: by.clone(),
                });
            }
            chosen.insert(&pick.name, (pick, p.name.clone()));
            queue.push_back(pick);
        }
    }
    let set: BTreeSet<&str> = chosen.keys().copied().collect();
    Ok(set.into_iter().map(|n| chosen[n].0).collect())
}

#[cfg(test)]
mod tests {
    use super::super::index::parse;
    use super::*;

    fn pkg(name: &str, version: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\n{extra}Filename: pool/{name}_{version}.deb\nSize: 1\nSHA256: {}\n\n",
            "a".repeat(64)
        )
    }

    fn resolve(index: &str, wanted: &[&str]) -> Result<Vec<String>, String> {
        let packages = parse(index).unwrap();
        let universe = Universe::new(&packages, "amd64");
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        closure(&universe, &wanted)
            .map(|ps| {
                ps.iter()
                    .map(|p| format!("{}={}", p.name, p.version))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn follows_depends_alternatives_and_provides() {
        let index = [
            pkg(
                "app",
                "1",
                "Pre-Depends: libc6 (>= 2.30)\nDepends: awk, tool-b | tool-a, shell (>= 2)\n",
            ),
            pkg("libc6", "2.36-9", ""),
            pkg("libc6", "2.28-1", ""),
            pkg("mawk", "1.3", "Provides: awk\n"),
            pkg("gawk", "5.2", "Provides: awk\n"),
            pkg("tool-a", "1", ""),
            pkg("dash", "0.5", "Provides: shell (= 3)\n"),
            pkg("oldsh", "1", "Provides: shell (= 1), shell2\n"),
            pkg("essential-thing", "1", "Essential: yes\n"),
        ]
        .concat();
        // tool-b does not exist: the next alternative; awk: the first provider by name;
        // shell (>= 2): only the versioned Provides that meets it; the newest libc6.
        assert_eq!(
            resolve(&index, &["app"]).unwrap(),
            ["app=1", "dash=0.5", "gawk=5.2", "libc6=2.36-9", "tool-a=1"]
        );
    }

    #[test]
    fn an_alternative_already_chosen_is_kept() {
        let index = [
            pkg("app", "1", "Depends: tool-b | tool-a\n"),
            pkg("tool-a", "1", ""),
            pkg("tool-b", "1", ""),
        ]
        .concat();
        assert_eq!(
            resolve(&index, &["tool-a", "app"]).unwrap(),
            ["app=1", "tool-a=1"]
        );
        assert_eq!(resolve(&index, &["app"]).unwrap(), ["app=1", "tool-b=1"]);
    }

    #[test]
    fn versions_epochs_and_tildes_are_checked() {
        let index = [
            pkg("app", "1", "Depends: lib (>= 1:1.0~rc1), other (<< 2.0)\n"),
            pkg("lib", "1:1.0~rc1", ""),
            pkg("other", "2.0~beta", ""),
        ]
        .concat();
        assert_eq!(
            resolve(&index, &["app"]).unwrap(),
            ["app=1", "lib=1:1.0~rc1", "other=2.0~beta"]
        );
        let too_old = index.replace("1:1.0~rc1\n", "1.5\n");
        assert_eq!(
            resolve(&too_old, &["app"]).unwrap_err(),
            "`app` depends on `lib (>= 1:1.0~rc1)`, which no package in the index satisfies"
        );
    }

    #[test]
    fn unsatisfiable_and_conflicting_requirements_are_named() {
        let index = [
            pkg(
                "app",
                "1",
                "Depends: lib (>= 2), missing | also-missing:any\n",
            ),
            pkg("lib", "2", ""),
        ]
        .concat();
        assert_eq!(
            resolve(&index, &["app"]).unwrap_err(),
            "`app` depends on `missing | also-missing:any`, which no package in the index satisfies"
        );
        assert_eq!(
            resolve(&index, &["nope"]).unwrap_err(),
            "no package `nope` in the index"
        );
        let conflict = [
            pkg("a1", "1", "Depends: lib (= 1)\n"),
            pkg("b1", "1", "Depends: lib (= 2)\n"),
            pkg("lib", "1", ""),
            pkg("lib", "2", ""),
        ]
        .concat();
        assert_eq!(
            resolve(&conflict, &["a1", "b1"]).unwrap_err(),
            "`b1` depends on `lib (= 2)`, but `lib` 1 is already chosen (for `a1`)"
        );
    }

    #[test]
    fn other_architectures_are_ignored() {
        let index = [
            pkg("app", "1", "Depends: only-i386 [i386], lib\n"),
            pkg("lib", "1", ""),
        ]
        .concat()
            + &pkg("lib", "9", "").replace("amd64", "arm64");
        assert_eq!(resolve(&index, &["app"]).unwrap(), ["app=1", "lib=1"]);
    }
}

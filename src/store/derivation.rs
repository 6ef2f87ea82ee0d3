//! `Derivation`: one pure build step, its canonical JSON form and its hash.
//!
//! # Canonical JSON
//!
//! A derivation is hashed as its canonical JSON: an object whose keys are sorted
//! (`args`, `builder`, `dao`, `env`, `limits`, `name`, `outputs`, `platform`, `root`, `sources`; `env`
//! and `limits` keys sorted
//! byte-wise), no whitespace outside strings, and `serde_json`'s compact escaping: `"` and `\`
//! escaped with a backslash, `\b \f \n \r \t` by their short escapes, other control characters
//! below U+0020 as `\u00XX` (lower-case hex), everything else — including non-ASCII — as raw
//! UTF-8. Fields that are absent (`sources: None`, `root: None`, `dao: false`, no `limits`) are omitted
//! rather than written as `null` or `false`, so that optional fields added later leave
//! existing hashes unchanged.
//!
//! A derivation's [`BuildLimits`] (time, silence, memory, processes) are part of it and of its
//! hash, as Nix's `timeout` and `maxSilent` attributes are: the derivation is the whole
//! description of a build, so every machine (and a remote builder) runs it with the same
//! bounds. Changing a limit rebuilds that one step; early cutoff stops the rebuild there when
//! its output comes out the same.
//!
//! The derivation hash is [`Hash::digest`] of those bytes. The *build key* is the hash of the
//! resolved derivation (every template replaced by the input's realised store path), so two
//! derivations whose inputs have the same content share their build key: early cutoff.

use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::hash::Hash;
use super::limits::BuildLimits;
use super::path::{STORE_DIR, StorePath, StorePathError, validate_name};
use super::template::{self, OutputRef, TemplateError};

/// The platform string of the machine Bramble runs on, e.g. `x86_64-linux`.
pub fn host_platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// The source files of a derivation: one content-addressed store object holding exactly the
/// listed files (relative paths, sorted) with their layout. They are copied into `/build`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    /// Relative paths of the files, sorted, `/`-separated.
    pub files: Vec<String>,
    /// The store object that holds them.
    pub path: StorePath,
}

/// A build step. Field order is the canonical (alphabetical) key order: keep it sorted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derivation {
    pub args: Vec<String>,
    pub builder: String,
    /// A derivation-as-output: its `out` is a document of more derivations, spliced into the
    /// build in its place (see [`crate::engine::dao`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dao: bool,
    pub env: BTreeMap<String, String>,
    /// Resource limits of its build (see [`BuildLimits`]); left out of the JSON when none is set.
    #[serde(default, skip_serializing_if = "BuildLimits::is_unset")]
    pub limits: BuildLimits,
    pub name: String,
    pub outputs: Vec<String>,
    pub platform: String,
    /// The root file-system view: a template naming a tree (a Debian package set) whose
    /// `usr/` the build sees read-only at `/usr`, with `/bin`, `/sbin`, `/lib` and `/lib64`
    /// linking into it, so distribution programs run with their absolute paths (their
    /// loader, gcc's internal paths). It is a dependency like any template and a
    /// reference of every output, so `gc` keeps it and `bramble run`/`shell` use it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Sources>,
}

/// A resolved [`Derivation`] that borrows what resolution leaves unchanged. Same fields, same
/// order, same serde attributes: it serialises to the same canonical JSON.
#[derive(serde::Serialize)]
struct ResolvedView<'a> {
    args: Vec<Cow<'a, str>>,
    builder: Cow<'a, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dao: bool,
    env: EnvView<'a>,
    #[serde(skip_serializing_if = "BuildLimits::is_unset")]
    limits: BuildLimits,
    name: &'a str,
    outputs: &'a [String],
    platform: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    root: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<&'a Sources>,
}

/// Environment entries in key order, serialised as a JSON object.
struct EnvView<'a>(Vec<(&'a str, Cow<'a, str>)>);

impl serde::Serialize for EnvView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// The templates of one derivation, found once by [`Derivation::templates`]: what it
/// depends on, and where each template is, so that resolving it (once per build key) does
/// not parse its strings again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    /// Every template, ordered by the string holding it (its position in
    /// [`Derivation::strings`] order), then by position.
    spans: Vec<Span>,
    /// The outputs named, sorted, without duplicates.
    refs: Vec<OutputRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    string: usize,
    range: Range<usize>,
    /// What it names: a position in [`Templates::refs`].
    reference: usize,
}

impl Templates {
    /// The outputs of other derivations named, sorted, without duplicates.
    pub fn dependencies(&self) -> &[OutputRef] {
        &self.refs
    }

    /// The templates of string `string` (position in [`Derivation::strings`] order).
    fn in_string(&self, string: usize) -> impl Iterator<Item = (Range<usize>, &OutputRef)> {
        let start = self.spans.partition_point(|s| s.string < string);
        let end = start + self.spans[start..].partition_point(|s| s.string == string);
        self.spans[start..end]
            .iter()
            .map(|s| (s.range.clone(), &self.refs[s.reference]))
    }
}

/// A store path as builders see it: `/bramble/store/<hash>-<name>`, written without an
/// intermediate string.
struct InStoreDir<P>(P);

impl<P: Borrow<StorePath>> std::fmt::Display for InStoreDir<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.0.borrow())
    }
}

/// Why a derivation is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerivationError {
    // The problems are typed fields, not `source`s: the message names them, and a
    // derivation error is shown on its own (in Starlark diagnostics, DAO problems).
    #[error("derivation `{name}`: {problem}")]
    Name {
        name: String,
        problem: StorePathError,
    },
    #[error("derivation `{name}`: {problem}")]
    Template {
        name: String,
        problem: TemplateError,
    },
    #[error("derivation `{name}`: {problem}")]
    Invalid { name: String, problem: String },
    #[error("malformed derivation JSON: {0}")]
    Json(String),
}

impl crate::error::Diagnose for DerivationError {
    fn class(&self) -> crate::error::Class {
        crate::error::Class::User
    }
}

/// Largest canonical JSON accepted by [`Derivation::from_json`].
pub const MAX_DERIVATION_JSON: usize = 16 << 20;

impl Derivation {
    /// A derivation with default outputs (`["out"]`), no sources, for the host platform.
    pub fn new(name: impl Into<String>, builder: impl Into<String>) -> Derivation {
        Derivation {
            args: Vec::new(),
            builder: builder.into(),
            dao: false,
            env: BTreeMap::new(),
            limits: BuildLimits::default(),
            name: name.into(),
            outputs: vec!["out".to_owned()],
            platform: host_platform(),
            root: None,
            sources: None,
        }
    }

    /// The canonical JSON bytes (see the module doc).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a derivation always serialises")
    }

    /// Parse JSON (canonical or not) and validate the result.
    pub fn from_json(text: &str) -> Result<Derivation, DerivationError> {
        if text.len() > MAX_DERIVATION_JSON {
            return Err(DerivationError::Json(format!(
                "{} bytes is over the {MAX_DERIVATION_JSON} byte limit",
                text.len()
            )));
        }
        let drv: Derivation =
            serde_json::from_str(text).map_err(|e| DerivationError::Json(e.to_string()))?;
        drv.validate()?;
        Ok(drv)
    }

    /// The derivation hash: [`Hash::digest`] of the canonical JSON.
    pub fn hash(&self) -> Hash {
        Hash::of_json(self)
    }

    /// The template of one of this derivation's outputs.
    pub fn output_ref(&self, output: &str) -> OutputRef {
        OutputRef {
            drv: self.hash(),
            output: output.to_owned(),
        }
    }

    /// Check names, outputs and templates. Every constructor of untrusted derivations calls it.
    pub fn validate(&self) -> Result<(), DerivationError> {
        self.validate_templates().map(drop)
    }

    /// [`Derivation::validate`], returning the [`Derivation::templates`] found on the way
    /// (templates are parsed once: evaluation does this for every derivation).
    pub fn validate_templates(&self) -> Result<Templates, DerivationError> {
        let name = &self.name;
        let invalid = |problem: String| {
            Err(DerivationError::Invalid {
                name: name.clone(),
                problem,
            })
        };
        validate_name(name).map_err(|problem| DerivationError::Name {
            name: name.clone(),
            problem,
        })?;
        if self.builder.is_empty() {
            return invalid("the builder is empty".into());
        }
        if self.outputs.is_empty() {
            return invalid("a derivation needs at least one output".into());
        }
        let mut seen = BTreeSet::new();
        for output in &self.outputs {
            template::validate_output_name(output).map_err(|problem| {
                DerivationError::Template {
                    name: name.clone(),
                    problem,
                }
            })?;
            if !seen.insert(output) {
                return invalid(format!("output `{output}` is listed twice"));
            }
            validate_name(&self.output_path_name(output)).map_err(|problem| {
                DerivationError::Name {
                    name: name.clone(),
                    problem,
                }
            })?;
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return invalid(format!("environment variable name `{key}` is not valid"));
            }
        }
        if self.strings().any(|s| s.contains('\0')) {
            return invalid("builder, args and env must not contain NUL bytes".into());
        }
        if self.platform.is_empty() {
            return invalid("the platform is empty".into());
        }
        let l = &self.limits;
        if l.memory_bytes == Some(0)
            || l.processes == Some(0)
            || l.silence_ms == Some(0)
            || l.timeout_ms == Some(0)
        {
            return invalid(
                "a limit (timeout, silence, memory, processes) must be positive".into(),
            );
        }
        if self.dao && self.outputs != ["out"] {
            return invalid("a DAO has exactly one output, `out`".into());
        }
        if let Some(sources) = &self.sources {
            for file in &sources.files {
                let bad = file.is_empty()
                    || file.starts_with('/')
                    || file
                        .split('/')
                        .any(|c| c.is_empty() || c == "." || c == "..");
                if bad {
                    return invalid(format!(
                        "source file `{file}` must be a relative path inside the project"
                    ));
                }
            }
            if !sources.files.windows(2).all(|w| w[0] < w[1]) {
                return invalid("source files must be sorted and unique".into());
            }
        }
        self.templates()
    }

    /// Every string that may hold templates, in the order [`Templates`] numbers them:
    /// builder, args, env values.
    fn strings(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.builder)
            .chain(&self.args)
            .chain(self.env.values())
            .chain(&self.root)
    }

    /// Find every template of the builder, args and env values.
    pub fn templates(&self) -> Result<Templates, DerivationError> {
        // Spans point at the references in order of appearance first.
        let mut spans = Vec::new();
        let mut refs = Vec::new();
        for (string, s) in self.strings().enumerate() {
            let found = template::find(s).map_err(|problem| DerivationError::Template {
                name: self.name.clone(),
                problem,
            })?;
            for (range, r) in found {
                spans.push(Span {
                    string,
                    range,
                    reference: refs.len(),
                });
                refs.push(r);
            }
        }
        // Most derivations name one output at most: already distinct and sorted.
        if refs.len() > 1 {
            let appearance = std::mem::take(&mut refs);
            refs = appearance.clone();
            refs.sort_unstable();
            refs.dedup();
            for span in &mut spans {
                span.reference = refs
                    .binary_search(&appearance[span.reference])
                    .expect("every reference was kept");
            }
        }
        Ok(Templates { spans, refs })
    }

    /// The outputs of other derivations this one refers to through templates.
    pub fn dependencies(&self) -> Result<BTreeSet<OutputRef>, DerivationError> {
        Ok(self.templates()?.refs.into_iter().collect())
    }

    /// Replace every template by `/bramble/store/<path>` of the input's realised output.
    pub fn resolve(
        &self,
        lookup: impl FnMut(&OutputRef) -> Option<StorePath>,
    ) -> Result<Derivation, DerivationError> {
        self.resolve_with(&self.templates()?, lookup)
    }

    /// [`Derivation::resolve`] with this derivation's [`Derivation::templates`], found
    /// before (the caller vouches they are this derivation's).
    pub fn resolve_with<P: Borrow<StorePath>>(
        &self,
        templates: &Templates,
        lookup: impl FnMut(&OutputRef) -> Option<P>,
    ) -> Result<Derivation, DerivationError> {
        let view = self.resolved_view(templates, lookup)?;
        Ok(Derivation {
            args: view.args.into_iter().map(Cow::into_owned).collect(),
            builder: view.builder.into_owned(),
            dao: self.dao,
            env: view
                .env
                .0
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_owned()))
                .collect(),
            limits: self.limits,
            name: self.name.clone(),
            outputs: self.outputs.clone(),
            platform: self.platform.clone(),
            root: view.root.map(Cow::into_owned),
            sources: self.sources.clone(),
        })
    }

    /// The build key: the hash of the resolved derivation. Same as [`Derivation::hash`] of
    /// the result of [`Derivation::resolve`], without building it: strings without
    /// templates are borrowed and the canonical JSON is streamed into the hasher.
    pub fn build_key(
        &self,
        lookup: impl FnMut(&OutputRef) -> Option<StorePath>,
    ) -> Result<Hash, DerivationError> {
        self.build_key_with(&self.templates()?, lookup)
    }

    /// [`Derivation::build_key`] with this derivation's [`Derivation::templates`], found
    /// before (the caller vouches they are this derivation's).
    pub fn build_key_with<P: Borrow<StorePath>>(
        &self,
        templates: &Templates,
        lookup: impl FnMut(&OutputRef) -> Option<P>,
    ) -> Result<Hash, DerivationError> {
        Ok(Hash::of_json(&self.resolved_view(templates, lookup)?))
    }

    /// The resolved derivation, borrowing every string that holds no template.
    fn resolved_view<'d, P: Borrow<StorePath>>(
        &'d self,
        templates: &Templates,
        mut lookup: impl FnMut(&OutputRef) -> Option<P>,
    ) -> Result<ResolvedView<'d>, DerivationError> {
        // `string` numbers the strings as `strings` orders them.
        let mut sub = |string: usize, text: &'d str| {
            template::replace(text, templates.in_string(string), |r| {
                lookup(r).map(InStoreDir)
            })
            .map_err(|problem| DerivationError::Template {
                name: self.name.clone(),
                problem,
            })
        };
        let args_from = 1;
        let env_from = args_from + self.args.len();
        let root_at = env_from + self.env.len();
        Ok(ResolvedView {
            args: (self.args.iter().enumerate())
                .map(|(i, a)| sub(args_from + i, a))
                .collect::<Result<_, _>>()?,
            builder: sub(0, &self.builder)?,
            dao: self.dao,
            env: EnvView(
                (self.env.iter().enumerate())
                    .map(|(i, (k, v))| Ok((k.as_str(), sub(env_from + i, v)?)))
                    .collect::<Result<_, DerivationError>>()?,
            ),
            limits: self.limits,
            name: &self.name,
            outputs: &self.outputs,
            platform: &self.platform,
            root: match &self.root {
                Some(r) => Some(sub(root_at, r)?),
                None => None,
            },
            sources: self.sources.as_ref(),
        })
    }

    /// The store object name of an output: `name` for `out`, `name-<output>` otherwise.
    pub fn output_path_name(&self, output: &str) -> String {
        if output == "out" {
            self.name.clone()
        } else {
            format!("{}-{output}", self.name)
        }
    }

    /// The placeholder path a build writes `output` to before its final hash is known. It is
    /// derived from the build key, so it is the same for every build of the same resolved
    /// derivation, and its hash part is what "modulo self-references" zeroes.
    pub fn placeholder(&self, build_key: Hash, output: &str) -> StorePath {
        let hash = Hash::of_fields(
            "bramble-placeholder-v1",
            &[build_key.as_bytes(), output.as_bytes()],
        );
        StorePath::new(hash, &self.output_path_name(output)).expect("output names were validated")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Derivation {
        let mut d = Derivation::new("hello", "/bin/sh");
        d.platform = "x86_64-linux".into();
        d.args = vec!["-c".into(), "echo \"hi\"\n\t> $out ü".into()];
        d.env.insert("Z".into(), "1".into());
        d.env.insert("A".into(), "\u{1}".into());
        d
    }

    #[test]
    fn canonical_json_is_sorted_and_compact() {
        assert_eq!(
            sample().canonical_json(),
            r#"{"args":["-c","echo \"hi\"\n\t> $out ü"],"builder":"/bin/sh","env":{"A":"\u0001","Z":"1"},"name":"hello","outputs":["out"],"platform":"x86_64-linux"}"#
        );
    }

    #[test]
    fn golden_hashes() {
        // Part of the on-disk format: a change here changes every store path. Never edit.
        assert_eq!(sample().hash().to_string(), GOLDEN_SAMPLE);
        let mut with_sources = sample();
        with_sources.sources = Some(Sources {
            files: vec!["a.txt".into(), "dir/b.sh".into()],
            path: format!("{}-hello-source", Hash::digest(b"src"))
                .parse()
                .unwrap(),
        });
        assert_eq!(with_sources.hash().to_string(), GOLDEN_WITH_SOURCES);
    }

    #[test]
    fn dao_flag_is_hashed_only_when_set() {
        let mut d = sample();
        d.dao = true;
        assert!(
            d.canonical_json()
                .contains(r#""builder":"/bin/sh","dao":true,"env""#)
        );
        assert_ne!(d.hash().to_string(), GOLDEN_SAMPLE);
        assert_eq!(Derivation::from_json(&d.canonical_json()).unwrap(), d);
        d.outputs.push("dev".into());
        assert!(
            d.validate()
                .unwrap_err()
                .to_string()
                .contains("exactly one output")
        );
    }

    #[test]
    fn limits_are_hashed_only_when_set_and_must_be_positive() {
        let mut d = sample();
        d.limits = BuildLimits::default();
        assert_eq!(d.hash().to_string(), GOLDEN_SAMPLE);
        d.limits.timeout_ms = Some(2000);
        d.limits.memory_bytes = Some(1 << 30);
        assert!(
            d.canonical_json().contains(
                r#""Z":"1"},"limits":{"memory_bytes":1073741824,"timeout_ms":2000},"name""#
            ),
            "{}",
            d.canonical_json()
        );
        assert_ne!(d.hash().to_string(), GOLDEN_SAMPLE);
        assert_eq!(Derivation::from_json(&d.canonical_json()).unwrap(), d);
        // The resolved view (the build key) carries them too.
        assert_eq!(d.build_key(|_| None).unwrap(), d.hash());
        d.limits.processes = Some(0);
        assert!(
            d.validate()
                .unwrap_err()
                .to_string()
                .contains("must be positive")
        );
    }

    #[test]
    fn a_root_view_is_hashed_a_dependency_and_resolved() {
        let tree = Derivation::new("tree", "/bin/sh");
        let mut d = sample();
        d.root = Some(tree.output_ref("out").template());
        let json = d.canonical_json();
        assert!(
            json.contains(r#""platform":"x86_64-linux","root":"{{ "#),
            "{json}"
        );
        assert_ne!(d.hash().to_string(), GOLDEN_SAMPLE);
        assert_eq!(Derivation::from_json(&json).unwrap(), d);
        assert_eq!(
            d.templates().unwrap().dependencies(),
            [tree.output_ref("out")]
        );
        let path: StorePath = format!("{}-tree", Hash::digest(b"t")).parse().unwrap();
        let resolved = d.resolve(|_| Some(path.clone())).unwrap();
        assert_eq!(resolved.root, Some(path.in_store_dir()));
        // The streamed build key agrees with the resolved derivation's hash.
        let key = d.build_key(|_| Some(path.clone())).unwrap();
        assert_eq!(key, resolved.hash());
    }

    #[test]
    fn streamed_hash_is_the_digest_of_the_canonical_json() {
        // Strings shorter and longer than the hasher's buffer, and many small tokens.
        let mut d = sample();
        for len in [1, 100, 511, 512, 513, 600, 2000, 5000] {
            d.args.push("x".repeat(len));
        }
        for i in 0..200 {
            d.env.insert(format!("V{i}"), "é\n".repeat(i));
        }
        assert_eq!(d.hash(), Hash::digest(d.canonical_json()));
        assert_eq!(sample().hash(), Hash::digest(sample().canonical_json()));
    }

    const GOLDEN_SAMPLE: &str = "zpetqbh25zvgyf5nexalnuy7rneutv2o";
    const GOLDEN_WITH_SOURCES: &str = "urcygfsf5yenukkn6nqe2elqvs45ra33";

    #[test]
    fn resolve_and_build_key() {
        let base = sample();
        let mut user = Derivation::new(
            "user",
            format!("{}/bin/sh", base.output_ref("out").template()),
        );
        user.platform = "x86_64-linux".into();
        let deps = user.dependencies().unwrap();
        assert_eq!(
            deps.into_iter().collect::<Vec<_>>(),
            vec![base.output_ref("out")]
        );

        let p1: StorePath = format!("{}-hello", Hash::digest(b"1")).parse().unwrap();
        let resolved = user.resolve(|_| Some(p1.clone())).unwrap();
        assert_eq!(resolved.builder, format!("/bramble/store/{p1}/bin/sh"));
        assert_eq!(
            user.build_key(|_| Some(p1.clone())).unwrap(),
            resolved.hash()
        );
        // Different input content, different key; same content, same key.
        let p2: StorePath = format!("{}-hello", Hash::digest(b"2")).parse().unwrap();
        assert_ne!(
            user.build_key(|_| Some(p2.clone())).unwrap(),
            resolved.hash()
        );
        assert!(user.resolve(|_| None).is_err());
        assert!(user.build_key(|_| None).is_err());

        // Templates in args and env too, with sources and the DAO flag: the streamed key is
        // the hash of the materialised resolved derivation, and the canonical JSON did not
        // change (`canonical_json` still serialises through `serde_json::to_string`).
        let t = base.output_ref("out").template();
        user.args = vec!["-c".into(), format!("cat {t}/x > $out"), "plain".into()];
        user.env.insert("B".into(), format!("{t}:{t}"));
        user.env
            .insert("A".into(), "no template \u{1} \"q\"".into());
        user.dao = true;
        user.sources = Some(Sources {
            files: vec!["a".into()],
            path: p2.clone(),
        });
        let resolved = user.resolve(|_| Some(p1.clone())).unwrap();
        assert_eq!(
            resolved.env["B"],
            format!("/bramble/store/{p1}:/bramble/store/{p1}")
        );
        assert_eq!(
            user.build_key(|_| Some(p1.clone())).unwrap(),
            Hash::digest(resolved.canonical_json())
        );
        assert_eq!(user.hash(), Hash::digest(user.canonical_json()));
    }

    #[test]
    fn templates_found_once_resolve_as_parsing_again() {
        let (a, b) = (sample(), Derivation::new("b", "/bin/sh"));
        let (ta, tb) = (
            a.output_ref("out").template(),
            b.output_ref("dev").template(),
        );
        let mut user = Derivation::new("user", format!("{ta}/bin/sh"));
        user.args = vec!["-c".into(), format!("{tb} {ta}{tb}"), "plain".into()];
        user.env.insert("X".into(), format!("x{tb}"));
        user.env.insert("A".into(), "none".into());
        let templates = user.templates().unwrap();
        let deps: Vec<OutputRef> = user.dependencies().unwrap().into_iter().collect();
        assert_eq!(templates.dependencies(), deps);
        let path = |r: &OutputRef| {
            let name = if r.output == "out" { "a" } else { "b-dev" };
            Some(StorePath::new(r.drv, name).unwrap())
        };
        let resolved = user.resolve_with(&templates, path).unwrap();
        assert_eq!(resolved, user.resolve(path).unwrap());
        assert_eq!(
            resolved.args[1],
            format!(
                "/bramble/store/{}-b-dev /bramble/store/{}-a/bramble/store/{}-b-dev",
                b.hash(),
                a.hash(),
                b.hash()
            )
        );
        assert_eq!(
            user.build_key_with(&templates, path).unwrap(),
            resolved.hash()
        );
        // Positions found in another derivation are refused, not a panic.
        let other = Derivation::new("o", format!("{ta}{ta}{ta}"));
        assert!(
            user.build_key_with(&other.templates().unwrap(), path)
                .is_err()
        );
    }

    #[test]
    fn validation() {
        let mut d = sample();
        d.outputs = vec!["out".into(), "out".into()];
        assert!(d.validate().is_err());
        let mut d = sample();
        d.name = "bad name".into();
        assert!(d.validate().is_err());
        let mut d = sample();
        d.sources = Some(Sources {
            files: vec!["../etc/passwd".into()],
            path: format!("{}-s", Hash::zero()).parse().unwrap(),
        });
        assert!(d.validate().is_err());
        assert!(Derivation::from_json(r#"{"args":[],"builder":"b","env":{},"name":"x","outputs":["out"],"platform":"p","extra":1}"#).is_err());
    }

    #[test]
    fn json_round_trip() {
        let d = sample();
        assert_eq!(Derivation::from_json(&d.canonical_json()).unwrap(), d);
    }

    proptest! {
        #[test]
        fn from_json_never_panics(s in "\\PC{0,200}") {
            let _ = Derivation::from_json(&s);
        }

        #[test]
        fn hash_depends_on_every_field(arg in "\\PC{0,20}") {
            let mut d = sample();
            let before = d.hash();
            d.args.push(arg);
            prop_assert_ne!(d.hash(), before);
        }
    }
}

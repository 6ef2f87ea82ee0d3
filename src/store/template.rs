//! Templates: how a derivation refers to another derivation's output.
//!
//! The text `{{ <hash>:<output> }}` inside a derivation's builder, args or env values names
//! output `<output>` of the derivation whose hash is `<hash>`. The set of templates is the
//! derivation's dependency set (so it is part of its hash: a Merkle DAG). Before a build each
//! template is *resolved*: replaced by the input's realised path under `/bramble/store`.
//!
//! Grammar: `{{`, optional spaces, 32 hash characters, `:`, an output name, optional spaces,
//! `}}`. A `{{` that is not followed by `<hash>:` is ordinary text (shell and Go templates
//! stay usable); one that is, but does not complete the grammar, is an error.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use super::hash::{HASH_CHARS, Hash, is_hash_char};

/// Longest output name.
pub const MAX_OUTPUT_NAME_LEN: usize = 64;

/// One output of one derivation: what a template names.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct OutputRef {
    /// The derivation's hash.
    pub drv: Hash,
    /// The output's name (`out`, `dev`, …).
    pub output: String,
}

impl OutputRef {
    /// The canonical template text, `{{ <hash>:<output> }}`.
    pub fn template(&self) -> String {
        format!("{{{{ {}:{} }}}}", self.drv, self.output)
    }
}

impl fmt::Display for OutputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.drv, self.output)
    }
}

impl fmt::Debug for OutputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutputRef({self})")
    }
}

/// A malformed template or output name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unterminated template at byte {offset}: expected `{{{{ <hash>:<output> }}}}`")]
    Unterminated { offset: usize },
    #[error("invalid output name `{name}`: {reason}")]
    OutputName { name: String, reason: &'static str },
    #[error("template `{template}` names a derivation output that is not known here")]
    Unresolved { template: String },
    /// Template positions given for another text (a caller's mistake, reported rather than
    /// panicking).
    #[error("template positions do not match the text at byte {offset}")]
    Misplaced { offset: usize },
}

impl crate::error::Diagnose for TemplateError {
    fn class(&self) -> crate::error::Class {
        match self {
            TemplateError::Misplaced { .. } => crate::error::Class::Internal,
            _ => crate::error::Class::User,
        }
    }
}

/// Check an output name: 1 to 64 characters from `A-Za-z0-9_-`, not starting with `-`.
pub fn validate_output_name(name: &str) -> Result<(), TemplateError> {
    let reason = if name.is_empty() {
        Some("an output name must not be empty")
    } else if name.len() > MAX_OUTPUT_NAME_LEN {
        Some("an output name is at most 64 characters")
    } else if name.starts_with('-') {
        Some("an output name must not start with `-`")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Some("an output name may only contain letters, digits, `_` and `-`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TemplateError::OutputName {
            name: name.chars().take(80).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Every template in `text`, with its byte range, in order of appearance.
pub fn find(text: &str) -> Result<Vec<(Range<usize>, OutputRef)>, TemplateError> {
    let hash_key = |rest: &[u8]| {
        let is_key = rest.len() > HASH_CHARS && rest[..HASH_CHARS].iter().all(|&b| is_hash_char(b));
        is_key.then_some(HASH_CHARS)
    };
    scan(text, hash_key)?
        .into_iter()
        .map(|t| {
            let drv: Hash = t.key.parse().map_err(|_| TemplateError::Unterminated {
                offset: t.range.start,
            })?;
            Ok((
                t.range,
                OutputRef {
                    drv,
                    output: t.output.to_owned(),
                },
            ))
        })
        .collect()
}

/// One `{{ <key>:<output> }}` found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'t> {
    pub range: Range<usize>,
    pub key: &'t str,
    pub output: &'t str,
}

/// The template grammar with a caller-defined key: `{{`, spaces, a key, `:`, an output name,
/// spaces, `}}`. `key` gets the bytes after `{{` and its spaces and returns the length of
/// the key there, or `None` if none starts there. A `{{` not followed by a key and `:` is
/// ordinary text; one that is, but does not complete the grammar, is an error. Store
/// templates use hashes as keys ([`find`]); DAO documents use document-local ids.
pub fn scan(
    text: &str,
    key: impl Fn(&[u8]) -> Option<usize>,
) -> Result<Vec<Found<'_>>, TemplateError> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    // A `char` pattern is a memchr; a `"{{"` pattern sets up a two-way searcher per call,
    // which costs more than the scan on the short strings derivations hold.
    while let Some(pos) = text[from..].find('{') {
        let start = from + pos;
        if bytes.get(start + 1) != Some(&b'{') {
            from = start + 1;
            continue;
        }
        let mut i = start + 2;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let key_len = match key(&bytes[i..]) {
            Some(n) if n > 0 && bytes.get(i + n) == Some(&b':') => n,
            _ => {
                from = start + 2;
                continue;
            }
        };
        let key_text = &text[i..i + key_len];
        i += key_len + 1;
        let name_start = i;
        while i < bytes.len() && !matches!(bytes[i], b' ' | b'}') {
            i += 1;
        }
        let output = &text[name_start..i];
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if !text[i..].starts_with("}}") {
            return Err(TemplateError::Unterminated { offset: start });
        }
        validate_output_name(output)?;
        i += 2;
        found.push(Found {
            range: start..i,
            key: key_text,
            output,
        });
        from = i;
    }
    Ok(found)
}

/// Replace every template in `text` by what `resolve` returns for it.
pub fn substitute(
    text: &str,
    resolve: impl FnMut(&OutputRef) -> Option<String>,
) -> Result<String, TemplateError> {
    substitute_cow(text, resolve).map(Cow::into_owned)
}

/// [`substitute`], borrowing `text` when it holds no template (most strings do not).
pub fn substitute_cow(
    text: &str,
    resolve: impl FnMut(&OutputRef) -> Option<String>,
) -> Result<Cow<'_, str>, TemplateError> {
    let found = find(text)?;
    replace(
        text,
        found.iter().map(|(range, r)| (range.clone(), r)),
        resolve,
    )
}

/// `text` with the templates at `found` (their byte ranges in `text`, in order, and what
/// they name, as [`find`] gives them) replaced by what `resolve` returns for each; borrowed
/// when there are none. The one substitution routine: [`substitute`] finds the templates
/// first, a derivation resolves from the positions it found once
/// ([`super::Derivation::templates`]).
pub fn replace<'t, 'r, V: fmt::Display>(
    text: &'t str,
    found: impl IntoIterator<Item = (Range<usize>, &'r OutputRef)>,
    mut resolve: impl FnMut(&OutputRef) -> Option<V>,
) -> Result<Cow<'t, str>, TemplateError> {
    use std::fmt::Write as _;
    let mut found = found.into_iter().peekable();
    if found.peek().is_none() {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut last = 0;
    for (range, reference) in found {
        let before = text
            .get(last..range.start)
            .filter(|_| text.is_char_boundary(range.end))
            .ok_or(TemplateError::Misplaced {
                offset: range.start,
            })?;
        let value = resolve(reference).ok_or_else(|| TemplateError::Unresolved {
            template: reference.template(),
        })?;
        out.push_str(before);
        write!(out, "{value}").expect("writing to a String cannot fail");
        last = range.end;
    }
    out.push_str(
        text.get(last..)
            .ok_or(TemplateError::Misplaced { offset: last })?,
    );
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: &str = "4oymiquy7qobjgx36tejs35zeqt24qpe";

    #[test]
    fn finds_templates() {
        let text =
            format!("{{{{ {H}:out }}}}/bin/sh -c '{{{{{H}:dev}}}}' {{{{ not a template }}}}");
        let found = find(&text).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1.output, "out");
        assert_eq!(found[1].1.output, "dev");
        assert_eq!(&text[found[0].0.clone()], format!("{{{{ {H}:out }}}}"));
    }

    #[test]
    fn literal_braces_are_text() {
        assert!(find("{{ .Values }} {{}} {{").unwrap().is_empty());
    }

    #[test]
    fn rejects_broken_templates() {
        assert!(matches!(
            find(&format!("{{{{ {H}:out")),
            Err(TemplateError::Unterminated { offset: 0 })
        ));
        assert!(matches!(
            find(&format!("{{{{ {H}: }}}}")),
            Err(TemplateError::OutputName { .. })
        ));
        assert!(matches!(
            find(&format!("{{{{ {H}:a/b }}}}")),
            Err(TemplateError::OutputName { .. })
        ));
    }

    #[test]
    fn substitutes() {
        let text = format!("x{{{{ {H}:out }}}}/bin");
        let got = substitute(&text, |r| Some(format!("/bramble/store/{}-p", r.drv))).unwrap();
        assert_eq!(got, format!("x/bramble/store/{H}-p/bin"));
        assert!(matches!(
            substitute(&text, |_| None),
            Err(TemplateError::Unresolved { .. })
        ));
    }

    proptest! {
        #[test]
        fn find_never_panics(s in "(\\{\\{ ?|[a-z2-7]{0,33}|:|out| ?\\}\\}|\\PC){0,12}") {
            let _ = find(&s);
        }

        #[test]
        fn template_round_trip(bytes in any::<[u8; 20]>(), output in "[A-Za-z0-9_][A-Za-z0-9_-]{0,20}", pre in "[^{]{0,10}", post in "[^{]{0,10}") {
            let r = OutputRef { drv: Hash::from_bytes(bytes), output };
            let text = format!("{pre}{}{post}", r.template());
            let found = find(&text).unwrap();
            prop_assert_eq!(found.len(), 1);
            prop_assert_eq!(&found[0].1, &r);
        }
    }
}

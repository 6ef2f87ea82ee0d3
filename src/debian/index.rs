//! A suite's `Packages` index: paragraphs of `Field: value` lines (deb822), one per binary
//! package, and the relation fields (`Depends`, `Pre-Depends`, `Provides`) parsed into
//! [`Relation`]s.
//!
//! The index is untrusted input (it comes from a mirror, pinned only by its hash): parsing
//! never panics, and every error names the paragraph's line and the field.

use std::collections::BTreeMap;

use super::version::Version;

/// Most paragraphs one index may hold (bookworm's main/amd64 has about 64,000).
pub const MAX_PACKAGES: usize = 1_000_000;

/// One binary package of the index, with the fields package sets use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    /// `Depends` and `Pre-Depends` together: each entry is satisfied by any one of its
    /// alternatives.
    pub depends: Vec<Vec<Relation>>,
    /// Virtual packages (and versions) this package provides.
    pub provides: Vec<Relation>,
    /// The `.deb`'s path below the archive root (`pool/main/...`).
    pub filename: String,
    /// The `.deb`'s sha256, 64 lower-case hex digits.
    pub sha256: String,
    pub size: u64,
    /// The line of the index where its paragraph starts (1-based), for messages.
    pub line: usize,
}

/// A version constraint's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }

    /// Whether `have` satisfies `op want`.
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        let o = have.cmp(want);
        match self {
            Op::Lt => o.is_lt(),
            Op::Le => o.is_le(),
            Op::Eq => o.is_eq(),
            Op::Ge => o.is_ge(),
            Op::Gt => o.is_gt(),
        }
    }
}

/// `name[:arch] [(op version)] [[arch list]]`: one alternative of a dependency, or one
/// `Provides` entry (there the version is `= v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    /// The architecture qualifier (`any`, `native`, `amd64`), if any.
    pub arch_qualifier: Option<String>,
    pub constraint: Option<(Op, Version)>,
    /// The architecture restriction (`[amd64 !i386]`), if any: `(negated, arch)` items.
    pub restriction: Vec<(bool, String)>,
}

impl Relation {
    /// Whether this relation applies on `arch` (its `[...]` restriction).
    pub fn applies_on(&self, arch: &str) -> bool {
        if self.restriction.is_empty() {
            return true;
        }
        let positive = self.restriction.iter().any(|(neg, _)| !neg);
        if positive {
            self.restriction.iter().any(|(neg, a)| !neg && a == arch)
        } else {
            !self.restriction.iter().any(|(_, a)| a == arch)
        }
    }
}

impl std::fmt::Display for Relation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({} {v})", op.as_str())?;
        }
        Ok(())
    }
}

/// Why an index cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("line {line}: {problem}")]
    Syntax { line: usize, problem: String },
    #[error("package at line {line}: field `{field}` is missing")]
    Missing { line: usize, field: &'static str },
    #[error("package `{name}` at line {line}: field `{field}`: {problem}")]
    Field {
        name: String,
        line: usize,
        field: &'static str,
        problem: String,
    },
    #[error("the index holds more than {MAX_PACKAGES} packages")]
    TooMany,
}

impl crate::error::Diagnose for IndexError {
    /// The index comes from the Debian archive (a mirror), not from the user.
    fn class(&self) -> crate::error::Class {
        crate::error::Class::Environment
    }
}

/// Parse a whole (decompressed) `Packages` index.
pub fn parse(text: &str) -> Result<Vec<Package>, IndexError> {
    let mut packages = Vec::new();
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut start = 0;
    let mut last: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            if !fields.is_empty() {
                if packages.len() == MAX_PACKAGES {
                    return Err(IndexError::TooMany);
                }
                packages.push(package(std::mem::take(&mut fields), start)?);
            }
            last = None;
            continue;
        }
        if line.starts_with('#') && fields.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // A continuation line of the last field.
            let Some(field) = &last else {
                return Err(IndexError::Syntax {
                    line: n,
                    problem: "a continuation line outside a field".into(),
                });
            };
            let value = fields.get_mut(field).expect("the last field was inserted");
            value.push('\n');
            value.push_str(line.trim());
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(IndexError::Syntax {
                line: n,
                problem: format!("expected `Field: value`, got `{}`", clip(line)),
            });
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(IndexError::Syntax {
                line: n,
                problem: format!("`{}` is not a field name", clip(name)),
            });
        }
        if fields.is_empty() {
            start = n;
        }
        if fields
            .insert(name.to_owned(), value.trim().to_owned())
            .is_some()
        {
            return Err(IndexError::Syntax {
                line: n,
                problem: format!("field `{}` appears twice in one paragraph", clip(name)),
            });
        }
        last = Some(name.to_owned());
    }
    if !fields.is_empty() {
        if packages.len() == MAX_PACKAGES {
            return Err(IndexError::TooMany);
        }
        packages.push(package(fields, start)?);
    }
    Ok(packages)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

fn package(mut fields: BTreeMap<String, String>, line: usize) -> Result<Package, IndexError> {
    let mut take = |field: &'static str| {
        fields
            .remove(field)
            .ok_or(IndexError::Missing { line, field })
    };
    let name = take("Package")?;
    let version = take("Version")?;
    let architecture = take("Architecture")?;
    let filename = take("Filename")?;
    let sha256 = take("SHA256")?;
    let size = take("Size")?;
    let field = |field: &'static str, problem: String| IndexError::Field {
        name: clip(&name),
        line,
        field,
        problem,
    };
    if !valid_name(&name) {
        return Err(field(
            "Package",
            format!("`{}` is not a package name", clip(&name)),
        ));
    }
    let version = Version::parse(&version).map_err(|e| field("Version", e.to_string()))?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(field("SHA256", "expected 64 hex digits".into()));
    }
    let size = size
        .parse()
        .map_err(|_| field("Size", format!("`{}` is not a number", clip(&size))))?;
    if filename.is_empty()
        || filename.starts_with('/')
        || filename
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || filename.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return Err(field(
            "Filename",
            format!("`{}` is not a relative path", clip(&filename)),
        ));
    }
    let mut depends = Vec::new();
    for key in ["Pre-Depends", "Depends"] {
        if let Some(value) = fields.get(key) {
            let key: &'static str = if key == "Depends" {
                "Depends"
            } else {
                "Pre-Depends"
            };
            depends.extend(parse_relations(value).map_err(|p| field(key, p))?);
        }
    }
    let provides = match fields.get("Provides") {
        Some(value) => parse_relations(value)
            .map_err(|p| field("Provides", p))?
            .into_iter()
            .map(|mut alts| {
                if alts.len() == 1 {
                    Ok(alts.remove(0))
                } else {
                    Err(field(
                        "Provides",
                        "alternatives (`|`) are not allowed".into(),
                    ))
                }
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(Package {
        name,
        version,
        architecture,
        depends,
        provides,
        filename,
        sha256: sha256.to_ascii_lowercase(),
        size,
        line,
    })
}

/// Debian package names: lower-case letters, digits, `+-.`, at least two characters,
/// starting with a letter or digit. Virtual names follow the same rule.
pub fn valid_name(name: &str) -> bool {
    name.len() >= 2
        && name.len() <= 200
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// Parse a relation field: `a (>= 1) | b:any, c [amd64] <!nocheck>`.
pub fn parse_relations(value: &str) -> Result<Vec<Vec<Relation>>, String> {
    let mut out = Vec::new();
    for group in value.split(',') {
        let group = group.trim();
        if group.is_empty() {
            // dpkg accepts a trailing comma; an empty field lists nothing.
            continue;
        }
        let alts = group
            .split('|')
            .map(parse_relation)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(alts);
    }
    Ok(out)
}

fn parse_relation(text: &str) -> Result<Relation, String> {
    let text = text.trim();
    // Build profiles (`<!nocheck>`) only matter in Build-Depends: dropped.
    let text = match text.find('<') {
        Some(i) if !text[..i].contains('(') || text[..i].contains(')') => text[..i].trim(),
        _ => text,
    };
    let mut rest = text;
    let name_end = rest
        .find(|c: char| c.is_whitespace() || c == '(' || c == '[')
        .unwrap_or(rest.len());
    let (full_name, tail) = rest.split_at(name_end);
    rest = tail.trim_start();
    let (name, arch_qualifier) = match full_name.split_once(':') {
        Some((n, q)) => (n, Some(q.to_owned())),
        None => (full_name, None),
    };
    if !valid_name(name) {
        return Err(format!("`{}` is not a package name", clip(full_name)));
    }
    let mut constraint = None;
    if let Some(after) = rest.strip_prefix('(') {
        let Some((inner, tail)) = after.split_once(')') else {
            return Err(format!("`{}`: unclosed `(`", clip(text)));
        };
        rest = tail.trim_start();
        let inner = inner.trim();
        let (op, version) = [
            ("<<", Op::Lt),
            ("<=", Op::Le),
            (">=", Op::Ge),
            (">>", Op::Gt),
            ("=", Op::Eq),
            // Obsolete forms, read as dpkg reads them.
            ("<", Op::Le),
            (">", Op::Ge),
        ]
        .into_iter()
        .find_map(|(s, op)| inner.strip_prefix(s).map(|v| (op, v)))
        .ok_or_else(|| format!("`{}`: expected an operator (<< <= = >= >>)", clip(text)))?;
        let version = Version::parse(version).map_err(|e| e.to_string())?;
        constraint = Some((op, version));
    }
    let mut restriction = Vec::new();
    if let Some(after) = rest.strip_prefix('[') {
        let Some((inner, tail)) = after.split_once(']') else {
            return Err(format!("`{}`: unclosed `[`", clip(text)));
        };
        rest = tail.trim_start();
        for arch in inner.split_whitespace() {
            match arch.strip_prefix('!') {
                Some(a) => restriction.push((true, a.to_owned())),
                None => restriction.push((false, arch.to_owned())),
            }
        }
    }
    if !rest.is_empty() {
        return Err(format!("`{}`: unexpected `{}`", clip(text), clip(rest)));
    }
    Ok(Relation {
        name: name.to_owned(),
        arch_qualifier,
        constraint,
        restriction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "\
Package: gcc-12
Version: 12.2.0-14
Architecture: amd64
Pre-Depends: libc6 (>= 2.34)
Depends: cpp-12 (= 12.2.0-14), binutils (>= 2.40) | binutils-gold:any,
 libcc1-0 [amd64 !i386] <!nocheck>
Provides: c-compiler, gcc-x86 (= 12)
Filename: pool/main/g/gcc-12/gcc-12_12.2.0-14_amd64.deb
Size: 19000
SHA256: 00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF
Description: GNU C compiler
 More text.
 .

Package: make
Version: 4.3-4.1
Architecture: amd64
Filename: pool/main/m/make-dfsg/make_4.3-4.1_amd64.deb
Size: 1
SHA256: 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
";

    #[test]
    fn parses_paragraphs_and_relations() {
        let p = parse(INDEX).unwrap();
        assert_eq!(p.len(), 2);
        let gcc = &p[0];
        assert_eq!(gcc.name, "gcc-12");
        assert_eq!(gcc.line, 1);
        assert_eq!(p[1].line, 15);
        assert_eq!(
            gcc.sha256,
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        );
        // Pre-Depends first, then Depends.
        let shown: Vec<Vec<String>> = gcc
            .depends
            .iter()
            .map(|g| g.iter().map(|r| r.to_string()).collect())
            .collect();
        assert_eq!(
            shown,
            [
                vec!["libc6 (>= 2.34)"],
                vec!["cpp-12 (= 12.2.0-14)"],
                vec!["binutils (>= 2.40)", "binutils-gold:any"],
                vec!["libcc1-0"],
            ]
        );
        let cc1 = &gcc.depends[3][0];
        assert!(cc1.applies_on("amd64") && !cc1.applies_on("i386") && !cc1.applies_on("arm64"));
        assert_eq!(gcc.provides.len(), 2);
        assert_eq!(gcc.provides[1].to_string(), "gcc-x86 (= 12)");
        assert!(p[1].depends.is_empty());
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let missing = "Package: a1\nVersion: 1\nArchitecture: all\nSize: 1\nSHA256: x\n";
        assert_eq!(
            parse(missing).unwrap_err().to_string(),
            "package at line 1: field `Filename` is missing"
        );
        let bad_dep = INDEX.replace("libc6 (>= 2.34)", "libc6 (>= 2.34");
        assert_eq!(
            parse(&bad_dep).unwrap_err().to_string(),
            "package `gcc-12` at line 1: field `Pre-Depends`: `libc6 (>= 2.34`: unclosed `(`"
        );
        let escape = INDEX.replace("pool/main/m/make-dfsg", "../etc");
        assert!(
            parse(&escape)
                .unwrap_err()
                .to_string()
                .contains("`Filename`")
        );
        assert!(
            parse("no colon here\n")
                .unwrap_err()
                .to_string()
                .starts_with("line 1:")
        );
        assert!(parse(" continuation\n").is_err());
        assert!(parse("Package: a\nPackage: b\n").is_err());
    }
}

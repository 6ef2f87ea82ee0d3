//! Bramble's `load()` forms on top of standard Starlark.
//!
//! Standard Starlark requires `load("m", "sym", ...)`. Bramble also accepts the one-argument
//! form `load("github.com/me/proj/lib/go")`, which binds `go` (the last path component) to a
//! struct of the module's public names. The parser rejects that form, so before parsing we
//! rewrite it, token-exactly, to `load("…/go", go = "<module>")` where `<module>` is a name
//! only the module exports built by [`super::session`] carry. The rewrite stays on the same
//! line, so every line number and every column before the `)` are unchanged.
//!
//! The same pass rejects loading names that start with `_` (private to their module), and
//! expressions or blocks nested deeper than [`MAX_NESTING`]: starlark-rust parses them
//! fine but compiles them recursively, and `1+1+…` with a million terms overflows even the
//! evaluation thread's large native stack (an abort, not an error).

use starlark::codemap::CodeMap;
use starlark::syntax::Dialect;
use starlark_syntax::lexer::{Lexer, Token};

/// `assert` is a reserved word for starlark-rust's lexer; Bramble's `assert` namespace is
/// bound under this same-length name and every `assert` identifier is renamed before
/// parsing (columns unchanged). Rendered errors rename it back.
pub const ASSERT_ALIAS: &str = "ASSERT";

/// Replace the identifier `assert` (outside strings and comments) by [`ASSERT_ALIAS`].
pub fn rename_assert(source: &str) -> String {
    if !source.contains("assert") {
        return source.to_owned();
    }
    let b = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                let triple = b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q;
                i += if triple { 3 } else { 1 };
                while i < b.len() {
                    if b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == q
                        && (!triple || (b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q))
                    {
                        i += if triple { 3 } else { 1 };
                        break;
                    }
                    if b[i] == b'\n' && !triple {
                        break;
                    }
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let after_dot = start > 0 && b[start - 1] == b'.';
                if &source[start..i] == "assert" && !after_dot {
                    out.push_str(&source[last..start]);
                    out.push_str(ASSERT_ALIAS);
                    last = i;
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&source[last..]);
    out
}

/// Undo [`rename_assert`] in rendered messages.
pub fn unrename_assert(text: &str) -> String {
    text.replace(&format!("{ASSERT_ALIAS}."), "assert.")
}

/// Undo [`rewrite`]'s additions in a rendered diagnostic: drop `, name = "<module>"` from
/// quoted source lines and shorten the caret line below by as much.
pub fn unrewrite_loads(text: &str) -> String {
    let marker = format!(" = \"{MODULE_SYMBOL}\"");
    let mut out: Vec<String> = Vec::new();
    let mut removed = 0usize;
    for line in text.lines() {
        if removed > 0 && line.contains('^') && line.chars().all(|c| matches!(c, ' ' | '|' | '^')) {
            let carets = line.matches('^').count();
            let keep = carets.saturating_sub(removed).max(1);
            let start = line.find('^').unwrap_or(0);
            out.push(format!("{}{}", &line[..start], "^".repeat(keep)));
            removed = 0;
            continue;
        }
        removed = 0;
        let mut line = line.to_owned();
        while let Some(end) = line.find(&marker) {
            let Some(start) = line[..end].rfind(", ") else {
                break;
            };
            let cut = end + marker.len() - start;
            line.replace_range(start..end + marker.len(), "");
            removed += cut;
        }
        out.push(line);
    }
    out.join("\n")
}

/// The export name carrying the whole module as a struct.
pub const MODULE_SYMBOL: &str = "<module>";

/// A problem found while rewriting, with its byte offset.
#[derive(Debug)]
pub struct LoadProblem {
    pub offset: usize,
    pub message: String,
}

/// Rewrite one-argument loads; report private symbol loads.
pub fn rewrite(filename: &str, source: &str) -> Result<String, LoadProblem> {
    let renamed = rename_assert(source);
    let source = renamed.as_str();
    let codemap = CodeMap::new(filename.to_owned(), source.to_owned());
    let tokens: Vec<(usize, Token, usize)> =
        match Lexer::new(source, &Dialect::Extended, codemap).collect::<Result<Vec<_>, _>>() {
            Ok(t) => t,
            // Let the real parser report lexical errors with its own diagnostics.
            Err(_) => return Ok(source.to_owned()),
        };
    check_nesting(&tokens)?;
    let mut inserts = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !matches!(tokens[i].1, Token::Load) {
            i += 1;
            continue;
        }
        let (Some(open), Some(module)) = (tokens.get(i + 1), tokens.get(i + 2)) else {
            break;
        };
        let (Token::OpeningRound, Token::String(module_path)) = (&open.1, &module.1) else {
            i += 1;
            continue;
        };
        match tokens.get(i + 3) {
            Some((close_start, Token::ClosingRound, _)) => {
                let name = module_path.rsplit('/').next().unwrap_or(module_path);
                if is_identifier(name) {
                    inserts.push((*close_start, format!(", {name} = \"{MODULE_SYMBOL}\"")));
                }
                i += 4;
            }
            _ => {
                // `load("m", "a", b = "_c")`: check the loaded names.
                let mut j = i + 3;
                while j < tokens.len() && !matches!(tokens[j].1, Token::ClosingRound) {
                    if let Token::String(symbol) = &tokens[j].1
                        && symbol.starts_with('_')
                    {
                        return Err(LoadProblem {
                            offset: tokens[j].0,
                            message: format!(
                                "cannot load `{symbol}` from `{module_path}`: names starting with `_` are private to their module"
                            ),
                        });
                    }
                    j += 1;
                }
                i = j;
            }
        }
    }
    if inserts.is_empty() {
        return Ok(source.to_owned());
    }
    let mut out = String::with_capacity(source.len() + inserts.len() * 24);
    let mut last = 0;
    for (at, text) in inserts {
        out.push_str(&source[last..at]);
        out.push_str(&text);
        last = at;
    }
    out.push_str(&source[last..]);
    Ok(out)
}

/// The deepest syntax tree a module may have, as [`check_nesting`] estimates it. Hand-written
/// code stays far below; a debug build compiles 100,000 levels on the evaluation stack.
pub const MAX_NESTING: usize = 5000;

/// Refuse a token stream whose syntax tree would be deeper than [`MAX_NESTING`].
///
/// The estimate, an upper bound of the tree's depth: each open bracket (and f-string
/// expression) is a level; within one comma-separated item of a bracket, every operator,
/// keyword or `.` may add one (`a + b + c` is a left-leaning chain); every indented block
/// adds one. Commas start a new item at their level, a newline a new statement.
fn check_nesting(tokens: &[(usize, Token, usize)]) -> Result<(), LoadProblem> {
    // Per open bracket: the operators counted in its current item.
    let mut items: Vec<usize> = vec![0];
    // Open brackets plus every count in `items`, plus indented blocks.
    let mut depth = 0usize;
    let mut blocks = 0usize;
    for (start, token, _) in tokens {
        match token {
            Token::OpeningRound
            | Token::OpeningSquare
            | Token::OpeningCurly
            | Token::FStringStart(_)
            | Token::FStringExprStart => {
                items.push(0);
                depth += 1;
            }
            Token::ClosingRound
            | Token::ClosingSquare
            | Token::ClosingCurly
            | Token::FStringEnd
            | Token::FStringExprEnd => {
                if items.len() > 1 {
                    depth -= items.pop().unwrap_or(0) + 1;
                }
            }
            Token::Comma | Token::Newline | Token::Semicolon => {
                if let Some(top) = items.last_mut() {
                    depth -= *top;
                    *top = 0;
                }
            }
            Token::Indent => blocks += 1,
            Token::Dedent => blocks = blocks.saturating_sub(1),
            Token::Identifier(_)
            | Token::Int(_)
            | Token::Float(_)
            | Token::String(_)
            | Token::Bytes(_)
            | Token::FStringText(_)
            | Token::Comment(_)
            | Token::Tabs
            | Token::Pass
            | Token::Break
            | Token::Continue => {}
            _ => {
                if let Some(top) = items.last_mut() {
                    *top += 1;
                    depth += 1;
                }
            }
        }
        if depth + blocks > MAX_NESTING {
            return Err(LoadProblem {
                offset: *start,
                message: format!(
                    "this expression or block is nested more than {MAX_NESTING} levels deep"
                ),
            });
        }
    }
    Ok(())
}

/// Whether `s` is a plain ASCII Starlark identifier.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_one_argument_loads_only() {
        let src = "load(\"p/lib/go\")\nload(\"p/x\", \"y\")\ns = 'load(\"q\")'\n";
        assert_eq!(
            rewrite("f", src).unwrap(),
            "load(\"p/lib/go\", go = \"<module>\")\nload(\"p/x\", \"y\")\ns = 'load(\"q\")'\n"
        );
    }

    #[test]
    fn renames_assert_outside_strings_only() {
        let src = "assert.eq(1, 1) # assert\nx = 'assert' + \"\"\"assert\"\"\"\ny.assert\n";
        assert_eq!(
            rename_assert(src),
            "ASSERT.eq(1, 1) # assert\nx = 'assert' + \"\"\"assert\"\"\"\ny.assert\n"
        );
    }

    #[test]
    fn unrewrites_rendered_lines() {
        let text = "1 | load(\"a/go\", go = \"<module>\")\n  | ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n";
        assert_eq!(
            unrewrite_loads(text),
            "1 | load(\"a/go\")\n  | ^^^^^^^^^^^^^^"
        );
    }

    #[test]
    fn rejects_private_names() {
        let err = rewrite("f", "load(\"p/x\", a = \"_b\")\n").unwrap_err();
        assert!(err.message.contains("`_b`"), "{}", err.message);
        assert_eq!(err.offset, 16);
    }
}

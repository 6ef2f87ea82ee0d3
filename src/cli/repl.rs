//! `bramble repl`: evaluate statements interactively. On a terminal it reads line by line
//! (a line ending in `:` or an indented line continues a block; an empty line ends it); when
//! stdin is not a terminal it reads all of it and groups lines into top-level statements,
//! so it can be scripted and tested. Each non-`None` result is printed with `repr`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use super::context::find_project;
use super::terminal::print_to_stderr;
use super::{CliError, Context};
use crate::lang::Session;
use crate::project::{MemorySources, run_on_big_stack};

#[derive(Debug, clap::Args)]
pub struct ReplArgs {}

pub fn run(args: ReplArgs, ctx: &Context) -> Result<ExitCode, CliError> {
    let _ = (args, ctx);
    let (_, project) = find_project(None)?;
    let interactive = std::io::stdin().is_terminal();
    let chunks: Vec<String> = if interactive {
        Vec::new()
    } else {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| CliError::environment(format!("cannot read stdin: {e}")))?;
        split_statements(&text)
    };
    let failed = run_on_big_stack(move || {
        let sources = MemorySources::default();
        let session = Session::new(project.options(), &sources, &print_to_stderr);
        let mut failed = false;
        let mut chunks = chunks.into_iter();
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        session.repl(
            || {
                if !interactive {
                    return chunks.next();
                }
                let mut chunk = String::new();
                loop {
                    eprint!("{}", if chunk.is_empty() { ">>> " } else { "... " });
                    let _ = std::io::stderr().flush();
                    let line = match lines.next() {
                        Some(Ok(line)) => line,
                        _ => return (!chunk.is_empty()).then_some(chunk),
                    };
                    let continues = line.trim_end().ends_with(':')
                        || (!chunk.is_empty() && !line.trim().is_empty());
                    chunk.push_str(&line);
                    chunk.push('\n');
                    if !continues && !chunk.trim().is_empty() {
                        return Some(chunk);
                    }
                }
            },
            |result| match result {
                Ok(repr) => println!("{repr}"),
                Err(e) => {
                    failed = true;
                    eprintln!("error: {e}");
                }
            },
        );
        Ok(failed)
    })?;
    Ok(if failed && !interactive {
        ExitCode::from(super::EXIT_USER)
    } else {
        ExitCode::SUCCESS
    })
}

/// Group lines into top-level statements: a statement runs until the next line that starts
/// in column 0 (and is not a comment or blank).
fn split_statements(text: &str) -> Vec<String> {
    let mut chunks: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut depth: i32 = 0;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let starts_statement = !line.starts_with([' ', '\t'])
            && !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && depth <= 0
            && !trimmed.starts_with(')')
            && !trimmed.starts_with(']')
            && !trimmed.starts_with('}')
            && !(trimmed.starts_with("else") || trimmed.starts_with("elif"));
        if starts_statement && !current.trim().is_empty() {
            chunks.push(std::mem::take(&mut current));
        }
        for c in line.chars() {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            }
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_top_level_statements() {
        let chunks = super::split_statements(
            "x = 1\ndef f():\n    return [\n1]\n\nf()\nif x:\n  1\nelse:\n  2\n",
        );
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        assert!(chunks[1].starts_with("def f"));
    }
}

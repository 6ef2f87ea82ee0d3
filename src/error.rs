//! What every module error says about itself beyond its message: who is to fix it (its
//! [`Class`], which picks the exit code) and what they can do (its hint).
//!
//! Each module keeps its own `thiserror` enum; implementing [`Diagnose`] next to it is what
//! lets the CLI turn it into a report with `?` (one `From` in `cli`), instead of each command
//! classifying errors by hand. The message is the error's [`chain`]: its own text, then each
//! cause once, so an error's `#[error]` text never repeats its `source`.

/// Who is to fix a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The user's input: a bad `.bramble` file, argument, pin or archive.
    User,
    /// The machine or the network: no user namespaces, disk full, a server down, a store
    /// written by a newer bramble.
    Environment,
    /// A bug in bramble.
    Internal,
}

/// A module error's class and hint.
pub trait Diagnose: std::error::Error {
    /// Who is to fix it.
    fn class(&self) -> Class;

    /// Advice the user can act on, shown on its own `hint:` line.
    fn hint(&self) -> Option<String> {
        None
    }
}

/// The error's message followed by each of its causes, `: `-separated.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

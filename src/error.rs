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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = crate::project::Error::ReadManifest {
            path: "/p/bramble.toml".into(),
            source: io,
        };
        assert_eq!(chain(&err), "cannot read `/p/bramble.toml`: no such file");
        let err = crate::store::local::Error::Tree(crate::store::local::fs::TreeError::Io {
            op: "open",
            path: "/x".into(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        });
        assert_eq!(chain(&err), "cannot open `/x`: denied");
        assert_eq!(err.class(), Class::User);
        // Through the engine's errors and a build failure, still once.
        let err = crate::engine::FailureKind::Splice(crate::engine::Error::Store(
            crate::engine::StoreError::Local(err),
        ));
        assert_eq!(
            chain(&err),
            "cannot splice the generated derivations: cannot open `/x`: denied"
        );
        assert_eq!(err.class(), Class::User);
    }

    #[test]
    fn wrapped_errors_keep_the_class_and_hint_of_their_cause() {
        let go = crate::golang::GoError::Missing {
            module: "m".into(),
            version: "v1".into(),
        };
        assert_eq!(go.class(), Class::User);
        let lang = crate::lang::Error::Aborted {
            location: "a.bramble:1:1".into(),
            message: "too big".into(),
        };
        let project = crate::project::Error::Lang(lang);
        assert_eq!(project.class(), Class::User);
        assert!(project.hint().unwrap().contains("too large"));
        let thread = crate::project::Error::Thread {
            message: "panicked".into(),
        };
        assert_eq!(thread.class(), Class::Internal);
    }
}

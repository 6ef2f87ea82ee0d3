//! `bramble-sandbox`: the setuid-free helper that runs one derivation in fresh namespaces.

pub mod exit;
pub mod spec;

pub use exit::*;
pub use spec::{Bind, Network, Spec, SpecError, Stdin, Symlink};

/// Entry point of the helper binary.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}

//! `bramble-sandbox`: the setuid-free helper that runs one derivation in fresh namespaces.

/// Entry point of the helper binary.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}

//! The `bramble-sandbox` helper: a thin entry point into the `bramble-sandbox` crate.

fn main() -> std::process::ExitCode {
    bramble_sandbox::main()
}

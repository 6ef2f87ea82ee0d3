//! The `bramble` command: a thin entry point into `bramble::cli`.

fn main() -> std::process::ExitCode {
    bramble::cli::main()
}

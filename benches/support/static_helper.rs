//! The sandbox helper as it is installed, for the benches that start sandboxes: statically
//! linked, built by `cargo static-helper` (the alias in `.cargo/config.toml`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The statically linked helper, built on first use (a no-op when it is up to date); its path
/// as cargo reports the built executable.
pub fn static_helper() -> &'static Path {
    static HELPER: OnceLock<PathBuf> = OnceLock::new();
    HELPER.get_or_init(build)
}

fn build() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["static-helper", "--quiet", "--message-format=json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run `cargo static-helper`");
    assert!(
        out.status.success(),
        "`cargo static-helper` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("`cargo static-helper` reports the helper's executable")
}

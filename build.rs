//! Link `bramble-debian` and `bramble-go` without symbols or debug information: it is copied into the
//! sandboxes of the builds that run it (`src/engine/tool.rs`), and a debug build would
//! otherwise carry hundreds of MB of debug information of the crates it links.

fn main() {
    println!("cargo:rustc-link-arg-bin=bramble-debian=-Wl,--strip-all");
    println!("cargo:rustc-link-arg-bin=bramble-go=-Wl,--strip-all");
    println!("cargo:rerun-if-changed=build.rs");
}

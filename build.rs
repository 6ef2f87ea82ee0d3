//! Link `bramble-debian` without symbols or debug information: it is copied into the store
//! as a tool object (`src/project/tool.rs`) and run in sandboxes, and a debug build would
//! otherwise carry hundreds of MB of debug information of the crates it links.

fn main() {
    println!("cargo:rustc-link-arg-bin=bramble-debian=-Wl,--strip-all");
    println!("cargo:rerun-if-changed=build.rs");
}

//! The runner's own promises: `bramble` runs as an ordinary user with a private home, and
//! only [`Bramble::as_root`] runs it as root.

use std::os::unix::fs::MetadataExt;

use crate::support::runner::{UNPRIVILEGED, is_root};
use crate::support::{Bramble, stdout};

/// Add a file to the store and return the store directory's owner.
fn store_owner(b: &Bramble) -> u32 {
    let dir = b.tempdir();
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "data\n").unwrap();
    let out = b.ok(dir.path(), &["store", "add", file.to_str().unwrap()]);
    let path = stdout(&out).trim().to_owned();
    assert!(path.starts_with(b.store_dir().to_str().unwrap()), "{path}");
    std::fs::metadata(b.store_dir()).unwrap().uid()
}

#[test]
fn bramble_runs_as_an_ordinary_user_with_a_private_home() {
    let b = Bramble::new();
    let expected = if is_root() {
        UNPRIVILEGED
    } else {
        nix::unistd::geteuid().as_raw()
    };
    assert_eq!(store_owner(&b), expected);
}

#[test]
fn as_root_runs_bramble_as_root() {
    if !is_root() {
        eprintln!("skipped: the tests do not run as root, so there is no root to run bramble as");
        return;
    }
    let b = Bramble::as_root();
    assert_eq!(store_owner(&b), 0);
}

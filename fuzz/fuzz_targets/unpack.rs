//! Fuzz archive unpacking (tar, compressed tars, zip, .deb) with arbitrary bytes: it must
//! never panic, never write outside its target, and leave no target behind when it fails.
#![no_main]

use bramble::engine::fetch::unpack::{Format, UnpackLimits, unpack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let format = Format::ALL[usize::from(selector) % Format::ALL.len()];
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("archive");
    std::fs::write(&archive, bytes).unwrap();
    let dest = tmp.path().join("out");
    let limits = UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 10_000,
    };
    let result = unpack(&archive, format, &dest, &limits);
    if result.is_err() {
        assert!(!dest.exists(), "a failed unpack left its target");
    }
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(name == "archive" || name == "out", "wrote outside the target: {name:?}");
    }
});

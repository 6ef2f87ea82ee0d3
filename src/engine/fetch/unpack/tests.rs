use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// One entry of a test tar.
enum E<'a> {
    Dir(&'a [u8]),
    File(&'a [u8], u32, &'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
    Hardlink(&'a [u8], &'a [u8]),
    Char(&'a [u8]),
}

/// A tar written with raw GNU headers, so hostile names (`..`, absolute) can be expressed.
fn tar_bytes(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data): (&[u8], &[u8]) = match e {
            E::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, b"")
            }
            E::File(n, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (n, data)
            }
            E::Symlink(n, t) | E::Hardlink(n, t) => {
                h.set_entry_type(if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                let gnu = h.as_gnu_mut().unwrap();
                gnu.linkname[..t.len()].copy_from_slice(t);
                (n, b"")
            }
            E::Char(n) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o644);
                (n, b"")
            }
        };
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn sample() -> Vec<u8> {
    tar_bytes(&[
        E::Dir(b"./"),
        E::Dir(b"./pkg/"),
        E::File(b"./pkg/run", 0o4755, b"#!/bin/sh\necho hi\n"),
        E::File(b"pkg/data/readme", 0o644, b"hello\n"),
        E::Symlink(b"pkg/link", b"run"),
        E::Hardlink(b"pkg/run2", b"pkg/run"),
    ])
}

fn check_sample(root: &Path) {
    let run = root.join("pkg/run");
    assert_eq!(std::fs::read(&run).unwrap(), b"#!/bin/sh\necho hi\n");
    // Executable kept, setuid stripped.
    assert_eq!(
        std::fs::metadata(&run).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read(root.join("pkg/data/readme")).unwrap(),
        b"hello\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("pkg/link")).unwrap(),
        Path::new("run")
    );
    let a = std::fs::metadata(&run).unwrap();
    let b = std::fs::metadata(root.join("pkg/run2")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
}

fn compress(format: Format, tar: &[u8]) -> Vec<u8> {
    match format {
        Format::Tar => tar.to_vec(),
        Format::TarGz => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Format::TarXz => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Format::TarBz2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Format::TarZst => zstd::stream::encode_all(tar, 1).unwrap(),
        Format::Zip | Format::Deb => unreachable!(),
    }
}

fn deb(data_member: &str, data: &[u8]) -> Vec<u8> {
    let mut b = ar::Builder::new(Vec::new());
    b.append(
        &ar::Header::new(b"debian-binary".to_vec(), 4),
        &b"2.0\n"[..],
    )
    .unwrap();
    let control = compress(
        Format::TarGz,
        &tar_bytes(&[E::File(b"./control", 0o644, b"x")]),
    );
    b.append(
        &ar::Header::new(b"control.tar.gz".to_vec(), control.len() as u64),
        control.as_slice(),
    )
    .unwrap();
    b.append(
        &ar::Header::new(data_member.as_bytes().to_vec(), data.len() as u64),
        data,
    )
    .unwrap();
    b.into_inner().unwrap()
}

fn zip_bytes(build: impl FnOnce(&mut zip::ZipWriter<io::Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    build(&mut w);
    w.finish().unwrap().into_inner()
}

fn opts() -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn unpack(
        &self,
        bytes: &[u8],
        format: Format,
        limits: &UnpackLimits,
    ) -> Result<UnpackStats, UnpackError> {
        let archive = self.dir.path().join("archive");
        std::fs::write(&archive, bytes).unwrap();
        let r = unpack(&archive, format, &self.out(), limits);
        if r.is_err() {
            assert!(!self.out().exists(), "a failed extraction left its target");
        }
        r
    }
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    fn outside(&self) -> PathBuf {
        let p = self.dir.path().join("outside");
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

#[test]
fn every_tar_format_unpacks() {
    for format in [
        Format::Tar,
        Format::TarGz,
        Format::TarXz,
        Format::TarBz2,
        Format::TarZst,
    ] {
        let case = Case::new();
        let stats = case
            .unpack(
                &compress(format, &sample()),
                format,
                &UnpackLimits::default(),
            )
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        check_sample(&case.out());
        assert_eq!(stats.bytes, 18 + 6, "a hardlink writes no bytes");
    }
}

#[test]
fn deb_unpacks_its_data_member() {
    for (member, format) in [
        ("data.tar.xz", Format::TarXz),
        ("data.tar.gz", Format::TarGz),
        ("data.tar.zst", Format::TarZst),
        ("data.tar", Format::Tar),
    ] {
        let case = Case::new();
        case.unpack(
            &deb(member, &compress(format, &sample())),
            Format::Deb,
            &UnpackLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{member}: {e}"));
        check_sample(&case.out());
        assert!(!case.out().join("control").exists());
    }
    let case = Case::new();
    let mut b = ar::Builder::new(Vec::new());
    b.append(
        &ar::Header::new(b"debian-binary".to_vec(), 4),
        &b"2.0\n"[..],
    )
    .unwrap();
    let err = case
        .unpack(
            &b.into_inner().unwrap(),
            Format::Deb,
            &UnpackLimits::default(),
        )
        .unwrap_err();
    assert!(matches!(err, UnpackError::NoDebData { .. }), "{err}");
    let err = case
        .unpack(
            &deb("data.tar.lz", b"x"),
            Format::Deb,
            &UnpackLimits::default(),
        )
        .unwrap_err();
    assert!(matches!(err, UnpackError::UnknownDebData { .. }), "{err}");
}

#[test]
fn zip_unpacks_files_dirs_symlinks_and_modes() {
    let bytes = zip_bytes(|w| {
        w.add_directory("pkg/", opts()).unwrap();
        w.start_file("pkg/run", opts().unix_permissions(0o755))
            .unwrap();
        w.write_all(b"#!/bin/sh\necho hi\n").unwrap();
        w.start_file("pkg/data/readme", opts().unix_permissions(0o644))
            .unwrap();
        w.write_all(b"hello\n").unwrap();
        w.add_symlink("pkg/link", "run", opts()).unwrap();
    });
    let case = Case::new();
    case.unpack(&bytes, Format::Zip, &UnpackLimits::default())
        .unwrap();
    let root = case.out();
    assert_eq!(
        std::fs::metadata(root.join("pkg/run"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(root.join("pkg/data/readme"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    assert_eq!(
        std::fs::read_link(root.join("pkg/link")).unwrap(),
        Path::new("run")
    );
}

#[test]
fn path_traversal_and_absolute_names_are_rejected() {
    for name in [&b"../evil"[..], b"a/../../evil", b"/tmp/evil-abs"] {
        let case = Case::new();
        let bytes = tar_bytes(&[E::File(b"ok", 0o644, b"x"), E::File(name, 0o644, b"evil")]);
        let err = case
            .unpack(&bytes, Format::Tar, &UnpackLimits::default())
            .unwrap_err();
        assert!(matches!(err, UnpackError::UnsafeName { .. }), "{err}");
        assert!(!case.dir.path().join("evil").exists());
    }
    let case = Case::new();
    let bytes = zip_bytes(|w| {
        w.start_file("../evil", opts()).unwrap();
        w.write_all(b"evil").unwrap();
    });
    let err = case
        .unpack(&bytes, Format::Zip, &UnpackLimits::default())
        .unwrap_err();
    assert!(matches!(err, UnpackError::UnsafeName { .. }), "{err}");
    assert!(!case.dir.path().join("evil").exists());
}

#[test]
fn never_writes_through_a_symlink() {
    // A symlink to a directory outside, then a file "through" it.
    let case = Case::new();
    let outside = case.outside();
    let bytes = tar_bytes(&[
        E::Symlink(b"d", outside.as_os_str().as_encoded_bytes()),
        E::File(b"d/x", 0o644, b"evil"),
    ]);
    let err = case
        .unpack(&bytes, Format::Tar, &UnpackLimits::default())
        .unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err}");
    assert!(!outside.join("x").exists());
    // A relative symlink that climbs out, used as a directory.
    let bytes = tar_bytes(&[E::Symlink(b"up", b"../outside"), E::Dir(b"up/sub/")]);
    let err = case
        .unpack(&bytes, Format::Tar, &UnpackLimits::default())
        .unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // A symlink to a file outside, then a regular file of the same name: the symlink is
    // replaced, the outside file untouched.
    std::fs::write(outside.join("victim"), "safe").unwrap();
    let bytes = tar_bytes(&[
        E::Symlink(b"f", outside.join("victim").as_os_str().as_encoded_bytes()),
        E::File(b"f", 0o644, b"new"),
    ]);
    case.unpack(&bytes, Format::Tar, &UnpackLimits::default())
        .unwrap();
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"safe");
    assert_eq!(std::fs::read(case.out().join("f")).unwrap(), b"new");
    // Same through zip.
    let case = Case::new();
    let outside = case.outside();
    let bytes = zip_bytes(|w| {
        w.add_symlink("d", outside.to_str().unwrap(), opts())
            .unwrap();
        w.start_file("d/x", opts()).unwrap();
        w.write_all(b"evil").unwrap();
    });
    let err = case
        .unpack(&bytes, Format::Zip, &UnpackLimits::default())
        .unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err}");
    assert!(!outside.join("x").exists());
}

#[test]
fn hardlinks_only_to_earlier_files_inside() {
    let case = Case::new();
    for bytes in [
        tar_bytes(&[E::Hardlink(b"passwd", b"/etc/passwd")]),
        tar_bytes(&[E::Hardlink(b"x", b"../outside/victim")]),
        tar_bytes(&[E::Hardlink(b"x", b"later"), E::File(b"later", 0o644, b"x")]),
        tar_bytes(&[E::Symlink(b"s", b"/etc/passwd"), E::Hardlink(b"x", b"s")]),
        tar_bytes(&[E::Dir(b"d/"), E::Hardlink(b"x", b"d")]),
    ] {
        let err = case
            .unpack(&bytes, Format::Tar, &UnpackLimits::default())
            .unwrap_err();
        assert!(
            matches!(
                err,
                UnpackError::BadHardlink { .. } | UnpackError::UnsafeName { .. }
            ),
            "{err}"
        );
    }
}

#[test]
fn devices_are_rejected() {
    let case = Case::new();
    let err = case
        .unpack(
            &tar_bytes(&[E::Char(b"null")]),
            Format::Tar,
            &UnpackLimits::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::Unsupported { kind: "device", .. }),
        "{err}"
    );
}

#[test]
fn bombs_are_bounded() {
    // 64 MiB of zeros deflate to ~64 KiB; the limit stops the writing long before the end.
    let bytes = zip_bytes(|w| {
        w.start_file("zeros", opts()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..64 {
            w.write_all(&chunk).unwrap();
        }
    });
    assert!(bytes.len() < 1 << 20);
    let limits = UnpackLimits {
        max_bytes: 4 << 20,
        max_entries: 100,
    };
    let case = Case::new();
    let err = case.unpack(&bytes, Format::Zip, &limits).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooLarge { what: "bytes", .. }),
        "{err}"
    );
    // The same as a gzipped tar.
    let zeros = vec![0u8; 64 << 20];
    let tar = tar_bytes(&[E::File(b"zeros", 0o644, &zeros)]);
    let err = case
        .unpack(&compress(Format::TarGz, &tar), Format::TarGz, &limits)
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::TooLarge { what: "bytes", .. }),
        "{err}"
    );
    // Too many entries.
    let names: Vec<String> = (0..101).map(|i| format!("f{i}")).collect();
    let entries: Vec<E<'_>> = names
        .iter()
        .map(|n| E::File(n.as_bytes(), 0o644, b""))
        .collect();
    let err = case
        .unpack(&tar_bytes(&entries), Format::Tar, &limits)
        .unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::TooLarge {
                what: "entries",
                ..
            }
        ),
        "{err}"
    );
    let err = case
        .unpack(
            &zip_bytes(|w| {
                for n in &names {
                    w.start_file(n, opts()).unwrap();
                }
            }),
            Format::Zip,
            &limits,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::TooLarge {
                what: "entries",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn corrupt_archives_are_errors() {
    let case = Case::new();
    let mut gz = compress(Format::TarGz, &sample());
    gz.truncate(gz.len() / 2);
    assert!(
        case.unpack(&gz, Format::TarGz, &UnpackLimits::default())
            .is_err()
    );
    assert!(
        case.unpack(b"not a zip", Format::Zip, &UnpackLimits::default())
            .is_err()
    );
    assert!(
        case.unpack(b"not xz", Format::TarXz, &UnpackLimits::default())
            .is_err()
    );
}

#[test]
fn formats_are_guessed_from_names() {
    assert_eq!(Format::guess("https://x/a-1.0.tar.gz"), Some(Format::TarGz));
    assert_eq!(Format::guess("a.TGZ?x=1"), Some(Format::TarGz));
    assert_eq!(Format::guess("busybox_1.35_amd64.deb"), Some(Format::Deb));
    assert_eq!(Format::guess("a.tar.zst"), Some(Format::TarZst));
    assert_eq!(Format::guess("a.zip"), Some(Format::Zip));
    // A crate from a registry is a gzipped tar (regression: `unpack = True` refused it).
    assert_eq!(
        Format::guess("mirror://crates/ring/ring-0.17.14.crate"),
        Some(Format::TarGz)
    );
    assert_eq!(Format::guess("a.txt"), None);
    for f in Format::ALL {
        assert_eq!(Format::from_name(f.name()), Some(f));
    }
}

mod mutated {
    use super::*;
    use proptest::prelude::*;

    fn zip_sample() -> Vec<u8> {
        zip_bytes(|w| {
            w.add_directory("pkg/", opts()).unwrap();
            w.start_file("pkg/run", opts().unix_permissions(0o755))
                .unwrap();
            w.write_all(b"#!/bin/sh\necho hi\n").unwrap();
            w.add_symlink("pkg/link", "run", opts()).unwrap();
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Corrupted archives never panic, never write outside the target, and leave no
        /// partial target when they fail.
        #[test]
        fn corrupted_archives_are_contained(
            which in 0usize..4,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let (format, mut bytes) = match which {
                0 => (Format::Tar, sample()),
                1 => (Format::TarGz, compress(Format::TarGz, &sample())),
                2 => (Format::Zip, zip_sample()),
                _ => (Format::Deb, deb("data.tar", &sample())),
            };
            for (pos, byte) in flips {
                let i = pos % bytes.len();
                bytes[i] ^= byte | 1;
            }
            let case = Case::new();
            let limits = UnpackLimits { max_bytes: 1 << 20, max_entries: 1000 };
            let _ = case.unpack(&bytes, format, &limits);
            let names: Vec<_> = std::fs::read_dir(case.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != "archive" && n != "out")
                .collect();
            prop_assert!(names.is_empty(), "wrote outside the target: {names:?}");
        }
    }
}

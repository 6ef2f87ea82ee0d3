//! Archive makers for fetch fixtures: a `.tar.gz` and a minimal Debian `.deb` (an `ar` archive
//! of `debian-binary`, `control.tar.gz` and `data.tar.gz`, as `dpkg-deb` writes it).

/// One file of an archive: its path inside, its mode and its content.
pub type Entry<'a> = (&'a str, u32, &'a [u8]);

/// A gzip-compressed tar of `entries`: regular files, and directories where the path ends with
/// `/` (other directories are implied).
pub fn targz(entries: &[Entry]) -> Vec<u8> {
    targz_with_links(entries, &[])
}

/// [`targz`] with symbolic links after the files: `(path, target)`.
pub fn targz_with_links(entries: &[Entry], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, mode, data) in entries {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
        }
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    for (path, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(0);
        b.append_link(&mut h, path, target).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A `.deb` package `name` whose data member installs `entries` (paths like `./bin/x`).
pub fn deb(name: &str, entries: &[Entry]) -> Vec<u8> {
    deb_with_links(name, "1.0", entries, &[])
}

/// [`deb`] of a given version, whose data also holds symbolic links `(path, target)`.
pub fn deb_with_links(
    name: &str,
    version: &str,
    entries: &[Entry],
    links: &[(&str, &str)],
) -> Vec<u8> {
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: tests <t@example.invalid>\nDescription: a test package\n"
    );
    let members: [(&str, Vec<u8>); 3] = [
        ("debian-binary", b"2.0\n".to_vec()),
        (
            "control.tar.gz",
            targz(&[("./control", 0o644, control.as_bytes())]),
        ),
        ("data.tar.gz", targz_with_links(entries, links)),
    ];
    let mut ar = ar::Builder::new(Vec::new());
    for (member, data) in members {
        let mut header = ar::Header::new(member.as_bytes().to_vec(), data.len() as u64);
        header.set_mode(0o100644);
        ar.append(&header, data.as_slice()).unwrap();
    }
    ar.into_inner().unwrap()
}

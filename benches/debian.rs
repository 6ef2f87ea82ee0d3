//! Debian package sets (issue 15, Performance), printed side by side:
//!
//! 1. **Assembly, cold and warm**: a package set of `BENCH_DEBIAN_N` (default 80, the size
//!    of `lib/cc.bramble`'s stdenv) hand-made `.deb`s of about 1 MB each (host files as
//!    their data, a dependency chain through the index), served by a fixture HTTP server
//!    on 127.0.0.1 as `mirror://debian`. Cold: a fresh store (index fetch, resolution in
//!    the sandbox, every fetch, unpacking, the merge); warm: the same command again (no-op).
//! 2. **GNU hello** (only with `BENCH_DEBIAN_HELLO=1`: it downloads the real stdenv from the
//!    Debian archive once): `bramble build --check` of `examples/gnu-hello` (configure +
//!    make + make install inside Bramble, stdenv already built) against the same commands
//!    run directly on the host with the host's toolchain (Debian 12's gcc 12, as in the
//!    stdenv). Goal: ≤ 1.2× the host.
//!
//! `cargo bench --bench debian`.

#[allow(dead_code)]
#[path = "../src/engine/fetch/test_http.rs"]
mod http;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

fn tar_gz(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("./{path}"), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn deb(data: &[(String, Vec<u8>)]) -> Vec<u8> {
    let control = tar_gz(&[("control".into(), b"Package: x\n".to_vec())]);
    let mut ar = ar::Builder::new(Vec::new());
    for (member, body) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", control),
        ("data.tar.gz", tar_gz(data)),
    ] {
        let header = ar::Header::new(member.as_bytes().to_vec(), body.len() as u64);
        ar.append(&header, &body[..]).unwrap();
    }
    ar.into_inner().unwrap()
}

/// Host files to fill packages with, about `bytes` per package.
fn host_files(n: usize, bytes: usize) -> Vec<Vec<(String, Vec<u8>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/usr/bin")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && !p.is_symlink())
        .collect();
    files.sort();
    let mut it = files.iter().cycle();
    (0..n)
        .map(|i| {
            let mut pkg = Vec::new();
            let mut size = 0;
            while size < bytes {
                let f = it.next().unwrap();
                let data = std::fs::read(f).unwrap_or_default();
                size += data.len().max(1);
                let name = f.file_name().unwrap().to_string_lossy();
                pkg.push((format!("usr/lib/bench/p{i}/{name}"), data));
            }
            pkg
        })
        .collect()
}

fn bramble(project: &Path, home: &Path, server: &http::Server, args: &[&str]) -> f64 {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bramble"))
        .args(args)
        .current_dir(project)
        .env("BRAMBLE_HOME", home)
        .env("BRAMBLE_MIRROR_DEBIAN", server.url("/debian"))
        .env(
            "BRAMBLE_DEBIAN_TOOL",
            Path::new(env!("CARGO_BIN_EXE_bramble")).with_file_name("bramble-debian"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_secs_f64()
}

fn assembly() {
    let n: usize = std::env::var("BENCH_DEBIAN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80);
    let server = http::Server::start();
    let mut index = String::new();
    let mut total = 0;
    for (i, data) in host_files(n, 1 << 20).iter().enumerate() {
        let body = deb(data);
        total += body.len();
        let file = format!("pool/main/p{i}_1.0_amd64.deb");
        let depends = if i + 1 < n {
            format!("Depends: p{} (>= 1.0~)\n", i + 1)
        } else {
            String::new()
        };
        index.push_str(&format!(
            "Package: p{i}\nVersion: 1.0\nArchitecture: amd64\n{depends}Filename: {file}\nSize: {}\nSHA256: {}\n\n",
            body.len(),
            data_encoding::HEXLOWER.encode(&Sha256::digest(&body))
        ));
        server.file(&format!("/debian/{file}"), body);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(index.as_bytes()).unwrap();
    let index = gz.finish().unwrap();
    let sha = data_encoding::HEXLOWER.encode(&Sha256::digest(&index));
    server.file("/debian/dists/bench/Packages.gz", index);
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("bramble.toml"),
        "[package]\nname = \"bench\"\n",
    )
    .unwrap();
    std::fs::write(
        project.path().join("default.bramble"),
        format!(
            "load(\"bramble/debian\", \"index\", \"packages\")\n\ndef set():\n    return packages([\"p0\"], index = index(\"dists/bench/Packages.gz\", \"{sha}\"), name = \"bench-set\")\n"
        ),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let args = ["build", "--no-out-link", "./:set"];
    let cold = bramble(project.path(), home.path(), &server, &args);
    let warm = bramble(project.path(), home.path(), &server, &args);
    println!(
        "package set of {n} .debs ({:.0} MB) from 127.0.0.1: cold {cold:.2} s | warm (no-op) {warm:.3} s",
        total as f64 / 1e6
    );
}

fn hello() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gnu-hello");
    let home = std::env::var("BRAMBLE_HOME").ok();
    let run = |args: &[&str]| {
        let start = Instant::now();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bramble"));
        cmd.args(args).current_dir(&example);
        if let Some(h) = &home {
            cmd.env("BRAMBLE_HOME", h);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            start.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Build once (downloads the stdenv), then time a rebuild of hello alone.
    run(&["build", "--no-out-link", "./:package"]);
    // `--check` also re-runs the package set's generator: hello's own time is its line.
    let (_, _, log) = run(&["build", "--check", "--no-out-link", "./:package"]);
    let inside: f64 = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("built hello in ")?
                .strip_suffix('s')?
                .parse()
                .ok()
        })
        .expect("a `built hello in` line");
    let (_, src, _) = run(&["build", "--no-out-link", "./:source"]);
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; cp -r {}/. {w}; chmod -R u+w {w}; cd {w}/*/; find . -exec touch -h -d @1 {{}} +; \
         SOURCE_DATE_EPOCH=1 LC_ALL=C ./configure --prefix={w}/out >/dev/null; make -j2 >/dev/null; make install >/dev/null",
        src.trim(),
        w = dir.path().display()
    );
    let start = Instant::now();
    let status = Command::new("/bin/bash")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    let host = start.elapsed().as_secs_f64();
    println!(
        "GNU hello configure+make+install: bramble {inside:.1} s (--check rebuild, stdenv built) | host {host:.1} s | {:.2}x",
        inside / host
    );
}

fn main() {
    assembly();
    if std::env::var("BENCH_DEBIAN_HELLO").is_ok_and(|v| v == "1") {
        hello();
    }
}

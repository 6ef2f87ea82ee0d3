//! `bramble store …` and `bramble gc` through the real binary: bad input, faults, crashes
//! and concurrent processes sharing one store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::Bramble;

/// `bramble args` with the store of `b`, run in `/`.
fn bramble(b: &Bramble, args: &[&str]) -> Command {
    b.command(Path::new("/"), args)
}

fn run(b: &Bramble, args: &[&str]) -> Output {
    bramble(b, args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tree of `files` files of `size` bytes in 10 directories; `seed` changes every file.
fn make_tree(root: &Path, files: usize, size: usize, seed: u64) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(i as u64 + 1);
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        std::fs::write(dir.join(format!("f{i}")), data).unwrap();
    }
    std::os::unix::fs::symlink("d0/f0", root.join("link")).unwrap();
}

fn store_entries(b: &Bramble) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(b.store_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn add_path_info_and_verify_catch_a_corrupted_object() {
    let home = Bramble::new();
    let tmp = home.tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, 20, 100, 1);
    let out = run(
        &home,
        &["store", "add", src.to_str().unwrap(), "--name", "tree"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&out);
    assert!(
        path.starts_with(home.store_dir().to_str().unwrap()),
        "{path}"
    );
    assert!(path.ends_with("-tree"));

    let info = run(&home, &["store", "path-info", "--json", &path]);
    assert!(info.status.success(), "{}", stderr(&info));
    let json: serde_json::Value = serde_json::from_str(&stdout(&info)).unwrap();
    assert_eq!(json["references"], serde_json::json!([]));
    assert!(json["archive_size"].as_u64().unwrap() > 2000);

    assert!(run(&home, &["store", "verify"]).status.success());
    // Change one byte on disk: verify fails and names the path; nothing else is touched.
    let victim = Path::new(&path).join("d3/f3");
    std::fs::set_permissions(
        victim.parent().unwrap(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let v = run(&home, &["store", "verify"]);
    assert_eq!(v.status.code(), Some(2), "{}", stderr(&v));
    assert!(stdout(&v).contains(&path), "{}", stdout(&v));
    assert!(stderr(&v).contains("hint:"), "{}", stderr(&v));
    assert!(
        Path::new(&path).exists(),
        "verify without --repair deletes nothing"
    );
    let r = run(&home, &["store", "verify", "--repair"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(!Path::new(&path).exists());
    assert!(run(&home, &["store", "verify"]).status.success());
}

#[test]
fn bad_input_gives_clear_errors() {
    let home = Bramble::new();
    let tmp = home.tempdir();
    let o = run(&home, &["store", "path-info", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`passwd` is not a store path"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("hint:"));
    let o = run(
        &home,
        &["store", "path-info", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not a valid path in this store"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &home,
        &["store", "add", tmp.path().join("missing").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing`"), "{}", stderr(&o));
    // A fifo cannot be stored.
    let src = tmp.path().join("withfifo");
    std::fs::create_dir(&src).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(src.join("p"))
            .status()
            .unwrap()
            .success()
    );
    let o = run(&home, &["store", "add", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is a fifo"), "{}", stderr(&o));
    assert!(store_entries(&home).is_empty());
    // A directory holding the store itself is refused before anything is copied.
    let holding = home.home().parent().unwrap().to_owned();
    let o = run(
        &home,
        &["store", "add", holding.to_str().unwrap(), "--name", "all"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("contains the store itself"),
        "{}",
        stderr(&o)
    );
    // `.` is the current directory, named after it.
    let here = tmp.path().join("here");
    make_tree(&here, 2, 10, 5);
    let o = home
        .command(&here, &["store", "add", "."])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("-here"), "{}", stdout(&o));
}

#[test]
fn a_newer_database_is_refused_and_left_alone() {
    let home = Bramble::new();
    let tmp = home.tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, 3, 10, 2);
    assert!(
        run(&home, &["store", "add", src.to_str().unwrap()])
            .status
            .success()
    );
    let db = home.home().join("db.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "user_version", 7).unwrap();
    }
    let entries = store_entries(&home);
    for args in [
        &["store", "verify"][..],
        &["gc"][..],
        &["store", "add", src.to_str().unwrap()][..],
    ] {
        let o = run(&home, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains("schema version 7"), "{}", stderr(&o));
        assert!(stderr(&o).contains("hint: this store was written by a newer bramble"));
    }
    assert_eq!(store_entries(&home), entries);
}

#[test]
fn killed_adds_leave_no_registration_or_a_complete_one() {
    let home = Bramble::new();
    let tmp = home.tempdir();
    // Measure one uninterrupted add of a tree of the same shape to spread the kill times.
    let warm = tmp.path().join("warm");
    make_tree(&warm, 120, 4096, 1000);
    let start = Instant::now();
    assert!(
        run(&home, &["store", "add", warm.to_str().unwrap()])
            .status
            .success()
    );
    let span = start.elapsed().max(Duration::from_millis(5));

    let mut completed = 0;
    for i in 0..30u32 {
        let src = tmp.path().join(format!("src{i}"));
        make_tree(&src, 120, 4096, u64::from(i));
        let mut child = bramble(&home, &["store", "add", src.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Delays from 0 to 2.4 times a whole add: some kills land after completion.
        std::thread::sleep(span.mul_f64(f64::from(i) / 12.0));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            completed += 1;
        }
        let v = run(&home, &["store", "verify"]);
        assert!(
            v.status.success(),
            "verify failed after kill {i}: {}{}",
            stdout(&v),
            stderr(&v)
        );
        // Whatever happened, adding again works and gives a verifiable path.
        let again = run(&home, &["store", "add", src.to_str().unwrap()]);
        assert!(again.status.success(), "{}", stderr(&again));
    }
    eprintln!("{completed} of 30 adds completed before the kill");
    // gc removes every crash leftover and keeps nothing unregistered around.
    let g = run(&home, &["gc"]);
    assert!(g.status.success(), "{}", stderr(&g));
    assert!(
        store_entries(&home).is_empty(),
        "{:?}",
        store_entries(&home)
    );
    assert_eq!(
        std::fs::read_dir(home.home().join("tmp")).unwrap().count(),
        0
    );
    assert!(run(&home, &["store", "verify"]).status.success());
}

#[test]
fn two_processes_adding_the_same_tree_both_succeed() {
    let home = Bramble::new();
    let tmp = home.tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, 100, 4096, 9);
    // Create the store first so both children race on the add, not on the database schema.
    assert!(run(&home, &["store", "verify"]).status.success());
    for round in 0..3 {
        let name = format!("same{round}");
        let children: Vec<_> = (0..2)
            .map(|_| {
                bramble(
                    &home,
                    &["store", "add", src.to_str().unwrap(), "--name", &name],
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        for o in &outs {
            assert!(o.status.success(), "{}", stderr(o));
        }
        assert_eq!(stdout(&outs[0]), stdout(&outs[1]));
    }
    assert_eq!(store_entries(&home).len(), 3);
    assert!(run(&home, &["store", "verify"]).status.success());
}

#[test]
fn gc_dry_run_then_gc() {
    let home = Bramble::new();
    let tmp = home.tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, 5, 1000, 3);
    let path = stdout(&run(&home, &["store", "add", src.to_str().unwrap()]));
    let dry = run(&home, &["gc", "--dry-run"]);
    assert!(dry.status.success());
    assert_eq!(stdout(&dry), path);
    assert!(
        stderr(&dry).contains("would delete 1 store paths"),
        "{}",
        stderr(&dry)
    );
    assert!(Path::new(&path).exists());
    let kept = run(&home, &["gc", "--keep", &path]);
    assert!(kept.status.success());
    assert!(Path::new(&path).exists());
    let g = run(&home, &["gc"]);
    assert!(g.status.success());
    assert_eq!(stdout(&g), path);
    assert!(
        stderr(&g).contains("deleted 1 store paths"),
        "{}",
        stderr(&g)
    );
    assert!(!Path::new(&path).exists());
}

#[test]
fn export_import_round_trip_and_a_truncated_archive_is_refused() {
    let home = Bramble::new();
    let tmp = home.tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, 10, 3000, 4);
    let path = stdout(&run(
        &home,
        &["store", "add", src.to_str().unwrap(), "--name", "t"],
    ));
    let exported = run(&home, &["store", "export", &path]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    let archive = tmp.path().join("t.archive");
    std::fs::write(&archive, &exported.stdout).unwrap();

    let other = Bramble::new();
    let imported = run(
        &other,
        &["store", "import", archive.to_str().unwrap(), "--name", "t"],
    );
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert_eq!(
        Path::new(&stdout(&imported)).file_name(),
        Path::new(&path).file_name()
    );

    let cut = tmp.path().join("cut.archive");
    std::fs::write(&cut, &exported.stdout[..exported.stdout.len() / 2]).unwrap();
    let third = Bramble::new();
    let o = run(
        &third,
        &["store", "import", cut.to_str().unwrap(), "--name", "t"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("archive is truncated at byte"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("hint:"));
    assert!(store_entries(&third).is_empty());
    assert_eq!(
        std::fs::read_dir(third.home().join("tmp")).unwrap().count(),
        0
    );
    assert!(run(&third, &["store", "verify"]).status.success());
}

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use super::*;

fn store() -> (tempfile::TempDir, LocalStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&tmp.path().join("home")).unwrap();
    (tmp, store)
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(root.join("sub/run"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("sub/run"), PermissionsExt::from_mode(0o755)).unwrap();
    symlink("../a.txt", root.join("sub/link")).unwrap();
}

#[test]
fn add_dir_is_content_addressed_read_only_and_deduplicated() {
    let (tmp, store) = store();
    let src = tmp.path().join("src");
    write_tree(&src);
    let p = store.add_dir(&src, "tree").unwrap();
    assert_eq!(p.name(), "tree");
    let again = store.add_dir(&src, "tree").unwrap();
    assert_eq!(p, again);
    let host = store.host_path(&p);
    assert_eq!(
        std::fs::read_to_string(host.join("a.txt")).unwrap(),
        "alpha\n"
    );
    let m = std::fs::symlink_metadata(host.join("sub/run")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o555);
    assert_eq!(m.mtime(), fs::STORE_MTIME);
    assert_eq!(std::fs::metadata(&host).unwrap().mode() & 0o7777, 0o555);
    let info = store.path_info(&p).unwrap().unwrap();
    assert_eq!(info.archive_hash, hash_tree(&host).unwrap().0);
    assert!(info.references.is_empty());
    // The path is exactly content_address(name, archive digest).
    let (digest, _) = hash_tree(&src).unwrap();
    assert_eq!(
        p,
        content_address("tree", digest, false, &BTreeSet::new()).unwrap()
    );
    // Different content, different path.
    std::fs::write(src.join("a.txt"), "beta\n").unwrap();
    assert_ne!(store.add_dir(&src, "tree").unwrap(), p);
    // A single file works too.
    let f = store.add_dir(&src.join("a.txt"), "file").unwrap();
    assert_eq!(std::fs::read(store.host_path(&f)).unwrap(), b"beta\n");
    assert!(
        store
            .verify(&VerifyOptions::default())
            .unwrap()
            .problems
            .is_empty()
    );
    // Nothing left behind in tmp/.
    assert_eq!(
        std::fs::read_dir(store.home().join("tmp")).unwrap().count(),
        0
    );
}

/// A build output that refers to itself (contents, a symlink, a file name) and to `dep`.
fn write_output(root: &Path, placeholder: &StorePath, dep: &StorePath) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(
        root.join("bin/tool"),
        format!(
            "#!/bin/sh\nexec {}/bin/real --data {}\n",
            placeholder.in_store_dir(),
            dep.in_store_dir()
        ),
    )
    .unwrap();
    std::fs::write(root.join(format!("{}.conf", placeholder.hash())), "x").unwrap();
    symlink(
        format!("{}/bin/tool", placeholder.in_store_dir()),
        root.join("self-link"),
    )
    .unwrap();
}

#[test]
fn add_output_hashes_modulo_self_references_and_scans_references() {
    let (tmp, store) = store();
    let dep_src = tmp.path().join("dep");
    std::fs::create_dir(&dep_src).unwrap();
    std::fs::write(dep_src.join("f"), "dep").unwrap();
    let dep = store.add_dir(&dep_src, "dep").unwrap();
    let unused = store.add_dir(&dep_src.join("f"), "unused").unwrap();
    let candidates = BTreeSet::from([dep.clone(), unused.clone()]);

    let mut finals = Vec::new();
    for build in 0..2 {
        let placeholder =
            StorePath::new(Hash::digest(format!("placeholder {build}")), "out").unwrap();
        let dir = store.tmp_dir("build").unwrap();
        let built = dir.path().join("out");
        write_output(&built, &placeholder, &dep);
        let deriver = Hash::digest("drv");
        let p = store
            .add_output(&AddOutput {
                built: &built,
                placeholder: &placeholder,
                name: "out",
                candidate_refs: &candidates,
                required_refs: &[],
                deriver: Some(deriver),
                // Once in a temp dir of the store's own, once in the build's directory.
                scratch: (build == 1).then(|| dir.path()),
            })
            .unwrap();
        // Nothing but the build's own output is left in the build's directory.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("out")]);
        let host = store.host_path(&p);
        let tool = std::fs::read_to_string(host.join("bin/tool")).unwrap();
        assert!(tool.contains(&p.in_store_dir()), "{tool}");
        assert!(!tool.contains(&placeholder.hash().to_string()));
        assert!(host.join(format!("{}.conf", p.hash())).exists());
        assert_eq!(
            std::fs::read_link(host.join("self-link")).unwrap(),
            Path::new(&format!("{}/bin/tool", p.in_store_dir()))
        );
        let info = store.path_info(&p).unwrap().unwrap();
        assert_eq!(info.references, BTreeSet::from([dep.clone(), p.clone()]));
        assert_eq!(info.deriver, Some(deriver));
        finals.push(p);
    }
    // The placeholder does not leak into the final path: both builds give one path.
    assert_eq!(finals[0], finals[1]);
    assert_eq!(
        store.closure(&[finals[0].clone()]).unwrap(),
        BTreeSet::from([dep.clone(), finals[0].clone()])
    );
    assert!(
        store
            .verify(&VerifyOptions::default())
            .unwrap()
            .problems
            .is_empty()
    );
}

#[test]
fn add_output_rejects_setuid_and_fifos() {
    let (_tmp, store) = store();
    let placeholder = StorePath::new(Hash::digest("p"), "out").unwrap();
    let dir = store.tmp_dir("build").unwrap();
    let built = dir.path().join("out");
    std::fs::create_dir(&built).unwrap();
    std::fs::write(built.join("s"), "x").unwrap();
    std::fs::set_permissions(built.join("s"), PermissionsExt::from_mode(0o4755)).unwrap();
    let add = || {
        store.add_output(&AddOutput {
            built: &built,
            placeholder: &placeholder,
            name: "out",
            candidate_refs: &BTreeSet::new(),
            required_refs: &[],
            deriver: None,
            scratch: Some(dir.path()),
        })
    };
    assert!(matches!(add(), Err(Error::Tree(TreeError::Setuid { .. }))));
    std::fs::remove_file(built.join("s")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        built.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    assert!(matches!(
        add(),
        Err(Error::Tree(TreeError::Unsupported { .. }))
    ));
    assert!(store.db().all_paths().unwrap().is_empty());
}

#[test]
fn realisations_derivations_and_logs() {
    let (tmp, store) = store();
    std::fs::write(tmp.path().join("f"), "x").unwrap();
    let p = store.add_dir(&tmp.path().join("f"), "f").unwrap();
    let key = Hash::digest("key");
    assert_eq!(store.realisation(key, "out").unwrap(), None);
    store.register_realisation(key, "out", &p).unwrap();
    assert_eq!(store.realisation(key, "out").unwrap(), Some(p.clone()));
    let bogus = StorePath::new(Hash::digest("nope"), "x").unwrap();
    assert!(matches!(
        store.register_realisation(key, "dev", &bogus),
        Err(Error::NotValid { .. })
    ));
    let drv = Derivation::new("hello", "/bin/sh");
    let h = store.put_derivation(&drv).unwrap();
    assert_eq!(store.get_derivation(h).unwrap(), Some(drv));
    assert_eq!(store.get_derivation(key).unwrap(), None);
    store.put_log(h, b"line 1\n").unwrap();
    store.put_log(h, b"line 2\n").unwrap();
    assert_eq!(store.get_log(h).unwrap().as_deref(), Some(&b"line 2\n"[..]));
}

#[test]
fn verify_reports_corruption_and_missing_paths_and_repairs() {
    let (tmp, store) = store();
    let src = tmp.path().join("src");
    write_tree(&src);
    let good = store.add_dir(&src, "good").unwrap();
    let bad = store.add_dir(&src.join("sub"), "bad").unwrap();
    std::fs::write(tmp.path().join("g"), "gone").unwrap();
    let gone = store.add_dir(&tmp.path().join("g"), "gone").unwrap();
    // Change one byte of `bad` on disk.
    let file = store.host_path(&bad).join("run");
    std::fs::set_permissions(store.host_path(&bad), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(&file, "#!/bin/sH\n").unwrap();
    fs::remove(&store.host_path(&gone)).unwrap();

    let report = store.verify(&VerifyOptions::default()).unwrap();
    assert_eq!(report.checked, 3);
    let broken: BTreeSet<_> = report.problems.iter().map(|p| p.path().clone()).collect();
    assert_eq!(broken, BTreeSet::from([bad.clone(), gone.clone()]));
    assert!(matches!(
        report.problems.iter().find(|p| p.path() == &bad),
        Some(VerifyProblem::Mismatch { .. })
    ));
    assert!(
        store.is_valid(&bad).unwrap(),
        "verify without repair changes nothing"
    );

    let report = store.verify(&VerifyOptions { repair: true }).unwrap();
    assert_eq!(report.removed, BTreeSet::from([bad.clone(), gone.clone()]));
    assert!(!store.is_valid(&bad).unwrap());
    assert!(!store.host_path(&bad).exists());
    assert!(store.is_valid(&good).unwrap());
    assert!(
        store
            .verify(&VerifyOptions::default())
            .unwrap()
            .problems
            .is_empty()
    );
}

#[test]
fn gc_keeps_roots_closures_and_locked_paths_and_removes_the_rest() {
    let (tmp, store) = store();
    let mk = |name: &str, content: &str| {
        let f = tmp.path().join(name);
        std::fs::write(&f, content).unwrap();
        store.add_dir(&f, name).unwrap()
    };
    let dep = mk("dep", "dep");
    let garbage = mk("garbage", "garbage bytes");
    let pinned = mk("pinned", "pinned");
    // An output referring to `dep`, rooted through a `result`-style indirect link.
    let placeholder = StorePath::new(Hash::digest("ph"), "app").unwrap();
    let dir = store.tmp_dir("build").unwrap();
    let built = dir.path().join("app");
    std::fs::write(&built, dep.in_store_dir()).unwrap();
    let app = store
        .add_output(&AddOutput {
            built: &built,
            placeholder: &placeholder,
            name: "app",
            candidate_refs: &BTreeSet::from([dep.clone()]),
            required_refs: &[],
            deriver: None,
            scratch: None,
        })
        .unwrap();
    drop(dir);
    let result = tmp.path().join("result");
    symlink(store.host_path(&app), &result).unwrap();
    store.add_indirect_root(&result).unwrap();
    let _held = store.hold(&pinned).unwrap();
    // Crash leftovers: a stale temp dir (no lock held) and an unregistered store entry.
    let stale_tmp = store.home().join("tmp/add-999-0-0");
    std::fs::create_dir_all(stale_tmp.join("object")).unwrap();
    let orphan = store
        .store_dir()
        .join(format!("{}-orphan", Hash::digest("o")));
    std::fs::create_dir(&orphan).unwrap();
    let live_tmp = store.tmp_dir("live").unwrap();

    let dry = store
        .gc(&GcOptions {
            dry_run: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(dry.deleted, vec![garbage.clone()]);
    assert!(store.is_valid(&garbage).unwrap() && stale_tmp.exists() && orphan.exists());

    let report = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.deleted, vec![garbage.clone()]);
    assert_eq!(report.freed_bytes, "garbage bytes".len() as u64);
    assert!(!store.host_path(&garbage).exists());
    assert!(!stale_tmp.exists() && !orphan.exists());
    assert!(live_tmp.path().exists());
    for p in [&dep, &pinned, &app] {
        assert!(
            store.is_valid(p).unwrap() && store.host_path(p).exists(),
            "{p}"
        );
    }
    // Dropping the indirect link makes the root stale: app and dep go.
    std::fs::remove_file(&result).unwrap();
    let report = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(
        report.deleted,
        vec![app.clone(), dep.clone()]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(report.stale_roots.len(), 1);
    assert!(store.is_valid(&pinned).unwrap());
    assert!(
        store
            .verify(&VerifyOptions::default())
            .unwrap()
            .problems
            .is_empty()
    );
}

#[test]
fn newer_schema_is_refused_without_touching_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    drop(LocalStore::open(&home).unwrap());
    let db = home.join("db.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    match LocalStore::open(&home) {
        Err(Error::NewerSchema { found: 99, .. }) => {}
        other => panic!("unexpected: {other:?}"),
    }
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn concurrent_adds_of_the_same_tree_store_it_once() {
    let (tmp, store) = store();
    let src = tmp.path().join("src");
    write_tree(&src);
    let store = std::sync::Arc::new(store);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let src = src.clone();
            std::thread::spawn(move || store.add_dir(&src, "same").unwrap())
        })
        .collect();
    let paths: BTreeSet<StorePath> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(paths.len(), 1);
    assert_eq!(store.db().all_paths().unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(store.store_dir()).unwrap().count(), 1);
}

#[test]
fn golden_store_path_of_a_small_fixed_tree() {
    // The tree of `archive::tests::golden_archive_bytes`, on disk. Its path, computed
    // independently in Python from the archive bytes given in that test:
    //   d = hashlib.sha256(archive).digest()[:20]
    //   of_fields(b'bramble-store-path-v1', [b'golden', d, b'\x00'])
    //   → 'gdawmo46cej2cdgnada4kfx5xna66xmn'
    let (tmp, store) = store();
    let root = tmp.path().join("t");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("bin/hello"), PermissionsExt::from_mode(0o700)).unwrap();
    symlink("bin/hello", root.join("link")).unwrap();
    std::fs::write(root.join("readme"), "hello\n").unwrap();
    let p = store.add_dir(&root, "golden").unwrap();
    assert_eq!(p.to_string(), "gdawmo46cej2cdgnada4kfx5xna66xmn-golden");
    let info = store.path_info(&p).unwrap().unwrap();
    assert_eq!(
        info.archive_hash.to_string(),
        "dk32w6sopdadsj5wnph3ar4gpht4wyg4"
    );
    assert_eq!(info.archive_size, 106);
}

/// A build output file at its placeholder in `dir`, with `content`.
fn staged_file(dir: &Path, name: &str, content: &str) -> (std::path::PathBuf, StorePath) {
    let placeholder = StorePath::new(Hash::digest(name.as_bytes()), name).unwrap();
    let built = dir.join(placeholder.to_string());
    std::fs::write(&built, content).unwrap();
    (built, placeholder)
}

#[test]
fn add_outputs_registers_paths_and_realisations_together_or_not_at_all() {
    let (tmp, store) = store();
    let src = tmp.path().join("src");
    write_tree(&src);
    let dep = store.add_dir(&src, "dep").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (out_built, out_ph) = staged_file(dir.path(), "multi", "plain\n");
    // `dev` refers to `dep` and to a path that is not valid (so its registration fails).
    let missing = StorePath::new(Hash::digest(b"missing"), "missing").unwrap();
    let (dev_built, dev_ph) = staged_file(
        dir.path(),
        "multi-dev",
        &format!("{}\n{}\n", dep.in_store_dir(), missing.in_store_dir()),
    );
    let key = Hash::digest(b"key");
    let add = |built, placeholder, candidate_refs| AddOutput {
        built,
        placeholder,
        name: "unused",
        candidate_refs,
        required_refs: &[],
        deriver: Some(Hash::digest(b"drv")),
        scratch: None,
    };
    // Both outputs of one build, referring to `candidates`.
    let both = |candidates| {
        [
            AddOutput {
                name: out_ph.name(),
                ..add(&out_built, &out_ph, candidates)
            },
            AddOutput {
                name: dev_ph.name(),
                ..add(&dev_built, &dev_ph, candidates)
            },
        ]
    };
    let with_missing = BTreeSet::from([dep.clone(), missing.clone()]);
    let err = store
        .add_outputs(&both(&with_missing), Some((key, &["out", "dev"])))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidReference { reference, .. } if *reference == missing),
        "{err}"
    );
    // Nothing of that build is registered: not `out` (added first), no realisation.
    assert_eq!(store.realisation(key, "out").unwrap(), None);
    assert_eq!(store.db().all_paths().unwrap(), vec![dep.clone()]);

    // With valid candidates both paths and both realisations are registered.
    let only_dep = BTreeSet::from([dep.clone()]);
    let outputs = both(&only_dep);
    let paths = store
        .add_outputs(&outputs, Some((key, &["out", "dev"])))
        .unwrap();
    assert_eq!(paths.len(), 2);
    assert_eq!(paths[0].name(), "multi");
    assert_eq!(paths[1].name(), "multi-dev");
    assert_eq!(
        store.realisation(key, "out").unwrap().as_ref(),
        Some(&paths[0])
    );
    assert_eq!(
        store.realisation(key, "dev").unwrap().as_ref(),
        Some(&paths[1])
    );
    let dev = store.path_info(&paths[1]).unwrap().unwrap();
    assert_eq!(dev.references, BTreeSet::from([dep.clone()]));
    // The archive hash recorded (computed while copying) is that of what is stored.
    for path in &paths {
        let info = store.path_info(path).unwrap().unwrap();
        let stored = hash_tree(&store.host_path(path)).unwrap();
        assert_eq!((info.archive_hash, info.archive_size), stored);
    }
    // Each output is what `add_output` alone gives, even while this process pins it (its
    // lock held shared elsewhere: a valid path is not waited for).
    let pin = store.hold(&paths[0]).unwrap();
    assert_eq!(store.add_output(&outputs[0]).unwrap(), paths[0]);
    drop(pin);
    assert_eq!(
        std::fs::read_to_string(store.host_path(&paths[0])).unwrap(),
        "plain\n"
    );
    // Adding them again (already valid) only records the realisations of another key.
    let other = Hash::digest(b"other key");
    let again = store
        .add_outputs(&outputs, Some((other, &["out", "dev"])))
        .unwrap();
    assert_eq!(again, paths);
    assert_eq!(
        store.realisation(other, "dev").unwrap().as_ref(),
        Some(&paths[1])
    );
    assert_eq!(store.db().all_paths().unwrap().len(), 3);
}

#[test]
fn hold_closure_pins_inputs_and_reads_their_closure() {
    let (tmp, store) = store();
    let src = tmp.path().join("src");
    write_tree(&src);
    let dep = store.add_dir(&src, "dep").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (built, placeholder) = staged_file(dir.path(), "app", &dep.in_store_dir());
    let candidates = BTreeSet::from([dep.clone()]);
    let app = store
        .add_output(&AddOutput {
            built: &built,
            placeholder: &placeholder,
            name: "app",
            candidate_refs: &candidates,
            required_refs: &[],
            deriver: None,
            scratch: None,
        })
        .unwrap();
    let (pins, closure) = store.hold_closure(&BTreeSet::from([app.clone()])).unwrap();
    assert_eq!(closure, BTreeSet::from([app.clone(), dep.clone()]));
    assert_eq!(pins.len(), 1);
    // Pinned: gc keeps it and its closure although nothing roots them.
    let report = store.gc(&GcOptions::default()).unwrap();
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    drop(pins);
    let report = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.deleted.len(), 2);
    // A path that is not valid (e.g. collected before its pin was taken) is an error.
    let err = store
        .hold_closure(&BTreeSet::from([app.clone()]))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotValid { path } if *path == app),
        "{err}"
    );
}

#[test]
fn archive_hash_of_a_directory_output_is_that_of_the_stored_tree() {
    let (_tmp, store) = store();
    let dir = tempfile::tempdir().unwrap();
    // Small and large files (a large one is hashed after copying), placeholders to rewrite,
    // an executable, a symlink and a subdirectory.
    for (name, large) in [("small", false), ("large", true)] {
        let placeholder = StorePath::new(Hash::digest(name.as_bytes()), name).unwrap();
        let built = dir.path().join(placeholder.to_string());
        std::fs::create_dir_all(built.join("sub")).unwrap();
        let filler = if large {
            "x".repeat(300 * 1024)
        } else {
            String::new()
        };
        let text = format!("{filler}{}\n{filler}", placeholder.in_store_dir());
        std::fs::write(built.join("sub/file"), &text).unwrap();
        std::fs::write(built.join("run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(built.join("run"), PermissionsExt::from_mode(0o755)).unwrap();
        symlink("sub/file", built.join("link")).unwrap();
        let path = store
            .add_output(&AddOutput {
                built: &built,
                placeholder: &placeholder,
                name,
                candidate_refs: &BTreeSet::new(),
                required_refs: &[],
                deriver: None,
                scratch: Some(dir.path()),
            })
            .unwrap();
        let host = store.host_path(&path);
        let info = store.path_info(&path).unwrap().unwrap();
        assert_eq!(
            (info.archive_hash, info.archive_size),
            hash_tree(&host).unwrap(),
            "{name}"
        );
        assert_eq!(info.references, BTreeSet::from([path.clone()]));
        let stored = std::fs::read_to_string(host.join("sub/file")).unwrap();
        assert_eq!(stored, format!("{filler}{}\n{filler}", path.in_store_dir()));
        let m = std::fs::symlink_metadata(host.join("run")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o555);
    }
    let report = store.verify(&VerifyOptions::default()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// gc (and `verify --repair`) unregisters paths, then deletes their objects. The database
/// runs with `synchronous = NORMAL`, where a WAL commit reaches the disk only at the next
/// checkpoint, while the kernel may write the deletions out sooner: on a power loss, paths
/// registered without their objects (`bramble store verify` finds them missing). So the
/// commit is synced before the first change to an object. Shown with strace, which records
/// the order of the syscalls of a child process running the gc.
#[test]
fn gc_syncs_its_unregistration_before_deleting_objects() {
    const CHILD: &str = "GC_TRACE_CHILD_HOME";
    if let Some(home) = std::env::var_os(CHILD) {
        let store = LocalStore::open(Path::new(&home)).unwrap();
        assert_eq!(store.gc(&GcOptions::default()).unwrap().deleted.len(), 1);
        return;
    }
    assert!(
        std::process::Command::new("strace")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs strace: apt-get install -y strace"
    );
    let (tmp, store) = store();
    let src = tmp.path().join("src");
    write_tree(&src);
    let object = store.host_path(&store.add_dir(&src, "tree").unwrap());
    drop(store);
    let trace = tmp.path().join("trace");
    let out = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=write,pwrite64,fsync,fdatasync,fchmod,fchmodat,unlinkat,renameat,renameat2",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            "store::local::tests::gc_syncs_its_unregistration_before_deleting_objects",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, tmp.path().join("home"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let object = object.to_str().unwrap();
    let first_change = lines
        .iter()
        .position(|l| l.contains(object))
        .unwrap_or_else(|| panic!("the gc did not touch `{object}`:\n{log}"));
    let last_wal = lines[..first_change]
        .iter()
        .rev()
        .find(|l| l.contains("db.sqlite-wal>"))
        .unwrap_or_else(|| panic!("the gc wrote no WAL before deleting:\n{log}"));
    assert!(
        last_wal.contains("fdatasync(") || last_wal.contains("fsync("),
        "the WAL was not synced between the unregistration and `{}`:\n{last_wal}",
        lines[first_change]
    );
}

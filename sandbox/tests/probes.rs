//! Probe tests of `bramble-sandbox`: run the real helper binary with a static probe program
//! as the builder, which asserts isolation from inside (see `sandbox/tests/probe/probe.c`).
//!
//! Every test runs once per identity: as root and as uid 65534 (`setpriv`) when the test runs
//! as root (CI), or as the current user otherwise; and for each, once with the spec read
//! before the namespaces exist and once `--warm` (the spec read after them; specs a warm
//! sandbox cannot run go the first way). The helper, the probe and the fixtures are
//! copied into a fresh world-readable temp dir so uid 65534 can reach them. The helper tested is
//! the one cargo built, or `$BRAMBLE_SANDBOX` (CI also runs the suite on the static build).
//! Where the kernel refuses unprivileged user namespaces the tests print why and skip, unless
//! `CI` is set, in which case they fail.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use bramble_sandbox::{
    Bind, EXIT_INVALID_SPEC, EXIT_NO_USER_NAMESPACES, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND,
    EXIT_PROCESS_LIMIT, EXIT_SILENT, EXIT_TIMEOUT, Network, Spec, Status, Stdin, Symlink,
};

const PROBE_INPUT: &str = "0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-probe";
const DATA_INPUT: &str = "1b9xq2mdmx3v8h4d7rwk0sh6lq4c9z1c-data";
const OUTSIDE: &str = "2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r-outside";
const OUTPUT: &str = "3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s-out";
const UNPRIVILEGED: u32 = 65534;

/// Who runs the helper.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Identity {
    Root,
    /// A uid that owns nothing on the machine (65534 via setpriv, or the current user).
    User {
        uid: u32,
        gid: u32,
        setpriv: bool,
    },
}

impl Identity {
    fn ids(self) -> (u32, u32) {
        match self {
            Identity::Root => (0, 0),
            Identity::User { uid, gid, .. } => (uid, gid),
        }
    }
}

fn identities() -> Vec<Identity> {
    let (uid, gid) = current_ids();
    if uid == 0 {
        vec![
            Identity::Root,
            Identity::User {
                uid: UNPRIVILEGED,
                gid: UNPRIVILEGED,
                setpriv: true,
            },
        ]
    } else {
        vec![Identity::User {
            uid,
            gid,
            setpriv: false,
        }]
    }
}

fn current_ids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("uid/gid in /proc/self/status")
    };
    (field("Uid:"), field("Gid:"))
}

/// The shared, world-readable fixture: helper, probe, a host store.
struct Fixture {
    dir: tempfile::TempDir,
    helper: PathBuf,
    store: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// Removes the fixture when the test process exits (a `static` is never dropped).
extern "C" fn remove_fixture() {
    if let Some(fixture) = FIXTURE.get() {
        let _ = std::fs::remove_dir_all(fixture.dir.path());
    }
}

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("bramble-probe-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        // SAFETY: registers a plain `extern "C" fn` that touches only a static.
        unsafe { libc::atexit(remove_fixture) };
        let root = dir.path();
        chmod(root, 0o755);
        let helper = root.join("bramble-sandbox");
        let tested = std::env::var_os("BRAMBLE_SANDBOX").map_or_else(
            || env!("CARGO_BIN_EXE_bramble-sandbox").into(),
            PathBuf::from,
        );
        std::fs::copy(&tested, &helper).expect("copy helper");
        chmod(&helper, 0o755);

        let store = root.join("store");
        let probe_bin = store.join(PROBE_INPUT).join("bin");
        mkdirs(&probe_bin);
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.c");
        let out = Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(probe_bin.join("probe"))
            .arg(&source)
            .output()
            .expect("run gcc (needed to build the static probe)");
        assert!(
            out.status.success(),
            "gcc -static failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A non-executable file and a script with a missing interpreter.
        std::fs::write(probe_bin.join("not-executable"), "#!/bin/sh\n").unwrap();
        chmod(&probe_bin.join("not-executable"), 0o644);
        std::fs::write(probe_bin.join("bad-interpreter"), "#!/nonexistent/sh\n").unwrap();
        chmod(&probe_bin.join("bad-interpreter"), 0o755);
        // A symlink store path (recreated as a symlink inside).
        std::os::unix::fs::symlink(
            format!("{PROBE_INPUT}/bin"),
            store.join("4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t-link"),
        )
        .unwrap();

        mkdirs(&store.join(DATA_INPUT));
        std::fs::write(store.join(DATA_INPUT).join("file"), "data").unwrap();
        mkdirs(&store.join(OUTSIDE));
        std::fs::write(store.join(OUTSIDE).join("secret"), "secret").unwrap();
        for entry in walk(root) {
            let mode = if entry.is_dir() { 0o755 } else { 0o644 };
            if !entry.is_symlink() && (entry.is_dir() || mode_of(&entry) & 0o111 == 0) {
                chmod(&entry, mode);
            }
        }
        chmod(&probe_bin.join("probe"), 0o755);
        Fixture { dir, helper, store }
    })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdirs(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
}

/// One run's writable directories, owned by the identity (as root: by the sandbox's
/// unprivileged id, known once the helper is spawned, see [`Run::give`]).
struct Run {
    identity: Identity,
    /// Start the helper with `--warm`.
    warm: bool,
    build: PathBuf,
    stage: PathBuf,
    /// More writable bind sources, given to the builder as `build` and `stage` are.
    extra: std::cell::RefCell<Vec<PathBuf>>,
}

impl Run {
    fn new(identity: Identity, warm: bool) -> Run {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = fixture()
            .dir
            .path()
            .join(format!("run-{}", N.fetch_add(1, Ordering::SeqCst)));
        let build = dir.join("build");
        let stage = dir.join("stage");
        mkdirs(&build);
        mkdirs(&stage);
        chmod(&dir, 0o755);
        let (uid, gid) = identity.ids();
        for d in [&build, &stage] {
            chown(d, Some(uid), Some(gid)).unwrap();
        }
        Run {
            identity,
            warm,
            build,
            stage,
            extra: Default::default(),
        }
    }

    /// Makes `dir` a writable directory of this run's builder (see [`Run::give`]).
    fn own(&self, dir: &Path) {
        let (uid, gid) = self.identity.ids();
        chown(dir, Some(uid), Some(gid)).unwrap();
        self.extra.borrow_mut().push(dir.to_owned());
    }

    /// As root, the builder is the unprivileged host id of the helper process `pid`: its
    /// writable directories are given to that id after the spawn, before the spec is sent,
    /// as the build engine does.
    fn give(&self, pid: u32) {
        if self.identity != Identity::Root {
            return;
        }
        let id = bramble_sandbox::sandbox_host_id(pid);
        for dir in [&self.build, &self.stage]
            .into_iter()
            .chain(&*self.extra.borrow())
        {
            chown(dir, Some(id), Some(id)).unwrap();
        }
    }

    /// The host uid and gid the builder gets (`sandbox`: an id of the range for root).
    fn expected_ids(&self) -> (String, String) {
        match self.identity {
            Identity::Root => ("sandbox".into(), "sandbox".into()),
            Identity::User { uid, gid, .. } => (uid.to_string(), gid.to_string()),
        }
    }

    /// The standard build layout: writable staging store, the closure bound read-only on
    /// top, build dir at /build, `$out` in the staging store.
    fn spec(&self, args: &[&str]) -> Spec {
        let store = &fixture().store;
        let mut spec = Spec::new(format!("/bramble/store/{PROBE_INPUT}/bin/probe"));
        spec.args = args.iter().map(|s| s.to_string()).collect();
        spec.binds = vec![
            Bind {
                source: self.stage.clone(),
                target: "/bramble/store".into(),
                writable: true,
            },
            Bind {
                source: store.join(PROBE_INPUT),
                target: format!("/bramble/store/{PROBE_INPUT}").into(),
                writable: false,
            },
            Bind {
                source: store.join(DATA_INPUT),
                target: format!("/bramble/store/{DATA_INPUT}").into(),
                writable: false,
            },
            Bind {
                source: self.build.clone(),
                target: "/build".into(),
                writable: true,
            },
        ];
        spec.env
            .insert("out".into(), format!("/bramble/store/{OUTPUT}"));
        spec
    }

    fn command(&self) -> Command {
        self.command_as(self.warm)
    }

    fn command_as(&self, warm: bool) -> Command {
        let helper = &fixture().helper;
        let mut cmd = match self.identity {
            Identity::User {
                uid,
                gid,
                setpriv: true,
            } => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(helper);
                c
            }
            _ => Command::new(helper),
        };
        if warm {
            cmd.arg("--warm");
        }
        cmd.current_dir("/");
        cmd
    }

    fn run_json(&self, json: &str) -> Output {
        self.run_json_as(json, self.warm)
    }

    fn run_json_as(&self, json: &str, warm: bool) -> Output {
        let mut child = self
            .command_as(warm)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        self.give(child.id());
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `spec`; warm only if a warm sandbox can run it.
    fn run(&self, spec: &Spec) -> Output {
        let defaults = Spec::new("/");
        let warm = self.warm
            && (spec.network, spec.stdin, spec.uid, spec.gid)
                == (defaults.network, defaults.stdin, defaults.uid, defaults.gid);
        self.run_json_as(&spec.to_json(), warm)
    }
}

/// Runs `test` for every identity, cold and warm, skipping (loudly) where user namespaces
/// are refused.
fn for_each_identity(test: impl Fn(&Run)) {
    for (identity, warm) in identities()
        .into_iter()
        .flat_map(|i| [(i, false), (i, true)])
    {
        let run = Run::new(identity, warm);
        let out = run.run(&run.spec(&["exit", "0"]));
        if out.status.code() == Some(i32::from(EXIT_NO_USER_NAMESPACES)) {
            let why = String::from_utf8_lossy(&out.stderr);
            if std::env::var_os("CI").is_some() {
                panic!("user namespaces unavailable as {identity:?} (CI set): {why}");
            }
            eprintln!(
                "SKIPPED as {identity:?} (warm: {warm}): the kernel refuses user namespaces: {why}"
            );
            continue;
        }
        assert_eq!(
            out.status.code(),
            Some(0),
            "trivial run failed as {identity:?} (warm: {warm}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        test(&run);
    }
}

#[track_caller]
fn assert_probe_ok(run: &Run, out: &Output) {
    assert!(
        out.status.success() && out.stdout.ends_with(b"ok\n"),
        "probe failed as {:?} (warm: {}, status {:?}):\nstdout: {}\nstderr: {}",
        run.identity,
        run.warm,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn probe(run: &Run, args: &[&str]) {
    let out = run.run(&run.spec(args));
    assert_probe_ok(run, &out);
}

/// Host processes whose command line contains `token` (to prove sandboxed ones are gone).
fn processes_with(token: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|a| a == token.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "bramble-probe-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

#[test]
fn uid_and_gid_are_mapped_to_one_unprivileged_id() {
    for_each_identity(|run| {
        let (uid, gid) = run.expected_ids();
        probe(run, &["ids", &uid, &gid]);
    });
}

/// Root in a user namespace that does not map the range (as in many containers) cannot give
/// the builder its id: a clear error naming the id, with a hint, and nothing runs.
#[test]
fn as_root_without_the_id_range_mapped_the_helper_says_why() {
    if current_ids().0 != 0 {
        eprintln!("SKIPPED: this test is about the helper run as root");
        return;
    }
    let run = Run::new(Identity::Root, false);
    let mut child = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(&fixture().helper)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unshare (util-linux)");
    let json = run.spec(&["exit", "0"]).to_json();
    // The helper may have failed before reading it all: its output tells.
    let _ = child.stdin.take().unwrap().write_all(json.as_bytes());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(i32::from(EXIT_NO_USER_NAMESPACES)) {
        eprintln!("SKIPPED: no nested user namespaces: {stderr}");
        return;
    }
    assert_eq!(
        out.status.code(),
        Some(i32::from(bramble_sandbox::EXIT_SETUP_FAILED)),
        "{stderr}"
    );
    assert!(
        stderr.starts_with("bramble-sandbox: error: cannot write the sandbox's `uid_map` to run the builder as host id 8"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "\nhint: as root, builders run as an unprivileged host id (by default of 880803840..884998144)"
        ),
        "{stderr}"
    );
}

/// Seen from the host: every process of the sandbox (pid 1 and the builder) has the
/// builder's host id as real, effective, saved and filesystem uid and gid, never root's, and
/// no supplementary group.
#[test]
fn no_process_of_the_sandbox_runs_as_host_root() {
    for_each_identity(|run| {
        let token = unique("ids");
        let mut child = run
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let want = match run.identity {
            Identity::Root => bramble_sandbox::sandbox_host_id(child.id()),
            Identity::User { uid, .. } => uid,
        };
        let json = run.spec(&["sleep", &token]).to_json();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        let builder = processes_with(&token);
        assert_eq!(builder.len(), 1);
        let status = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |status: &str, name: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_owned()
        };
        let init: u32 = field(&status(builder[0]), "PPid:").parse().unwrap();
        for pid in [builder[0], init] {
            let status = status(pid);
            for name in ["Uid:", "Gid:"] {
                let ids: Vec<u32> = field(&status, name)
                    .split_whitespace()
                    .map(|id| id.parse().unwrap())
                    .collect();
                assert_eq!(
                    ids, [want; 4],
                    "{name} of pid {pid} as {:?} (warm: {})",
                    run.identity, run.warm
                );
            }
            if run.identity == Identity::Root {
                assert_eq!(field(&status, "Groups:"), "", "pid {pid}");
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
    });
}

#[test]
fn only_the_spec_paths_exist() {
    for_each_identity(|run| {
        let outside = format!("/bramble/store/{OUTSIDE}");
        probe(
            run,
            &[
                "absent",
                "/etc/passwd",
                "/etc",
                "/home",
                "/root",
                "/tmp",
                "/usr",
                &outside,
            ],
        );
        probe(run, &["root-entries", "bramble", "build", "dev", "proc"]);
    });
}

#[test]
fn inputs_are_read_only_nosuid_nodev() {
    for_each_identity(|run| {
        probe(
            run,
            &[
                "readonly",
                &format!("/bramble/store/{PROBE_INPUT}"),
                &format!("/bramble/store/{DATA_INPUT}"),
            ],
        );
    });
}

#[test]
fn build_dir_and_outputs_are_writable() {
    for_each_identity(|run| {
        probe(run, &["writable", "/build", "/bramble/store", "/dev/shm"]);
        // $out created by the builder in the staging store reaches the host.
        probe(
            run,
            &["write-file", &format!("/bramble/store/{OUTPUT}"), "built"],
        );
        assert_eq!(
            std::fs::read_to_string(run.stage.join(OUTPUT)).unwrap(),
            "built"
        );
        assert_eq!(
            std::fs::read_to_string(run.build.join("probe-created")).unwrap(),
            "ok"
        );

        // A pre-created output directory bound writable at its placeholder works too.
        let out_dir = run.build.parent().unwrap().join("out-dir");
        mkdirs(&out_dir);
        run.own(&out_dir);
        let mut spec = run.spec(&["writable", "/bramble/store/x-out"]);
        spec.binds.push(Bind {
            source: out_dir.clone(),
            target: "/bramble/store/x-out".into(),
            writable: true,
        });
        assert_probe_ok(run, &run.run(&spec));
        assert!(out_dir.join("probe-created").exists());
    });
}

#[test]
fn network_is_isolated_to_loopback() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port().to_string();
    let name = unique("abstract");
    let _unix =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    for_each_identity(|run| {
        probe(run, &["net-tcp", &port, "refused"]);
        probe(run, &["net-unix", &name]);
        probe(run, &["net-ifaces"]);
        // Control: with the host network the same listener is reachable.
        let mut spec = run.spec(&["net-tcp", &port, "ok"]);
        spec.network = Network::Host;
        assert_probe_ok(run, &run.run(&spec));
    });
}

#[test]
fn host_processes_are_invisible_and_parent_is_pid_1() {
    for_each_identity(|run| probe(run, &["pids"]));
}

#[test]
fn no_capabilities_and_no_new_privs() {
    for_each_identity(|run| probe(run, &["caps"]));
}

#[test]
fn setuid_and_setgid_chmod_fail_with_eperm() {
    for_each_identity(|run| probe(run, &["chmod", "/build"]));
}

#[test]
fn xattr_writes_fail_with_enotsup() {
    for_each_identity(|run| probe(run, &["xattr", "/build"]));
}

#[test]
fn io_uring_is_refused_and_xattr_writes_fail_through_it_too() {
    for_each_identity(|run| probe(run, &["io-uring", "/build"]));
}

#[test]
fn tiocsti_fails() {
    for_each_identity(|run| probe(run, &["tiocsti"]));
}

#[test]
fn foreign_architecture_syscalls_are_refused() {
    for_each_identity(|run| probe(run, &["foreign-arch"]));
}

#[test]
fn proc_sys_is_read_only_and_kernel_internals_are_masked() {
    for_each_identity(|run| probe(run, &["proc"]));
}

/// The host's device nodes bound into the sandbox cannot be changed: the probe's chmod,
/// chown and utimes fail, and the host nodes' modes, owners and times are the same after.
#[test]
fn host_device_nodes_cannot_be_changed() {
    use std::os::unix::fs::MetadataExt;
    let nodes = ["null", "zero", "full", "random", "urandom", "tty"];
    let state = || -> Vec<_> {
        nodes
            .iter()
            .map(|n| {
                let m = std::fs::metadata(format!("/dev/{n}")).unwrap();
                // Writing to a terminal through `/dev/tty` (any process may) updates its times.
                let time = if *n == "tty" {
                    (0, 0)
                } else {
                    (m.mtime(), m.mtime_nsec())
                };
                (n.to_string(), m.mode(), m.uid(), m.gid(), time)
            })
            .collect()
    };
    let before = state();
    for_each_identity(|run| probe(run, &["dev-nodes"]));
    assert_eq!(state(), before);
}

#[test]
fn environment_is_cleared_to_the_spec() {
    for_each_identity(|run| {
        let mut spec = run.spec(&[
            "env",
            "HOME=/homeless-shelter",
            "TMPDIR=/build",
            "PATH=/path-not-set",
            "FOO=bar baz",
            "out=/bramble/store/3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s-out",
        ]);
        spec.env.insert("FOO".into(), "bar baz".into());
        assert_probe_ok(run, &run.run(&spec));
        // The spec's PATH wins over the default.
        let mut spec = run.spec(&[
            "env",
            "HOME=/homeless-shelter",
            "TMPDIR=/build",
            "PATH=/bin",
        ]);
        spec.env = [("PATH".to_owned(), "/bin".to_owned())].into();
        assert_probe_ok(run, &run.run(&spec));
    });
}

#[test]
fn hostname_cwd_dev_and_stdio() {
    for_each_identity(|run| {
        let mut spec = run.spec(&["misc", "bramble-probe", "/bramble/store"]);
        spec.hostname = "bramble-probe".into();
        spec.cwd = "/bramble/store".into();
        assert_probe_ok(run, &run.run(&spec));
    });
}

#[test]
fn symlinks_and_symlink_sources_are_recreated() {
    for_each_identity(|run| {
        let mut spec = run.spec(&[
            "readonly",
            "/bin",
            "/bramble/store/4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t-link",
        ]);
        spec.binds.push(Bind {
            source: fixture()
                .store
                .join("4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t-link"),
            target: "/bramble/store/4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t-link".into(),
            writable: false,
        });
        spec.symlinks.push(Symlink {
            path: "/bin".into(),
            to: format!("/bramble/store/{PROBE_INPUT}/bin").into(),
        });
        assert_probe_ok(run, &run.run(&spec));
    });
}

#[test]
fn a_daemonised_child_does_not_survive_the_build() {
    for_each_identity(|run| {
        let token = unique("daemon");
        probe(run, &["daemon", &token]);
        assert_eq!(processes_with(&token), Vec::<u32>::new(), "daemon survived");
    });
}

#[test]
fn the_time_limit_kills_the_sandbox() {
    for_each_identity(|run| {
        let token = unique("sleep");
        let mut spec = run.spec(&["sleep", &token]);
        spec.time_limit_ms = Some(200);
        let out = run.run(&spec);
        assert_eq!(out.status.code(), Some(i32::from(EXIT_TIMEOUT)));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(
                "bramble-sandbox: error: the builder exceeded its time limit of 200 ms"
            ),
            "{stderr}"
        );
        assert_eq!(
            processes_with(&token),
            Vec::<u32>::new(),
            "sleeper survived"
        );
    });
}

#[test]
fn the_silence_limit_kills_a_quiet_sandbox_and_output_keeps_it_alive() {
    for_each_identity(|run| {
        let token = unique("silent");
        let mut spec = run.spec(&["sleep", &token]);
        spec.silence_limit_ms = Some(300);
        let out = run.run(&spec);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(i32::from(EXIT_SILENT)), "{stderr}");
        // What the builder printed before it went quiet was relayed.
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
        assert!(
            stderr.starts_with(
                "bramble-sandbox: error: the builder printed nothing for 300 ms (its silence limit)"
            ),
            "{stderr}"
        );
        assert_eq!(
            processes_with(&token),
            Vec::<u32>::new(),
            "sleeper survived"
        );

        // Output every 100 ms for 1.5 s under a 1 s silence limit: never silent that long.
        let mut spec = run.spec(&["tick", "15", "100"]);
        spec.silence_limit_ms = Some(1000);
        let out = run.run(&spec);
        assert_probe_ok(run, &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("tick 0\ntick 1\n") && stdout.contains("tick 14\n"));
        // Stdout and stderr stay apart through the relay.
        let mut spec = run.spec(&["absent", "/nonexistent"]);
        spec.silence_limit_ms = Some(1000);
        let out = run.run(&spec);
        assert_probe_ok(run, &out);
        assert!(out.stderr.is_empty(), "{out:?}");
    });
}

#[test]
fn a_fork_bomb_stops_at_the_process_limit_and_leaves_nothing() {
    for_each_identity(|run| {
        let token = unique("bomb");
        let mut spec = run.spec(&["forkbomb", &token]);
        spec.process_limit = Some(10);
        let out = if run.identity == Identity::Root {
            // As root the builder is an unprivileged host id, so RLIMIT_NPROC binds it. A
            // safety net should that ever regress: the sandbox's user namespace inherits the
            // creator's limit for the builder's host id as a whole (500).
            let mut child = Command::new("prlimit")
                .args(["--nproc=500:500", "--"])
                .arg(&fixture().helper)
                .args(if run.warm { &["--warm"][..] } else { &[][..] })
                .current_dir("/")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let json = spec.to_json();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(json.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        } else {
            run.run(&spec)
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(i32::from(EXIT_PROCESS_LIMIT)),
            "{stderr}"
        );
        // The builder and nine children: ten processes of the builder's.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "forked 9: Resource temporarily unavailable\n"
        );
        assert!(
            stderr.starts_with(
                "bramble-sandbox: error: the builder failed (status 3) at its limit of 10 processes"
            ),
            "{stderr}"
        );
        assert_eq!(
            processes_with(&token),
            Vec::<u32>::new(),
            "the bomb survived"
        );
        // A builder that fails below its limit keeps its own status.
        let mut spec = run.spec(&["exit", "3"]);
        spec.process_limit = Some(10);
        assert_eq!(run.run(&spec).status.code(), Some(3));
    });
}

#[test]
fn a_memory_hog_gets_no_memory_over_the_limit() {
    for_each_identity(|run| {
        let mut spec = run.spec(&["hog", "256"]);
        spec.memory_limit_bytes = Some(64 << 20);
        let out = run.run(&spec);
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "out of memory after asking for 256 MiB\n"
        );
        // Under the limit, the same program runs.
        let mut spec = run.spec(&["hog", "16"]);
        spec.memory_limit_bytes = Some(64 << 20);
        let out = run.run(&spec);
        assert_probe_ok(run, &out);
        assert!(out.stdout.starts_with(b"allocated 16 MiB\n"));
    });
}

#[test]
fn cancelling_the_helper_kills_the_sandbox() {
    for_each_identity(|run| {
        let token = unique("cancel");
        let mut child = run
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let json = run.spec(&["sleep", &token]).to_json();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        assert_eq!(
            processes_with(&token).len(),
            1,
            "the sleeper is visible from the host"
        );
        // Signal the helper itself (setpriv execs it, so the child pid is the helper).
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + 15));
        assert_eq!(
            processes_with(&token),
            Vec::<u32>::new(),
            "sleeper survived"
        );
    });
}

#[test]
fn exit_status_passes_through() {
    for_each_identity(|run| {
        for code in [0, 1, 42, 255] {
            let out = run.run(&run.spec(&["exit", &code.to_string()]));
            assert_eq!(out.status.code(), Some(code), "{out:?}");
            assert!(out.stderr.is_empty(), "{out:?}");
        }
        let out = run.run(&run.spec(&["signal", "9"]));
        assert_eq!(out.status.code(), Some(128 + 9));
        let out = run.run(&run.spec(&["signal", "15"]));
        assert_eq!(out.status.code(), Some(128 + 15));
    });
}

#[test]
fn the_early_status_comes_once_the_sandbox_is_empty() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    for_each_identity(|run| {
        for (args, code) in [(vec!["exit", "42"], 42u8), (vec!["daemon", "x"], 0)] {
            let token = unique("status");
            let args: Vec<&str> = args
                .into_iter()
                .map(|a| if a == "x" { token.as_str() } else { a })
                .collect();
            let (mut ours, theirs) = UnixStream::pair().unwrap();
            let mut child = run
                .command()
                .args(["--status-fd", "0"])
                .stdin(std::os::fd::OwnedFd::from(theirs))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            ours.write_all(run.spec(&args).to_json().as_bytes())
                .unwrap();
            ours.shutdown(std::net::Shutdown::Write).unwrap();
            let mut status = Vec::new();
            ours.read_to_end(&mut status).unwrap();
            assert_eq!(status, Status::Builder(code).encode(), "warm: {}", run.warm);
            // Nothing of the sandbox runs any more when the status comes (the daemon too).
            assert_eq!(processes_with(&token), Vec::<u32>::new(), "daemon survived");
            // The log is complete and ends, the exit status agrees.
            let mut stdout = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut stdout)
                .unwrap();
            assert_eq!(child.wait().unwrap().code(), Some(i32::from(code)));
            if code == 0 {
                assert!(stdout.ends_with("ok\n"), "{stdout}");
            }
        }
    });
}

/// Runs `spec` with `--status-fd 0` (spec and status on one socket, as the build engine
/// does); returns the status record and the exit code.
fn run_with_status(run: &Run, spec: &Spec) -> (Vec<u8>, Option<i32>) {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let mut child = run
        .command()
        .args(["--status-fd", "0"])
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    run.give(child.id());
    ours.write_all(spec.to_json().as_bytes()).unwrap();
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    let mut status = Vec::new();
    ours.read_to_end(&mut status).unwrap();
    (status, child.wait().unwrap().code())
}

/// The builder's own 127 (a shell's "command not found") and a builder the helper cannot
/// find have the same exit code, but not the same status record: the helper's own failures
/// come with their message on the status channel, the builder's codes as they are.
#[test]
fn the_status_record_tells_the_builders_exit_codes_from_the_helpers_failures() {
    for_each_identity(|run| {
        for code in [122u8, 125, 126, 127] {
            let (record, exit) = run_with_status(run, &run.spec(&["exit", &code.to_string()]));
            assert_eq!(Status::decode(&record), Some(Status::Builder(code)));
            assert_eq!(exit, Some(i32::from(code)));
        }
        let mut spec = run.spec(&[]);
        spec.builder = format!("/bramble/store/{OUTSIDE}/bin/probe").into();
        let (record, exit) = run_with_status(run, &spec);
        assert_eq!(exit, Some(i32::from(EXIT_NOT_FOUND)));
        match Status::decode(&record) {
            Some(Status::Helper { code, message }) => {
                assert_eq!(code, EXIT_NOT_FOUND);
                assert!(
                    message.starts_with(&format!(
                        "builder `/bramble/store/{OUTSIDE}/bin/probe` not found in the sandbox\nhint: "
                    )),
                    "{message}"
                );
            }
            other => panic!("{other:?} from {record:?}"),
        }
        // A failure of the host side (the time limit) comes the same way.
        let mut spec = run.spec(&["sleep", "x"]);
        spec.time_limit_ms = Some(200);
        let (record, exit) = run_with_status(run, &spec);
        assert_eq!(exit, Some(i32::from(EXIT_TIMEOUT)));
        assert_eq!(
            Status::decode(&record),
            Some(Status::Helper {
                code: EXIT_TIMEOUT,
                message: "the builder exceeded its time limit of 200 ms and was killed".into()
            })
        );
    });
}

#[test]
fn a_warm_sandbox_refuses_specs_it_was_not_set_up_for_and_exits_quietly_without_one() {
    for_each_identity(|run| {
        if !run.warm {
            return;
        }
        let mut host = run.spec(&["exit", "0"]);
        host.network = Network::Host;
        let mut uid = run.spec(&["exit", "0"]);
        uid.uid = 0;
        for spec in [host, uid] {
            let out = run.run_json(&spec.to_json());
            assert_eq!(out.status.code(), Some(i32::from(EXIT_INVALID_SPEC)));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("a `--warm` sandbox cannot run a spec with"),
                "{stderr}"
            );
        }
        let out = run.run_json("");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    });
}

#[test]
fn builder_not_found_and_not_executable_have_their_codes() {
    for_each_identity(|run| {
        let mut spec = run.spec(&[]);
        spec.builder = format!("/bramble/store/{OUTSIDE}/bin/probe").into();
        let out = run.run(&spec);
        assert_eq!(out.status.code(), Some(i32::from(EXIT_NOT_FOUND)));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("bramble-sandbox: error: builder `/bramble/store/"),
            "{stderr}"
        );
        assert!(stderr.contains("\nhint: "), "{stderr}");

        spec.builder = format!("/bramble/store/{PROBE_INPUT}/bin/bad-interpreter").into();
        let out = run.run(&spec);
        assert_eq!(out.status.code(), Some(i32::from(EXIT_NOT_FOUND)));
        assert!(String::from_utf8_lossy(&out.stderr).contains("interpreter"));

        spec.builder = format!("/bramble/store/{PROBE_INPUT}/bin/not-executable").into();
        let out = run.run(&spec);
        assert_eq!(out.status.code(), Some(i32::from(EXIT_NOT_EXECUTABLE)));
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not executable"));
    });
}

#[test]
fn invalid_specs_are_rejected() {
    for_each_identity(|run| {
        let valid = run.spec(&["exit", "0"]);
        let mut relative = valid.clone();
        relative.builder = "probe".into();
        let mut hiding = valid.clone();
        hiding.binds.push(Bind {
            source: "/tmp".into(),
            target: "/bramble".into(),
            writable: false,
        });
        let mut duplicate = valid.clone();
        duplicate.binds.push(valid.binds[1].clone());
        for json in [
            "not json".to_owned(),
            r#"{"builder":"/x","unknown":1}"#.to_owned(),
            relative.to_json(),
            hiding.to_json(),
            duplicate.to_json(),
        ] {
            let out = run.run_json(&json);
            assert_eq!(
                out.status.code(),
                Some(i32::from(EXIT_INVALID_SPEC)),
                "{json}"
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.starts_with("bramble-sandbox: error: "), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
        // A missing bind source is a setup failure naming the path.
        let mut missing = valid.clone();
        missing.binds.push(Bind {
            source: "/nonexistent/source".into(),
            target: "/x".into(),
            writable: false,
        });
        let out = run.run(&missing);
        assert_eq!(
            out.status.code(),
            Some(i32::from(bramble_sandbox::EXIT_SETUP_FAILED))
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("`/nonexistent/source`"));
    });
}

#[test]
fn stdin_is_passed_through_with_spec_fd() {
    for_each_identity(|run| {
        let mut spec = run.spec(&["cat"]);
        spec.stdin = Stdin::Inherit;
        let spec_file = run.build.parent().unwrap().join("spec.json");
        std::fs::write(&spec_file, spec.to_json()).unwrap();
        // The shell opens the spec as descriptor 3, then becomes the usual command line
        // (never warm: a warm sandbox's builder reads /dev/null).
        let base = run.command_as(false);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"f=$1; shift; exec "$@" --spec-fd 3 3<"$f""#)
            .arg("sh")
            .arg(&spec_file)
            .arg(base.get_program())
            .args(base.get_args());
        let mut child = cmd
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"hello sandbox\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"hello sandbox\n");

        // With the spec on stdin, `inherit` is refused.
        let out = run.run(&spec);
        assert_eq!(out.status.code(), Some(i32::from(EXIT_INVALID_SPEC)));
    });
}

#[test]
fn the_sandbox_dies_with_the_parent_process() {
    for_each_identity(|run| {
        let token = unique("orphan");
        let spec_file = run.build.parent().unwrap().join("orphan.json");
        std::fs::write(&spec_file, run.spec(&["sleep", &token]).to_json()).unwrap();
        // A parent shell that starts the helper and is then killed with SIGKILL.
        let base = run.command();
        let mut parent = Command::new("sh")
            .arg("-c")
            .arg(r#"f=$1; shift; "$@" <"$f" & wait"#)
            .arg("sh")
            .arg(&spec_file)
            .arg(base.get_program())
            .args(base.get_args())
            .current_dir("/")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(parent.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        parent.kill().unwrap();
        parent.wait().unwrap();
        // PR_SET_PDEATHSIG is asynchronous: wait (bounded) for the kernel to finish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !processes_with(&token).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            processes_with(&token),
            Vec::<u32>::new(),
            "sandbox outlived its parent"
        );
    });
}

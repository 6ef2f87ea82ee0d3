//! The one way the tests run `bramble`, with one environment policy.
//!
//! - **Who**: an ordinary user. When the test process is root (as in CI), `bramble` runs as
//!   uid/gid 65534 through `setpriv --reuid=65534 --regid=65534 --clear-groups`; otherwise as
//!   the test's own user. Only tests about root behaviour call [`Bramble::as_root`].
//! - **What**: the `bramble` and `bramble-sandbox` binaries cargo built and the standard library
//!   `lib/`, installed once per test process (hard links, else copies) into a world-readable
//!   temp dir (a checkout under `/root` is not reachable by uid 65534).
//! - **Where**: a private `BRAMBLE_HOME` in a temp dir owned by that user, and working
//!   directories made with [`Bramble::tempdir`] (world-readable, owned by that user).
//! - **Environment**: cleared, then `PATH`, `HOME` (the private temp dir, so the user config
//!   is read from there), `NO_COLOR=1`, `BRAMBLE_HOME`, `BRAMBLE_LIB`, `BRAMBLE_SANDBOX`,
//!   `BRAMBLE_APT_ROOT` (an empty dir: the machine's apt sources are never read) and
//!   `BRAMBLE_FETCH_RETRIES=0` (downloads are not retried). So no `CI` (unpinned fetches are
//!   recorded, not refused), no `BRAMBLE_LOG`/`RUST_LOG`, no `BRAMBLE_MIRROR_*`, no
//!   configuration of whoever runs the tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};

/// The uid and gid `bramble` runs as when the tests run as root.
pub const UNPRIVILEGED: u32 = 65534;

/// The binaries and the standard library in a world-readable temp dir, shared by the
/// [`Bramble`]s alive in the process and removed with the last of them.
#[derive(Debug)]
struct Install {
    /// Removed when the last user of the install drops it.
    _dir: tempfile::TempDir,
    bramble: PathBuf,
    sandbox: PathBuf,
    lib: PathBuf,
    /// An empty root for apt sources: the machine's are never read.
    apt: PathBuf,
}

static INSTALL: Mutex<Weak<Install>> = Mutex::new(Weak::new());

fn install() -> Arc<Install> {
    let mut shared = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(install) = shared.upgrade() {
        return install;
    }
    let built = PathBuf::from(env!("CARGO_BIN_EXE_bramble"));
    let helper = std::env::var_os("BRAMBLE_SANDBOX")
        .map_or_else(|| built.with_file_name("bramble-sandbox"), PathBuf::from);
    assert!(
        helper.is_file(),
        "the sandbox helper `{}` is missing: build it with `cargo build -p bramble-sandbox` \
         (`cargo nextest run --workspace` does)",
        helper.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("bramble-it-")
        .tempdir()
        .expect("temp dir");
    chmod(dir.path(), 0o755);
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    chmod(&bin, 0o755);
    let bramble = bin.join("bramble");
    let sandbox = bin.join("bramble-sandbox");
    place(&built, &bramble);
    place(&helper, &sandbox);
    // The program Debian package sets run in the sandbox, found next to `bramble`.
    place(
        &built.with_file_name("bramble-debian"),
        &bin.join("bramble-debian"),
    );
    // The program Go module builds run in the sandbox, likewise.
    place(&built.with_file_name("bramble-go"), &bin.join("bramble-go"));
    let lib = dir.path().join("lib");
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("lib"), &lib);
    let apt = dir.path().join("apt");
    std::fs::create_dir(&apt).unwrap();
    chmod(&apt, 0o755);
    let install = Arc::new(Install {
        _dir: dir,
        bramble,
        sandbox,
        lib,
        apt,
    });
    *shared = Arc::downgrade(&install);
    install
}

/// Put the executable `from` at `to`: a hard link (the debug binary is large) or a copy.
fn place(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy `{}`: {e}", from.display()));
    }
    if std::fs::metadata(to).unwrap().permissions().mode() & 0o555 != 0o555 {
        chmod(to, 0o755);
    }
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod `{}`: {e}", path.display()));
}

/// Copy a tree (files with their modes, symlinks as symlinks); directories become 0755.
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            chmod(&dest, 0o755);
        } else if entry.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Whether the test process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Who `bramble` runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// `setpriv` to this uid and gid (the tests run as root).
    Switch { uid: u32, gid: u32 },
    /// The test process's own user (root for [`Bramble::as_root`]).
    Same,
}

impl Identity {
    /// The owner files `bramble` must write get, or `None` to leave them as created.
    fn owner(self) -> Option<(u32, u32)> {
        match self {
            Identity::Switch { uid, gid } => Some((uid, gid)),
            Identity::Same => None,
        }
    }
}

/// Where `bramble` keeps its store.
#[derive(Debug)]
enum Home {
    /// A private temp dir as `HOME`, with `BRAMBLE_HOME=<dir>/bramble`, or with no
    /// `BRAMBLE_HOME` when `default` (the store at its default place under `HOME`).
    Private {
        dir: tempfile::TempDir,
        default: bool,
    },
    /// No `BRAMBLE_HOME`: the default under `HOME=<dir>` (a real user's home).
    User(PathBuf),
}

/// `bramble` with one store, run as one user: see the module doc.
#[derive(Debug)]
pub struct Bramble {
    home: Home,
    identity: Identity,
    install: Arc<Install>,
}

impl Default for Bramble {
    fn default() -> Self {
        Bramble::new()
    }
}

impl Bramble {
    /// A private store, used by an ordinary user.
    pub fn new() -> Bramble {
        Bramble::with_identity(if is_root() {
            Identity::Switch {
                uid: UNPRIVILEGED,
                gid: UNPRIVILEGED,
            }
        } else {
            Identity::Same
        })
    }

    /// A private `HOME` and no `BRAMBLE_HOME`, used by an ordinary user: the store is at its
    /// default place, `$HOME/.local/share/bramble`.
    pub fn with_default_home() -> Bramble {
        let mut bramble = Bramble::new();
        if let Home::Private { default, .. } = &mut bramble.home {
            *default = true;
        }
        bramble
    }

    fn with_identity(identity: Identity) -> Bramble {
        let mut bramble = Bramble {
            home: Home::User(PathBuf::new()),
            identity,
            install: install(),
        };
        bramble.home = Home::Private {
            dir: bramble.tempdir(),
            default: false,
        };
        bramble
    }

    /// The user `uid`/`gid` (the test runs as root) with the default store under `home`: no
    /// `BRAMBLE_HOME`, `HOME=<home>`.
    pub fn for_user(uid: u32, gid: u32, home: &Path) -> Bramble {
        assert!(is_root(), "only root can run bramble as another user");
        Bramble {
            home: Home::User(home.to_owned()),
            identity: Identity::Switch { uid, gid },
            install: install(),
        }
    }

    /// A private store used by the test process's own user, root in CI: only for tests of
    /// what bramble does as root.
    pub fn as_root() -> Bramble {
        Bramble::with_identity(Identity::Same)
    }

    /// `BRAMBLE_HOME` (it need not exist yet: `bramble` creates it).
    pub fn home(&self) -> PathBuf {
        match &self.home {
            Home::Private {
                dir,
                default: false,
            } => dir.path().join("bramble"),
            Home::Private { dir, default: true } => dir.path().join(".local/share/bramble"),
            Home::User(home) => home.join(".local/share/bramble"),
        }
    }

    /// The store directory on the host.
    pub fn store_dir(&self) -> PathBuf {
        self.home().join("store")
    }

    /// A fresh world-readable temp dir owned by the user `bramble` runs as.
    pub fn tempdir(&self) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("bramble-test-")
            .tempdir()
            .unwrap();
        chmod(dir.path(), 0o755);
        self.give(dir.path());
        dir
    }

    /// Hand `path` and everything below it to the user `bramble` runs as (symlinks are not
    /// followed), so that `bramble` may write there as the project's owner would.
    pub fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.identity.owner() {
            chown_tree(path, uid, gid);
        }
    }

    /// The `bramble` command with `args`, run in `dir`.
    pub fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let install = &self.install;
        let mut cmd = match self.identity {
            Identity::Switch { uid, gid } => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(&install.bramble);
                cmd
            }
            Identity::Same => Command::new(&install.bramble),
        };
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("NO_COLOR", "1")
            .env("BRAMBLE_LIB", &install.lib)
            .env("BRAMBLE_SANDBOX", &install.sandbox)
            .env("BRAMBLE_APT_ROOT", &install.apt)
            .env("BRAMBLE_FETCH_RETRIES", "0")
            .stdin(Stdio::null());
        match &self.home {
            Home::Private { dir, default } => {
                cmd.env("HOME", dir.path());
                if !default {
                    cmd.env("BRAMBLE_HOME", self.home());
                }
            }
            Home::User(home) => {
                cmd.env("HOME", home);
            }
        }
        if let Some(backtrace) = std::env::var_os("RUST_BACKTRACE") {
            cmd.env("RUST_BACKTRACE", backtrace);
        }
        cmd
    }

    /// Run `bramble args` in `dir` and capture its output.
    pub fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.command(dir, args).output().unwrap()
    }

    /// [`Bramble::run`], which must succeed.
    pub fn ok(&self, dir: &Path, args: &[&str]) -> Output {
        let out = self.run(dir, args);
        assert!(
            out.status.success(),
            "bramble {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Bramble {
    /// A store's objects are read-only directories; as root, removing them needs no write
    /// permission, as anyone else it does: make the private home's directories writable so
    /// its temp dir is removed.
    fn drop(&mut self) {
        if is_root() {
            return;
        }
        if let Home::Private { dir, .. } = &self.home {
            make_dirs_writable(dir.path());
        }
    }
}

/// Make every directory below `path` writable by its owner: a store's objects are read-only
/// directories, which only root may empty as they are.
fn make_dirs_writable(path: &Path) {
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// Remove `path` and everything below it, store objects included, as root or as their owner.
pub fn remove_tree(path: &Path) {
    if !is_root() {
        make_dirs_writable(path);
    }
    std::fs::remove_dir_all(path).unwrap_or_else(|e| panic!("remove `{}`: {e}", path.display()));
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.unwrap();
        std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown `{}`: {e}", entry.path().display()));
    }
}

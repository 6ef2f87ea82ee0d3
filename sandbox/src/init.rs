//! The sandbox's pid 1: builds the sandbox from inside the new namespaces, starts the builder,
//! reaps, and exits with the builder's status (which kills everything left in the namespace).
//!
//! Runs in the child created by `clone(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | ...)`.
//! Single-threaded by construction (a fresh process); every function here is called in the
//! order of [`run`] and says which earlier step it relies on.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{Error, user_namespace_hint};
use crate::plan::{Base, Plan, Step, sandbox_path};
use crate::sys;

/// Device nodes bound from the host's `/dev` (they cannot be created in a user namespace).
const DEVICES: [(&std::ffi::CStr, &std::ffi::CStr); 6] = [
    (c"/dev/null", c"dev/null"),
    (c"/dev/zero", c"dev/zero"),
    (c"/dev/full", c"dev/full"),
    (c"/dev/random", c"dev/random"),
    (c"/dev/urandom", c"dev/urandom"),
    (c"/dev/tty", c"dev/tty"),
];

/// Flags of a bind remounted read-only and nosuid.
const READ_ONLY_BIND: libc::c_ulong =
    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID;

/// Parts of the fresh `/proc` made read-only, as bubblewrap and runc do: global sysctls
/// (`kernel.core_pattern` runs a program as host root), the magic SysRq key, IRQ affinity,
/// PCI and filesystem knobs.
const PROC_READ_ONLY: [&std::ffi::CStr; 5] = [
    c"proc/sys",
    c"proc/sysrq-trigger",
    c"proc/irq",
    c"proc/bus",
    c"proc/fs",
];

/// Parts of `/proc` hidden, as runc does (where the kernel has them): kernel memory, the
/// kernel log, key descriptions, timer and scheduler internals, ACPI, SCSI and sound
/// devices. Files get an unopenable read-only bind of `/dev/null` (`nodev`), directories an
/// empty read-only tmpfs.
const PROC_MASKED_FILES: [&std::ffi::CStr; 7] = [
    c"proc/kcore",
    c"proc/kmsg",
    c"proc/keys",
    c"proc/timer_list",
    c"proc/timer_stats",
    c"proc/sched_debug",
    c"proc/latency_stats",
];
const PROC_MASKED_DIRS: [&std::ffi::CStr; 3] = [c"proc/acpi", c"proc/scsi", c"proc/asound"];

/// Makes [`PROC_READ_ONLY`] read-only and masks [`PROC_MASKED_FILES`] and
/// [`PROC_MASKED_DIRS`] in the fresh `/proc` (relative to the new root, before pivot_root:
/// the file mask is the host's `/dev/null`). What this kernel lacks is skipped. The first
/// mask of each kind is mounted, the others bound from it (a bind keeps its flags).
fn protect_proc() -> Result<(), Error> {
    let err = |path: &std::ffi::CStr, e| {
        Error::setup(
            format!("cannot protect `{}`", sandbox_path(path).display()),
            e,
        )
    };
    let absent = |e: &io::Error| e.raw_os_error() == Some(libc::ENOENT);
    for path in PROC_READ_ONLY {
        match sys::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None) {
            Err(e) if absent(&e) => continue,
            r => r.map_err(|e| err(path, e))?,
        }
        let flags = READ_ONLY_BIND | libc::MS_NODEV | libc::MS_NOEXEC;
        sys::mount(None, path, None, flags, None).map_err(|e| err(path, e))?;
    }
    let mut first: Option<&std::ffi::CStr> = None;
    for path in PROC_MASKED_FILES {
        let bound = match first {
            Some(mask) => sys::mount(Some(mask), path, None, libc::MS_BIND, None),
            None => {
                sys::mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None).and_then(|()| {
                    let flags = READ_ONLY_BIND | libc::MS_NODEV | libc::MS_NOEXEC;
                    sys::mount(None, path, None, flags, None)
                })
            }
        };
        match bound {
            Err(e) if absent(&e) => {}
            r => {
                r.map_err(|e| err(path, e))?;
                first = first.or(Some(path));
            }
        }
    }
    let mut first: Option<&std::ffi::CStr> = None;
    for path in PROC_MASKED_DIRS {
        let mounted = match first {
            Some(mask) => sys::mount(Some(mask), path, None, libc::MS_BIND, None),
            None => sys::mount(
                Some(c"tmpfs"),
                path,
                Some(c"tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(c"mode=0555"),
            ),
        };
        match mounted {
            Err(e) if absent(&e) => {}
            r => {
                r.map_err(|e| err(path, e))?;
                first = first.or(Some(path));
            }
        }
    }
    Ok(())
}

/// What a bind source turned out to be.
enum Source {
    /// A directory or file, bound through `/proc/self/fd/N` of an `O_PATH` descriptor.
    Mount { fd: OwnedFd, dir: bool },
    /// A symbolic link, recreated with this text.
    Link(CString),
}

/// Where pid 1 gets the spec's part of the run.
pub enum SpecFrom {
    /// The host side prepared it before the clone.
    Ready(Box<Plan>),
    /// The host side forwards the validated spec on this pipe once it has it (`--warm`):
    /// pid 1 prepares everything that does not depend on it in the meantime.
    Pipe(OwnedFd),
}

/// The whole life of pid 1. Never returns: exits with the builder's status or a setup code.
///
/// Must be the first code run in the cloned child. `death_pipe` is the read end of a pipe
/// whose write end only the helper's host process holds. With `status`, the status record
/// (the builder's status or pid 1's failure, see [`crate::Status`]) is also written there
/// once nothing else runs in the sandbox (see [`report_status`]), before pid 1's own exit
/// starts tearing the namespaces down.
pub fn run(base: &Base, spec: SpecFrom, death_pipe: OwnedFd, status: Option<OwnedFd>) -> ! {
    let result = prepare(base, death_pipe).and_then(|(covered, death_pipe)| {
        let plan = match spec {
            SpecFrom::Ready(plan) => *plan,
            SpecFrom::Pipe(pipe) => {
                let fd = pipe.as_raw_fd();
                let bytes = sys::read_all(fd, crate::spec::MAX_SPEC_BYTES)
                    .map_err(|source| Error::ReadSpec { fd, source })?;
                let spec = crate::Spec::from_json(&bytes).map_err(Error::Spec)?;
                Plan::new(&spec, base)
            }
        };
        enter(base, &plan, covered, death_pipe, status.as_ref())?;
        spawn_and_reap(&plan)
    });
    let (code, record) = match result {
        Ok(code) => (code, crate::Status::Builder(code)),
        Err(e) => {
            crate::report(&e);
            (e.exit_code(), crate::helper_status(&e))
        }
    };
    if let Some(status) = status {
        report_status(&status, &record.encode());
    }
    // SAFETY: _exit is always safe; pid 1 exiting makes the kernel kill the namespace.
    unsafe { libc::_exit(i32::from(code)) }
}

/// Everything that does not depend on the spec: ids, the new root with `/proc` and `/dev`,
/// loopback, the bounding set. Returns a descriptor of the directory the new root covers, and
/// as root the death pipe (see [`switch_ids`]).
fn prepare(base: &Base, death_pipe: OwnedFd) -> Result<(OwnedFd, Option<OwnedFd>), Error> {
    // 1. Die with the host process, and close the race where it died before this line: its
    //    write end of the pipe is then closed and poll reports POLLHUP at once. As root, the
    //    host side writes our id maps and then one byte on the pipe: wait for it (end of
    //    file instead: the host side is gone).
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        .map_err(|e| Error::setup("cannot set the parent-death signal", e))?;
    let host_gone = if base.switch_to.is_some() {
        let mut go = 0u8;
        loop {
            // SAFETY: `go` is writable for one byte.
            let n = unsafe { libc::read(death_pipe.as_raw_fd(), (&raw mut go).cast(), 1) };
            if n != -1 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break n != 1;
            }
        }
    } else {
        let mut pfd = libc::pollfd {
            fd: death_pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd; a zero timeout does not block.
        unsafe { libc::poll(&mut pfd, 1, 0) != 0 }
    };
    if host_gone {
        // SAFETY: _exit is always safe; the host side is gone, nobody waits for a status.
        unsafe { libc::_exit(i32::from(crate::EXIT_SETUP_FAILED)) }
    }
    let death_pipe = base.switch_to.is_some().then_some(death_pipe);

    // 2. Signals: the host process blocked them for its own signalfd; pid 1 of a PID
    //    namespace receives no default-action signal from inside anyway.
    // SAFETY: an all-clear mask is valid; sigprocmask only reads `set`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }

    // 3. User namespace id maps: a single id each, the caller's. `setgroups` must be denied
    //    before an unprivileged process may write `gid_map`. Host `/proc` is still the one
    //    mounted. As root, the host side wrote them (step 1): the builder's ids map to an
    //    unprivileged host id, and root's own stays mapped as 0 for the setup until step 16.
    let userns = |step: &'static str, source: io::Error| Error::UserNamespace {
        step,
        source,
        hint: user_namespace_hint(),
    };
    if base.switch_to.is_none() {
        match sys::write_file(c"/proc/self/setgroups", b"deny") {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                return Err(userns("writing `/proc/self/setgroups`", e));
            }
            _ => {}
        }
        sys::write_file(c"/proc/self/uid_map", &base.uid_map)
            .map_err(|e| userns("writing `/proc/self/uid_map`", e))?;
        sys::write_file(c"/proc/self/gid_map", &base.gid_map)
            .map_err(|e| userns("writing `/proc/self/gid_map`", e))?;
    }

    // 4. Make every mount private so nothing we do propagates back to the host. EPERM here
    //    means the namespace has no capabilities (AppArmor's userns restriction).
    sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(|e| userns("making `/` private", e))?;

    // 5. The builder's stdin, when the host side's stdin carried the spec.
    if base.null_stdin {
        let null = sys::open(c"/dev/null", libc::O_RDONLY)
            .map_err(|e| Error::setup("cannot open `/dev/null`", e))?;
        // SAFETY: both descriptors are open; dup2 replaces stdin atomically.
        sys::cvt(unsafe { libc::dup2(null.as_raw_fd(), 0) })
            .map_err(|e| Error::setup("cannot redirect stdin", e))?;
    }

    // 6. A fresh tmpfs as the new root, populated from inside (cwd = its root). It covers a
    //    host directory (in this private namespace only): bind sources under that directory
    //    are opened later through `covered`, a descriptor of the directory underneath.
    let mountpoint = &base.root_mountpoint;
    let covered = sys::open(mountpoint, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| {
        Error::setup(
            format!("cannot open `{}`", base.root_mountpoint_path.display()),
            e,
        )
    })?;
    sys::mount(
        Some(c"tmpfs"),
        mountpoint,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(c"mode=0755"),
    )
    .map_err(|e| {
        Error::setup(
            format!(
                "cannot mount the root tmpfs on `{}`",
                base.root_mountpoint_path.display()
            ),
            e,
        )
    })?;
    sys::chdir(mountpoint).map_err(|e| Error::setup("cannot enter the new root", e))?;

    // 7. A fresh /proc for the new PID namespace. The kernel only allows it while a fully
    //    visible procfs exists in this mount namespace, i.e. before the old root goes. The
    //    spec cannot target `/proc` or `/dev` (reserved), so they can come before its binds.
    mkdir(c"proc", 0o555)?;
    mount_fs(
        c"proc",
        c"proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        c"",
    )?;
    protect_proc()?;

    // 8. A minimal /dev: host device nodes bound in, private shm and pts, the usual links.
    mkdir(c"dev", 0o755)?;
    //    Each node's bind is read-only: reading and writing the device works, changing the
    //    host's node (chmod, chown, utimes: "touch /dev/null") does not.
    for (host, target) in DEVICES {
        mkfile(target)?;
        let err = |e| Error::setup(format!("cannot bind `{}`", host.to_string_lossy()), e);
        sys::mount(Some(host), target, None, libc::MS_BIND, None).map_err(err)?;
        sys::mount(None, target, None, READ_ONLY_BIND | libc::MS_NOEXEC, None).map_err(err)?;
    }
    mkdir(c"dev/shm", 0o1777)?;
    mount_fs(
        c"tmpfs",
        c"dev/shm",
        libc::MS_NOSUID | libc::MS_NODEV,
        c"mode=1777",
    )?;
    mkdir(c"dev/pts", 0o755)?;
    mount_fs(
        c"devpts",
        c"dev/pts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        c"newinstance,ptmxmode=0666,mode=0620",
    )?;
    for (to, path) in [
        (c"pts/ptmx", c"dev/ptmx"),
        (c"/proc/self/fd", c"dev/fd"),
        (c"/proc/self/fd/0", c"dev/stdin"),
        (c"/proc/self/fd/1", c"dev/stdout"),
        (c"/proc/self/fd/2", c"dev/stderr"),
    ] {
        symlink(to, path)?;
    }

    // 9. Loopback (new network namespace only).
    if base.new_net {
        loopback_up()?;
    }

    // 10. The bounding set: what no program executed from here on can ever gain. Pid 1 keeps
    //     its effective capabilities for the mounts still to come.
    drop_bounding_set()?;
    Ok((covered, death_pipe))
}

/// The spec's part: its binds, tmpfs and symlinks, hostname, then `pivot_root` and the
/// confinement. Keeps `status` (close-on-exec) open for [`report_status`].
fn enter(
    base: &Base,
    plan: &Plan,
    covered: OwnedFd,
    death_pipe: Option<OwnedFd>,
    status: Option<&OwnedFd>,
) -> Result<(), Error> {
    // 11. Open every bind source. O_NOFOLLOW: a source that is a symlink is recreated as a
    //     symlink. Sources under the covered directory are reached through it.
    let sources = plan
        .binds
        .iter()
        .map(|b| {
            let from = b.under_root.as_ref().map(|rel| (&covered, rel.as_c_str()));
            open_source(&b.source, from, &b.source_path, b.writable)
        })
        .collect::<Result<Vec<_>, _>>()?;
    drop(covered);

    // 12. The spec's binds, tmpfs and symlinks, in order (validated: none hides an earlier one).
    let mut sources = sources.into_iter();
    for (step, parents) in plan.steps.iter().zip(&plan.step_parents) {
        for parent in parents {
            mkdir(parent, 0o755)?;
        }
        match step {
            Step::Bind { index } => {
                let bind = &plan.binds[*index];
                // `sources` was built from `plan.binds` in the same order as the Bind steps.
                let Some(source) = sources.next() else {
                    return Err(Error::setup(
                        "internal error: bind sources out of step",
                        io::Error::from_raw_os_error(libc::EINVAL),
                    ));
                };
                match source {
                    Source::Link(to) => symlink(&to, &bind.target)?,
                    Source::Mount { fd, dir } => {
                        bind_fd(&fd, dir, &bind.target, bind.writable)?;
                    }
                }
            }
            Step::Tmpfs { target } => {
                mkdir(target, 0o755)?;
                mount_fs(
                    c"tmpfs",
                    target,
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"mode=1777",
                )?;
            }
            Step::Symlink { path, to } => {
                symlink(to, path)?;
            }
        }
    }

    // 13. Hostname (UTS namespace).
    // SAFETY: `hostname` is readable for its length (validated: 1 to 64 bytes).
    sys::cvt(unsafe { libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) })
        .map_err(|e| Error::setup("cannot set the hostname", e))?;

    // 14. Freeze the root: only binds marked writable, tmpfs entries and /dev/shm stay writable.
    sys::mount(
        None,
        c".",
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(|e| Error::setup("cannot make the new root read-only", e))?;

    // 15. pivot_root into the new root, stacking the old root on it, then detach the old root.
    // SAFETY: both arguments are NUL-terminated; cwd is the new root, a mount point.
    sys::cvt_long(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) })
        .map_err(|e| Error::setup("cannot pivot_root into the new root", e))?;
    // SAFETY: "." is NUL-terminated; MNT_DETACH lazily unmounts the whole old tree.
    sys::cvt(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })
        .map_err(|e| Error::setup("cannot detach the old root", e))?;
    sys::chdir(&plan.cwd).map_err(|e| {
        Error::setup(
            format!(
                "cannot enter the working directory `{}`",
                plan.cwd_path.display()
            ),
            e,
        )
    })?;

    // 16. No descriptor but stdio crosses into the builder (all of ours are O_CLOEXEC, but
    //     the caller may have leaked some). The status pipe stays for pid 1 (close-on-exec).
    //     As root, pid 1 first becomes the builder's uid and gid (the unprivileged host id):
    //     leaving uid 0 clears its capabilities, and nothing in the sandbox is host root.
    if let (Some(ids), Some(death_pipe)) = (base.switch_to, death_pipe) {
        switch_ids(ids, death_pipe)?;
    }
    close_extra_fds(status.map(AsRawFd::as_raw_fd));

    // 17. Confinement, in the only order that works: no_new_privs (lets an unprivileged
    //     process install seccomp), drop the remaining capabilities, then the seccomp filters.
    //     Pid 1 is confined too: the builder can reach nothing through it. Non-dumpable: the
    //     builder cannot ptrace or read it.
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
        .map_err(|e| Error::setup("cannot set no_new_privs", e))?;
    drop_capabilities()?;
    for filter in &base.filters {
        seccompiler::apply_filter(filter).map_err(|e| {
            Error::setup(
                "cannot install the seccomp filter",
                io::Error::other(e.to_string()),
            )
        })?;
    }
    sys::prctl(libc::PR_SET_DUMPABLE, 0).map_err(|e| Error::setup("cannot clear dumpable", e))?;
    Ok(())
}

/// Writes the status `record` to `status` once the sandbox is empty: every process left
/// (daemons of the builder) is killed and reaped first, so the caller may take the outputs
/// as soon as it reads the record, and stdout/stderr are closed, so the caller's log reaches
/// its end once the host side has closed its copies too. Then pid 1's exit (the
/// namespaces' teardown) is off the caller's path. One write of at most `PIPE_BUF` bytes
/// (see [`crate::Status`]): the host side reads the whole record at once.
fn report_status(status: &OwnedFd, record: &[u8]) {
    // SAFETY: kill(-1) from pid 1 signals every other process of its PID namespace; waitpid
    // gets a valid out pointer; closing stdout/stderr only affects this process; `status`
    // is an open pipe and `record` readable for its length.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        loop {
            let mut st = 0;
            if libc::waitpid(-1, &mut st, libc::__WALL) == -1
                && *libc::__errno_location() != libc::EINTR
            {
                break; // ECHILD: nothing else runs in the namespace.
            }
        }
        libc::close(1);
        libc::close(2);
        libc::write(status.as_raw_fd(), record.as_ptr().cast(), record.len());
    }
}

/// As root (see [`crate::ids`]): pid 1 gives up root's id for the builder's `(uid, gid)`,
/// mapped to the unprivileged host id, so nothing in the sandbox is host root. Leaving uid 0
/// clears pid 1's capabilities, so this comes after every mount. A change of ids also clears
/// the parent-death signal: it is set again, and `death_pipe` (whose write end only the host
/// side holds) tells whether the host side died before that.
fn switch_ids((uid, gid): (u32, u32), death_pipe: OwnedFd) -> Result<(), Error> {
    // SAFETY: plain id changes; both ids are mapped (the host side wrote the maps).
    sys::cvt(unsafe { libc::setresgid(gid, gid, gid) })
        .map_err(|e| Error::setup(format!("cannot change to gid {gid}"), e))?;
    // SAFETY: as above.
    sys::cvt(unsafe { libc::setresuid(uid, uid, uid) })
        .map_err(|e| Error::setup(format!("cannot change to uid {uid}"), e))?;
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        .map_err(|e| Error::setup("cannot set the parent-death signal", e))?;
    let mut pfd = libc::pollfd {
        fd: death_pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd; a zero timeout does not block.
    if unsafe { libc::poll(&mut pfd, 1, 0) } != 0 {
        // SAFETY: _exit is always safe; the host side is gone, nobody waits for a status.
        unsafe { libc::_exit(i32::from(crate::EXIT_SETUP_FAILED)) }
    }
    Ok(())
}

/// Opens a bind source with `O_PATH | O_NOFOLLOW` and classifies it.
///
/// Must run in the mount namespace of the bind (a bind needs a source mount in the caller's
/// mount namespace). `under`: the covered directory and the source relative to it.
fn open_source(
    source: &CString,
    under: Option<(&OwnedFd, &std::ffi::CStr)>,
    path: &std::path::Path,
    writable: bool,
) -> Result<Source, Error> {
    let err = |e| Error::OpenSource {
        path: path.to_owned(),
        source: e,
    };
    let flags = libc::O_PATH | libc::O_NOFOLLOW;
    let fd = match under {
        Some((dir, rel)) => sys::openat(dir, rel, flags),
        None => sys::open(source, flags),
    }
    .map_err(err)?;
    let st = sys::fstat(&fd).map_err(err)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Ok(Source::Mount { fd, dir: true }),
        libc::S_IFREG => Ok(Source::Mount { fd, dir: false }),
        libc::S_IFLNK if writable => Err(Error::WritableSymlink {
            path: path.to_owned(),
        }),
        libc::S_IFLNK => {
            let text = sys::readlink_fd(&fd).map_err(err)?;
            Ok(Source::Link(CString::new(text).unwrap_or_default()))
        }
        _ => Err(Error::SourceKind {
            path: path.to_owned(),
        }),
    }
}

/// Binds the source behind `fd` at `target` (relative to the new root), recursively, then
/// makes it `nosuid`, `nodev` and, unless writable, read-only.
///
/// Runs with cwd = new root, before pivot_root (the source path goes through host /proc).
fn bind_fd(fd: &OwnedFd, dir: bool, target: &CString, writable: bool) -> Result<(), Error> {
    if dir {
        mkdir(target, 0o755)?;
    } else {
        mkfile(target)?;
    }
    let source = sys::proc_self_fd(fd);
    sys::mount(
        Some(source.as_c_str()),
        target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| {
        Error::setup(
            format!("cannot bind onto `{}`", sandbox_path(target).display()),
            e,
        )
    })?;
    restrict(target, writable).map_err(|e| {
        Error::setup(
            format!(
                "cannot make `{}` {}",
                sandbox_path(target).display(),
                if writable { "nosuid" } else { "read-only" }
            ),
            e,
        )
    })
}

/// Sets `nosuid`, `nodev` (and `ro` unless `writable`) on the bind at `target` and every mount
/// below it.
///
/// Uses `mount_setattr(AT_RECURSIVE)` (Linux 5.12); on older kernels falls back to a
/// bind remount of the top mount that keeps the flags the kernel locked on the source (it
/// refuses, with EPERM, to clear `noexec`, `nosuid`... inherited from a more privileged
/// namespace), read from `statvfs`.
fn restrict(target: &CString, writable: bool) -> io::Result<()> {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let mut set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if !writable {
        set |= MOUNT_ATTR_RDONLY;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `target` is NUL-terminated, `attr` is a valid `struct mount_attr` of the size
    // passed; the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match sys::cvt_long(ret) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
        r => return r.map(drop),
    }
    // SAFETY: `statvfs` is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `target` is NUL-terminated, `st` a valid out pointer.
    sys::cvt(unsafe { libc::statvfs(target.as_ptr(), &mut st) })?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV;
    if !writable {
        flags |= libc::MS_RDONLY;
    }
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    sys::mount(None, target, None, flags, None)
}

fn mkdir(path: &std::ffi::CStr, mode: libc::mode_t) -> Result<(), Error> {
    sys::mkdir(path, mode).map_err(|e| {
        Error::setup(
            format!("cannot create directory `{}`", sandbox_path(path).display()),
            e,
        )
    })
}

fn mkfile(path: &std::ffi::CStr) -> Result<(), Error> {
    sys::mkfile(path).map_err(|e| {
        Error::setup(
            format!("cannot create file `{}`", sandbox_path(path).display()),
            e,
        )
    })
}

fn symlink(to: &std::ffi::CStr, path: &std::ffi::CStr) -> Result<(), Error> {
    sys::symlink(to, path).map_err(|e| {
        Error::setup(
            format!("cannot create symlink `{}`", sandbox_path(path).display()),
            e,
        )
    })
}

fn mount_fs(
    fstype: &std::ffi::CStr,
    target: &std::ffi::CStr,
    flags: libc::c_ulong,
    data: &std::ffi::CStr,
) -> Result<(), Error> {
    sys::mount(Some(fstype), target, Some(fstype), flags, Some(data)).map_err(|e| {
        Error::setup(
            format!(
                "cannot mount {} on `{}`",
                fstype.to_string_lossy(),
                sandbox_path(target).display()
            ),
            e,
        )
    })
}

/// Brings `lo` up with SIOCSIFFLAGS on a socket of the new network namespace (the kernel
/// then gives it 127.0.0.1 and ::1). Needs CAP_NET_ADMIN in the namespace: before step 14.
fn loopback_up() -> Result<(), Error> {
    let err = |e| Error::setup("cannot bring up the loopback interface `lo`", e);
    // SAFETY: plain socket(2) call; the result is checked.
    let fd =
        sys::cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
            .map_err(err)?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `ifr` is a valid ifreq naming "lo"; SIOCGIFFLAGS fills `ifru_flags`.
    sys::cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) }).map_err(err)?;
    // SAFETY: the kernel just initialised the `ifru_flags` member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: `ifr` is a valid ifreq; SIOCSIFFLAGS only reads it.
    sys::cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) }).map_err(err)?;
    Ok(())
}

/// Closes every descriptor above 2 but `keep`. After pivot_root: nothing of the host remains
/// needed.
fn close_extra_fds(keep: Option<i32>) {
    let ranges = match keep.and_then(|k| u32::try_from(k).ok()).filter(|&k| k > 2) {
        Some(k) => [(3, k - 1), (k + 1, u32::MAX)],
        None => [(3, u32::MAX), (1, 0)],
    };
    // An empty range (first > last) is skipped.
    let ok = ranges.iter().all(|&(first, last)| {
        first > last
        // SAFETY: close_range only closes descriptors; none above 2 but `keep` is used
        // after this point.
            || unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } == 0
    });
    if ok {
        return;
    }
    // Kernels before 5.9: close one by one up to the descriptor limit.
    // SAFETY: `rlim` is a valid out pointer.
    let mut rlim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `rlim` is a valid out pointer.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim) } == 0 {
        rlim.rlim_cur.min(1 << 16) as i32
    } else {
        1024
    };
    for fd in (3..max).filter(|&fd| Some(fd) != keep) {
        // SAFETY: closing a descriptor nothing uses (or that is not open) is harmless.
        unsafe { libc::close(fd) };
    }
}

/// Empties the bounding set: no program executed from here on can gain a capability. Pid 1
/// keeps its effective set (the bounding set limits only what an execve grants).
fn drop_bounding_set() -> Result<(), Error> {
    // Bounding set: one PR_CAPBSET_DROP per number until the kernel says EINVAL (past its
    // last capability). `caps::clear` would read each capability first and stop at the ones
    // it knows; this is half the system calls and covers capabilities newer than the crate.
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes an integer argument.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) && cap > 0 {
                break;
            }
            return Err(Error::setup("cannot clear the bounding capability set", e));
        }
    }
    Ok(())
}

/// Clears the ambient, inheritable, permitted and effective sets (the bounding set went in
/// [`prepare`]).
///
/// After the mounts (which need CAP_SYS_ADMIN) and with no_new_privs set.
fn drop_capabilities() -> Result<(), Error> {
    use caps::CapSet;
    let err = |set: &str, e: caps::errors::CapsError| {
        Error::setup(
            format!("cannot clear the {set} capability set"),
            io::Error::other(e.to_string()),
        )
    };
    caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| err("inheritable", e))?;
    caps::clear(None, CapSet::Effective).map_err(|e| err("effective", e))?;
    caps::clear(None, CapSet::Permitted).map_err(|e| err("permitted", e))?;
    Ok(())
}

/// Shared between pid 1 and the builder child while they share memory (CLONE_VM): the
/// child stores the errno of a failed execve here before exiting.
#[repr(C)]
struct Exec<'a> {
    plan: &'a Plan,
    errno: libc::c_int,
}

/// The builder child. Runs on its own small stack in pid 1's address space (CLONE_VM |
/// CLONE_VFORK: pid 1 is suspended until the exec), so it only makes async-signal-safe
/// system calls on data prepared in advance, and never returns into Rust code of pid 1.
extern "C" fn builder_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Exec` that `spawn_and_reap` keeps alive until this child has
    // exec'd or exited (CLONE_VFORK).
    let exec = unsafe { &mut *arg.cast::<Exec<'_>>() };
    // SAFETY: resetting a disposition and creating a session take no pointers; execve gets
    // NUL-terminated strings and null-terminated pointer arrays prepared by the Plan.
    unsafe {
        // Rust ignores SIGPIPE at startup; an ignored disposition survives execve.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // A new session: no controlling terminal, so no TIOCSTI on the caller's tty.
        libc::setsid();
        libc::execve(
            exec.plan.builder.as_ptr(),
            exec.plan.argv_ptrs.as_ptr(),
            exec.plan.envp_ptrs.as_ptr(),
        );
        exec.errno = *libc::__errno_location();
        libc::_exit(127)
    }
}

/// Starts the builder as pid 2 and reaps until it exits; returns its status as an exit code.
///
/// After [`setup`]: the builder inherits the confinement (seccomp, no capabilities) and cwd.
fn spawn_and_reap(plan: &Plan) -> Result<u8, Error> {
    // Left uninitialised: zeroing it would fault in all 16 pages (copy-on-write after the
    // clone that created pid 1); the child touches only the one or two it uses.
    let mut stack: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Memory and process limits, inherited by the builder (after the stack's allocation).
    crate::limits::apply(plan)?;
    let mut exec = Exec { plan, errno: 0 };
    // SAFETY: the allocation is writable for its capacity and only ever used as raw stack
    // memory by the child; its top (stacks grow down on the supported arches) is 16-byte
    // aligned; `exec` outlives the child's use of it because CLONE_VFORK suspends us until
    // the child has exec'd or exited.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.capacity()) as usize & !15;
        libc::clone(
            builder_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut exec as *mut Exec<'_>).cast(),
        )
    };
    let pid = sys::cvt(pid).map_err(|e| Error::setup("cannot start the builder", e))?;
    drop(stack);
    if exec.errno != 0 {
        let mut status = 0;
        // SAFETY: reaping our own child; `status` is a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(exec_error(plan, exec.errno));
    }
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer; -1 reaps any child, including orphans
        // re-parented to us as pid 1.
        let got = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if got == pid {
            return crate::limits::check(plan, status_code(status));
        }
        if got == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(Error::setup("cannot wait for the builder", e));
            }
        }
    }
}

/// A wait status as a shell reports it: the exit code, or 128 + the signal number.
pub fn status_code(status: libc::c_int) -> u8 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else if libc::WIFSIGNALED(status) {
        crate::EXIT_SIGNAL_BASE.saturating_add(libc::WTERMSIG(status) as u8)
    } else {
        crate::EXIT_SETUP_FAILED
    }
}

/// Classifies a failed execve of the builder.
fn exec_error(plan: &Plan, errno: libc::c_int) -> Error {
    let path = plan.builder_path.clone();
    match errno {
        libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG => {
            // SAFETY: `builder` is NUL-terminated.
            let exists = unsafe { libc::access(plan.builder.as_ptr(), libc::F_OK) } == 0;
            Error::BuilderNotFound {
                path,
                interpreter: exists && errno == libc::ENOENT,
            }
        }
        libc::EACCES | libc::ENOEXEC | libc::EPERM | libc::EISDIR | libc::ETXTBSY => {
            Error::BuilderNotExecutable {
                path,
                source: io::Error::from_raw_os_error(errno),
            }
        }
        _ => Error::setup(
            format!("cannot execute builder `{}`", path.display()),
            io::Error::from_raw_os_error(errno),
        ),
    }
}

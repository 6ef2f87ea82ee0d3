//! The helper's host-side process: reads the spec, clones the sandbox's init into fresh
//! namespaces, and supervises it (time and silence limits, cancellation signals, exit
//! status).
//!
//! With a silence limit, and always for a `--warm` sandbox (it is cloned before the spec
//! says whether it has one), the builder's stdout and stderr are pipes of ours: the host
//! side copies what comes to its own stdout and stderr and notes when the last byte came.
//!
//! Single-threaded: signals are blocked and consumed synchronously through a `signalfd`, so no
//! handler ever runs. Nothing here follows a path the builder could have written.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{Error, user_namespace_hint};
use crate::exit::EXIT_SIGNAL_BASE;
use crate::init::SpecFrom;
use crate::plan::{Base, Plan};
use crate::spec::{DEFAULT_GID, DEFAULT_UID, MAX_SPEC_BYTES, Network, Spec, Stdin};
use crate::sys;

/// Signals that cancel the run: the sandbox is killed and the helper exits 128 + signal.
const CANCEL: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The command line: `bramble-sandbox [--spec-fd N] [--warm] [--status-fd N] [--as-caller]`.
#[derive(Debug, Default)]
struct Args {
    /// Where the spec comes from (0: stdin).
    spec_fd: i32,
    /// Set up the namespaces and the spec-independent part of the root before reading the
    /// spec (see the crate doc): a caller starts the helper early and sends the spec when
    /// the build is ready. The spec must then keep the defaults the early part assumed:
    /// network `none`, stdin `null`, the default uid and gid.
    warm: bool,
    /// Where to write the exit code (one byte) as soon as the sandbox is empty, before its
    /// namespaces are torn down; may be the spec's descriptor if that is a socket.
    status_fd: Option<i32>,
    /// As root, keep the caller's ids for the sandbox instead of an unprivileged id from
    /// [`crate::ids`] (`bramble run`/`bramble shell`: the user's own program; never a build).
    as_caller: bool,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = std::env::args_os().skip(1);
    let mut parsed = Args::default();
    let fd_value = |flag: &str, value: Option<std::ffi::OsString>| {
        value
            .and_then(|v| v.to_str().and_then(|s| s.parse::<i32>().ok()))
            .filter(|&n| n >= 0)
            .ok_or_else(|| Error::Usage {
                message: format!("`{flag}` needs a descriptor number"),
            })
    };
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--spec-fd") => parsed.spec_fd = fd_value("--spec-fd", args.next())?,
            Some("--status-fd") => parsed.status_fd = Some(fd_value("--status-fd", args.next())?),
            Some("--warm") => parsed.warm = true,
            Some("--as-caller") => parsed.as_caller = true,
            _ => {
                return Err(Error::Usage {
                    message: format!("unexpected argument `{}`", arg.to_string_lossy()),
                });
            }
        }
    }
    Ok(parsed)
}

/// Reads, parses and validates the spec, and resolves its sources' directories.
fn read_spec(fd: i32) -> Result<Option<Spec>, Error> {
    let bytes =
        sys::read_all(fd, MAX_SPEC_BYTES).map_err(|source| Error::ReadSpec { fd, source })?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut spec = Spec::from_json(&bytes).map_err(Error::Spec)?;
    crate::plan::canonical_sources(&mut spec);
    Ok(Some(spec))
}

/// A pipe, both ends close-on-exec: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out array of two descriptors.
    sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
        .map_err(|e| Error::setup("cannot create a pipe", e))?;
    // SAFETY: pipe2 returned two fresh descriptors that nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Where the [`crate::Status`] record goes (`--status-fd`): sent at most once.
struct StatusFd(Option<OwnedFd>);

impl StatusFd {
    fn send(&mut self, record: &[u8]) {
        if let Some(fd) = self.0.take() {
            let _ = sys::write_all(&fd, record);
        }
    }
}

/// The whole helper. Returns the exit code; errors are reported by the caller.
pub fn run() -> Result<u8, Error> {
    // Die with the caller. PDEATHSIG fires when the *thread* that spawned us exits: callers
    // spawn from a thread that outlives the run. If the caller is already gone, stop here.
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        .map_err(|e| Error::setup("cannot set the parent-death signal", e))?;
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Ok(EXIT_SIGNAL_BASE + libc::SIGKILL as u8);
    }

    let args = parse_args()?;
    // SAFETY: geteuid/getegid have no preconditions.
    let host = unsafe { (libc::geteuid(), libc::getegid()) };
    // A copy of the status descriptor: the original may be stdin, which gets replaced.
    let status = args
        .status_fd
        .map(|fd| {
            // SAFETY: F_DUPFD_CLOEXEC only reads `fd`; the result is checked.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            sys::cvt(copy)
                // SAFETY: fcntl returned a fresh descriptor that nobody else owns.
                .map(|copy| unsafe { OwnedFd::from_raw_fd(copy) })
                .map_err(|e| Error::Usage {
                    message: format!("`--status-fd {fd}` is not an open descriptor ({e})"),
                })
        })
        .transpose()?;
    let mut status = StatusFd(status);
    let result = run_with(&args, host, &mut status);
    // A failure of the helper's own, known to the caller by its record.
    if let Err(e) = &result {
        status.send(&crate::helper_status(e).encode());
    }
    result
}

/// [`run`] once the command line and the status descriptor are known.
fn run_with(args: &Args, host: (u32, u32), status: &mut StatusFd) -> Result<u8, Error> {
    // As root, the builder gets an unprivileged host id (see `ids`), and nothing in the
    // sandbox keeps root's supplementary groups.
    let sandbox_id = match host.0 == 0 && !args.as_caller {
        true => {
            let range = crate::IdRange::from_env().map_err(|message| Error::Usage { message })?;
            // SAFETY: getpid has no preconditions.
            Some(range.host_id(unsafe { libc::getpid() } as u32))
        }
        false => None,
    };
    if sandbox_id.is_some() {
        // SAFETY: an empty list needs no pointer.
        match sys::cvt(unsafe { libc::setgroups(0, std::ptr::null()) }) {
            // A user namespace with `setgroups` denied (root of some containers): the groups
            // stay, as an ordinary caller's do.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            r => r
                .map(drop)
                .map_err(|e| Error::setup("cannot clear the supplementary groups", e))?,
        }
    }

    // Block the signals we wait for *before* the child exists, so none is lost; the child
    // unblocks them first thing.
    // SAFETY: `set` is initialised by sigemptyset before use; sigprocmask only reads it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in CANCEL.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };

    if !args.warm {
        let spec = read_spec(args.spec_fd)?.ok_or_else(|| {
            Error::Spec(crate::SpecError::Parse {
                message: "no spec was given".into(),
            })
        })?;
        if args.spec_fd != 0 {
            // SAFETY: the caller handed us this descriptor for the spec only.
            drop(unsafe { OwnedFd::from_raw_fd(args.spec_fd) });
        }
        match spec.stdin {
            Stdin::Inherit if args.spec_fd == 0 => return Err(Error::StdinTaken),
            Stdin::Inherit => {}
            Stdin::Null => {
                // The host's /dev/null is the same device the sandbox sees.
                let null = sys::open(c"/dev/null", libc::O_RDONLY)
                    .map_err(|e| Error::setup("cannot open `/dev/null`", e))?;
                // SAFETY: both descriptors are open; dup2 replaces stdin atomically.
                sys::cvt(unsafe { libc::dup2(null.as_raw_fd(), 0) })
                    .map_err(|e| Error::setup("cannot redirect stdin", e))?;
            }
        }
        let base = Base::new(
            host,
            (spec.uid, spec.gid),
            spec.network == Network::None,
            false,
            sandbox_id,
        )?;
        let plan = Plan::new(&spec, &base);
        let sandbox = Sandbox::start(
            &base,
            SpecFrom::Ready(Box::new(plan)),
            status.0.is_some(),
            None,
            spec.silence_limit_ms.is_some(),
        )?;
        return sandbox.supervise(&set, limits(&spec), status);
    }

    // Warm: the namespaces first, then the spec.
    let base = Base::new(host, (DEFAULT_UID, DEFAULT_GID), true, true, sandbox_id)?;
    let (spec_read, spec_write) = pipe()?;
    let mut sandbox = Sandbox::start(
        &base,
        SpecFrom::Pipe(spec_read),
        status.0.is_some(),
        Some(&spec_write),
        true,
    )?;
    let spec = match read_spec(args.spec_fd).and_then(|spec| {
        spec.map(|spec| warm_compatible(&spec).map(|()| spec))
            .transpose()
    }) {
        Ok(Some(spec)) => spec,
        // No spec: the caller did not need this sandbox after all.
        Ok(None) => {
            kill_and_reap(sandbox.pid);
            return Ok(0);
        }
        Err(e) => {
            kill_and_reap(sandbox.pid);
            sandbox.drain();
            return Err(e);
        }
    };
    let json = spec.to_json();
    // A pid 1 that failed early has closed its end: its status below tells why.
    let _ = sys::write_all(&spec_write, json.as_bytes());
    drop(spec_write);
    sandbox.supervise(&set, limits(&spec), status)
}

/// The time and silence limits of a run, as the supervisor checks them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// When the time limit is reached, and the limit (ms).
    deadline: Option<(Instant, u64)>,
    /// The silence limit (ms).
    silence_ms: Option<u64>,
}

fn limits(spec: &Spec) -> Limits {
    Limits {
        deadline: spec
            .time_limit_ms
            .map(|ms| (Instant::now() + Duration::from_millis(ms), ms)),
        silence_ms: spec.silence_limit_ms,
    }
}

/// Milliseconds for `poll`, rounded up (so the limit has passed when poll times out).
fn poll_ms(left: Duration) -> i32 {
    i32::try_from(left.as_millis() + u128::from(!left.subsec_nanos().is_multiple_of(1_000_000)))
        .unwrap_or(i32::MAX)
}

/// A warm sandbox was set up with the defaults; refuses a spec that needs others.
fn warm_compatible(spec: &Spec) -> Result<(), Error> {
    let differs = if spec.network != Network::None {
        Some("`network` other than `none`")
    } else if spec.stdin != Stdin::Null {
        Some("`stdin` other than `null`")
    } else if (spec.uid, spec.gid) != (DEFAULT_UID, DEFAULT_GID) {
        Some("a uid or gid other than the defaults")
    } else {
        None
    };
    match differs {
        Some(what) => Err(Error::Usage {
            message: format!("a `--warm` sandbox cannot run a spec with {what}"),
        }),
        None => Ok(()),
    }
}

/// Pid 1 of a sandbox, as seen from the host side.
struct Sandbox {
    pid: libc::pid_t,
    /// Our end of the pipe pid 1 polls to notice our death.
    _death_write: OwnedFd,
    /// Where pid 1 reports its exit code early (with `--status-fd`).
    status_read: Option<OwnedFd>,
    /// The builder's stdout and stderr when we relay them.
    relay: Option<Relay>,
}

/// The read ends of the pipes that are the sandbox's stdout and stderr (each `None` once at
/// its end), and when a byte last came.
struct Relay {
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    last: Instant,
}

impl Relay {
    /// Copies what is ready on the pipe of fd `to` (1 or 2) to our own `to`; with `drain`,
    /// everything until the pipe's end (every writer is gone). A reader that went away loses
    /// the output, not the run.
    fn forward(&mut self, to: i32, drain: bool) {
        let slot = if to == 1 {
            &mut self.out
        } else {
            &mut self.err
        };
        let Some(fd) = slot.as_ref() else {
            return;
        };
        let mut buf = [0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.last = Instant::now();
                let _ = sys::write_all(&to, &buf[..n as usize]);
                if drain {
                    continue;
                }
                return;
            }
            if n == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            *slot = None; // end of file, or an error that would repeat
            return;
        }
    }
}

impl Sandbox {
    /// Clones pid 1 into fresh namespaces; it runs [`crate::init::run`].
    /// `host_only`: descriptors pid 1 must not keep (the write end of its spec pipe).
    /// `relay`: make the builder's stdout and stderr pipes of ours (see [`Relay`]).
    fn start(
        base: &Base,
        spec: SpecFrom,
        early_status: bool,
        host_only: Option<&OwnedFd>,
        relay: bool,
    ) -> Result<Sandbox, Error> {
        // The child polls the read end right after setting its own PDEATHSIG: if we died in
        // between, our write end is closed and it exits.
        let (death_read, death_write) = pipe()?;
        let (status_read, status_write) = match early_status {
            true => {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            }
            false => (None, None),
        };
        let pipes = match relay {
            true => Some((pipe()?, pipe()?)),
            false => None,
        };
        let mut flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        if base.new_net {
            flags |= libc::CLONE_NEWNET;
        }
        // clone(2) without a stack behaves like fork(2) with namespace flags: the child is
        // pid 1 of the new PID namespace and already inside all the others. One process
        // fewer than unshare(2) + fork(2), and /proc can be mounted for the new PID namespace
        // directly.
        // SAFETY: raw clone with a null stack duplicates this single-threaded process; the
        // child only runs `init::run`, which never returns.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if pid == 0 {
            drop(death_write);
            drop(status_read);
            if let Some(((out_read, out_write), (err_read, err_write))) = pipes {
                // SAFETY: dup2 replaces this child's stdout and stderr with the pipes' write
                // ends (the copies are not close-on-exec); the originals are closed below.
                unsafe {
                    libc::dup2(out_write.as_raw_fd(), 1);
                    libc::dup2(err_write.as_raw_fd(), 2);
                }
                drop((out_read, out_write, err_read, err_write));
            }
            if let Some(fd) = host_only {
                // SAFETY: closing our copy of a descriptor the host side keeps; nothing in
                // this process uses it (the OwnedFd is never dropped here: init never returns).
                unsafe { libc::close(fd.as_raw_fd()) };
            }
            crate::init::run(base, spec, death_read, status_write);
        }
        let pid = match sys::cvt_long(pid) {
            Ok(pid) => pid as libc::pid_t,
            Err(e) => {
                return Err(match e.raw_os_error() {
                    Some(libc::EPERM | libc::ENOSPC | libc::EUSERS | libc::EINVAL) => {
                        Error::UserNamespace {
                            step: "clone",
                            source: e,
                            hint: user_namespace_hint(),
                        }
                    }
                    _ => Error::setup("cannot create the sandbox namespaces", e),
                });
            }
        };
        // Only the sandbox writes to the pipes: their ends come once it is gone.
        let relay = pipes.map(|((out, out_write), (err, err_write))| {
            drop((out_write, err_write));
            Relay {
                out: Some(out),
                err: Some(err),
                last: Instant::now(),
            }
        });
        if base.switch_to.is_some()
            && let Err(e) = write_maps(pid, base, &death_write)
        {
            kill_and_reap(pid);
            return Err(e);
        }
        Ok(Sandbox {
            pid,
            _death_write: death_write,
            status_read,
            relay,
        })
    }

    /// Copies everything left on the relay pipes (once the sandbox is empty or gone).
    fn drain(&mut self) {
        if let Some(relay) = &mut self.relay {
            relay.forward(1, true);
            relay.forward(2, true);
        }
    }

    /// Kills the whole sandbox and passes on the output it left.
    fn kill(&mut self) {
        kill_and_reap(self.pid);
        self.drain();
    }

    /// Waits for pid 1, killing the whole sandbox (SIGKILL to its pid 1) on timeout, after
    /// the silence limit or on a cancel signal. Relays pid 1's early status to `status`
    /// (after closing our stdout and stderr, so the caller's log ends). Returns pid 1's
    /// status, which is the builder's.
    fn supervise(
        mut self,
        set: &libc::sigset_t,
        limits: Limits,
        status: &mut StatusFd,
    ) -> Result<u8, Error> {
        let deadline = limits.deadline;
        // SAFETY: `set` is a valid signal set whose signals are blocked.
        let signals =
            sys::cvt(unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })
                .map_err(|e| {
                    kill_and_reap(self.pid);
                    Error::setup("cannot create a signalfd", e)
                })?;
        // SAFETY: signalfd returned a fresh descriptor that nobody else owns.
        let signals = unsafe { OwnedFd::from_raw_fd(signals) };
        loop {
            let raw = |fd: Option<&OwnedFd>| fd.map_or(-1, AsRawFd::as_raw_fd);
            let relay = self.relay.as_ref();
            let mut fds = [
                Some(&signals),
                self.status_read.as_ref(),
                relay.and_then(|r| r.out.as_ref()),
                relay.and_then(|r| r.err.as_ref()),
            ]
            .map(|fd| libc::pollfd {
                fd: raw(fd),
                events: libc::POLLIN,
                revents: 0,
            });
            let now = Instant::now();
            let silent_until = limits
                .silence_ms
                .zip(relay)
                .map(|(ms, r)| r.last + Duration::from_millis(ms));
            let wake = match (deadline.map(|(d, _)| d), silent_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = wake.map_or(-1, |w| poll_ms(w.saturating_duration_since(now)));
            // SAFETY: `fds` is a valid array of four pollfds (a negative fd is ignored).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 4, timeout) };
            if n == -1 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                kill_and_reap(self.pid);
                return Err(Error::setup("cannot wait for the sandbox", e));
            }
            if n == 0 {
                let now = Instant::now();
                if let Some((_, limit_ms)) = deadline.filter(|(d, _)| now >= *d) {
                    self.kill();
                    return Err(Error::Timeout { limit_ms });
                }
                let silent = self
                    .relay
                    .as_ref()
                    .zip(limits.silence_ms)
                    .filter(|(r, ms)| now >= r.last + Duration::from_millis(*ms));
                if let Some((_, limit_ms)) = silent {
                    self.kill();
                    return Err(Error::Silent { limit_ms });
                }
                continue;
            }
            if let Some(relay) = &mut self.relay {
                for (i, to) in [(2, 1), (3, 2)] {
                    if fds[i].revents != 0 {
                        relay.forward(to, false);
                    }
                }
            }
            if fds[1].revents != 0 {
                self.relay_status(status);
            }
            if fds[0].revents != 0 {
                // SAFETY: `signalfd_siginfo` is plain old data; all-zero is a valid value.
                let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                let size = std::mem::size_of::<libc::signalfd_siginfo>();
                // SAFETY: `info` is writable for `size` bytes.
                let got = unsafe {
                    libc::read(
                        signals.as_raw_fd(),
                        (&mut info as *mut libc::signalfd_siginfo).cast(),
                        size,
                    )
                };
                if got != size as isize {
                    continue;
                }
                let sig = info.ssi_signo as libc::c_int;
                if CANCEL.contains(&sig) {
                    self.kill();
                    return Ok(EXIT_SIGNAL_BASE + sig as u8);
                }
                let mut st = 0;
                // SAFETY: `st` is a valid out pointer; WNOHANG never blocks.
                if unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) } == self.pid {
                    self.drain();
                    return Ok(crate::init::status_code(st));
                }
            }
        }
    }

    /// Pid 1 wrote its status record (the sandbox is empty) or died without: pass it on.
    fn relay_status(&mut self, status: &mut StatusFd) {
        let Some(read) = self.status_read.take() else {
            return;
        };
        // Pid 1 writes the whole record in one write of at most PIPE_BUF bytes.
        let mut record = [0u8; 4096];
        // SAFETY: `record` is writable for its length.
        let got = unsafe { libc::read(read.as_raw_fd(), record.as_mut_ptr().cast(), record.len()) };
        if got <= 0 {
            return; // pid 1 died without a status (killed): the exit status tells.
        }
        // The sandbox is empty: everything it wrote is in the pipes.
        self.drain();
        if status.0.is_none() {
            return;
        }
        // Our stdout and stderr are the caller's log: close them (onto /dev/null: nothing is
        // written there any more) so the log ends now, not when we exit.
        if let Ok(null) = sys::open(c"/dev/null", libc::O_WRONLY) {
            // SAFETY: both descriptors are open; dup2 replaces them atomically.
            unsafe {
                libc::dup2(null.as_raw_fd(), 1);
                libc::dup2(null.as_raw_fd(), 2);
            }
        }
        status.send(&record[..got as usize]);
    }
}

/// Root's part of the user namespace's setup (see [`crate::ids`]): writes pid 1's id maps,
/// which only a process privileged in the parent namespace may do for ids other than its
/// own, then lets pid 1 go on with one byte on `go` (pid 1 waits for it before its setup).
fn write_maps(pid: libc::pid_t, base: &Base, go: &OwnedFd) -> Result<(), Error> {
    let map = |file: &'static str, source: io::Error| Error::SandboxId {
        id: base.sandbox_id.unwrap_or_default(),
        file,
        source,
    };
    let path =
        |file: &str| std::ffi::CString::new(format!("/proc/{pid}/{file}")).unwrap_or_default();
    sys::write_file(&path("setgroups"), b"deny").map_err(|e| map("setgroups", e))?;
    sys::write_file(&path("uid_map"), &base.uid_map).map_err(|e| map("uid_map", e))?;
    sys::write_file(&path("gid_map"), &base.gid_map).map_err(|e| map("gid_map", e))?;
    sys::write_all(go, b"g").map_err(|e| Error::setup("cannot start the sandbox's init", e))
}

/// SIGKILL to the sandbox's pid 1 kills every process of its PID namespace; reaping pid 1
/// returns only once they are all gone.
fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: `pid` is our own unreaped child, so the pid cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) == -1 && *libc::__errno_location() == libc::EINTR {
        }
    }
}

//! The helper's host-side process: reads the spec, clones the sandbox's init into fresh
//! namespaces, and supervises it (time limit, cancellation signals, exit status).
//!
//! Single-threaded: signals are blocked and consumed synchronously with `sigtimedwait`, so no
//! handler ever runs. Nothing here follows a path the builder could have written.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{Error, user_namespace_hint};
use crate::exit::EXIT_SIGNAL_BASE;
use crate::plan::Plan;
use crate::spec::{MAX_SPEC_BYTES, Spec, Stdin};
use crate::sys;

/// Signals that cancel the run: the sandbox is killed and the helper exits 128 + signal.
const CANCEL: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Parses the command line: `bramble-sandbox [--spec-fd N]`.
fn spec_fd() -> Result<i32, Error> {
    let mut args = std::env::args_os().skip(1);
    let mut fd = 0;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--spec-fd") => {
                fd = args
                    .next()
                    .and_then(|v| v.to_str().and_then(|s| s.parse::<i32>().ok()))
                    .filter(|&n| n >= 0)
                    .ok_or_else(|| Error::Usage {
                        message: "`--spec-fd` needs a descriptor number".into(),
                    })?;
            }
            _ => {
                return Err(Error::Usage {
                    message: format!("unexpected argument `{}`", arg.to_string_lossy()),
                });
            }
        }
    }
    Ok(fd)
}

/// Reads the whole spec from `fd` (at most [`MAX_SPEC_BYTES`]).
fn read_spec(fd: i32) -> Result<Vec<u8>, Error> {
    let err = |source| Error::ReadSpec { fd, source };
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        let spare = buf.capacity() - buf.len();
        // SAFETY: the destination is the vector's spare capacity, writable for `spare` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().add(buf.len()).cast(), spare) };
        match n {
            0 => break,
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(err(e));
                }
            }
            // SAFETY: read(2) initialised `n` more bytes.
            n => unsafe { buf.set_len(buf.len() + n as usize) },
        }
        if buf.len() > MAX_SPEC_BYTES {
            return Err(err(io::Error::other(format!(
                "the spec is larger than {MAX_SPEC_BYTES} bytes"
            ))));
        }
    }
    Ok(buf)
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

    let fd = spec_fd()?;
    let bytes = read_spec(fd)?;
    let spec = Spec::from_json(&bytes).map_err(Error::Spec)?;
    drop(bytes);
    if fd != 0 {
        // SAFETY: the caller handed us this descriptor for the spec only.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    match spec.stdin {
        Stdin::Inherit if fd == 0 => return Err(Error::StdinTaken),
        Stdin::Inherit => {}
        Stdin::Null => {
            // The host's /dev/null is the same device the sandbox sees.
            let null = sys::open(c"/dev/null", libc::O_RDONLY)
                .map_err(|e| Error::setup("cannot open `/dev/null`", e))?;
            // SAFETY: both descriptors are open; dup2 replaces stdin atomically.
            sys::cvt(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) })
                .map_err(|e| Error::setup("cannot redirect stdin", e))?;
        }
    }

    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let plan = Plan::new(&spec, uid, gid)?;
    let deadline = spec
        .time_limit_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));

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

    // The child polls the read end right after setting its own PDEATHSIG: if we died in
    // between, our write end is closed and it exits.
    let mut pipe = [0; 2];
    // SAFETY: `pipe` is a valid out array of two descriptors.
    sys::cvt(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })
        .map_err(|e| Error::setup("cannot create a pipe", e))?;
    // SAFETY: pipe2 returned two fresh descriptors that nobody else owns.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };

    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if plan.new_net {
        flags |= libc::CLONE_NEWNET;
    }
    // clone(2) without a stack behaves like fork(2) with namespace flags: the child is pid 1
    // of the new PID namespace and already inside all the others. One process fewer than
    // unshare(2) + fork(2), and /proc can be mounted for the new PID namespace directly.
    // SAFETY: raw clone with a null stack duplicates this single-threaded process; the child
    // only runs `init::run`, which never returns.
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
        drop(write_end);
        crate::init::run(&plan, read_end);
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
    drop(read_end);
    let code = supervise(pid, &set, deadline, &spec);
    drop(write_end);
    code
}

/// Waits for init, killing the whole sandbox (SIGKILL to its pid 1) on timeout or on a
/// cancel signal. Returns init's status, which is the builder's.
fn supervise(
    pid: libc::pid_t,
    set: &libc::sigset_t,
    deadline: Option<Instant>,
    spec: &Spec,
) -> Result<u8, Error> {
    loop {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        // SAFETY: `set` is a valid signal set; `ts` is a valid timespec or absent.
        let sig = unsafe {
            libc::sigtimedwait(
                set,
                std::ptr::null_mut(),
                ts.as_ref().map_or(std::ptr::null(), |t| t as *const _),
            )
        };
        if sig == libc::SIGCHLD {
            let mut status = 0;
            // SAFETY: `status` is a valid out pointer; WNOHANG never blocks.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                return Ok(crate::init::status_code(status));
            }
        } else if CANCEL.contains(&sig) {
            kill_and_reap(pid);
            return Ok(EXIT_SIGNAL_BASE + sig as u8);
        } else if sig == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                kill_and_reap(pid);
                return Err(Error::Timeout {
                    limit_ms: spec.time_limit_ms.unwrap_or_default(),
                });
            }
            if e.raw_os_error() != Some(libc::EINTR) {
                kill_and_reap(pid);
                return Err(Error::setup("cannot wait for signals", e));
            }
        }
    }
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

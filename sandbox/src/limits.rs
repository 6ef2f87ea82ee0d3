//! Memory and process limits of a sandbox, set by pid 1 just before it starts the builder.
//!
//! Both are resource limits (`setrlimit(2)`), soft and hard alike (the builder cannot raise
//! them back), inherited by every process the builder starts; a lower hard limit the helper
//! was started with is kept:
//!
//! - **Memory** (`memory_limit_bytes`): `RLIMIT_DATA`, the heap and private writable mappings
//!   of *each* process (since Linux 4.7; file mappings, `PROT_NONE` reservations and the
//!   stack are not counted). An allocation over it fails with `ENOMEM`, so a memory hog gets
//!   an allocation failure instead of pushing the machine into the OOM killer. The bound is
//!   per process, not for the build as a whole.
//! - **Processes** (`process_limit`): `RLIMIT_NPROC`. The kernel counts it per user *and user
//!   namespace* (since Linux 5.14, "ucounts"), and every sandbox has a user namespace of its
//!   own, so the limit bounds the processes (threads included) of this sandbox only, not every
//!   process of the caller's uid: a fork bomb gets `EAGAIN` from `fork` once it has
//!   `process_limit` processes. Pid 1 itself is not counted against the builder (the rlimit
//!   is set one higher). The kernel does not apply `RLIMIT_NPROC` to host uid 0, so the
//!   bound holds only when the builder is not host root (the helper maps it to an
//!   unprivileged id when the caller is root).
//!
//! When the builder fails, pid 1 tries a `fork` of its own under a soft limit one lower, a
//! few times over a short window ([`PROBE_TRIES`] × [`PROBE_PAUSE`]): if one fails with
//! `EAGAIN`, the builder's processes were at their limit after it ended and the failure is
//! reported as [`Error::ProcessLimit`] (exit code [`crate::EXIT_PROCESS_LIMIT`]). One probe
//! is not enough: the processes of a fork bomb fail and exit too, so right after the builder
//! exited the count may dip below the limit for a moment (seen on a loaded machine); the
//! survivors fork again at once and fill it back up, which a later probe sees. An exceeded memory
//! rlimit leaves no such trace (the builder sees `ENOMEM` and fails its own way): the caller
//! names the limit in its message.
//!
//! A cgroup v2 subtree (an exact total for the build, and an OOM count) is not used yet.

use std::io;

use crate::error::Error;
use crate::plan::Plan;

/// Sets the plan's limits on pid 1 (the builder inherits them). Pid 1 has allocated what it
/// needs for the rest of the run (the builder's stack) before this.
pub fn apply(plan: &Plan) -> Result<(), Error> {
    if let Some(bytes) = plan.memory_limit {
        set(libc::RLIMIT_DATA, bytes)
            .map_err(|e| Error::setup("cannot set the memory limit (RLIMIT_DATA)", e))?;
    }
    if let Some(processes) = plan.process_limit {
        // One more for pid 1, which is counted in the same user namespace.
        set(libc::RLIMIT_NPROC, u64::from(processes) + 1)
            .map_err(|e| Error::setup("cannot set the process limit (RLIMIT_NPROC)", e))?;
    }
    Ok(())
}

fn set_soft(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out pointer, then a valid rlimit.
    crate::sys::cvt(unsafe { libc::getrlimit(resource, &mut limit) })?;
    limit.rlim_cur = value.min(limit.rlim_max);
    // SAFETY: as above.
    crate::sys::cvt(unsafe { libc::setrlimit(resource, &limit) }).map(drop)
}

/// Sets the soft and hard limit to `value`, or to the current hard limit if that is lower
/// (the caller's own bound stays: an unprivileged process cannot raise it anyway).
fn set(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out pointer, then a valid rlimit.
    crate::sys::cvt(unsafe { libc::getrlimit(resource, &mut limit) })?;
    let value = value.min(limit.rlim_max);
    limit.rlim_cur = value;
    limit.rlim_max = value;
    // SAFETY: as above.
    crate::sys::cvt(unsafe { libc::setrlimit(resource, &limit) }).map(drop)
}

/// The builder's exit code, or [`Error::ProcessLimit`] if it failed while the sandbox was
/// at its process limit. Called by pid 1 right after the builder exited, before the
/// processes it left are killed.
pub fn check(plan: &Plan, code: u8) -> Result<u8, Error> {
    match plan.process_limit {
        Some(limit) if code != 0 && at_process_limit(limit) => {
            Err(Error::ProcessLimit { limit, code })
        }
        _ => Ok(code),
    }
}

/// How many times, and how far apart, pid 1 probes for a full process table after a failed
/// builder (at most ~50 ms, spent only when a build with a process limit failed and the
/// sandbox was not at its limit).
const PROBE_TRIES: u32 = 25;
const PROBE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether the processes the builder left reach one fewer than `limit` (the builder itself
/// is gone) in one of [`PROBE_TRIES`] probes: a `fork` of pid 1 under a soft limit of
/// `limit` then fails with `EAGAIN`.
fn at_process_limit(limit: u32) -> bool {
    // Lowering the soft limit is always allowed; pid 1 forks nothing after these probes.
    if set_soft(libc::RLIMIT_NPROC, u64::from(limit)).is_err() {
        return false;
    }
    for attempt in 0..PROBE_TRIES {
        if attempt > 0 {
            std::thread::sleep(PROBE_PAUSE);
        }
        match probe_fork() {
            Some(true) => return true,
            Some(false) => {}
            None => return false,
        }
    }
    false
}

/// One probe: `Some(true)` if a fork failed with `EAGAIN`, `Some(false)` if it succeeded,
/// `None` if it failed otherwise.
fn probe_fork() -> Option<bool> {
    // SAFETY: a fork of single-threaded pid 1 without a stack argument; the child only calls
    // `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    match pid {
        // SAFETY: `_exit` is always safe.
        0 => unsafe { libc::_exit(0) },
        -1 => match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Some(true),
            _ => None,
        },
        pid => {
            let mut status = 0;
            // SAFETY: reaping our own child; `status` is a valid out pointer.
            unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
            Some(false)
        }
    }
}

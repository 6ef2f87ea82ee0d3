//! `bramble-sandbox`: the setuid-free helper that runs one builder in fresh namespaces.
//!
//! The main `bramble` process never changes its own namespaces. For every derivation (and for
//! `bramble run`/`bramble shell`) it spawns this helper with a [`Spec`] as JSON on stdin (or on
//! the descriptor named by `--spec-fd N`), and reads the builder's stdout/stderr and the
//! helper's exit status. The helper needs no privilege: no setuid bit, no `newuidmap`, only
//! unprivileged user namespaces.
//!
//! # Processes
//!
//! ```text
//! bramble ── bramble-sandbox (host side: supervises, time limit, cancel)     run.rs
//!               └── init, pid 1 of the new namespaces (setup, then reaps)    init.rs
//!                     └── builder, pid 2 (setsid, execve)
//! ```
//!
//! The host side uses `clone(2)` with the namespace flags, so its child is already pid 1 and
//! inside every new namespace (no `unshare` + extra fork). Pid 1 starts the builder with
//! `CLONE_VM | CLONE_VFORK` (as `posix_spawn`), which costs no page-table copy.
//!
//! # The sequence, in order
//!
//! Host side ([`run`](crate::run)):
//! 1. `PR_SET_PDEATHSIG(SIGKILL)`: the helper dies with its caller (callers must spawn it from
//!    a thread that outlives the run: the signal fires when the spawning *thread* exits).
//! 2. Read and validate the spec, resolve the links in its bind sources' directories; prepare
//!    every C string, the id maps and the seccomp programs. Stdin becomes `/dev/null` unless
//!    the spec says `"stdin": "inherit"`. As root, the builder's host id is picked (see
//!    [`ids`]) and the supplementary groups cleared (where `setgroups` is allowed).
//! 3. Block SIGINT/SIGTERM/SIGHUP/SIGCHLD, then `clone(CLONE_NEWUSER | CLONE_NEWNS |
//!    CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS [| CLONE_NEWNET])`. As root, write pid 1's
//!    `setgroups` (`deny`), `uid_map` and `gid_map` (only a process privileged outside the
//!    namespace may map ids other than its own), then send pid 1 one byte to go on.
//! 4. Supervise through a `signalfd`: on the time limit, the silence limit (no output for
//!    `silence_limit_ms`: the builder's stdout and stderr are then pipes the host side relays,
//!    as they always are for `--warm`) or a cancel signal, SIGKILL pid 1 (the kernel then
//!    kills the whole PID namespace) and reap it.
//!
//! Pid 1 ([`init`](crate::init)), first what does not depend on the spec:
//! 1. `PR_SET_PDEATHSIG(SIGKILL)`; exit if the host side already died (pipe hang-up). As
//!    root, wait for the host side's byte (its maps are written).
//! 2. Unblock signals.
//! 3. `setgroups` ← `deny`, then `uid_map` ← `<uid> <host euid> 1`, `gid_map` likewise. As
//!    root the host side wrote them instead: `<uid> <sandbox id> 1` (an unprivileged id, see
//!    [`ids`]) plus `0 0 1`, root's own id for the setup until step 16.
//! 4. `/` made recursively private.
//! 5. Stdin ← `/dev/null` when the spec came on it (`--warm`).
//! 6. A tmpfs (nosuid, nodev) as the new root, mounted over `/tmp` (resolved) in our private
//!    namespace, after taking an `O_PATH` descriptor of the directory it covers.
//! 7. A fresh `/proc` (nosuid, nodev, noexec), protected as bubblewrap and runc do:
//!    `sys`, `sysrq-trigger`, `irq`, `bus`, `fs` bound read-only onto themselves; `kcore`,
//!    `kmsg`, `keys`, `timer_list`, `timer_stats`, `sched_debug`, `latency_stats` masked by
//!    a read-only `nodev` bind of `/dev/null`, `acpi`, `scsi`, `asound` by an empty
//!    read-only tmpfs (those the kernel has).
//! 8. `/dev`: `null zero full random urandom tty` bound from the host, each bind remounted
//!    read-only and nosuid (the devices work, the host's nodes cannot be changed), a private
//!    `shm` tmpfs, `pts` (devpts `newinstance`), `ptmx`, `fd`, `stdin`, `stdout`, `stderr`
//!    links.
//! 9. `lo` up with `SIOCSIFFLAGS` (new network namespace only, nothing else).
//! 10. The bounding capability set emptied (pid 1 keeps its effective set for the mounts).
//!
//! Then the spec's part:
//! 11. Bind sources opened `O_PATH | O_NOFOLLOW` (symlinks are recreated as symlinks); those
//!     under the covered directory through its descriptor.
//! 12. The spec's binds (recursive; then `nosuid,nodev` and `ro` unless writable, recursively
//!     with `mount_setattr`, or a remount keeping the locked flags on older kernels), tmpfs
//!     directories and symlinks, in spec order.
//! 13. Hostname.
//! 14. The root tmpfs remounted read-only.
//! 15. `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`: the host tree is gone. `chdir(cwd)`.
//! 16. As root: `setresgid`/`setresuid` to the builder's ids (leaving uid 0 clears pid 1's
//!     capabilities; nothing in the sandbox is host root from here on), `PR_SET_PDEATHSIG`
//!     again (a change of ids clears it). Every descriptor above 2 closed (but the status
//!     pipe, close-on-exec).
//! 17. `no_new_privs`; the other capability sets cleared (ambient, inheritable, effective,
//!     permitted); the seccomp filters ([`seccomp`](crate::seccomp)); not dumpable.
//! 18. Builder: the memory and process limits ([`limits`]: `RLIMIT_DATA`, `RLIMIT_NPROC`,
//!     counted per sandbox), then `SIGPIPE` default, `setsid`, `execve` with only the spec's
//!     environment plus
//!     `HOME=/homeless-shelter`, `TMPDIR=/build`, `PATH=/path-not-set` unless the spec sets
//!     them. Pid 1 reaps every child; when the builder exits, pid 1 exits with its status,
//!     which makes the kernel kill whatever is left (daemons do not survive the build).
//!
//! # Warm sandboxes and the early status
//!
//! Most of a sandbox's start-up is the kernel's work on namespaces, which does not depend on
//! the spec. `bramble-sandbox --warm` clones pid 1 at once and lets it do steps 1 to 10 while
//! the host side waits for the spec: a build engine starts the helper for its next build
//! ahead of time and hands over the spec when the inputs are ready, so only steps 11 to 18 are
//! left on the critical path. The host side validates the spec as usual and forwards it to
//! pid 1 on a pipe. A warm sandbox is set up with the defaults, so the spec must keep them:
//! network `none`, stdin `null`, uid 1000 / gid 100 (anything else: exit 122). Closing the
//! spec's descriptor without writing anything tears it down and exits 0: the caller did not
//! need it after all.
//!
//! `--status-fd N` (N may be stdin when the spec comes on a socket, as from the build engine)
//! gets a status record ([`Status`]) as soon as the outcome is known: the builder's own
//! exit status (`B <code>`) once the sandbox is empty, before its namespaces are torn down
//! (the kernel's slowest part of a run): pid 1 kills and reaps everything left when the
//! builder exits, closes its stdout/stderr and tells the host side, which closes its own
//! stdout/stderr (so the caller's log pipe ends) and writes the record. Or the helper's own
//! failure with its message (`H <code> <length> <message>`): a setup step, the builder not
//! found or not executable, an invalid spec, the time limit. A caller tells a builder's
//! `exit 127` from a builder that was not found by the record, never by the code. The
//! helper's own exit status follows when the teardown is over. No record (end of file)
//! means the helper was killed or cancelled by a signal: its exit status tells.
//!
//! # Exit status
//!
//! The builder's own status, or 128 + signal. Otherwise (see [`exit`]): 120 the builder failed
//! at its process limit, 121 silent for longer than the silence limit, 122 invalid spec,
//! 123 no user namespaces, 124 timeout, 125 setup failure, 126 builder not executable,
//! 127 builder not found; 128 + n when the helper was cancelled by signal n. Each helper
//! failure prints one `bramble-sandbox: error: ...` line and possibly one `hint: ...` line,
//! and with `--status-fd` sends the same as a [`Status::Helper`] record: only that record
//! tells a helper failure from a builder that exited with the same code.
//!
//! # Spec
//!
//! ```json
//! {
//!   "builder": "/bramble/store/1b9…-bash/bin/bash",
//!   "args": ["-e", "/build/builder.sh"],
//!   "env": {"out": "/bramble/store/ffff…-hello"},
//!   "cwd": "/build",
//!   "binds": [
//!     {"source": "/home/u/.cache/bramble/stage-17", "target": "/bramble/store", "writable": true},
//!     {"source": "/home/u/.local/share/bramble/store/1b9…-bash", "target": "/bramble/store/1b9…-bash"},
//!     {"source": "/home/u/.cache/bramble/build-17", "target": "/build", "writable": true}
//!   ],
//!   "tmpfs": ["/tmp"],
//!   "symlinks": [{"path": "/bin/sh", "to": "/bramble/store/1b9…-bash/bin/bash"}],
//!   "network": "none",
//!   "hostname": "localhost",
//!   "time_limit_ms": 86400000,
//!   "silence_limit_ms": 7200000,
//!   "memory_limit_bytes": 8589934592,
//!   "process_limit": 4096,
//!   "stdin": "null",
//!   "uid": 1000,
//!   "gid": 100
//! }
//! ```
//!
//! Only `builder` is required. Recommended build layout: a fresh writable staging directory at
//! `/bramble/store` (the builder creates `$out` there, as a file or a directory; the host
//! picks up only the declared outputs, through descriptors), the input closure bound
//! read-only on top, the build directory at `/build`. A pre-created output directory bound
//! writable at its placeholder path works too. For `bramble run`/`bramble shell`: the project
//! directory as a writable bind, `"stdin": "inherit"` with the spec on `--spec-fd`, stdout and
//! stderr are always passed through, and the exit status is the program's. The program runs
//! in its own session without a controlling terminal (TIOCSTI defence); it can read and
//! write the terminal through its descriptors but gets no job control (a pty relay would be
//! needed for that; not done).

mod error;
pub mod exit;
pub mod ids;
mod init;
mod limits;
mod plan;
mod run;
mod seccomp;
pub mod spec;
mod sys;

pub use error::Error;
pub use exit::*;
pub use ids::{IdRange, SANDBOX_ID_BASE, SANDBOX_ID_COUNT, SANDBOX_IDS_VAR, sandbox_host_id};
pub use spec::{Bind, Network, Spec, SpecError, Stdin, Symlink};

/// Prints a helper error as one `bramble-sandbox: error:` line plus an optional `hint:` line,
/// in a single write so concurrent builders' messages do not interleave.
pub(crate) fn report(err: &Error) {
    let msg = format!("bramble-sandbox: error: {}\n", message(err));
    sys::write_stderr(msg.as_bytes());
}

/// The error, and its hint on a second line `hint: ...` (as in a [`Status::Helper`] record).
pub(crate) fn message(err: &Error) -> String {
    match err.hint() {
        Some(hint) => format!("{err}\nhint: {hint}"),
        None => err.to_string(),
    }
}

/// The [`Status`] record of a failure of the helper.
pub(crate) fn helper_status(err: &Error) -> Status {
    Status::Helper {
        code: err.exit_code(),
        message: message(err),
    }
}

/// Entry point of the helper binary (`bin/bramble-sandbox.rs`). Never returns.
///
/// Ends with `_exit(2)` rather than a return from `main`: nothing is buffered (every message
/// is one `write(2)`), and the C library's exit handlers (running the destructors of every
/// loaded object) would only delay the moment the caller sees the status.
pub fn main() -> ! {
    let code = match run::run() {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    };
    // SAFETY: _exit is always safe; the sandbox is gone (run returns only after pid 1 was
    // reaped) and nothing is buffered.
    unsafe { libc::_exit(i32::from(code)) }
}

//! Helpers started ahead of their builds, running a build's spec in one, and reading what
//! comes back: the status record, the log, and what a failure means for the author.
//!
//! A helper started with `--warm` sets up its namespaces, root, `/proc` and `/dev` before the
//! spec comes: the helper's own work, moved off a build's critical path (one helper per
//! derivation, as DESIGN §4 says, only started earlier). With `--status-fd 0` it sends the
//! builder's status on its spec socket as soon as the sandbox is empty, before the kernel
//! tears the namespaces down.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bramble_sandbox::{Spec, Status};
use tokio::io::AsyncWriteExt;

use crate::engine::{Cancel, ExecError, SetupError};
use crate::store::limits::{format_duration_ms, format_size};

use super::give;

/// Largest log kept per build (its end is kept).
pub const MAX_LOG_BYTES: u64 = 32 << 20;

/// How long a cancelled helper gets to tear its sandbox down before SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(3);

/// A helper started ahead of its build (`bramble-sandbox --warm`): it sets up its
/// namespaces and the spec-independent part of the sandbox while it waits for the spec.
#[derive(Debug)]
struct WarmHelper {
    child: std::process::Child,
    /// Our end of the helper's stdin, a socket: the spec goes out, the early status (one
    /// byte, `--status-fd 0`) comes back.
    control: std::os::unix::net::UnixStream,
    /// The read end of the helper's stdout and stderr (one pipe).
    log: OwnedFd,
}

impl WarmHelper {
    /// Starts `helper --warm --status-fd 0`, on the pool's starter thread only: the helper
    /// dies with the thread that spawned it (PDEATHSIG).
    fn start(helper: &Path) -> io::Result<WarmHelper> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut command = std::process::Command::new(helper);
        command
            .args(["--warm", "--status-fd", "0"])
            .stdin(OwnedFd::from(theirs))
            .stdout(writer.try_clone()?)
            .stderr(writer);
        let spawned = command.spawn();
        // The command holds our copies of the pipe's write end and of the helper's end of
        // the socket: drop them so we see the ends when the helper is gone.
        drop(command);
        ours.set_nonblocking(true)?;
        Ok(WarmHelper {
            child: spawned?,
            control: ours,
            log: reader,
        })
    }
}

/// Helpers started ahead of time. Taking one asks for the next, so a chain's next step finds
/// its namespaces ready and `-j N` builds keep about N warm. Helpers are started on one
/// thread of the pool's own, never on the build's path (spawning costs the caller's thread
/// the whole `vfork` + `exec`) and never on a thread that may exit before the helper is done
/// (a helper dies with the thread that spawned it). The thread ends, and every helper not
/// taken with it, when the pool drops.
#[derive(Debug)]
pub(super) struct WarmPool {
    shared: Arc<PoolShared>,
    requests: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct PoolShared {
    /// Started, not taken yet (or why one could not be started).
    ready: std::sync::Mutex<Vec<io::Result<WarmHelper>>>,
    /// Asked for and not in `ready` yet.
    starting: std::sync::atomic::AtomicUsize,
    /// Wakes takers when one is ready.
    notify: tokio::sync::Notify,
}

impl WarmPool {
    pub(super) fn new(helper: PathBuf) -> WarmPool {
        let shared = Arc::new(PoolShared::default());
        let (requests, received) = std::sync::mpsc::channel::<()>();
        let on_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sandbox-starter".into())
            .spawn(move || {
                for () in received {
                    let started = WarmHelper::start(&helper);
                    on_thread
                        .ready
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(started);
                    on_thread
                        .starting
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    on_thread.notify.notify_waiters();
                }
            });
        match thread {
            Ok(thread) => WarmPool {
                shared,
                requests: Some(requests),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!("cannot start the sandbox starter thread: {e}");
                WarmPool {
                    shared,
                    requests: None,
                    thread: None,
                }
            }
        }
    }

    /// Asks the starter thread for one more helper (counted before it can be done).
    fn request(&self) -> io::Result<()> {
        let starting = &self.shared.starting;
        starting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let sent = self.requests.as_ref().is_some_and(|r| r.send(()).is_ok());
        if !sent {
            starting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return Err(io::Error::other("the sandbox starter thread is gone"));
        }
        Ok(())
    }

    /// A started helper, waiting for one if none is ready; asks for the next one.
    async fn take(&self) -> io::Result<WarmHelper> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a helper made ready in between wakes us.
            notified.as_mut().enable();
            let ready = self
                .shared
                .ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            if let Some(ready) = ready {
                self.request()?;
                return ready;
            }
            if self
                .shared
                .starting
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                self.request()?;
            }
            notified.await;
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Helpers not taken: closing their sockets (the `ready` list drops with the last
        // reference) tells them they are not needed; the thread's exit killed them anyway.
        let ready =
            std::mem::take(&mut *self.shared.ready.lock().unwrap_or_else(|e| e.into_inner()));
        for mut warm in ready.into_iter().flatten() {
            drop(warm.control);
            let _ = warm.child.wait();
        }
    }
}

/// Run `spec` in a warm helper (of `helper`) until the sandbox is empty or `cancel` fires;
/// returns how it ended and the end of its output (stdout and stderr interleaved on one
/// pipe).
///
/// The status comes early (`--status-fd`): once every process of the sandbox is gone and
/// the log has ended, before the kernel tears the namespaces down; the helper is reaped in
/// the background.
///
/// `writable`: the build's writable directories, given to the builder's host id first
/// (as root, see [`give`]).
pub(super) async fn run_helper(
    pool: &WarmPool,
    helper: &Path,
    spec: &Spec,
    writable: &[PathBuf],
    cancel: &Cancel,
) -> Result<(Ended, Vec<u8>), ExecError> {
    let setup = |source: io::Error| {
        ExecError::from(SetupError::Helper {
            helper: helper.to_owned(),
            source,
        })
    };
    let WarmHelper {
        mut child,
        control,
        log,
    } = pool.take().await.map_err(setup)?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    if nix::unistd::geteuid().is_root() {
        let (dirs, helper) = (writable.to_vec(), child.id());
        tokio::task::spawn_blocking(move || give(&dirs, helper))
            .await
            .expect("changing owners does not panic")
            .map_err(|source| SetupError::GiveDirs { source })?;
    }
    let mut control = tokio::net::UnixStream::from_std(control).map_err(setup)?;
    let collector = tokio::task::spawn_blocking(move || read_log(std::fs::File::from(log)));
    // A helper that failed early has closed its end: its status tells why.
    if control.write_all(spec.to_json().as_bytes()).await.is_ok() {
        let _ = control.shutdown().await;
    }
    let early = tokio::select! {
        record = read_status(&mut control) => record,
        () = cancel.cancelled() => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let mut exited = tokio::task::spawn_blocking(move || child.wait());
            if tokio::time::timeout(CANCEL_GRACE, &mut exited).await.is_err() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = exited.await;
            }
            return Err(ExecError::Cancelled);
        }
    };
    let exited = tokio::task::spawn_blocking(move || child.wait());
    let ended = match early {
        // The sandbox is empty: its teardown is reaped in the background.
        Some(record) => Ended::Status(record),
        // No record (the helper was killed): the exit status tells.
        None => Ended::Exit(
            exited
                .await
                .expect("waiting for a child does not panic")
                .map_err(setup)?,
        ),
    };
    let log = collector.await.expect("reading a log does not panic");
    Ok((ended, log))
}

/// How a run ended: the helper's status record (the builder's status or the helper's own
/// failure), or, without one, the helper's exit status.
#[derive(Debug)]
pub(super) enum Ended {
    Status(Status),
    Exit(std::process::ExitStatus),
}

impl Ended {
    pub(super) fn success(&self) -> bool {
        match self {
            Ended::Status(status) => *status == Status::Builder(0),
            Ended::Exit(status) => status.success(),
        }
    }
}

/// Reads the helper's status record (see [`bramble_sandbox::Status`]); `None` at end of file
/// or on anything else.
async fn read_status(control: &mut tokio::net::UnixStream) -> Option<Status> {
    use tokio::io::AsyncReadExt;
    let mut record = vec![0u8; 2];
    control.read_exact(&mut record).await.ok()?;
    if record[0] == bramble_sandbox::STATUS_HELPER {
        let mut len = [0u8; 2];
        control.read_exact(&mut len).await.ok()?;
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        control.read_exact(&mut message).await.ok()?;
        record.extend_from_slice(&len);
        record.extend_from_slice(&message);
    }
    Status::decode(&record)
}

/// Read a pipe to its end, keeping the last [`MAX_LOG_BYTES`].
fn read_log(mut pipe: std::fs::File) -> Vec<u8> {
    let mut log = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                log.extend_from_slice(&buf[..n]);
                let max = usize::try_from(MAX_LOG_BYTES).unwrap_or(usize::MAX);
                if log.len() > 2 * max {
                    log.drain(..log.len() - max);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let max = usize::try_from(MAX_LOG_BYTES).unwrap_or(usize::MAX);
    if log.len() > max {
        log.drain(..log.len() - max);
    }
    log
}

/// `exited with code 1` or `was killed by signal 9`, from the helper's exit status (when it
/// sent no status record).
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (
        status.signal(),
        status.code().and_then(|c| u8::try_from(c).ok()),
    ) {
        (Some(signal), _) => format!("was killed by signal {signal}"),
        (None, Some(code)) => describe_code(code),
        (None, None) => "exited abnormally".into(),
    }
}

/// What a run that did not succeed means for the author of the derivation.
pub(super) fn failure(
    ended: Ended,
    spec: &Spec,
    log_tail: Vec<String>,
    kept: Option<PathBuf>,
) -> ExecError {
    match ended {
        Ended::Status(Status::Helper { code, message }) => match limit_failure(code, spec) {
            Some((status, hint)) => ExecError::Failed {
                status,
                log_tail,
                kept,
                hint: Some(hint),
            },
            None => sandbox_failure(code, &message, log_tail, kept),
        },
        Ended::Status(Status::Builder(code)) => {
            let (status, hint) = match out_of_memory(spec, &log_tail) {
                Some((limit, hint)) => (
                    format!(
                        "exceeded its memory limit of {limit} per process ({}: an allocation failed)",
                        describe_code(code)
                    ),
                    Some(hint),
                ),
                None => (describe_code(code), None),
            };
            ExecError::Failed {
                status,
                log_tail,
                kept,
                hint,
            }
        }
        Ended::Exit(status) => ExecError::Failed {
            status: describe(status),
            log_tail,
            kept,
            hint: None,
        },
    }
}

/// A builder's own status as a shell reports it: `exited with code 127`, or `was killed by
/// signal 9` (128 + 9). Never what the helper's codes mean: the helper's own failures come
/// as their own record (see [`sandbox_failure`]).
fn describe_code(code: u8) -> String {
    match code.checked_sub(bramble_sandbox::EXIT_SIGNAL_BASE) {
        Some(signal) if signal > 0 => format!("was killed by signal {signal}"),
        _ => format!("exited with code {code}"),
    }
}

/// The helper's own failure (its status record): its message and hint, worded for the
/// author of the derivation where the helper's hint is for the caller of the helper.
fn sandbox_failure(
    code: u8,
    message: &str,
    log_tail: Vec<String>,
    kept: Option<PathBuf>,
) -> ExecError {
    let (message, hint) = match message.split_once("\nhint: ") {
        Some((message, hint)) => (message, Some(hint.trim_end().to_owned())),
        None => (message.trim_end(), None),
    };
    let hint = match code {
        bramble_sandbox::EXIT_NOT_FOUND => Some(
            "a builder is a file of an input's output (`<input>.out + \"/bin/...\"`) or of the \
             derivation's own sources"
                .into(),
        ),
        _ => hint,
    };
    ExecError::Sandbox {
        message: message.to_owned(),
        hint,
        log_tail,
        kept,
    }
}

/// A failure of the helper's that is a limit of the build's (its time, its silence, its
/// processes): what happened, naming the limit, and how to raise it.
fn limit_failure(code: u8, spec: &Spec) -> Option<(String, String)> {
    match code {
        bramble_sandbox::EXIT_TIMEOUT => spec.time_limit_ms.map(|ms| {
            (
                format!(
                    "exceeded its time limit of {} and was killed",
                    format_duration_ms(ms)
                ),
                "raise it with `--timeout DURATION` or `derivation(..., timeout = \"...\")`"
                    .into(),
            )
        }),
        bramble_sandbox::EXIT_SILENT => spec.silence_limit_ms.map(|ms| {
            (
                format!(
                    "printed nothing for {} (its silence limit) and was killed",
                    format_duration_ms(ms)
                ),
                "raise it with `--max-silent-time DURATION` or `derivation(..., max_silent_time = \"...\")`"
                    .into(),
            )
        }),
        bramble_sandbox::EXIT_PROCESS_LIMIT => spec.process_limit.map(|n| {
            (
                format!("reached its limit of {n} processes (a fork failed)"),
                "raise it with `--max-processes N` or `derivation(..., processes = N)`".into(),
            )
        }),
        _ => None,
    }
}

/// The memory limit (as text) and a hint, if the builder failed with an allocation failure
/// in the end of its log while it had one. The limit is an rlimit per process: the kernel
/// keeps no count of refusals, so the builder's own words are the evidence.
fn out_of_memory(spec: &Spec, log_tail: &[String]) -> Option<(String, String)> {
    const ALLOCATION_FAILURES: [&str; 6] = [
        "out of memory",
        "cannot allocate memory",
        "memory exhausted",
        "memory allocation of",
        "bad_alloc",
        "failed to allocate",
    ];
    let bytes = spec.memory_limit_bytes?;
    let oom = log_tail.iter().any(|line| {
        let line = line.to_ascii_lowercase();
        ALLOCATION_FAILURES.iter().any(|p| line.contains(p))
    });
    oom.then(|| {
        (
            format_size(bytes),
            "raise it with `--max-memory SIZE` or `derivation(..., memory = \"...\")`".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn statuses_are_described() {
        let exited = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        assert_eq!(describe(exited(3)), "exited with code 3");
        // A builder's own 127 is a builder's exit code; a missing builder comes as the
        // helper's own record.
        assert_eq!(describe(exited(127)), "exited with code 127");
        assert_eq!(describe_code(127), "exited with code 127");
        assert_eq!(describe_code(128), "exited with code 128");
        assert_eq!(describe_code(137), "was killed by signal 9");
        let failure = sandbox_failure(
            127,
            "builder `/bramble/store/x/bin/sh` not found in the sandbox\nhint: bind it\n",
            Vec::new(),
            None,
        );
        assert_eq!(
            failure.to_string(),
            "builder `/bramble/store/x/bin/sh` not found in the sandbox"
        );
        let ExecError::Sandbox { hint, .. } = &failure else {
            panic!("{failure:?}");
        };
        assert!(hint.as_deref().unwrap().starts_with("a builder is a file"));
        let timeout = sandbox_failure(124, "the builder exceeded its time limit", Vec::new(), None);
        assert!(matches!(timeout, ExecError::Sandbox { hint: None, .. }));
        assert_eq!(describe(exited(128 + 9)), "was killed by signal 9");
        assert_eq!(
            describe(std::process::ExitStatus::from_raw(9)),
            "was killed by signal 9"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_starts_the_next_helper_when_one_is_taken_and_ends_them_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Stands in for the helper: waits for its spec, like `bramble-sandbox --warm`.
        let helper = dir.path().join("helper");
        std::fs::write(&helper, "#!/bin/sh\nexec cat >/dev/null\n").unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pool = WarmPool::new(helper.clone());
        let mut first = pool.take().await.unwrap();
        // Taking one asked for the next: it is started without anybody waiting for it.
        let mut waited = 0;
        while pool.shared.ready.lock().unwrap().is_empty() {
            assert!(waited < 500, "the next helper was never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        let waiting_pid = match &pool.shared.ready.lock().unwrap()[0] {
            Ok(warm) => warm.child.id(),
            Err(e) => panic!("{e}"),
        };
        let mut second = pool.take().await.unwrap();
        assert_eq!(second.child.id(), waiting_pid);
        assert_ne!(first.child.id(), second.child.id());
        // Dropping the pool ends the helper started for a third build (its spec socket
        // closes): it is reaped by then, no longer a process.
        let third = loop {
            if let Some(Ok(warm)) = pool.shared.ready.lock().unwrap().first() {
                break warm.child.id();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        drop(pool);
        assert!(!Path::new(&format!("/proc/{third}")).exists());
        for warm in [&mut first, &mut second] {
            warm.control.shutdown(std::net::Shutdown::Both).unwrap();
            assert!(warm.child.wait().unwrap().success());
        }
        // A helper that cannot be started is an error naming why, not a hang.
        let pool = WarmPool::new(dir.path().join("missing"));
        let err = pool.take().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }
}

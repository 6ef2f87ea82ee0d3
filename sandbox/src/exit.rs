//! The helper's exit status, so the build engine can tell the builder's failures from ours.
//!
//! The helper exits with the builder's own status (`0..=255`), or `128 + n` when the builder
//! was killed by signal `n` (as a shell reports it). The codes below follow coreutils'
//! `timeout`/`env` convention (124 to 127); a builder exiting with one of these values by
//! itself is indistinguishable, so the helper also prints one `bramble-sandbox: error:` line
//! on stderr whenever it, not the builder, chose the code.

/// The builder failed while the sandbox was at its process limit (a fork failed).
pub const EXIT_PROCESS_LIMIT: u8 = 120;
/// The builder printed nothing for longer than the silence limit; the sandbox was killed.
pub const EXIT_SILENT: u8 = 121;
/// The spec was not valid JSON or broke an invariant (a bug in the caller).
pub const EXIT_INVALID_SPEC: u8 = 122;
/// The kernel refused an unprivileged user namespace (an environment problem; see the hint).
pub const EXIT_NO_USER_NAMESPACES: u8 = 123;
/// The time limit was reached; the whole sandbox was killed.
pub const EXIT_TIMEOUT: u8 = 124;
/// Any other failure while setting up the sandbox (a bind source missing, a mount refused).
pub const EXIT_SETUP_FAILED: u8 = 125;
/// The builder exists but could not be executed (no execute permission, not a program).
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// The builder (or the interpreter it names) does not exist inside the sandbox.
pub const EXIT_NOT_FOUND: u8 = 127;
/// Added to a signal number when the builder (or the helper, cancelled) died of that signal.
pub const EXIT_SIGNAL_BASE: u8 = 128;

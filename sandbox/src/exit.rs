//! The helper's exit status, so the build engine can tell the builder's failures from ours.
//!
//! The helper exits with the builder's own status (`0..=255`), or `128 + n` when the builder
//! was killed by signal `n` (as a shell reports it). The codes below follow coreutils'
//! `timeout`/`env` convention (124 to 127); a builder exiting with one of these values by
//! itself is indistinguishable by the exit status alone, so the helper also prints one
//! `bramble-sandbox: error:` line on stderr whenever it, not the builder, chose the code, and
//! says which it was on a channel of its own: the [`Status`] record on `--status-fd`.

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

/// The record the helper writes on `--status-fd`, once, as soon as the run's outcome is
/// known: the builder's own status, or the helper's own failure with its message. A caller
/// tells the two apart by the record, never by the code (a builder may exit with any code:
/// a shell's "command not found" is 127, like [`EXIT_NOT_FOUND`]).
///
/// Encoding: `B <code>` (two bytes) for the builder; `H <code> <length: u16, big-endian>
/// <message>` for the helper, the message being the error (one line) and possibly a second
/// line `hint: ...`, UTF-8, at most [`MAX_STATUS_MESSAGE`] bytes. End of file without a
/// record: the helper was killed, or cancelled by a signal (its exit status tells).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The builder ran and exited with this code (128 + n: it was killed by signal n).
    Builder(u8),
    /// The helper failed: a setup step, the builder not found or not executable, an
    /// invalid spec, the time limit. `code` is its exit status (see above).
    Helper { code: u8, message: String },
}

/// Tag of [`Status::Builder`].
pub const STATUS_BUILDER: u8 = b'B';
/// Tag of [`Status::Helper`].
pub const STATUS_HELPER: u8 = b'H';
/// Longest message in a [`Status::Helper`] record: a whole record fits in one atomic pipe
/// write (`PIPE_BUF`).
pub const MAX_STATUS_MESSAGE: usize = 4096 - 4;

impl Status {
    /// The record's bytes (a longer message is cut at a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Status::Builder(code) => vec![STATUS_BUILDER, *code],
            Status::Helper { code, message } => {
                let mut end = message.len().min(MAX_STATUS_MESSAGE);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                let len = end as u16;
                let mut record = vec![STATUS_HELPER, *code];
                record.extend_from_slice(&len.to_be_bytes());
                record.extend_from_slice(&message.as_bytes()[..end]);
                record
            }
        }
    }

    /// A whole record from its bytes; `None` if they are not exactly one record.
    pub fn decode(bytes: &[u8]) -> Option<Status> {
        match bytes {
            [STATUS_BUILDER, code] => Some(Status::Builder(*code)),
            [STATUS_HELPER, code, hi, lo, message @ ..]
                if message.len() == usize::from(u16::from_be_bytes([*hi, *lo])) =>
            {
                Some(Status::Helper {
                    code: *code,
                    message: String::from_utf8_lossy(message).into_owned(),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_long_messages_are_cut() {
        for status in [
            Status::Builder(127),
            Status::Helper {
                code: EXIT_NOT_FOUND,
                message: "builder `/x` not found in the sandbox\nhint: bind it".into(),
            },
        ] {
            assert_eq!(Status::decode(&status.encode()), Some(status));
        }
        assert_eq!(Status::Builder(3).encode(), b"B\x03");
        let long = Status::Helper {
            code: 125,
            message: "é".repeat(MAX_STATUS_MESSAGE),
        };
        let record = long.encode();
        assert!(record.len() <= 4096);
        let Some(Status::Helper { message, .. }) = Status::decode(&record) else {
            panic!("{record:?}");
        };
        assert_eq!(message, "é".repeat(MAX_STATUS_MESSAGE / 2));
        for bad in [&b""[..], b"B", b"B\x01\x02", b"H\x01\x00\x05abc", b"X\x01"] {
            assert_eq!(Status::decode(bad), None, "{bad:?}");
        }
    }
}

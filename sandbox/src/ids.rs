//! Who the builder is on the host when the helper runs as root.
//!
//! An ordinary caller can only map its own uid into the sandbox (the builder is that user).
//! Root may write any id map, and a builder must never be host root (a builder that is host
//! uid 0 owns every root-owned file the sandbox shows it, `/proc/sys` included). So when the
//! helper runs as uid 0, the builder's uid and gid inside (1000 and 100 by default) are
//! mapped to one id of a range no account uses, as Nix's `auto-allocate-uids` does:
//!
//! - the range: [`SANDBOX_ID_BASE`] and [`SANDBOX_ID_COUNT`] ids, just above Nix's default
//!   range (`start-id` 872415232, `id-count` 8388608), so both can build on one machine;
//! - the id of one sandbox: `SANDBOX_ID_BASE + pid % SANDBOX_ID_COUNT`, with `pid` the host
//!   pid of the helper process (the one its caller spawned). Pids are unique among running
//!   processes and below `PID_MAX_LIMIT` (2^22 = the count), so sandboxes running at the same
//!   time never share an id, and the caller knows the id as soon as it has spawned the
//!   helper (it gives the build directories to that id before it sends the spec). The choice
//!   does not depend on the spec: a `--warm` sandbox writes its maps before reading it.
//!
//! The same id is used as uid and gid. Root's own id stays mapped as uid/gid 0 inside so the
//! sandbox's pid 1 can reach bind sources only root may read (a store under `/root`); pid 1
//! gives it up for the builder's ids before the confinement, so neither pid 1 nor the builder
//! keeps it (see the crate doc, pid 1's step 16). `bramble-sandbox --as-caller` keeps the
//! caller's own id instead: for `bramble run`/`bramble shell`, which run the user's own
//! program with the user's own paths, never for a build.

/// First host id of the range builders get when the helper runs as root (`0x3480_0000`).
pub const SANDBOX_ID_BASE: u32 = 880_803_840;
/// Ids in the range: `PID_MAX_LIMIT`, the largest pid a Linux kernel hands out, plus one.
pub const SANDBOX_ID_COUNT: u32 = 1 << 22;

/// The host uid and gid of the builder in the sandbox of the helper process `pid`, when the
/// helper runs as root.
pub fn sandbox_host_id(pid: u32) -> u32 {
    SANDBOX_ID_BASE + pid % SANDBOX_ID_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_in_the_range_and_differ_per_pid() {
        assert_eq!(sandbox_host_id(1), SANDBOX_ID_BASE + 1);
        assert_ne!(sandbox_host_id(2), sandbox_host_id(3));
        for pid in [0, 1, 4_194_303, 4_194_304, u32::MAX] {
            let id = sandbox_host_id(pid);
            assert!((SANDBOX_ID_BASE..SANDBOX_ID_BASE + SANDBOX_ID_COUNT).contains(&id));
        }
        // Far from root, from ordinary accounts, and from Nix's default range.
        const { assert!(SANDBOX_ID_BASE >= 872_415_232 + 8_388_608) };
        const { assert!((SANDBOX_ID_BASE as u64 + SANDBOX_ID_COUNT as u64) < 1 << 31) };
    }
}

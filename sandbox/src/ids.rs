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
//! Another range can be set with `BRAMBLE_SANDBOX_IDS=<base>:<count>` ([`SANDBOX_IDS_VAR`]).
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
/// helper runs as root (with the default range).
pub fn sandbox_host_id(pid: u32) -> u32 {
    IdRange::DEFAULT.host_id(pid)
}

/// Another range, `<base>:<count>` (e.g. `100000:65536` for a container whose root maps
/// only its subordinate ids): read by the helper and by the build engine (which gives the
/// builder its directories), so both must see the same value. With fewer ids than the
/// kernel's `pid_max`, two sandboxes running at once may share an id.
pub const SANDBOX_IDS_VAR: &str = "BRAMBLE_SANDBOX_IDS";

/// A range of host ids for builders (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub base: u32,
    pub count: u32,
}

impl IdRange {
    /// [`SANDBOX_ID_BASE`] and [`SANDBOX_ID_COUNT`].
    pub const DEFAULT: IdRange = IdRange {
        base: SANDBOX_ID_BASE,
        count: SANDBOX_ID_COUNT,
    };

    /// The range in [`SANDBOX_IDS_VAR`], or the default when it is unset or empty.
    pub fn from_env() -> Result<IdRange, String> {
        match std::env::var(SANDBOX_IDS_VAR) {
            Ok(value) if !value.is_empty() => IdRange::parse(&value),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(IdRange::DEFAULT),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("`{SANDBOX_IDS_VAR}` is not `<base>:<count>`"))
            }
        }
    }

    /// `<base>:<count>`: at least one id, never 0 (root), never past 4294967294.
    pub fn parse(value: &str) -> Result<IdRange, String> {
        let bad = || {
            format!(
                "`{SANDBOX_IDS_VAR}` is `{value}`, not `<base>:<count>` with ids from 1 to 4294967294"
            )
        };
        let (base, count) = value.split_once(':').ok_or_else(bad)?;
        let base: u32 = base.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if base == 0 || count == 0 || u64::from(base) + u64::from(count) > u64::from(u32::MAX) {
            return Err(bad());
        }
        Ok(IdRange { base, count })
    }

    /// The id of the sandbox of the helper process `pid`.
    pub fn host_id(&self, pid: u32) -> u32 {
        self.base + pid % self.count
    }
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
        let range = IdRange::parse("100000:65536").unwrap();
        assert_eq!(range.host_id(65536 + 7), 100007);
        for bad in ["", "1", "0:10", "10:0", "4294967290:10", "a:b", "-1:5"] {
            assert!(IdRange::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(IdRange::parse("1:4294967294").unwrap().host_id(u32::MAX), 2);
        // Far from root, from ordinary accounts, and from Nix's default range.
        const { assert!(SANDBOX_ID_BASE >= 872_415_232 + 8_388_608) };
        const { assert!((SANDBOX_ID_BASE as u64 + SANDBOX_ID_COUNT as u64) < 1 << 31) };
    }
}

//! The options of every command that builds (`build`, `run`, `shell`, `test`).

use clap::Args;

use crate::engine::BuildOptions;
use crate::engine::sandbox::{DefaultLimits, SandboxConfig};

use super::CliError;

/// Options shared by every command that builds.
#[derive(Debug, Clone, Args)]
pub struct BuildFlags {
    /// Concurrent builds [default: number of cores]
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    /// Keep building what does not depend on a failed derivation
    #[arg(short = 'k', long)]
    pub keep_going: bool,
    /// Keep the build directory of a failed build for inspection
    #[arg(long)]
    pub keep_failed: bool,
    /// Deepest nesting of derivations-as-output (a DAO in a .bramble file is level 1)
    #[arg(long, value_name = "N", default_value_t = crate::engine::dao::Limits::default().max_depth)]
    pub max_dao_depth: u32,
    /// Longest a build may run, e.g. `90m`, `2h`; `0`: no limit [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Longest a build may print nothing before it is stopped; `0`: no limit [default: 2h]
    #[arg(long, value_name = "DURATION")]
    pub max_silent_time: Option<String>,
    /// Memory of each process of a build, e.g. `4G`; `0`: no limit [default: half the
    /// machine's memory]
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// Most processes and threads a build may have at once; `0`: no limit [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_processes: Option<u32>,
}

impl BuildFlags {
    /// How builds run: the helper, `--keep-failed` and the default limits (a derivation's
    /// own limits win over these).
    pub fn sandbox(&self, helper: &std::path::Path) -> Result<SandboxConfig, CliError> {
        use crate::store::limits::{parse_duration_ms, parse_size};
        let mut limits = DefaultLimits::default();
        let flag = |name: &str, text: &str, parse: fn(&str) -> Result<u64, String>| {
            parse(text)
                .map(|n| (n > 0).then_some(n))
                .map_err(|e| CliError::user(format!("`--{name}`: {e}")))
        };
        if let Some(t) = &self.timeout {
            limits.timeout_ms = flag("timeout", t, parse_duration_ms)?;
        }
        if let Some(t) = &self.max_silent_time {
            limits.silence_ms = flag("max-silent-time", t, parse_duration_ms)?;
        }
        if let Some(t) = &self.max_memory {
            limits.memory_bytes = flag("max-memory", t, parse_size)?;
        }
        if let Some(n) = self.max_processes {
            limits.processes = (n > 0).then_some(n);
        }
        Ok(SandboxConfig {
            helper: helper.to_owned(),
            keep_failed: self.keep_failed,
            limits,
        })
    }

    pub fn options(&self) -> Result<BuildOptions, CliError> {
        let mut options = BuildOptions::default();
        if let Some(jobs) = self.jobs {
            if jobs == 0 {
                return Err(CliError::user("`--jobs` must be at least 1"));
            }
            options.jobs = jobs;
        }
        options.keep_going = self.keep_going;
        if self.max_dao_depth == 0 {
            return Err(CliError::user("`--max-dao-depth` must be at least 1"));
        }
        options.dao_limits.max_depth = self.max_dao_depth;
        Ok(options)
    }
}

/// Whether unpinned fetches are refused: `--locked`, or `CI=true` in the environment.
pub fn locked(flag: bool) -> bool {
    flag || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

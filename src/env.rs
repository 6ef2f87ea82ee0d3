//! Every `BRAMBLE_*` environment variable Bramble reads, declared once.

/// Root of the local store and its database (`store/`, `db.sqlite`, `gcroots/`, `tmp/`,
/// `locks/`). Default: `$XDG_DATA_HOME/bramble`, else `~/.local/share/bramble`; resolved by
/// `store::local::default_home`.
pub const BRAMBLE_HOME: &str = "BRAMBLE_HOME";

/// Log filter for diagnostics (`tracing` syntax, e.g. `bramble=debug`); `RUST_LOG` also works.
pub const BRAMBLE_LOG: &str = "BRAMBLE_LOG";

/// Path of the `bramble-sandbox` helper. Default: next to the running `bramble` binary.
pub const BRAMBLE_SANDBOX: &str = "BRAMBLE_SANDBOX";

/// How many times a failed download is retried (connection errors, timeouts, 5xx), with
/// exponential backoff from half a second. Default: 4.
pub const BRAMBLE_FETCH_RETRIES: &str = "BRAMBLE_FETCH_RETRIES";

/// Largest download a fetch accepts (`512M`, `32G`, bytes). Default: 16 GiB.
pub const BRAMBLE_MAX_DOWNLOAD: &str = "BRAMBLE_MAX_DOWNLOAD";

/// Largest total of file bytes one unpacked archive may write (`512M`, `32G`, bytes).
/// Default: 16 GiB.
pub const BRAMBLE_MAX_UNPACKED: &str = "BRAMBLE_MAX_UNPACKED";

/// Most entries (files, directories, links) one unpacked archive may have. Default: 1048576.
pub const BRAMBLE_MAX_UNPACKED_ENTRIES: &str = "BRAMBLE_MAX_UNPACKED_ENTRIES";

/// Directory of Bramble's Starlark standard library (`load("bramble/...")`). Default: the
/// first that exists of `<dir of bramble>/../share/bramble/lib` (an installed bramble) and
/// the `lib/` of the source tree bramble was built from.
pub const BRAMBLE_LIB: &str = "BRAMBLE_LIB";

/// Path of the `bramble-debian` program that Debian package sets run in the sandbox
/// (`lib/debian.bramble`). Default: next to the running `bramble` binary.
pub const BRAMBLE_DEBIAN_TOOL: &str = "BRAMBLE_DEBIAN_TOOL";

/// Path of the `bramble-go` program that Go module builds run in the sandbox
/// (`lib/go.bramble`). Default: next to the running `bramble` binary.
pub const BRAMBLE_GO_TOOL: &str = "BRAMBLE_GO_TOOL";

/// When bramble runs as root, the range of unprivileged host ids its builders run as,
/// `<base>:<count>` (one id per sandbox: base + the helper's pid modulo count). Default:
/// `880803840:4194304`, just above Nix's `auto-allocate-uids` range. Read by the build
/// engine and by `bramble-sandbox` (see `bramble_sandbox::ids`); set it to a range the user
/// namespace maps when root's is limited (a container's root).
pub const BRAMBLE_SANDBOX_IDS: &str = bramble_sandbox::SANDBOX_IDS_VAR;

/// Prefix of the variables naming the base URLs of a `mirror://NAME/...` mirror:
/// `BRAMBLE_MIRROR_<NAME>` (upper case, `-` written `_`; e.g. `BRAMBLE_MIRROR_DEBIAN_SECURITY`),
/// several base URLs separated by white space, tried in order. Takes precedence over
/// `bramble.toml`, the user's config file and the apt sources (`engine::fetch::mirror`).
pub const BRAMBLE_MIRROR_PREFIX: &str = "BRAMBLE_MIRROR_";

/// The variable of mirror `name` ([`BRAMBLE_MIRROR_PREFIX`]).
pub fn mirror_var(name: &str) -> String {
    format!(
        "{BRAMBLE_MIRROR_PREFIX}{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// The root directory whose `etc/apt` sources give the default base URLs of `mirror://debian`
/// and `mirror://debian-security`. Default: `/`. Tests point it at a fixture directory so
/// they never read the machine's apt sources.
pub const BRAMBLE_APT_ROOT: &str = "BRAMBLE_APT_ROOT";

//! Every `BRAMBLE_*` environment variable Bramble reads, declared once.

/// Root of the local store and its database (`store/`, `db.sqlite`, `gcroots/`, `tmp/`,
/// `locks/`). Default: `$XDG_DATA_HOME/bramble`, else `~/.local/share/bramble`; resolved by
/// `store::local::default_home`.
pub const BRAMBLE_HOME: &str = "BRAMBLE_HOME";

/// Log filter for diagnostics (`tracing` syntax, e.g. `bramble=debug`); `RUST_LOG` also works.
pub const BRAMBLE_LOG: &str = "BRAMBLE_LOG";

/// Path of the `bramble-sandbox` helper. Default: next to the running `bramble` binary.
pub const BRAMBLE_SANDBOX: &str = "BRAMBLE_SANDBOX";

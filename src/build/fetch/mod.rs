//! Fetchers.

pub mod git;
pub mod unpack;
pub mod url;

#[cfg(test)]
#[path = "../../../tests/support/http.rs"]
pub(crate) mod test_http;

/// Progress of downloads, reported from any thread.
pub trait Progress: Send + Sync {
    /// `done` bytes of `url` arrived, of `total` if the server said.
    fn download(&self, url: &str, done: u64, total: Option<u64>);
}

/// Ignores progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn download(&self, _url: &str, _done: u64, _total: Option<u64>) {}
}

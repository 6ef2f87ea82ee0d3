//! The engine side of fetching: an [`Executor`] that runs fetch derivations in the main
//! process (they need the network, which no sandbox has) and hands every other derivation to
//! the inner executor (the sandbox, with an empty network namespace).
//!
//! A fetch's result is staged like any build output at its placeholder and added by the
//! scheduler; since it holds no references and no placeholder, its store path is the
//! content address the pin names. With a content-hash pin whose path is already valid,
//! nothing is downloaded: the stored object is staged again.

use super::{FetchError, FetchRequest, Fetcher};
use crate::build::{Built, Cancel, ExecError, Executor, Job, StagedOutput};
use crate::store::local::error_chain;
use crate::store::tree::{self, DumpOptions, RestoreOptions};

/// Runs fetch derivations itself and everything else with `inner`.
#[derive(Debug)]
pub struct WithFetchers<E> {
    pub inner: E,
    pub fetcher: Fetcher,
}

fn exec_error(e: &FetchError) -> ExecError {
    let mut message = error_chain(e);
    if let Some(hint) = e.hint() {
        message.push_str("\nhint: ");
        message.push_str(&hint);
    }
    ExecError::Setup { message }
}

impl<E: Executor> Executor for WithFetchers<E> {
    /// The inner executor's preparation, for a derivation that is not a fetch.
    type Prepared = Option<E::Prepared>;

    fn prepare(&self, job: &Job) -> Result<Option<E::Prepared>, ExecError> {
        match FetchRequest::from_derivation(&job.drv) {
            Ok(None) => self.inner.prepare(job).map(Some),
            // A fetch (or a malformed one, reported by `execute`) runs here.
            _ => Ok(None),
        }
    }

    async fn execute(
        &self,
        job: Job,
        prepared: Option<E::Prepared>,
        cancel: Cancel,
    ) -> Result<Built, ExecError> {
        let req = match (FetchRequest::from_derivation(&job.drv), prepared) {
            (Ok(None), Some(prepared)) => return self.inner.execute(job, prepared, cancel).await,
            (Ok(None), None) => {
                return Err(ExecError::Setup {
                    message: format!("the build of `{}` was not prepared", job.drv.name),
                });
            }
            (Ok(Some(req)), _) => req,
            (Err(e), _) => return Err(exec_error(&e)),
        };
        tokio::select! {
            r = self.stage(&req, &job) => r,
            () = cancel.cancelled() => Err(ExecError::Cancelled),
        }
    }
}

impl<E> WithFetchers<E> {
    async fn stage(&self, req: &FetchRequest, job: &Job) -> Result<Built, ExecError> {
        let store_err = |e: crate::store::local::Error| ExecError::Setup {
            message: error_chain(&e),
        };
        let tmp = self.fetcher.store.tmp_dir("fetch").map_err(store_err)?;
        let stored = match req.expected_path() {
            Some(path) if self.fetcher.store.is_valid(&path).map_err(store_err)? => Some(path),
            _ => None,
        };
        let out = match stored {
            Some(path) => {
                let (from, to) = (self.fetcher.store.host_path(&path), tmp.path().join("out"));
                let copied = to.clone();
                tokio::task::spawn_blocking(move || {
                    tree::copy(
                        &from,
                        &to,
                        &DumpOptions::default(),
                        RestoreOptions {
                            read_only: false,
                            fsync: false,
                        },
                    )
                })
                .await
                .map_err(|e| ExecError::Setup {
                    message: e.to_string(),
                })?
                .map_err(|e| ExecError::Setup {
                    message: error_chain(&e),
                })?;
                copied
            }
            None => {
                self.fetcher
                    .fetch_to(req, tmp.path())
                    .await
                    .map_err(|e| exec_error(&e))?
                    .path
            }
        };
        Ok(Built {
            outputs: vec![StagedOutput {
                name: "out".to_owned(),
                placeholder: job.drv.placeholder(job.build_key, "out"),
                path: out,
                scratch: Some(tmp.path().to_owned()),
                required_refs: Vec::new(),
            }],
            workspace: Some(Box::new(tmp)),
        })
    }
}

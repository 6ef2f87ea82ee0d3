//! The engine side of fetching: an [`Executor`] that runs fetch derivations in the main
//! process (they need the network, which no sandbox has) and hands every other derivation to
//! the inner executor (the sandbox, with an empty network namespace).
//!
//! A fetch's result goes into the store here ([`Fetcher::fetch`]): it holds no references
//! and no placeholder, so its store path is the content address of its content. The
//! scheduler gets that path as an output already stored ([`StagedOutput::stored`]) and only
//! registers the realisation. With a pin whose result the store holds (the content hash's
//! path, or a file with the pinned sha256 fetched before), nothing is downloaded, copied
//! or hashed.

use super::{FetchError, FetchRequest, Fetcher};
use crate::engine::{Built, Cancel, ExecError, Executor, Job, SetupError, StagedOutput};

/// Runs fetch derivations itself and everything else with `inner`.
#[derive(Debug)]
pub struct FetchingExecutor<E> {
    pub inner: E,
    pub fetcher: Fetcher,
}

fn exec_error(e: FetchError) -> ExecError {
    ExecError::Fetch(Box::new(e))
}

impl<E: Executor> Executor for FetchingExecutor<E> {
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
                return Err(SetupError::NotPrepared {
                    drv: job.drv.name.clone(),
                }
                .into());
            }
            (Ok(Some(req)), _) => req,
            (Err(e), _) => return Err(exec_error(e.into())),
        };
        tokio::select! {
            r = self.stage(&req, &job) => r,
            () = cancel.cancelled() => Err(ExecError::Cancelled),
        }
    }
}

impl<E> FetchingExecutor<E> {
    /// Fetch `req` into the store ([`Fetcher::fetch`]: nothing is downloaded when the store
    /// already holds the pinned result) and hand the stored path to the scheduler, which
    /// registers it as the realisation with nothing copied or hashed again.
    async fn stage(&self, req: &FetchRequest, job: &Job) -> Result<Built, ExecError> {
        let fetched = self.fetcher.fetch(req).await.map_err(exec_error)?;
        let store = &self.fetcher.store;
        // Kept from gc until the realisation is registered (dropped with the workspace). The
        // lock may wait for another fetch adding the same path: off the async threads.
        let (held, path) = (store.clone(), fetched.path.clone());
        let hold = tokio::task::spawn_blocking(move || held.hold(&path))
            .await
            .map_err(|source| SetupError::Join { source })?
            .map_err(SetupError::Hold)?;
        Ok(Built {
            outputs: vec![StagedOutput {
                name: "out".to_owned(),
                placeholder: job.drv.placeholder(job.build_key, "out"),
                path: store.host_path(&fetched.path),
                scratch: None,
                stored: Some(fetched.path.clone()),
                required_refs: Vec::new(),
            }],
            workspace: Some(Box::new(hold)),
            fetched: fetched.record(req),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::engine::fake::FakeExecutor;
    use crate::engine::fetch::test_http::Server;
    use crate::engine::fetch::{FetchSpec, Pin};
    use crate::engine::{BuildStore, Cancel};
    use crate::store::local::LocalStore;

    #[test]
    fn a_pinned_fetch_the_store_holds_is_registered_without_copying() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(dir.path()).unwrap());
        let server = Server::start();
        server.file("/f.txt", "content\n");
        let executor = FetchingExecutor {
            inner: FakeExecutor::default(),
            fetcher: Fetcher::new(store.clone()),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut req = FetchRequest {
            spec: FetchSpec::Url {
                url: server.url("/f.txt"),
                unpack: None,
            },
            name: "f.txt".into(),
            pin: Pin::default(),
        };
        let run = |req: &FetchRequest| {
            let drv = req.to_derivation();
            let job = Job {
                drv_hash: drv.hash(),
                build_key: drv.hash(),
                drv: Arc::new(drv),
                inputs: BTreeSet::new(),
            };
            let prepared = executor.prepare(&job).unwrap();
            let built = rt
                .block_on(executor.execute(job.clone(), prepared, Cancel::new()))
                .unwrap();
            let paths = store
                .finish_build(
                    job.build_key,
                    job.drv_hash,
                    &built.outputs,
                    &job.inputs,
                    true,
                )
                .unwrap();
            (built, paths, job.build_key)
        };
        // First (unpinned): downloaded into the store and handed over as stored.
        let (built, paths, _) = run(&req);
        let path = built.outputs[0].stored.clone().unwrap();
        assert_eq!(paths["out"], path);
        assert_eq!(server.hits("/f.txt"), 1);
        drop(built);
        // The lock's pin is recorded: a new derivation, whose result the store holds. It is
        // neither downloaded nor copied into a staging directory: the scheduler registers
        // the stored path for the new build key.
        req.pin.hash = Some(store.path_info(&path).unwrap().unwrap().archive_hash);
        assert_eq!(req.expected_path(), Some(path.clone()));
        let (built, paths, key) = run(&req);
        assert_eq!(built.outputs[0].stored, Some(path.clone()));
        assert_eq!(built.outputs[0].path, store.host_path(&path));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(paths["out"], path);
        assert_eq!(store.realisation(key, "out").unwrap(), Some(path));
        assert_eq!(server.hits("/f.txt"), 1);
    }
}

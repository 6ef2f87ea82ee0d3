//! In-memory fakes of the store and the executor, for the scheduler's unit tests.
//!
//! The fake executor writes each output as a file whose content comes from the derivation:
//! env `content` (plus the output name) if set, else the resolved derivation's JSON — so an
//! output changes exactly when its inputs' content does, unless `content` pins it. Env `fail`
//! makes it fail, `sleep_ms` makes it take time, `hold_until_running = N` makes it wait until N
//! builds have run at once, `random` makes its content differ every run, `document` is written
//! verbatim (a DAO's document).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::store::{Hash, StorePath};

use crate::engine::{
    BuildStart, BuildStore, Built, Cancel, ExecError, Executor, Job, StagedOutput, StoreError,
};

#[derive(Debug, Default)]
pub struct FakeStore {
    realisations: Mutex<HashMap<(Hash, String), StorePath>>,
    /// The content of every output added, for DAO documents.
    contents: Mutex<HashMap<StorePath, Vec<u8>>>,
    locks: Arc<(Mutex<HashSet<Hash>>, Condvar)>,
    pub registrations: AtomicUsize,
}

#[derive(Debug)]
pub struct FakeLock {
    key: Hash,
    locks: Arc<(Mutex<HashSet<Hash>>, Condvar)>,
}

impl Drop for FakeLock {
    fn drop(&mut self) {
        self.locks.0.lock().unwrap().remove(&self.key);
        self.locks.1.notify_all();
    }
}

impl FakeStore {
    /// An added output (path, content) whose content contains `needle`.
    pub fn contents_matching(&self, needle: &str) -> Option<(StorePath, String)> {
        let contents = self.contents.lock().unwrap();
        contents.iter().find_map(|(path, content)| {
            let text = String::from_utf8_lossy(content);
            text.contains(needle)
                .then(|| (path.clone(), text.into_owned()))
        })
    }
}

impl FakeStore {
    /// The realised path of `output` for `key`, if registered.
    pub fn realisation(&self, key: Hash, output: &str) -> Result<Option<StorePath>, StoreError> {
        let map = self.realisations.lock().unwrap();
        Ok(map.get(&(key, output.to_owned())).cloned())
    }

    /// Take the exclusive build lock for `key`, waiting for other holders.
    fn lock_build(&self, key: Hash) -> FakeLock {
        let (set, cond) = &*self.locks;
        let mut held = set.lock().unwrap();
        while held.contains(&key) {
            held = cond.wait(held).unwrap();
        }
        held.insert(key);
        FakeLock {
            key,
            locks: self.locks.clone(),
        }
    }

    /// Add one staged output: its path is named after its content.
    fn add_output(&self, output: &StagedOutput) -> Result<StorePath, StoreError> {
        let content = std::fs::read(&output.path).map_err(|e| {
            StoreError::Fake(format!("cannot read `{}`: {e}", output.path.display()))
        })?;
        let path = StorePath::new(Hash::digest(&content), output.placeholder.name()).unwrap();
        self.contents.lock().unwrap().insert(path.clone(), content);
        Ok(path)
    }
}

impl BuildStore for FakeStore {
    type Lock = FakeLock;

    fn realisations(&self, wanted: &[(Hash, &str)]) -> Result<Vec<Option<StorePath>>, StoreError> {
        wanted
            .iter()
            .map(|(key, output)| self.realisation(*key, output))
            .collect()
    }

    fn start_build(
        &self,
        key: Hash,
        outputs: &[String],
        inputs: &BTreeSet<StorePath>,
        recheck: bool,
    ) -> Result<BuildStart<FakeLock>, StoreError> {
        let lock = self.lock_build(key);
        if recheck {
            let found: Vec<Option<StorePath>> = outputs
                .iter()
                .map(|o| self.realisation(key, o))
                .collect::<Result<_, _>>()?;
            if found.iter().all(Option::is_some) {
                let found = outputs.iter().cloned().zip(found.into_iter().flatten());
                return Ok(BuildStart::Realised(found.collect()));
            }
        }
        Ok(BuildStart::Build {
            lock,
            pins: Vec::new(),
            closure: inputs.clone(),
        })
    }

    fn finish_build(
        &self,
        key: Hash,
        _drv: Hash,
        outputs: &[StagedOutput],
        _inputs: &BTreeSet<StorePath>,
        register: bool,
    ) -> Result<BTreeMap<String, StorePath>, StoreError> {
        let mut paths = BTreeMap::new();
        for staged in outputs {
            let path = match &staged.stored {
                Some(stored) => stored.clone(),
                None => self.add_output(staged)?,
            };
            paths.insert(staged.name.clone(), path);
        }
        if register {
            let mut map = self.realisations.lock().unwrap();
            for (output, path) in &paths {
                map.insert((key, output.clone()), path.clone());
            }
            self.registrations.fetch_add(1, Ordering::SeqCst);
        }
        Ok(paths)
    }

    fn closure(&self, paths: &BTreeSet<StorePath>) -> Result<BTreeSet<StorePath>, StoreError> {
        Ok(paths.clone())
    }

    fn read_document(&self, output: &StorePath, limit: usize) -> Result<Vec<u8>, StoreError> {
        let contents = self.contents.lock().unwrap();
        let content = contents
            .get(output)
            .ok_or_else(|| StoreError::Fake(format!("no content for `{output}`")))?;
        Ok(content[..content.len().min(limit + 1)].to_vec())
    }
}

#[derive(Debug, Default)]
pub struct FakeExecutor {
    /// Names of the derivations run, in start order.
    pub started: Mutex<Vec<String>>,
    running: AtomicUsize,
    pub max_running: AtomicUsize,
    /// Woken whenever `max_running` grows.
    peak_grew: tokio::sync::Notify,
    counter: AtomicUsize,
}

impl FakeExecutor {
    pub fn runs_of(&self, name: &str) -> usize {
        let started = self.started.lock().unwrap();
        started.iter().filter(|n| *n == name).count()
    }

    pub fn total_runs(&self) -> usize {
        self.started.lock().unwrap().len()
    }
}

impl Executor for FakeExecutor {
    type Prepared = ();

    fn prepare(&self, _job: &Job) -> Result<(), ExecError> {
        Ok(())
    }

    async fn execute(&self, job: Job, (): (), cancel: Cancel) -> Result<Built, ExecError> {
        self.started.lock().unwrap().push(job.drv.name.clone());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        if self.max_running.fetch_max(now, Ordering::SeqCst) < now {
            self.peak_grew.notify_waiters();
        }
        let result = self.execute_inner(&job, &cancel).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

impl FakeExecutor {
    async fn execute_inner(&self, job: &Job, cancel: &Cancel) -> Result<Built, ExecError> {
        let env = &job.drv.env;
        if let Some(n) = env.get("hold_until_running") {
            let n: usize = n.parse().unwrap();
            loop {
                // Registered before the check, so a peak reached in between still wakes it.
                let grew = self.peak_grew.notified();
                if self.max_running.load(Ordering::SeqCst) >= n {
                    break;
                }
                tokio::select! {
                    () = grew => {}
                    () = cancel.cancelled() => return Err(ExecError::Cancelled),
                    () = tokio::time::sleep(Duration::from_secs(60)) => {
                        panic!("`{}` waited a minute for {n} builds at once", job.drv.name)
                    }
                }
            }
        }
        if let Some(ms) = env.get("sleep_ms") {
            let ms: u64 = ms.parse().unwrap();
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                () = cancel.cancelled() => return Err(ExecError::Cancelled),
            }
        }
        if env.contains_key("fail") {
            return Err(ExecError::Failed {
                status: "exited with code 1".into(),
                log_tail: vec!["boom".into()],
                kept: None,
                hint: None,
            });
        }
        let dir = tempfile::tempdir().unwrap();
        let mut outputs = Vec::new();
        for output in &job.drv.outputs {
            let mut content = match (env.get("document"), env.get("content")) {
                (Some(d), _) => d.clone(),
                (None, Some(c)) => format!("{c}:{output}"),
                (None, None) => format!("{}:{output}", job.drv.canonical_json()),
            };
            if env.contains_key("random") {
                let n = self.counter.fetch_add(1, Ordering::SeqCst);
                content.push_str(&n.to_string());
            }
            let path = dir.path().join(output);
            std::fs::write(&path, content).unwrap();
            outputs.push(StagedOutput {
                name: output.clone(),
                placeholder: job.drv.placeholder(job.build_key, output),
                path,
                scratch: None,
                required_refs: Vec::new(),
                stored: None,
            });
        }
        Ok(Built {
            outputs,
            workspace: Some(Box::new(dir)),
            fetched: None,
        })
    }
}

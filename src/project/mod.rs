//! Projects. On this branch only the lock file; the rest lands from `lang`.

pub mod lock;

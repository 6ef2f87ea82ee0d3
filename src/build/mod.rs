//! The build engine. On this branch only the fetchers; the engine itself lands from `build`.

pub mod fetch;

//! The integration tests: the real `bramble` binary (and its sandbox helper) against fixture
//! projects and local HTTP and git servers, in one test binary. Every test runs `bramble`
//! through [`support::runner`]: as an ordinary user (uid 65534 when the tests run as root),
//! with a private store and one environment policy.

mod support;

mod build_commands;
mod build_engine;
mod build_project;
mod dao;
mod debian;
mod errors;
mod fetch;
mod fetch_build;
mod fresh_user;
mod go;
mod go_modules;
mod hardening;
mod lang;
mod limits;
mod mirror;
mod rootless_store;
mod runner;
mod sandbox_isolation;
mod store;

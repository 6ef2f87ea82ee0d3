//! Fetchers.

pub mod unpack;

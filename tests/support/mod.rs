//! Helpers shared by the root package's integration tests.
//!
//! Each integration test is its own crate and includes this module with
//! `mod support;`, so not every helper is used by every test.

pub mod impair;
pub mod netns;
pub mod stackdump;
pub mod veth;

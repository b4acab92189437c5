//! hoard's integration tests, one crate so that hoard, aws-lc and jemalloc are linked once:
//! `cargo test --test it` runs them all, `cargo test --test it proxy::` one module.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod access;
mod admin;
mod ca;
mod cli;
mod crash;
mod docs;
mod e2e;
mod fills;
mod first_run;
mod fleet;
mod kubernetes;
mod lifecycle;
mod mirror;
mod mirror_h2;
mod ops;
mod packaging;
mod parent;
mod proxy;
mod setup;
mod shutdown;
mod tier;

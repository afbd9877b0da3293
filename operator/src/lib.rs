//! modelgate: a Kubernetes operator that releases machine-learning models safely.
//!
//! `api` holds the resources, `plan` the pure rollout decisions, `gates` the health
//! checks, `trust` the TUF client, `controller` the only
//! code that talks to the API server, `cli` the `modelgate` subcommands, `client` the connection to the API server, `plugin` the
//! `kubectl modelgate` verbs, `readers` what the last two read the same way, `workload` the objects a release
//! owns, rendered from its spec (no I/O).
#![forbid(unsafe_code)]
// Nothing a tenant or a repository writes may panic the operator: no unwrap, expect or
// indexing outside tests (the property tests in `proptests` drive the entry points).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

pub mod api;
pub mod cli;
pub mod client;
pub mod controller;
pub mod fetch_command;
pub mod gates;
pub mod metrics;
pub mod plan;
pub mod plugin;
#[cfg(test)]
mod proptests;
pub mod readers;
pub mod telemetry;
pub mod text;
pub mod trust;
pub mod workload;

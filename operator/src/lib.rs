//! modelgate: a Kubernetes operator that releases machine-learning models safely.
//!
//! `api` holds the resources, `plan` the pure rollout decisions, `gates` the health
//! checks, `trust` the TUF client, `controller` the only
//! code that talks to the API server, `cli` the `modelgate` subcommands, `plugin` the
//! `kubectl modelgate` verbs.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod gates;
pub mod metrics;
pub mod plan;
pub mod plugin;
pub mod telemetry;
pub mod trust;

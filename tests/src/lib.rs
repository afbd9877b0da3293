//! Harness for modelgate's end-to-end tests on the real control plane of
//! `tests/cluster/up`, and the simulated kubelet it runs.
#![forbid(unsafe_code)]

pub mod harness;
pub mod hostile;
pub mod images;
pub mod kubelet;
pub mod models;
pub mod node;
pub mod prometheus;
pub mod signing;
pub mod tuf;

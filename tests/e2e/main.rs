//! End-to-end tests on the real control plane (`tests/cluster/up`). One binary, so the
//! workspace links once; each test works in its own namespace.

mod admission;
mod availability;
mod chart;
mod crds;
mod docs;
mod images;
mod kubelet;
mod models;
mod node;
mod operator;
mod plugin;
mod provenance;
mod publishing;
mod repository;
mod roles;
mod rollout;
mod tenancy;
mod trust;
mod validation;

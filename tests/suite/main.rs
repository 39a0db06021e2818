//! End-to-end and property tests, built as one test binary with a module per topic.

mod abuse;
mod activity;
mod audit;
mod browser;
mod bundle;
mod cli;
mod demo;
mod deploy;
mod envoy;
mod faults;
mod guard_proof;
mod hardening;
mod jwks;
mod layers;
mod memo;
mod monitoring;
pub(crate) mod no_leak;
mod operations;
mod outbound_tls;
mod ownership;
mod policy_rules;
mod server;
mod support;
mod tls;
mod tooling;
mod views;

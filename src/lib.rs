//! acs-stream: a stream processor for TAO proctoring "ACS log" events.
//!
//! # Layout
//!
//! One event flows top to bottom through these modules (DESIGN.md §1):
//!
//! - [`model`]: plain data: the canonical [`model::Event`], its vocabularies, the reason catalog.
//! - [`decode`]: bytes → canonical event (any of the four upstream shapes), or a rejection
//!   with a dead-letter code; the checks run in a fixed, documented order.
//! - [`enrich`]: reason code → category (catalog), reason message → security signal.
//! - [`session`]: the session state machine per delivery execution, per input partition.
//! - [`rules`]: flag-alert rules (configuration, default set) and their evaluation on event
//!   time, after the session state, into alerts: plain facts (rule, severity, evidence,
//!   counts) that `encode` writes.
//! - [`incidents`]: one incident per session, its alerts aggregated into a review priority
//!   (alert families and budget, a decaying weighted score); kept in the session state.
//! - [`encode`]: every output record, one encoder per record type: enriched events
//!   (`encode::proto`, `encode::json`), alerts (`encode::alert`), incidents
//!   (`encode::incident`), dead letters (`encode::dead_letter`); topic routing.
//! - [`pipeline`]: `Pipeline::process(record, now)`: the pure core wiring the above.
//! - [`kafka`]: the Kafka edge: offset bookkeeping, client settings, the service loop.
//! - [`telemetry`]: metric names and handles (written by the Kafka edge), Prometheus recorder.
//! - [`admin`]: the HTTP edge: probes, `/metrics`, live sessions.
//! - [`config`]: typed configuration; defaults from `config/default.toml`; validation.
//! - [`commands`]: the drivers: `process` (files), `generate` (synthetic traffic, to a file
//!   or a cluster), `tail` (output topics as JSON lines), `check-config`, `demo` (the
//!   service on an in-process cluster); `run` is in `main.rs`.
//! - [`synth`]: deterministic synthetic traffic (benchmarks, demo, generator).
//!
//! Everything but `commands` and the Kafka edge (`kafka::client`, `kafka::runtime`) is
//! synchronous and pure: no I/O, no clock of its own.

#![forbid(unsafe_code)]

pub mod admin;
pub mod commands;
pub mod config;
pub mod decode;
pub mod encode;
pub mod enrich;
pub mod incidents;
pub mod kafka;
pub mod model;
pub mod pipeline;
pub mod privacy;
pub mod rules;
pub mod session;
pub mod synth;
pub mod telemetry;

/// The processor's version, as published in lineage fields and headers.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

//! Kafka edge: the parts of the runtime that talk about Kafka concepts (topics, partitions,
//! offsets, delivery acknowledgements, transactions) around the pure core.
//!
//! - [`offsets`]: at-least-once offset bookkeeping: which input offset may be committed once
//!   the broker has acknowledged every output derived from the input records before it.
//!   Pure and synchronous (no rdkafka, no async runtime, no clock).
//! - [`client`]: librdkafka settings, one builder per client, correctness settings fixed.
//! - [`restore`]: reading changelog partitions back (the state of newly assigned partitions).
//! - [`repartition`]: input not keyed by session, re-keyed through an internal topic.
//! - [`runtime`]: how the service is started and what it reports ([`runtime::run`]).
//! - `service`: the loop on its own thread: consume → core → produce, commits, shutdown.
//! - `plan`: the pure step from what the core made of a record to the records to produce.
//! - `outbox`: producing, and settling delivery reports (fallbacks of refused outputs).
//! - `delivery`: the one seam of the delivery guarantee: at least once, or exactly once.
//! - `rebalance`: the consumer's callbacks: revoke, assign, statistics.
//! - `shared`: the state the loop and the callbacks share: partitions, their state, counts.
//! - [`health`]: the heartbeat and readiness behind `/healthz` and `/readyz`.
//! - `topics`: topic creation. `events`: each noteworthy event's log line and metric.

pub mod client;
mod delivery;
mod events;
pub mod health;
pub mod offsets;
mod outbox;
mod plan;
mod rebalance;
pub mod repartition;
pub mod restore;
pub mod runtime;
mod service;
mod shared;
mod topics;

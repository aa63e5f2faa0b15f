//! Kafka edge: the parts of the runtime that talk about Kafka concepts (topics, partitions,
//! offsets, delivery acknowledgements) around the pure core.
//!
//! - [`offsets`]: at-least-once offset bookkeeping: which input offset may be committed once
//!   the broker has acknowledged every output derived from the input records before it.
//!   Pure and synchronous (no rdkafka, no async runtime, no clock).
//! - [`client`]: librdkafka settings, one builder per client, correctness settings fixed.
//! - [`restore`]: reading changelog partitions back (the state of newly assigned partitions).
//! - [`repartition`]: input not keyed by session, re-keyed through an internal topic.
//! - [`runtime`]: the service loop: consume → core → produce, commits, rebalances, shutdown.

pub mod client;
pub mod offsets;
pub mod repartition;
pub mod restore;
pub mod runtime;

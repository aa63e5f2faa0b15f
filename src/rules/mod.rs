//! Flag alerts (DESIGN.md §6): rules from configuration ([`config`]; the defaults in
//! `config/rules.toml`), evaluated on event time by [`engine::evaluate`] into [`Alert`]s
//! ([`alert`], with their JSON contract). Pure and synchronous; not wired into the
//! pipeline yet.
//!
//! Wiring (to come): evaluate after `Sessions::apply` with the event's [`SessionView`]; keep
//! a session's [`RuleState`] beside its session state (same changelog record, same expiry),
//! and a tenant's [`RuleState`] keyed by tenant (tenant-scoped rules see only the events of
//! the partitions that hold it); publish [`Alert::to_json`] (or a protobuf message) to
//! `output.alerts_topic`, keyed by delivery execution (tenant for tenant scope).
//!
//! [`SessionView`]: crate::model::SessionView

pub mod alert;
pub mod config;
pub mod engine;

pub use alert::{Alert, Evidence, EvidenceCode};
pub use config::{GroupBy, Rule, RuleSet, RulesError, Scope, Severity};
pub use engine::{RuleState, evaluate};

#[cfg(test)]
mod tests;

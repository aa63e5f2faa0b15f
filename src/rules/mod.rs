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
pub use engine::{RuleState, Tenant, evaluate, evaluate_tenant};

/// The rules' state of one session (or, on the tenant side, one tenant), kept by the session
/// store beside the session's state, in the same changelog record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionRules {
    pub state: RuleState,
    /// The alerts fired by events not known to be committed yet, with the position of the
    /// event that fired them. An event processed again after a crash finds its session
    /// restored past it and is not counted again; it fires these again instead, since the
    /// crash may have lost them while the state change was already durable. Forgotten once
    /// the input is committed past them.
    pub fired: Vec<Fired>,
}

/// An alert, and the position of the event that fired it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub position: i64,
    pub alert: Alert,
}

#[cfg(test)]
mod tests;

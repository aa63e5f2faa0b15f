//! Flag alerts (DESIGN.md §6): rules from configuration ([`config`]; the defaults in
//! `config/rules.toml`), evaluated on event time by [`engine::evaluate`] into [`Alert`]s
//! ([`alert`]: the facts; their records, JSON and protobuf, are written by
//! [`crate::encode::alert`]). Pure and synchronous.
//!
//! Wiring: [`crate::pipeline::Pipeline::process`] evaluates after `Sessions::apply`, with
//! the event's [`SessionView`]; a session's [`RuleState`] lives beside its session state
//! ([`SessionRules`], in the same changelog record, with the same expiry). Tenant-scoped
//! rules the event matches are listed by [`evaluate_into`] and counted by
//! [`evaluate_tenant_into`]: in place, right after the session's rules
//! ([`evaluate_inline_into`]: `process`, or no tenant topic), or where the tenant's partition
//! is, the Kafka runtime re-keying the event by tenant through the tenant topic
//! ([`Tenant::Forward`]). Either way the tenant's state sees only the events that match one
//! of its rules.
//!
//! [`SessionView`]: crate::model::SessionView

pub mod alert;
pub mod config;
pub mod engine;

pub use alert::{Alert, AlertView, Evidence, EvidenceCode};
pub use config::{GroupBy, Rule, RuleMode, RuleSet, RulesError, Scope, Severity, Trigger};
pub use engine::{
    Forwarded, RuleState, Tenant, evaluate, evaluate_inline_into, evaluate_into, evaluate_tenant, evaluate_tenant_into,
    forward_again, silence_into,
};

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
    /// The session's incident: its alerts aggregated (session entries only; `None` before the
    /// first alert and before the session ends).
    pub incident: Option<Box<crate::incidents::Incident>>,
}

/// An alert, and the position of the event that fired it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub position: i64,
    /// Its output record, as first published (kept without a copy, published again as is).
    pub alert: crate::encode::Alerted,
}

#[cfg(test)]
mod tests;

//! Flag alerts (DESIGN.md §6): rules from configuration ([`config`]; the defaults in
//! `config/rules.toml`), evaluated on event time by [`engine::evaluate`] into [`Alert`]s
//! ([`alert`]: the facts; their records, JSON and protobuf, are written by
//! [`crate::encode::alert`]). Pure and synchronous.
//!
//! Wiring: [`crate::pipeline::Pipeline::process`] evaluates after `Sessions::apply`, with
//! the event's [`SessionView`]; a session's [`RuleState`] lives beside its session state
//! (`session::SessionRules`, in the same changelog record, with the same expiry). Tenant-scoped
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

#[cfg(test)]
mod tests;

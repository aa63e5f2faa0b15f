//! Flag alerts (DESIGN.md §6): rules from configuration ([`config`]; the defaults in
//! `config/rules.toml`), evaluated on event time by [`engine::evaluate`] into [`Alert`]s
//! ([`alert`], with their JSON contract). Pure and synchronous; not wired into the
//! pipeline yet.

pub mod alert;
pub mod config;
pub mod engine;

pub use alert::{Alert, Evidence, EvidenceCode};
pub use config::{GroupBy, Rule, RuleSet, RulesError, Scope, Severity};
pub use engine::{RuleState, evaluate};

#[cfg(test)]
mod tests;

//! Flag alerts (DESIGN.md §6): rules from configuration ([`config`]; the defaults in
//! `config/rules.toml`). Pure and synchronous; not wired into the pipeline yet.

pub mod config;

pub use config::{GroupBy, Rule, RuleSet, RulesError, Scope, Severity};

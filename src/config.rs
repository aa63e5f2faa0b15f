//! Configuration: typed, with every default in `config/default.toml` (embedded).
//!
//! Layers, each over the previous: the embedded defaults → the `--config` file →
//! environment variables `ACS_STREAM__<SECTION>__<KEY>` (values read as TOML when they
//! parse as a TOML value, else as a string). Unknown keys are refused; cross-field checks
//! run in [`Config::validate`] and name the key at fault.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::decode::{Decoder, TenantPolicy};
use crate::encode::route::{TopicTemplate, check_topic_name};
use crate::encode::{Format, route};
use crate::model::ReasonCatalog;

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "ACS_STREAM__";

/// Largest accepted `input.max_event_bytes` (Kafka's own ceiling for a record is lower).
const MAX_EVENT_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub input: InputConfig,
    pub tenants: TenantsConfig,
    pub output: OutputConfig,
    pub catalog: CatalogConfig,
}

/// `[input]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Records larger than this are dead-lettered with `too_large`.
    pub max_event_bytes: usize,
}

/// `[tenants]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    /// When non-empty, the only tenants accepted (`unknown_tenant` otherwise).
    pub allow: Vec<String>,
}

/// `[output]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Per-tenant events topic template.
    pub events_topic: String,
    /// Per-tenant alerts topic template.
    pub alerts_topic: String,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
    /// Encoding of event and alert values.
    pub format: Format,
}

/// `[catalog]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// A catalog file extending the built-in reason catalog; empty for none.
    pub file: PathBuf,
}

/// A configuration that cannot be used. The message names the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("catalog.file ({path}): {source}")]
    Catalog { path: PathBuf, source: crate::model::catalog::CatalogError },
}

impl Config {
    /// The defaults alone.
    pub fn defaults() -> Config {
        Config::layered(None, std::iter::empty()).expect("the embedded defaults are valid")
    }

    /// Defaults → file (if any) → environment overrides, validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?,
            )),
            None => None,
        };
        let text = text.as_ref().map(|(origin, text)| (origin.as_str(), text.as_str()));
        Config::layered(text, std::env::vars())
    }

    /// Builds from an optional file text (with its name for messages) and environment pairs.
    pub fn layered(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(DEFAULT_TOML)
            .map_err(|e| ConfigError::Parse { origin: "embedded defaults".into(), message: e.to_string() })?;
        if let Some((origin, text)) = file {
            let overlay: toml::Table = toml::from_str(text)
                .map_err(|e| ConfigError::Parse { origin: origin.into(), message: e.to_string() })?;
            merge(&mut table, overlay);
        }
        for (name, value) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            merge(&mut table, env_overlay(&keys, &value));
        }
        let config: Config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: "configuration".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        if self.input.max_event_bytes == 0 || self.input.max_event_bytes > MAX_EVENT_BYTES_CEILING {
            return Err(invalid(
                "input.max_event_bytes",
                format!("is {}; expected 1 to {MAX_EVENT_BYTES_CEILING}", self.input.max_event_bytes),
            ));
        }
        let events = self.events_template().map_err(|e| invalid("output.events_topic", e.to_string()))?;
        let alerts = self.alerts_template().map_err(|e| invalid("output.alerts_topic", e.to_string()))?;
        if events == alerts {
            return Err(invalid("output.alerts_topic", "must differ from output.events_topic".into()));
        }
        check_topic_name(&self.output.dead_letter_topic)
            .map_err(|e| invalid("output.dead_letter_topic", e.to_string()))?;
        if self.output.dead_letter_topic.contains(route::TENANT_PLACEHOLDER) {
            return Err(invalid("output.dead_letter_topic", "is one topic for all tenants: no {tenant}".into()));
        }
        let policy = self.tenant_policy();
        for tenant in &self.tenants.allow {
            policy.check_syntax(tenant, &format_args!("{tenant:?}")).map_err(|e| invalid("tenants.allow", e.detail))?;
        }
        Ok(())
    }

    pub fn events_template(&self) -> Result<TopicTemplate, route::TopicError> {
        TopicTemplate::parse(&self.output.events_topic)
    }

    pub fn alerts_template(&self) -> Result<TopicTemplate, route::TopicError> {
        TopicTemplate::parse(&self.output.alerts_topic)
    }

    /// Tenant rules: topic-name syntax within the longest template, and the allow-list.
    pub fn tenant_policy(&self) -> TenantPolicy {
        let fixed = [&self.output.events_topic, &self.output.alerts_topic]
            .iter()
            .filter_map(|t| TopicTemplate::parse(t).ok())
            .map(|t| t.fixed_len())
            .max()
            .unwrap_or(0);
        let allow: Option<HashSet<String>> =
            (!self.tenants.allow.is_empty()).then(|| self.tenants.allow.iter().cloned().collect());
        TenantPolicy::new(fixed, allow)
    }

    pub fn decoder(&self) -> Decoder {
        Decoder { max_event_bytes: self.input.max_event_bytes, tenants: self.tenant_policy() }
    }

    /// The reason catalog: built in, extended by `catalog.file` when set.
    pub fn catalog(&self) -> Result<ReasonCatalog, ConfigError> {
        if self.catalog.file.as_os_str().is_empty() {
            return Ok(ReasonCatalog::builtin());
        }
        let path = &self.catalog.file;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        ReasonCatalog::from_toml(&text).map_err(|source| ConfigError::Catalog { path: path.clone(), source })
    }
}

/// Lays `overlay` over `base`, table by table.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(overlay)) => merge(inner, overlay),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `ACS_STREAM__OUTPUT__FORMAT=json` → `{output = {format = "json"}}`.
fn env_overlay(keys: &[String], raw: &str) -> toml::Table {
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut value = value;
    for key in keys.iter().rev() {
        value = toml::Value::Table(toml::Table::from_iter([(key.clone(), value)]));
    }
    match value {
        toml::Value::Table(table) => table,
        _ => toml::Table::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_come_from_the_embedded_file() {
        let config = Config::defaults();
        assert_eq!(config.input.max_event_bytes, 1_048_576);
        assert_eq!(config.output.events_topic, "acs.{tenant}.events");
        assert_eq!(config.output.dead_letter_topic, "acs.dlq");
        assert_eq!(config.output.format, Format::Protobuf);
        assert!(config.tenants.allow.is_empty());
        assert_eq!(config.tenant_policy().max_len(), 249 - "acs..events".len());
    }

    #[test]
    fn a_file_then_the_environment_override_the_defaults() {
        let file = "[output]\nformat = \"json\"\n[tenants]\nallow = [\"acme\"]\n";
        let config = Config::layered(
            Some(("f.toml", file)),
            env(&[
                ("ACS_STREAM__INPUT__MAX_EVENT_BYTES", "2048"),
                ("ACS_STREAM__OUTPUT__DEAD_LETTER_TOPIC", "dead.letters"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.output.format, Format::Json);
        assert_eq!(config.tenants.allow, vec!["acme"]);
        assert_eq!(config.input.max_event_bytes, 2048);
        assert_eq!(config.output.dead_letter_topic, "dead.letters");
        assert_eq!(config.output.events_topic, "acs.{tenant}.events", "untouched keys keep their default");
    }

    #[test]
    fn bad_configurations_name_the_key() {
        let cases = [
            ("[output]\nevents_topic = \"acs.events\"\n", "output.events_topic"),
            ("[output]\nalerts_topic = \"acs/{tenant}\"\n", "output.alerts_topic"),
            ("[output]\nalerts_topic = \"acs.{tenant}.events\"\n", "must differ"),
            ("[output]\ndead_letter_topic = \"acs.{tenant}.dlq\"\n", "output.dead_letter_topic"),
            ("[output]\nformat = \"avro\"\n", "unknown variant"),
            ("[output]\ncolour = 1\n", "unknown field `colour`"),
            ("[inputs]\nmax_event_bytes = 1\n", "unknown field `inputs`"),
            ("[input]\nmax_event_bytes = 0\n", "input.max_event_bytes"),
            ("[tenants]\nallow = [\"a b\"]\n", "tenants.allow"),
            ("[input\n", "f.toml"),
        ];
        for (text, needle) in cases {
            let error = Config::layered(Some(("f.toml", text)), []).expect_err(text).to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn a_missing_catalog_file_is_an_error() {
        let config = Config::layered(Some(("f", "[catalog]\nfile = \"/nonexistent/catalog.toml\"\n")), []).unwrap();
        assert!(config.catalog().unwrap_err().to_string().contains("/nonexistent/catalog.toml"));
    }
}

//! SIGHUP: the rules and the reason catalog read again from the files the configuration
//! names, validated whole, then swapped into the running pipeline (every clone of it) from
//! the next record on. A file that does not validate changes nothing: the rules and catalog
//! in force stay. Either way the outcome is logged and counted
//! (`acs_stream_config_reloads_total{result}`), in this one place.
//!
//! State kept for a rule that is no longer there is dropped as its session or tenant is next
//! met; a rule that is new starts counting from the next event.

use crate::config::{Config, ConfigError};
use crate::pipeline::Pipeline;
use crate::telemetry;

/// What a reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    pub rules: usize,
}

/// Reads and validates `config`'s rules and catalog files, and swaps them into `pipeline`;
/// on error nothing changes.
pub fn reload(config: &Config, pipeline: &Pipeline) -> Result<Reloaded, ConfigError> {
    let loaded = config.rules().and_then(|rules| Ok((rules, config.catalog()?)));
    match loaded {
        Ok((rules, catalog)) => {
            let reloaded = Reloaded { rules: rules.rules().len() };
            telemetry::describe_rules(&rules);
            pipeline.reload(rules, catalog);
            let stamp = pipeline.stamp();
            telemetry::config_info(&stamp, pipeline.privacy().key_id());
            metrics::counter!(telemetry::CONFIG_RELOADS, "result" => "ok").increment(1);
            tracing::info!(rules = reloaded.rules, rules_version = %stamp.rules_version,
                           catalog_version = %stamp.catalog_version, "Reloaded the rules and the reason catalog.");
            Ok(reloaded)
        }
        Err(error) => {
            metrics::counter!(telemetry::CONFIG_RELOADS, "result" => "failed").increment(1);
            tracing::error!(%error, "Reload refused; the rules and catalog in force stay.");
            Err(error)
        }
    }
}

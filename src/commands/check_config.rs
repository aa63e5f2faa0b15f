//! `acs-stream check-config FILE`: validates any file shipped in `config/`, recognizing
//! which kind it is from its top-level keys (see [`recognize`]):
//!
//! - a reason catalog (`code` array of tables or `replace_builtin`): read as
//!   [`ReasonCatalog::from_toml`] would;
//! - a rules file (`rule` array of tables): read and validated as [`RuleSet::from_toml`]
//!   would (errors name the rule id and the key);
//! - otherwise a service configuration: loaded exactly as `run` loads it — embedded
//!   defaults → the file → the `ACS_STREAM__*` environment overrides — validated, and the
//!   catalog file it names (relative to the current directory) read.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::model::ReasonCatalog;
use crate::model::catalog::CatalogFile;
use crate::pipeline::Pipeline;
use crate::rules::RuleSet;

/// What a configuration file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The service configuration (`--config`), laid over `config/default.toml`.
    Service,
    /// A reason catalog extension (`catalog.file`).
    Catalog,
    /// A rules file.
    Rules,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "service configuration",
            Kind::Catalog => "reason catalog",
            Kind::Rules => "rules file",
        })
    }
}

/// Why a file does not check. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a TOML file: {message}")]
    NotToml { path: PathBuf, message: String },
    #[error("{path}: invalid {kind}: {message}")]
    Invalid { path: PathBuf, kind: Kind, message: String },
}

/// The kind of a parsed file, from its top-level keys. A new kind is one arm here and one
/// in [`check`].
pub fn recognize(table: &toml::Table) -> Kind {
    let has = |key: &str| table.contains_key(key);
    if has("rule") {
        Kind::Rules
    } else if has("code") || has("replace_builtin") {
        Kind::Catalog
    } else {
        Kind::Service
    }
}

/// Checks `path`; `env` are the environment variables applied to a service configuration
/// (`std::env::vars()` in the command, as in `run`). Returns the file's kind when valid.
pub fn check(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Kind, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Read { path: path.to_owned(), source })?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| CheckError::NotToml { path: path.to_owned(), message: e.to_string() })?;
    let kind = recognize(&table);
    let checked = match kind {
        Kind::Service => check_service(path, &text, env),
        Kind::Catalog => check_catalog(&text),
        Kind::Rules => check_rules(path, &text),
    };
    checked.map_err(|message| CheckError::Invalid { path: path.to_owned(), kind, message })?;
    Ok(kind)
}

/// As `run` loads it: layers, validation, the catalog and rules files it names, the pipeline.
fn check_service(path: &Path, text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<(), String> {
    let origin = path.display().to_string();
    let config = Config::layered(Some((&origin, text)), env).map_err(|e| e.to_string())?;
    let catalog = config.catalog().map_err(|e| e.to_string())?;
    let rules = config.rules().map_err(|e| e.to_string())?;
    Pipeline::new(&config, catalog).map_err(|e| e.to_string())?.with_rules(rules);
    Ok(())
}

fn check_rules(path: &Path, text: &str) -> Result<(), String> {
    RuleSet::from_toml(&path.display().to_string(), text).map_err(|e| e.to_string())?;
    Ok(())
}

fn check_catalog(text: &str) -> Result<(), String> {
    // The file's structure first, for a message that points at the line and key.
    toml::from_str::<CatalogFile>(text).map_err(|e| e.to_string())?;
    ReasonCatalog::from_toml(text).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(text: &str) -> Kind {
        recognize(&toml::from_str(text).unwrap())
    }

    #[test]
    fn files_are_recognized_by_their_top_level_keys() {
        assert_eq!(kind_of("[[rule]]\nname = \"x\"\n"), Kind::Rules);
        assert_eq!(kind_of("[[code]]\ncode = 1\n"), Kind::Catalog);
        assert_eq!(kind_of("replace_builtin = true\n"), Kind::Catalog);
        assert_eq!(kind_of("[output]\nformat = \"json\"\n"), Kind::Service);
        assert_eq!(kind_of(""), Kind::Service);
    }
}

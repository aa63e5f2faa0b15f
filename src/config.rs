//! Configuration: typed, with every default in `config/default.toml` (embedded).
//!
//! Layers, each over the previous: the embedded defaults → the `--config` file →
//! environment variables `ACS_STREAM__<SECTION>__<KEY>` (values read as TOML when they
//! parse as a TOML value, else as a string). Unknown keys are refused; cross-field checks
//! run in [`Config::validate`] and name the key at fault.
//!
//! Passthrough maps (`kafka.consumer`, `kafka.producer`, `topics.configs`) hold dotted
//! keys (`fetch.min.bytes`). In a file the key may be quoted (`"fetch.min.bytes" = 1`) or
//! written as TOML dotted keys (`fetch.min.bytes = 1`): nested tables are flattened back
//! into one dotted key. Values may be strings, integers or booleans and are kept as
//! strings. From the environment, `ACS_STREAM__KAFKA__CONSUMER__FETCH_MIN_BYTES=1` sets
//! `fetch.min.bytes`: the part after the map's name is lowercased and every `_` becomes
//! `.` (so a key containing `_` can only be set in a file); the value is taken as-is.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
/// Stands for the consumer group in `sessions.changelog_topic` and `input.repartition_topic`.
pub const GROUP_PLACEHOLDER: &str = "{group}";

const MAX_EVENT_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub input: InputConfig,
    pub tenants: TenantsConfig,
    pub output: OutputConfig,
    pub catalog: CatalogConfig,
    pub rules: RulesConfig,
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub sessions: SessionsConfig,
    pub shutdown: ShutdownConfig,
    pub admin: AdminConfig,
    pub privacy: PrivacyConfig,
}

/// `[privacy]`: personal data per tenant (login, name, test-taker id, actor id, IP, user
/// agent).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// The mode of a tenant not listed in `tenants`: `keep`, `pseudonymize` or `drop`.
    pub default: crate::privacy::Mode,
    /// Modes of named tenants (`{ "umbrella.eu" = "pseudonymize" }`).
    pub tenants: BTreeMap<String, crate::privacy::Mode>,
    /// A file holding the key pseudonyms are derived from (at least 32 bytes; surrounding
    /// whitespace ignored); empty: the key is `privacy.key`.
    pub key_file: PathBuf,
    /// The key itself, meant to come from the environment (`ACS_STREAM__PRIVACY__KEY`);
    /// never shown. Ignored when `key_file` is set.
    pub key: Secret,
    /// In `pseudonymize` mode, an IP becomes a `token` or its `network` (/24, /48).
    pub ip: crate::privacy::IpForm,
    /// In `pseudonymize` mode, a user agent becomes a `token` or its `browser` family and
    /// major version.
    pub user_agent: crate::privacy::UserAgentForm,
    /// Dead letters of a tenant in `pseudonymize` or `drop` mode: `keep` the original record,
    /// or `omit` its key and value (they stay in the input topic only).
    pub dead_letter_value: crate::privacy::DeadLetterValue,
}

/// A secret read from the configuration: never printed, never in a `Debug` output.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(none)" } else { "Secret(..)" })
    }
}

/// `[admin]`: the HTTP port for probes and introspection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port` the admin HTTP server listens on; empty: no server.
    pub listen: String,
    /// An assigned partition lagging without progress for this long is stuck.
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
    /// `/healthz` fails once the service loop has not turned for this long, and `/readyz`
    /// once the service has not reported its state for this long.
    #[serde(with = "humantime_serde")]
    pub liveness_timeout: Duration,
    /// Tenants with a metric label of their own.
    pub tenant_label_limit: usize,
}

impl AdminConfig {
    /// The address to listen on, `None` when disabled.
    pub fn address(&self) -> Option<Result<std::net::SocketAddr, std::net::AddrParseError>> {
        let listen = self.listen.trim();
        (!listen.is_empty()).then(|| listen.parse())
    }
}

/// `[sessions]`: bounds of the per-delivery-execution state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// A message id seen again in its session within this long is a duplicate.
    #[serde(with = "humantime_serde")]
    pub duplicate_horizon: Duration,
    /// Recent message ids remembered per session.
    pub remembered_ids: usize,
    /// How long an ended session (terminated, closed, canceled) is kept.
    #[serde(with = "humantime_serde")]
    pub finished_ttl: Duration,
    /// How long a session without events is kept.
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Duration,
    /// An interacting session silent this long (event time) raises the silence rules; zero:
    /// no silence detection.
    #[serde(with = "humantime_serde")]
    pub silence_after: Duration,
    /// The compacted topic the state is written to and restored from (`{group}`: the
    /// consumer group); empty: in memory only.
    pub changelog_topic: String,
}

/// `[input]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Records larger than this are dead-lettered with `too_large`.
    pub max_event_bytes: usize,
    /// What upstream keys input records by.
    pub keyed_by: InputKey,
    /// The internal topic input not keyed by session is re-keyed through (`{group}`: the
    /// consumer group).
    pub repartition_topic: String,
}

/// What upstream keys input records by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKey {
    /// By session: processed where consumed.
    DeliveryExecutionId,
    /// By anything else: re-keyed through the repartition topic first.
    Other,
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
    /// Per-tenant topic of shadow rules' alerts (`mode = "shadow"`).
    pub shadow_alerts_topic: String,
    /// Per-tenant topic of incidents (one per session, compacted).
    pub incidents_topic: String,
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

/// `[rules]`: flag alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Off: no rule evaluated, no alert published.
    pub enabled: bool,
    /// A rules file replacing the built-in set (config/rules.toml); empty for the built-in set.
    pub file: PathBuf,
    /// The internal topic tenant-scoped rules' events are re-keyed by tenant through
    /// (`{group}`: the consumer group).
    pub tenant_topic: String,
    /// Alerts published per session per hour of event time; beyond, folded into the
    /// session's incident. 0: no budget.
    pub max_alerts_per_session: u32,
}

/// `[kafka]`: the consumer group, the producer and the bounds of the at-least-once loop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// Consumer group id (librdkafka `group.id`); committed offsets belong to it.
    pub group_id: String,
    /// Topics to consume; an entry starting with `^` is a regex subscription.
    pub input_topics: Vec<String>,
    /// The delivery guarantee (see [`Guarantee`]).
    pub guarantee: Guarantee,
    /// How often the work done is committed (also on revoke and shutdown): 5 s at least
    /// once, 100 ms exactly once, when not set.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Exactly once: the transaction timeout (librdkafka `transaction.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Exactly once: this instance's stable, unique name (see [`KafkaConfig::instance`]).
    pub instance_id: String,
    /// Records produced but not yet acknowledged before the consumer pauses.
    pub max_in_flight: usize,
    /// Bytes held for records produced but not yet acknowledged (input copies and outputs)
    /// before the consumer pauses.
    pub max_in_flight_bytes: usize,
    /// Bound on the consumer's prefetch queue per partition, in KiB (librdkafka
    /// `queued.max.messages.kbytes`).
    pub max_prefetch_kbytes: u32,
    /// First backoff before retrying a retriable produce error (doubled each attempt).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Ceiling of the produce retry backoff.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// librdkafka consumer settings passed through as they are (keys refused in
    /// [`CONSUMER_FIXED`]).
    pub consumer: BTreeMap<String, String>,
    /// librdkafka producer settings passed through as they are (keys refused in
    /// [`PRODUCER_FIXED`]).
    pub producer: BTreeMap<String, String>,
}

/// What a downstream consumer can count on (DESIGN.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Every output at least once: an input offset is committed only after every output of
    /// the record is acknowledged; a crash replays what was not committed.
    AtLeastOnce,
    /// Every output exactly once to a `read_committed` consumer: outputs, state changes and
    /// input offsets commit together in Kafka transactions.
    ExactlyOnce,
}

impl Guarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once",
        }
    }
}

impl KafkaConfig {
    /// This instance's name for its transactional id: `kafka.instance_id`, else the
    /// consumer's `group.instance.id`, else the host name.
    pub fn instance(&self) -> String {
        let configured = self.instance_id.trim();
        if !configured.is_empty() {
            return configured.to_owned();
        }
        if let Some(member) = self.consumer.get("group.instance.id").filter(|m| !m.trim().is_empty()) {
            return member.trim().to_owned();
        }
        host_name()
    }

    /// The transactional id of this instance (exactly once): `<group_id>-<instance>`.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.instance())
    }
}

/// The host name (`HOSTNAME`, else `/proc/sys/kernel/hostname`, else `localhost`).
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `[topics]`: creation of the per-tenant output topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Create a tenant's topics through the admin API on first sight of the tenant; when
    /// false, they are left to the cluster (auto-creation or an operator).
    pub create: bool,
    /// Partitions of a created topic.
    pub partitions: i32,
    /// Replication factor of a created topic; -1 for the broker's default.
    pub replication_factor: i32,
    /// Topic configs of a created topic (e.g. `retention.ms`).
    pub configs: BTreeMap<String, String>,
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long the drain after SIGTERM/SIGINT may take (stop fetching, wait for
    /// deliveries, commit) before the process gives up and exits.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

/// Largest `kafka.max_prefetch_kbytes` (librdkafka's ceiling for `queued.max.messages.kbytes`).
const MAX_PREFETCH_KBYTES_CEILING: u32 = 2_097_151;

/// Consumer settings acs-stream sets itself, with what to do instead.
pub const CONSUMER_FIXED: &[(&str, &str)] = &[
    ("enable.auto.offset.store", "fixed to false: an offset is stored only once its outputs are acknowledged"),
    ("enable.auto.commit", "set by acs-stream: stored offsets are committed every kafka.commit_interval"),
    ("auto.commit.interval.ms", "use kafka.commit_interval"),
    ("group.id", "use kafka.group_id"),
    ("bootstrap.servers", "use kafka.brokers"),
    ("metadata.broker.list", "use kafka.brokers"),
    ("isolation.level", "fixed to read_committed: records of aborted transactions must never be processed"),
    ("queued.max.messages.kbytes", "use kafka.max_prefetch_kbytes"),
];

/// Producer settings acs-stream sets itself, with what to do instead.
pub const PRODUCER_FIXED: &[(&str, &str)] = &[
    ("enable.idempotence", "fixed to true: retries must not duplicate or reorder outputs"),
    ("acks", "fixed to all: an output counts as written only once every in-sync replica has it"),
    ("request.required.acks", "fixed to all: an output counts as written only once every in-sync replica has it"),
    ("bootstrap.servers", "use kafka.brokers"),
    ("metadata.broker.list", "use kafka.brokers"),
    ("transactional.id", "set by acs-stream under exactly_once from kafka.group_id and kafka.instance_id"),
    ("transaction.timeout.ms", "use kafka.transaction_timeout"),
    ("message.timeout.ms", "fixed to 0 (no timeout): a retriable error is retried, never turned into a loss"),
    ("delivery.timeout.ms", "fixed to 0 (no timeout): a retriable error is retried, never turned into a loss"),
    ("retries", "fixed by librdkafka's idempotent producer: retriable errors are retried without end"),
    ("message.send.max.retries", "fixed by librdkafka's idempotent producer: retriable errors are retried without end"),
];

/// The passthrough maps: `(section, key, name in messages)`.
const PASSTHROUGH: [(&str, &str, &str); 3] = [
    ("kafka", "consumer", "kafka.consumer"),
    ("kafka", "producer", "kafka.producer"),
    ("topics", "configs", "topics.configs"),
];

/// A configuration that cannot be used. The message names the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The underlying error is part of the message, not a `source`, so that a printed
    // error chain does not repeat it.
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: std::io::Error },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("catalog.file ({path}): {reason}")]
    Catalog { path: PathBuf, reason: crate::model::catalog::CatalogError },
    #[error("rules.file ({path}): {reason}")]
    Rules { path: PathBuf, reason: crate::rules::RulesError },
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
                std::fs::read_to_string(path).map_err(|reason| ConfigError::Read { path: path.to_owned(), reason })?,
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
        normalize_passthrough(&mut table)?;
        if let Some((origin, text)) = file {
            let mut overlay: toml::Table = toml::from_str(text)
                .map_err(|e| ConfigError::Parse { origin: origin.into(), message: e.to_string() })?;
            normalize_passthrough(&mut overlay)?;
            merge(&mut table, overlay);
        }
        for (name, value) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            merge(&mut table, env_overlay(&keys, &value));
        }
        default_commit_interval(&mut table);
        let config: Config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: "configuration".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The session state's bounds.
    pub fn session_limits(&self) -> crate::session::SessionLimits {
        let sessions = &self.sessions;
        crate::session::SessionLimits {
            duplicate_horizon: sessions.duplicate_horizon,
            remembered_ids: sessions.remembered_ids,
            finished_ttl: sessions.finished_ttl,
            idle_ttl: sessions.idle_ttl,
            silence_after: sessions.silence_after,
        }
    }

    /// The session changelog topic, `None` when the state is kept in memory only.
    pub fn changelog_topic(&self) -> Option<String> {
        let template = self.sessions.changelog_topic.trim();
        (!template.is_empty()).then(|| template.replace(GROUP_PLACEHOLDER, &self.kafka.group_id))
    }

    /// The topic input is re-keyed through, `None` when input is keyed by session.
    pub fn repartition_topic(&self) -> Option<String> {
        (self.input.keyed_by == InputKey::Other)
            .then(|| self.input.repartition_topic.trim().replace(GROUP_PLACEHOLDER, &self.kafka.group_id))
    }

    /// The internal topic tenant-scoped rules' events are re-keyed through, `None` when
    /// rules are off.
    pub fn tenant_topic(&self) -> Option<String> {
        self.rules.enabled.then(|| self.rules.tenant_topic.trim().replace(GROUP_PLACEHOLDER, &self.kafka.group_id))
    }

    /// The flag-alert rules: the built-in set, or `rules.file`; empty when rules are off.
    pub fn rules(&self) -> Result<crate::rules::RuleSet, ConfigError> {
        if !self.rules.enabled {
            return Ok(crate::rules::RuleSet::empty());
        }
        if self.rules.file.as_os_str().is_empty() {
            return Ok(crate::rules::RuleSet::defaults());
        }
        let path = &self.rules.file;
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read { path: path.clone(), reason })?;
        crate::rules::RuleSet::from_toml(&path.display().to_string(), &text)
            .map_err(|reason| ConfigError::Rules { path: path.clone(), reason })
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let horizon = self.sessions.duplicate_horizon;
        if horizon < Duration::from_secs(60) || horizon > Duration::from_secs(30 * 86_400) {
            return Err(invalid(
                "sessions.duplicate_horizon",
                format!(
                    "is {}; expected 1m to 30d (message ids are remembered to the minute)",
                    humantime_serde::re::humantime::format_duration(horizon)
                ),
            ));
        }
        if self.sessions.remembered_ids == 0 {
            return Err(invalid("sessions.remembered_ids", "must be at least 1 (duplicates are found with it)".into()));
        }
        for (key, ttl) in
            [("sessions.finished_ttl", self.sessions.finished_ttl), ("sessions.idle_ttl", self.sessions.idle_ttl)]
        {
            if ttl.is_zero() {
                return Err(invalid(key, "must be longer than 0 (e.g. \"1h\")".into()));
            }
        }
        if self.input.max_event_bytes == 0 || self.input.max_event_bytes > MAX_EVENT_BYTES_CEILING {
            return Err(invalid(
                "input.max_event_bytes",
                format!("is {}; expected 1 to {MAX_EVENT_BYTES_CEILING}", self.input.max_event_bytes),
            ));
        }
        let events = self.events_template().map_err(|e| invalid("output.events_topic", e.to_string()))?;
        let alerts = self.alerts_template().map_err(|e| invalid("output.alerts_topic", e.to_string()))?;
        let shadow = self.shadow_alerts_template().map_err(|e| invalid("output.shadow_alerts_topic", e.to_string()))?;
        if shadow.may_collide(&events) || shadow.may_collide(&alerts) {
            return Err(invalid(
                "output.shadow_alerts_topic",
                "can name the same topic as output.events_topic or output.alerts_topic for some tenants: give it \
                 a suffix of its own"
                    .into(),
            ));
        }
        if events.may_collide(&alerts) {
            return Err(invalid(
                "output.alerts_topic",
                "can name the same topic as output.events_topic for some tenants (as acs.{tenant} and \
                 acs.{tenant}.alerts do for tenant x.alerts): give them different suffixes"
                    .into(),
            ));
        }
        let incidents = self.incidents_template().map_err(|e| invalid("output.incidents_topic", e.to_string()))?;
        if [&events, &alerts, &shadow].iter().any(|other| incidents.may_collide(other)) {
            return Err(invalid(
                "output.incidents_topic",
                "can name the same topic as output.events_topic, alerts_topic or shadow_alerts_topic for some \
                 tenants: give it a suffix of its own"
                    .into(),
            ));
        }
        check_topic_name(&self.output.dead_letter_topic)
            .map_err(|e| invalid("output.dead_letter_topic", e.to_string()))?;
        if self.output.dead_letter_topic.contains(route::TENANT_PLACEHOLDER) {
            return Err(invalid("output.dead_letter_topic", "is one topic for all tenants: no {tenant}".into()));
        }
        if [&events, &alerts, &shadow, &incidents]
            .iter()
            .any(|template| template.can_render(&self.output.dead_letter_topic))
        {
            return Err(invalid(
                "output.dead_letter_topic",
                "is a topic some tenant's events or alerts would be written to: choose a name the tenant \
                 templates cannot produce"
                    .into(),
            ));
        }
        let policy = self.tenant_policy();
        for tenant in &self.tenants.allow {
            policy.check_syntax(tenant, &format_args!("{tenant:?}")).map_err(|e| invalid("tenants.allow", e.detail))?;
        }
        self.validate_privacy()?;
        self.validate_kafka()?;
        self.validate_topics()?;
        let changelog = self.changelog_topic();
        let repartition = self.repartition_topic();
        let tenant = self.tenant_topic();
        for (key, internal) in [
            ("sessions.changelog_topic", &changelog),
            ("input.repartition_topic", &repartition),
            ("rules.tenant_topic", &tenant),
        ] {
            let Some(topic) = internal else { continue };
            check_topic_name(topic).map_err(|e| invalid(key, format!("{topic:?}: {e}")))?;
            if *topic == self.output.dead_letter_topic
                || [&events, &alerts, &shadow].iter().any(|template| template.can_render(topic))
            {
                return Err(invalid(
                    key,
                    format!("{topic:?} is also an output topic: an internal topic needs a topic of its own"),
                ));
            }
            let consumed = self.kafka.input_topics.iter().any(|input| match input.strip_prefix('^') {
                // Checked by validate_kafka above.
                Some(_) => regex::Regex::new(input).is_ok_and(|regex| regex.is_match(topic)),
                None => input == topic,
            });
            if consumed {
                return Err(invalid(key, format!("{topic:?} is also an input topic (kafka.input_topics)")));
            }
        }
        if changelog.is_some() && changelog == repartition {
            return Err(invalid(
                "input.repartition_topic",
                "is also sessions.changelog_topic: the two internal topics need names of their own".into(),
            ));
        }
        if tenant.is_some() && (tenant == changelog || tenant == repartition) {
            return Err(invalid(
                "rules.tenant_topic",
                "is also sessions.changelog_topic or input.repartition_topic: each internal topic needs a name \
                 of its own"
                    .into(),
            ));
        }
        if self.shutdown.grace.is_zero() {
            return Err(invalid("shutdown.grace", "must be longer than 0 (e.g. \"30s\")".into()));
        }
        if self.admin.liveness_timeout < Duration::from_secs(1) {
            return Err(invalid("admin.liveness_timeout", "must be at least 1s (e.g. \"60s\")".into()));
        }
        if self.admin.stuck_after.is_zero() {
            return Err(invalid("admin.stuck_after", "must be longer than 0 (e.g. \"2m\")".into()));
        }
        if let Some(Err(error)) = self.admin.address() {
            return Err(invalid("admin.listen", format!("{:?}: {error}; expected host:port", self.admin.listen)));
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let kafka = &self.kafka;
        if kafka.brokers.split(',').all(|b| b.trim().is_empty()) {
            return Err(invalid("kafka.brokers", "is empty; expected host:port[,host:port...]".into()));
        }
        if kafka.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "is empty".into()));
        }
        if kafka.input_topics.is_empty() {
            return Err(invalid("kafka.input_topics", "is empty; expected at least one topic or ^regex".into()));
        }
        for topic in &kafka.input_topics {
            if topic.starts_with('^') {
                regex::Regex::new(topic)
                    .map_err(|e| invalid("kafka.input_topics", format!("{topic:?} is not a valid regex: {e}")))?;
            } else {
                check_topic_name(topic).map_err(|e| invalid("kafka.input_topics", format!("{topic:?}: {e}")))?;
            }
        }
        if kafka.commit_interval.is_zero() {
            return Err(invalid("kafka.commit_interval", "must be longer than 0 (e.g. \"5s\")".into()));
        }
        if kafka.transaction_timeout < Duration::from_secs(1) || kafka.transaction_timeout > Duration::from_secs(900) {
            return Err(invalid(
                "kafka.transaction_timeout",
                format!(
                    "is {:?}; expected 1s to 15m (the brokers' transaction.max.timeout.ms)",
                    kafka.transaction_timeout
                ),
            ));
        }
        if kafka.guarantee == Guarantee::ExactlyOnce && kafka.commit_interval >= kafka.transaction_timeout {
            return Err(invalid(
                "kafka.commit_interval",
                format!(
                    "({:?}) must stay below kafka.transaction_timeout ({:?}) under exactly_once: each interval is one transaction",
                    kafka.commit_interval, kafka.transaction_timeout
                ),
            ));
        }
        if kafka.max_in_flight == 0 {
            return Err(invalid("kafka.max_in_flight", "must be at least 1".into()));
        }
        if kafka.max_in_flight_bytes == 0 {
            return Err(invalid("kafka.max_in_flight_bytes", "must be at least 1".into()));
        }
        if kafka.max_prefetch_kbytes == 0 || kafka.max_prefetch_kbytes > MAX_PREFETCH_KBYTES_CEILING {
            return Err(invalid(
                "kafka.max_prefetch_kbytes",
                format!("is {}; expected 1 to {MAX_PREFETCH_KBYTES_CEILING}", kafka.max_prefetch_kbytes),
            ));
        }
        if kafka.retry_backoff.is_zero() {
            return Err(invalid("kafka.retry_backoff", "must be longer than 0 (e.g. \"100ms\")".into()));
        }
        if kafka.retry_backoff > kafka.retry_backoff_max {
            return Err(invalid(
                "kafka.retry_backoff",
                format!(
                    "({:?}) must not exceed kafka.retry_backoff_max ({:?})",
                    kafka.retry_backoff, kafka.retry_backoff_max
                ),
            ));
        }
        check_fixed("kafka.consumer", &kafka.consumer, CONSUMER_FIXED)?;
        check_fixed("kafka.producer", &kafka.producer, PRODUCER_FIXED)?;
        Ok(())
    }

    /// What can be checked without reading the key: tenant ids, and a key for protection.
    fn validate_privacy(&self) -> Result<(), ConfigError> {
        let privacy = &self.privacy;
        let policy = self.tenant_policy();
        for tenant in privacy.tenants.keys() {
            policy
                .check_syntax(tenant, &format_args!("{tenant:?}"))
                .map_err(|e| ConfigError::Invalid { key: "privacy.tenants", message: e.detail })?;
        }
        let keyless = privacy.key_file.as_os_str().is_empty() && privacy.key.expose().is_empty();
        let protected = std::iter::once(("(default)", privacy.default))
            .chain(privacy.tenants.iter().map(|(tenant, mode)| (tenant.as_str(), *mode)))
            .find(|(_, mode)| *mode != crate::privacy::Mode::Keep);
        match protected {
            Some((tenant, mode)) if keyless => Err(ConfigError::Invalid {
                key: "privacy",
                message: crate::privacy::PrivacyError::NoKey(tenant.to_owned(), mode.as_str()).to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn validate_topics(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let topics = &self.topics;
        if topics.partitions < 1 && topics.partitions != -1 {
            return Err(invalid(
                "topics.partitions",
                format!("is {}; expected at least 1, or -1 for the broker's default", topics.partitions),
            ));
        }
        if topics.replication_factor < 1 && topics.replication_factor != -1 {
            return Err(invalid(
                "topics.replication_factor",
                format!("is {}; expected at least 1, or -1 for the broker's default", topics.replication_factor),
            ));
        }
        Ok(())
    }

    pub fn events_template(&self) -> Result<TopicTemplate, route::TopicError> {
        TopicTemplate::parse(&self.output.events_topic)
    }

    pub fn alerts_template(&self) -> Result<TopicTemplate, route::TopicError> {
        TopicTemplate::parse(&self.output.alerts_topic)
    }

    pub fn shadow_alerts_template(&self) -> Result<TopicTemplate, route::TopicError> {
        TopicTemplate::parse(&self.output.shadow_alerts_topic)
    }

    pub fn incidents_template(&self) -> Result<TopicTemplate, route::TopicError> {
        TopicTemplate::parse(&self.output.incidents_topic)
    }

    /// How incidents count (`rules.max_alerts_per_session`).
    pub fn incident_policy(&self) -> crate::incidents::Policy {
        crate::incidents::Policy { max_alerts_per_hour: self.rules.max_alerts_per_session }
    }

    /// The protection of each tenant's personal data, with the key read (`privacy.key_file`,
    /// else `privacy.key`) when one is set.
    pub fn privacy(&self) -> Result<crate::privacy::Privacy, ConfigError> {
        let config = &self.privacy;
        let invalid = |message: String| ConfigError::Invalid { key: "privacy", message };
        let key = if !config.key_file.as_os_str().is_empty() {
            let path = &config.key_file;
            let bytes = std::fs::read(path).map_err(|reason| ConfigError::Read { path: path.clone(), reason })?;
            let key = crate::privacy::Key::new(&bytes).map_err(|e| ConfigError::Invalid {
                key: "privacy.key_file",
                message: format!("{}: the key {e}", path.display()),
            })?;
            Some(key)
        } else if !config.key.expose().is_empty() {
            let key = crate::privacy::Key::new(config.key.expose().as_bytes()).map_err(|e| ConfigError::Invalid {
                key: "privacy.key",
                message: format!("(ACS_STREAM__PRIVACY__KEY) the key {e}"),
            })?;
            Some(key)
        } else {
            None
        };
        let tenants = config.tenants.iter().map(|(tenant, mode)| (Box::from(tenant.as_str()), *mode)).collect();
        crate::privacy::Privacy::new(
            config.default,
            tenants,
            config.ip,
            config.user_agent,
            config.dead_letter_value,
            key,
        )
        .map_err(|e| invalid(e.to_string()))
    }

    /// Tenant rules: topic-name syntax within the longest template, and the allow-list.
    pub fn tenant_policy(&self) -> TenantPolicy {
        // Not the shadow alerts topic: it would change which tenants are accepted (a tenant id
        // too long for it has its shadow alerts refused by the brokers).
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
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read { path: path.clone(), reason })?;
        ReasonCatalog::from_toml(&text).map_err(|reason| ConfigError::Catalog { path: path.clone(), reason })
    }
}

/// Lays `overlay` over `base`, table by table.
/// `kafka.commit_interval` when no layer set it: 100 ms under exactly-once (each interval is
/// one transaction, Kafka Streams' default), 5 s at least once.
fn default_commit_interval(table: &mut toml::Table) {
    let Some(toml::Value::Table(kafka)) = table.get_mut("kafka") else { return };
    if kafka.contains_key("commit_interval") {
        return;
    }
    let exactly_once = kafka.get("guarantee").and_then(toml::Value::as_str) == Some("exactly_once");
    let interval = if exactly_once { "100ms" } else { "5s" };
    kafka.insert("commit_interval".to_owned(), toml::Value::String(interval.to_owned()));
}

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

/// Refuses, in a passthrough map, the settings acs-stream fixes itself.
fn check_fixed(key: &'static str, map: &BTreeMap<String, String>, fixed: &[(&str, &str)]) -> Result<(), ConfigError> {
    for name in map.keys() {
        let normalized = name.trim().to_ascii_lowercase();
        if let Some((_, why)) = fixed.iter().find(|(fixed, _)| *fixed == normalized) {
            return Err(ConfigError::Invalid { key, message: format!("`{name}` cannot be set here: {why}") });
        }
    }
    Ok(())
}

/// Flattens the passthrough maps of one layer to `dotted.key = "string"`: TOML dotted keys
/// (`fetch.min.bytes = 1`) are nested tables, and values may be integers or booleans.
fn normalize_passthrough(layer: &mut toml::Table) -> Result<(), ConfigError> {
    for (section, map, name) in PASSTHROUGH {
        let Some(toml::Value::Table(section)) = layer.get_mut(section) else {
            continue;
        };
        let Some(toml::Value::Table(table)) = section.get_mut(map) else {
            continue;
        };
        let mut flat = toml::Table::new();
        flatten(name, "", std::mem::take(table), &mut flat)?;
        *table = flat;
    }
    Ok(())
}

fn flatten(name: &'static str, prefix: &str, table: toml::Table, flat: &mut toml::Table) -> Result<(), ConfigError> {
    for (key, value) in table {
        let key = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
        let text = match value {
            toml::Value::Table(inner) => {
                flatten(name, &key, inner, flat)?;
                continue;
            }
            toml::Value::String(text) => text,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(ConfigError::Invalid {
                    key: name,
                    message: format!("`{key}`: expected a string, an integer or a boolean, found {}", other.type_str()),
                });
            }
        };
        if flat.insert(key.clone(), toml::Value::String(text)).is_some() {
            return Err(ConfigError::Invalid { key: name, message: format!("`{key}` is set twice") });
        }
    }
    Ok(())
}

/// `ACS_STREAM__OUTPUT__FORMAT=json` → `{output = {format = "json"}}`;
/// `ACS_STREAM__KAFKA__CONSUMER__FETCH_MIN_BYTES=1` → `{kafka = {consumer = {"fetch.min.bytes" = "1"}}}`.
fn env_overlay(keys: &[String], raw: &str) -> toml::Table {
    let passthrough =
        PASSTHROUGH.iter().any(|(section, map, _)| keys.len() > 2 && keys[0] == *section && keys[1] == *map);
    if passthrough {
        let key = keys[2..].join(".").replace('_', ".");
        let map = toml::Table::from_iter([(key, toml::Value::String(raw.to_owned()))]);
        let section = toml::Table::from_iter([(keys[1].clone(), toml::Value::Table(map))]);
        return toml::Table::from_iter([(keys[0].clone(), toml::Value::Table(section))]);
    }
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
    fn the_guarantee_sets_the_commit_interval_unless_it_is_given() {
        let defaults = Config::defaults();
        assert_eq!(defaults.kafka.guarantee, Guarantee::AtLeastOnce);
        assert_eq!(defaults.kafka.commit_interval, Duration::from_secs(5));
        let eos = Config::layered(None, env(&[("ACS_STREAM__KAFKA__GUARANTEE", "exactly_once")])).unwrap();
        assert_eq!(eos.kafka.guarantee, Guarantee::ExactlyOnce);
        assert_eq!(eos.kafka.commit_interval, Duration::from_millis(100), "Kafka Streams' default under EOS");
        assert_eq!(eos.kafka.transaction_timeout, Duration::from_secs(10));
        let given = Config::layered(
            Some((
                "f",
                "[kafka]
guarantee = \"exactly_once\"\ncommit_interval = \"1s\"\n",
            )),
            std::iter::empty(),
        )
        .unwrap();
        assert_eq!(given.kafka.commit_interval, Duration::from_secs(1), "a given interval wins");
        let too_slow = "[kafka]\nguarantee = \"exactly_once\"\ncommit_interval = \"10s\"\n";
        let error = Config::layered(Some(("f", too_slow)), std::iter::empty()).unwrap_err().to_string();
        assert!(error.starts_with("kafka.commit_interval") && error.contains("transaction_timeout"), "{error}");
        // At least once, a long interval is fine (no transaction to outlast).
        let alos = "[kafka]\ncommit_interval = \"30s\"\n";
        assert!(Config::layered(Some(("f", alos)), std::iter::empty()).is_ok());
    }

    #[test]
    fn the_transactional_id_names_the_group_and_a_stable_instance() {
        let file =
            "[kafka]\ngroup_id = \"g\"\ninstance_id = \"pod-2\"\n[kafka.consumer]\n\"group.instance.id\" = \"m\"\n";
        let config = Config::layered(Some(("f", file)), std::iter::empty()).unwrap();
        assert_eq!(config.kafka.transactional_id(), "g-pod-2", "the instance id first");
        let file = "[kafka]\ngroup_id = \"g\"\n[kafka.consumer]\n\"group.instance.id\" = \"m-1\"\n";
        let config = Config::layered(Some(("f", file)), std::iter::empty()).unwrap();
        assert_eq!(config.kafka.transactional_id(), "g-m-1", "then the static member id");
        let config = Config::layered(Some(("f", "[kafka]\ngroup_id = \"g\"\n")), std::iter::empty()).unwrap();
        assert!(config.kafka.transactional_id().starts_with("g-") && config.kafka.transactional_id().len() > 2);
    }

    #[test]
    fn bad_configurations_name_the_key() {
        let cases = [
            ("[output]\nevents_topic = \"acs.events\"\n", "output.events_topic"),
            ("[output]\nalerts_topic = \"acs/{tenant}\"\n", "output.alerts_topic"),
            ("[output]\nalerts_topic = \"acs.{tenant}.events\"\n", "same topic"),
            ("[output]\nevents_topic = \"acs.{tenant}\"\n", "output.alerts_topic"),
            (
                "[output]\nevents_topic = \"{tenant}.events\"\ndead_letter_topic = \"dlq.events\"\n",
                "output.dead_letter_topic",
            ),
            ("[output]\ndead_letter_topic = \"acs.{tenant}.dlq\"\n", "output.dead_letter_topic"),
            ("[output]\nformat = \"avro\"\n", "unknown variant"),
            ("[output]\ncolour = 1\n", "unknown field `colour`"),
            ("[inputs]\nmax_event_bytes = 1\n", "unknown field `inputs`"),
            ("[input]\nmax_event_bytes = 0\n", "input.max_event_bytes"),
            ("[tenants]\nallow = [\"a b\"]\n", "tenants.allow"),
            ("[input\n", "f.toml"),
            ("[output]\nshadow_alerts_topic = \"acs.{tenant}.alerts\"\n", "output.shadow_alerts_topic"),
            ("[output]\nshadow_alerts_topic = \"acs.shadow\"\n", "output.shadow_alerts_topic"),
            ("[output]\nincidents_topic = \"acs.{tenant}.alerts\"\n", "output.incidents_topic"),
            ("[output]\nincidents_topic = \"acs.incidents\"\n", "output.incidents_topic"),
            ("[privacy]\ndefault = \"drop\"\n", "privacy: tenant \"(default)\" is in drop mode"),
            ("[privacy]\ndefault = \"hide\"\n", "unknown variant"),
            ("[privacy]\nsalt = \"x\"\n", "unknown field `salt`"),
            ("[privacy.tenants]\n\"a b\" = \"keep\"\n", "privacy.tenants"),
            ("[privacy]\nip = \"/24\"\n", "unknown variant"),
        ];
        for (text, needle) in cases {
            let error = Config::layered(Some(("f.toml", text)), []).expect_err(text).to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn kafka_topics_and_shutdown_defaults() {
        let config = Config::defaults();
        let kafka = &config.kafka;
        assert_eq!(kafka.brokers, "localhost:9092");
        assert_eq!(kafka.group_id, "acs-stream");
        assert_eq!(kafka.input_topics, vec!["acs.raw"]);
        assert_eq!(kafka.commit_interval, Duration::from_secs(5));
        assert_eq!(kafka.max_in_flight, 10_000);
        assert_eq!(kafka.max_in_flight_bytes, 64 << 20);
        assert_eq!(kafka.max_prefetch_kbytes, 16_384);
        assert_eq!(kafka.retry_backoff, Duration::from_millis(100));
        assert_eq!(kafka.retry_backoff_max, Duration::from_secs(10));
        assert!(kafka.consumer.is_empty() && kafka.producer.is_empty());
        assert!(config.topics.create);
        assert_eq!(config.topics.partitions, 6);
        assert_eq!(config.topics.replication_factor, -1);
        assert!(config.topics.configs.is_empty());
        assert_eq!(config.shutdown.grace, Duration::from_secs(30));
        assert_eq!(config.input.keyed_by, InputKey::DeliveryExecutionId);
        assert_eq!(config.repartition_topic(), None, "input keyed by session is processed where consumed");
        let rekeyed = Config::layered(Some(("f", "[input]\nkeyed_by = \"other\"\n")), []).unwrap();
        assert_eq!(rekeyed.repartition_topic().as_deref(), Some("acs-stream.repartition"));
    }

    #[test]
    fn new_sections_are_read_from_a_file() {
        let file = r#"
            [kafka]
            brokers = "b1:9092,b2:9092"
            input_topics = ["acs.raw", '^acs\.raw\..*']
            commit_interval = "1m 30s"
            retry_backoff = "250ms"
            [kafka.consumer]
            "fetch.min.bytes" = 65536
            auto.offset.reset = "earliest"
            [kafka.producer]
            "enable.gapless.guarantee" = false
            [topics]
            create = false
            partitions = -1
            replication_factor = 3
            [topics.configs]
            retention.ms = 604800000
            [shutdown]
            grace = "45s"
        "#;
        let config = Config::layered(Some(("f.toml", file)), []).unwrap();
        assert_eq!(config.kafka.brokers, "b1:9092,b2:9092");
        assert_eq!(config.kafka.input_topics, vec!["acs.raw", "^acs\\.raw\\..*"]);
        assert_eq!(config.kafka.commit_interval, Duration::from_secs(90));
        assert_eq!(config.kafka.retry_backoff, Duration::from_millis(250));
        let consumer: Vec<(&str, &str)> = config.kafka.consumer.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(consumer, [("auto.offset.reset", "earliest"), ("fetch.min.bytes", "65536")]);
        assert_eq!(config.kafka.producer["enable.gapless.guarantee"], "false");
        assert!(!config.topics.create);
        assert_eq!((config.topics.partitions, config.topics.replication_factor), (-1, 3));
        assert_eq!(config.topics.configs["retention.ms"], "604800000");
        assert_eq!(config.shutdown.grace, Duration::from_secs(45));
    }

    #[test]
    fn the_environment_overrides_new_keys_and_passthrough_entries() {
        let file = "[kafka.consumer]\n\"fetch.min.bytes\" = 1\n\"client.rack\" = \"r1\"\n";
        let config = Config::layered(
            Some(("f.toml", file)),
            env(&[
                ("ACS_STREAM__KAFKA__BROKERS", "kafka:9092"),
                ("ACS_STREAM__KAFKA__COMMIT_INTERVAL", "2s"),
                ("ACS_STREAM__KAFKA__INPUT_TOPICS", "[\"a\", \"^b.*\"]"),
                ("ACS_STREAM__KAFKA__CONSUMER__FETCH_MIN_BYTES", "4096"),
                ("ACS_STREAM__KAFKA__PRODUCER__COMPRESSION_TYPE", "lz4"),
                ("ACS_STREAM__KAFKA__PRODUCER__LINGER__MS", "5"),
                ("ACS_STREAM__TOPICS__CONFIGS__RETENTION_MS", "1000"),
                ("ACS_STREAM__TOPICS__PARTITIONS", "12"),
                ("ACS_STREAM__SHUTDOWN__GRACE", "10s"),
            ]),
        )
        .unwrap();
        assert_eq!(config.kafka.brokers, "kafka:9092");
        assert_eq!(config.kafka.commit_interval, Duration::from_secs(2));
        assert_eq!(config.kafka.input_topics, vec!["a", "^b.*"]);
        assert_eq!(config.kafka.consumer["fetch.min.bytes"], "4096", "the environment wins over the file");
        assert_eq!(config.kafka.consumer["client.rack"], "r1", "other file entries are kept");
        assert_eq!(config.kafka.producer["compression.type"], "lz4");
        assert_eq!(config.kafka.producer["linger.ms"], "5");
        assert_eq!(config.topics.configs["retention.ms"], "1000");
        assert_eq!(config.topics.partitions, 12);
        assert_eq!(config.shutdown.grace, Duration::from_secs(10));
    }

    #[test]
    fn bad_kafka_topics_and_shutdown_keys_are_named() {
        let cases = [
            ("[kafka]\nbrokers = \"\"\n", "kafka.brokers"),
            ("[kafka]\nbrokers = \" , \"\n", "kafka.brokers"),
            ("[kafka]\ngroup_id = \"\"\n", "kafka.group_id"),
            ("[kafka]\ninput_topics = []\n", "kafka.input_topics"),
            ("[kafka]\ninput_topics = [\"acs raw\"]\n", "kafka.input_topics"),
            ("[kafka]\ninput_topics = [\"\"]\n", "kafka.input_topics"),
            ("[kafka]\ninput_topics = [\"^acs.(raw\"]\n", "kafka.input_topics"),
            ("[kafka]\ncommit_interval = \"0s\"\n", "kafka.commit_interval"),
            ("[kafka]\nguarantee = \"at_most_once\"\n", "guarantee"),
            ("[kafka]\ntransaction_timeout = \"20m\"\n", "kafka.transaction_timeout"),
            ("[kafka.producer]\n\"transaction.timeout.ms\" = 5000\n", "kafka.transaction_timeout"),
            ("[kafka.producer]\n\"transactional.id\" = \"x\"\n", "transactional.id"),
            ("[kafka]\ncommit_interval = \"5 parsecs\"\n", "kafka.commit_interval"),
            ("[kafka]\ncommit_interval = 5\n", "kafka.commit_interval"),
            ("[kafka]\nmax_in_flight = 0\n", "kafka.max_in_flight"),
            ("[kafka]\nmax_in_flight = -1\n", "kafka.max_in_flight"),
            ("[kafka]\nmax_in_flight_bytes = 0\n", "kafka.max_in_flight_bytes"),
            ("[sessions]\nremembered_ids = 0\n", "sessions.remembered_ids"),
            ("[admin]\nlisten = \"localhost\"\n", "admin.listen"),
            ("[admin]\nstuck_after = \"0s\"\n", "admin.stuck_after"),
            ("[admin]\nliveness_timeout = \"0s\"\n", "admin.liveness_timeout"),
            ("[sessions]\nduplicate_horizon = \"30s\"\n", "sessions.duplicate_horizon"),
            ("[sessions]\nduplicate_horizon = \"60d\"\n", "sessions.duplicate_horizon"),
            ("[sessions]\nfinished_ttl = \"0s\"\n", "sessions.finished_ttl"),
            ("[sessions]\nidle_ttl = \"0s\"\n", "sessions.idle_ttl"),
            ("[sessions]\nidle_ttl = \"soon\"\n", "idle_ttl"),
            ("[sessions]\nchangelog_topic = \"a b\"\n", "sessions.changelog_topic"),
            ("[sessions]\nchangelog_topic = \"acs.dlq\"\n", "sessions.changelog_topic"),
            ("[sessions]\nchangelog_topic = \"acs.{group}.events\"\n", "sessions.changelog_topic"),
            ("[sessions]\nchangelog_topic = \"acs.raw\"\n", "sessions.changelog_topic"),
            ("[kafka]\ninput_topics = [\"^acs-.*\"]\n", "sessions.changelog_topic"),
            ("[input]\nkeyed_by = \"tenant\"\n", "keyed_by"),
            ("[input]\nkeyed_by = \"other\"\nrepartition_topic = \"\"\n", "input.repartition_topic"),
            ("[input]\nkeyed_by = \"other\"\nrepartition_topic = \"acs.raw\"\n", "input.repartition_topic"),
            ("[input]\nkeyed_by = \"other\"\nrepartition_topic = \"acs.x.events\"\n", "input.repartition_topic"),
            (
                "[input]\nkeyed_by = \"other\"\nrepartition_topic = \"r\"\n[sessions]\nchangelog_topic = \"r\"\n",
                "input.repartition_topic",
            ),
            ("[kafka]\nconsumer = 3\n", "kafka.consumer"),
            ("[kafka]\nmax_prefetch_kbytes = 0\n", "kafka.max_prefetch_kbytes"),
            ("[kafka]\nmax_prefetch_kbytes = 2097152\n", "kafka.max_prefetch_kbytes"),
            ("[kafka]\nretry_backoff = \"0ms\"\n", "kafka.retry_backoff"),
            ("[kafka]\nretry_backoff = \"20s\"\n", "kafka.retry_backoff_max"),
            ("[kafka]\nretry_backoff_max = \"50ms\"\n", "kafka.retry_backoff_max"),
            ("[kafka]\ncolour = 1\n", "unknown field `colour`"),
            ("[kafka.consumer]\n\"enable.auto.offset.store\" = true\n", "kafka.consumer"),
            ("[kafka.consumer]\nenable.auto.commit = true\n", "kafka.commit_interval"),
            ("[kafka.consumer]\n\"group.id\" = \"g\"\n", "kafka.group_id"),
            ("[kafka.consumer]\n\"bootstrap.servers\" = \"b:9092\"\n", "kafka.brokers"),
            ("[kafka.consumer]\n\"isolation.level\" = \"read_uncommitted\"\n", "kafka.consumer"),
            ("[kafka.consumer]\n\"queued.max.messages.kbytes\" = 1\n", "kafka.max_prefetch_kbytes"),
            ("[kafka.consumer]\n\"fetch.min.bytes\" = [1]\n", "kafka.consumer"),
            ("[kafka.consumer]\n\"fetch.min.bytes\" = 1.5\n", "kafka.consumer"),
            ("[kafka.consumer]\n\"a.b\" = 1\na.b = 2\n", "set twice"),
            ("[kafka.producer]\n\"enable.idempotence\" = false\n", "kafka.producer"),
            ("[kafka.producer]\nacks = 1\n", "kafka.producer"),
            ("[kafka.producer]\n\"request.required.acks\" = 1\n", "kafka.producer"),
            ("[kafka.producer]\n\"bootstrap.servers\" = \"b:9092\"\n", "kafka.brokers"),
            ("[kafka.producer]\n\"transactional.id\" = \"t\"\n", "kafka.producer"),
            ("[topics]\npartitions = 0\n", "topics.partitions"),
            ("[topics]\npartitions = -2\n", "topics.partitions"),
            ("[topics]\nreplication_factor = 0\n", "topics.replication_factor"),
            ("[topics]\nreplication_factor = -5\n", "topics.replication_factor"),
            ("[topics.configs]\n\"retention.ms\" = { a = [] }\n", "topics.configs"),
            ("[shutdown]\ngrace = \"0s\"\n", "shutdown.grace"),
            ("[shutdown]\ndrain = \"1s\"\n", "unknown field `drain`"),
        ];
        for (text, needle) in cases {
            let error = Config::layered(Some(("f.toml", text)), []).expect_err(text).to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn fixed_passthrough_keys_are_refused_from_the_environment_too() {
        let error = Config::layered(None, env(&[("ACS_STREAM__KAFKA__PRODUCER__ENABLE_IDEMPOTENCE", "false")]))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("kafka.producer: `enable.idempotence`"), "{error}");
    }

    #[test]
    fn every_fixed_key_is_documented_in_the_defaults() {
        for (key, _) in CONSUMER_FIXED.iter().chain(PRODUCER_FIXED) {
            assert!(DEFAULT_TOML.contains(key), "{key} is not mentioned in config/default.toml");
        }
    }

    #[test]
    fn the_privacy_key_is_never_shown() {
        let file = "[privacy]\ndefault = \"pseudonymize\"\n";
        let config = Config::layered(
            Some(("f", file)),
            env(&[("ACS_STREAM__PRIVACY__KEY", "0123456789abcdef0123456789abcdef")]),
        )
        .unwrap();
        let shown = format!("{config:?} {:?}", config.privacy().unwrap());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("Secret(..)"), "{shown}");
    }

    #[test]
    fn a_missing_catalog_file_is_an_error() {
        let config = Config::layered(Some(("f", "[catalog]\nfile = \"/nonexistent/catalog.toml\"\n")), []).unwrap();
        assert!(config.catalog().unwrap_err().to_string().contains("/nonexistent/catalog.toml"));
    }
}

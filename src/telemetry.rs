//! Metrics (DESIGN.md §9): every name, its labels and its meaning in one place, described at
//! start-up; Prometheus conventions (`acs_stream_` prefix, `_total` counters, `_seconds`
//! histograms); labels from bounded sets only (the tenant label behind a cap).
//!
//! The core stays pure: it says what happened (an event's anomalies and times, a dead
//! letter's code) and the Kafka edge writes the metric, in the same place as the log line of
//! anything noteworthy. Metrics go through the `metrics` facade: with no recorder installed
//! (`process`, tests) they cost a branch; `run` installs the Prometheus recorder and serves it
//! on the admin port (`/metrics`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use metrics::{Counter, Histogram, Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Input records consumed. Labels: `topic` (an input topic, or the repartition topic).
pub const RECORDS_CONSUMED: &str = "acs_stream_records_consumed_total";
/// Records published and acknowledged by the brokers. Labels: `kind` (see [`Published`]).
pub const RECORDS_PUBLISHED: &str = "acs_stream_records_published_total";
/// Records dead-lettered. Labels: `code` (the dead-letter error code).
pub const DEAD_LETTERS: &str = "acs_stream_dead_letters_total";
/// Flag alerts raised. Labels: `rule`, `severity` (from the rules file: bounded), `mode`
/// (`live`, or `shadow` for a rule only tried out).
pub const ALERTS: &str = "acs_stream_alerts_total";
/// Flag alerts folded into their session's incident instead of being published (rule
/// families, the alert budget). Labels: `rule`.
pub const ALERTS_FOLDED: &str = "acs_stream_alerts_folded_total";
/// Anomalies marked on events. Labels: `kind`.
pub const ANOMALIES: &str = "acs_stream_anomalies_total";
/// Events processed per tenant. Labels: `tenant` (the first [`TenantLabels`] cap tenants seen,
/// then `other`).
pub const TENANT_EVENTS: &str = "acs_stream_tenant_events_total";
/// From consuming a record to the acknowledgement of its output.
pub const PROCESSING_SECONDS: &str = "acs_stream_processing_seconds";
/// Processing time minus the event's incident time (never negative).
pub const EVENT_TIME_LAG_SECONDS: &str = "acs_stream_event_time_lag_seconds";
/// Records of an assigned partition not processed yet: high watermark minus position, never
/// negative. Labels: `topic`, `partition` (partitions assigned to this instance; set to 0
/// when revoked).
pub const CONSUMER_LAG: &str = "acs_stream_consumer_lag_records";
/// Partitions assigned to this instance.
pub const ASSIGNED_PARTITIONS: &str = "acs_stream_assigned_partitions";
/// Sessions held in memory by this instance.
pub const ACTIVE_SESSIONS: &str = "acs_stream_active_sessions";
/// Duration of a restore of assigned partitions' state from the changelog.
pub const RESTORE_SECONDS: &str = "acs_stream_restore_seconds";
/// Changelog records read back while restoring.
pub const RESTORED_RECORDS: &str = "acs_stream_restored_records_total";
/// Offset commits. Labels: `result`: `committed` (a synchronous commit, on revoke and
/// shutdown, acknowledged), `sent` (a periodic asynchronous commit sent: librdkafka reports its
/// outcome to no one here; a failed one is retried by the next), `failed`.
pub const COMMITS: &str = "acs_stream_commits_total";
/// Produce errors. Labels: `retriable` (`true`: retried without end, backpressure; `false`:
/// the output was refused for good and rerouted, or its partition stopped).
pub const PRODUCE_ERRORS: &str = "acs_stream_produce_errors_total";
/// Input records whose outputs are not all acknowledged yet.
pub const IN_FLIGHT: &str = "acs_stream_in_flight_records";
/// Rules and catalog reloads (SIGHUP). Labels: `result` (`ok`, `failed`).
pub const CONFIG_RELOADS: &str = "acs_stream_config_reloads_total";
/// Assigned partitions with records not committed and a committed position that has not
/// moved for `admin.stuck_after`.
pub const STUCK_PARTITIONS: &str = "acs_stream_stuck_partitions";
/// Kafka transactions (exactly-once). Labels: `result`: `committed`, `aborted`.
pub const TRANSACTIONS: &str = "acs_stream_transactions_total";
/// Rebalances this instance took part in. Labels: `change`: `assigned`, `revoked`, `lost`.
pub const REBALANCES: &str = "acs_stream_rebalances_total";
/// 1 when `/readyz` says ready, else 0.
pub const READY: &str = "acs_stream_ready";
/// Always 1. Labels: `version`.
pub const BUILD_INFO: &str = "acs_stream_build_info";
/// 1 for the configuration in force, 0 for one a reload replaced. Labels: `rules_version`,
/// `catalog_version` (as stamped on outputs), `privacy_key_id` (empty without a key).
pub const CONFIG_INFO: &str = "acs_stream_config_info";

/// Every metric: name, kind, unit, description.
pub const METRICS: &[(&str, Kind, Option<Unit>, &str)] = &[
    (RECORDS_CONSUMED, Kind::Counter, None, "Input records consumed, by topic."),
    (RECORDS_PUBLISHED, Kind::Counter, None, "Records published and acknowledged, by kind."),
    (DEAD_LETTERS, Kind::Counter, None, "Records dead-lettered, by error code."),
    (ALERTS, Kind::Counter, None, "Flag alerts published, by rule, severity and mode (live, shadow)."),
    (ALERTS_FOLDED, Kind::Counter, None, "Flag alerts folded into their session's incident, not published, by rule."),
    (ANOMALIES, Kind::Counter, None, "Anomalies marked on events, by kind."),
    (TENANT_EVENTS, Kind::Counter, None, "Events processed, by tenant (capped; the rest as other)."),
    (PROCESSING_SECONDS, Kind::Histogram, Some(Unit::Seconds), "From consuming a record to its output's ack."),
    (EVENT_TIME_LAG_SECONDS, Kind::Histogram, Some(Unit::Seconds), "Processing time minus incident time."),
    (CONSUMER_LAG, Kind::Gauge, None, "Records not processed yet, per assigned partition."),
    (ASSIGNED_PARTITIONS, Kind::Gauge, None, "Partitions assigned to this instance."),
    (ACTIVE_SESSIONS, Kind::Gauge, None, "Sessions held in memory."),
    (RESTORE_SECONDS, Kind::Histogram, Some(Unit::Seconds), "Duration of a state restore from the changelog."),
    (RESTORED_RECORDS, Kind::Counter, None, "Changelog records read back while restoring."),
    (COMMITS, Kind::Counter, None, "Offset commits, by result."),
    (PRODUCE_ERRORS, Kind::Counter, None, "Produce errors, by whether they are retried."),
    (IN_FLIGHT, Kind::Gauge, None, "Input records whose outputs are not all acknowledged."),
    (CONFIG_RELOADS, Kind::Counter, None, "Rules and catalog reloads, by result."),
    (STUCK_PARTITIONS, Kind::Gauge, None, "Assigned partitions lagging without progress."),
    (TRANSACTIONS, Kind::Counter, None, "Kafka transactions (exactly-once), by result."),
    (REBALANCES, Kind::Counter, None, "Partition assignments, revocations and losses."),
    (READY, Kind::Gauge, None, "1 when ready (/readyz), else 0."),
    (BUILD_INFO, Kind::Gauge, None, "Always 1; the version in a label."),
    (
        CONFIG_INFO,
        Kind::Gauge,
        None,
        "1 for the rules, catalog and privacy key in force (labels), 0 for replaced ones.",
    ),
];

/// A metric's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The `kind` label of [`RECORDS_PUBLISHED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Event = 0,
    Alert = 1,
    DeadLetter = 2,
    Changelog = 3,
    Repartition = 4,
    Incident = 5,
}

impl Published {
    pub fn as_str(self) -> &'static str {
        match self {
            Published::Event => "event",
            Published::Alert => "alert",
            Published::DeadLetter => "dead_letter",
            Published::Changelog => "changelog",
            Published::Repartition => "repartition",
            Published::Incident => "incident",
        }
    }
}

/// Describes every metric to the installed recorder (names, units, help texts), and sets the
/// build info.
pub fn describe() {
    for &(name, kind, unit, help) in METRICS {
        match (kind, unit) {
            (Kind::Counter, Some(unit)) => describe_counter!(name, unit, help),
            (Kind::Counter, None) => describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => describe_histogram!(name, help),
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Every series of a known label set exists from the start, at 0: `rate()` and alerts on
    // them work before the first occurrence.
    for result in ["committed", "sent", "failed"] {
        metrics::counter!(COMMITS, "result" => result).absolute(0);
    }
    for result in ["ok", "failed"] {
        metrics::counter!(CONFIG_RELOADS, "result" => result).absolute(0);
    }
    for result in ["committed", "aborted"] {
        metrics::counter!(TRANSACTIONS, "result" => result).absolute(0);
    }
    for change in ["assigned", "revoked", "lost"] {
        metrics::counter!(REBALANCES, "change" => change).absolute(0);
    }
    for retriable in ["true", "false"] {
        metrics::counter!(PRODUCE_ERRORS, "retriable" => retriable).absolute(0);
    }
    for code in crate::decode::ErrorCode::ALL {
        metrics::counter!(DEAD_LETTERS, "code" => code.as_str()).absolute(0);
    }
    for kind in crate::model::Anomaly::ALL {
        metrics::counter!(ANOMALIES, "kind" => kind.as_str()).absolute(0);
    }
    for gauge in [ASSIGNED_PARTITIONS, ACTIVE_SESSIONS, IN_FLIGHT, STUCK_PARTITIONS, READY] {
        metrics::gauge!(gauge).set(0.0);
    }
    metrics::counter!(RESTORED_RECORDS).absolute(0);
}

/// Histogram buckets, in seconds: from 100 µs (a record through the core and the broker on
/// one host) to 10 minutes (a restore, or an event-time lag after an outage).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

/// Installs the Prometheus recorder as the global one and describes every metric; the handle
/// renders the scrape page. Its upkeep must run periodically ([`PrometheusHandle::run_upkeep`]).
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

/// The `tenant` label of [`TENANT_EVENTS`]: the tenant itself for the first `cap` tenants
/// seen, `other` afterwards, so that a flood of tenant ids cannot grow the metrics without
/// bound.
#[derive(Debug)]
pub struct TenantLabels {
    cap: usize,
    seen: HashSet<Arc<str>>,
}

/// The label of the tenants past the cap.
pub const OTHER_TENANTS: &str = "other";

impl TenantLabels {
    pub fn new(cap: usize) -> TenantLabels {
        TenantLabels { cap, seen: HashSet::new() }
    }

    /// The label to count `tenant` under.
    pub fn label(&mut self, tenant: &str) -> metrics::SharedString {
        if let Some(known) = self.seen.get(tenant) {
            return metrics::SharedString::from(known.clone());
        }
        if self.seen.len() < self.cap {
            let tenant: Arc<str> = Arc::from(tenant);
            self.seen.insert(tenant.clone());
            return metrics::SharedString::from(tenant);
        }
        metrics::SharedString::const_str(OTHER_TENANTS)
    }
}

/// The metric handles of the consuming loop, registered once per label set (looking a
/// metric up by name and labels for every record would cost more than recording it).
#[derive(Debug)]
pub struct Meters {
    consumed: HashMap<Arc<str>, Counter>,
    tenants: TenantLabels,
    tenant_events: HashMap<metrics::SharedString, Counter>,
    event_time_lag: Histogram,
}

impl Meters {
    /// Handles registered with the recorder installed now; `tenant_cap`: see [`TenantLabels`].
    pub fn new(tenant_cap: usize) -> Meters {
        Meters {
            consumed: HashMap::new(),
            tenants: TenantLabels::new(tenant_cap),
            tenant_events: HashMap::new(),
            event_time_lag: metrics::histogram!(EVENT_TIME_LAG_SECONDS),
        }
    }

    /// A record of `topic` consumed.
    pub fn consumed(&mut self, topic: &Arc<str>) {
        match self.consumed.get(topic) {
            Some(counter) => counter.increment(1),
            None => {
                let counter = metrics::counter!(RECORDS_CONSUMED, "topic" => topic.to_string());
                counter.increment(1);
                self.consumed.insert(topic.clone(), counter);
            }
        }
    }

    /// An event processed at `now_ms`.
    pub fn event(&mut self, facts: &crate::pipeline::Facts<'_>, now_ms: i64) {
        let label = self.tenants.label(&facts.tenant);
        self.tenant_events
            .entry(label)
            .or_insert_with_key(|label| metrics::counter!(TENANT_EVENTS, "tenant" => label.clone()))
            .increment(1);
        self.event_time_lag.record(now_ms.saturating_sub(facts.incident_time).max(0) as f64 / 1000.0);
        for anomaly in &facts.anomalies {
            metrics::counter!(ANOMALIES, "kind" => anomaly.as_str()).increment(1);
        }
        for rule in &facts.folded {
            metrics::counter!(ALERTS_FOLDED, "rule" => rule.to_string()).increment(1);
        }
    }

    /// A record dead-lettered with `code`.
    pub fn dead_letter(code: crate::decode::ErrorCode) {
        metrics::counter!(DEAD_LETTERS, "code" => code.as_str()).increment(1);
    }

    /// An alert raised by `rule` (labels: its id and severity, from the rules file, and its
    /// mode, as [`describe_rules`] last saw it).
    pub fn alert(rule: &str, severity: crate::rules::Severity) {
        let mode = rule_mode(rule).as_str();
        metrics::counter!(ALERTS, "rule" => rule.to_string(), "severity" => severity.as_str(), "mode" => mode)
            .increment(1);
    }
}

/// The rules in shadow mode, as [`describe_rules`] last saw them: the `mode` label of
/// [`ALERTS`] (the runtime counts an alert by its rule's id and severity).
static SHADOW_RULES: std::sync::RwLock<Vec<Arc<str>>> = std::sync::RwLock::new(Vec::new());

/// `rule`'s mode, as [`describe_rules`] last saw it.
pub fn rule_mode(rule: &str) -> crate::rules::RuleMode {
    // A poisoned lock only means a writer panicked: the list is whole (replaced at once).
    let shadow = SHADOW_RULES.read().unwrap_or_else(|e| e.into_inner());
    if shadow.iter().any(|id| &**id == rule) { crate::rules::RuleMode::Shadow } else { crate::rules::RuleMode::Live }
}

/// Starts the alert counters (published and folded) of every rule of `rules` at 0 (at start-up and after a reload):
/// an alert on `increase(acs_stream_alerts_total[5m]) > 0` sees the first one; remembers
/// which rules are shadow rules.
pub fn describe_rules(rules: &crate::rules::RuleSet) {
    let shadow = rules.rules().iter().filter(|rule| rule.mode == crate::rules::RuleMode::Shadow);
    *SHADOW_RULES.write().unwrap_or_else(|e| e.into_inner()) = shadow.map(|rule| rule.id.clone()).collect();
    for rule in rules.rules() {
        let (id, severity, mode) = (rule.id.to_string(), rule.severity.as_str(), rule.mode.as_str());
        metrics::counter!(ALERTS, "rule" => id.clone(), "severity" => severity, "mode" => mode).absolute(0);
        metrics::counter!(ALERTS_FOLDED, "rule" => id).absolute(0);
    }
}

/// The label set [`config_info`] last set to 1.
static CONFIG_IN_FORCE: std::sync::Mutex<Option<[String; 3]>> = std::sync::Mutex::new(None);

/// Sets [`CONFIG_INFO`] to 1 for `stamp` and the privacy key `key_id`, and to 0 for the
/// configuration it replaces (at start-up and after a reload).
pub fn config_info(stamp: &crate::model::Stamp, key_id: Option<&str>) {
    let labels = [stamp.rules_version.to_string(), stamp.catalog_version.to_string(), key_id.unwrap_or("").to_owned()];
    let gauge = |[rules, catalog, key]: [String; 3]| metrics::gauge!(CONFIG_INFO, "rules_version" => rules, "catalog_version" => catalog, "privacy_key_id" => key);
    let mut in_force = CONFIG_IN_FORCE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = in_force.take().filter(|previous| *previous != labels) {
        gauge(previous).set(0.0);
    }
    gauge(labels.clone()).set(1.0);
    *in_force = Some(labels);
}

/// The metric handles of delivery reports (settled on any thread holding the runtime's state).
#[derive(Debug)]
pub struct DeliveryMeters {
    published: [Counter; 6],
    processing: Histogram,
}

impl DeliveryMeters {
    pub fn new() -> DeliveryMeters {
        let kinds = [
            Published::Event,
            Published::Alert,
            Published::DeadLetter,
            Published::Changelog,
            Published::Repartition,
            Published::Incident,
        ];
        DeliveryMeters {
            published: kinds.map(|kind| metrics::counter!(RECORDS_PUBLISHED, "kind" => kind.as_str())),
            processing: metrics::histogram!(PROCESSING_SECONDS),
        }
    }

    /// A record of `kind` acknowledged; `consumed_at`: when its input was consumed (for an
    /// input's own output, not its changelog records).
    pub fn published(&self, kind: Published, consumed_at: Option<std::time::Instant>) {
        self.published[kind as usize].increment(1);
        if let Some(consumed_at) = consumed_at {
            self.processing.record(consumed_at.elapsed().as_secs_f64());
        }
    }
}

impl Default for DeliveryMeters {
    fn default() -> Self {
        DeliveryMeters::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let mut names = HashSet::new();
        for &(name, kind, unit, help) in METRICS {
            assert!(name.starts_with("acs_stream_"), "{name}");
            assert!(names.insert(name), "{name} twice");
            assert!(!help.is_empty());
            match kind {
                Kind::Counter => assert!(name.ends_with("_total"), "{name}"),
                Kind::Histogram => assert!(name.ends_with("_seconds") && unit == Some(Unit::Seconds), "{name}"),
                Kind::Gauge => assert!(!name.ends_with("_total") && !name.ends_with("_seconds"), "{name}"),
            }
        }
    }

    #[test]
    fn the_tenant_label_is_capped() {
        let mut labels = TenantLabels::new(2);
        assert_eq!(labels.label("acme").as_ref(), "acme");
        assert_eq!(labels.label("globex").as_ref(), "globex");
        assert_eq!(labels.label("initech").as_ref(), OTHER_TENANTS, "past the cap");
        assert_eq!(labels.label("acme").as_ref(), "acme", "a tenant seen before the cap keeps its label");
    }
}

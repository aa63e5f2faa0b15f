//! The pure core: one record in, its outputs out (DESIGN.md §1).
//!
//! `decode → enrich → encode`, with the processing time passed in. No I/O, no clock, no
//! Kafka: the drivers in [`crate::commands`] move the bytes.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::decode::Decoder;
use crate::encode::incident::IncidentEncoder;
use crate::encode::{self, AlertEncoder, DeadLetter, Format, Output, TopicTemplate};
use crate::enrich;
use crate::model::{Event, ReasonCatalog, Source, Stamp};
use crate::privacy::Privacy;
use crate::rules::RuleSet;
use crate::session::{SessionLimits, Sessions};

/// One input record.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// The key upstream gave it.
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Where upstream published it (the lineage written on its outputs and dead letters).
    pub source: Source,
    /// Its offset in the partition it is processed from: `source.offset`, except for input
    /// re-keyed through the repartition topic, where it is the repartition record's offset.
    /// Sessions remember it to skip input processed again.
    pub position: i64,
}

impl<'a> Record<'a> {
    /// A record processed where upstream published it.
    pub fn new(key: Option<&'a [u8]>, value: &'a [u8], source: Source) -> Record<'a> {
        let position = source.offset;
        Record { key, value, source, position }
    }
}

/// What became of a record: exactly one of an event or a dead letter.
#[derive(Debug, Clone, PartialEq)]
// Returned once per record and consumed at once: boxing the large variant would cost an
// allocation per event to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
pub enum Outcome<'a> {
    /// The enriched event's output record, the alerts it fired, the tenant-scoped rules it
    /// matched (to be counted where the tenant's events meet: see
    /// [`Processor::tenant_topic`]), and what the edge measures of it.
    /// The incidents' records come when the event changed them (its session's; sessions it
    /// found silent).
    Event {
        output: Output<'a>,
        alerts: Alerts,
        incidents: Vec<Output<'static>>,
        forward: crate::rules::Forwarded,
        facts: Facts<'a>,
    },
    /// The record was refused; the driver renders it (Kafka record or JSON line).
    DeadLetter(DeadLetter),
}

pub use crate::encode::{Alerted, Alerts};

/// What the Kafka edge measures of an event (its metrics): the core only says it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts<'a> {
    pub tenant: std::borrow::Cow<'a, str>,
    /// Epoch milliseconds.
    pub incident_time: i64,
    pub anomalies: Vec<crate::model::Anomaly>,
    /// The rules whose alerts the session's incident folded instead of publishing them.
    pub folded: crate::session::store::Folded,
}

/// What the Kafka runtime runs on each record: the core ([`Pipeline`]), or, in the
/// end-to-end benchmark, a pass-through that republishes the bytes unchanged, so that both
/// are measured on the same consume/produce/commit code.
pub trait Processor: Send + Sync {
    /// What the processor keeps per input partition (the sessions of its records). Cloned
    /// from [`Processor::state`]'s when a restore starts over.
    type State: PartitionState + Clone + 'static;
    /// The state of a partition seen for the first time.
    fn state(&self) -> Self::State;
    /// Processes one record of the partition whose state is `state`, at processing time
    /// `now_ms`.
    fn process<'a>(&self, record: &Record<'a>, state: &mut Self::State, now_ms: i64) -> Outcome<'a>;
    /// Where dead letters (and outputs the brokers refuse) go.
    fn dead_letter_topic(&self) -> &str;
    /// The compacted topic the partition states are written to and restored from; `None`:
    /// they live in memory only.
    fn changelog_topic(&self) -> Option<&str> {
        None
    }
    /// The topic input is re-keyed through before it is processed, when upstream does not
    /// key it by session; `None`: input is processed where it is consumed.
    fn repartition_topic(&self) -> Option<&str> {
        None
    }
    /// The key `record` takes on its way through the repartition topic (its session, so that
    /// one owner processes a session's records in order), or the dead letter it becomes when
    /// it cannot be read.
    fn rekey(&self, record: &Record<'_>, _now_ms: i64) -> Result<Vec<u8>, DeadLetter> {
        Ok(record.key.map(<[u8]>::to_vec).unwrap_or_default())
    }
    /// The internal topic events matching tenant-scoped rules are re-keyed by tenant through
    /// (the [`Outcome::Event`]'s `forward` list non-empty), to be counted by
    /// [`Processor::process_tenant`] where all of a tenant's events meet; `None`: none.
    fn tenant_topic(&self) -> Option<&str> {
        None
    }
    /// The refusal of a record whose outputs the brokers refused for good (`produce_failed`,
    /// `detail` saying why), as its dead letter must say it: what the processor stamps on
    /// its dead letters, and whether the value may go with it (`tenant`: the record's, when
    /// known).
    fn produce_failed(&self, detail: String, _tenant: Option<&str>) -> crate::decode::Rejection {
        crate::decode::Rejection::new(crate::decode::ErrorCode::ProduceFailed, detail)
    }
    /// Counts a record of the tenant topic (an upstream record, with the tenant-scoped rules
    /// it matched) in its tenant's state; the alerts fired, or the dead letter it becomes
    /// when it cannot be read again.
    fn process_tenant<'a>(
        &self,
        _record: &Record<'a>,
        _matched: &[&str],
        _state: &mut Self::State,
        _now_ms: i64,
    ) -> Result<Alerts, DeadLetter> {
        Ok(Alerts::new())
    }
}

pub use crate::session::store::Change;

/// A processor's state of one input partition, as the runtime makes it durable: now and then
/// (every commit interval, on revoke, at shutdown) it produces the state's changes since the
/// previous time to the changelog (acknowledged before the offsets of the records that made
/// them are committed), and on assignment it rebuilds the state from the changelog.
pub trait PartitionState: Send {
    /// The changelog records of the changes since the last call, for the input partition
    /// `topic`/`partition`, at processing time `now_ms` (which may expire entries).
    fn changes(&mut self, topic: &str, partition: i32, now_ms: i64) -> Vec<Change>;
    /// Applies one changelog record read back while restoring `topic`/`partition`.
    fn restore(&mut self, topic: &str, partition: i32, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;
    /// The partition's input is committed up to `position` (exclusive): what was kept for a
    /// replay below it can go.
    fn committed(&mut self, _position: i64) {}
    /// Entries held (sessions).
    fn entries(&self) -> usize;
    /// The live state of the entry `key` (a session), as JSON, if held.
    fn describe(&self, _key: &str) -> Option<serde_json::Value> {
        None
    }
}

/// No state (a stateless processor).
impl PartitionState for () {
    fn changes(&mut self, _topic: &str, _partition: i32, _now_ms: i64) -> Vec<Change> {
        Vec::new()
    }

    fn restore(&mut self, _topic: &str, _partition: i32, _key: &[u8], _value: Option<&[u8]>) -> Result<(), String> {
        Ok(())
    }

    fn entries(&self) -> usize {
        0
    }
}

impl PartitionState for Sessions {
    fn changes(&mut self, topic: &str, partition: i32, now_ms: i64) -> Vec<Change> {
        self.expire_due(now_ms);
        self.drain_changes(topic, partition)
    }

    fn restore(&mut self, topic: &str, partition: i32, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let key = std::str::from_utf8(key).map_err(|_| "a key that is not UTF-8".to_owned())?;
        self.restore_record(topic, partition, key, value).map_err(|error| error.to_string())
    }

    fn committed(&mut self, position: i64) {
        Sessions::committed(self, position);
    }

    fn entries(&self) -> usize {
        self.len()
    }

    fn describe(&self, key: &str) -> Option<serde_json::Value> {
        self.get(key).map(crate::session::SessionState::to_json)
    }
}

impl Processor for Pipeline {
    type State = Sessions;

    fn state(&self) -> Sessions {
        self.sessions()
    }

    /// Stamped with the configuration in force, and without the value when the tenant's
    /// personal data is protected and its dead letters omit it (as the core's own).
    fn produce_failed(&self, detail: String, tenant: Option<&str>) -> crate::decode::Rejection {
        let mut rejection = crate::decode::Rejection::new(crate::decode::ErrorCode::ProduceFailed, detail);
        rejection.tenant = tenant.map(Box::from);
        rejection.stamp = Some(self.stamp());
        rejection.omit_value = self.privacy().dead_letter_omission(tenant);
        rejection
    }

    #[inline]
    fn process<'a>(&self, record: &Record<'a>, sessions: &mut Sessions, now_ms: i64) -> Outcome<'a> {
        Pipeline::process(self, record, sessions, now_ms)
    }

    fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    fn changelog_topic(&self) -> Option<&str> {
        self.changelog_topic.as_deref()
    }

    fn repartition_topic(&self) -> Option<&str> {
        self.repartition_topic.as_deref()
    }

    fn rekey(&self, record: &Record<'_>, now_ms: i64) -> Result<Vec<u8>, DeadLetter> {
        Pipeline::rekey(self, record, now_ms)
    }

    fn tenant_topic(&self) -> Option<&str> {
        self.tenant_topic.as_deref()
    }

    fn process_tenant<'a>(
        &self,
        record: &Record<'a>,
        matched: &[&str],
        sessions: &mut Sessions,
        now_ms: i64,
    ) -> Result<Alerts, DeadLetter> {
        Pipeline::process_tenant(self, record, matched, sessions, now_ms)
    }
}

/// The configured core.
#[derive(Debug, Clone)]
pub struct Pipeline {
    decoder: Decoder,
    /// Swapped whole by [`Pipeline::reload`] (SIGHUP), shared by the clones.
    catalog: Arc<ArcSwap<ReasonCatalog>>,
    rules: Arc<ArcSwap<RuleSet>>,
    /// The versions of the rules and catalog in force, swapped with them.
    stamp: Arc<ArcSwap<Stamp>>,
    /// Each tenant's personal data: applied to every event before its session and rules.
    privacy: Arc<Privacy>,
    events: TopicTemplate,
    alerts: TopicTemplate,
    shadow_alerts: TopicTemplate,
    incidents: TopicTemplate,
    incident_policy: crate::incidents::Policy,
    /// Where tenant-scoped rules are counted: `None`, here (in the state of the partition,
    /// right when one process sees all of a tenant's events); else forwarded through it.
    tenant_topic: Option<String>,
    dead_letter_topic: String,
    format: Format,
    session_limits: SessionLimits,
    changelog_topic: Option<String>,
    repartition_topic: Option<String>,
}

impl Pipeline {
    /// Builds the core from a validated configuration and a catalog, with the built-in rules
    /// (none when `rules.enabled` is off; see [`Pipeline::with_rules`] for a rules file) and
    /// the configured privacy (reading `privacy.key_file` when set).
    pub fn new(config: &Config, catalog: ReasonCatalog) -> Result<Pipeline, ConfigError> {
        let events = config
            .events_template()
            .map_err(|e| ConfigError::Invalid { key: "output.events_topic", message: e.to_string() })?;
        let alerts = config
            .alerts_template()
            .map_err(|e| ConfigError::Invalid { key: "output.alerts_topic", message: e.to_string() })?;
        let shadow_alerts = config
            .shadow_alerts_template()
            .map_err(|e| ConfigError::Invalid { key: "output.shadow_alerts_topic", message: e.to_string() })?;
        let incidents = config
            .incidents_template()
            .map_err(|e| ConfigError::Invalid { key: "output.incidents_topic", message: e.to_string() })?;
        let rules = if config.rules.enabled { RuleSet::defaults() } else { RuleSet::empty() };
        Ok(Pipeline {
            decoder: config.decoder(),
            stamp: Arc::new(ArcSwap::from_pointee(Stamp::of(&rules, &catalog))),
            privacy: Arc::new(config.privacy()?),
            catalog: Arc::new(ArcSwap::from_pointee(catalog)),
            rules: Arc::new(ArcSwap::from_pointee(rules)),
            events,
            alerts,
            shadow_alerts,
            incidents,
            incident_policy: config.incident_policy(),
            tenant_topic: config.tenant_topic(),
            dead_letter_topic: config.output.dead_letter_topic.clone(),
            format: config.output.format,
            session_limits: config.session_limits(),
            changelog_topic: config.changelog_topic(),
            repartition_topic: config.repartition_topic(),
        })
    }

    /// The same core with these rules (its own: clones made before do not see them; clones
    /// made after share them, and what [`Pipeline::reload`] swaps in).
    pub fn with_rules(mut self, rules: RuleSet) -> Pipeline {
        self.stamp = Arc::new(ArcSwap::from_pointee(Stamp::of(&rules, &self.catalog.load())));
        self.rules = Arc::new(ArcSwap::from_pointee(rules));
        self
    }

    /// The same core with this protection of personal data (instead of the configured one).
    pub fn with_privacy(mut self, privacy: Privacy) -> Pipeline {
        self.privacy = Arc::new(privacy);
        self
    }

    /// The same core counting tenant-scoped rules in the state of the partition (one process
    /// sees every event: `process`), not through the tenant topic.
    pub fn with_inline_tenants(mut self) -> Pipeline {
        self.tenant_topic = None;
        self
    }

    /// Replaces the rules and the catalog, for every clone of this pipeline, from the next
    /// record on (SIGHUP). State kept for rules no longer there is dropped as it is met.
    pub fn reload(&self, rules: RuleSet, catalog: ReasonCatalog) {
        self.stamp.store(Arc::new(Stamp::of(&rules, &catalog)));
        self.rules.store(Arc::new(rules));
        self.catalog.store(Arc::new(catalog));
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    /// The versions of the rules and catalog in force.
    pub fn stamp(&self) -> Arc<Stamp> {
        self.stamp.load_full()
    }

    /// The protection of personal data.
    pub fn privacy(&self) -> &Privacy {
        &self.privacy
    }

    /// The same core with another value encoding.
    pub fn with_format(mut self, format: Format) -> Pipeline {
        self.format = format;
        self
    }

    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// Decodes, enriches and protects one value (its tenant's privacy mode applied), stamped
    /// with the configuration in force: the canonical event, or why it is refused.
    #[inline]
    pub fn enrich<'a>(&self, value: &'a [u8], source: &Source, now_ms: i64) -> Result<Event<'a>, DeadLetter> {
        match self.decoder.decode(value, source, now_ms) {
            Ok(mut event) => {
                enrich::enrich(&mut event, &self.catalog.load());
                self.privacy.protect(&mut event);
                event.stamp = Some(self.stamp.load_full());
                Ok(event)
            }
            Err(rejection) => Err(self.dead_letter(rejection, source, now_ms)),
        }
    }

    /// A refused record's dead letter, stamped, without its value when its tenant's privacy
    /// says so.
    fn dead_letter(&self, mut rejection: crate::decode::Rejection, source: &Source, now_ms: i64) -> DeadLetter {
        rejection.stamp = Some(self.stamp.load_full());
        rejection.omit_value = self.privacy.dead_letter_omission(rejection.tenant.as_deref());
        DeadLetter { rejection, source: source.clone(), processed_at: now_ms }
    }

    /// The session (delivery execution id) of `record`, which re-keys it when input is not
    /// keyed by session; a record that cannot be decoded is dead-lettered here, where it was
    /// published.
    pub fn rekey(&self, record: &Record<'_>, now_ms: i64) -> Result<Vec<u8>, DeadLetter> {
        match self.decoder.decode(record.value, &record.source, now_ms) {
            Ok(event) => Ok(event.delivery_execution_id.as_bytes().to_vec()),
            Err(rejection) => Err(self.dead_letter(rejection, &record.source, now_ms)),
        }
    }

    /// Empty session state for one input partition, with the configured bounds.
    pub fn sessions(&self) -> Sessions {
        let alerts = AlertEncoder {
            template: self.alerts.clone(),
            shadow_template: self.shadow_alerts.clone(),
            format: self.format,
            stamp: self.stamp.clone(),
            privacy: self.privacy.clone(),
        };
        let incidents = IncidentEncoder {
            template: self.incidents.clone(),
            format: self.format,
            stamp: self.stamp.clone(),
            privacy: self.privacy.clone(),
        };
        let sessions =
            Sessions::new(self.session_limits).with_alerts(alerts).with_incidents(incidents, self.incident_policy);
        // Changes are recorded only for a changelog to write them to.
        if self.changelog_topic.is_some() { sessions } else { sessions.untracked() }
    }

    /// Processes one record at processing time `now_ms`: decode, enrich, apply to its
    /// session (in `sessions`, the state of the record's partition), evaluate the rules,
    /// encode.
    pub fn process<'a>(&self, record: &Record<'a>, sessions: &mut Sessions, now_ms: i64) -> Outcome<'a> {
        match self.enrich(record.value, &record.source, now_ms) {
            Ok(mut event) => {
                let rules = self.rules.load();
                let mut forward = crate::rules::Forwarded::new();
                let applied = if rules.rules().is_empty() {
                    sessions.apply_evaluating(&mut event, record.position, now_ms, None)
                } else {
                    let forwarding = self.tenant_topic.is_some() && rules.has_tenant_scope();
                    let tenant = forwarding.then_some(&mut forward);
                    sessions.apply_evaluating(&mut event, record.position, now_ms, Some((&rules, tenant)))
                };
                event.session = Some(applied.view);
                let output = encode::event_record(&event, &self.events, self.format, record.value.len());
                let facts = Facts {
                    tenant: event.tenant_id,
                    incident_time: event.incident_time,
                    anomalies: event.anomalies,
                    folded: applied.folded,
                };
                Outcome::Event { output, alerts: applied.alerts, incidents: applied.incidents, forward, facts }
            }
            Err(dead) => Outcome::DeadLetter(dead),
        }
    }

    /// Counts a record of the tenant topic: the upstream record `record` (lineage restored),
    /// which matched the tenant-scoped rules `matched` where its session is, in the state of
    /// its tenant (an entry of `sessions`, the state of the tenant topic's partition).
    pub fn process_tenant(
        &self,
        record: &Record<'_>,
        matched: &[&str],
        sessions: &mut Sessions,
        now_ms: i64,
    ) -> Result<Alerts, DeadLetter> {
        let event = self.enrich(record.value, &record.source, now_ms)?;
        let rules = self.rules.load();
        Ok(sessions.apply_tenant(&event, matched, record.position, now_ms, &rules))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_261_400_000;

    fn record(value: &[u8]) -> Record<'_> {
        Record::new(Some(b"k"), value, Source { topic: std::sync::Arc::from("raw"), partition: 1, offset: 5 })
    }

    #[test]
    fn each_record_is_one_event_or_one_dead_letter() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let good = br#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300}"#;
        match pipeline.process(&record(good), &mut pipeline.sessions(), NOW) {
            Outcome::Event { output, .. } => assert_eq!(output.topic, "acs.acme.events"),
            other => panic!("{other:?}"),
        }
        let bad = br#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":"soon"}"#;
        match pipeline.process(&record(bad), &mut pipeline.sessions(), NOW) {
            Outcome::DeadLetter(dead) => {
                assert_eq!(dead.rejection.code, crate::decode::ErrorCode::InvalidTime);
                assert_eq!((dead.source.partition, dead.source.offset, dead.processed_at), (1, 5, NOW));
                let kafka = dead.to_record(pipeline.dead_letter_topic(), Some(b"k"), bad);
                assert_eq!((&*kafka.topic, &*kafka.value), ("acs.dlq", &bad[..]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn records_are_rekeyed_by_session_or_dead_lettered_where_published() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let good = br#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300}"#;
        assert_eq!(pipeline.rekey(&record(good), NOW).unwrap(), b"u#d#h#acme");
        let bad = br#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":"soon"}"#;
        let dead = pipeline.rekey(&record(bad), NOW).unwrap_err();
        assert_eq!(dead.rejection.code, crate::decode::ErrorCode::InvalidTime);
        assert_eq!((dead.source.partition, dead.source.offset), (1, 5));
    }

    #[test]
    fn sessions_skip_positions_already_applied_not_upstream_offsets() {
        // Re-keyed input: upstream offsets of different partitions interleave in a session;
        // only the position in the processed partition says what was applied.
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let mut sessions = pipeline.sessions();
        let value = |id: &str| {
            format!(r#"{{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300,"messageId":"{id}"}}"#)
        };
        let (a, b) = (value("a"), value("b"));
        let mut first = record(a.as_bytes());
        first.source.offset = 90;
        first.position = 1;
        let mut second = record(b.as_bytes());
        second.source.offset = 7;
        second.position = 2;
        let sequence = |outcome: Outcome<'_>| match outcome {
            Outcome::Event { output, .. } => {
                use prost::Message as _;
                crate::encode::proto::pb::EnrichedEvent::decode(&*output.value).unwrap().session.unwrap().sequence
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(sequence(pipeline.process(&first, &mut sessions, NOW)), 1);
        assert_eq!(sequence(pipeline.process(&second, &mut sessions, NOW)), 2, "applied: a lower upstream offset");
        assert_eq!(sequence(pipeline.process(&second, &mut sessions, NOW)), 2, "processed again: not applied");
    }

    #[test]
    fn with_rules_is_the_pipelines_own_and_a_reload_reaches_its_clones() {
        let base = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let without = base.clone().with_rules(RuleSet::empty());
        assert_eq!(base.rules().rules().len(), RuleSet::defaults().rules().len(), "the original keeps its rules");
        let running = without.clone();
        without.reload(RuleSet::defaults(), ReasonCatalog::builtin());
        assert_eq!(running.rules().rules().len(), RuleSet::defaults().rules().len(), "a clone sees the reload");
    }

    #[test]
    fn the_configured_format_and_templates_apply() {
        let config =
            Config::layered(Some(("t", "[output]\nformat = \"json\"\nevents_topic = \"x.{tenant}\"\n")), []).unwrap();
        let pipeline = Pipeline::new(&config, ReasonCatalog::builtin()).unwrap();
        let good = br#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300}"#;
        let Outcome::Event { output, .. } = pipeline.process(&record(good), &mut pipeline.sessions(), NOW) else {
            panic!("an event")
        };
        assert_eq!(output.topic, "x.acme");
        assert!(output.value.starts_with(b"{\"tenantId\":\"acme\""));
    }

    #[test]
    fn shadow_rules_fire_to_the_shadow_topic_only() {
        let rules = RuleSet::from_toml(
            "test",
            "name = \"trial\"\n\
             [[rule]]\nid = \"pause-live\"\nseverity = \"low\"\ntitle = \"t\"\nsummary = \"s\"\n\
             [[rule.match]]\nactions = [\"pause\"]\n\
             [[rule]]\nid = \"pause-trial\"\nmode = \"shadow\"\nseverity = \"high\"\ntitle = \"t\"\nsummary = \"s\"\n\
             [[rule.match]]\nactions = [\"pause\"]\n",
        )
        .unwrap();
        assert!(rules.version.starts_with("trial@"), "{}", rules.version);
        let config = Config::layered(Some(("t", "[output]\nformat = \"json\"\n")), []).unwrap();
        let pipeline = Pipeline::new(&config, ReasonCatalog::builtin()).unwrap().with_rules(rules);
        let value = br#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300,"action":"pause"}"#;
        let Outcome::Event { alerts, .. } = pipeline.process(&record(value), &mut pipeline.sessions(), NOW) else {
            panic!("an event")
        };
        let routed: Vec<(&str, &str, crate::rules::RuleMode)> =
            alerts.iter().map(|a| (a.rule(), a.topic(), a.mode)).collect();
        assert_eq!(
            routed,
            [
                ("pause-live", "acs.acme.alerts", crate::rules::RuleMode::Live),
                ("pause-trial", "acs.acme.alerts.shadow", crate::rules::RuleMode::Shadow)
            ]
        );
        let shadow: serde_json::Value = serde_json::from_slice(&alerts[1].output().value).unwrap();
        assert_eq!(shadow["mode"], "shadow");
        assert_eq!(shadow["processor"]["rulesVersion"], *pipeline.stamp().rules_version);
        let live: serde_json::Value = serde_json::from_slice(&alerts[0].output().value).unwrap();
        assert!(live.get("mode").is_none(), "a live alert's contract is unchanged");
        assert_eq!(alerts[1].alert().unwrap().mode, crate::rules::RuleMode::Shadow, "kept through protobuf");
        crate::telemetry::describe_rules(&pipeline.rules());
        assert_eq!(crate::telemetry::rule_mode("pause-trial"), crate::rules::RuleMode::Shadow);
        assert_eq!(crate::telemetry::rule_mode("pause-live"), crate::rules::RuleMode::Live);
    }

    #[test]
    fn dead_letters_name_the_configuration_and_a_protected_tenants_go_without_value() {
        let config = Config::layered(
            Some(("t", "[privacy]\ndead_letter_value = \"omit\"\nkey = \"0123456789abcdef0123456789abcdef\"\n[privacy.tenants]\neu = \"pseudonymize\"\n")),
            [],
        )
        .unwrap();
        let pipeline = Pipeline::new(&config, ReasonCatalog::builtin()).unwrap();
        for (tenant, omitted) in [("eu", true), ("acme", false)] {
            let bad = format!(r#"{{"deliveryExecutionId":"eod#d#h#{tenant}","login":"doe","incidentTime":"soon"}}"#);
            let Outcome::DeadLetter(dead) = pipeline.process(&record(bad.as_bytes()), &mut pipeline.sessions(), NOW)
            else {
                panic!("a dead letter")
            };
            assert_eq!(dead.rejection.tenant.as_deref(), Some(tenant));
            let kafka = dead.to_record("acs.dlq", Some(b"eod#d#h#x"), bad.as_bytes());
            let header = |name: &str| kafka.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
            assert_eq!(header("acs.processor.rules-version").as_deref(), Some(&*pipeline.stamp().rules_version));
            assert_eq!(header("acs.value.omitted").is_some(), omitted, "{tenant}");
            assert_eq!((kafka.value.is_empty(), kafka.key.is_none()), (omitted, omitted), "{tenant}");
        }
    }

    /// `acs-stream replay` produces dead letters back to their source topic: a record that
    /// was already processed (replayed twice, or a dead letter of an output refused after its
    /// event) comes again at a new offset, and must change nothing.
    #[test]
    fn input_replayed_at_new_offsets_is_a_duplicate_and_fires_nothing_again() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap().with_format(Format::Json);
        let mut sessions = pipeline.sessions();
        let pauses: Vec<String> = (0..3)
            .map(|i| {
                format!(
                    r#"{{"deliveryExecutionId":"u#d#h#acme","incidentTime":{},"actor":"test-taker","action":"pause","actionStatus":"succeeded"}}"#,
                    1_767_261_300 + i * 60
                )
            })
            .collect();
        let run = |sessions: &mut Sessions, first_offset: i64| {
            let mut seen = Vec::new();
            for (offset, value) in (first_offset..).zip(&pauses) {
                let Outcome::Event { output, alerts, .. } = pipeline.process(&record_at(value, offset), sessions, NOW)
                else {
                    panic!("an event")
                };
                let event: serde_json::Value = serde_json::from_slice(&output.value).unwrap();
                let rules: Vec<String> = alerts.iter().map(|a| a.rule().to_owned()).collect();
                seen.push((event["session"]["pauseCount"].clone(), event["session"]["duplicate"].clone(), rules));
            }
            seen
        };
        let first = run(&mut sessions, 10);
        assert!(first[2].2.contains(&"repeated-pauses".to_owned()), "{first:?}");
        let replayed = run(&mut sessions, 50);
        for (pause_count, duplicate, rules) in replayed {
            assert_eq!((pause_count, duplicate), (serde_json::json!(3), serde_json::json!(true)));
            assert!(rules.is_empty(), "no alert fired again: {rules:?}");
        }
    }

    fn record_at(value: &str, offset: i64) -> Record<'_> {
        Record::new(None, value.as_bytes(), Source { topic: std::sync::Arc::from("raw"), partition: 0, offset })
    }

    #[test]
    fn the_session_view_of_a_protected_tenant_is_keyed_by_its_pseudonymous_id() {
        let file = "[privacy]\ndefault = \"pseudonymize\"\nkey = \"0123456789abcdef0123456789abcdef\"\n";
        let pipeline = Pipeline::new(&Config::layered(Some(("t", file)), []).unwrap(), ReasonCatalog::builtin())
            .unwrap()
            .with_format(Format::Json);
        let value = br#"{"deliveryExecutionId":"eod.nhoj#d#h#acme","login":"john.doe","ip":"10.9.8.7","incidentTime":1767261300,"action":"pause"}"#;
        let mut sessions = pipeline.sessions();
        let Outcome::Event { output, .. } = pipeline.process(&record(value), &mut sessions, NOW) else {
            panic!("an event")
        };
        let event: serde_json::Value = serde_json::from_slice(&output.value).unwrap();
        let id = event["deliveryExecutionId"].as_str().unwrap();
        assert!(id.starts_with("ps_") && id.ends_with("#d#h#acme"), "{id}");
        assert_eq!(output.key.as_deref(), Some(id.as_bytes()), "the output key is the pseudonymous id");
        assert!(PartitionState::describe(&sessions, "eod.nhoj#d#h#acme").is_none(), "never under the user's id");
        let view = PartitionState::describe(&sessions, id).expect("under the id the outputs show").to_string();
        assert!(!view.contains("john") && !view.contains("nhoj") && !view.contains("10.9.8.7"), "{view}");
    }
}

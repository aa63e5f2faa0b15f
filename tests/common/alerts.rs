//! Alerts in the broker tests: the reference a run must match, and what a run published.

use std::collections::{BTreeMap, HashSet};

use acs_stream::synth::SynthRecord;

use super::topics::{now_ms, read_committed};

/// What an alert says, without where its evidence was read (input offsets depend on how the
/// producer spread the records over partitions): id, rule, count, window, evidence ids.
pub type AlertFacts = (String, String, u32, i64, i64, i64, Vec<String>);

pub fn alert_facts(alert: &acs_stream::rules::Alert) -> AlertFacts {
    (
        alert.alert_id.clone(),
        alert.rule_id.to_string(),
        alert.count,
        alert.window_start,
        alert.window_end,
        alert.fired_at,
        alert.evidence.iter().map(|e| e.message_id.to_string()).collect(),
    )
}

/// The session-scoped alerts the core fires over `inputs` in order, without a restart: what
/// any run must publish. Session-scoped rules see each session in input order, as a
/// partition keyed by session gives them.
pub fn reference_session_alerts(inputs: &[SynthRecord], input: &str) -> BTreeMap<String, AlertFacts> {
    use acs_stream::config::Config;
    use acs_stream::model::{ReasonCatalog, Source};
    use acs_stream::pipeline::{Outcome, Pipeline, Record};
    use acs_stream::rules::{Alert, Scope};
    use prost::Message as _;

    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap().with_inline_tenants();
    let rules = pipeline.rules();
    let mut sessions = pipeline.sessions();
    let mut reference = BTreeMap::new();
    for (offset, record) in inputs.iter().enumerate() {
        let source = Source { topic: std::sync::Arc::from(input), partition: 0, offset: offset as i64 };
        let Outcome::Event { alerts, .. } =
            pipeline.process(&Record::new(Some(&record.key), &record.value, source), &mut sessions, now_ms())
        else {
            continue;
        };
        for alerted in alerts.iter().filter(|a| rules.get(a.rule()).is_some_and(|r| r.scope == Scope::Session)) {
            let pb = acs_stream::encode::proto::pb::Alert::decode(&*alerted.output().value).unwrap();
            let alert = Alert::from_proto(pb).unwrap();
            reference.insert(alert.alert_id.clone(), alert_facts(&alert));
        }
    }
    reference
}

/// The alerts published to the alert topics of `prefix` (two tenants), read back whole.
pub struct PublishedAlerts {
    /// Alert records read (duplicates included).
    pub records: usize,
    /// Distinct alert ids.
    pub distinct: usize,
    /// The session-scoped alerts, by id.
    pub session: BTreeMap<String, AlertFacts>,
    /// Tenant-scoped alerts (distinct).
    pub tenant: usize,
}

/// Reads every alert of `prefix`'s alert topics and checks each: a duplicate (at-least-once
/// replay) is a byte-identical copy; an alert is keyed by its session (or tenant, for a
/// tenant-scoped rule); a tenant alert's evidence matches its count within its window.
pub fn published_alerts(brokers: &str, prefix: &str) -> PublishedAlerts {
    use acs_stream::config::Config;
    use acs_stream::model::ReasonCatalog;
    use acs_stream::pipeline::Pipeline;
    use acs_stream::rules::{Alert, Scope};
    use prost::Message as _;

    let rules = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap().rules();
    let alert_topics = vec![format!("{prefix}.tenant-01.alerts"), format!("{prefix}.tenant-02.alerts")];
    // What a read_committed consumer sees (a transaction's markers take offsets: the end
    // offsets do not count records under exactly-once).
    let records = read_committed(brokers, &alert_topics, 2);
    let mut bytes_by_id: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut session = BTreeMap::new();
    let mut tenant = HashSet::new();
    for record in &records {
        let alert =
            Alert::from_proto(acs_stream::encode::proto::pb::Alert::decode(record.value.as_slice()).unwrap()).unwrap();
        let first_copy = bytes_by_id.entry(alert.alert_id.clone()).or_insert_with(|| record.value.clone());
        assert_eq!(*first_copy, record.value, "a replayed alert is the same alert: {}", alert.alert_id);
        let rule = rules.get(&alert.rule_id).expect("a default rule");
        match rule.scope {
            Scope::Session => {
                assert_eq!(record.key.as_deref(), alert.delivery_execution_id.as_deref().map(str::as_bytes));
                session.insert(alert.alert_id.clone(), alert_facts(&alert));
            }
            // Tenant-wide counts depend on how the partitions interleave: only checked whole.
            Scope::Tenant => {
                assert_eq!(record.key.as_deref(), Some(alert.tenant_id.as_bytes()));
                assert_eq!(alert.count as usize, alert.evidence.len());
                assert!(alert.window_end - alert.window_start < 60_000, "{alert:?}");
                tenant.insert(alert.alert_id.clone());
            }
        }
    }
    PublishedAlerts { records: records.len(), distinct: bytes_by_id.len(), session, tenant: tenant.len() }
}

/// `actual` holds exactly the alerts of `reference`, with the same facts.
pub fn assert_same_alerts(actual: &BTreeMap<String, AlertFacts>, reference: &BTreeMap<String, AlertFacts>) {
    let missing: Vec<_> = reference.keys().filter(|id| !actual.contains_key(*id)).collect();
    let extra: Vec<_> = actual.keys().filter(|id| !reference.contains_key(*id)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, not in the reference {extra:?}");
    assert_eq!(actual, reference);
}

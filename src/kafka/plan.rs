//! From what the core made of one consumed record to the records to produce for it: a pure
//! function, with no Kafka client (unit-tested below).
//!
//! An event goes to its tenant's topic with the alerts it fired and, when it matched a
//! tenant-scoped rule, a copy to the tenant topic keyed by tenant (with its lineage and the
//! rules it matched in headers); a record of the tenant topic yields only its alerts; input to
//! re-key goes to the repartition topic keyed by session (with its lineage); a refused record
//! is one dead letter.
//!
//! A record processed again after its transaction aborted because the brokers refused some of
//! its outputs for good (exactly-once) is planned with those outputs left out and one dead
//! letter in their place ([`Refused`]): the same outputs the at-least-once path ends with
//! after its own fallback.

use std::borrow::Cow;
use std::collections::BTreeSet;

use rdkafka::message::OwnedHeaders;

use super::repartition;
use crate::decode::{ErrorCode, Rejection};
use crate::encode::dead_letter::headers::OUTPUT;
use crate::encode::{Alerted, Alerts, DeadLetter, Headers as OutputHeaders, Output};
use crate::pipeline::Record;
use crate::rules::Forwarded;
use crate::telemetry::Published;

/// What the core made of one consumed record.
// One per record, consumed at once (as `Outcome`).
#[allow(clippy::large_enum_variant)]
pub(super) enum Step<'a> {
    /// An enriched event, the alerts it fired, the tenant-scoped rules it matched and its
    /// tenant (the tenant-topic record's key, when it matched any).
    Event { output: Output<'a>, alerts: Alerts, incidents: Vec<Output<'static>>, forward: Forwarded, tenant: String },
    /// A record of the tenant topic, counted for its tenant: the alerts it fired.
    Tenant(Alerts),
    /// Input to re-key: produced to the repartition topic `topic` with key `key`.
    Rekeyed { topic: &'a str, key: Vec<u8> },
    /// A refused record.
    Dead(DeadLetter),
}

/// What an output is to its input record: the metrics' kind, and its name in a dead
/// letter's `acs.error.output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Event,
    Alert,
    /// A revision of the event's session's incident.
    Incident,
    /// The copy of an event to the tenant topic.
    TenantTopic,
    /// A re-keyed input record.
    Repartition,
    DeadLetter,
}

impl Role {
    pub fn published(self) -> Published {
        match self {
            Role::Event => Published::Event,
            Role::Alert => Published::Alert,
            Role::Incident => Published::Incident,
            Role::TenantTopic | Role::Repartition => Published::Repartition,
            Role::DeadLetter => Published::DeadLetter,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Event => "event",
            Role::Alert => "alert",
            Role::Incident => "incident",
            Role::TenantTopic => "tenant_topic",
            Role::Repartition => "repartition",
            Role::DeadLetter => "dead_letter",
        }
    }
}

/// The body of an outgoing record: an output of its own, or an alert (shared with the state
/// that keeps it for a replay).
// A few per record, consumed at once: boxing the owned one would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Body<'a> {
    Output(Output<'a>),
    Alert(Alerted),
}

/// One record to produce for a consumed one.
pub(super) struct Outgoing<'a> {
    pub role: Role,
    pub body: Body<'a>,
    /// Kafka headers in place of the output's own (the lineage of a re-keyed or tenant-topic
    /// record).
    pub headers: Option<OwnedHeaders>,
}

impl Outgoing<'_> {
    pub fn output(&self) -> Output<'_> {
        match &self.body {
            Body::Output(output) => output.borrowed(),
            Body::Alert(alerted) => alerted.output(),
        }
    }
}

/// What one consumed record adds to the run's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Input records (and their re-keyed copies): not the tenant topic's.
    pub consumed: u64,
    pub events: u64,
    pub dead_letters: u64,
    pub repartitioned: u64,
    pub tenant_records: u64,
    pub alerts: u64,
    pub incidents: u64,
    pub tenant_forwarded: u64,
}

/// The records to produce for one consumed record.
pub(super) struct Plan<'a> {
    /// In a fixed order (the record's own output, then its alerts, its incident, then its
    /// tenant-topic copy): the same record processed again over the same state plans the same list.
    pub outgoing: Vec<Outgoing<'a>>,
    /// When the record is itself a dead letter: what it says (to send it again without the
    /// value if the full one is refused as too large).
    pub dead: Option<DeadLetter>,
    pub tally: Tally,
}

/// Outputs of a record the brokers refused for good in an earlier attempt (exactly-once: the
/// transaction holding them aborted, and the record is processed again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Refused {
    /// Their places in the record's plan.
    pub outputs: BTreeSet<usize>,
    /// The first refusal's error.
    pub detail: String,
    /// The dead letter itself was refused as too large: sent again without the value.
    pub dead_letter_too_large: bool,
}

/// The topics a plan may name beside the outputs' own.
pub(super) struct Destinations<'t> {
    pub dead_letter: &'t str,
    /// The tenant topic, when tenant-scoped rules are counted through it.
    pub tenant: Option<&'t str>,
}

/// The records to produce for `record`, which the core made into `step`; `from_tenant_topic`:
/// the record was read from the tenant topic; `refused`: outputs refused for good when it was
/// processed before (left out, dead-lettered once instead, with the rejection
/// `produce_failed` makes of the error); `now_ms`: the processing time of such a dead letter.
pub(super) fn plan<'a>(
    step: Step<'a>,
    record: &Record<'a>,
    to: &Destinations<'_>,
    from_tenant_topic: bool,
    refused: Option<(&Refused, &dyn Fn(String) -> Rejection)>,
    now_ms: i64,
) -> Plan<'a> {
    let (refused, produce_failed) = match refused {
        Some((refused, produce_failed)) => (Some(refused), Some(produce_failed)),
        None => (None, None),
    };
    let mut tally = Tally { consumed: u64::from(!from_tenant_topic), ..Tally::default() };
    let mut outgoing = Vec::new();
    let mut dead = None;
    match step {
        Step::Event { output, alerts, incidents, forward, tenant } => {
            tally.events = 1;
            outgoing.push(Outgoing { role: Role::Event, body: Body::Output(output), headers: None });
            push_alerts(&mut outgoing, alerts);
            for incident in incidents {
                outgoing.push(Outgoing { role: Role::Incident, body: Body::Output(incident), headers: None });
            }
            if let (Some(topic), false) = (to.tenant, forward.is_empty()) {
                let copy = Output {
                    topic: Cow::Owned(topic.to_owned()),
                    key: Some(Cow::Owned(tenant.into_bytes())),
                    value: Cow::Borrowed(record.value),
                    headers: OutputHeaders::new(),
                };
                let headers = repartition::tenant_headers(&record.source, record.key, &forward);
                outgoing.push(Outgoing { role: Role::TenantTopic, body: Body::Output(copy), headers: Some(headers) });
            }
        }
        Step::Tenant(alerts) => push_alerts(&mut outgoing, alerts),
        Step::Rekeyed { topic, key } => {
            tally.repartitioned = 1;
            let output = Output {
                topic: Cow::Owned(topic.to_owned()),
                key: Some(Cow::Owned(key)),
                value: Cow::Borrowed(record.value),
                headers: OutputHeaders::new(),
            };
            let headers = repartition::headers(&record.source, record.key);
            outgoing.push(Outgoing { role: Role::Repartition, body: Body::Output(output), headers: Some(headers) });
        }
        Step::Dead(letter) => {
            tally.dead_letters = 1;
            let output = match refused {
                Some(refused) if refused.dead_letter_too_large => {
                    letter.to_record_without_value(to.dead_letter, record.key, &refused.detail)
                }
                _ => letter.to_record(to.dead_letter, record.key, record.value),
            };
            outgoing.push(Outgoing { role: Role::DeadLetter, body: Body::Output(output), headers: None });
            dead = Some(letter);
        }
    }
    if from_tenant_topic {
        tally.tenant_records = 1;
    }
    if let Some(refused) = refused.filter(|r| !r.outputs.is_empty() && dead.is_none()) {
        // The refused outputs are left out, and the record dead-lettered once, naming them.
        let roles = role_names(refused.outputs.iter().filter_map(|at| outgoing.get(*at)).map(|o| o.role));
        let mut kept = Vec::with_capacity(outgoing.len());
        for (at, out) in outgoing.into_iter().enumerate() {
            if !refused.outputs.contains(&at) {
                kept.push(out);
            }
        }
        outgoing = kept;
        let rejection = match produce_failed {
            Some(produce_failed) => produce_failed(refused.detail.clone()),
            None => Rejection::new(ErrorCode::ProduceFailed, refused.detail.clone()),
        };
        let letter = DeadLetter { rejection, source: record.source.clone(), processed_at: now_ms };
        let output = dead_letter_naming(&letter, to.dead_letter, record, &roles, refused.dead_letter_too_large);
        outgoing.push(Outgoing { role: Role::DeadLetter, body: Body::Output(output), headers: None });
        dead = Some(letter);
    }
    tally.alerts = outgoing.iter().filter(|o| o.role == Role::Alert).count() as u64;
    tally.incidents = outgoing.iter().filter(|o| o.role == Role::Incident).count() as u64;
    tally.tenant_forwarded = outgoing.iter().filter(|o| o.role == Role::TenantTopic).count() as u64;
    Plan { outgoing, dead, tally }
}

/// The names of `roles`, each once, in their first order, comma-separated (the value of
/// `acs.error.output`).
pub(super) fn role_names(roles: impl IntoIterator<Item = Role>) -> String {
    let mut names: Vec<&str> = Vec::new();
    for role in roles {
        if !names.contains(&role.name()) {
            names.push(role.name());
        }
    }
    names.join(",")
}

fn push_alerts<'a>(outgoing: &mut Vec<Outgoing<'a>>, alerts: Alerts) {
    for alerted in alerts {
        outgoing.push(Outgoing { role: Role::Alert, body: Body::Alert(alerted), headers: None });
    }
}

/// The `produce_failed` dead letter of `record` whose outputs `roles` (comma-separated) the
/// brokers refused; without the value when even that was refused as too large.
pub(super) fn dead_letter_naming<'a>(
    letter: &DeadLetter,
    topic: &str,
    record: &Record<'a>,
    roles: &str,
    without_value: bool,
) -> Output<'a> {
    let mut output = if without_value {
        letter.to_record_without_value(topic, record.key, &letter.rejection.detail)
    } else {
        letter.to_record(topic, record.key, record.value)
    };
    output.headers.push((OUTPUT, Cow::Owned(roles.to_owned())));
    output
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdkafka::message::Headers as _;

    use super::*;
    use crate::config::Config;
    use crate::model::{ReasonCatalog, Source};
    use crate::pipeline::{Outcome, Pipeline, Processor};

    const DLQ: &str = "acs.dlq";
    const TENANT: &str = "g.tenant-signals";

    fn destinations() -> Destinations<'static> {
        Destinations { dead_letter: DLQ, tenant: Some(TENANT) }
    }

    fn source(offset: i64) -> Source {
        Source { topic: Arc::from("acs.raw"), partition: 1, offset }
    }

    /// A burst of technical errors: the events fire alerts and match the tenant-scoped rule.
    fn technical(id: usize) -> Vec<u8> {
        format!(
            r#"{{"deliveryExecutionId":"u#d1#h{id}#acme","action":"flag","actionStatus":"succeeded","actor":"deliver-fe","reasonCode":40001,"reasonMessage":"[deliver-fe] boom","incidentTime":1767261300000,"messageId":"m-{id}"}}"#
        )
        .into_bytes()
    }

    fn step<'a>(pipeline: &Pipeline, record: &Record<'a>, state: &mut <Pipeline as Processor>::State) -> Step<'a> {
        match pipeline.process(record, state, 1_767_261_400_000) {
            Outcome::Event { output, alerts, incidents, forward, facts } => {
                Step::Event { output, alerts, incidents, forward, tenant: facts.tenant.into_owned() }
            }
            Outcome::DeadLetter(dead) => Step::Dead(dead),
        }
    }

    #[test]
    fn an_event_goes_out_with_its_alerts_then_its_tenant_topic_copy() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let mut state = pipeline.state();
        let value = technical(1);
        let record = Record::new(Some(b"u#d1#h1#acme"), &value, source(7));
        let plan = plan(step(&pipeline, &record, &mut state), &record, &destinations(), false, None, 0);
        let roles: Vec<Role> = plan.outgoing.iter().map(|o| o.role).collect();
        assert_eq!(roles.first(), Some(&Role::Event));
        assert!(roles.contains(&Role::Alert), "a flag fires the default rules: {roles:?}");
        assert_eq!(roles.last(), Some(&Role::TenantTopic), "{roles:?}");
        let copy = plan.outgoing.last().unwrap();
        let output = copy.output();
        assert_eq!((&*output.topic, output.key.as_deref()), (TENANT, Some(&b"acme"[..])));
        assert_eq!(&*output.value, value.as_slice(), "the upstream record itself");
        let headers = copy.headers.as_ref().expect("lineage headers");
        assert!(headers.iter().any(|h| h.key == repartition::RULES));
        assert_eq!(plan.tally.events, 1);
        assert_eq!(plan.tally.consumed, 1);
        assert_eq!(plan.tally.alerts as usize, roles.iter().filter(|r| **r == Role::Alert).count());
        assert_eq!(plan.tally.tenant_forwarded, 1);
        assert!(plan.dead.is_none());
    }

    #[test]
    fn a_refused_record_is_one_dead_letter_with_its_original_bytes() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let mut state = pipeline.state();
        let record = Record::new(Some(b"k"), b"{not json", source(3));
        let plan = plan(step(&pipeline, &record, &mut state), &record, &destinations(), false, None, 0);
        assert_eq!(plan.outgoing.len(), 1);
        let output = plan.outgoing[0].output();
        assert_eq!((&*output.topic, &*output.value), (DLQ, &b"{not json"[..]));
        assert_eq!(plan.tally.dead_letters, 1);
        assert!(plan.dead.is_some());
    }

    #[test]
    fn rekeyed_input_carries_its_lineage_and_upstream_key() {
        let record = Record::new(Some(b"test-taker-9"), b"{}", source(12));
        let step = Step::Rekeyed { topic: "g.repartition", key: b"u#d1#h1#acme".to_vec() };
        let plan = plan(step, &record, &destinations(), false, None, 0);
        let output = plan.outgoing[0].output();
        assert_eq!((&*output.topic, output.key.as_deref()), ("g.repartition", Some(&b"u#d1#h1#acme"[..])));
        let upstream = repartition::upstream(plan.outgoing[0].headers.as_ref()).expect("lineage");
        assert_eq!((upstream.offset, upstream.key), (12, Some(&b"test-taker-9"[..])));
        assert_eq!(plan.tally.repartitioned, 1);
    }

    #[test]
    fn a_tenant_topic_record_yields_only_its_alerts_and_counts_apart() {
        let record = Record::new(Some(b"acme"), b"{}", source(0));
        let plan = plan(Step::Tenant(Alerts::new()), &record, &destinations(), true, None, 0);
        assert!(plan.outgoing.is_empty());
        assert_eq!(plan.tally, Tally { tenant_records: 1, ..Tally::default() }, "not an input record");
    }

    #[test]
    fn refused_outputs_are_left_out_and_the_record_dead_lettered_once_naming_them() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let value = technical(2);
        let record = Record::new(Some(b"u#d1#h2#acme"), &value, source(9));
        let first = plan(step(&pipeline, &record, &mut pipeline.state()), &record, &destinations(), false, None, 0);
        let alert_at = first.outgoing.iter().position(|o| o.role == Role::Alert).expect("an alert");
        let copy_at = first.outgoing.len() - 1;
        let refused = Refused {
            outputs: BTreeSet::from([alert_at, copy_at]),
            detail: "too large".into(),
            dead_letter_too_large: false,
        };
        let produce_failed = |detail: String| pipeline.produce_failed(detail, Some("acme"));
        let again = plan(
            step(&pipeline, &record, &mut pipeline.state()),
            &record,
            &destinations(),
            false,
            Some((&refused, &produce_failed)),
            5,
        );
        assert_eq!(again.outgoing.len(), first.outgoing.len() - 1, "two left out, one dead letter in");
        assert_eq!(again.outgoing[0].role, Role::Event, "the event that was not refused is published");
        let letters: Vec<&Outgoing<'_>> = again.outgoing.iter().filter(|o| o.role == Role::DeadLetter).collect();
        assert_eq!(letters.len(), 1, "one dead letter per input record");
        let output = letters[0].output();
        assert_eq!(&*output.value, value.as_slice(), "the original bytes");
        let header = |name: &str| output.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
        assert_eq!(header(OUTPUT).as_deref(), Some("alert,tenant_topic"));
        assert_eq!(header("acs.error.code").as_deref(), Some("produce_failed"));
        let stamp = pipeline.stamp();
        assert_eq!(
            header(crate::encode::dead_letter::headers::RULES_VERSION),
            Some(stamp.rules_version.to_string()),
            "stamped as the core's own"
        );
        assert_eq!(again.tally.tenant_forwarded, 0);
        assert_eq!(again.dead.as_ref().map(|d| d.processed_at), Some(5));
    }

    #[test]
    fn refused_outputs_are_named_once_each_in_their_order() {
        assert_eq!(role_names([Role::Alert, Role::Event, Role::Alert, Role::TenantTopic]), "alert,event,tenant_topic");
        assert_eq!(role_names([]), "");
    }

    #[test]
    fn a_dead_letter_refused_as_too_large_goes_again_without_its_value() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let record = Record::new(Some(b"k"), b"{not json", source(3));
        let refused = Refused { outputs: BTreeSet::from([0]), detail: "too large".into(), dead_letter_too_large: true };
        let produce_failed = |detail: String| pipeline.produce_failed(detail, None);
        let plan = plan(
            step(&pipeline, &record, &mut pipeline.state()),
            &record,
            &destinations(),
            false,
            Some((&refused, &produce_failed)),
            0,
        );
        assert_eq!(plan.outgoing.len(), 1);
        let output = plan.outgoing[0].output();
        assert!(output.value.is_empty());
        assert!(output.headers.iter().any(|(name, _)| *name == "acs.value.omitted"));
    }
}

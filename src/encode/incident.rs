//! An incident's output record: `acs.v1.Incident` (proto/acs/v1/incident.proto) or its JSON
//! contract, to its tenant's incidents topic, keyed by the delivery execution id.
//!
//! Written from the incident state ([`crate::incidents::Incident`]) and what the session
//! says around it; every field a function of the input events, so that a replay yields the
//! same records byte for byte (the processor stamp aside, which names the configuration).

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde::ser::SerializeMap;
use xxhash_rust::xxh3::xxh3_128;

use super::json::{PrivacyJson, SourceJson};
use super::proto::pb;
use super::{Format, Output, TopicTemplate, headers};
use crate::incidents::{Incident, Priority, RuleTally};
use crate::model::{Source, Stamp, Status};
use crate::privacy::Privacy;

/// The fully qualified message name, for the `acs-schema` header.
pub const INCIDENT_SCHEMA: &str = "acs.v1.Incident";

/// How incidents become output records.
#[derive(Debug, Clone)]
pub struct IncidentEncoder {
    pub template: TopicTemplate,
    pub format: Format,
    /// The rules and catalog versions in force, shared with the pipeline; empty versions (the
    /// default): not stamped.
    pub stamp: Arc<ArcSwap<Stamp>>,
    /// Whose incidents carry a privacy mark.
    pub privacy: Arc<Privacy>,
}

/// Protobuf, to `acs.{tenant}.incidents`, not stamped.
impl Default for IncidentEncoder {
    fn default() -> IncidentEncoder {
        IncidentEncoder {
            template: TopicTemplate::parse("acs.{tenant}.incidents").expect("the default template is valid"),
            format: Format::Protobuf,
            stamp: Arc::default(),
            privacy: Arc::default(),
        }
    }
}

/// One revision of an incident, as published.
#[derive(Debug, Clone)]
pub struct IncidentRecord<'a> {
    pub incident: &'a Incident,
    pub tenant_id: &'a str,
    pub delivery_execution_id: &'a str,
    pub session_status: Option<Status>,
    pub open: bool,
    /// The main contributions (see [`Incident::reasons`]).
    pub reasons: Vec<String>,
    /// The event that produced this revision.
    pub source: &'a Source,
}

/// The incident id of a session: a UUID (version 8) from the tenant and the session.
pub fn incident_id(tenant_id: &str, delivery_execution_id: &str) -> String {
    let mut bytes = Vec::with_capacity(10 + tenant_id.len() + delivery_execution_id.len());
    bytes.extend_from_slice(b"incident\0");
    bytes.extend_from_slice(tenant_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(delivery_execution_id.as_bytes());
    uuid::Uuid::new_v8(xxh3_128(&bytes).to_be_bytes()).hyphenated().to_string()
}

impl IncidentEncoder {
    /// The record of `record`, stamped with the configuration in force.
    pub fn record(&self, record: &IncidentRecord<'_>) -> Output<'static> {
        let value = match self.format {
            Format::Protobuf => {
                use prost::Message as _;
                self.to_proto(record).encode_to_vec()
            }
            Format::Json => self.to_json(record),
        };
        Output {
            topic: Cow::Owned(self.template.render(record.tenant_id)),
            key: Some(Cow::Owned(record.delivery_execution_id.as_bytes().to_vec())),
            value: Cow::Owned(value),
            headers: smallvec::smallvec![
                (headers::CONTENT_TYPE, Cow::Borrowed(self.format.content_type())),
                (headers::SCHEMA, Cow::Borrowed(INCIDENT_SCHEMA)),
            ],
        }
    }

    /// The `acs.v1.Incident` of `record`.
    pub fn to_proto(&self, record: &IncidentRecord<'_>) -> pb::Incident {
        let incident = record.incident;
        let stamp = self.stamp.load();
        let stamped = !stamp.rules_version.is_empty();
        let privacy = self.privacy.mark(record.tenant_id).filter(|_| stamped);
        pb::Incident {
            incident_id: incident_id(record.tenant_id, record.delivery_execution_id),
            tenant_id: record.tenant_id.to_owned(),
            delivery_execution_id: record.delivery_execution_id.to_owned(),
            priority: priority_to_proto(incident.priority()) as i32,
            score: u32::from(incident.score()),
            alert_count: incident.alert_count,
            folded_alert_count: incident.folded,
            by_rule: (incident.by_rule.iter())
                .map(|tally| pb::RuleCount { rule_id: tally.rule.to_string(), count: tally.count })
                .collect(),
            reasons: record.reasons.clone(),
            first_alert_at: incident.first_alert_at,
            last_alert_at: incident.last_alert_at,
            updated_at: incident.updated_at,
            session_status: record.session_status.map_or("", Status::as_str).to_owned(),
            open: record.open,
            revision: incident.revision,
            source: Some(pb::IncidentSource {
                topic: record.source.topic.to_string(),
                partition: record.source.partition,
                offset: record.source.offset,
            }),
            processor_version: if stamped { crate::VERSION.to_owned() } else { String::new() },
            rules_version: stamp.rules_version.to_string(),
            catalog_version: stamp.catalog_version.to_string(),
            privacy: privacy.map(|mark| pb::Privacy { mode: mark.mode.to_owned(), key_id: mark.key_id.to_string() }),
        }
    }

    /// The JSON contract of `record`.
    pub fn to_json(&self, record: &IncidentRecord<'_>) -> Vec<u8> {
        let incident = record.incident;
        let stamp = self.stamp.load();
        let stamped = !stamp.rules_version.is_empty();
        let id = incident_id(record.tenant_id, record.delivery_execution_id);
        let json = IncidentJson {
            incident_id: &id,
            tenant_id: record.tenant_id,
            delivery_execution_id: record.delivery_execution_id,
            priority: incident.priority(),
            score: incident.score(),
            alert_count: incident.alert_count,
            folded_alert_count: incident.folded,
            by_rule: ByRule(&incident.by_rule),
            reasons: &record.reasons,
            first_alert_at: incident.first_alert_at,
            last_alert_at: incident.last_alert_at,
            updated_at: incident.updated_at,
            session_status: record.session_status.map(Status::as_str),
            open: record.open,
            revision: incident.revision,
            source: SourceJson {
                topic: &record.source.topic,
                partition: record.source.partition,
                offset: record.source.offset,
            },
            processor: stamped.then(|| ProcessorJson {
                version: crate::VERSION,
                rules_version: &stamp.rules_version,
                catalog_version: &stamp.catalog_version,
            }),
            privacy: (self.privacy.mark(record.tenant_id).filter(|_| stamped))
                .map(|mark| PrivacyJson { mode: mark.mode, key_id: &mark.key_id }),
        };
        // Plain strings, numbers and enums into memory: serializing cannot fail.
        serde_json::to_vec(&json).expect("an incident always serializes to JSON")
    }
}

fn priority_to_proto(priority: Priority) -> pb::Priority {
    match priority {
        Priority::None => pb::Priority::None,
        Priority::Low => pb::Priority::Low,
        Priority::Medium => pb::Priority::Medium,
        Priority::High => pb::Priority::High,
        Priority::Critical => pb::Priority::Critical,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IncidentJson<'a> {
    incident_id: &'a str,
    tenant_id: &'a str,
    delivery_execution_id: &'a str,
    priority: Priority,
    score: u8,
    alert_count: u32,
    folded_alert_count: u32,
    by_rule: ByRule<'a>,
    reasons: &'a [String],
    first_alert_at: Option<i64>,
    last_alert_at: Option<i64>,
    updated_at: i64,
    session_status: Option<&'a str>,
    open: bool,
    revision: u32,
    source: SourceJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processor: Option<ProcessorJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    privacy: Option<PrivacyJson<'a>>,
}

/// `byRule`: rule id → count, in rule id order.
struct ByRule<'a>(&'a [RuleTally]);

impl Serialize for ByRule<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for tally in self.0 {
            map.serialize_entry(&*tally.rule, &tally.count)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProcessorJson<'a> {
    version: &'a str,
    rules_version: &'a str,
    catalog_version: &'a str,
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn incident() -> Incident {
        Incident {
            revision: 2,
            alert_count: 3,
            folded: 1,
            by_rule: vec![
                RuleTally { rule: Arc::from("screenshot-attempt"), count: 2, points: 60 },
                RuleTally { rule: Arc::from("security-flag"), count: 1, points: 0 },
            ],
            level: 55.0,
            level_at: 1_767_261_360_000,
            peak: 61.2,
            floor: Priority::None,
            first_alert_at: Some(1_767_261_300_000),
            last_alert_at: Some(1_767_261_360_000),
            updated_at: 1_767_261_360_000,
            updated_position: 7,
            budget_hour: 0,
            budget_used: 2,
            session_status: Some(Status::Interacting),
        }
    }

    #[test]
    fn both_encodings_say_the_same_and_the_record_is_keyed_by_session() {
        let incident = incident();
        let source = Source { topic: Arc::from("acs.raw"), partition: 2, offset: 41 };
        let record = IncidentRecord {
            incident: &incident,
            tenant_id: "acme",
            delivery_execution_id: "u#d#h#acme",
            session_status: Some(Status::Interacting),
            open: true,
            reasons: vec!["Screenshot attempt ×2 (60 points)".into()],
            source: &source,
        };
        let stamp = Stamp { rules_version: Arc::from("builtin@0123456789ab"), catalog_version: Arc::from("c@1") };
        for format in [Format::Protobuf, Format::Json] {
            let encoder =
                IncidentEncoder { format, stamp: Arc::new(ArcSwap::from_pointee(stamp.clone())), ..Default::default() };
            let output = encoder.record(&record);
            assert_eq!((&*output.topic, output.key.as_deref()), ("acs.acme.incidents", Some(&b"u#d#h#acme"[..])));
            let headers: Vec<(&str, &str)> = output.headers.iter().map(|(n, v)| (*n, v.as_ref())).collect();
            assert_eq!(headers, [("content-type", format.content_type()), ("acs-schema", "acs.v1.Incident")]);
            let proto = encoder.to_proto(&record);
            match format {
                Format::Protobuf => assert_eq!(pb::Incident::decode(&*output.value).unwrap(), proto),
                Format::Json => {
                    let json: serde_json::Value = serde_json::from_slice(&output.value).unwrap();
                    assert_eq!(json["incidentId"], proto.incident_id);
                    assert_eq!(json["priority"], "high");
                    assert_eq!(proto.priority(), pb::Priority::High);
                    assert_eq!((json["score"].as_u64(), proto.score), (Some(61), 61));
                    assert_eq!(json["byRule"], serde_json::json!({"screenshot-attempt": 2, "security-flag": 1}));
                    assert_eq!((json["alertCount"].as_u64(), json["foldedAlertCount"].as_u64()), (Some(3), Some(1)));
                    assert_eq!(
                        (json["sessionStatus"].as_str(), proto.session_status.as_str()),
                        (Some("interacting"), "interacting")
                    );
                    assert_eq!((json["open"].as_bool(), json["revision"].as_u64()), (Some(true), Some(2)));
                    assert_eq!(json["source"], serde_json::json!({"topic": "acs.raw", "partition": 2, "offset": 41}));
                    assert_eq!(json["processor"]["rulesVersion"], "builtin@0123456789ab");
                    assert_eq!(json["firstAlertAt"], proto.first_alert_at.unwrap());
                    assert!(json.get("privacy").is_none());
                }
            }
        }
        assert_eq!(incident_id("acme", "u#d#h#acme"), incident_id("acme", "u#d#h#acme"), "deterministic");
        assert_ne!(incident_id("acme", "u#d#h#acme"), incident_id("acme", "u#d#h2#acme"));
    }
}

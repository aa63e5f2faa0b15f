//! The alert a rule fires, and its JSON encoding (the alert contract: camelCase, epoch
//! milliseconds, `null` for what a tenant-scoped alert has not).

use std::sync::Arc;

use prost::encoding::{WireType, encoded_len_varint, key_len};
use serde::Serialize;
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_128;

use super::config::{RuleMode, Severity};
use crate::encode::proto::pb;
use crate::model::{Action, Event, ReasonCode};

/// A reason code as evidence: a number, text kept raw, or `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EvidenceCode {
    Numeric(i64),
    Raw(Box<str>),
}

/// One event an alert is about: where it was read, what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub message_id: Box<str>,
    pub action: Option<Action>,
    pub reason_code: Option<EvidenceCode>,
    /// Epoch milliseconds.
    pub incident_time: i64,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// An [`Evidence`], borrowed (from an evidence held, or from the event itself): what the
/// encodings are written from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceRef<'a> {
    pub message_id: &'a str,
    pub action: Option<Action>,
    pub reason_code: Option<EvidenceCodeRef<'a>>,
    /// Epoch milliseconds.
    pub incident_time: i64,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// An [`EvidenceCode`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EvidenceCodeRef<'a> {
    Numeric(i64),
    Raw(&'a str),
}

/// The JSON contract: the same document as its [`EvidenceRef`]'s.
impl Serialize for Evidence {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.borrowed().serialize(serializer)
    }
}

impl<'a> EvidenceRef<'a> {
    /// The evidence `event` is.
    pub fn of(event: &'a Event<'_>) -> EvidenceRef<'a> {
        EvidenceRef {
            message_id: &event.message_id,
            action: event.action,
            reason_code: match &event.reason_code {
                ReasonCode::None => None,
                ReasonCode::Numeric(code) => Some(EvidenceCodeRef::Numeric(*code)),
                ReasonCode::Raw(raw) => Some(EvidenceCodeRef::Raw(raw)),
            },
            incident_time: event.incident_time,
            topic: &event.source.topic,
            partition: event.source.partition,
            offset: event.source.offset,
        }
    }

    /// An owned copy.
    pub fn to_evidence(&self) -> Evidence {
        self.owned_with(Arc::from(self.topic))
    }

    /// An owned copy, its topic name `topic` (shared).
    fn owned_with(&self, topic: Arc<str>) -> Evidence {
        Evidence {
            message_id: Box::from(self.message_id),
            action: self.action,
            reason_code: self.reason_code.map(|code| match code {
                EvidenceCodeRef::Numeric(code) => EvidenceCode::Numeric(code),
                EvidenceCodeRef::Raw(raw) => EvidenceCode::Raw(Box::from(raw)),
            }),
            incident_time: self.incident_time,
            topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

impl Evidence {
    /// Borrowed.
    pub fn borrowed(&self) -> EvidenceRef<'_> {
        EvidenceRef {
            message_id: &self.message_id,
            action: self.action,
            reason_code: self.reason_code.as_ref().map(|code| match code {
                EvidenceCode::Numeric(code) => EvidenceCodeRef::Numeric(*code),
                EvidenceCode::Raw(raw) => EvidenceCodeRef::Raw(raw),
            }),
            incident_time: self.incident_time,
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// The evidence `event` is (sharing the event's topic name).
    pub fn of(event: &Event<'_>) -> Evidence {
        EvidenceRef::of(event).owned_with(event.source.topic.clone())
    }
}

/// A fired rule. Everything in it is a function of the input events (no processing
/// time), so that a replay yields the same alerts, byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Deterministic: see [`alert_id`].
    pub alert_id: String,
    pub rule_id: Arc<str>,
    pub severity: Severity,
    pub tenant_id: Arc<str>,
    /// The session; `null` for a tenant-scoped rule.
    pub delivery_execution_id: Option<String>,
    /// The session's test taker; `null` for a tenant-scoped rule or when not sent.
    pub test_taker: Option<String>,
    pub title: Arc<str>,
    pub summary: String,
    /// Events counted (the evidence's length).
    pub count: u32,
    /// Incident times of the first and the last evidence, epoch milliseconds.
    pub window_start: i64,
    pub window_end: i64,
    /// Incident time of the event that made the rule fire, epoch milliseconds.
    pub fired_at: i64,
    /// The events counted, by incident time.
    pub evidence: Vec<Evidence>,
    /// The rule's mode: a shadow rule's alerts go to the shadow alerts topic only.
    pub mode: RuleMode,
}

/// An alert's fields, borrowed: what the engine fires without copying them, and what an
/// [`Alert`] lends. Both encodings (JSON and `acs.v1.Alert`) are written from it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertView<'a> {
    pub alert_id: &'a str,
    /// The rule's id, shared (an owned copy, [`Alert`], shares it).
    pub rule_id: &'a Arc<str>,
    pub severity: Severity,
    pub tenant_id: &'a str,
    pub delivery_execution_id: Option<&'a str>,
    pub test_taker: Option<&'a str>,
    pub title: &'a str,
    pub summary: &'a str,
    pub count: u32,
    pub window_start: i64,
    pub window_end: i64,
    pub fired_at: i64,
    pub evidence: &'a [EvidenceRef<'a>],
    /// Written (`"mode": "shadow"`) only for a shadow rule's alert.
    #[serde(skip_serializing_if = "RuleMode::is_live")]
    pub mode: RuleMode,
}

/// The JSON contract: the same document as its [`AlertView`]'s.
impl Serialize for Alert {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_view(|view| view.serialize(serializer))
    }
}

/// The fully qualified message name, for the `acs-schema` header.
pub const ALERT_SCHEMA: &str = "acs.v1.Alert";

impl Alert {
    /// `f` of its fields, borrowed.
    pub fn with_view<R>(&self, f: impl FnOnce(&AlertView<'_>) -> R) -> R {
        let evidence: SmallVec<[EvidenceRef<'_>; 4]> = self.evidence.iter().map(Evidence::borrowed).collect();
        f(&AlertView {
            alert_id: &self.alert_id,
            rule_id: &self.rule_id,
            severity: self.severity,
            tenant_id: &self.tenant_id,
            delivery_execution_id: self.delivery_execution_id.as_deref(),
            test_taker: self.test_taker.as_deref(),
            title: &self.title,
            summary: &self.summary,
            count: self.count,
            window_start: self.window_start,
            window_end: self.window_end,
            fired_at: self.fired_at,
            evidence: &evidence,
            mode: self.mode,
        })
    }

    /// The alert contract's JSON document.
    pub fn to_json(&self) -> String {
        self.with_view(|view| view.to_json())
    }

    /// As `acs.v1.Alert` (proto/acs/v1/alert.proto).
    pub fn to_proto(&self) -> pb::Alert {
        pb::Alert {
            alert_id: self.alert_id.clone(),
            rule_id: self.rule_id.to_string(),
            severity: severity(self.severity) as i32,
            tenant_id: self.tenant_id.to_string(),
            delivery_execution_id: self.delivery_execution_id.clone(),
            test_taker: self.test_taker.clone(),
            title: self.title.to_string(),
            summary: self.summary.clone(),
            count: self.count,
            window_start: self.window_start,
            window_end: self.window_end,
            fired_at: self.fired_at,
            evidence: self.evidence.iter().map(Evidence::to_proto).collect(),
            shadow: self.mode == RuleMode::Shadow,
            // Stamped by the encoder (`encode::AlertEncoder`), not part of the alert itself.
            ..pb::Alert::default()
        }
    }

    /// From `acs.v1.Alert`; `None` when a value is outside the contract (an unknown
    /// severity or action).
    pub fn from_proto(message: pb::Alert) -> Option<Alert> {
        let severity = Severity::ALL.iter().copied().find(|s| severity(*s) as i32 == message.severity)?;
        let evidence = message.evidence.into_iter().map(Evidence::from_proto).collect::<Option<Vec<_>>>()?;
        Some(Alert {
            alert_id: message.alert_id,
            rule_id: Arc::from(message.rule_id),
            severity,
            tenant_id: Arc::from(message.tenant_id),
            delivery_execution_id: message.delivery_execution_id,
            test_taker: message.test_taker,
            title: Arc::from(message.title),
            summary: message.summary,
            count: message.count,
            window_start: message.window_start,
            window_end: message.window_end,
            fired_at: message.fired_at,
            evidence,
            mode: if message.shadow { RuleMode::Shadow } else { RuleMode::Live },
        })
    }

    /// The `acs.v1.Alert` encoding: see [`AlertView::to_proto_vec`].
    pub fn to_proto_vec(&self) -> Vec<u8> {
        self.with_view(|view| view.to_proto_vec())
    }
}

impl<'a> AlertView<'a> {
    /// An owned copy.
    pub fn to_alert(&self) -> Alert {
        Alert {
            alert_id: self.alert_id.to_owned(),
            rule_id: self.rule_id.clone(),
            severity: self.severity,
            tenant_id: Arc::from(self.tenant_id),
            delivery_execution_id: self.delivery_execution_id.map(str::to_owned),
            test_taker: self.test_taker.map(str::to_owned),
            title: Arc::from(self.title),
            summary: self.summary.to_owned(),
            count: self.count,
            window_start: self.window_start,
            window_end: self.window_end,
            fired_at: self.fired_at,
            evidence: self.evidence.iter().map(EvidenceRef::to_evidence).collect(),
            mode: self.mode,
        }
    }

    /// The alert contract's JSON document.
    pub fn to_json(&self) -> String {
        // Plain strings, numbers and enums: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `acs.v1.Alert` encoding, written straight from the fields (no owned copy of
    /// them); equal, byte for byte, to `Alert::to_proto().encode_to_vec()` (tested).
    pub fn to_proto_vec(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.put_proto(&mut buf);
        buf
    }

    /// Appends [`AlertView::to_proto_vec`] to `buf`; where its key and rule id are in `buf`.
    pub fn put_proto(&self, buf: &mut Vec<u8>) -> ProtoSpans {
        let start = buf.len();
        buf.resize(start + self.proto_len(), 0);
        self.write_proto(&mut buf[start..]).shifted(start)
    }

    /// The length of its `acs.v1.Alert` encoding (prost's `encoded_len`).
    pub fn proto_len(&self) -> usize {
        let strings = [(1, self.alert_id), (2, self.rule_id), (4, self.tenant_id), (7, self.title), (8, self.summary)];
        let numbers = [
            (3, i64::from(severity(self.severity) as i32)),
            (9, i64::from(self.count)),
            (10, self.window_start),
            (11, self.window_end),
            (12, self.fired_at),
        ];
        strings.iter().map(|(tag, value)| str_len(*tag, value)).sum::<usize>()
            + numbers.iter().map(|(tag, value)| int_len(*tag, *value)).sum::<usize>()
            // Optional: present even when empty.
            + self.delivery_execution_id.map_or(0, |value| bytes_len(5, value))
            + self.test_taker.map_or(0, |value| bytes_len(6, value))
            + self.evidence.iter().map(|evidence| message_len(13, evidence.proto_len())).sum::<usize>()
            + int_len(14, i64::from(self.mode == RuleMode::Shadow))
    }

    /// Writes [`AlertView::to_proto_vec`] into `out`, which must be exactly
    /// [`AlertView::proto_len`] long (through a cursor: no capacity check per byte); where its
    /// key and rule id are in `out`.
    ///
    /// # Panics
    /// If `out` is shorter (and, in debug builds, if it is longer).
    pub fn write_proto(&self, out: &mut [u8]) -> ProtoSpans {
        let mut out = Cursor { buf: out, at: 0 };
        out.string(1, self.alert_id);
        out.string(2, self.rule_id);
        let rule = out.at - self.rule_id.len()..out.at;
        out.int(3, i64::from(severity(self.severity) as i32));
        out.string(4, self.tenant_id);
        let mut key = out.at - self.tenant_id.len()..out.at;
        if let Some(value) = self.delivery_execution_id {
            out.bytes(5, value.as_bytes());
            key = out.at - value.len()..out.at;
        }
        if let Some(value) = self.test_taker {
            out.bytes(6, value.as_bytes());
        }
        out.string(7, self.title);
        out.string(8, self.summary);
        out.int(9, i64::from(self.count));
        out.int(10, self.window_start);
        out.int(11, self.window_end);
        out.int(12, self.fired_at);
        for evidence in self.evidence {
            out.key(13, WireType::LengthDelimited);
            out.varint(evidence.proto_len() as u64);
            evidence.put_proto(&mut out);
        }
        out.int(14, i64::from(self.mode == RuleMode::Shadow));
        debug_assert_eq!(out.at, out.buf.len(), "written to the length computed");
        ProtoSpans { key, rule }
    }
}

/// Where [`AlertView::put_proto`] wrote an alert's key (the session's id, or the tenant's
/// for a tenant-scoped alert) and its rule's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoSpans {
    pub key: std::ops::Range<usize>,
    pub rule: std::ops::Range<usize>,
}

impl ProtoSpans {
    /// The same spans, `by` bytes further (the encoding written `by` bytes into a buffer).
    pub fn shifted(self, by: usize) -> ProtoSpans {
        let shift = |range: std::ops::Range<usize>| by + range.start..by + range.end;
        ProtoSpans { key: shift(self.key), rule: shift(self.rule) }
    }
}

/// Writes protobuf fields into a slice sized beforehand (see [`AlertView::put_proto`]).
struct Cursor<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self, byte: u8) {
        self.buf[self.at] = byte;
        self.at += 1;
    }

    /// The same bytes as `prost::encoding::encode_varint`: its length first, so that the
    /// slice is checked once, not each byte.
    fn varint(&mut self, mut value: u64) {
        let len = encoded_len_varint(value);
        let (last, rest) = self.buf[self.at..self.at + len].split_last_mut().expect("a varint takes a byte or more");
        for byte in rest {
            *byte = (value as u8) | 0x80;
            value >>= 7;
        }
        *last = value as u8;
        self.at += len;
    }

    /// The same bytes as `prost::encoding::encode_key` (tags below 16).
    fn key(&mut self, tag: u8, wire_type: WireType) {
        debug_assert!(tag < 16);
        self.byte((tag << 3) | wire_type as u8);
    }

    /// A length-delimited field, written even when empty.
    fn bytes(&mut self, tag: u8, value: &[u8]) {
        self.key(tag, WireType::LengthDelimited);
        self.varint(value.len() as u64);
        self.buf[self.at..self.at + value.len()].copy_from_slice(value);
        self.at += value.len();
    }

    /// A proto3 string field (absent when empty).
    fn string(&mut self, tag: u8, value: &str) {
        if !value.is_empty() {
            self.bytes(tag, value.as_bytes());
        }
    }

    /// A proto3 integer or enum field (absent when 0; a negative value takes ten bytes, as
    /// its sign-extended varint).
    fn int(&mut self, tag: u8, value: i64) {
        if value != 0 {
            self.key(tag, WireType::Varint);
            self.varint(value as u64);
        }
    }
}

/// Encoded length of a proto3 string field (absent when empty).
fn str_len(tag: u32, value: &str) -> usize {
    if value.is_empty() { 0 } else { bytes_len(tag, value) }
}

/// Encoded length of a length-delimited field that is present.
fn bytes_len(tag: u32, value: &str) -> usize {
    message_len(tag, value.len())
}

/// Encoded length of a length-delimited field of `len` bytes (an embedded message, a string).
fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Encoded length of a proto3 integer or enum field (absent when 0).
fn int_len(tag: u32, value: i64) -> usize {
    if value == 0 { 0 } else { key_len(tag) + encoded_len_varint(value as u64) }
}

fn severity(severity: Severity) -> pb::Severity {
    match severity {
        Severity::Info => pb::Severity::Info,
        Severity::Low => pb::Severity::Low,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
        Severity::Critical => pb::Severity::Critical,
    }
}

impl EvidenceRef<'_> {
    fn action_number(&self) -> i64 {
        i64::from(self.action.map_or(pb::Action::Unspecified, crate::encode::proto::action) as i32)
    }

    /// Encoded length of its `acs.v1.Evidence`.
    fn proto_len(&self) -> usize {
        let code = match self.reason_code {
            None => 0,
            // A oneof member is written even when 0 or empty.
            Some(EvidenceCodeRef::Numeric(code)) => key_len(3) + encoded_len_varint(code as u64),
            Some(EvidenceCodeRef::Raw(raw)) => bytes_len(4, raw),
        };
        str_len(1, self.message_id)
            + int_len(2, self.action_number())
            + code
            + int_len(5, self.incident_time)
            + str_len(6, self.topic)
            + int_len(7, i64::from(self.partition))
            + int_len(8, self.offset)
    }

    fn put_proto(&self, out: &mut Cursor<'_>) {
        out.string(1, self.message_id);
        out.int(2, self.action_number());
        match self.reason_code {
            None => {}
            Some(EvidenceCodeRef::Numeric(code)) => {
                out.key(3, WireType::Varint);
                out.varint(code as u64);
            }
            Some(EvidenceCodeRef::Raw(raw)) => out.bytes(4, raw.as_bytes()),
        }
        out.int(5, self.incident_time);
        out.string(6, self.topic);
        out.int(7, i64::from(self.partition));
        out.int(8, self.offset);
    }
}

impl Evidence {
    /// As `acs.v1.Evidence` (proto/acs/v1/alert.proto).
    pub(crate) fn to_proto(&self) -> pb::Evidence {
        pb::Evidence {
            message_id: self.message_id.to_string(),
            action: self.action.map_or(pb::Action::Unspecified, crate::encode::proto::action) as i32,
            reason_code: self.reason_code.as_ref().map(|code| match code {
                EvidenceCode::Numeric(code) => pb::evidence::ReasonCode::ReasonCodeNumeric(*code),
                EvidenceCode::Raw(raw) => pb::evidence::ReasonCode::ReasonCodeRaw(raw.to_string()),
            }),
            incident_time: self.incident_time,
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// From `acs.v1.Evidence`; `None` for an unknown action.
    pub(crate) fn from_proto(message: pb::Evidence) -> Option<Evidence> {
        // `UNSPECIFIED` is no action; `OTHER` an action outside the spec's.
        let action = crate::encode::proto::model_action(pb::Action::try_from(message.action).ok()?);
        Some(Evidence {
            message_id: message.message_id.into_boxed_str(),
            action,
            reason_code: message.reason_code.map(|code| match code {
                pb::evidence::ReasonCode::ReasonCodeNumeric(code) => EvidenceCode::Numeric(code),
                pb::evidence::ReasonCode::ReasonCodeRaw(raw) => EvidenceCode::Raw(raw.into_boxed_str()),
            }),
            incident_time: message.incident_time,
            topic: Arc::from(message.topic),
            partition: message.partition,
            offset: message.offset,
        })
    }
}

/// A UUID v8 holding the XXH3-128 of the rule id, the scope key (delivery execution or
/// tenant id), the group (e.g. the signal kind; empty without one), and the first
/// evidence's message id and incident time: the same input yields the same id.
pub fn alert_id(rule: &str, scope_key: &str, group: &str, first: &Evidence) -> String {
    alert_id_in(&mut [0; ALERT_ID_LEN], rule, scope_key, group, &first.borrowed()).to_owned()
}

/// The length of an alert id (a hyphenated UUID).
pub(crate) const ALERT_ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// [`alert_id`], written in `text`.
pub(crate) fn alert_id_in<'t>(
    text: &'t mut [u8; ALERT_ID_LEN],
    rule: &str,
    scope_key: &str,
    group: &str,
    first: &EvidenceRef<'_>,
) -> &'t str {
    let parts = [rule, scope_key, group, first.message_id];
    let len = parts.iter().map(|part| part.len() + 1).sum::<usize>() + 8;
    let fill = |bytes: &mut [u8]| {
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part.as_bytes());
            bytes[at + part.len()] = 0;
            at += part.len() + 1;
        }
        bytes[at..].copy_from_slice(&first.incident_time.to_be_bytes());
    };
    // On the stack when it fits (ids are short); the same bytes either way.
    let mut stack = [0u8; 256];
    let hash = if len <= stack.len() {
        fill(&mut stack[..len]);
        xxh3_128(&stack[..len])
    } else {
        let mut bytes = vec![0; len];
        fill(&mut bytes);
        xxh3_128(&bytes)
    };
    uuid::Uuid::new_v8(hash.to_be_bytes()).hyphenated().encode_lower(text)
}

/// A pause's evidence, for tests: `message_id` at `at` (epoch ms), offset `offset` of
/// `acs.raw` partition 3, reason code 20010.
#[cfg(test)]
pub(crate) fn evidence_sample(message_id: &str, at: i64, offset: i64) -> Evidence {
    Evidence {
        message_id: Box::from(message_id),
        action: Some(Action::Pause),
        reason_code: Some(EvidenceCode::Numeric(20010)),
        incident_time: at,
        topic: Arc::from("acs.raw"),
        partition: 3,
        offset,
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use serde_json::json;

    use super::evidence_sample as evidence;
    use super::*;

    #[test]
    fn the_json_has_the_contract_shape() {
        let first = evidence("m1", 1_767_261_000_000, 41);
        let mut second = evidence("m2", 1_767_261_060_000, 42);
        second.reason_code = Some(EvidenceCode::Raw(Box::from("N52")));
        second.action = None;
        let alert = Alert {
            alert_id: alert_id("repeated-pauses", "u#d#h#acme", "", &first),
            rule_id: Arc::from("repeated-pauses"),
            severity: Severity::Medium,
            tenant_id: "acme".into(),
            delivery_execution_id: Some("u#d#h#acme".into()),
            test_taker: None,
            title: "Repeated pauses".into(),
            summary: "2 pauses".into(),
            count: 2,
            window_start: 1_767_261_000_000,
            window_end: 1_767_261_060_000,
            fired_at: 1_767_261_060_000,
            evidence: vec![first, second],
            mode: RuleMode::Live,
        };
        let value: serde_json::Value = serde_json::from_str(&alert.to_json()).unwrap();
        assert_eq!(
            value,
            json!({
                "alertId": alert.alert_id,
                "ruleId": "repeated-pauses",
                "severity": "medium",
                "tenantId": "acme",
                "deliveryExecutionId": "u#d#h#acme",
                "testTaker": null,
                "title": "Repeated pauses",
                "summary": "2 pauses",
                "count": 2,
                "windowStart": 1_767_261_000_000_i64,
                "windowEnd": 1_767_261_060_000_i64,
                "firedAt": 1_767_261_060_000_i64,
                "evidence": [
                    {"messageId": "m1", "action": "pause", "reasonCode": 20010, "incidentTime": 1_767_261_000_000_i64,
                     "topic": "acs.raw", "partition": 3, "offset": 41},
                    {"messageId": "m2", "action": null, "reasonCode": "N52", "incidentTime": 1_767_261_060_000_i64,
                     "topic": "acs.raw", "partition": 3, "offset": 42},
                ],
            })
        );
        // Field order is the contract's order.
        let text = alert.to_json();
        let order = ["alertId", "ruleId", "severity", "tenantId", "deliveryExecutionId", "testTaker", "title"];
        let positions: Vec<usize> = order.iter().map(|k| text.find(&format!("\"{k}\"")).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    fn alert_with(evidence: Vec<Evidence>) -> Alert {
        Alert {
            alert_id: "a".into(),
            rule_id: Arc::from("r"),
            severity: Severity::High,
            tenant_id: "acme".into(),
            delivery_execution_id: None,
            test_taker: Some("s".into()),
            title: "t".into(),
            summary: "s".into(),
            count: evidence.len() as u32,
            window_start: 1,
            window_end: 2,
            fired_at: 3,
            evidence,
            mode: RuleMode::Live,
        }
    }

    #[test]
    fn the_protobuf_round_trips() {
        let mut first = evidence("m1", 1_767_261_000_000, 41);
        first.action = None;
        let mut second = evidence("m2", 1_767_261_060_000, 42);
        second.reason_code = Some(EvidenceCode::Raw(Box::from("N52")));
        let mut third = evidence("m3", 1_767_261_070_000, 43);
        third.reason_code = None;
        third.action = Some(Action::Other);
        for (severity, tenant_scope) in [(Severity::Info, false), (Severity::Critical, true)] {
            let alert = Alert {
                alert_id: alert_id("r", "s", "", &first),
                rule_id: Arc::from("r"),
                severity,
                tenant_id: "acme".into(),
                delivery_execution_id: (!tenant_scope).then(|| "u#d#h#acme".into()),
                test_taker: (!tenant_scope).then(|| "student1".into()),
                title: "t".into(),
                summary: "s".into(),
                count: 3,
                window_start: 1,
                window_end: 2,
                fired_at: 3,
                evidence: vec![first.clone(), second.clone(), third.clone()],
                mode: if tenant_scope { RuleMode::Shadow } else { RuleMode::Live },
            };
            let bytes = alert.to_proto_vec();
            assert_eq!(bytes, alert.to_proto().encode_to_vec());
            let decoded = Alert::from_proto(pb::Alert::decode(bytes.as_slice()).unwrap()).unwrap();
            assert_eq!(decoded, alert);
        }
        // The direct encoding is prost's, byte for byte, edge values included.
        let mut edge = alert_with(vec![first.clone(), second.clone(), third.clone()]);
        edge.evidence[0].incident_time = -1;
        edge.evidence[0].partition = -1;
        edge.evidence[1].reason_code = Some(EvidenceCode::Numeric(0));
        edge.evidence[2].reason_code = Some(EvidenceCode::Raw(Box::from("")));
        edge.evidence[2].message_id = Box::from("");
        edge.delivery_execution_id = Some(String::new());
        edge.title = Arc::from("");
        edge.count = 0;
        edge.window_start = i64::MIN;
        for alert in [edge, alert_with(Vec::new())] {
            assert_eq!(alert.to_proto_vec(), alert.to_proto().encode_to_vec(), "{alert:?}");
        }
        let mut bad = pb::Alert { severity: 9, ..Default::default() };
        assert_eq!(Alert::from_proto(bad.clone()), None, "unknown severity");
        bad.severity = pb::Severity::High as i32;
        bad.evidence.push(pb::Evidence { action: 77, ..Default::default() });
        assert_eq!(Alert::from_proto(bad), None, "unknown action");
    }

    fn any_evidence() -> impl proptest::strategy::Strategy<Value = Evidence> {
        use proptest::prelude::*;
        let code = prop_oneof![
            Just(None),
            any::<i64>().prop_map(|c| Some(EvidenceCode::Numeric(c))),
            ".{0,200}".prop_map(|r| Some(EvidenceCode::Raw(r.into()))),
        ];
        let action = proptest::option::of(proptest::sample::select(Action::ALL.to_vec()));
        (".{0,300}", action, code, any::<i64>(), ".{0,300}", any::<i32>(), any::<i64>()).prop_map(
            |(message_id, action, reason_code, incident_time, topic, partition, offset)| Evidence {
                message_id: message_id.into(),
                action,
                reason_code,
                incident_time,
                topic: topic.into(),
                partition,
                offset,
            },
        )
    }

    proptest::proptest! {
        /// Written through a cursor into a buffer sized from its length: prost's bytes (and
        /// length), for any
        /// values (negative numbers take ten bytes; strings of any length, empty ones
        /// included), after what the buffer held, and the key and rule id where it says.
        #[test]
        fn the_direct_protobuf_is_prosts_for_any_values(
            strings in proptest::collection::vec(".{0,400}", 7),
            numbers in proptest::collection::vec(proptest::prelude::any::<i64>(), 3),
            count in proptest::prelude::any::<u32>(),
            tenant_scope in proptest::prelude::any::<bool>(),
            evidence in proptest::collection::vec(any_evidence(), 0..5),
            before in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let alert = Alert {
                alert_id: strings[0].clone(),
                rule_id: Arc::from(strings[1].as_str()),
                severity: Severity::High,
                tenant_id: strings[2].as_str().into(),
                delivery_execution_id: (!tenant_scope).then(|| strings[3].clone()),
                test_taker: (!tenant_scope).then(|| strings[4].clone()),
                title: strings[5].as_str().into(),
                summary: strings[6].clone(),
                count,
                window_start: numbers[0],
                window_end: numbers[1],
                fired_at: numbers[2],
                evidence,
                mode: if numbers[0] % 2 == 0 { RuleMode::Live } else { RuleMode::Shadow },
            };
            let expected = alert.to_proto().encode_to_vec();
            proptest::prop_assert_eq!(alert.with_view(|view| view.proto_len()), expected.len());
            let mut buf = before.clone();
            let spans = alert.with_view(|view| view.put_proto(&mut buf));
            proptest::prop_assert_eq!(&buf[..before.len()], &before[..]);
            proptest::prop_assert_eq!(&buf[before.len()..], &expected[..]);
            let key_of = if tenant_scope { &strings[2] } else { &strings[3] };
            proptest::prop_assert_eq!(&buf[spans.key], key_of.as_bytes());
            proptest::prop_assert_eq!(&buf[spans.rule], strings[1].as_bytes());
        }
    }

    #[test]
    fn alert_ids_are_deterministic_uuid_v8() {
        let first = evidence("m1", 1_767_261_000_000, 41);
        let id = alert_id("r", "s", "", &first);
        assert_eq!(id, alert_id("r", "s", "", &evidence("m1", 1_767_261_000_000, 99)), "offsets do not matter");
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 8);
        let others = [
            alert_id("r2", "s", "", &first),
            alert_id("r", "s2", "", &first),
            alert_id("r", "s", "flag", &first),
            alert_id("r", "s", "", &evidence("m2", 1_767_261_000_000, 41)),
            alert_id("r", "s", "", &evidence("m1", 1_767_261_000_001, 41)),
            // Parts are separated: moving a character across a boundary changes the id.
            alert_id("rs", "", "", &first),
        ];
        for other in others {
            assert_ne!(other, id);
        }
    }
}

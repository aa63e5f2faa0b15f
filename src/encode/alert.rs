//! Alert records: an alert's `acs.v1.Alert` encoding (proto/acs/v1/alert.proto), its JSON
//! contract, and its output record ([`AlertEncoder`] → [`Alerted`]).
//!
//! The rules decide (an [`Alert`], or the engine's borrowed [`AlertView`]: rule, severity,
//! evidence, counts); this module writes them. The JSON document is the contract's
//! `Serialize` derive on [`AlertView`], written here; the protobuf encoding is written by
//! hand, straight from the borrowed fields into the record's one allocation (no
//! intermediate `pb::Alert`, no copy of every string into one): the same bytes as prost's
//! for the plain conversion [`Alert::to_proto`], which the property tests below check for
//! arbitrary alerts, stamped or not, in both formats.

use std::borrow::Cow;
use std::sync::Arc;

use prost::encoding::{WireType, encoded_len_varint, key_len};

use super::proto::pb;
use super::stamp::AlertStamp;
use super::{Format, Output, TopicTemplate, headers};
use crate::rules::alert::{EvidenceCode, EvidenceCodeRef, EvidenceRef};
use crate::rules::{Alert, AlertView, Evidence, RuleMode, Severity};

/// The fully qualified message name, for the `acs-schema` header.
pub const ALERT_SCHEMA: &str = "acs.v1.Alert";

/// The alerts one record fired (most fire none or one: inline up to two).
pub type Alerts = smallvec::SmallVec<[Alerted; 2]>;

/// An alert's output record, and what the edge measures of it. Cheap to clone, its bytes
/// shared: the session store keeps it for a replay (and writes it to the changelog) while
/// the edge produces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alerted {
    /// Its topic, its value (encoded as `format` says) and, when that is not it (JSON), its
    /// `acs.v1.Alert` encoding, one after the other: one allocation.
    bytes: Arc<[u8]>,
    /// Where the value is in `bytes` (the topic ends where it starts).
    value: std::ops::Range<usize>,
    /// Where its `acs.v1.Alert` encoding starts in `bytes` (it runs to the end).
    proto: usize,
    /// Where the key (the session, or the tenant for a tenant-scoped rule) and the rule id are
    /// in `bytes`.
    spans: ProtoSpans,
    format: Format,
    pub severity: Severity,
    /// A shadow rule's alert goes to the shadow alerts topic (see [`Alerted::topic`]).
    pub mode: RuleMode,
}

impl Alerted {
    /// Its output record: to its tenant's alerts topic, keyed by its session (its tenant for
    /// a tenant-scoped rule).
    pub fn output(&self) -> Output<'_> {
        let headers = smallvec::smallvec![
            (headers::CONTENT_TYPE, Cow::Borrowed(self.format.content_type())),
            (headers::SCHEMA, Cow::Borrowed(ALERT_SCHEMA)),
        ];
        let key = Some(Cow::Borrowed(&self.bytes[self.spans.key.clone()]));
        Output {
            topic: Cow::Borrowed(self.topic()),
            key,
            value: Cow::Borrowed(&self.bytes[self.value.clone()]),
            headers,
        }
    }

    /// Its topic (its tenant's alerts topic).
    pub fn topic(&self) -> &str {
        self.text(0..self.value.start)
    }

    /// The id of the rule that fired it.
    pub fn rule(&self) -> &str {
        self.text(self.spans.rule.clone())
    }

    /// Text it was written from.
    fn text(&self, span: std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&self.bytes[span]).expect("written from text (a topic, a rule id)")
    }

    /// Its `acs.v1.Alert` encoding (what the changelog keeps).
    pub fn proto(&self) -> &[u8] {
        &self.bytes[self.proto..]
    }

    /// The alert, decoded from [`Alerted::proto`]; `None` if it is not an alert of the
    /// contract (it always is when made by [`AlertEncoder::record`]).
    pub fn alert(&self) -> Option<Alert> {
        use prost::Message as _;
        let message = pb::Alert::decode(self.proto()).ok()?;
        Alert::from_proto(message)
    }
}

/// How alerts become output records: to their tenant's topic (rendered from the template; a
/// shadow rule's to the shadow template's), keyed by their session (their tenant for a
/// tenant-scoped rule), encoded as the format says, stamped with the configuration in force
/// and the tenant's privacy mark ([`AlertStamp`]).
#[derive(Debug, Clone)]
pub struct AlertEncoder {
    pub template: TopicTemplate,
    /// Where the alerts of shadow rules go.
    pub shadow_template: TopicTemplate,
    pub format: Format,
    /// The rules and catalog versions in force, shared with the pipeline (swapped on a
    /// reload); empty versions (the default): alerts are not stamped.
    pub stamp: Arc<arc_swap::ArcSwap<crate::model::Stamp>>,
    /// Whose alerts carry a privacy mark.
    pub privacy: Arc<crate::privacy::Privacy>,
}

/// Protobuf, to `acs.{tenant}.alerts` (shadow: `acs.{tenant}.alerts.shadow`), not stamped.
impl Default for AlertEncoder {
    fn default() -> AlertEncoder {
        let template = TopicTemplate::parse("acs.{tenant}.alerts").expect("the default template is valid");
        let shadow_template =
            TopicTemplate::parse("acs.{tenant}.alerts.shadow").expect("the default template is valid");
        AlertEncoder {
            template,
            shadow_template,
            format: Format::Protobuf,
            stamp: Arc::default(),
            privacy: Arc::default(),
        }
    }
}

impl AlertEncoder {
    /// An alert's output record, stamped with the configuration in force.
    pub fn record(&self, alert: &AlertView<'_>) -> Alerted {
        let stamp = self.stamp.load();
        let mark = self.privacy.mark(alert.tenant_id);
        let stamp = (!stamp.rules_version.is_empty()).then(|| AlertStamp {
            processor_version: crate::VERSION,
            rules_version: &stamp.rules_version,
            catalog_version: &stamp.catalog_version,
            privacy: mark.map(|mark| (mark.mode, &*mark.key_id)),
        });
        self.record_stamped(alert, stamp.as_ref())
    }

    /// An alert's output record, encoded once from its borrowed fields and `stamp` (none: not
    /// stamped): in protobuf straight into the record's one allocation (sized from the
    /// encoding's length); in JSON through a buffer the thread reuses, then copied into it.
    pub fn record_stamped(&self, alert: &AlertView<'_>, stamp: Option<&AlertStamp<'_>>) -> Alerted {
        let template = match alert.mode {
            RuleMode::Live => &self.template,
            RuleMode::Shadow => &self.shadow_template,
        };
        let tail = stamp.map(AlertStamp::to_proto).unwrap_or_default();
        // The topic first: the value starts where it ends.
        let start = template.fixed_len() + alert.tenant_id.len();
        let (bytes, value, proto, spans) = match self.format {
            Format::Protobuf => {
                let end = start + alert.proto_len() + tail.len();
                let mut bytes: Arc<[u8]> = std::iter::repeat_n(0, end).collect();
                let buf = Arc::get_mut(&mut bytes).expect("just made: not shared");
                template.write_to(buf, alert.tenant_id);
                let own = end - tail.len();
                let spans = alert.write_proto(&mut buf[start..own]).shifted(start);
                buf[own..].copy_from_slice(&tail);
                (bytes, start..end, start, spans)
            }
            Format::Json => {
                let mut buf = ALERT_BUFFER.take();
                buf.clear();
                buf.resize(start, 0);
                template.write_to(&mut buf, alert.tenant_id);
                // Plain strings, numbers and enums into memory: serializing cannot fail.
                if serde_json::to_writer(&mut buf, alert).is_err() {
                    buf.truncate(start);
                }
                if let Some(stamp) = stamp {
                    stamp.put_json(&mut buf);
                }
                let end = buf.len();
                let spans = alert.put_proto(&mut buf);
                buf.extend_from_slice(&tail);
                let bytes = Arc::from(&buf[..]);
                // Kept for the next alert, unless an outsized one grew it.
                if buf.capacity() <= MAX_KEPT_BUFFER {
                    ALERT_BUFFER.set(buf);
                }
                (bytes, start..end, end, spans)
            }
        };
        Alerted { bytes, value, proto, spans, format: self.format, severity: alert.severity, mode: alert.mode }
    }
}

/// The most capacity the thread's alert buffer keeps between alerts.
const MAX_KEPT_BUFFER: usize = 64 * 1024;

thread_local! {
    /// Where [`AlertEncoder::record`] writes a JSON alert before its record is allocated.
    static ALERT_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

// The encodings, as methods of the rules' alert types: written here, beside the record they
// make; `rules::alert` holds the data and knows nothing of them.

impl Alert {
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
            // Stamped by [`AlertEncoder`], not part of the alert itself.
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

impl AlertView<'_> {
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
        i64::from(self.action.map_or(pb::Action::Unspecified, super::proto::action) as i32)
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
            action: self.action.map_or(pb::Action::Unspecified, super::proto::action) as i32,
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
        let action = super::proto::model_action(pb::Action::try_from(message.action).ok()?);
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

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::select;
    use prost::Message as _;
    use serde_json::{Value, json};

    use super::*;
    use crate::model::Action;
    use crate::rules::alert::{alert_id, evidence_sample as evidence};

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

    #[test]
    fn alert_records_are_routed_keyed_and_labelled_in_both_formats() {
        let alert = |delivery: Option<&str>| Alert {
            alert_id: "0b6c1f3e-8f4c-8d2a-9a53-6f1d5b2c7e90".into(),
            rule_id: Arc::from("repeated-pauses"),
            severity: Severity::Medium,
            tenant_id: Arc::from("acme"),
            delivery_execution_id: delivery.map(str::to_owned),
            test_taker: None,
            title: Arc::from("Repeated pauses"),
            summary: "1 pause".into(),
            count: 1,
            window_start: 1,
            window_end: 1,
            fired_at: 1,
            evidence: vec![evidence("m1", 1_767_261_000_000, 41)],
            mode: RuleMode::Live,
        };
        let template = TopicTemplate::parse("x.{tenant}.alerts").unwrap();
        for (format, content_type) in [(Format::Protobuf, "application/x-protobuf"), (Format::Json, "application/json")]
        {
            let encoder = AlertEncoder { template: template.clone(), format, ..AlertEncoder::default() };
            // Keyed by the session; by the tenant for a tenant-scoped alert.
            for (delivery, key) in [(Some("u#d#h#acme"), "u#d#h#acme"), (None, "acme")] {
                let alert = alert(delivery);
                let alerted = alert.with_view(|view| encoder.record(view));
                let output = alerted.output();
                assert_eq!((&*output.topic, alerted.topic()), ("x.acme.alerts", "x.acme.alerts"));
                assert_eq!(output.key.as_deref(), Some(key.as_bytes()));
                let headers: Vec<(&str, &str)> = output.headers.iter().map(|(n, v)| (*n, v.as_ref())).collect();
                assert_eq!(headers, [("content-type", content_type), ("acs-schema", "acs.v1.Alert")]);
                let value = match format {
                    Format::Protobuf => alert.to_proto_vec(),
                    Format::Json => alert.to_json().into_bytes(),
                };
                assert_eq!(*output.value, value);
                assert_eq!(alerted.proto(), alert.to_proto_vec(), "the changelog's bytes");
                assert_eq!(alerted.alert(), Some(alert));
                assert_eq!((alerted.rule(), alerted.severity), ("repeated-pauses", Severity::Medium));
            }
        }
    }

    /// Any text: empty, ASCII, or any Unicode, some long enough for a two-byte length.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9#-]{1,12}", ".{1,100}"]
    }

    /// Any evidence: every action and none, every kind of reason code and none.
    fn any_evidence() -> impl Strategy<Value = Evidence> {
        let code = prop_oneof![
            Just(None),
            any::<i64>().prop_map(|code| Some(EvidenceCode::Numeric(code))),
            any_text().prop_map(|raw| Some(EvidenceCode::Raw(raw.into()))),
        ];
        let action = option::of(select(Action::ALL.to_vec()));
        (any_text(), action, code, any::<i64>(), any_text(), any::<i32>(), any::<i64>()).prop_map(
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

    /// Any alert: every severity, both modes, session- or tenant-scoped (each optional field
    /// present, empty or absent), up to five evidence, any numbers.
    fn any_alert() -> impl Strategy<Value = Alert> {
        let texts = (any_text(), any_text(), any_text(), option::of(any_text()), option::of(any_text()));
        let more =
            (any_text(), any_text(), select(Severity::ALL.to_vec()), select(vec![RuleMode::Live, RuleMode::Shadow]));
        let numbers = (any::<u32>(), any::<i64>(), any::<i64>(), any::<i64>());
        (texts, more, numbers, vec(any_evidence(), 0..=5)).prop_map(
            |(
                (alert_id, rule_id, tenant_id, delivery_execution_id, test_taker),
                (title, summary, severity, mode),
                (count, window_start, window_end, fired_at),
                evidence,
            )| Alert {
                alert_id,
                rule_id: rule_id.into(),
                severity,
                tenant_id: tenant_id.into(),
                delivery_execution_id,
                test_taker,
                title: title.into(),
                summary,
                count,
                window_start,
                window_end,
                fired_at,
                evidence,
                mode,
            },
        )
    }

    /// A stamp's fields, owned: processor, rules and catalog versions, and the privacy mark
    /// (mode, key id) of a protected tenant.
    type StampFields = (String, String, String, Option<(String, String)>);

    fn any_stamp() -> impl Strategy<Value = Option<StampFields>> {
        option::of((any_text(), any_text(), any_text(), option::of((any_text(), any_text()))))
    }

    /// The alert contract's JSON document of `alert` stamped with `stamp`, built from the
    /// contract's words (README, proto/acs/v1/alert.proto), not from the encoder's types.
    fn contract(alert: &Alert, stamp: Option<&AlertStamp<'_>>) -> Value {
        let evidence: Vec<Value> = alert
            .evidence
            .iter()
            .map(|evidence| {
                json!({
                    "messageId": &*evidence.message_id,
                    "action": evidence.action.map(Action::as_str),
                    "reasonCode": match &evidence.reason_code {
                        None => Value::Null,
                        Some(EvidenceCode::Numeric(code)) => json!(code),
                        Some(EvidenceCode::Raw(raw)) => json!(&**raw),
                    },
                    "incidentTime": evidence.incident_time,
                    "topic": &*evidence.topic,
                    "partition": evidence.partition,
                    "offset": evidence.offset,
                })
            })
            .collect();
        let mut document = json!({
            "alertId": alert.alert_id,
            "ruleId": &*alert.rule_id,
            "severity": alert.severity.as_str(),
            "tenantId": &*alert.tenant_id,
            "deliveryExecutionId": alert.delivery_execution_id,
            "testTaker": alert.test_taker,
            "title": &*alert.title,
            "summary": alert.summary,
            "count": alert.count,
            "windowStart": alert.window_start,
            "windowEnd": alert.window_end,
            "firedAt": alert.fired_at,
            "evidence": evidence,
        });
        if alert.mode == RuleMode::Shadow {
            document["mode"] = json!("shadow");
        }
        if let Some(stamp) = stamp {
            document["processor"] = json!({
                "version": stamp.processor_version,
                "rulesVersion": stamp.rules_version,
                "catalogVersion": stamp.catalog_version,
            });
            if let Some((mode, key_id)) = stamp.privacy {
                document["privacy"] = json!({"mode": mode, "keyId": key_id});
            }
        }
        document
    }

    proptest! {
        /// The hand-written protobuf is prost's for any alert: its length, its bytes (written
        /// after what a buffer held, which it keeps), the key and rule id where it says, and
        /// it decodes back to the same alert.
        #[test]
        fn the_direct_protobuf_is_prosts_for_any_alert(
            alert in any_alert(),
            before in vec(any::<u8>(), 0..40),
        ) {
            let expected = alert.to_proto().encode_to_vec();
            prop_assert_eq!(alert.with_view(|view| view.proto_len()), expected.len());
            prop_assert_eq!(alert.to_proto_vec(), expected.clone());
            let mut buf = before.clone();
            let spans = alert.with_view(|view| view.put_proto(&mut buf));
            prop_assert_eq!(&buf[..before.len()], &before[..]);
            prop_assert_eq!(&buf[before.len()..], &expected[..]);
            let key = alert.delivery_execution_id.as_deref().unwrap_or(&alert.tenant_id);
            prop_assert_eq!(&buf[spans.key], key.as_bytes());
            prop_assert_eq!(&buf[spans.rule], alert.rule_id.as_bytes());
            let decoded = pb::Alert::decode(expected.as_slice()).map(Alert::from_proto);
            prop_assert_eq!(decoded, Ok(Some(alert)));
        }

        /// Any alert's record, stamped or not, in either format: its `acs.v1.Alert` bytes (the
        /// value in protobuf; kept beside it in JSON, for the changelog) are prost's for the
        /// whole message, stamp fields included, and decode back to the alert; its JSON value is
        /// the contract's document, written by serde_json from the contract's derive (the
        /// stamp's members appended); topic, key and rule id are the alert's.
        #[test]
        fn alert_records_are_prosts_and_the_contracts_for_any_alert(
            alert in any_alert(),
            stamp in any_stamp(),
        ) {
            let stamp = stamp.as_ref().map(|(processor, rules, catalog, privacy)| AlertStamp {
                processor_version: processor,
                rules_version: rules,
                catalog_version: catalog,
                privacy: privacy.as_ref().map(|(mode, key_id)| (mode.as_str(), key_id.as_str())),
            });
            let message = match stamp {
                None => alert.to_proto(),
                Some(stamp) => pb::Alert {
                    processor_version: stamp.processor_version.to_owned(),
                    rules_version: stamp.rules_version.to_owned(),
                    catalog_version: stamp.catalog_version.to_owned(),
                    privacy: stamp
                        .privacy
                        .map(|(mode, key_id)| pb::Privacy { mode: mode.to_owned(), key_id: key_id.to_owned() }),
                    ..alert.to_proto()
                },
            };
            let expected = message.encode_to_vec();
            let topic = match alert.mode {
                RuleMode::Live => format!("acs.{}.alerts", alert.tenant_id),
                RuleMode::Shadow => format!("acs.{}.alerts.shadow", alert.tenant_id),
            };
            let key = alert.delivery_execution_id.as_deref().unwrap_or(&alert.tenant_id);
            for format in [Format::Protobuf, Format::Json] {
                let encoder = AlertEncoder { format, ..AlertEncoder::default() };
                let alerted = alert.with_view(|view| encoder.record_stamped(view, stamp.as_ref()));
                prop_assert_eq!(alerted.proto(), &expected[..]);
                prop_assert_eq!(alerted.alert(), Some(alert.clone()));
                let output = alerted.output();
                prop_assert_eq!((&*output.topic, alerted.topic()), (topic.as_str(), topic.as_str()));
                prop_assert_eq!(output.key.as_deref(), Some(key.as_bytes()));
                prop_assert_eq!(alerted.rule(), &*alert.rule_id);
                match format {
                    Format::Protobuf => prop_assert_eq!(&*output.value, &expected[..]),
                    Format::Json => {
                        let document: Value = serde_json::from_slice(&output.value).unwrap();
                        prop_assert_eq!(document, contract(&alert, stamp.as_ref()));
                        let own = serde_json::to_vec(&alert).unwrap();
                        match stamp {
                            None => prop_assert_eq!(&*output.value, &own[..]),
                            Some(_) => prop_assert!(output.value.starts_with(&own[..own.len() - 1])),
                        }
                    }
                }
            }
        }
    }
}

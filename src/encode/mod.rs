//! Encode: output records: topic routing, protobuf or JSON values, dead letters.

pub mod dead_letter;
pub mod incident;
pub mod json;
pub mod proto;
pub mod route;
pub mod stamp;

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

pub use dead_letter::DeadLetter;
pub use route::TopicTemplate;

use crate::model::Event;
use crate::rules::alert::ProtoSpans;

/// One record to produce. Topic, key and value borrow where they can, from the input record
/// or from an alert's record kept for a replay (the producer copies them when it sends).
#[derive(Debug, Clone, PartialEq)]
pub struct Output<'a> {
    pub topic: Cow<'a, str>,
    pub key: Option<Cow<'a, [u8]>>,
    pub value: Cow<'a, [u8]>,
    pub headers: Headers,
}

impl Output<'_> {
    /// The same record, borrowed.
    pub fn borrowed(&self) -> Output<'_> {
        Output {
            topic: Cow::Borrowed(&self.topic),
            key: self.key.as_deref().map(Cow::Borrowed),
            value: Cow::Borrowed(&self.value),
            headers: self.headers.clone(),
        }
    }
}

/// Record headers: name and text value, inline up to an event's four.
pub type Headers = smallvec::SmallVec<[(&'static str, Cow<'static, str>); 4]>;

/// How event values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `acs.v1.EnrichedEvent` (proto/acs/v1/event.proto).
    #[default]
    Protobuf,
    /// The JSON contract (camelCase, the spec's spellings, epoch milliseconds).
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// Event header names.
pub mod headers {
    pub const CONTENT_TYPE: &str = "content-type";
    pub const SCHEMA: &str = "acs-schema";
    pub const ACTOR: &str = "acs-actor";
    pub const ACTION: &str = "acs-action";
}

/// Margin over the input record's length when sizing an encoded event.
const ENCODE_MARGIN: usize = 256;

/// Encodes an event into its record: topic from the template, key = delivery execution id.
/// `input_len` (the record value's length) sizes the output buffer.
pub fn event_record<'a>(event: &Event<'a>, template: &TopicTemplate, format: Format, input_len: usize) -> Output<'a> {
    let topic = template.render(&event.tenant_id);
    let key = Some(match &event.delivery_execution_id {
        Cow::Borrowed(id) => Cow::Borrowed(id.as_bytes()),
        Cow::Owned(id) => Cow::Owned(id.as_bytes().to_vec()),
    });
    let headers = smallvec::smallvec![
        (headers::CONTENT_TYPE, Cow::Borrowed(format.content_type())),
        (headers::SCHEMA, Cow::Borrowed(proto::EVENT_SCHEMA)),
        (headers::ACTOR, Cow::Borrowed(event.actor.map_or("", |a| a.as_str()))),
        (headers::ACTION, Cow::Borrowed(event.action.map_or("", |a| a.as_str()))),
    ];
    let value = match format {
        Format::Protobuf => proto::to_vec(event, input_len + ENCODE_MARGIN),
        Format::Json => json::to_vec(event),
    };
    Output { topic: Cow::Owned(topic), key, value: Cow::Owned(value), headers }
}

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
    pub severity: crate::rules::Severity,
    /// A shadow rule's alert goes to the shadow alerts topic (see [`Alerted::topic`]).
    pub mode: crate::rules::RuleMode,
}

impl Alerted {
    /// Its output record: to its tenant's alerts topic, keyed by its session (its tenant for
    /// a tenant-scoped rule).
    pub fn output(&self) -> Output<'_> {
        let headers = smallvec::smallvec![
            (headers::CONTENT_TYPE, Cow::Borrowed(self.format.content_type())),
            (headers::SCHEMA, Cow::Borrowed(crate::rules::alert::ALERT_SCHEMA)),
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
    pub fn alert(&self) -> Option<crate::rules::Alert> {
        use prost::Message as _;
        let message = proto::pb::Alert::decode(self.proto()).ok()?;
        crate::rules::Alert::from_proto(message)
    }
}

/// How alerts become output records: to their tenant's topic (rendered from the template; a
/// shadow rule's to the shadow template's), keyed by their session (their tenant for a
/// tenant-scoped rule), encoded as the format says, stamped with the configuration in force
/// and the tenant's privacy mark ([`stamp::AlertStamp`]).
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
    pub fn record(&self, alert: &crate::rules::AlertView<'_>) -> Alerted {
        let stamp = self.stamp.load();
        let mark = self.privacy.mark(alert.tenant_id);
        let stamp = (!stamp.rules_version.is_empty()).then(|| stamp::AlertStamp {
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
    pub fn record_stamped(
        &self,
        alert: &crate::rules::AlertView<'_>,
        stamp: Option<&stamp::AlertStamp<'_>>,
    ) -> Alerted {
        let template = match alert.mode {
            crate::rules::RuleMode::Live => &self.template,
            crate::rules::RuleMode::Shadow => &self.shadow_template,
        };
        let tail = stamp.map(stamp::AlertStamp::to_proto).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::*;
    use crate::config::Config;
    use crate::model::{ReasonCatalog, Source};
    use crate::pipeline::Pipeline;

    #[test]
    fn event_records_are_routed_keyed_and_labelled() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let value = br#"{"deliveryExecutionId":"review#u#d#h#Acme-1","incidentTime":1767261300,"actor":"proctor","action":"terminate"}"#;
        let source = Source { topic: Arc::from("raw"), partition: 0, offset: 0 };
        let event = pipeline.enrich(value, &source, 1_767_261_400_000).unwrap();
        let template = TopicTemplate::parse("acs.{tenant}.events").unwrap();
        for (format, content_type) in [(Format::Protobuf, "application/x-protobuf"), (Format::Json, "application/json")]
        {
            let record = event_record(&event, &template, format, value.len());
            assert_eq!(record.topic, "acs.Acme-1.events");
            assert_eq!(
                record.key.as_deref(),
                Some(&b"review#u#d#h#Acme-1"[..]),
                "key: the delivery execution id as sent"
            );
            let headers: Vec<(&str, &str)> = record.headers.iter().map(|(n, v)| (*n, v.as_ref())).collect();
            assert_eq!(
                headers,
                [
                    ("content-type", content_type),
                    ("acs-schema", "acs.v1.EnrichedEvent"),
                    ("acs-actor", "proctor"),
                    ("acs-action", "terminate")
                ]
            );
            match format {
                Format::Protobuf => {
                    let decoded = proto::pb::EnrichedEvent::decode(&*record.value).unwrap();
                    assert_eq!(decoded.action(), proto::pb::Action::Terminate);
                }
                Format::Json => {
                    let decoded: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
                    assert_eq!(decoded["action"], "terminate");
                }
            }
        }
    }

    #[test]
    fn alert_records_are_routed_keyed_and_labelled_in_both_formats() {
        let evidence = vec![crate::rules::alert::evidence_sample("m1", 1_767_261_000_000, 41)];
        let alert = |delivery: Option<&str>| crate::rules::Alert {
            alert_id: "0b6c1f3e-8f4c-8d2a-9a53-6f1d5b2c7e90".into(),
            rule_id: Arc::from("repeated-pauses"),
            severity: crate::rules::Severity::Medium,
            tenant_id: Arc::from("acme"),
            delivery_execution_id: delivery.map(str::to_owned),
            test_taker: None,
            title: Arc::from("Repeated pauses"),
            summary: "1 pause".into(),
            count: 1,
            window_start: 1,
            window_end: 1,
            fired_at: 1,
            evidence: evidence.clone(),
            mode: crate::rules::RuleMode::Live,
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
                assert_eq!((alerted.rule(), alerted.severity), ("repeated-pauses", crate::rules::Severity::Medium));
            }
        }
    }
}

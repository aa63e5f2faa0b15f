//! Encode: every output record, its topic, key, headers and value (protobuf or JSON).
//!
//! One encoder per record type, each written from the facts a layer before it decided:
//!
//! - enriched event ([`event_record`]): `acs.v1.EnrichedEvent` in [`proto`], the JSON
//!   contract in [`json`];
//! - alert ([`alert`]: [`AlertEncoder`] → [`Alerted`]): `acs.v1.Alert` and its JSON contract;
//! - incident ([`incident`]): `acs.v1.Incident` and its JSON contract;
//! - dead letter ([`dead_letter`]): the rejected record's key and value, unchanged, with why.
//!
//! Shared by them: topic names ([`route`]), the provenance stamped on alerts ([`stamp`]).

pub mod alert;
pub mod dead_letter;
pub mod incident;
pub mod json;
pub mod proto;
pub mod route;
pub mod stamp;

use std::borrow::Cow;

use serde::Deserialize;

pub use alert::{ALERT_SCHEMA, AlertEncoder, Alerted, Alerts};
pub use dead_letter::DeadLetter;
pub use route::TopicTemplate;

use crate::model::Event;

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
}

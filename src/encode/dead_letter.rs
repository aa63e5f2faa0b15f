//! Dead letters: the ORIGINAL key and value, unchanged, with the error in headers
//! (Kafka) or beside the value (`process` JSON lines).

use std::borrow::Cow;

use base64::Engine;
use prost::Message;
use serde::Serialize;

use super::Output;
use super::proto::pb;
use crate::decode::{ErrorCode, Rejection};
use crate::model::Source;

/// Header names of a dead-letter record.
pub mod headers {
    pub const CODE: &str = "acs.error.code";
    pub const DETAIL: &str = "acs.error.detail";
    pub const SOURCE_TOPIC: &str = "acs.source.topic";
    pub const SOURCE_PARTITION: &str = "acs.source.partition";
    pub const SOURCE_OFFSET: &str = "acs.source.offset";
    pub const PROCESSOR_VERSION: &str = "acs.processor.version";
    /// The rules and catalog versions in force (absent on the Kafka runtime's own
    /// `produce_failed`).
    pub const RULES_VERSION: &str = "acs.processor.rules-version";
    pub const CATALOG_VERSION: &str = "acs.processor.catalog-version";
    /// Only on a dead letter sent without the original value (the full one was refused as
    /// too large, or its tenant's personal data is protected and
    /// `privacy.dead_letter_value = "omit"`): why. The value is still in the input at the
    /// source offset.
    pub const VALUE_OMITTED: &str = "acs.value.omitted";
    /// Only on a dead letter of a record whose outputs the brokers refused for good
    /// (`produce_failed`): which outputs, comma-separated (`event`, `alert`, `tenant_topic`,
    /// `repartition`), once per input record.
    pub const OUTPUT: &str = "acs.error.output";
}

/// A refused record, with where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub rejection: Rejection,
    pub source: Source,
    /// Epoch milliseconds at which the record was processed.
    pub processed_at: i64,
}

impl DeadLetter {
    /// The Kafka record: original key and value, error and lineage in headers (without the
    /// value when [`Rejection::omit_value`] says why).
    pub fn to_record<'a>(&self, topic: &str, key: Option<&'a [u8]>, value: &'a [u8]) -> Output<'a> {
        let mut headers: super::Headers = smallvec::smallvec![
            (headers::CODE, Cow::Borrowed(self.rejection.code.as_str())),
            (headers::DETAIL, Cow::Owned(self.rejection.detail.clone())),
            (headers::SOURCE_TOPIC, Cow::Owned(self.source.topic.to_string())),
            (headers::SOURCE_PARTITION, Cow::Owned(self.source.partition.to_string())),
            (headers::SOURCE_OFFSET, Cow::Owned(self.source.offset.to_string())),
            (headers::PROCESSOR_VERSION, Cow::Borrowed(crate::VERSION)),
        ];
        if let Some(stamp) = &self.rejection.stamp {
            headers.push((headers::RULES_VERSION, Cow::Owned(stamp.rules_version.to_string())));
            headers.push((headers::CATALOG_VERSION, Cow::Owned(stamp.catalog_version.to_string())));
        }
        // The key goes with the value: upstream keys by delivery execution id, which holds the
        // user id.
        let (key, value) = match self.rejection.omit_value {
            Some(why) => {
                headers.push((headers::VALUE_OMITTED, Cow::Borrowed(why)));
                (None, &[][..])
            }
            None => (key, value),
        };
        Output {
            topic: Cow::Owned(topic.to_owned()),
            key: key.map(Cow::Borrowed),
            value: Cow::Borrowed(value),
            headers,
        }
    }

    /// The dead letter without the original value, for when the full one was refused as too
    /// large: the headers still say what was refused, why, and where it is in the input.
    pub fn to_record_without_value<'a>(&self, topic: &str, key: Option<&'a [u8]>, why: &str) -> Output<'a> {
        let mut record = self.to_record(topic, key, &[]);
        if self.rejection.omit_value.is_none() {
            record.headers.push((headers::VALUE_OMITTED, Cow::Owned(why.to_owned())));
        }
        record
    }

    /// The error as its protobuf description (`acs.v1.DeadLetterError`).
    pub fn to_message(&self) -> pb::DeadLetterError {
        pb::DeadLetterError {
            code: error_code(self.rejection.code) as i32,
            code_name: self.rejection.code.as_str().to_owned(),
            detail: self.rejection.detail.clone(),
            source_topic: self.source.topic.to_string(),
            source_partition: self.source.partition,
            source_offset: self.source.offset,
            processor_version: crate::VERSION.to_owned(),
            rules_version: self.rejection.stamp.as_ref().map(|s| s.rules_version.to_string()).unwrap_or_default(),
            catalog_version: self.rejection.stamp.as_ref().map(|s| s.catalog_version.to_string()).unwrap_or_default(),
            value_omitted: self.rejection.omit_value.unwrap_or_default().to_owned(),
        }
    }

    /// The error description as protobuf bytes.
    pub fn encode_error(&self) -> Vec<u8> {
        self.to_message().encode_to_vec()
    }

    /// One `process` output line: `{"error": {...}, "value": "<original>", ...}`. A value
    /// that is not UTF-8 is given decoded lossily in `value` and exactly in `valueBase64`; a
    /// value withheld ([`Rejection::omit_value`]) is `null`, with `valueOmitted` saying why.
    pub fn to_json_line(&self, key: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Line<'a> {
            error: ErrorJson<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            key: Option<Cow<'a, str>>,
            value: Option<Cow<'a, str>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            value_base64: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            value_omitted: Option<&'a str>,
            source: &'a Source,
            processor: Processor<'a>,
        }
        #[derive(Serialize)]
        struct ErrorJson<'a> {
            code: ErrorCode,
            detail: &'a str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Processor<'a> {
            version: &'static str,
            processed_at: i64,
            #[serde(skip_serializing_if = "Option::is_none")]
            rules_version: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            catalog_version: Option<&'a str>,
        }
        let omitted = self.rejection.omit_value;
        let text = String::from_utf8_lossy(value);
        let exact = matches!(text, Cow::Borrowed(_));
        let stamp = self.rejection.stamp.as_deref();
        let line = Line {
            error: ErrorJson { code: self.rejection.code, detail: &self.rejection.detail },
            key: key.filter(|_| omitted.is_none()).map(String::from_utf8_lossy),
            value: omitted.is_none().then_some(text),
            value_base64: (!exact && omitted.is_none())
                .then(|| base64::engine::general_purpose::STANDARD.encode(value)),
            value_omitted: omitted,
            source: &self.source,
            processor: Processor {
                version: crate::VERSION,
                processed_at: self.processed_at,
                rules_version: stamp.map(|s| &*s.rules_version),
                catalog_version: stamp.map(|s| &*s.catalog_version),
            },
        };
        serde_json::to_vec(&line).expect("a dead letter always serializes to JSON")
    }
}

fn error_code(code: ErrorCode) -> pb::ErrorCode {
    match code {
        ErrorCode::InvalidUtf8 => pb::ErrorCode::InvalidUtf8,
        ErrorCode::TooLarge => pb::ErrorCode::TooLarge,
        ErrorCode::MalformedJson => pb::ErrorCode::MalformedJson,
        ErrorCode::NotAnObject => pb::ErrorCode::NotAnObject,
        ErrorCode::MissingDeliveryExecutionId => pb::ErrorCode::MissingDeliveryExecutionId,
        ErrorCode::InvalidDeliveryExecutionId => pb::ErrorCode::InvalidDeliveryExecutionId,
        ErrorCode::MissingTenant => pb::ErrorCode::MissingTenant,
        ErrorCode::InvalidTenant => pb::ErrorCode::InvalidTenant,
        ErrorCode::TenantMismatch => pb::ErrorCode::TenantMismatch,
        ErrorCode::UnknownTenant => pb::ErrorCode::UnknownTenant,
        ErrorCode::InvalidTime => pb::ErrorCode::InvalidTime,
        ErrorCode::InvalidField => pb::ErrorCode::InvalidField,
        ErrorCode::ProduceFailed => pb::ErrorCode::ProduceFailed,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn dead_letter() -> DeadLetter {
        DeadLetter {
            rejection: Rejection::new(ErrorCode::MalformedJson, "EOF while parsing"),
            source: Source { topic: Arc::from("raw"), partition: 3, offset: 42 },
            processed_at: 1,
        }
    }

    #[test]
    fn kafka_dead_letters_keep_the_original_bytes_and_carry_every_header() {
        let record = dead_letter().to_record("acs.dlq", Some(b"k"), b"{\"a\":");
        assert_eq!(
            (&*record.topic, record.key.as_deref(), &*record.value),
            ("acs.dlq", Some(&b"k"[..]), &b"{\"a\":"[..])
        );
        let names: Vec<&str> = record.headers.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "acs.error.code",
                "acs.error.detail",
                "acs.source.topic",
                "acs.source.partition",
                "acs.source.offset",
                "acs.processor.version"
            ]
        );
        assert_eq!(record.headers[0].1, "malformed_json");
        assert_eq!(record.headers[4].1, "42");
    }

    #[test]
    fn a_dead_letter_without_value_says_why_and_keeps_the_lineage() {
        let record = dead_letter().to_record_without_value("acs.dlq", Some(b"k"), "too large");
        assert!(record.value.is_empty());
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.headers.len(), 7);
        assert_eq!(record.headers[4], ("acs.source.offset", Cow::Borrowed("42")));
        assert_eq!(record.headers[6], ("acs.value.omitted", Cow::Borrowed("too large")));
    }

    #[test]
    fn json_lines_keep_exact_bytes_when_not_utf8() {
        let line: serde_json::Value = serde_json::from_slice(&dead_letter().to_json_line(None, b"ok")).unwrap();
        assert_eq!(line["error"]["code"], "malformed_json");
        assert_eq!(line["value"], "ok");
        assert!(line.get("valueBase64").is_none());
        let bytes = [b'{', 0xff, 0xfe, b'}'];
        let line: serde_json::Value = serde_json::from_slice(&dead_letter().to_json_line(None, &bytes)).unwrap();
        assert_eq!(line["value"], "{\u{fffd}\u{fffd}}");
        let exact = base64::engine::general_purpose::STANDARD.decode(line["valueBase64"].as_str().unwrap()).unwrap();
        assert_eq!(exact, bytes);
    }

    #[test]
    fn the_error_description_round_trips_through_protobuf() {
        let bytes = dead_letter().encode_error();
        let decoded = pb::DeadLetterError::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.code(), pb::ErrorCode::MalformedJson);
        assert_eq!((decoded.code_name.as_str(), decoded.source_offset), ("malformed_json", 42));
    }
}

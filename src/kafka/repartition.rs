//! Input not keyed by session, re-keyed through the repartition topic (DESIGN.md §5).
//!
//! Sessions are processed in order only when all of a session's records are in one
//! partition. When upstream keys input by something else (`input.keyed_by = "other"`), the
//! runtime consumes the input topics and the repartition topic in the same group: a record of
//! an input topic is only re-keyed (its delivery execution id read by the core) and produced
//! to the repartition topic, where the producer's partitioner sends every record of a session
//! to the same partition; records of the repartition topic are then processed like keyed
//! input. Its session state (and changelog partition) is that of its repartition partition.
//!
//! The repartition record keeps the upstream value, and carries where upstream published it
//! in headers (the dead letters' `acs.source.*`, plus `acs.source.key`, the upstream key when
//! there was one), so that outputs and dead letters name the upstream record and keep its key.

use std::sync::Arc;

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::encode::dead_letter::headers::{SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
use crate::model::Source;

/// Header of a repartition record holding the upstream key (absent: upstream had none).
pub const SOURCE_KEY: &str = "acs.source.key";

/// The headers of the repartition record of the upstream record at `source`, keyed `key`.
pub fn headers(source: &Source, key: Option<&[u8]>) -> OwnedHeaders {
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: SOURCE_TOPIC, value: Some(source.topic.as_bytes()) })
        .insert(Header { key: SOURCE_PARTITION, value: Some(source.partition.to_string().as_bytes()) })
        .insert(Header { key: SOURCE_OFFSET, value: Some(source.offset.to_string().as_bytes()) });
    match key {
        Some(key) => headers.insert(Header { key: SOURCE_KEY, value: Some(key) }),
        None => headers,
    }
}

/// Header of a tenant-topic record: the ids of the tenant-scoped rules the event matched,
/// comma-separated (rule ids have no comma).
pub const RULES: &str = "acs.rules";

/// The headers of the tenant-topic record of the upstream record at `source`, keyed `key`,
/// whose event matched the tenant-scoped rules `rules` (see `Processor::tenant_topic`).
pub fn tenant_headers(source: &Source, key: Option<&[u8]>, rules: &[Arc<str>]) -> OwnedHeaders {
    let joined = rules.iter().map(|rule| &**rule).collect::<Vec<&str>>().join(",");
    headers(source, key).insert(Header { key: RULES, value: Some(joined.as_bytes()) })
}

/// The rule ids of a tenant-topic record (empty when its headers name none).
pub fn matched_rules<H: Headers>(headers: Option<&H>) -> Vec<&str> {
    let Some(headers) = headers else { return Vec::new() };
    headers
        .iter()
        .filter(|header| header.key == RULES)
        .filter_map(|header| header.value.and_then(|v| std::str::from_utf8(v).ok()))
        .flat_map(|joined| joined.split(',').filter(|id| !id.is_empty()))
        .collect()
}

/// Where upstream published a repartition record, and its upstream key, from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
}

impl Upstream<'_> {
    /// The upstream position as a source, the topic name taken from `intern` (shared).
    pub fn source(&self, intern: impl FnOnce(&str) -> Arc<str>) -> Source {
        Source { topic: intern(self.topic), partition: self.partition, offset: self.offset }
    }
}

/// Reads the upstream position of a repartition record; `None` when its headers do not say
/// (a record some other producer wrote there): it is then processed as published there.
pub fn upstream<H: Headers>(headers: Option<&H>) -> Option<Upstream<'_>> {
    let headers = headers?;
    let (mut topic, mut partition, mut offset, mut key) = (None, None, None, None);
    for header in headers.iter() {
        let text = || header.value.and_then(|v| std::str::from_utf8(v).ok());
        match header.key {
            SOURCE_TOPIC => topic = text(),
            SOURCE_PARTITION => partition = text().and_then(|t| t.parse().ok()),
            SOURCE_OFFSET => offset = text().and_then(|t| t.parse().ok()),
            SOURCE_KEY => key = header.value,
            _ => {}
        }
    }
    Some(Upstream { topic: topic?, partition: partition?, offset: offset?, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source { topic: Arc::from("acs.raw"), partition: 4, offset: 1_234_567 }
    }

    #[test]
    fn the_upstream_position_and_key_round_trip() {
        let headers = headers(&source(), Some(b"test-taker-7"));
        let upstream = upstream(Some(&headers)).expect("complete headers");
        assert_eq!(
            upstream,
            Upstream { topic: "acs.raw", partition: 4, offset: 1_234_567, key: Some(b"test-taker-7") }
        );
        assert_eq!(upstream.source(|name| Arc::from(name)), source());
        // No upstream key, and an empty one, stay apart.
        assert_eq!(upstream_key(&headers_for(None)), None);
        assert_eq!(upstream_key(&headers_for(Some(b""))), Some(&b""[..]));
    }

    fn headers_for(key: Option<&[u8]>) -> OwnedHeaders {
        headers(&source(), key)
    }

    fn upstream_key(headers: &OwnedHeaders) -> Option<&[u8]> {
        upstream(Some(headers)).expect("complete headers").key
    }

    #[test]
    fn tenant_records_carry_their_rules_and_lineage() {
        let rules: Vec<Arc<str>> = vec![Arc::from("technical-burst"), Arc::from("other")];
        let headers = tenant_headers(&source(), Some(b"k"), &rules);
        assert_eq!(matched_rules(Some(&headers)), ["technical-burst", "other"]);
        assert_eq!(upstream(Some(&headers)).unwrap().source(|name| Arc::from(name)), source());
        assert!(matched_rules(Some(&headers_for(None))).is_empty());
        assert!(matched_rules::<OwnedHeaders>(None).is_empty());
    }

    #[test]
    fn records_without_a_complete_upstream_position_are_their_own_source() {
        assert_eq!(upstream::<OwnedHeaders>(None), None);
        let partial = OwnedHeaders::new()
            .insert(Header { key: SOURCE_TOPIC, value: Some("acs.raw") })
            .insert(Header { key: SOURCE_PARTITION, value: Some("not a number") })
            .insert(Header { key: SOURCE_OFFSET, value: Some("3") });
        assert_eq!(upstream(Some(&partial)), None);
    }
}

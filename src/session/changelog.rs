//! The session changelog's records: one session's state as `acs.v1.SessionState` protobuf
//! (proto/acs/v1/session.proto), and back.
//!
//! The key is `{input topic}/{session id}` (the session id is the delivery execution id):
//! changelog partition N holds the sessions of partition N of every input topic (a regex
//! subscription reads several), so the same session id in two input topics must be two keys,
//! or compaction would keep only one of them and a tombstone (which has no value to say
//! whose it is) would forget both. A topic name cannot contain `/`: the key splits at its
//! first one.

use prost::Message;

use super::SessionState;
use super::store::RecentIds;
use crate::encode::proto::pb;
use crate::model::Status;

/// A changelog record that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("not an acs.v1.SessionState: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The key does not name an input topic (the session id is not repeated here: it is
    /// personal data).
    #[error("a key without its input topic (expected `{{input topic}}/{{session id}}`)")]
    Key,
}

/// The changelog key of the session `id` of the input topic `topic`.
pub fn key(topic: &str, id: &str) -> String {
    let mut key = String::with_capacity(topic.len() + 1 + id.len());
    key.push_str(topic);
    key.push('/');
    key.push_str(id);
    key
}

/// The input topic and the session id of a changelog key.
pub fn split_key(key: &str) -> Result<(&str, &str), ChangelogError> {
    match key.split_once('/') {
        Some((topic, id)) if !topic.is_empty() => Ok((topic, id)),
        _ => Err(ChangelogError::Key),
    }
}

/// The input partition a session's events are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPartition {
    pub topic: String,
    pub partition: i32,
}

/// The changelog value of one session.
pub fn encode(state: &SessionState, input: &InputPartition) -> Vec<u8> {
    pb::SessionState {
        input_topic: input.topic.clone(),
        input_partition: input.partition,
        tenant_id: state.tenant_id.to_string(),
        status: state.status.map_or("", Status::as_str).to_owned(),
        sequence: state.sequence,
        pause_count: state.pause_count,
        security_flag_count: state.security_flag_count,
        extra_time_minutes: state.extra_time_minutes,
        first_seen: state.first_seen,
        last_seen: state.last_seen,
        touched_at: state.touched_at,
        finished_at: state.finished_at,
        applied_offset: state.applied_offset,
        recent_ids: state.recent_ids.as_raw().to_vec(),
    }
    .encode_to_vec()
}

/// A session's state, and the input partition it belongs to, from its changelog value.
pub fn decode(value: &[u8]) -> Result<(SessionState, InputPartition), ChangelogError> {
    let message = pb::SessionState::decode(value)?;
    let status = match message.status.as_str() {
        "" => None,
        spelled => Some(Status::parse(spelled).value),
    };
    let state = SessionState {
        tenant_id: message.tenant_id.into(),
        status,
        sequence: message.sequence,
        pause_count: message.pause_count,
        security_flag_count: message.security_flag_count,
        extra_time_minutes: message.extra_time_minutes,
        first_seen: message.first_seen,
        last_seen: message.last_seen,
        touched_at: message.touched_at,
        finished_at: message.finished_at,
        applied_offset: message.applied_offset,
        recent_ids: RecentIds::from_raw(message.recent_ids),
        dirty: false,
    };
    Ok((state, InputPartition { topic: message.input_topic, partition: message.input_partition }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SessionState {
        SessionState {
            tenant_id: "acme".into(),
            status: Some(Status::Suspended),
            sequence: 7,
            pause_count: 2,
            security_flag_count: 1,
            extra_time_minutes: 22.5,
            first_seen: 1_767_261_000_000,
            last_seen: 1_767_261_060_000,
            touched_at: 1_767_261_400_000,
            finished_at: None,
            applied_offset: 41,
            recent_ids: RecentIds::from_raw(vec![u64::MAX, 3 << 16 | 7]),
            dirty: false,
        }
    }

    #[test]
    fn a_session_round_trips() {
        let input = InputPartition { topic: "acs.raw".into(), partition: 3 };
        for state in [state(), SessionState { status: None, finished_at: Some(5), ..state() }] {
            let (back, from) = decode(&encode(&state, &input)).unwrap();
            assert_eq!(back, state);
            assert_eq!(from, input);
        }
    }

    #[test]
    fn a_key_names_the_input_topic_then_the_session() {
        let key = key("acs.raw", "dIresu#d1/x#h1#acme");
        assert_eq!(key, "acs.raw/dIresu#d1/x#h1#acme");
        // Split at the first '/': a topic name has none, a session id may.
        assert_eq!(split_key(&key).unwrap(), ("acs.raw", "dIresu#d1/x#h1#acme"));
        for bare in ["dIresu#d1#h1#acme", "/dIresu#d1#h1#acme", ""] {
            assert!(matches!(split_key(bare), Err(ChangelogError::Key)), "{bare:?}");
        }
    }

    #[test]
    fn unreadable_values_are_refused() {
        assert!(matches!(decode(b"\xff\xff\xff"), Err(ChangelogError::Decode(_))));
    }
}

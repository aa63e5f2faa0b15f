//! The session changelog's records: one session's state as `acs.v1.SessionState` protobuf
//! (proto/acs/v1/session.proto), and back.
//!
//! The key is `{input topic}/{session id}` (the session id is the delivery execution id):
//! changelog partition N holds the sessions of partition N of every input topic (a regex
//! subscription reads several), so the same session id in two input topics must be two keys,
//! or compaction would keep only one of them and a tombstone (which has no value to say
//! whose it is) would forget both. A topic name cannot contain `/`: the key splits at its
//! first one.

use std::sync::Arc;

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
    // A byte search: `str::split_once` costs a `memcmp` call per match, and a restore splits
    // up to millions of keys.
    match key.bytes().position(|byte| byte == b'/') {
        Some(at) if at > 0 => Ok((&key[..at], &key[at + 1..])),
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

/// Reads changelog values back into session states, reusing one message's buffers from value
/// to value: a restore decodes up to millions of them in a row.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    message: pb::SessionState,
}

impl Decoder {
    /// The session's state in `value` if it belongs to the input partition `topic`/`partition`
    /// (`None`: another's), its tenant id given by `tenant` (shared, not allocated per session).
    pub fn decode(
        &mut self,
        value: &[u8],
        topic: &str,
        partition: i32,
        tenant: impl FnOnce(&str) -> Arc<str>,
    ) -> Result<Option<SessionState>, ChangelogError> {
        let message = &mut self.message;
        // Cleared, not dropped: the strings and the ids' buffer keep their capacity.
        message.clear();
        message.merge(value)?;
        if message.input_topic != topic || message.input_partition != partition {
            return Ok(None);
        }
        let status = match message.status.as_str() {
            "" => None,
            spelled => Some(Status::parse(spelled).value),
        };
        Ok(Some(SessionState {
            tenant_id: tenant(&message.tenant_id),
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
            // A copy of exactly the ids' length: the state's own buffer.
            recent_ids: RecentIds::from_raw(message.recent_ids.clone()),
            rules: None,
            dirty: false,
        }))
    }
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
            rules: None,
            dirty: false,
        }
    }

    #[test]
    fn a_session_round_trips() {
        let input = InputPartition { topic: "acs.raw".into(), partition: 3 };
        let mut decoder = Decoder::default();
        let shared: Arc<str> = Arc::from("acme");
        let tenant = |tenant: &str| {
            assert_eq!(tenant, "acme");
            shared.clone()
        };
        // The second value has fewer fields set: nothing of the first one stays.
        let full = SessionState { finished_at: Some(5), ..state() };
        for state in [full, SessionState { status: None, recent_ids: RecentIds::default(), ..state() }] {
            let value = encode(&state, &input);
            let back = decoder.decode(&value, "acs.raw", 3, tenant).unwrap();
            assert_eq!(back.as_ref(), Some(&state));
            assert!(Arc::ptr_eq(&back.unwrap().tenant_id, &shared), "the shared tenant id");
            // Another input partition's: not decoded into a state.
            assert_eq!(decoder.decode(&value, "acs.raw", 4, tenant).unwrap(), None);
            assert_eq!(decoder.decode(&value, "acs.raw.b", 3, tenant).unwrap(), None);
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
        let decoded = Decoder::default().decode(b"\xff\xff\xff", "acs.raw", 0, |tenant| Arc::from(tenant));
        assert!(matches!(decoded, Err(ChangelogError::Decode(_))));
    }
}

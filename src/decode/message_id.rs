//! Deterministic message ids for records that carry none.
//!
//! The id is a UUID (version 8, "custom") made from the 128-bit XXH3 hash of the event's
//! normalized content: the same event re-delivered — byte for byte, or re-serialized with
//! other key order or another timestamp spelling — keeps its id, so downstream can
//! deduplicate. XXH3 is a fixed, portable algorithm: ids are stable across machines and
//! releases. It is not a cryptographic hash; ids are for deduplication, not for security.

use xxhash_rust::xxh3::xxh3_128;

use crate::model::{Event, ReasonCode};

/// Seed that keeps these ids apart from any other XXH3 use.
const SEED_TAG: &[u8] = b"acs-stream/message-id/v1";

/// The id for an event whose `message_id` is empty.
pub fn generate(event: &Event<'_>) -> String {
    // Each field as (number, length, bytes), hashed in one call.
    let mut content = Vec::with_capacity(512);
    let mut put = |field: u8, bytes: &[u8]| {
        content.push(field);
        content.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        content.extend_from_slice(bytes);
    };
    put(0, SEED_TAG);
    put(1, event.tenant_id.as_bytes());
    put(2, event.delivery_execution_id.as_bytes());
    put(3, raw_or(event.actor_raw.as_deref(), event.actor.map(|a| a.as_str())).as_bytes());
    put(4, raw_or(event.action_raw.as_deref(), event.action.map(|a| a.as_str())).as_bytes());
    put(5, raw_or(event.action_status_raw.as_deref(), event.action_status.map(|a| a.as_str())).as_bytes());
    put(6, raw_or(event.status_raw.as_deref(), event.status.map(|s| s.as_str())).as_bytes());
    put(7, event.acs_status.as_deref().unwrap_or_default().as_bytes());
    match &event.reason_code {
        ReasonCode::None => put(8, b""),
        ReasonCode::Numeric(code) => put(8, &code.to_le_bytes()),
        ReasonCode::Raw(raw) => put(9, raw.as_bytes()),
    }
    put(10, event.reason_message.as_deref().unwrap_or_default().as_bytes());
    put(11, &event.incident_time.to_le_bytes());
    put(12, event.item_id.as_deref().unwrap_or_default().as_bytes());
    put(13, event.actor_id.as_deref().unwrap_or_default().as_bytes());
    put(14, event.test_taker.as_deref().unwrap_or_default().as_bytes());
    put(15, &event.extra_time.map_or(u64::MAX, f64::to_bits).to_le_bytes());
    put(16, &event.extra_time_total.map_or(u64::MAX, f64::to_bits).to_le_bytes());
    put(17, event.ip.as_deref().unwrap_or_default().as_bytes());
    put(18, event.user_agent.as_deref().unwrap_or_default().as_bytes());
    put(19, event.shape.as_str().as_bytes());
    let hash = xxh3_128(&content);
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v8(hash.to_be_bytes()).hyphenated().encode_lower(&mut text).to_owned()
}

fn raw_or<'a>(raw: Option<&'a str>, canonical: Option<&'static str>) -> &'a str {
    raw.or(canonical).unwrap_or_default()
}

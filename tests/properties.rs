//! Property tests: decoding never panics and every input yields exactly one outcome.

use std::sync::Arc;

use acs_stream::config::Config;
use acs_stream::encode::Format;
use acs_stream::encode::proto::pb;
use acs_stream::model::{ReasonCatalog, Source};
use acs_stream::pipeline::{Outcome, Pipeline, Record};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use prost::Message;

const NOW: i64 = 1_767_261_400_000;

fn pipeline(format: Format) -> Pipeline {
    Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).expect("defaults are valid").with_format(format)
}

fn source() -> Source {
    Source { topic: Arc::from("raw"), partition: 0, offset: 0 }
}

/// One record through a fresh session state.
fn process_one<'a>(pipeline: &Pipeline, record: &Record<'a>) -> Outcome<'a> {
    pipeline.process(record, &mut pipeline.sessions(), NOW)
}

/// Checks the one-outcome invariant and that each output is well formed.
fn check(pipeline: &Pipeline, value: &[u8], format: Format) {
    let record = Record::new(Some(b"key"), value, source());
    match process_one(pipeline, &record) {
        Outcome::Event { output, .. } => {
            assert!(output.topic.starts_with("acs.") && output.topic.ends_with(".events"), "{}", output.topic);
            match format {
                Format::Json => {
                    let event: serde_json::Value = serde_json::from_slice(&output.value).expect("events are JSON");
                    assert!(event["tenantId"].is_string() && event["incidentTime"].is_i64());
                }
                Format::Protobuf => {
                    let event = pb::EnrichedEvent::decode(&*output.value).expect("events are protobuf");
                    assert_eq!(output.key.as_deref(), Some(event.delivery_execution_id.as_bytes()));
                }
            }
        }
        Outcome::DeadLetter(dead) => {
            assert!(!dead.rejection.detail.is_empty());
            let line: serde_json::Value = serde_json::from_slice(&dead.to_json_line(None, value)).expect("JSON line");
            assert_eq!(line["error"]["code"], dead.rejection.code.as_str());
            let record = dead.to_record("acs.dlq", Some(b"key"), value);
            assert_eq!(&*record.value, value, "dead letters keep the original bytes");
        }
    }
}

/// Arbitrary JSON values, biased towards the keys and shapes the decoder looks at.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let keys = prop::sample::select(vec![
        "deliveryExecutionId",
        "tenantId",
        "incidentTime",
        "timestamp",
        "actor",
        "action",
        "actionStatus",
        "status",
        "reasonCode",
        "reasonMessage",
        "extraTime",
        "last_update_date",
        "itemId",
        "resourceLink",
        "messageId",
        "_id",
        "actorIdentity",
        "deliveryExecution",
        "reason",
        "acsControl",
        "id",
        "role",
        "type",
        "code",
        "message",
        "incident_time",
        "incidentTime",
        "extra_time",
        "reason_code",
        "user",
        "sub",
        "attempt_number",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        (1_700_000_000i64..1_800_000_000).prop_map(|t| json!(t)),
        (1_700_000_000_000i64..1_800_000_000_000).prop_map(|t| json!(t)),
        "[a-z#.]{0,12}".prop_map(Value::String),
        "(u#d#h#)?[a-zA-Z0-9 ./_-]{0,8}".prop_map(Value::String),
        prop::sample::select(vec![
            "pause",
            "flag",
            "log",
            "test-taker",
            "proctor",
            "succeeded",
            "interacting",
            "paused",
            "20060",
            "N52",
            "2026-01-01T09:55:00Z",
            "[Pause On Blur] x",
            "[Disable Commands] `copy`",
            "<a><b>1</b></a>",
            "{\"a\":1}",
            "[deliver-fe] e [item-1][x]",
            "[Lockdown Browser] breach. Device info: {\"a\":[1]}. Process list: a, b.",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Valid records of each shape, with up to four fields replaced by arbitrary values:
/// exercises every check past the JSON stage.
fn near_valid_record() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let bases = vec![
        json!({"deliveryExecutionId": "u#d#h#acme", "tenantId": "acme", "incidentTime": 1_767_261_300, "actor": "test-taker",
               "action": "pause", "actionStatus": "succeeded", "status": "suspended", "reasonCode": "20060",
               "reasonMessage": "[Pause On Blur] x", "messageId": "m1", "extraTime": null, "itemId": "i1"}),
        json!({"actorIdentity": {"id": "u1", "name": "n", "role": "test-taker", "userAgent": "ua", "ip": "1.2.3.4"},
               "action": {"type": "pause", "status": "succeeded"}, "timestamp": 1_767_261_300_123_i64,
               "deliveryExecution": {"id": "u#d#h#acme", "status": "suspended"}, "resourceLink": {"identifier": "r"},
               "itemId": null, "reason": {"code": 20060, "message": "[Full Screen] x"}}),
        json!({"actorIdentity": {"id": "u1", "role": "deliver-fe"}, "action": {"type": "log", "status": "interacting"},
               "timestamp": 1_767_261_300_123_i64, "deliveryExecution": {"id": "u#d#h#acme", "status": "interacting"},
               "reason": {"code": 40999, "message": "[deliver-fe] <a x=\"1\"><b>2</b></a> [item-1]"}}),
        json!({"deliveryExecutionId": "u#d#h#acme", "status": "paused", "acsControl": {"user": {"sub": "u1"},
               "action": "update", "extra_time": 0.25, "incident_time": "2026-01-01T09:55:00+00:00", "reason_code": "30020"}}),
        json!({"deliveryExecutionId": "u#d#h#acme", "status": "none", "acsControl": {"userIdentifier": "u1",
               "action": "reset", "attemptNumber": 1, "incidentTime": "2026-01-01T09:55:00+00:00", "reasonCode": "999"}}),
    ];
    let paths = prop::sample::select(vec![
        "deliveryExecutionId",
        "tenantId",
        "incidentTime",
        "actor",
        "action",
        "actionStatus",
        "status",
        "reasonCode",
        "reasonMessage",
        "extraTime",
        "messageId",
        "_id",
        "timestamp",
        "actorIdentity",
        "actorIdentity.role",
        "actorIdentity.id",
        "action.type",
        "action.status",
        "deliveryExecution",
        "deliveryExecution.id",
        "deliveryExecution.status",
        "reason",
        "reason.code",
        "reason.message",
        "acsControl",
        "acsControl.action",
        "acsControl.extra_time",
        "acsControl.incident_time",
        "acsControl.incidentTime",
        "acsControl.reason_code",
        "acsControl.user",
        "acsControl.attemptNumber",
        "last_update_date",
        "resourceLink",
    ]);
    (prop::sample::select(bases), prop::collection::vec((paths, json_value()), 0..4)).prop_map(|(mut base, edits)| {
        for (path, value) in edits {
            let (outer, inner) = path.split_once('.').map_or((path, None), |(o, i)| (o, Some(i)));
            match inner {
                None => base[outer] = value,
                Some(inner) if base[outer].is_object() => base[outer][inner] = value,
                Some(_) => {}
            }
        }
        base
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for format in [Format::Protobuf, Format::Json] {
            check(&pipeline(format), &bytes, format);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        for format in [Format::Protobuf, Format::Json] {
            check(&pipeline(format), &bytes, format);
        }
    }

    #[test]
    fn near_valid_records_never_panic(value in near_valid_record()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        for format in [Format::Protobuf, Format::Json] {
            check(&pipeline(format), &bytes, format);
        }
    }

    #[test]
    fn truncated_and_corrupted_records_never_panic(value in near_valid_record(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
        let mut bytes = serde_json::to_vec(&value).unwrap();
        if !bytes.is_empty() {
            let at = cut.index(bytes.len());
            let mut corrupted = bytes.clone();
            corrupted[at] ^= flip;
            check(&pipeline(Format::Protobuf), &corrupted, Format::Protobuf);
            bytes.truncate(at);
        }
        check(&pipeline(Format::Json), &bytes, Format::Json);
    }

    #[test]
    fn the_tenant_topic_is_the_tenant_of_the_record(tenant in "[A-Za-z0-9._-]{1,20}", other in "[a-z]{1,8}") {
        prop_assume!(tenant.bytes().any(|b| b.is_ascii_alphanumeric()));
        let de = format!("u#d#h#{tenant}");
        let value = serde_json::json!({"deliveryExecutionId": de, "incidentTime": 1_767_261_300, "tenantId": tenant});
        let record_bytes = serde_json::to_vec(&value).unwrap();
        let record = Record::new(None, &record_bytes, source());
        match process_one(&pipeline(Format::Json), &record) {
            Outcome::Event { output, .. } => prop_assert_eq!(output.topic, format!("acs.{tenant}.events")),
            Outcome::DeadLetter(dead) => prop_assert!(false, "{:?}", dead.rejection),
        }
        // Another tenant in `tenantId` can never steer the record.
        prop_assume!(other != tenant);
        let spoofed = serde_json::json!({"deliveryExecutionId": de, "incidentTime": 1_767_261_300, "tenantId": other});
        let spoofed_bytes = serde_json::to_vec(&spoofed).unwrap();
        let record = Record::new(None, &spoofed_bytes, source());
        let outcome = process_one(&pipeline(Format::Json), &record);
        prop_assert!(matches!(outcome, Outcome::DeadLetter(ref d) if d.rejection.code.as_str() == "tenant_mismatch"), "{:?}", outcome);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Whatever the delivery execution id looks like (empty segments, extra `#`, prefixes),
    /// a record is routed only to the tenant its own id names, or, for an id that names no
    /// tenant at all, to its `tenantId`; never to a `tenantId` that a broken id could not check.
    #[test]
    fn no_record_is_steered_into_another_tenant(
        segments in prop::collection::vec("[a-z]{0,3}", 1..7),
        tenant_id in prop::option::of("[a-z]{1,3}"),
    ) {
        let id = segments.join("#");
        let mut value = serde_json::json!({"deliveryExecutionId": id, "incidentTime": 1_767_261_300});
        if let Some(tenant) = &tenant_id {
            value["tenantId"] = serde_json::json!(tenant);
        }
        let bytes = serde_json::to_vec(&value).unwrap();
        let record = Record::new(None, &bytes, source());
        if let Outcome::Event { output, .. } = process_one(&pipeline(Format::Json), &record) {
            let routed = output.topic.strip_prefix("acs.").and_then(|t| t.strip_suffix(".events")).unwrap().to_owned();
            if segments.len() >= 4 {
                // TAO form: the id's last segment decides, and `tenantId` must agree.
                prop_assert_eq!(&routed, segments.last().unwrap());
                prop_assert!(segments.iter().all(|s| !s.is_empty()), "a broken id was accepted: {}", id);
            } else {
                prop_assert_eq!(Some(&routed), tenant_id.as_ref(), "an id of another form names no tenant");
            }
        }
    }
}

#[test]
fn generated_records_cover_both_outcomes() {
    // Guard against a generator that only ever produces one kind of outcome.
    let pipeline = pipeline(Format::Json);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut events, mut dead) = (0, 0);
    for _ in 0..2_000 {
        let value = near_valid_record().new_tree(&mut runner).unwrap().current();
        let bytes = serde_json::to_vec(&value).unwrap();
        match pipeline.process(&Record::new(None, &bytes, source()), &mut pipeline.sessions(), NOW) {
            Outcome::Event { .. } => events += 1,
            Outcome::DeadLetter(_) => dead += 1,
        }
    }
    assert!(dead > 0, "no dead letters");
    assert!(events > 200, "too few events: {events} events, {dead} dead letters");
}

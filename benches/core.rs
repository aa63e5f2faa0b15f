//! The core's throughput on one core, against the naive baseline over the same bytes.
//!
//! Corpus: 10,000 deterministic synthetic records (every shape and actor, real message
//! texts, deliver-fe stack traces of about 8 KB, 1% malformed). Reported in one run:
//! - `parse_baseline`: `serde_json::from_slice::<serde_json::Value>` of each record, the
//!   least any processor must do;
//! - `core_protobuf`: the full core (decode, validate, enrich, session, default rules,
//!   route, encode, alerts included) → protobuf;
//! - `core_protobuf_without_rules`: the same with no rule (issue 5's target: the rules cost
//!   at most 20%);
//! - `core_protobuf_stateless`: the core without session state and rules (decode, validate,
//!   enrich, route, encode, as before the session state existed; issue 4's target: the
//!   state costs at most 15%);
//! - `core_protobuf_pseudonymized`: the full core with every tenant in `pseudonymize` mode
//!   (issue 21: keyed HMAC tokens for every personal field, free text searched);
//! - `core_json`: the full core → JSON.
//!
//! Run: `cargo bench --bench core`. Figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use acs_stream::config::Config;
use acs_stream::encode::{Format, TopicTemplate, event_record};
use acs_stream::model::{ReasonCatalog, Source};
use acs_stream::pipeline::Pipeline;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::{corpus, run};

fn core(c: &mut Criterion) {
    let (corpus, now) = corpus();
    let total: usize = corpus.iter().map(Vec::len).sum();
    eprintln!(
        "corpus: {} records, {} bytes, {:.0} bytes/record",
        corpus.len(),
        total,
        total as f64 / corpus.len() as f64
    );
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).expect("defaults are valid");
    let protobuf = pipeline.clone().with_format(Format::Protobuf);
    let json = pipeline.with_format(Format::Json);
    let topic: Arc<str> = Arc::from("acs.raw");

    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(corpus.len() as u64));
    group.bench_function("parse_baseline", |b| {
        b.iter(|| {
            let mut fields = 0;
            for value in &corpus {
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_slice::<serde_json::Value>(black_box(value))
                {
                    fields += map.len();
                }
            }
            fields
        })
    });
    group.bench_function("envelope_parse", |b| {
        b.iter(|| {
            let mut parsed = 0;
            for value in &corpus {
                if let Ok(text) = std::str::from_utf8(black_box(value)) {
                    parsed += usize::from(acs_stream::decode::raw::parse(text).is_ok());
                }
            }
            parsed
        })
    });
    let decoder = Config::defaults().decoder();
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            let mut n = 0;
            for (offset, value) in corpus.iter().enumerate() {
                let source = Source { topic: topic.clone(), partition: 0, offset: offset as i64 };
                n += usize::from(decoder.decode(black_box(value), &source, now).is_ok());
            }
            n
        })
    });
    group.bench_function("decode_enrich", |b| {
        b.iter(|| {
            let mut n = 0;
            for (offset, value) in corpus.iter().enumerate() {
                let source = Source { topic: topic.clone(), partition: 0, offset: offset as i64 };
                n += usize::from(protobuf.enrich(black_box(value), &source, now).is_ok());
            }
            n
        })
    });
    group.bench_function("core_protobuf", |b| b.iter(|| run(&protobuf, black_box(&corpus), &topic, now)));
    let without_rules = protobuf.clone().with_rules(acs_stream::rules::RuleSet::empty());
    group.bench_function("core_protobuf_without_rules", |b| {
        b.iter(|| run(&without_rules, black_box(&corpus), &topic, now))
    });
    let events = TopicTemplate::parse(&Config::defaults().output.events_topic).expect("the default is valid");
    group.bench_function("core_protobuf_stateless", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for (offset, value) in corpus.iter().enumerate() {
                let source = Source { topic: topic.clone(), partition: 0, offset: offset as i64 };
                bytes += match protobuf.enrich(black_box(value), &source, now) {
                    Ok(event) => event_record(&event, &events, Format::Protobuf, value.len()).value.len(),
                    Err(dead) => dead.rejection.detail.len(),
                };
            }
            bytes
        })
    });
    let private = Config::layered(
        Some((
            "bench",
            "[privacy]\ndefault = \"pseudonymize\"\nkey = \"bench-key-0123456789abcdef0123456789abcdef\"\n",
        )),
        [],
    )
    .expect("a valid privacy configuration");
    let pseudonymized = Pipeline::new(&private, ReasonCatalog::builtin()).expect("valid").with_format(Format::Protobuf);
    group.bench_function("core_protobuf_pseudonymized", |b| {
        b.iter(|| run(&pseudonymized, black_box(&corpus), &topic, now))
    });
    group.bench_function("core_json", |b| b.iter(|| run(&json, black_box(&corpus), &topic, now)));
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);

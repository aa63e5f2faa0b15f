//! What the core benchmarks share: the corpus and one pass of the full core over it.

// Each bench uses what it needs of it.
#![allow(dead_code)]

use std::sync::Arc;

use acs_stream::model::Source;
use acs_stream::pipeline::{Outcome, Pipeline, Record};
use acs_stream::synth::{Generator, SynthOptions};

/// Records in the corpus.
pub const RECORDS: usize = 10_000;

/// The corpus: deterministic synthetic records (realistic profile; see `benches/core.rs`), and the processing
/// time to use with them.
pub fn corpus() -> (Vec<Vec<u8>>, i64) {
    let options = SynthOptions::default();
    let now = options.start_ms + 86_400_000;
    let records = Generator::new(options).take_records(RECORDS).into_iter().map(|r| r.value).collect();
    (records, now)
}

/// One pass of the full core over `corpus`, with a session store of its own; the bytes it
/// produced (so that nothing is optimized away).
pub fn run(pipeline: &Pipeline, corpus: &[Vec<u8>], topic: &Arc<str>, now: i64) -> usize {
    let mut bytes = 0;
    let mut sessions = pipeline.sessions();
    for (offset, value) in corpus.iter().enumerate() {
        let source = Source { topic: topic.clone(), partition: 0, offset: offset as i64 };
        let record = Record::new(None, value, source);
        bytes += match pipeline.process(&record, &mut sessions, now) {
            Outcome::Event { output, alerts, .. } => {
                output.value.len() + alerts.iter().map(|a| a.output().value.len()).sum::<usize>()
            }
            Outcome::DeadLetter(dead) => dead.rejection.detail.len(),
        };
        // As the runtime's commit timer does: alerts kept for a replay are let go.
        if offset % 1000 == 999 {
            sessions.committed(offset as i64);
        }
    }
    bytes
}

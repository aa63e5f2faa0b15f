//! What the default rules cost the core, as one ratio: the full core's throughput with the
//! 14 default rules over its throughput without any (issue 5's target: at least 0.80).
//!
//! Criterion measures `core_protobuf` and `core_protobuf_without_rules` (`benches/core.rs`)
//! seconds apart, and on a shared or virtual machine their ratio moves by several percent
//! from run to run. Here the two run alternately, pass after pass over the same corpus in
//! one process (which goes first alternates too), and each pair of passes gives a ratio:
//! what drifts (frequency, neighbours' load) moves both passes of a pair alike. Reported: the
//! median ratio of the pairs and its quartiles, and the median pass with and without rules.
//!
//! Run: `cargo bench --bench rules_cost` (`ACS_BENCH_ROUNDS=N` pairs, 60 by default). Figures go to
//! BENCHMARKS.md. Run without `--bench` (as `cargo test --all-targets` does), it is a smoke
//! test: two pairs, and the rules must have added alerts to the output.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use acs_stream::config::Config;
use acs_stream::encode::Format;
use acs_stream::model::ReasonCatalog;
use acs_stream::pipeline::Pipeline;
use acs_stream::rules::RuleSet;

mod common;

use common::{corpus, run};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let rounds: usize =
        if full { std::env::var("ACS_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60).max(4) } else { 2 };
    let (corpus, now) = corpus();
    let with = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin())
        .expect("defaults are valid")
        .with_format(Format::Protobuf);
    let without = with.clone().with_rules(RuleSet::empty());
    let topic: Arc<str> = Arc::from("acs.raw");
    let pass = |pipeline: &Pipeline| {
        let start = Instant::now();
        black_box(run(pipeline, black_box(&corpus), &topic, now));
        start.elapsed().as_secs_f64()
    };
    let (bytes_with, bytes_without) = (run(&with, &corpus, &topic, now), run(&without, &corpus, &topic, now));
    assert!(bytes_with > bytes_without, "the rules add alerts: {bytes_with} bytes with them, {bytes_without} without");
    for _ in 0..if full { 3 } else { 0 } {
        pass(&with);
        pass(&without);
    }
    let (mut ratios, mut times_with, mut times_without) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (with, without) = if round % 2 == 0 {
            let with = pass(&with);
            (with, pass(&without))
        } else {
            let without = pass(&without);
            (pass(&with), without)
        };
        ratios.push(without / with);
        times_with.push(with);
        times_without.push(without);
    }
    let sorted = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values
    };
    let (ratios, times_with, times_without) = (sorted(ratios), sorted(times_with), sorted(times_without));
    let at = |values: &[f64], quantile: f64| values[((values.len() - 1) as f64 * quantile).round() as usize];
    let per_second = |seconds: f64| corpus.len() as f64 / seconds / 1000.0;
    println!(
        "rules_cost: {rounds} pairs of passes over {} records: ratio with / without rules {:.3} (quartiles {:.3} - {:.3}); \
         with rules {:.0} k records/s, without {:.0} k records/s (medians)",
        corpus.len(),
        at(&ratios, 0.5),
        at(&ratios, 0.25),
        at(&ratios, 0.75),
        per_second(at(&times_with, 0.5)),
        per_second(at(&times_without, 0.5)),
    );
}

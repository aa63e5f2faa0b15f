//! What the default rules cost the core, as one ratio: the full core's throughput with the
//! 14 default rules over its throughput without any (issue 5's target: at least 0.80).
//!
//! Criterion measures `core_protobuf` and `core_protobuf_without_rules` (`benches/core.rs`)
//! seconds apart, and on a shared or virtual machine their ratio moves by several percent
//! from run to run. Here the two are measured in pairs, close in time, so that what drifts
//! (frequency, neighbours' load) moves both members of a pair alike, two ways:
//! - passes: pass after pass over the same corpus in this process, alternately with and
//!   without rules (which goes first alternates too); the two share the allocator's state;
//! - processes: this program run again as a child, alternately with and without rules,
//!   each child measuring its mean pass (12 passes after 3 of warm-up: a throughput is a
//!   mean) in a process of its own, its allocator shared with nothing else.
//!
//! Reported for each: the median ratio of the pairs and its quartiles, and the median
//! throughput with and without rules.
//!
//! Run: `cargo bench --bench rules_cost` (`ACS_BENCH_ROUNDS=N` pairs of passes, 60 by
//! default; `ACS_BENCH_PROCESSES=N` pairs of processes, 10 by default). Figures go to
//! BENCHMARKS.md. Run without `--bench` (as `cargo test --all-targets` does), it is a smoke
//! test: two pairs of passes, one of processes, and the rules must have added alerts to the
//! output.

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

/// Set in a child's environment: `with` or `without` rules.
const CHILD: &str = "ACS_RULES_COST_CHILD";

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let count = |name: &str, default: usize| {
        if full { std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default).max(4) } else { 2 }
    };
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
    if let Ok(child) = std::env::var(CHILD) {
        // A child: its mean pass, in seconds, on stdout.
        let pipeline = if child == "with" { &with } else { &without };
        let (warm_up, passes) = if full { (3, 12) } else { (0, 1) };
        for _ in 0..warm_up {
            pass(pipeline);
        }
        let times = sorted((0..passes).map(|_| pass(pipeline)).collect());
        println!("{}", times.iter().sum::<f64>() / times.len() as f64);
        return;
    }
    let (bytes_with, bytes_without) = (run(&with, &corpus, &topic, now), run(&without, &corpus, &topic, now));
    assert!(bytes_with > bytes_without, "the rules add alerts: {bytes_with} bytes with them, {bytes_without} without");

    for _ in 0..if full { 3 } else { 0 } {
        pass(&with);
        pass(&without);
    }
    let pairs = count("ACS_BENCH_ROUNDS", 60);
    let passes = measure(pairs, |with_rules| pass(if with_rules { &with } else { &without }));
    report(&format!("{pairs} pairs of passes in one process"), corpus.len(), &passes);

    let children = if full { count("ACS_BENCH_PROCESSES", 10) } else { 1 };
    let processes = measure(children, |with_rules| {
        let output = std::process::Command::new(std::env::current_exe().expect("this program's path"))
            .args(std::env::args().skip(1))
            .env(CHILD, if with_rules { "with" } else { "without" })
            .output()
            .expect("the child runs");
        assert!(output.status.success(), "child: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().parse::<f64>().expect("the child prints its mean pass")
    });
    report(&format!("{children} pairs of processes"), corpus.len(), &processes);
}

/// `pairs` pairs of measures (seconds) with and without rules, the first of a pair
/// alternating: (ratios without / with, times with, times without), each sorted.
fn measure(pairs: usize, mut time: impl FnMut(bool) -> f64) -> [Vec<f64>; 3] {
    let (mut ratios, mut times_with, mut times_without) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..pairs {
        let (with, without) = if pair % 2 == 0 {
            let with = time(true);
            (with, time(false))
        } else {
            let without = time(false);
            (time(true), without)
        };
        ratios.push(without / with);
        times_with.push(with);
        times_without.push(without);
    }
    [sorted(ratios), sorted(times_with), sorted(times_without)]
}

fn report(what: &str, records: usize, [ratios, times_with, times_without]: &[Vec<f64>; 3]) {
    let per_second = |seconds: f64| records as f64 / seconds / 1000.0;
    println!(
        "rules_cost, {what}: ratio with / without rules {:.3} (quartiles {:.3} - {:.3}); with rules {:.0} k \
         records/s, without {:.0} k records/s (medians)",
        at(ratios, 0.5),
        at(ratios, 0.25),
        at(ratios, 0.75),
        per_second(at(times_with, 0.5)),
        per_second(at(times_without, 0.5)),
    );
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// The value at `quantile` of sorted `values` (nearest rank).
fn at(values: &[f64], quantile: f64) -> f64 {
    values[((values.len() - 1) as f64 * quantile).round() as usize]
}

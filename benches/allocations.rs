//! Heap allocations per record of the core, with and without the default rules: what the
//! rules' alerts and windows allocate, by size class.
//!
//! Corpus: the core bench's (10,000 synthetic records); the same loop as its `run` (session
//! state tracked as with a changelog, kept alerts let go every 1,000 records). Allocations
//! are counted by a global allocator wrapping mimalloc (a reallocation counts as one).
//!
//! Run: `cargo bench --bench allocations`. Figures go to BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use acs_stream::config::Config;
use acs_stream::model::{ReasonCatalog, Source};
use acs_stream::pipeline::{Outcome, Pipeline, Record};
use acs_stream::rules::RuleSet;

mod common;

use common::{RECORDS, corpus};

/// Allocations by size class (16 bytes each; the last: 1,008 bytes and more, and
/// reallocations).
static CLASSES: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];

struct Counting;

// SAFETY: every call is mimalloc's, with the same arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CLASSES[(layout.size() / 16).min(63)].fetch_add(1, Ordering::Relaxed);
        // SAFETY: as `GlobalAlloc::alloc`'s caller promised.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as `GlobalAlloc::dealloc`'s caller promised.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        CLASSES[63].fetch_add(1, Ordering::Relaxed);
        // SAFETY: as `GlobalAlloc::realloc`'s caller promised.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn counts() -> Vec<usize> {
    CLASSES.iter().map(|class| class.load(Ordering::Relaxed)).collect()
}

fn main() {
    let (corpus, now) = corpus();
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).expect("defaults are valid");
    let topic: Arc<str> = Arc::from("acs.raw");
    let mut by_variant = Vec::new();
    for (name, pipeline) in
        [("with the default rules", pipeline.clone()), ("without rules", pipeline.with_rules(RuleSet::empty()))]
    {
        let before = counts();
        let mut sessions = pipeline.sessions();
        let mut alerts = 0;
        for (offset, value) in corpus.iter().enumerate() {
            let source = Source { topic: topic.clone(), partition: 0, offset: offset as i64 };
            if let Outcome::Event { alerts: fired, .. } =
                pipeline.process(&Record::new(None, value, source), &mut sessions, now)
            {
                alerts += fired.len();
            }
            if offset % 1000 == 999 {
                sessions.committed(offset as i64);
            }
        }
        drop(sessions);
        let counted: Vec<usize> = counts().iter().zip(&before).map(|(after, before)| after - before).collect();
        let total: usize = counted.iter().sum();
        println!("{name}: {:.2} allocations per record, {alerts} alerts", total as f64 / RECORDS as f64);
        by_variant.push(counted);
    }
    println!("size class: allocations with rules - without, per 10,000 records (classes with more than 500)");
    for (class, (with, without)) in by_variant[0].iter().zip(&by_variant[1]).enumerate() {
        let extra = *with as i64 - *without as i64;
        if extra.abs() > 500 {
            let label = if class == 63 {
                "≥ 1008 B or realloc".to_owned()
            } else {
                format!("{}-{} B", class * 16, class * 16 + 15)
            };
            println!("  {label}: {extra:+}");
        }
    }
}

//! `acs-stream process`: the core over JSON lines, offline.
//!
//! Each input line is one record value. Every line ends in exactly one output file:
//! `<events topic>.jsonl` for its tenant, or `<dead-letter topic>.jsonl`; the alerts its
//! event fires go to `<alerts topic>.jsonl` for its tenant (`acs.<tenant>.alerts.jsonl`), the
//! revisions of its session's incident to `<incidents topic>.jsonl`.
//! Values are always JSON here (the JSON contracts), whatever `output.format` says. The
//! input is one partition seen whole, so tenant-scoped rules are counted in place.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decode::ErrorCode;
use crate::encode::Format;
use crate::incidents::Priority;
use crate::model::Source;
use crate::pipeline::{Outcome, Pipeline, Record};
use crate::rules::Severity;

/// What to process.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Input file, or `-` for standard input.
    pub input: PathBuf,
    /// Output directory (created when absent).
    pub out: PathBuf,
    /// Lineage topic name; default: the input file's name, or `stdin`.
    pub source_topic: Option<String>,
    /// Processing time in epoch milliseconds (the clock passed to the core).
    pub now_ms: i64,
}

/// Counts of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub events: u64,
    pub dead_letters: u64,
    pub alerts: u64,
    /// Alerts per rule and severity.
    pub per_rule: BTreeMap<(String, Severity), u64>,
    /// Records written per output topic.
    pub per_topic: BTreeMap<String, u64>,
    /// Dead letters per error code.
    pub per_code: BTreeMap<ErrorCode, u64>,
    /// Alerts folded into their session's incident, per rule.
    pub folded: BTreeMap<String, u64>,
    /// Each session's incident, as its latest revision says.
    pub incidents: BTreeMap<String, IncidentSummary>,
}

/// A session's incident, as its latest revision says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentSummary {
    pub priority: Priority,
    pub score: u8,
    pub reasons: Vec<String>,
    pub open: bool,
}

impl IncidentSummary {
    /// What an incident's JSON record says (`None`: not an incident of the contract).
    pub fn of_json(value: &[u8]) -> Option<(String, IncidentSummary)> {
        let json: serde_json::Value = serde_json::from_slice(value).ok()?;
        let priority = Priority::ALL.into_iter().find(|p| json["priority"] == p.as_str())?;
        let reasons = json["reasons"].as_array()?.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect();
        let summary = IncidentSummary {
            priority,
            score: u8::try_from(json["score"].as_u64()?).ok()?,
            reasons,
            open: json["open"].as_bool()?,
        };
        Some((json["deliveryExecutionId"].as_str()?.to_owned(), summary))
    }
}

/// How many sessions [`Summary`]'s display lists to review first.
const REVIEW_FIRST: usize = 5;

impl Summary {
    /// Sessions per incident priority, the most urgent first.
    pub fn by_priority(&self) -> Vec<(Priority, usize)> {
        let count = |priority| self.incidents.values().filter(|i| i.priority == priority).count();
        Priority::ALL.into_iter().rev().map(|priority| (priority, count(priority))).collect()
    }

    /// The sessions to review first: by priority, then score (then id), the most urgent first.
    pub fn review_first(&self, n: usize) -> Vec<(&str, &IncidentSummary)> {
        let mut sessions: Vec<(&str, &IncidentSummary)> =
            self.incidents.iter().filter(|(_, i)| i.priority > Priority::None).map(|(k, i)| (k.as_str(), i)).collect();
        sessions.sort_by(|a, b| (b.1.priority, b.1.score).cmp(&(a.1.priority, a.1.score)).then(a.0.cmp(b.0)));
        sessions.truncate(n);
        sessions
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} records: {} events, {} dead letters, {} alerts",
            self.records, self.events, self.dead_letters, self.alerts
        )?;
        writeln!(f, "records per topic:")?;
        for (topic, count) in &self.per_topic {
            writeln!(f, "  {topic:<40} {count:>8}")?;
        }
        if !self.per_code.is_empty() {
            writeln!(f, "dead letters per code:")?;
            for (code, count) in &self.per_code {
                writeln!(f, "  {:<40} {count:>8}", code.as_str())?;
            }
        }
        if !self.per_rule.is_empty() {
            writeln!(f, "alerts per rule:")?;
            for ((rule, severity), count) in &self.per_rule {
                writeln!(f, "  {:<31} {:<8} {count:>8}", rule, severity.as_str())?;
            }
        }
        if !self.folded.is_empty() {
            writeln!(f, "alerts folded into incidents per rule:")?;
            for (rule, count) in &self.folded {
                writeln!(f, "  {rule:<40} {count:>8}")?;
            }
        }
        if !self.incidents.is_empty() {
            writeln!(f, "incidents: {} sessions", self.incidents.len())?;
            for (priority, count) in self.by_priority() {
                writeln!(f, "  {:<40} {count:>8}", priority.as_str())?;
            }
            let first = self.review_first(REVIEW_FIRST);
            if !first.is_empty() {
                writeln!(f, "review first:")?;
                for (session, incident) in first {
                    let (priority, score) = (incident.priority.as_str(), incident.score);
                    writeln!(f, "  {priority:<8} {score:>3}  {session}: {}", incident.reasons.join("; "))?;
                }
            }
        }
        Ok(())
    }
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Runs `process`: reads every line, writes every output, returns the counts.
pub fn run(pipeline: &Pipeline, options: &ProcessOptions) -> Result<Summary, ProcessError> {
    let pipeline = pipeline.clone().with_format(Format::Json).with_inline_tenants();
    let stdin = options.input.as_os_str() == "-";
    let read_error = |source| ProcessError::Read { path: options.input.clone(), source };
    let reader: Box<dyn Read> =
        if stdin { Box::new(io::stdin().lock()) } else { Box::new(File::open(&options.input).map_err(read_error)?) };
    let topic: Arc<str> = match &options.source_topic {
        Some(topic) => Arc::from(topic.as_str()),
        None if stdin => Arc::from("stdin"),
        None => Arc::from(options.input.file_name().map_or("input".into(), |n| n.to_string_lossy()).as_ref()),
    };
    std::fs::create_dir_all(&options.out)
        .map_err(|source| ProcessError::Write { path: options.out.clone(), source })?;

    let mut outputs = Outputs { dir: &options.out, files: HashMap::new() };
    let mut summary = Summary::default();
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut line = Vec::new();
    let mut offset: i64 = 0;
    // The input is one partition: one session state for all of it, written nowhere (nothing
    // to replay: no alert is kept for a replay either).
    let mut sessions = pipeline.sessions().untracked();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(read_error)? == 0 {
            break;
        }
        let value = strip_line_ending(&line);
        let source = Source { topic: topic.clone(), partition: 0, offset };
        let record = Record::new(None, value, source);
        let (topic_name, bytes) = match pipeline.process(&record, &mut sessions, options.now_ms) {
            Outcome::Event { output, alerts, incidents, facts, .. } => {
                summary.events += 1;
                for rule in &facts.folded {
                    *summary.folded.entry(rule.to_string()).or_default() += 1;
                }
                for alerted in alerts {
                    summary.alerts += 1;
                    *summary.per_rule.entry((alerted.rule().to_string(), alerted.severity)).or_default() += 1;
                    let alert = alerted.output();
                    outputs.write(&alert.topic, &alert.value)?;
                    *summary.per_topic.entry(alert.topic.into_owned()).or_default() += 1;
                }
                for incident in incidents {
                    outputs.write(&incident.topic, &incident.value)?;
                    if let Some((session, latest)) = IncidentSummary::of_json(&incident.value) {
                        summary.incidents.insert(session, latest);
                    }
                    *summary.per_topic.entry(incident.topic.into_owned()).or_default() += 1;
                }
                (output.topic.into_owned(), output.value)
            }
            Outcome::DeadLetter(dead) => {
                summary.dead_letters += 1;
                *summary.per_code.entry(dead.rejection.code).or_default() += 1;
                (pipeline.dead_letter_topic().to_owned(), Cow::Owned(dead.to_json_line(None, value)))
            }
        };
        outputs.write(&topic_name, &bytes)?;
        *summary.per_topic.entry(topic_name).or_default() += 1;
        summary.records += 1;
        offset += 1;
    }
    outputs.finish()?;
    Ok(summary)
}

/// A line without its `\n` (or `\r\n`) ending.
fn strip_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One JSON-lines file per topic, opened (and truncated) on first use.
struct Outputs<'a> {
    dir: &'a Path,
    files: HashMap<String, (PathBuf, BufWriter<File>)>,
}

impl Outputs<'_> {
    fn write(&mut self, topic: &str, line: &[u8]) -> Result<(), ProcessError> {
        if !self.files.contains_key(topic) {
            // Topic names are [A-Za-z0-9._-]: safe as file names.
            let path = self.dir.join(format!("{topic}.jsonl"));
            let file = File::create(&path).map_err(|source| ProcessError::Write { path: path.clone(), source })?;
            self.files.insert(topic.to_owned(), (path, BufWriter::new(file)));
        }
        let (path, writer) = self.files.get_mut(topic).expect("inserted above");
        writer
            .write_all(line)
            .and_then(|()| writer.write_all(b"\n"))
            .map_err(|source| ProcessError::Write { path: path.clone(), source })
    }

    fn finish(self) -> Result<(), ProcessError> {
        for (_, (path, writer)) in self.files {
            writer
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|file| file.sync_all())
                .map_err(|source| ProcessError::Write { path, source })?;
        }
        Ok(())
    }
}

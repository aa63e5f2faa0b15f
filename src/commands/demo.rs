//! `acs-stream demo`: the whole service against an in-process Kafka cluster (librdkafka's
//! mock cluster), with synthetic traffic; prints what it did. Needs nothing installed.
//!
//! It tells a story, not a log: a progress bar on stderr while it runs (hidden when stderr is
//! not a terminal; the service's log lines are off unless `--verbose` or `RUST_LOG`), then a
//! summary that leads with the sessions ([`SessionsSummary`]), then the alerts per rule, the
//! dead letters per code and the throughput.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::encode::ALERT_SCHEMA;
use crate::encode::DeadLetter;
use crate::encode::incident::INCIDENT_SCHEMA;
use crate::encode::proto::pb;
use crate::incidents::Priority;
use crate::kafka::runtime::{self, RunSummary};
use crate::model::ReasonCatalog;
use crate::pipeline::{Outcome, Pipeline, Processor, Record};
use crate::synth::{Generator, Profile, SynthOptions, SynthRecord};

/// The demo's input topic.
pub const INPUT_TOPIC: &str = "acs.raw";
const INPUT_PARTITIONS: i32 = 6;
const OUTPUT_PARTITIONS: i32 = 3;
/// The mock cluster keeps at most 5 MiB per partition and silently drops older records:
/// a topic gets a partition per this many bytes of its records.
const MOCK_PARTITION_BUDGET: usize = 4 << 20;
/// More than the average bytes of a synthetic record in or out (key, value, headers, batch
/// overhead: about 0.7 KiB), which leaves room for uneven partitions.
const RECORD_BYTES: usize = 1024;

/// Partitions for a topic that may receive `records` records: at least `floor`, and
/// enough that the mock cluster never drops any.
fn partitions_for(records: usize, floor: i32) -> i32 {
    let needed = records.saturating_mul(RECORD_BYTES).div_ceil(MOCK_PARTITION_BUDGET);
    i32::try_from(needed).unwrap_or(i32::MAX).max(floor)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub events: usize,
    pub tenants: usize,
    pub seed: u64,
    /// The mix of sessions ([`Profile::Realistic`] by default).
    pub profile: Profile,
    /// Shortest and longest sitting, minutes (realistic profile).
    pub sitting_minutes: (u32, u32),
}

/// One record read back from an output topic.
#[derive(Debug, Clone)]
pub struct OutputRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("mock cluster: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("only {got} of {expected} outputs arrived within {patience:?}")]
    Incomplete { got: usize, expected: usize, patience: Duration },
    #[error("{topic}: {partitions} partitions not committed to their end after {waited:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Uncommitted {
        topic: String,
        partitions: usize,
        waited: Duration,
        last_error: Option<Box<rdkafka::error::KafkaError>>,
    },
    #[error(
        "the tenant topic lost records: {forwarded} events forwarded to it, {counted} counted (the embedded \
         broker keeps 5 MiB per partition and a tenant's forwarded events share one: use fewer --events or more \
         --tenants)"
    )]
    TenantTopicTruncated { forwarded: u64, counted: u64 },
}

/// Waits until consumer group `group` has committed each of `topics` (with its number of
/// partitions), in order, to its end offsets as they stand when its turn comes: every record
/// consumed and its outputs acknowledged (a topic the ones before it feed is then complete).
/// Asks every `poll`; gives up after `patience`, or as soon as `give_up` says so.
pub fn wait_committed(
    brokers: &str,
    group: &str,
    topics: &[(String, i32)],
    patience: Duration,
    poll: Duration,
    give_up: impl Fn() -> bool,
) -> Result<(), DemoError> {
    // Asks for the group's committed offsets only: it never joins the group.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let started = Instant::now();
    for (topic, partitions) in topics {
        let mut ends = TopicPartitionList::new();
        for partition in 0..*partitions {
            let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
            ends.add_partition_offset(topic, partition, Offset::Offset(high))?;
        }
        let (mut behind, mut last_error) = (ends.count(), None);
        loop {
            // An error (the group coordinator still loading, say) is asked again.
            match consumer.committed_offsets(ends.clone(), timeout) {
                Ok(committed) => {
                    behind = ends
                        .elements()
                        .iter()
                        .filter(|end| {
                            let at = committed.find_partition(end.topic(), end.partition()).map(|c| c.offset());
                            match (end.offset(), at) {
                                // An empty partition: nothing to commit.
                                (Offset::Offset(0), _) => false,
                                (Offset::Offset(end), Some(Offset::Offset(at))) => at < end,
                                _ => true,
                            }
                        })
                        .count();
                    if behind == 0 {
                        break;
                    }
                }
                Err(error) => last_error = Some(Box::new(error)),
            }
            if give_up() || started.elapsed() > patience {
                let (topic, waited) = (topic.clone(), started.elapsed());
                return Err(DemoError::Uncommitted { topic, partitions: behind, waited, last_error });
            }
            std::thread::sleep(poll);
        }
    }
    Ok(())
}

/// Reads `topics` (partitions `0..partitions`) from the beginning until `expected` records
/// arrived, calling `progress` with the count now and then. Gives up after `patience`.
pub fn read_outputs(
    brokers: &str,
    topics: &[String],
    partitions: i32,
    expected: usize,
    patience: Duration,
    mut progress: impl FnMut(usize),
) -> Result<Vec<OutputRecord>, DemoError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "acs-stream-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for topic in topics {
        for partition in 0..partitions {
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    consumer.assign(&list)?;
    let started = Instant::now();
    let mut outputs = Vec::with_capacity(expected);
    let mut reported = Instant::now();
    while outputs.len() < expected {
        if started.elapsed() > patience {
            return Err(DemoError::Incomplete { got: outputs.len(), expected, patience });
        }
        if reported.elapsed() > Duration::from_millis(500) {
            progress(outputs.len());
            reported = Instant::now();
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message?;
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        outputs.push(OutputRecord {
            topic: message.topic().to_owned(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    progress(outputs.len());
    Ok(outputs)
}

/// Produces synthetic records (keyed by their delivery execution id) to `topic` and waits
/// until every one is acknowledged; a full local queue is waited out.
pub fn produce(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = SynthRecord>,
) -> Result<(), rdkafka::error::KafkaError> {
    produce_counted(brokers, topic, records, |_| {})
}

/// [`produce`], calling `sent` after each record handed to the producer.
fn produce_counted(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = SynthRecord>,
    mut sent: impl FnMut(u64),
) -> Result<(), rdkafka::error::KafkaError> {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    for (n, record) in (1..).zip(records) {
        sent(n);
        let mut pending = BaseRecord::to(topic).key(&record.key).payload(&record.value);
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((_, back)) => {
                    pending = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))
}

/// The pipeline, noting when it was handed its first record: the throughput the demo prints
/// leaves the consumer group join (about 3 s on the mock cluster) out. Every other method is
/// the pipeline's (a default here would switch a part of the service off).
struct Stamped<'p> {
    inner: &'p Pipeline,
    first: OnceLock<Instant>,
}

impl Processor for Stamped<'_> {
    type State = <Pipeline as Processor>::State;

    fn state(&self) -> Self::State {
        self.inner.state()
    }

    fn process<'a>(&self, record: &Record<'a>, state: &mut Self::State, now_ms: i64) -> Outcome<'a> {
        self.first.get_or_init(Instant::now);
        self.inner.process(record, state, now_ms)
    }

    fn dead_letter_topic(&self) -> &str {
        Processor::dead_letter_topic(self.inner)
    }

    fn changelog_topic(&self) -> Option<&str> {
        Processor::changelog_topic(self.inner)
    }

    fn repartition_topic(&self) -> Option<&str> {
        Processor::repartition_topic(self.inner)
    }

    fn rekey(&self, record: &Record<'_>, now_ms: i64) -> Result<Vec<u8>, DeadLetter> {
        self.inner.rekey(record, now_ms)
    }

    fn tenant_topic(&self) -> Option<&str> {
        Processor::tenant_topic(self.inner)
    }

    fn produce_failed(&self, detail: String, tenant: Option<&str>) -> crate::decode::Rejection {
        self.inner.produce_failed(detail, tenant)
    }

    fn process_tenant<'a>(
        &self,
        record: &Record<'a>,
        matched: &[&str],
        state: &mut Self::State,
        now_ms: i64,
    ) -> Result<crate::pipeline::Alerts, DeadLetter> {
        self.inner.process_tenant(record, matched, state, now_ms)
    }
}

/// The progress bar: on stderr, drawn only when it is a terminal (indicatif hides it
/// otherwise), so that a piped or tested demo prints its summary alone.
fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template("{msg:<28} {bar:40} {pos}/{len} ({per_sec})")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr()).with_style(style)
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the demo and prints its summary to stdout (progress to stderr).
pub async fn run(options: &DemoOptions) -> Result<(), DemoError> {
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    let tenants: Vec<String> = (1..=options.tenants.max(1)).map(|n| format!("tenant-{n:02}")).collect();
    let config = Config::layered(
        Some((
            "demo",
            &format!(
                "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"acs-stream-demo\"\ninput_topics = [\"{INPUT_TOPIC}\"]\n\
                 commit_interval = \"500ms\"\n[kafka.consumer]\n\"session.timeout.ms\" = 6000\n[topics]\ncreate = false\n"
            ),
        )),
        [],
    )?;
    let pipeline = Pipeline::new(&config, ReasonCatalog::builtin())?;
    // The mock cluster does not support CreateTopics: topics are made through its own API.
    // Sized for the traffic (sessions are spread evenly over the tenants).
    let input_partitions = partitions_for(options.events, INPUT_PARTITIONS);
    cluster.create_topic(INPUT_TOPIC, input_partitions, 1)?;
    // The session changelog: one partition per input partition (records of about the size
    // of the input's).
    if let Some(changelog) = config.changelog_topic() {
        cluster.create_topic(&changelog, input_partitions, 1)?;
    }
    // Events of tenant-scoped rules, re-keyed by tenant (sessions' partitions do not hold a
    // whole tenant).
    if let Some(tenant_topic) = config.tenant_topic() {
        cluster.create_topic(&tenant_topic, input_partitions, 1)?;
    }
    let output_partitions = partitions_for(options.events.div_ceil(tenants.len()), OUTPUT_PARTITIONS);
    let mut outputs: Vec<String> = tenants.iter().map(|t| format!("acs.{t}.events")).collect();
    outputs.push(pipeline.dead_letter_topic().to_owned());
    let alert_topics: Vec<String> = tenants.iter().map(|t| format!("acs.{t}.alerts")).collect();
    let incident_topics: Vec<String> = tenants.iter().map(|t| format!("acs.{t}.incidents")).collect();
    for topic in outputs.iter().chain(&alert_topics).chain(&incident_topics) {
        cluster.create_topic(topic, output_partitions, 1)?;
    }

    // Traffic: the last record is about now.
    let mut synth = SynthOptions {
        seed: options.seed,
        tenants: tenants.len(),
        profile: options.profile,
        sitting_minutes: options.sitting_minutes,
        ..SynthOptions::default()
    };
    synth.start_ms = now_ms() - Generator::span_ms(&synth, options.events as u64);
    let bar = progress_bar(options.events as u64);
    bar.set_message("producing synthetic traffic");
    let mut generator = Generator::new(synth);
    produce_counted(&brokers, INPUT_TOPIC, generator.by_ref().take(options.events), |n| {
        if n % 256 == 0 {
            bar.set_position(n);
        }
    })?;
    bar.set_position(0);
    bar.set_message("running the service");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let reader_brokers = brokers.clone();
    let expected = options.events;
    // Once every input record has its output, and then once the service has committed every
    // input record and every record of the tenant topic (so the tenant-scoped rules have
    // counted every event forwarded to them: the forwards of an input record are acknowledged
    // before its offset is committed, so the tenant topic is complete by then).
    let group = config.kafka.group_id.clone();
    let mut committed_topics = vec![(INPUT_TOPIC.to_owned(), input_partitions)];
    committed_topics.extend(config.tenant_topic().map(|topic| (topic, input_partitions)));
    let reader_bar = bar.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let result =
            read_outputs(&reader_brokers, &outputs, output_partitions, expected, Duration::from_secs(600), |n| {
                reader_bar.set_position(n as u64);
            })
            .and_then(|records| {
                // Every record has come out: the end of the window the throughput is over.
                let processed = Instant::now();
                reader_bar.set_message("committing");
                // The service commits every `kafka.commit_interval` (500 ms here).
                let (patience, poll) = (Duration::from_secs(240), Duration::from_millis(50));
                wait_committed(&reader_brokers, &group, &committed_topics, patience, poll, || false)?;
                Ok((records, processed))
            });
        let _ = done_tx.send(());
        result
    });
    let started = Instant::now();
    let stamped = Stamped { inner: &pipeline, first: OnceLock::new() };
    let summary = runtime::run(&config, &stamped, async {
        let _ = done_rx.await;
    })
    .await?;
    let (mut records, processed) =
        reader.await.map_err(|_| DemoError::Incomplete { got: 0, expected, patience: Duration::ZERO })??;
    let elapsed = processed.duration_since(stamped.first.get().copied().unwrap_or(started));
    // Alerts: as many as the rules fired; the run drained, so all of them are there.
    let alerts = summary.alerts as usize;
    records.extend(read_outputs(&brokers, &alert_topics, output_partitions, alerts, Duration::from_secs(60), |_| {})?);
    let incidents = summary.incidents as usize;
    records.extend(read_outputs(
        &brokers,
        &incident_topics,
        output_partitions,
        incidents,
        Duration::from_secs(60),
        |_| {},
    )?);
    bar.finish_and_clear();
    let sessions = SessionsSummary::read(&records, generator.scripts().len());
    print!("{}", report(&summary, &sessions, &records, elapsed));
    // The mock cluster drops a partition's oldest records silently; the service's consumer
    // then goes on from the oldest left, and commits: the counts tell.
    if summary.tenant_records < summary.tenant_forwarded {
        return Err(DemoError::TenantTopicTruncated {
            forwarded: summary.tenant_forwarded,
            counted: summary.tenant_records,
        });
    }
    Ok(())
}

/// `ACTOR_TEST_TAKER` → `test-taker`: the spec's spelling of a protobuf enum value.
fn spelled(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase().replace('_', "-")
}

/// The loudest alert of a session, and how many it had.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionRecord {
    /// Events of the session read back.
    pub events: usize,
    /// Its alerts, per (rule, severity).
    pub alerts: BTreeMap<(String, String), usize>,
    /// The highest severity among them (`critical` > `high` > `medium` > `low` > `info`).
    pub loudest: Option<String>,
    /// Its incident's latest revision read back.
    pub incident: Option<pb::Incident>,
}

/// What the demo knows of the sessions, from what it read back: the summary's first
/// section. Today it holds the sessions and their alerts; the incidents (priority, score,
/// reasons to review first) will extend it from the same per-session records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionsSummary {
    /// Sessions the traffic opened (the generator's count: some may have had only malformed
    /// records, or none yet when the traffic stopped).
    pub opened: usize,
    /// Per session seen in the outputs (its delivery execution id).
    pub sessions: BTreeMap<String, SessionRecord>,
}

/// Severities, loudest first.
const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

impl SessionsSummary {
    /// From the records read back: the events and the session-scoped alerts.
    pub fn read(records: &[OutputRecord], opened: usize) -> SessionsSummary {
        let mut summary = SessionsSummary { opened, sessions: BTreeMap::new() };
        for record in records {
            if record.headers.get("acs-schema").map(String::as_str) == Some(ALERT_SCHEMA) {
                let Ok(alert) = pb::Alert::decode(record.value.as_slice()) else { continue };
                let Some(id) = alert.delivery_execution_id.clone() else { continue };
                let severity = spelled(alert.severity().as_str_name(), "SEVERITY_");
                let session = summary.sessions.entry(id).or_default();
                let louder = |loudest: &String| rank(&severity) < rank(loudest);
                if session.loudest.as_ref().is_none_or(louder) {
                    session.loudest = Some(severity.clone());
                }
                *session.alerts.entry((alert.rule_id, severity)).or_default() += 1;
            } else if record.headers.get("acs-schema").map(String::as_str) == Some(INCIDENT_SCHEMA) {
                let Ok(incident) = pb::Incident::decode(record.value.as_slice()) else { continue };
                let session = summary.sessions.entry(incident.delivery_execution_id.clone()).or_default();
                if session.incident.as_ref().is_none_or(|latest| latest.revision < incident.revision) {
                    session.incident = Some(incident);
                }
            } else if record.topic.ends_with(".events") {
                let Ok(event) = pb::EnrichedEvent::decode(record.value.as_slice()) else { continue };
                summary.sessions.entry(event.delivery_execution_id).or_default().events += 1;
            }
        }
        summary
    }

    /// Sessions per incident priority, the most urgent first; sessions without an incident
    /// yet (open, no alert) count as `none`.
    pub fn by_priority(&self) -> Vec<(Priority, usize)> {
        let priority = |session: &SessionRecord| session.incident.as_ref().map_or(Priority::None, priority_of);
        let count = |wanted: Priority| self.sessions.values().filter(|s| priority(s) == wanted).count();
        Priority::ALL.into_iter().rev().map(|p| (p, count(p))).collect()
    }

    /// The sessions to review first: by priority, then score, the most urgent first (ties by
    /// id), at most `n`, above `none`.
    pub fn review_first(&self, n: usize) -> Vec<(&str, &pb::Incident)> {
        let mut sessions: Vec<(&str, &pb::Incident)> = (self.sessions.iter())
            .filter_map(|(id, session)| Some((id.as_str(), session.incident.as_ref()?)))
            .filter(|(_, incident)| priority_of(incident) > Priority::None)
            .collect();
        sessions.sort_by(|a, b| {
            (priority_of(b.1), b.1.score).cmp(&(priority_of(a.1), a.1.score)).then_with(|| a.0.cmp(b.0))
        });
        sessions.truncate(n);
        sessions
    }

    /// Alerts folded into incidents per rule: each incident's alerts of a rule, less those
    /// of its session read back from the alerts topics.
    pub fn folded(&self) -> BTreeMap<String, usize> {
        let mut folded = BTreeMap::new();
        for session in self.sessions.values() {
            let Some(incident) = &session.incident else { continue };
            for rule in &incident.by_rule {
                let published: usize =
                    session.alerts.iter().filter(|((id, _), _)| *id == rule.rule_id).map(|(_, n)| n).sum();
                let count = (rule.count as usize).saturating_sub(published);
                if count > 0 {
                    *folded.entry(rule.rule_id.clone()).or_default() += count;
                }
            }
        }
        folded
    }

    /// Sessions whose loudest alert is `severity`.
    pub fn loudest(&self, severity: &str) -> usize {
        self.sessions.values().filter(|s| s.loudest.as_deref() == Some(severity)).count()
    }

    /// Sessions with no alert.
    pub fn quiet(&self) -> usize {
        self.sessions.values().filter(|s| s.loudest.is_none()).count()
    }
}

fn priority_of(incident: &pb::Incident) -> Priority {
    match incident.priority() {
        pb::Priority::Critical => Priority::Critical,
        pb::Priority::High => Priority::High,
        pb::Priority::Medium => Priority::Medium,
        pb::Priority::Low => Priority::Low,
        pb::Priority::None | pb::Priority::Unspecified => Priority::None,
    }
}

/// How many sessions the summary lists to review first.
const REVIEW_FIRST: usize = 5;

fn rank(severity: &str) -> usize {
    SEVERITIES.iter().position(|s| *s == severity).unwrap_or(SEVERITIES.len())
}

/// The summary a person reads: the sessions first, then what the rules published, what was
/// refused, and how fast.
fn report(summary: &RunSummary, sessions: &SessionsSummary, records: &[OutputRecord], elapsed: Duration) -> String {
    let mut per_topic: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_code: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_rule: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut samples = Vec::new();
    for record in records {
        *per_topic.entry(&record.topic).or_default() += 1;
        if record.headers.get("acs-schema").map(String::as_str) == Some(ALERT_SCHEMA) {
            if let Ok(alert) = pb::Alert::decode(record.value.as_slice()) {
                let severity = spelled(alert.severity().as_str_name(), "SEVERITY_");
                *per_rule.entry((alert.rule_id, severity)).or_default() += 1;
            }
        } else if let Some(code) = record.headers.get("acs.error.code") {
            *per_code.entry(code).or_default() += 1;
        } else if samples.len() < 5 && record.topic.ends_with(".events") {
            if let Ok(event) = pb::EnrichedEvent::decode(record.value.as_slice()) {
                if samples.iter().all(|e: &pb::EnrichedEvent| e.action != event.action) {
                    samples.push(event);
                }
            }
        }
    }
    let mut out = String::new();
    let seen = sessions.sessions.len();
    out.push_str(&format!(
        "\nacs-stream demo: {seen} sessions ({} opened by the traffic), {} records\n\nsessions by incident \
         priority:\n",
        sessions.opened, summary.consumed
    ));
    for (priority, count) in sessions.by_priority() {
        out.push_str(&format!("  {:<32} {count:>8}\n", priority.as_str()));
    }
    out.push_str("review first (priority, score, session: reasons):\n");
    for (id, incident) in sessions.review_first(REVIEW_FIRST) {
        let priority = priority_of(incident).as_str();
        out.push_str(&format!("  {priority:<8} {:>3}  {id}: {}\n", incident.score, incident.reasons.join("; ")));
    }
    out.push_str("sessions by loudest alert published:\n");
    for severity in SEVERITIES {
        out.push_str(&format!("  {severity:<32} {:>8}\n", sessions.loudest(severity)));
    }
    out.push_str(&format!("  {:<32} {:>8}\n", "no alert", sessions.quiet()));
    out.push_str(&format!("alerts published per rule ({} alerts, protobuf acs.v1.Alert, decoded):\n", summary.alerts));
    for ((rule, severity), count) in &per_rule {
        out.push_str(&format!("  {rule:<24} {severity:<8} {count:>7}\n"));
    }
    out.push_str("alerts folded into incidents per rule:\n");
    for (rule, count) in sessions.folded() {
        out.push_str(&format!("  {rule:<32} {count:>8}\n"));
    }
    out.push_str(&format!("dead letters per code ({} dead letters):\n", summary.dead_letters));
    for (code, count) in &per_code {
        out.push_str(&format!("  {code:<32} {count:>8}\n"));
    }
    // Records of the tenant topic are consumed too (internal: the events of tenant-scoped
    // rules, re-keyed by tenant).
    let input = summary.consumed;
    let rate = input as f64 / elapsed.as_secs_f64().max(1e-9);
    out.push_str(&format!(
        "throughput: {input} records consumed in {:.1} s ({:.0} records/s, from the first record processed to the \
         last output read), and {} re-keyed by tenant for tenant-scoped rules ({} counted for their tenant)\n",
        elapsed.as_secs_f64(),
        rate,
        summary.tenant_forwarded,
        summary.tenant_records
    ));
    out.push_str(&format!(
        "  {} events, {} dead letters, {} alerts, all outputs acknowledged and offsets committed: {}\n\n\
         records per topic:\n",
        summary.events, summary.dead_letters, summary.alerts, summary.drained
    ));
    for (topic, count) in &per_topic {
        out.push_str(&format!("  {topic:<32} {count:>8}\n"));
    }
    out.push_str("sample events (protobuf acs.v1.EnrichedEvent, decoded):\n");
    for event in &samples {
        out.push_str(&format!(
            "  tenant={} actor={} action={} status={} reason={} signal={}\n",
            event.tenant_id,
            spelled(event.actor().as_str_name(), "ACTOR_"),
            spelled(event.action().as_str_name(), "ACTION_"),
            spelled(event.status().as_str_name(), "STATUS_"),
            event.reason.as_ref().map_or("-".to_owned(), |r| {
                format!("{}/{}", r.category().as_str_name().trim_start_matches("REASON_CATEGORY_"), r.cause)
            }),
            event.signal.as_ref().map_or("-".to_owned(), |s| spelled(s.kind().as_str_name(), "SIGNAL_KIND_")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_sized_so_that_the_mock_cluster_drops_nothing() {
        // The default demo keeps its partitions.
        assert_eq!(partitions_for(20_000, INPUT_PARTITIONS), 6);
        assert_eq!(partitions_for(5_000, OUTPUT_PARTITIONS), 3);
        // 100,000 records of about 0.7 KiB: under 3 MiB per partition, below the 5 MiB kept.
        assert_eq!(partitions_for(100_000, INPUT_PARTITIONS), 25);
        assert_eq!(partitions_for(usize::MAX, 1), i32::MAX);
    }
}

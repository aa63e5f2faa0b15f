//! `acs-stream run` as a child process of a broker test: its configuration, its start,
//! SIGTERM and SIGKILL, and what it published.

use std::io::Write;
use std::process::{Child, Command, Stdio};

use acs_stream::commands::demo::{self, OutputRecord};
use acs_stream::synth::SynthRecord;

use super::BROKER_PATIENCE as PATIENCE;

/// A service configuration for a test's topics (`<prefix>.<tenant>.events`, ...), group
/// (`prefix`) and input.
#[derive(Debug, Clone)]
pub struct RunConfig<'a> {
    pub brokers: &'a str,
    pub input: &'a str,
    pub prefix: &'a str,
    /// The `[kafka.consumer]` lines; empty: a short session (6 s), so that a killed member is
    /// evicted soon.
    pub consumer: &'a str,
    /// The default rules (with their tenant topic and rule state in the changelog), off by
    /// default: the runtime tests are about the runtime, and alerts about double what the
    /// broker must carry.
    pub rules: bool,
    /// `kafka.guarantee`.
    pub guarantee: &'a str,
    /// `kafka.instance_id` (exactly-once: the transactional id's instance).
    pub instance: &'a str,
    /// `topics.replication_factor` of the topics the service creates.
    pub replicas: i32,
    /// `admin.listen`.
    pub listen: &'a str,
    /// More TOML, appended (sections other than those written here).
    pub more: &'a str,
}

impl<'a> RunConfig<'a> {
    pub fn new(brokers: &'a str, input: &'a str, prefix: &'a str) -> RunConfig<'a> {
        RunConfig {
            brokers,
            input,
            prefix,
            consumer: "",
            rules: false,
            guarantee: "at_least_once",
            instance: "p0",
            replicas: 1,
            listen: "127.0.0.1:0",
            more: "",
        }
    }

    /// Writes it as `<dir>/<name>.toml`.
    pub fn write_as(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let RunConfig { brokers, input, prefix, consumer, rules, guarantee, instance, replicas, listen, more } = self;
        let consumer = if consumer.is_empty() { "\"session.timeout.ms\" = 6000" } else { consumer };
        // At least once commits every 200 ms (short waits for the tests' commit checks);
        // exactly once keeps its default (100 ms).
        let interval = if *guarantee == "at_least_once" { "commit_interval = \"200ms\"\n" } else { "" };
        let path = dir.join(format!("{name}.toml"));
        let mut file = std::fs::File::create(&path).unwrap();
        write!(
            file,
            "[output]\nevents_topic = \"{prefix}.{{tenant}}.events\"\nalerts_topic = \"{prefix}.{{tenant}}.alerts\"\n\
             incidents_topic = \"{prefix}.{{tenant}}.incidents\"\ndead_letter_topic = \"{prefix}.dlq\"\n\
             [kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{prefix}\"\ninput_topics = [\"{input}\"]\n{interval}\
             guarantee = \"{guarantee}\"\ninstance_id = \"{instance}\"\n\
             [kafka.consumer]\n{consumer}\n[topics]\ncreate = true\npartitions = 2\nreplication_factor = {replicas}\n[shutdown]\ngrace = \"20s\"\n\
             [admin]\nlisten = \"{listen}\"\n[rules]\nenabled = {rules}\n{more}"
        )
        .unwrap();
        path
    }

    pub fn write(&self, dir: &std::path::Path) -> std::path::PathBuf {
        self.write_as(dir, "acs-stream")
    }
}

/// A running `acs-stream run`; killed if the test fails before stopping it.
pub struct Processor(pub Child);

impl Processor {
    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().unwrap();
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start(config: &std::path::Path) -> Processor {
    Processor(
        Command::new(env!("CARGO_BIN_EXE_acs-stream"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", std::env::var("ACS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("acs-stream starts"),
    )
}

pub fn outputs(brokers: &str, prefix: &str, tenants: usize, at_least: usize) -> Vec<OutputRecord> {
    let mut topics: Vec<String> = (1..=tenants).map(|n| format!("{prefix}.tenant-{n:02}.events")).collect();
    topics.push(format!("{prefix}.dlq"));
    demo::read_outputs(brokers, &topics, 2, at_least, PATIENCE, |_| {}).expect("outputs arrive")
}

/// The message id each valid input's event must carry: its own, or the one generated from
/// its bytes.
pub fn expected_id(record: &SynthRecord) -> String {
    let value: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    match value.get("messageId").and_then(|id| id.as_str()) {
        Some(id) => id.to_owned(),
        None => acs_stream::decode::message_id::generate(&record.value),
    }
}

/// Waits until the group has committed every input partition up to its end.
pub fn wait_committed(brokers: &str, group: &str, input: &str, partitions: i32) {
    super::wait_committed(brokers, group, input, partitions, PATIENCE);
}

/// Stops a processor with SIGTERM; it must drain, commit and exit 0.
pub fn terminate(mut processor: Processor) {
    let status = Command::new("kill").args(["-TERM", &processor.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = processor.0.wait().unwrap();
    assert!(status.success(), "SIGTERM: {status:?}");
}

//! The Apache Kafka broker of the broker tests, through `tests/kafka/broker.sh`.
//!
//! [`shared`] is the broker every broker test of a test binary uses: the cluster named by
//! `ACS_TEST_BROKERS` (`tests/run.sh` starts one and sets it; point it at any cluster to test
//! against that one), or else a single node started for this test process and stopped when
//! the process ends. A broker test never passes without a broker: it runs on one, or fails
//! saying why, or, only when `ACS_TEST_SKIP_BROKER=1` says so, is skipped with its name on
//! stderr. [`Cluster`] starts a cluster of its own (three nodes for broker faults), whose
//! nodes a test can stop, kill, pause and restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A running cluster the tests can reach.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// What it is, e.g. `Apache Kafka 4.1.1 (1 node)`, for the test output.
    pub name: String,
}

/// Writes one line to the test run's output even when the test passes: libtest captures only
/// the `print!` family, not a direct write to stderr. For what the test output must name:
/// the broker a test ran on, a skipped test, a test's figures.
pub fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The name libtest gave the running test (its thread's name).
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("a broker test").to_owned()
}

/// The broker of this test binary's broker tests, named on stderr under the running test's
/// name; `None` (the test returns at once) only with the explicit `ACS_TEST_SKIP_BROKER=1`.
pub fn shared() -> Option<&'static Broker> {
    let test = test_name();
    if std::env::var("ACS_TEST_SKIP_BROKER").is_ok_and(|v| v == "1") {
        say(&format!("SKIPPED {test}: ACS_TEST_SKIP_BROKER=1 (this test needs a Kafka broker)"));
        return None;
    }
    static SHARED: OnceLock<(Broker, Option<Cluster>)> = OnceLock::new();
    let (broker, _) = SHARED.get_or_init(|| match std::env::var("ACS_TEST_BROKERS") {
        Ok(brokers) if !brokers.trim().is_empty() => {
            let name = std::env::var("ACS_TEST_BROKER_NAME").unwrap_or_else(|_| "a Kafka cluster".to_owned());
            (Broker { brokers, name }, None)
        }
        _ => {
            say("ACS_TEST_BROKERS is not set: starting a single-node Apache Kafka for this test process \
                 (tests/kafka/broker.sh; set ACS_TEST_BROKERS to use a running cluster, or \
                 ACS_TEST_SKIP_BROKER=1 to skip the broker tests)");
            let cluster = Cluster::start(1);
            (cluster.broker.clone(), Some(cluster))
        }
    });
    say(&format!("{test}: on {} at {}", broker.name, broker.brokers));
    Some(broker)
}

/// What [`Cluster::node`] does to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// SIGTERM, and wait for the node to exit (a controlled shutdown).
    Stop,
    /// SIGKILL, and wait for the process to be gone.
    Kill,
    /// SIGSTOP.
    Pause,
    /// SIGCONT.
    Resume,
    /// Start it again on its data directory and ports; returns once it logged its start.
    Start,
    /// Running again, whatever was done to it: resumed if paused, started if gone.
    Heal,
}

impl NodeAction {
    fn word(self) -> &'static str {
        match self {
            NodeAction::Stop => "stop",
            NodeAction::Kill => "kill",
            NodeAction::Pause => "pause",
            NodeAction::Resume => "resume",
            NodeAction::Start => "start",
            NodeAction::Heal => "heal",
        }
    }
}

/// A cluster started by this test process in a directory of its own, stopped when dropped
/// (and, should the process die first, by broker.sh's watcher).
#[derive(Debug)]
pub struct Cluster {
    pub broker: Broker,
    /// Keeps the data directories until the cluster is stopped.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `nodes` (1 or 3) nodes and waits until the cluster is ready (metadata, a group
    /// round-trip, a transaction); panics with broker.sh's report otherwise.
    pub fn start(nodes: u32) -> Cluster {
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let output = script()
            .arg("start")
            .arg(cluster_dir(dir.path()))
            .arg(nodes.to_string())
            .env("ACS_BROKER_OWNER_PID", std::process::id().to_string())
            .output()
            .expect("tests/kafka/broker.sh runs");
        assert!(
            output.status.success(),
            "Apache Kafka ({nodes} nodes) did not start:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let env = String::from_utf8(output.stdout).expect("broker.sh prints text");
        let value = |name: &str| {
            env.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_else(|| panic!("broker.sh printed no {name}: {env}"))
        };
        let broker = Broker { brokers: value("ACS_TEST_BROKERS"), name: value("ACS_TEST_BROKER_NAME") };
        say(&format!("started {} at {}", broker.name, broker.brokers));
        Cluster { broker, dir }
    }

    /// Does `action` to node `id` (1-based); panics with broker.sh's report when it fails.
    pub fn node(&self, id: u32, action: NodeAction) {
        let output = script()
            .arg("node")
            .arg(cluster_dir(self.dir.path()))
            .arg(id.to_string())
            .arg(action.word())
            .output()
            .expect("tests/kafka/broker.sh runs");
        assert!(output.status.success(), "node {id} {}: {}", action.word(), String::from_utf8_lossy(&output.stderr));
    }

    /// The readiness check again: every node registered, a group round-trip, a transaction.
    pub fn ready(&self) {
        let output = script().arg("ready").arg(cluster_dir(self.dir.path())).output().expect("broker.sh runs");
        assert!(output.status.success(), "not ready: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = script().arg("stop").arg(cluster_dir(self.dir.path())).status();
    }
}

fn cluster_dir(dir: &Path) -> PathBuf {
    dir.join("cluster")
}

fn script() -> Command {
    let mut command = Command::new("bash");
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/broker.sh"));
    command
}

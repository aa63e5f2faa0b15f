//! Faults on a three-node Apache Kafka cluster (replication factor 3, min ISR 2), each
//! scenario in both delivery modes, with the default rules, sessions, the changelog and the
//! tenant topic on, and input flowing during the fault: instances restarted one at a time,
//! killed with SIGKILL, scaled out and in; a broker holding leaders killed, a broker paused,
//! the whole cluster down; an output the brokers refuse for good. Each checks, per input
//! record, by what a consumer reads afterwards (`tests/common/checks.rs`): nothing lost,
//! duplicates counted (at least once) or none (exactly once, `read_committed`), sessions as an
//! uninterrupted run's, the group committed to the end (lag 0) without a restart by hand.
//!
//! `ACS_FAULTS_SCHEDULE=long` runs the long schedule (more input, 20 kills); each scenario
//! prints one line of figures, and appends it to `ACS_FAULTS_REPORT` when set (tab-separated:
//! scenario, mode, inputs, lost, duplicates, seconds from the end of the fault to lag 0).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use acs_stream::synth::{Generator, SynthOptions, SynthRecord};
use common::BROKER_PATIENCE as PATIENCE;
use common::broker::{Cluster, NodeAction, say, test_name};
use common::checks::{Checked, Run, check_at_least_once, check_exactly_once};
use common::processor::{Processor, RunConfig, start};
use common::topics::{create_replicated_topics, leaders_and_isr, now_ms, produce_acknowledged, unique};

const INPUT_PARTITIONS: i32 = 6;
/// Partitions each instance consumes from: the input's and the tenant topic's (created with
/// as many).
const ASSIGNABLE: usize = 2 * INPUT_PARTITIONS as usize;

/// How much each scenario does.
struct Schedule {
    inputs: usize,
    kills: usize,
    /// How long a paused broker stays paused, and the whole cluster down.
    pause: Duration,
    outage: Duration,
}

fn schedule() -> Schedule {
    match std::env::var("ACS_FAULTS_SCHEDULE").as_deref() {
        Ok("long") => {
            Schedule { inputs: 6_000, kills: 20, pause: Duration::from_secs(20), outage: Duration::from_secs(30) }
        }
        _ => Schedule { inputs: 1_500, kills: 3, pause: Duration::from_secs(20), outage: Duration::from_secs(30) },
    }
}

/// The three-node cluster of this test binary, and the right to use it: one scenario at a
/// time, since a broker fault concerns every client. `None` (the test returns) only with
/// `ACS_TEST_SKIP_BROKER=1`, which the output names.
fn cluster() -> Option<(MutexGuard<'static, ()>, &'static Cluster)> {
    if std::env::var("ACS_TEST_SKIP_BROKER").is_ok_and(|v| v == "1") {
        say(&format!("SKIPPED {}: ACS_TEST_SKIP_BROKER=1 (this test starts a three-node cluster)", test_name()));
        return None;
    }
    static SERIAL: Mutex<()> = Mutex::new(());
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    let serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = CLUSTER.get_or_init(|| Cluster::start(3));
    // A scenario that failed during its fault may have left a node killed or paused: every
    // node runs again before the next one, so that one failure does not fail the rest.
    if !WHOLE.swap(false, Ordering::SeqCst) {
        // Together: a node waits for its controller quorum to start.
        std::thread::scope(|scope| {
            for node in 1..=3 {
                scope.spawn(move || cluster.node(node, NodeAction::Heal));
            }
        });
        cluster.ready();
    }
    say(&format!("{}: on {} at {}", test_name(), cluster.broker.name, cluster.broker.brokers));
    Some((serial, cluster))
}

/// Whether the last scenario left the cluster whole (it ended without failing); a new
/// cluster is.
static WHOLE: AtomicBool = AtomicBool::new(true);

/// A free loopback port (another process may take it before the instance binds it; then
/// the instance fails to start, and the scenario says so).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` on the admin server at `port`: the status and the body; `None` when nothing
/// answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Polls `condition` every 200 ms until it holds, failing the test after `PATIENCE`.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    wait_until_or(what, || if condition() { Ok(()) } else { Err(String::new()) });
}

/// [`wait_until`], the failure showing what `condition` last saw instead.
fn wait_until_or(what: &str, mut condition: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        let last = match condition() {
            Ok(()) => return,
            Err(last) => last,
        };
        assert!(started.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}; {last}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One `acs-stream run` of the scenario.
struct Instance {
    config: std::path::PathBuf,
    port: u16,
    process: Option<Processor>,
}

impl Instance {
    fn start(&mut self) {
        assert!(self.process.is_none(), "already running");
        self.process = Some(start(&self.config));
    }

    /// SIGTERM: it must drain, commit and exit 0.
    fn terminate(&mut self) {
        let mut process = self.process.take().expect("running");
        let status = std::process::Command::new("kill").args(["-TERM", &process.0.id().to_string()]).status().unwrap();
        assert!(status.success());
        let status = process.0.wait().unwrap();
        assert!(status.success(), "SIGTERM: {status:?}");
    }

    fn kill(&mut self) {
        self.process.take().expect("running").kill();
    }

    /// Still running (not exited on its own).
    fn alive(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.0.try_wait().unwrap().is_none())
    }

    /// `/readyz`: the status and the body.
    fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let (status, body) = http_get(self.port, "/readyz")?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    /// Partitions it owns, when it says it is ready.
    fn assigned(&self) -> Option<usize> {
        match self.readyz() {
            Some((200, body)) => body["assignedPartitions"].as_u64().map(|n| n as usize),
            _ => None,
        }
    }
}

/// The instances of a scenario.
struct Fleet {
    instances: Vec<Instance>,
}

impl Fleet {
    /// Waits until the running instances are ready and own every partition between them.
    fn settled(&self) {
        wait_until("the running instances ready, owning every partition", || {
            let running: Vec<&Instance> = self.instances.iter().filter(|i| i.process.is_some()).collect();
            let owned: Option<Vec<usize>> = running.iter().map(|i| i.assigned()).collect();
            owned.is_some_and(|owned| {
                owned.iter().all(|n| *n > 0 || running.len() > ASSIGNABLE) && owned.iter().sum::<usize>() == ASSIGNABLE
            })
        });
    }

    fn running(&mut self) -> Vec<usize> {
        (0..self.instances.len()).filter(|i| self.instances[*i].process.is_some()).collect()
    }
}

/// Produces the scenario's input while the fault happens: a chunk every 250 ms until the
/// fault is over, then the rest at once. Every record acknowledged (acks=all, idempotent).
struct Feeder {
    over: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Feeder {
    fn start(brokers: &str, input: &str, inputs: &[SynthRecord]) -> Feeder {
        let over = Arc::new(AtomicBool::new(false));
        let (brokers, input, inputs, flag) = (brokers.to_owned(), input.to_owned(), inputs.to_vec(), over.clone());
        let thread = std::thread::spawn(move || {
            let mut chunks = inputs.chunks(25);
            while !flag.load(Ordering::Relaxed) {
                let Some(chunk) = chunks.next() else { return };
                produce_acknowledged(&brokers, &input, chunk);
                std::thread::sleep(Duration::from_millis(250));
            }
            let rest: Vec<SynthRecord> = chunks.flatten().cloned().collect();
            produce_acknowledged(&brokers, &input, &rest);
        });
        Feeder { over, thread }
    }

    fn finish(self) {
        self.over.store(true, Ordering::Relaxed);
        self.thread.join().expect("the input produced");
    }
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    RollingRestart,
    KillInstances,
    ScaleOutAndIn,
    LeaderBrokerKilled,
    BrokerPaused,
    ClusterDown,
    RefusedOutput,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::RollingRestart => "rolling restart of 3 instances",
            Fault::KillInstances => "SIGKILL of instances, 3 running",
            Fault::ScaleOutAndIn => "scale out 1 → 3 and in 3 → 1",
            Fault::LeaderBrokerKilled => "SIGKILL of a broker holding leaders",
            Fault::BrokerPaused => "a broker paused (SIGSTOP)",
            Fault::ClusterDown => "the whole cluster down",
            Fault::RefusedOutput => "an output refused for good",
        }
    }
}

/// Runs `fault` in `guarantee` ("at_least_once" or "exactly_once") and checks the outcome.
fn scenario(fault: Fault, guarantee: &str) {
    let Some((_serial, cluster)) = cluster() else { return };
    let schedule = schedule();
    let brokers = cluster.broker.brokers.clone();
    let mode = if guarantee == "exactly_once" { "eos" } else { "alos" };
    let prefix = unique(&format!("fault-{mode}"));
    let input = format!("{prefix}.raw");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(create_replicated_topics(&brokers, &[(&input, INPUT_PARTITIONS)], 3));
    let refused_tenant = (fault == Fault::RefusedOutput).then_some("tenant-02");
    if let Some(tenant) = refused_tenant {
        // That tenant's events topic takes no record as large as an event.
        let topic = format!("{prefix}.{tenant}.events");
        runtime.block_on(common::topics::create_topics_with_replicas(
            &brokers,
            &[(&topic, common::checks::OUTPUT_PARTITIONS)],
            &[("max.message.bytes", "200")],
            3,
        ));
    }
    let seed = 100 + fault as u64;
    let inputs = Generator::new(SynthOptions {
        seed,
        tenants: 2,
        malformed_ratio: 0.02,
        start_ms: now_ms() - 3_600_000,
        ..SynthOptions::stress()
    })
    .take_records(schedule.inputs);

    let dir = tempfile::tempdir().unwrap();
    let mut fleet = Fleet {
        instances: (0..3)
            .map(|n| {
                let instance = format!("i{n}");
                let listen = format!("127.0.0.1:{}", free_port());
                let config = RunConfig {
                    rules: true,
                    guarantee,
                    instance: &instance,
                    replicas: 3,
                    listen: &listen,
                    ..RunConfig::new(&brokers, &input, &prefix)
                }
                .write_as(dir.path(), &instance);
                let port = listen.rsplit(':').next().unwrap().parse().unwrap();
                Instance { config, port, process: None }
            })
            .collect(),
    };
    let first = if fault == Fault::ScaleOutAndIn { 1 } else { 3 };
    for instance in &mut fleet.instances[..first] {
        instance.start();
    }
    fleet.settled();

    let feeder = Feeder::start(&brokers, &input, &inputs);
    let mut random = fastrand::Rng::with_seed(seed);
    std::thread::sleep(Duration::from_millis(random.u64(1_000..3_000)));
    match fault {
        Fault::RollingRestart => {
            for n in 0..3 {
                fleet.instances[n].terminate();
                fleet.instances[n].start();
                fleet.settled();
            }
        }
        Fault::KillInstances => {
            for _ in 0..schedule.kills {
                let victim = random.usize(0..3);
                fleet.instances[victim].kill();
                // Its partitions move to the survivors, which restore its sessions.
                fleet.settled();
                fleet.instances[victim].start();
                fleet.settled();
                std::thread::sleep(Duration::from_millis(random.u64(0..1_500)));
            }
        }
        Fault::ScaleOutAndIn => {
            for n in 1..3 {
                fleet.instances[n].start();
                fleet.settled();
            }
            for n in (1..3).rev() {
                fleet.instances[n].terminate();
                fleet.settled();
            }
        }
        Fault::LeaderBrokerKilled => {
            let victim = leaders_and_isr(&brokers, &input)[&0].0;
            cluster.node(victim as u32, NodeAction::Kill);
            // The instances say the cluster is degraded, and go on.
            let mut seen = Vec::new();
            wait_until_or("an instance reporting under-replicated partitions", || {
                seen = fleet.instances.iter().map(Instance::readyz).collect();
                if seen
                    .iter()
                    .flatten()
                    .any(|(status, body)| *status == 503 && body.to_string().contains("under-replicated"))
                {
                    Ok(())
                } else {
                    Err(format!("/readyz of each instance: {seen:?}"))
                }
            });
            std::thread::sleep(Duration::from_secs(5));
            cluster.node(victim as u32, NodeAction::Start);
            fleet.settled();
        }
        Fault::BrokerPaused => {
            let victim = leaders_and_isr(&brokers, &input)[&0].0;
            cluster.node(victim as u32, NodeAction::Pause);
            std::thread::sleep(schedule.pause);
            cluster.node(victim as u32, NodeAction::Resume);
        }
        Fault::ClusterDown => {
            std::thread::scope(|scope| {
                for node in 1..=3 {
                    scope.spawn(move || cluster.node(node, NodeAction::Kill));
                }
            });
            std::thread::sleep(schedule.outage);
            for instance in &mut fleet.instances {
                assert!(instance.alive(), "an instance exited while the cluster was down");
            }
            // A KRaft quorum elects its leader once two controllers are up: started together.
            std::thread::scope(|scope| {
                for node in 1..=3 {
                    scope.spawn(move || cluster.node(node, NodeAction::Start));
                }
            });
            cluster.ready();
        }
        Fault::RefusedOutput => {}
    }
    let fault_over = Instant::now();
    feeder.finish();
    // Recovered by itself: committed to the end of the input, and of the tenant topic, whose
    // records the input's events forward and which is consumed after them (lag 0).
    common::processor::wait_committed(&brokers, &prefix, &input, INPUT_PARTITIONS);
    common::processor::wait_committed(&brokers, &prefix, &format!("{prefix}.tenant-signals"), INPUT_PARTITIONS);
    let recovery = fault_over.elapsed();
    for instance in &mut fleet.instances {
        if instance.process.is_some() {
            assert!(instance.alive(), "an instance exited on its own");
        }
    }
    // Every instance ready again (the degraded cluster reported no longer).
    fleet.settled();
    for n in fleet.running() {
        fleet.instances[n].terminate();
    }

    let run =
        Run { brokers: &brokers, prefix: &prefix, input: &input, input_partitions: INPUT_PARTITIONS, inputs: &inputs };
    let checked: Checked = if guarantee == "exactly_once" {
        check_exactly_once(&run, refused_tenant)
    } else {
        check_at_least_once(&run, refused_tenant)
    };
    if matches!(fault, Fault::RollingRestart | Fault::ScaleOutAndIn) {
        // A graceful handover commits what it revokes: nothing is processed twice.
        assert_eq!(checked.duplicates, 0, "{}: a graceful handover replayed input", fault.name());
    }
    if fault == Fault::RefusedOutput {
        assert!(checked.produce_failed > 0, "the refused tenant's events were dead-lettered");
    }
    let line = format!(
        "{}\t{guarantee}\t{}\t0\t{}\t{:.1}",
        fault.name(),
        inputs.len(),
        checked.duplicates,
        recovery.as_secs_f64()
    );
    say(&format!(
        "fault: {} ({guarantee}): {} inputs, 0 lost, {} duplicates, lag 0 {:.1} s after the fault; {} events, {} dead \
         letters ({} produce_failed), {} session alerts as the reference",
        fault.name(),
        inputs.len(),
        checked.duplicates,
        recovery.as_secs_f64(),
        checked.events,
        checked.dead_letters,
        checked.produce_failed,
        checked.session_alerts
    ));
    WHOLE.store(true, Ordering::SeqCst);
    if let Ok(path) = std::env::var("ACS_FAULTS_REPORT") {
        let mut report = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        writeln!(report, "{line}").unwrap();
    }
}

#[test]
fn rolling_restart_at_least_once() {
    scenario(Fault::RollingRestart, "at_least_once");
}

#[test]
fn rolling_restart_exactly_once() {
    scenario(Fault::RollingRestart, "exactly_once");
}

#[test]
fn killed_instances_at_least_once() {
    scenario(Fault::KillInstances, "at_least_once");
}

#[test]
fn killed_instances_exactly_once() {
    scenario(Fault::KillInstances, "exactly_once");
}

#[test]
fn scale_out_and_in_at_least_once() {
    scenario(Fault::ScaleOutAndIn, "at_least_once");
}

#[test]
fn scale_out_and_in_exactly_once() {
    scenario(Fault::ScaleOutAndIn, "exactly_once");
}

#[test]
fn leader_broker_killed_at_least_once() {
    scenario(Fault::LeaderBrokerKilled, "at_least_once");
}

#[test]
fn leader_broker_killed_exactly_once() {
    scenario(Fault::LeaderBrokerKilled, "exactly_once");
}

#[test]
fn broker_paused_at_least_once() {
    scenario(Fault::BrokerPaused, "at_least_once");
}

#[test]
fn broker_paused_exactly_once() {
    scenario(Fault::BrokerPaused, "exactly_once");
}

#[test]
fn cluster_down_at_least_once() {
    scenario(Fault::ClusterDown, "at_least_once");
}

#[test]
fn cluster_down_exactly_once() {
    scenario(Fault::ClusterDown, "exactly_once");
}

#[test]
fn refused_output_at_least_once() {
    scenario(Fault::RefusedOutput, "at_least_once");
}

#[test]
fn refused_output_exactly_once() {
    scenario(Fault::RefusedOutput, "exactly_once");
}

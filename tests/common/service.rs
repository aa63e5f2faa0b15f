//! A service running in the tests' own process (`runtime::run_observed`), observed through
//! the partitions it owns and stopped on demand.

use std::time::Duration;

use acs_stream::config::Config;
use acs_stream::kafka::runtime::{self, Assignment, RunSummary};
use acs_stream::model::ReasonCatalog;
use acs_stream::pipeline::Pipeline;

/// A service running in the background, stopped on demand.
pub struct Service {
    stop: tokio::sync::oneshot::Sender<()>,
    assignment: tokio::sync::watch::Receiver<Assignment>,
    task: tokio::task::JoinHandle<RunSummary>,
    /// How long [`Service::owns`] waits: a guard against a hang, not a speed assertion.
    patience: Duration,
}

/// The service's logs, to the test's output, at `ACS_TEST_LOG` (e.g. `warn`): off by default.
pub fn logs() {
    if let Ok(filter) = std::env::var("ACS_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

impl Service {
    /// Starts the service on `config` (the rules as configured, file included).
    pub fn start(config: Config, patience: Duration) -> Service {
        logs();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (assigned, assignment) = tokio::sync::watch::channel(Assignment::new());
        let task = tokio::spawn(async move {
            // As `acs-stream run` builds it: the rules file, when one is set.
            let pipeline =
                Pipeline::new(&config, ReasonCatalog::builtin()).unwrap().with_rules(config.rules().unwrap());
            let shutdown = async {
                let _ = stopped.await;
            };
            runtime::run_observed(&config, &pipeline, shutdown, assigned)
                .await
                .unwrap_or_else(|error| panic!("the service stopped: {error}"))
        });
        Service { stop, assignment, task, patience }
    }

    /// Waits until the partitions it owns satisfy `condition`.
    pub async fn owns(&mut self, condition: impl FnMut(&Assignment) -> bool) -> Assignment {
        let owned = tokio::time::timeout(self.patience, self.assignment.wait_for(condition));
        owned.await.expect("assignment within the patience").expect("service running").clone()
    }

    /// Asks it to stop (drain, commit) and returns what it did.
    pub async fn stop(self) -> RunSummary {
        let _ = self.stop.send(());
        self.task.await.expect("the service task")
    }
}

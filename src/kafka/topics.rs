//! Topic administration: the internal topics before subscribing, and each output topic on
//! first sight (when `topics.create` is on). Blocking: called from the service loop's own
//! thread, the admin client's futures are driven by the tokio runtime's handle.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::config::Config;

/// Creates topics when absent (when enabled), and remembers those it has seen.
pub(super) struct Topics {
    admin: Option<Arc<AdminClient<DefaultClientContext>>>,
    runtime: tokio::runtime::Handle,
    known: HashSet<String>,
    /// A tenant's topics beside its events topic, created with it when rules are on (its
    /// alerts, and its incidents, compacted): at a tenant's first event rather than at its
    /// first alert, which may come while a broker is away.
    tenant_topics: Vec<(crate::encode::TopicTemplate, bool)>,
    /// Tenants whose topics are all there.
    tenants: HashSet<String>,
    partitions: i32,
    replication_factor: i32,
    configs: Vec<(String, String)>,
}

impl Topics {
    /// `admin`: `None` when `topics.create` is off (every call is then a no-op).
    pub fn new(
        config: &Config,
        admin: Option<AdminClient<DefaultClientContext>>,
        runtime: tokio::runtime::Handle,
    ) -> Topics {
        Topics {
            admin: admin.map(Arc::new),
            runtime,
            known: HashSet::new(),
            tenant_topics: if config.rules.enabled {
                [config.alerts_template().map(|t| (t, false)), config.incidents_template().map(|t| (t, true))]
                    .into_iter()
                    .flatten()
                    .collect()
            } else {
                Vec::new()
            },
            tenants: HashSet::new(),
            partitions: config.topics.partitions,
            replication_factor: config.topics.replication_factor,
            configs: config.topics.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// Creates the internal topics when absent: the repartition and tenant topics (if any)
    /// with as many partitions as the input topic with the most (at least
    /// `topics.partitions`), and the compacted changelog with as many as the partitions
    /// processed: processed partition N writes to changelog partition N.
    pub fn ensure_internal<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        input_topics: &[String],
        repartition: Option<&str>,
        tenant: Option<&str>,
        changelog: Option<&str>,
    ) {
        if self.admin.is_none() || (repartition.is_none() && tenant.is_none() && changelog.is_none()) {
            return;
        }
        let mut processed = partitions_of(consumer, input_topics).max(self.partitions).max(1);
        let inputs = processed;
        for topic in [repartition, tenant].into_iter().flatten() {
            self.create(topic, inputs, &[("cleanup.policy".to_owned(), "delete".to_owned())], INTERNAL_TIMEOUT);
            self.known.insert(topic.to_owned());
            // It may exist already, with more partitions.
            processed = processed.max(partitions_of(consumer, &[topic.to_owned()]));
        }
        if let Some(topic) = changelog {
            self.create(topic, processed, &[("cleanup.policy".to_owned(), "compact".to_owned())], INTERNAL_TIMEOUT);
            self.known.insert(topic.to_owned());
        }
    }

    /// Creates `topic` on first sight, with `topics.partitions`, replication and configs, in
    /// the background (see [`Topics::create_in_background`]).
    pub fn ensure(&mut self, topic: &str) {
        if self.admin.is_none() || self.known.contains(topic) {
            return;
        }
        self.create_in_background(topic, self.configs.clone());
    }

    /// Creates the topics of `tenant` beside its events topic (see `tenant_topics`) on its
    /// first sight.
    pub fn ensure_tenant(&mut self, tenant: &str) {
        if self.admin.is_none() || self.tenant_topics.is_empty() || self.tenants.contains(tenant) {
            return;
        }
        let topics: Vec<(String, bool)> =
            self.tenant_topics.iter().map(|(template, compacted)| (template.render(tenant), *compacted)).collect();
        for (topic, compacted) in &topics {
            if *compacted { self.ensure_compacted(topic) } else { self.ensure(topic) }
        }
        if topics.iter().all(|(topic, _)| self.known.contains(topic)) {
            self.tenants.insert(tenant.to_owned());
        }
    }

    /// [`Topics::ensure`], the topic created compacted (`cleanup.policy=compact` over
    /// `topics.configs`): the latest record of a key is what it holds (incidents).
    pub fn ensure_compacted(&mut self, topic: &str) {
        if self.admin.is_none() || self.known.contains(topic) {
            return;
        }
        let mut configs: Vec<(String, String)> =
            self.configs.iter().filter(|(key, _)| key != "cleanup.policy").cloned().collect();
        configs.push(("cleanup.policy".to_owned(), "compact".to_owned()));
        self.create_in_background(topic, configs);
    }

    /// Asks the brokers to create `topic` without holding the service loop: a broker or the
    /// controller away (a paused broker never answers) must not stall processing, nor the
    /// group's rebalances, which need the loop to poll. Records produced to the topic wait
    /// in the producer until it exists. An unanswered request is asked again
    /// ([`CREATE_ATTEMPTS`] times, [`RETRY_AFTER`] apart). Remembered at once: asked once.
    fn create_in_background(&mut self, topic: &str, configs: Vec<(String, String)>) {
        let Some(admin) = self.admin.clone() else { return };
        self.known.insert(topic.to_owned());
        let (topic, partitions, replication) = (topic.to_owned(), self.partitions, self.replication_factor);
        self.runtime.spawn(async move {
            let options =
                AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT)).operation_timeout(Some(ADMIN_TIMEOUT));
            for attempt in 1..=CREATE_ATTEMPTS {
                let mut new_topic = NewTopic::new(&topic, partitions, TopicReplication::Fixed(replication));
                for (key, value) in &configs {
                    new_topic = new_topic.set(key, value);
                }
                let unanswered = match admin.create_topics([&new_topic], &options).await {
                    Ok(results) => match results.into_iter().next() {
                        Some(Ok(_)) => {
                            info!(topic, "Created topic.");
                            false
                        }
                        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => false,
                        Some(Err((
                            _,
                            code @ (RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::OperationTimedOut),
                        ))) => {
                            warn!(topic, attempt, error = %code, "Cannot create topic yet; asking again.");
                            true
                        }
                        Some(Err((_, code))) => {
                            warn!(topic, error = %code, "Cannot create topic; producing anyway.");
                            false
                        }
                    },
                    Err(error) => {
                        warn!(topic, attempt, %error, "Cannot create topic yet; asking again.");
                        true
                    }
                };
                if !unanswered {
                    return;
                }
                tokio::time::sleep(RETRY_AFTER).await;
            }
            warn!(topic, "Cannot create topic; producing anyway.");
        });
    }

    /// Asks the brokers to create `topic`, waiting at most `timeout` ([`ADMIN_TIMEOUT`] for an
    /// output seen while processing: the service loop must not stall while a broker or the
    /// controller is away, and a paused broker never answers).
    fn create(&self, topic: &str, partitions: i32, configs: &[(String, String)], timeout: Duration) -> Creation {
        let Some(admin) = self.admin.as_deref() else { return Creation::Done };
        let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(self.replication_factor));
        for (key, value) in configs {
            new_topic = new_topic.set(key, value);
        }
        let options = AdminOptions::new().request_timeout(Some(timeout)).operation_timeout(Some(timeout));
        match self.runtime.block_on(admin.create_topics([&new_topic], &options)) {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => {
                    info!(topic, "Created topic.");
                    Creation::Done
                }
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Creation::Done,
                Some(Err((_, code @ (RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::OperationTimedOut)))) => {
                    warn!(topic, error = %code, "Cannot create topic yet; producing anyway, asking again later.");
                    Creation::Unanswered
                }
                Some(Err((_, code))) => {
                    warn!(topic, error = %code, "Cannot create topic; producing anyway.");
                    Creation::Done
                }
            },
            Err(error) => {
                warn!(topic, %error, "Cannot create topic yet; producing anyway, asking again later.");
                Creation::Unanswered
            }
        }
    }
}

/// How long one request to create an output topic may wait for its answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times an unanswered creation of an output topic is asked.
const CREATE_ATTEMPTS: u32 = 30;

/// How long the creation of the internal topics may take, before subscribing.
const INTERNAL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long after an unanswered creation a topic is asked for again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What became of a creation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Creation {
    /// Created, there already, or refused for good.
    Done,
    /// Not answered in time: ask again later.
    Unanswered,
}

/// The most partitions of a topic named (or matched, `^regex`) by `topics`; 0 when none is
/// known or the metadata cannot be read.
fn partitions_of<C: ConsumerContext>(consumer: &BaseConsumer<C>, topics: &[String]) -> i32 {
    match consumer.fetch_metadata(None, Duration::from_secs(10)) {
        Ok(metadata) => {
            let patterns: Vec<regex::Regex> =
                topics.iter().filter(|t| t.starts_with('^')).filter_map(|t| regex::Regex::new(t).ok()).collect();
            metadata
                .topics()
                .iter()
                .filter(|t| topics.iter().any(|n| n == t.name()) || patterns.iter().any(|r| r.is_match(t.name())))
                .map(|t| t.partitions().len() as i32)
                .max()
                .unwrap_or(0)
        }
        Err(error) => {
            warn!(%error, "Cannot read partition counts; sizing internal topics by topics.partitions.");
            0
        }
    }
}

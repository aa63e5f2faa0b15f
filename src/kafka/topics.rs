//! Topic administration: the internal topics before subscribing, and each output topic on
//! first sight (when `topics.create` is on). Blocking: called from the service loop's own
//! thread, the admin client's futures are driven by the tokio runtime's handle.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::config::Config;

/// Creates topics when absent (when enabled), and remembers those it has seen.
pub(super) struct Topics {
    admin: Option<AdminClient<DefaultClientContext>>,
    runtime: tokio::runtime::Handle,
    known: HashSet<String>,
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
            admin,
            runtime,
            known: HashSet::new(),
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
            self.create(topic, inputs, &[("cleanup.policy".to_owned(), "delete".to_owned())]);
            self.known.insert(topic.to_owned());
            // It may exist already, with more partitions.
            processed = processed.max(partitions_of(consumer, &[topic.to_owned()]));
        }
        if let Some(topic) = changelog {
            self.create(topic, processed, &[("cleanup.policy".to_owned(), "compact".to_owned())]);
            self.known.insert(topic.to_owned());
        }
    }

    /// Creates `topic` on first sight, with `topics.partitions`, replication and configs.
    pub fn ensure(&mut self, topic: &str) {
        if self.admin.is_none() || self.known.contains(topic) {
            return;
        }
        self.create(topic, self.partitions, &self.configs.clone());
        // Remembered either way: a topic that cannot be created is not asked for again on
        // every record (producing to it then fails into the dead-letter topic).
        self.known.insert(topic.to_owned());
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
        self.create(topic, self.partitions, &configs);
        self.known.insert(topic.to_owned());
    }

    fn create(&self, topic: &str, partitions: i32, configs: &[(String, String)]) {
        let Some(admin) = &self.admin else { return };
        let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(self.replication_factor));
        for (key, value) in configs {
            new_topic = new_topic.set(key, value);
        }
        match self.runtime.block_on(admin.create_topics([&new_topic], &AdminOptions::new())) {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => info!(topic, "Created topic."),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {}
                Some(Err((_, code))) => warn!(topic, error = %code, "Cannot create topic; producing anyway."),
                None => {}
            },
            Err(error) => warn!(topic, %error, "Cannot create topic; producing anyway."),
        }
    }
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

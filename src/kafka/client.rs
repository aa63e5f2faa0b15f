//! librdkafka settings, built in exactly one place per client: what correctness depends on
//! is set here, the user's passthrough map is applied last (configuration validation has
//! already refused passthrough keys that would undo a fixed setting).

use rdkafka::ClientConfig;

use crate::config::Config;

/// The consumer: offsets are stored and committed by the runtime only, after every output of
/// a record is acknowledged; prefetch is bounded.
pub fn consumer(config: &Config) -> ClientConfig {
    let kafka = &config.kafka;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        // Commits are explicit: on a timer, on revoke and on shutdown (never automatic).
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Only committed transactional records: never process an aborted upstream write.
        .set("isolation.level", "read_committed")
        .set("queued.max.messages.kbytes", kafka.max_prefetch_kbytes.to_string())
        // Once the prefetch queue is full, librdkafka postpones the next fetch of a partition
        // by this much (1 s by default): the queue drains in milliseconds, then processing
        // stalls for the rest of the second (librdkafka #2879). 20 ms refills it in time at a
        // negligible cost in fetch requests. The passthrough map may change it.
        .set("fetch.queue.backoff.ms", "20")
        // A new group starts from the beginning: nothing upstream wrote is skipped.
        .set("auto.offset.reset", "earliest")
        // Lag per partition and broker states, for the metrics and /readyz.
        .set("statistics.interval.ms", "5000");
    for (key, value) in &kafka.consumer {
        client.set(key, value);
    }
    client
}

/// The consumer that reads changelog partitions back on assignment: no group (partitions
/// are assigned by hand, nothing is committed), end of partition reported. The passthrough
/// map comes first, for security and networking settings; what the read depends on wins.
pub fn restore_consumer(config: &Config) -> ClientConfig {
    let kafka = &config.kafka;
    let mut client = ClientConfig::new();
    // As for the consumer (the passthrough map may change it): a full prefetch queue (records
    // are applied more slowly than they are fetched) must not postpone the next fetch by a
    // second (librdkafka #2879): measured on the sessions bench (BENCHMARKS.md).
    client.set("fetch.queue.backoff.ms", "20");
    // Not a group member: a static member id (the service's) would be wrong here.
    for (key, value) in kafka.consumer.iter().filter(|(key, _)| key.as_str() != "group.instance.id") {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("{}.restore", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        // The read is over at each partition's end: do not wait long for more there.
        .set("fetch.wait.max.ms", "50");
    client
}

/// The producer: idempotent, acknowledged by all in-sync replicas, retrying retriable
/// errors without end (`message.timeout.ms = 0`) with exponential backoff: a retriable error
/// is backpressure, never loss.
pub fn producer(config: &Config) -> ClientConfig {
    let kafka = &config.kafka;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0")
        .set("retry.backoff.ms", kafka.retry_backoff.as_millis().to_string())
        .set("retry.backoff.max.ms", kafka.retry_backoff_max.as_millis().to_string())
        .set("linger.ms", "5");
    for (key, value) in &kafka.producer {
        client.set(key, value);
    }
    client
}

/// The exactly-once producer: the idempotent producer's settings, a transactional id stable
/// across restarts of this instance (`<group>-<instance>`: a restarted instance fences its
/// zombie and aborts what it left open) and the transaction timeout. librdkafka requires the
/// message timeout to stay within the transaction's: a record not acknowledged by then fails,
/// and its transaction aborts and is done again (never a loss).
pub fn transactional_producer(config: &Config) -> ClientConfig {
    let kafka = &config.kafka;
    let mut client = producer(config);
    let timeout = kafka.transaction_timeout.as_millis().to_string();
    client
        .set("transactional.id", kafka.transactional_id())
        .set("transaction.timeout.ms", &timeout)
        .set("message.timeout.ms", &timeout);
    client
}

/// The admin client (topic creation).
pub fn admin(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.kafka.brokers);
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_settings_are_set_and_passthrough_comes_last() {
        let file = "[kafka]\nbrokers = \"b:1\"\n[kafka.consumer]\n\"fetch.min.bytes\" = 1\n\"auto.offset.reset\" = \"latest\"\n[kafka.producer]\n\"linger.ms\" = 20\n";
        let config = Config::layered(Some(("t", file)), []).unwrap();
        let consumer = consumer(&config);
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(consumer.get("bootstrap.servers"), Some("b:1"));
        assert_eq!(consumer.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("20"));
        assert_eq!(consumer.get("fetch.min.bytes"), Some("1"));
        assert_eq!(consumer.get("auto.offset.reset"), Some("latest"), "the user's choice wins where allowed");
        let restore = restore_consumer(&config);
        assert_eq!(restore.get("fetch.min.bytes"), Some("1"), "the passthrough applies");
        assert_eq!(restore.get("enable.partition.eof"), Some("true"));
        assert_eq!(restore.get("auto.offset.reset"), Some("earliest"), "what the read depends on wins");
        assert_eq!(restore.get("fetch.queue.backoff.ms"), Some("20"));
        let producer = producer(&config);
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("message.timeout.ms"), Some("0"));
        assert_eq!(producer.get("retry.backoff.max.ms"), Some("10000"));
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("transactional.id"), None, "at least once: no transactions");
    }

    #[test]
    fn the_transactional_producer_keeps_the_idempotent_settings() {
        let file = "[kafka]\nbrokers = \"b:1\"\ngroup_id = \"g\"\nguarantee = \"exactly_once\"\ninstance_id = \"pod-0\"\ntransaction_timeout = \"15s\"\n";
        let config = Config::layered(Some(("t", file)), []).unwrap();
        let producer = transactional_producer(&config);
        assert_eq!(producer.get("transactional.id"), Some("g-pod-0"));
        assert_eq!(producer.get("transaction.timeout.ms"), Some("15000"));
        assert_eq!(producer.get("message.timeout.ms"), Some("15000"), "within the transaction's timeout");
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
    }
}

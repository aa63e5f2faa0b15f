// The test broker's readiness check, run by broker.sh with the broker's own jars
// (`java -cp 'JARS/*' Ready.java ...`, Java's single-file source launch).
//
// An open port is not a ready cluster: the group and transaction coordinators load their
// internal topics (__consumer_offsets, __transaction_state) on first use, and a test whose
// first group join or `init_transactions` meets them still loading times out. This does
// that first use, in order:
//   1. metadata: every expected node is registered;
//   2. a topic (replicated over every node, up to 3), one record produced with acks=all;
//   3. a group round-trip: a consumer in a group reads the record and commits its offset;
//   4. one transaction: `initTransactions`, one record, `commitTransaction`.
// Exits 0 with one line naming the broker version, or 1 naming the step that did not
// finish within the deadline.

import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.AppInfoParser;

public class Ready {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: Ready BOOTSTRAP NODES TIMEOUT_SECONDS");
            System.exit(2);
        }
        String bootstrap = args[0];
        int nodes = Integer.parseInt(args[1]);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[2]));
        String step = "metadata";
        try {
            Properties common = new Properties();
            common.put("bootstrap.servers", bootstrap);
            try (Admin admin = Admin.create(common)) {
                while (admin.describeCluster().nodes().get(left(deadline), TimeUnit.MILLISECONDS).size() < nodes) {
                    Thread.sleep(200);
                    left(deadline);
                }
                step = "topic";
                short replicas = (short) Math.min(nodes, 3);
                try {
                    admin.createTopics(List.of(new NewTopic("acs-ready", 1, replicas)))
                        .all().get(left(deadline), TimeUnit.MILLISECONDS);
                } catch (java.util.concurrent.ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) throw e;
                }
            }

            step = "produce";
            Properties producer = copy(common);
            producer.put("acks", "all");
            producer.put("delivery.timeout.ms", String.valueOf(Math.max(left(deadline), 1000)));
            try (KafkaProducer<String, String> p = new KafkaProducer<>(producer, new StringSerializer(), new StringSerializer())) {
                p.send(new ProducerRecord<>("acs-ready", "ready", "plain")).get(left(deadline), TimeUnit.MILLISECONDS);
            }

            step = "group round-trip";
            Properties consumer = copy(common);
            consumer.put("group.id", "acs-ready");
            consumer.put("auto.offset.reset", "earliest");
            consumer.put("enable.auto.commit", "false");
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumer, new StringDeserializer(), new StringDeserializer())) {
                c.subscribe(List.of("acs-ready"));
                ConsumerRecords<String, String> records = ConsumerRecords.empty();
                while (records.isEmpty()) {
                    records = c.poll(Duration.ofMillis(Math.min(left(deadline), 1000)));
                }
                c.commitSync(Duration.ofMillis(left(deadline)));
            }

            step = "init_transactions";
            Properties transactional = copy(common);
            transactional.put("transactional.id", "acs-ready");
            transactional.put("max.block.ms", String.valueOf(Math.max(left(deadline), 1000)));
            try (KafkaProducer<String, String> p = new KafkaProducer<>(transactional, new StringSerializer(), new StringSerializer())) {
                p.initTransactions();
                p.beginTransaction();
                p.send(new ProducerRecord<>("acs-ready", "ready", "transactional"));
                p.commitTransaction();
            }
        } catch (Exception e) {
            System.err.println("not ready: the " + step + " step failed: " + e);
            System.exit(1);
        }
        System.out.println("Apache Kafka " + AppInfoParser.getVersion());
    }

    /** Milliseconds left before the deadline; throws once it has passed. */
    static long left(long deadline) {
        long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
        if (left <= 0) throw new IllegalStateException("deadline passed");
        return left;
    }

    static Properties copy(Properties from) {
        Properties to = new Properties();
        to.putAll(from);
        return to;
    }
}

//! `acs-stream demo`, as the README tells a newcomer to run it.

use std::process::Command;

#[test]
fn the_demo_processes_everything_and_says_so() {
    let output = Command::new(env!("CARGO_BIN_EXE_acs-stream"))
        .args(["demo", "--events", "600", "--tenants", "3", "--seed", "7"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("600 records consumed"), "{stdout}");
    assert!(stdout.contains("all outputs acknowledged and offsets committed: true"), "{stdout}");
    for topic in ["acs.tenant-01.events", "acs.tenant-02.events", "acs.tenant-03.events", "acs.dlq"] {
        assert!(stdout.contains(topic), "{topic} missing from\n{stdout}");
    }
    assert!(stdout.contains("sample events"), "{stdout}");
    let section = |title: &str| -> Vec<(String, usize)> {
        stdout
            .lines()
            .skip_while(|line| !line.starts_with(title))
            .skip(1)
            .take_while(|line| line.starts_with("  "))
            .filter_map(|line| {
                let count = line.split_whitespace().last()?.parse::<usize>().ok()?;
                Some((line.split_whitespace().next()?.to_owned(), count))
            })
            .collect()
    };
    let per_topic = section("records per topic:");
    let outputs: usize = per_topic.iter().filter(|(topic, _)| !topic.ends_with(".alerts")).map(|(_, n)| n).sum();
    assert_eq!(outputs, 600, "every record ends in exactly one events or dead-letter topic:\n{stdout}");
    // Alerts: the count the run produced, all read back, every one decoded with its rule.
    let alerts: usize = stdout
        .split(" dead letters, ")
        .nth(1)
        .and_then(|rest| rest.split(" alerts").next()?.parse().ok())
        .expect("the alert count");
    assert!(alerts > 0, "the synthetic sessions fire rules:\n{stdout}");
    let in_topics: usize = per_topic.iter().filter(|(topic, _)| topic.ends_with(".alerts")).map(|(_, n)| n).sum();
    assert_eq!(in_topics, alerts, "{stdout}");
    let per_rule = section("alerts per rule");
    assert_eq!(per_rule.iter().map(|(_, n)| n).sum::<usize>(), alerts, "{stdout}");
    let defaults = acs_stream::rules::RuleSet::defaults();
    assert!(per_rule.iter().all(|(rule, _)| defaults.get(rule).is_some()), "{stdout}");
    // The demo stops once the tenant side has counted every event forwarded to it, so that
    // tenant-scoped rules see all of them: as many counted as re-keyed.
    let (forwarded, counted): (usize, usize) = stdout
        .split(" records/s, consumer group join included), and ")
        .nth(1)
        .and_then(|rest| {
            let (forwarded, rest) = rest.split_once(" re-keyed by tenant for tenant-scoped rules (")?;
            Some((forwarded.parse().ok()?, rest.split(' ').next()?.parse().ok()?))
        })
        .expect("the re-keyed and counted counts");
    assert!(forwarded > 0, "the synthetic traffic matches tenant-scoped rules:\n{stdout}");
    assert_eq!(counted, forwarded, "{stdout}");
}

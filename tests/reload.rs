//! SIGHUP reload of the rules and the reason catalog: validated first, swapped into the
//! running pipeline from the next record on; a bad file changes nothing and is counted.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acs_stream::commands::reload::{Reloaded, reload};
use acs_stream::config::Config;
use acs_stream::model::Source;
use acs_stream::pipeline::{Outcome, Pipeline, Record};
use acs_stream::telemetry;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rdkafka::mocking::MockCluster;

const NOW: i64 = 1_767_261_400_000;

fn rule(id: &str, action: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\nseverity = \"low\"\ntitle = \"t\"\nsummary = \"s\"\n\
         [[rule.match]]\nactions = [\"{action}\"]\naction_status = [\"succeeded\"]\n"
    )
}

const CATALOG: &str = "[[code]]\ncode = 20777\ncategory = \"EXAMINEE\"\ncause = \"PET\"\n";

/// The rules an event with this action (and reason code) fires, and its reason cause.
fn fire(pipeline: &Pipeline, offset: i64, action: &str, code: i64) -> (Vec<String>, Option<String>) {
    let value = format!(
        r#"{{"deliveryExecutionId":"u#d#h#acme","messageId":"m{offset}","incidentTime":{},"actor":"proctor","action":"{action}","actionStatus":"succeeded","reasonCode":{code}}}"#,
        1_767_261_000 + offset
    );
    let source = Source { topic: Arc::from("acs.raw"), partition: 0, offset };
    let mut sessions = pipeline.sessions();
    let Outcome::Event { alerts, output, .. } =
        pipeline.process(&Record::new(None, value.as_bytes(), source), &mut sessions, NOW)
    else {
        panic!("an event")
    };
    let event: serde_json::Value = serde_json::from_slice(&output.value).unwrap();
    let cause = event["reason"]["cause"].as_str().map(str::to_owned);
    (alerts.iter().map(|a| a.rule().to_string()).collect(), cause)
}

/// The rules and catalog versions an event of `pipeline` names now.
fn versions(pipeline: &Pipeline) -> (String, String) {
    let value = br#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261000}"#;
    let source = Source { topic: Arc::from("acs.raw"), partition: 0, offset: 0 };
    let Outcome::Event { output, .. } =
        pipeline.process(&Record::new(None, value, source), &mut pipeline.sessions(), NOW)
    else {
        panic!("an event")
    };
    let event: serde_json::Value = serde_json::from_slice(&output.value).unwrap();
    let processor = &event["processor"];
    (processor["rulesVersion"].as_str().unwrap().to_owned(), processor["catalogVersion"].as_str().unwrap().to_owned())
}

/// A file's version as stamped on outputs: its SHA-256's first 12 hex digits.
fn version_of(path: &Path) -> String {
    acs_stream::model::provenance::content_version(None, &std::fs::read(path).unwrap()).to_string()
}

/// Reloads counted `ok` and `failed` since the last call (a debugging snapshot drains the
/// counters).
fn reloads(snapshotter: &Snapshotter) -> (u64, u64) {
    let mut counts = (0, 0);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let (MetricKind::Counter, DebugValue::Counter(count)) = (kind, value) else { continue };
        if key.name() != telemetry::CONFIG_RELOADS {
            continue;
        }
        match key.labels().find(|l| l.key() == "result").map(|l| l.value().to_owned()).as_deref() {
            Some("ok") => counts.0 += count,
            Some("failed") => counts.1 += count,
            _ => {}
        }
    }
    counts
}

fn config(dir: &Path, more: &str) -> Config {
    let file = format!(
        "[rules]\nfile = \"{}\"\n[catalog]\nfile = \"{}\"\n[output]\nformat = \"json\"\n{more}",
        dir.join("rules.toml").display(),
        dir.join("catalog.toml").display()
    );
    Config::layered(Some(("test", &file)), []).unwrap()
}

#[test]
fn a_reload_swaps_valid_files_in_and_keeps_the_old_ones_on_error() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this binary");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), rule("pause-watch", "pause")).unwrap();
    std::fs::write(dir.path().join("catalog.toml"), "").unwrap();
    let config = config(dir.path(), "");
    let pipeline = Pipeline::new(&config, config.catalog().unwrap()).unwrap().with_rules(config.rules().unwrap());
    // A clone shares what a reload swaps in (the runtime's copy, the SIGHUP task's copy).
    let running = pipeline.clone();
    assert_eq!(fire(&running, 1, "pause", 20010).0, ["pause-watch"]);
    assert_ne!(fire(&running, 2, "flag", 20777).1.as_deref(), Some("PET"), "code not in the catalog yet");
    let (rules_file, catalog_file) = (dir.path().join("rules.toml"), dir.path().join("catalog.toml"));
    assert_eq!(versions(&running), (version_of(&rules_file), version_of(&catalog_file)));

    std::fs::write(dir.path().join("rules.toml"), rule("flag-watch", "flag")).unwrap();
    std::fs::write(dir.path().join("catalog.toml"), CATALOG).unwrap();
    assert_eq!(reload(&config, &pipeline).unwrap(), Reloaded { rules: 1 });
    assert!(fire(&running, 3, "pause", 20010).0.is_empty(), "the old rule is gone");
    assert_eq!(fire(&running, 4, "flag", 20777), (vec!["flag-watch".to_owned()], Some("PET".to_owned())));
    assert_eq!(reloads(&snapshotter), (1, 0));
    let reloaded = (version_of(&rules_file), version_of(&catalog_file));
    assert_eq!(versions(&running), reloaded, "outputs name the configuration that made them");

    // A bad rules file: refused with the rule id and the key; the rules in force stay.
    let bad = rule("flag-watch", "flag").replace("severity = \"low\"", "severity = \"urgent\"")
        + &rule("other", "pause").replace("title = \"t\"\n", "");
    std::fs::write(dir.path().join("rules.toml"), bad).unwrap();
    let error = reload(&config, &pipeline).unwrap_err().to_string();
    assert!(error.contains("rules.toml") && error.contains("severity"), "{error}");
    assert_eq!(fire(&running, 5, "flag", 20777).0, ["flag-watch"]);
    // A bad catalog alongside good rules: nothing is swapped in, not even the rules.
    std::fs::write(dir.path().join("rules.toml"), rule("pause-watch", "pause")).unwrap();
    std::fs::write(dir.path().join("catalog.toml"), "[[code]]\ncode = \"x\"\n").unwrap();
    assert!(reload(&config, &pipeline).unwrap_err().to_string().contains("catalog.toml"));
    assert_eq!(fire(&running, 6, "flag", 20777), (vec!["flag-watch".to_owned()], Some("PET".to_owned())));
    assert_eq!(reloads(&snapshotter), (0, 2));
    assert_eq!(versions(&running), reloaded, "a refused reload changes no version");
}

/// `GET /metrics` on the admin port, `None` while it does not answer.
fn metrics_text(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Waits (at most a minute) until `/metrics` shows `line`.
fn wait_for_metric(port: u16, line: &str) {
    let started = Instant::now();
    loop {
        if metrics_text(port).is_some_and(|text| text.lines().any(|l| l == line)) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{line} never showed:\n{:?}", metrics_text(port));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn sighup_reloads_the_running_service() {
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["acs.raw", "acs.dlq"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), rule("pause-watch", "pause")).unwrap();
    std::fs::write(dir.path().join("catalog.toml"), CATALOG).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = dir.path().join("service.toml");
    let service = format!(
        "[kafka]\nbrokers = \"{}\"\ngroup_id = \"acs-reload\"\n[topics]\ncreate = false\n\
         [admin]\nlisten = \"127.0.0.1:{port}\"\n[rules]\nfile = \"{}\"\n[catalog]\nfile = \"{}\"\n",
        cluster.bootstrap_servers(),
        dir.path().join("rules.toml").display(),
        dir.path().join("catalog.toml").display()
    );
    std::fs::write(&file, service).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_acs-stream"))
        .arg("run")
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Started: the rule's alert counter exists at 0; the configuration's versions are shown.
    wait_for_metric(port, r#"acs_stream_alerts_total{rule="pause-watch",severity="low",mode="live"} 0"#);
    let (rules_file, catalog_file) = (dir.path().join("rules.toml"), dir.path().join("catalog.toml"));
    let info = |rules: &str| {
        format!(
            r#"acs_stream_config_info{{rules_version="{rules}",catalog_version="{}",privacy_key_id=""}}"#,
            version_of(&catalog_file)
        )
    };
    let first = version_of(&rules_file);
    wait_for_metric(port, &format!("{} 1", info(&first)));

    std::fs::write(&rules_file, rule("flag-watch", "flag").replace("[[rule]]", "name = \"v2\"\n[[rule]]")).unwrap();
    signal(&child, "HUP");
    wait_for_metric(port, r#"acs_stream_config_reloads_total{result="ok"} 1"#);
    wait_for_metric(port, r#"acs_stream_alerts_total{rule="flag-watch",severity="low",mode="live"} 0"#);
    let second = format!("v2@{}", version_of(&rules_file));
    wait_for_metric(port, &format!("{} 1", info(&second)));
    wait_for_metric(port, &format!("{} 0", info(&first)));

    // Valid TOML, but a rule without a match: refused, naming the rule.
    let broken = "[[rule]]\nid = \"broken\"\nseverity = \"low\"\ntitle = \"t\"\nsummary = \"s\"\n";
    std::fs::write(dir.path().join("rules.toml"), broken).unwrap();
    signal(&child, "HUP");
    wait_for_metric(port, r#"acs_stream_config_reloads_total{result="failed"} 1"#);

    signal(&child, "TERM");
    let mut logs = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(child.wait().unwrap().success(), "{logs}");
    assert!(logs.contains("Reloaded the rules and the reason catalog"), "{logs}");
    assert!(logs.contains("Reload refused") && logs.contains("broken"), "{logs}");
}

//! `acs-stream process` as a user runs it: files, standard input, big and broken lines,
//! exit statuses.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;

const NOW: &str = "1767261400000";
const GOOD: &str =
    r#"{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300,"actor":"proctor","action":"pause"}"#;

fn acs_stream() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_acs-stream"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("ACS_STREAM__")) {
        command.env_remove(name);
    }
    command
}

fn process(input: &Path, out: &Path, extra: &[&str]) -> Output {
    acs_stream()
        .args(["process", "--now", NOW, "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("acs-stream runs")
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

#[test]
fn a_2_mib_value_is_dead_lettered_whole_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let big = format!(
        r#"{{"deliveryExecutionId":"u#d#h#acme","incidentTime":1767261300,"reasonMessage":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    std::fs::write(&input, format!("{GOOD}\n{big}\n{GOOD}\n")).unwrap();
    let out = dir.path().join("out");
    let output = process(&input, &out, &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dead = lines(&out.join("acs.dlq.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["error"]["code"], "too_large");
    assert_eq!(dead[0]["value"].as_str().unwrap(), big, "the original line, unchanged");
    assert_eq!(dead[0]["source"]["offset"], 1);
    assert_eq!(lines(&out.join("acs.acme.events.jsonl")).len(), 2);
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(summary.contains("3 records: 2 events, 1 dead letters"), "{summary}");
    assert!(summary.contains("too_large"), "{summary}");
}

#[test]
fn lines_that_are_not_utf8_keep_their_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let broken: &[u8] = b"{\"deliveryExecutionId\":\"u#d#h#acme\",\"name\":\"\xff\xfe\"}";
    let mut bytes = broken.to_vec();
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(GOOD.as_bytes());
    std::fs::write(&input, bytes).unwrap();
    let output = process(&input, dir.path(), &["--source-topic", "raw.acs"]);
    assert!(output.status.success());
    let dead = lines(&dir.path().join("acs.dlq.jsonl"));
    assert_eq!(dead[0]["error"]["code"], "invalid_utf8");
    assert_eq!(dead[0]["source"]["topic"], "raw.acs");
    let exact = base64::engine::general_purpose::STANDARD.decode(dead[0]["valueBase64"].as_str().unwrap()).unwrap();
    assert_eq!(exact, broken, "the line ending is not part of the value");
    assert_eq!(lines(&dir.path().join("acs.acme.events.jsonl")).len(), 1, "a last line without newline counts");
}

#[test]
fn standard_input_is_read_with_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = acs_stream()
        .args(["process", "--now", NOW, "--input", "-", "--out"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{GOOD}\n[]\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let events = lines(&dir.path().join("acs.acme.events.jsonl"));
    assert_eq!(events[0]["source"]["topic"], "stdin");
    assert_eq!(lines(&dir.path().join("acs.dlq.jsonl"))[0]["error"]["code"], "not_an_object");
}

#[test]
fn a_missing_input_exits_74_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = process(&dir.path().join("absent.jsonl"), dir.path(), &[]);
    assert_eq!(output.status.code(), Some(74));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read") && stderr.contains("absent.jsonl"), "{stderr}");
}

#[test]
fn an_unwritable_output_exits_74() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, GOOD).unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let output = process(&input, &blocker.join("out"), &[]);
    assert_eq!(output.status.code(), Some(74), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot write"));
}

#[test]
fn a_bad_configuration_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, GOOD).unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[output]\nevents_topic = \"acs.events\"\n").unwrap();
    let output = process(&input, dir.path(), &["--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("output.events_topic"), "{stderr}");
    assert!(!dir.path().join("acs.acme.events.jsonl").exists(), "nothing is processed with a bad configuration");
}

#[test]
fn environment_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, GOOD).unwrap();
    let output = acs_stream()
        .env("ACS_STREAM__OUTPUT__EVENTS_TOPIC", "t.{tenant}.e")
        .args(["process", "--now", NOW, "--input"])
        .arg(&input)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(lines(&dir.path().join("t.acme.e.jsonl")).len(), 1);
}

#[test]
fn rules_diff_prints_per_rule_counts_and_refuses_a_bad_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("new.toml");
    std::fs::write(
        &rules,
        "name = \"trial\"\n[[rule]]\nid = \"any-pause\"\nmode = \"shadow\"\nseverity = \"low\"\ntitle = \"t\"\n\
         summary = \"s\"\n[[rule.match]]\nactions = [\"pause\"]\n",
    )
    .unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample.jsonl");
    let diff = |rules: &Path| {
        acs_stream()
            .args(["rules-diff", "--now", NOW, "--input"])
            .arg(&sample)
            .arg("--rules")
            .arg(rules)
            .output()
            .expect("acs-stream runs")
    };
    let output = diff(&rules);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("new rules trial@"), "{text}");
    let line = text.lines().find(|line| line.starts_with("any-pause")).expect("the new rule's line");
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&columns[..3], ["any-pause", "shadow", "-"], "{line}");
    assert!(columns[3].parse::<u32>().unwrap() > 0, "the sample has pauses: {line}");
    assert!(text.lines().any(|line| line.starts_with("security-flag") && line.ends_with("(removed)")), "{text}");

    std::fs::write(&rules, "[[rule]]\nid = \"x\"\n").unwrap();
    let output = diff(&rules);
    assert_eq!(output.status.code(), Some(64), "{}", String::from_utf8_lossy(&output.stderr));
}

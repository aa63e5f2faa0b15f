//! Golden tests: `tests/golden/<case>/input.jsonl` through `acs-stream process` must
//! produce exactly the files in `tests/golden/<case>/expected/` (one per output topic, and
//! `summary.txt` for stderr). A case may carry a `config.toml`.
//!
//! Every default rule has a case `rule-<id>` (its README says which session fires and why
//! the others must not): the rule firing in one session (one per variant), its near-misses
//! in others.
//!
//! After an intended change: `ACS_GOLDEN_BLESS=1 cargo test --test golden`, then review
//! the diff of `expected/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The processing clock of every case: 2026-01-01T09:56:40Z.
const NOW_MS: &str = "1767261400000";

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .expect("tests/golden exists")
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.join("input.jsonl").is_file())
        .collect();
    cases.sort();
    cases
}

fn read_dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else { return BTreeMap::new() };
    entries
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.is_file())
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), fs::read(&path).unwrap()))
        .collect()
}

fn run_case(case: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_acs-stream"));
    command
        .arg("process")
        .arg("--input")
        .arg(case.join("input.jsonl"))
        .arg("--out")
        .arg(out.path())
        .args(["--now", NOW_MS, "--source-topic", "acs.raw"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("ACS_STREAM__")) {
        command.env_remove(name);
    }
    if case.join("config.toml").is_file() {
        command.arg("--config").arg(case.join("config.toml"));
    }
    let output = command.output().expect("acs-stream runs");
    assert!(output.status.success(), "{}: {}", case.display(), String::from_utf8_lossy(&output.stderr));
    let mut files = read_dir_files(out.path());
    files.insert("summary.txt".into(), output.stderr);
    files
}

/// An alerts file: live (`acs.<tenant>.alerts.jsonl`) or shadow (`...alerts.shadow.jsonl`).
fn is_alerts(name: &str) -> bool {
    name.ends_with(".alerts.jsonl") || name.ends_with(".alerts.shadow.jsonl")
}

/// An incidents file (`acs.<tenant>.incidents.jsonl`): revisions of sessions' incidents.
fn is_incidents(name: &str) -> bool {
    name.ends_with(".incidents.jsonl")
}

fn line_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

#[test]
fn golden_cases_produce_their_expected_outputs() {
    let bless = std::env::var_os("ACS_GOLDEN_BLESS").is_some();
    let cases = cases();
    assert!(cases.len() >= 10, "golden cases missing: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let actual = run_case(case);
        let input = fs::read(case.join("input.jsonl")).unwrap();
        let outputs: usize = actual
            .iter()
            .filter(|(name, _)| name.ends_with(".jsonl") && !is_alerts(name) && !is_incidents(name))
            .map(|(_, b)| line_count(b))
            .sum();
        let records = line_count(&input) + usize::from(!input.is_empty() && !input.ends_with(b"\n"));
        assert_eq!(outputs, records, "{}: every input line ends in exactly one event or dead letter", case.display());
        // Alerts are replayable: every one has its own id, and evidence read from this input.
        for (name, bytes) in actual.iter().filter(|(name, _)| is_alerts(name)) {
            let mut ids = std::collections::HashSet::new();
            for line in String::from_utf8_lossy(bytes).lines() {
                let alert: serde_json::Value = serde_json::from_str(line).expect("an alert is JSON");
                assert!(ids.insert(alert["alertId"].as_str().unwrap().to_owned()), "{name}: {line}");
                let evidence = alert["evidence"].as_array().expect("evidence");
                assert_eq!(evidence.len() as u64, alert["count"].as_u64().unwrap(), "{name}: {line}");
                assert!(evidence.iter().all(|e| e["topic"] == "acs.raw"), "{name}: {line}");
            }
        }

        // Incidents: per session, one id and revisions 1, 2, 3, ... in order; closed at most
        // once, by its last revision.
        for (name, bytes) in actual.iter().filter(|(name, _)| is_incidents(name)) {
            let mut sessions: BTreeMap<String, (String, u64, bool)> = BTreeMap::new();
            for line in String::from_utf8_lossy(bytes).lines() {
                let incident: serde_json::Value = serde_json::from_str(line).expect("an incident is JSON");
                let session = incident["deliveryExecutionId"].as_str().unwrap().to_owned();
                let (id, revision, open) = (
                    incident["incidentId"].as_str().unwrap().to_owned(),
                    incident["revision"].as_u64().unwrap(),
                    incident["open"].as_bool().unwrap(),
                );
                let previous = sessions.insert(session, (id.clone(), revision, open));
                match previous {
                    None => assert_eq!(revision, 1, "{name}: {line}"),
                    Some((previous_id, previous_revision, _)) => {
                        assert_eq!((previous_id, previous_revision + 1), (id, revision), "{name}: {line}");
                    }
                }
                let score = incident["score"].as_u64().unwrap();
                assert!(score <= 100, "{name}: {line}");
            }
        }

        let expected_dir = case.join("expected");
        if bless {
            let _ = fs::remove_dir_all(&expected_dir);
            fs::create_dir_all(&expected_dir).unwrap();
            for (name, bytes) in &actual {
                fs::write(expected_dir.join(name), bytes).unwrap();
            }
            continue;
        }
        let expected = read_dir_files(&expected_dir);
        if expected != actual {
            let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
            let mut report = format!(
                "{}:\n  expected files {:?}\n  actual files   {:?}\n",
                case.display(),
                names(&expected),
                names(&actual)
            );
            for (name, bytes) in &actual {
                let Some(want) = expected.get(name) else { continue };
                if want == bytes {
                    continue;
                }
                let want = String::from_utf8_lossy(want);
                let got = String::from_utf8_lossy(bytes);
                for (n, (w, g)) in want.lines().zip(got.lines()).enumerate() {
                    if w != g {
                        report.push_str(&format!("  {name} line {}:\n    expected {w}\n    actual   {g}\n", n + 1));
                        break;
                    }
                }
                if want.lines().count() != got.lines().count() {
                    report.push_str(&format!(
                        "  {name}: {} lines expected, {} actual\n",
                        want.lines().count(),
                        got.lines().count()
                    ));
                }
            }
            failures.push(report);
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (bless with ACS_GOLDEN_BLESS=1 if intended):\n{}",
        failures.join("\n")
    );
}

/// Every default rule has a golden case `rule-<id>` in which it fires (and near-misses in
/// other sessions that must not), so that the rule set and the cases cannot drift apart.
#[test]
fn every_default_rule_has_a_golden_case_that_fires_it() {
    if std::env::var_os("ACS_GOLDEN_BLESS").is_some() {
        // The other test is rewriting `expected/` right now; run again without blessing.
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let rules = acs_stream::rules::RuleSet::defaults();
    assert!(!rules.rules().is_empty(), "no default rules");
    let mut missing = Vec::new();
    for rule in rules.rules() {
        let alerts = root.join(format!("rule-{}/expected/acs.acme.alerts.jsonl", rule.id));
        let Ok(text) = fs::read_to_string(&alerts) else {
            missing.push(format!("{}: no {}", rule.id, alerts.display()));
            continue;
        };
        let fires = text.lines().any(|line| {
            let alert: serde_json::Value = serde_json::from_str(line).expect("an alert is JSON");
            alert["ruleId"] == *rule.id
        });
        if !fires {
            missing.push(format!("{}: no alert of the rule in {}", rule.id, alerts.display()));
        }
    }
    assert!(missing.is_empty(), "default rules without a golden case that fires them:\n{}", missing.join("\n"));
}

/// The incidents case (`rule-session-silent`) says what its README says: the clean sitting stays at `none`, one
/// benign flag at `low`, the silent session gets exactly one `session-silent`, the tab
/// switcher reaches at least `high` (latest revision per session).
#[test]
fn the_incidents_case_ranks_the_sessions_as_a_proctor_would() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rule-session-silent/expected");
    let read = |name: &str| fs::read_to_string(root.join(name)).expect("blessed outputs");
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for line in read("acs.acme.incidents.jsonl").lines() {
        let incident: serde_json::Value = serde_json::from_str(line).unwrap();
        latest.insert(incident["deliveryExecutionId"].as_str().unwrap().to_owned(), incident);
    }
    let priority = |user: &str| {
        let id = format!("{}#delivery-review#attempt-1#acme", user.chars().rev().collect::<String>());
        let incident = &latest[&id];
        (incident["priority"].as_str().unwrap().to_owned(), incident["open"].as_bool().unwrap())
    };
    assert_eq!(priority("alice"), ("none".to_owned(), false));
    assert_eq!(priority("bob"), ("low".to_owned(), false));
    assert_eq!(priority("carol"), ("low".to_owned(), true));
    assert!(["high", "critical"].contains(&priority("dave").0.as_str()), "{:?}", priority("dave"));
    let silent =
        read("acs.acme.alerts.jsonl").lines().filter(|line| line.contains("\"ruleId\":\"session-silent\"")).count();
    assert_eq!(silent, 1);
}

//! `acs-stream check-config FILE` through the binary: every shipped file checks, bad files
//! exit 64 with a message naming the file and the key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXIT_USAGE: i32 = 64;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `check-config FILE` from the crate's directory, without any `ACS_STREAM__*`
/// variable of the test's own environment.
fn check_config_with(file: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_acs-stream"));
    command.arg("check-config").arg(file).current_dir(manifest_dir());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ACS_STREAM__") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("the binary runs")
}

fn check_config(file: &Path) -> Output {
    check_config_with(file, &[])
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_refused(output: &Output, needles: &[&str]) {
    assert_eq!(output.status.code(), Some(EXIT_USAGE), "stderr: {}", stderr(output));
    assert!(output.stdout.is_empty(), "stdout: {}", stdout(output));
    let message = stderr(output);
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
}

#[test]
fn the_defaults_are_a_valid_service_configuration() {
    let output = check_config(Path::new("config/default.toml"));
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "config/default.toml: valid service configuration\n");
}

#[test]
fn the_example_catalog_is_a_valid_catalog() {
    let output = check_config(Path::new("config/catalog.example.toml"));
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "config/catalog.example.toml: valid reason catalog\n");
}

#[test]
fn every_file_shipped_in_config_checks() {
    let mut checked = 0;
    for entry in std::fs::read_dir(manifest_dir().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let output = check_config(&path);
        assert!(output.status.success(), "{}: {}", path.display(), stderr(&output));
        checked += 1;
    }
    assert!(checked >= 3, "config/ holds at least the defaults, the catalog example and the rules");
}

#[test]
fn a_service_configuration_naming_the_example_catalog_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(&dir, "service.toml", "[catalog]\nfile = \"config/catalog.example.toml\"\n");
    let output = check_config(&file);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(stdout(&output).ends_with(": valid service configuration\n"));
}

#[test]
fn a_broken_catalog_is_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[code]]\ncode = 20070\ncategory = \"SOMEONE\"\ncause = \"SECOND PERSON\"\n";
    let file = write_temp(&dir, "catalog.toml", text);
    assert_refused(&check_config(&file), &["catalog.toml", "invalid reason catalog", "category", "SOMEONE"]);
}

#[test]
fn a_service_configuration_naming_a_broken_catalog_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = write_temp(&dir, "catalog.toml", "[[code]]\ncode = 20070\ncause = \"X\"\n");
    let text = format!("[catalog]\nfile = {:?}\n", catalog.display().to_string());
    let file = write_temp(&dir, "service.toml", &text);
    assert_refused(&check_config(&file), &["invalid service configuration", "catalog.file", "category"]);
}

#[test]
fn an_unknown_key_in_a_service_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(&dir, "service.toml", "[kafka]\nbrokers = \"b:9092\"\ncolour = \"blue\"\n");
    assert_refused(&check_config(&file), &["service.toml", "invalid service configuration", "colour", "kafka"]);
}

#[test]
fn a_cross_field_error_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(&dir, "service.toml", "[kafka.producer]\nacks = 1\n");
    assert_refused(&check_config(&file), &["kafka.producer", "acks"]);
}

#[test]
fn environment_overrides_apply_to_service_configurations() {
    let output = check_config_with(Path::new("config/default.toml"), &[("ACS_STREAM__KAFKA__MAX_IN_FLIGHT", "0")]);
    assert_refused(&output, &["kafka.max_in_flight"]);
    let output =
        check_config_with(Path::new("config/catalog.example.toml"), &[("ACS_STREAM__KAFKA__MAX_IN_FLIGHT", "0")]);
    assert!(output.status.success(), "not applied to a catalog: {}", stderr(&output));
}

#[test]
fn a_file_that_is_not_toml_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(&dir, "events.jsonl", "{\"tenantId\": \"acme\"}\n");
    assert_refused(&check_config(&file), &["events.jsonl", "not a TOML file"]);
}

#[test]
fn a_missing_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nowhere.toml");
    assert_refused(&check_config(&file), &[&file.display().to_string(), "cannot read"]);
}

#[test]
fn the_default_rules_are_a_valid_rules_file() {
    let output = check_config(Path::new("config/rules.toml"));
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "config/rules.toml: valid rules file\n");
}

#[test]
fn a_broken_rules_file_is_refused_with_the_rule_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[rule]]\nid = \"many-pauses\"\nseverity = \"high\"\ntitle = \"T\"\nsummary = \"S\"\n\
                [rule.threshold]\ncount = 3\nwindow = \"0s\"\n[[rule.match]]\nactions = [\"pause\"]\n";
    let file = write_temp(&dir, "rules.toml", text);
    let needles = ["rules.toml", "invalid rules file", "rule \"many-pauses\": threshold.window: must be longer than 0"];
    assert_refused(&check_config(&file), &needles);
    let file = write_temp(&dir, "rules.toml", "[[rule]]\nname = \"many-pauses\"\n");
    assert_refused(&check_config(&file), &["rules.toml", "invalid rules file", "unknown field `name`"]);
}

#[test]
fn privacy_needs_a_long_enough_key_and_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let protected = "[privacy.tenants]\n\"umbrella.eu\" = \"pseudonymize\"\n";
    let keyless = write_temp(&dir, "keyless.toml", protected);
    assert_refused(&check_config(&keyless), &["privacy", "umbrella.eu", "ACS_STREAM__PRIVACY__KEY"]);

    let key = "a-key-of-forty-bytes-0123456789abcdefghij";
    let output = check_config_with(&keyless, &[("ACS_STREAM__PRIVACY__KEY", key)]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));

    let short = write_temp(&dir, "short.key", "too-short\n");
    let file = write_temp(&dir, "short.toml", &format!("{protected}[privacy]\nkey_file = \"{}\"\n", short.display()));
    assert_refused(&check_config(&file), &["privacy.key_file", "9 bytes long; at least 32"]);
    let output = check_config_with(&keyless, &[("ACS_STREAM__PRIVACY__KEY", "short-secret-value")]);
    assert_refused(&output, &["privacy.key"]);
    assert!(!stderr(&output).contains("short-secret-value"), "the key is never shown: {}", stderr(&output));

    let missing = write_temp(&dir, "missing.toml", &format!("{protected}[privacy]\nkey_file = \"/nonexistent/key\"\n"));
    assert_refused(&check_config(&missing), &["/nonexistent/key"]);
}

//! Personal data per tenant, end to end through `acs-stream process`: every output file of a
//! run is searched for every personal value of a protected tenant's input (none appears), the
//! tokens are the same in a second run, and a tenant kept as sent is byte for byte what it is
//! without a `[privacy]` section. (The Kafka side: `tests/kafka_broker.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const NOW: &str = "1767261400000";
const START: &str = "1767261000000";
const KEY: &str = "test-key-0123456789abcdef0123456789abcdef";

fn acs_stream() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_acs-stream"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("ACS_STREAM__")) {
        command.env_remove(name);
    }
    command
}

fn run(command: &mut Command) {
    let output = command.output().expect("acs-stream runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// `process` over `input` into `out`, with `config` (and the key in the environment).
fn process(input: &Path, out: &Path, config: Option<&Path>) {
    let mut command = acs_stream();
    command.args(["process", "--now", NOW, "--source-topic", "acs.raw", "--input"]).arg(input).arg("--out").arg(out);
    if let Some(config) = config {
        command.arg("--config").arg(config).env("ACS_STREAM__PRIVACY__KEY", KEY);
    }
    run(&mut command);
}

/// Every output file of a run: name → bytes.
fn files(out: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// The tenant of an input line and the personal values in it (user ids, names, IPs, user
/// agents, and the delivery execution id's user segment), or `None` for a line that is not
/// JSON.
fn personal(line: &str) -> Option<(String, BTreeSet<String>)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let id = [&value["deliveryExecutionId"], &value["deliveryExecution"]["id"]]
        .into_iter()
        .find_map(|id| id.as_str())?
        .to_owned();
    let segments: Vec<&str> = id.split('#').collect();
    let tenant = (*segments.last()?).to_owned();
    let mut values = BTreeSet::new();
    if segments.len() >= 4 {
        let user = segments[segments.len() - 4];
        values.insert(user.to_owned());
        values.insert(user.chars().rev().collect());
    }
    let fields = [
        &value["login"],
        &value["testTaker"],
        &value["name"],
        &value["ip"],
        &value["userAgent"],
        &value["actorIdentity"]["id"],
        &value["actorIdentity"]["name"],
        &value["actorIdentity"]["ip"],
        &value["actorIdentity"]["userAgent"],
        &value["acsControl"]["user"]["sub"],
        &value["acsControl"]["userIdentifier"],
    ];
    values.extend(fields.into_iter().filter_map(|v| v.as_str()).map(str::to_owned));
    values.retain(|v| v.len() >= 3);
    Some((tenant, values))
}

#[test]
fn no_personal_value_of_a_protected_tenant_reaches_an_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    run(acs_stream()
        .args(["generate", "--events", "4000", "--tenants", "3", "--seed", "21", "--start", START, "--out"])
        .arg(&input));
    // Personal values in free text too (the synthetic messages hold none).
    let mut lines = std::fs::read(&input).unwrap();
    for (user, tenant) in [("nivek.odd", "tenant-01"), ("anaj.rez", "tenant-03")] {
        let login: String = user.chars().rev().collect();
        lines.extend(format!(
            r#"{{"deliveryExecutionId":"{user}#delivery-9#h9#{tenant}","login":"{login}","name":"Zed {login}","ip":"203.0.113.77","actor":"deliver-fe","action":"log","actionStatus":"interacting","incidentTime":1767261300,"reasonCode":40999,"reasonMessage":"[deliver-fe] {login} (Zed {login}) at 203.0.113.77 failed [item-1]"}}
{{"deliveryExecutionId":"{user}#delivery-9#h9#{tenant}","login":"{login}","actor":"security-plugin","action":"flag","actionStatus":"succeeded","incidentTime":1767261301,"reasonCode":20999,"reasonMessage":"[Lockdown Browser] Breach. Device info: {{\"user\":\"{login}\"}}. Process list: {login}-chat."}}
"#
        ).bytes());
    }
    std::fs::write(&input, lines).unwrap();
    // tenant-02 is kept as sent; the others (tenant-01 by name, tenant-03 by default) are
    // protected; dead letters of protected tenants, and of unknown ones, go without values.
    let config = dir.path().join("privacy.toml");
    std::fs::write(
        &config,
        "[privacy]\ndefault = \"pseudonymize\"\ndead_letter_value = \"omit\"\nuser_agent = \"browser\"\n\
         [privacy.tenants]\n\"tenant-01\" = \"drop\"\n\"tenant-02\" = \"keep\"\n",
    )
    .unwrap();
    let (first, second, plain) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("plain"));
    process(&input, &first, Some(&config));
    process(&input, &second, Some(&config));
    process(&input, &plain, None);

    let text = String::from_utf8_lossy(&std::fs::read(&input).unwrap()).into_owned();
    let mut by_tenant: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (tenant, values) in text.lines().filter_map(personal) {
        by_tenant.entry(tenant).or_default().extend(values);
    }
    let kept = by_tenant.get("tenant-02").cloned().unwrap_or_default();
    // What only protected tenants sent (a value also sent by tenant-02, such as a common
    // user agent, legitimately appears in its outputs and its dead letters).
    let hidden: BTreeSet<&String> = by_tenant
        .iter()
        .filter(|(tenant, _)| *tenant != "tenant-02")
        .flat_map(|(_, v)| v)
        .filter(|v| !kept.contains(*v))
        .collect();
    assert!(hidden.len() > 50, "the input has personal values to look for: {}", hidden.len());

    let outputs = files(&first);
    assert!(outputs.keys().any(|name| name.contains("tenant-01.alerts")), "{:?}", outputs.keys());
    let mut searched = 0;
    for (name, bytes) in &outputs {
        if name.contains("tenant-02") {
            continue;
        }
        let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
        for value in &hidden {
            assert!(!text.contains(&value.to_ascii_lowercase()), "{value:?} in {name}");
        }
        searched += 1;
    }
    assert!(searched >= 5, "events, alerts and dead letters of the protected tenants: {:?}", outputs.keys());
    // Pseudonyms are there, and the marks.
    let tenant_03 = String::from_utf8_lossy(&outputs["acs.tenant-03.events.jsonl"]).into_owned();
    assert!(tenant_03.contains("\"login\":\"ps_") && tenant_03.contains("\"privacy\":{\"mode\":\"pseudonymize\""));
    let tenant_01 = String::from_utf8_lossy(&outputs["acs.tenant-01.events.jsonl"]).into_owned();
    assert!(tenant_01.contains("\"login\":null,") && tenant_01.contains("\"mode\":\"drop\""));
    // Stable: a second run gives the same bytes, tokens included.
    assert_eq!(files(&second), outputs);
    // Untouched: the kept tenant's outputs are those of a run without privacy.
    let plain = files(&plain);
    for (name, bytes) in &outputs {
        if name.contains("tenant-02") {
            assert_eq!(bytes, &plain[name], "{name}");
        }
    }
    let dead = String::from_utf8_lossy(&outputs["acs.dlq.jsonl"]).into_owned();
    assert!(dead.contains("\"valueOmitted\":\"privacy:"), "protected dead letters go without their value");
}

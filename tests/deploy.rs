//! Keeps `deploy/` honest. Nothing there is built or applied by the tests (no Docker engine,
//! no cluster): instead every YAML and JSON file must parse, every metric the dashboard and
//! the alerting rules query must be one the service exports (`telemetry::METRICS`), and the
//! files must agree with the service they deploy: the configurations they mount load as
//! `run` would load them (with the environment they set), and the admin port, probes, grace
//! periods and Kafka names match. With `promtool` and `kubectl` installed, the alerting
//! rules' unit tests run and the Kustomize manifests render too.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use acs_stream::config::Config;
use acs_stream::telemetry::{Kind, METRICS};
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file (`---` separates them), as JSON values.
fn yaml_documents(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            let value = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{path}: not YAML: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{path}: not JSON-compatible YAML: {e}"))
        })
        .collect()
}

fn yaml(path: &str) -> Value {
    let mut documents = yaml_documents(path);
    assert_eq!(documents.len(), 1, "{path}: one document expected");
    documents.remove(0)
}

fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: not JSON: {e}"))
}

/// Files under `dir` (relative to the repository), recursively, as relative paths.
fn files_under(dir: &str) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![repo().join(dir)];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(repo()).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}

/// Every string in a document (keys excluded).
fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(text) => vec![text],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(map) => map.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("a string expected, found {value}"))
}

/// The metric names a text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let name = regex::Regex::new(r"acs_stream_[a-z_]+").unwrap();
    name.find_iter(text).map(|m| m.as_str().to_owned()).collect()
}

/// Whether the service exports `name`: one of `METRICS`, or a series of one of its histograms
/// (`_bucket`, `_sum`, `_count`).
fn is_exported(name: &str) -> bool {
    METRICS.iter().any(|&(metric, kind, _, _)| {
        metric == name
            || (kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"].iter().any(|suffix| name.strip_suffix(suffix) == Some(metric)))
    })
}

/// The configuration `run --config FILE` would load with these environment variables.
fn service_config(path: &str, env: Vec<(String, String)>) -> Config {
    Config::layered(Some((path, &read(path))), env).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn admin_port(config: &Config) -> u16 {
    config.admin.address().expect("admin.listen is set").expect("admin.listen is an address").port()
}

/// `45s` → 45 seconds (the form the Compose file uses).
fn seconds(text: &str) -> Duration {
    let seconds = text.strip_suffix('s').and_then(|n| n.parse().ok());
    Duration::from_secs(seconds.unwrap_or_else(|| panic!("{text:?}: `<seconds>s` expected")))
}

/// The value following `flag` in a command line.
fn flag<'a>(command: &'a [&str], flag: &str) -> &'a str {
    let at = command.iter().position(|arg| *arg == flag).unwrap_or_else(|| panic!("{flag} not in {command:?}"));
    command[at + 1]
}

fn command_line(value: &Value) -> Vec<&str> {
    value.as_array().expect("a command as a list").iter().map(text).collect()
}

#[test]
fn every_yaml_and_json_file_parses() {
    let files = files_under("deploy");
    let mut parsed = 0;
    for file in &files {
        if file.ends_with(".yaml") || file.ends_with(".yml") {
            assert!(!yaml_documents(file).is_empty(), "{file}: no document");
            parsed += 1;
        } else if file.ends_with(".json") {
            json(file);
            parsed += 1;
        }
    }
    // The walk found the files this test is about.
    for expected in ["deploy/compose.yaml", "deploy/k8s/statefulset.yaml", "deploy/grafana/dashboards/acs-stream.json"]
    {
        assert!(files.iter().any(|f| f == expected), "{expected} missing from {files:?}");
    }
    assert!(parsed >= 12, "only {parsed} files parsed: {files:?}");
}

#[test]
fn the_exported_names_are_told_apart_from_others() {
    assert!(is_exported("acs_stream_records_consumed_total"));
    assert!(is_exported("acs_stream_processing_seconds_bucket"), "a histogram's buckets");
    assert!(is_exported("acs_stream_restore_seconds_count"));
    assert!(!is_exported("acs_stream_records_consumed"), "a typo");
    assert!(!is_exported("acs_stream_ready_bucket"), "a gauge has no buckets");
    assert_eq!(metric_names("rate(acs_stream_a_total{x=\"acs_stream\"}[5m]) / acs_stream_b"), {
        BTreeSet::from(["acs_stream_a_total".to_owned(), "acs_stream_b".to_owned()])
    });
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let path = "deploy/grafana/dashboards/acs-stream.json";
    let dashboard = json(path);
    let names: BTreeSet<String> = strings(&dashboard).into_iter().flat_map(metric_names).collect();
    let unknown: Vec<&String> = names.iter().filter(|name| !is_exported(name)).collect();
    assert!(unknown.is_empty(), "{path}: not exported by the service (src/telemetry.rs): {unknown:?}");
    // Every panel but the rows queries the service's metrics.
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(!targets.is_empty(), "{path}: panel {} has no query", panel["title"]);
        for target in targets {
            assert!(!metric_names(text(&target["expr"])).is_empty(), "{path}: {}", target["expr"]);
        }
    }
    assert!(panels.len() > 20, "{path}: {} panels", panels.len());
    assert!(names.len() > 15, "{path}: only {names:?}");
}

#[test]
fn the_alerting_rules_query_only_exported_metrics() {
    for path in ["deploy/prometheus/alerts.yml", "deploy/prometheus/alerts.test.yml"] {
        let document = yaml(path);
        let names: BTreeSet<String> = strings(&document).into_iter().flat_map(metric_names).collect();
        let unknown: Vec<&String> = names.iter().filter(|name| !is_exported(name)).collect();
        assert!(unknown.is_empty(), "{path}: not exported by the service (src/telemetry.rs): {unknown:?}");
        assert!(!names.is_empty(), "{path}: no metric");
    }
    let rules = yaml("deploy/prometheus/alerts.yml");
    let rules: Vec<&Value> =
        rules["groups"].as_array().expect("groups").iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert!(rules.len() >= 6, "{} rules", rules.len());
    for rule in rules {
        let alert = text(&rule["alert"]);
        let expr = text(&rule["expr"]);
        assert!(!metric_names(expr).is_empty() || expr.contains("up{"), "{alert}: {expr}");
        assert!(["critical", "warning"].contains(&text(&rule["labels"]["severity"])), "{alert}: severity");
        assert!(
            rule["annotations"]["summary"].is_string() && rule["annotations"]["description"].is_string(),
            "{alert}"
        );
    }
}

#[test]
fn the_image_exposes_the_admin_port_and_checks_it() {
    let dockerfile = read("deploy/Dockerfile").replace("\\\n", " ");
    let port = admin_port(&Config::defaults());
    let instruction = |name: &str| -> Vec<&str> {
        dockerfile.lines().filter_map(|line| line.trim().strip_prefix(name)).map(str::trim).collect()
    };
    assert!(instruction("EXPOSE ").iter().any(|ports| ports.split_whitespace().any(|p| p == port.to_string())));
    let healthcheck = instruction("HEALTHCHECK ").concat();
    assert!(healthcheck.contains(&format!("/dev/tcp/127.0.0.1/{port}")) && healthcheck.contains("/healthz"));
    assert_eq!(instruction("ENTRYPOINT "), ["[\"acs-stream\"]"]);
    // The numeric non-root user that the Kubernetes manifests run as.
    assert_eq!(instruction("USER "), ["10001:10001"]);
    let statefulset = yaml("deploy/k8s/statefulset.yaml");
    assert_eq!(statefulset["spec"]["template"]["spec"]["securityContext"]["runAsUser"], 10001);
}

#[test]
fn the_compose_stack_agrees_with_the_service() {
    let compose = yaml("deploy/compose.yaml");
    let services = &compose["services"];
    let service = &services["acs-stream"];

    // The configuration mounted, with the environment set, loads as `run` loads it.
    let command = command_line(&service["command"]);
    let mounted = flag(&command, "--config");
    let volumes: Vec<&str> = service["volumes"].as_array().expect("volumes").iter().map(text).collect();
    assert!(volumes.contains(&format!("./config/acs-stream.toml:{mounted}:ro").as_str()), "{volumes:?}");
    let env: Vec<(String, String)> = service["environment"]
        .as_object()
        .expect("environment as a map")
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
        .collect();
    let config = service_config("deploy/config/acs-stream.toml", env);

    // One Kafka, one input topic, one admin port everywhere.
    let topic_init = command_line(&services["topic-init"]["command"]);
    let generator = command_line(&services["generator"]["command"]);
    assert_eq!(flag(&topic_init, "--bootstrap-server"), config.kafka.brokers);
    assert_eq!(flag(&generator, "--brokers"), config.kafka.brokers);
    assert!(config.kafka.input_topics.iter().any(|t| t == flag(&topic_init, "--topic")));
    assert!(config.kafka.input_topics.iter().any(|t| t == flag(&generator, "--topic")));
    let port = admin_port(&config);
    let ports: Vec<&str> = service["ports"].as_array().expect("ports").iter().map(text).collect();
    assert!(ports.iter().all(|p| p.ends_with(&format!(":{port}"))), "{ports:?}");
    let healthcheck = command_line(&service["healthcheck"]["test"]).concat();
    assert!(healthcheck.contains(&format!("/dev/tcp/127.0.0.1/{port}")) && healthcheck.contains("/readyz"));
    assert!(!healthcheck.replace("$$", "").contains('$'), "a `$` that Compose would interpolate: {healthcheck}");
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    assert_eq!(strings(&prometheus["scrape_configs"][0]["static_configs"]), [format!("acs-stream:{port}")]);
    assert!(strings(&prometheus["rule_files"]).contains(&"alerts.yml"));

    // The service drains and commits before Compose kills it.
    let stop = seconds(text(&service["stop_grace_period"]));
    assert!(stop > config.shutdown.grace, "stop_grace_period {stop:?} <= shutdown.grace {:?}", config.shutdown.grace);

    // Every file mounted from the repository exists, and Grafana looks where they are.
    for (name, service) in services.as_object().unwrap() {
        for volume in service["volumes"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(source) = text(volume).split(':').next().and_then(|s| s.strip_prefix("./")) else { continue };
            assert!(repo().join("deploy").join(source).exists(), "{name}: deploy/{source} missing");
        }
    }
    let provider = yaml("deploy/grafana/provisioning/dashboards/acs-stream.yaml");
    let dashboards = text(&provider["providers"][0]["options"]["path"]);
    let grafana: Vec<&str> = strings(&services["grafana"]["volumes"]);
    assert!(grafana.contains(&format!("./grafana/dashboards:{dashboards}:ro").as_str()), "{grafana:?}");
}

#[test]
fn the_kubernetes_manifests_agree_with_the_service() {
    let kustomization = yaml("deploy/k8s/kustomization.yaml");
    for resource in strings(&kustomization["resources"]) {
        assert!(repo().join("deploy/k8s").join(resource).exists(), "{resource} missing");
    }
    let generated = strings(&kustomization["configMapGenerator"][0]["files"]);
    assert_eq!(generated, ["config.toml=acs-stream.toml"]);

    let statefulset = yaml("deploy/k8s/statefulset.yaml");
    let pod = &statefulset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The configuration mounted, with the pod's environment (as the kubelet expands
    // `$(POD_NAME)`), loads as `run` loads it, with static membership from the pod's name.
    let command = command_line(&container["args"]);
    let mounted = flag(&command, "--config");
    let mount = text(&container["volumeMounts"][0]["mountPath"]);
    assert_eq!(format!("{mount}/config.toml"), mounted);
    assert_eq!(pod["volumes"][0]["configMap"]["name"], kustomization["configMapGenerator"][0]["name"]);
    let env = container["env"].as_array().expect("env");
    let pod_name = env.iter().find(|var| var["name"] == "POD_NAME").expect("POD_NAME");
    assert_eq!(pod_name["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    let env: Vec<(String, String)> = env
        .iter()
        .filter_map(|var| {
            Some((text(&var["name"]).to_owned(), var["value"].as_str()?.replace("$(POD_NAME)", "acs-stream-0")))
        })
        .collect();
    let config = service_config("deploy/k8s/acs-stream.toml", env);
    assert_eq!(config.kafka.consumer.get("group.instance.id").map(String::as_str), Some("acs-stream-0"));

    // Probes on the admin port: alive on /healthz, ready on /readyz.
    let port = admin_port(&config);
    assert_eq!(container["ports"][0]["name"], "admin");
    assert_eq!(container["ports"][0]["containerPort"], port);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let service = yaml("deploy/k8s/service.yaml");
    assert_eq!(service["spec"]["ports"][0]["name"], "admin");
    assert_eq!(service["spec"]["ports"][0]["port"], port);
    assert_eq!(statefulset["spec"]["serviceName"], service["metadata"]["name"]);

    // The pod is killed only after the service has drained and committed.
    let termination = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().expect("a grace period"));
    assert!(termination > config.shutdown.grace, "terminationGracePeriodSeconds <= shutdown.grace");

    // Locked down.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));

    // KEDA watches the lag of this very group and topic on this very cluster.
    let scaled = yaml("deploy/k8s/scaledobject.yaml");
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], statefulset["metadata"]["name"]);
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "kafka");
    assert_eq!(text(&trigger["metadata"]["bootstrapServers"]), config.kafka.brokers);
    assert_eq!(text(&trigger["metadata"]["consumerGroup"]), config.kafka.group_id);
    assert!(config.kafka.input_topics.iter().any(|t| t == text(&trigger["metadata"]["topic"])));
}

/// Runs `program args` from the repository. A program that is not installed fails the test,
/// saying how to get it (`tests/run.sh` installs them); only `ACS_TEST_SKIP_TOOLS=1` turns that
/// into a skip, named on stderr (`None`).
fn run_tool(program: &str, args: &[&str], install: &str) -> Option<std::process::Output> {
    match Command::new(program).args(args).current_dir(repo()).output() {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let test = std::thread::current().name().unwrap_or("a tool check").to_owned();
            if std::env::var("ACS_TEST_SKIP_TOOLS").is_ok_and(|v| v == "1") {
                use std::io::Write as _;
                // Straight to stderr: libtest would hide an eprintln! of a passing test.
                let _ =
                    writeln!(std::io::stderr(), "SKIPPED {test}: ACS_TEST_SKIP_TOOLS=1 and {program} is not installed");
                return None;
            }
            panic!(
                "{test}: {program} is not installed ({install}; tests/run.sh installs it), \
                 or set ACS_TEST_SKIP_TOOLS=1 to skip the tool checks"
            );
        }
        Err(error) => panic!("{program}: {error}"),
    }
}

/// `kubectl kustomize DIR`, or the standalone `kustomize build DIR` where kubectl is absent.
fn kustomize(dir: &str) -> Option<std::process::Output> {
    let kubectl = Command::new("kubectl").arg("version").arg("--client").output();
    if kubectl.is_ok() {
        return run_tool("kubectl", &["kustomize", dir], "kubectl");
    }
    run_tool("kustomize", &["build", dir], "go install sigs.k8s.io/kustomize/kustomize/v5")
}

#[test]
fn promtool_accepts_the_prometheus_files_and_the_rules_pass_their_unit_tests() {
    for args in [
        &["check", "config", "deploy/prometheus/prometheus.yml"][..],
        &["test", "rules", "deploy/prometheus/alerts.test.yml"][..],
    ] {
        if let Some(output) = run_tool("promtool", args, "Debian's package prometheus") {
            let report =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            assert!(output.status.success(), "promtool {}:\n{report}", args.join(" "));
        }
    }
}

#[test]
fn the_kustomization_renders() {
    let Some(output) = kustomize("deploy/k8s") else { return };
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rendered = String::from_utf8(output.stdout).unwrap();
    let kinds: BTreeSet<String> = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|document| {
            let value = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(document).unwrap();
            value["kind"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    for kind in ["ConfigMap", "Namespace", "PodDisruptionBudget", "ScaledObject", "Service", "StatefulSet"] {
        assert!(kinds.contains(kind), "{kind} not rendered: {kinds:?}");
    }
}

//! The default rules over small hand-written sessions: each fires where it should (count
//! and evidence) and not on its near-miss; cooldown, window boundaries, lateness, replay.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::model::{ReasonCatalog, Source};
use crate::pipeline::{Outcome, Pipeline, Record};
use crate::session::{SessionLimits, Sessions};

const NOW: i64 = 1_767_261_400_000;
/// Incident times are whole seconds after T0.
const T0: i64 = 1_767_261_000_000;
const DE: &str = "dIresu#d1#h1#acme";
const DE2: &str = "dIresu#d1#h2#acme";

/// One flat record: session, message id, seconds after T0, actor, action, action status,
/// and more fields (`,"k":v...`, or "").
fn rec(de: &str, id: &str, at: i64, actor: &str, action: &str, outcome: &str, more: &str) -> String {
    format!(
        r#"{{"deliveryExecutionId":"{de}","messageId":"{id}","incidentTime":{},"actor":"{actor}","action":"{action}","actionStatus":"{outcome}","testTaker":"student1"{more}}}"#,
        (T0 + at * 1000) / 1000
    )
}

/// A test-taker `log` event of session `DE` with this reason message.
fn said(id: &str, at: i64, message: &str) -> String {
    rec(DE, id, at, "test-taker", "log", "succeeded", &format!(r#","reasonCode":20999,"reasonMessage":"{message}""#))
}

const BLUR: &str = "[Pause On Blur] Test taker tried to move to a different tab/app.";
const PLUGIN_TAB: &str =
    "[Security Plugin] Test execution was paused because test taker tried to move to a different tab/app.";
const PLUGIN_FULL: &str =
    "[Security Plugin] Test execution was paused because test taker tried to go out from full screen mode.";
const FULL: &str = "[Full Screen] Test taker tried to go out from full screen mode.";

struct Run {
    pipeline: Pipeline,
    sessions: Sessions,
    rules: RuleSet,
    by_session: HashMap<String, RuleState>,
    by_tenant: HashMap<String, RuleState>,
    offset: i64,
}

impl Run {
    fn new() -> Run {
        Run::with(RuleSet::defaults())
    }

    fn with(rules: RuleSet) -> Run {
        Run {
            pipeline: Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap(),
            sessions: Sessions::new(SessionLimits::default()),
            rules,
            by_session: HashMap::new(),
            by_tenant: HashMap::new(),
            offset: 0,
        }
    }

    /// Every alert `json` fires.
    fn feed(&mut self, json: &str) -> Vec<Alert> {
        self.offset += 1;
        let source = Source { topic: Arc::from("acs.raw"), partition: 2, offset: self.offset };
        let mut event = self
            .pipeline
            .enrich(json.as_bytes(), &source, NOW)
            .unwrap_or_else(|dead| panic!("{json}: {dead:?}"))
            .into_owned();
        let view = self.sessions.apply(&mut event, self.offset, NOW);
        let session = self.by_session.entry(event.delivery_execution_id.to_string()).or_default();
        let tenant = self.by_tenant.entry(event.tenant_id.to_string()).or_default();
        evaluate(&self.rules, &event, &view, session, Tenant::Inline(tenant))
    }

    /// The alerts of `rule` that `records` fire, in order.
    fn fired(&mut self, rule: &str, records: &[String]) -> Vec<Alert> {
        records.iter().flat_map(|r| self.feed(r)).filter(|a| &*a.rule_id == rule).collect()
    }
}

fn fired(rule: &str, records: &[String]) -> Vec<Alert> {
    Run::new().fired(rule, records)
}

fn ids(alert: &Alert) -> Vec<&str> {
    alert.evidence.iter().map(|e| &*e.message_id).collect()
}

/// The one alert of `rule`, with its evidence's message ids and count checked.
#[track_caller]
fn one(rule: &str, records: &[String], evidence: &[&str]) -> Alert {
    let alerts = fired(rule, records);
    assert_eq!(alerts.len(), 1, "{rule}: {alerts:#?}");
    let alert = alerts.into_iter().next().unwrap();
    assert_eq!(ids(&alert), evidence, "{rule}");
    assert_eq!(alert.count as usize, evidence.len());
    alert
}

#[track_caller]
fn none(rule: &str, records: &[String]) {
    let alerts = fired(rule, records);
    assert!(alerts.is_empty(), "{rule}: {alerts:#?}");
}

fn start(id: &str) -> String {
    rec(DE, id, 0, "test-taker", "start", "succeeded", "")
}

#[test]
fn security_flag_fires_on_succeeded_flags_with_a_cooldown_per_signal() {
    let flag = |id: &str, at: i64, outcome: &str, message: &str| {
        rec(DE, id, at, "proctor", "flag", outcome, &format!(r#","reasonCode":30010,"reasonMessage":"{message}""#))
    };
    let alert = one("security-flag", &[start("s"), flag("f1", 10, "succeeded", "Phone on desk.")], &["f1"]);
    assert_eq!(alert.severity, Severity::Medium);
    assert_eq!((alert.window_start, alert.window_end, alert.fired_at), (T0 + 10_000, T0 + 10_000, T0 + 10_000));
    assert_eq!(alert.delivery_execution_id.as_deref(), Some(DE));
    assert_eq!(alert.test_taker.as_deref(), Some("student1"));
    assert_eq!(alert.summary, format!("A flag was raised in session {DE} (signal: proctor-comment)."));
    none("security-flag", &[start("s"), flag("f1", 10, "failed", "Phone on desk.")]);
    // Cooldown: 5 minutes per session and signal.
    let alerts = fired(
        "security-flag",
        &[
            flag("f1", 10, "succeeded", "Phone on desk."),
            flag("f2", 309, "succeeded", "Talking."),
            flag("f3", 20, "succeeded", "[Prevent Screenshot] Test taker tried to take a screenshot."),
            flag("f4", 310, "succeeded", "Still talking."),
            flag("f4", 311, "succeeded", "Still talking."),
        ],
    );
    let fired: Vec<Vec<&str>> = alerts.iter().map(ids).collect();
    assert_eq!(
        fired,
        [vec!["f1"], vec!["f3"], vec!["f4"]],
        "f2 cools down; another signal does not; f4 again is a duplicate"
    );
}

#[test]
fn tab_switches_count_pause_on_blur_and_security_plugin_tab_pauses() {
    let records = [said("b1", 0, BLUR), said("b2", 120, PLUGIN_TAB), said("b3", 599, BLUR)];
    let alert = one("tab-switch-repeated", &records, &["b1", "b2", "b3"]);
    assert_eq!((alert.window_start, alert.window_end), (T0, T0 + 599_000));
    assert_eq!(alert.severity, Severity::High);
    assert_eq!(alert.summary, format!("3 tab or app switches within 10m in session {DE}."));
    // Near-misses: one short; the first and third 10 minutes apart; a duplicate; a
    // full-screen pause.
    none("tab-switch-repeated", &[said("b1", 0, BLUR), said("b2", 120, BLUR)]);
    none("tab-switch-repeated", &[said("b1", 0, BLUR), said("b2", 120, BLUR), said("b3", 600, BLUR)]);
    none("tab-switch-repeated", &[said("b1", 0, BLUR), said("b2", 120, BLUR), said("b2", 130, BLUR)]);
    none("tab-switch-repeated", &[said("b1", 0, BLUR), said("b2", 120, BLUR), said("b3", 130, PLUGIN_FULL)]);
}

#[test]
fn full_screen_exits_count_full_screen_and_security_plugin_full_screen_pauses() {
    let records = [said("x1", 0, FULL), said("x2", 60, PLUGIN_FULL), said("x3", 120, FULL)];
    one("fullscreen-exit-repeated", &records, &["x1", "x2", "x3"]);
    none("fullscreen-exit-repeated", &[said("x1", 0, FULL), said("x2", 60, PLUGIN_FULL), said("x3", 120, PLUGIN_TAB)]);
    none("fullscreen-exit-repeated", &[said("x1", 0, FULL), said("x2", 60, FULL), said("x3", 700, FULL)]);
}

#[test]
fn forbidden_commands_are_copy_cut_and_paste() {
    let command = |id: &str, at: i64, name: &str| {
        said(id, at, &format!("[Disable Commands] Test taker tried to use a forbidden command: `{name}`."))
    };
    one("forbidden-command", &[command("c1", 0, "copy"), command("c2", 299, "paste")], &["c1", "c2"]);
    none("forbidden-command", &[command("c1", 0, "copy"), command("c2", 300, "paste")]);
    none("forbidden-command", &[command("c1", 0, "copy"), command("c2", 10, "print")]);
    none("forbidden-command", &[command("c1", 0, "copy"), said("c2", 10, "[Disable Right Click] Right click.")]);
}

#[test]
fn screenshots_and_lockdown_browser_fire_on_every_signal() {
    let shot = said("p1", 5, "[Prevent Screenshot] Test taker tried to take a screenshot.");
    one("screenshot-attempt", std::slice::from_ref(&shot), &["p1"]);
    let twice = fired("screenshot-attempt", &[shot.clone(), shot, said("p2", 6, "[Disable Right Click] x")]);
    assert_eq!(twice.len(), 1, "the duplicate and another signal do not fire");
    let lockdown = said("l1", 5, "[Lockdown Browser] Lockdown browser is not detected.");
    assert_eq!(one("lockdown-breach", &[lockdown], &["l1"]).severity, Severity::Critical);
    none("lockdown-breach", &[said("l1", 5, "[Lockdown] not detected.")]);
}

#[test]
fn ip_changes_are_messages_or_a_second_test_taker_ip() {
    let from = |id: &str, at: i64, actor: &str, ip: &str| {
        rec(DE, id, at, actor, "navigation", "succeeded", &format!(r#","ip":"{ip}","userAgent":"UA-1""#))
    };
    one("ip-change", &[said("i1", 5, "IP address change detected.")], &["i1"]);
    let records = [
        start("s"),
        from("n1", 1, "test-taker", "198.51.100.7"),
        from("n2", 2, "proctor", "203.0.113.9"),
        from("n3", 3, "deliver-fe", "198.51.100.7"),
        from("n4", 4, "security-plugin", "198.51.100.8"),
        from("n5", 5, "test-taker", "198.51.100.7"),
    ];
    one("ip-change", &records, &["n4"]);
    none("ip-change", &records[..4]);
}

#[test]
fn user_agent_changes_count_the_test_taker_side_only() {
    let from = |id: &str, at: i64, actor: &str, agent: &str| {
        rec(DE, id, at, actor, "navigation", "succeeded", &format!(r#","userAgent":"{agent}""#))
    };
    let records = [
        start("s"),
        from("u1", 1, "test-taker", "Firefox"),
        from("u2", 2, "proctor", "Chrome"),
        from("u3", 3, "deliver-fe", "Firefox"),
        from("u4", 4, "test-taker", "Edge"),
    ];
    assert_eq!(one("user-agent-change", &records, &["u4"]).severity, Severity::Medium);
    none("user-agent-change", &records[..4]);
}

#[test]
fn proctor_termination_needs_a_succeeded_terminate_by_a_proctor() {
    let terminate = |actor: &str, outcome: &str| {
        [start("s"), rec(DE, "t1", 60, actor, "terminate", outcome, r#","reasonCode":30020,"status":"terminated""#)]
    };
    let alert = one("proctor-termination", &terminate("proctor", "succeeded"), &["t1"]);
    assert_eq!(alert.summary, format!("A proctor terminated session {DE} (reason 30020)."));
    none("proctor-termination", &terminate("proctor", "failed"));
    none("proctor-termination", &terminate("system", "succeeded"));
}

#[test]
fn repeated_pauses_count_succeeded_pauses_within_30_minutes() {
    let pause = |id: &str, at: i64, outcome: &str| rec(DE, id, at, "proctor", "pause", outcome, "");
    let resume = |id: &str, at: i64| rec(DE, id, at, "proctor", "resume", "succeeded", "");
    let records = [
        start("s"),
        pause("p1", 60, "succeeded"),
        resume("r1", 120),
        pause("p2", 600, "succeeded"),
        resume("r2", 700),
        pause("p3", 1859, "succeeded"),
    ];
    one("repeated-pauses", &records, &["p1", "p2", "p3"]);
    let mut failed = records.clone();
    failed[3] = pause("p2", 600, "failed");
    none("repeated-pauses", &failed);
    let mut late = records;
    late[5] = pause("p3", 1860, "succeeded");
    none("repeated-pauses", &late);
}

#[test]
fn excessive_extra_time_fires_once_when_crossing_60_minutes() {
    let extra = |id: &str, at: i64, minutes: f64| {
        rec(DE, id, at, "proctor", "update", "succeeded", &format!(r#","reasonCode":30040,"extraTime":{minutes}"#))
    };
    let records = [start("s"), extra("e1", 10, 45.0), extra("e2", 20, 20.0), extra("e3", 30, 5.0)];
    one("excessive-extra-time", &records, &["e2"]);
    none("excessive-extra-time", &[start("s"), extra("e1", 10, 45.0), extra("e2", 20, 15.0)]);
}

#[test]
fn identity_authorization_is_reason_code_20030() {
    let reason = |code: i64| rec(DE, "a1", 5, "proctor", "flag", "succeeded", &format!(r#","reasonCode":{code}"#));
    assert_eq!(
        one("identity-authorization", &[reason(20030)], &["a1"]).evidence[0].reason_code,
        Some(EvidenceCode::Numeric(20030))
    );
    none("identity-authorization", &[reason(20040)]);
}

#[test]
fn illegal_transitions_and_events_after_the_end() {
    let terminated = rec(DE, "t1", 10, "proctor", "terminate", "succeeded", r#","status":"terminated""#);
    let after = rec(DE, "n1", 20, "test-taker", "navigation", "succeeded", "");
    one("illegal-transition", &[start("s"), terminated.clone(), after], &["n1"]);
    let moved = rec(DE, "n1", 20, "test-taker", "navigation", "succeeded", "");
    none("illegal-transition", &[start("s"), moved, terminated]);
}

#[test]
fn technical_bursts_count_across_the_sessions_of_a_tenant() {
    let technical = |i: i64, at_ms: i64| {
        let de = if i % 2 == 0 { DE } else { DE2 };
        format!(
            r#"{{"deliveryExecutionId":"{de}","messageId":"tech-{i}","incidentTime":"{}","actor":"deliver-fe","action":"log","actionStatus":"interacting","reasonCode":40010,"reasonMessage":"[deliver-fe] TypeError"}}"#,
            chrono::DateTime::from_timestamp_millis(T0 + at_ms).unwrap().to_rfc3339()
        )
    };
    let burst: Vec<String> = (0..20).map(|i| technical(i, i * 3_000)).collect();
    let alerts = fired("technical-burst", &burst);
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!((alert.count, alert.delivery_execution_id.as_deref(), alert.test_taker.as_deref()), (20, None, None));
    assert_eq!(&*alert.tenant_id, "acme");
    assert_eq!(alert.evidence.first().map(|e| &*e.message_id), Some("tech-0"));
    assert_eq!((alert.window_start, alert.window_end), (T0, T0 + 57_000));
    none("technical-burst", &burst[..19]);
    let slow: Vec<String> = (0..20).map(|i| technical(i, i * 3_200)).collect();
    none("technical-burst", &slow);
}

/// Counted in place or forwarded, a tenant's rules see the same events: those that match one
/// of them. A later event that matches none does not make a burst late in one and not in the
/// other.
#[test]
fn a_tenants_rules_count_the_same_in_place_as_forwarded() {
    let technical = |i: i64| {
        let de = if i % 2 == 0 { DE } else { DE2 };
        rec(de, &format!("tech-{i}"), i * 3, "deliver-fe", "log", "interacting", r#","reasonCode":40010"#)
    };
    // A navigation 390 s in (past the burst by more than the allowed lateness, 5 min), then the
    // burst.
    let mut records = vec![start("s"), rec(DE, "n1", 390, "test-taker", "navigation", "succeeded", "")];
    records.extend((0..20).map(technical));

    let in_place = Run::new().fired("technical-burst", &records);
    let mut run = Run::new();
    let mut forwarded = Vec::new();
    for record in &records {
        run.offset += 1;
        let source = Source { topic: Arc::from("acs.raw"), partition: 2, offset: run.offset };
        let mut event = run.pipeline.enrich(record.as_bytes(), &source, NOW).unwrap().into_owned();
        let view = run.sessions.apply(&mut event, run.offset, NOW);
        let session = run.by_session.entry(event.delivery_execution_id.to_string()).or_default();
        let mut matched = Forwarded::new();
        forwarded.extend(evaluate(&run.rules, &event, &view, session, Tenant::Forward(&mut matched)));
        if !matched.is_empty() {
            let tenant = run.by_tenant.entry(event.tenant_id.to_string()).or_default();
            forwarded.extend(evaluate_tenant(&run.rules, &event, &matched, tenant));
        }
    }
    forwarded.retain(|alert| &*alert.rule_id == "technical-burst");
    assert_eq!(in_place.len(), 1, "{in_place:#?}");
    assert_eq!(in_place, forwarded);

    // And as `process` runs the pipeline (no tenant topic: counted in the session store).
    let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap().with_inline_tenants();
    let mut sessions = pipeline.sessions();
    let mut processed = Vec::new();
    for (offset, record) in (1..).zip(&records) {
        let source = Source { topic: Arc::from("acs.raw"), partition: 2, offset };
        match pipeline.process(&Record::new(None, record.as_bytes(), source), &mut sessions, NOW) {
            Outcome::Event { alerts, forward, .. } => {
                assert!(forward.is_empty(), "nothing forwarded without a tenant topic");
                processed.extend(alerts.iter().map(|alerted| alerted.alert().expect("an alert of the contract")));
            }
            Outcome::DeadLetter(dead) => panic!("{dead:?}"),
        }
    }
    processed.retain(|alert| &*alert.rule_id == "technical-burst");
    assert_eq!(in_place, processed);
}

#[test]
fn late_events_count_within_the_allowed_lateness_only() {
    // The watermark moves to 20 min; allowed lateness is 5 min.
    let ahead = said("w", 1200, "[Disable Right Click] x");
    let within = [ahead.clone(), said("b1", 900, BLUR), said("b2", 910, BLUR), said("b3", 1210, BLUR)];
    one("tab-switch-repeated", &within, &["b1", "b2", "b3"]);
    let beyond = [ahead, said("b1", 899, BLUR), said("b2", 910, BLUR), said("b3", 1210, BLUR)];
    none("tab-switch-repeated", &beyond);
    // A count-1 rule is not windowed: a late match fires.
    let shot = said("p1", 100, "[Prevent Screenshot] Test taker tried to take a screenshot.");
    one("screenshot-attempt", &[said("w", 1200, "[Disable Right Click] x"), shot], &["p1"]);
    // Out of order within the lateness: sorted by incident time in the evidence.
    let shuffled = [said("b3", 300, BLUR), said("b1", 100, BLUR), said("b2", 200, BLUR)];
    let alert = one("tab-switch-repeated", &shuffled, &["b1", "b2", "b3"]);
    assert_eq!((alert.window_start, alert.window_end, alert.fired_at), (T0 + 100_000, T0 + 300_000, T0 + 200_000));
}

#[test]
fn an_alert_consumes_its_events_and_a_threshold_cooldown_holds_back_the_next() {
    let blurs: Vec<String> = (0..7).map(|i| said(&format!("b{i}"), i * 10, BLUR)).collect();
    let alerts = fired("tab-switch-repeated", &blurs);
    let fired: Vec<Vec<&str>> = alerts.iter().map(ids).collect();
    assert_eq!(fired, [vec!["b0", "b1", "b2"], vec!["b3", "b4", "b5"]]);

    let text = super::config::DEFAULT_RULES_TOML.replace(
        "summary = \"{count} tab or app switches within {window} in session {deliveryExecutionId}.\"",
        "summary = \"{count} tab or app switches within {window} in session {deliveryExecutionId}.\"\ncooldown = \"2m\"",
    );
    let rules = RuleSet::from_toml("rules", &text).unwrap();
    assert_eq!(rules.get("tab-switch-repeated").unwrap().cooldown, Duration::from_secs(120));
    let alerts = Run::with(rules).fired("tab-switch-repeated", &blurs);
    let fired: Vec<Vec<&str>> = alerts.iter().map(ids).collect();
    // b3..b6 come within 2 minutes of b2's alert: counted, not fired; none after.
    assert_eq!(fired, [vec!["b0", "b1", "b2"]]);
    let mut later = blurs.clone();
    later.push(said("b7", 140, BLUR));
    let alerts = Run::with(RuleSet::from_toml("rules", &text).unwrap()).fired("tab-switch-repeated", &later);
    let fired: Vec<Vec<&str>> = alerts.iter().map(ids).collect();
    assert_eq!(fired, [vec!["b0", "b1", "b2"], vec!["b5", "b6", "b7"]], "after the cooldown, the latest three");
}

#[test]
fn a_replay_yields_byte_identical_alerts() {
    let records = [
        start("s"),
        said("b1", 10, BLUR),
        said("b2", 20, PLUGIN_TAB),
        said("b3", 30, BLUR),
        said("l1", 40, "[Lockdown Browser] Security breach detected. Process list: obs64.exe."),
        rec(DE, "f1", 50, "proctor", "flag", "succeeded", r#","reasonCode":20030"#),
        rec(DE, "t1", 60, "proctor", "terminate", "succeeded", r#","status":"terminated""#),
        rec(DE, "n1", 70, "test-taker", "navigation", "succeeded", r#","ip":"192.0.2.1""#),
    ];
    let first: Vec<String> = Run::new().json(&records);
    let second: Vec<String> = Run::new().json(&records);
    assert_eq!(first, second);
    let rules: Vec<String> = first
        .iter()
        .map(|j| serde_json::from_str::<serde_json::Value>(j).unwrap()["ruleId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        rules,
        [
            "tab-switch-repeated",
            "lockdown-breach",
            "security-flag",
            "identity-authorization",
            "proctor-termination",
            "illegal-transition",
        ]
    );
}

impl Run {
    fn feed_all(&mut self, json: &str) -> Vec<String> {
        self.feed(json).iter().map(Alert::to_json).collect()
    }

    fn json(&mut self, records: &[String]) -> Vec<String> {
        records.iter().flat_map(|r| self.feed_all(r)).collect()
    }
}

#[test]
fn memory_is_bounded() {
    let mut run = Run::new();
    for i in 0..200 {
        // Tab switches 301 s apart: never 3 within 10 min, so nothing fires and all are held
        // until they are too old to count.
        assert!(run.feed(&said(&format!("b{i}"), i * 301, BLUR)).is_empty());
        let state = &run.by_session[DE];
        assert!(state.held() <= 6, "{}", state.held());
    }
    let mut run = Run::new();
    for i in 0..40 {
        let ip = format!(r#","ip":"10.0.0.{i}","userAgent":"UA {i}""#);
        run.feed(&rec(DE, &format!("n{i}"), i, "test-taker", "navigation", "succeeded", &ip));
    }
    let state = &run.by_session[DE];
    assert_eq!((state.ips.len(), state.user_agents.len()), (config::MAX_DISTINCT, config::MAX_DISTINCT));
}

/// Synthetic traffic (every shape, actor and security message) through the default rules:
/// a replay fires the same alerts byte for byte, alert ids are unique, the windows stay
/// within their bounds, and the common rules fire.
#[test]
fn synthetic_traffic_replays_identically_within_bounds() {
    use crate::synth::{Generator, SynthOptions};
    let options = SynthOptions { concurrent_sessions: 16, malformed_ratio: 0.0, ..SynthOptions::stress() };
    let records: Vec<Vec<u8>> = Generator::new(options).take_records(4_000).into_iter().map(|r| r.value).collect();
    let rules = RuleSet::defaults();
    let bound: usize = rules.rules().iter().map(|r| if r.count > 1 { 2 * r.count as usize } else { 0 }).sum();
    let replay = || {
        let mut run = Run::new();
        let mut alerts = Vec::new();
        for value in &records {
            let Ok(text) = std::str::from_utf8(value) else { continue };
            alerts.extend(run.feed(text).iter().map(Alert::to_json));
            for state in run.by_session.values().chain(run.by_tenant.values()) {
                assert!(state.held() <= bound, "{} matches held", state.held());
            }
        }
        alerts
    };
    let first = replay();
    assert_eq!(first, replay());
    let values: Vec<serde_json::Value> = first.iter().map(|j| serde_json::from_str(j).unwrap()).collect();
    let ids: std::collections::HashSet<&str> = values.iter().map(|v| v["alertId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), values.len(), "alert ids are unique");
    let fired: std::collections::HashSet<&str> = values.iter().map(|v| v["ruleId"].as_str().unwrap()).collect();
    let common = [
        "security-flag",
        "tab-switch-repeated",
        "fullscreen-exit-repeated",
        "forbidden-command",
        "screenshot-attempt",
        "lockdown-breach",
        "ip-change",
        "proctor-termination",
        "repeated-pauses",
        "illegal-transition",
        "technical-burst",
    ];
    for rule in common {
        assert!(fired.contains(rule), "{rule} never fired: {fired:?}");
    }
}

#[test]
fn a_full_window_keeps_its_latest_matches() {
    let text = "allowed_lateness = \"1h\"\n[[rule]]\nid = \"bursts\"\nseverity = \"low\"\ntitle = \"T\"\nsummary = \"S\"\n\
                [rule.threshold]\ncount = 3\nwindow = \"1s\"\n[[rule.match]]\nsignals = [\"pause-on-blur\"]\n";
    let mut run = Run::with(RuleSet::from_toml("rules", text).unwrap());
    // Never 3 within a second: held, at most 2 × 3.
    for i in 1..=8 {
        assert!(run.feed(&said(&format!("b{i}"), i * 100, BLUR)).is_empty());
    }
    // Older than every match held in a full window: not counted.
    assert!(run.feed(&said("late", 50, BLUR)).is_empty());
    let held: Vec<&str> = run.by_session[DE].windows[0].matches.iter().map(|e| &*e.message_id).collect();
    assert_eq!(held, ["b3", "b4", "b5", "b6", "b7", "b8"]);
}

/// After a reload that reorders the rules and changes their windows, each window is
/// pruned and counted by its own rule of the new set (found by id: where the rule was before
/// now holds another), and shares that rule's id.
#[test]
fn a_reload_that_reorders_the_rules_prunes_each_window_by_its_new_rule() {
    let rules = |first: (&str, &str, &str), second: (&str, &str, &str)| {
        let rule = |(id, window, signal): (&str, &str, &str)| {
            format!(
                "[[rule]]\nid = \"{id}\"\nseverity = \"low\"\ntitle = \"T\"\nsummary = \"S\"\n\
                 [rule.threshold]\ncount = 3\nwindow = \"{window}\"\n[[rule.match]]\nsignals = [\"{signal}\"]\n"
            )
        };
        let text = format!("allowed_lateness = \"1s\"\n{}{}", rule(first), rule(second));
        RuleSet::from_toml("rules", &text).unwrap()
    };
    let mut run = Run::with(rules(("blur", "1m", "pause-on-blur"), ("full", "10m", "full-screen")));
    assert!(run.feed(&said("b1", 0, BLUR)).is_empty());
    assert!(run.feed(&said("b2", 10, BLUR)).is_empty());
    assert!(run.feed(&said("f1", 20, FULL)).is_empty());
    // Now `blur` keeps its matches 30 minutes, and `full`, where `blur` was, 1 minute.
    run.rules = rules(("full", "1m", "full-screen"), ("blur", "30m", "pause-on-blur"));
    assert!(run.feed(&said("other", 200, "nothing to count")).is_empty());
    let windows = &run.by_session[DE].windows;
    let held: Vec<(&str, usize)> = windows.iter().map(|w| (&*w.rule, w.matches.len())).collect();
    assert_eq!(held, [("blur", 2)], "`full`'s match is older than its new minute, `blur`'s are not");
    assert!(Arc::ptr_eq(&windows[0].rule, &run.rules.rules()[1].id), "the window shares the new rule's id");
    let fired = run.feed(&said("b3", 210, BLUR));
    assert_eq!(fired.iter().map(ids).collect::<Vec<_>>(), [["b1", "b2", "b3"]]);
}

mod pruning {
    use proptest::prelude::*;

    use super::*;

    /// What one generated event is: a session (0 or 1), seconds after the previous event
    /// (negative: a late event), and which of a few matching messages it is.
    fn event() -> impl Strategy<Value = (usize, i64, usize)> {
        (0..2usize, prop_oneof![0..30i64, 0..900i64, -400..0i64], 0..8usize)
    }

    /// A rules file whose windows and cooldowns are short, to be reloaded midway.
    const SHORT: &str = "allowed_lateness = \"2m\"\n\
        [[rule]]\nid = \"tab-switch-repeated\"\nseverity = \"high\"\ntitle = \"T\"\nsummary = \"S {count}\"\n\
        cooldown = \"90s\"\n[rule.threshold]\ncount = 2\nwindow = \"3m\"\n[[rule.match]]\nsignals = [\"pause-on-blur\"]\n\
        [[rule]]\nid = \"flags\"\nseverity = \"low\"\ntitle = \"F\"\nsummary = \"S\"\ncooldown = \"4m\"\n\
        group_by = \"signal\"\n[[rule.match]]\nactions = [\"flag\"]\n";

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Pruning only when something is due (the engine's way) fires the same alerts and
        /// keeps the same windows as pruning after every event, through late events, expiry,
        /// cooldowns and a reload of other rules midway.
        #[test]
        fn pruning_when_due_is_pruning_after_every_event(
            events in proptest::collection::vec(event(), 1..120),
            reload_at in 0..120usize,
        ) {
            let messages = [
                BLUR,
                PLUGIN_TAB,
                FULL,
                "[Disable Commands] Test taker tried to use a forbidden command: `copy`.",
                "[Prevent Screenshot] Test taker tried to take a screenshot.",
                "[Disable Right Click] x",
                "flag",
                "technical",
            ];
            let (mut lazy, mut eager) = (Run::new(), Run::new());
            let mut at = 10_000;
            for (i, (session, step, message)) in events.into_iter().enumerate() {
                if i == reload_at {
                    lazy.rules = RuleSet::from_toml("short", SHORT).unwrap();
                    eager.rules = RuleSet::from_toml("short", SHORT).unwrap();
                }
                at += step;
                let de = [DE, DE2][session];
                let id = format!("m{i}");
                let record = if messages[message] == "flag" {
                    rec(de, &id, at, "proctor", "flag", "succeeded", r#","reasonCode":30010,"reasonMessage":"[Pause On Blur] x""#)
                } else if messages[message] == "technical" {
                    // `technical-burst`, counted across the tenant (in place here).
                    let more = r#","reasonCode":40010,"reasonMessage":"[deliver-fe] TypeError""#;
                    rec(de, &id, at, "deliver-fe", "log", "interacting", more)
                } else {
                    let more = format!(r#","reasonCode":20999,"reasonMessage":"{}""#, messages[message]);
                    rec(de, &id, at, "test-taker", "log", "succeeded", &more)
                };
                for state in eager.by_session.values_mut().chain(eager.by_tenant.values_mut()) {
                    state.prune_due = Default::default();
                }
                let (a, b) = (lazy.feed(&record), eager.feed(&record));
                prop_assert_eq!(a, b, "alerts of event {}", i);
                prop_assert_eq!(&lazy.by_session, &eager.by_session, "states after event {}", i);
                prop_assert_eq!(&lazy.by_tenant, &eager.by_tenant);
            }
        }
    }
}

#[test]
fn titles_and_summaries_fill_every_placeholder() {
    let text = "[[rule]]\nid = \"r-all\"\nseverity = \"high\"\ntitle = \"{count} of {rule}\"\n\
                summary = \"{rule}|{severity}|{window}|{count}|{tenantId}|{deliveryExecutionId}|{testTaker}|{signal}|{reasonCode}|}x\"\n\
                [rule.threshold]\ncount = 2\nwindow = \"10m\"\n[[rule.match]]\nsignals = [\"pause-on-blur\"]\n";
    let mut run = Run::with(RuleSet::from_toml("rules", text).unwrap());
    assert!(run.feed(&said("b1", 1, BLUR)).is_empty());
    let alerts = run.feed(&said("b2", 2, BLUR));
    assert_eq!(alerts.len(), 1);
    assert_eq!(&*alerts[0].title, "2 of r-all");
    assert_eq!(alerts[0].summary, format!("r-all|high|10m|2|acme|{DE}|student1|pause-on-blur|20999|}}x"));
    let error = RuleSet::from_toml("rules", &text.replace("}x", "}{x")).unwrap_err().to_string();
    assert!(error.contains("rule \"r-all\": summary: an unclosed `{`"), "{error}");
}

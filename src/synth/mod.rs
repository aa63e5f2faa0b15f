//! Deterministic synthetic traffic: sessions in every upstream shape.
//!
//! Several tenants, many concurrent sessions, every actor and shape, the real message
//! texts of upstream-envelopes.md, occasional 8 KB deliver-fe stack traces, and a share of
//! malformed records. The same seed yields the same records, so benchmarks and the demo
//! are reproducible. Used by the benchmarks, and by `demo` and `generate`.
//!
//! Two mixes ([`Profile`]):
//!
//! - [`Profile::Realistic`] (the default, `realistic.rs`): sittings of 20 to 120 minutes of
//!   event time, a navigation every 1 to 3 minutes, pauses, authorizations, extra time and
//!   technical bursts at low rates; 85% of sessions clean, 10% minor incidents, 5% the
//!   sustained behaviour of one default rule each. Each session's kind can be asked
//!   ([`Generator::script`]), so that tests can check what the rules make of it.
//! - [`Profile::Stress`] (`stress.rs`): the flag-heavy mix the benchmarks and broker tests
//!   were written against (37% of events are flags, sessions last about 26 s).
//!
//! Sessions follow the state machine (`session::machine`), every event declaring the
//! session's status, but for the illegal transitions a mix means to send. The generator's
//! clock is event time: records come in event-time order, as fast as they are asked for.
//!
//! With a capped clock ([`Generator::cap_clock`]), records of one session may share a time
//! and repeat byte for byte: the service then takes the repeat for an upstream retry (a
//! duplicate, which changes nothing), and the statuses declared afterwards may disagree
//! with the one it tracks.

mod realistic;
mod render;
mod stress;

/// Which mix of sessions to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Sittings as long as real ones, most of them clean (see the module documentation).
    #[default]
    Realistic,
    /// The flag-heavy mix: every session raises many flags within seconds. For stress
    /// tests and the benchmarks measured with it.
    Stress,
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(text: &str) -> Result<Profile, String> {
        match text {
            "realistic" => Ok(Profile::Realistic),
            "stress" => Ok(Profile::Stress),
            _ => Err(format!("expected `realistic` or `stress`, got `{text}`")),
        }
    }
}

/// The default rule (config/rules.toml) a suspicious session is scripted to trip: its
/// behaviour, sustained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// 3 to 5 tab switches within minutes (the first one paused by the security plugin).
    TabSwitchRepeated,
    /// 3 to 5 full-screen exits within minutes.
    FullscreenExitRepeated,
    /// 2 to 4 forbidden `copy` / `paste` within a few minutes.
    ForbiddenCommand,
    /// 1 or 2 screenshot attempts.
    ScreenshotAttempt,
    /// The lockdown browser reports a breach.
    LockdownBreach,
    /// The test taker goes on from another IP address (half the time also flagged
    /// `IP address change detected.`).
    IpChange,
    /// The test taker goes on in another browser.
    UserAgentChange,
    /// A proctor's note, then a proctor terminates the session.
    ProctorTermination,
    /// Three proctor pauses within about 12 minutes.
    RepeatedPauses,
    /// Extra time granted twice, above 60 minutes in all.
    ExcessiveExtraTime,
    /// 22 to 30 deliver-fe errors within 50 s (the rule is tenant-scoped: its alert names
    /// the tenant, not the session).
    TechnicalBurst,
    /// A proctor pauses for an identity check (reason 20030), then authorizes again.
    IdentityAuthorization,
    /// The proctor pauses; the test taker's front-end navigates 1 to 3 times while paused.
    IllegalTransition,
    /// 2 or 3 right clicks, minutes apart (only the medium `security-flag` rule).
    SecurityFlag,
}

impl Pattern {
    /// Every pattern, in the order suspicious sessions take them.
    pub const ALL: [Pattern; 14] = [
        Pattern::TabSwitchRepeated,
        Pattern::FullscreenExitRepeated,
        Pattern::ForbiddenCommand,
        Pattern::ScreenshotAttempt,
        Pattern::LockdownBreach,
        Pattern::IpChange,
        Pattern::UserAgentChange,
        Pattern::ProctorTermination,
        Pattern::RepeatedPauses,
        Pattern::ExcessiveExtraTime,
        Pattern::TechnicalBurst,
        Pattern::IdentityAuthorization,
        Pattern::IllegalTransition,
        Pattern::SecurityFlag,
    ];

    /// The id of the default rule it trips.
    pub fn rule_id(self) -> &'static str {
        match self {
            Pattern::TabSwitchRepeated => "tab-switch-repeated",
            Pattern::FullscreenExitRepeated => "fullscreen-exit-repeated",
            Pattern::ForbiddenCommand => "forbidden-command",
            Pattern::ScreenshotAttempt => "screenshot-attempt",
            Pattern::LockdownBreach => "lockdown-breach",
            Pattern::IpChange => "ip-change",
            Pattern::UserAgentChange => "user-agent-change",
            Pattern::ProctorTermination => "proctor-termination",
            Pattern::RepeatedPauses => "repeated-pauses",
            Pattern::ExcessiveExtraTime => "excessive-extra-time",
            Pattern::TechnicalBurst => "technical-burst",
            Pattern::IdentityAuthorization => "identity-authorization",
            Pattern::IllegalTransition => "illegal-transition",
            Pattern::SecurityFlag => "security-flag",
        }
    }
}

/// What a realistic session was scripted to be: what a proctor should make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SessionKind {
    /// Nothing worth a look: no flag, or one benign one (a right click, one tab switch).
    Clean,
    /// A minor incident: two exits far apart, a small technical burst, a proctor's note,
    /// generous extra time, two pauses. Worth a glance, not an intervention.
    Minor,
    /// The sustained behaviour of one default rule.
    Suspicious(Pattern),
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub seed: u64,
    /// Number of tenants (`tenant-01`, ...).
    pub tenants: usize,
    /// Sessions open at once.
    pub concurrent_sessions: usize,
    /// Share of malformed or invalid records (0.0 – 1.0).
    pub malformed_ratio: f64,
    /// Share of deliver-fe logs that carry a multi-line stack trace of about 8 KB.
    pub stack_trace_ratio: f64,
    /// Incident time of the first event, epoch milliseconds.
    pub start_ms: i64,
    /// The mix of sessions.
    pub profile: Profile,
    /// Shortest and longest sitting, minutes of event time (realistic profile; at least 1
    /// and in order, see [`SynthOptions::check`]). 20 to 120: a quiz to a long exam.
    pub sitting_minutes: (u32, u32),
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            seed: 42,
            tenants: 4,
            concurrent_sessions: 64,
            malformed_ratio: 0.01,
            stack_trace_ratio: 0.05,
            start_ms: 1_767_261_300_000,
            profile: Profile::Realistic,
            sitting_minutes: (20, 120),
        }
    }
}

/// Options the generator cannot work with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    #[error("the malformed ratio must be between 0 and 1, not {0}")]
    MalformedRatio(f64),
    #[error("at least one tenant and one session are needed")]
    Empty,
    #[error("sittings must last at least a minute, the shortest first (got {0}..{1} minutes)")]
    SittingMinutes(u32, u32),
}

impl SynthOptions {
    /// The stress profile with these defaults otherwise.
    pub fn stress() -> SynthOptions {
        SynthOptions { profile: Profile::Stress, ..SynthOptions::default() }
    }

    /// Checks what the command line can get wrong.
    pub fn check(&self) -> Result<(), SynthError> {
        if !(0.0..=1.0).contains(&self.malformed_ratio) {
            return Err(SynthError::MalformedRatio(self.malformed_ratio));
        }
        if self.tenants == 0 || self.concurrent_sessions == 0 {
            return Err(SynthError::Empty);
        }
        let (shortest, longest) = self.sitting_minutes;
        if shortest == 0 || shortest > longest {
            return Err(SynthError::SittingMinutes(shortest, longest));
        }
        Ok(())
    }
}

/// One generated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthRecord {
    /// The delivery execution id (upstream keys by it).
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// True when the record is meant to be dead-lettered.
    pub malformed: bool,
}

/// An endless, deterministic stream of records.
#[derive(Debug)]
pub struct Generator {
    mix: Mix,
}

#[derive(Debug)]
enum Mix {
    Realistic(realistic::Realistic),
    Stress(stress::Stress),
}

impl Generator {
    pub fn new(options: SynthOptions) -> Generator {
        let mix = match options.profile {
            Profile::Realistic => Mix::Realistic(realistic::Realistic::new(options)),
            Profile::Stress => Mix::Stress(stress::Stress::new(options)),
        };
        Generator { mix }
    }

    /// Keeps the records' times from passing `now_ms` (epoch milliseconds): once the clock
    /// reaches it, the next records share that time instead of advancing it. Unbounded
    /// traffic produced faster than its event time runs (with the realistic profile and 64
    /// sessions open, about one record per second of event time; 100 with the stress one)
    /// would otherwise run into the future, where the service refuses them after a day
    /// (`invalid_time`). Only the times change: the records' contents stay those of the seed.
    pub fn cap_clock(&mut self, now_ms: i64) {
        match &mut self.mix {
            Mix::Realistic(generator) => generator.cap_ms = now_ms,
            Mix::Stress(generator) => generator.cap_ms = now_ms,
        }
    }

    /// A batch of `count` records.
    pub fn take_records(&mut self, count: usize) -> Vec<SynthRecord> {
        (0..count).map(|_| self.next_record()).collect()
    }

    /// The next record.
    pub fn next_record(&mut self) -> SynthRecord {
        match &mut self.mix {
            Mix::Realistic(generator) => generator.next_record(),
            Mix::Stress(generator) => generator.next_record(),
        }
    }

    /// The event time (epoch milliseconds) the first `records` records of `options` span,
    /// from its `start_ms` to the last one's: what `generate` and the demo subtract from now
    /// so that the traffic ends about now. The realistic profile computes it without writing
    /// the records (its times do not depend on their contents); the stress profile's records
    /// are 10 ms apart on average.
    pub fn span_ms(options: &SynthOptions, records: u64) -> i64 {
        match options.profile {
            Profile::Stress => i64::try_from(records.saturating_mul(10)).unwrap_or(i64::MAX),
            Profile::Realistic => {
                let mut generator = realistic::Realistic::new(options.clone());
                for _ in 0..records {
                    generator.skip();
                }
                generator.clock_ms() - options.start_ms
            }
        }
    }

    /// What the session with this delivery execution id was scripted to be: `None` for an
    /// id this generator has not opened yet (or never will), and for every session of the
    /// stress profile, which has no script. Tests hold the rules to it: every suspicious
    /// session should reach its rule, clean ones no high or critical alert.
    pub fn script(&self, execution_id: &str) -> Option<SessionKind> {
        let Mix::Realistic(generator) = &self.mix else { return None };
        let n = render::session_number(execution_id)?;
        let options = generator.options();
        (n < generator.sessions() && realistic::identity(options, n).execution_id == execution_id)
            .then(|| realistic::kind_of(options.seed, n))
    }

    /// Every session opened so far, with its kind (none for the stress profile), in the
    /// order they opened.
    pub fn scripts(&self) -> Vec<(String, SessionKind)> {
        let Mix::Realistic(generator) = &self.mix else { return Vec::new() };
        let options = generator.options();
        (0..generator.sessions())
            .map(|n| (realistic::identity(options, n).execution_id, realistic::kind_of(options.seed, n)))
            .collect()
    }
}

impl Iterator for Generator {
    type Item = SynthRecord;

    fn next(&mut self) -> Option<SynthRecord> {
        Some(self.next_record())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::model::{ReasonCatalog, Source};
    use crate::pipeline::{Outcome, Pipeline, Record};

    #[test]
    fn the_same_seed_gives_the_same_records() {
        for options in [SynthOptions::default(), SynthOptions::stress()] {
            let a = Generator::new(options.clone()).take_records(500);
            let b = Generator::new(options.clone()).take_records(500);
            assert_eq!(a, b);
            let c = Generator::new(SynthOptions { seed: 7, ..options }).take_records(500);
            assert_ne!(a, c);
        }
    }

    #[test]
    fn a_capped_clock_keeps_times_from_passing_the_cap_and_changes_nothing_else() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        for profile in [Profile::Realistic, Profile::Stress] {
            let options = SynthOptions { malformed_ratio: 0.0, profile, ..SynthOptions::default() };
            a_capped_clock_keeps_times_from_passing_the_cap(&pipeline, options);
        }
    }

    fn a_capped_clock_keeps_times_from_passing_the_cap(pipeline: &Pipeline, options: SynthOptions) {
        let cap = options.start_ms + 1_000;
        let free = Generator::new(options.clone()).take_records(1_000);
        let mut generator = Generator::new(options);
        generator.cap_clock(cap);
        let capped = generator.take_records(1_000);
        let source = Source { topic: Arc::from("raw"), partition: 0, offset: 0 };
        let time = |record: &SynthRecord| pipeline.enrich(&record.value, &source, cap).unwrap().incident_time;
        assert!(free.iter().any(|record| time(record) > cap), "uncapped, 1,000 records span 10 s or more");
        for (free, capped) in free.iter().zip(&capped) {
            assert!(time(capped) <= cap);
            assert_eq!(free.key, capped.key, "the same sessions in the same order");
        }
    }

    /// Stress profile: every event is one its session's status allows, and declares it (no
    /// event after the end, no declared status the tracked one contradicts), but a rare
    /// navigation sent as a pause landed; and sessions do pause and get resumed.
    #[test]
    fn sessions_follow_the_state_machine() {
        use crate::model::{Action, Anomaly, Status};
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let options = SynthOptions { malformed_ratio: 0.0, ..SynthOptions::stress() };
        let now = options.start_ms + 86_400_000;
        let mut sessions = pipeline.sessions();
        let (mut pauses, mut resumes, mut races) = (0, 0, 0);
        for (offset, record) in Generator::new(options).take_records(10_000).iter().enumerate() {
            let source = Source { topic: Arc::from("raw"), partition: 0, offset: offset as i64 };
            let mut event = pipeline.enrich(&record.value, &source, now).unwrap();
            let view = sessions.apply(&mut event, offset as i64, now);
            let text = || String::from_utf8_lossy(&record.value).into_owned();
            if !view.transition_valid {
                let race = (event.action, view.status_before) == (Some(Action::Navigation), Some(Status::Suspended));
                assert!(race, "{:?} from {:?}: {}", event.action, view.status_before, text());
                races += 1;
                continue;
            }
            for anomaly in [Anomaly::IllegalTransition, Anomaly::EventAfterFinal, Anomaly::StatusMismatch] {
                assert!(!event.anomalies.contains(&anomaly), "{anomaly:?}: {}", text());
            }
            pauses += usize::from(event.action == Some(Action::Pause));
            resumes += usize::from(event.action == Some(Action::Resume));
        }
        assert!(pauses > 500 && resumes > 500, "{pauses} pauses, {resumes} resumes");
        assert!((1..100).contains(&races), "{races} navigations while paused in 10,000 records");
    }

    #[test]
    fn exactly_the_malformed_records_are_dead_lettered() {
        // The realistic profile's first proctor termination comes after about 150 sessions.
        for (profile, count) in [(Profile::Realistic, 10_000), (Profile::Stress, 5_000)] {
            let options = SynthOptions { malformed_ratio: 0.05, profile, ..SynthOptions::default() };
            exactly_the_malformed_records_of(options, count);
        }
    }

    fn exactly_the_malformed_records_of(options: SynthOptions, count: usize) {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let now = options.start_ms + 86_400_000;
        let records = Generator::new(options).take_records(count);
        let mut shapes = std::collections::BTreeSet::new();
        let mut malformed = 0;
        let mut sessions = pipeline.sessions();
        for (offset, record) in records.iter().enumerate() {
            let source = Source { topic: Arc::from("raw"), partition: 0, offset: offset as i64 };
            let outcome = pipeline.process(&Record::new(Some(&record.key), &record.value, source), &mut sessions, now);
            match outcome {
                Outcome::Event { output, .. } => {
                    assert!(!record.malformed, "{}", String::from_utf8_lossy(&record.value));
                    assert_eq!(output.key.as_deref(), Some(record.key.as_slice()));
                    let shape = output.headers.iter().find(|(n, _)| *n == "acs-action").map(|(_, v)| v.to_string());
                    shapes.insert(shape);
                }
                Outcome::DeadLetter(dead) => {
                    assert!(record.malformed, "{:?}: {}", dead.rejection, String::from_utf8_lossy(&record.value));
                    malformed += 1;
                }
            }
        }
        assert!(malformed > 150, "{malformed}");
        for action in ["start", "pause", "resume", "update", "flag", "log", "navigation", "submission", "terminate"] {
            assert!(shapes.contains(&Some(action.to_owned())), "{action} missing from {shapes:?}");
        }
    }

    /// A realistic run through the default rules: what each record became, per session.
    struct Observed {
        /// Per session: its kind, its events' times and actions, whether it ended.
        sessions: std::collections::HashMap<String, Seen>,
        /// Session-scoped alerts: (session, rule, severity).
        alerts: Vec<(String, String, String)>,
        /// Tenant-scoped alerts: (rule, the sessions of its evidence).
        tenant_alerts: Vec<(String, Vec<String>)>,
        /// Per session: its incident's latest revision (JSON).
        incidents: std::collections::HashMap<String, serde_json::Value>,
    }

    #[derive(Default)]
    struct Seen {
        kind: Option<SessionKind>,
        times: Vec<i64>,
        navigations: Vec<i64>,
        ended: bool,
        anomalies: Vec<crate::model::Anomaly>,
    }

    fn observe(options: SynthOptions, records: usize) -> Observed {
        use crate::model::Action;
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin())
            .unwrap()
            .with_format(crate::encode::Format::Json)
            .with_inline_tenants();
        let now = options.start_ms + 30 * 86_400_000;
        let mut generator = Generator::new(options);
        let records = generator.take_records(records);
        let mut sessions = pipeline.sessions().untracked();
        let mut observed = Observed {
            sessions: Default::default(),
            alerts: Vec::new(),
            tenant_alerts: Vec::new(),
            incidents: Default::default(),
        };
        let mut by_offset = Vec::new();
        for (offset, record) in records.iter().enumerate() {
            let id = String::from_utf8(record.key.clone()).unwrap();
            by_offset.push(id.clone());
            if record.malformed {
                continue;
            }
            let source = Source { topic: Arc::from("raw"), partition: 0, offset: offset as i64 };
            let event = pipeline.enrich(&record.value, &source, now).unwrap();
            let seen = observed.sessions.entry(id.clone()).or_default();
            seen.kind = generator.script(&id);
            seen.times.push(event.incident_time);
            if event.action == Some(Action::Navigation) {
                seen.navigations.push(event.incident_time);
            }
            seen.ended |= matches!(event.action, Some(Action::Submission | Action::Terminate));
            let Outcome::Event { alerts, incidents, facts, .. } =
                pipeline.process(&Record::new(Some(&record.key), &record.value, source), &mut sessions, now)
            else {
                panic!("{}", String::from_utf8_lossy(&record.value))
            };
            for incident in incidents {
                let incident: serde_json::Value = serde_json::from_slice(&incident.value).unwrap();
                let session = incident["deliveryExecutionId"].as_str().unwrap().to_owned();
                observed.incidents.insert(session, incident);
            }
            observed.sessions.get_mut(&id).unwrap().anomalies.extend(facts.anomalies);
            for alerted in alerts {
                let alert: serde_json::Value = serde_json::from_slice(&alerted.output().value).unwrap();
                let (rule, severity) = (alert["ruleId"].as_str().unwrap(), alert["severity"].as_str().unwrap());
                match alert["deliveryExecutionId"].as_str() {
                    Some(session) => observed.alerts.push((session.into(), rule.into(), severity.into())),
                    None => {
                        let evidence = alert["evidence"].as_array().unwrap();
                        let of = |e: &serde_json::Value| by_offset[e["offset"].as_i64().unwrap() as usize].clone();
                        observed.tenant_alerts.push((rule.into(), evidence.iter().map(of).collect()));
                    }
                }
            }
        }
        observed
    }

    /// Kinds come 17 clean, 2 minor and 1 suspicious to a block of 20 sessions, the
    /// suspicious ones taking the default rules' patterns in turn.
    #[test]
    fn the_mix_is_85_10_5_and_every_pattern_appears() {
        for seed in [1, 42, 1_000] {
            let kinds: Vec<SessionKind> = (0..2_000).map(|n| realistic::kind_of(seed, n)).collect();
            let share = |want: fn(&SessionKind) -> bool| kinds.iter().filter(|k| want(k)).count() as f64 / 2_000.0;
            assert!((share(|k| *k == SessionKind::Clean) - 0.85).abs() < 0.01);
            assert!((share(|k| *k == SessionKind::Minor) - 0.10).abs() < 0.01);
            assert!((share(|k| matches!(k, SessionKind::Suspicious(_))) - 0.05).abs() < 0.01);
            for pattern in Pattern::ALL {
                let count = kinds.iter().filter(|k| **k == SessionKind::Suspicious(pattern)).count();
                assert!((7..=8).contains(&count), "{pattern:?}: {count} in 2,000 sessions");
            }
        }
    }

    /// Sittings last what was asked (from the first event to the last, but for sessions a
    /// proctor terminates early), navigations of clean and minor sessions come 1 to 3 minutes
    /// apart (more when a pause came between; suspicious ones switch devices or navigate
    /// while paused in between), and the generator's scripts name every session it opened.
    #[test]
    fn sittings_and_navigation_keep_their_pace() {
        let options = SynthOptions { sitting_minutes: (30, 45), malformed_ratio: 0.0, ..SynthOptions::default() };
        let mut generator = Generator::new(options.clone());
        let records = generator.take_records(8_000);
        let scripts = generator.scripts();
        assert!(scripts.len() > 150, "{} sessions", scripts.len());
        for record in &records {
            let id = std::str::from_utf8(&record.key).unwrap();
            assert!(scripts.iter().any(|(known, _)| known == id), "{id} not scripted");
        }
        assert_eq!(generator.script("dIresu#d1#h1#acme"), None);
        assert_eq!(Generator::new(SynthOptions::stress()).script(&scripts[0].0), None);
        let observed = observe(options, 8_000);
        let (mut finished, mut gaps) = (0, Vec::new());
        for (id, seen) in &observed.sessions {
            let kind = seen.kind.unwrap_or_else(|| panic!("{id} has no script"));
            if seen.ended && kind != SessionKind::Suspicious(Pattern::ProctorTermination) {
                finished += 1;
                let minutes = (seen.times.iter().max().unwrap() - seen.times.iter().min().unwrap()) as f64 / 60_000.0;
                assert!((29.0..=45.0).contains(&minutes), "{id}: {minutes} minutes");
            }
            if matches!(kind, SessionKind::Clean | SessionKind::Minor) {
                gaps.extend(seen.navigations.windows(2).map(|pair| pair[1] - pair[0]));
            }
        }
        assert!(finished > 100, "{finished} sessions finished");
        assert!(gaps.iter().all(|gap| *gap >= 60_000), "navigations at least a minute apart");
        let paced = gaps.iter().filter(|gap| **gap <= 180_000).count();
        assert!(paced as f64 > 0.95 * gaps.len() as f64, "{paced} of {} gaps within 3 minutes", gaps.len());
    }

    /// Through the default rules: each finished suspicious session fires its pattern's rule
    /// (the tenant-scoped technical burst with that session's events in its evidence), no
    /// clean session fires a high or critical alert, and the only anomalies are the illegal
    /// transitions of the sessions scripted to make them and third-party proctoring tools'
    /// non-numeric reason codes (`N52`).
    #[test]
    fn the_default_rules_see_what_each_session_was_scripted_to_be() {
        use crate::model::Anomaly;
        let options = SynthOptions { malformed_ratio: 0.0, ..SynthOptions::default() };
        let observed = observe(options, 25_000);
        let mut patterns = std::collections::BTreeSet::new();
        for (id, seen) in &observed.sessions {
            let fired = |rule: &str| observed.alerts.iter().any(|(session, r, _)| session == id && r == rule);
            match seen.kind.unwrap() {
                SessionKind::Suspicious(pattern) if seen.ended => {
                    let hit = match pattern {
                        Pattern::TechnicalBurst => observed
                            .tenant_alerts
                            .iter()
                            .any(|(rule, sessions)| rule == pattern.rule_id() && sessions.contains(id)),
                        _ => fired(pattern.rule_id()),
                    };
                    assert!(hit, "{id} ({pattern:?}) did not fire {}", pattern.rule_id());
                    patterns.insert(pattern);
                }
                SessionKind::Clean => {
                    let loud = observed.alerts.iter().filter(|(session, _, severity)| {
                        session == id && ["high", "critical"].contains(&severity.as_str())
                    });
                    assert_eq!(
                        loud.count(),
                        0,
                        "clean session {id}: {:?}",
                        observed.alerts.iter().filter(|a| &a.0 == id).collect::<Vec<_>>()
                    );
                }
                _ => {}
            }
            let scripted_illegal = seen.kind == Some(SessionKind::Suspicious(Pattern::IllegalTransition));
            for anomaly in &seen.anomalies {
                let expected = (*anomaly == Anomaly::IllegalTransition && scripted_illegal)
                    || *anomaly == Anomaly::NonNumericReasonCode;
                assert!(expected, "{id} ({:?}): {anomaly:?}", seen.kind);
            }
        }
        assert_eq!(patterns.len(), Pattern::ALL.len(), "finished suspicious sessions cover {patterns:?}");
        // The technical bursts the rule sees are the scripted ones, not the background.
        for (_, sessions) in &observed.tenant_alerts {
            let burst = sessions.iter().any(|id| {
                observed.sessions[id].kind == Some(SessionKind::Suspicious(Pattern::TechnicalBurst))
                    || observed.sessions[id].kind == Some(SessionKind::Minor)
            });
            assert!(burst, "a technical burst of background traffic");
        }
    }

    /// The incidents' targets: every finished suspicious session reaches at least `high`
    /// (but the technical burst, a tenant-scoped rule that raises no session's incident), at
    /// most 2% of the clean sessions do, and a clean session with at most one benign flag
    /// stays at `low` or below.
    #[test]
    fn incidents_put_the_suspicious_sessions_first() {
        let options = SynthOptions { malformed_ratio: 0.0, ..SynthOptions::default() };
        let observed = observe(options, 25_000);
        let rank = |priority: &str| ["none", "low", "medium", "high", "critical"].iter().position(|p| *p == priority);
        let priority_of = |id: &str| {
            observed.incidents.get(id).map_or(0, |incident| rank(incident["priority"].as_str().unwrap()).unwrap())
        };
        let (mut clean, mut clean_high, mut missed) = (0, 0, Vec::new());
        for (id, seen) in &observed.sessions {
            match seen.kind.unwrap() {
                SessionKind::Suspicious(Pattern::TechnicalBurst) => {}
                SessionKind::Suspicious(pattern) if seen.ended && priority_of(id) < 3 => {
                    let incident = observed.incidents.get(id);
                    let field = |name: &str| incident.map(|incident| incident[name].to_string());
                    missed.push((pattern, field("priority"), field("score"), field("byRule")));
                }
                SessionKind::Clean => {
                    clean += 1;
                    clean_high += usize::from(priority_of(id) >= 3);
                    let flags = observed.alerts.iter().filter(|(session, _, _)| session == id).count();
                    if flags <= 1 {
                        assert!(priority_of(id) <= 1, "clean {id}: {:?}", observed.incidents.get(id));
                    }
                }
                _ => {}
            }
        }
        assert!(missed.is_empty(), "{} suspicious sessions below high: {missed:?}", missed.len());
        assert!(clean > 500, "{clean} clean sessions");
        assert!(clean_high * 50 <= clean, "{clean_high} of {clean} clean sessions at high or above");
    }

    #[test]
    fn the_span_is_that_of_the_records() {
        let options = SynthOptions::default();
        let mut generator = Generator::new(options.clone());
        generator.take_records(3_000);
        let Mix::Realistic(realistic) = &generator.mix else { unreachable!() };
        assert_eq!(Generator::span_ms(&options, 3_000), realistic.clock_ms() - options.start_ms);
        assert!(Generator::span_ms(&options, 3_000) > 3_600_000, "64 sessions: 3,000 records take hours");
        assert_eq!(Generator::span_ms(&SynthOptions::stress(), 3_000), 30_000);
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(SynthOptions::default().check(), Ok(()));
        let bad = SynthOptions { sitting_minutes: (30, 20), ..SynthOptions::default() };
        assert_eq!(bad.check(), Err(SynthError::SittingMinutes(30, 20)));
        assert_eq!("stress".parse(), Ok(Profile::Stress));
        assert!("calm".parse::<Profile>().is_err());
    }
}

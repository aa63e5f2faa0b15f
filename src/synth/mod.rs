//! Deterministic synthetic traffic: realistic sessions in every upstream shape.
//!
//! Several tenants, many concurrent sessions, every actor and shape, the real message
//! texts of upstream-envelopes.md, occasional 8 KB deliver-fe stack traces, and a share of
//! malformed records. The same seed yields the same records, so benchmarks and the demo
//! are reproducible. Used by the benchmarks, and by `demo` and `generate`.
//!
//! The mix follows a default TAO deployment, where test-taker navigation is published only
//! when a tenant enables it, and sessions follow the state machine (`session::machine`),
//! every event declaring the session's status. Each session starts (control message); each
//! step of a running session is then a security message (38%, control messages: a pause on
//! blur or full screen in four cases of nine, else a flag; 11% more flags as flat records), a
//! deliver-fe log (22%), a proctor ACS action (20%: a pause, extra time or a note), a
//! navigation (7%, half of them flat records with a 40999 XML payload) or a lockdown breach
//! (2%). A paused session is resumed by the proctor at about a third of its steps (instead
//! of a navigation or a security pause, in 10% more, and in a third of its ACS actions); its
//! other events go on, declaring it suspended, and one step in a hundred is a navigation
//! sent as the pause landed (the rare illegal transition of a real deployment). After 40
//! steps a session ends in a submission (control or flat) or a proctor termination (ACS).
//!
//! With a capped clock ([`Generator::cap_clock`]), records of one session may share a time
//! and repeat byte for byte: the service then takes the repeat for an upstream retry (a
//! duplicate, which changes nothing), and the statuses declared afterwards may disagree
//! with the one it tracks.

use serde_json::{Value, json};

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
        }
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

/// Who did what, with which outcome, in which session status.
#[derive(Debug, Clone, Copy)]
struct What<'s> {
    actor: &'s str,
    action: &'s str,
    action_status: &'s str,
    status: &'s str,
}

impl<'s> What<'s> {
    fn new(actor: &'s str, action: &'s str, action_status: &'s str, status: &'s str) -> What<'s> {
        What { actor, action, action_status, status }
    }
}

/// A session's identity and where it is in its life.
#[derive(Debug, Clone)]
struct Session {
    tenant: String,
    execution_id: String,
    delivery_id: String,
    login: String,
    name: String,
    user_agent: String,
    ip: String,
    item: u32,
    step: u32,
    extra_time: f64,
    /// Paused (suspended), waiting for the proctor to resume it.
    paused: bool,
}

impl Session {
    /// Its status, as a control message or a flat record declares it.
    fn status(&self) -> &'static str {
        if self.paused { "suspended" } else { "interacting" }
    }
}

/// An endless, deterministic stream of records.
#[derive(Debug)]
pub struct Generator {
    options: SynthOptions,
    rng: fastrand::Rng,
    sessions: Vec<Session>,
    next_session: u64,
    clock_ms: i64,
    /// The clock does not advance past this (see [`Generator::cap_clock`]).
    cap_ms: i64,
}

const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

const SECURITY_MESSAGES: [(i64, &str); 9] = [
    (20060, "[Pause On Blur] Test taker tried to move to a different tab/app."),
    (20060, "[Full Screen] Test taker tried to go out from full screen mode."),
    (20060, "[Security Plugin] Test execution was paused because test taker tried to move to a different tab/app."),
    (20060, "[Security Plugin] Test execution was paused because test taker tried to go out from full screen mode."),
    (20999, "[Prevent Screenshot] Test taker tried to take a screenshot."),
    (20999, "[Disable Right Click] Test taker tried to use right click menu."),
    (20999, "[Disable Commands] Test taker tried to use a forbidden command: `copy`."),
    (20999, "[Disable Commands] Test taker tried to use a forbidden command: `paste`."),
    (20999, "IP address change detected."),
];

const PROCTOR_REASONS: [(&str, &str); 6] = [
    ("30020", "Test taker was talking to someone off camera."),
    ("10030", "Construction noise in the test centre."),
    ("20010", "Repeatedly looking away from the screen."),
    ("40030", "Network outage in room B."),
    ("30030", "Wrong test assigned; pausing to fix."),
    ("N52", "Third-party flag: second face detected."),
];

impl Generator {
    pub fn new(options: SynthOptions) -> Generator {
        let rng = fastrand::Rng::with_seed(options.seed);
        let clock_ms = options.start_ms;
        let mut generator =
            Generator { options, rng, sessions: Vec::new(), next_session: 0, clock_ms, cap_ms: i64::MAX };
        for _ in 0..generator.options.concurrent_sessions.max(1) {
            let session = generator.new_session();
            generator.sessions.push(session);
        }
        generator
    }

    fn new_session(&mut self) -> Session {
        let n = self.next_session;
        self.next_session += 1;
        let tenant = format!("tenant-{:02}", (n as usize % self.options.tenants.max(1)) + 1);
        let login = format!("student{n:05}");
        let reversed: String = login.chars().rev().collect();
        let delivery_id = format!("delivery-{}", n % 7);
        let hash = format!("{:016x}", self.rng.u64(..));
        let prefix = if self.rng.u8(..100) < 3 { "review#" } else { "" };
        Session {
            execution_id: format!("{prefix}{reversed}#{delivery_id}#{hash}#{tenant}"),
            tenant,
            delivery_id,
            name: format!("Student {n}"),
            login,
            user_agent: USER_AGENTS[self.rng.usize(..USER_AGENTS.len())].to_owned(),
            ip: format!("198.51.100.{}", self.rng.u8(1..255)),
            item: 1,
            step: 0,
            extra_time: 0.0,
            paused: false,
        }
    }

    /// Keeps the records' times from passing `now_ms` (epoch milliseconds): once the clock
    /// reaches it, the next records share that time instead of advancing it. Records are
    /// 10 ms apart on average, so unbounded traffic produced faster than 100 records/s
    /// would otherwise run into the future, where the service refuses them after a day
    /// (`invalid_time`). Only the times change: the records' contents stay those of the seed.
    pub fn cap_clock(&mut self, now_ms: i64) {
        self.cap_ms = now_ms;
    }

    /// A batch of `count` records.
    pub fn take_records(&mut self, count: usize) -> Vec<SynthRecord> {
        (0..count).map(|_| self.next_record()).collect()
    }

    /// The next record.
    pub fn next_record(&mut self) -> SynthRecord {
        // 1-19 ms apart (10 ms on average): a busy deployment, many sessions at once.
        let step = i64::from(self.rng.u32(1..20));
        self.clock_ms = (self.clock_ms + step).min(self.cap_ms.max(self.clock_ms));
        let index = self.rng.usize(..self.sessions.len());
        let malformed = self.rng.f64() < self.options.malformed_ratio;
        let session = self.sessions[index].clone();
        let key = session.execution_id.clone().into_bytes();
        if malformed {
            return SynthRecord { key, value: self.malformed(&session), malformed: true };
        }
        let (value, finished) = self.step(index, &session);
        let session = &mut self.sessions[index];
        session.step += 1;
        if finished {
            self.sessions[index] = self.new_session();
        }
        SynthRecord { key, value: serde_json::to_vec(&value).expect("JSON values serialize"), malformed: false }
    }

    /// The next event of the session at `index` (`s`, a copy); true when the session is over.
    /// Every event is one the session's status allows, and declares that status: a paused
    /// session is not paused again and its test taker does not move on (but rarely), the
    /// proctor resumes it; a running one is not resumed.
    fn step(&mut self, index: usize, s: &Session) -> (Value, bool) {
        let t = self.clock_ms;
        let status = s.status();
        let resume = |generator: &mut Generator| {
            generator.update(index, |x| x.paused = false);
            generator.control(s, What::new("proctor", "resume", "succeeded", "interacting"), None, t)
        };
        // A running session has nothing for the proctor to resume: another step instead (its
        // last step, the end, keeps its own shares).
        let draw = match self.rng.u8(..100) {
            90.. if !s.paused && (1..=40).contains(&s.step) => self.rng.u8(..90),
            draw => draw,
        };
        match (s.step, draw) {
            (0, _) => (self.control(s, What::new("test-taker", "start", "succeeded", "interacting"), None, t), false),
            (1..=40, 1..=5) if s.paused => (resume(self), false),
            // A navigation, rarely, while paused: one the front-end sent as the pause landed
            // (the illegal transitions of a real deployment).
            (1..=40, 0..=5) => {
                let next = s.item + 1;
                self.update(index, |x| x.item = next);
                if self.rng.bool() {
                    let payload = format!(
                        "<navigation type=\"next\"><from>item-{}</from><to>item-{next}</to><duration>{}</duration></navigation>",
                        s.item,
                        self.rng.u32(5..300)
                    );
                    let reason = Some((40999, payload));
                    (self.flat(s, What::new("test-taker", "navigation", "succeeded", status), reason, t), false)
                } else {
                    (self.control(s, What::new("test-taker", "navigation", "succeeded", status), None, t), false)
                }
            }
            (1..=40, 6..=39) => {
                let (code, message) = SECURITY_MESSAGES[self.rng.usize(..SECURITY_MESSAGES.len())];
                let actor = if message.starts_with("[Security Plugin]") { "security-plugin" } else { "test-taker" };
                if code != 20060 {
                    let reason = Some((code, message.to_owned()));
                    return (self.control(s, What::new(actor, "flag", "succeeded", status), reason, t), false);
                }
                if s.paused {
                    return (resume(self), false);
                }
                self.update(index, |x| x.paused = true);
                let reason = Some((code, message.to_owned()));
                (self.control(s, What::new(actor, "pause", "succeeded", "suspended"), reason, t), false)
            }
            (1..=40, 40..=59) => (self.deliver_fe_log(s, t), false),
            (1..=40, 60..=77) => {
                let action = [if s.paused { "resume" } else { "pause" }, "update", "flag"][self.rng.usize(..3)];
                (self.acs(index, s, action, t), false)
            }
            (1..=40, 78..=79) => {
                let message = "[Lockdown Browser] Security breach detected. Device info: {\"os\":\"Windows 11\",\"vm\":false}. Process list: obs64.exe, discord.exe.";
                let reason = Some((20999, message.to_owned()));
                (self.flat(s, What::new("security-plugin", "flag", "succeeded", status), reason, t), false)
            }
            (1..=40, 80..=89) => {
                let (code, message) = SECURITY_MESSAGES[self.rng.usize(..SECURITY_MESSAGES.len())];
                let reason = Some((code, message.to_owned()));
                (self.flat(s, What::new("test-taker", "flag", "succeeded", status), reason, t), false)
            }
            // Drawn by a paused session only.
            (1..=40, _) => (resume(self), false),
            (_, 0..=79) => {
                (self.control(s, What::new("test-taker", "submission", "succeeded", "closed"), None, t), true)
            }
            (_, 80..=94) => (self.acs(index, s, "terminate", t), true),
            (_, _) => (self.flat(s, What::new("system", "submission", "succeeded", "closed"), None, t), true),
        }
    }

    /// Changes the session at `index` (the one being stepped: `step` has a copy of it).
    fn update(&mut self, index: usize, change: impl FnOnce(&mut Session)) {
        change(&mut self.sessions[index]);
    }

    fn control(&mut self, s: &Session, what: What<'_>, reason: Option<(i64, String)>, t: i64) -> Value {
        let What { actor: role, action, action_status, status } = what;
        let proctor = role == "proctor";
        json!({
            "actorIdentity": {
                "id": if proctor { "proctor-1" } else { s.login.as_str() },
                "name": if proctor { "Pat Proctor" } else { s.name.as_str() },
                "role": role,
                "userAgent": if proctor { None } else { Some(s.user_agent.as_str()) },
                "ip": if proctor { None } else { Some(s.ip.as_str()) },
            },
            "action": {"type": action, "status": action_status},
            "timestamp": t,
            "deliveryExecution": {"id": s.execution_id, "status": status},
            "resourceLink": {"identifier": format!("rl-{}", s.delivery_id)},
            "itemId": format!("item-{}", s.item),
            "reason": reason.map(|(code, message)| json!({"code": code, "message": message})),
            "testOutcomes": [],
        })
    }

    fn deliver_fe_log(&mut self, s: &Session, t: i64) -> Value {
        let message = if self.rng.f64() < self.options.stack_trace_ratio {
            let mut trace =
                String::from("[deliver-fe] TypeError: Cannot read properties of undefined (reading 'response')\n");
            let mut frame = 0;
            while trace.len() < 8000 {
                trace.push_str(&format!(
                    "    at Object.handleResponse (https://deliver.example.org/assets/runner.{frame:04}.js:{}:{})\n",
                    self.rng.u32(1..9000),
                    self.rng.u32(1..200)
                ));
                frame += 1;
            }
            trace.push_str(&format!("[item-{}][recoverable]", s.item));
            trace
        } else {
            format!("[deliver-fe] Network request failed: timeout after 30000 ms [item-{}]", s.item)
        };
        // A log's action status is the session's status.
        let status = s.status();
        let mut value = self.control(s, What::new("deliver-fe", "log", status, status), Some((40999, message)), t);
        value["action"] = json!({"type": "log", "status": status});
        value
    }

    fn acs(&mut self, index: usize, s: &Session, action: &str, t: i64) -> Value {
        let (code, message) = PROCTOR_REASONS[self.rng.usize(..PROCTOR_REASONS.len())];
        let status = match action {
            "pause" => "paused",
            "resume" => "running",
            "terminate" => "terminated",
            _ if s.paused => "paused",
            _ => "running",
        };
        match action {
            "pause" => self.update(index, |x| x.paused = true),
            "resume" => self.update(index, |x| x.paused = false),
            _ => {}
        }
        let time = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default().to_rfc3339();
        let mut control = json!({
            "user": {"iss": "https://tao.example.org", "sub": s.login},
            "resource_link": {"id": format!("rl-{}", s.delivery_id)},
            "attempt_number": 1,
            "action": action,
            "incident_time": time,
            "incident_severity": 0.5,
            "reason_code": code,
            "reason_message": message,
        });
        if action == "update" {
            let total = s.extra_time + f64::from(self.rng.u8(1..4)) * 5.0;
            self.update(index, |x| x.extra_time = total);
            control["extra_time"] = json!(total);
        }
        json!({"deliveryExecutionId": s.execution_id, "itemId": format!("item-{}", s.item), "status": status, "acsControl": control})
    }

    fn flat(&mut self, s: &Session, what: What<'_>, reason: Option<(i64, String)>, t: i64) -> Value {
        let What { actor, action, action_status, status } = what;
        let (code, message) = reason.unzip();
        json!({
            "deliveryId": s.delivery_id,
            "deliveryExecutionId": s.execution_id,
            "testTaker": s.login,
            "login": s.login,
            "name": s.name,
            "actor": actor,
            "action": action,
            "actionStatus": action_status,
            "reasonCode": code.map(|c| c.to_string()),
            "reasonMessage": message,
            "extraTime": null,
            "incidentTime": t as f64 / 1000.0,
            "last_update_date": t / 1000,
            "itemId": format!("item-{}", s.item),
            "resourceLink": format!("rl-{}", s.delivery_id),
            "status": status,
            "tenantId": s.tenant,
            "userAgent": s.user_agent,
            "ip": s.ip,
            "messageId": format!("{:032x}", self.rng.u128(..)),
            "_id": s.execution_id,
        })
    }

    fn malformed(&mut self, s: &Session) -> Vec<u8> {
        let t = self.clock_ms;
        let good =
            serde_json::to_vec(&self.control(s, What::new("test-taker", "pause", "succeeded", "suspended"), None, t))
                .expect("JSON values serialize");
        match self.rng.u8(..6) {
            0 => good[..good.len() / 2].to_vec(),
            1 => {
                let mut bad = good;
                bad.insert(10, 0xff);
                bad
            }
            2 => b"[\"not\", \"an\", \"object\"]".to_vec(),
            3 => format!(r#"{{"actor":"proctor","action":"pause","incidentTime":{}}}"#, t / 1000).into_bytes(),
            4 => format!(
                r#"{{"deliveryExecutionId":"{}","tenantId":"intruder","incidentTime":{}}}"#,
                s.execution_id,
                t / 1000
            )
            .into_bytes(),
            _ => format!(r#"{{"deliveryExecutionId":"{}","incidentTime":"yesterday"}}"#, s.execution_id).into_bytes(),
        }
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
        let a = Generator::new(SynthOptions::default()).take_records(500);
        let b = Generator::new(SynthOptions::default()).take_records(500);
        assert_eq!(a, b);
        let c = Generator::new(SynthOptions { seed: 7, ..SynthOptions::default() }).take_records(500);
        assert_ne!(a, c);
    }

    #[test]
    fn a_capped_clock_keeps_times_from_passing_the_cap_and_changes_nothing_else() {
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let options = SynthOptions { malformed_ratio: 0.0, ..SynthOptions::default() };
        let cap = options.start_ms + 1_000;
        let free = Generator::new(options.clone()).take_records(1_000);
        let mut generator = Generator::new(options);
        generator.cap_clock(cap);
        let capped = generator.take_records(1_000);
        let source = Source { topic: Arc::from("raw"), partition: 0, offset: 0 };
        let time = |record: &SynthRecord| pipeline.enrich(&record.value, &source, cap).unwrap().incident_time;
        assert!(free.iter().any(|record| time(record) > cap), "uncapped, 1,000 records span about 10 s");
        for (free, capped) in free.iter().zip(&capped) {
            assert!(time(capped) <= cap);
            assert_eq!(free.key, capped.key, "the same sessions in the same order");
        }
    }

    /// Every event is one its session's status allows, and declares it (no event after the
    /// end, no declared status the tracked one contradicts), but a rare navigation sent as a
    /// pause landed; and sessions do pause and get resumed.
    #[test]
    fn sessions_follow_the_state_machine() {
        use crate::model::{Action, Anomaly, Status};
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let options = SynthOptions { malformed_ratio: 0.0, ..SynthOptions::default() };
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
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let options = SynthOptions { malformed_ratio: 0.05, ..SynthOptions::default() };
        let now = options.start_ms + 86_400_000;
        let records = Generator::new(options).take_records(5_000);
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
}

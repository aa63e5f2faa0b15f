//! The stress profile ([`Profile::Stress`](super::Profile::Stress)): the flag-heavy mix the
//! benchmarks and the broker tests were written against, unchanged (the same seed gives the
//! same bytes as before the realistic profile existed).
//!
//! Each session starts (control message); each step of a running session is then a security
//! message (38%, control messages: a pause on blur or full screen in four cases of nine,
//! else a flag; 11% more flags as flat records), a deliver-fe log (22%), a proctor ACS action
//! (20%: a pause, extra time or a note), a navigation (7%, half of them flat records with a
//! 40999 XML payload) or a lockdown breach (2%). A paused session is resumed by the proctor
//! at about a third of its steps (instead of a navigation or a security pause, in 10% more,
//! and in a third of its ACS actions); its other events go on, declaring it suspended, and
//! one step in a hundred is a navigation sent as the pause landed (the rare illegal
//! transition of a real deployment). After 40 steps a session ends in a submission (control
//! or flat) or a proctor termination (ACS). Records are 1–19 ms apart (10 ms on average):
//! with 64 sessions open, a session lasts about 26 s of event time and 37% of all events
//! are flags.

use serde_json::Value;

use super::render::{self, PROCTOR_REASONS, SECURITY_MESSAGES, Session, What};
use super::{SynthOptions, SynthRecord};

#[derive(Debug)]
pub(super) struct Stress {
    options: SynthOptions,
    rng: fastrand::Rng,
    sessions: Vec<Session>,
    next_session: u64,
    clock_ms: i64,
    /// The clock does not advance past this (see [`super::Generator::cap_clock`]).
    pub cap_ms: i64,
}

impl Stress {
    pub fn new(options: SynthOptions) -> Stress {
        let rng = fastrand::Rng::with_seed(options.seed);
        let clock_ms = options.start_ms;
        let mut generator = Stress { options, rng, sessions: Vec::new(), next_session: 0, clock_ms, cap_ms: i64::MAX };
        for _ in 0..generator.options.concurrent_sessions.max(1) {
            let session = generator.new_session();
            generator.sessions.push(session);
        }
        generator
    }

    fn new_session(&mut self) -> Session {
        let n = self.next_session;
        self.next_session += 1;
        Session::new(n, self.options.tenants, &mut self.rng)
    }

    pub fn next_record(&mut self) -> SynthRecord {
        // 1-19 ms apart (10 ms on average): a busy deployment, many sessions at once.
        let step = i64::from(self.rng.u32(1..20));
        self.clock_ms = (self.clock_ms + step).min(self.cap_ms.max(self.clock_ms));
        let index = self.rng.usize(..self.sessions.len());
        let malformed = self.rng.f64() < self.options.malformed_ratio;
        let session = self.sessions[index].clone();
        let key = session.execution_id.clone().into_bytes();
        if malformed {
            return SynthRecord {
                key,
                value: render::malformed(&mut self.rng, &session, self.clock_ms),
                malformed: true,
            };
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
        let resume = |generator: &mut Stress| {
            generator.update(index, |x| x.paused = false);
            render::control(s, What::new("proctor", "resume", "succeeded", "interacting"), None, t)
        };
        // A running session has nothing for the proctor to resume: another step instead (its
        // last step, the end, keeps its own shares).
        let draw = match self.rng.u8(..100) {
            90.. if !s.paused && (1..=40).contains(&s.step) => self.rng.u8(..90),
            draw => draw,
        };
        match (s.step, draw) {
            (0, _) => {
                (render::control(s, What::new("test-taker", "start", "succeeded", "interacting"), None, t), false)
            }
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
                    let what = What::new("test-taker", "navigation", "succeeded", status);
                    (render::flat(&mut self.rng, s, what, reason, t), false)
                } else {
                    (render::control(s, What::new("test-taker", "navigation", "succeeded", status), None, t), false)
                }
            }
            (1..=40, 6..=39) => {
                let (code, message) = SECURITY_MESSAGES[self.rng.usize(..SECURITY_MESSAGES.len())];
                let actor = if message.starts_with("[Security Plugin]") { "security-plugin" } else { "test-taker" };
                if code != 20060 {
                    let reason = Some((code, message.to_owned()));
                    return (render::control(s, What::new(actor, "flag", "succeeded", status), reason, t), false);
                }
                if s.paused {
                    return (resume(self), false);
                }
                self.update(index, |x| x.paused = true);
                let reason = Some((code, message.to_owned()));
                (render::control(s, What::new(actor, "pause", "succeeded", "suspended"), reason, t), false)
            }
            (1..=40, 40..=59) => (render::deliver_fe_log(&mut self.rng, self.options.stack_trace_ratio, s, t), false),
            (1..=40, 60..=77) => {
                let action = [if s.paused { "resume" } else { "pause" }, "update", "flag"][self.rng.usize(..3)];
                (self.acs(index, s, action, t), false)
            }
            (1..=40, 78..=79) => {
                let reason = Some((20999, render::LOCKDOWN_BREACH.to_owned()));
                let what = What::new("security-plugin", "flag", "succeeded", status);
                (render::flat(&mut self.rng, s, what, reason, t), false)
            }
            (1..=40, 80..=89) => {
                let (code, message) = SECURITY_MESSAGES[self.rng.usize(..SECURITY_MESSAGES.len())];
                let reason = Some((code, message.to_owned()));
                (render::flat(&mut self.rng, s, What::new("test-taker", "flag", "succeeded", status), reason, t), false)
            }
            // Drawn by a paused session only.
            (1..=40, _) => (resume(self), false),
            (_, 0..=79) => {
                (render::control(s, What::new("test-taker", "submission", "succeeded", "closed"), None, t), true)
            }
            (_, 80..=94) => (self.acs(index, s, "terminate", t), true),
            (_, _) => {
                let what = What::new("system", "submission", "succeeded", "closed");
                (render::flat(&mut self.rng, s, what, None, t), true)
            }
        }
    }

    /// Changes the session at `index` (the one being stepped: `step` has a copy of it).
    fn update(&mut self, index: usize, change: impl FnOnce(&mut Session)) {
        change(&mut self.sessions[index]);
    }

    /// A proctor ACS action with a drawn reason (and, for `update`, 5 to 15 more minutes).
    fn acs(&mut self, index: usize, s: &Session, action: &str, t: i64) -> Value {
        let reason = PROCTOR_REASONS[self.rng.usize(..PROCTOR_REASONS.len())];
        let extra_time = (action == "update").then(|| s.extra_time + f64::from(self.rng.u8(1..4)) * 5.0);
        match action {
            "pause" => self.update(index, |x| x.paused = true),
            "resume" => self.update(index, |x| x.paused = false),
            _ => {}
        }
        if let Some(total) = extra_time {
            self.update(index, |x| x.extra_time = total);
        }
        render::acs(s, action, reason, extra_time, t)
    }
}

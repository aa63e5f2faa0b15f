//! The realistic profile ([`Profile::Realistic`](super::Profile::Realistic), the default):
//! sittings that last as long as real ones, most of them uneventful.
//!
//! Each session is planned whole when it opens, from its own random generator (seeded by
//! the seed and its number, so its plan and its kind do not depend on what else is open):
//! a sitting of `sitting_minutes` (20 to 120 by default) of event time, a test-taker `start`,
//! a navigation every 1 to 3 minutes (half flat records with upstream's 40999 XML payload,
//! half control messages), none to two routine deliver-fe logs, and an end: the test taker's
//! submission (85%) or the system's auto-submission (15%). Every pause is followed by the
//! proctor's authorization to go on (a proctor `resume`: ACS or control message), and no
//! navigation is planned while a session is paused. On top of that, by kind
//! ([`SessionKind`]), assigned per block of 20 consecutive sessions (17 clean, 2 minor, 1
//! suspicious, at places drawn per block):
//!
//! - clean: in one session of four one benign flag (a right click, one forbidden `copy`,
//!   one tab or full-screen exit, as a flag or a security-plugin pause); in 8% a proctor
//!   pause for the room or the network; in 5% extra time (5 to 20 minutes). Clean sessions
//!   match no high or critical rule of the defaults.
//! - minor: one or two of two tab switches far apart, a small technical burst (3 to 8
//!   deliver-fe errors within a minute), a proctor note (an ACS `flag`), extra time in two
//!   grants (up to 45 minutes), a security pause and a proctor pause.
//! - suspicious: the pattern of one default rule ([`Pattern`]), the patterns taken in turn
//!   block after block so that each appears.
//!
//! Sessions open at once (`concurrent_sessions`) interleave: the generator keeps the next
//! event of each in a heap and emits the earliest, so records come in event-time order
//! while they are produced as fast as asked. The first sessions open over the first
//! `sitting_minutes.0` minutes; a session that ends is replaced by a new one up to 3
//! minutes later. Malformed records replace nothing: one is emitted, in the share asked,
//! for the session whose event is due, at that event's time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde_json::{Value, json};

use super::render::{self, Session, What};
use super::{Pattern, SessionKind, SynthOptions, SynthRecord};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
/// Kinds are assigned per block of this many sessions.
const BLOCK: u64 = 20;
/// Per block: minor sessions (the rest but one suspicious are clean).
const MINOR_PER_BLOCK: u64 = 2;

/// One planned event of a session.
#[derive(Debug, Clone, Copy)]
enum Step {
    Start,
    Navigate,
    /// A routine deliver-fe log (a network timeout, or a stack trace).
    Log,
    /// A deliver-fe error, one of a technical burst.
    Error,
    /// A pause by the security plugin (20060, this message).
    SecurityPause(&'static str),
    /// A test-taker or security-plugin flag (20999 or 20060, this message).
    Flag(i64, &'static str),
    ProctorPause(Reason),
    /// The proctor authorizes the test taker to go on: a proctor `resume`.
    Authorize,
    /// Extra time: the session's new total, in minutes.
    ExtraTime(f64, Reason),
    /// A proctor's note (ACS `flag`).
    ProctorNote(Reason),
    /// The test taker moves on from another IP address and/or browser.
    SwitchDevice {
        ip: bool,
        user_agent: bool,
    },
    Submit {
        system: bool,
    },
    Terminate(Reason),
}

/// A proctor's reason code and message (ACS `reason_code` is a string).
type Reason = (&'static str, &'static str);

const ROOM_REASONS: [Reason; 4] = [
    ("10030", "Construction noise in the test centre."),
    ("10020", "Fire drill in the next room."),
    ("40030", "Network outage in room B."),
    ("40050", "Workstation restarted."),
];
const AUTHORIZATION: Reason = ("30999", "Authorized to continue.");
const EXTRA_TIME_REASONS: [Reason; 3] = [
    ("40010", "Time lost to a frozen workstation."),
    ("20040", "Break granted for illness."),
    ("10040", "Power cut in the test centre."),
];
const NOTES: [Reason; 3] = [
    ("20010", "Repeatedly looking away from the screen."),
    ("30020", "Test taker was talking to someone off camera."),
    ("N52", "Third-party flag: second face detected."),
];
const TERMINATIONS: [Reason; 2] =
    [("20010", "Test taker used a phone during the test."), ("30020", "Someone else answered for the test taker.")];
const IDENTITY: Reason = ("20030", "The test taker does not match the ID photo: second ID check requested.");
const ERRORS: [&str; 3] = [
    "[deliver-fe] Failed to store the response: HTTP 503 Service Unavailable",
    "[deliver-fe] WebSocket connection lost: reconnecting",
    "[deliver-fe] Item assets failed to load: net::ERR_CONNECTION_RESET",
];

/// A 64-bit mix (splitmix64's finalizer): seeds for a session's own generators.
fn mix(seed: u64, n: u64, purpose: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The kind of session number `n` for `seed`: per block of [`BLOCK`] sessions, one
/// suspicious (its pattern the block's turn) and [`MINOR_PER_BLOCK`] minor, at drawn places.
pub(super) fn kind_of(seed: u64, n: u64) -> SessionKind {
    let (block, place) = (n / BLOCK, n % BLOCK);
    let mut rng = fastrand::Rng::with_seed(mix(seed, block, 1));
    let mut places: Vec<u64> = (0..BLOCK).collect();
    rng.shuffle(&mut places);
    if places[0] == place {
        SessionKind::Suspicious(Pattern::ALL[(block % Pattern::ALL.len() as u64) as usize])
    } else if places[1..=MINOR_PER_BLOCK as usize].contains(&place) {
        SessionKind::Minor
    } else {
        SessionKind::Clean
    }
}

/// The identity of session number `n` (its execution id, test taker, browser, address).
pub(super) fn identity(options: &SynthOptions, n: u64) -> Session {
    Session::new(n, options.tenants, &mut fastrand::Rng::with_seed(mix(options.seed, n, 3)))
}

/// Plans a session: its events' offsets from its start, in order.
struct Planner<'r> {
    rng: &'r mut fastrand::Rng,
    steps: Vec<(i64, Step)>,
    /// Paused from .0 to .1 (the pause and the authorization).
    pauses: Vec<(i64, i64)>,
    length: i64,
}

impl Planner<'_> {
    /// A time between `from` and `to` (ms offsets), kept inside the sitting.
    fn at(&mut self, from: i64, to: i64) -> i64 {
        let last = self.length - 30 * SECOND;
        let from = from.clamp(30 * SECOND, last);
        let to = to.clamp(from + 1, last + 1);
        self.rng.i64(from..to)
    }

    fn add(&mut self, t: i64, step: Step) {
        self.steps.push((t, step));
    }

    /// A pause at `t` by `pause`, authorized `duration` later; refused (false) when it would
    /// overlap another pause (a paused session is not paused again) or end after the sitting.
    fn pause(&mut self, t: i64, duration: i64, pause: Step) -> bool {
        let end = t + duration;
        let margin = 30 * SECOND;
        if end > self.length - margin || self.pauses.iter().any(|&(s, e)| t < e + margin && s < end + margin) {
            return false;
        }
        self.pauses.push((t, end));
        self.add(t, pause);
        self.add(end, Step::Authorize);
        true
    }

    fn paused_at(&self, t: i64) -> bool {
        self.pauses.iter().any(|&(s, e)| (s..=e).contains(&t))
    }

    /// `count` flags of `messages` (taken in turn), `from` `spacing` apart (± a quarter).
    fn flags(&mut self, count: usize, from: i64, spacing: i64, messages: &[(i64, &'static str)]) {
        let mut t = from;
        for i in 0..count {
            let (code, message) = messages[i % messages.len()];
            self.add(t.min(self.length - 10 * SECOND), Step::Flag(code, message));
            t += spacing * 3 / 4 + self.rng.i64(0..=spacing / 2);
        }
    }

    fn burst(&mut self, count: usize, within: i64) {
        let from = self.at(2 * MINUTE, self.length - 2 * MINUTE);
        for _ in 0..count {
            let t = from + self.rng.i64(0..within);
            self.add(t, Step::Error);
        }
    }

    fn clean(&mut self) {
        for _ in 0..self.rng.usize(0..=2) {
            let t = self.at(MINUTE, self.length);
            self.add(t, Step::Log);
        }
        if self.rng.u8(..4) == 0 {
            let t = self.at(3 * MINUTE, self.length - 3 * MINUTE);
            match self.rng.u8(..5) {
                0 => self.add(t, Step::Flag(20999, render::RIGHT_CLICK)),
                1 => self.add(t, Step::Flag(20999, render::COPY)),
                2 => self.add(t, Step::Flag(20060, render::BLUR)),
                3 => self.add(t, Step::Flag(20060, render::FULL_SCREEN)),
                _ => {
                    let message = [render::PLUGIN_BLUR, render::PLUGIN_FULL_SCREEN][self.rng.usize(..2)];
                    let duration = self.rng.i64(20 * SECOND..90 * SECOND);
                    self.pause(t, duration, Step::SecurityPause(message));
                }
            }
        }
        if self.rng.u8(..100) < 8 {
            let t = self.at(5 * MINUTE, self.length - 10 * MINUTE);
            let reason = ROOM_REASONS[self.rng.usize(..ROOM_REASONS.len())];
            let duration = self.rng.i64(2 * MINUTE..8 * MINUTE);
            self.pause(t, duration, Step::ProctorPause(reason));
        }
        if self.rng.u8(..100) < 5 {
            let t = self.at(MINUTE, self.length / 2);
            let minutes = f64::from(self.rng.u8(1..=4)) * 5.0;
            let reason = EXTRA_TIME_REASONS[self.rng.usize(..EXTRA_TIME_REASONS.len())];
            self.add(t, Step::ExtraTime(minutes, reason));
        }
    }

    fn minor(&mut self) {
        let incidents = self.rng.usize(1..=2);
        for _ in 0..incidents {
            match self.rng.u8(..5) {
                0 => {
                    // Two tab switches more than the rule's 10 minutes apart.
                    let t = self.at(2 * MINUTE, self.length / 2);
                    let gap = self.rng.i64(12 * MINUTE..25 * MINUTE);
                    self.add(t, Step::Flag(20060, render::BLUR));
                    if t + gap < self.length - MINUTE {
                        self.add(t + gap, Step::Flag(20060, render::BLUR));
                    }
                }
                1 => {
                    let count = self.rng.usize(3..=8);
                    self.burst(count, MINUTE);
                }
                2 => {
                    let t = self.at(5 * MINUTE, self.length);
                    let note = NOTES[self.rng.usize(..NOTES.len())];
                    self.add(t, Step::ProctorNote(note));
                }
                3 => {
                    let t = self.at(5 * MINUTE, self.length / 2);
                    let reason = EXTRA_TIME_REASONS[self.rng.usize(..EXTRA_TIME_REASONS.len())];
                    self.add(t, Step::ExtraTime(15.0, reason));
                    let total = f64::from(self.rng.u8(6..=9)) * 5.0;
                    self.add(t + 10 * MINUTE, Step::ExtraTime(total, reason));
                }
                _ => {
                    let t = self.at(3 * MINUTE, self.length / 2);
                    let duration = self.rng.i64(20 * SECOND..60 * SECOND);
                    self.pause(t, duration, Step::SecurityPause(render::PLUGIN_BLUR));
                    let t = self.at(self.length / 2, self.length - 8 * MINUTE);
                    let reason = ROOM_REASONS[self.rng.usize(..ROOM_REASONS.len())];
                    self.pause(t, 3 * MINUTE, Step::ProctorPause(reason));
                }
            }
        }
    }

    /// The behaviour the default rule `pattern` is written for, sustained; returns the
    /// session's end when a proctor terminates it.
    fn suspicious(&mut self, pattern: Pattern) -> Option<(i64, Step)> {
        // Planned before anything else (nothing else is paused yet), early enough that the
        // longest pattern (three pauses, about 12 minutes) fits in a 20-minute sitting.
        let t = self.at(3 * MINUTE, (self.length - 17 * MINUTE).max(self.length / 3));
        match pattern {
            Pattern::TabSwitchRepeated | Pattern::FullscreenExitRepeated => {
                let (plugin, test_taker) = match pattern {
                    Pattern::TabSwitchRepeated => (render::PLUGIN_BLUR, render::BLUR),
                    _ => (render::PLUGIN_FULL_SCREEN, render::FULL_SCREEN),
                };
                // The plugin pauses at the first; the rest are flagged while the test runs.
                self.pause(t, 30 * SECOND, Step::SecurityPause(plugin));
                let count = self.rng.usize(3..=5);
                self.flags(count, t + MINUTE, 90 * SECOND, &[(20060, test_taker)]);
            }
            Pattern::ForbiddenCommand => {
                let count = self.rng.usize(2..=4);
                self.flags(count, t, 60 * SECOND, &[(20999, render::COPY), (20999, render::PASTE)]);
            }
            Pattern::ScreenshotAttempt => {
                let count = self.rng.usize(1..=2);
                self.flags(count, t, 3 * MINUTE, &[(20999, render::SCREENSHOT)]);
            }
            Pattern::LockdownBreach => self.add(t, Step::Flag(20999, render::LOCKDOWN_BREACH)),
            Pattern::IpChange => {
                self.add(t, Step::SwitchDevice { ip: true, user_agent: false });
                if self.rng.bool() {
                    self.add(t + 5 * SECOND, Step::Flag(20999, render::IP_CHANGE));
                }
            }
            Pattern::UserAgentChange => self.add(t, Step::SwitchDevice { ip: false, user_agent: true }),
            Pattern::ProctorTermination => {
                let reason = TERMINATIONS[self.rng.usize(..TERMINATIONS.len())];
                self.add(t, Step::ProctorNote(NOTES[0]));
                return Some((t + self.rng.i64(2 * MINUTE..6 * MINUTE), Step::Terminate(reason)));
            }
            Pattern::RepeatedPauses => {
                let mut at = t;
                for _ in 0..3 {
                    let reason = ROOM_REASONS[self.rng.usize(..ROOM_REASONS.len())];
                    let duration = self.rng.i64(MINUTE..2 * MINUTE);
                    self.pause(at, duration, Step::ProctorPause(reason));
                    at += duration + self.rng.i64(MINUTE..3 * MINUTE);
                }
            }
            Pattern::ExcessiveExtraTime => {
                let reason = EXTRA_TIME_REASONS[self.rng.usize(..EXTRA_TIME_REASONS.len())];
                self.add(t, Step::ExtraTime(30.0, reason));
                let total = f64::from(self.rng.u8(13..=18)) * 5.0;
                self.add(t + 5 * MINUTE, Step::ExtraTime(total, reason));
            }
            Pattern::TechnicalBurst => {
                let count = self.rng.usize(22..=30);
                self.burst(count, 50 * SECOND);
            }
            Pattern::IdentityAuthorization => {
                let duration = self.rng.i64(2 * MINUTE..5 * MINUTE);
                self.pause(t, duration, Step::ProctorPause(IDENTITY));
            }
            Pattern::IllegalTransition => {
                // Twice, the proctor pauses and the test taker's front-end goes on navigating
                // (the second time past the rule's cooldown: two alerts).
                let mut from = t.min(self.length - 18 * MINUTE).max(MINUTE);
                for _ in 0..2 {
                    let duration = self.rng.i64(3 * MINUTE..5 * MINUTE);
                    if self.pause(from, duration, Step::ProctorPause(ROOM_REASONS[1])) {
                        for _ in 0..self.rng.usize(1..=3) {
                            let at = from + self.rng.i64(10 * SECOND..duration - 10 * SECOND);
                            self.add(at, Step::Navigate);
                        }
                    }
                    from += duration + self.rng.i64(5 * MINUTE..6 * MINUTE);
                }
            }
            Pattern::SecurityFlag => {
                // Four right clicks, each past the rule's cooldown (5 minutes) after the
                // previous one: four alerts.
                let mut at = t.min(self.length - 21 * MINUTE).max(MINUTE);
                for _ in 0..4 {
                    self.add(at.min(self.length - 10 * SECOND), Step::Flag(20999, render::RIGHT_CLICK));
                    at += 5 * MINUTE + self.rng.i64(10 * SECOND..=90 * SECOND);
                }
            }
        }
        None
    }
}

/// Plans session `n` of `kind`: its events at offsets from its start, in order.
fn plan(options: &SynthOptions, n: u64, kind: SessionKind) -> Vec<(i64, Step)> {
    let mut rng = fastrand::Rng::with_seed(mix(options.seed, n, 2));
    let (shortest, longest) = options.sitting_minutes;
    let length = rng.i64(i64::from(shortest) * MINUTE..=i64::from(longest.max(shortest)) * MINUTE);
    let mut planner = Planner { rng: &mut rng, steps: vec![(0, Step::Start)], pauses: Vec::new(), length };
    // The suspicious pattern first: it then has the sitting's first half to itself.
    let ending = match kind {
        SessionKind::Suspicious(pattern) => planner.suspicious(pattern),
        _ => None,
    };
    planner.clean();
    if kind == SessionKind::Minor {
        planner.minor();
    }
    let (end, last) = ending.unwrap_or_else(|| (length, Step::Submit { system: planner.rng.u8(..100) < 15 }));
    // A navigation every 1 to 3 minutes, none while paused (but a pattern's own).
    let mut t = planner.rng.i64(30 * SECOND..2 * MINUTE);
    while t < end - 30 * SECOND {
        if !planner.paused_at(t) {
            planner.add(t, Step::Navigate);
        }
        t += planner.rng.i64(MINUTE..=3 * MINUTE);
    }
    // A device switch shows in a navigation: never while paused.
    let pauses = planner.pauses.clone();
    let mut steps = planner.steps;
    for (t, step) in &mut steps {
        let at = *t;
        if let (Step::SwitchDevice { .. }, Some(&(_, resumed))) =
            (*step, pauses.iter().find(|(s, e)| (s..=e).contains(&&at)))
        {
            *t = resumed + 10 * SECOND;
        }
    }
    steps.retain(|(t, _)| *t < end);
    steps.push((end, last));
    steps.sort_by_key(|(t, _)| *t);
    steps
}

/// A session being emitted.
#[derive(Debug)]
struct Open {
    session: Session,
    steps: Vec<(i64, Step)>,
    /// The next step to emit.
    next: usize,
    /// Message ids, stack traces, malformed bytes: drawn apart from the plan, so that the
    /// times can be computed without writing records ([`Realistic::skip`]).
    rng: fastrand::Rng,
}

#[derive(Debug)]
pub(super) struct Realistic {
    options: SynthOptions,
    /// Start times of the first sessions, gaps between sessions, malformed draws.
    rng: fastrand::Rng,
    open: Vec<Open>,
    /// (time of the next event, index in `open`): the earliest first.
    due: BinaryHeap<Reverse<(i64, usize)>>,
    next_session: u64,
    clock_ms: i64,
    pub cap_ms: i64,
}

impl Realistic {
    pub fn new(options: SynthOptions) -> Realistic {
        let rng = fastrand::Rng::with_seed(options.seed);
        let clock_ms = options.start_ms;
        let mut generator = Realistic {
            options,
            rng,
            open: Vec::new(),
            due: BinaryHeap::new(),
            next_session: 0,
            clock_ms,
            cap_ms: i64::MAX,
        };
        let ramp = i64::from(generator.options.sitting_minutes.0.max(1)) * MINUTE;
        for index in 0..generator.options.concurrent_sessions.max(1) {
            let start = generator.options.start_ms + generator.rng.i64(0..ramp);
            let open = generator.open_session(start);
            generator.due.push(Reverse((open.steps[0].0, index)));
            generator.open.push(open);
        }
        generator
    }

    /// Opens the next session at `start`.
    fn open_session(&mut self, start: i64) -> Open {
        let n = self.next_session;
        self.next_session += 1;
        let kind = kind_of(self.options.seed, n);
        let steps = plan(&self.options, n, kind).into_iter().map(|(t, step)| (start + t, step)).collect();
        let rng = fastrand::Rng::with_seed(mix(self.options.seed, n, 4));
        Open { session: identity(&self.options, n), steps, next: 0, rng }
    }

    pub fn options(&self) -> &SynthOptions {
        &self.options
    }

    /// Sessions opened so far.
    pub fn sessions(&self) -> u64 {
        self.next_session
    }

    /// The time of the last record (uncapped).
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    pub fn next_record(&mut self) -> SynthRecord {
        self.advance(true).expect("written when asked")
    }

    /// Moves on by one record without writing it (the times are those of
    /// [`Realistic::next_record`]).
    pub fn skip(&mut self) {
        self.advance(false);
    }

    fn advance(&mut self, write: bool) -> Option<SynthRecord> {
        // Every open session has its next event in the heap.
        let Reverse((t, index)) = self.due.pop().expect("a session is always open");
        self.clock_ms = t;
        let time = t.min(self.cap_ms);
        if self.rng.f64() < self.options.malformed_ratio {
            // The event stays due.
            self.due.push(Reverse((t, index)));
            let open = &mut self.open[index];
            let key = open.session.execution_id.clone().into_bytes();
            return write.then(|| SynthRecord {
                key,
                value: render::malformed(&mut open.rng, &open.session, time),
                malformed: true,
            });
        }
        let open = &mut self.open[index];
        let step = open.steps[open.next].1;
        open.next += 1;
        let record = write.then(|| {
            let key = open.session.execution_id.clone().into_bytes();
            let value = write_step(open, step, time, self.options.stack_trace_ratio);
            SynthRecord { key, value: serde_json::to_vec(&value).expect("JSON values serialize"), malformed: false }
        });
        match open.steps.get(open.next) {
            Some(&(next, _)) => self.due.push(Reverse((next, index))),
            None => {
                let start = t + self.rng.i64(0..3 * MINUTE);
                let open = self.open_session(start);
                self.due.push(Reverse((open.steps[0].0, index)));
                self.open[index] = open;
            }
        }
        record
    }
}

/// The record of `step` for the session `open`, at `t`; the session's state follows.
fn write_step(open: &mut Open, step: Step, t: i64, stack_trace_ratio: f64) -> Value {
    let Open { session: s, rng, .. } = open;
    let status = s.status();
    match step {
        Step::Start => render::control(s, What::new("test-taker", "start", "succeeded", "interacting"), None, t),
        Step::Navigate => {
            s.item += 1;
            render::navigation(rng, s, status, t)
        }
        Step::Log => render::deliver_fe_log(rng, stack_trace_ratio, s, t),
        Step::Error => {
            let message = format!("{} [item-{}][recoverable]", ERRORS[rng.usize(..ERRORS.len())], s.item);
            let mut value =
                render::control(s, What::new("deliver-fe", "log", status, status), Some((40999, message)), t);
            value["action"] = json!({"type": "log", "status": status});
            value
        }
        Step::SecurityPause(message) => {
            s.paused = true;
            let actor = if message.starts_with("[Security Plugin]") { "security-plugin" } else { "test-taker" };
            render::control(
                s,
                What::new(actor, "pause", "succeeded", "suspended"),
                Some((20060, message.to_owned())),
                t,
            )
        }
        Step::Flag(code, message) => {
            let reason = Some((code, message.to_owned()));
            if message == render::LOCKDOWN_BREACH {
                render::flat(rng, s, What::new("security-plugin", "flag", "succeeded", status), reason, t)
            } else if rng.bool() {
                render::flat(rng, s, What::new("test-taker", "flag", "succeeded", status), reason, t)
            } else {
                render::control(s, What::new("test-taker", "flag", "succeeded", status), reason, t)
            }
        }
        Step::ProctorPause(reason) => {
            let value = render::acs(s, "pause", reason, None, t);
            s.paused = true;
            value
        }
        Step::Authorize => {
            s.paused = false;
            if rng.u8(..100) < 60 {
                render::acs(s, "resume", AUTHORIZATION, None, t)
            } else {
                render::control(s, What::new("proctor", "resume", "succeeded", "interacting"), None, t)
            }
        }
        Step::ExtraTime(total, reason) => {
            s.extra_time = total;
            render::acs(s, "update", reason, Some(total), t)
        }
        Step::ProctorNote(reason) => render::acs(s, "flag", reason, None, t),
        Step::SwitchDevice { ip, user_agent } => {
            if ip {
                s.ip = format!("203.0.113.{}", rng.u8(1..255));
            }
            if user_agent {
                let current = render::USER_AGENTS.iter().position(|ua| *ua == s.user_agent).unwrap_or(0);
                s.user_agent = render::USER_AGENTS[(current + 1) % render::USER_AGENTS.len()].to_owned();
            }
            s.item += 1;
            render::navigation(rng, s, status, t)
        }
        Step::Submit { system: true } => {
            render::flat(rng, s, What::new("system", "submission", "succeeded", "closed"), None, t)
        }
        Step::Submit { system: false } => {
            render::control(s, What::new("test-taker", "submission", "succeeded", "closed"), None, t)
        }
        Step::Terminate(reason) => render::acs(s, "terminate", reason, None, t),
    }
}

//! Evaluation: one event against every rule, on event time (`incidentTime`).
//!
//! Pure and synchronous. The state is the caller's ([`RuleState`]: one per session, one per
//! tenant for tenant-scoped rules), so that it can live beside the session state. Alerts are
//! given to the caller as they fire, borrowed ([`AlertView`]), their summary rendered in a
//! buffer reused by the thread.
//!
//! - Duplicates (the session view says so) are skipped whole: they never count twice.
//! - A threshold rule (count above 1) keeps its matches of the last `window` (plus the
//!   allowed lateness) and fires when `count` of them lie less than `window` apart; the
//!   events of an alert are not counted again. An event older than the scope's watermark
//!   (its latest incident time) minus the allowed lateness does not count in a window.
//! - A count-1 rule fires on every match, late or not.
//! - Cooldown: no alert of the same rule, scope and group less than `cooldown` (event time)
//!   from the previous one; matches during it still count in the window.
//!
//! Memory: a window keeps at most twice its count of matches; distinct IPs and user
//! agents are kept as at most [`MAX_DISTINCT`] 64-bit hashes; a window with no matches
//! and no cooldown running is dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

use smallvec::SmallVec;

use super::alert::{ALERT_ID_LEN, Alert, AlertView, Evidence, EvidenceRef, alert_id_in};
use super::config::{EventBits, GroupBy, MAX_DISTINCT, Match, News, Part, Rest, Rule, RuleSet, Scope};
use crate::model::{Anomaly, Event, PauseAbout, ReasonCode, SessionView, Signal, SignalKind};

/// Values seen, as 64-bit hashes, at most [`MAX_DISTINCT`] (inline up to two: a session
/// mostly has one IP and one user agent, read at every event of the test taker's side).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distinct(SmallVec<[u64; 2]>);

impl Distinct {
    /// Remembers `value`; true when it is new (and there was room for it).
    pub fn insert(&mut self, value: &str) -> bool {
        let hash = xxh3_64(value.as_bytes());
        if self.0.contains(&hash) || self.0.len() >= MAX_DISTINCT {
            return false;
        }
        self.0.push(hash);
        true
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The hashes, as a changelog would store them.
    pub fn as_raw(&self) -> &[u64] {
        &self.0
    }

    /// The hashes [`Distinct::as_raw`] gave, back.
    pub fn from_raw(hashes: Vec<u64>) -> Distinct {
        // Inline when they fit (`from_vec` would keep a decoded vector's spare capacity).
        Distinct(SmallVec::from_slice(&hashes))
    }
}

/// The matches and cooldown of one rule (and group) in one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub rule: Arc<str>,
    /// Where `rule` was in the rule set last seen (a cache for [`rule_of`]).
    rule_at: RuleAt,
    /// The group (the signal kind for `group_by = "signal"`); empty without one.
    pub group: &'static str,
    /// Matches not yet part of an alert, by incident time (count above 1 only).
    pub matches: VecDeque<Evidence>,
    /// Incident time of the event that fired the last alert.
    pub last_fired: Option<i64>,
}

impl Window {
    pub fn new(rule: Arc<str>, group: &'static str, matches: VecDeque<Evidence>, last_fired: Option<i64>) -> Window {
        Window { rule, rule_at: RuleAt(u16::MAX), group, matches, last_fired }
    }

    /// A window with nothing yet, for the rule at `index` of the rule set.
    fn empty(rule: &Rule, index: u16, group: &'static str) -> Window {
        Window { rule_at: RuleAt(index), ..Window::new(rule.id.clone(), group, VecDeque::new(), None) }
    }
}

/// A rule's index in a rule set: a cache, checked before use (the rule there must share the
/// window's id), so windows holding it are equal whatever it says.
#[derive(Debug, Clone, Copy)]
struct RuleAt(u16);

impl PartialEq for RuleAt {
    fn eq(&self, _: &RuleAt) -> bool {
        true
    }
}

/// The rules' state of one scope: a session, or a tenant (for tenant-scoped rules).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleState {
    /// The latest incident time evaluated in the scope, epoch milliseconds.
    pub watermark: Option<i64>,
    /// Test-taker side IPs of the session (session scope only).
    pub ips: Distinct,
    /// Test-taker side user agents of the session (session scope only).
    pub user_agents: Distinct,
    /// The session's extra time after the previous event, minutes (session scope only).
    pub extra_time_minutes: f64,
    pub windows: Vec<Window>,
    /// When the windows next have something to forget (not part of the state: rebuilt by the
    /// first prune after a restore or a reload). Only the engine sets it: it vouches for the
    /// windows it was computed over.
    pub(crate) prune_due: PruneDue,
}

/// When a state's windows next have something to forget: a cache over them, so that an
/// event with nothing to forget does not visit them. Prunes happen exactly when they would
/// if they ran after every event (it only skips those that would forget nothing).
///
/// Its generation also says that every window of the state shares its rule's id with that
/// rule set (a prune makes them share it, new windows take it): `count` then looks windows
/// up by pointer only.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneDue {
    /// The [`RuleSet`] generation it was computed for; 0: none (prune at the next event).
    generation: u64,
    /// A `watermark - allowed lateness` below which a prune forgets nothing (a lower bound:
    /// from it on, a match may leave its window, or a window go).
    at: i64,
}

/// A cache, not state: states holding the same windows are equal whatever it says.
impl PartialEq for PruneDue {
    fn eq(&self, _: &PruneDue) -> bool {
        true
    }
}

impl RuleState {
    /// Matches held in windows (a measure of its memory).
    pub fn held(&self) -> usize {
        self.windows.iter().map(|w| w.matches.len()).sum()
    }
}

/// What the session state says, around the event, for session conditions.
#[derive(Debug)]
struct Facts {
    new_ip: bool,
    ips: usize,
    new_user_agent: bool,
    user_agents: usize,
    extra_before: f64,
    extra_after: f64,
}

impl Facts {
    /// Whether the event brought something a session condition can fire on: a new IP, a new
    /// user agent, more extra time (the rules that need one are listed only then).
    fn news(&self) -> News {
        News(self.new_ip || self.new_user_agent || self.extra_after > self.extra_before)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The ids of the tenant-scoped rules an event matched, to be counted where its tenant's
/// events meet (most match none or one: inline up to two).
pub type Forwarded = SmallVec<[Arc<str>; 2]>;

/// Where the tenant-scoped rules of an evaluation are counted.
#[derive(Debug)]
pub enum Tenant<'s> {
    /// Here, in this state (one process, or one partition holding the whole tenant): after
    /// the session's rules, as [`evaluate_tenant`] counts a forwarded event, so that the
    /// tenant's state moves with the events that match one of its rules only, as where they
    /// are forwarded.
    Inline(&'s mut RuleState),
    /// Elsewhere: the ids of the tenant-scoped rules the event matches are pushed here, to be
    /// counted by [`evaluate_tenant`] where all of the tenant's events meet (the Kafka
    /// runtime re-keys them by tenant through an internal topic).
    Forward(&'s mut Forwarded),
}

/// Evaluates `event` (enriched, its session view `view` already applied) against `rules`.
/// `session` is the state of the event's session; tenant-scoped rules are counted or
/// forwarded as `tenant` says. Returns the alerts fired: the session's in rule order, then
/// the tenant's.
pub fn evaluate(
    rules: &RuleSet,
    event: &Event<'_>,
    view: &SessionView,
    session: &mut RuleState,
    tenant: Tenant<'_>,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let fired = |alert: &AlertView<'_>| alerts.push(alert.to_alert());
    match tenant {
        Tenant::Forward(matched) => evaluate_into(rules, event, view, session, matched, fired),
        Tenant::Inline(state) => evaluate_inline_into(rules, event, view, session, || state, fired),
    }
    alerts
}

/// [`evaluate_into`], then the tenant-scoped rules the event matched counted here by
/// [`evaluate_tenant_into`], in the state `tenant` gives (asked for only then): as
/// [`Tenant::Inline`] says, the tenant's state moves with those events only.
pub fn evaluate_inline_into<'t>(
    rules: &RuleSet,
    event: &Event<'_>,
    view: &SessionView,
    session: &mut RuleState,
    tenant: impl FnOnce() -> &'t mut RuleState,
    mut fired: impl FnMut(&AlertView<'_>),
) {
    let mut matched = Forwarded::new();
    evaluate_into(rules, event, view, session, &mut matched, &mut fired);
    if !matched.is_empty() {
        evaluate_tenant_into(rules, event, &matched, tenant(), fired);
    }
}

/// [`evaluate`], the tenant-scoped rules the event matches pushed to `matched` (to be counted
/// by [`evaluate_tenant_into`], here or where the tenant's events meet), each alert given to
/// `fired` as it fires (borrowed: encoded or copied there, without an owned alert in
/// between), in rule order.
pub fn evaluate_into(
    rules: &RuleSet,
    event: &Event<'_>,
    view: &SessionView,
    session: &mut RuleState,
    matched: &mut Forwarded,
    mut fired: impl FnMut(&AlertView<'_>),
) {
    if view.duplicate || event.anomalies.contains(&Anomaly::Duplicate) {
        return;
    }
    let test_taker_side = event.actor.is_some_and(|actor| actor.is_test_taker_side());
    let seen = |value: Option<&str>, distinct: &mut Distinct| {
        test_taker_side && value.map(str::trim).filter(|v| !v.is_empty()).is_some_and(|v| distinct.insert(v))
    };
    let new_ip = seen(event.ip.as_deref(), &mut session.ips);
    let new_user_agent = seen(event.user_agent.as_deref(), &mut session.user_agents);
    let facts = Facts {
        new_ip,
        ips: session.ips.len(),
        new_user_agent,
        user_agents: session.user_agents.len(),
        extra_before: session.extra_time_minutes,
        extra_after: view.extra_time_minutes,
    };
    session.extra_time_minutes = view.extra_time_minutes;
    let lateness = millis(rules.allowed_lateness);
    let bits = EventBits::of(event);
    let news = facts.news();
    // The alternatives of a rule are next to each other: a rule is counted once, at its
    // first alternative that matches.
    let mut counted = None;
    for candidate in rules.candidates(&bits, news) {
        if counted == Some(candidate.rule) || !candidate.quick.admits(&bits) {
            continue;
        }
        let rule = &rules.rules()[usize::from(candidate.rule)];
        if candidate.rest.any()
            && !rest_holds(&candidate.rest, &rule.matches[usize::from(candidate.alternative)], event, &facts)
        {
            continue;
        }
        counted = Some(candidate.rule);
        match rule.scope {
            Scope::Session => {
                count(rules, candidate.rule, lateness, event, session, &event.delivery_execution_id, &mut fired);
            }
            Scope::Tenant => matched.push(rule.id.clone()),
        }
    }
    advance(session, rules, lateness, event.incident_time);
}

/// The tenant-scoped rules `event` matches, pushed to `matched`, for an event processed again
/// (its session state already past it): what [`evaluate`] forwarded the first time, as far
/// as the session's state now can tell (a condition on a new IP or user agent, or on extra
/// time crossing a bound, is not met again). The tenant side drops what it already counted.
pub fn forward_again(
    rules: &RuleSet,
    event: &Event<'_>,
    view: &SessionView,
    session: &RuleState,
    matched: &mut Forwarded,
) {
    let facts = Facts {
        new_ip: false,
        ips: session.ips.len(),
        new_user_agent: false,
        user_agents: session.user_agents.len(),
        extra_before: view.extra_time_minutes,
        extra_after: view.extra_time_minutes,
    };
    let bits = EventBits::of(event);
    for rule in rules.rules().iter().filter(|rule| rule.scope == Scope::Tenant) {
        if rule.matches.iter().any(|m| m.quick.admits(&bits) && matches_rest(m, event, &facts)) {
            matched.push(rule.id.clone());
        }
    }
}

/// Counts `event` for the tenant-scoped rules of `rules` named in `matched` (what
/// [`evaluate`] forwarded for it), in `tenant`, the state of its tenant. Returns the alerts
/// fired, in rule order.
pub fn evaluate_tenant<S: AsRef<str>>(
    rules: &RuleSet,
    event: &Event<'_>,
    matched: &[S],
    tenant: &mut RuleState,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    evaluate_tenant_into(rules, event, matched, tenant, |alert| alerts.push(alert.to_alert()));
    alerts
}

/// [`evaluate_tenant`], each alert given to `fired` as it fires, in rule order.
pub fn evaluate_tenant_into<S: AsRef<str>>(
    rules: &RuleSet,
    event: &Event<'_>,
    matched: &[S],
    tenant: &mut RuleState,
    mut fired: impl FnMut(&AlertView<'_>),
) {
    let lateness = millis(rules.allowed_lateness);
    for (index, rule) in rules.rules().iter().enumerate() {
        if rule.scope == Scope::Tenant && matched.iter().any(|id| id.as_ref() == &*rule.id) {
            // At most `MAX_RULES` (checked by the compilation).
            count(rules, index as u16, lateness, event, tenant, &event.tenant_id, &mut fired);
        }
    }
    advance(tenant, rules, lateness, event.incident_time);
}

/// Moves the scope's watermark to `incident_time` (if later) and forgets what can no longer
/// count, when there is something (see [`PruneDue`]).
fn advance(state: &mut RuleState, rules: &RuleSet, lateness: i64, incident_time: i64) {
    let watermark = state.watermark.map_or(incident_time, |w| w.max(incident_time));
    state.watermark = Some(watermark);
    let due = state.prune_due;
    if due.generation != rules.generation || watermark.saturating_sub(lateness) >= due.at {
        prune(state, rules, lateness);
    }
}

/// Whether `signal` is (or stands for) a signal of `kind`: a `[Security Plugin]` pause about
/// leaving the tab/app is a pause-on-blur, one about full screen a full-screen exit.
pub fn signal_is(kind: SignalKind, signal: &Signal) -> bool {
    signal.kind == kind
        || (signal.kind == SignalKind::SecurityPlugin
            && match kind {
                SignalKind::PauseOnBlur => signal.about == Some(PauseAbout::TabSwitch),
                SignalKind::FullScreen => signal.about == Some(PauseAbout::FullScreen),
                _ => false,
            })
}

/// Whether `m` holds for `event`, every condition tested in turn: what the prefilter and
/// [`matches_rest`] decide together (the tests hold them to it).
#[cfg(test)]
fn matches(m: &Match, event: &Event<'_>, facts: &Facts) -> bool {
    fn any<T: PartialEq>(wanted: &[T], value: Option<T>) -> bool {
        wanted.is_empty() || value.is_some_and(|v| wanted.contains(&v))
    }
    let signal = event.signal.as_ref();
    any(&m.actions, event.action)
        && any(&m.actors, event.actor)
        && any(&m.action_status, event.action_status)
        && any(&m.reason_categories, event.reason.as_ref().map(|r| r.category))
        && (m.reason_codes.is_empty()
            || event
                .reason_code
                .numeric()
                .is_some_and(|c| m.reason_codes.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))))
        && (m.signals.is_empty() || signal.is_some_and(|s| m.signals.iter().any(|k| signal_is(*k, s))))
        && (m.commands.is_empty()
            || signal.and_then(|s| s.command.as_deref()).is_some_and(|c| m.commands.iter().any(|w| w == c)))
        && (m.anomalies.is_empty() || event.anomalies.iter().any(|a| m.anomalies.contains(a)))
        && m.extra_time_above.is_none_or(|n| facts.extra_before <= n && facts.extra_after > n)
        && m.distinct_ips_above.is_none_or(|n| facts.new_ip && facts.ips > n)
        && m.distinct_user_agents_above.is_none_or(|n| facts.new_user_agent && facts.user_agents > n)
}

/// The conditions of `m` its prefilter ([`super::config::Quick`]) does not test: with it,
/// the same as [`matches`].
fn matches_rest(m: &Match, event: &Event<'_>, facts: &Facts) -> bool {
    rest_holds(&Rest::of(m), m, event, facts)
}

/// [`matches_rest`], `rest` being `m`'s as a candidate carries it: `m` is read only for what
/// `rest` says remains in it.
#[inline]
fn rest_holds(rest: &Rest, m: &Match, event: &Event<'_>, facts: &Facts) -> bool {
    let above = |bound: Option<std::num::NonZeroU8>, new: bool, count: usize| {
        bound.is_none_or(|n| new && count > usize::from(n.get()))
    };
    above(rest.distinct_ips_above, facts.new_ip, facts.ips)
        && above(rest.distinct_user_agents_above, facts.new_user_agent, facts.user_agents)
        && (!rest.in_match || rest_in_match_holds(m, event, facts))
}

/// The conditions of `m` its prefilter does not test, read from it (the distinct bounds
/// again: inline only when they fit a byte, see [`Rest::of`]).
fn rest_in_match_holds(m: &Match, event: &Event<'_>, facts: &Facts) -> bool {
    (m.reason_codes.is_empty()
        || event.reason_code.numeric().is_some_and(|c| m.reason_codes.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))))
        && (m.commands.is_empty()
            || event
                .signal
                .as_ref()
                .and_then(|s| s.command.as_deref())
                .is_some_and(|c| m.commands.iter().any(|w| w == c)))
        && m.extra_time_above.is_none_or(|n| facts.extra_before <= n && facts.extra_after > n)
        && m.distinct_ips_above.is_none_or(|n| facts.new_ip && facts.ips > n)
        && m.distinct_user_agents_above.is_none_or(|n| facts.new_user_agent && facts.user_agents > n)
}

fn group_of(rule: &Rule, event: &Event<'_>) -> &'static str {
    match rule.group_by {
        GroupBy::None => "",
        GroupBy::Signal => event.signal.as_ref().map_or("none", |s| s.kind.as_str()),
    }
}

/// Whether two groups are the same: most often the same static string.
fn same_group(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

fn cooling(last_fired: Option<i64>, at: i64, cooldown: i64) -> bool {
    cooldown > 0 && last_fired.is_some_and(|last| at.abs_diff(last) < cooldown.unsigned_abs())
}

/// Counts `event`, a match of the rule at `index` of `rules`, in `state` (the scope
/// `scope_key`'s); gives the alert to `fired` when it fires.
fn count(
    rules: &RuleSet,
    index: u16,
    lateness: i64,
    event: &Event<'_>,
    state: &mut RuleState,
    scope_key: &str,
    fired: &mut impl FnMut(&AlertView<'_>),
) {
    let rule = &rules.rules()[usize::from(index)];
    let at = event.incident_time;
    if rule.count > 1 && state.watermark.is_some_and(|w| at < w.saturating_sub(lateness)) {
        return;
    }
    let group = group_of(rule, event);
    let cooldown = millis(rule.cooldown);
    if rule.count == 1 && cooldown == 0 {
        // Nothing to remember.
        return alert(rule, event, scope_key, group, &[EvidenceRef::of(event)], fired);
    }
    // By pointer: windows share the rule set's id once pruned with it (see `rule_of`), by
    // text until then (after a restore or a reload).
    let shared = state.prune_due.generation == rules.generation;
    let window = match (state.windows.iter().position(|w| Arc::ptr_eq(&w.rule, &rule.id) && same_group(w.group, group)))
        .or_else(|| {
            (!shared).then(|| state.windows.iter().position(|w| w.rule == rule.id && same_group(w.group, group)))?
        }) {
        Some(window) => window,
        None => {
            state.windows.push(Window::empty(rule, index, group));
            state.windows.len() - 1
        }
    };
    let window = &mut state.windows[window];
    let evidence = count_in(rule, window, event, cooldown);
    state.prune_due.at = state.prune_due.at.min(forget_at(window, rule, cooldown));
    match evidence {
        None => {}
        Some(Counted::Event) => alert(rule, event, scope_key, group, &[EvidenceRef::of(event)], fired),
        Some(Counted::Held(held)) => {
            let evidence: SmallVec<[EvidenceRef<'_>; 4]> = held.iter().map(Evidence::borrowed).collect();
            alert(rule, event, scope_key, group, &evidence, fired);
        }
    }
}

/// What an alert that fires is about: the event alone, or the matches a window held.
enum Counted {
    Event,
    Held(Vec<Evidence>),
}

/// Counts `event`, a match of `rule`, in `window` (the rule's window in the scope, not
/// pruned since); the evidence of the alert when it fires.
fn count_in(rule: &Rule, window: &mut Window, event: &Event<'_>, cooldown: i64) -> Option<Counted> {
    let at = event.incident_time;
    let fired = if rule.count == 1 {
        if cooling(window.last_fired, at, cooldown) {
            return None;
        }
        Counted::Event
    } else {
        let mut at_index = window.matches.partition_point(|e| e.incident_time <= at);
        window.matches.insert(at_index, Evidence::of(event));
        while window.matches.len() > 2 * rule.count as usize {
            window.matches.pop_front();
            // The event itself is the oldest held: it does not count.
            at_index = at_index.checked_sub(1)?;
        }
        if cooling(window.last_fired, at, cooldown) {
            return None;
        }
        let span = rule.count as usize;
        let width = millis(rule.window);
        let time = |i: usize| window.matches[i].incident_time;
        let first = (at_index + 1).saturating_sub(span);
        let start = (first..=at_index)
            .take_while(|start| start + span <= window.matches.len())
            .find(|start| time(start + span - 1) - time(*start) < width)?;
        Counted::Held(window.matches.drain(start..start + span).collect())
    };
    window.last_fired = Some(window.last_fired.map_or(at, |last| last.max(at)));
    Some(fired)
}

/// The least `watermark - allowed lateness` at which [`prune`] changes `window` (of `rule`):
/// when its oldest match leaves it, or, with none, when its cooldown ends (at once without
/// one).
fn forget_at(window: &Window, rule: &Rule, cooldown: i64) -> i64 {
    match (window.matches.front(), window.last_fired) {
        (Some(oldest), _) => oldest.incident_time.saturating_add(millis(rule.window)),
        (None, Some(last)) if cooldown > 0 => last.saturating_add(cooldown),
        (None, _) => i64::MIN,
    }
}

/// Gives `fired` the alert of `rule` on `evidence`, fired by `event` in the scope
/// `scope_key` (and `group`).
fn alert(
    rule: &Rule,
    event: &Event<'_>,
    scope_key: &str,
    group: &str,
    evidence: &[EvidenceRef<'_>],
    fired: &mut impl FnMut(&AlertView<'_>),
) {
    let session = rule.scope == Scope::Session;
    let (window_start, window_end) = match (evidence.first(), evidence.last()) {
        (Some(first), Some(last)) => (first.incident_time, last.incident_time),
        _ => (event.incident_time, event.incident_time),
    };
    let mut id = [0; ALERT_ID_LEN];
    let alert_id = evidence.first().map_or("", |first| alert_id_in(&mut id, &rule.id, scope_key, group, first));
    let count = u32::try_from(evidence.len()).unwrap_or(u32::MAX);
    let rendered;
    // Most titles have no placeholder: their text as compiled.
    let title = match rule.title_parts.as_slice() {
        [Part::Text(text)] => &**text,
        parts => {
            rendered = render(parts, event, count);
            &rendered
        }
    };
    // Taken out while `fired` runs: an evaluation there (none is expected) renders into a
    // buffer of its own instead of finding this one borrowed.
    let mut summary = SUMMARY.take();
    summary.clear();
    render_into(&mut summary, &rule.summary_parts, event, count);
    fired(&AlertView {
        alert_id,
        rule_id: &rule.id,
        severity: rule.severity,
        tenant_id: &event.tenant_id,
        delivery_execution_id: session.then_some(&*event.delivery_execution_id),
        test_taker: event.test_taker.as_deref().filter(|_| session),
        title,
        summary: &summary,
        count,
        window_start,
        window_end,
        fired_at: event.incident_time,
        evidence,
        mode: rule.mode,
    });
    SUMMARY.set(summary);
}

/// Gives `fired` the alert of `rule` (a rule on silence) for the session `session` of the
/// tenant `tenant`, silent since its last event at `last_seen` and judged silent at
/// `deadline` (`last_seen` plus the silence, epoch milliseconds). No evidence (nothing
/// happened: `count` 0; the window runs from the last event to the deadline). Its id derives
/// from the rule, the session and the deadline, so that a replay or a restart gives the same
/// alert, byte for byte.
pub fn silence_into(
    rule: &Rule,
    tenant: &str,
    session: &str,
    last_seen: i64,
    deadline: i64,
    mut fired: impl FnMut(&AlertView<'_>),
) {
    let mut id = [0; ALERT_ID_LEN];
    let marker = EvidenceRef {
        message_id: "",
        action: None,
        reason_code: None,
        incident_time: deadline,
        topic: "",
        partition: 0,
        offset: -1,
    };
    let alert_id = alert_id_in(&mut id, &rule.id, session, "", &marker);
    let title = render_without_event(&rule.title_parts, tenant, session);
    let summary = render_without_event(&rule.summary_parts, tenant, session);
    fired(&AlertView {
        alert_id,
        rule_id: &rule.id,
        severity: rule.severity,
        tenant_id: tenant,
        delivery_execution_id: Some(session),
        test_taker: None,
        title: &title,
        summary: &summary,
        count: 0,
        window_start: last_seen,
        window_end: deadline,
        fired_at: deadline,
        evidence: &[],
        mode: rule.mode,
    });
}

/// A compiled title or summary filled for an alert without an event: the session and its
/// tenant; `{count}` 0, `{testTaker}` unknown, `{signal}` and `{reasonCode}` none.
fn render_without_event(parts: &[Part], tenant: &str, session: &str) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Count => out.push('0'),
            Part::TenantId => out.push_str(tenant),
            Part::DeliveryExecutionId => out.push_str(session),
            Part::TestTaker => out.push_str("unknown"),
            Part::Signal | Part::ReasonCode => out.push_str("none"),
        }
    }
    out
}

thread_local! {
    /// The summary of the alert being fired, rendered here: one buffer for every alert of
    /// the thread (`fired` copies what it keeps of it).
    static SUMMARY: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// Fills a compiled title or summary's placeholders.
fn render(parts: &[Part], event: &Event<'_>, count: u32) -> String {
    let mut out = String::new();
    render_into(&mut out, parts, event, count);
    out
}

/// [`render`], into `out`.
fn render_into(out: &mut String, parts: &[Part], event: &Event<'_>, count: u32) {
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Count => out.push_str(itoa::Buffer::new().format(count)),
            Part::TenantId => out.push_str(&event.tenant_id),
            Part::DeliveryExecutionId => out.push_str(&event.delivery_execution_id),
            Part::TestTaker => out.push_str(event.test_taker.as_deref().unwrap_or("unknown")),
            Part::Signal => out.push_str(event.signal.as_ref().map_or("none", |s| s.kind.as_str())),
            Part::ReasonCode => match &event.reason_code {
                ReasonCode::None => out.push_str("none"),
                ReasonCode::Numeric(code) => out.push_str(itoa::Buffer::new().format(*code)),
                ReasonCode::Raw(raw) => out.push_str(raw),
            },
        }
    }
}

/// The rule of `rules` that `window` counts for: where the window last saw it, when it is
/// still there (the same id, shared); else looked up by text, the window then sharing the
/// rule set's id and knowing where it is, for the next lookup.
fn rule_of<'r>(rules: &'r RuleSet, window: &mut Window) -> Option<&'r Rule> {
    let cached = rules.rules().get(usize::from(window.rule_at.0));
    if let Some(rule) = cached.filter(|rule| Arc::ptr_eq(&rule.id, &window.rule)) {
        return Some(rule);
    }
    let (at, rule) = rules.rules().iter().enumerate().find(|(_, rule)| rule.id == window.rule)?;
    window.rule = rule.id.clone();
    // At most `MAX_RULES` (checked by the compilation).
    window.rule_at = RuleAt(at as u16);
    Some(rule)
}

/// Forgets matches that can no longer be part of an alert (older than the watermark minus
/// the allowed lateness and the window) and windows with nothing left to remember.
fn prune(state: &mut RuleState, rules: &RuleSet, lateness: i64) {
    let Some(watermark) = state.watermark else {
        return;
    };
    let oldest_counted = watermark.saturating_sub(lateness);
    let mut next = i64::MAX;
    state.windows.retain_mut(|window| {
        let Some(rule) = rule_of(rules, window) else {
            return false;
        };
        let horizon = oldest_counted.saturating_sub(millis(rule.window));
        while window.matches.front().is_some_and(|e| e.incident_time <= horizon) {
            window.matches.pop_front();
        }
        let cooldown = millis(rule.cooldown);
        let cooling =
            cooldown > 0 && window.last_fired.is_some_and(|last| last.saturating_add(cooldown) > oldest_counted);
        let kept = !window.matches.is_empty() || cooling;
        if kept {
            next = next.min(forget_at(window, rule, cooldown));
        }
        kept
    });
    state.prune_due = PruneDue { generation: rules.generation, at: next };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::model::{Action, ActionStatus, Actor, Category, ReasonCatalog, Source, Status};
    use crate::pipeline::Pipeline;
    use crate::session::{SessionLimits, Sessions};
    use crate::synth::{Generator, SynthOptions};

    /// The prefilter of a match (its bit sets) says what the full test of its list
    /// conditions says, for every value of each vocabulary and the default rules, over
    /// synthetic traffic (session anomalies included).
    #[test]
    fn the_prefilter_agrees_with_the_list_conditions() {
        use super::super::config::Quick;
        let mut alternatives: Vec<Match> = RuleSet::defaults().rules().iter().flat_map(|r| r.matches.clone()).collect();
        let statuses = [ActionStatus::Succeeded, ActionStatus::Failed, ActionStatus::Other]
            .into_iter()
            .chain(Status::ALL.iter().chain([&Status::Other]).map(|s| ActionStatus::Session(*s)));
        alternatives.extend(
            Action::ALL.iter().chain([&Action::Other]).map(|a| Match { actions: vec![*a], ..Match::default() }),
        );
        alternatives
            .extend(Actor::ALL.iter().chain([&Actor::Other]).map(|a| Match { actors: vec![*a], ..Match::default() }));
        alternatives.extend(statuses.map(|s| Match { action_status: vec![s], ..Match::default() }));
        alternatives.extend(Category::ALL.map(|c| Match { reason_categories: vec![c], ..Match::default() }));
        alternatives.extend(SignalKind::ALL.map(|k| Match { signals: vec![k], ..Match::default() }));
        alternatives.extend(Anomaly::ALL.map(|a| Match { anomalies: vec![a], ..Match::default() }));
        alternatives.push(Match {
            actions: vec![Action::Pause, Action::Log],
            actors: vec![Actor::TestTaker, Actor::SecurityPlugin],
            signals: vec![SignalKind::PauseOnBlur, SignalKind::FullScreen],
            ..Match::default()
        });
        for m in &mut alternatives {
            // Only the list conditions: the others are not part of the prefilter.
            (m.reason_codes, m.commands) = (Vec::new(), Vec::new());
            (m.extra_time_above, m.distinct_ips_above, m.distinct_user_agents_above) = (None, None, None);
            m.quick = Quick::of(m);
        }
        let facts =
            Facts { new_ip: true, ips: 0, new_user_agent: true, user_agents: 0, extra_before: 0.0, extra_after: 0.0 };
        // News: all of it, and each kind alone.
        let unchanged =
            Facts { new_ip: false, ips: 2, new_user_agent: false, user_agents: 2, extra_before: 0.0, extra_after: 0.0 };
        let with_news = [
            Facts { new_ip: true, new_user_agent: true, extra_after: 90.0, ..unchanged },
            Facts { new_ip: true, ..unchanged },
            Facts { new_user_agent: true, ..unchanged },
            Facts { extra_before: 50.0, extra_after: 61.0, ..unchanged },
        ];
        // No news: every count, every extra time (unchanged).
        let without_news = [(1, 0.0), (2, 60.0), (3, 61.0), (9, 200.0)].map(|(count, extra)| Facts {
            new_ip: false,
            ips: count,
            new_user_agent: false,
            user_agents: count,
            extra_before: extra,
            extra_after: extra,
        });
        let (mut listings, mut by_action) = (0, 0);
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let mut sessions = Sessions::new(SessionLimits::default());
        let options = SynthOptions::stress();
        let now = options.start_ms + 86_400_000;
        let (mut admitted, mut refused) = (0, 0);
        for (offset, record) in Generator::new(options).take_records(5_000).iter().enumerate() {
            let source = Source { topic: Arc::from("raw"), partition: 0, offset: offset as i64 };
            let Ok(mut event) = pipeline.enrich(&record.value, &source, now) else { continue };
            sessions.apply(&mut event, offset as i64, now);
            let bits = EventBits::of(&event);
            let rules = RuleSet::defaults();
            for (index, rule) in rules.rules().iter().enumerate() {
                for (alternative, m) in rule.matches.iter().enumerate() {
                    let listed = |news| {
                        rules.candidates(&bits, News(news)).iter().any(|c| {
                            (usize::from(c.rule), usize::from(c.alternative), c.quick, c.rest)
                                == (index, alternative, m.quick, Rest::of(m))
                        })
                    };
                    // Every alternative that holds is listed, with news or without.
                    for facts in with_news.iter().chain(&without_news) {
                        let News(news) = facts.news();
                        if m.quick.admits(&bits) && matches_rest(m, &event, facts) {
                            assert!(listed(news), "{} on {event:?} with {facts:?}", rule.id);
                        }
                    }
                    // And the lists leave out what cannot hold: a condition on news, anomalies or
                    // signals the event does not have, or another action.
                    let signal = |kind| event.signal.as_ref().is_some_and(|s| signal_is(kind, s));
                    let cannot = (!m.actions.is_empty() && !event.action.is_some_and(|a| m.actions.contains(&a)))
                        || (!m.signals.is_empty() && !m.signals.iter().any(|k| signal(*k)))
                        || (!m.anomalies.is_empty() && event.anomalies.is_empty());
                    assert_eq!(listed(true), !cannot, "{} on {event:?}", rule.id);
                    assert_eq!(listed(false), !cannot && !m.needs_news(), "{} on {event:?}", rule.id);
                    listings += usize::from(listed(false));
                    by_action +=
                        usize::from(m.actions.is_empty() || event.action.is_some_and(|a| m.actions.contains(&a)));
                }
            }
            for m in rules.rules().iter().flat_map(|r| &r.matches) {
                assert_eq!(m.quick.admits(&bits) && matches_rest(m, &event, &facts), matches(m, &event, &facts));
                assert!(Rest::of(m).any() || matches_rest(m, &event, &facts), "{m:?}");
            }
            for m in &alternatives {
                let full = matches(m, &event, &facts);
                assert_eq!(m.quick.admits(&bits), full, "{m:?} on {event:?}");
                if full { admitted += 1 } else { refused += 1 }
            }
        }
        assert!(admitted > 10_000 && refused > 10_000, "{admitted} {refused}");
        // The default rules over this traffic: 3.3 alternatives listed an event without news, of
        // the 13.7 its action alone admits (of 17).
        assert!(listings * 3 < by_action, "{listings} listed, {by_action} admitted by the action alone");
    }

    /// A candidate's remaining conditions, as it carries them ([`Rest::of`]: the distinct
    /// bounds inline when they fit a byte, the rest read from the match), decide what the
    /// full test of those conditions decides, for any bounds (0 and above 255 included), any
    /// session facts and synthetic events (reason codes, commands).
    #[test]
    fn a_candidates_remaining_conditions_are_the_matchs() {
        use proptest::prelude::*;
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let options = SynthOptions::stress();
        let now = options.start_ms + 86_400_000;
        let events: Vec<Event<'static>> = Generator::new(options)
            .take_records(2_000)
            .iter()
            .enumerate()
            .filter_map(|(offset, record)| {
                let source = Source { topic: Arc::from("raw"), partition: 0, offset: offset as i64 };
                pipeline.enrich(&record.value, &source, now).ok().map(Event::into_owned)
            })
            .filter(|event| {
                event.reason_code.numeric().is_some() || event.signal.as_ref().is_some_and(|s| s.command.is_some())
            })
            .collect();
        assert!(events.iter().any(|e| e.signal.as_ref().is_some_and(|s| s.command.is_some())), "commands");
        // Weighted so that each condition holds about as often as not, and all of them together
        // often enough to test both outcomes.
        let bound = prop_oneof![3 => Just(None), 4 => (0usize..8).prop_map(Some), 1 => (250usize..300).prop_map(Some)];
        let commands = proptest::collection::vec(proptest::sample::select(vec!["copy", "cut", "paste", "print"]), 0..2);
        // Code ranges placed around the event's own code (start 0-3 below it, width 0-3),
        // so that about 60% contain it; the event is drawn with them.
        let codes = proptest::collection::vec((0i64..4, 0i64..4), 0..2);
        let extra = proptest::option::of(0.0f64..120.0);
        let yes = proptest::bool::weighted(0.8);
        let facts = (yes, 0usize..20, yes, 0usize..20, 0.0f64..70.0, 50.0f64..130.0).prop_map(
            |(new_ip, ips, new_user_agent, user_agents, extra_before, extra_after)| Facts {
                new_ip,
                ips,
                new_user_agent,
                user_agents,
                extra_before,
                extra_after,
            },
        );
        let cases = (codes, commands, extra, bound.clone(), bound, facts, 0..events.len());
        // A fixed seed: the coverage asserted below must not depend on the run.
        let config = proptest::test_runner::Config::with_cases(2_000);
        let rng = proptest::test_runner::TestRng::deterministic_rng(config.rng_algorithm);
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(config, rng);
        let (held, failed) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        runner
            .run(&cases, |(codes, commands, extra, ips, agents, facts, index)| {
                let event = &events[index];
                let code = event.reason_code.numeric().unwrap_or(30_000);
                let m = Match {
                    reason_codes: codes
                        .into_iter()
                        .map(|(below, width)| (code - below, code - below + width))
                        .collect(),
                    commands: commands.into_iter().map(String::from).collect(),
                    extra_time_above: extra,
                    distinct_ips_above: ips,
                    distinct_user_agents_above: agents,
                    ..Match::default()
                };
                let full = matches(&m, event, &facts);
                prop_assert_eq!(rest_holds(&Rest::of(&m), &m, event, &facts), full, "{:?} {:?}", m, event);
                let outcome = if full { &held } else { &failed };
                outcome.set(outcome.get() + 1);
                Ok(())
            })
            .unwrap();
        let (held, failed) = (held.get(), failed.get());
        assert!(held > 200 && failed > 200, "{held} {failed}");
    }
}

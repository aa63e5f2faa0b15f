//! Rules files: `[[rule]]` tables, read with serde (unknown keys refused, durations in
//! humantime), then compiled into [`RuleSet`] by [`RuleSet::from_toml`], whose errors name
//! the rule id and the key (`rule "tab-switch-repeated": threshold.window: must be longer
//! than 0`).
//!
//! A rule matches an event when any of its `[[rule.match]]` alternatives does; an
//! alternative matches when every condition it sets does (a list condition: any of its
//! values). See `config/rules.toml` for the keys, documented.

use std::num::NonZeroU8;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Action, ActionStatus, Actor, Anomaly, Category, SignalKind};

/// The built-in default rules.
pub const DEFAULT_RULES_TOML: &str = include_str!("../../config/rules.toml");

/// Most events a threshold may count (the window keeps about this many per rule and scope).
pub const MAX_COUNT: u32 = 1000;
/// Most rules in a file.
pub const MAX_RULES: usize = 1000;
/// Most alternatives (`[[rule.match]]`) in a rule.
pub const MAX_ALTERNATIVES: usize = 100;

/// Distinct IPs / user agents remembered per session: a `distinct_*_above` must be below it.
pub const MAX_DISTINCT: usize = 16;

/// Placeholders a title or summary may use.
pub const PLACEHOLDERS: &[&str] =
    &["rule", "severity", "count", "window", "tenantId", "deliveryExecutionId", "testTaker", "signal", "reasonCode"];

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// A name for this set, shown before its content hash in `processor.rulesVersion` (e.g.
    /// `"eu-strict"`); optional.
    #[serde(default)]
    pub name: Option<String>,
    /// How far behind a scope's latest event time an event may be and still count in a
    /// threshold window.
    #[serde(with = "humantime_serde", default = "default_lateness")]
    pub allowed_lateness: Duration,
    /// How fast a session's incident forgets an alert: its weight counts half after this long
    /// (event time). See [`crate::incidents`].
    #[serde(with = "humantime_serde", default = "default_half_life")]
    pub score_half_life: Duration,
    #[serde(default)]
    pub rule: Vec<RuleConfig>,
}

fn default_half_life() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_lateness() -> Duration {
    Duration::from_secs(300)
}

/// One `[[rule]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub id: String,
    pub severity: Severity,
    #[serde(default)]
    pub scope: Scope,
    /// `live` (the default) publishes its alerts; `shadow` evaluates and counts them but
    /// publishes them only to `output.shadow_alerts_topic`, to try a rule before it pages.
    #[serde(default)]
    pub mode: RuleMode,
    pub title: String,
    pub summary: String,
    /// After an alert, no other alert of the rule (and scope, and group) for this long
    /// (event time).
    #[serde(with = "humantime_serde", default)]
    pub cooldown: Duration,
    /// Counts and cools down separately per value of this (e.g. per signal).
    #[serde(default)]
    pub group_by: GroupBy,
    /// What makes it fire: `events` (the default) or `silence`.
    #[serde(default)]
    pub on: Trigger,
    /// Score points an alert of the rule adds to its session's incident (0 to 100); by
    /// default from the severity (see [`Severity::default_weight`]).
    #[serde(default)]
    pub weight: Option<u8>,
    /// Rules saying the same thing share a family: an event firing several of them publishes
    /// the most severe one's alert, the others are folded into the incident.
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub threshold: Option<ThresholdConfig>,
    #[serde(rename = "match", default)]
    pub matches: Vec<MatchConfig>,
}

/// `[rule.threshold]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    pub count: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// One `[[rule.match]]` alternative as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub actors: Vec<String>,
    #[serde(default)]
    pub action_status: Vec<String>,
    #[serde(default)]
    pub reason_codes: Vec<CodeSpec>,
    #[serde(default)]
    pub reason_categories: Vec<String>,
    #[serde(default)]
    pub signals: Vec<String>,
    /// disable-commands signals: the forbidden command (`copy`, `cut`, `paste`).
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub anomalies: Vec<String>,
    /// The session's extra time, in minutes, went above this with the event.
    pub extra_time_above: Option<f64>,
    /// The event brought the session's distinct IPs (test-taker side) above this.
    pub distinct_ips_above: Option<usize>,
    /// The event brought the session's distinct user agents (test-taker side) above this.
    pub distinct_user_agents_above: Option<usize>,
}

/// A reason code (`20030`) or an inclusive range (`"40000-49999"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CodeSpec {
    Code(i64),
    Range(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Score points an alert of this severity adds to its incident when its rule sets no
    /// `weight`: info 0, low 5, medium 15, high 35, critical 60.
    pub fn default_weight(self) -> u8 {
        match self {
            Severity::Info => 0,
            Severity::Low => 5,
            Severity::Medium => 15,
            Severity::High => 35,
            Severity::Critical => 60,
        }
    }
}

/// What a rule counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One delivery execution.
    #[default]
    Session,
    /// Every session of a tenant.
    Tenant,
}

/// Whether a rule's alerts are published (`live`) or only tried out (`shadow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    /// Published to `output.alerts_topic`.
    #[default]
    Live,
    /// Evaluated and counted, published only to `output.shadow_alerts_topic`.
    Shadow,
}

impl RuleMode {
    pub fn is_live(&self) -> bool {
        *self == RuleMode::Live
    }

    /// The `mode` label of `acs_stream_alerts_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleMode::Live => "live",
            RuleMode::Shadow => "shadow",
        }
    }
}

/// What makes a rule fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// Events matching its `[[rule.match]]` alternatives.
    #[default]
    Events,
    /// Its session going silent (`sessions.silence_after` of event time without an event
    /// while interacting): no `[[rule.match]]`, no threshold, session scope.
    Silence,
}

/// What a rule's counting and cooldown are split by, within its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    #[default]
    None,
    /// The event's signal kind (`none` without a signal).
    Signal,
}

/// A rules file that cannot be used. The message names the rule and the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("rule \"{rule}\": {key}: {message}")]
    Invalid { rule: String, key: String, message: String },
    #[error("{key}: {message}")]
    File { key: &'static str, message: String },
}

/// A signal condition: a kind, where `pause-on-blur` and `full-screen` also stand for a
/// `[Security Plugin]` pause about leaving the tab/app or full screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalMatch(pub SignalKind);

/// One compiled alternative: every set condition must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Match {
    pub actions: Vec<Action>,
    pub actors: Vec<Actor>,
    pub action_status: Vec<ActionStatus>,
    /// Inclusive ranges; a single code is `(code, code)`.
    pub reason_codes: Vec<(i64, i64)>,
    pub reason_categories: Vec<Category>,
    pub signals: Vec<SignalKind>,
    pub commands: Vec<String>,
    pub anomalies: Vec<Anomaly>,
    pub extra_time_above: Option<f64>,
    pub distinct_ips_above: Option<usize>,
    pub distinct_user_agents_above: Option<usize>,
    /// The list conditions above on actions, actors, statuses, categories, signals and
    /// anomalies as bit sets, set by the compilation (the default lets every event through).
    pub(crate) quick: Quick,
}

impl Match {
    /// Whether it holds only for an event that brings its session news (see [`News`]): it has
    /// a condition on distinct IPs, user agents or extra time (`engine::rest_holds`).
    pub(crate) fn needs_news(&self) -> bool {
        self.distinct_ips_above.is_some()
            || self.distinct_user_agents_above.is_some()
            || self.extra_time_above.is_some()
    }
}

/// Bit sets over the vocabularies of a match's list conditions: an event passes when, for
/// each, its own bit set (see [`EventBits`]) shares a bit with the match's. A condition not
/// set is every bit, [`NONE_BIT`] included (the bit of an absent value, or of an event
/// without anomalies); a condition set holds no [`NONE_BIT`]. The same test as the lists,
/// without walking them: the engine's prefilter, before the full test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quick {
    actions: u32,
    actors: u32,
    action_status: u32,
    reason_categories: u32,
    signals: u32,
    anomalies: u32,
}

/// An absent value's bit (no action, no actor, no signal...; for anomalies: always set).
pub(crate) const NONE_BIT: u32 = 1 << 31;

// Every vocabulary fits below NONE_BIT.
const _: () = assert!(
    Action::ALL.len() < 31
        && Actor::ALL.len() < 31
        && crate::model::Status::ALL.len() + 3 < 31
        && Category::ALL.len() < 31
        && SignalKind::ALL.len() < 31
        && Anomaly::ALL.len() < 31
);

impl Default for Quick {
    fn default() -> Self {
        Quick {
            actions: u32::MAX,
            actors: u32::MAX,
            action_status: u32::MAX,
            reason_categories: u32::MAX,
            signals: u32::MAX,
            anomalies: u32::MAX,
        }
    }
}

fn action_status_bit(status: ActionStatus) -> u32 {
    1 << match status {
        ActionStatus::Succeeded => 0,
        ActionStatus::Failed => 1,
        ActionStatus::Other => 2,
        ActionStatus::Session(status) => 3 + status as u32,
    }
}

fn signal_bit(kind: SignalKind) -> u32 {
    1 << kind as u32
}

/// The conditions of a match its prefilter ([`Quick`]) does not test, as a candidate carries
/// them, in the bytes its layout leaves free (a candidate stays 32 bytes: every event reads
/// its list of them): the distinct IP and user-agent bounds themselves, and whether others
/// remain in the match (reason codes, commands, extra time), read from it only then (see
/// `engine::rest_holds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rest {
    pub in_match: bool,
    pub distinct_ips_above: Option<NonZeroU8>,
    pub distinct_user_agents_above: Option<NonZeroU8>,
}

impl Rest {
    pub(crate) fn of(m: &Match) -> Rest {
        // Validated between 1 and `MAX_DISTINCT - 1`; read from the match if not.
        let small = |above: Option<usize>| above.map(|n| u8::try_from(n).ok().and_then(NonZeroU8::new).ok_or(()));
        let (ips, user_agents) = (small(m.distinct_ips_above), small(m.distinct_user_agents_above));
        let in_match = !m.reason_codes.is_empty()
            || !m.commands.is_empty()
            || m.extra_time_above.is_some()
            || matches!(ips, Some(Err(())))
            || matches!(user_agents, Some(Err(())));
        Rest {
            in_match,
            distinct_ips_above: ips.and_then(Result::ok),
            distinct_user_agents_above: user_agents.and_then(Result::ok),
        }
    }

    /// Whether something remains to test.
    pub(crate) fn any(&self) -> bool {
        self.in_match || self.distinct_ips_above.is_some() || self.distinct_user_agents_above.is_some()
    }
}

impl Quick {
    pub(crate) fn of(m: &Match) -> Quick {
        fn set<T: Copy>(values: &[T], bit: impl Fn(T) -> u32) -> u32 {
            if values.is_empty() { u32::MAX } else { values.iter().fold(0, |bits, v| bits | bit(*v)) }
        }
        Quick {
            actions: set(&m.actions, |a| 1 << a as u32),
            actors: set(&m.actors, |a| 1 << a as u32),
            action_status: set(&m.action_status, action_status_bit),
            reason_categories: set(&m.reason_categories, |c| 1 << c.index()),
            signals: set(&m.signals, signal_bit),
            anomalies: set(&m.anomalies, |a| 1 << a as u32),
        }
    }

    /// Whether `event` may match: false only when one of the list conditions fails.
    pub(crate) fn admits(&self, event: &EventBits) -> bool {
        // The most selective first: most rules are about a signal or an anomaly, and most
        // events have neither.
        self.signals & event.signals != 0
            && self.anomalies & event.anomalies != 0
            && self.actions & event.action != 0
            && self.actors & event.actor != 0
            && self.action_status & event.action_status != 0
            && self.reason_categories & event.reason_category != 0
    }
}

/// An event's values as bit sets, for [`Quick::admits`]: one bit for the action, the
/// actor, the action status and the reason category ([`NONE_BIT`] when absent); the
/// signal kinds its signal is or stands for (see `engine::signal_is`); its anomalies, and
/// [`NONE_BIT`]. With them, the [`SignalKey`] of its signal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventBits {
    action: u32,
    actor: u32,
    action_status: u32,
    reason_category: u32,
    signals: u32,
    anomalies: u32,
    signal: SignalKey,
}

impl EventBits {
    pub(crate) fn of(event: &crate::model::Event<'_>) -> EventBits {
        fn one<T>(value: Option<T>, bit: impl Fn(T) -> u32) -> u32 {
            value.map_or(NONE_BIT, bit)
        }
        let signal = SignalKey::of(event.signal.as_ref());
        EventBits {
            action: one(event.action, |a| 1 << a as u32),
            actor: one(event.actor, |a| 1 << a as u32),
            action_status: one(event.action_status, action_status_bit),
            reason_category: one(event.reason.as_ref(), |r| 1 << r.category.index()),
            signals: signal.bits(),
            anomalies: event.anomalies.iter().fold(NONE_BIT, |bits, a| bits | 1 << *a as u32),
            signal,
        }
    }
}

/// What an event's signal is to the prefilter: none, a kind, or a `[Security Plugin]` pause
/// about leaving the tab/app or full screen (which also stands for a pause-on-blur or a
/// full-screen exit). Every event's signal is one of [`SignalKey::COUNT`] keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SignalKey(u8);

impl SignalKey {
    const NONE: u8 = 0;
    const TAB_SWITCH: u8 = 1 + SignalKind::ALL.len() as u8;
    const FULL_SCREEN_EXIT: u8 = Self::TAB_SWITCH + 1;
    pub(crate) const COUNT: usize = Self::FULL_SCREEN_EXIT as usize + 1;

    fn of(signal: Option<&crate::model::Signal>) -> SignalKey {
        use crate::model::PauseAbout;
        SignalKey(match signal.map(|s| (s.kind, s.about)) {
            None => Self::NONE,
            Some((SignalKind::SecurityPlugin, Some(PauseAbout::TabSwitch))) => Self::TAB_SWITCH,
            Some((SignalKind::SecurityPlugin, Some(PauseAbout::FullScreen))) => Self::FULL_SCREEN_EXIT,
            // Its index in `SignalKind::ALL` (its discriminant: asserted there), plus one.
            Some((kind, _)) => 1 + kind as u8,
        })
    }

    /// The signal kinds it is or stands for, as [`Quick::admits`] tests them.
    fn bits(self) -> u32 {
        match self.0 {
            Self::NONE => NONE_BIT,
            Self::TAB_SWITCH => signal_bit(SignalKind::SecurityPlugin) | signal_bit(SignalKind::PauseOnBlur),
            Self::FULL_SCREEN_EXIT => signal_bit(SignalKind::SecurityPlugin) | signal_bit(SignalKind::FullScreen),
            kind => 1 << (kind - 1),
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: Arc<str>,
    pub severity: Severity,
    pub scope: Scope,
    pub mode: RuleMode,
    pub title: String,
    pub summary: String,
    /// The title and summary, compiled (set by the compilation).
    pub(crate) title_parts: Vec<Part>,
    pub(crate) summary_parts: Vec<Part>,
    pub cooldown: Duration,
    pub group_by: GroupBy,
    /// Score points an alert adds to its session's incident (0 to 100).
    pub weight: u8,
    /// Its family (see [`RuleConfig::family`]); `None`: a family of its own.
    pub family: Option<Arc<str>>,
    /// What makes it fire.
    pub on: Trigger,
    /// At least 1; 1 fires on every match.
    pub count: u32,
    /// Zero when `count` is 1 without a window.
    pub window: Duration,
    pub matches: Vec<Match>,
}

/// The compiled rules of one file.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub allowed_lateness: Duration,
    /// See [`RulesFile::score_half_life`].
    pub score_half_life: Duration,
    rules: Vec<Rule>,
    /// The alternatives an event is tested against, in rule order, by [`list_index`]: those
    /// its action, its signal and whether it has anomalies admit, and among them, for an
    /// event that brings its session no news (see [`News`]), those that can hold without.
    /// Ranges of `listed`, where equal lists are stored once.
    lists: Box<[std::ops::Range<u32>]>,
    listed: Box<[Candidate]>,
    /// Whether a rule is tenant-scoped (asked at every event).
    tenant_scope: bool,
    /// The rules fired by a session's silence, by index.
    silence: Vec<u16>,
    /// Tells this compilation from every other one in the process (states remember which
    /// rules their pruning schedule was computed for: see `engine::prune`).
    pub(crate) generation: u64,
    /// `processor.rulesVersion` on outputs: `builtin@<hash>` for the built-in set, the
    /// file's `[name@]<hash>` (`model::provenance::content_version`), `off` for none.
    pub version: Arc<str>,
}

/// Two rule sets are equal when their rules are (whatever their compilation).
impl PartialEq for RuleSet {
    fn eq(&self, other: &RuleSet) -> bool {
        self.allowed_lateness == other.allowed_lateness
            && self.score_half_life == other.score_half_life
            && self.rules == other.rules
    }
}

/// An alternative of a rule, as the engine tests it: its prefilter, and the conditions that
/// remain to test after it (see `engine::rest_holds`). 32 bytes (asserted at compile time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// Its rule's index in [`RuleSet::rules`], and its own among the rule's matches.
    pub rule: u16,
    pub alternative: u16,
    pub quick: Quick,
    pub rest: Rest,
}

// Every event reads its list of candidates: two to a cache line.
const _: () = assert!(std::mem::size_of::<Candidate>() == 32);

/// Whether an event brings its session news: a new IP or user agent, or more extra time. A
/// condition on distinct IPs, user agents or extra time holds only then (see
/// [`Match::needs_news`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct News(pub bool);

/// Lists of candidates: one for each action bit (an action's index, or [`NONE_BIT`]'s), signal
/// key, with or without anomalies, with or without news.
const LISTS: usize = 32 * SignalKey::COUNT * 2 * 2;

fn list_index(action: usize, signal: u8, anomalous: bool, news: bool) -> usize {
    ((action * SignalKey::COUNT + usize::from(signal)) * 2 + usize::from(anomalous)) * 2 + usize::from(news)
}

/// What [`list_index`] took.
fn list_key(index: usize) -> (usize, u8, bool, bool) {
    let (rest, news) = (index / 2, index % 2 == 1);
    let (rest, anomalous) = (rest / 2, rest % 2 == 1);
    (rest / SignalKey::COUNT, (rest % SignalKey::COUNT) as u8, anomalous, news)
}

/// Generations of rule sets: 0 is none (a state not evaluated yet).
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl RuleSet {
    /// No rule (rules off); its version is `off`.
    pub fn empty() -> RuleSet {
        RuleSet::new(default_lateness(), Vec::new())
    }

    fn new(allowed_lateness: Duration, rules: Vec<Rule>) -> RuleSet {
        let alternatives: Vec<(Candidate, bool)> = rules
            .iter()
            .enumerate()
            .flat_map(|(rule, r)| r.matches.iter().enumerate().map(move |(alternative, m)| (rule, alternative, m)))
            .map(|(rule, alternative, m)| {
                // At most `MAX_RULES` and `MAX_ALTERNATIVES` (checked by the compilation).
                let candidate =
                    Candidate { rule: rule as u16, alternative: alternative as u16, quick: m.quick, rest: Rest::of(m) };
                (candidate, m.needs_news())
            })
            .collect();
        let mut lists = Vec::with_capacity(LISTS);
        let mut listed: Vec<Candidate> = Vec::new();
        let mut stored: std::collections::HashMap<Vec<usize>, std::ops::Range<u32>> = std::collections::HashMap::new();
        for index in 0..LISTS {
            let (action, signal, anomalous, news) = list_key(index);
            let action_bit = 1u32 << action;
            let signals = SignalKey(signal).bits();
            let list: Vec<usize> = (alternatives.iter().enumerate())
                .filter(|(_, (c, needs_news))| {
                    c.quick.actions & action_bit != 0
                        && c.quick.signals & signals != 0
                        && (anomalous || c.quick.anomalies & NONE_BIT != 0)
                        && (news || !needs_news)
                })
                .map(|(at, _)| at)
                .collect();
            let range = stored.entry(list).or_insert_with_key(|list| {
                let start = listed.len() as u32;
                listed.extend(list.iter().map(|at| alternatives[*at].0));
                start..listed.len() as u32
            });
            lists.push(range.clone());
        }
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tenant_scope = rules.iter().any(|rule| rule.scope == Scope::Tenant);
        // At most `MAX_RULES` (checked by the compilation).
        let silence = (0..rules.len()).filter(|at| rules[*at].on == Trigger::Silence).map(|at| at as u16).collect();
        let version = Arc::from("off");
        RuleSet {
            allowed_lateness,
            score_half_life: default_half_life(),
            rules,
            lists: lists.into(),
            listed: listed.into(),
            tenant_scope,
            silence,
            generation,
            version,
        }
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The alternatives `event` may match, in rule order: every one its prefilter may admit
    /// (see [`RuleSet::lists`]); `news`: whether the event brings its session news.
    pub(crate) fn candidates(&self, event: &EventBits, news: News) -> &[Candidate] {
        let index = list_index(
            event.action.trailing_zeros() as usize & 31,
            event.signal.0,
            event.anomalies != NONE_BIT,
            news.0,
        );
        let range = &self.lists[index];
        &self.listed[range.start as usize..range.end as usize]
    }

    /// Whether a rule is tenant-scoped.
    pub fn has_tenant_scope(&self) -> bool {
        self.tenant_scope
    }

    /// The rules a session's silence fires (`on = "silence"`), in file order.
    pub fn silence_rules(&self) -> impl Iterator<Item = &Rule> {
        self.silence.iter().map(|at| &self.rules[usize::from(*at)])
    }

    /// Whether a rule fires on silence.
    pub fn has_silence(&self) -> bool {
        !self.silence.is_empty()
    }

    /// The built-in default rules (`config/rules.toml`).
    pub fn defaults() -> RuleSet {
        let mut rules = RuleSet::from_toml("embedded rules", DEFAULT_RULES_TOML).expect("the embedded rules are valid");
        rules.version = crate::model::provenance::content_version(Some("builtin"), DEFAULT_RULES_TOML.as_bytes());
        rules
    }

    /// Reads and validates a rules file's text; `origin` names it in parse errors.
    pub fn from_toml(origin: &str, text: &str) -> Result<RuleSet, RulesError> {
        let file: RulesFile =
            toml::from_str(text).map_err(|e| RulesError::Parse { origin: origin.into(), message: e.to_string() })?;
        let version = crate::model::provenance::content_version(file.name.as_deref(), text.as_bytes());
        Ok(RuleSet { version, ..RuleSet::compile(file)? })
    }

    /// Validates a parsed file.
    pub fn compile(file: RulesFile) -> Result<RuleSet, RulesError> {
        if file.rule.is_empty() {
            return Err(RulesError::File { key: "rule", message: "at least one [[rule]] is needed".into() });
        }
        if file.allowed_lateness > Duration::from_secs(7 * 86_400) {
            return Err(RulesError::File { key: "allowed_lateness", message: "must be at most 7d".into() });
        }
        if file.rule.len() > MAX_RULES {
            let message = format!("{} rules; expected at most {MAX_RULES}", file.rule.len());
            return Err(RulesError::File { key: "rule", message });
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(file.rule.len());
        for config in file.rule {
            let rule = compile_rule(config)?;
            if rules.iter().any(|r| r.id == rule.id) {
                return Err(invalid(&rule.id, "id", "is used by another rule".into()));
            }
            rules.push(rule);
        }
        if file.score_half_life.is_zero() || file.score_half_life > Duration::from_secs(7 * 86_400) {
            return Err(RulesError::File {
                key: "score_half_life",
                message: "must be longer than 0 and at most 7d".into(),
            });
        }
        let mut set = RuleSet::new(file.allowed_lateness, rules);
        set.score_half_life = file.score_half_life;
        // Not from a file's text: named by the file's own name, or by the rules' ids.
        let ids: Vec<&str> = set.rules.iter().map(|rule| &*rule.id).collect();
        set.version = crate::model::provenance::content_version(file.name.as_deref(), ids.join(",").as_bytes());
        Ok(set)
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.id == id)
    }
}

fn invalid(rule: &str, key: impl Into<String>, message: String) -> RulesError {
    RulesError::Invalid { rule: rule.to_owned(), key: key.into(), message }
}

/// 1 to 64 of a-z, 0-9, `-`, `_` (a rule id, a family).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn compile_rule(config: RuleConfig) -> Result<Rule, RulesError> {
    let id = config.id.trim();
    if !valid_id(id) {
        return Err(invalid(&config.id, "id", "expected 1 to 64 of a-z, 0-9, `-`, `_`".into()));
    }
    let fail = |key: &str, message: String| invalid(id, key, message);
    if config.title.trim().is_empty() {
        return Err(fail("title", "must not be empty".into()));
    }
    let (count, window) = match &config.threshold {
        None => (1, Duration::ZERO),
        Some(threshold) => {
            if threshold.count == 0 || threshold.count > MAX_COUNT {
                return Err(fail("threshold.count", format!("is {}; expected 1 to {MAX_COUNT}", threshold.count)));
            }
            if threshold.window.is_zero() {
                return Err(fail("threshold.window", "must be longer than 0".into()));
            }
            (threshold.count, threshold.window)
        }
    };
    match config.on {
        Trigger::Events if config.matches.is_empty() || config.matches.len() > MAX_ALTERNATIVES => {
            return Err(fail("match", format!("expected 1 to {MAX_ALTERNATIVES} [[rule.match]]")));
        }
        Trigger::Silence if !config.matches.is_empty() => {
            return Err(fail("match", "a rule on silence has no [[rule.match]]".into()));
        }
        Trigger::Silence if config.threshold.is_some() || config.scope != Scope::Session => {
            return Err(fail(
                "on",
                "a rule on silence fires once per silence of a session: no threshold, scope \"session\"".into(),
            ));
        }
        Trigger::Silence if config.group_by != GroupBy::None => {
            return Err(fail("group_by", "a rule on silence has no groups".into()));
        }
        _ => {}
    }
    let matches = config
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            compile_match(m).map_err(|(key, message)| match key {
                "" => fail(&format!("match[{i}]"), message),
                key => fail(&format!("match[{i}].{key}"), message),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let session_conditions = matches.iter().any(|m| {
        m.extra_time_above.is_some() || m.distinct_ips_above.is_some() || m.distinct_user_agents_above.is_some()
    });
    if session_conditions && config.scope == Scope::Tenant {
        return Err(fail(
            "scope",
            "session conditions (extra time, distinct IPs or user agents) need scope \"session\"".into(),
        ));
    }
    let compile = |template: &str, key: &str| {
        compile_template(template, id, config.severity, window).map_err(|message| fail(key, message))
    };
    if let Some(weight) = config.weight
        && weight > 100
    {
        return Err(fail("weight", format!("is {weight}; expected 0 to 100")));
    }
    let family = match config.family.as_deref().map(str::trim) {
        None => None,
        Some(family) if valid_id(family) => Some(Arc::from(family)),
        Some(_) => return Err(fail("family", "expected 1 to 64 of a-z, 0-9, `-`, `_`".into())),
    };
    let title_parts = compile(&config.title, "title")?;
    let summary_parts = compile(&config.summary, "summary")?;
    Ok(Rule {
        id: Arc::from(id),
        severity: config.severity,
        scope: config.scope,
        mode: config.mode,
        title_parts,
        summary_parts,
        title: config.title,
        summary: config.summary,
        cooldown: config.cooldown,
        group_by: config.group_by,
        weight: config.weight.unwrap_or(config.severity.default_weight()),
        family,
        on: config.on,
        count,
        window,
        matches,
    })
}

/// A piece of a compiled title or summary: text, or a placeholder filled from the event
/// (those filled from the rule are text once compiled).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    Text(Box<str>),
    Count,
    TenantId,
    DeliveryExecutionId,
    TestTaker,
    Signal,
    ReasonCode,
}

/// Splits a title or summary at its placeholders (see [`PLACEHOLDERS`]), those of the rule
/// (`id`, `severity`, `window`) filled in; an error names what is wrong.
fn compile_template(template: &str, id: &str, severity: Severity, window: Duration) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("an unclosed `{`".into());
        };
        let part = match &after[..close] {
            "rule" => Part::Text(id.into()),
            "severity" => Part::Text(severity.as_str().into()),
            "window" => Part::Text(humantime_serde::re::humantime::format_duration(window).to_string().into()),
            "count" => Part::Count,
            "tenantId" => Part::TenantId,
            "deliveryExecutionId" => Part::DeliveryExecutionId,
            "testTaker" => Part::TestTaker,
            "signal" => Part::Signal,
            "reasonCode" => Part::ReasonCode,
            name => {
                return Err(format!("unknown placeholder `{{{name}}}`; expected one of {}", PLACEHOLDERS.join(", ")));
            }
        };
        match part {
            Part::Text(value) => text.push_str(&value),
            placeholder => {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text).into()));
                }
                parts.push(placeholder);
            }
        }
        rest = &after[close + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text.into()));
    }
    Ok(parts)
}

type KeyError = (&'static str, String);

fn parse_all<T>(
    key: &'static str,
    values: &[String],
    parse: impl Fn(&str) -> Option<T>,
    expected: impl Fn() -> String,
) -> Result<Vec<T>, KeyError> {
    values
        .iter()
        .map(|raw| parse(raw).ok_or_else(|| (key, format!("unknown value {raw:?}; expected one of {}", expected()))))
        .collect()
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> String {
    all.iter().map(|v| name(*v)).collect::<Vec<_>>().join(", ")
}

fn compile_match(config: &MatchConfig) -> Result<Match, KeyError> {
    let actions = parse_all(
        "actions",
        &config.actions,
        |raw| Some(Action::parse(raw).value).filter(|a| *a != Action::Other),
        || names(Action::ALL, Action::as_str),
    )?;
    let actors = parse_all(
        "actors",
        &config.actors,
        |raw| Some(Actor::parse(raw).value).filter(|a| *a != Actor::Other),
        || names(Actor::ALL, Actor::as_str),
    )?;
    let action_status = parse_all(
        "action_status",
        &config.action_status,
        |raw| Some(ActionStatus::parse(raw).value).filter(|s| *s != ActionStatus::Other),
        || "succeeded, failed, or a session status".into(),
    )?;
    let reason_categories = parse_all(
        "reason_categories",
        &config.reason_categories,
        |raw| Category::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(raw)),
        || names(&Category::ALL, Category::as_str),
    )?;
    let signals = parse_all(
        "signals",
        &config.signals,
        |raw| SignalKind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(raw)),
        || names(&SignalKind::ALL, SignalKind::as_str),
    )?;
    let anomalies = parse_all(
        "anomalies",
        &config.anomalies,
        |raw| Anomaly::ALL.into_iter().find(|a| a.as_str().eq_ignore_ascii_case(raw)),
        || names(&Anomaly::ALL, Anomaly::as_str),
    )?;
    let mut reason_codes = Vec::with_capacity(config.reason_codes.len());
    for spec in &config.reason_codes {
        reason_codes.push(match spec {
            CodeSpec::Code(code) => (*code, *code),
            CodeSpec::Range(text) => parse_range(text).ok_or_else(|| {
                ("reason_codes", format!("{text:?} is not a code range; expected \"LOW-HIGH\" with LOW <= HIGH"))
            })?,
        });
    }
    let commands: Vec<String> = config.commands.iter().map(|c| c.trim().to_ascii_lowercase()).collect();
    if commands.iter().any(String::is_empty) {
        return Err(("commands", "must not hold an empty command".into()));
    }
    if !commands.is_empty() && signals.iter().all(|s| *s != SignalKind::DisableCommands) {
        return Err(("commands", "needs signals = [\"disable-commands\"] in the same match".into()));
    }
    if let Some(minutes) = config.extra_time_above.filter(|m| !(m.is_finite() && *m >= 0.0)) {
        return Err(("extra_time_above", format!("is {minutes}; expected minutes, 0 or more")));
    }
    for (key, above) in [
        ("distinct_ips_above", config.distinct_ips_above),
        ("distinct_user_agents_above", config.distinct_user_agents_above),
    ] {
        if let Some(above) = above.filter(|a| *a == 0 || *a >= MAX_DISTINCT) {
            return Err((key, format!("is {above}; expected 1 to {}", MAX_DISTINCT - 1)));
        }
    }
    let mut compiled = Match {
        actions,
        actors,
        action_status,
        reason_codes,
        reason_categories,
        signals,
        commands,
        anomalies,
        extra_time_above: config.extra_time_above,
        distinct_ips_above: config.distinct_ips_above,
        distinct_user_agents_above: config.distinct_user_agents_above,
        quick: Quick::default(),
    };
    if compiled == Match::default() {
        return Err(("", "sets no condition".into()));
    }
    compiled.quick = Quick::of(&compiled);
    Ok(compiled)
}

fn parse_range(text: &str) -> Option<(i64, i64)> {
    let (low, high) = text.split_once('-')?;
    let (low, high) = (low.trim().parse::<i64>().ok()?, high.trim().parse::<i64>().ok()?);
    (low <= high).then_some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_are_valid_and_complete() {
        let rules = RuleSet::defaults();
        let ids: Vec<&str> = rules.rules().iter().map(|r| &*r.id).collect();
        assert_eq!(
            ids,
            [
                "security-flag",
                "tab-switch-repeated",
                "fullscreen-exit-repeated",
                "forbidden-command",
                "screenshot-attempt",
                "lockdown-breach",
                "ip-change",
                "user-agent-change",
                "proctor-termination",
                "repeated-pauses",
                "excessive-extra-time",
                "identity-authorization",
                "illegal-transition",
                "session-silent",
                "technical-burst",
            ]
        );
        for rule in rules.rules() {
            let tenant = rule.id.as_ref() == "technical-burst";
            assert_eq!(rule.scope == Scope::Tenant, tenant, "{}", rule.id);
        }
        let tab = rules.get("tab-switch-repeated").unwrap();
        assert_eq!((tab.count, tab.window, tab.severity), (3, Duration::from_secs(600), Severity::High));
        let flag = rules.get("security-flag").unwrap();
        assert_eq!((flag.cooldown, flag.group_by), (Duration::from_secs(300), GroupBy::Signal));
        // Every count-1 rule cools down; the test taker's conduct is one family.
        for rule in rules.rules().iter().filter(|rule| rule.count == 1) {
            assert!(!rule.cooldown.is_zero(), "{} has no cooldown", rule.id);
        }
        let conduct: Vec<&str> =
            rules.rules().iter().filter(|r| r.family.as_deref() == Some("conduct")).map(|r| &*r.id).collect();
        assert_eq!(conduct.len(), 8, "{conduct:?}");
        assert_eq!(rules.score_half_life, Duration::from_secs(1800));
        assert_eq!((flag.weight, rules.get("lockdown-breach").unwrap().weight), (20, 60));
        let silent: Vec<&str> = rules.silence_rules().map(|rule| &*rule.id).collect();
        assert_eq!(silent, ["session-silent"]);
    }

    fn rule(body: &str) -> String {
        format!("[[rule]]\nid = \"r-1\"\nseverity = \"high\"\ntitle = \"T\"\nsummary = \"S\"\n{body}")
    }

    #[test]
    fn errors_name_the_rule_and_the_key() {
        let matching = "[[rule.match]]\nactions = [\"flag\"]\n";
        let cases = [
            (
                rule(&format!("[rule.threshold]\ncount = 3\nwindow = \"0s\"\n{matching}")),
                "rule \"r-1\": threshold.window: must be longer than 0",
            ),
            (
                rule(&format!("[rule.threshold]\ncount = 0\nwindow = \"1m\"\n{matching}")),
                "rule \"r-1\": threshold.count",
            ),
            (rule("[[rule.match]]\nactions = [\"flg\"]\n"), "rule \"r-1\": match[0].actions: unknown value \"flg\""),
            (rule("[[rule.match]]\nactors = [\"robot\"]\n"), "rule \"r-1\": match[0].actors"),
            (rule("[[rule.match]]\naction_status = [\"ok\"]\n"), "rule \"r-1\": match[0].action_status"),
            (rule("[[rule.match]]\nsignals = [\"webcam\"]\n"), "rule \"r-1\": match[0].signals"),
            (rule("[[rule.match]]\nanomalies = [\"weird\"]\n"), "rule \"r-1\": match[0].anomalies"),
            (rule("[[rule.match]]\nreason_categories = [\"CHEATING\"]\n"), "match[0].reason_categories"),
            (rule("[[rule.match]]\nreason_codes = [\"49999-40000\"]\n"), "match[0].reason_codes"),
            (rule("[[rule.match]]\ncommands = [\"copy\"]\n"), "match[0].commands"),
            (rule("[[rule.match]]\ndistinct_ips_above = 0\n"), "match[0].distinct_ips_above"),
            (rule("[[rule.match]]\ndistinct_user_agents_above = 99\n"), "match[0].distinct_user_agents_above"),
            (rule("[[rule.match]]\nextra_time_above = -1.0\n"), "match[0].extra_time_above"),
            (rule(&format!("{matching}[[rule.match]]\n")), "rule \"r-1\": match[1]: sets no condition"),
            (rule(""), "rule \"r-1\": match: expected 1 to 100 [[rule.match]]"),
            (rule(&matching.repeat(101)), "rule \"r-1\": match: expected 1 to 100 [[rule.match]]"),
            (rule("scope = \"tenant\"\n[[rule.match]]\ndistinct_ips_above = 1\n"), "rule \"r-1\": scope"),
            (
                rule(matching).replace("summary = \"S\"", "summary = \"{nope}\""),
                "rule \"r-1\": summary: unknown placeholder `{nope}`",
            ),
            (rule(matching).replace("title = \"T\"", "title = \" \""), "rule \"r-1\": title"),
            (rule(matching).replace("r-1", "R 1"), "rule \"R 1\": id"),
            (format!("{}{}", rule(matching), rule(matching)), "rule \"r-1\": id: is used by another rule"),
            (rule(&format!("colour = \"red\"\n{matching}")), "unknown field `colour`"),
            (rule("[[rule.match]]\nactions = [\"flag\"]\ncolour = 1\n"), "unknown field `colour`"),
            (rule(&format!("cooldown = \"soon\"\n{matching}")), "cooldown"),
            (rule(matching).replace("\"high\"", "\"severe\""), "severity"),
            (format!("allowed_lateness = \"30d\"\n{}", rule(matching)), "allowed_lateness"),
            (format!("score_half_life = \"0s\"\n{}", rule(matching)), "score_half_life"),
            (rule(&format!("weight = 101\n{matching}")), "rule \"r-1\": weight: is 101; expected 0 to 100"),
            (rule(&format!("weight = 300\n{matching}")), "weight"),
            (rule(&format!("family = \"Conduct!\"\n{matching}")), "rule \"r-1\": family"),
            (rule(&format!("on = \"silence\"\n{matching}")), "rule \"r-1\": match: a rule on silence has no"),
            (rule("on = \"silence\"\nscope = \"tenant\"\n"), "rule \"r-1\": on: a rule on silence"),
            (rule("on = \"silence\"\n[rule.threshold]\ncount = 2\nwindow = \"1m\"\n"), "rule \"r-1\": on:"),
            (rule("on = \"silence\"\ngroup_by = \"signal\"\n"), "rule \"r-1\": group_by"),
            (rule("on = \"noise\"\n"), "unknown variant"),
            (rule(""), "rule \"r-1\": match: expected 1 to 100"),
            (String::new(), "at least one [[rule]]"),
            (
                (0..1001).map(|i| rule(matching).replace("r-1", &format!("r-{i}"))).collect(),
                "rule: 1001 rules; expected at most 1000",
            ),
        ];
        for (text, needle) in cases {
            let error = RuleSet::from_toml("rules.toml", &text).expect_err(&text).to_string();
            assert!(error.contains(needle), "{text}\n→ {error}\n(expected {needle:?})");
        }
    }

    #[test]
    fn a_minimal_rule_fires_on_every_match() {
        let rules =
            RuleSet::from_toml("f", &rule("[[rule.match]]\nreason_codes = [20030, \"40000-49999\"]\n")).unwrap();
        let rule = &rules.rules()[0];
        assert_eq!(
            (rule.count, rule.window, rule.cooldown, rule.scope),
            (1, Duration::ZERO, Duration::ZERO, Scope::Session)
        );
        assert_eq!(rule.matches[0].reason_codes, [(20030, 20030), (40000, 49999)]);
        assert_eq!(rules.allowed_lateness, Duration::from_secs(300));
    }
}

//! Incidents: one per session (delivery execution), its alerts aggregated into a review
//! priority, so that a proctor watching hundreds of sittings reads one line per session, not
//! a stream of alerts (README, "Incidents").
//!
//! Pure and synchronous, on event time: the session store calls [`Incident::add_alerts`] with
//! the rules whose alerts an event fired, and publishes a revision when it changes or the
//! session ends ([`crate::encode::incident`] writes it). The state is part of the session's
//! (its changelog record), so a restored session scores on where it stopped.
//!
//! The model:
//! - every alert of a live, session-scoped rule adds its rule's `weight` (0–100 points, in the
//!   rules file) to a level that halves every `score_half_life` of event time (30 minutes by
//!   default): a burst adds up, flags spread over a two-hour sitting do not;
//! - `score` is the peak of that level, at most 100 (a session that cheated an hour ago stays
//!   to be reviewed); `priority` is `none` at 0, `low` to 29, `medium` to 59, `high` to 84,
//!   `critical` above, and at least `high` once a high or critical alert counted (one folded
//!   by its family aside: another alert of the event said it);
//! - noise control: an event firing several rules of one family publishes the most severe
//!   one's alert (the first in file order among equals) and folds the others, which add no
//!   points (they say the same thing); beyond the alert budget (at most N alerts published per
//!   hour of event time, counted from the session's first event) alerts are folded too, and do
//!   add their points; critical alerts are never folded by the budget.

use std::sync::Arc;

use serde::Serialize;
use smallvec::SmallVec;

use crate::rules::{Rule, RuleSet, Severity};

/// A session's review priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    pub const ALL: [Priority; 5] =
        [Priority::None, Priority::Low, Priority::Medium, Priority::High, Priority::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::None => "none",
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// The priority a score alone gives.
    pub fn of_score(score: u8) -> Priority {
        match score {
            0 => Priority::None,
            1..=29 => Priority::Low,
            30..=59 => Priority::Medium,
            60..=84 => Priority::High,
            _ => Priority::Critical,
        }
    }

    /// As the changelog stores it (its place in [`Priority::ALL`]).
    pub fn to_raw(self) -> u32 {
        self as u32
    }

    /// [`Priority::to_raw`] back; `None` for a value this version does not know.
    pub fn from_raw(raw: u32) -> Option<Priority> {
        Priority::ALL.get(usize::try_from(raw).ok()?).copied()
    }
}

/// The alerts of one rule in an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTally {
    pub rule: Arc<str>,
    /// Alerts, published or folded.
    pub count: u32,
    /// Score points they added (undecayed).
    pub points: u32,
}

/// What becomes of one alert an event fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Publish,
    /// Counted in the incident, not published: another rule of its family said the same thing
    /// for the same event.
    FoldedByFamily,
    /// Counted in the incident (its points too), not published: the session's alert budget
    /// for the hour is spent.
    FoldedByBudget,
}

impl Verdict {
    pub fn folded(self) -> bool {
        self != Verdict::Publish
    }
}

/// How incidents count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Alerts published per session per hour of event time; 0: no budget.
    pub max_alerts_per_hour: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { max_alerts_per_hour: DEFAULT_MAX_ALERTS_PER_HOUR }
    }
}

/// `rules.max_alerts_per_session` when not set.
pub const DEFAULT_MAX_ALERTS_PER_HOUR: u32 = 10;

const HOUR_MS: i64 = 3_600_000;

/// A session's incident.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Incident {
    /// Revisions published (0 before the first).
    pub revision: u32,
    /// Alerts of the session (live, session-scoped rules), published or folded.
    pub alert_count: u32,
    pub folded: u32,
    /// By rule id, sorted.
    pub by_rule: Vec<RuleTally>,
    /// The weighted level at `level_at` (incident time, epoch milliseconds), and its peak.
    pub level: f64,
    pub level_at: i64,
    pub peak: f64,
    /// The least priority its alerts imply.
    pub floor: Priority,
    pub first_alert_at: Option<i64>,
    pub last_alert_at: Option<i64>,
    /// Incident time of the event that produced the latest revision, and the session's status
    /// after it (what the revision says, given again as it was when that event is processed
    /// again).
    pub updated_at: i64,
    pub session_status: Option<crate::model::Status>,
    /// Input position of that event (see [`Incident::updated_position`]'s use in the store:
    /// processed again, it publishes the incident again).
    pub updated_position: i64,
    /// The hour of event time (from the session's first event) the budget counts, and the
    /// alerts published in it.
    pub budget_hour: i64,
    pub budget_used: u32,
}

impl Incident {
    /// Score, 0 to 100: the peak level, rounded.
    pub fn score(&self) -> u8 {
        // At most 100 after `min`, at least 0 (weights are not negative).
        self.peak.round().clamp(0.0, 100.0) as u8
    }

    pub fn priority(&self) -> Priority {
        Priority::of_score(self.score()).max(self.floor)
    }

    /// Aggregates the alerts one event (at `at`, epoch milliseconds) fired, their rules given
    /// in firing order (live, session-scoped rules only): what becomes of each.
    /// `session_start`: the session's first incident time (where budget hours start).
    pub fn add_alerts(
        &mut self,
        rules: &[&Rule],
        at: i64,
        session_start: i64,
        half_life_ms: i64,
        policy: &Policy,
    ) -> SmallVec<[Verdict; 2]> {
        let mut verdicts: SmallVec<[Verdict; 2]> = SmallVec::from_elem(Verdict::Publish, rules.len());
        // Families: the most severe alert of each family stays (the first among equals).
        for (at_rule, rule) in rules.iter().enumerate() {
            let Some(family) = &rule.family else { continue };
            let winner = (rules.iter().enumerate())
                .filter(|(_, other)| other.family.as_ref() == Some(family))
                .max_by_key(|(index, other)| (other.severity, std::cmp::Reverse(*index)))
                .map(|(index, _)| index);
            if winner != Some(at_rule) {
                verdicts[at_rule] = Verdict::FoldedByFamily;
            }
        }
        // The budget, per hour of the session's event time (a late event counts in the hour
        // being counted).
        let hour = at.saturating_sub(session_start).div_euclid(HOUR_MS);
        if hour > self.budget_hour {
            self.budget_hour = hour;
            self.budget_used = 0;
        }
        for (rule, verdict) in rules.iter().zip(verdicts.iter_mut()) {
            if verdict.folded() {
                continue;
            }
            let budget = policy.max_alerts_per_hour;
            if budget == 0 || rule.severity == Severity::Critical || self.budget_used < budget {
                self.budget_used = self.budget_used.saturating_add(1);
            } else {
                *verdict = Verdict::FoldedByBudget;
            }
        }
        for (rule, verdict) in rules.iter().zip(&verdicts) {
            let counted = *verdict != Verdict::FoldedByFamily;
            let points = if counted { rule.weight } else { 0 };
            self.add(rule, points, at, half_life_ms);
            // A high or critical alert is a rule's judgement that the session needs a review.
            if counted && rule.severity >= Severity::High {
                self.floor = self.floor.max(Priority::High);
            }
            self.folded += u32::from(verdict.folded());
        }
        verdicts
    }

    /// Counts one alert of `rule`, adding `points` at `at`.
    fn add(&mut self, rule: &Rule, points: u8, at: i64, half_life_ms: i64) {
        self.alert_count = self.alert_count.saturating_add(1);
        match self.by_rule.binary_search_by(|tally| (*tally.rule).cmp(&rule.id)) {
            Ok(found) => {
                let tally = &mut self.by_rule[found];
                tally.count = tally.count.saturating_add(1);
                tally.points = tally.points.saturating_add(u32::from(points));
            }
            Err(place) => {
                self.by_rule.insert(place, RuleTally { rule: rule.id.clone(), count: 1, points: u32::from(points) })
            }
        }
        // The level decays from `level_at` to `at`; a late alert (before `level_at`) adds its
        // points decayed to `level_at` instead.
        let half_lives = |from: i64, to: i64| (to - from) as f64 / half_life_ms.max(1) as f64;
        if self.first_alert_at.is_none() {
            self.level_at = at;
        }
        if at >= self.level_at {
            self.level = self.level * (-half_lives(self.level_at, at)).exp2() + f64::from(points);
            self.level_at = at;
        } else {
            self.level += f64::from(points) * (-half_lives(at, self.level_at)).exp2();
        }
        self.peak = self.peak.max(self.level);
        self.first_alert_at = Some(self.first_alert_at.map_or(at, |first| first.min(at)));
        self.last_alert_at = Some(self.last_alert_at.map_or(at, |last| last.max(at)));
    }

    /// A new revision, produced by the event at `position` (incident time `at`), after which
    /// the session's status is `status`.
    pub fn revise(&mut self, at: i64, position: i64, status: Option<crate::model::Status>) {
        self.revision = self.revision.saturating_add(1);
        self.updated_at = at;
        self.updated_position = position;
        self.session_status = status;
    }

    /// The main contributions to the score, the largest first (at most three), each as
    /// `<rule title> ×<count> (<points> points)` (the rule's id when the rule set no longer
    /// has it, or its title has placeholders).
    pub fn reasons(&self, rules: &RuleSet) -> Vec<String> {
        let mut tallies: Vec<&RuleTally> = self.by_rule.iter().filter(|tally| tally.points > 0).collect();
        tallies.sort_by(|a, b| b.points.cmp(&a.points).then_with(|| a.rule.cmp(&b.rule)));
        tallies
            .into_iter()
            .take(3)
            .map(|tally| {
                let title = rules.get(&tally.rule).map(|rule| rule.title.as_str()).filter(|title| !title.contains('{'));
                let name = title.unwrap_or(&tally.rule);
                format!("{name} ×{} ({} points)", tally.count, tally.points)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

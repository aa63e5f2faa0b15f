//! The sessions of one input partition: each event is applied to its session's state, which
//! yields the event's [`SessionView`] and its session anomalies. Synchronous and pure: the
//! processing time is passed in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

use super::changelog::{self, ChangelogError, InputPartition};
use super::machine::{self, Outcome};
use crate::encode::incident::{IncidentEncoder, IncidentRecord};
use crate::encode::{AlertEncoder, Alerted, Alerts, Output};
use crate::incidents::{self, Incident};
use crate::model::{Action, ActionStatus, Anomaly, Event, SessionView, Status};
use crate::rules::{self, RuleMode, RuleSet, RuleState, Scope};
use crate::session::{Fired, SessionRules};

/// Bounds of the session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A message id seen again within this long (processing time) is a duplicate.
    pub duplicate_horizon: Duration,
    /// At most this many recent message ids are remembered per session (memory bound).
    pub remembered_ids: usize,
    /// A session that ended (terminated, closed, canceled) is forgotten this long after.
    pub finished_ttl: Duration,
    /// A session without events for this long is forgotten.
    pub idle_ttl: Duration,
    /// An interacting session without events for this long (event time, against the
    /// partition's latest incident time) is silent; zero: never.
    pub silence_after: Duration,
}

impl SessionLimits {
    fn horizon_minutes(&self) -> u16 {
        horizon_minutes(self.duplicate_horizon)
    }
}

/// A duplicate horizon in whole minutes (at least 1), as recent ids keep their time.
fn horizon_minutes(horizon: Duration) -> u16 {
    let minutes = horizon.as_secs().div_ceil(60).max(1);
    u16::try_from(minutes).unwrap_or(u16::MAX)
}

/// The shared copy of `tenant`.
fn intern(tenants: &mut HashSet<Arc<str>>, tenant: &str) -> Arc<str> {
    if let Some(shared) = tenants.get(tenant) {
        return shared.clone();
    }
    let shared: Arc<str> = Arc::from(tenant);
    tenants.insert(shared.clone());
    shared
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            duplicate_horizon: Duration::from_secs(3600),
            remembered_ids: 32,
            finished_ttl: Duration::from_secs(3600),
            idle_ttl: Duration::from_secs(24 * 3600),
            silence_after: Duration::from_secs(300),
        }
    }
}

/// Recent message ids of a session, oldest first, in 8 bytes each: the upper 48 bits of the
/// id's XXH3-64 and the minute of processing time it was seen (modulo 2^16, about 45
/// days). Two ids are taken for the same with a chance of 2^-48 per pair compared; the
/// duplicate horizon holds to the minute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecentIds(Vec<u64>);

const MINUTE_MS: i64 = 60_000;

impl RecentIds {
    fn minute(now_ms: i64) -> u16 {
        // Modulo 2^16 by design: only differences of recent minutes are ever compared.
        (now_ms.div_euclid(MINUTE_MS) & 0xFFFF) as u16
    }

    fn hash_bits(hash: u64) -> u64 {
        hash & !0xFFFF
    }

    /// Forgets the ids seen more than `horizon` ago (to the minute, never earlier).
    pub fn forget_older_than(&mut self, now_ms: i64, horizon: Duration) {
        self.forget_older(now_ms, horizon_minutes(horizon));
    }

    /// Forgets the ids seen more than `horizon_minutes` minutes ago (counted in whole
    /// minutes, so an id is remembered between the horizon and a minute longer: never
    /// shorter). A minute ahead of now (another member's clock, after a handover) counts as
    /// now.
    fn forget_older(&mut self, now_ms: i64, horizon_minutes: u16) {
        let now = Self::minute(now_ms);
        let age = |entry: &u64| {
            let age = now.wrapping_sub(*entry as u16);
            if age >= 0x8000 { 0 } else { age }
        };
        let kept = self.0.iter().position(|entry| age(entry) <= horizon_minutes);
        self.0.drain(..kept.unwrap_or(self.0.len()));
    }

    pub fn contains(&self, hash: u64) -> bool {
        let bits = Self::hash_bits(hash);
        self.0.iter().any(|entry| Self::hash_bits(*entry) == bits)
    }

    /// Remembers `hash`, seen at `now_ms`, forgetting the oldest beyond `max`. The buffer
    /// doubles as it fills, but never past `max` (a restored buffer is exactly as long as
    /// its ids).
    pub fn push(&mut self, hash: u64, now_ms: i64, max: usize) {
        let len = self.0.len();
        if len >= max {
            self.0.drain(..=len - max);
        } else if len == self.0.capacity() {
            self.0.reserve_exact((len * 2).max(4).min(max) - len);
        }
        self.0.push(Self::hash_bits(hash) | u64::from(Self::minute(now_ms)));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.0.capacity() * size_of::<u64>()
    }

    /// The entries as the changelog stores them.
    pub fn as_raw(&self) -> &[u64] {
        &self.0
    }

    pub fn from_raw(entries: Vec<u64>) -> RecentIds {
        RecentIds(entries)
    }
}

/// The state of one session (delivery execution).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    /// Shared by the sessions of a tenant in one [`Sessions`].
    pub tenant_id: Arc<str>,
    /// Tracked status; `None` until an event determines one.
    pub status: Option<Status>,
    pub sequence: u64,
    pub pause_count: u32,
    pub security_flag_count: u32,
    pub extra_time_minutes: f64,
    /// Earliest and latest incident times seen, epoch milliseconds.
    pub first_seen: i64,
    pub last_seen: i64,
    /// Processing time of the last event applied (idle expiry).
    pub touched_at: i64,
    /// Processing time at which the session reached a final status (finished expiry).
    pub finished_at: Option<i64>,
    /// Input offset of the last event applied: an event at or below it (input processed again
    /// after a crash, with the state restored from the changelog) is not applied twice.
    pub applied_offset: i64,
    /// Recent message ids, to mark upstream's retries as duplicates.
    pub recent_ids: RecentIds,
    /// The rules' state of the session (`None` until a rule needs one).
    pub rules: Option<Box<SessionRules>>,
    /// Judged silent (see [`SessionLimits::silence_after`]) since its last event: not again
    /// until its next event.
    pub silent: bool,
    /// The deadline (incident time) of its last silence alert, for the silence rules'
    /// cooldown.
    pub silence_alerted_at: Option<i64>,
    /// Changed since the last [`Sessions::drain_changes`] (then listed in `Sessions::dirty`).
    pub(super) dirty: bool,
}

impl SessionState {
    fn new(tenant_id: Arc<str>, incident_time: i64, now: i64) -> SessionState {
        SessionState {
            tenant_id,
            status: None,
            sequence: 0,
            pause_count: 0,
            security_flag_count: 0,
            extra_time_minutes: 0.0,
            first_seen: incident_time,
            last_seen: incident_time,
            touched_at: now,
            finished_at: None,
            applied_offset: -1,
            recent_ids: RecentIds::default(),
            rules: None,
            silent: false,
            silence_alerted_at: None,
            dirty: false,
        }
    }

    /// The state as the admin endpoint shows it (camelCase, the spec's status spellings,
    /// epoch milliseconds).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tenantId": &*self.tenant_id,
            "status": self.status.map(Status::as_str),
            "sequence": self.sequence,
            "pauseCount": self.pause_count,
            "securityFlagCount": self.security_flag_count,
            "extraTimeMinutes": self.extra_time_minutes,
            "firstSeen": self.first_seen,
            "lastSeen": self.last_seen,
            "touchedAt": self.touched_at,
            "finishedAt": self.finished_at,
            "appliedOffset": self.applied_offset,
            "recentMessageIds": self.recent_ids.len(),
            "silent": self.silent,
        })
    }

    fn view(&self, status_before: Option<Status>, transition_valid: bool, duplicate: bool) -> SessionView {
        SessionView {
            status_before,
            status_after: self.status,
            transition_valid,
            sequence: self.sequence,
            pause_count: self.pause_count,
            security_flag_count: self.security_flag_count,
            extra_time_minutes: self.extra_time_minutes,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            duplicate,
        }
    }
}

/// The sessions of one input partition, by delivery execution id.
///
/// Memory: a boxed state behind a boxed id keeps the table's slots small (16 + 8 bytes),
/// so that its load factor costs little; see BENCHMARKS.md for the bytes per session.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    sessions: HashMap<Box<str>, Box<SessionState>>,
    /// Tenant ids, shared by the sessions.
    tenants: HashSet<Arc<str>>,
    limits: SessionLimits,
    /// Sessions changed since the last [`Sessions::drain_changes`] (each once: a session's
    /// own flag says whether it is listed), so that the hot path hashes the id only once.
    dirty: Vec<String>,
    /// Sessions expired since the last [`Sessions::drain_changes`].
    expired: Vec<String>,
    /// Processing time of the next expiry run of [`Sessions::expire_due`].
    next_expiry: i64,
    /// Whether changes are recorded for [`Sessions::drain_changes`] (not when nothing
    /// drains them: the state is not written anywhere).
    track_changes: bool,
    /// The buffers [`Sessions::restore_record`] decodes into, reused.
    decoder: changelog::Decoder,
    /// Tenant-scoped rules' state by tenant, when they are counted here
    /// ([`Sessions::apply_evaluating`] without a forward list; not durable).
    tenant_rules: HashMap<Arc<str>, RuleState>,
    /// Input positions below this are committed: alerts they fired need not be kept.
    committed: i64,
    /// The entries keeping alerts for a replay (each listed at least once; some may keep
    /// none any more): [`Sessions::committed`] visits these, not every session.
    kept: Vec<Box<str>>,
    /// How the alerts fired here become output records (encoded once: kept for a replay
    /// and published as they are).
    encoder: AlertEncoder,
    /// How the sessions' incidents become output records, and how they count.
    incidents: IncidentEncoder,
    policy: incidents::Policy,
    /// The latest incident time applied in this partition (restored: the latest of the
    /// sessions restored): what silence is judged against.
    watermark: i64,
    /// The watermark at which sessions are next looked at for silence (`i64::MIN`: at the
    /// next event): every tenth of `silence_after` of event time, on boundaries of that
    /// step, so that a restored partition looks when an uninterrupted one would.
    next_silence_check: i64,
}

/// What applying an event to its session gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// What the event says of its session.
    pub view: SessionView,
    /// The alerts to publish (fired, or fired again for input processed again): the event's
    /// session's, then those of sessions it found silent.
    pub alerts: Alerts,
    /// The incidents the event changed (or, processed again, of which it produced the latest
    /// revision): its session's, then those of sessions it found silent.
    pub incidents: Vec<Output<'static>>,
    /// The rules whose alerts were folded into the incident instead of published.
    pub folded: Folded,
}

/// Rule ids, inline up to two (most events fold nothing).
pub type Folded = smallvec::SmallVec<[Arc<str>; 2]>;

impl Applied {
    fn of(view: SessionView, alerts: Alerts) -> Applied {
        Applied { view, alerts, incidents: Vec::new(), folded: Folded::new() }
    }
}

/// Capacity the list of changed sessions keeps between two drains.
const DIRTY_KEPT: usize = 1024;

/// Message ids remembered per tenant entry (tenant-topic records counted once): more than a
/// session's, as a tenant sees all its sessions' forwarded events (4 KiB per tenant).
pub const TENANT_RECENT_IDS: usize = 512;

/// How often [`Sessions::expire_due`] looks for sessions to expire: a scan of every session,
/// so not on every event; a minute is nothing next to TTLs of hours.
pub const EXPIRY_INTERVAL_MS: i64 = 60_000;

/// One change of the session state, as a changelog record: its key
/// (`{input topic}/{session id}`, see [`changelog`]) and the session's new state, or `None`
/// (a tombstone) when it expired.
pub type Change = (String, Option<Vec<u8>>);

impl Sessions {
    pub fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            sessions: HashMap::new(),
            tenants: HashSet::new(),
            limits,
            dirty: Vec::new(),
            expired: Vec::new(),
            next_expiry: i64::MIN,
            track_changes: true,
            decoder: changelog::Decoder::default(),
            tenant_rules: HashMap::new(),
            committed: -1,
            kept: Vec::new(),
            encoder: AlertEncoder::default(),
            incidents: IncidentEncoder::default(),
            policy: incidents::Policy::default(),
            watermark: i64::MIN,
            next_silence_check: i64::MIN,
        }
    }

    /// The same store, its incidents encoded by `encoder` (by default, protobuf to
    /// `acs.{tenant}.incidents`) and counted as `policy` says.
    pub fn with_incidents(mut self, encoder: IncidentEncoder, policy: incidents::Policy) -> Sessions {
        self.incidents = encoder;
        self.policy = policy;
        self
    }

    /// The same store, its alerts encoded by `alerts` (by default, protobuf to
    /// `acs.{tenant}.alerts`).
    pub fn with_alerts(mut self, encoder: AlertEncoder) -> Sessions {
        self.encoder = encoder;
        self
    }

    /// Says that the input of this partition is committed up to `position` (exclusive), or
    /// at least that every output and state change below it is acknowledged (the runtime
    /// calls it with the position it commits next): alerts fired below it are no longer kept
    /// for a replay.
    pub fn committed(&mut self, position: i64) {
        if position <= self.committed {
            return;
        }
        self.committed = position;
        // Let go now, not at the session's next event: a session that ended (or went quiet)
        // would keep its last alerts until it expires. Not a change to write: a restored
        // session that still has them lets them go at the next call past them. An entry is
        // listed when it starts keeping alerts (see `keep_fired`, `restore_record`); one gone
        // (expired, evicted, a tombstone) and back before this call may be listed twice,
        // which only visits it twice.
        let sessions = &mut self.sessions;
        self.kept.retain(|id| {
            let Some(rules) = sessions.get_mut(&**id).and_then(|state| state.rules.as_deref_mut()) else {
                return false;
            };
            rules.fired.retain(|fired| fired.position >= position);
            !rules.fired.is_empty()
        });
    }

    /// Applies `event` (processed at `now`, epoch milliseconds) to its session: records the
    /// session anomalies on the event and returns what the event says of its session.
    ///
    /// `position` is the event's offset in the partition it is processed from (see
    /// [`crate::pipeline::Record::position`]). Events of one partition arrive in offset order;
    /// an event whose position the session has already applied is input processed again
    /// (after a crash, over a state restored from the changelog): it changes nothing, and its
    /// view is the session as it stands.
    pub fn apply(&mut self, event: &mut Event<'_>, position: i64, now: i64) -> SessionView {
        self.apply_evaluating(event, position, now, None).view
    }

    /// [`Sessions::apply`], then the rules on the event (`rules`: the rule set, and where
    /// tenant-scoped rules go: counted here when `None`, forwarded to the list otherwise,
    /// see [`rules::Tenant`]), then the session's incident ([`incidents`]): the alerts of
    /// live session-scoped rules are aggregated into it, those it folds (rule families, the
    /// alert budget) left out of the alerts returned; its record is returned when it changed
    /// or the session ended with the event.
    ///
    /// An event processed again (its position already applied) counts nothing, fires again
    /// the alerts it fired the first time if they are still kept (changelog on, position
    /// not committed), gives the incident's record again if it produced its latest revision,
    /// and is forwarded again for the tenant-scoped rules it matches (the tenant side counts
    /// a message id once).
    pub fn apply_evaluating(
        &mut self,
        event: &mut Event<'_>,
        position: i64,
        now: i64,
        rules: Option<(&RuleSet, Option<&mut rules::Forwarded>)>,
    ) -> Applied {
        let id = &*event.delivery_execution_id;
        // Looked up once on the hot path (a helper returning the entry would need two lookups
        // for the borrow checker).
        let state = match self.sessions.get_mut(id) {
            Some(state) => state,
            None => {
                let tenant = intern(&mut self.tenants, &event.tenant_id);
                let state = Box::new(SessionState::new(tenant, event.incident_time, now));
                self.sessions.entry(Box::from(id)).or_insert(state)
            }
        };
        if position <= state.applied_offset {
            let view = state.view(state.status, true, false);
            let mut applied = Applied::of(view, replayed(state, position));
            let rule_set = rules.as_ref().map(|(rule_set, _)| *rule_set);
            if let (Some((rule_set, forward)), Some(session)) = (rules, state.rules.as_deref()) {
                // Forwarded again: the tenant-topic record may have been lost with the crash
                // (the tenant side drops it if it was not).
                if let Some(forward) = forward {
                    rules::forward_again(rule_set, event, &applied.view, &session.state, forward);
                }
                // Its latest revision published again: the crash may have lost it while the
                // state was already durable.
                if let Some(incident) = session.incident.as_deref().filter(|i| i.updated_position == position) {
                    let id = &*event.delivery_execution_id;
                    applied.incidents.push(incident_record(&self.incidents, incident, state, id, event, rule_set));
                }
            }
            // What it fired in sessions it found silent, again.
            if let Some(rule_set) = rule_set
                && self.track_changes
            {
                self.replay_silenced(&mut applied, id, event, position, rule_set);
            }
            return applied;
        }
        if self.track_changes {
            mark_dirty(state, &mut self.dirty, id);
        }
        let view = apply_to(state, &self.limits, event, position, now);
        if !view.duplicate {
            state.silent = false;
        }
        let Some((rule_set, forward)) = rules else {
            return Applied::of(view, Alerts::new());
        };
        let session = state.rules.get_or_insert_default();
        let mut alerts = Alerts::new();
        let fired = encode_into(&self.encoder, &mut alerts);
        match forward {
            Some(matched) => rules::evaluate_into(rule_set, event, &view, &mut session.state, matched, fired),
            None => {
                // Counted here: the tenant's state is looked up only for an event that matches
                // one of its rules.
                let (tenant_rules, tenant_id) = (&mut self.tenant_rules, &state.tenant_id);
                rules::evaluate_inline_into(
                    rule_set,
                    event,
                    &view,
                    &mut session.state,
                    move || tenant_rules.entry(tenant_id.clone()).or_default(),
                    fired,
                );
            }
        }
        let mut folded = Folded::new();
        let mut changed =
            aggregate(session, &mut alerts, &mut folded, rule_set, event.incident_time, state.first_seen, &self.policy);
        let ended =
            view.status_after.is_some_and(machine::is_final) && !view.status_before.is_some_and(machine::is_final);
        if ended {
            session.incident.get_or_insert_default();
            changed = true;
        }
        let kept = self.track_changes.then_some((&mut self.kept, &*event.delivery_execution_id));
        keep_fired(session, &alerts, position, self.committed, kept);
        if changed && let Some(incident) = session.incident.as_deref_mut() {
            incident.revise(event.incident_time, position, state.status);
        }
        let mut applied = Applied { view, alerts, incidents: Vec::new(), folded };
        if changed && let Some(incident) = state.rules.as_deref().and_then(|rules| rules.incident.as_deref()) {
            let id = &*event.delivery_execution_id;
            applied.incidents.push(incident_record(&self.incidents, incident, state, id, event, rule_set));
        }
        self.judge_silence(&mut applied, event, position, rule_set);
        applied
    }

    /// Advances the partition's watermark to `event`'s time and, on a silence boundary,
    /// fires the silence rules of every session found silent (interacting, nothing for
    /// `silence_after` of event time, not silent already), in session id order: their alerts
    /// and incidents join `applied` (the outputs of the event at `position`), and are kept
    /// for a replay like the event's own.
    fn judge_silence(&mut self, applied: &mut Applied, event: &Event<'_>, position: i64, rule_set: &RuleSet) {
        let silence = millis(self.limits.silence_after);
        if silence <= 0 || !rule_set.has_silence() {
            return;
        }
        let step = (silence / 10).max(1_000);
        let boundary = |at: i64| at.div_euclid(step).saturating_add(1).saturating_mul(step);
        if self.next_silence_check == i64::MIN && self.watermark != i64::MIN {
            // Restored: looked at when an uninterrupted partition would have.
            self.next_silence_check = boundary(self.watermark);
        }
        self.watermark = self.watermark.max(event.incident_time);
        if self.watermark < self.next_silence_check {
            return;
        }
        self.next_silence_check = boundary(self.watermark);
        let watermark = self.watermark;
        let mut silent: Vec<Box<str>> = (self.sessions.iter())
            .filter(|(_, state)| {
                state.status == Some(Status::Interacting)
                    && !state.silent
                    && state.last_seen.saturating_add(silence) <= watermark
            })
            .map(|(id, _)| id.clone())
            .collect();
        silent.sort_unstable();
        for id in silent {
            let Some(state) = self.sessions.get_mut(&*id) else { continue };
            state.silent = true;
            if self.track_changes {
                mark_dirty(state, &mut self.dirty, &id);
            }
            let deadline = state.last_seen.saturating_add(silence);
            let mut alerts = Alerts::new();
            for rule in rule_set.silence_rules() {
                let cooling = state.silence_alerted_at.is_some_and(|at| deadline - at < millis(rule.cooldown));
                if cooling {
                    continue;
                }
                let encoder = &self.encoder;
                rules::silence_into(rule, &state.tenant_id, &id, state.last_seen, deadline, |view| {
                    alerts.push(encoder.record(view))
                });
            }
            if alerts.is_empty() {
                continue;
            }
            state.silence_alerted_at = Some(deadline);
            let session = state.rules.get_or_insert_default();
            let changed = aggregate(
                session,
                &mut alerts,
                &mut applied.folded,
                rule_set,
                deadline,
                state.first_seen,
                &self.policy,
            );
            let kept = self.track_changes.then_some((&mut self.kept, &*id));
            keep_fired(session, &alerts, position, self.committed, kept);
            if changed && let Some(incident) = session.incident.as_deref_mut() {
                incident.revise(deadline, position, state.status);
            }
            if changed && let Some(incident) = state.rules.as_deref().and_then(|rules| rules.incident.as_deref()) {
                applied.incidents.push(incident_record(&self.incidents, incident, state, &id, event, rule_set));
            }
            applied.alerts.extend(alerts);
        }
    }

    /// For input processed again at `position`: what it fired in other sessions (found silent
    /// then) and kept for a replay, with their incidents' revisions it produced, in session
    /// id order.
    fn replay_silenced(&self, applied: &mut Applied, own: &str, event: &Event<'_>, position: i64, rule_set: &RuleSet) {
        let mut others: Vec<&str> = self.kept.iter().map(|id| &**id).filter(|id| *id != own).collect();
        others.sort_unstable();
        others.dedup();
        for id in others {
            let Some(state) = self.sessions.get(id) else { continue };
            let Some(session) = state.rules.as_deref() else { continue };
            let fired = session.fired.iter().filter(|fired| fired.position == position);
            applied.alerts.extend(fired.map(|fired| fired.alert.clone()));
            if let Some(incident) = session.incident.as_deref().filter(|i| i.updated_position == position) {
                applied.incidents.push(incident_record(&self.incidents, incident, state, id, event, rule_set));
            }
        }
    }

    /// Counts `event` for the tenant-scoped rules named in `matched` (forwarded by
    /// [`Sessions::apply_evaluating`] where the event's session is), in the state of its
    /// tenant, held here as an entry keyed by the tenant id (same changelog, expiry and
    /// replay handling as a session). Returns the alerts fired.
    pub fn apply_tenant<S: AsRef<str>>(
        &mut self,
        event: &Event<'_>,
        matched: &[S],
        position: i64,
        now: i64,
        rule_set: &RuleSet,
    ) -> Alerts {
        let id = &*event.tenant_id;
        // Looked up once on the hot path (a helper returning the entry would need two lookups
        // for the borrow checker).
        let state = match self.sessions.get_mut(id) {
            Some(state) => state,
            None => {
                let tenant = intern(&mut self.tenants, &event.tenant_id);
                let state = Box::new(SessionState::new(tenant, event.incident_time, now));
                self.sessions.entry(Box::from(id)).or_insert(state)
            }
        };
        if position <= state.applied_offset {
            return replayed(state, position);
        }
        state.applied_offset = position;
        if self.track_changes {
            mark_dirty(state, &mut self.dirty, id);
        }
        // Sent again by a session side that processed its input again after a crash: counted
        // once (by message id, as sessions find upstream's retries).
        state.recent_ids.forget_older(now, self.limits.horizon_minutes());
        let id_hash = xxh3_64(event.message_id.as_bytes());
        if state.recent_ids.contains(id_hash) {
            return Alerts::new();
        }
        state.recent_ids.push(id_hash, now, TENANT_RECENT_IDS);
        state.sequence += 1;
        state.first_seen = state.first_seen.min(event.incident_time);
        state.last_seen = state.last_seen.max(event.incident_time);
        state.touched_at = now;
        let tenant = state.rules.get_or_insert_default();
        let mut alerts = Alerts::new();
        rules::evaluate_tenant_into(
            rule_set,
            event,
            matched,
            &mut tenant.state,
            encode_into(&self.encoder, &mut alerts),
        );
        keep_fired(tenant, &alerts, position, self.committed, self.track_changes.then_some((&mut self.kept, id)));
        alerts
    }
}

/// Aggregates into the session's incident the alerts of live session-scoped rules among
/// `alerts` (fired at `at`, event time; `session_start`: the session's first incident time), and takes
/// those it folds out of `alerts` (their rules listed in `folded`). Whether the incident
/// changed (it had alerts to aggregate).
fn aggregate(
    session: &mut SessionRules,
    alerts: &mut Alerts,
    folded: &mut Folded,
    rule_set: &RuleSet,
    at: i64,
    session_start: i64,
    policy: &incidents::Policy,
) -> bool {
    if alerts.is_empty() {
        return false;
    }
    let mut aggregated: smallvec::SmallVec<[(usize, &rules::Rule); 2]> = smallvec::SmallVec::new();
    for (at, alerted) in alerts.iter().enumerate() {
        if alerted.mode != RuleMode::Live {
            continue;
        }
        if let Some(rule) = rule_set.get(alerted.rule()).filter(|rule| rule.scope == Scope::Session) {
            aggregated.push((at, rule));
        }
    }
    if aggregated.is_empty() {
        return false;
    }
    let fired: smallvec::SmallVec<[&rules::Rule; 2]> = aggregated.iter().map(|(_, rule)| *rule).collect();
    let half_life = i64::try_from(rule_set.score_half_life.as_millis()).unwrap_or(i64::MAX);
    let incident = session.incident.get_or_insert_default();
    let verdicts = incident.add_alerts(&fired, at, session_start, half_life, policy);
    if verdicts.iter().any(|verdict| verdict.folded()) {
        let mut dropped = smallvec::SmallVec::<[usize; 2]>::new();
        for ((at, rule), verdict) in aggregated.iter().zip(&verdicts) {
            if verdict.folded() {
                dropped.push(*at);
                folded.push(rule.id.clone());
            }
        }
        let mut at = 0;
        alerts.retain(|_| {
            let keep = !dropped.contains(&at);
            at += 1;
            keep
        });
    }
    true
}

/// The record of the session `id`'s `incident` (`state` its state; the latest revision,
/// produced by `event`, which may be another session's).
fn incident_record(
    encoder: &IncidentEncoder,
    incident: &Incident,
    state: &SessionState,
    id: &str,
    event: &Event<'_>,
    rule_set: &RuleSet,
) -> Output<'static> {
    encoder.record(&IncidentRecord {
        incident,
        tenant_id: &state.tenant_id,
        delivery_execution_id: id,
        session_status: incident.session_status,
        open: !incident.session_status.is_some_and(machine::is_final),
        reasons: incident.reasons(rule_set),
        source: &event.source,
    })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Lists `state` (entry `id`) among those changed since the last drain, once.
fn mark_dirty(state: &mut SessionState, dirty: &mut Vec<String>, id: &str) {
    if !state.dirty {
        state.dirty = true;
        dirty.push(id.to_owned());
    }
}

/// The alerts the event at `position` fired when first processed, if still kept.
fn replayed(state: &SessionState, position: i64) -> Alerts {
    state.rules.as_ref().map_or_else(Alerts::new, |rules| {
        rules.fired.iter().filter(|fired| fired.position == position).map(|fired| fired.alert.clone()).collect()
    })
}

/// Each alert given encoded by `encoder` into `alerts`.
fn encode_into<'e>(encoder: &'e AlertEncoder, alerts: &'e mut Alerts) -> impl FnMut(&rules::AlertView<'_>) + 'e {
    |alert| alerts.push(encoder.record(alert))
}

/// Keeps `alerts`, fired at `position`, for a replay (when the state is written to a
/// changelog: `kept` is then the list of entries keeping alerts, and the entry's id), and
/// forgets those fired below `committed`.
fn keep_fired(
    rules: &mut SessionRules,
    alerts: &[Alerted],
    position: i64,
    committed: i64,
    kept: Option<(&mut Vec<Box<str>>, &str)>,
) {
    // In position order: when the first is not committed, none is. (`Sessions::committed`
    // lets go of them first, as every entry keeping alerts is listed: a safety net.)
    if rules.fired.first().is_some_and(|fired| fired.position < committed) {
        rules.fired.retain(|fired| fired.position >= committed);
    }
    // Listed while it keeps some: listed when it starts to.
    let listed = !rules.fired.is_empty();
    if let Some((kept, id)) = kept {
        rules.fired.extend(alerts.iter().map(|alert| Fired { position, alert: alert.clone() }));
        if !listed && !rules.fired.is_empty() {
            kept.push(Box::from(id));
        }
    }
}

/// Applies `event`, at `position` (not applied yet), to its session's `state`.
fn apply_to(
    state: &mut SessionState,
    limits: &SessionLimits,
    event: &mut Event<'_>,
    position: i64,
    now: i64,
) -> SessionView {
    state.applied_offset = position;

    // Duplicates: an id seen within the horizon is marked and counts nothing.
    state.recent_ids.forget_older(now, limits.horizon_minutes());
    let id_hash = xxh3_64(event.message_id.as_bytes());
    if state.recent_ids.contains(id_hash) {
        event.flag(Anomaly::Duplicate);
        state.touched_at = now;
        return state.view(state.status, true, true);
    }

    let before = state.status;
    let outcome = Outcome::of(event.action_status);
    let judgement = machine::judge(before, event.action, outcome, event.actor);
    // The declared status: the event's own, or a log action's status (its session status).
    let declared = event.status.filter(|status| *status != Status::Other).or(match event.action_status {
        Some(ActionStatus::Session(status)) if event.action == Some(Action::Log) => Some(status),
        _ => None,
    });
    let expected = judgement.target.or(before).filter(|status| *status != Status::Other);
    if !judgement.allowed {
        event.flag(Anomaly::IllegalTransition);
    }
    if judgement.after_final {
        event.flag(Anomaly::EventAfterFinal);
    }
    if let (Some(declared), Some(expected)) = (declared, expected)
        && declared != expected
    {
        event.flag(Anomaly::StatusMismatch);
    }
    if state.sequence > 0 && event.incident_time < state.last_seen {
        event.flag(Anomaly::OutOfOrderTime);
    }

    if outcome == Outcome::Succeeded {
        match event.action {
            Some(Action::Reset) => {
                state.pause_count = 0;
                state.security_flag_count = 0;
                state.extra_time_minutes = 0.0;
            }
            Some(Action::Pause) => state.pause_count = state.pause_count.saturating_add(1),
            Some(Action::Flag) => state.security_flag_count = state.security_flag_count.saturating_add(1),
            _ => {}
        }
        if let Some(total) = event.extra_time_total {
            state.extra_time_minutes = total;
        } else if let Some(added) = event.extra_time {
            state.extra_time_minutes += added;
        }
    }
    state.status = declared.or(judgement.target).or(before);
    state.sequence += 1;
    state.first_seen = state.first_seen.min(event.incident_time);
    state.last_seen = state.last_seen.max(event.incident_time);
    state.touched_at = now;
    state.finished_at = match state.status {
        Some(status) if machine::is_final(status) => Some(state.finished_at.unwrap_or(now)),
        _ => None,
    };
    state.recent_ids.push(id_hash, now, limits.remembered_ids);
    state.view(before, judgement.allowed && !judgement.after_final, false)
}

impl Sessions {
    /// The state of one session, if this partition holds it.
    pub fn get(&self, delivery_execution_id: &str) -> Option<&SessionState> {
        self.sessions.get(delivery_execution_id).map(|state| &**state)
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Forgets the sessions that ended `finished_ttl` ago or have been idle for `idle_ttl`;
    /// returns their ids, sorted (each one a tombstone in the changelog).
    pub fn expire(&mut self, now: i64) -> Vec<String> {
        let millis = |ttl: Duration| i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let (finished_ttl, idle_ttl) = (millis(self.limits.finished_ttl), millis(self.limits.idle_ttl));
        let mut expired = Vec::new();
        self.sessions.retain(|id, state| {
            let finished = state.finished_at.is_some_and(|at| now.saturating_sub(at) >= finished_ttl);
            let idle = now.saturating_sub(state.touched_at) >= idle_ttl;
            if finished || idle {
                expired.push(id.to_string());
            }
            !(finished || idle)
        });
        // Tenants without a session left.
        self.tenants.retain(|tenant| Arc::strong_count(tenant) > 1);
        expired.sort_unstable();
        if self.track_changes {
            self.expired.extend(expired.iter().cloned());
        }
        expired
    }

    /// The same sessions without change tracking: [`Sessions::drain_changes`] then gives
    /// nothing (for state that is not written anywhere).
    pub fn untracked(mut self) -> Sessions {
        self.track_changes = false;
        self.dirty.clear();
        self.expired.clear();
        self
    }

    /// [`Sessions::expire`], when at least [`EXPIRY_INTERVAL_MS`] passed since the last run
    /// (the first call always runs: restored sessions may be long expired).
    pub fn expire_due(&mut self, now: i64) -> Vec<String> {
        if now < self.next_expiry {
            return Vec::new();
        }
        self.next_expiry = now.saturating_add(EXPIRY_INTERVAL_MS);
        self.expire(now)
    }

    /// The changes since the last call, as changelog records of the input partition
    /// `topic`/`partition` (keyed `{topic}/{session id}`), and forgets them: the tombstones
    /// of the sessions expired first, then the state of every session changed (sorted by id).
    /// In that order a session that expired and came back before the call is restored, not
    /// forgotten.
    pub fn drain_changes(&mut self, topic: &str, partition: i32) -> Vec<Change> {
        // Nothing to allocate when nothing changed.
        if self.expired.is_empty() && self.dirty.is_empty() {
            return Vec::new();
        }
        let input = InputPartition { topic: topic.to_owned(), partition };
        let mut changes: Vec<Change> = self.expired.drain(..).map(|id| (changelog::key(topic, &id), None)).collect();
        self.dirty.sort_unstable();
        // An id is listed once per time it was dirtied: twice when it expired in between.
        self.dirty.dedup();
        for id in self.dirty.drain(..) {
            // Expired since it changed (and not back): its tombstone is above.
            let Some(state) = self.sessions.get_mut(id.as_str()) else { continue };
            state.dirty = false;
            let value = changelog::encode(state, &input);
            changes.push((changelog::key(topic, &id), Some(value)));
        }
        // The runtime drains once per commit interval, every session changed meanwhile: a
        // large capacity is given back rather than held (24 bytes per session) until the next.
        self.dirty.shrink_to(DIRTY_KEPT);
        changes
    }

    /// Applies one changelog record read back while restoring the input partition
    /// `topic`/`partition` (from the changelog partition of the same number): a session of
    /// that partition is put back, a tombstone forgets one; a record of another input topic
    /// sharing the changelog partition (its key names that topic) is ignored, tombstones
    /// included. A value must also say it belongs to this input partition. A state older
    /// (by the input offset it applied last) than the one restored already for its session
    /// is ignored: the late write of a member whose partition was revoked never overwrites
    /// the new owner's (until compaction keeps only the latest record of a key: the newer
    /// state is then gone only if the late write came after it and nothing changed since).
    pub fn restore_record(
        &mut self,
        topic: &str,
        partition: i32,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), ChangelogError> {
        let (input_topic, id) = changelog::split_key(key)?;
        if input_topic != topic {
            return Ok(());
        }
        match value {
            None => {
                self.sessions.remove(id);
            }
            Some(value) => {
                let tenants = &mut self.tenants;
                if let Some(state) =
                    self.decoder.decode(value, topic, partition, |tenant| intern(tenants, tenant), &self.encoder)?
                {
                    // Older than the state restored already: a member whose partition was
                    // revoked wrote it late, after the new owner's. The newer state stays.
                    if self.sessions.get(id).is_some_and(|newer| newer.applied_offset > state.applied_offset) {
                        return Ok(());
                    }
                    let keeps =
                        |state: &SessionState| state.rules.as_ref().is_some_and(|rules| !rules.fired.is_empty());
                    // Not listed again when the entry it replaces is.
                    if keeps(&state) && !self.sessions.get(id).is_some_and(|old| keeps(old)) {
                        self.kept.push(Box::from(id));
                    }
                    self.watermark = self.watermark.max(state.last_seen);
                    self.sessions.insert(Box::from(id), Box::new(state));
                }
            }
        }
        Ok(())
    }
}

//! The delivery execution (session) state machine: which status an action leads to, and
//! whether it is allowed from the status before it (DESIGN.md §5).
//!
//! For a succeeded action:
//!
//! | action | allowed from | target |
//! |---|---|---|
//! | `start` | initial, authorized | interacting |
//! | `resume` | suspended, authorized; closed when a proctor resumes (reopens) | interacting |
//! | `pause` | interacting | suspended |
//! | `terminate`, `termination` | initial, authorized, interacting, suspended | terminated |
//! | `submission` | interacting, suspended | closed |
//! | `reset` | any status | initial (the attempt's counters restart) |
//! | `update` | any status | no change (extra time only) |
//! | `flag`, `log`, unknown or missing action | any status | no change |
//! | `navigation` | interacting | no change |
//!
//! A failed action is allowed from any status and changes nothing. An unknown status before
//! (a session seen for the first time: upstream filters test-taker start events by default, so
//! sessions often begin mid-life) allows everything. Terminated, closed and canceled are
//! final: any action from them but a `reset` or a proctor's `resume` of a closed session is
//! an event after the end. A missing or unrecognized action status is read as succeeded
//! (upstream publishes what happened); a `log` action's status is the session status.

use crate::model::{Action, ActionStatus, Actor, Status};

/// Whether the action took place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Succeeded,
    Failed,
}

impl Outcome {
    /// From an event's action status: only an explicit `failed` is a failure.
    pub fn of(status: Option<ActionStatus>) -> Outcome {
        match status {
            Some(ActionStatus::Failed) => Outcome::Failed,
            _ => Outcome::Succeeded,
        }
    }
}

/// What the machine says of one action from one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// The status the action leads to; `None` when it does not change the status (or the
    /// status before is unknown and the action does not determine one).
    pub target: Option<Status>,
    /// The action is allowed from the status before.
    pub allowed: bool,
    /// The status before is final and the action is not one that may follow it.
    pub after_final: bool,
}

/// Terminated, closed and canceled: the session is over.
pub fn is_final(status: Status) -> bool {
    matches!(status, Status::Terminated | Status::Closed | Status::Canceled)
}

/// Judges `action` (with `outcome`, by `actor`) from `before` (`None`: unknown).
pub fn judge(before: Option<Status>, action: Option<Action>, outcome: Outcome, actor: Option<Actor>) -> Judgement {
    use Status::*;
    // An unknown status before is no status at all, for judging.
    let before = before.filter(|status| *status != Status::Other);
    let reopens = action == Some(Action::Resume) && actor == Some(Actor::Proctor) && before == Some(Closed);
    let after_final = before.is_some_and(is_final) && action != Some(Action::Reset) && !reopens;
    if outcome == Outcome::Failed {
        return Judgement { target: None, allowed: true, after_final };
    }
    let (allowed_from, target): (&[Status], Option<Status>) = match action {
        Some(Action::Start) => (&[Initial, Authorized], Some(Interacting)),
        Some(Action::Resume) if actor == Some(Actor::Proctor) => (&[Suspended, Authorized, Closed], Some(Interacting)),
        Some(Action::Resume) => (&[Suspended, Authorized], Some(Interacting)),
        Some(Action::Pause) => (&[Interacting], Some(Suspended)),
        Some(Action::Terminate | Action::Termination) => {
            (&[Initial, Authorized, Interacting, Suspended], Some(Terminated))
        }
        Some(Action::Submission) => (&[Interacting, Suspended], Some(Closed)),
        Some(Action::Reset) => (Status::ALL, Some(Initial)),
        Some(Action::Navigation) => (&[Interacting], None),
        Some(Action::Update | Action::Flag | Action::Log | Action::Other) | None => (Status::ALL, None),
    };
    let allowed = before.is_none_or(|status| allowed_from.contains(&status));
    Judgement { target, allowed, after_final }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (status before, action, outcome) combination against a table written out by
    /// hand: per action, one letter per status before, in the order
    /// `? initial authorized interacting suspended terminated closed canceled` (`?` unknown):
    /// `y` allowed, `n` illegal, `F` allowed but after the end, `X` illegal and after the end.
    #[test]
    fn every_status_action_and_outcome() {
        let befores =
            [None, Some(Status::Initial), Some(Status::Authorized), Some(Status::Interacting), Some(Status::Suspended)]
                .into_iter()
                .chain([Some(Status::Terminated), Some(Status::Closed), Some(Status::Canceled)]);
        let befores: Vec<Option<Status>> = befores.collect();
        // (action, actor, succeeded row, target)
        type Row = (Option<Action>, Option<Actor>, &'static str, Option<Status>);
        let table: &[Row] = &[
            (Some(Action::Start), Some(Actor::TestTaker), "yyynnXXX", Some(Status::Interacting)),
            (Some(Action::Resume), Some(Actor::TestTaker), "ynynyXXX", Some(Status::Interacting)),
            (Some(Action::Resume), Some(Actor::Proctor), "ynynyXyX", Some(Status::Interacting)),
            (Some(Action::Pause), Some(Actor::TestTaker), "ynnynXXX", Some(Status::Suspended)),
            (Some(Action::Pause), Some(Actor::Proctor), "ynnynXXX", Some(Status::Suspended)),
            (Some(Action::Terminate), Some(Actor::Proctor), "yyyyyXXX", Some(Status::Terminated)),
            (Some(Action::Termination), Some(Actor::System), "yyyyyXXX", Some(Status::Terminated)),
            (Some(Action::Submission), Some(Actor::TestTaker), "ynnyyXXX", Some(Status::Closed)),
            (Some(Action::Reset), Some(Actor::Proctor), "yyyyyyyy", Some(Status::Initial)),
            (Some(Action::Update), Some(Actor::Proctor), "yyyyyFFF", None),
            (Some(Action::Flag), Some(Actor::TestTaker), "yyyyyFFF", None),
            (Some(Action::Flag), Some(Actor::Proctor), "yyyyyFFF", None),
            (Some(Action::Log), Some(Actor::DeliverFe), "yyyyyFFF", None),
            (Some(Action::Navigation), Some(Actor::TestTaker), "ynnynXXX", None),
            (Some(Action::Other), Some(Actor::TestTaker), "yyyyyFFF", None),
            (None, None, "yyyyyFFF", None),
        ];
        for (action, actor, row, target) in table {
            for (before, letter) in befores.iter().zip(row.chars()) {
                let got = judge(*before, *action, Outcome::Succeeded, *actor);
                let want = match letter {
                    'y' => (true, false),
                    'n' => (false, false),
                    'F' => (true, true),
                    'X' => (false, true),
                    _ => unreachable!(),
                };
                assert_eq!((got.allowed, got.after_final), want, "{action:?} by {actor:?} from {before:?}");
                assert_eq!(got.target, *target, "{action:?} by {actor:?} from {before:?}");
                // A failed action changes nothing and is always allowed; after the end it
                // is still after the end.
                let failed = judge(*before, *action, Outcome::Failed, *actor);
                let reopen = *action == Some(Action::Resume)
                    && *actor == Some(Actor::Proctor)
                    && *before == Some(Status::Closed);
                let after_end = before.is_some_and(is_final) && *action != Some(Action::Reset) && !reopen;
                assert_eq!(
                    failed,
                    Judgement { target: None, allowed: true, after_final: after_end },
                    "failed {action:?} from {before:?}"
                );
            }
        }
        // Every action of the vocabulary is in the table, by some actor.
        for action in Action::ALL {
            assert!(table.iter().any(|(a, ..)| *a == Some(*action)), "{action:?} missing from the table");
        }
    }

    #[test]
    fn only_an_explicit_failure_is_a_failure() {
        assert_eq!(Outcome::of(Some(ActionStatus::Failed)), Outcome::Failed);
        for status in [None, Some(ActionStatus::Succeeded), Some(ActionStatus::Other)] {
            assert_eq!(Outcome::of(status), Outcome::Succeeded, "{status:?}");
        }
        assert_eq!(Outcome::of(Some(ActionStatus::Session(Status::Interacting))), Outcome::Succeeded);
    }

    #[test]
    fn an_unrecognized_status_before_is_unknown() {
        let judgement = judge(Some(Status::Other), Some(Action::Resume), Outcome::Succeeded, Some(Actor::TestTaker));
        assert_eq!(judgement, Judgement { target: Some(Status::Interacting), allowed: true, after_final: false });
    }
}

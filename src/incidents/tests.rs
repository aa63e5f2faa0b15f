use super::*;
use crate::rules::RuleSet;

const T0: i64 = 1_767_261_300_000;
const MINUTE: i64 = 60_000;
const HALF_LIFE: i64 = 30 * MINUTE;

fn rules() -> RuleSet {
    let rule = |id: &str, severity: &str, extra: &str| {
        format!(
            "[[rule]]\nid = \"{id}\"\nseverity = \"{severity}\"\ntitle = \"Title of {id}\"\nsummary = \"s\"\n{extra}\n\
             [[rule.match]]\nactions = [\"flag\"]\n"
        )
    };
    let text = [
        rule("flag", "medium", "weight = 10\nfamily = \"security\""),
        rule("screenshot", "high", "weight = 30\nfamily = \"security\""),
        rule("lockdown", "critical", "weight = 20\nfamily = \"security\""),
        rule("pauses", "medium", "weight = 20"),
        rule("defaulted", "high", ""),
    ]
    .concat();
    RuleSet::from_toml("test", &text).unwrap()
}

fn add(incident: &mut Incident, rules: &RuleSet, ids: &[&str], at: i64, policy: Policy) -> Vec<Verdict> {
    let fired: Vec<&Rule> = ids.iter().map(|id| rules.get(id).unwrap()).collect();
    incident.add_alerts(&fired, at, T0, HALF_LIFE, &policy).to_vec()
}

#[test]
fn priority_bands_follow_the_score_and_a_critical_alert_floors_it_at_high() {
    let bands = [(0, Priority::None), (1, Priority::Low), (29, Priority::Low), (30, Priority::Medium)];
    for (score, priority) in
        bands.into_iter().chain([(59, Priority::Medium), (60, Priority::High), (84, Priority::High)])
    {
        assert_eq!(Priority::of_score(score), priority, "{score}");
    }
    assert_eq!((Priority::of_score(85), Priority::of_score(100)), (Priority::Critical, Priority::Critical));
    let rules = rules();
    let mut incident = Incident::default();
    add(&mut incident, &rules, &["lockdown"], T0, Policy::default());
    assert_eq!((incident.score(), incident.priority()), (20, Priority::High), "20 points, floored at high");
    // A high alert floors it too; a medium one does not.
    let mut high = Incident::default();
    add(&mut high, &rules, &["screenshot"], T0, Policy::default());
    assert_eq!((high.score(), high.priority()), (30, Priority::High), "30 points, floored at high");
    let mut medium = Incident::default();
    add(&mut medium, &rules, &["pauses"], T0, Policy::default());
    assert_eq!(medium.priority(), Priority::Low, "20 points of a medium rule: no floor");
    // A high alert folded by a critical one of its family (same event): floored by the one
    // published.
    let mut folded = Incident::default();
    let verdicts = add(&mut folded, &rules, &["screenshot", "lockdown"], T0, Policy::default());
    assert_eq!(verdicts, [Verdict::FoldedByFamily, Verdict::Publish]);
    assert_eq!(folded.priority(), Priority::High);
    assert_eq!(rules.get("defaulted").unwrap().weight, 35, "a high rule without a weight");
    for priority in Priority::ALL {
        assert_eq!(Priority::from_raw(priority.to_raw()), Some(priority));
    }
    assert_eq!(Priority::from_raw(99), None);
}

#[test]
fn a_burst_adds_up_and_alerts_spread_over_a_sitting_do_not() {
    let rules = rules();
    let policy = Policy::default();
    let mut burst = Incident::default();
    for minute in 0..4 {
        add(&mut burst, &rules, &["pauses"], T0 + minute * MINUTE, policy);
    }
    // 20 points four times within three minutes: about 76 (decay is small).
    assert!((70..=80).contains(&burst.score()), "{}", burst.score());
    assert_eq!(burst.priority(), Priority::High);

    let mut spread = Incident::default();
    for half_hour in 0..4 {
        add(&mut spread, &rules, &["pauses"], T0 + half_hour * HALF_LIFE, policy);
    }
    // 20, 30, 35, 37.5: the level converges to twice the weight.
    assert_eq!(spread.score(), 38, "{spread:?}");
    assert_eq!(spread.priority(), Priority::Medium);
    assert_eq!((spread.first_alert_at, spread.last_alert_at), (Some(T0), Some(T0 + 3 * HALF_LIFE)));
}

#[test]
fn the_score_is_the_peak_and_a_late_alert_counts_decayed() {
    let rules = rules();
    let mut incident = Incident::default();
    add(&mut incident, &rules, &["screenshot"], T0, Policy::default());
    add(&mut incident, &rules, &["pauses"], T0 + 4 * HALF_LIFE, Policy::default());
    assert_eq!(incident.score(), 30, "the peak stays: 30 then 30/16 + 20");
    let mut late = Incident::default();
    add(&mut late, &rules, &["pauses"], T0 + HALF_LIFE, Policy::default());
    add(&mut late, &rules, &["pauses"], T0, Policy::default());
    assert_eq!(late.score(), 30, "20 + 20 decayed by one half-life");
    assert_eq!((late.first_alert_at, late.last_alert_at), (Some(T0), Some(T0 + HALF_LIFE)));
}

#[test]
fn one_event_publishes_one_alert_per_family_the_most_severe() {
    let rules = rules();
    let mut incident = Incident::default();
    let verdicts = add(&mut incident, &rules, &["flag", "screenshot", "pauses"], T0, Policy::default());
    assert_eq!(verdicts, [Verdict::FoldedByFamily, Verdict::Publish, Verdict::Publish]);
    assert_eq!((incident.alert_count, incident.folded), (3, 1));
    assert_eq!(incident.score(), 50, "the folded flag adds no points");
    let verdicts = add(&mut incident, &rules, &["lockdown", "screenshot"], T0, Policy::default());
    assert_eq!(verdicts, [Verdict::Publish, Verdict::FoldedByFamily]);
    let tallies: Vec<(&str, u32, u32)> = incident.by_rule.iter().map(|t| (&*t.rule, t.count, t.points)).collect();
    assert_eq!(tallies, [("flag", 1, 0), ("lockdown", 1, 20), ("pauses", 1, 20), ("screenshot", 2, 30)]);
    assert_eq!(
        incident.reasons(&rules),
        ["Title of screenshot ×2 (30 points)", "Title of lockdown ×1 (20 points)", "Title of pauses ×1 (20 points)"]
    );
}

#[test]
fn beyond_the_budget_alerts_are_folded_with_their_points_except_critical_ones_until_the_next_hour() {
    let rules = rules();
    let policy = Policy { max_alerts_per_hour: 2 };
    let mut incident = Incident::default();
    let mut verdicts = Vec::new();
    for minute in 0..3 {
        verdicts.extend(add(&mut incident, &rules, &["pauses"], T0 + minute * MINUTE, policy));
    }
    verdicts.extend(add(&mut incident, &rules, &["lockdown"], T0 + 4 * MINUTE, policy));
    assert_eq!(verdicts, [Verdict::Publish, Verdict::Publish, Verdict::FoldedByBudget, Verdict::Publish]);
    assert_eq!((incident.alert_count, incident.folded), (4, 1));
    assert_eq!(incident.by_rule.iter().find(|t| &*t.rule == "pauses").map(|t| t.points), Some(60));
    // The session's second hour has a budget of its own.
    assert_eq!(add(&mut incident, &rules, &["pauses"], T0 + 61 * MINUTE, policy), [Verdict::Publish]);
    // No budget.
    let mut unbounded = Incident::default();
    for minute in 0..30 {
        let verdicts =
            add(&mut unbounded, &rules, &["pauses"], T0 + minute * MINUTE, Policy { max_alerts_per_hour: 0 });
        assert_eq!(verdicts, [Verdict::Publish]);
    }
    assert_eq!(unbounded.score(), 100, "at most 100");
}

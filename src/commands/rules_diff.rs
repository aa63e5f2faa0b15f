//! `acs-stream rules-diff`: what a new rules file would fire, offline, against the rules in
//! force. The core runs twice over the same JSON lines (as `process` does: one partition seen
//! whole, tenant rules counted in place), once with each rule set; per rule, the alerts each
//! fires, the scopes (sessions, or tenants for a tenant-scoped rule) whose alerts differ, and
//! a few examples. Shadow rules count like live ones: trying them is what this is for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::encode::Format;
use crate::model::Source;
use crate::pipeline::{Outcome, Pipeline, Record};
use crate::rules::{Alert, RuleMode, RuleSet};

/// Examples shown by default.
pub const EXAMPLES: usize = 5;

/// One alert as compared: its id (deterministic: the same rule, scope and first evidence
/// give the same id) and what a reader needs to recognize it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Fired {
    fired_at: i64,
    alert_id: String,
    summary: String,
}

/// The alerts of one rule in one scope (a session, or a tenant).
type ByScope = BTreeMap<String, BTreeSet<Fired>>;

/// What one rule set fired over the input.
#[derive(Debug, Default)]
struct Run {
    version: Arc<str>,
    per_rule: BTreeMap<String, (RuleMode, ByScope)>,
}

/// The comparison.
#[derive(Debug)]
pub struct RulesDiff {
    pub records: u64,
    pub events: u64,
    current: Run,
    new: Run,
    examples: usize,
}

/// One rule's line of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLine {
    pub rule: String,
    /// The mode in the new set (else in the current one).
    pub mode: RuleMode,
    /// Alerts fired; `None` when the set has no such rule.
    pub current: Option<usize>,
    pub new: Option<usize>,
    /// Scopes whose alerts differ.
    pub scopes_differing: usize,
}

impl RulesDiff {
    /// Per rule, in id order.
    pub fn lines(&self) -> Vec<RuleLine> {
        let rules: BTreeSet<&String> = self.current.per_rule.keys().chain(self.new.per_rule.keys()).collect();
        rules
            .into_iter()
            .map(|rule| {
                let (current, new) = (self.current.per_rule.get(rule), self.new.per_rule.get(rule));
                let empty = ByScope::new();
                let (a, b) = (current.map_or(&empty, |(_, s)| s), new.map_or(&empty, |(_, s)| s));
                let scopes: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                RuleLine {
                    rule: rule.clone(),
                    mode: new.or(current).map_or(RuleMode::Live, |(mode, _)| *mode),
                    current: current.map(|(_, s)| s.values().map(BTreeSet::len).sum()),
                    new: new.map(|(_, s)| s.values().map(BTreeSet::len).sum()),
                    scopes_differing: scopes.into_iter().filter(|scope| a.get(*scope) != b.get(*scope)).count(),
                }
            })
            .collect()
    }
}

/// Runs `pipeline` with `current` then with `new` over the JSON lines of `input`, at
/// processing time `now_ms`; `examples`: differing scopes shown.
pub fn diff(
    pipeline: &Pipeline,
    current: RuleSet,
    new: RuleSet,
    input: &[u8],
    now_ms: i64,
    examples: usize,
) -> RulesDiff {
    let base = pipeline.clone().with_format(Format::Json).with_inline_tenants();
    let (records, events, current) = run(&base.clone().with_rules(current), input, now_ms);
    let (_, _, new) = run(&base.with_rules(new), input, now_ms);
    RulesDiff { records, events, current, new, examples }
}

fn run(pipeline: &Pipeline, input: &[u8], now_ms: i64) -> (u64, u64, Run) {
    let rules = pipeline.rules();
    let mut out = Run { version: rules.version.clone(), per_rule: BTreeMap::new() };
    for rule in rules.rules() {
        out.per_rule.insert(rule.id.to_string(), (rule.mode, ByScope::new()));
    }
    let topic: Arc<str> = Arc::from("input");
    let mut sessions = pipeline.sessions().untracked();
    let (mut records, mut events) = (0, 0);
    // A line ends at `\n` (a `\r` before it belongs to the ending), as in `process`.
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    let lines = (!body.is_empty()).then(|| body.split(|byte| *byte == b'\n')).into_iter().flatten();
    for (offset, line) in (0..).zip(lines) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        records += 1;
        let source = Source { topic: topic.clone(), partition: 0, offset };
        let Outcome::Event { alerts, .. } = pipeline.process(&Record::new(None, line, source), &mut sessions, now_ms)
        else {
            continue;
        };
        events += 1;
        for alert in alerts.iter().filter_map(|alerted| alerted.alert()) {
            let Alert { rule_id, alert_id, summary, fired_at, tenant_id, delivery_execution_id, .. } = alert;
            let scope = delivery_execution_id.unwrap_or_else(|| format!("tenant {tenant_id}"));
            let entry = out.per_rule.entry(rule_id.to_string()).or_default();
            entry.1.entry(scope).or_default().insert(Fired { fired_at, alert_id, summary });
        }
    }
    (records, events, out)
}

impl fmt::Display for RulesDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} records ({} events); current rules {}, new rules {}",
            self.records, self.events, self.current.version, self.new.version
        )?;
        writeln!(f, "{:<32} {:<7} {:>9} {:>9} {:>16}", "rule", "mode", "current", "new", "scopes differing")?;
        let count = |n: Option<usize>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let lines = self.lines();
        for line in &lines {
            let note = match (line.current, line.new) {
                (None, Some(_)) => "  (new rule)",
                (Some(_), None) => "  (removed)",
                _ => "",
            };
            writeln!(
                f,
                "{:<32} {:<7} {:>9} {:>9} {:>16}{note}",
                line.rule,
                line.mode.as_str(),
                count(line.current),
                count(line.new),
                line.scopes_differing
            )?;
        }
        let mut shown = 0;
        for line in lines.iter().filter(|line| line.scopes_differing > 0) {
            let empty = ByScope::new();
            let (a, b) = (
                self.current.per_rule.get(&line.rule).map_or(&empty, |(_, s)| s),
                self.new.per_rule.get(&line.rule).map_or(&empty, |(_, s)| s),
            );
            let scopes: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for scope in scopes.into_iter().filter(|scope| a.get(*scope) != b.get(*scope)) {
                if shown == self.examples {
                    return Ok(());
                }
                if shown == 0 {
                    writeln!(f, "examples:")?;
                }
                shown += 1;
                let describe = |fired: Option<&BTreeSet<Fired>>| match fired.and_then(|set| set.first()) {
                    None => "none".to_owned(),
                    Some(first) => format!(
                        "{} (first at {}: {:?})",
                        fired.map_or(0, BTreeSet::len),
                        time(first.fired_at),
                        first.summary
                    ),
                };
                writeln!(f, "  {} in {scope}:", line.rule)?;
                writeln!(f, "    current: {}", describe(a.get(scope)))?;
                writeln!(f, "    new:     {}", describe(b.get(scope)))?;
            }
        }
        Ok(())
    }
}

/// Epoch milliseconds as RFC 3339 (UTC).
fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::ReasonCatalog;

    const RULES: &str = "[[rule]]\nid = \"pauses\"\nseverity = \"low\"\ntitle = \"t\"\nsummary = \"{count} pauses in {deliveryExecutionId}\"\n\
                         [rule.threshold]\ncount = THRESHOLD\nwindow = \"10m\"\n[[rule.match]]\nactions = [\"pause\"]\n";

    fn rules(threshold: u32, extra: &str) -> RuleSet {
        RuleSet::from_toml("test", &(RULES.replace("THRESHOLD", &threshold.to_string()) + extra)).unwrap()
    }

    #[test]
    fn each_rule_is_compared_with_the_scopes_that_differ() {
        let pause = |session: &str, second: i64| {
            format!(
                r#"{{"deliveryExecutionId":"u#{session}#h#acme","messageId":"{session}{second}","incidentTime":{},"action":"pause","actionStatus":"succeeded"}}"#,
                1_767_261_000 + second
            )
        };
        // Session a pauses 3 times, session b twice.
        let input = [pause("a", 1), pause("a", 2), pause("a", 3), pause("b", 1), pause("b", 2), "not json".to_owned()]
            .join("\n")
            + "\n";
        let pipeline = Pipeline::new(&Config::defaults(), ReasonCatalog::builtin()).unwrap();
        let shadow = "[[rule]]\nid = \"flags\"\nmode = \"shadow\"\nseverity = \"low\"\ntitle = \"t\"\nsummary = \"s\"\n\
                      [[rule.match]]\nactions = [\"flag\"]\n";
        let diff = diff(&pipeline, rules(3, ""), rules(2, shadow), input.as_bytes(), 1_767_261_400_000, 5);
        assert_eq!((diff.records, diff.events), (6, 5));
        assert_eq!(
            diff.lines(),
            [
                RuleLine {
                    rule: "flags".into(),
                    mode: RuleMode::Shadow,
                    current: None,
                    new: Some(0),
                    scopes_differing: 0
                },
                // At 2 both sessions fire (a at its second pause: its third starts a new count).
                RuleLine {
                    rule: "pauses".into(),
                    mode: RuleMode::Live,
                    current: Some(1),
                    new: Some(2),
                    scopes_differing: 2
                },
            ]
        );
        let text = diff.to_string();
        assert!(text.contains("pauses in u#b#h#acme"), "{text}");
        assert!(text.contains("(new rule)") && text.contains("examples:"), "{text}");
    }
}

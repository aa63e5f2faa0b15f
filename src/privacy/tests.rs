use std::sync::Arc;

use super::*;
use crate::model::{ReasonCatalog, Source};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_767_261_400_000;

fn policy(default: Mode, tenants: &[(&str, Mode)], ip: IpForm, user_agent: UserAgentForm) -> Privacy {
    let tenants = tenants.iter().map(|(tenant, mode)| (Box::from(*tenant), *mode)).collect();
    Privacy::new(default, tenants, ip, user_agent, DeadLetterValue::Omit, Some(Key::new(KEY).unwrap())).unwrap()
}

fn event(value: &str) -> Event<'_> {
    let decoder = crate::config::Config::defaults().decoder();
    let source = Source { topic: Arc::from("raw"), partition: 0, offset: 0 };
    let mut event = decoder.decode(value.as_bytes(), &source, NOW).unwrap();
    crate::enrich::enrich(&mut event, &ReasonCatalog::builtin());
    event
}

const RECORD: &str = r#"{"deliveryExecutionId":"eod.nhoj#d1#h1#eu","testTaker":"john.doe","login":"john.doe",
    "name":"John Doe","ip":"10.1.2.3","userAgent":"Mozilla/5.0 (X11) AppleWebKit/537.36 Chrome/120.0.1 Safari/537.36",
    "actor":"test-taker","action":"pause","actionStatus":"succeeded","incidentTime":1767261300,
    "reasonCode":40999,"reasonMessage":"[deliver-fe] JOHN DOE (john.doe) at 10.1.2.3 lost focus [john.doe]"}"#;

#[test]
fn pseudonymize_replaces_every_personal_value_with_a_stable_token() {
    let privacy = policy(Mode::Keep, &[("eu", Mode::Pseudonymize)], IpForm::Token, UserAgentForm::Token);
    let mut protected = event(RECORD);
    privacy.protect(&mut protected);
    let user = protected.login.clone().unwrap();
    assert!(user.starts_with("ps_"), "{user}");
    assert_eq!(protected.test_taker.as_deref(), Some(&*user), "one person, one token");
    assert_eq!(protected.delivery_execution_id, format!("{user}#d1#h1#eu"), "the id's user segment too");
    for value in [&protected.name, &protected.ip, &protected.user_agent] {
        assert!(value.as_deref().is_some_and(|v| v.starts_with("ps_")), "{value:?}");
    }
    assert_ne!(protected.name.as_deref(), Some(&*user));
    let message = protected.reason_message.as_deref().unwrap();
    assert!(!message.to_ascii_lowercase().contains("john") && !message.contains("10.1.2.3"), "{message}");
    assert!(message.contains(&*user), "{message}");
    assert_eq!(protected.privacy.as_ref().unwrap().mode, "pseudonymize");
    assert_eq!(&*protected.privacy.as_ref().unwrap().key_id, Key::new(KEY).unwrap().id());
    // Stable: the same values, the same tokens, from another instance.
    let mut again = event(RECORD);
    policy(Mode::Keep, &[("eu", Mode::Pseudonymize)], IpForm::Token, UserAgentForm::Token).protect(&mut again);
    assert_eq!(again, protected);
}

#[test]
fn drop_removes_the_fields_and_hides_them_in_text() {
    let privacy = policy(Mode::Drop, &[], IpForm::Token, UserAgentForm::Token);
    let mut dropped = event(RECORD);
    privacy.protect(&mut dropped);
    assert_eq!(
        (&dropped.login, &dropped.test_taker, &dropped.actor_id, &dropped.name, &dropped.ip, &dropped.user_agent),
        (&None, &None, &None, &None, &None, &None)
    );
    assert!(dropped.delivery_execution_id.starts_with("ps_"), "the key cannot be dropped: a token");
    assert_eq!(
        dropped.reason_message.as_deref(),
        Some("[deliver-fe] [hidden] ([hidden]) at [hidden] lost focus [[hidden]]")
    );
    assert_eq!(dropped.privacy.as_ref().unwrap().mode, "drop");
}

#[test]
fn networks_and_browsers_may_stand_for_ips_and_user_agents() {
    let privacy = policy(Mode::Pseudonymize, &[], IpForm::Network, UserAgentForm::Browser);
    let mut event = event(RECORD);
    privacy.protect(&mut event);
    assert_eq!((event.ip.as_deref(), event.user_agent.as_deref()), (Some("10.1.2.0/24"), Some("Chrome 120")));
    assert!(event.reason_message.as_deref().unwrap().contains("at 10.1.2.0/24 lost"));
}

#[test]
fn other_tenants_are_untouched_and_tenants_get_different_tokens() {
    let privacy = policy(
        Mode::Keep,
        &[("eu", Mode::Pseudonymize), ("eu2", Mode::Pseudonymize)],
        IpForm::Token,
        UserAgentForm::Token,
    );
    let kept_record = RECORD.replace("#eu\"", "#us\"");
    let mut kept = event(&kept_record);
    let before = kept.clone();
    privacy.protect(&mut kept);
    assert_eq!(kept, before);
    let other_record = RECORD.replace("#eu\"", "#eu2\"");
    let (mut a, mut b) = (event(RECORD), event(&other_record));
    privacy.protect(&mut a);
    privacy.protect(&mut b);
    assert_ne!(a.login, b.login);
}

#[test]
fn structured_data_and_tags_are_searched_too() {
    let record = r#"{"deliveryExecutionId":"u#d1#h1#eu","login":"jane.roe","name":"Jane \"JR\" Roe","incidentTime":1767261300,
        "reasonCode":20999,"reasonMessage":"[Lockdown Browser] Breach. Device info: {\"user\":\"jane.roe\",\"owner\":\"Jane \\\"JR\\\" Roe\"}. Process list: jane.roe-notes, x."}"#;
    let privacy = policy(Mode::Pseudonymize, &[], IpForm::Token, UserAgentForm::Token);
    let mut event = event(record);
    assert!(event.signal.as_ref().unwrap().data.is_some(), "the fixture has device data");
    privacy.protect(&mut event);
    let signal = event.signal.as_ref().unwrap();
    let shown = format!("{:?} {:?}", signal, event.reason_message);
    assert!(!shown.contains("jane") && !shown.contains("Roe"), "{shown}");
    assert!(signal.data.is_some(), "still valid JSON");
}

#[test]
fn protection_needs_a_key_and_dead_letters_follow_the_mode() {
    let tenants: HashMap<Box<str>, Mode> = [(Box::from("eu"), Mode::Drop)].into_iter().collect();
    let error = Privacy::new(Mode::Keep, tenants, IpForm::Token, UserAgentForm::Token, DeadLetterValue::Omit, None);
    assert_eq!(error.unwrap_err(), PrivacyError::NoKey("eu".into(), "drop"));
    let privacy = policy(Mode::Keep, &[("eu", Mode::Pseudonymize)], IpForm::Token, UserAgentForm::Token);
    assert!(privacy.dead_letter_omission(Some("eu")).is_some());
    assert_eq!(privacy.dead_letter_omission(Some("us")), None);
    assert_eq!(privacy.dead_letter_omission(None), None, "unknown tenant: the default mode (keep)");
    assert!(Privacy::default().dead_letter_omission(Some("eu")).is_none());
}

#[test]
fn text_is_replaced_ignoring_ascii_case_longest_first() {
    let mut hidden = Hidden::default();
    for (value, replacement) in [("Jon", "x"), ("jön", "y"), ("Jon Doe", "z")] {
        hidden.add(value, replacement);
    }
    hidden.pairs.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
    assert_eq!(hidden.replaced("JON jon, Jon Doe, jön JÖN é").as_deref(), Some("x x, z, y JÖN é"), "non-ASCII: exact");
    assert_eq!(hidden.replaced("nobody"), None);
    assert_eq!(percent_decode("a%40b").as_deref(), Some("a@b"));
    assert_eq!(percent_decode("ab"), None);
}

#[test]
fn occurrences_do_not_overlap_and_find_the_last_one() {
    let found: Vec<usize> = occurrences(b"aaaa xaax aa", b"aa").collect();
    assert_eq!(found, [0, 2, 6, 10]);
    assert_eq!(occurrences(b"abc", b"abcd").count(), 0);
    assert_eq!(occurrences(b"", b"a").count(), 0);
}

//! Reason message → typed security signal.
//!
//! Recognition goes by the bracket tag that opens the message (`[Pause On Blur] ...`),
//! never by the sentence after it: upstream's sentences vary and the spec's examples are
//! paraphrases. The only untagged message upstream emits is "IP address change detected.".
//! A proctor's untagged text is a comment; 40999 payloads holding JSON or XML are parsed.

use crate::model::{Actor, Anomaly, DataFormat, JsonText, LockdownIssue, PauseAbout, Signal, SignalKind};

use super::payload;

/// Longest bracket tag looked for at the start of a message.
const MAX_TAG_LEN: usize = 48;

/// What a message says: a signal, or an anomaly about an unknown tag, or nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recognized {
    pub signal: Option<Signal>,
    pub anomaly: Option<Anomaly>,
}

/// The reason code of navigation / interaction payloads (and technical logs).
const PAYLOAD_CODE: i64 = 40999;

/// Recognizes the signal in a reason message sent by `actor` with reason `code`.
pub fn recognize(message: Option<&str>, actor: Option<Actor>, code: Option<i64>) -> Recognized {
    let Some(message) = message.map(str::trim).filter(|m| !m.is_empty()) else {
        return Recognized::default();
    };
    let proctor = actor == Some(Actor::Proctor);
    let found = |signal: Signal| Recognized { signal: Some(signal), anomaly: None };
    match split_tag(message) {
        Some((tag, text)) => match tag_kind(tag) {
            Some(kind) => found(detail(kind, text)),
            None if proctor => found(Signal::new(SignalKind::ProctorComment)),
            None => Recognized { signal: None, anomaly: Some(Anomaly::UnknownMessageTag) },
        },
        None => {
            if is_ip_change(message) {
                found(Signal::new(SignalKind::IpChange))
            } else if let Some((format, data)) = (code == Some(PAYLOAD_CODE)).then(|| payload::parse(message)).flatten()
            {
                found(with_data(Signal::new(SignalKind::StructuredData), format, data))
            } else if proctor {
                found(Signal::new(SignalKind::ProctorComment))
            } else {
                Recognized::default()
            }
        }
    }
}

/// `[Tag] rest` → (`Tag`, `rest`). A tag is words (letters, digits, space, `-`, `_`, `.`):
/// a message that opens a JSON array (`[{"to": ...}]`) has no tag.
fn split_tag(message: &str) -> Option<(&str, &str)> {
    let inner = message.strip_prefix('[')?;
    let end = inner.bytes().take(MAX_TAG_LEN + 1).position(|b| b == b']')?;
    let tag = inner[..end].trim();
    let tag_like = !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b" -_.".contains(&b));
    tag_like.then(|| (tag, inner[end + 1..].trim()))
}

fn tag_kind(tag: &str) -> Option<SignalKind> {
    const TAGS: &[(&str, SignalKind)] = &[
        ("Pause On Blur", SignalKind::PauseOnBlur),
        ("Full Screen", SignalKind::FullScreen),
        ("Fullscreen", SignalKind::FullScreen),
        ("Disable Right Click", SignalKind::DisableRightClick),
        ("Disable Commands", SignalKind::DisableCommands),
        ("Prevent Screenshot", SignalKind::PreventScreenshot),
        ("Lockdown Browser", SignalKind::LockdownBrowser),
        ("Security Plugin", SignalKind::SecurityPlugin),
        ("deliver-fe", SignalKind::DeliverFe),
        ("realtime", SignalKind::Realtime),
    ];
    TAGS.iter().find(|(name, _)| name.eq_ignore_ascii_case(tag)).map(|&(_, kind)| kind)
}

fn detail(kind: SignalKind, text: &str) -> Signal {
    let mut signal = Signal::new(kind);
    match kind {
        SignalKind::DisableCommands => signal.command = forbidden_command(text),
        SignalKind::SecurityPlugin => signal.about = Some(pause_about(text)),
        SignalKind::LockdownBrowser => {
            let issue = lockdown_issue(text);
            signal.issue = Some(issue);
            signal.processes = process_list(text);
            if let Some(info) = device_info(text) {
                signal = with_data(signal, DataFormat::Json, info);
            }
        }
        SignalKind::DeliverFe | SignalKind::Realtime => {
            signal.tags = trailing_tags(text);
            if let Some((format, data)) = payload::parse(text) {
                signal = with_data(signal, format, data);
            }
        }
        _ => {}
    }
    signal
}

fn with_data(mut signal: Signal, format: DataFormat, data: JsonText) -> Signal {
    signal.data = Some(data);
    signal.data_format = Some(format);
    signal
}

fn is_ip_change(message: &str) -> bool {
    // Upstream's only untagged message: "IP address change detected."
    const PREFIX: &str = "ip address change";
    message.get(..PREFIX.len()).is_some_and(|start| start.eq_ignore_ascii_case(PREFIX))
}

/// The command in ``… forbidden command: `copy`.``, or the word after `command:`.
fn forbidden_command(text: &str) -> Option<String> {
    if let Some(start) = text.find('`') {
        let rest = &text[start + 1..];
        if let Some(end) = rest.find('`') {
            let command = rest[..end].trim();
            if !command.is_empty() {
                return Some(command.to_ascii_lowercase());
            }
        }
    }
    let lower = text.to_ascii_lowercase();
    let after = &lower[lower.find("command:")? + "command:".len()..];
    let word: String = after.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    (!word.is_empty()).then_some(word)
}

fn mentions_full_screen(text: &str) -> bool {
    ["full screen", "fullscreen", "full-screen"].iter().any(|n| find_ignore_case(text, n).is_some())
}

fn pause_about(text: &str) -> PauseAbout {
    if mentions_full_screen(text) {
        return PauseAbout::FullScreen;
    }
    const LEAVING: [&str; 6] = ["tab", "app", "application", "window", "blur", "focus"];
    let mut words = text.split(|c: char| !c.is_alphanumeric());
    if words.any(|w| LEAVING.iter().any(|l| l.eq_ignore_ascii_case(w))) {
        PauseAbout::TabSwitch
    } else {
        PauseAbout::Other
    }
}

fn lockdown_issue(text: &str) -> LockdownIssue {
    let has = |needles: &[&str]| needles.iter().any(|n| find_ignore_case(text, n).is_some());
    if has(&["breach"]) {
        LockdownIssue::Breach
    } else if has(&["version"]) {
        LockdownIssue::Version
    } else if has(&["process"]) {
        LockdownIssue::Processes
    } else if has(&["missing", "not detected", "not found", "not running", "not installed", "not used", "required"]) {
        LockdownIssue::Missing
    } else {
        LockdownIssue::Other
    }
}

/// `Device info: {json}.` → the JSON value.
fn device_info(text: &str) -> Option<JsonText> {
    let at = find_ignore_case(text, "device info:")?;
    let rest = text[at + "device info:".len()..].trim_start();
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<&serde_json::value::RawValue>();
    values.next()?.ok().map(|raw| JsonText::written(raw.get().to_owned()))
}

/// `Process list: a, b.` → `["a", "b"]`.
fn process_list(text: &str) -> Vec<String> {
    let Some(at) = find_ignore_case(text, "process list:") else {
        return Vec::new();
    };
    let rest = text[at + "process list:".len()..].trim();
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    rest.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
}

fn find_ignore_case(text: &str, needle: &str) -> Option<usize> {
    text.as_bytes().windows(needle.len()).position(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// `... [item-5][recoverable]` → `["item-5", "recoverable"]`.
fn trailing_tags(text: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut rest = text.trim_end();
    while let Some(body) = rest.strip_suffix(']') {
        let Some(open) = body.rfind('[') else { break };
        let tag = &body[open + 1..];
        let plain = !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:#".contains(&b));
        if !plain {
            break;
        }
        tags.push(tag.to_owned());
        rest = body[..open].trim_end();
    }
    tags.reverse();
    tags
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kind(message: &str, actor: Option<Actor>) -> Option<SignalKind> {
        recognize(Some(message), actor, Some(40999)).signal.map(|s| s.kind)
    }

    #[test]
    fn upstream_messages_map_to_their_signal() {
        let tt = Some(Actor::TestTaker);
        let cases = [
            ("[Pause On Blur] Test taker tried to move to a different tab/app.", SignalKind::PauseOnBlur),
            ("[Pause On Blur] Test-taker switched tab or window.", SignalKind::PauseOnBlur),
            ("[Full Screen] Test taker tried to go out from full screen mode.", SignalKind::FullScreen),
            ("[Full Screen] Test-taker exited full screen.", SignalKind::FullScreen),
            ("[Prevent Screenshot] Test taker tried to take a screenshot.", SignalKind::PreventScreenshot),
            ("[Disable Right Click] Test taker tried to use right click menu.", SignalKind::DisableRightClick),
            ("[Disable Commands] Test taker tried to use a forbidden command: `copy`.", SignalKind::DisableCommands),
            ("[Lockdown Browser] Lockdown browser is not detected.", SignalKind::LockdownBrowser),
            (
                "[Security Plugin] Test execution was paused because test taker tried to move to a different tab/app.",
                SignalKind::SecurityPlugin,
            ),
            ("IP address change detected.", SignalKind::IpChange),
            ("[deliver-fe] TypeError: x is undefined", SignalKind::DeliverFe),
            ("[realtime] connection lost", SignalKind::Realtime),
            ("  [PAUSE ON BLUR]   left", SignalKind::PauseOnBlur),
        ];
        for (message, expected) in cases {
            assert_eq!(kind(message, tt), Some(expected), "{message}");
        }
    }

    #[test]
    fn forbidden_commands_are_named() {
        let cases = [
            ("[Disable Commands] Test taker tried to use a forbidden command: `copy`.", Some("copy")),
            ("[Disable Commands] Test taker tried to use a forbidden command: `PASTE`.", Some("paste")),
            ("[Disable Commands] Attempted forbidden command: cut", Some("cut")),
            ("[Disable Commands] something else", None),
        ];
        for (message, command) in cases {
            let signal = recognize(Some(message), None, Some(40999)).signal.expect(message);
            assert_eq!(signal.command.as_deref(), command, "{message}");
        }
    }

    #[test]
    fn security_plugin_pauses_say_what_they_were_about() {
        let cases = [
            (
                "[Security Plugin] Test execution was paused because test taker tried to move to a different tab/app.",
                PauseAbout::TabSwitch,
            ),
            (
                "[Security Plugin] Test execution was paused because test taker tried to go out from full screen mode.",
                PauseAbout::FullScreen,
            ),
            ("[Security Plugin] Test execution was paused because the window lost focus.", PauseAbout::TabSwitch),
            ("[Security Plugin] Test execution was paused because it happened.", PauseAbout::Other),
        ];
        for (message, about) in cases {
            assert_eq!(recognize(Some(message), None, Some(40999)).signal.unwrap().about, Some(about), "{message}");
        }
    }

    #[test]
    fn lockdown_messages_carry_issue_device_info_and_processes() {
        let breach = "[Lockdown Browser] Security breach detected. Device info: {\"os\":\"Windows 11\",\"vm\":true}. Process list: obs64.exe, TeamViewer.exe.";
        let signal = recognize(Some(breach), None, Some(40999)).signal.unwrap();
        assert_eq!(signal.issue, Some(LockdownIssue::Breach));
        assert_eq!(signal.data.map(|d| d.to_value()), Some(json!({"os": "Windows 11", "vm": true})));
        assert_eq!(signal.data_format, Some(DataFormat::Json));
        assert_eq!(signal.processes, vec!["obs64.exe", "TeamViewer.exe"]);
        let cases = [
            ("[Lockdown Browser] Lockdown browser is missing.", LockdownIssue::Missing),
            ("[Lockdown Browser] Unsupported lockdown browser version 2.0.", LockdownIssue::Version),
            ("[Lockdown Browser] Forbidden processes are running.", LockdownIssue::Processes),
            ("[Lockdown Browser] Hello.", LockdownIssue::Other),
        ];
        for (message, issue) in cases {
            assert_eq!(recognize(Some(message), None, Some(40999)).signal.unwrap().issue, Some(issue), "{message}");
        }
    }

    #[test]
    fn deliver_fe_logs_keep_trailing_tags_and_payloads() {
        let trace = "[deliver-fe] Error: boom\n    at a (app.js:1:2)\n    at b [native code]\n[item-5][recoverable]";
        assert_eq!(recognize(Some(trace), None, Some(40999)).signal.unwrap().tags, vec!["item-5", "recoverable"]);
        let nav = "[deliver-fe] {\"navigation\":{\"from\":\"item-1\",\"to\":\"item-2\"}}";
        let signal = recognize(Some(nav), None, Some(40999)).signal.unwrap();
        assert_eq!(signal.data.map(|d| d.to_value()), Some(json!({"navigation": {"from": "item-1", "to": "item-2"}})));
        let untagged = recognize(Some("<navigation><to>item-2</to></navigation>"), Some(Actor::System), Some(40999))
            .signal
            .unwrap();
        assert_eq!((untagged.kind, untagged.data_format), (SignalKind::StructuredData, Some(DataFormat::Xml)));
    }

    #[test]
    fn proctor_text_is_a_comment_and_unknown_tags_are_anomalies() {
        assert_eq!(kind("Student was talking to someone.", Some(Actor::Proctor)), Some(SignalKind::ProctorComment));
        assert_eq!(kind("[URGENT] phone on desk", Some(Actor::Proctor)), Some(SignalKind::ProctorComment));
        let unknown = recognize(Some("[Webcam] face not visible"), Some(Actor::TestTaker), Some(40999));
        assert_eq!(unknown, Recognized { signal: None, anomaly: Some(Anomaly::UnknownMessageTag) });
        assert_eq!(recognize(Some("free text"), Some(Actor::TestTaker), Some(40999)), Recognized::default());
        assert_eq!(recognize(None, Some(Actor::Proctor), Some(40999)), Recognized::default());
        assert_eq!(recognize(Some("   "), Some(Actor::Proctor), Some(40999)), Recognized::default());
    }

    #[test]
    fn payloads_are_40999_only_and_json_arrays_are_not_tags() {
        let array = r#"[{"type":"navigation","to":"item-2"}]"#;
        let signal = recognize(Some(array), Some(Actor::TestTaker), Some(40999)).signal.expect("structured");
        assert_eq!((signal.kind, signal.data_format), (SignalKind::StructuredData, Some(DataFormat::Json)));
        let nested = recognize(Some("[[1,2],[3]]"), Some(Actor::System), Some(40999)).signal.expect("structured");
        assert_eq!(nested.kind, SignalKind::StructuredData);
        // A proctor's markup is a comment, not a payload, outside 40999.
        let comment = recognize(Some("<b>cheating</b>"), Some(Actor::Proctor), Some(30010)).signal.unwrap();
        assert_eq!(comment.kind, SignalKind::ProctorComment);
        assert_eq!(recognize(Some("<b>x</b>"), Some(Actor::TestTaker), Some(20999)), Recognized::default());
        assert_eq!(recognize(Some("{\"a\":1}"), Some(Actor::TestTaker), None), Recognized::default());
        assert_eq!(kind("[unterminated tag", Some(Actor::TestTaker)), None);
    }
}

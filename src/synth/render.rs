//! The records themselves: one session's identity, and the four upstream shapes written for
//! it (control and log messages, proctor ACS messages, flat Insights records), plus the
//! malformed bytes. Both profiles write through these, so a shape looks the same whichever
//! mix it comes from. Randomness (message ids, stack traces) comes from the caller's
//! generator: the stress profile passes its one generator, the realistic one each session's
//! own.

use serde_json::{Value, json};

/// Who did what, with which outcome, in which session status.
#[derive(Debug, Clone, Copy)]
pub(super) struct What<'s> {
    pub actor: &'s str,
    pub action: &'s str,
    pub action_status: &'s str,
    pub status: &'s str,
}

impl<'s> What<'s> {
    pub fn new(actor: &'s str, action: &'s str, action_status: &'s str, status: &'s str) -> What<'s> {
        What { actor, action, action_status, status }
    }
}

/// A session's identity and where it is in its life.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub tenant: String,
    pub execution_id: String,
    pub delivery_id: String,
    pub login: String,
    pub name: String,
    pub user_agent: String,
    pub ip: String,
    pub item: u32,
    pub step: u32,
    pub extra_time: f64,
    /// Paused (suspended), waiting for the proctor to resume it.
    pub paused: bool,
}

impl Session {
    /// Session number `n` of tenant `tenant`, its random parts drawn from `rng`.
    pub fn new(n: u64, tenants: usize, rng: &mut fastrand::Rng) -> Session {
        let tenant = format!("tenant-{:02}", (n as usize % tenants.max(1)) + 1);
        let login = format!("student{n:05}");
        let reversed: String = login.chars().rev().collect();
        let delivery_id = format!("delivery-{}", n % 7);
        let hash = format!("{:016x}", rng.u64(..));
        let prefix = if rng.u8(..100) < 3 { "review#" } else { "" };
        Session {
            execution_id: format!("{prefix}{reversed}#{delivery_id}#{hash}#{tenant}"),
            tenant,
            delivery_id,
            name: format!("Student {n}"),
            login,
            user_agent: USER_AGENTS[rng.usize(..USER_AGENTS.len())].to_owned(),
            ip: format!("198.51.100.{}", rng.u8(1..255)),
            item: 1,
            step: 0,
            extra_time: 0.0,
            paused: false,
        }
    }

    /// Its status, as a control message or a flat record declares it.
    pub fn status(&self) -> &'static str {
        if self.paused { "suspended" } else { "interacting" }
    }
}

/// The session number in an execution id [`Session::new`] made (`<reversed login>`, the
/// login being `student<n>`), or `None`.
pub(super) fn session_number(execution_id: &str) -> Option<u64> {
    let reversed = execution_id.strip_prefix("review#").unwrap_or(execution_id).split('#').next()?;
    let login: String = reversed.chars().rev().collect();
    login.strip_prefix("student")?.parse().ok()
}

pub(super) const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

/// The messages of upstream's security plugins (upstream-envelopes.md), by name.
pub(super) const BLUR: &str = "[Pause On Blur] Test taker tried to move to a different tab/app.";
pub(super) const FULL_SCREEN: &str = "[Full Screen] Test taker tried to go out from full screen mode.";
pub(super) const PLUGIN_BLUR: &str =
    "[Security Plugin] Test execution was paused because test taker tried to move to a different tab/app.";
pub(super) const PLUGIN_FULL_SCREEN: &str =
    "[Security Plugin] Test execution was paused because test taker tried to go out from full screen mode.";
pub(super) const SCREENSHOT: &str = "[Prevent Screenshot] Test taker tried to take a screenshot.";
pub(super) const RIGHT_CLICK: &str = "[Disable Right Click] Test taker tried to use right click menu.";
pub(super) const COPY: &str = "[Disable Commands] Test taker tried to use a forbidden command: `copy`.";
pub(super) const PASTE: &str = "[Disable Commands] Test taker tried to use a forbidden command: `paste`.";
pub(super) const IP_CHANGE: &str = "IP address change detected.";
pub(super) const LOCKDOWN_BREACH: &str = "[Lockdown Browser] Security breach detected. Device info: {\"os\":\"Windows 11\",\"vm\":false}. Process list: obs64.exe, discord.exe.";

pub(super) const SECURITY_MESSAGES: [(i64, &str); 9] = [
    (20060, BLUR),
    (20060, FULL_SCREEN),
    (20060, PLUGIN_BLUR),
    (20060, PLUGIN_FULL_SCREEN),
    (20999, SCREENSHOT),
    (20999, RIGHT_CLICK),
    (20999, COPY),
    (20999, PASTE),
    (20999, IP_CHANGE),
];

pub(super) const PROCTOR_REASONS: [(&str, &str); 6] = [
    ("30020", "Test taker was talking to someone off camera."),
    ("10030", "Construction noise in the test centre."),
    ("20010", "Repeatedly looking away from the screen."),
    ("40030", "Network outage in room B."),
    ("30030", "Wrong test assigned; pausing to fix."),
    ("N52", "Third-party flag: second face detected."),
];

/// A control message (deliver-be `ExecutionControlMessage`).
pub(super) fn control(s: &Session, what: What<'_>, reason: Option<(i64, String)>, t: i64) -> Value {
    let What { actor: role, action, action_status, status } = what;
    let proctor = role == "proctor";
    json!({
        "actorIdentity": {
            "id": if proctor { "proctor-1" } else { s.login.as_str() },
            "name": if proctor { "Pat Proctor" } else { s.name.as_str() },
            "role": role,
            "userAgent": if proctor { None } else { Some(s.user_agent.as_str()) },
            "ip": if proctor { None } else { Some(s.ip.as_str()) },
        },
        "action": {"type": action, "status": action_status},
        "timestamp": t,
        "deliveryExecution": {"id": s.execution_id, "status": status},
        "resourceLink": {"identifier": format!("rl-{}", s.delivery_id)},
        "itemId": format!("item-{}", s.item),
        "reason": reason.map(|(code, message)| json!({"code": code, "message": message})),
        "testOutcomes": [],
    })
}

/// A deliver-fe log (deliver-be `ExecutionLogMessage`): a network timeout, or, in a share
/// `stack_trace_ratio` of them, an error with its multi-line stack trace of about 8 KB.
pub(super) fn deliver_fe_log(rng: &mut fastrand::Rng, stack_trace_ratio: f64, s: &Session, t: i64) -> Value {
    let message = if rng.f64() < stack_trace_ratio {
        let mut trace =
            String::from("[deliver-fe] TypeError: Cannot read properties of undefined (reading 'response')\n");
        let mut frame = 0;
        while trace.len() < 8000 {
            trace.push_str(&format!(
                "    at Object.handleResponse (https://deliver.example.org/assets/runner.{frame:04}.js:{}:{})\n",
                rng.u32(1..9000),
                rng.u32(1..200)
            ));
            frame += 1;
        }
        trace.push_str(&format!("[item-{}][recoverable]", s.item));
        trace
    } else {
        format!("[deliver-fe] Network request failed: timeout after 30000 ms [item-{}]", s.item)
    };
    // A log's action status is the session's status.
    let status = s.status();
    let mut value = control(s, What::new("deliver-fe", "log", status, status), Some((40999, message)), t);
    value["action"] = json!({"type": "log", "status": status});
    value
}

/// A proctor ACS message (deliver-be `DeliveryExecutionAcsLogMessage`, LTI AcsControl
/// spelling) for `action`, with the ACS status it leads to; `extra_time` is the session's
/// new absolute extra time (minutes) for an `update`.
pub(super) fn acs(s: &Session, action: &str, reason: (&str, &str), extra_time: Option<f64>, t: i64) -> Value {
    let status = match action {
        "pause" => "paused",
        "resume" => "running",
        "terminate" => "terminated",
        _ if s.paused => "paused",
        _ => "running",
    };
    let time = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default().to_rfc3339();
    let mut control = json!({
        "user": {"iss": "https://tao.example.org", "sub": s.login},
        "resource_link": {"id": format!("rl-{}", s.delivery_id)},
        "attempt_number": 1,
        "action": action,
        "incident_time": time,
        "incident_severity": 0.5,
        "reason_code": reason.0,
        "reason_message": reason.1,
    });
    if let Some(total) = extra_time {
        control["extra_time"] = json!(total);
    }
    json!({"deliveryExecutionId": s.execution_id, "itemId": format!("item-{}", s.item), "status": status, "acsControl": control})
}

/// A flat Insights record (the spec's shape); its message id is drawn from `rng`.
pub(super) fn flat(
    rng: &mut fastrand::Rng,
    s: &Session,
    what: What<'_>,
    reason: Option<(i64, String)>,
    t: i64,
) -> Value {
    let What { actor, action, action_status, status } = what;
    let (code, message) = reason.unzip();
    json!({
        "deliveryId": s.delivery_id,
        "deliveryExecutionId": s.execution_id,
        "testTaker": s.login,
        "login": s.login,
        "name": s.name,
        "actor": actor,
        "action": action,
        "actionStatus": action_status,
        "reasonCode": code.map(|c| c.to_string()),
        "reasonMessage": message,
        "extraTime": null,
        "incidentTime": t as f64 / 1000.0,
        "last_update_date": t / 1000,
        "itemId": format!("item-{}", s.item),
        "resourceLink": format!("rl-{}", s.delivery_id),
        "status": status,
        "tenantId": s.tenant,
        "userAgent": s.user_agent,
        "ip": s.ip,
        "messageId": format!("{:032x}", rng.u128(..)),
        "_id": s.execution_id,
    })
}

/// A navigation to the session's next item (its `item` is already the new one): a flat
/// record with upstream's 40999 XML payload or a control message, half and half.
pub(super) fn navigation(rng: &mut fastrand::Rng, s: &Session, status: &str, t: i64) -> Value {
    if rng.bool() {
        let payload = format!(
            "<navigation type=\"next\"><from>item-{}</from><to>item-{}</to><duration>{}</duration></navigation>",
            s.item - 1,
            s.item,
            rng.u32(5..300)
        );
        flat(rng, s, What::new("test-taker", "navigation", "succeeded", status), Some((40999, payload)), t)
    } else {
        control(s, What::new("test-taker", "navigation", "succeeded", status), None, t)
    }
}

/// Bytes the service must dead-letter: truncated JSON, invalid UTF-8, not an object, no
/// session, a spoofed tenant, an unreadable time.
pub(super) fn malformed(rng: &mut fastrand::Rng, s: &Session, t: i64) -> Vec<u8> {
    let good = serde_json::to_vec(&control(s, What::new("test-taker", "pause", "succeeded", "suspended"), None, t))
        .expect("JSON values serialize");
    match rng.u8(..6) {
        0 => good[..good.len() / 2].to_vec(),
        1 => {
            let mut bad = good;
            bad.insert(10, 0xff);
            bad
        }
        2 => b"[\"not\", \"an\", \"object\"]".to_vec(),
        3 => format!(r#"{{"actor":"proctor","action":"pause","incidentTime":{}}}"#, t / 1000).into_bytes(),
        4 => format!(
            r#"{{"deliveryExecutionId":"{}","tenantId":"intruder","incidentTime":{}}}"#,
            s.execution_id,
            t / 1000
        )
        .into_bytes(),
        _ => format!(r#"{{"deliveryExecutionId":"{}","incidentTime":"yesterday"}}"#, s.execution_id).into_bytes(),
    }
}

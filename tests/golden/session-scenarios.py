import json, os
DE = {}
T0 = 1767261000000  # 2026-01-01T09:50:00Z
def iso(ms): 
    import datetime
    return datetime.datetime.fromtimestamp(ms/1000, datetime.timezone.utc).isoformat()
def control(de, role, action, status, session_status, t, reason=None, item="item-1", uid="student1", ip="198.51.100.7", ua="Mozilla/5.0 (X11; Linux x86_64)"):
    return {"actorIdentity": {"id": uid if role!="proctor" else "proctor1", "name": "", "role": role, "userAgent": ua, "ip": ip},
            "action": {"type": action, "status": status}, "timestamp": t,
            "deliveryExecution": {"id": de, "status": session_status},
            "resourceLink": {"identifier": "rl-1"}, "itemId": item,
            "reason": None if reason is None else {"code": reason[0], "message": reason[1]}, "testOutcomes": []}
def acs(de, action, acs_status, t, code="30030", message="Proctor action.", extra=None):
    c = {"user": {"iss": "https://tao.example.org", "sub": "proctor1"}, "resource_link": {"id": "rl-1"}, "attempt_number": 1,
         "action": action, "incident_time": iso(t), "incident_severity": 0.5, "reason_code": code, "reason_message": message}
    if extra is not None: c["extra_time"] = extra
    return {"deliveryExecutionId": de, "itemId": "item-1", "status": acs_status, "acsControl": c}
def reset(de, t):
    return {"deliveryExecutionId": de, "itemId": None, "status": "none",
            "acsControl": {"userIdentifier": "proctor1", "resourceLink": {"identifier": "rl-1"}, "action": "reset", "attemptNumber": 1,
                           "incidentTime": iso(t), "reasonCode": "999", "reasonMessage": ""}}
def flat(de, actor, action, status, session_status, t, mid=None, code=None, msg=None, extra=None, lud=None):
    r = {"deliveryId": "delivery-1", "deliveryExecutionId": de, "testTaker": "student1", "login": "student1", "name": "Sam Student",
         "actor": actor, "action": action, "actionStatus": status, "reasonCode": code, "reasonMessage": msg, "extraTime": extra,
         "incidentTime": t // 1000, "last_update_date": (lud or t) // 1000, "itemId": "item-1", "resourceLink": "rl-1",
         "status": session_status, "tenantId": "acme", "userAgent": "Mozilla/5.0 (X11; Linux x86_64)", "ip": "198.51.100.7", "_id": de}
    if mid: r["messageId"] = mid
    return r
BLUR = (20060, "[Pause On Blur] Test taker tried to move to a different tab/app.")
SPFS = (20060, "[Security Plugin] Test execution was paused because test taker tried to leave full screen mode.")
COPY = (20999, "[Disable Commands] Test taker tried to use a forbidden command: `copy`.")
S = 1000
def write(name, records, raw=None):
    os.makedirs(f"/work/main/tests/golden/{name}", exist_ok=True)
    with open(f"/work/main/tests/golden/{name}/input.jsonl", "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r, separators=(",", ":"))) + "\n")

de = "1tneduts#delivery-1#blur-attempt#acme"
write("session-blur-resumed-submitted", [
    control(de, "test-taker", "start", "succeeded", "interacting", T0),
    control(de, "test-taker", "pause", "succeeded", "suspended", T0 + 60*S, BLUR),
    acs(de, "resume", "running", T0 + 120*S, "30030", "Checked with the test taker: back to the test."),
    control(de, "test-taker", "navigation", "succeeded", "interacting", T0 + 150*S, None, "item-2"),
    control(de, "test-taker", "submission", "succeeded", "closed", T0 + 300*S, None, "item-2"),
])
de = "1tneduts#delivery-1#extra-time-attempt#acme"
write("session-extra-time-terminate", [
    acs(de, "update", "running", T0, "30040", "Late start compensation.", 15),
    acs(de, "update", "running", T0 + 30*S, "30040", "Accessibility accommodation.", 22.5),
    flat(de, "proctor", "update", "succeeded", "interacting", T0 + 60*S, "xt-3", 30040, "Five more minutes.", 5),
    acs(de, "terminate", "terminated", T0 + 120*S, "30020", "Test taker left the room."),
    control(de, "deliver-fe", "log", "terminated", "terminated", T0 + 121*S, (40999, "[deliver-fe] Session terminated by the proctor; closing the runner.")),
    acs(de, "resume", "running", T0 + 180*S, "30030", "Resumed by mistake."),
])
de = "1tneduts#delivery-1#crash-attempt#acme"
write("session-frontend-crash-reset", [
    control(de, "test-taker", "start", "succeeded", "interacting", T0),
    control(de, "security-plugin", "pause", "succeeded", "suspended", T0 + 40*S, SPFS),
    control(de, "deliver-fe", "log", "suspended", "suspended", T0 + 41*S, (40999, "[deliver-fe] TypeError: Cannot read properties of undefined (reading 'items')\n    at Runner.next (runner.js:120:17)\n    at async Navigator.move (navigator.js:88:5) [item-3][unrecoverable]")),
    reset(de, T0 + 100*S),
    control(de, "test-taker", "start", "succeeded", "interacting", T0 + 130*S),
    control(de, "test-taker", "pause", "succeeded", "suspended", T0 + 160*S, BLUR),
])
de = "1tneduts#delivery-1#pause-first-attempt#acme"
write("session-begins-with-pause", [
    control(de, "security-plugin", "pause", "succeeded", "suspended", T0, SPFS),
    acs(de, "resume", "running", T0 + 45*S, "30030", "Full screen restored."),
    control(de, "test-taker", "flag", "succeeded", "interacting", T0 + 50*S, COPY),
    control(de, "test-taker", "submission", "succeeded", "closed", T0 + 400*S),
])
de = "1tneduts#delivery-1#retry-attempt#acme"
p = control(de, "test-taker", "pause", "succeeded", "suspended", T0 + 10*S, BLUR)
write("session-duplicates", [
    control(de, "test-taker", "start", "succeeded", "interacting", T0),
    p, p, p,
    flat(de, "test-taker", "flag", "succeeded", "suspended", T0 + 20*S, "retry-7", 20999, COPY[1]),
    flat(de, "test-taker", "flag", "succeeded", "suspended", T0 + 20*S, "retry-7", 20999, COPY[1], lud=T0 + 25*S),
    acs(de, "resume", "running", T0 + 30*S),
])
de = "1tneduts#delivery-1#late-attempt#acme"
write("session-reordering", [
    flat(de, "test-taker", "start", "succeeded", "interacting", T0, "ro-1"),
    flat(de, "test-taker", "pause", "succeeded", "suspended", T0 + 30*S, "ro-2", 20060, BLUR[1]),
    flat(de, "test-taker", "navigation", "succeeded", "interacting", T0 + 20*S, "ro-3", 40999, "<navigation type=\"next\"><from>item-1</from><to>item-2</to></navigation>"),
    flat(de, "proctor", "resume", "succeeded", "interacting", T0 + 40*S, "ro-4", 30030, "Back."),
    flat(de, "test-taker", "submission", "succeeded", "closed", T0 + 90*S, "ro-5"),
])
de = "1tneduts#delivery-1#after-close-attempt#acme"
write("session-events-after-close", [
    control(de, "test-taker", "start", "succeeded", "interacting", T0),
    control(de, "test-taker", "submission", "succeeded", "closed", T0 + 60*S),
    control(de, "test-taker", "flag", "succeeded", "closed", T0 + 61*S, COPY),
    control(de, "deliver-fe", "log", "closed", "closed", T0 + 62*S, (40999, "[deliver-fe] Results sent.")),
    control(de, "test-taker", "resume", "succeeded", "closed", T0 + 70*S),
    control(de, "proctor", "resume", "succeeded", "interacting", T0 + 80*S),
    control(de, "test-taker", "pause", "failed", "interacting", T0 + 90*S, BLUR),
    control(de, "test-taker", "pause", "succeeded", "suspended", T0 + 95*S, BLUR),
    control(de, "test-taker", "navigation", "succeeded", "suspended", T0 + 96*S, None, "item-2"),
    acs(de, "terminate", "terminated", T0 + 120*S, "30020", "Second device detected."),
])

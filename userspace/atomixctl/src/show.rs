//! Human output: the device's JSON (health, jobs, events) as lines for a terminal.
//! Pure functions over `serde_json::Value`, tested with inline JSON.

use serde_json::Value;

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `GET /api/health` as aligned `name: value` lines.
pub fn health(h: &Value) -> Vec<String> {
    let provisioned = if h["provisioned"].as_bool() == Some(true) {
        format!("yes, generation {}", text(&h["generation"]))
    } else {
        "no".to_owned()
    };
    let listening = h["listening"]
        .as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_owned());
    let mut lines = vec![
        format!("build id:     {}", text(&h["build_id"])),
        format!("slot:         {}", text(&h["slot"])),
        format!("provisioned:  {provisioned}"),
        format!("listening:    {listening}"),
        format!("running job:  {}", text(&h["job"])),
    ];
    let e = &h["last_import_error"];
    if !e.is_null() {
        lines.push(format!("last import error: {}", import_error(e)));
    }
    lines
}

/// A `last_import_error`: where the seed came from, then each problem on its own line.
fn import_error(e: &Value) -> String {
    let mut lines = vec![format!(
        "{} ({}, {})",
        text(&e["location"]),
        text(&e["origin"]),
        text(&e["time"])
    )];
    if let Some(problems) = e["errors"].as_array() {
        lines.extend(problems.iter().map(crate::device::problem_line));
    }
    if !e["job"].is_null() {
        lines.push(format!("apply job: {}", text(&e["job"])));
    }
    lines.join("\n  ")
}

/// One job event: `  time  step  [level] message`.
pub fn event(e: &Value) -> String {
    let level = match e["level"].as_str() {
        Some("info") | None => String::new(),
        Some(l) => format!("[{l}] "),
    };
    let time = e["time"].as_str().unwrap_or("");
    // RFC 3339: the clock time is what a reader follows.
    let clock = time.get(11..19).unwrap_or(time);
    format!(
        "  {clock}  {:<14} {level}{}",
        e["step"].as_str().unwrap_or(""),
        e["message"].as_str().unwrap_or("")
    )
}

/// What a finished job came to, and on failure its rollback state.
pub fn outcome(job: &Value) -> Vec<String> {
    let result = &job["result"];
    let mut lines = Vec::new();
    let update = job["kind"] == "update";
    match job["state"].as_str() {
        Some("succeeded") if update => {
            lines.push(format!(
                "job {} succeeded: the bundle is installed in the other slot, which boots next",
                text(&job["id"])
            ));
            if job["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["step"] == "reboot"))
            {
                lines.push("the device is rebooting into it".to_owned());
            } else {
                lines.push("reboot the device to run it".to_owned());
            }
        }
        Some("failed") if update => {
            lines.push(format!(
                "job {} FAILED at step {}: {}",
                text(&job["id"]),
                text(&result["failed_step"]),
                text(&result["error"])
            ));
            lines.push("the slot the device runs from is unchanged".to_owned());
        }
        Some("succeeded") => lines.push(format!(
            "job {} succeeded: generation {} is current",
            text(&job["id"]),
            text(&result["generation"])
        )),
        Some("failed") => {
            lines.push(format!(
                "job {} FAILED at step {}: {}",
                text(&job["id"]),
                text(&result["failed_step"]),
                text(&result["error"])
            ));
            lines.push(rollback(&job["rollback"]));
        }
        Some(state) => lines.push(format!("job {} is {state}", text(&job["id"]))),
        None => lines.push("the job has no state".to_owned()),
    }
    lines
}

/// The rollback state in words.
pub fn rollback(r: &Value) -> String {
    let restored = match r["generation"].as_u64() {
        Some(g) => format!("generation {g} is current again"),
        None => "the device is unprovisioned again (the image's defaults)".to_owned(),
    };
    match r["state"].as_str() {
        Some("completed") => format!("rollback: completed; {restored}"),
        Some("failed") => "rollback: FAILED; the device may be half-configured: reboot it (the current generation is re-applied at boot) and check its journal".to_owned(),
        Some("none") => "rollback: none needed; nothing had been changed".to_owned(),
        _ => format!("rollback: {}", text(&r["state"])),
    }
}

/// A whole job: header, events, outcome.
pub fn job(j: &Value) -> Vec<String> {
    let kind = match j["kind"].as_str() {
        Some("update") => "update, ",
        _ => "",
    };
    let mut lines = vec![format!(
        "job {} ({kind}{}, created {}): {}",
        text(&j["id"]),
        text(&j["origin"]),
        text(&j["created"]),
        text(&j["state"])
    )];
    if let Some(events) = j["events"].as_array() {
        lines.extend(events.iter().map(event));
    }
    if matches!(j["state"].as_str(), Some("succeeded" | "failed")) {
        lines.extend(outcome(j));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn health_lines() {
        let h = json!({"status":"ok","provisioned":true,"build_id":"b1","slot":"a","generation":2,
            "last_import_error":null,"listening":["192.168.100.1:8080"],"job":null});
        assert_eq!(
            health(&h),
            [
                "build id:     b1",
                "slot:         a",
                "provisioned:  yes, generation 2",
                "listening:    192.168.100.1:8080",
                "running job:  -",
            ]
        );
        let h = json!({"provisioned":false,"build_id":null,"slot":null,"listening":[],
            "last_import_error":{"origin":"boot","location":"/boot/config.toml","time":"t","job":null,"errors":[{"line":1,"column":1,"path":"schema","message":"bad"}]}});
        let lines = health(&h);
        assert_eq!(lines[2], "provisioned:  no");
        assert!(
            lines[5].contains("config.toml:1:1: schema: bad")
                && lines[5].contains("/boot/config.toml"),
            "{lines:?}"
        );
    }

    #[test]
    fn failed_jobs_say_their_rollback() {
        let j = json!({"id":"j1","state":"failed","origin":"api","created":"2026-01-01T10:00:00Z",
            "events":[{"time":"2026-01-01T10:00:01Z","step":"firewall","level":"error","message":"boom"}],
            "result":{"generation":null,"failed_step":"firewall","error":"boom"},
            "rollback":{"state":"completed","generation":null}});
        let lines = job(&j);
        assert_eq!(lines[1], "  10:00:01  firewall       [error] boom");
        assert_eq!(lines[2], "job j1 FAILED at step firewall: boom");
        assert_eq!(
            lines[3],
            "rollback: completed; the device is unprovisioned again (the image's defaults)"
        );
        assert_eq!(
            rollback(&json!({"state":"completed","generation":3})),
            "rollback: completed; generation 3 is current again"
        );
        assert!(rollback(&json!({"state":"failed","generation":null})).contains("FAILED"));
    }

    #[test]
    fn update_jobs_say_what_happens_to_the_slots() {
        let event = |step: &str| json!({"time":"2026-01-01T10:00:01Z","step":step,"level":"info","message":"m"});
        let j = json!({"id":"u1","kind":"update","state":"succeeded","origin":"api","created":"c",
            "events":[event("receive"), event("install"), event("cleanup"), event("reboot")],
            "result":{"generation":2,"failed_step":null,"error":null},
            "rollback":{"state":"none","generation":null}});
        let lines = job(&j);
        assert_eq!(lines[0], "job u1 (update, api, created c): succeeded");
        assert_eq!(
            lines[5..],
            [
                "job u1 succeeded: the bundle is installed in the other slot, which boots next",
                "the device is rebooting into it"
            ]
        );
        let mut no_reboot = j.clone();
        no_reboot["events"] = json!([event("install")]);
        assert_eq!(outcome(&no_reboot)[1], "reboot the device to run it");
        let failed = json!({"id":"u2","kind":"update","state":"failed",
            "result":{"generation":null,"failed_step":"install","error":"`rauc install x` failed: bad"},
            "rollback":{"state":"none","generation":null}});
        assert_eq!(
            outcome(&failed),
            [
                "job u2 FAILED at step install: `rauc install x` failed: bad",
                "the slot the device runs from is unchanged"
            ]
        );
    }
}

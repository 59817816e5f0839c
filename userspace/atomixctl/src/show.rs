//! Human output: the device's answers (health, jobs, events) as lines for a terminal.
//! Pure functions over `atomix_api`'s types, tested with inline JSON.

use atomix_api::{
    Event, Health, ImportError, Job, JobKind, JobState, Level, Rollback, RollbackState,
    UpdateServer,
};
use serde::Serialize;

/// An optional value, `-` when absent.
fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The name a value has on the wire (`api`, `succeeded`, `warning`).
fn wire_name(v: impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// `GET /api/health` as aligned `name: value` lines.
pub fn health(h: &Health) -> Vec<String> {
    let provisioned = if h.provisioned {
        format!("yes, generation {}", or_dash(h.generation))
    } else {
        "no".to_owned()
    };
    let listening = if h.listening.is_empty() {
        "-".to_owned()
    } else {
        h.listening.join(", ")
    };
    let mut lines = vec![
        format!("build id:     {}", or_dash(h.build_id.as_ref())),
        format!("slot:         {}", or_dash(h.slot.as_ref())),
        format!("provisioned:  {provisioned}"),
        format!("listening:    {listening}"),
        format!("running job:  {}", or_dash(h.job.as_ref())),
    ];
    if let Some(update) = &h.last_update {
        lines.push(format!("last update:  {update}"));
    }
    if let Some(server) = &h.update_server {
        lines.extend(update_server(server));
    }
    if let Some(e) = &h.last_import_error {
        lines.push(format!("last import error: {}", import_error(e)));
    }
    lines
}

/// The hawkBit server, the last poll and the action in progress.
fn update_server(s: &UpdateServer) -> Vec<String> {
    let poll = match &s.last_poll {
        None => "- (not yet)".to_owned(),
        Some(p) if p.ok => format!("{} ok: {}", p.time, p.outcome),
        Some(p) => format!("{} FAILED: {}", p.time, p.outcome),
    };
    let action = match &s.action {
        None => "-".to_owned(),
        Some(a) => {
            let result = match a.success {
                Some(true) => " (success)",
                Some(false) => " (failure)",
                None => "",
            };
            format!("{} ({}): {}{result}", a.id, a.version, a.state)
        }
    };
    vec![
        format!("update server: {} as {}", s.url, s.controller_id),
        format!("last poll:    {poll}"),
        format!("server action: {action}"),
    ]
}

/// A `last_import_error`: where the seed came from, then each problem on its own line.
fn import_error(e: &ImportError) -> String {
    let mut lines = vec![format!(
        "{} ({}, {})",
        e.location,
        wire_name(e.origin),
        e.time
    )];
    lines.extend(e.errors.iter().map(crate::device::problem_line));
    if let Some(job) = &e.job {
        lines.push(format!("apply job: {job}"));
    }
    lines.join("\n  ")
}

/// One job event: `  time  step  [level] message`.
pub fn event(e: &Event) -> String {
    let level = match e.level {
        Level::Info => String::new(),
        l => format!("[{}] ", wire_name(l)),
    };
    // RFC 3339: the clock time is what a reader follows.
    let clock = e.time.get(11..19).unwrap_or(&e.time);
    format!("  {clock}  {:<14} {level}{}", e.step, e.message)
}

/// What a finished job came to, and on failure its rollback state.
pub fn outcome(job: &Job) -> Vec<String> {
    let result = job.result.clone().unwrap_or_default();
    let failed = || {
        format!(
            "job {} FAILED at step {}: {}",
            job.id,
            or_dash(result.failed_step.as_ref()),
            or_dash(result.error.as_ref())
        )
    };
    let mut lines = Vec::new();
    match (job.kind, job.state) {
        (JobKind::Update, JobState::Succeeded) => {
            lines.push(format!(
                "job {} succeeded: the bundle is installed in the other slot, which boots next",
                job.id
            ));
            if job.events.iter().any(|e| e.step == "reboot") {
                lines.push("the device is rebooting into it".to_owned());
            } else {
                lines.push("reboot the device to run it".to_owned());
            }
        }
        (JobKind::Update, JobState::Failed) => {
            lines.push(failed());
            lines.push("the slot the device runs from is unchanged".to_owned());
        }
        (JobKind::FactoryReset, JobState::Succeeded) => {
            lines.push(format!(
                "job {} succeeded: the device is unprovisioned and reboots; /data is erased early in the next boot",
                job.id
            ));
            lines.push("then provision it again: a USB seed, or the console or atomixctl provision on port 8080 of any of its addresses".to_owned());
        }
        (JobKind::FactoryReset, JobState::Failed) => {
            lines.push(failed());
            lines.push("nothing was erased".to_owned());
        }
        (JobKind::Config, JobState::Succeeded) => lines.push(format!(
            "job {} succeeded: generation {} is current",
            job.id,
            or_dash(result.generation)
        )),
        (JobKind::Config, JobState::Failed) => {
            lines.push(failed());
            lines.push(rollback(&job.rollback));
        }
        (_, state @ (JobState::Queued | JobState::Running)) => {
            lines.push(format!("job {} is {}", job.id, wire_name(state)))
        }
    }
    lines
}

/// The rollback state in words.
pub fn rollback(r: &Rollback) -> String {
    let restored = match r.generation {
        Some(g) => format!("generation {g} is current again"),
        None => "the device is unprovisioned again (the image's defaults)".to_owned(),
    };
    match r.state {
        RollbackState::Completed => format!("rollback: completed; {restored}"),
        RollbackState::Failed => "rollback: FAILED; the device may be half-configured: reboot it (the current generation is re-applied at boot) and check its journal".to_owned(),
        RollbackState::None => "rollback: none needed; nothing had been changed".to_owned(),
    }
}

/// A whole job: header, events, outcome.
pub fn job(j: &Job) -> Vec<String> {
    let kind = match j.kind {
        JobKind::Update => "update, ",
        JobKind::FactoryReset => "factory reset, ",
        JobKind::Config => "",
    };
    let mut lines = vec![format!(
        "job {} ({kind}{}, created {}): {}",
        j.id,
        wire_name(j.origin),
        j.created,
        wire_name(j.state)
    )];
    lines.extend(j.events.iter().map(event));
    if j.state.is_finished() {
        lines.extend(outcome(j));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A device's answer, from its JSON.
    fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn health_lines() {
        let h = json!({"status":"ok","provisioned":true,"build_id":"b1","slot":"a","generation":2,
            "last_import_error":null,"listening":["192.168.100.1:8080"],"job":null});
        assert_eq!(
            health(&parse(h)),
            [
                "build id:     b1",
                "slot:         a",
                "provisioned:  yes, generation 2",
                "listening:    192.168.100.1:8080",
                "running job:  -",
            ]
        );
        let h = json!({"status":"ok","provisioned":false,"build_id":null,"slot":null,"listening":[],
            "last_import_error":{"origin":"boot","location":"/boot/config.toml","time":"t","job":null,"errors":[{"line":1,"column":1,"path":"schema","message":"bad"}]}});
        let lines = health(&parse(h));
        assert_eq!(lines[2], "provisioned:  no");
        assert_eq!(
            lines.len(),
            6,
            "no last update from an older device: {lines:?}"
        );
        assert!(
            lines[5].contains("config.toml:1:1: schema: bad")
                && lines[5].contains("/boot/config.toml"),
            "{lines:?}"
        );
    }

    #[test]
    fn health_shows_the_update_server() {
        let h = json!({"status":"ok","provisioned":true,"build_id":"1.0.0","slot":"a","generation":2,
            "last_import_error":null,"listening":[],"job":null,"last_update":null,
            "update_server":{"url":"http://10.0.2.2:60053","controller_id":"edge-043",
                "last_poll":{"time":"2026-12-03T17:00:00Z","ok":true,"outcome":"ok"},
                "action":{"id":"1","version":"2.0.0","state":"installed"}}});
        let lines = health(&parse(h));
        assert_eq!(
            lines[5..],
            [
                "update server: http://10.0.2.2:60053 as edge-043",
                "last poll:    2026-12-03T17:00:00Z ok: ok",
                "server action: 1 (2.0.0): installed",
            ]
        );
        let h = json!({"status":"ok","provisioned":true,"build_id":"1.0.0","slot":"a","generation":2,
            "last_import_error":null,"listening":[],"job":null,
            "update_server":{"url":"http://u","controller_id":"e","last_poll":
                {"time":"t","ok":false,"outcome":"cannot read the token file /data/apps/hawkbit/token"},
                "action":{"id":"1","version":"2.0.0","state":"reporting","success":false}}});
        let lines = health(&parse(h));
        assert_eq!(
            lines[6],
            "last poll:    t FAILED: cannot read the token file /data/apps/hawkbit/token"
        );
        assert_eq!(lines[7], "server action: 1 (2.0.0): reporting (failure)");
    }

    #[test]
    fn failed_jobs_say_their_rollback() {
        let j = json!({"id":"j1","state":"failed","origin":"api","created":"2026-01-01T10:00:00Z",
            "events":[{"time":"2026-01-01T10:00:01Z","step":"firewall","level":"error","message":"boom"}],
            "result":{"generation":null,"failed_step":"firewall","error":"boom"},
            "rollback":{"state":"completed","generation":null}});
        let lines = job(&parse(j));
        assert_eq!(lines[1], "  10:00:01  firewall       [error] boom");
        assert_eq!(lines[2], "job j1 FAILED at step firewall: boom");
        assert_eq!(
            lines[3],
            "rollback: completed; the device is unprovisioned again (the image's defaults)"
        );
        assert_eq!(
            rollback(&parse(json!({"state":"completed","generation":3}))),
            "rollback: completed; generation 3 is current again"
        );
        assert!(rollback(&parse(json!({"state":"failed","generation":null}))).contains("FAILED"));
    }

    #[test]
    fn factory_resets_say_what_comes_next() {
        let j = json!({"id":"r1","kind":"factory-reset","state":"succeeded","origin":"api","created":"c",
            "events":[],"result":{"generation":null,"failed_step":null,"error":null},
            "rollback":{"state":"none","generation":null}});
        let lines = job(&parse(j));
        assert_eq!(
            lines[0],
            "job r1 (factory reset, api, created c): succeeded"
        );
        assert!(lines[1].contains("unprovisioned and reboots"), "{lines:?}");
        let h = json!({"status":"ok","provisioned":true,"build_id":"b1","slot":"b","generation":2,
            "last_import_error":null,"listening":[],"job":null,"last_update":"/api/jobs/u1"});
        assert_eq!(health(&parse(h))[5], "last update:  /api/jobs/u1");
    }

    #[test]
    fn update_jobs_say_what_happens_to_the_slots() {
        let event = |step: &str| json!({"time":"2026-01-01T10:00:01Z","step":step,"level":"info","message":"m"});
        let j = json!({"id":"u1","kind":"update","state":"succeeded","origin":"api","created":"c",
            "events":[event("receive"), event("install"), event("cleanup"), event("reboot")],
            "result":{"generation":2,"failed_step":null,"error":null},
            "rollback":{"state":"none","generation":null}});
        let lines = job(&parse(j.clone()));
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
        assert_eq!(outcome(&parse(no_reboot))[1], "reboot the device to run it");
        let failed = json!({"id":"u2","kind":"update","state":"failed","origin":"api","created":"c","events":[],
            "result":{"generation":null,"failed_step":"install","error":"`rauc install x` failed: bad"},
            "rollback":{"state":"none","generation":null}});
        assert_eq!(
            outcome(&parse(failed)),
            [
                "job u2 FAILED at step install: `rauc install x` failed: bad",
                "the slot the device runs from is unchanged"
            ]
        );
    }
}

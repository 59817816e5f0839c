//! Failure points in the steps of `atomix-initrd` and `atomix-provision`, for tests:
//! `ATOMIX_FAILPOINTS=<step>=<what>[,...]`, one variable and one grammar for both.
//!
//! `<what>` is one of:
//!
//! * `error`: the step fails after doing its work (so a rollback has something to undo);
//! * `sleep(MS)`: the step is held that long before it starts (a second apply gets 409);
//! * `hang`: the step never starts and never returns (the service keeps running and
//!   answering, its job stays "running", the slot is never marked good: what the
//!   mark-good deadline is there for);
//! * `crash`: the process exits at once with status 75 after the step's work, as a power
//!   cut would cut it off (a job stays "running" on disk; the initrd leaves its work half
//!   done for the next boot to finish);
//! * `crash-before`: the same, before the step starts.
//!
//! Step names are each program's own, and no two are alike: the initrd's steps
//! (`mount-rootfs`, `repart`, `mount-data`, ...: `atomix_initrd::plan::Step`), the apply
//! steps of the service (`atomix_provision::apply::Step`) plus `rollback` (the rollback
//! itself) and `install` (an update job's install).
//!
//! The caller builds a [`Failpoints`] (the binary from the environment, tests directly),
//! so nothing else reads the environment.

use std::collections::BTreeMap;
use std::time::Duration;

/// Environment variable read by the binary.
pub const ENV: &str = "ATOMIX_FAILPOINTS";

/// Exit status of a `crash` failpoint.
pub const CRASH_STATUS: i32 = 75;

/// What a failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    Error,
    Sleep(Duration),
    Crash,
    CrashBefore,
    Hang,
}

/// The configured failpoints, by step name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints {
    points: BTreeMap<String, Failpoint>,
}

/// A failpoint specification that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{ENV}: cannot parse {0:?}: expected <step>=error|sleep(MS)|hang|crash|crash-before")]
pub struct ParseError(pub String);

/// The error a triggered `error` failpoint makes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failpoint {0} triggered")]
pub struct Triggered(pub String);

impl Failpoints {
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses `step=error,step=sleep(100),step=hang,step=crash,step=crash-before`; empty
    /// means none.
    pub fn parse(spec: &str) -> Result<Self, ParseError> {
        let mut points = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || ParseError(item.to_owned());
            let (step, what) = item.split_once('=').ok_or_else(bad)?;
            let point = match what {
                "error" => Failpoint::Error,
                "crash" => Failpoint::Crash,
                "crash-before" => Failpoint::CrashBefore,
                "hang" => Failpoint::Hang,
                w => {
                    let ms = w
                        .strip_prefix("sleep(")
                        .and_then(|r| r.strip_suffix(')'))
                        .and_then(|n| n.parse::<u64>().ok())
                        .ok_or_else(bad)?;
                    Failpoint::Sleep(Duration::from_millis(ms))
                }
            };
            points.insert(step.trim().to_owned(), point);
        }
        Ok(Failpoints { points })
    }

    /// From the environment; unset means none.
    pub fn from_env() -> Result<Self, ParseError> {
        std::env::var(ENV).map_or_else(|_| Ok(Self::none()), |s| Self::parse(&s))
    }

    /// Called when `step` has done its work: fails, crashes or returns.
    pub fn check(&self, step: &str) -> Result<(), Triggered> {
        match self.points.get(step) {
            None | Some(Failpoint::Sleep(_) | Failpoint::Hang | Failpoint::CrashBefore) => Ok(()),
            Some(Failpoint::Error) => Err(Triggered(step.to_owned())),
            Some(Failpoint::Crash) => crash(step, "crash"),
        }
    }

    /// Called when `step` starts: holds it open for a `sleep` failpoint, forever for a
    /// `hang` one; exits for a `crash-before` one.
    pub fn hold(&self, step: &str) {
        match self.points.get(step) {
            Some(Failpoint::Sleep(d)) => std::thread::sleep(*d),
            Some(Failpoint::Hang) => {
                log::error!("failpoint {step}=hang: the step never returns");
                loop {
                    std::thread::park();
                }
            }
            Some(Failpoint::CrashBefore) => crash(step, "crash-before"),
            _ => {}
        }
    }
}

/// Exits at once, as a power cut stops a process: no destructor runs.
fn crash(step: &str, what: &str) -> ! {
    log::error!("failpoint {step}={what}: exiting");
    std::process::exit(CRASH_STATUS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_refuses_garbage() {
        let f = Failpoints::parse(
            "firewall=error, units=sleep(250),switch=crash,lan=hang,repart=crash-before",
        )
        .unwrap();
        assert_eq!(f.points["firewall"], Failpoint::Error);
        assert_eq!(
            f.points["units"],
            Failpoint::Sleep(Duration::from_millis(250))
        );
        assert_eq!(f.points["switch"], Failpoint::Crash);
        assert_eq!(f.points["lan"], Failpoint::Hang);
        assert_eq!(f.points["repart"], Failpoint::CrashBefore);
        assert_eq!(
            f.check("repart"),
            Ok(()),
            "crash-before is checked at the start"
        );
        assert_eq!(f.check("firewall"), Err(Triggered("firewall".into())));
        assert_eq!(f.check("time"), Ok(()));
        assert_eq!(f.check("units"), Ok(()));
        // A hang holds the step at its start; once past it (never, in the service) the
        // check lets it through.
        assert_eq!(f.check("lan"), Ok(()));
        assert_eq!(Failpoints::parse("").unwrap(), Failpoints::none());
        for bad in [
            "firewall",
            "x=explode",
            "x=sleep(ms)",
            "x=hang(1)",
            "before:repart",
            "x=crash-after",
        ] {
            assert_eq!(Failpoints::parse(bad), Err(ParseError(bad.into())), "{bad}");
        }
    }

    #[test]
    fn a_hang_never_returns_and_other_steps_run() {
        let f = Failpoints::parse("lan=hang").unwrap();
        let hung = {
            let f = f.clone();
            std::thread::spawn(move || f.hold("lan"))
        };
        let other = {
            let f = f.clone();
            std::thread::spawn(move || f.hold("time"))
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            other.is_finished(),
            "a step without a failpoint is not held"
        );
        assert!(!hung.is_finished(), "lan=hang returned");
        // The hung thread is left behind; the test process exits around it.
    }
}

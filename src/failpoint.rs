//! Failure points: `ATOMIX_FAILPOINT=after:repart` (a comma-separated list of
//! `before:<step>` / `after:<step>`) makes `atomix-initrd` kill itself with SIGKILL at that
//! point, the closest a process gets to a power cut. Tests use it to check that every
//! interrupted boot is finished correctly by the next one.

use std::collections::BTreeSet;

/// The environment variable that arms failure points.
pub const ENV: &str = "ATOMIX_FAILPOINT";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints {
    armed: BTreeSet<String>,
}

impl Failpoints {
    /// Parses the variable's value.
    pub fn parse(value: &str) -> Failpoints {
        Failpoints {
            armed: value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    pub fn from_env() -> Failpoints {
        std::env::var(ENV)
            .map(|v| Failpoints::parse(&v))
            .unwrap_or_default()
    }

    pub fn is_armed(&self, point: &str) -> bool {
        self.armed.contains(point)
    }

    /// Kills the process if `point` is armed.
    pub fn hit(&self, point: &str) {
        if self.is_armed(point) {
            log::warn!("failure point {point}: killing atomix-initrd (simulated power cut)");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        let f = Failpoints::parse("before:repart, after:mount-data,");
        assert!(f.is_armed("before:repart"));
        assert!(f.is_armed("after:mount-data"));
        assert!(!f.is_armed("after:repart"));
        assert!(!Failpoints::default().is_armed("before:repart"));
    }
}

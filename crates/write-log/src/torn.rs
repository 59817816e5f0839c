//! Torn states: which writes of a window a power cut leaves on the disk, as a plan.
//!
//! Between two flushes a device may persist any subset of the writes it has completed,
//! in any order. [`Log::torn_subset`] picks one subset with a seeded generator; it is
//! plain data ([`TornSubset`]), computed from the index alone, and
//! [`crate::Replayer::with_torn`] applies it.

use std::num::NonZeroU64;
use std::ops::Range;

use crate::log::{Action, Log};

/// How [`Log::torn_subset`] chooses.
#[derive(Debug, Clone, PartialEq)]
pub struct TornOptions {
    keep_probability: f64,
    unit: Option<NonZeroU64>,
}

impl Default for TornOptions {
    fn default() -> TornOptions {
        TornOptions {
            keep_probability: 0.5,
            unit: None,
        }
    }
}

impl TornOptions {
    pub fn new() -> TornOptions {
        TornOptions::default()
    }

    /// The chance that each write (or piece, see [`TornOptions::split_writes`]) is kept,
    /// 0.5 by default; clamped to 0..=1.
    pub fn keep_probability(mut self, p: f64) -> TornOptions {
        self.keep_probability = if p.is_nan() { 0.5 } else { p.clamp(0.0, 1.0) };
        self
    }

    /// Decide for each `unit`-byte block of a write on its own (blocks aligned on the
    /// disk, e.g. 4096 for a device that writes 4 KiB atomically) instead of for whole
    /// writes. Discards are always kept or dropped whole.
    pub fn split_writes(mut self, unit: NonZeroU64) -> TornOptions {
        self.unit = Some(unit);
        self
    }
}

/// Part of one entry that a torn state keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Index of the entry.
    pub entry: usize,
    /// The kept bytes of the disk: all of the entry's range, or one block of it.
    pub disk_offset: u64,
    pub len: u64,
}

impl Piece {
    pub fn disk_range(&self) -> Range<u64> {
        self.disk_offset..self.disk_offset + self.len
    }
}

/// The state "point `point`, plus `pieces`": every entry before `point` applied, then the
/// kept pieces of the window's writes and discards, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornSubset {
    pub point: usize,
    /// [`Log::window`]`(point)`.
    pub window: Range<usize>,
    pub seed: u64,
    pub pieces: Vec<Piece>,
    /// Pieces the window had to choose from (kept or not).
    pub candidates: usize,
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, and fixed here so that a seed picks the
/// same subset whatever the versions of the crates around. Public so that a campaign
/// choosing its points draws from the same reproducible stream.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a float in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

impl Log {
    /// A torn state after point `k`: the entries of [`Log::window`]`(k)` that change the
    /// disk, each kept with [`TornOptions::keep_probability`]. The same log, `k`, `seed`
    /// and options always give the same subset; different `k` with the same seed give
    /// unrelated ones.
    pub fn torn_subset(&self, k: usize, seed: u64, options: &TornOptions) -> TornSubset {
        let window = self.window(k);
        // Mix the point in, so that seed 0 at every point is not one pattern repeated.
        let mut rng = SplitMix64::new(seed ^ SplitMix64::new(window.start as u64).next_u64());
        let mut pieces = Vec::new();
        let mut candidates = 0;
        for entry in &self.entries()[window.clone()] {
            let range = entry.disk_range();
            let mut decide = |disk: Range<u64>| {
                candidates += 1;
                if rng.chance(options.keep_probability) {
                    pieces.push(Piece {
                        entry: entry.index,
                        disk_offset: disk.start,
                        len: disk.end - disk.start,
                    });
                }
            };
            match (entry.action, options.unit) {
                (Action::Nothing, _) => {}
                (Action::Write { .. }, Some(unit)) => {
                    let unit = unit.get();
                    let mut start = range.start;
                    while start < range.end {
                        let end = (start / unit + 1).saturating_mul(unit).min(range.end);
                        decide(start..end);
                        start = end;
                    }
                }
                (Action::Write { .. } | Action::Discard, _) => decide(range),
            }
        }
        TornSubset {
            point: window.start,
            window,
            seed,
            pieces,
            candidates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference() {
        // First outputs for seed 1234567 of the reference C implementation
        // (https://prng.di.unimi.it/splitmix64.c).
        let mut rng = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn chance_follows_the_probability() {
        let mut rng = SplitMix64::new(7);
        assert!((0..1000).all(|_| !rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(1.0)));
        let kept = (0..10_000).filter(|_| rng.chance(0.25)).count();
        assert!((2300..2700).contains(&kept), "{kept}");
    }
}

//! Root discovery: what early boot finds before it changes anything. From the kernel
//! command line's root PARTUUID to the disk that holds it, that disk's GPT, the booted
//! slot's boot partition and the data partition with the filesystem it holds: the
//! [`Situation`] the plan is made from.

use std::time::Instant;

use anyhow::{Context, Result};
use boot_state::StepTiming;

use crate::apply;
use crate::blockdev;
use crate::cmdline::BootArgs;
use crate::partition_table;
use crate::plan::{DataPartition, Situation};
use crate::system::System;

/// Finds the booted slot's root partition, its disk and what that disk holds, timing each
/// step into `timings`. `now` gives the time (RFC 3339) for the marker, taken once the
/// disk was found.
pub fn discover(
    boot: &BootArgs,
    system: &System,
    timings: &mut Vec<StepTiming>,
    now: impl FnOnce() -> String,
) -> Result<Situation> {
    let root = timed(timings, "resolve-root", || {
        system.wait_for_partuuid(boot.root_partuuid)
    })?;
    log::info!(
        "root partition {} on disk {}",
        root.partition.display(),
        root.disk.display()
    );
    let table = timed(timings, "read-partition-table", || {
        partition_table::read(&root.disk)
    })?;
    if table.by_partuuid(boot.root_partuuid).is_none() {
        anyhow::bail!(
            "the GPT of {} has no partition {}, although libblkid found it there",
            root.disk.display(),
            boot.root_partuuid
        );
    }
    let boot_label = format!("boot-{}", boot.slot);
    let boot_device = match table.by_label(&boot_label) {
        Some(entry) => Some(apply::Actions::wait_partition_node(
            system,
            &root.disk,
            entry.number,
        )?),
        None => {
            log::warn!("{} has no {boot_label} partition", root.disk.display());
            None
        }
    };
    let data = timed(timings, "probe-data", || -> Result<_> {
        let Some(entry) = table.by_label(disk_layout::DATA) else {
            return Ok(None);
        };
        let device = apply::Actions::wait_partition_node(system, &root.disk, entry.number)?;
        let fstype = blockdev::probe_fstype(&device)?;
        Ok(Some(DataPartition { device, fstype }))
    })?;

    Ok(Situation {
        slot: boot.slot,
        build_id: boot.build_id.clone(),
        root_device: root.partition,
        disk: root.disk,
        table,
        data,
        boot_device,
        now: now(),
    })
}

fn timed<T>(timings: &mut Vec<StepTiming>, step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let value = f().with_context(|| format!("step {step} failed"))?;
    timings.push(StepTiming {
        step: step.to_owned(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    Ok(value)
}

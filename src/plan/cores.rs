//! Which CPU cores the worker threads run on (std, Linux). On big.LITTLE boards (RK3588: four Cortex-A76
//! beside four A55) a layer split evenly across a big and a little core waits for the little one, so the
//! pool goes to the fastest cores first: cores are ranked by the kernel's `cpu_capacity` (the scheduler's
//! own measure of relative speed), or by `cpufreq/cpuinfo_max_freq` where that is missing. On a CPU whose
//! cores are all alike nothing is pinned and the OS places the threads.

use crate::error::{Error, Result};
use std::path::Path;
use std::prelude::v1::*;

/// Cores a list may name (the size of Linux's `cpu_set_t`).
pub const MAX_CORES: usize = 1024;

/// Where Linux describes the CPUs.
pub const SYSFS_CPUS: &str = "/sys/devices/system/cpu";

/// Parses a core list as Linux writes them (`cpulist` format): `4-7`, `0,2,4-5`.
pub fn parse_list(s: &str) -> Result<Vec<usize>> {
    let bad = || Error::Input(format!("core list {s:?}: expected numbers and ranges such as 4-7 or 0,2,4-5"));
    let mut cores = Vec::new();
    for part in s.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        if a > b || b >= MAX_CORES {
            return Err(bad());
        }
        for c in a..=b {
            if cores.contains(&c) {
                return Err(Error::Input(format!("core list {s:?}: core {c} is listed twice")));
            }
            cores.push(c);
        }
    }
    Ok(cores)
}

/// One online core and its relative speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Core {
    pub id: usize,
    /// `cpu_capacity` (1024 = the fastest core), else the maximum frequency in kHz, else 0 (unknown).
    pub speed: u64,
}

/// The online cores under `sysfs` (normally [`SYSFS_CPUS`]), fastest first, lower ids first among equals.
/// Empty when `sysfs` does not list them (not Linux, or a sandbox without /sys).
pub fn ranked(sysfs: &Path) -> Vec<Core> {
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let Some(online) = read(&sysfs.join("online")).and_then(|s| parse_list(&s).ok()) else {
        return Vec::new();
    };
    let mut cores: Vec<Core> = online
        .into_iter()
        .map(|id| {
            let cpu = sysfs.join(format!("cpu{id}"));
            let num = |rel: &str| read(&cpu.join(rel)).and_then(|s| s.trim().parse::<u64>().ok());
            Core { id, speed: num("cpu_capacity").or_else(|| num("cpufreq/cpuinfo_max_freq")).unwrap_or(0) }
        })
        .collect();
    cores.sort_by_key(|c| (core::cmp::Reverse(c.speed), c.id));
    cores
}

/// The cores a pool of `threads` runs on: `requested` as given (each must be online), or, when none were
/// requested, the `threads` fastest cores if the cores differ in speed, or nothing (no pinning) if they
/// are alike or unknown. Worker i runs on entry i (round robin when there are fewer cores than threads).
pub fn choose(requested: &[usize], threads: usize, online: &[Core]) -> Result<Vec<usize>> {
    if !requested.is_empty() {
        if let Some(c) = requested.iter().find(|&&c| !online.is_empty() && !online.iter().any(|o| o.id == c)) {
            let list: Vec<String> = online.iter().map(|o| o.id.to_string()).collect();
            return Err(Error::Input(format!("core {c} is not online (online: {})", list.join(","))));
        }
        return Ok(requested.to_vec());
    }
    let alike = online.windows(2).all(|w| w[0].speed == w[1].speed);
    if alike {
        return Ok(Vec::new());
    }
    Ok(online.iter().take(threads).map(|c| c.id).collect())
}

/// Restricts the calling thread to `core`.
#[cfg(target_os = "linux")]
pub fn pin_current(core: usize) -> Result<()> {
    if core >= MAX_CORES {
        return Err(Error::Input(format!("cannot run on core {core}: cores are numbered below {MAX_CORES}")));
    }
    // SAFETY: a zeroed cpu_set_t is an empty set with room for MAX_CORES cores (checked above);
    // sched_setaffinity(0, …) applies to the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(Error::Input(format!("cannot run on core {core}: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Restricts the calling thread to `core` (not supported off Linux: an error).
#[cfg(not(target_os = "linux"))]
pub fn pin_current(core: usize) -> Result<()> {
    Err(Error::Input(format!("cannot pin to core {core}: thread affinity is only implemented on Linux")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_parse_like_linux_writes_them() {
        assert_eq!(parse_list("4-7").unwrap(), [4, 5, 6, 7]);
        assert_eq!(parse_list("0,2,4-5\n").unwrap(), [0, 2, 4, 5]);
        assert_eq!(parse_list("3").unwrap(), [3]);
        for bad in ["", "a", "5-3", "1,,2", "0-1024", "1,1", "-1"] {
            assert!(parse_list(bad).is_err(), "{bad:?}");
        }
    }

    /// A fake sysfs shaped like an RK3588: cpu0-3 Cortex-A55 (capacity 414), cpu4-7 Cortex-A76 (1024).
    fn rk3588(dir: &Path, capacity: bool) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("online"), "0-7\n").unwrap();
        for id in 0..8 {
            let cpu = dir.join(format!("cpu{id}"));
            std::fs::create_dir_all(cpu.join("cpufreq")).unwrap();
            let (cap, khz) = if id < 4 { (414, 1_800_000) } else { (1024, 2_400_000) };
            if capacity {
                std::fs::write(cpu.join("cpu_capacity"), format!("{cap}\n")).unwrap();
            }
            std::fs::write(cpu.join("cpufreq/cpuinfo_max_freq"), format!("{khz}\n")).unwrap();
        }
    }

    #[test]
    fn big_cores_come_first_on_big_little() {
        for capacity in [true, false] {
            let dir = std::env::temp_dir().join(format!("resedge-cores-{}-{capacity}", std::process::id()));
            rk3588(&dir, capacity);
            let online = ranked(&dir);
            std::fs::remove_dir_all(&dir).unwrap();
            let ids: Vec<usize> = online.iter().map(|c| c.id).collect();
            assert_eq!(ids, [4, 5, 6, 7, 0, 1, 2, 3], "capacity files: {capacity}");
            assert_eq!(choose(&[], 2, &online).unwrap(), [4, 5]);
            assert_eq!(choose(&[], 6, &online).unwrap(), [4, 5, 6, 7, 0, 1]);
            assert_eq!(choose(&[0, 1], 2, &online).unwrap(), [0, 1], "an explicit list wins");
            assert!(choose(&[8], 1, &online).unwrap_err().to_string().contains("core 8 is not online"));
        }
    }

    #[test]
    fn alike_or_unknown_cores_are_not_pinned() {
        let same: Vec<Core> = (0..4).map(|id| Core { id, speed: 1024 }).collect();
        assert!(choose(&[], 4, &same).unwrap().is_empty());
        assert!(choose(&[], 4, &[]).unwrap().is_empty());
        assert!(ranked(Path::new("/nonexistent")).is_empty());
        assert_eq!(choose(&[3], 1, &[]).unwrap(), [3], "unknown topology: the request is passed on");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_runs_on_its_core() {
        let last = ranked(Path::new(SYSFS_CPUS)).iter().map(|c| c.id).max().unwrap_or(0);
        std::thread::spawn(move || {
            pin_current(last).unwrap();
            // SAFETY: sched_getcpu has no preconditions.
            assert_eq!(unsafe { libc::sched_getcpu() }, last as i32);
        })
        .join()
        .unwrap();
        assert!(pin_current(MAX_CORES - 1).is_err(), "a core that does not exist is an error");
        assert!(pin_current(MAX_CORES).is_err());
    }
}

//! Start times of per-device cumulative counters (`/proc/net/dev`, `/proc/diskstats`).
//!
//! The kernel keeps a device's counters from the moment the device appeared, not from boot:
//! an interface that is deleted and created again, a hot-plugged disk or a driver reload
//! starts from zero. A cumulative point whose start time stayed at boot would then look like
//! a counter that went backwards within one interval, and backends compute a negative rate
//! or drop the series. So each device gets its own start time:
//! - devices seen in the agent's first cycle: boot time (the best that is known);
//! - devices first seen later (new, or back after vanishing): the time of that first
//!   observation, as the OTLP data model asks when the true start is unknown;
//! - a device whose counters went down since the last cycle (reset or 32-bit wrap): the
//!   time of the observation that saw it.
//!
//! A reset is detected from the sum of the device's monotonic counters: each one only grows
//! while the device lives, so their sum going down means they restarted.

use std::collections::HashMap;

/// Per-device start times, kept across cycles by one collector.
#[derive(Debug, Default)]
pub struct DeviceStarts {
    /// device → (start, last sum of its counters, cycle last seen).
    devices: HashMap<String, (u64, u64, u64)>,
    cycle: u64,
}

impl DeviceStarts {
    /// Starts a cycle observed at `now_unix_nanos`; returns a handle that hands out starts
    /// and forgets the devices that were not seen when it is dropped.
    pub fn cycle(&mut self, boot_unix_nanos: u64, now_unix_nanos: u64) -> Cycle<'_> {
        self.cycle += 1;
        Cycle {
            starts: self,
            boot: boot_unix_nanos,
            now: now_unix_nanos,
        }
    }
}

/// One cycle of [`DeviceStarts`].
#[derive(Debug)]
pub struct Cycle<'a> {
    starts: &'a mut DeviceStarts,
    boot: u64,
    now: u64,
}

impl Cycle<'_> {
    /// The start time for `device`'s counters, whose monotonic counters sum to `sum` now.
    pub fn start(&mut self, device: &str, sum: u64) -> u64 {
        let cycle = self.starts.cycle;
        let first_cycle = cycle == 1;
        match self.starts.devices.get_mut(device) {
            Some((start, last, seen)) => {
                if sum < *last {
                    *start = self.now;
                }
                *last = sum;
                *seen = cycle;
                *start
            }
            None => {
                let start = if first_cycle { self.boot } else { self.now };
                self.starts
                    .devices
                    .insert(device.to_owned(), (start, sum, cycle));
                start
            }
        }
    }
}

impl Drop for Cycle<'_> {
    fn drop(&mut self) {
        let cycle = self.starts.cycle;
        self.starts.devices.retain(|_, (_, _, seen)| *seen == cycle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_cycle_boot_then_reset_new_and_returning_devices_start_when_seen() {
        let mut s = DeviceStarts::default();
        {
            let mut c = s.cycle(1, 100);
            assert_eq!(c.start("eth0", 500), 1, "present at start: boot time");
            assert_eq!(c.start("sda", 10), 1);
        }
        {
            let mut c = s.cycle(1, 200);
            assert_eq!(c.start("eth0", 900), 1, "growing: unchanged");
            assert_eq!(c.start("sda", 3), 200, "went down: reset seen now");
            assert_eq!(c.start("veth1", 7), 200, "new device: first observation");
        }
        {
            let mut c = s.cycle(1, 300);
            assert_eq!(c.start("sda", 3), 200, "equal is not a reset");
            // eth0 and veth1 are not seen this cycle: they are forgotten.
        }
        let mut c = s.cycle(1, 400);
        assert_eq!(c.start("eth0", 5), 400, "back after vanishing: a new start");
        assert_eq!(c.start("sda", 4), 200);
    }

    /// One cycle of a random history: for each of four devices, absent, or present with a
    /// counter step — growing (0..1000) or reset to a small value (a device recreated, a
    /// 32-bit counter wrapped).
    fn history() -> impl proptest::strategy::Strategy<Value = Vec<[Option<(bool, u64)>; 4]>> {
        use proptest::prelude::*;
        let step = prop_oneof![
            3 => (Just(false), 0u64..1_000),
            1 => (Just(true), 0u64..50),
        ];
        let device = proptest::option::weighted(0.8, step);
        proptest::collection::vec(proptest::array::uniform4(device), 1..40)
    }

    proptest::proptest! {
        /// Whatever devices do between cycles (grow, reset, wrap, vanish, come back), what a
        /// backend receives is a valid cumulative series: under one start time a device's
        /// counter never goes down, a start time is never in the future nor before boot, it
        /// changes only at a reset or a reappearance, and devices of the first cycle start
        /// at boot.
        #[test]
        fn every_series_is_monotonic_under_its_start_time(steps in history()) {
            const BOOT: u64 = 1_000;
            let names = ["eth0", "eth1", "sda", "nvme0n1"];
            let mut s = DeviceStarts::default();
            // device → its counter now, and what the backend last saw: (start, sum, cycle).
            let mut counter = [0u64; 4];
            let mut seen: [Option<(u64, u64, usize)>; 4] = [None; 4];
            for (i, cycle) in steps.iter().enumerate() {
                let now = BOOT + 10 * (i as u64 + 1);
                let mut c = s.cycle(BOOT, now);
                for (d, step) in cycle.iter().enumerate() {
                    let Some((reset, v)) = *step else { continue };
                    counter[d] = if reset { v } else { counter[d] + v };
                    let start = c.start(names[d], counter[d]);
                    proptest::prop_assert!((BOOT..=now).contains(&start));
                    if i == 0 {
                        proptest::prop_assert_eq!(start, BOOT);
                    }
                    match seen[d] {
                        // Seen in the previous cycle: same start exactly when the counter
                        // did not go down.
                        Some((was_start, was_sum, was_cycle)) if was_cycle + 1 == i => {
                            if counter[d] >= was_sum {
                                proptest::prop_assert_eq!(start, was_start);
                            } else {
                                proptest::prop_assert_eq!(start, now);
                            }
                        }
                        // New, or back after a gap: its counters may have restarted unseen.
                        _ if i > 0 => proptest::prop_assert_eq!(start, now),
                        _ => {}
                    }
                    seen[d] = Some((start, counter[d], i));
                }
            }
        }
    }
}

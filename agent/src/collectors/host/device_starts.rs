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
}

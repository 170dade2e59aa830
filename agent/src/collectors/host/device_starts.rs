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
//!
//! A collector also asks its name filter about a device once, when it is first listed, and
//! keeps one shared copy of the name for the device's points in every cycle it stays listed:
//! a steady cycle neither matches globs nor copies names.

use std::collections::HashMap;

use faultline_exporters::model::{AttrValue, Text};

/// Per-device start times, kept across cycles by one collector.
#[derive(Debug, Default)]
pub struct DeviceStarts {
    devices: HashMap<String, Device>,
    cycle: u64,
}

/// What is kept of one listed device.
#[derive(Debug)]
struct Device {
    /// Its name, one shared copy for its points; `None` where the filter leaves it out.
    name: Option<AttrValue>,
    /// The start time of its counters.
    start: u64,
    /// The sum of its monotonic counters last cycle.
    last: u64,
    /// The cycle it was last listed in.
    seen: u64,
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

/// A device listed this cycle and reported.
#[derive(Debug)]
pub struct Reported {
    /// Its name, shared with every other point that carries it.
    pub name: AttrValue,
    /// The start time of its cumulative points.
    pub start: u64,
}

impl Cycle<'_> {
    /// `device` as listed this cycle: `None` where `reports` leaves it out (asked only in the
    /// first cycle of a run of cycles that list it), else its shared name and the start time
    /// of its counters, whose monotonic counters sum to `sum()` now.
    pub fn reported(
        &mut self,
        device: &str,
        reports: impl FnOnce(&str) -> bool,
        sum: impl FnOnce() -> u64,
    ) -> Option<Reported> {
        let cycle = self.starts.cycle;
        if let Some(d) = self.starts.devices.get_mut(device) {
            d.seen = cycle;
            let name = d.name.clone()?;
            let sum = sum();
            if sum < d.last {
                d.start = self.now;
            }
            d.last = sum;
            return Some(Reported {
                name,
                start: d.start,
            });
        }
        let name = reports(device).then(|| AttrValue::from(Text::shared(device)));
        let (start, last) = match name {
            Some(_) if cycle == 1 => (self.boot, sum()),
            Some(_) => (self.now, sum()),
            None => (0, 0),
        };
        let kept = Device {
            name: name.clone(),
            start,
            last,
            seen: cycle,
        };
        self.starts.devices.insert(device.to_owned(), kept);
        name.map(|name| Reported { name, start })
    }

    /// The start time for `device`'s counters, whose monotonic counters sum to `sum` now
    /// (a device every filter reports).
    #[cfg(test)]
    pub fn start(&mut self, device: &str, sum: u64) -> u64 {
        self.reported(device, |_| true, || sum)
            .map_or(0, |r| r.start)
    }
}

impl Drop for Cycle<'_> {
    fn drop(&mut self) {
        let cycle = self.starts.cycle;
        self.starts.devices.retain(|_, d| d.seen == cycle);
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

    #[test]
    fn the_filter_is_asked_once_while_a_device_stays_listed_and_its_name_is_one_copy() {
        let mut s = DeviceStarts::default();
        let mut asked = Vec::new();
        let mut names = Vec::new();
        for (now, listed) in [(100, true), (200, true), (300, false), (400, true)] {
            let mut c = s.cycle(1, now);
            if listed {
                let eth0 = c.reported(
                    "eth0",
                    |n| {
                        asked.push((now, n.to_owned()));
                        true
                    },
                    || 5,
                );
                names.push(eth0.expect("reported").name);
            }
            let lo = c.reported(
                "lo",
                |n| {
                    asked.push((now, n.to_owned()));
                    false
                },
                || panic!("a device left out has no counters to sum"),
            );
            assert!(lo.is_none());
        }
        assert_eq!(
            asked,
            [(100, "eth0"), (100, "lo"), (400, "eth0")]
                .map(|(t, n)| (t, n.to_owned()))
                .to_vec(),
            "asked when first listed, and again when listed after a cycle without it"
        );
        let text = |v: &AttrValue| match v {
            AttrValue::Str(Text::Shared(t)) => t.clone(),
            other => panic!("not a shared name: {other:?}"),
        };
        assert!(std::sync::Arc::ptr_eq(&text(&names[0]), &text(&names[1])));
        assert!(!std::sync::Arc::ptr_eq(&text(&names[1]), &text(&names[2])));
        assert_eq!(&*text(&names[2]), "eth0");
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

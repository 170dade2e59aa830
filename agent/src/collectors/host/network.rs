//! Network interfaces from `/proc/net/dev`: bytes, packets, errors and drops per direction.
//!
//! As the semantic conventions registry has it, `system.network.packet.count` identifies the
//! interface with `system.device`, while the other metrics use `network.interface.name`.
//! `/proc/net/dev` lists the interfaces of the agent's network namespace: run the agent with
//! the host network to see the host's interfaces.

use faultline_exporters::model::{Attributes, Batch, MetricDesc};

use super::device_starts::DeviceStarts;
use super::{NameFilter, parse_u64_field};
use crate::collectors::file::KeptFile;
use crate::collectors::{CollectError, Collector, Context, parse_error};

/// `system.network.io`.
pub const NET_IO: MetricDesc = MetricDesc::counter(
    "system.network.io",
    "By",
    "Bytes received and transmitted per interface.",
);
/// `system.network.packet.count`.
pub const NET_PACKETS: MetricDesc = MetricDesc::counter(
    "system.network.packet.count",
    "{packet}",
    "Packets received and transmitted per interface.",
);
/// `system.network.errors`.
pub const NET_ERRORS: MetricDesc = MetricDesc::counter(
    "system.network.errors",
    "{error}",
    "Receive and transmit errors per interface.",
);
/// `system.network.packet.dropped`.
pub const NET_DROPPED: MetricDesc = MetricDesc::counter(
    "system.network.packet.dropped",
    "{packet}",
    "Packets dropped on receive and transmit per interface.",
);

/// Every metric this collector emits (connections are in [`super::connections`]).
pub const DESCS: &[&MetricDesc] = &[&NET_IO, &NET_PACKETS, &NET_ERRORS, &NET_DROPPED];

/// Counters of one direction of one interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Direction {
    /// Bytes.
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
    /// Errors.
    pub errors: u64,
    /// Dropped packets.
    pub dropped: u64,
}

/// One interface line of `/proc/net/dev`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetDev<'a> {
    /// Interface name.
    pub name: &'a str,
    /// Receive side.
    pub receive: Direction,
    /// Transmit side.
    pub transmit: Direction,
}

/// Parses one interface line: `name: 8 receive counters 8 transmit counters`. The kernel
/// pads the name to 6 columns and puts no space after the colon when the first counter is
/// wide; interface names cannot contain `:` or whitespace.
pub fn parse_net_dev_line(line: &str) -> Result<NetDev<'_>, String> {
    let (name, rest) = line
        .split_once(':')
        .ok_or_else(|| format!("no ':' in {line:?}"))?;
    let name = name.trim();
    let mut v = [0u64; 16];
    let mut fields = rest.split_ascii_whitespace();
    for (i, slot) in v.iter_mut().enumerate() {
        let f = fields
            .next()
            .ok_or_else(|| format!("{name}: {i} counters, expected 16"))?;
        *slot = parse_u64_field(f, name)?;
    }
    Ok(NetDev {
        name,
        receive: Direction {
            bytes: v[0],
            packets: v[1],
            errors: v[2],
            dropped: v[3],
        },
        transmit: Direction {
            bytes: v[8],
            packets: v[9],
            errors: v[10],
            dropped: v[11],
        },
    })
}

/// Parses all of `/proc/net/dev` (two header lines).
pub fn parse_net_dev(text: &str) -> Result<Vec<NetDev<'_>>, String> {
    text.lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(parse_net_dev_line)
        .collect()
}

/// Collector of `system.network.{io,packet.count,errors,packet.dropped}`.
#[derive(Debug)]
pub struct NetworkCollector {
    filter: NameFilter,
    net_dev: KeptFile,
    starts: DeviceStarts,
}

impl NetworkCollector {
    /// A collector reporting the interfaces `filter` allows.
    pub(crate) fn new(filter: NameFilter) -> Self {
        Self {
            filter,
            net_dev: KeptFile::default(),
            starts: DeviceStarts::default(),
        }
    }
}

impl Collector for NetworkCollector {
    fn name(&self) -> &'static str {
        "host.network"
    }

    fn collect(&mut self, ctx: &Context, batch: &mut Batch) -> Result<(), CollectError> {
        let path = ctx.roots.proc("net/dev");
        let text = self.net_dev.read(&path)?;
        let now = batch.time_unix_nanos;
        let host = batch.host();
        let mut starts = self.starts.cycle(ctx.boot_time_unix_nanos, now);
        for line in text.lines().skip(2) {
            if line.trim().is_empty() {
                continue;
            }
            let d = parse_net_dev_line(line).map_err(|e| parse_error(&path, e))?;
            let sum = || {
                [d.receive, d.transmit]
                    .iter()
                    .map(|c| c.bytes.wrapping_add(c.packets))
                    .fold(0u64, u64::wrapping_add)
            };
            let Some(device) = starts.reported(d.name, |n| self.filter.allows(n), sum) else {
                continue;
            };
            let (name, start) = (device.name, device.start);
            for (dir, c) in [("receive", d.receive), ("transmit", d.transmit)] {
                let by_name = || {
                    Attributes::of([
                        ("network.interface.name", name.clone()),
                        ("network.io.direction", dir.into()),
                    ])
                };
                host.record_since(&NET_IO, by_name(), c.bytes, start);
                let by_device = Attributes::of([
                    ("system.device", name.clone()),
                    ("network.io.direction", dir.into()),
                ]);
                host.record_since(&NET_PACKETS, by_device, c.packets, start);
                host.record_since(&NET_ERRORS, by_name(), c.errors, start);
                host.record_since(&NET_DROPPED, by_name(), c.dropped, start);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::host::test_support::{read, run, value};
    use crate::collectors::host::{DeviceFilter, Field};

    #[test]
    fn an_interface_whose_counters_restart_gets_a_new_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let write = |eth0_rx: u64| {
            std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
            let text = format!(
                "Inter-|   Receive\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n  eth0: {eth0_rx} 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n"
            );
            std::fs::write(dir.path().join("proc/net/dev"), text).unwrap();
        };
        let ctx = crate::collectors::host::test_support::ctx(crate::collectors::Roots {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
            rootfs: dir.path().to_path_buf(),
        });
        let f = NameFilter::for_devices(&DeviceFilter::default(), Field::Network).unwrap();
        let mut c = NetworkCollector::new(f);
        let mut cycle = |time: u64| {
            let mut b = Batch::new(time, std::sync::Arc::default(), 1_000);
            c.collect(&ctx, &mut b).unwrap();
            b.host_metric("system.network.io").unwrap().points[0].start_unix_nanos
        };
        write(9_000);
        assert_eq!(cycle(5_000), 1_000, "present at the first cycle: boot time");
        write(9_500);
        assert_eq!(cycle(6_000), 1_000, "growing counters keep their start");
        write(40);
        assert_eq!(cycle(7_000), 7_000, "a restarted counter starts when seen");
        write(90);
        assert_eq!(cycle(8_000), 7_000);
    }

    #[test]
    fn real_net_dev_parses() {
        let text = read("real", "proc/net/dev");
        let devs = parse_net_dev(&text).unwrap();
        assert!(devs.iter().any(|d| d.name == "lo"));
        let eth = devs.iter().find(|d| d.name == "eth0").unwrap();
        assert!(eth.receive.bytes > 0 && eth.transmit.packets > 0);
        assert!(parse_net_dev_line("eth0: 1 2 3").is_err());
        assert!(parse_net_dev_line("eth0 1 2 3").is_err());
    }

    #[test]
    fn glued_counters_and_odd_names_parse() {
        let text = read("spaces", "proc/net/dev");
        let devs = parse_net_dev(&text).unwrap();
        let wide = devs.iter().find(|d| d.name == "enp0s31f6.100@x").unwrap();
        assert_eq!(wide.receive.bytes, 123_456_789_012_345);
        assert_eq!(wide.transmit.dropped, 4);
    }

    #[test]
    fn collector_uses_interface_name_and_device_as_the_registry_says() {
        let f = NameFilter::for_devices(
            &DeviceFilter {
                include: vec![],
                exclude: vec!["lo".into()],
            },
            Field::Network,
        )
        .unwrap();
        let (b, r) = run(&mut NetworkCollector::new(f), "spaces");
        r.unwrap();
        assert_eq!(
            value(
                &b,
                "system.network.io",
                &[
                    ("network.interface.name", "enp0s31f6.100@x"),
                    ("network.io.direction", "receive")
                ]
            ),
            123_456_789_012_345.0
        );
        assert_eq!(
            value(
                &b,
                "system.network.packet.count",
                &[
                    ("system.device", "enp0s31f6.100@x"),
                    ("network.io.direction", "transmit")
                ]
            ),
            22.0
        );
        assert_eq!(
            value(
                &b,
                "system.network.packet.dropped",
                &[
                    ("network.interface.name", "enp0s31f6.100@x"),
                    ("network.io.direction", "transmit")
                ]
            ),
            4.0
        );
        let io = b.host_metric("system.network.io").unwrap();
        assert!(io.points.iter().all(|p| {
            p.attributes
                .get("network.interface.name")
                .unwrap()
                .to_text()
                != "lo"
        }));
    }
}

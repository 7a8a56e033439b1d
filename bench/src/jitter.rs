//! The machine's own stalls, measured before a latency comparison.
//!
//! One thread pinned to each core reads the clock in a tight loop and keeps
//! the gaps between consecutive reads. On an idle bare-metal core the
//! longest gap is a few microseconds. A virtual machine whose host preempts
//! it, or a core other busy threads share, shows gaps of milliseconds, and
//! no design's P99 can be lower than the delay those stalls add to the
//! messages caught behind them. `--compare baseline` prints this beside its
//! P99 ratios so a reader can tell the machine's floor from either design.

use std::time::{Duration, Instant};

use serde::Serialize;

/// A gap this long counts as a stall.
const STALL_NS: u64 = 100_000;
/// A gap this long counts as a long stall.
const LONG_STALL_NS: u64 = 1_000_000;

/// What the probe found.
#[derive(Clone, Debug, Serialize)]
pub struct MachineJitter {
    /// Cores probed, one thread each.
    pub cores: usize,
    /// Of those threads, how many were pinned to their core (the rest ran
    /// where the scheduler put them, so their gaps are its too).
    pub pinned: usize,
    /// How long each core was probed, seconds.
    pub seconds: f64,
    /// Gaps between two clock reads over 100 µs, per core-second.
    pub stalls_per_second: f64,
    /// Gaps over 1 ms, per core-second.
    pub long_stalls_per_second: f64,
    /// The longest gap on any core, nanoseconds.
    pub longest_gap_ns: u64,
}

/// Gaps seen by one probing thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Gaps {
    stalls: u64,
    long_stalls: u64,
    longest_ns: u64,
}

impl Gaps {
    fn record(&mut self, gap_ns: u64) {
        if gap_ns > STALL_NS {
            self.stalls += 1;
        }
        if gap_ns > LONG_STALL_NS {
            self.long_stalls += 1;
        }
        self.longest_ns = self.longest_ns.max(gap_ns);
    }

    fn add(self, other: Self) -> Self {
        Self {
            stalls: self.stalls + other.stalls,
            long_stalls: self.long_stalls + other.long_stalls,
            longest_ns: self.longest_ns.max(other.longest_ns),
        }
    }
}

/// Probe every core for `duration` at once (one thread each, pinned to the
/// core's first hardware thread; unpinned when the topology cannot be read).
pub fn measure(duration: Duration) -> MachineJitter {
    let pus: Vec<Option<usize>> = caxton_numa::MachineTopology::discover()
        .ok()
        .map(|topology| {
            topology
                .cores
                .iter()
                .filter_map(|core| core.pus.first().copied().map(Some))
                .collect::<Vec<_>>()
        })
        .filter(|pus| !pus.is_empty())
        .unwrap_or_else(|| vec![None]);
    let total = std::thread::scope(|scope| {
        let probes: Vec<_> = pus
            .iter()
            .map(|pu| {
                let pu = *pu;
                scope.spawn(move || {
                    // A probe that cannot be pinned still measures its
                    // own stalls; the figure is then the scheduler's too,
                    // and the report says how many were pinned.
                    let pinned = pu.is_some_and(|pu| {
                        caxton_numa::binding::bind_current_thread(&caxton_numa::CpuBinding::Pu(pu))
                            .is_ok()
                    });
                    (probe(duration), pinned)
                })
            })
            .collect();
        probes
            .into_iter()
            .map(|probe| probe.join().unwrap_or_default())
            .fold(
                (Gaps::default(), 0),
                |(total, pinned), (gaps, was_pinned)| {
                    (total.add(gaps), pinned + usize::from(was_pinned))
                },
            )
    });
    let (total, pinned) = total;
    let core_seconds = (duration.as_secs_f64() * pus.len() as f64).max(1e-9);
    MachineJitter {
        cores: pus.len(),
        pinned,
        seconds: duration.as_secs_f64(),
        stalls_per_second: total.stalls as f64 / core_seconds,
        long_stalls_per_second: total.long_stalls as f64 / core_seconds,
        longest_gap_ns: total.longest_ns,
    }
}

fn probe(duration: Duration) -> Gaps {
    let start = Instant::now();
    let mut last = start;
    let mut gaps = Gaps::default();
    loop {
        let now = Instant::now();
        gaps.record(now.duration_since(last).as_nanos() as u64);
        last = now;
        if now.duration_since(start) >= duration {
            return gaps;
        }
    }
}

impl MachineJitter {
    /// One line for a report.
    pub fn render(&self) -> String {
        format!(
            "machine jitter: a thread on each of {} core(s) ({} pinned to it) read the clock for {:.1} s and found {:.1} gaps/s over 100 µs and {:.2}/s over 1 ms, the longest {} (no P99 here can sit below what these stalls add)\n",
            self.cores,
            self.pinned,
            self.seconds,
            self.stalls_per_second,
            self.long_stalls_per_second,
            crate::custom::format_ns(self.longest_gap_ns),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_sorted_by_length_and_the_longest_kept() {
        let mut gaps = Gaps::default();
        for gap in [20, 99_000, 150_000, 2_000_000, 40] {
            gaps.record(gap);
        }
        assert_eq!(
            gaps,
            Gaps {
                stalls: 2,
                long_stalls: 1,
                longest_ns: 2_000_000
            }
        );
        let other = Gaps {
            stalls: 1,
            long_stalls: 0,
            longest_ns: 300_000,
        };
        assert_eq!(
            gaps.add(other),
            Gaps {
                stalls: 3,
                long_stalls: 1,
                longest_ns: 2_000_000
            }
        );
    }

    #[test]
    fn every_core_is_probed_for_the_time_asked() {
        let started = Instant::now();
        let jitter = measure(Duration::from_millis(30));
        assert!(started.elapsed() >= Duration::from_millis(30));
        let topology = caxton_numa::MachineTopology::discover().expect("topology");
        assert_eq!(jitter.cores, topology.cores.len(), "one probe per core");
        assert!(jitter.pinned <= jitter.cores);
        assert!(
            jitter
                .render()
                .contains(&format!("{} pinned", jitter.pinned)),
            "{}",
            jitter.render()
        );
        assert!(
            jitter.longest_gap_ns > 0,
            "some time passes between two reads"
        );
        assert!(jitter.render().contains("machine jitter"));
    }
}

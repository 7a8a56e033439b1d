//! How long a cache line takes to reach another CPU and come back: the
//! machine's price for every message that crosses between two shards.
//!
//! A cross-shard message moves lines from the sending core to the receiving
//! one (the ring slot, the ring's indices, the content) and back. Two cores
//! that share a last-level cache trade a line in a few tens of
//! nanoseconds; cores on different dies or sockets take several times as
//! long, and so do a virtual machine's vCPUs whenever its host runs them on
//! such cores. On the 2-core development VM the round trip moves between
//! about 90 ns and about 420 ns as the host moves the vCPUs, and the
//! cross-shard pairs' throughput halves with it while local pairs do not
//! change. The scaling report measures it between the CPUs of neighbouring
//! shards (the pairs its cross layout loads) before and after each step, so
//! a reader can tell the machine's state from the engine's.
//!
//! The probe: two threads, one pinned to each CPU, pass a counter on one
//! cache line back and forth; timed in batches, the median batch's mean is
//! the figure.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Round trips per timed batch.
const PER_BATCH: u32 = 200;
/// Timed batches per measurement (after one untimed warm-up batch).
const BATCHES: usize = 40;
/// A probe that has not finished by then gives up: its two threads share
/// a CPU with busy work and each hand-over waits for the scheduler.
const GIVE_UP_AFTER: Duration = Duration::from_secs(2);

/// The counter the two threads pass, on a line (and its prefetch partner) of its own.
#[repr(align(128))]
struct Line(AtomicU64);

/// Set by either thread to stop the other.
const STOP: u64 = u64::MAX;

/// One measured pair of CPUs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairRoundTrip {
    /// The first CPU (OS index).
    pub from_pu: usize,
    /// The second.
    pub to_pu: usize,
    /// The median batch's mean round trip, nanoseconds; `None` when the
    /// threads could not be pinned or the probe gave up.
    pub round_trip_ns: Option<u64>,
}

/// The distinct pairs of neighbouring shards' CPUs: shard `i` and shard
/// `i + 1` (the last and the first close the ring), as the cross layout
/// pairs its drivers and echoes. Pairs on one CPU are left out, and a pair
/// is measured once whichever way round it appears.
pub fn neighbour_pairs(pus: &[usize]) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    if pus.len() < 2 {
        return pairs;
    }
    for (index, &from) in pus.iter().enumerate() {
        let to = pus[(index + 1) % pus.len()];
        let key = (from.min(to), from.max(to));
        if from != to && !pairs.iter().any(|&(a, b)| (a.min(b), a.max(b)) == key) {
            pairs.push((from, to));
        }
    }
    pairs
}

/// Measure each of `pairs`, one after the other.
pub fn measure_pairs(pairs: &[(usize, usize)]) -> Vec<PairRoundTrip> {
    pairs
        .iter()
        .map(|&(from_pu, to_pu)| PairRoundTrip {
            from_pu,
            to_pu,
            round_trip_ns: round_trip(from_pu, to_pu, BATCHES, PER_BATCH, GIVE_UP_AFTER),
        })
        .collect()
}

/// The median over `batches` timed batches of `per_batch` round trips
/// between a thread on `from_pu` and one on `to_pu`, nanoseconds.
pub fn round_trip(
    from_pu: usize,
    to_pu: usize,
    batches: usize,
    per_batch: u32,
    give_up_after: Duration,
) -> Option<u64> {
    let line = Line(AtomicU64::new(0));
    // The answerer's word on its pinning: 0 not yet, 1 pinned, 2 refused.
    // The asker starts only once it is pinned, so the first store it makes
    // cannot hide a refusal.
    let pinned = AtomicU8::new(0);
    let deadline = Instant::now() + give_up_after;
    std::thread::scope(|scope| {
        let answerer = scope.spawn(|| {
            if !pin(to_pu) {
                pinned.store(2, Ordering::Release);
                return;
            }
            pinned.store(1, Ordering::Release);
            // Answer each odd value with the next even one until stopped.
            let mut expected = 1;
            loop {
                match wait_for(&line.0, expected, deadline) {
                    Some(()) => {
                        line.0.store(expected + 1, Ordering::Release);
                        expected += 2;
                    }
                    None => return,
                }
            }
        });
        let asker = scope.spawn(|| {
            if !pin(from_pu) {
                return None;
            }
            loop {
                match pinned.load(Ordering::Acquire) {
                    0 if Instant::now() < deadline => std::thread::yield_now(),
                    1 => break,
                    _ => return None,
                }
            }
            let mut value = 0;
            let mut batch_ns = Vec::with_capacity(batches);
            for batch in 0..=batches {
                let started = Instant::now();
                for _ in 0..per_batch {
                    line.0.store(value + 1, Ordering::Release);
                    wait_for(&line.0, value + 2, deadline)?;
                    value += 2;
                }
                // The first batch warms the line and the threads up.
                if batch > 0 {
                    batch_ns.push(started.elapsed().as_nanos() as u64 / u64::from(per_batch));
                }
            }
            Some(batch_ns)
        });
        let batch_ns = asker.join().ok().flatten();
        line.0.store(STOP, Ordering::Release);
        let _ = answerer.join();
        batch_ns.and_then(median)
    })
}

/// Spin until `line` holds `expected`; `None` once it holds [`STOP`] or
/// the deadline passed. Yields now and then, so two probe threads on one
/// CPU still finish (slowly) rather than spin out each other's time slices.
fn wait_for(line: &AtomicU64, expected: u64, deadline: Instant) -> Option<()> {
    let mut spins: u32 = 0;
    loop {
        let seen = line.load(Ordering::Acquire);
        if seen == expected {
            return Some(());
        }
        if seen == STOP {
            return None;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(4096) {
            if Instant::now() >= deadline {
                line.store(STOP, Ordering::Release);
                return None;
            }
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

fn pin(pu: usize) -> bool {
    caxton_numa::binding::bind_current_thread(&caxton_numa::CpuBinding::Pu(pu)).is_ok()
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

/// The measured figures of `pairs`: (median, slowest pair) when any was measured.
pub fn spread(pairs: &[PairRoundTrip]) -> Option<(u64, &PairRoundTrip)> {
    let measured: Vec<u64> = pairs.iter().filter_map(|pair| pair.round_trip_ns).collect();
    let slowest = pairs
        .iter()
        .filter(|pair| pair.round_trip_ns.is_some())
        .max_by_key(|pair| pair.round_trip_ns)?;
    Some((median(measured)?, slowest))
}

/// One phrase for a report: "median 412 ns over 1 pair(s), slowest 0→1 (412 ns)".
pub fn describe(pairs: &[PairRoundTrip]) -> String {
    let failed = pairs
        .iter()
        .filter(|pair| pair.round_trip_ns.is_none())
        .count();
    let mut text = match spread(pairs) {
        Some((median, slowest)) => format!(
            "median {median} ns over {} pair(s), slowest {}→{} ({} ns)",
            pairs.len() - failed,
            slowest.from_pu,
            slowest.to_pu,
            slowest.round_trip_ns.unwrap_or_default()
        ),
        None => "not measured".to_owned(),
    };
    if failed > 0 {
        text.push_str(&format!(
            "; {failed} pair(s) could not be pinned or timed out"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_shards_are_paired_once_each_and_never_with_themselves() {
        assert_eq!(neighbour_pairs(&[]), []);
        assert_eq!(neighbour_pairs(&[3]), []);
        // Two shards: 0→1 and 1→0 are one pair.
        assert_eq!(neighbour_pairs(&[0, 1]), [(0, 1)]);
        assert_eq!(neighbour_pairs(&[2, 4, 6]), [(2, 4), (4, 6), (6, 2)]);
        // Shards sharing a CPU are no pair of CPUs.
        assert_eq!(neighbour_pairs(&[1, 1, 2]), [(1, 2)]);
    }

    #[test]
    fn the_figures_are_summed_up_by_median_and_slowest_pair() {
        let pair = |from_pu, to_pu, round_trip_ns| PairRoundTrip {
            from_pu,
            to_pu,
            round_trip_ns,
        };
        let pairs = [
            pair(0, 1, Some(100)),
            pair(1, 2, Some(400)),
            pair(2, 3, None),
            pair(3, 0, Some(90)),
        ];
        let (median, slowest) = spread(&pairs).expect("three measured");
        assert_eq!(median, 100);
        assert_eq!((slowest.from_pu, slowest.to_pu), (1, 2));
        assert_eq!(
            describe(&pairs),
            "median 100 ns over 3 pair(s), slowest 1→2 (400 ns); 1 pair(s) could not be pinned or timed out"
        );
        assert_eq!(
            describe(&[pair(0, 1, None)]).split(';').next(),
            Some("not measured")
        );
    }

    #[test]
    fn a_line_passed_between_two_cpus_gives_a_round_trip() {
        let allowed = caxton_numa::binding::current_thread_pus().expect("own CPU mask");
        let (Some(&from), Some(&to)) = (allowed.first(), allowed.get(1)) else {
            crate::stderr_line!(
                "skipped: the probe needs two CPUs, this thread may use {}",
                allowed.len()
            );
            return;
        };
        // Few round trips and a long deadline: the test threads of the
        // whole suite may share these CPUs.
        let round_trip_ns = round_trip(from, to, 3, 20, Duration::from_secs(20))
            .expect("two pinned threads pass the line 80 times within 20 s");
        assert!(round_trip_ns > 0, "a round trip takes time");
        assert!(
            round_trip_ns < 20_000_000_000 / 80,
            "no round trip outlasts the deadline's share: {round_trip_ns} ns"
        );
    }

    #[test]
    fn a_cpu_that_cannot_be_pinned_gives_no_figure() {
        // Past any cpu_set_t: binding is refused, and the probe says so
        // rather than timing two unpinned threads.
        assert_eq!(round_trip(0, 1 << 20, 2, 10, Duration::from_secs(5)), None);
    }
}

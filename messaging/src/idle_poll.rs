//! When an idle poller should stop polling: it is not alone on its CPU.
//!
//! Shards (and the gossip shard, for the remote port) poll their rings for
//! `runtime.spin_before_park` after their last message instead of parking
//! at once, so a message that comes a moment later costs no wake-up. That
//! pays only while the poller has its CPU to itself, or shares it with
//! other shards of its node, which hand it back as soon as they go idle. A
//! busy thread of some other process on the same CPU does not: each yield
//! (or preemption) of the poller hands it a whole scheduler slice, a
//! millisecond or more, and a message that arrives meanwhile waits for that
//! slice to end. Measured on the 2-core development VM with one
//! busy-looping process beside two in-process nodes (`benchmark run --suite
//! cluster --quick`, `low-latency`): remote routing's P50 was 4.06 ms
//! polling, 71 µs parking at once.
//!
//! [`PollContention`] notices that from the polls themselves: a poller
//! that comes back [`CONTENDED_GAP`] or more after an idle poll (from its
//! yield, or from a preemption) lost its CPU for about a scheduler slice,
//! whether or not work waits for it now. Twice within [`STRIKES_WITHIN`],
//! and it stops polling for [`SPIN_OFF_FOR`] and parks whenever idle: a
//! parked shard is woken through its doorbell, and the scheduler runs a
//! thread it wakes ahead of one that has used its share. One late return
//! alone is no proof: a virtual machine's CPU is taken from it now and
//! then, and turning polling off on each such stall raised remote routing's
//! P99 from 46 to 52-64 µs on the development VM with no other process
//! running. A busy thread beside the poller takes the CPU again and again.
//! Pure: the caller reads the clock.

use std::time::{Duration, Instant};

/// Away this long after an idle poll, the poller's CPU went to another
/// thread for about a scheduler slice: a busy thread gets a few
/// milliseconds (4 ms on the 2-core development VM, whose scheduler tick is
/// 4 ms), where a shard of this node sharing the CPU hands it back once its
/// batch is done. A busy shard may hold it that long too; the poller then
/// parks for a while and is woken through its doorbell, which costs a
/// wake-up per message, not a slice.
pub const CONTENDED_GAP: Duration = Duration::from_millis(2);

/// How long polling stays off once contention is seen; then it is tried
/// again (the other process may have gone).
pub const SPIN_OFF_FOR: Duration = Duration::from_millis(50);

/// Two late returns this close together are contention; one alone is a
/// stall.
pub const STRIKES_WITHIN: Duration = Duration::from_millis(100);

/// One poller's view of whether polling pays: see the module docs.
#[derive(Debug)]
pub struct PollContention {
    /// Away this long after an idle poll is contention ([`CONTENDED_GAP`]).
    gap: Duration,
    /// The idle poll the poller has not come back from yet.
    polled_at: Option<Instant>,
    /// The last late return that did not turn polling off.
    last_strike: Option<Instant>,
    /// Polling is off until then.
    off_until: Option<Instant>,
    /// Times contention was seen.
    contended: u64,
}

impl Default for PollContention {
    fn default() -> Self {
        Self::with_gap(CONTENDED_GAP)
    }
}

impl PollContention {
    /// Contention at gaps of `gap` rather than [`CONTENDED_GAP`] (a test
    /// that must poll on however slowly its machine runs it passes
    /// `Duration::MAX`).
    pub fn with_gap(gap: Duration) -> Self {
        Self {
            gap,
            polled_at: None,
            last_strike: None,
            off_until: None,
            contended: 0,
        }
    }

    /// Whether an idle poller may poll at `now` rather than park: not
    /// within [`SPIN_OFF_FOR`] of contention.
    pub fn may_poll(&self, now: Instant) -> bool {
        self.off_until.is_none_or(|until| now >= until)
    }

    /// The poller polled, idle, at `now`, and is about to give its CPU up
    /// (a yield, or an await that may run other tasks).
    pub fn polled(&mut self, now: Instant) {
        self.polled_at = Some(now);
    }

    /// The poller runs again (its next turn, busy or not): whether it was
    /// away the gap or more since its idle poll for the second time within
    /// [`STRIKES_WITHIN`], which turns polling off for [`SPIN_OFF_FOR`].
    /// `now` is read only after an idle poll, so a busy poller reads no
    /// clock here.
    pub fn resumed(&mut self, now: impl FnOnce() -> Instant) -> bool {
        let Some(polled_at) = self.polled_at.take() else {
            return false;
        };
        let now = now();
        if now.saturating_duration_since(polled_at) < self.gap {
            return false;
        }
        let strike = self.last_strike.replace(now);
        if strike.is_none_or(|strike| now.saturating_duration_since(strike) > STRIKES_WITHIN) {
            return false;
        }
        self.last_strike = None;
        self.off_until = Some(now + SPIN_OFF_FOR);
        self.contended += 1;
        true
    }

    /// Times contention was seen so far.
    pub fn contended(&self) -> u64 {
        self.contended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Coming back soon after an idle poll is no contention; coming back a
    /// whole gap later twice within a short while is, whatever waits now,
    /// and turns polling off for a while; a poller that did not poll idle
    /// reads no clock.
    #[test]
    fn a_poller_away_a_whole_gap_stops_polling_for_a_while() {
        let start = Instant::now();
        let at = |micros: u64| start + Duration::from_micros(micros);
        let mut contention = PollContention::default();
        assert!(!contention.resumed(|| panic!("no idle poll: no clock read")));
        assert!(contention.may_poll(at(0)));
        contention.polled(at(0));
        assert!(
            !contention.resumed(|| at(1_900)),
            "1.9 ms is within the gap"
        );
        assert!(!contention.resumed(|| panic!("resumed once per poll")));
        assert_eq!(contention.contended(), 0);
        // Away a whole gap once: a stall, not yet contention.
        let gap = CONTENDED_GAP.as_micros() as u64;
        contention.polled(at(10_000));
        assert!(!contention.resumed(|| at(10_000 + gap)));
        // Again, but more than STRIKES_WITHIN later: still a stall.
        let strikes = STRIKES_WITHIN.as_micros() as u64;
        let again = 10_000 + gap + strikes + 1;
        contention.polled(at(again));
        assert!(!contention.resumed(|| at(again + gap)));
        assert_eq!(contention.contended(), 0);
        // Again soon after: another thread keeps taking the CPU.
        let third = again + gap + 500;
        contention.polled(at(third));
        assert!(contention.resumed(|| at(third + gap)));
        assert_eq!(contention.contended(), 1);
        // Off for SPIN_OFF_FOR, then polling is tried again.
        let back = third + gap;
        let off = SPIN_OFF_FOR.as_micros() as u64;
        assert!(!contention.may_poll(at(back + 1)));
        assert!(!contention.may_poll(at(back + off - 1)));
        assert!(contention.may_poll(at(back + off)));
        // A patient one never finds contention.
        let mut patient = PollContention::with_gap(Duration::MAX);
        patient.polled(at(0));
        assert!(!patient.resumed(|| at(3_600_000_000)));
    }
}

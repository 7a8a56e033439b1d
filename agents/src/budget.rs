//! CPU shares as a measured budget: an agent with `cpu_shares: 100m` may run
//! its handlers for a tenth of each [`BUDGET_WINDOW`] on its shard. Past
//! that, the shard holds its messages until the next window starts. Pure
//! accounting: time comes in as an argument.
//!
//! This gives `cpu_shares` the meaning it has in the performance tuning guide (a fraction of a
//! core) without a task queue per agent: handlers run synchronously, so the
//! shard can measure each one exactly.

/// The accounting window.
pub const BUDGET_WINDOW_NS: u64 = 100_000_000;

/// One agent's CPU budget on one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuBudget {
    allowance_ns: u64,
    window_start_ns: u64,
    used_ns: u64,
}

impl CpuBudget {
    /// A budget of `millicores` thousandths of a core (at least 1; the
    /// profile refuses 0). 1000m or more is never throttled.
    pub fn new(millicores: u32) -> Self {
        let millicores = millicores.max(1);
        let allowance_ns = BUDGET_WINDOW_NS.saturating_mul(u64::from(millicores)) / 1000;
        Self {
            allowance_ns,
            window_start_ns: 0,
            used_ns: 0,
        }
    }

    /// Charge `ran_ns` of handler time that ended at `now_ns`.
    pub fn charge(&mut self, ran_ns: u64, now_ns: u64) {
        self.roll(now_ns);
        self.used_ns = self.used_ns.saturating_add(ran_ns);
    }

    /// `None` when the agent may run at `now_ns`; otherwise when it may run again.
    pub fn blocked_until(&mut self, now_ns: u64) -> Option<u64> {
        self.roll(now_ns);
        if self.allowance_ns >= BUDGET_WINDOW_NS || self.used_ns < self.allowance_ns {
            return None;
        }
        Some(self.window_start_ns + BUDGET_WINDOW_NS)
    }

    fn roll(&mut self, now_ns: u64) {
        if now_ns >= self.window_start_ns + BUDGET_WINDOW_NS {
            // Each window that passed pays off one allowance of debt: a handler
            // that overran costs its agent the windows it used, no more.
            let windows = (now_ns - self.window_start_ns) / BUDGET_WINDOW_NS;
            let repaid = self.allowance_ns.saturating_mul(windows);
            self.window_start_ns = now_ns - now_ns % BUDGET_WINDOW_NS;
            self.used_ns = self.used_ns.saturating_sub(repaid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenth_of_a_core_runs_ten_milliseconds_per_window() {
        let mut budget = CpuBudget::new(100);
        assert_eq!(budget.blocked_until(0), None);
        budget.charge(6_000_000, 6_000_000);
        assert_eq!(budget.blocked_until(6_000_000), None, "6 of 10 ms used");
        budget.charge(5_000_000, 11_000_000);
        assert_eq!(
            budget.blocked_until(11_000_000),
            Some(BUDGET_WINDOW_NS),
            "over: wait for the next window"
        );
        assert_eq!(
            budget.blocked_until(BUDGET_WINDOW_NS),
            None,
            "1 ms carried over, 9 left"
        );
        budget.charge(9_000_000, BUDGET_WINDOW_NS + 9_000_000);
        assert_eq!(
            budget.blocked_until(BUDGET_WINDOW_NS + 9_000_000),
            Some(2 * BUDGET_WINDOW_NS)
        );
    }

    #[test]
    fn idle_windows_pay_off_debt() {
        let mut budget = CpuBudget::new(100);
        budget.charge(35_000_000, 35_000_000); // 3.5 windows' allowance in one handler
        assert_eq!(
            budget.blocked_until(BUDGET_WINDOW_NS),
            Some(2 * BUDGET_WINDOW_NS),
            "25 ms still owed"
        );
        assert_eq!(
            budget.blocked_until(10 * BUDGET_WINDOW_NS),
            None,
            "long idle: debt gone"
        );
        budget.charge(9_000_000, 10 * BUDGET_WINDOW_NS + 9_000_000);
        assert_eq!(
            budget.blocked_until(10 * BUDGET_WINDOW_NS + 9_000_000),
            None,
            "a fresh window's allowance"
        );
    }

    #[test]
    fn a_whole_core_is_never_throttled() {
        let mut budget = CpuBudget::new(1000);
        budget.charge(BUDGET_WINDOW_NS * 3, 1);
        assert_eq!(budget.blocked_until(2), None);
    }
}

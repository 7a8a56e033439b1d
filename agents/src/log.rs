//! Agent log lines, forwarded to the engine's `tracing` output.
//!
//! Shared state, and why: a line that passes the log filter is written to
//! the process's stderr, whose lock every shard shares, with a blocking
//! `write`. Logging is the agent's own choice and off the message path's
//! hot loop; a line below the filter (debug and trace, by default) is
//! dropped by `tracing` before any lock. An agent that logs on every
//! message pays for it on its own shard.

/// Emit `line` from agent `agent` at ABI level `level`
/// (0 error, 1 warn, 2 info, 3 debug, anything else trace).
pub fn agent_log(agent: &str, level: i32, line: &str) {
    // Below the filter a line costs nothing and counts toward nothing.
    let shown = match level {
        0 => tracing::enabled!(tracing::Level::ERROR),
        1 => tracing::enabled!(tracing::Level::WARN),
        2 => tracing::enabled!(tracing::Level::INFO),
        3 => tracing::enabled!(tracing::Level::DEBUG),
        _ => tracing::enabled!(tracing::Level::TRACE),
    };
    if !shown {
        return;
    }
    let now = std::time::Instant::now();
    let Some(dropped) = LOG_BUDGET.with(|budget| budget.borrow_mut().admit(agent, now)) else {
        return;
    };
    if dropped > 0 {
        tracing::warn!(
            agent,
            "{dropped} log lines of this agent were dropped (more than {LOG_LINES_PER_SECOND} a second on its shard)"
        );
    }
    let line = printable(line);
    match level {
        0 => tracing::error!(agent, "{line}"),
        1 => tracing::warn!(agent, "{line}"),
        2 => tracing::info!(agent, "{line}"),
        3 => tracing::debug!(agent, "{line}"),
        _ => tracing::trace!(agent, "{line}"),
    }
}

/// Lines one agent may log per second on one shard; past it they are
/// dropped and counted, and the count is logged with its next line. An
/// agent that logs on every message at a million messages a second would
/// otherwise write hundreds of megabytes a second to the engine's log.
pub const LOG_LINES_PER_SECOND: u32 = 100;

thread_local! {
    /// Per shard (each runs on its own thread): no lock between shards.
    static LOG_BUDGET: std::cell::RefCell<LogBudget> = std::cell::RefCell::default();
}

/// Each agent's lines in the current second, and those dropped since it
/// last logged.
#[derive(Default)]
struct LogBudget {
    agents: std::collections::HashMap<String, (std::time::Instant, u32, u64)>,
}

impl LogBudget {
    /// Whether `agent` may log a line at `now`: `Some(dropped)` with the
    /// lines dropped since its last, or `None` to drop this one.
    fn admit(&mut self, agent: &str, now: std::time::Instant) -> Option<u64> {
        // The name is copied once, when the agent first logs.
        if !self.agents.contains_key(agent) {
            self.agents.insert(agent.to_owned(), (now, 0, 0));
        }
        let entry = self.agents.get_mut(agent)?;
        if now.duration_since(entry.0) >= std::time::Duration::from_secs(1) {
            entry.0 = now;
            entry.1 = 0;
        }
        if entry.1 >= LOG_LINES_PER_SECOND {
            entry.2 += 1;
            return None;
        }
        entry.1 += 1;
        Some(std::mem::take(&mut entry.2))
    }
}

/// How often one agent's faults are logged on one shard, at most: the
/// first fault is logged when it happens, later ones within this interval
/// are counted and the count rides on the next line. An agent that traps
/// on every message at a million messages a second is one line per
/// interval, not a flood; its metrics count every fault.
pub const FAULT_LOG_INTERVAL_NS: u64 = 10_000_000_000;

/// The operator's view of agent faults on one shard (traps, handlers
/// stopped at `max_execution_time`, memory growth past the limit, an
/// instance that could not be replaced): what to log and when. Owned by
/// the shard's agent host, so nothing here is shared between shards.
#[derive(Debug, Default)]
pub(crate) struct FaultLog {
    /// Per agent name: when its last line was logged (host clock, ns), and
    /// the faults counted since without a line.
    agents: std::collections::HashMap<std::rc::Rc<str>, (u64, u64)>,
}

impl FaultLog {
    /// Agent `agent` faulted at `now_ns` (`what`: the fault, in words).
    /// Returns the line to log, or `None` while the agent is within
    /// [`FAULT_LOG_INTERVAL_NS`] of its last line.
    pub(crate) fn fault(
        &mut self,
        agent: &std::rc::Rc<str>,
        what: &str,
        now_ns: u64,
    ) -> Option<String> {
        use std::collections::hash_map::Entry;
        let unlogged = match self.agents.entry(std::rc::Rc::clone(agent)) {
            // Its first fault on this shard: logged.
            Entry::Vacant(vacant) => {
                vacant.insert((now_ns, 0));
                0
            }
            Entry::Occupied(mut occupied) => {
                let (logged_at, unlogged) = occupied.get_mut();
                if now_ns.saturating_sub(*logged_at) < FAULT_LOG_INTERVAL_NS {
                    *unlogged += 1;
                    return None;
                }
                *logged_at = now_ns;
                std::mem::take(unlogged)
            }
        };
        let what = printable(what);
        Some(if unlogged == 0 {
            format!("agent fault: {what}; the instance is replaced")
        } else {
            format!(
                "agent fault: {what}; the instance is replaced ({unlogged} more faults of this agent on this shard since its last line)"
            )
        })
    }

    /// Forget `agent` (undeployed): a later agent of the same name starts afresh.
    pub(crate) fn forget(&mut self, agent: &str) {
        self.agents.remove(agent);
    }
}

/// Log a line [`FaultLog::fault`] returned, for agent `agent` on shard `shard`.
pub(crate) fn log_fault(shard: u16, agent: &str, line: &str) {
    tracing::warn!(shard, agent, "{line}");
}

/// `line` with its control characters escaped (`\n`, `\u{0}`): an
/// agent's text is the agent's, and a newline in it would start what reads
/// as a line of the engine's own log.
fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(line);
    }
    std::borrow::Cow::Owned(
        line.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_logs_at_most_its_lines_a_second_and_hears_of_the_rest() {
        let mut budget = LogBudget::default();
        let start = std::time::Instant::now();
        for _ in 0..LOG_LINES_PER_SECOND {
            assert_eq!(budget.admit("chatty", start), Some(0));
        }
        assert_eq!(budget.admit("chatty", start), None);
        assert_eq!(budget.admit("chatty", start), None);
        assert_eq!(budget.admit("quiet", start), Some(0), "per agent");
        let later = start + std::time::Duration::from_secs(1);
        assert_eq!(
            budget.admit("chatty", later),
            Some(2),
            "the dropped are counted"
        );
        assert_eq!(budget.admit("chatty", later), Some(0));
    }

    #[test]
    fn an_agent_cannot_start_a_line_of_the_engines_log() {
        assert_eq!(printable("plain \"quoted\" text"), "plain \"quoted\" text");
        let forged = printable("x\n2026-12-07T05:40:00Z ERROR engine: forged\0");
        assert!(!forged.contains('\n') && !forged.contains('\0'), "{forged}");
        assert_eq!(
            forged,
            "x\\n2026-12-07T05:40:00Z ERROR engine: forged\\u{0}"
        );
    }

    #[test]
    fn an_agents_faults_are_logged_once_an_interval_and_the_rest_counted() {
        let mut log = FaultLog::default();
        let trap: std::rc::Rc<str> = "trap".into();
        let other: std::rc::Rc<str> = "other".into();
        let first = log
            .fault(&trap, "trapped: unreachable", 0)
            .expect("the first fault is logged");
        assert_eq!(
            first,
            "agent fault: trapped: unreachable; the instance is replaced"
        );
        assert_eq!(log.fault(&trap, "trapped: unreachable", 5), None);
        assert_eq!(
            log.fault(
                &trap,
                "ran past max_execution_time",
                FAULT_LOG_INTERVAL_NS - 1
            ),
            None
        );
        assert!(log.fault(&other, "x", 6).is_some(), "per agent");
        let next = log
            .fault(&trap, "trapped: unreachable", FAULT_LOG_INTERVAL_NS + 1)
            .expect("a line once the interval has passed");
        assert!(
            next.ends_with("(2 more faults of this agent on this shard since its last line)"),
            "{next}"
        );
        assert_eq!(
            log.fault(&trap, "x", FAULT_LOG_INTERVAL_NS + 2),
            None,
            "the count starts again"
        );
        log.forget("trap");
        assert!(
            log.fault(&trap, "x", FAULT_LOG_INTERVAL_NS + 3).is_some(),
            "forgotten on undeploy"
        );
        let forged = log
            .fault(&other, "a\nERROR forged", 3 * FAULT_LOG_INTERVAL_NS)
            .expect("logged");
        assert!(!forged.contains('\n'), "{forged}");
    }
}

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
}

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
    match level {
        0 => tracing::error!(agent, "{line}"),
        1 => tracing::warn!(agent, "{line}"),
        2 => tracing::info!(agent, "{line}"),
        3 => tracing::debug!(agent, "{line}"),
        _ => tracing::trace!(agent, "{line}"),
    }
}

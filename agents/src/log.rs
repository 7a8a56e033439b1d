//! Agent log lines, forwarded to the engine's `tracing` output.

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

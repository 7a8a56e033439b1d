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
    let line = printable(line);
    match level {
        0 => tracing::error!(agent, "{line}"),
        1 => tracing::warn!(agent, "{line}"),
        2 => tracing::info!(agent, "{line}"),
        3 => tracing::debug!(agent, "{line}"),
        _ => tracing::trace!(agent, "{line}"),
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

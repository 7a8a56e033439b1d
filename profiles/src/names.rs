//! What an agent name may be. Names enter the engine from profiles
//! (`agents.deploy`, `pinned_agents`, `agents.overrides`), the admin API, the
//! engine library's `Node::deploy` and storage rows read back at recovery;
//! each of them checks the same rule, so a name is always safe in a URL
//! path, a log line and a metric label, and bounded in size.

/// The longest agent name, in bytes.
pub const AGENT_NAME_BYTES_MAX: usize = 64;

/// Check `name` against the rule: 1 to [`AGENT_NAME_BYTES_MAX`] of
/// `A-Z a-z 0-9 _ . -`. The error says what is wrong, for the caller to
/// place (a profile key, an API answer).
pub fn check_agent_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= AGENT_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    if valid {
        return Ok(());
    }
    let shown: String = name.chars().take(AGENT_NAME_BYTES_MAX).collect();
    let ellipsis = if shown.len() < name.len() { "…" } else { "" };
    Err(format!(
        "`{shown}{ellipsis}` is not an agent name: use 1 to {AGENT_NAME_BYTES_MAX} of A-Z a-z 0-9 _ . -"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        for good in [
            "echo",
            "a",
            "router-1.v2_x",
            &"n".repeat(AGENT_NAME_BYTES_MAX),
        ] {
            assert_eq!(check_agent_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "has space",
            "slash/name",
            "ünï",
            &"n".repeat(AGENT_NAME_BYTES_MAX + 1),
        ] {
            let error = check_agent_name(bad).expect_err(bad);
            assert!(error.contains("is not an agent name"), "{error}");
        }
        let long = "x".repeat(10_000);
        assert!(
            check_agent_name(&long).expect_err("too long").len() < 200,
            "the error quotes a bounded prefix"
        );
    }
}

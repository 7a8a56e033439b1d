//! What an agent name may be. Names enter the engine from profiles
//! (`agents.deploy`, `pinned_agents`, `agents.overrides`), the admin API, the
//! engine library's `Node::deploy` and storage rows read back at recovery;
//! each of them checks the same rule, so a name is always safe in a URL
//! path, a log line and a metric label, and bounded in size.

/// The longest agent name, in bytes.
pub const AGENT_NAME_BYTES_MAX: usize = 64;

/// Check agent name `name` against the rule ([`check_node_name`]'s),
/// less the names an agent may not take: dots alone (a path step in the
/// admin API) and `client-N` (what `msg_sender` calls a caller outside the
/// agents). The error says what is wrong, for the caller to place (a
/// profile key, an API answer).
pub fn check_agent_name(name: &str) -> Result<(), String> {
    check_node_name(name)?;
    if name.bytes().all(|byte| byte == b'.') {
        return Err(format!(
            "`{name}` is not an agent name: a name of dots alone reads as a path step in the admin API"
        ));
    }
    if is_client_name(name) {
        return Err(format!(
            "`{name}` is reserved: `client-N` is what msg_sender names a caller outside the agents, and an agent of that name would take messages meant for that caller"
        ));
    }
    Ok(())
}

/// Check `name` against the naming rule nodes and agents share: 1 to
/// [`AGENT_NAME_BYTES_MAX`] of `A-Z a-z 0-9 _ . -`.
pub fn check_node_name(name: &str) -> Result<(), String> {
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

/// Whether `name` is `client-N`, the name a caller outside the agents has.
fn is_client_name(name: &str) -> bool {
    name.strip_prefix("client-")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit()))
}

/// The name among `known` nearest to `name` when it is near enough to be
/// what was meant (a slip of a letter or two), for a "did you mean" hint.
pub fn nearest_name<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = (name.chars().count() / 4).clamp(1, 3);
    known
        .into_iter()
        .filter(|candidate| *candidate != name)
        .map(|candidate| (slips_between(name, candidate), candidate))
        .filter(|&(distance, _)| distance <= allowed)
        .min()
        .map(|(_, candidate)| candidate)
}

/// Letters added, dropped or changed, and neighbours swapped, between
/// `left` and `right` (the optimal string alignment distance): `ehco` is one
/// slip from `echo`. The one measure behind every "did you mean": agent
/// names, profile keys, log levels.
pub(crate) fn slips_between(left: &str, right: &str) -> usize {
    let (left, right): (Vec<char>, Vec<char>) = (left.chars().collect(), right.chars().collect());
    let width = right.len() + 1;
    let mut table = vec![0usize; (left.len() + 1) * width];
    for i in 0..=left.len() {
        for j in 0..=right.len() {
            table[i * width + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let changed = usize::from(left[i - 1] != right[j - 1]);
                let mut best = (table[(i - 1) * width + j] + 1)
                    .min(table[i * width + j - 1] + 1)
                    .min(table[(i - 1) * width + j - 1] + changed);
                if i > 1 && j > 1 && left[i - 1] == right[j - 2] && left[i - 2] == right[j - 1] {
                    best = best.min(table[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    table[left.len() * width + right.len()]
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
            ".",
            "..",
        ] {
            let error = check_agent_name(bad).expect_err(bad);
            assert!(error.contains("is not an agent name"), "{error}");
        }
        // A caller's name (`msg_sender` of a client) is no agent's.
        let reserved = check_agent_name("client-7").expect_err("a client's name");
        assert!(reserved.contains("reserved"), "{reserved}");
        for free in ["client", "client-", "client-x", "my-client-7", "...a"] {
            assert_eq!(check_agent_name(free), Ok(()), "{free}");
        }
        let long = "x".repeat(10_000);
        assert!(
            check_agent_name(&long).expect_err("too long").len() < 200,
            "the error quotes a bounded prefix"
        );
    }

    #[test]
    fn the_nearest_name_is_a_slip_away_or_none() {
        let known = ["echo", "counter", "forwarder"];
        assert_eq!(nearest_name("ehco", known), Some("echo"));
        assert_eq!(nearest_name("conuter", known), Some("counter"));
        assert_eq!(nearest_name("forwader", known), Some("forwarder"));
        assert_eq!(slips_between("ehco", "echo"), 1);
        assert_eq!(slips_between("", "abc"), 3);
        assert_eq!(nearest_name("sink", known), None, "too far from any");
        assert_eq!(nearest_name("x", known), None);
        assert_eq!(nearest_name("echo", known), None, "itself is no hint");
    }
}

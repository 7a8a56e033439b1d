//! The built-in profiles, embedded in the binary. Their text is in
//! `profiles/builtin/*.yaml` and uses the same schema as a profile file.

/// Name of the base profile used when no `--profile` is given.
pub const DEFAULT: &str = "default";

/// Every built-in profile: complete profiles first, then overlays.
pub const NAMES: [&str; 10] = [
    "default",
    "low-latency",
    "high-throughput",
    "memory-optimized",
    "cluster-small",
    "cluster-medium",
    "cluster-large",
    "network-lan",
    "network-wan",
    "network-unreliable",
];

/// The YAML text of built-in profile `name`.
pub fn get(name: &str) -> Option<&'static str> {
    Some(match name {
        "default" => include_str!("../builtin/default.yaml"),
        "low-latency" => include_str!("../builtin/low-latency.yaml"),
        "high-throughput" => include_str!("../builtin/high-throughput.yaml"),
        "memory-optimized" => include_str!("../builtin/memory-optimized.yaml"),
        "cluster-small" => include_str!("../builtin/cluster-small.yaml"),
        "cluster-medium" => include_str!("../builtin/cluster-medium.yaml"),
        "cluster-large" => include_str!("../builtin/cluster-large.yaml"),
        "network-lan" => include_str!("../builtin/network-lan.yaml"),
        "network-wan" => include_str!("../builtin/network-wan.yaml"),
        "network-unreliable" => include_str!("../builtin/network-unreliable.yaml"),
        _ => return None,
    })
}

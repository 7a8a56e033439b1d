//! `engine memory analyze`: samples of a running engine's memory over a
//! window (resident memory, jemalloc's statistics, each agent's linear
//! memory, the messages waiting in mailboxes), a least-squares trend fitted
//! to each series, and findings that name what grows, the most specific
//! first: an agent or a queue explains a growing process; the process's own
//! growth is the symptom.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Finding, Verdict};

/// A fitted rise smaller than this (bytes over the window) is noise.
const BYTES_NOISE: f64 = 256.0 * 1024.0;
/// Nor is a rise under this share of the series' first value.
const RELATIVE_NOISE: f64 = 0.02;
/// A queue that gains fewer messages than this over the window is not growing.
const MESSAGES_NOISE: f64 = 10.0;
/// A trend this poorly fitted (R²) is a wobble, not growth.
const FIT_MIN: f64 = 0.5;

/// What a series measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeriesKind {
    /// One agent's linear memory (bytes).
    Agent,
    /// Messages waiting in mailboxes (a count).
    Queue,
    /// The compiled-module cache (bytes).
    ModuleCache,
    /// The allocator's view (bytes).
    Allocator,
    /// The process's resident memory (bytes).
    Process,
}

/// One sample: seconds since the first, and each series' value.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since the window opened.
    pub at: f64,
    /// Series name to value.
    pub values: BTreeMap<(SeriesKind, String), f64>,
}

/// What `/v1/node` and `/v1/agents` say about memory, as a sample at `at`.
pub fn sample(at: f64, node: &Value, agents: &Value) -> Sample {
    let mut values = BTreeMap::new();
    let mut put = |kind, name: &str, value: &Value| {
        if let Some(value) = value.as_f64() {
            values.insert((kind, name.to_owned()), value);
        }
    };
    put(
        SeriesKind::Process,
        "resident memory",
        &node["memory_used_bytes"],
    );
    if let Some(allocator) = node["allocator"].as_object() {
        for (name, value) in allocator {
            put(
                SeriesKind::Allocator,
                &format!("jemalloc {}", name.trim_end_matches("_bytes")),
                value,
            );
        }
    }
    put(
        SeriesKind::Queue,
        "messages in mailboxes",
        &node["counters"]["queue_depth"],
    );
    put(
        SeriesKind::ModuleCache,
        "module cache",
        &node["module_cache"]["bytes"],
    );
    for agent in agents["agents"].as_array().into_iter().flatten() {
        if let Some(name) = agent["name"].as_str() {
            put(SeriesKind::Agent, name, &agent["memory_bytes"]);
        }
    }
    Sample { at, values }
}

/// A least-squares line through a series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trend {
    /// Units per second.
    pub slope: f64,
    /// How well the line explains the points (0–1; 1 for a flat series).
    pub fit: f64,
    /// The first and last values.
    pub first: f64,
    /// The last value.
    pub last: f64,
}

/// Fit a line to `points` (seconds, value); `None` under two points.
pub fn fit(points: &[(f64, f64)]) -> Option<Trend> {
    if points.len() < 2 {
        return None;
    }
    let count = points.len() as f64;
    let mean_t = points.iter().map(|(t, _)| t).sum::<f64>() / count;
    let mean_v = points.iter().map(|(_, v)| v).sum::<f64>() / count;
    let (mut tt, mut tv, mut vv) = (0.0, 0.0, 0.0);
    for (t, v) in points {
        tt += (t - mean_t).powi(2);
        tv += (t - mean_t) * (v - mean_v);
        vv += (v - mean_v).powi(2);
    }
    let slope = if tt > 0.0 { tv / tt } else { 0.0 };
    let fit = if vv > 0.0 && tt > 0.0 {
        (tv * tv) / (tt * vv)
    } else {
        1.0
    };
    Some(Trend {
        slope,
        fit,
        first: points[0].1,
        last: points[points.len() - 1].1,
    })
}

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
}

/// Fit every series of `samples` and name what grows.
pub fn analyze(samples: &[Sample]) -> (Vec<Finding>, Value) {
    let span = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => (last.at - first.at).max(1e-3),
        _ => 1e-3,
    };
    let mut names: Vec<(SeriesKind, String)> = samples
        .iter()
        .flat_map(|sample| sample.values.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    let mut findings = Vec::new();
    let mut trends = Vec::new();
    for (kind, name) in names {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|sample| Some((sample.at, *sample.values.get(&(kind, name.clone()))?)))
            .collect();
        let Some(trend) = fit(&points) else { continue };
        let rise = trend.slope * span;
        trends.push(json!({
            "series": name, "kind": format!("{kind:?}").to_lowercase(),
            "first": trend.first, "last": trend.last,
            "slope_per_second": trend.slope, "fit_r2": trend.fit,
        }));
        let noise = match kind {
            SeriesKind::Queue => MESSAGES_NOISE,
            _ => BYTES_NOISE.max(RELATIVE_NOISE * trend.first),
        };
        if rise < noise || trend.fit < FIT_MIN {
            continue;
        }
        findings.push(growth_finding(kind, &name, trend, span));
    }
    if findings.is_empty() {
        findings.push(Finding::new(
            "memory-steady",
            Verdict::Ok,
            format!("nothing grew over {span:.0} s ({} samples)", samples.len()),
        ));
    }
    super::rank(&mut findings);
    (
        findings,
        json!({ "seconds": span, "samples": samples.len(), "trends": trends }),
    )
}

fn growth_finding(kind: SeriesKind, name: &str, trend: Trend, span: f64) -> Finding {
    let evidence = format!(
        "fitted over {span:.1} s: R² {:.2}, from {} to {}",
        trend.fit,
        if kind == SeriesKind::Queue {
            format!("{:.0}", trend.first)
        } else {
            mib(trend.first)
        },
        if kind == SeriesKind::Queue {
            format!("{:.0}", trend.last)
        } else {
            mib(trend.last)
        },
    );
    let per_second = trend.slope;
    // Specific causes outrank the process-wide symptom they explain.
    let (finding, specificity) = match kind {
        SeriesKind::Agent => (
            Finding::new(
                "agent-memory-growth",
                Verdict::Problem,
                format!("agent `{name}` grows its linear memory by {:.1} KiB/s", per_second / 1024.0),
            )
            .subject(name)
            .remedy("check for memory leaks in agents (performance tuning guide): linear memory never shrinks, so whatever the agent keeps it keeps until the instance is recycled at its memory limit")
            .key("agents.default_limits.memory"),
            1000.0,
        ),
        SeriesKind::Queue => (
            Finding::new(
                "queue-growth",
                Verdict::Problem,
                format!("messages waiting in mailboxes grow by {per_second:.1}/s: agents receive more than they handle"),
            )
            .remedy("enable message TTL and increase cleanup frequency (performance tuning guide); see `engine performance diagnose --issue throughput`")
            .key("messaging.message_ttl"),
            1000.0 * 1024.0,
        ),
        SeriesKind::ModuleCache => (
            Finding::new(
                "module-cache-growth",
                Verdict::Warn,
                format!("the compiled-module cache grows by {:.1} KiB/s: each new module deployed is kept", per_second / 1024.0),
            )
            .subject(name)
            .remedy("it stops at runtime.wasm.module_cache_size modules; lower it, or turn runtime.wasm.cache_compiled_modules off when modules are rarely redeployed")
            .key("runtime.wasm.module_cache_size"),
            100.0,
        ),
        SeriesKind::Allocator => (
            Finding::new(
                "allocator-growth",
                Verdict::Warn,
                format!("{name} grows by {:.1} KiB/s", per_second / 1024.0),
            )
            .subject(name)
            .remedy("engine-side allocations grow: reduce agent pool size (performance tuning guide), bound queues with messaging.queue_size; `engine profile memory` shows the call sites")
            .key("runtime.agent_pool_size"),
            10.0,
        ),
        SeriesKind::Process => (
            Finding::new(
                "process-memory-growth",
                Verdict::Warn,
                format!("resident memory grows by {:.1} KiB/s", per_second / 1024.0),
            )
            .subject(name)
            .remedy("see the findings above for what grows; if none, the growth is outside agents, queues and the module cache")
            .key("runtime.max_agents"),
            1.0,
        ),
    };
    finding
        .evidence(evidence)
        .weight(per_second.abs() * specificity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_fits_exactly_and_noise_fits_poorly() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|t| (f64::from(t), 5.0 + 2.0 * f64::from(t)))
            .collect();
        let trend = fit(&line).expect("fits");
        assert!((trend.slope - 2.0).abs() < 1e-9 && (trend.fit - 1.0).abs() < 1e-9);
        let wobble: Vec<(f64, f64)> = (0..10)
            .map(|t| (f64::from(t), if t % 2 == 0 { 1.0 } else { -1.0 }))
            .collect();
        assert!(fit(&wobble).expect("fits").fit < 0.1);
        assert_eq!(fit(&line[..1]), None);
    }

    #[test]
    fn the_growing_agent_is_named_before_the_process_it_grows() {
        let samples: Vec<Sample> = (0..20)
            .map(|step| {
                let at = f64::from(step) * 0.5;
                let node = json!({
                    "memory_used_bytes": 100e6 + 400_000.0 * at,
                    "allocator": { "allocated_bytes": 20e6 },
                    "counters": { "queue_depth": 0 },
                    "module_cache": { "bytes": 1e6 + 300_000.0 * at },
                });
                let agents = json!({ "agents": [
                    { "name": "leak", "memory_bytes": 65536.0 * (1.0 + 2.0 * at) },
                    { "name": "echo", "memory_bytes": 65536.0 },
                ]});
                sample(at, &node, &agents)
            })
            .collect();
        let (findings, extra) = analyze(&samples);
        assert_eq!(findings[0].check, "agent-memory-growth");
        assert_eq!(findings[0].subject.as_deref(), Some("leak"));
        assert_eq!(findings[1].check, "module-cache-growth");
        assert_eq!(findings[2].check, "process-memory-growth");
        assert_eq!(
            findings.len(),
            3,
            "echo and the allocator are steady: {findings:?}"
        );
        assert_eq!(extra["samples"], 20);
        let steady: Vec<Sample> = samples
            .iter()
            .map(|sample| Sample {
                at: sample.at,
                values: sample
                    .values
                    .iter()
                    .filter(|((kind, name), _)| *kind == SeriesKind::Agent && name == "echo")
                    .map(|(key, value)| (key.clone(), *value))
                    .collect(),
            })
            .collect();
        assert_eq!(analyze(&steady).0[0].check, "memory-steady");
    }
}

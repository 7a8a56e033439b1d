//! `engine profile cpu|trace`, through the admin API.
//!
//! `cpu` starts the engine's own sampler, waits, and writes what it answers:
//! a pprof protobuf and a flame graph beside it.
//!
//! `trace` arms the shards' message sampler, collects the hops of the
//! sampled messages, and writes them as Chrome trace-event JSON: one thread
//! per shard and client port, a slice per handler run, an instant per hop,
//! and a flow arrow that follows each message from hop to hop (and into the
//! messages its handlers sent).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use caxton_admin::AdminClient;
use hyper::Method;
use serde_json::{json, Value};

use crate::cli::{ProfileCommand, ProfileSelection};
use crate::commands::CommandError;
use crate::operations::positive_duration;

/// How often the collector asks for hops.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// `engine profile ...`.
pub fn run(selection: &ProfileSelection, command: ProfileCommand) -> Result<(), CommandError> {
    match command {
        ProfileCommand::Cpu {
            duration,
            output,
            frequency,
            endpoint,
        } => cpu(selection, &endpoint, &duration, &output, frequency),
        ProfileCommand::Memory {
            interval,
            duration,
            output,
            endpoint,
        } => memory(selection, &endpoint, &interval, &duration, &output),
        ProfileCommand::Trace {
            messages,
            output,
            timeout,
            endpoint,
        } => trace(selection, &endpoint, messages, &output, &timeout),
    }
}

/// Where the flame graph of a profile written to `output` goes.
pub fn flamegraph_path(output: &Path) -> std::path::PathBuf {
    output.with_extension("svg")
}

fn cpu(
    selection: &ProfileSelection,
    endpoint: &crate::cli::Endpoint,
    duration: &str,
    output: &Path,
    frequency: u32,
) -> Result<(), CommandError> {
    use base64::Engine as _;
    let duration = positive_duration("--duration", duration)?;
    if duration > Duration::from_secs(caxton_admin::CPU_PROFILE_SECONDS_MAX) {
        return Err(CommandError::BadInput(format!(
            "--duration {} is longer than the {} s a profile may run",
            humantime::format_duration(duration),
            caxton_admin::CPU_PROFILE_SECONDS_MAX
        )));
    }
    if frequency == 0 || frequency > caxton_admin::CPU_PROFILE_FREQUENCY_MAX {
        return Err(CommandError::BadInput(format!(
            "--frequency {frequency} must be from 1 to {}",
            caxton_admin::CPU_PROFILE_FREQUENCY_MAX
        )));
    }
    let svg = flamegraph_path(output);
    if svg == output {
        return Err(CommandError::BadInput(format!(
            "--output {} would be overwritten by its flame graph: name the profile e.g. cpu.prof",
            output.display()
        )));
    }
    check_writable(output)?;
    check_writable(&svg)?;
    let client = crate::remote::connect(selection, endpoint)?;
    call(
        &client,
        Method::POST,
        &format!("/v1/profile/cpu?frequency={frequency}"),
    )?;
    let progress = indicatif::ProgressBar::new(duration.as_secs().max(1)).with_style(
        indicatif::ProgressStyle::with_template("sampling the CPU {bar:30} {elapsed} of {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message(humantime::format_duration(duration).to_string());
    let started = Instant::now();
    while started.elapsed() < duration {
        std::thread::sleep(
            (duration.saturating_sub(started.elapsed())).min(Duration::from_millis(250)),
        );
        progress.set_position(started.elapsed().as_secs());
    }
    progress.finish_and_clear();
    let profile = call(&client, Method::DELETE, "/v1/profile/cpu")?;
    let pprof = base64::engine::general_purpose::STANDARD
        .decode(profile["pprof_base64"].as_str().unwrap_or(""))
        .map_err(|error| {
            CommandError::Failed(format!("the engine's profile is not base64: {error}"))
        })?;
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|error| {
            CommandError::BadInput(format!("cannot write {}: {error}", path.display()))
        })
    };
    write(output, &pprof)?;
    let flamegraph = profile["flamegraph_svg"].as_str().unwrap_or("");
    // An idle engine gives no samples, and no stack to draw.
    let drawn = if flamegraph.is_empty() {
        "none drawn: no samples, the engine was idle".to_owned()
    } else {
        write(&svg, flamegraph.as_bytes())?;
        svg.display().to_string()
    };
    caxton_bench::stderr_line!(
        "engine: {} samples over {:.1} s at {} Hz into {} (flame graph: {drawn}); `go tool pprof -http=: {}` opens it",
        profile["samples"],
        profile["seconds"].as_f64().unwrap_or(0.0),
        profile["frequency"],
        output.display(),
        output.display()
    );
    Ok(())
}

/// The files `engine profile memory` writes for `output`: sample `n`'s
/// profile, the statistics, and the flame graph.
fn heap_paths(
    output: &Path,
    samples: usize,
) -> (
    Vec<std::path::PathBuf>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let stem = output
        .file_stem()
        .map_or_else(|| "mem".into(), |stem| stem.to_string_lossy().into_owned());
    let sample = |n: usize| output.with_file_name(format!("{stem}-{n:03}.prof"));
    (
        (1..=samples).map(sample).collect(),
        output.with_file_name(format!("{stem}.stats.json")),
        flamegraph_path(output),
    )
}

fn memory(
    selection: &ProfileSelection,
    endpoint: &crate::cli::Endpoint,
    interval: &str,
    duration: &str,
    output: &Path,
) -> Result<(), CommandError> {
    use base64::Engine as _;
    let interval = positive_duration("--interval", interval)?;
    let duration = positive_duration("--duration", duration)?;
    if interval > duration {
        return Err(CommandError::BadInput(format!(
            "--interval {} is longer than --duration {}",
            humantime::format_duration(interval),
            humantime::format_duration(duration)
        )));
    }
    let samples = (duration.as_secs_f64() / interval.as_secs_f64()).floor() as usize;
    let (sample_paths, stats_path, svg) = heap_paths(output, samples);
    if svg == output {
        return Err(CommandError::BadInput(format!(
            "--output {} would be overwritten by its flame graph: name the profile e.g. mem.prof",
            output.display()
        )));
    }
    check_writable(output)?;
    let client = crate::remote::connect(selection, endpoint)?;
    call(&client, Method::POST, "/v1/profile/memory")?;
    let progress = indicatif::ProgressBar::new(samples as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "sampling the heap {bar:30} {pos}/{len} samples, {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|error| {
            CommandError::BadInput(format!("cannot write {}: {error}", path.display()))
        })
    };
    let started = Instant::now();
    let mut stats = Vec::new();
    let mut last = Value::Null;
    let sampled = (|| -> Result<(), CommandError> {
        for (index, path) in sample_paths.iter().enumerate() {
            let due = started + interval * (index as u32 + 1);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let dump = call(&client, Method::GET, "/v1/profile/memory")?;
            let pprof = base64::engine::general_purpose::STANDARD
                .decode(dump["pprof_gzip_base64"].as_str().unwrap_or(""))
                .map_err(|error| {
                    CommandError::Failed(format!(
                        "the engine's heap profile is not base64: {error}"
                    ))
                })?;
            write(path, &pprof)?;
            stats.push(json!({
                "seconds": started.elapsed().as_secs_f64(),
                "profile": path.display().to_string(),
                "resident_bytes": dump["resident_bytes"],
                "allocator": dump["allocator"],
            }));
            last = dump;
            progress.inc(1);
        }
        Ok(())
    })();
    progress.finish_and_clear();
    // Stop sampling whatever happened; a failed stop is only worth a word.
    if let Err(error) = call(&client, Method::DELETE, "/v1/profile/memory") {
        caxton_bench::stderr_line!("engine: could not stop the heap profiler: {error:?}");
    }
    sampled?;
    let pprof = base64::engine::general_purpose::STANDARD
        .decode(last["pprof_gzip_base64"].as_str().unwrap_or(""))
        .unwrap_or_default();
    write(output, &pprof)?;
    write(
        &svg,
        last["flamegraph_svg"].as_str().unwrap_or("").as_bytes(),
    )?;
    let text = serde_json::to_string_pretty(&json!({
        "interval_seconds": interval.as_secs_f64(),
        "samples": stats,
    }))
    .unwrap_or_default();
    write(&stats_path, text.as_bytes())?;
    caxton_bench::stderr_line!(
        "engine: {samples} heap samples; the last in {} (flame graph: {}), each in {}, statistics in {}; `go tool pprof -http=: {}` opens one",
        output.display(),
        svg.display(),
        sample_paths.first().map(|path| path.display().to_string()).unwrap_or_default(),
        stats_path.display(),
        output.display()
    );
    Ok(())
}

fn trace(
    selection: &ProfileSelection,
    endpoint: &crate::cli::Endpoint,
    messages: u32,
    output: &Path,
    timeout: &str,
) -> Result<(), CommandError> {
    if messages == 0 || messages > caxton_admin::TRACE_MESSAGES_MAX {
        return Err(CommandError::BadInput(format!(
            "--messages {messages} must be from 1 to {}",
            caxton_admin::TRACE_MESSAGES_MAX
        )));
    }
    let timeout = positive_duration("--timeout", timeout)?;
    check_writable(output)?;
    let client = crate::remote::connect(selection, endpoint)?;
    // What was recorded before this trace started is not part of it.
    call(
        &client,
        Method::POST,
        &format!("/v1/profile/trace?messages={messages}"),
    )?;
    let started = Instant::now();
    let progress = indicatif::ProgressBar::new(u64::from(messages)).with_style(
        indicatif::ProgressStyle::with_template(
            "tracing {bar:30} {pos}/{len} messages handled, {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut hops = Vec::new();
    let mut data_shards = 0;
    let mut dropped = 0;
    let mut settle = None;
    loop {
        std::thread::sleep(POLL_INTERVAL);
        let answer = call(&client, Method::GET, "/v1/profile/trace")?;
        absorb(&answer, &mut hops, &mut data_shards, &mut dropped);
        let handled = handled_traces(&hops).len() as u64;
        progress.set_position(handled.min(u64::from(messages)));
        // Once enough were handled, one more poll collects their last hops
        // (the answers on their way out).
        match settle {
            Some(()) => break,
            None if handled >= u64::from(messages) => settle = Some(()),
            None if started.elapsed() >= timeout => break,
            None => {}
        }
    }
    let last = call(&client, Method::DELETE, "/v1/profile/trace")?;
    absorb(&last, &mut hops, &mut data_shards, &mut dropped);
    progress.finish_and_clear();
    let kept = first_traces(&hops, messages as usize);
    if kept.is_empty() {
        return Err(CommandError::Failed(format!(
            "no message passed through the engine in {}: send traffic while tracing",
            humantime::format_duration(timeout)
        )));
    }
    let hops: Vec<Value> = hops
        .into_iter()
        .filter(|hop| {
            hop["trace"]
                .as_u64()
                .is_some_and(|trace| kept.contains(&trace))
        })
        .collect();
    let document = chrome_trace(&hops, data_shards);
    let text = serde_json::to_string(&document)
        .map_err(|error| CommandError::Failed(format!("cannot encode the trace: {error}")))?;
    std::fs::write(output, text).map_err(|error| {
        CommandError::BadInput(format!("cannot write {}: {error}", output.display()))
    })?;
    caxton_bench::stderr_line!(
        "engine: {} messages traced ({} hops{}) into {}; open it in ui.perfetto.dev",
        kept.len(),
        hops.len(),
        if dropped > 0 {
            format!(", {dropped} dropped")
        } else {
            String::new()
        },
        output.display()
    );
    if kept.len() < messages as usize {
        caxton_bench::stderr_line!(
            "engine: only {} of {messages} messages were handled in {}",
            kept.len(),
            humantime::format_duration(timeout)
        );
    }
    Ok(())
}

/// Fail before tracing, not after, when the output cannot be written.
pub fn check_writable(output: &Path) -> Result<(), CommandError> {
    let existed = output.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(output)
        .map(drop)
        .map_err(|error| {
            CommandError::BadInput(format!("cannot write {}: {error}", output.display()))
        })?;
    // Checked, not written: a run that fails later leaves no empty file.
    if !existed {
        let _ = std::fs::remove_file(output);
    }
    Ok(())
}

fn call(client: &AdminClient, method: Method, path: &str) -> Result<Value, CommandError> {
    crate::operations::call_json(client, method, path, false).map(Option::unwrap_or_default)
}

fn absorb(answer: &Value, hops: &mut Vec<Value>, data_shards: &mut usize, dropped: &mut u64) {
    *data_shards = answer["data_shards"].as_u64().unwrap_or(0) as usize;
    *dropped += answer["dropped_hops"].as_u64().unwrap_or(0);
    hops.extend(answer["hops"].as_array().cloned().unwrap_or_default());
}

/// Traces with at least one handler run finished.
fn handled_traces(hops: &[Value]) -> BTreeSet<u64> {
    hops.iter()
        .filter(|hop| hop["kind"] == "handler-end")
        .filter_map(|hop| hop["trace"].as_u64())
        .collect()
}

/// The first `count` handled traces by send time.
fn first_traces(hops: &[Value], count: usize) -> BTreeSet<u64> {
    let handled = handled_traces(hops);
    let mut sent: Vec<(u64, u64)> = hops
        .iter()
        .filter(|hop| hop["kind"] == "send")
        .filter_map(|hop| Some((hop["at_ns"].as_u64()?, hop["trace"].as_u64()?)))
        .filter(|(_, trace)| handled.contains(trace))
        .collect();
    sent.sort_unstable();
    sent.into_iter()
        .take(count)
        .map(|(_, trace)| trace)
        .collect()
}

/// The order hops of one message happen in, to break ties in time.
fn stage(kind: &str) -> u8 {
    match kind {
        "send" => 0,
        "ring" | "remote" => 1,
        "mailbox" | "refused" => 2,
        "handler-start" => 3,
        _ => 4,
    }
}

/// Chrome trace-event JSON for `hops` (the admin API's form), with
/// `data_shards` naming which participants are shards.
pub fn chrome_trace(hops: &[Value], data_shards: usize) -> Value {
    let base = hops
        .iter()
        .filter_map(|hop| hop["at_ns"].as_u64())
        .min()
        .unwrap_or(0);
    let micros = |nanos: u64| (nanos.saturating_sub(base)) as f64 / 1e3;
    let mut by_trace: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for hop in hops {
        if let Some(trace) = hop["trace"].as_u64() {
            by_trace.entry(trace).or_default().push(hop);
        }
    }
    let mut events = Vec::new();
    let mut participants = BTreeSet::new();
    for (trace, mut steps) in by_trace {
        steps.sort_by_key(|hop| {
            (
                hop["at_ns"].as_u64().unwrap_or(0),
                stage(hop["kind"].as_str().unwrap_or("")),
            )
        });
        let mut open_handler: Option<&Value> = None;
        for (index, hop) in steps.iter().enumerate() {
            let kind = hop["kind"].as_str().unwrap_or("?");
            let at = hop["at_ns"].as_u64().unwrap_or(0);
            let tid = hop["participant"].as_u64().unwrap_or(0);
            participants.insert(tid);
            let agent = hop["agent"].as_str().unwrap_or("");
            let name = match kind {
                "ring" => format!(
                    "ring to {}",
                    participant_name(hop["to"].as_u64().unwrap_or(0), data_shards)
                ),
                "mailbox" => format!("mailbox of {agent}"),
                other => other.to_owned(),
            };
            match kind {
                "handler-start" => open_handler = Some(hop),
                "handler-end" => {
                    let start = open_handler
                        .take()
                        .and_then(|start| start["at_ns"].as_u64())
                        .unwrap_or(at);
                    events.push(json!({
                        "name": format!("handle {agent}"), "cat": "handler", "ph": "X",
                        "ts": micros(start), "dur": micros(at) - micros(start),
                        "pid": 1, "tid": tid, "args": { "trace": trace, "agent": agent },
                    }));
                }
                _ => events.push(json!({
                    "name": name, "cat": "hop", "ph": "i", "s": "t",
                    "ts": micros(at), "pid": 1, "tid": tid,
                    "args": { "trace": trace, "hop": kind, "agent": agent },
                })),
            }
            // A flow arrow from hop to hop of this message.
            let phase = match index {
                0 => "s",
                last if last + 1 == steps.len() => "f",
                _ => "t",
            };
            if steps.len() > 1 {
                events.push(json!({
                    "name": "message", "cat": "message", "ph": phase, "id": trace, "bp": "e",
                    "ts": micros(at), "pid": 1, "tid": tid,
                }));
            }
        }
    }
    events.push(
        json!({ "name": "process_name", "ph": "M", "pid": 1, "args": { "name": "caxton engine" } }),
    );
    for tid in participants {
        events.push(json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": tid,
            "args": { "name": participant_name(tid, data_shards) },
        }));
        events.push(json!({ "name": "thread_sort_index", "ph": "M", "pid": 1, "tid": tid, "args": { "sort_index": tid } }));
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": { "source": "engine profile trace", "clock": "node clock, µs from the first hop" },
    })
}

fn participant_name(participant: u64, data_shards: usize) -> String {
    if (participant as usize) < data_shards {
        format!("shard {participant}")
    } else {
        format!("client port {participant}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(trace: u64, kind: &str, at_ns: u64, participant: u64, agent: Option<&str>) -> Value {
        let mut hop =
            json!({ "trace": trace, "kind": kind, "at_ns": at_ns, "participant": participant });
        if let Some(agent) = agent {
            hop["agent"] = json!(agent);
        }
        hop
    }

    #[test]
    fn a_request_becomes_ordered_hops_a_handler_slice_and_a_flow() {
        let mut ring = hop(7, "ring", 5_000, 0, None);
        ring["to"] = json!(3);
        let hops = vec![
            hop(7, "handler-end", 4_000, 0, Some("echo")),
            hop(7, "send", 1_000, 3, None),
            hop(7, "mailbox", 2_000, 0, Some("echo")),
            hop(7, "handler-start", 3_000, 0, Some("echo")),
            ring,
            hop(8, "send", 9_000, 3, None),
        ];
        assert_eq!(
            first_traces(&hops, 10),
            BTreeSet::from([7]),
            "8 was never handled"
        );
        let trace = chrome_trace(&hops[..5], 3);
        let events = trace["traceEvents"].as_array().expect("events");
        let slice = events
            .iter()
            .find(|event| event["ph"] == "X")
            .expect("a handler slice");
        assert_eq!(slice["name"], "handle echo");
        assert_eq!(
            (slice["ts"].as_f64(), slice["dur"].as_f64()),
            (Some(2.0), Some(1.0))
        );
        assert_eq!(slice["tid"], 0);
        let flow: Vec<(&str, f64)> = events
            .iter()
            .filter(|event| event["cat"] == "message")
            .map(|event| {
                (
                    event["ph"].as_str().unwrap_or(""),
                    event["ts"].as_f64().unwrap_or(-1.0),
                )
            })
            .collect();
        assert_eq!(
            flow,
            [("s", 0.0), ("t", 1.0), ("t", 2.0), ("t", 3.0), ("f", 4.0)]
        );
        let names: BTreeSet<&str> = events
            .iter()
            .filter(|event| event["name"] == "thread_name")
            .filter_map(|event| event["args"]["name"].as_str())
            .collect();
        assert_eq!(names, BTreeSet::from(["client port 3", "shard 0"]));
        assert!(events
            .iter()
            .any(|event| event["name"] == "ring to client port 3"));
    }
}

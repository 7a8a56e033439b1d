//! The diagnostic commands' glue: `engine host check`, `engine performance
//! diagnose`, `engine memory analyze`. They gather their inputs (files,
//! admin API snapshots), hand them to the pure analyses in
//! [`crate::diagnostics`], and print the findings.

use std::collections::BTreeSet;

use std::time::Duration;

use caxton_admin::AdminClient;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::cli::{HostCommand, MemoryCommand, PerformanceCommand, ProfileSelection, Symptom};
use crate::commands::{emit, load_profile, plan_placement, CommandError};
use crate::diagnostics::diagnose::{self, Basis, Reading};
use crate::diagnostics::{self, host, memory};

/// `engine host ...`.
pub fn host(selection: &ProfileSelection, command: HostCommand) -> Result<(), CommandError> {
    let HostCommand::Check { cpus, json, root } = command;
    let loaded = load_profile(selection)?;
    let shard_cpus = match cpus {
        Some(text) => caxton_numa::binding::parse_index_list(&text)
            .filter(|cpus| !cpus.is_empty())
            .ok_or_else(|| {
                CommandError::BadInput(format!("--cpus `{text}` is not a CPU list such as 0-3,8"))
            })?
            .into_iter()
            .collect(),
        None => planned_shard_cpus(&loaded)?,
    };
    let files = host::files_at(root.as_deref());
    // CPUs the host does not have would be judged on files that are not
    // there, as if they were merely hidden.
    if let Some(present) = files
        .read("/sys/devices/system/cpu/present")
        .and_then(|text| caxton_numa::binding::parse_index_list(&text))
    {
        let missing: Vec<usize> = shard_cpus
            .iter()
            .copied()
            .filter(|cpu| !present.contains(cpu))
            .collect();
        if !missing.is_empty() {
            return Err(CommandError::BadInput(format!(
                "--cpus: this host has no CPU {}; its CPUs are {}",
                caxton_numa::format_index_list(&missing),
                caxton_numa::format_index_list(&present)
            )));
        }
    }
    let needs = host::HostNeeds::of(&loaded.profile, shard_cpus);
    let mut findings = host::check(&files, &needs);
    diagnostics::rank(&mut findings);
    let title = format!(
        "host check for {} on CPUs {}",
        crate::remote::counted(needs.shard_cpus.len() as u64, "data shard"),
        caxton_numa::format_index_list(&needs.shard_cpus.iter().copied().collect::<Vec<_>>())
    );
    if json {
        emit(&diagnostics::render_json(
            &title,
            &findings,
            serde_json::json!({
                "shard_cpus": needs.shard_cpus,
                "needs": {
                    "mappings": needs.mappings,
                    "locked_bytes": needs.locked_bytes,
                    "spinning": needs.spinning,
                },
            }),
        ))
    } else {
        emit(&diagnostics::render_text(&title, &findings))
    }
}

/// The CPUs the profile's plan puts data shards on, on this machine.
fn planned_shard_cpus(
    loaded: &caxton_profiles::LoadedProfile,
) -> Result<BTreeSet<usize>, CommandError> {
    let topology = caxton_numa::MachineTopology::discover()
        .map_err(|error| CommandError::Failed(error.to_string()))?;
    let plan = plan_placement(loaded, &topology)?;
    let all = topology.all_pus();
    Ok(plan
        .data_shards
        .iter()
        .flat_map(|shard| match &shard.cpu_binding {
            // An unpinned shard may run anywhere; judge the PU it was planned on.
            caxton_numa::CpuBinding::Unbound => vec![shard.home_pu],
            binding => binding.allowed_pus(&all),
        })
        .collect())
}

/// A positive duration from `--flag TEXT`, or exit 2 naming the flag.
pub fn positive_duration(flag: &str, text: &str) -> Result<Duration, CommandError> {
    let duration = humantime::parse_duration(text).map_err(|error| {
        CommandError::BadInput(format!("{flag} `{text}`: {error} (write e.g. 5s, 10m, 1h)"))
    })?;
    if duration.is_zero() {
        return Err(CommandError::BadInput(format!(
            "{flag} `{text}` is zero: give a positive duration (e.g. 5s)"
        )));
    }
    Ok(duration)
}

/// `METHOD path` as JSON, expecting success; an engine that cannot be
/// reached is bad input (the address is the user's), `None` for a 404 when
/// `optional`. Every diagnostic and profiling command calls through here.
pub fn call_json(
    client: &AdminClient,
    method: Method,
    path: &str,
    optional: bool,
) -> Result<Option<Value>, CommandError> {
    let answer = client
        .call(method, path, "application/json", Vec::new())
        // The client's error says where it looked and what to check.
        .map_err(crate::remote::client_failure)?;
    if optional && answer.status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    Ok(Some(crate::remote::expect_success(answer)?.json()))
}

/// One reading of `/v1/node`, `/v1/agents` and `/v1/cluster`.
fn read_engine(client: &AdminClient) -> Result<Reading, CommandError> {
    Ok(Reading {
        node: call_json(client, Method::GET, "/v1/node", false)?.unwrap_or_default(),
        agents: call_json(client, Method::GET, "/v1/agents", false)?.unwrap_or_default(),
        cluster: call_json(client, Method::GET, "/v1/cluster", true)?,
    })
}

/// `engine performance ...`.
pub fn performance(
    selection: &ProfileSelection,
    command: PerformanceCommand,
) -> Result<(), CommandError> {
    let PerformanceCommand::Diagnose {
        issue,
        window,
        json,
        endpoint,
    } = command;
    let window = positive_duration("--window", &window)?;
    let client = crate::remote::connect(selection, &endpoint)?;
    let before = read_engine(&client)?;
    std::thread::sleep(window);
    let after = read_engine(&client)?;
    let (findings, basis) = diagnose::diagnose(issue, &before, &after, window.as_secs_f64());
    let symptom = match issue {
        Symptom::HighLatency => "high-latency",
        Symptom::Throughput => "throughput",
        Symptom::Memory => "memory",
    };
    let judged = match basis {
        Basis::Window(seconds) => format!("the last {seconds:.1} s"),
        Basis::SinceStart(seconds) => {
            format!("the totals since start ({seconds:.0} s ago; nothing was handled in the {:.1} s window)", window.as_secs_f64())
        }
    };
    let title = format!("diagnosis of {symptom}, judged on {judged}");
    if json {
        let (basis, seconds) = match basis {
            Basis::Window(seconds) => ("window", seconds),
            Basis::SinceStart(seconds) => ("since-start", seconds),
        };
        emit(&diagnostics::render_json(
            &title,
            &findings,
            serde_json::json!({ "issue": symptom, "basis": basis, "seconds": seconds }),
        ))
    } else {
        emit(&diagnostics::render_text(&title, &findings))
    }
}

/// Shortest and longest default time between memory samples.
const SAMPLE_INTERVAL_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(60));

/// The shortest `--interval`: a sample is two calls to the node's admin
/// API, which take about a millisecond on an idle node; sampled faster, the
/// samples fall behind and load the node they measure.
const SAMPLE_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// `engine memory ...`.
pub fn memory(selection: &ProfileSelection, command: MemoryCommand) -> Result<(), CommandError> {
    let MemoryCommand::Analyze {
        duration,
        interval,
        json,
        endpoint,
    } = command;
    let duration = positive_duration("--duration", &duration)?;
    let interval = match interval {
        Some(text) => positive_duration("--interval", &text)?,
        None => (duration / 60).clamp(SAMPLE_INTERVAL_BOUNDS.0, SAMPLE_INTERVAL_BOUNDS.1),
    };
    if interval < SAMPLE_INTERVAL_MIN {
        return Err(CommandError::BadInput(format!(
            "--interval {} is shorter than {}: each sample is two calls to the node, which would fall behind and load the node being measured",
            humantime::format_duration(interval),
            humantime::format_duration(SAMPLE_INTERVAL_MIN)
        )));
    }
    if interval > duration {
        return Err(CommandError::BadInput(format!(
            "--interval {} is longer than --duration {}: there would be one sample",
            humantime::format_duration(interval),
            humantime::format_duration(duration)
        )));
    }
    let client = crate::remote::connect(selection, &endpoint)?;
    let started = std::time::Instant::now();
    let steps = (duration.as_secs_f64() / interval.as_secs_f64()).floor() as u64 + 1;
    // Hidden when stderr is not a terminal.
    let progress = indicatif::ProgressBar::new(steps).with_style(
        indicatif::ProgressStyle::with_template(
            "sampling memory {bar:30} {pos}/{len} samples, {elapsed} of {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message(humantime::format_duration(duration).to_string());
    let mut samples = Vec::new();
    for step in 0..steps {
        let due = started + interval * u32::try_from(step).unwrap_or(u32::MAX);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        let node = call_json(&client, Method::GET, "/v1/node", false)?.unwrap_or_default();
        let agents = call_json(&client, Method::GET, "/v1/agents", false)?.unwrap_or_default();
        samples.push(memory::sample(
            started.elapsed().as_secs_f64(),
            &node,
            &agents,
        ));
        progress.inc(1);
    }
    progress.finish_and_clear();
    let (findings, extra) = memory::analyze(&samples);
    // The window the samples span, as measured: a slow node answers late,
    // and the report says so rather than claim the window asked for.
    let spanned = Duration::from_secs_f64(samples.last().map_or(0.0, |sample| sample.at));
    let behind = if spanned > duration + interval {
        format!(
            "; the node answered slowly, so the samples span {:.1} s",
            spanned.as_secs_f64()
        )
    } else {
        String::new()
    };
    let title = format!(
        "memory over {} ({} samples, every {}{behind})",
        humantime::format_duration(duration),
        samples.len(),
        // Whole milliseconds: a sixtieth of a duration reads `166ms 666us 666ns`.
        humantime::format_duration(Duration::from_millis(interval.as_millis().max(1) as u64))
    );
    if json {
        emit(&diagnostics::render_json(&title, &findings, extra))
    } else {
        emit(&diagnostics::render_text(&title, &findings))
    }
}

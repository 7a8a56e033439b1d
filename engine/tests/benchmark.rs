//! `engine benchmark custom|stress|run` as users run them: bad input refused
//! before any load starts, results written where asked and readable by
//! `engine hdr report`, both designs in one summary, a running engine
//! loaded through `--target`, and the scaling suite's steps.

mod common;

use common::{engine, start_engine, stderr, stdout};
use serde_json::Value;

#[test]
fn bad_load_input_is_refused_before_anything_starts() {
    let cases: [(&[&str], &str); 13] = [
        (&["--agents", "0"], "--agents 0"),
        (&["--agents", "5000"], "runtime.max_agents"),
        (&["--messages-per-second", "0"], "--messages-per-second"),
        (&["--messages-per-second", "2.9"], "--messages-per-second"),
        (&["--duration", "0s"], "--duration"),
        (&["--duration", "soon"], "--duration `soon`"),
        (
            &["--pattern", "scatter"],
            "request-reply, one-way, fan-out, pipeline",
        ),
        (&["--compare", "nginx"], "baseline"),
        (
            &["--pattern", "fan-out", "--agents", "3"],
            "fan-out needs at least 5",
        ),
        (&["--target", "127.0.0.1:1"], "cannot reach"),
        (&["--generators", "0"], "--generators 0"),
        (
            &["--generators", "2", "--target", "127.0.0.1:1"],
            "loaded through its admin API",
        ),
        (
            &["--generators", "100000"],
            "--generators 100000 is outside 1..=",
        ),
    ];
    for (arguments, expected) in cases {
        let mut command = vec!["benchmark", "custom"];
        command.extend_from_slice(arguments);
        if !arguments.contains(&"--duration") {
            command.extend(["--duration", "1s"]);
        }
        assert_refused(&command, expected);
    }
    // An --output that cannot take the results is refused before the load
    // runs, not after it.
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("a-file");
    std::fs::write(&file, b"").expect("written");
    let file = file.to_str().expect("utf-8");
    for suite in [
        &["benchmark", "custom", "--duration", "1m", "--output", file][..],
        &["benchmark", "stress", "--output", file],
        &["benchmark", "run", "--output", file],
    ] {
        assert_refused(suite, "is not a directory; nothing was run");
    }
    let stress = engine(&[
        "benchmark",
        "stress",
        "--growth",
        "1",
        "--find-breaking-point",
    ]);
    assert_eq!(stress.status.code(), Some(2));
    assert!(stderr(&stress).contains("--growth"), "{}", stderr(&stress));
    // A ramp's own flags are named, not `custom`'s they feed.
    assert_refused(
        &["benchmark", "stress", "--max-agents", "0"],
        "--max-agents",
    );
    // Past a limit the operator set, refused; the run raises only the
    // built-in's, and at most to 100,000.
    assert_refused(
        &[
            "benchmark",
            "stress",
            "--set",
            "runtime.max_agents=1000",
            "--max-agents",
            "5000",
        ],
        "--max-agents 5000 is outside",
    );
    assert_refused(
        &["benchmark", "stress", "--max-agents", "100001"],
        "--max-agents 100001 is outside",
    );
    assert_refused(
        &["benchmark", "stress", "--start-rate", "0"],
        "--start-rate 0",
    );
    assert_refused(
        &[
            "benchmark",
            "stress",
            "--start-rate",
            "40000000",
            "--growth",
            "2",
        ],
        "the last step's rate",
    );
    assert_refused(&["benchmark", "stress", "--token", "abc"], "add --target");
    assert_refused(
        &["benchmark", "stress", "--latency-run", "10s"],
        "--latency-run times the P99 runs of --compare baseline",
    );
    assert_refused(&["benchmark", "stress", "--warm-up", "soon"], "--warm-up");
    assert_refused(&["benchmark", "stress", "--warm-up", "1h"], "--warm-up");
}

/// The guide's `--max-agents` over a built-in profile's limit: the run's
/// own node takes it, and says so; a ramp shorter than its steps allow is
/// stretched, and said so too.
#[test]
fn a_stress_run_raises_its_own_nodes_agent_limit_and_says_what_it_stretched() {
    let run = engine(&[
        "--profile",
        "memory-optimized",
        "benchmark",
        "stress",
        "--max-agents",
        "501",
        "--ramp-up-time",
        "100ms",
        "--steps",
        "2",
        "--warm-up",
        "0s",
    ]);
    let said = stderr(&run);
    assert_eq!(run.status.code(), Some(0), "{said}");
    assert!(
        said.contains("runtime.max_agents raised from 500 to 501 for this benchmark's node"),
        "{said}"
    );
    assert!(
        said.contains("so the ramp takes 200ms, not --ramp-up-time 100ms"),
        "{said}"
    );
    assert!(
        stdout(&run).contains("stress request-reply: 501 agents"),
        "{}",
        stdout(&run)
    );
}

fn counts_add_up(design: &Value) {
    let count = |key: &str| design["counts"][key].as_u64().expect("a count");
    assert_eq!(
        count("scheduled"),
        count("sent") + count("refused"),
        "{design}"
    );
    assert_eq!(
        count("sent"),
        count("answered") + count("failed") + count("timed_out"),
        "{design}"
    );
}

#[test]
fn custom_writes_both_designs_and_histograms_engine_hdr_reads() {
    let output = tempfile::tempdir().expect("temp dir");
    let directory = output.path().to_str().expect("utf-8");
    let run = engine(&[
        "benchmark",
        "custom",
        "--agents",
        "4",
        "--messages-per-second",
        "2000",
        "--duration",
        "500ms",
        "--pattern",
        "request-reply",
        "--compare",
        "baseline",
        "--generators",
        "3",
        "--output",
        directory,
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(text.starts_with("machine: "), "{text}");
    // The generators asked for, on both designs.
    for design in ["caxton", "baseline"] {
        assert!(
            text.contains(&format!("\n{design}: 3 load generator(s)")),
            "{text}"
        );
    }
    // Below saturation both designs carry what is offered: only P99s are
    // compared, at the load named.
    assert!(
        text.contains("caxton/baseline: P99") && text.contains("at 2000 msg/s offered to both"),
        "{text}"
    );
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(output.path().join("summary.json")).expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["benchmark"], "custom");
    assert_eq!(summary["pattern"], "request-reply");
    let designs = summary["designs"].as_array().expect("designs");
    assert_eq!(designs.len(), 2);
    assert_eq!(designs[0]["design"], "caxton");
    assert_eq!(designs[1]["design"], "baseline");
    for design in designs {
        counts_add_up(design);
        assert_eq!(design["counts"]["scheduled"], 1000);
        // How late the generators sent, which the latency includes.
        let late_p99 = design["sent_late_p99_ns"]
            .as_u64()
            .expect("sent_late_p99_ns");
        let late_max = design["sent_late_max_ns"]
            .as_u64()
            .expect("sent_late_max_ns");
        assert!(late_p99 <= late_max, "{design}");
        // Every message answered: each one's latency holds its lateness.
        if design["counts"]["answered"] == design["counts"]["scheduled"] {
            assert!(
                late_max <= design["max_ns"].as_u64().expect("max_ns"),
                "{design}"
            );
        }
        let line = format!(
            "{}: its generators sent P99 ",
            design["design"].as_str().unwrap_or("")
        );
        assert!(text.contains(&line), "{text}");
    }
    assert!(summary["comparison"]["p99_ratio"].as_f64().is_some());
    assert!(summary["comparison"]["throughput_ratio"].is_null());
    // The machine's own stalls were probed, on every core, and printed.
    let cores = summary["machine_jitter"]["cores"].as_u64().expect("cores");
    let pinned = summary["machine_jitter"]["pinned"]
        .as_u64()
        .expect("pinned");
    assert!(cores >= 1 && pinned <= cores, "{summary}");
    assert!(
        text.contains(&format!(
            "machine jitter: a thread on each of {cores} core(s) ({pinned} pinned to it)"
        )),
        "{text}"
    );
    assert_eq!(summary["comparison"]["p99_offered_per_second"], 2000.0);
    assert_eq!(summary["scenarios"][0]["name"], "caxton/request-reply");
    let log = output.path().join("caxton-request-reply.hlog");
    let report = engine(&["hdr", "report", log.to_str().expect("utf-8")]);
    assert!(report.status.success(), "{}", stderr(&report));
    assert!(
        stdout(&report).contains("Total count    =         1000"),
        "{}",
        stdout(&report)
    );
    // Its one interval is as long as the run (500 ms of load, plus the
    // drain of its last answers), not a fixed second.
    let text = std::fs::read_to_string(&log).expect("log");
    let interval = text
        .lines()
        .find(|line| line.starts_with("Tag="))
        .unwrap_or_else(|| panic!("no interval in {text}"));
    let length: f64 = interval
        .split(',')
        .nth(2)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("no length in {interval}"));
    assert!((0.5..5.0).contains(&length), "{interval}");
    let elapsed = summary["scenarios"][0]["elapsed_seconds"]
        .as_f64()
        .expect("elapsed_seconds");
    assert!((elapsed - length).abs() < 0.002, "{elapsed} s: {interval}");
}

#[test]
fn stress_and_target_load_a_running_engine_through_its_admin_api() {
    let running = start_engine(&[]);
    let admin = running.admin_address().to_string();
    // An agent of the node's own, which the run must leave alone.
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    let deployed = engine(&[
        "agents", "deploy", &echo, "--name", "resident", "--admin", &admin,
    ]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let output = tempfile::tempdir().expect("temp dir");
    let run = engine(&[
        "benchmark",
        "stress",
        "--target",
        &admin,
        "--max-agents",
        "2",
        "--start-rate",
        "100",
        "--growth",
        "2",
        "--steps",
        "2",
        "--ramp-up-time",
        "1s",
        "--p99-target",
        "1s",
        "--output",
        output.path().to_str().expect("utf-8"),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stdout(&run).contains("engine at 127.0.0.1:"),
        "{}",
        stdout(&run)
    );
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(output.path().join("summary.json")).expect("summary"),
    )
    .expect("json");
    let steps = summary["ramps"][0][1].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    for step in steps {
        counts_add_up(&step["result"]);
        assert!(
            step["result"]["counts"]["answered"]
                .as_u64()
                .expect("answered")
                > 0
        );
    }
    assert_eq!(summary["breaking_points"][0]["sustained_per_second"], 200.0);
    // The agents it deployed left with it; the node's own stayed.
    let listed = engine(&["agents", "list", "--admin", &admin, "--json"]);
    let agents: Value = serde_json::from_slice(&listed.stdout).expect("json");
    let names: Vec<&str> = agents["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|agent| agent["name"].as_str())
        .collect();
    assert_eq!(names, ["resident"], "{agents}");
}

/// `benchmark stress --compare baseline` on a small, slow ramp (2 steps of
/// 200/s and 400/s, up to 2 agents, a P99 target of 1 s that a loaded test
/// machine still meets), with `extra` arguments, writing into `output`.
fn small_stress_comparison(extra: &[&str], output: &std::path::Path) -> std::process::Output {
    let mut command = vec![
        "benchmark",
        "stress",
        "--max-agents",
        "2",
        "--start-rate",
        "200",
        "--growth",
        "2",
        "--steps",
        "2",
        "--p99-target",
        "1s",
        "--compare",
        "baseline",
        "--warm-up",
        "100ms",
        "--output",
        output.to_str().expect("utf-8"),
    ];
    // Short P99 runs unless the caller says how long.
    if !extra.contains(&"--latency-run") {
        command.extend_from_slice(&["--latency-run", "100ms"]);
    }
    command.extend_from_slice(extra);
    engine(&command)
}

#[test]
fn stress_rounds_repeat_the_comparison_and_report_the_medians() {
    let output = tempfile::tempdir().expect("temp dir");
    let run = small_stress_comparison(&["--ramp-up-time", "400ms", "--rounds", "2"], output.path());
    assert!(run.status.success(), "{}", stderr(&run));
    let log = stderr(&run);
    assert!(
        log.contains("stress: round 1 of 2") && log.contains("stress: round 2 of 2"),
        "{log}"
    );
    assert!(
        log.contains("untimed warm-up of 100ms at 200/s with 1 agent(s)"),
        "{log}"
    );
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(output.path().join("summary.json")).expect("summary"),
    )
    .expect("json");
    let rounds = summary["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{summary}");
    let ratio = |round: &Value| round["p99_ratio"].as_f64().expect("a ratio");
    // The headline is the median of the two: the mean of both (to a
    // relative 1e-12: serde_json's float parsing may be a unit in the last
    // place off).
    assert_eq!(summary["comparison"]["rounds"], 2);
    let mean = (ratio(&rounds[0]) + ratio(&rounds[1])) / 2.0;
    let headline = ratio(&summary["comparison"]);
    assert!(
        (headline - mean).abs() <= mean.abs() * 1e-12,
        "headline {headline}, mean of the rounds {mean}"
    );
    let text = stdout(&run);
    assert!(
        text.contains("round 1: caxton/baseline: ")
            && text.contains("round 2: caxton/baseline: ")
            && text.contains("caxton/baseline, median of 2 rounds: "),
        "{text}"
    );
    // Under the P99-at-load table: how late each run's generators sent.
    for run in ["caxton @80%", "baseline @80%"] {
        assert!(
            text.contains(&format!("\n{run}: its generators sent P99 ")),
            "{run}: {text}"
        );
    }
    // Each round keeps both designs' breaking points, printed under its line.
    for round in rounds {
        let designs: Vec<&str> = round["breaking_points"]
            .as_array()
            .expect("a round's breaking points")
            .iter()
            .map(|point| point["design"].as_str().expect("a design"))
            .collect();
        assert_eq!(designs, ["caxton", "baseline"], "{summary}");
    }
    let round_two = text.split("round 2: ").nth(1).expect("round 2's line");
    for design in ["caxton", "baseline"] {
        assert!(
            round_two.contains(&format!("\n  {design}: ")),
            "{design} under round 2: {text}"
        );
    }
    // Rounds repeat a comparison: without one, or with none, they are refused.
    for (arguments, expected) in [
        (&["--rounds", "2"][..], "add --compare baseline"),
        (
            &["--rounds", "0", "--compare", "baseline"][..],
            "--rounds 0",
        ),
    ] {
        let mut command = vec!["benchmark", "stress"];
        command.extend_from_slice(arguments);
        assert_refused(&command, expected);
    }
}

#[test]
fn stress_compares_throughput_at_the_breaking_points_and_p99s_below_both() {
    let output = tempfile::tempdir().expect("temp dir");
    // P99 runs of 600 ms, twice a 300 ms step.
    let run = small_stress_comparison(
        &["--ramp-up-time", "600ms", "--latency-run", "600ms"],
        output.path(),
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(output.path().join("summary.json")).expect("summary"),
    )
    .expect("json");
    let sustained = |design: usize| {
        summary["breaking_points"][design]["sustained_per_second"]
            .as_f64()
            .expect("both designs sustain 200/s")
    };
    let lower = sustained(0).min(sustained(1));
    // Both designs ran at half and four fifths of the lower breaking point,
    // with that point's agents.
    let loads = summary["latency_at_loads"].as_array().expect("loads");
    assert_eq!(loads.len(), 2, "{summary}");
    for (at, share) in loads.iter().zip([0.5, 0.8]) {
        assert_eq!(at["share"], share);
        assert_eq!(at["offered_per_second"], lower * share);
        for design in ["caxton", "baseline"] {
            assert_eq!(at[design]["design"], design);
            assert_eq!(at[design]["offered_per_second"], lower * share);
            counts_add_up(&at[design]);
            // Scheduled for the P99 run's 600 ms, not a step's 300.
            let scheduled = at[design]["counts"]["scheduled"]
                .as_f64()
                .expect("scheduled");
            assert!(
                scheduled >= 0.55 * lower * share,
                "{design} at {share}: {scheduled} scheduled"
            );
        }
    }
    let comparison = &summary["comparison"];
    assert_eq!(comparison["p99_offered_per_second"], lower * 0.8);
    // The throughput ratio is one of breaking points: a design that never
    // broke within this short ramp only bounds it, and neither breaking
    // leaves it unjudged.
    let broke =
        |design: usize| !summary["breaking_points"][design]["broke_at_per_second"].is_null();
    let text = stdout(&run);
    let (kind, said) = match (broke(0), broke(1)) {
        (true, true) => ("measured", "throughput at the breaking points"),
        (false, true) => ("at_least", "throughput at least"),
        (true, false) => ("at_most", "throughput at most"),
        (false, false) => ("", "throughput not judged (neither design broke"),
    };
    if kind.is_empty() {
        assert!(comparison["throughput_ratio"].is_null(), "{comparison}");
        assert_eq!(
            comparison["goals_met"], false,
            "nothing was judged at saturation"
        );
    } else {
        assert_eq!(comparison["throughput_ratio_kind"], kind, "{comparison}");
        assert_eq!(
            comparison["throughput_ratio"].as_f64(),
            Some(sustained(0) / sustained(1))
        );
    }
    assert!(
        text.contains("at 80% of the lower ") && text.contains(said),
        "{text}"
    );
    // Where each design's load generators ran is said, once per design.
    let placement = |design: &str| {
        text.lines()
            .filter(|line| {
                line.starts_with(&format!("{design}: ")) && line.contains("load generator(s)")
            })
            .count()
    };
    assert_eq!(placement("caxton"), 1, "{text}");
    assert_eq!(placement("baseline"), 1, "{text}");
    // Unless told, the node decides how many, and the baseline gets as many.
    let generators = |design: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{design}: ")))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|count| count.parse::<usize>().ok())
    };
    assert!(
        generators("caxton").is_some_and(|count| count >= 1),
        "{text}"
    );
    assert_eq!(generators("caxton"), generators("baseline"), "{text}");
    assert!(
        text.contains("placed by the kernel, as its workers are"),
        "{text}"
    );
    assert!(summary["ramps"][0][1][0]["result"]["generators"]
        .as_str()
        .is_some_and(|placement| placement.contains("load generator(s)")));
    // Each run has its histogram, and the machine's stalls were probed.
    assert!(output.path().join("baseline-p99-at-80pct.hlog").exists());
    assert!(summary["machine_jitter"]["longest_gap_ns"].as_u64() > Some(0));
}

#[test]
fn bad_suite_input_is_refused_before_anything_starts() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--suite", "everything"],
            "--suite `everything` is not a suite; the suites are: standard, scaling, persistence",
        ),
        (&["--suite", "scaling", "--window", "0"], "--window 0"),
        (
            &["--suite", "scaling", "--duration", "0s"],
            "--duration `0s`",
        ),
        (&["--suite", "scaling", "--compare", "nginx"], "baseline"),
        (
            &["--suite", "persistence", "--duration", "1s"],
            "--duration and --window apply to the standard, scaling and cluster suites",
        ),
    ];
    for (arguments, expected) in cases {
        let mut command = vec!["benchmark", "run"];
        command.extend_from_slice(arguments);
        assert_refused(&command, expected);
    }
}

#[test]
fn the_scaling_suite_writes_one_entry_per_step() {
    let output = tempfile::tempdir().expect("temp dir");
    // Two data shards at most: steps of 1 and 2 shards.
    let run = engine(&[
        "benchmark",
        "run",
        "--suite",
        "scaling",
        "--set",
        "runtime.worker_threads=2",
        "--duration",
        "200ms",
        "--compare",
        "baseline",
        "--output",
        output.path().to_str().expect("utf-8"),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(text.starts_with("machine: "), "{text}");
    assert!(text.contains("efficiency"), "{text}");
    assert!(text.contains("one shard: "), "{text}");
    assert!(text.contains("at 2 shards: "), "{text}");
    let log = stderr(&run);
    assert!(
        log.contains("scaling: step 1 of 2: 1 data shard(s)"),
        "{log}"
    );
    assert!(
        log.contains("scaling: step 2 of 2: 2 data shard(s)"),
        "{log}"
    );
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(output.path().join("summary.json")).expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["max_shards"], 2);
    // One shard against the bare loop run beside it: a share, and its line.
    let share = summary["share_of_bare_loop"].as_f64().expect("a share");
    assert!(share > 0.0, "{summary}");
    assert!(
        text.contains("one shard keeps ") && text.contains("of the bare loop's throughput"),
        "{text}"
    );
    assert!(text.contains("bare loop (reference, no engine)"), "{text}");
    let steps = summary["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    let expected: [(u64, &[&str]); 2] = [
        (1, &["agent_to_agent_local", "bare_loop", "agent_to_agent"]),
        (
            2,
            &[
                "agent_to_agent_local",
                "agent_to_agent_cross",
                "agent_to_agent",
            ],
        ),
    ];
    for (step, (shards, names)) in steps.iter().zip(expected) {
        assert_eq!(step["shards"], shards);
        let runs = step["runs"].as_array().expect("runs");
        let run_names: Vec<&str> = runs
            .iter()
            .map(|run| run["name"].as_str().expect("a name"))
            .collect();
        assert_eq!(run_names, names, "{step}");
        for run in runs {
            let answered = run["answered"].as_u64().expect("answered");
            assert!(answered > 0, "{run}");
            assert!(run["per_second"].as_f64().expect("rate") > 0.0, "{run}");
            assert!(
                run["per_shard_per_second"].as_f64().expect("rate") > 0.0,
                "{run}"
            );
            assert!(
                run["efficiency"].as_f64().expect("efficiency") > 0.0,
                "{run}"
            );
            let pairs = run["pairs"].as_array().expect("pairs");
            assert_eq!(pairs.len() as u64, shards, "{run}");
            let by_pair: u64 = pairs
                .iter()
                .map(|pair| pair["answered"].as_u64().expect("answered"))
                .sum();
            assert_eq!(by_pair, answered, "{run}");
            if run["design"] == "caxton" {
                // The echoes handled every answered request; past that only
                // requests whose answer timed out, and the failure notices
                // about those answers.
                let count = |key: &str| run[key].as_u64().expect("a count");
                let echoed = count("echo_handled");
                assert!(echoed >= answered, "{run}");
                assert!(
                    echoed <= answered + count("failed") + count("unanswered") + count("timed_out"),
                    "{run}"
                );
                assert!(pairs.iter().all(|pair| pair["shard_routing"]["count"]
                    .as_u64()
                    .is_some_and(|count| count > 0)));
            }
        }
        // Efficiency is against one shard's local pairs, per shard.
        let reference = steps[0]["runs"][0]["per_shard_per_second"]
            .as_f64()
            .expect("one shard's local rate");
        for run in runs.iter().filter(|run| run["design"] == "caxton") {
            let per_shard = run["per_shard_per_second"].as_f64().expect("rate");
            let efficiency = run["efficiency"].as_f64().expect("efficiency");
            assert!(
                (efficiency - per_shard / reference).abs() <= 1e-9 * efficiency.max(1.0),
                "{run}"
            );
        }
        // The cache-line round trip between the neighbouring shards' CPUs,
        // probed before and after the step: no pair with one shard, one
        // pair of two distinct CPUs with two (a probe that timed out on a
        // busy machine leaves its figure null, never zero).
        for key in ["cross_core_before", "cross_core_after"] {
            let pairs = step[key].as_array().expect("probed pairs");
            assert_eq!(pairs.len() as u64, shards - 1, "{key}: {step}");
            for pair in pairs {
                assert_ne!(pair["from_pu"], pair["to_pu"], "{pair}");
                if let Some(round_trip) = pair["round_trip_ns"].as_u64() {
                    assert!(round_trip > 0, "{pair}");
                } else {
                    assert!(pair["round_trip_ns"].is_null(), "{pair}");
                }
            }
        }
    }
    assert!(
        text.contains(
            "     2  cross-core round trip between neighbouring shards' CPUs: before the runs "
        ),
        "{text}"
    );
    assert!(
        log.contains("scaling: 2 shard(s): cross-core round trip before the runs: "),
        "{log}"
    );
    for name in [
        "shards-1-caxton-agent_to_agent_local.hlog",
        "shards-2-caxton-agent_to_agent_cross.hlog",
        "shards-2-baseline-agent_to_agent.hlog",
    ] {
        assert!(output.path().join(name).is_file(), "{name}");
    }
}

/// `command` is refused before anything starts: exit status 2, and `expected` in its error.
fn assert_refused(command: &[&str], expected: &str) {
    let output = engine(command);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{command:?}: {}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains(expected),
        "{command:?}: {}",
        stderr(&output)
    );
}

#[test]
fn the_cluster_suite_times_the_remote_path_between_two_nodes() {
    let out = tempfile::tempdir().expect("a directory");
    let dir = out.path().display().to_string();
    let ran = engine(&[
        "benchmark",
        "run",
        "--suite",
        "cluster",
        "--duration",
        "200ms",
        "--window",
        "16",
        "--profile",
        "default",
        "--set",
        "runtime.worker_threads=1",
        "--output",
        &dir,
    ]);
    assert!(ran.status.success(), "{}", stderr(&ran));
    let text = stdout(&ran);
    assert!(
        text.contains("remote routing (send on a → handler start on b"),
        "{text}"
    );
    assert!(text.contains("16 outstanding"), "{text}");
    // Each node plans on its own half of the machine (both share a one-core one).
    assert!(text.contains("of the machine's"), "{text}");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("summary.json")).expect("summary written"),
    )
    .expect("json");
    assert!(
        summary["remote_routing_count"].as_u64() > Some(0),
        "{summary:#}"
    );
    assert!(
        summary["remote"]["answered"].as_u64() > Some(0),
        "{summary:#}"
    );
    assert_eq!(summary["window"], 16);
    // Short of a full queue, every request of the default profile is answered.
    assert_eq!(summary["remote"]["failed"], 0, "{summary:#}");
    assert_eq!(summary["local"]["failed"], 0, "{summary:#}");
    // Every request to the departed node's agent was answered, as a failure.
    assert_eq!(summary["node_down"]["answered"], 1000, "{summary:#}");
    // The departed node's agent stays named: the answer says its node is down.
    assert_eq!(
        summary["node_down"]["reason"], "caxton:node-down",
        "{summary:#}"
    );
    assert!(
        text.contains("a node declared down: 1000 requests"),
        "{text}"
    );
    for log in [
        "cluster_remote_routing",
        "cluster_remote_round_trip",
        "cluster_local_round_trip",
        "cluster_node_down_answer",
    ] {
        let report = engine(&["hdr", "report", &format!("{dir}/{log}.hlog")]);
        assert!(report.status.success(), "{log}: {}", stderr(&report));
    }
    assert_refused(
        &[
            "benchmark",
            "run",
            "--suite",
            "cluster",
            "--compare",
            "baseline",
        ],
        "--compare baseline runs with the standard and scaling suites",
    );
}

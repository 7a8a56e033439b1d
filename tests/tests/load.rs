//! The load benchmarks against real nodes: every pattern's counts add up on
//! both designs, and a stress ramp finds a breaking point planted with an
//! agent of known capacity. Rates are small enough for a 2-core machine.

use std::time::Duration;

use caxton_bench::custom::{self, LoadOptions, LoadResult, Pattern, Workload, SLOW_WAT};
use caxton_bench::stress::{self, StressOptions};
use caxton_shards::Node;
use caxton_tests::plan_on_this_machine;

fn options(rate: f64, millis: u64) -> LoadOptions {
    LoadOptions {
        rate,
        duration: Duration::from_millis(millis),
        drain: Duration::from_secs(10),
        progress: false,
        generators: None,
    }
}

fn assert_adds_up(result: &LoadResult, pattern: Pattern) {
    let counts = &result.counts;
    assert_eq!(
        counts.scheduled,
        counts.sent + counts.refused,
        "{pattern:?} {counts:?}"
    );
    assert_eq!(
        counts.sent,
        counts.answered + counts.failed + counts.timed_out,
        "{pattern:?} {counts:?}"
    );
    assert_eq!(
        counts.refused + counts.timed_out,
        0,
        "{pattern:?} {counts:?}"
    );
    match pattern {
        // A gatherer takes one gather at a time and refuses the rest: allowed, and counted.
        Pattern::FanOut => assert!(counts.answered > counts.sent / 2, "{counts:?}"),
        _ => assert_eq!(counts.answered, counts.sent, "{pattern:?} {counts:?}"),
    }
    assert_eq!(
        result.latency.len(),
        counts.answered + counts.failed,
        "{pattern:?}"
    );
}

#[test]
fn every_pattern_delivers_what_it_claims_on_both_designs() {
    let planned = plan_on_this_machine(&["low-latency"], &["runtime.worker_threads=2"]);
    let mut node = Node::start(&planned.profile, &planned.plan).expect("node starts");
    for (_, pattern) in Pattern::ALL {
        let workload = Workload::new(pattern, 10, None).expect("workload");
        let entries =
            custom::deploy_workload(&mut node, &planned.profile, &workload).expect("deployed");
        let load = options(1_000.0, 400);
        let ours = custom::run_on_node(&node, &workload, entries, &load, "caxton").expect("run");
        assert_eq!(ours.counts.scheduled, 400);
        assert_adds_up(&ours, pattern);
        let baseline =
            caxton_bench::baseline::run_on_baseline(&planned.profile, &workload, 2, 2, &load)
                .expect("baseline run");
        assert_eq!(baseline.design, "baseline");
        assert_adds_up(&baseline, pattern);
    }
    node.shutdown().expect("clean stop");
}

#[test]
fn a_stress_ramp_finds_the_breaking_point_of_a_slow_agent() {
    // One instance of an agent that spends 200 µs per message: it cannot
    // serve more than 5,000 messages a second.
    let planned = plan_on_this_machine(&["low-latency"], &["runtime.worker_threads=1"]);
    let mut node = Node::start(&planned.profile, &planned.plan).expect("node starts");
    let options = StressOptions {
        pattern: Pattern::RequestReply,
        ramp_up_time: Duration::from_millis(2_500),
        max_agents: 1,
        find_breaking_point: true,
        start_rate: 500.0,
        growth: 2.0,
        steps: 5,
        p99_target: Duration::from_millis(50),
        error_limit: 0.001,
        progress: false,
        generators: None,
        warm_up: Duration::ZERO,
        latency_run: Duration::ZERO,
    };
    let (steps, point) = stress::ramp("caxton", &options, |agents, load| {
        let workload = Workload::new(Pattern::RequestReply, agents, Some(SLOW_WAT))?;
        let entries = custom::deploy_workload(&mut node, &planned.profile, &workload)?;
        custom::run_on_node(&node, &workload, entries, load, "caxton")
    })
    .expect("ramp");
    node.shutdown().expect("clean stop");
    let offered: Vec<f64> = steps
        .iter()
        .map(|step| step.result.offered_per_second)
        .collect();
    let sustained = point
        .sustained_per_second
        .expect("the first steps are within limits");
    let broke = point.broke_at_per_second.expect("8,000/s is past 5,000/s");
    // The plant is 5,000/s: the ramp must stop below it or at the first step
    // past it. (A loaded machine may stop it a step or two early, never later.)
    assert!(
        (500.0..=4_000.0).contains(&sustained) && broke <= 8_000.0,
        "sustained {sustained}, broke at {broke}: {offered:?} {:?}",
        point.reason
    );
    // The breaking point reports the last step within the limits.
    let last_within = steps
        .iter()
        .rev()
        .find(|step| step.within_limits)
        .expect("a step within limits");
    assert_eq!(last_within.result.offered_per_second, sustained);
    assert_eq!(point.p99_ns, Some(last_within.result.p99_ns));
    // The ramp stopped at the breaking step.
    assert_eq!(steps.last().map(|step| step.within_limits), Some(false));
}

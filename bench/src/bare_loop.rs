//! The bare loop: the ceiling the engine's one-shard agent-to-agent figure
//! is judged against, measured on the same machine in the same run.
//!
//! It is the agent-to-agent pair (`examples/agents/driver.wat` loading
//! `examples/agents/echo.wat`) with nothing of the engine around it: the same
//! modules, compiler settings, store limits and ABI host functions as the
//! baseline ([`crate::baseline::instantiate`], which links
//! [`caxton_agents::link_abi`]), called from one plain loop on a thread of
//! its own. One `VecDeque` is every mailbox; the loop hands each message to
//! its agent by number and queues what the handler sent. It reads no clock
//! beyond the driver's own `now_ns`, records no histogram, counts nothing,
//! bounds nothing, slices nothing and stores nothing.
//!
//! What the engine's one shard loses against it is what the engine's own
//! parts cost per message (router, mailboxes, shard core, agent host,
//! timing and metrics); the goal is to keep at least [`SHARE_GOAL`] of it.

use std::collections::VecDeque;
use std::time::Instant;

use caxton_messaging::{Address, Envelope, Performative};
use caxton_profiles::Profile;

use crate::agent_to_agent::{
    answer_report, pair_names, traffic, AgentToAgentResult, Layout, PairOptions, PairResult,
    DRIVER_WAT,
};
use crate::baseline::{agent_id, client, envelope_of, instantiate};
use crate::nanosecond_histogram;
use crate::standard::{SuiteError, ECHO_WAT};

/// The scenario's name.
pub const SCENARIO: &str = "bare_loop";
/// Its design, as the reports print it.
pub const DESIGN: &str = "bare-loop";

/// One shard's agent-to-agent throughput should be at least this share of
/// the bare loop's on the same machine (3M/s of the 5.0M/s a bare loop
/// reached on the 2-core machine, 1.5M/s of the 2.47M/s per core it reached
/// on the 16-core machine).
pub const SHARE_GOAL: f64 = 0.6;

/// How many handler calls pass between two checks of the wall clock
/// against the run's patience.
const CHECK_EVERY: u64 = 1 << 16;

/// Run one driver and echo pair in the bare loop for `options`; the result
/// reads as a one-shard run (`shards` 1), without latency histograms.
pub fn run_pair(
    profile: &Profile,
    options: &PairOptions,
) -> Result<AgentToAgentResult, SuiteError> {
    options.check().map_err(SuiteError::Setup)?;
    let (driver, echo) = pair_names(Layout::Local, 0);
    let start = options.start_content(&echo);
    let agents = vec![(driver, DRIVER_WAT), (echo, ECHO_WAT)];
    let patience = options.wait();
    let profile = profile.clone();
    let answer = std::thread::Builder::new()
        .name("bare-loop".into())
        .spawn(move || run_loop(&profile, &agents, start, patience))
        .map_err(|error| traffic(format!("bare loop: no thread: {error}")))?
        .join()
        .map_err(|_| traffic("bare loop: its thread panicked"))??;
    let pair = PairResult::unsharded(0, answer_report(0, answer.0, &answer.1)?);
    let mut result = AgentToAgentResult::new(
        SCENARIO,
        DESIGN,
        1,
        options.window,
        vec![pair],
        nanosecond_histogram(),
        &nanosecond_histogram(),
    );
    result.note = Some(
        "the same driver and echo modules and ABI host functions, called from one loop with a VecDeque for every mailbox: no engine, no timing"
            .into(),
    );
    Ok(result)
}

/// The loop itself: start the driver with `start` and run until nothing
/// is queued. Returns the driver's answer to its start message.
fn run_loop(
    profile: &Profile,
    agents: &[(String, &'static str)],
    start: Vec<u8>,
    patience: std::time::Duration,
) -> Result<(Performative, Vec<u8>), SuiteError> {
    let epoch = Instant::now();
    let mut instances = instantiate(profile, agents, epoch)
        .map_err(|error| traffic(format!("bare loop: {error}")))?;
    let mut queue: VecDeque<Envelope> = VecDeque::with_capacity(4096);
    queue.push_back(Envelope {
        conversation_id: 1,
        reply_with: 1,
        ..Envelope::new(
            Performative::Request,
            client(0),
            Address::Agent(agent_id(0)),
            start,
            0,
            0,
        )
    });
    let give_up = epoch + patience;
    let mut answer = None;
    let mut handled: u64 = 0;
    while let Some(message) = queue.pop_front() {
        let me = match message.receiver {
            Address::Agent(agent) => agent,
            other => return Err(traffic(format!("bare loop: a message for {other:?}"))),
        };
        let agent = instances
            .get_mut(me.0 as usize)
            .ok_or_else(|| traffic(format!("bare loop: no agent {}", me.0)))?;
        let (result, mut outbox) = agent.handle(message);
        if !matches!(result, Ok(0)) {
            return Err(traffic(format!(
                "bare loop: agent {}'s handler ended with {result:?}",
                me.0
            )));
        }
        for sent in outbox.drain(..) {
            match sent.receiver {
                Address::Agent(_) => queue.push_back(envelope_of(me, sent, 0)),
                Address::Client { .. } => answer = Some((sent.performative, sent.content)),
                other => return Err(traffic(format!("bare loop: a send to {other:?}"))),
            }
        }
        agent.recycle_outbox(outbox);
        handled += 1;
        if handled.is_multiple_of(CHECK_EVERY) && Instant::now() > give_up {
            return Err(traffic(format!(
                "bare loop: the driver did not finish within {patience:?}"
            )));
        }
    }
    answer.ok_or_else(|| traffic("bare loop: the driver never answered its start message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_run_answers_every_request_and_reports_a_rate() {
        let options = PairOptions {
            duration: std::time::Duration::ZERO,
            requests: 5_000,
            window: 16,
        };
        let result = run_pair(&Profile::default(), &options).expect("the pair runs");
        assert_eq!(result.name, SCENARIO);
        assert_eq!(result.design, DESIGN);
        assert_eq!(result.answered, 5_000);
        assert_eq!((result.failed, result.unanswered), (0, 0));
        assert!(result.per_second > 0.0);
        assert_eq!(result.per_shard_per_second, result.per_second);
    }

    #[test]
    fn bad_options_are_refused_before_anything_runs() {
        let options = PairOptions {
            duration: std::time::Duration::ZERO,
            requests: 0,
            window: 16,
        };
        assert!(matches!(
            run_pair(&Profile::default(), &options),
            Err(SuiteError::Setup(_))
        ));
    }
}

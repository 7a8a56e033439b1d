//! The soak: a running engine with persistence under a steady mixed load
//! while faults are injected on a schedule, then the books are checked.
//!
//! Load, every tick: a request-reply (in turn: to `echo`, through a
//! two-hop pipeline, or a fan-out over two echoes), and a durable one-way
//! send to `tally` (content `d-N`, acknowledged once stored). Each is sent
//! when the previous one is answered (closed loop). Faults, on their own
//! schedules: messages to agents that trap, loop and grab memory; an agent
//! undeployed and redeployed under load; the engine killed with SIGKILL and
//! restarted on the same data directory.
//!
//! At the end: every acknowledged durable message was handled (`tally`
//! answers `d-N` again with a count of at least 2), the request-replies add
//! up (sent = answered + failed + refused + timed out + unreachable), every
//! shard still serves, and resident memory over the last part of the run
//! stays within 10% of its start after warm-up.
//!
//! Not injected yet: a full data directory (it needs a size-limited file
//! system the soak can mount).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use caxton_admin::AdminClient;
use hyper::Method;
use serde_json::{json, Value};

/// What to soak.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// The `engine` binary.
    pub engine: PathBuf,
    /// How long.
    pub duration: Duration,
    /// Where the data directory, the HDR logs and the summary go.
    pub output: PathBuf,
    /// Time between SIGKILLs of the engine.
    pub kill_every: Duration,
    /// Time between undeploy-redeploy cycles.
    pub redeploy_every: Duration,
}

/// What the soak saw.
#[derive(Clone, Debug, Default)]
pub struct SoakReport {
    /// Request-replies sent to `echo`.
    pub sent: u64,
    /// Answered with `inform`.
    pub answered: u64,
    /// Answered with an error the engine chose (refusal, timeout, failure).
    pub failed: u64,
    /// Refused (full rings or queues).
    pub refused: u64,
    /// Timed out waiting.
    pub timed_out: u64,
    /// Not sent: the engine was down (between a kill and its restart).
    pub unreachable: u64,
    /// Durable sends acknowledged (stored).
    pub durable_acknowledged: u64,
    /// Acknowledged durable messages not handled by the end.
    pub durable_lost: Vec<u64>,
    /// Fault messages sent to the trapping, looping and grabbing agents.
    pub faults_sent: u64,
    /// Undeploy-redeploy cycles.
    pub redeploys: u64,
    /// SIGKILLs and restarts.
    pub restarts: u64,
    /// Resident memory samples (seconds, bytes).
    pub resident: Vec<(f64, u64)>,
    /// How many restarts had happened at each resident sample (a process
    /// lifetime's samples share it).
    pub lifetime: Vec<u64>,
    /// Shards that handled nothing in the final check.
    pub idle_shards: Vec<usize>,
}

impl SoakReport {
    /// Every request-reply is accounted for.
    pub fn counts_add_up(&self) -> bool {
        self.sent == self.answered + self.failed + self.refused + self.timed_out + self.unreachable
    }

    /// Resident memory over the last two thirds of the run (after warm-up)
    /// stays within 10% of where that stretch began: (start, max, flat).
    pub fn memory_flat(&self) -> (u64, u64, bool) {
        let Some(&(end, _)) = self.resident.last() else {
            return (0, 0, true);
        };
        let after: Vec<u64> = self
            .resident
            .iter()
            .filter(|(at, _)| *at >= end / 3.0)
            .map(|(_, bytes)| *bytes)
            .collect();
        let start = after.first().copied().unwrap_or(0);
        let max = after.iter().copied().max().unwrap_or(0);
        (start, max, max as f64 <= start as f64 * 1.10)
    }

    /// Nothing acknowledged was lost, the counts add up, every shard serves
    /// and memory stayed flat.
    pub fn passed(&self) -> bool {
        self.durable_lost.is_empty()
            && self.counts_add_up()
            && self.idle_shards.is_empty()
            && self.memory_flat().2
    }

    /// The summary as text.
    pub fn summary(&self) -> String {
        let (start, max, flat) = self.memory_flat();
        format!(
            "request-reply: sent {} = answered {} + failed {} + refused {} + timed out {} + engine down {} ({})\n\
             durable: {} acknowledged, {} lost{}\n\
             faults: {} messages to trapping, looping and grabbing agents, {} redeploys, {} SIGKILL restarts\n\
             resident memory after warm-up: {:.1} MiB at start, {:.1} MiB at most ({})\n\
             shards: {}\n\
             verdict: {}\n",
            self.sent,
            self.answered,
            self.failed,
            self.refused,
            self.timed_out,
            self.unreachable,
            if self.counts_add_up() { "adds up" } else { "DOES NOT ADD UP" },
            self.durable_acknowledged,
            self.durable_lost.len(),
            if self.durable_lost.is_empty() {
                String::new()
            } else {
                format!(" (first: d-{})", self.durable_lost[0])
            },
            self.faults_sent,
            self.redeploys,
            self.restarts,
            start as f64 / (1 << 20) as f64,
            max as f64 / (1 << 20) as f64,
            if flat { "flat within 10%" } else { "GREW more than 10%" },
            if self.idle_shards.is_empty() {
                "every shard serves".to_owned()
            } else {
                format!("IDLE: {:?}", self.idle_shards)
            },
            if self.passed() { "pass" } else { "FAIL" },
        )
    }
}

/// A running engine of the soak.
struct Engine {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &SoakConfig) -> Result<Engine, String> {
    let data = config.output.join("data");
    let hdr = config.output.join("hdr");
    let mut child = Command::new(&config.engine)
        .args(["--profile", "default"])
        .args(["--set", "messaging.enable_persistence=true"])
        .args([
            "--set",
            &format!("storage.data_directory={}", data.display()),
        ])
        .args([
            "--set",
            &format!("observability.hdr_log.directory={}", hdr.display()),
        ])
        .args(["--set", "observability.admin.listen=127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", config.engine.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut log = BufReader::new(stderr);
    let marker = "admin endpoint listening on http://";
    let mut admin = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if log
            .read_line(&mut line)
            .map_err(|error| error.to_string())?
            == 0
        {
            return Err("the engine exited while starting".into());
        }
        if let Some(at) = line.find(marker) {
            let address: String = line[at + marker.len()..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            admin = address.parse().ok();
        }
        if line.contains("engine running") {
            break;
        }
    }
    let admin = admin.ok_or("the engine did not say where its admin endpoint is")?;
    // Keep reading its log so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while log.read_line(&mut sink).is_ok_and(|read| read > 0) {
            sink.clear();
        }
    });
    Ok(Engine { child, admin })
}

fn example(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/agents")
        .join(name);
    std::fs::read(&path).unwrap_or_default()
}

fn call(client: &AdminClient, method: Method, path: &str, body: Vec<u8>) -> Option<(u16, Value)> {
    client
        .call(method, path, "application/json", body)
        .ok()
        .map(|answer| (answer.status.as_u16(), answer.json()))
}

fn deploy(client: &AdminClient, name: &str, module: &str, query: &str) -> bool {
    let path = format!("/v1/agents?name={name}{query}");
    matches!(
        call(client, Method::POST, &path, example(module)),
        Some((201, _))
    )
}

fn send(client: &AdminClient, agent: &str, body: Value) -> Option<(u16, Value)> {
    call(
        client,
        Method::POST,
        &format!("/v1/agents/{agent}/messages"),
        body.to_string().into_bytes(),
    )
}

/// The forwarder's content for a pipeline through echo: one hop, `echo`,
/// then the payload `hi` (base64 of `[1][4]echo hi`).
const PIPELINE_ROUTE: &str = "AQRlY2hvaGk=";
/// The fanout's content for a gather over two echoes (base64 of `[2][4]echo[4]echo`).
const FAN_OUT_ROUTE: &str = "AgRlY2hvBGVjaG8=";

/// Agents a fresh engine gets; a restarted one recovers them from storage.
fn deploy_agents(client: &AdminClient) -> Result<(), String> {
    for (name, module, query) in [
        ("echo", "echo.wat", "&instances=2"),
        ("tally", "tally.wat", "&instances=1"),
        ("trap", "trap.wat", ""),
        ("loop", "loop.wat", "&max_execution_time=20ms"),
        ("grab", "grow.wat", "&memory=1MB"),
        ("spare", "echo.wat", ""),
        ("forwarder", "forwarder.wat", ""),
        ("fanout", "fanout.wat", ""),
    ] {
        if !deploy(client, name, module, query) {
            return Err(format!("cannot deploy {name}"));
        }
    }
    Ok(())
}

/// Run the soak; `progress` hears the seconds elapsed now and then.
pub fn run(config: &SoakConfig, progress: &dyn Fn(u64)) -> Result<SoakReport, String> {
    std::fs::create_dir_all(&config.output).map_err(|error| error.to_string())?;
    let mut engine = start(config)?;
    let mut client = AdminClient::new(engine.admin, None).map_err(|error| error.to_string())?;
    deploy_agents(&client)?;
    let mut report = SoakReport::default();
    let mut acknowledged = Vec::new();
    let began = Instant::now();
    let (mut next_kill, mut next_redeploy, mut next_sample) = (
        began + config.kill_every,
        began + config.redeploy_every,
        began,
    );
    let mut tick: u64 = 0;
    while began.elapsed() < config.duration {
        tick += 1;
        report.sent += 1;
        // Request-reply, a two-hop pipeline (forwarder, then echo), and a
        // fan-out over two echoes, in turn.
        let (agent, request) = match tick % 3 {
            0 => (
                "echo",
                json!({ "content": format!("r-{tick}"), "timeout_ms": 2000 }),
            ),
            1 => (
                "forwarder",
                json!({ "content_base64": PIPELINE_ROUTE, "timeout_ms": 2000 }),
            ),
            _ => (
                "fanout",
                json!({ "content_base64": FAN_OUT_ROUTE, "timeout_ms": 2000 }),
            ),
        };
        match send(&client, agent, request) {
            None => report.unreachable += 1,
            Some((200, reply)) if reply["performative"] == "inform" => report.answered += 1,
            Some((200, _)) => report.failed += 1,
            Some((429, _)) => report.refused += 1,
            Some((504, _)) => report.timed_out += 1,
            Some(_) => report.failed += 1,
        }
        let durable = json!({ "content": format!("d-{tick}"), "persistent": true, "wait_for_reply": false, "timeout_ms": 2000 });
        if let Some((202, _)) = send(&client, "tally", durable) {
            acknowledged.push(tick);
        }
        if tick.is_multiple_of(25) {
            for agent in ["trap", "loop", "grab"] {
                report.faults_sent += 1;
                let _ = send(
                    &client,
                    agent,
                    json!({ "content": "fault", "timeout_ms": 1000 }),
                );
            }
        }
        let now = Instant::now();
        if now >= next_sample {
            if let Some((200, node)) = call(&client, Method::GET, "/v1/node", Vec::new()) {
                report.resident.push((
                    began.elapsed().as_secs_f64(),
                    node["memory_used_bytes"].as_u64().unwrap_or(0),
                ));
                report.lifetime.push(report.restarts);
            }
            next_sample = now + Duration::from_secs(2);
            progress(began.elapsed().as_secs());
        }
        if now >= next_redeploy {
            let _ = call(&client, Method::DELETE, "/v1/agents/spare", Vec::new());
            if deploy(&client, "spare", "echo.wat", "") {
                report.redeploys += 1;
            }
            next_redeploy = now + config.redeploy_every;
        }
        if now >= next_kill {
            // SIGKILL: no drain, no goodbye; the restart recovers from storage.
            let _ = engine.child.kill();
            let _ = engine.child.wait();
            engine = start(config)?;
            client = AdminClient::new(engine.admin, None).map_err(|error| error.to_string())?;
            report.restarts += 1;
            next_kill = Instant::now() + config.kill_every;
        }
    }
    report.durable_acknowledged = acknowledged.len() as u64;
    // Durable messages may still wait in queues: give them a moment.
    std::thread::sleep(Duration::from_secs(2));
    for id in acknowledged {
        let handled = send(
            &client,
            "tally",
            json!({ "content": format!("d-{id}"), "timeout_ms": 5000 }),
        )
        .and_then(|(status, reply)| (status == 200).then_some(reply))
        .and_then(|reply| reply["content_base64"].as_str().map(str::to_owned))
        .and_then(|encoded| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .and_then(|bytes| {
            bytes
                .get(..4)
                .map(|count| u32::from_le_bytes([count[0], count[1], count[2], count[3]]))
        })
        .is_some_and(|count| count >= 2);
        if !handled {
            report.durable_lost.push(id);
        }
    }
    // Every shard still serves: each handles messages in a last burst.
    let before = call(&client, Method::GET, "/v1/node", Vec::new())
        .map(|(_, node)| node)
        .unwrap_or_default();
    for burst in 0..200 {
        let _ = send(
            &client,
            "echo",
            json!({ "content": format!("last-{burst}") }),
        );
    }
    let after = call(&client, Method::GET, "/v1/node", Vec::new())
        .map(|(_, node)| node)
        .unwrap_or_default();
    let handled = |node: &Value, shard: usize| {
        node["shards"][shard]["counters"]["handled"]
            .as_u64()
            .unwrap_or(0)
    };
    let shards = after["shards"].as_array().map_or(0, Vec::len);
    let echo_shards: Vec<u64> = call(&client, Method::GET, "/v1/agents/echo", Vec::new())
        .and_then(|(_, agent)| agent["instances_per_shard"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|count| count.as_u64().unwrap_or(0))
        .collect();
    for shard in 0..shards {
        let hosts_echo = echo_shards.get(shard).is_some_and(|count| *count > 0);
        if hosts_echo && handled(&after, shard) <= handled(&before, shard) {
            report.idle_shards.push(shard);
        }
    }
    // The engine's HDR log of the whole run (since the last restart).
    if let Ok(answer) = client.call(Method::GET, "/v1/hdr", "text/plain", Vec::new()) {
        let _ = std::fs::write(config.output.join("latency.hlog"), answer.text());
    }
    drop(engine);
    let _ = std::fs::write(config.output.join("summary.txt"), report.summary());
    // Resident memory over time, with the process lifetime of each sample:
    // a SIGKILL restart starts a new process (and its warm-up).
    let csv: String = std::iter::once("seconds,lifetime,resident_bytes\n".to_owned())
        .chain(
            report
                .resident
                .iter()
                .zip(&report.lifetime)
                .map(|((at, bytes), lifetime)| format!("{at:.1},{lifetime},{bytes}\n")),
        )
        .collect();
    let _ = std::fs::write(config.output.join("resident.csv"), csv);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_books_balance_only_when_every_send_is_counted_and_memory_stays_flat() {
        let mut report = SoakReport {
            sent: 10,
            answered: 6,
            failed: 1,
            refused: 1,
            timed_out: 1,
            unreachable: 1,
            resident: (0u32..30)
                .map(|second| (f64::from(second), 100 + u64::from(second % 3)))
                .collect(),
            ..SoakReport::default()
        };
        assert!(report.counts_add_up() && report.memory_flat().2 && report.passed());
        report.sent += 1;
        assert!(!report.counts_add_up() && !report.passed());
        report.sent -= 1;
        report.resident.push((31.0, 200));
        assert!(!report.memory_flat().2, "a late doubling is growth");
        report.resident.pop();
        report.durable_lost.push(7);
        assert!(!report.passed());
        assert!(report.summary().contains("1 lost (first: d-7)"));
    }
}

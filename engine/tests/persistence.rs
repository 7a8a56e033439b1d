//! Durability across crashes: durable sends to a running engine, `kill -9`
//! at random moments, restarts, and a check that every message the engine
//! accepted was handled at least once.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use caxton_admin::AdminClient;
use common::{start_engine, RunningEngine};
use hyper::{Method, StatusCode};

fn engine_with_storage(data: &Path) -> RunningEngine {
    start_engine(&[
        "--set",
        "messaging.enable_persistence=true",
        "--set",
        &format!("storage.data_directory={}", data.display()),
        "--set",
        "runtime.worker_threads=2",
        // Finished rows stay for the check at the end.
        "--set",
        "messaging.cleanup_interval=1h",
    ])
}

/// Whether message `id` is finished in `data`'s partitions (read-only, while the engine runs).
fn finished(data: &Path, id: u64) -> Option<bool> {
    let shard = (id >> 48) as usize - 1;
    let connection = rusqlite::Connection::open_with_flags(
        caxton_storage::partition_path(data, shard),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    connection
        .query_row(
            "SELECT done FROM messages WHERE id = ?1",
            [id as i64],
            |row| row.get::<_, bool>(0),
        )
        .ok()
}

/// A cheap pseudo-random sequence (the seed is printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn every_accepted_message_is_handled_at_least_once_across_kill_9() {
    let data = tempfile::tempdir().expect("tempdir");
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64);
    eprintln!("kill -9 loop seed {seed}");
    let mut random = Lcg(seed);
    let mut accepted: Vec<u64> = Vec::new();
    let mut redelivered_total = 0u64;
    for round in 0..4 {
        let running = engine_with_storage(data.path());
        let address = running.admin_address();
        let client = AdminClient::new(address, None).expect("client");
        if round == 0 {
            let echo = std::fs::read(format!(
                "{}/../examples/agents/echo.wat",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("echo");
            let deployed = client
                .call(
                    Method::POST,
                    "/v1/agents?name=echo&instances=2",
                    "application/wasm",
                    echo,
                )
                .expect("deploy");
            assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.text());
        } else {
            // The registry brought the agent back, and the log says what was redelivered.
            let agents = client.get("/v1/agents").expect("list").json();
            assert_eq!(agents["agents"][0]["name"], "echo", "{agents}");
            let node = client.get("/v1/node").expect("node").json();
            redelivered_total += node["counters"]["redelivered"].as_u64().unwrap_or(0);
        }
        // Durable, fire-and-forget sends from a thread until the engine dies.
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let client = AdminClient::new(address, None).expect("client");
                let mut ids = Vec::new();
                let mut index = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!(
                        r#"{{"content": "m{index}", "persistent": true, "wait_for_reply": false}}"#
                    );
                    match client.call(
                        Method::POST,
                        "/v1/agents/echo/messages",
                        "application/json",
                        body.into_bytes(),
                    ) {
                        Ok(answer) if answer.status == StatusCode::ACCEPTED => {
                            ids.push(answer.json()["message_id"].as_u64().expect("an id"));
                        }
                        // Refused (ring full, busy) or cut off by the kill: not accepted.
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    index += 1;
                }
                ids
            })
        };
        std::thread::sleep(Duration::from_millis(100 + random.next(400)));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(running.child.id() as i32, libc::SIGKILL) };
        drop(running);
        stop.store(true, Ordering::Relaxed);
        let ids = sender.join().expect("sender");
        assert!(!ids.is_empty(), "round {round}: nothing was accepted");
        accepted.extend(ids);
    }
    // A last start redelivers what the last kill interrupted; wait until all is handled.
    let running = engine_with_storage(data.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut unfinished: Vec<u64> = accepted.clone();
    while !unfinished.is_empty() && Instant::now() < deadline {
        unfinished.retain(|&id| finished(data.path(), id) != Some(true));
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = AdminClient::new(running.admin_address(), None).expect("client");
    redelivered_total += client.get("/v1/node").expect("node").json()["counters"]["redelivered"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        unfinished.is_empty(),
        "{} of {} accepted messages were never handled (seed {seed}): {:?}",
        unfinished.len(),
        accepted.len(),
        &unfinished[..unfinished.len().min(10)]
    );
    eprintln!(
        "{} accepted messages handled; {redelivered_total} redelivered after kills",
        accepted.len()
    );
    let (status, rest) = running.terminate();
    assert_eq!(status.code(), Some(0), "{rest}");
}

#[test]
fn engine_send_persistent_says_where_the_message_was_stored_or_why_not() {
    let echo = format!("{}/../examples/agents/echo.wat", env!("CARGO_MANIFEST_DIR"));
    // Without persistence: refused with the reason, and the engine keeps serving.
    let plain = start_engine(&[]);
    let admin = plain.admin_address().to_string();
    let deployed = common::engine(&["agents", "deploy", &echo, "--admin", &admin]);
    assert!(deployed.status.success(), "{}", common::stderr(&deployed));
    let refused = common::engine(&["send", "echo", "x", "--persistent", "--admin", &admin]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        common::stderr(&refused)
    );
    assert!(
        common::stderr(&refused).contains("persistence-off"),
        "{}",
        common::stderr(&refused)
    );
    assert!(common::engine(&["send", "echo", "x", "--admin", &admin])
        .status
        .success());
    drop(plain);
    // With it: accepted, stored, answered.
    let data = tempfile::tempdir().expect("tempdir");
    let durable = engine_with_storage(data.path());
    let admin = durable.admin_address().to_string();
    assert!(
        common::engine(&["agents", "deploy", &echo, "--admin", &admin])
            .status
            .success()
    );
    let sent = common::engine(&["send", "echo", "kept", "--persistent", "--admin", &admin]);
    assert!(sent.status.success(), "{}", common::stderr(&sent));
    assert_eq!(common::stdout(&sent), "inform: kept\n");
    assert!(
        common::stderr(&sent).contains("stored as message"),
        "{}",
        common::stderr(&sent)
    );
}

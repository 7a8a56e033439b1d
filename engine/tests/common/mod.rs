//! Helpers shared by the tests that run the `engine` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `engine` with `arguments` to completion.
pub fn engine(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(arguments)
        .env("RUST_LOG", "warn")
        .env_remove("CAXTON_ADMIN_TOKEN")
        .output()
        .expect("engine runs")
}

/// The bytes of example agent `name` (`examples/agents/NAME`, extension included).
pub fn example(name: &str) -> Vec<u8> {
    let path = format!("{}/../examples/agents/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Its stdout.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Its stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Check that a command was refused (exit status 2) saying `needle`;
/// `context` names the case in a failure.
#[allow(dead_code)] // Not every test binary that shares this module refuses.
pub fn assert_refused_saying(output: &Output, context: &str, needle: &str) {
    let said = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{context}: {said}");
    assert!(said.contains(needle), "{context}: `{needle}` not in {said}");
}

/// A running engine; killed when dropped.
pub struct RunningEngine {
    /// The process.
    pub child: std::process::Child,
    /// The rest of its log.
    pub log: BufReader<std::process::ChildStderr>,
    /// The log up to "engine running".
    pub seen: String,
}

impl Drop for RunningEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RunningEngine {
    /// The admin endpoint's address, from the log.
    pub fn admin_address(&self) -> std::net::SocketAddr {
        let marker = "admin endpoint listening on http://";
        let start = self
            .seen
            .find(marker)
            .unwrap_or_else(|| panic!("no admin address in {}", self.seen))
            + marker.len();
        let text: String = self.seen[start..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        text.parse().expect("an address")
    }

    /// Stop with SIGTERM and return the exit status and the rest of the log.
    pub fn terminate(self) -> (std::process::ExitStatus, String) {
        self.signal_stop();
        self.wait_for_exit()
    }

    /// Send SIGTERM, without waiting for the node to stop.
    pub fn signal_stop(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Wait for the node to exit; its exit status and the rest of the log.
    pub fn wait_for_exit(mut self) -> (std::process::ExitStatus, String) {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.log, &mut rest);
        let status = self.child.wait().expect("wait");
        (status, rest)
    }
}

/// Start a node with `arguments` (its admin endpoint on a free loopback port)
/// and `environment`, and read its log until it says it is running.
pub fn start_engine_with(arguments: &[&str], environment: &[(&str, &str)]) -> RunningEngine {
    let mut command = Command::new(env!("CARGO_BIN_EXE_engine"));
    command
        .arg("--set")
        .arg("observability.admin.listen=127.0.0.1:0")
        .args(arguments)
        .env("RUST_LOG", "info")
        .env_remove("CAXTON_ADMIN_TOKEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (key, value) in environment {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("engine starts");
    let mut log = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains("engine running") {
        assert!(Instant::now() < deadline, "engine did not come up: {seen}");
        let mut line = String::new();
        if log.read_line(&mut line).expect("read log") == 0 {
            panic!("engine exited early: {seen}");
        }
        seen.push_str(&line);
    }
    RunningEngine { child, log, seen }
}

/// [`start_engine_with`] and no extra environment.
pub fn start_engine(arguments: &[&str]) -> RunningEngine {
    start_engine_with(arguments, &[])
}

//! Commands that drive a running engine through its admin endpoint:
//! `engine agents deploy|list|undeploy`, `engine send`, `engine hdr dump`,
//! `engine cluster members|status` (and `init-certs`, which needs no engine).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use caxton_admin::{AdminClient, Answer};
use hyper::{Method, StatusCode};

use crate::cli::{AgentsCommand, ClusterCommand, Endpoint, ProfileSelection};
use crate::commands::{emit, load_profile, CommandError};

/// The client for `endpoint`: its `--admin` and `--token`, else the profile's.
pub(crate) fn connect(
    selection: &ProfileSelection,
    endpoint: &Endpoint,
) -> Result<AdminClient, CommandError> {
    let loaded = load_profile(selection)?;
    let address: SocketAddr = match &endpoint.admin {
        Some(text) => admin_address(text)?,
        None => {
            let mut listen = loaded.profile.observability.admin.listen;
            // An engine listening on every address is reachable on loopback.
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            listen
        }
    };
    let token = match &endpoint.token {
        Some(token) => Some(token.clone()),
        None => crate::admin::token(&loaded)?,
    };
    AdminClient::new(address, token)
        .map_err(|error| CommandError::Failed(format!("cannot start the client: {error}")))
}

/// `--admin TEXT` as an address: a HOST:PORT whose host resolves.
fn admin_address(text: &str) -> Result<SocketAddr, CommandError> {
    host_port("--admin", text)
}

/// The value of `flag` as an address: a HOST:PORT whose host resolves.
pub(crate) fn host_port(flag: &str, text: &str) -> Result<SocketAddr, CommandError> {
    let refuse = |why: String| CommandError::BadInput(format!("{flag} `{text}`: {why}"));
    let has_port = text
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    if !has_port {
        return Err(refuse("not a HOST:PORT address".into()));
    }
    match text.to_socket_addrs() {
        Ok(mut addresses) => addresses
            .next()
            .ok_or_else(|| refuse("the host name resolves to no address".into())),
        Err(error) => Err(refuse(format!("cannot resolve the host name: {error}"))),
    }
}

/// A call that got no answer: the endpoint out of reach is the user's to
/// fix (exit status 2, as refused input); an exchange that broke off or
/// timed out once connected is a failure (1).
pub(crate) fn client_failure(error: caxton_admin::ClientError) -> CommandError {
    match error {
        caxton_admin::ClientError::Unreachable { .. } => CommandError::BadInput(error.to_string()),
        caxton_admin::ClientError::Protocol { .. } => CommandError::Failed(error.to_string()),
    }
}

/// `answer` if it succeeded, else its error message as a failure.
pub(crate) fn expect_success(answer: Answer) -> Result<Answer, CommandError> {
    if answer.status.is_success() {
        return Ok(answer);
    }
    let said = answer.error_message();
    let said = if said.trim().is_empty() {
        "the endpoint answered with no message (is it a Caxton admin endpoint?)".to_owned()
    } else {
        said
    };
    let message = format!("{said} ({})", answer.status);
    if answer.status.is_client_error() {
        Err(CommandError::BadInput(message))
    } else {
        Err(CommandError::Failed(message))
    }
}

/// `GET path`, expecting success.
fn get(client: &AdminClient, path: &str) -> Result<Answer, CommandError> {
    call(client, Method::GET, path, "application/json", Vec::new())
}

fn call(
    client: &AdminClient,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer, CommandError> {
    client
        .call(method, path, content_type, body)
        .map_err(client_failure)
        .and_then(expect_success)
}

/// Percent-encode a query value or path segment.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// `engine agents ...`.
pub fn agents(selection: &ProfileSelection, command: AgentsCommand) -> Result<(), CommandError> {
    match command {
        AgentsCommand::Deploy {
            module,
            name,
            instances,
            memory,
            cpu_shares,
            max_execution_time,
            endpoint,
        } => {
            let source = std::fs::read(&module).map_err(|error| {
                CommandError::BadInput(format!("cannot read `{}`: {error}", module.display()))
            })?;
            let name = match name {
                Some(name) => name,
                None => module
                    .file_stem()
                    .and_then(|stem| stem.to_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        CommandError::BadInput("give the agent a name with --name".into())
                    })?,
            };
            let mut path = format!("/v1/agents?name={}&instances={instances}", encode(&name));
            for (key, value) in [
                ("memory", memory),
                ("cpu_shares", cpu_shares),
                ("max_execution_time", max_execution_time),
            ] {
                if let Some(value) = value {
                    path.push_str(&format!("&{key}={}", encode(&value)));
                }
            }
            let client = connect(selection, &endpoint)?;
            let answer = call(&client, Method::POST, &path, "application/wasm", source)?;
            let json = answer.json();
            emit(&format!(
                "deployed `{}`: {}, memory {}, cpu_shares {}, max_execution_time {} ({:.1} ms)\n",
                json["name"].as_str().unwrap_or(&name),
                counted(json["instances"].as_u64().unwrap_or(0), "instance"),
                json["limits"]["memory"].as_str().unwrap_or("?"),
                json["limits"]["cpu_shares"].as_str().unwrap_or("?"),
                json["limits"]["max_execution_time"].as_str().unwrap_or("?"),
                json["deploy_ms"].as_f64().unwrap_or(0.0),
            ))
        }
        AgentsCommand::List { json, endpoint } => {
            let client = connect(selection, &endpoint)?;
            let answer = get(&client, "/v1/agents")?;
            if json {
                return emit(&answer.text());
            }
            let body = answer.json();
            let mut table = format!(
                "{:<24} {:>9} {:>12} {:>9} {:>7} {:>9} {:>10} {:>12} {:>12}\n",
                "NAME",
                "INSTANCES",
                "HANDLED OK",
                "FAILURES",
                "TRAPS",
                "TIMEOUTS",
                "MEM FAULTS",
                "MEAN µs",
                "MAX µs"
            );
            for agent in body["agents"].as_array().into_iter().flatten() {
                table.push_str(&format!(
                    "{:<24} {:>9} {:>12} {:>9} {:>7} {:>9} {:>10} {:>12.2} {:>12.2}\n",
                    agent["name"].as_str().unwrap_or("?"),
                    agent["instances"].as_u64().unwrap_or(0),
                    agent["handled"].as_u64().unwrap_or(0),
                    agent["agent_failures"].as_u64().unwrap_or(0),
                    agent["traps"].as_u64().unwrap_or(0),
                    agent["execution_timeouts"].as_u64().unwrap_or(0),
                    agent["memory_faults"].as_u64().unwrap_or(0),
                    agent["mean_processing_us"].as_f64().unwrap_or(0.0),
                    agent["max_processing_us"].as_f64().unwrap_or(0.0),
                ));
            }
            let elsewhere = body["elsewhere"].as_array().cloned().unwrap_or_default();
            if !elsewhere.is_empty() {
                table.push_str(&format!(
                    "\non other nodes of the cluster:\n{:<24} {:>9}  {:<24} {}\n",
                    "NAME", "INSTANCES", "NODE", "ADDRESS"
                ));
                for agent in &elsewhere {
                    let down = if agent["node_down"].as_bool() == Some(true) {
                        " (declared down: sends answered caxton:node-down)"
                    } else {
                        ""
                    };
                    table.push_str(&format!(
                        "{:<24} {:>9}  {:<24} {}{down}\n",
                        agent["name"].as_str().unwrap_or("?"),
                        agent["instances"].as_u64().unwrap_or(0),
                        agent["node"].as_str().unwrap_or("?"),
                        agent["addr"].as_str().unwrap_or("?"),
                    ));
                }
            }
            emit(&table)
        }
        AgentsCommand::Scale {
            name,
            instances,
            endpoint,
        } => {
            let client = connect(selection, &endpoint)?;
            let answer = call(
                &client,
                Method::PUT,
                &format!("/v1/agents/{}/instances?count={instances}", encode(&name)),
                "application/json",
                Vec::new(),
            )?;
            let scaled = answer.json();
            emit(&format!(
                "scaled `{name}`: {} → {} instances\n",
                scaled["instances_before"], scaled["instances"]
            ))
        }
        AgentsCommand::Undeploy { name, endpoint } => {
            let client = connect(selection, &endpoint)?;
            call(
                &client,
                Method::DELETE,
                &format!("/v1/agents/{}", encode(&name)),
                "application/json",
                Vec::new(),
            )?;
            emit(&format!("undeployed `{name}`\n"))
        }
        // Local work: a project on disk, not the admin API.
        AgentsCommand::New { name, dir, sdk } => {
            crate::agent_project::new_project(&name, &dir, sdk.as_deref())
        }
        AgentsCommand::Build { dir, debug } => crate::agent_project::build_project(&dir, debug),
    }
}

/// What `engine send` sends.
pub struct Message<'a> {
    /// The agent's name.
    pub agent: &'a str,
    /// The content, or `-` for stdin.
    pub content: &'a str,
    /// The performative.
    pub performative: &'a str,
    /// How long to wait for the reply.
    pub timeout: &'a str,
    /// Store before acceptance.
    pub persistent: bool,
    /// Wait for the reply (else done once the node took it).
    pub wait_for_reply: bool,
    /// The priority class: a number, or a class's name; `None`, the node's
    /// default (`normal`).
    pub priority: Option<&'a str>,
}

/// `engine send AGENT CONTENT`.
pub fn send(
    selection: &ProfileSelection,
    endpoint: &Endpoint,
    message: Message<'_>,
) -> Result<(), CommandError> {
    let Message {
        agent,
        content,
        performative,
        timeout,
        persistent,
        wait_for_reply,
        priority,
    } = message;
    let known: Vec<String> = caxton_messaging::Performative::ALL
        .iter()
        .filter_map(|known| {
            serde_json::to_value(known)
                .ok()?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    if !known.iter().any(|known| known == performative) {
        return Err(CommandError::BadInput(format!(
            "--performative `{performative}`: use one of {}",
            known.join(", ")
        )));
    }
    // A number is a class number; anything else names a class, which the
    // node resolves against its own profile.
    let priority = match priority {
        None => serde_json::Value::Null,
        Some(priority) => {
            let digits = priority.strip_prefix('-').unwrap_or(priority);
            let looks_numeric =
                !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit());
            if looks_numeric {
                serde_json::json!(priority.parse::<u8>().map_err(|_| {
                    CommandError::BadInput(format!(
                        "--priority {priority}: a class number is 0 (the most urgent) to 255"
                    ))
                })?)
            } else {
                serde_json::json!(priority)
            }
        }
    };
    let timeout: caxton_profiles::HumanDuration = timeout
        .parse()
        .map_err(|error| CommandError::BadInput(format!("--timeout `{timeout}`: {error}")))?;
    let longest = caxton_admin::SEND_TIMEOUT_MAX;
    if timeout.get().as_millis() < 1 || timeout.get() > longest {
        return Err(CommandError::BadInput(format!(
            "--timeout {timeout}: a send waits 1ms to {}s for its reply",
            longest.as_secs()
        )));
    }
    // From stdin, any bytes: text as `content`, anything else (a binary
    // file) as `content_base64`, so it arrives as it was.
    let content = if content == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|error| CommandError::BadInput(format!("cannot read stdin: {error}")))?;
        match String::from_utf8(bytes) {
            Ok(text) => serde_json::json!({ "content": text }),
            Err(binary) => serde_json::json!({
                "content_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, binary.into_bytes()),
            }),
        }
    } else {
        serde_json::json!({ "content": content })
    };
    let mut body = serde_json::json!({
        "performative": performative,
        "timeout_ms": u64::try_from(timeout.get().as_millis()).unwrap_or(u64::MAX),
        "persistent": persistent,
        "wait_for_reply": wait_for_reply,
    });
    if !priority.is_null() {
        body["priority"] = priority;
    }
    if let (Some(body), serde_json::Value::Object(content)) = (body.as_object_mut(), content) {
        body.extend(content);
    }
    let client = connect(selection, endpoint)?;
    let answer = call(
        &client,
        Method::POST,
        &format!("/v1/agents/{}/messages", encode(agent)),
        "application/json",
        body.to_string().into_bytes(),
    )?;
    let reply = answer.json();
    if !wait_for_reply {
        let stored = reply["message_id"]
            .as_u64()
            .map_or(String::new(), |id| format!("; stored as message {id}"));
        return emit(&format!("accepted by the node{stored}\n"));
    }
    let performative = reply["performative"].as_str().unwrap_or("?");
    // Text as it is; bytes that are not printable text (not UTF-8, or with
    // control characters, such as counter's little-endian count) in base64,
    // so they neither vanish nor drive the terminal.
    let printable = |text: &&str| {
        !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    };
    let text = reply["content"].as_str().filter(printable).map_or_else(
        || format!("base64:{}", reply["content_base64"].as_str().unwrap_or("")),
        str::to_owned,
    );
    emit(&format!("{performative}: {text}\n"))?;
    caxton_bench::stderr_line!(
        "round trip {:.1} µs{}",
        reply["round_trip_us"].as_f64().unwrap_or(0.0),
        reply["message_id"]
            .as_u64()
            .map_or(String::new(), |id| format!("; stored as message {id}"))
    );
    if performative == "failure" {
        return Err(CommandError::Failed(failure_line(agent, &text)));
    }
    Ok(())
}

/// `engine hdr dump --output FILE`.
pub fn hdr_dump(
    selection: &ProfileSelection,
    endpoint: &Endpoint,
    output: &Path,
) -> Result<(), CommandError> {
    // Like every command that writes a file: refused before it asks.
    crate::profiling::check_writable(output)?;
    let client = connect(selection, endpoint)?;
    let answer = call(&client, Method::GET, "/v1/hdr", "text/plain", Vec::new())?;
    debug_assert_eq!(answer.status, StatusCode::OK);
    std::fs::write(output, &answer.body).map_err(|error| {
        CommandError::Failed(format!("cannot write `{}`: {error}", output.display()))
    })?;
    emit(&format!(
        "wrote {} ({} bytes); read it with `engine hdr report {}`\n",
        output.display(),
        answer.body.len(),
        output.display()
    ))
}

/// `engine cluster members|status|init-certs`.
pub fn cluster(selection: &ProfileSelection, command: ClusterCommand) -> Result<(), CommandError> {
    let (json, endpoint, members) = match command {
        ClusterCommand::InitCerts {
            directory,
            nodes,
            replace_ca,
        } => {
            let (ca, written) = caxton_cluster::tls::init_certs(&directory, &nodes, replace_ca)
                .map_err(|error| CommandError::BadInput(error.to_string()))?;
            let mut text = format!("CA: {}\n", ca.display());
            for files in &written {
                text.push_str(&format!(
                    "{}: --set coordination.cluster.node_name={} --set coordination.cluster.tls.ca_file={} --set coordination.cluster.tls.cert_file={} --set coordination.cluster.tls.key_file={}\n",
                    files.name,
                    files.name,
                    ca.display(),
                    files.cert.display(),
                    files.key.display()
                ));
            }
            return emit(&text);
        }
        ClusterCommand::Simulate(args) => {
            return crate::commands::simulate_cluster(selection, args);
        }
        ClusterCommand::AnalyzeGossip {
            window,
            from,
            endpoint,
        } => {
            return analyze_gossip(selection, &window, from.as_deref(), &endpoint);
        }
        ClusterCommand::Members { json, endpoint } => (json, endpoint, true),
        ClusterCommand::Status { json, endpoint } => (json, endpoint, false),
    };
    let client = connect(selection, &endpoint)?;
    let answer = get(&client, "/v1/cluster")?;
    if json {
        return emit(&answer.text());
    }
    let body = answer.json();
    if members {
        let mut table = format!(
            "{:<24} {:<22} {:<8} {:>11} {:>12}\n",
            "NAME", "ADDRESS", "STATE", "INCARNATION", "LAST HEARD"
        );
        for member in body["members"].as_array().into_iter().flatten() {
            let heard = member["last_heard"]
                .as_object()
                .map(|heard| {
                    let seconds = heard["secs"].as_f64().unwrap_or(0.0)
                        + heard["nanos"].as_f64().unwrap_or(0.0) / 1e9;
                    format!("{:.1}s ago", seconds)
                })
                .unwrap_or_else(|| "never".into());
            table.push_str(&format!(
                "{:<24} {:<22} {:<8} {:>11} {:>12}\n",
                member["name"].as_str().unwrap_or("?"),
                member["addr"].as_str().unwrap_or("?"),
                member["state"].as_str().unwrap_or("?"),
                member["incarnation"].as_u64().unwrap_or(0),
                heard
            ));
        }
        // Alone: say why, rather than print a header over nothing.
        if body["members"].as_array().is_none_or(Vec::is_empty) {
            let seeds: Vec<&str> = body["seeds"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|seed| seed.as_str())
                .collect();
            let node = format!(
                "{} at {}",
                body["node"]["name"].as_str().unwrap_or("?"),
                body["listen"].as_str().unwrap_or("?")
            );
            table.push_str(&if seeds.is_empty() {
                format!("(no other member yet: {node} has no seeds; others join through it)\n")
            } else {
                format!(
                    "(no other member yet: {node} joins through {}; {} rounds of joins unanswered: check the seeds run and that the address is their cluster port)\n",
                    seeds.join(", "),
                    body["unanswered_joins"].as_u64().unwrap_or(0)
                )
            });
        }
        return emit(&table);
    }
    let counts = &body["counts"];
    let membership = &body["membership"];
    let transport = &body["transport_counts"];
    let convergence = &body["convergence"];
    let lanes = &body["lanes"];
    let lanes = format!(
        "message lanes {} open ({} idle); opened {}, closed: idle_timeout {}, max_idle {}, max_lifetime {}, peer gone {}, broken {}",
        lanes["open"], lanes["idle"], lanes["opened"], lanes["closed_idle"], lanes["closed_max_idle"],
        lanes["rotated"], lanes["closed_peer_gone"], lanes["broken"],
    );
    emit(&format!(
        "node {} at {} ({}, {})\nmembers: {} alive, {} suspect, {} down (itself excluded)\nsuspicions raised {}, refuted {}; members declared down {}; rejoins {}\nSWIM frames in {} ({} bytes), out {} ({} bytes); dropped: truncated {}, oversized {}, corrupt {}, version {}, replayed {}, invalid {}, transport {}\nconnections {}, handshakes refused {} by this node, {} by peers\n{lanes}\nsuspicion timeout {} ms; convergence: {} arrivals, P50 {:.3}s, P99 {:.3}s\n",
        body["node"]["name"].as_str().unwrap_or("?"),
        body["node"]["addr"].as_str().unwrap_or("?"),
        body["transport"].as_str().unwrap_or("?"),
        if body["authenticated"].as_bool().unwrap_or(false) { "mutual TLS" } else { "loopback, unauthenticated" },
        counts["alive"], counts["suspect"], counts["down"],
        membership["suspicions_raised"], membership["suspicions_refuted"], membership["declared_down"], membership["renewals"],
        membership["frames_in"], membership["bytes_in"], membership["frames_out"], membership["bytes_out"],
        membership["dropped_truncated"], membership["dropped_oversized"], membership["dropped_corrupt"],
        membership["dropped_version"], membership["dropped_replayed"], membership["dropped_invalid"],
        transport["frames_dropped"],
        transport["connections"],
        transport["handshakes_refused"].as_u64().unwrap_or(0).saturating_sub(transport["handshakes_refused_by_peer"].as_u64().unwrap_or(0)),
        transport["handshakes_refused_by_peer"].as_u64().unwrap_or(0),
        body["suspicion_timeout_ms"],
        convergence["count"], convergence["p50_seconds"].as_f64().unwrap_or(0.0), convergence["p99_seconds"].as_f64().unwrap_or(0.0),
    ))
}

fn cluster_snapshot(
    client: &AdminClient,
) -> Result<caxton_cluster::transport::ClusterSnapshot, CommandError> {
    let answer = call(
        client,
        Method::GET,
        "/v1/cluster",
        "application/json",
        Vec::new(),
    )?;
    serde_json::from_slice(answer.text().as_bytes()).map_err(|error| {
        CommandError::Failed(format!(
            "the engine's /v1/cluster answer is not a cluster view: {error}"
        ))
    })
}

/// `engine cluster analyze-gossip`.
fn analyze_gossip(
    selection: &ProfileSelection,
    window: &str,
    from: Option<&Path>,
    endpoint: &Endpoint,
) -> Result<(), CommandError> {
    if let Some(directory) = from {
        let path = directory.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|error| CommandError::BadInput(format!("{}: {error}", path.display())))?;
        let summary: caxton_bench::gossip::GossipSummary =
            serde_json::from_str(&text).map_err(|error| {
                CommandError::BadInput(format!(
                    "{}: not a simulation summary: {error}",
                    path.display()
                ))
            })?;
        let advice = caxton_bench::gossip::advise(&summary.facts());
        return emit(&format!(
            "{}\nadvice:\n{}\n",
            caxton_bench::gossip::render(&summary),
            advice
                .iter()
                .map(|line| format!("- {line}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let window = humantime::parse_duration(window)
        .map_err(|error| CommandError::BadInput(format!("--window `{window}`: {error}")))?;
    if window < std::time::Duration::from_millis(100)
        || window > std::time::Duration::from_secs(3600)
    {
        return Err(CommandError::BadInput(
            "--window must be 100ms to 1h".into(),
        ));
    }
    let client = connect(selection, endpoint)?;
    let first = cluster_snapshot(&client)?;
    caxton_bench::stderr_line!(
        "watching {} for {}...",
        first.node.name,
        humantime::format_duration(window)
    );
    std::thread::sleep(window);
    let second = cluster_snapshot(&client)?;
    let seconds = window.as_secs_f64();
    let rate = |after: u64, before: u64| after.saturating_sub(before) as f64 / seconds;
    let mut table = format!(
        "{:<24} {:<8} {:>10} {:>10} {:>10} {:>10} {:>6} {:>9}\n",
        "MEMBER", "STATE", "FRAMES IN/s", "OUT/s", "B IN/s", "B OUT/s", "DOWNS", "SUSPECTED"
    );
    let mut flapping = Vec::new();
    for member in &second.members {
        let earlier = first.members.iter().find(|old| old.addr == member.addr);
        let before = earlier.map(|old| old.traffic).unwrap_or_default();
        let downs_before = earlier.map_or(0, |old| old.downs);
        table.push_str(&format!(
            "{:<24} {:<8} {:>10.1} {:>10.1} {:>10.0} {:>10.0} {:>6} {:>9}\n",
            member.name,
            format!("{:?}", member.state).to_lowercase(),
            rate(member.traffic.frames_in, before.frames_in),
            rate(member.traffic.frames_out, before.frames_out),
            rate(member.traffic.bytes_in, before.bytes_in),
            rate(member.traffic.bytes_out, before.bytes_out),
            member.downs,
            member.suspicions
        ));
        // Flapping is now, not history: downs within the window only (a
        // node restarted an hour ago was down once then, and is fine).
        if member.downs.saturating_sub(downs_before) >= 2 {
            flapping.push(member.name.clone());
        }
    }
    let (a, b) = (&first.membership, &second.membership);
    let rejected = |m: &caxton_cluster::MembershipCounters| {
        m.dropped_truncated
            + m.dropped_oversized
            + m.dropped_corrupt
            + m.dropped_version
            + m.dropped_replayed
            + m.dropped_invalid
    };
    let alone = second.counts.alive + second.counts.suspect == 0;
    let facts = caxton_bench::gossip::GossipFacts {
        nodes: (second.counts.alive + second.counts.suspect) as usize + 1,
        bytes_per_node_second: rate(b.bytes_out, a.bytes_out),
        packets_per_node_second: rate(b.frames_out, a.frames_out),
        // Judged only when members arrived within the window: the P99 is of
        // every arrival since start, and old ones (a restart an hour ago)
        // say nothing of the gossip now.
        convergence_p99: (second.convergence.count > first.convergence.count)
            .then_some(second.convergence.p99_seconds),
        down: second
            .members
            .iter()
            .filter(|member| member.state == caxton_cluster::membership::MemberState::Down)
            .map(|member| member.name.clone())
            .collect(),
        unanswered_seeds: (alone && !second.seeds.is_empty() && second.unanswered_joins > 0).then(
            || {
                (
                    second.seeds.iter().map(ToString::to_string).collect(),
                    second.unanswered_joins,
                )
            },
        ),
        false_suspicions_per_node_hour: rate(b.suspicions_refuted, a.suspicions_refuted) * 3600.0,
        flapping,
        frames_rejected: rejected(b).saturating_sub(rejected(a)),
        handshakes_refused: second
            .transport_counts
            .handshakes_refused
            .saturating_sub(first.transport_counts.handshakes_refused),
        handshakes_refused_by_peer: second
            .transport_counts
            .handshakes_refused_by_peer
            .saturating_sub(first.transport_counts.handshakes_refused_by_peer),
        swim: second.swim,
    };
    let advice = caxton_bench::gossip::advise(&facts);
    emit(&format!(
        "node {} ({} members alive, {} suspect, {} down), over {}:\n{}\n(rates over the window; DOWNS and SUSPECTED since this node started)\nthis node: {:.1} frames/s and {:.0} B/s out; suspicions raised {}, refuted {}; members declared down {}; rejoins {}; convergence {}\nadvice:\n{}\n",
        second.node.name,
        second.counts.alive,
        second.counts.suspect,
        second.counts.down,
        humantime::format_duration(window),
        table.trim_end(),
        facts.packets_per_node_second,
        facts.bytes_per_node_second,
        b.suspicions_raised.saturating_sub(a.suspicions_raised),
        b.suspicions_refuted.saturating_sub(a.suspicions_refuted),
        b.declared_down.saturating_sub(a.declared_down),
        b.renewals.saturating_sub(a.renewals),
        if second.convergence.count > 0 {
            format!("P50 {:.3}s, P99 {:.3}s over {} arrivals", second.convergence.p50_seconds, second.convergence.p99_seconds, second.convergence.count)
        } else {
            "not timed yet (no member arrived after this node)".into()
        },
        advice.iter().map(|line| format!("- {line}")).collect::<Vec<_>>().join("\n")
    ))
}

/// Who a `failure` came from, in words: the agent (its own answer, or a
/// fault of its handler that the engine answered for), or the node (a
/// deadline, a refusal, a shutdown, an agent gone), which the agent never saw.
fn failure_line(agent: &str, text: &str) -> String {
    const HANDLER_FAULTS: [&str; 4] = [
        "caxton:agent-failed",
        "caxton:execution-time",
        "caxton:memory-limit",
        "caxton:trap",
    ];
    let from_the_node =
        text.starts_with("caxton:") && !HANDLER_FAULTS.iter().any(|fault| text.starts_with(fault));
    if from_the_node {
        format!("the node answered failure for the message to `{agent}`: {text}")
    } else {
        format!("`{agent}` answered failure: {text}")
    }
}

/// `count` `thing`s, in words: `1 instance`, `4 instances`.
pub(crate) fn counted(count: u64, thing: &str) -> String {
    if count == 1 {
        format!("1 {thing}")
    } else {
        format!("{count} {thing}s")
    }
}

#[cfg(test)]
mod failure_tests {
    use super::failure_line;

    #[test]
    fn a_failure_names_who_answered_it() {
        assert_eq!(
            failure_line("loop", "caxton:shutting-down"),
            "the node answered failure for the message to `loop`: caxton:shutting-down"
        );
        assert_eq!(
            failure_line("trap", "caxton:trap:wasm trap: unreachable"),
            "`trap` answered failure: caxton:trap:wasm trap: unreachable"
        );
        assert_eq!(
            failure_line("echo", "no such key"),
            "`echo` answered failure: no such key"
        );
    }
}

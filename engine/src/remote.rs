//! Commands that drive a running engine through its admin endpoint:
//! `engine agents deploy|list|undeploy`, `engine send`, `engine hdr dump`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use caxton_admin::{AdminClient, Answer};
use hyper::{Method, StatusCode};

use crate::cli::{AgentsCommand, Endpoint, ProfileSelection};
use crate::commands::{emit, load_profile, CommandError};

/// The client for `endpoint`: its `--admin` and `--token`, else the profile's.
fn connect(selection: &ProfileSelection, endpoint: &Endpoint) -> Result<AdminClient, CommandError> {
    let loaded = load_profile(selection)?;
    let address: SocketAddr = match &endpoint.admin {
        Some(text) => text
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| {
                CommandError::BadInput(format!("--admin `{text}` is not a HOST:PORT address"))
            })?,
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

/// `answer` if it succeeded, else its error message as a failure.
fn expect_success(answer: Answer) -> Result<Answer, CommandError> {
    if answer.status.is_success() {
        return Ok(answer);
    }
    let message = format!("{} ({})", answer.error_message(), answer.status);
    if answer.status.is_client_error() {
        Err(CommandError::BadInput(message))
    } else {
        Err(CommandError::Failed(message))
    }
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
        .map_err(|error| CommandError::Failed(error.to_string()))
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
                "deployed `{}`: {} instances, memory {}, cpu_shares {}, max_execution_time {} ({:.1} ms)\n",
                json["name"].as_str().unwrap_or(&name),
                json["instances"].as_u64().unwrap_or(0),
                json["limits"]["memory"].as_str().unwrap_or("?"),
                json["limits"]["cpu_shares"].as_str().unwrap_or("?"),
                json["limits"]["max_execution_time"].as_str().unwrap_or("?"),
                json["deploy_ms"].as_f64().unwrap_or(0.0),
            ))
        }
        AgentsCommand::List { json, endpoint } => {
            let client = connect(selection, &endpoint)?;
            let answer = call(
                &client,
                Method::GET,
                "/v1/agents",
                "application/json",
                Vec::new(),
            )?;
            if json {
                return emit(&answer.text());
            }
            let body = answer.json();
            let mut table = format!(
                "{:<24} {:>9} {:>12} {:>9} {:>7} {:>9} {:>12} {:>12}\n",
                "NAME",
                "INSTANCES",
                "HANDLED",
                "FAILURES",
                "TRAPS",
                "TIMEOUTS",
                "MEAN µs",
                "MAX µs"
            );
            for agent in body["agents"].as_array().into_iter().flatten() {
                table.push_str(&format!(
                    "{:<24} {:>9} {:>12} {:>9} {:>7} {:>9} {:>12.2} {:>12.2}\n",
                    agent["name"].as_str().unwrap_or("?"),
                    agent["instances"].as_u64().unwrap_or(0),
                    agent["handled"].as_u64().unwrap_or(0),
                    agent["agent_failures"].as_u64().unwrap_or(0),
                    agent["traps"].as_u64().unwrap_or(0),
                    agent["execution_timeouts"].as_u64().unwrap_or(0),
                    agent["mean_processing_us"].as_f64().unwrap_or(0.0),
                    agent["max_processing_us"].as_f64().unwrap_or(0.0),
                ));
            }
            emit(&table)
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
    } = message;
    let timeout: caxton_profiles::HumanDuration = timeout
        .parse()
        .map_err(|error| CommandError::BadInput(format!("--timeout `{timeout}`: {error}")))?;
    let content = if content == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|error| CommandError::BadInput(format!("cannot read stdin: {error}")))?;
        text
    } else {
        content.to_owned()
    };
    let body = serde_json::json!({
        "content": content,
        "performative": performative,
        "timeout_ms": u64::try_from(timeout.get().as_millis()).unwrap_or(u64::MAX),
        "persistent": persistent,
    });
    let client = connect(selection, endpoint)?;
    let answer = call(
        &client,
        Method::POST,
        &format!("/v1/agents/{}/messages", encode(agent)),
        "application/json",
        body.to_string().into_bytes(),
    )?;
    let reply = answer.json();
    let performative = reply["performative"].as_str().unwrap_or("?");
    let text = reply["content"].as_str().map_or_else(
        || format!("base64:{}", reply["content_base64"].as_str().unwrap_or("")),
        str::to_owned,
    );
    emit(&format!("{performative}: {text}\n"))?;
    eprintln!(
        "round trip {:.1} µs{}",
        reply["round_trip_us"].as_f64().unwrap_or(0.0),
        reply["message_id"]
            .as_u64()
            .map_or(String::new(), |id| format!("; stored as message {id}"))
    );
    if performative == "failure" {
        return Err(CommandError::Failed(format!(
            "`{agent}` answered failure: {text}"
        )));
    }
    Ok(())
}

/// `engine hdr dump --output FILE`.
pub fn hdr_dump(
    selection: &ProfileSelection,
    endpoint: &Endpoint,
    output: &Path,
) -> Result<(), CommandError> {
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

//! What a request asks for, read from its method, path, query and body
//! before anything of the node is touched: every check that needs no node
//! (names, parameters, the message JSON) happens here, so the whole of the
//! endpoint's parsing is one pure function the fuzzer can drive
//! (`caxton-fuzz`'s `admin_request`). [`crate::api`] carries requests out.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use caxton_messaging::{Performative, PriorityClass};
use caxton_profiles::{ByteSize, CpuShares, HumanDuration};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};

use crate::api::{
    bad_request, error, DEPLOY_INSTANCES_MAX, SEND_TIMEOUT_DEFAULT, SEND_TIMEOUT_MAX,
};
use crate::profiling::HeapStep;
use crate::server::Reply;

/// A request the endpoint understood.
#[derive(Debug)]
pub enum Request {
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/node`.
    Node,
    /// `GET /v1/agents` (all) or `/v1/agents/{name}`.
    Agents(Option<String>),
    /// `POST /v1/agents?...` with the module as the body.
    Deploy(Deploy),
    /// `DELETE /v1/agents/{name}`.
    Undeploy(String),
    /// `PUT /v1/agents/{name}/instances?count=N`.
    Scale(String, u16),
    /// `POST /v1/agents/{name}/messages`.
    Send(Message),
    /// `GET /v1/hdr`.
    HdrLog,
    /// `POST /v1/hdr/dump`.
    HdrDump,
    /// `GET /v1/cluster`.
    Cluster,
    /// `/v1/profile/trace`: start sampling N messages (`POST`), collect
    /// (`GET`, `None`), or stop (`DELETE`, `Some(0)`).
    Trace(Option<u32>),
    /// `POST /v1/profile/cpu?frequency=HZ`.
    CpuStart(u32),
    /// `DELETE /v1/profile/cpu`.
    CpuStop,
    /// `/v1/profile/memory`.
    Heap(HeapStep),
}

/// A deploy's parameters, checked.
#[derive(Debug)]
pub struct Deploy {
    /// The agent's name (a valid one).
    pub name: String,
    /// Instances, 1 to [`DEPLOY_INSTANCES_MAX`].
    pub instances: u16,
    /// Memory limit, when given.
    pub memory: Option<ByteSize>,
    /// CPU share, when given (above 0).
    pub cpu_shares: Option<CpuShares>,
    /// Handler time limit, when given (above 0).
    pub max_execution_time: Option<HumanDuration>,
    /// The module (not empty).
    pub module: Bytes,
}

/// A message to send, checked.
#[derive(Debug)]
pub struct Message {
    /// To whom.
    pub agent: String,
    /// Its content.
    pub content: Vec<u8>,
    /// Its performative.
    pub performative: Performative,
    /// How long to wait (1 ms to [`SEND_TIMEOUT_MAX`]).
    pub timeout: Duration,
    /// Its priority class, by number or by name.
    pub priority: Priority,
    /// Its conversation.
    pub conversation_id: u64,
    /// Store it before it is accepted.
    pub persistent: bool,
    /// Wait for the agent's reply.
    pub wait_for_reply: bool,
}

/// A send's priority class as the caller gave it: a class number, or the
/// name of one of the profile's `messaging.priority_routing.queues`,
/// resolved by the endpoint that knows the profile.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Priority {
    /// The class number: 0 is the most urgent class.
    Number(u8),
    /// A class's `name`.
    Name(String),
    /// None given: the class named `normal`, or where the profile names
    /// none so, its least urgent class. A send that says nothing of its
    /// urgency is not urgent: in the most urgent class it would take that
    /// class's deadline (10 ms in the performance tuning guide's classes).
    #[default]
    Unmarked,
}

impl<'de> serde::Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // By hand, for an error that says what a priority may be (serde's
        // untagged enums only say that nothing matched).
        struct Class;
        impl serde::de::Visitor<'_> for Class {
            type Value = Priority;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(
                    "a priority class number (0 to 255, 0 the most urgent) or a class name",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Priority, E> {
                u8::try_from(number)
                    .map(Priority::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(number), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Priority, E> {
                u8::try_from(number)
                    .map(Priority::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(number), &self))
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Priority, E> {
                Ok(Priority::Name(name.to_owned()))
            }
        }
        deserializer.deserialize_any(Class)
    }
}

impl Priority {
    /// The class: a number as given, a name looked up in `classes` (the
    /// class names, most urgent first). An unknown name is a 400 that lists
    /// the known ones.
    pub fn resolve(&self, classes: &[String]) -> Result<PriorityClass, Reply> {
        match self {
            Self::Number(number) => Ok(PriorityClass(*number)),
            Self::Unmarked => {
                let class = classes
                    .iter()
                    .position(|class| class == "normal")
                    .unwrap_or(classes.len().saturating_sub(1));
                Ok(PriorityClass(u8::try_from(class).unwrap_or(u8::MAX)))
            }
            Self::Name(name) => classes
                .iter()
                .position(|class| class == name)
                .and_then(|number| u8::try_from(number).ok())
                .map(PriorityClass)
                .ok_or_else(|| {
                    bad_request(
                        "unknown-priority",
                        format!(
                            "no priority class `{name}`; this node's classes, most urgent first: {} (messaging.priority_routing.queues)",
                            classes.join(", ")
                        ),
                    )
                }),
        }
    }
}

/// The body of `POST /v1/agents/{name}/messages`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// UTF-8 content.
    content: Option<String>,
    /// Binary content, base64.
    content_base64: Option<String>,
    /// FIPA performative, kebab-case; `request` by default.
    #[serde(default = "request_performative")]
    performative: Performative,
    /// How long to wait for the reply.
    timeout_ms: Option<u64>,
    /// Priority class: its number (0: most urgent) or its name.
    #[serde(default)]
    priority: Priority,
    /// Conversation id.
    #[serde(default)]
    conversation_id: u64,
    /// Store it before it is accepted, so it is handled even if the node
    /// crashes first (needs `messaging.enable_persistence`).
    #[serde(default)]
    persistent: bool,
    /// Wait for the agent's reply (default); with `false` the answer is
    /// `202 Accepted` once the node has accepted the message (stored, for a
    /// persistent one), and the reply is not awaited.
    #[serde(default = "yes")]
    wait_for_reply: bool,
}

fn yes() -> bool {
    true
}

fn request_performative() -> Performative {
    Performative::Request
}

/// The instance count in query parameter `key` (required), 1 to
/// [`DEPLOY_INSTANCES_MAX`].
fn instance_count(query: &BTreeMap<String, String>, key: &str) -> Result<u16, Reply> {
    // Read wide, so that a number past any limit gets the limit, not a
    // word about integer types.
    let Some(count) = parse_param::<u64>(query, key)? else {
        return Err(bad_request("bad-parameter", format!("`{key}` is required")));
    };
    if count == 0 || count > u64::from(DEPLOY_INSTANCES_MAX) {
        return Err(bad_request(
            "bad-parameter",
            format!("`{key}={count}`: use 1 to {DEPLOY_INSTANCES_MAX}"),
        ));
    }
    Ok(u16::try_from(count).unwrap_or(DEPLOY_INSTANCES_MAX))
}

/// Most messages one trace request may sample per shard.
pub const TRACE_MESSAGES_MAX: u32 = 100_000;

/// Read a request; a refusal is the 4xx answer that says what was wrong.
pub fn parse(method: &Method, path: &str, query: &str, body: Bytes) -> Result<Request, Reply> {
    let query = parse_query(query);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    Ok(match (method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => Request::Metrics,
        (&Method::GET, ["v1", "node"]) => Request::Node,
        (&Method::GET, ["v1", "agents"]) => Request::Agents(None),
        (&Method::POST, ["v1", "agents"]) => Request::Deploy(deploy(&query, body)?),
        (&Method::GET, ["v1", "agents", name]) => Request::Agents(Some(agent_name(name)?)),
        (&Method::DELETE, ["v1", "agents", name]) => Request::Undeploy(agent_name(name)?),
        (&Method::PUT, ["v1", "agents", name, "instances"]) => {
            Request::Scale(agent_name(name)?, instance_count(&query, "count")?)
        }
        (&Method::POST, ["v1", "agents", name, "messages"]) => {
            Request::Send(message(agent_name(name)?, &body)?)
        }
        (&Method::GET, ["v1", "hdr"]) => Request::HdrLog,
        (&Method::POST, ["v1", "hdr", "dump"]) => Request::HdrDump,
        (&Method::GET, ["v1", "cluster"]) => Request::Cluster,
        (&Method::POST, ["v1", "profile", "trace"]) => {
            Request::Trace(Some(trace_messages(&query)?))
        }
        (&Method::GET, ["v1", "profile", "trace"]) => Request::Trace(None),
        (&Method::DELETE, ["v1", "profile", "trace"]) => Request::Trace(Some(0)),
        (&Method::POST, ["v1", "profile", "cpu"]) => Request::CpuStart(cpu_frequency(&query)?),
        (&Method::DELETE, ["v1", "profile", "cpu"]) => Request::CpuStop,
        (&Method::POST, ["v1", "profile", "memory"]) => Request::Heap(HeapStep::Start),
        (&Method::GET, ["v1", "profile", "memory"]) => Request::Heap(HeapStep::Dump),
        (&Method::DELETE, ["v1", "profile", "memory"]) => Request::Heap(HeapStep::Stop),
        (_, ["v1", "cluster"] | ["v1", "profile", "trace" | "cpu" | "memory"])
        | (_, ["metrics"] | ["v1", "node" | "agents" | "hdr"] | ["v1", "agents", _])
        | (_, ["v1", "agents", _, "messages" | "instances"] | ["v1", "hdr", "dump"]) => {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{method} is not allowed on {path}"),
            ))
        }
        _ => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no route {path}; the API has /v1/node, /v1/agents[/NAME[/messages|/instances]], /v1/cluster, /v1/hdr[/dump], /v1/profile/cpu|memory|trace and /metrics (see docs/observability.md)"),
            ))
        }
    })
}

/// Agent names follow the engine's one rule (`caxton_profiles::check_agent_name`).
pub(crate) fn check_name(name: &str) -> Result<(), Reply> {
    caxton_profiles::check_agent_name(name).map_err(|error| bad_request("bad-name", error))
}

/// The agent name in a path segment, decoded: one that breaks the naming
/// rule is refused as such, not looked up and reported missing.
fn agent_name(segment: &str) -> Result<String, Reply> {
    let name = decode(segment);
    check_name(&name)?;
    Ok(name)
}

fn parse_param<T: std::str::FromStr>(
    query: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>, Reply>
where
    T::Err: std::fmt::Display,
{
    query
        .get(key)
        .map(|text| {
            text.parse::<T>().map_err(|failure| {
                bad_request("bad-parameter", format!("`{key}={text}`: {failure}"))
            })
        })
        .transpose()
}

fn deploy(query: &BTreeMap<String, String>, module: Bytes) -> Result<Deploy, Reply> {
    const KNOWN: [&str; 5] = [
        "name",
        "instances",
        "memory",
        "cpu_shares",
        "max_execution_time",
    ];
    if let Some(unknown) = query.keys().find(|key| !KNOWN.contains(&key.as_str())) {
        return Err(bad_request(
            "bad-parameter",
            format!("unknown parameter `{unknown}`; known: {}", KNOWN.join(", ")),
        ));
    }
    let name = query
        .get("name")
        .cloned()
        .ok_or_else(|| bad_request("bad-parameter", "`name` is required".into()))?;
    check_name(&name)?;
    let instances = match query.get("instances") {
        Some(_) => instance_count(query, "instances")?,
        None => 1,
    };
    let memory = parse_param::<ByteSize>(query, "memory")?;
    if memory.is_some_and(|memory| memory.0 == 0) {
        return Err(bad_request(
            "bad-parameter",
            "`memory` must be above 0".into(),
        ));
    }
    let cpu_shares = parse_param::<CpuShares>(query, "cpu_shares")?;
    if cpu_shares.is_some_and(|shares| shares.millicores() == 0) {
        return Err(bad_request(
            "bad-parameter",
            "`cpu_shares` must be above 0".into(),
        ));
    }
    let max_execution_time = parse_param::<HumanDuration>(query, "max_execution_time")?;
    if max_execution_time.is_some_and(|time| time.get().is_zero()) {
        return Err(bad_request(
            "bad-parameter",
            "`max_execution_time` must be above 0".into(),
        ));
    }
    if module.is_empty() {
        return Err(bad_request(
            "empty-module",
            "the request body must be the agent's .wasm or .wat module".into(),
        ));
    }
    Ok(Deploy {
        name,
        instances,
        memory,
        cpu_shares,
        max_execution_time,
        module,
    })
}

fn message(agent: String, body: &[u8]) -> Result<Message, Reply> {
    let request: SendBody = serde_json::from_slice(body).map_err(|failure| {
        // Not an object at all: serde would name the struct it expected.
        let object = body
            .iter()
            .find(|byte| !byte.is_ascii_whitespace())
            .is_some_and(|byte| *byte == b'{');
        if object || failure.is_syntax() || failure.is_eof() {
            bad_request("bad-json", format!("the message is not valid: {failure}"))
        } else {
            bad_request(
                "bad-json",
                r#"the message must be a JSON object, such as {"content": "text"}"#.into(),
            )
        }
    })?;
    let content = match (request.content, request.content_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|failure| bad_request("bad-json", format!("`content_base64`: {failure}")))?,
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => {
            return Err(bad_request(
                "bad-json",
                "give `content` or `content_base64`, not both".into(),
            ))
        }
    };
    // What an agent could neither send on nor forward (a host call refuses
    // more with TOO_LARGE), nor another node take in one frame.
    if content.len() > caxton_shards::CONTENT_BYTES_MAX {
        return Err(crate::api::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "content-too-large",
            format!(
                "the content is {} bytes, over the {} one message carries (docs/agent-abi.md: agents are held to it too)",
                content.len(),
                caxton_shards::CONTENT_BYTES_MAX
            ),
        ));
    }
    let timeout = request
        .timeout_ms
        .map_or(SEND_TIMEOUT_DEFAULT, Duration::from_millis);
    if timeout.is_zero() || timeout > SEND_TIMEOUT_MAX {
        return Err(bad_request(
            "bad-json",
            format!("`timeout_ms` must be 1 to {}", SEND_TIMEOUT_MAX.as_millis()),
        ));
    }
    Ok(Message {
        agent,
        content,
        performative: request.performative,
        timeout,
        priority: request.priority,
        conversation_id: request.conversation_id,
        persistent: request.persistent,
        wait_for_reply: request.wait_for_reply,
    })
}

/// The messages count of `POST /v1/profile/trace?messages=N`.
fn trace_messages(query: &BTreeMap<String, String>) -> Result<u32, Reply> {
    let text = query.get("messages").ok_or_else(|| {
        bad_request(
            "missing-messages",
            "say how many messages to sample: ?messages=N".into(),
        )
    })?;
    match text.parse::<u32>() {
        Ok(messages) if (1..=TRACE_MESSAGES_MAX).contains(&messages) => Ok(messages),
        _ => Err(bad_request(
            "bad-messages",
            format!("messages `{text}` must be a number from 1 to {TRACE_MESSAGES_MAX}"),
        )),
    }
}

/// The frequency of `POST /v1/profile/cpu?frequency=HZ`.
fn cpu_frequency(query: &BTreeMap<String, String>) -> Result<u32, Reply> {
    use crate::cpu_profile::{CPU_PROFILE_FREQUENCY, CPU_PROFILE_FREQUENCY_MAX};
    match query.get("frequency") {
        None => Ok(CPU_PROFILE_FREQUENCY),
        Some(text) => match text.parse::<u32>() {
            Ok(hz) if (1..=CPU_PROFILE_FREQUENCY_MAX).contains(&hz) => Ok(hz),
            _ => Err(bad_request(
                "bad-frequency",
                format!("frequency `{text}` must be from 1 to {CPU_PROFILE_FREQUENCY_MAX} samples per second"),
            )),
        },
    }
}

/// `a=1&b=two` into a map, percent-decoded.
fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Percent-decoding (`%20`, and `+` as a space in queries).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        index += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name no agent can have is refused as a name, on every route that takes one.
    #[test]
    fn a_name_against_the_rule_is_a_bad_name_not_a_missing_agent() {
        for (method, path) in [
            (Method::GET, "/v1/agents/bad%20name!"),
            (Method::DELETE, "/v1/agents/bad%20name!"),
            (Method::PUT, "/v1/agents/bad%20name!/instances"),
            (Method::POST, "/v1/agents/bad%20name!/messages"),
        ] {
            let Err(refused) = parse(&method, path, "count=1", Bytes::from("{}")) else {
                panic!("{method} {path} accepted")
            };
            assert_eq!(refused.status().as_u16(), 400, "{method} {path}");
        }
        assert!(parse(&Method::GET, "/v1/agents/echo-1.v2_x", "", Bytes::new()).is_ok());
    }

    /// Deploy parameters past their bounds say the bound, whatever their size.
    #[test]
    fn deploy_parameters_out_of_range_name_their_range() {
        for (query, says) in [
            ("name=x&instances=100000", "use 1 to 4096"),
            (
                "name=x&instances=99999999999999999999",
                "`instances=99999999999999999999`",
            ),
            ("name=x&memory=0", "`memory` must be above 0"),
        ] {
            let Err(refused) = parse(&Method::POST, "/v1/agents", query, Bytes::from("(module)"))
            else {
                panic!("{query} accepted")
            };
            assert_eq!(refused.status().as_u16(), 400, "{query}");
            let body = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
                .block_on(http_body_util::BodyExt::collect(refused.into_body()))
                .expect("a body")
                .to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            assert!(body.contains(says), "{query}: {body}");
        }
    }

    #[test]
    fn queries_decode() {
        let query = parse_query("name=my%2Dagent&instances=4&memory=16MB&x=a+b&bad=%zz&end=%4");
        assert_eq!(query["name"], "my-agent");
        assert_eq!(query["instances"], "4");
        assert_eq!(query["x"], "a b");
        assert_eq!(query["bad"], "%zz");
        assert_eq!(query["end"], "%4");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("echo-1.v2_x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn requests_parse_and_refusals_are_client_errors() {
        let parsed = parse(
            &Method::POST,
            "/v1/agents",
            "name=echo&instances=3&memory=8MB",
            Bytes::from_static(b"(module)"),
        );
        assert!(matches!(
            parsed,
            Ok(Request::Deploy(Deploy { instances: 3, .. }))
        ));
        let send = parse(
            &Method::POST,
            "/v1/agents/e%63ho/messages",
            "",
            Bytes::from_static(br#"{"content_base64": "aGk=", "timeout_ms": 250}"#),
        );
        let Ok(Request::Send(message)) = send else {
            panic!("{send:?}")
        };
        assert_eq!(
            (message.agent.as_str(), message.content.as_slice()),
            ("echo", &b"hi"[..])
        );
        assert_eq!(message.timeout, Duration::from_millis(250));
        assert_eq!(message.priority, Priority::Unmarked);
        // Unmarked: `normal` where the profile has it, else the least urgent.
        let guide: Vec<String> = ["critical", "high", "normal", "low"]
            .map(String::from)
            .into();
        assert_eq!(
            Priority::Unmarked.resolve(&guide).expect("a class"),
            PriorityClass(2)
        );
        let two: Vec<String> = ["now", "later"].map(String::from).into();
        assert_eq!(
            Priority::Unmarked.resolve(&two).expect("a class"),
            PriorityClass(1)
        );
        // A class by number, or by one of the profile's names.
        let classes: Vec<String> = ["critical", "high", "normal"].map(String::from).into();
        for (body, class) in [
            (r#"{"priority": 2}"#, 2),
            (r#"{"priority": "high"}"#, 1),
            (r#"{"priority": "critical"}"#, 0),
        ] {
            let Ok(Request::Send(message)) = parse(
                &Method::POST,
                "/v1/agents/echo/messages",
                "",
                Bytes::from(body),
            ) else {
                panic!("{body}")
            };
            let resolved = message.priority.resolve(&classes).expect(body);
            assert_eq!(resolved, PriorityClass(class), "{body}");
        }
        let unknown = Priority::Name("urgent".into())
            .resolve(&classes)
            .expect_err("no such class");
        assert_eq!(unknown.status().as_u16(), 400);
        // A number out of range, or not a whole one, says what a priority is.
        for priority in ["-1", "256", "1.5", "null"] {
            let error = serde_json::from_str::<Priority>(priority).expect_err(priority);
            assert!(
                error.to_string().contains("a priority class number"),
                "{priority}: {error}"
            );
            let body = format!(r#"{{"priority": {priority}}}"#);
            let refused = super::message("echo".into(), body.as_bytes()).expect_err(&body);
            assert_eq!(refused.status().as_u16(), 400, "{body}");
        }
        // Not an object: said so, not in serde's words for the struct.
        for body in ["[]", "\"text\"", " 7"] {
            let refused = super::message("echo".into(), body.as_bytes()).expect_err(body);
            let text = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
                .block_on(http_body_util::BodyExt::collect(refused.into_body()))
                .expect("a body")
                .to_bytes();
            let text = String::from_utf8_lossy(&text).into_owned();
            assert!(text.contains("must be a JSON object"), "{body}: {text}");
            assert!(!text.contains("SendBody"), "{body}: {text}");
        }
        // Neither content field: empty content.
        let Ok(empty) = super::message("echo".into(), b"{}") else {
            panic!("an empty object is an empty message");
        };
        assert!(empty.content.is_empty());
        for (method, path, query, body, status) in [
            (Method::PUT, "/v1/node", "", "", 405),
            (Method::GET, "/v2", "", "", 404),
            (
                Method::POST,
                "/v1/agents",
                "name=echo&instances=0",
                "(module)",
                400,
            ),
            (
                Method::POST,
                "/v1/agents",
                "name=echo&colour=blue",
                "(module)",
                400,
            ),
            (Method::POST, "/v1/agents", "name=echo", "", 400),
            (
                Method::POST,
                "/v1/agents/echo/messages",
                "",
                r#"{"content": "a", "content_base64": "YQ=="}"#,
                400,
            ),
            (
                Method::POST,
                "/v1/agents/echo/messages",
                "",
                r#"{"timeout_ms": 0}"#,
                400,
            ),
            (
                Method::POST,
                "/v1/agents/echo/messages",
                "",
                r#"{"priority": -1}"#,
                400,
            ),
            (Method::POST, "/v1/profile/trace", "messages=0", "", 400),
            (Method::POST, "/v1/profile/cpu", "frequency=5000", "", 400),
        ] {
            let refused = parse(&method, path, query, Bytes::from(body)).expect_err("refused");
            assert_eq!(refused.status().as_u16(), status, "{method} {path}?{query}");
        }
    }

    /// A client's message carries no more than an agent's may: 1 MiB.
    #[test]
    fn content_past_what_a_message_carries_is_refused() {
        let at_most = format!(
            r#"{{"content": "{}"}}"#,
            "a".repeat(caxton_shards::CONTENT_BYTES_MAX)
        );
        assert!(parse(
            &Method::POST,
            "/v1/agents/echo/messages",
            "",
            Bytes::from(at_most)
        )
        .is_ok());
        let over = format!(
            r#"{{"content_base64": "{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(vec![
                7u8;
                caxton_shards::CONTENT_BYTES_MAX
                    + 1
            ])
        );
        let refused = parse(
            &Method::POST,
            "/v1/agents/echo/messages",
            "",
            Bytes::from(over),
        )
        .expect_err("over the limit");
        assert_eq!(refused.status().as_u16(), 413);
    }
}

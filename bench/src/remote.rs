//! `--target HOST:PORT`: load a running engine through its admin API.
//!
//! Each message is one `POST /v1/agents/NAME/messages` that returns the
//! agent's reply, over a few persistent HTTP/1.1 connections (as many as the
//! endpoint has clients for sends). The open-loop schedule still holds:
//! messages due while every connection is busy wait in a bounded queue, and
//! their latency counts from when they were due. HTTP costs tens of
//! microseconds per message, so these figures check a deployed engine end
//! to end; the in-process figures are the engine's own.

use std::net::SocketAddr;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, Mutex};

use crate::custom::{BenchError, LoadOptions, LoadResult, Pattern, Workload};
use crate::load::{self, Completion, Outcome, Outgoing, Port, Refused};

/// Connections per generator: the admin endpoint's clients for sends.
pub const CONNECTIONS: usize = 4;
/// Messages that may wait for a free connection.
const QUEUE: usize = 65_536;

/// A running engine's admin endpoint.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its address.
    pub address: SocketAddr,
    /// Its access token, if it needs one.
    pub token: Option<String>,
}

fn request(
    target: &Target,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<Request<Full<Bytes>>, BenchError> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, target.address.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(token) = &target.token {
        builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|error| BenchError::Run(error.to_string()))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> Result<Sender, BenchError> {
    let unreachable = |reason: String| {
        BenchError::Input(format!(
            "cannot reach the engine at {}: {reason} (is it running, with its admin endpoint there?)",
            target.address
        ))
    };
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(target.address),
    )
    .await
    .map_err(|_| unreachable("no answer within 5s".into()))?
    .map_err(|error| unreachable(error.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| unreachable(error.to_string()))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn call(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Vec<u8>), String> {
    sender.ready().await.map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}

/// `GET /v1/node` on `sender`: the engine's stats, or why it refused.
async fn node_info(sender: &mut Sender, target: &Target) -> Result<serde_json::Value, BenchError> {
    let (status, body) = call(
        sender,
        request(target, Method::GET, "/v1/node", Vec::new())?,
    )
    .await
    .map_err(BenchError::Run)?;
    if !status.is_success() {
        return Err(BenchError::Input(format!(
            "the engine at {} refused: {status} {}",
            target.address,
            String::from_utf8_lossy(&body).trim()
        )));
    }
    Ok(serde_json::from_slice(&body).unwrap_or_default())
}

/// The engine's data shards, from `GET /v1/node` (which also checks it answers).
pub fn data_shards(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
) -> Result<usize, BenchError> {
    runtime.block_on(async {
        let mut sender = connect(target).await?;
        let node = node_info(&mut sender, target).await?;
        Ok(node["data_shards"].as_u64().unwrap_or(0) as usize)
    })
}

/// Check the engine answers and deploy `workload`'s agents on it (agents
/// already there by name are kept).
///
/// Returns the agents this call deployed (not those the target already ran,
/// which answer 409), for [`undeploy`] to remove when the run is done.
pub fn prepare(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    workload: &Workload,
) -> Result<Vec<String>, BenchError> {
    if workload.pattern == Pattern::OneWay {
        return Err(BenchError::Input(
            "one-way cannot run with --target: the admin API answers each send with the agent's reply, and a sink never replies"
                .into(),
        ));
    }
    runtime.block_on(async {
        let mut sender = connect(target).await?;
        node_info(&mut sender, target).await?;
        let mut deployed = Vec::new();
        for (name, wat) in &workload.agents {
            let path = format!("/v1/agents?name={name}&instances=1");
            let (status, body) = call(
                &mut sender,
                request(target, Method::POST, &path, wat.as_bytes().to_vec())?,
            )
            .await
            .map_err(BenchError::Run)?;
            if !(status.is_success() || status == StatusCode::CONFLICT) {
                return Err(BenchError::Run(format!(
                    "cannot deploy `{name}` on {}: {status} {}",
                    target.address,
                    String::from_utf8_lossy(&body).trim()
                )));
            }
            if status.is_success() {
                deployed.push(name.clone());
            }
        }
        Ok(deployed)
    })
}

/// Undeploy `names` from the target: what [`prepare`] deployed for a run
/// leaves with it. Every name is tried; the first failure is returned.
pub fn undeploy(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    names: &[String],
) -> Result<(), BenchError> {
    runtime.block_on(async {
        let mut sender = connect(target).await?;
        let mut first_failure = None;
        for name in names {
            let path = format!("/v1/agents/{name}");
            let answer = call(
                &mut sender,
                request(target, Method::DELETE, &path, Vec::new())?,
            )
            .await;
            let failure = match answer {
                Ok((status, _)) if status.is_success() || status == StatusCode::NOT_FOUND => None,
                Ok((status, body)) => Some(format!(
                    "cannot undeploy `{name}` from {}: {status} {}",
                    target.address,
                    String::from_utf8_lossy(&body).trim()
                )),
                Err(error) => Some(error),
            };
            first_failure = first_failure.or(failure);
        }
        first_failure.map_or(Ok(()), |failure| Err(BenchError::Run(failure)))
    })
}

/// A message waiting for a connection.
struct Queued {
    sequence: u64,
    path: Arc<str>,
    body: Arc<[u8]>,
}

/// Each entry agent's request path and body.
type Requests = Arc<Vec<(Arc<str>, Arc<[u8]>)>>;

struct RemotePort {
    queue: mpsc::Sender<Queued>,
    answers: std_mpsc::Receiver<Completion>,
    entries: Requests,
    epoch: Instant,
}

impl Port for RemotePort {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn submit(&mut self, message: Outgoing) -> Result<(), Refused> {
        let (path, body) = &self.entries[(message.sequence % self.entries.len() as u64) as usize];
        self.queue
            .try_send(Queued {
                sequence: message.sequence,
                path: Arc::clone(path),
                body: Arc::clone(body),
            })
            .map_err(|_| Refused)
    }

    fn poll(&mut self, wait: Duration, sink: &mut dyn FnMut(Completion)) {
        load::drain_channel(&self.answers, wait, sink);
    }

    fn expects_answers(&self) -> bool {
        true
    }
}

/// Run `workload` (deployed by [`prepare`]) on the engine at `target`.
pub fn run_on_target(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    workload: &Workload,
    options: &LoadOptions,
) -> Result<LoadResult, BenchError> {
    let epoch = Instant::now();
    let timeout_ms = options.drain.as_millis().clamp(1, 60_000) as u64;
    let entries: Requests = Arc::new(
        workload
            .entries
            .iter()
            .map(|(name, content)| {
                let body = serde_json::json!({
                    "content_base64": base64::engine::general_purpose::STANDARD.encode(content),
                    "performative": "request",
                    "timeout_ms": timeout_ms,
                });
                (
                    Arc::from(format!("/v1/agents/{name}/messages")),
                    Arc::from(body.to_string().into_bytes()),
                )
            })
            .collect(),
    );
    let (queue, waiting) = mpsc::channel::<Queued>(QUEUE);
    let waiting = Arc::new(Mutex::new(waiting));
    let (answer, answers) = std_mpsc::channel();
    let mut lanes = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut sender = runtime.block_on(connect(target))?;
        let waiting = Arc::clone(&waiting);
        let answer = answer.clone();
        let target = target.clone();
        lanes.push(runtime.spawn(async move {
            loop {
                let next = waiting.lock().await.recv().await;
                let Some(queued) = next else { break };
                let outcome =
                    match request(&target, Method::POST, &queued.path, queued.body.to_vec()) {
                        Ok(request) => match call(&mut sender, request).await {
                            Ok((StatusCode::OK, body)) => {
                                let reply: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                if reply["performative"] == "inform" {
                                    Outcome::Answered
                                } else {
                                    Outcome::Failed
                                }
                            }
                            Ok(_) => Outcome::Failed,
                            Err(_) => {
                                // The connection broke: count this one, reconnect for the next.
                                if let Ok(fresh) = connect(&target).await {
                                    sender = fresh;
                                }
                                Outcome::Failed
                            }
                        },
                        Err(_) => Outcome::Failed,
                    };
                let _ = answer.send(Completion {
                    sequence: queued.sequence,
                    outcome,
                    at_ns: epoch.elapsed().as_nanos() as u64,
                });
            }
        }));
    }
    drop(answer);
    let port = RemotePort {
        queue,
        answers,
        entries,
        epoch,
    };
    // The port (and with it the queue) is dropped when its generator ends,
    // which lets the lanes finish what is queued and stop.
    let generated = crate::custom::run_generators("target", vec![port], options, None)?;
    for lane in lanes {
        lane.abort();
    }
    Ok(LoadResult::generated("caxton", options, generated))
}

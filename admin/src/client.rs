//! A small blocking client of the admin endpoint, for the command line
//! (`engine agents ...`, `engine send`, `engine hdr dump`) and for tests.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a call failed before the endpoint answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection.
    #[error("cannot reach the engine's admin endpoint at {address}: {reason} (is `engine` running, and is this its observability.admin.listen?)")]
    Unreachable {
        /// Where it looked.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The exchange broke off.
    #[error("admin endpoint at {address}: {reason}")]
    Protocol {
        /// Where.
        address: SocketAddr,
        /// What happened.
        reason: String,
    },
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error message of a JSON error answer, or the body.
    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .map_or_else(|| self.text(), str::to_owned)
    }
}

/// See the module docs.
pub struct AdminClient {
    address: SocketAddr,
    token: Option<String>,
    runtime: tokio::runtime::Runtime,
}

impl AdminClient {
    /// A client of the endpoint at `address`, sending `token` if given.
    pub fn new(address: SocketAddr, token: Option<String>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            address,
            token,
            runtime,
        })
    }

    /// `method path` with `body`; `content_type` labels the body.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        let address = self.address;
        let protocol = |reason: String| ClientError::Protocol { address, reason };
        self.runtime.block_on(async {
            let exchange = async {
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|error| ClientError::Unreachable {
                        address,
                        reason: error.to_string(),
                    })?;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|error| protocol(error.to_string()))?;
                tokio::spawn(connection);
                let mut request = Request::builder()
                    .method(method)
                    .uri(path)
                    .header(hyper::header::HOST, address.to_string())
                    .header(hyper::header::CONTENT_TYPE, content_type);
                if let Some(token) = &self.token {
                    request =
                        request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
                }
                let request = request
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|error| protocol(error.to_string()))?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|error| protocol(error.to_string()))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|error| protocol(error.to_string()))?
                    .to_bytes()
                    .to_vec();
                Ok(Answer { status, body })
            };
            tokio::time::timeout(CALL_TIMEOUT, exchange)
                .await
                .map_err(|_| protocol(format!("no answer within {CALL_TIMEOUT:?}")))?
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.call(Method::GET, path, "application/json", Vec::new())
    }
}

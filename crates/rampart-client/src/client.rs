//! [`Client`]: the config center's HTTP API as typed calls, over several
//! server URLs with failover.
//!
//! Failover: each call starts at the server that answered last and moves
//! to the next on a transport failure (refused, reset, timed out) or a
//! 5xx; a 4xx is the caller's answer and is returned at once, whichever
//! server gave it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ClientError;

/// A version as `GET /v1/config/{ns}` serves it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Document {
    /// The namespace.
    pub namespace: String,
    /// Its version number (also the `ETag`).
    pub version: u64,
    /// Hex SHA-256 of the content.
    pub digest: String,
    /// When the version was written (RFC 3339).
    pub created_at: String,
    /// The JSON document.
    pub content: Value,
    /// Whether this is a canary's candidate (served to this client id).
    pub canary: bool,
    /// Set when this client was ahead of the server (a restored database):
    /// take this version as it is.
    #[serde(default)]
    pub resync: bool,
}

/// The change-risk card every write carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    /// Who makes the change.
    pub author: String,
    /// Why.
    pub reason: String,
    /// How to undo it if it goes wrong.
    pub rollback_plan: String,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The namespace does not exist yet (`If-None-Match: *`).
    Create,
    /// The namespace is at this version (`If-Match: "N"`).
    Version(u64),
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    urls: Vec<String>,
    token: Option<String>,
    client_id: Option<String>,
    timeout: Duration,
}

impl ClientBuilder {
    /// The admin token for writes (`Authorization: Bearer`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The client id reads send (`?client=`), so a canary can target it.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// A call's bound, beyond a long-poll's own wait (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the URLs and builds the client.
    pub fn build(self) -> Result<Client, ClientError> {
        if self.urls.is_empty() {
            return Err(ClientError::Config("at least one server URL".into()));
        }
        let mut urls = Vec::with_capacity(self.urls.len());
        for url in self.urls {
            let url = url.trim_end_matches('/').to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ClientError::Config(format!(
                    "server URL {url:?} must start with http:// or https://"
                )));
            }
            urls.push(url);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Client {
            urls,
            token: self.token,
            client_id: self.client_id,
            timeout: self.timeout,
            http,
            preferred: AtomicUsize::new(0),
        })
    }
}

/// The config center's API. Cheap to share behind an `Arc`; calls may run
/// concurrently.
#[derive(Debug)]
pub struct Client {
    urls: Vec<String>,
    token: Option<String>,
    client_id: Option<String>,
    timeout: Duration,
    http: reqwest::Client,
    /// The server that answered last: where the next call starts.
    preferred: AtomicUsize,
}

/// An answer: its status and body (empty on 304).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Client {
    /// Starts building a client of the servers at `urls`, tried in order.
    pub fn builder<I, S>(urls: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            urls: urls.into_iter().map(Into::into).collect(),
            token: None,
            client_id: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// The client id reads send, if any.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// One call with failover: `make` builds the request for a base URL.
    async fn call(
        &self,
        timeout: Duration,
        make: impl Fn(&reqwest::Client, &str) -> RequestBuilder,
    ) -> Result<Answer, ClientError> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.urls.len() {
            let index = (start + i) % self.urls.len();
            let base = &self.urls[index];
            let request = make(&self.http, base).timeout(timeout);
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    failures.push(format!("{base}: {e}"));
                    continue;
                }
            };
            let status = response.status();
            let bytes = match response.bytes().await {
                Ok(bytes) => bytes,
                Err(e) => {
                    failures.push(format!("{base}: {e}"));
                    continue;
                }
            };
            if status.is_server_error() {
                failures.push(format!("{base}: {status}"));
                continue;
            }
            self.preferred.store(index, Ordering::Relaxed);
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|e| ClientError::Decode(format!("{base}: {status}: {e}")))?
            };
            if status.is_client_error() {
                return Err(server_error(status, body));
            }
            return Ok(Answer { status, body });
        }
        Err(ClientError::Unreachable(failures))
    }

    fn admin(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn client_query(&self) -> Vec<(&'static str, String)> {
        self.client_id
            .iter()
            .map(|id| ("client", id.clone()))
            .collect()
    }

    /// `GET /v1/config`: every namespace with its current version.
    pub async fn list(&self) -> Result<Value, ClientError> {
        let answer = self
            .call(self.timeout, |http, base| {
                http.get(format!("{base}/v1/config"))
            })
            .await?;
        Ok(answer.body)
    }

    /// `GET /v1/config/{ns}`: the version this client is served.
    pub async fn get(&self, namespace: &str) -> Result<Document, ClientError> {
        let query = self.client_query();
        let answer = self
            .call(self.timeout, |http, base| {
                http.get(format!("{base}/v1/config/{namespace}"))
                    .query(&query)
            })
            .await?;
        document(answer.body)
    }

    /// The long-poll: answers when the version this client is served
    /// differs from `after` (`Some`), or `None` when `wait` ends first.
    pub async fn poll(
        &self,
        namespace: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Option<Document>, ClientError> {
        let mut query = self.client_query();
        query.push(("after", after.to_string()));
        query.push(("wait", format!("{}ms", wait.as_millis())));
        let answer = self
            .call(self.timeout + wait, |http, base| {
                http.get(format!("{base}/v1/config/{namespace}"))
                    .query(&query)
            })
            .await?;
        if answer.status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        document(answer.body).map(Some)
    }

    /// `PUT /v1/config/{ns}`: a new version (admin token). The answer is
    /// the namespace's summary (its new `version` …).
    pub async fn put(
        &self,
        namespace: &str,
        content: &Value,
        change: &Change,
        expect: Precondition,
    ) -> Result<Value, ClientError> {
        let body = json!({ "content": content, "change": change });
        self.write(Method::PUT, namespace, "", Some(expect), Some(&body))
            .await
    }

    /// `POST /v1/config/{ns}/rollback`: a new version carrying version
    /// `to`'s content, on top of `current`.
    pub async fn rollback(
        &self,
        namespace: &str,
        to: u64,
        change: &Change,
        current: u64,
    ) -> Result<Value, ClientError> {
        let body = json!({ "to": to, "change": change });
        self.write(
            Method::POST,
            namespace,
            "/rollback",
            Some(Precondition::Version(current)),
            Some(&body),
        )
        .await
    }

    /// `PUT /v1/config/{ns}/canary`: `content` for the listed `clients`
    /// and `percent` of the others, on top of version `current`.
    pub async fn canary_start(
        &self,
        namespace: &str,
        content: &Value,
        change: &Change,
        clients: &[String],
        percent: u8,
        current: u64,
    ) -> Result<Value, ClientError> {
        let body =
            json!({ "content": content, "change": change, "clients": clients, "percent": percent });
        self.write(
            Method::PUT,
            namespace,
            "/canary",
            Some(Precondition::Version(current)),
            Some(&body),
        )
        .await
    }

    /// `POST /v1/config/{ns}/canary/promote`: the candidate becomes the
    /// next version.
    pub async fn canary_promote(&self, namespace: &str) -> Result<Value, ClientError> {
        self.write(Method::POST, namespace, "/canary/promote", None, None)
            .await
    }

    /// `DELETE /v1/config/{ns}/canary`: everyone back on the current version.
    pub async fn canary_abort(&self, namespace: &str) -> Result<Value, ClientError> {
        self.write(Method::DELETE, namespace, "/canary", None, None)
            .await
    }

    async fn write(
        &self,
        method: Method,
        namespace: &str,
        suffix: &str,
        expect: Option<Precondition>,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let answer = self
            .call(self.timeout, |http, base| {
                let url = format!("{base}/v1/config/{namespace}{suffix}");
                let mut request = self.admin(http.request(method.clone(), url));
                request = match expect {
                    Some(Precondition::Create) => request.header("If-None-Match", "*"),
                    Some(Precondition::Version(n)) => {
                        request.header("If-Match", format!("\"{n}\""))
                    }
                    None => request,
                };
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        Ok(answer.body)
    }

    /// `GET /v1/config/{ns}/history`: versions newest first, with their
    /// change records; `before` pages (the previous answer's `next`).
    pub async fn history(
        &self,
        namespace: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Value, ClientError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(before) = before {
            query.push(("before", before.to_string()));
        }
        let answer = self
            .call(self.timeout, |http, base| {
                http.get(format!("{base}/v1/config/{namespace}/history"))
                    .query(&query)
            })
            .await?;
        Ok(answer.body)
    }

    /// `GET /v1/config/{ns}/versions/{v}`: one version with its change record.
    pub async fn version(&self, namespace: &str, version: u64) -> Result<Value, ClientError> {
        let answer = self
            .call(self.timeout, |http, base| {
                http.get(format!("{base}/v1/config/{namespace}/versions/{version}"))
            })
            .await?;
        Ok(answer.body)
    }

    /// `GET /v1/config/{ns}/diff`: the RFC 6902 JSON Patch from `from` to `to`.
    pub async fn diff(&self, namespace: &str, from: u64, to: u64) -> Result<Value, ClientError> {
        let query = [("from", from.to_string()), ("to", to.to_string())];
        let answer = self
            .call(self.timeout, |http, base| {
                http.get(format!("{base}/v1/config/{namespace}/diff"))
                    .query(&query)
            })
            .await?;
        Ok(answer.body)
    }
}

fn document(body: Value) -> Result<Document, ClientError> {
    serde_json::from_value(body).map_err(|e| ClientError::Decode(format!("not a version: {e}")))
}

fn server_error(status: StatusCode, body: Value) -> ClientError {
    let text = |field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    ClientError::Server {
        status: status.as_u16(),
        code: text("code"),
        detail: text("detail"),
        body,
    }
}

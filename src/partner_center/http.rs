//! The one HTTP client and the one retry policy: timeouts, User-Agent, Retry-After, backoff with
//! jitter, replication-aware retries, and the rule that non-idempotent calls are never retried blindly.

use super::errors::{ApiError, ErrorKind, Service};
use crate::secret::Secret;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A read (GET) answers in seconds or not at all: a hung one is given up sooner than a write.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (first one included) for throttling and transient failures.
    pub max_attempts: u32,
    /// First backoff step for transient failures; replication waits start at twice this.
    pub base_delay: Duration,
    /// Cap of one backoff step.
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured: a longer one ends the call at once (never a shorter wait
    /// than the server asked for).
    pub max_retry_after: Duration,
    /// Total time a replication-aware call keeps retrying "not found yet" answers.
    pub replication_budget: Duration,
    /// One attempt's limit, from sending to the whole answer.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            // Partner Center and Graph ask for up to a few minutes; waiting that out beats failing
            // a half-done onboarding.
            max_retry_after: Duration::from_secs(300),
            replication_budget: Duration::from_secs(180),
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// 429, or 503 with Retry-After.
    Throttled,
    /// Connection failure, timeout, 5xx.
    Transient,
    /// A just-created object is not visible yet.
    Replication,
    /// A just-created secret does not authenticate yet.
    Propagation,
}

/// Told to the caller before each wait, so a spinner can say "throttled by Graph, retrying in 5 s".
#[derive(Debug, Clone)]
pub struct WaitNotice {
    pub reason: WaitReason,
    pub service: Service,
    pub delay: Duration,
    /// The number of the attempt that will follow the wait (2 for the first retry).
    pub attempt: u32,
}

type Notify = Arc<dyn Fn(&WaitNotice) + Send + Sync>;

#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    policy: RetryPolicy,
    notify: Option<Notify>,
    /// Per service, no request goes out before this instant. Shared by every clone, so one
    /// `Retry-After` slows a whole batch (e.g. `rotate --all`) instead of each task finding
    /// the throttle on its own.
    gate: Arc<std::sync::Mutex<Vec<(Service, Instant)>>>,
    /// The run's total deadline: no attempt or wait goes past it.
    deadline: Option<Instant>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// How a call may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Repeating it has no further effect (GET, token requests, removePassword, $ref adds).
    Idempotent,
    /// Repeating it could do it twice (create app, create SP, addPassword): retried only when the
    /// server provably did not process it (any 429, a 503 with Retry-After, a refused connection).
    NotIdempotent,
}

/// Which error answers mean "the object is not replicated yet".
pub(crate) type ReplicationCheck = fn(&ApiError) -> bool;

pub(crate) enum Body {
    None,
    Json(Vec<u8>),
    /// An urlencoded form; it carries secrets (client secret, refresh token, code verifier).
    Form(Secret),
}

/// One logical request, re-sent as is on each retry.
pub(crate) struct Request {
    pub service: Service,
    pub method: reqwest::Method,
    pub url: url::Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub bearer: Option<Secret>,
    pub body: Body,
    pub idempotency: Idempotency,
    pub replication: Option<ReplicationCheck>,
}

impl Request {
    pub fn new(service: Service, method: reqwest::Method, url: url::Url) -> Self {
        Request {
            service,
            method,
            url,
            headers: Vec::new(),
            bearer: None,
            body: Body::None,
            idempotency: Idempotency::Idempotent,
            replication: None,
        }
    }
}

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        service: Service,
        what: &str,
    ) -> Result<T, ApiError> {
        serde_json::from_slice(super::errors::strip_bom(&self.body))
            .map_err(|e| ApiError::decode(service, what, &e))
    }
}

fn env_any(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok())
        .filter(|v| !v.trim().is_empty())
}

/// The user's NO_PROXY list plus the loopback names.
fn loopback_no_proxy(user: &str) -> String {
    let mut list: Vec<&str> = user
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    list.extend(["localhost", "127.0.0.0/8", "::1"]);
    list.join(",")
}

/// What one attempt ended in, for the retry decision.
enum Failure {
    /// The request never left this machine (connection refused, DNS): always safe to repeat.
    NotSent(ApiError),
    /// It may have reached the server (timeout, reset after sending).
    MaybeSent(ApiError),
    /// The server answered with an error status.
    Answered {
        error: ApiError,
        retry_after: Option<Duration>,
    },
}

impl HttpClient {
    pub fn new() -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("csp-onboard/", env!("CARGO_PKG_VERSION")))
            // None of these APIs redirects; following one could carry a bearer token elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        // Proxies from the environment, as reqwest would read them, except that loopback
        // (the local emulator) never goes through a proxy, whatever NO_PROXY says.
        let no_proxy = loopback_no_proxy(&env_any(&["NO_PROXY", "no_proxy"]).unwrap_or_default());
        for (vars, kind) in [
            (&["HTTPS_PROXY", "https_proxy"][..], "https"),
            (&["HTTP_PROXY", "http_proxy"][..], "http"),
            (&["ALL_PROXY", "all_proxy"][..], "all"),
        ] {
            if let Some(url) = env_any(vars) {
                let proxy = match kind {
                    "https" => reqwest::Proxy::https(&url),
                    "http" => reqwest::Proxy::http(&url),
                    _ => reqwest::Proxy::all(&url),
                }
                .map_err(|e| anyhow::anyhow!("{} is not a usable proxy URL: {e}", vars[0]))?;
                builder = builder.proxy(proxy.no_proxy(reqwest::NoProxy::from_string(&no_proxy)));
            }
        }
        let client = builder.build()?;
        Ok(HttpClient {
            client,
            policy: RetryPolicy::default(),
            notify: None,
            gate: Arc::default(),
            deadline: None,
        })
    }

    /// End every call by `deadline`: attempts are cut short, waits that would pass it are not
    /// started, and a `Retry-After` beyond it stops the call at once.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    fn remaining(&self) -> Duration {
        self.deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    }

    /// The error that ends a call when the deadline has passed before an attempt.
    fn out_of_time(&self, service: Service) -> ApiError {
        ApiError::new(
            service,
            ErrorKind::Timeout,
            "no answer before this run's deadline (--deadline)",
        )
    }

    pub fn with_policy(mut self, p: RetryPolicy) -> Self {
        self.policy = p;
        self
    }

    pub fn on_wait(mut self, f: Arc<dyn Fn(&WaitNotice) + Send + Sync>) -> Self {
        self.notify = Some(f);
        self
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The underlying client, for a download streamed chunk by chunk (billing blobs).
    pub(crate) fn raw(&self) -> &reqwest::Client {
        &self.client
    }

    pub(crate) fn notify(&self, notice: &WaitNotice) {
        if let Some(f) = &self.notify {
            f(notice);
        }
    }

    async fn wait(&self, reason: WaitReason, service: Service, delay: Duration, attempt: u32) {
        self.notify(&WaitNotice {
            reason,
            service,
            delay,
            attempt,
        });
        tokio::time::sleep(delay).await;
    }

    /// Send a request, retrying as the policy and the request's idempotency allow.
    /// Returns the 2xx answer, or the last error.
    pub(crate) async fn execute(&self, req: &Request) -> Result<Response, ApiError> {
        let p = &self.policy;
        let started = Instant::now();
        let mut attempt: u32 = 1; // throttling / transient attempts
        let mut replication_waits: u32 = 0;
        loop {
            if self.remaining().is_zero() {
                return Err(self.out_of_time(req.service));
            }
            let failure = match self.attempt(req).await {
                Ok(resp) => return Ok(resp),
                Err(f) => f,
            };
            let can_retry = attempt < p.max_attempts.max(1);
            let idempotent = req.idempotency == Idempotency::Idempotent;
            match failure {
                Failure::NotSent(e) => {
                    let d = backoff(p, attempt);
                    if !can_retry {
                        return Err(e);
                    }
                    if d >= self.remaining() {
                        return Err(at_deadline(e));
                    }
                    attempt += 1;
                    self.wait(WaitReason::Transient, req.service, d, attempt)
                        .await;
                }
                Failure::MaybeSent(e) => {
                    let d = backoff(p, attempt);
                    if !idempotent || !can_retry {
                        return Err(e);
                    }
                    if d >= self.remaining() {
                        return Err(at_deadline(e));
                    }
                    attempt += 1;
                    self.wait(WaitReason::Transient, req.service, d, attempt)
                        .await;
                }
                Failure::Answered { error, retry_after } => {
                    let status = error.status.unwrap_or(0);
                    let throttled = matches!(status, 429 | 503);
                    if throttled && let Some(ra) = retry_after {
                        // The server says it did not do it and when to come back: safe for any call.
                        if !can_retry {
                            return Err(error);
                        }
                        // Never sooner than asked, and never past the deadline: a wait longer
                        // than either allows ends the call now, saying when to come back.
                        if ra > p.max_retry_after || ra >= self.remaining() {
                            let mut error = error;
                            error.retry_at = Some(time::OffsetDateTime::now_utc() + ra);
                            error.message = format!(
                                "{} is throttling and asks to wait {} s, longer than this run may wait",
                                req.service,
                                ra.as_secs()
                            );
                            return Err(error);
                        }
                        attempt += 1;
                        let d = ra;
                        self.close_gate(req.service, d);
                        self.notify(&WaitNotice {
                            reason: WaitReason::Throttled,
                            service: req.service,
                            delay: d,
                            attempt,
                        });
                        continue;
                    }
                    if matches!(status, 429 | 500 | 502 | 503 | 504) {
                        // 429 means the request was not processed, Retry-After or not: any call
                        // may repeat it. A 5xx may have done the work: only idempotent calls.
                        let safe = status == 429 || idempotent;
                        let d = backoff(p, attempt);
                        if !safe || !can_retry {
                            return Err(error);
                        }
                        if d >= self.remaining() {
                            return Err(at_deadline(error));
                        }
                        attempt += 1;
                        let reason = if status == 429 {
                            WaitReason::Throttled
                        } else {
                            WaitReason::Transient
                        };
                        self.wait(reason, req.service, d, attempt).await;
                        continue;
                    }
                    // "Not there yet" is a refusal: nothing was done, so any call may repeat it.
                    if let Some(check) = req.replication
                        && check(&error)
                    {
                        let elapsed = started.elapsed();
                        if elapsed >= p.replication_budget {
                            return Err(error);
                        }
                        replication_waits += 1;
                        let d = replication_delay(p, replication_waits)
                            .min(p.replication_budget - elapsed);
                        if d >= self.remaining() {
                            return Err(at_deadline(error));
                        }
                        self.wait(
                            WaitReason::Replication,
                            req.service,
                            d,
                            attempt + replication_waits,
                        )
                        .await;
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Hold every request to `service` for `d` from now (never shortening a longer hold).
    fn close_gate(&self, service: Service, d: Duration) {
        let until = Instant::now() + d;
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        match gate.iter_mut().find(|(s, _)| *s == service) {
            Some((_, t)) => *t = (*t).max(until),
            None => gate.push((service, until)),
        }
    }

    /// Wait until `service` is open again (after a `Retry-After` seen by any clone).
    async fn pass_gate(&self, service: Service) {
        loop {
            let until = {
                let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
                gate.iter().find(|(s, _)| *s == service).map(|(_, t)| *t)
            };
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => return,
            }
        }
    }

    /// One attempt's limit: short for reads, and never past the deadline.
    fn attempt_timeout(&self, method: &reqwest::Method) -> Duration {
        let limit = if *method == reqwest::Method::GET {
            self.policy.request_timeout.min(READ_TIMEOUT)
        } else {
            self.policy.request_timeout
        };
        limit.min(self.remaining()).max(Duration::from_millis(1))
    }

    async fn attempt(&self, req: &Request) -> Result<Response, Failure> {
        self.pass_gate(req.service).await;
        let mut rb = self
            .client
            .request(req.method.clone(), req.url.clone())
            .timeout(self.attempt_timeout(&req.method));
        for (name, value) in &req.headers {
            rb = rb.header(name.clone(), value.clone());
        }
        if let Some(token) = &req.bearer {
            rb = rb.bearer_auth(token.expose());
        }
        rb = match &req.body {
            Body::None => rb,
            Body::Json(bytes) => rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone()),
            Body::Form(form) => rb
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form.expose().to_string()),
        };
        let resp = rb.send().await.map_err(|e| {
            let err = ApiError::from_reqwest(req.service, &e);
            if e.is_connect() {
                Failure::NotSent(err)
            } else {
                Failure::MaybeSent(err)
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Failure::MaybeSent(ApiError::from_reqwest(req.service, &e)))?;
        if (200..300).contains(&status) {
            return Ok(Response {
                status,
                headers,
                body: body.to_vec(),
            });
        }
        if (300..400).contains(&status) {
            // Never followed (see the client's redirect policy): say so, rather than let the
            // empty answer pass for a refusal of the credentials.
            let to = headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url::Url::parse(l).ok())
                .and_then(|u| u.host_str().map(str::to_string))
                .map(|h| format!(" to {h}"))
                .unwrap_or_default();
            let mut error = ApiError::from_response(req.service, status, &headers, &body);
            error.message = format!(
                "answered with a redirect (HTTP {status}){to}, which is refused: a secret or token is never sent on to another address"
            );
            return Err(Failure::Answered {
                error,
                retry_after: None,
            });
        }
        Err(Failure::Answered {
            error: ApiError::from_response(req.service, status, &headers, &body),
            retry_after: retry_after(&headers),
        })
    }
}

/// The last failure, marked as the one the deadline ended (a retry would have passed it).
fn at_deadline(mut e: ApiError) -> ApiError {
    e.message = format!("{}; stopped at this run's deadline (--deadline)", e.message);
    e
}

/// `Retry-After` as delta seconds (what Graph and Partner Center send), or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date =
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = date - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Exponential backoff with "equal jitter": step n waits between half and all of
/// `base * 2^(n-1)`, capped at `max_delay`.
pub(crate) fn backoff(p: &RetryPolicy, n: u32) -> Duration {
    let full = p
        .base_delay
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(p.max_delay);
    jitter(full)
}

/// Replication waits start near twice the base (2 s) and double to the cap (microsoft-apis.md §3.1).
pub(crate) fn replication_delay(p: &RetryPolicy, n: u32) -> Duration {
    let full = p
        .base_delay
        .saturating_mul(2)
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(p.max_delay);
    jitter(full)
}

fn jitter(full: Duration) -> Duration {
    use rand::Rng;
    let half = full / 2;
    let extra = rand::rng().random_range(0.0..=1.0);
    half + half.mul_f64(extra)
}

/// Request-ID headers are plain GUIDs.
pub(crate) fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid")),
    )
}

/// Replication lag per microsoft-apis.md §3.1: 404 `Request_ResourceNotFound`, 400 "…not a valid
/// reference…" (and Graph's "does not reference a valid application object"), or AADSTS700016.
pub(crate) fn replication_lag(e: &ApiError) -> bool {
    if e.kind != ErrorKind::Http {
        return false;
    }
    let m = e.message.to_ascii_lowercase();
    match e.status {
        Some(404) => e.is_graph_code("Request_ResourceNotFound") || e.graph_code.is_none(),
        Some(400) if e.has_aadsts(700016) => true,
        Some(400) => m.contains("not a valid reference") || m.contains("reference a valid"),
        _ => e.has_aadsts(700016),
    }
}

/// Only "the object is not there yet" (404), for calls where a 400 means something else.
pub(crate) fn not_found_yet(e: &ApiError) -> bool {
    e.kind == ErrorKind::Http
        && e.status == Some(404)
        && (e.is_graph_code("Request_ResourceNotFound") || e.graph_code.is_none())
}

#[cfg(test)]
pub(crate) mod fake {
    //! A tiny scripted HTTP server on 127.0.0.1:0 for unit tests: answers each request with the next
    //! scripted response (the last one repeats) and records what it received.
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Clone, Debug)]
    pub struct Reply {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: String,
        /// Close the connection without answering.
        pub drop: bool,
    }

    impl Reply {
        pub fn json(status: u16, body: &str) -> Reply {
            Reply {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.into(),
                drop: false,
            }
        }
        pub fn header(mut self, k: &str, v: &str) -> Reply {
            self.headers.push((k.into(), v.into()));
            self
        }
        pub fn dropped() -> Reply {
            Reply {
                status: 0,
                headers: vec![],
                body: String::new(),
                drop: true,
            }
        }
    }

    #[derive(Clone, Debug)]
    pub struct Seen {
        pub method: String,
        pub target: String,
        pub headers: Vec<(String, String)>,
        pub body: String,
    }

    impl Seen {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    pub struct Fake {
        pub base: String,
        pub seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Fake {
        pub fn requests(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// Serve `replies` in order, one per request; the last one repeats.
    pub async fn serve(replies: Vec<Reply>) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let reply = replies[n.min(replies.len() - 1)].clone();
                n += 1;
                let Some(req) = read_request(&mut sock).await else {
                    continue;
                };
                log.lock().unwrap().push(req);
                if reply.drop {
                    drop(sock);
                    continue;
                }
                let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
                for (k, v) in &reply.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str(&format!(
                    "content-length: {}\r\nconnection: close\r\n\r\n{}",
                    reply.body.len(),
                    reply.body
                ));
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        Fake { base, seen }
    }

    async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let method = first.next()?.to_string();
        let target = first.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
        Some(Seen {
            method,
            target,
            headers,
            body,
        })
    }
}

#[cfg(test)]
pub(crate) fn test_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_millis(50),
        replication_budget: Duration::from_millis(300),
        request_timeout: Duration::from_secs(10),
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Reply, serve};
    use super::*;
    use std::sync::Mutex;

    fn client() -> (HttpClient, Arc<Mutex<Vec<WaitNotice>>>) {
        let notices = Arc::new(Mutex::new(Vec::new()));
        let n = notices.clone();
        let http = HttpClient::new()
            .unwrap()
            .with_policy(test_policy())
            .on_wait(Arc::new(move |w: &WaitNotice| {
                n.lock().unwrap().push(w.clone())
            }));
        (http, notices)
    }

    fn get(base: &str) -> Request {
        Request::new(
            Service::Graph,
            reqwest::Method::GET,
            url::Url::parse(&format!("{base}/v1.0/me")).unwrap(),
        )
    }

    fn post(base: &str) -> Request {
        let mut r = get(base);
        r.method = reqwest::Method::POST;
        r.idempotency = Idempotency::NotIdempotent;
        r.body = Body::Json(b"{}".to_vec());
        r
    }

    const THROTTLED: &str = r#"{"error":{"code":"TooManyRequests","message":"Too many requests"}}"#;

    #[test]
    // That loopback really bypasses a proxy is tested end to end in tests/cli_init.rs.
    fn the_no_proxy_list_keeps_the_users_entries_and_adds_loopback() {
        assert_eq!(loopback_no_proxy(""), "localhost,127.0.0.0/8,::1");
        assert_eq!(
            loopback_no_proxy(" corp.example , .internal"),
            "corp.example,.internal,localhost,127.0.0.0/8,::1"
        );
    }

    #[test]
    fn retry_after_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("57"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(57)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a past date means now"
        );
    }

    #[test]
    fn backoff_stays_within_bounds() {
        let p = RetryPolicy::default();
        for n in 1..=12 {
            let d = backoff(&p, n);
            let full = (p.base_delay * 2u32.pow(n - 1)).min(p.max_delay);
            assert!(d >= full / 2 && d <= full, "step {n}: {d:?}");
            assert!(d <= p.max_delay);
        }
        let first = replication_delay(&p, 1);
        assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
        assert!(replication_delay(&p, 10) <= Duration::from_secs(30));
    }

    #[tokio::test]
    async fn throttled_get_honours_retry_after_each_time() {
        let fake = serve(vec![
            Reply::json(429, THROTTLED).header("retry-after", "0"),
            Reply::json(503, THROTTLED).header("retry-after", "0"),
            Reply::json(200, r#"{"id":"1"}"#),
        ])
        .await;
        let (http, notices) = client();
        let resp = http.execute(&get(&fake.base)).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(fake.requests().len(), 3);
        let n = notices.lock().unwrap();
        assert_eq!(n.len(), 2);
        assert!(n.iter().all(|w| w.reason == WaitReason::Throttled));
        assert_eq!(n[1].attempt, 3);
    }

    #[tokio::test]
    async fn a_retry_after_longer_than_allowed_stops_at_once_and_says_when() {
        let fake = serve(vec![
            Reply::json(429, THROTTLED).header("retry-after", "3600"),
            Reply::json(200, "{}"),
        ])
        .await;
        let (http, notices) = client();
        let e = http.execute(&get(&fake.base)).await.unwrap_err();
        assert_eq!(fake.requests().len(), 1, "not asked again sooner than told");
        assert!(notices.lock().unwrap().is_empty(), "no wait started");
        assert_eq!(e.exit(), crate::exit::Exit::Unreachable);
        let at = e.retry_at.expect("when to come back");
        assert!(at > time::OffsetDateTime::now_utc() + time::Duration::minutes(59));
        let hint = e.hint().unwrap();
        assert!(hint.contains("try again after"), "{hint}");
        // An hour is not waited out by any --deadline (waits stop at 5 minutes): not offered,
        // and the time is said once, to the second.
        assert!(!hint.contains("--deadline"), "{hint}");
        assert!(hint.contains(" UTC") && !hint.contains("Z UTC"), "{hint}");
    }

    #[tokio::test]
    async fn no_wait_goes_past_the_deadline() {
        // 4 attempts of a dropped GET with 1 s steps would take seconds; the deadline is now.
        let fake = serve(vec![Reply::dropped()]).await;
        let (http, _) = client();
        let http = http
            .with_policy(RetryPolicy {
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(1),
                ..test_policy()
            })
            .with_deadline(Instant::now() + Duration::from_millis(200));
        let e = http.execute(&get(&fake.base)).await.unwrap_err();
        assert_eq!(e.exit(), crate::exit::Exit::Unreachable);
        assert_eq!(
            fake.requests().len(),
            1,
            "a 1 s wait would pass the deadline"
        );
    }

    #[tokio::test]
    async fn throttling_that_never_ends_gives_up_after_max_attempts() {
        let fake = serve(vec![Reply::json(429, THROTTLED).header("retry-after", "0")]).await;
        let (http, _) = client();
        let e = http.execute(&get(&fake.base)).await.unwrap_err();
        assert_eq!(fake.requests().len(), 4);
        assert_eq!(e.status, Some(429));
        assert_eq!(e.exit(), crate::exit::Exit::Unreachable);
    }

    #[tokio::test]
    async fn server_errors_are_retried_for_gets_but_not_for_posts() {
        let fake = serve(vec![
            Reply::json(502, "bad gateway"),
            Reply::json(200, "{}"),
        ])
        .await;
        let (http, _) = client();
        http.execute(&get(&fake.base)).await.unwrap();
        assert_eq!(fake.requests().len(), 2);

        let fake = serve(vec![Reply::json(500, "oops"), Reply::json(201, "{}")]).await;
        let e = http.execute(&post(&fake.base)).await.unwrap_err();
        assert_eq!(e.status, Some(500));
        assert_eq!(
            fake.requests().len(),
            1,
            "a POST that may have run is not repeated"
        );
    }

    #[tokio::test]
    async fn a_throttled_post_is_retried_with_or_without_retry_after() {
        let fake = serve(vec![
            Reply::json(429, THROTTLED).header("retry-after", "0"),
            Reply::json(201, "{}"),
        ])
        .await;
        let (http, _) = client();
        http.execute(&post(&fake.base)).await.unwrap();
        assert_eq!(fake.requests().len(), 2);

        // A 429 says the request was not processed, even when it names no time.
        let fake = serve(vec![Reply::json(429, THROTTLED), Reply::json(201, "{}")]).await;
        let (http, notices) = client();
        let resp = http.execute(&post(&fake.base)).await.unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(fake.requests().len(), 2);
        let n = notices.lock().unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].reason, WaitReason::Throttled);
        assert!(n[0].delay > Duration::ZERO, "backed off");
    }

    #[tokio::test]
    async fn a_post_answered_503_without_retry_after_is_not_repeated() {
        let fake = serve(vec![
            Reply::json(
                503,
                r#"{"error":{"code":"serviceNotAvailable","message":"x"}}"#,
            ),
            Reply::json(201, "{}"),
        ])
        .await;
        let (http, _) = client();
        let e = http.execute(&post(&fake.base)).await.unwrap_err();
        assert_eq!(e.status, Some(503));
        assert_eq!(fake.requests().len(), 1, "it may have run");
    }

    #[test]
    fn default_policy_honours_retry_after_up_to_five_minutes() {
        assert_eq!(
            RetryPolicy::default().max_retry_after,
            Duration::from_secs(300)
        );
    }

    #[tokio::test]
    async fn a_dropped_connection_repeats_a_get_but_not_a_post() {
        let fake = serve(vec![Reply::dropped(), Reply::json(200, "{}")]).await;
        let (http, _) = client();
        http.execute(&get(&fake.base)).await.unwrap();
        assert_eq!(fake.requests().len(), 2);

        let fake = serve(vec![Reply::dropped(), Reply::json(201, "{}")]).await;
        let e = http.execute(&post(&fake.base)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Network);
        assert_eq!(fake.requests().len(), 1);
    }

    #[tokio::test]
    async fn connection_refused_is_retried_even_for_a_post() {
        // Bind then free a port: nothing listens there, so nothing was sent.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (http, notices) = client();
        let e = http
            .execute(&post(&format!("http://127.0.0.1:{port}")))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Network);
        assert_eq!(notices.lock().unwrap().len(), 3, "4 attempts, 3 waits");
        let shown = e.to_user_error();
        assert!(
            shown
                .message
                .starts_with("could not reach Microsoft Graph: ")
                && shown.message.contains("refused"),
            "{}",
            shown.message
        );
        assert_eq!(e.exit(), crate::exit::Exit::Unreachable);
    }

    #[tokio::test]
    async fn replication_lag_is_retried_only_when_asked_and_within_budget() {
        const NOT_FOUND: &str = r#"{"error":{"code":"Request_ResourceNotFound","message":"Resource 'x' does not exist or one of its queried reference-property objects are not present."}}"#;
        let fake = serve(vec![
            Reply::json(404, NOT_FOUND),
            Reply::json(404, NOT_FOUND),
            Reply::json(200, "{}"),
        ])
        .await;
        let (http, notices) = client();
        let e = http.execute(&get(&fake.base)).await.unwrap_err();
        assert_eq!(e.status, Some(404), "not opted in: the 404 is the answer");

        let mut req = get(&fake.base);
        req.replication = Some(replication_lag);
        http.execute(&req).await.unwrap();
        assert_eq!(fake.requests().len(), 3);
        assert!(
            notices
                .lock()
                .unwrap()
                .iter()
                .all(|w| w.reason == WaitReason::Replication)
        );

        // A 404 that never ends stops once the budget is spent.
        let fake = serve(vec![Reply::json(404, NOT_FOUND)]).await;
        let mut req = get(&fake.base);
        req.replication = Some(replication_lag);
        let started = Instant::now();
        let e = http.execute(&req).await.unwrap_err();
        assert_eq!(e.exit(), crate::exit::Exit::NotFound);
        assert!(started.elapsed() >= test_policy().replication_budget);
        assert!(fake.requests().len() >= 3);
    }

    #[test]
    fn replication_predicates() {
        let mut e = ApiError::new(
            Service::Graph,
            ErrorKind::Http,
            "The reference 'x' is not a valid reference.",
        );
        e.status = Some(400);
        e.graph_code = Some("Request_BadRequest".into());
        assert!(replication_lag(&e));
        assert!(!not_found_yet(&e));
        e.message = "One or more added object references already exist".into();
        assert!(!replication_lag(&e));
    }
}

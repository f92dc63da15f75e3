//! Entra ID sign-in (microsoft-apis.md §2): device code, authorization code + PKCE on a loopback
//! redirect, and client credentials (which refuses `/organizations` before sending). One sign-in
//! asks for every scope at once, so no refresh grant is needed within a run.

use super::errors::{ApiError, ErrorKind, Service};
use super::http::{Body, HttpClient, Idempotency, Request};
use crate::cloud::Endpoints;
use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// RFC 8628 §3.5: each `slow_down` adds five seconds to the polling interval.
const SLOW_DOWN_STEP: u64 = 5;
/// Floor of the polling interval, unless the server says 0 (only test servers do).
const MIN_INTERVAL: u64 = 1;
/// Ceiling for the back-off after AADSTS50196 ("encountered a loop").
const MAX_LOOP_INTERVAL: u64 = 60;
/// How long the loopback listener waits for the browser to come back.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A token endpoint's success answer. `Debug` shows no token.
#[derive(Clone)]
pub struct TokenResponse {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_in: u64,
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"****")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "****"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenWire {
    access_token: Secret,
    #[serde(default)]
    refresh_token: Option<Secret>,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: u64,
    #[serde(default)]
    scope: Option<String>,
}

/// Entra's v1 endpoints sent numbers as strings; accept both.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        N(u64),
        S(String),
    }
    match N::deserialize(d)? {
        N::N(n) => Ok(n),
        N::S(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom("expected a number")),
    }
}

/// The public client that signs the admin in, and where.
#[derive(Debug, Clone)]
pub struct SignInClient {
    pub client_id: String,
    /// `organizations`, a tenant GUID or a verified domain.
    pub tenant: String,
}

/// A started device-code sign-in. The `device_code` itself stays private and redacted.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    pub user_code: String,
    pub verification_uri: String,
    pub message: String,
    pub expires_in: u64,
    pub interval: u64,
    device_code: Secret,
}

#[derive(Deserialize)]
struct DeviceCodeWire {
    device_code: Secret,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(
        default = "default_device_code_lifetime",
        deserialize_with = "number_or_string"
    )]
    expires_in: u64,
    #[serde(default = "default_interval", deserialize_with = "number_or_string")]
    interval: u64,
    #[serde(default)]
    message: Option<String>,
}

/// RFC 8628 makes `expires_in` required; when an answer leaves it out, assume Entra's usual 900 s
/// rather than 0, which would end the sign-in before the first poll.
fn default_device_code_lifetime() -> u64 {
    900
}

fn default_interval() -> u64 {
    5
}

/// What happened on one poll that did not finish the sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollEvent {
    Pending,
    SlowDown {
        interval: u64,
    },
    /// AADSTS50196: polled too fast; the poller backs off.
    LoopDetected,
}

/// The Graph sign-in scopes: `{graph}/.default offline_access openid profile`.
pub fn graph_sign_in_scopes(ep: &Endpoints) -> Vec<String> {
    vec![
        ep.graph_scope(),
        "offline_access".into(),
        "openid".into(),
        "profile".into(),
    ]
}

fn oauth_url(ep: &Endpoints, tenant: &str, leaf: &str) -> Result<url::Url, ApiError> {
    check_tenant_syntax(tenant)?;
    Ok(Endpoints::join(
        &ep.authority,
        &format!("{tenant}/oauth2/v2.0/{leaf}"),
    ))
}

/// A tenant is a path segment: refuse anything that could change the path or query.
fn check_tenant_syntax(tenant: &str) -> Result<(), ApiError> {
    let ok = !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::refused(
            Service::Authority,
            format!("{tenant:?} is not a tenant ID (a GUID) or a domain name"),
        ))
    }
}

fn form(pairs: &[(&str, &str)]) -> Body {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    Body::Form(Secret::new(s.finish()))
}

async fn token_call(
    http: &HttpClient,
    url: url::Url,
    body: Body,
    idempotency: Idempotency,
) -> Result<TokenResponse, ApiError> {
    let mut req = Request::new(Service::Authority, reqwest::Method::POST, url);
    req.body = body;
    req.idempotency = idempotency;
    let resp = http.execute(&req).await?;
    let wire: TokenWire = resp.json(Service::Authority, "token")?;
    Ok(TokenResponse {
        access_token: wire.access_token,
        refresh_token: wire.refresh_token,
        expires_in: wire.expires_in,
        scope: wire.scope,
    })
}

/// Step 1 of the device code flow: get a user code to show.
pub async fn device_code_start(
    http: &HttpClient,
    ep: &Endpoints,
    c: &SignInClient,
    scopes: &[String],
) -> Result<DeviceCode, ApiError> {
    let mut req = Request::new(
        Service::Authority,
        reqwest::Method::POST,
        oauth_url(ep, &c.tenant, "devicecode")?,
    );
    req.body = form(&[("client_id", &c.client_id), ("scope", &scopes.join(" "))]);
    let resp = http.execute(&req).await?;
    // Entra has been seen answering errors here with 200 (MSAL.NET #1466).
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&resp.body)
        && v.get("error").is_some_and(|e| e.is_string())
    {
        return Err(ApiError::from_response(
            Service::Authority,
            resp.status,
            &reqwest::header::HeaderMap::new(),
            &resp.body,
        ));
    }
    let w: DeviceCodeWire = resp.json(Service::Authority, "device code")?;
    let message = w.message.unwrap_or_else(|| {
        format!(
            "To sign in, use a web browser to open the page {} and enter the code {} to authenticate.",
            w.verification_uri, w.user_code
        )
    });
    Ok(DeviceCode {
        user_code: w.user_code,
        verification_uri: w.verification_uri,
        message,
        expires_in: w.expires_in,
        interval: w.interval,
        device_code: w.device_code,
    })
}

/// The poller as a small state machine, so its rules are tested without waiting.
#[derive(Debug)]
struct Poller {
    interval: u64,
}

enum PollStep {
    /// Wait this many seconds, then poll again.
    Again(PollEvent),
    Stop,
}

impl Poller {
    fn new(server_interval: u64) -> Self {
        Poller {
            interval: if server_interval == 0 {
                0
            } else {
                server_interval.max(MIN_INTERVAL)
            },
        }
    }

    fn on_error(&mut self, e: &ApiError) -> PollStep {
        // `slow_down` first: it may carry 50196 too, and RFC 8628 §3.5 then asks for +5 s, which
        // the loop back-off below (doubling from 1 s) would fall short of.
        if e.is_oauth_error("slow_down") {
            self.interval += SLOW_DOWN_STEP;
            return PollStep::Again(PollEvent::SlowDown {
                interval: self.interval,
            });
        }
        if e.has_aadsts(50196) {
            self.interval = (self.interval * 2)
                .max(self.interval + MIN_INTERVAL)
                .min(MAX_LOOP_INTERVAL);
            return PollStep::Again(PollEvent::LoopDetected);
        }
        match e.oauth_error.as_deref() {
            Some("authorization_pending") => PollStep::Again(PollEvent::Pending),
            // authorization_declined, expired_token, bad_verification_code and the rest are final.
            _ => PollStep::Stop,
        }
    }
}

fn device_code_expired() -> ApiError {
    let mut e = ApiError::new(
        Service::Authority,
        ErrorKind::Interaction,
        "the sign-in code expired before the sign-in was completed",
    );
    e.oauth_error = Some("expired_token".into());
    e
}

/// Step 2: poll until the user finishes, declines, or the code expires.
pub async fn device_code_poll(
    http: &HttpClient,
    ep: &Endpoints,
    c: &SignInClient,
    dc: &DeviceCode,
    mut on_event: impl FnMut(PollEvent),
) -> Result<TokenResponse, ApiError> {
    let url = oauth_url(ep, &c.tenant, "token")?;
    let deadline = Instant::now() + Duration::from_secs(dc.expires_in);
    let mut poller = Poller::new(dc.interval);
    loop {
        let wait = Duration::from_secs(poller.interval);
        if Instant::now() + wait >= deadline {
            return Err(device_code_expired());
        }
        tokio::time::sleep(wait).await;
        let body = form(&[
            ("grant_type", DEVICE_CODE_GRANT),
            ("client_id", &c.client_id),
            ("device_code", dc.device_code.expose()),
        ]);
        match token_call(http, url.clone(), body, Idempotency::Idempotent).await {
            Ok(t) => return Ok(t),
            Err(e) if e.kind != ErrorKind::Http => return Err(e),
            Err(e) => match poller.on_error(&e) {
                PollStep::Again(ev) => on_event(ev),
                PollStep::Stop => return Err(e),
            },
        }
    }
}

/// A PKCE pair (RFC 7636, S256).
struct Pkce {
    verifier: Secret,
    challenge: String,
}

impl Pkce {
    fn new() -> Self {
        // 64 random bytes → an 86-character verifier, inside RFC 7636's 43–128.
        let mut bytes = [0u8; 64];
        rand::rng().fill_bytes(&mut bytes);
        Pkce::from_verifier(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn from_verifier(verifier: String) -> Self {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier: Secret::new(verifier),
            challenge,
        }
    }
}

fn random_state() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn interaction(message: impl Into<String>) -> ApiError {
    ApiError::new(Service::Authority, ErrorKind::Interaction, message)
}

/// Read a browser's request target (`/?code=…&state=…`): `None` for anything that is not the
/// redirect (a favicon request), else the code or the error it carries.
fn parse_callback(target: &str, expected_state: &str) -> Option<Result<Secret, ApiError>> {
    let url = url::Url::parse(&format!("http://localhost{target}")).ok()?;
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "code" => code = Some(Secret::new(v.into_owned())),
            "state" => state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    if code.is_none() && error.is_none() {
        return None;
    }
    // Checked first, error answers included: an answer for another sign-in is not ours to report.
    if state.as_deref() != Some(expected_state) {
        return Some(Err(interaction(
            "the browser came back with a state that does not match this sign-in; it may be a stale tab or a forged redirect",
        )));
    }
    if let Some(error) = error {
        let desc = description.unwrap_or_default();
        let mut body = serde_json::json!({"error": error, "error_description": desc});
        if let Some(obj) = body.as_object_mut()
            && desc.is_empty()
        {
            obj.remove("error_description");
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut e = ApiError::from_response(
            Service::Authority,
            0,
            &reqwest::header::HeaderMap::new(),
            &bytes,
        );
        e.status = None;
        return Some(Err(e));
    }
    code.map(Ok)
}

const PAGE_OK: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>csp-onboard</title></head><body style=\"font-family:sans-serif\"><h2>Signed in</h2><p>You can close this tab and return to the terminal.</p></body></html>";
const PAGE_FAILED: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>csp-onboard</title></head><body style=\"font-family:sans-serif\"><h2>Sign-in did not complete</h2><p>Return to the terminal for details.</p></body></html>";

async fn answer(sock: &mut tokio::net::TcpStream, status: &str, page: &str) {
    let out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{page}",
        page.len()
    );
    let _ = sock.write_all(out.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// The request target of one HTTP request head, or `None` if it is not a readable GET.
async fn read_target(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return None;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = std::str::from_utf8(&buf).ok()?;
    let mut parts = head.lines().next()?.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    (method == "GET" && target.starts_with('/')).then(|| target.to_string())
}

/// The next connection on the IPv4 listener or, when there is one, the IPv6 one.
async fn accept_any(
    v4: &tokio::net::TcpListener,
    v6: Option<&tokio::net::TcpListener>,
) -> std::io::Result<tokio::net::TcpStream> {
    match v6 {
        Some(v6) => tokio::select! {
            r = v4.accept() => r.map(|(s, _)| s),
            r = v6.accept() => r.map(|(s, _)| s),
        },
        None => v4.accept().await.map(|(s, _)| s),
    }
}

/// Wait on the listeners for the redirect carrying our `state`.
async fn wait_for_redirect(
    listener: tokio::net::TcpListener,
    listener_v6: Option<tokio::net::TcpListener>,
    state: &str,
) -> Result<Secret, ApiError> {
    loop {
        let mut sock = accept_any(&listener, listener_v6.as_ref())
            .await
            .map_err(|e| interaction(format!("the local sign-in listener failed: {e}")))?;
        let Some(target) = read_target(&mut sock).await else {
            answer(&mut sock, "400 Bad Request", PAGE_FAILED).await;
            continue;
        };
        match parse_callback(&target, state) {
            None => answer(&mut sock, "404 Not Found", "").await,
            Some(Ok(code)) => {
                answer(&mut sock, "200 OK", PAGE_OK).await;
                return Ok(code);
            }
            Some(Err(e)) => {
                answer(&mut sock, "200 OK", PAGE_FAILED).await;
                return Err(e);
            }
        }
    }
}

/// Sign in through the browser: authorization code + PKCE, redirected to a loopback listener.
/// `open` tries to start a browser (false if there is none); `show_url` prints the URL in any case.
pub async fn browser_sign_in(
    http: &HttpClient,
    ep: &Endpoints,
    c: &SignInClient,
    scopes: &[String],
    open: impl FnOnce(&str) -> bool,
    show_url: impl FnOnce(&str),
) -> Result<TokenResponse, ApiError> {
    browser_sign_in_within(http, ep, c, scopes, open, show_url, BROWSER_TIMEOUT).await
}

async fn browser_sign_in_within(
    http: &HttpClient,
    ep: &Endpoints,
    c: &SignInClient,
    scopes: &[String],
    open: impl FnOnce(&str) -> bool,
    show_url: impl FnOnce(&str),
    timeout: Duration,
) -> Result<TokenResponse, ApiError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| {
            interaction(format!(
                "could not listen on 127.0.0.1 for the browser: {e}"
            ))
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| {
            interaction(format!(
                "could not listen on 127.0.0.1 for the browser: {e}"
            ))
        })?
        .port();
    // "localhost" may resolve to ::1 first in the browser: listen there too (RFC 8252 §7.3),
    // on the same port, when this machine has IPv6 loopback.
    let listener_v6 = tokio::net::TcpListener::bind(("::1", port)).await.ok();
    // Entra ignores the port of a loopback redirect URI, so any free port matches "http://localhost".
    let redirect_uri = format!("http://localhost:{port}");
    let pkce = Pkce::new();
    let state = random_state();
    let scope = scopes.join(" ");
    let mut authorize = oauth_url(ep, &c.tenant, "authorize")?;
    authorize
        .query_pairs_mut()
        .append_pair("client_id", &c.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("response_mode", "query")
        .append_pair("scope", &scope)
        .append_pair("state", &state)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256");
    let _opened = open(authorize.as_str());
    show_url(authorize.as_str());

    let code = tokio::time::timeout(timeout, wait_for_redirect(listener, listener_v6, &state))
        .await
        .map_err(|_| {
            interaction(format!(
                "the browser did not come back within {} minutes",
                timeout.as_secs() / 60
            ))
        })??;

    let body = form(&[
        ("grant_type", "authorization_code"),
        ("client_id", &c.client_id),
        ("code", code.expose()),
        ("redirect_uri", &redirect_uri),
        ("code_verifier", pkce.verifier.expose()),
        ("scope", &scope),
    ]);
    // A code is single-use: a repeat after a lost answer would only fail, so never repeat blindly.
    token_call(
        http,
        oauth_url(ep, &c.tenant, "token")?,
        body,
        Idempotency::NotIdempotent,
    )
    .await
}

/// Tenants that name no tenant: Entra may pick the wrong one for an app-only token (§2.4).
fn is_multi_tenant_alias(tenant: &str) -> bool {
    ["organizations", "common", "consumers"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(tenant.trim()))
}

/// An app-only token with the app's own secret. Refuses tenant aliases before sending.
pub async fn client_credentials(
    http: &HttpClient,
    ep: &Endpoints,
    tenant: &str,
    app_id: &str,
    secret: &Secret,
    scope: &str,
) -> Result<TokenResponse, ApiError> {
    if is_multi_tenant_alias(tenant) || tenant.trim().is_empty() {
        return Err(ApiError::refused(
            Service::Authority,
            format!(
                "an app-only sign-in needs the partner tenant itself, not {:?}",
                tenant
            ),
        ));
    }
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", app_id),
        ("client_secret", secret.expose()),
        ("scope", scope),
    ]);
    token_call(
        http,
        oauth_url(ep, tenant, "token")?,
        body,
        Idempotency::Idempotent,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::super::http::fake::{Reply, serve};
    use super::super::http::test_policy;
    use super::*;
    use crate::cloud::Cloud;
    use crate::exit::Exit;

    const SECRET: &str = "Zx8Q~known-secret-value-1234";

    fn endpoints(base: &str) -> Endpoints {
        Endpoints::from_urls(Cloud::Custom, base, base, base).unwrap()
    }

    fn http() -> HttpClient {
        HttpClient::new().unwrap().with_policy(test_policy())
    }

    fn client() -> SignInClient {
        SignInClient {
            client_id: crate::cloud::DEFAULT_PUBLIC_CLIENT_ID.into(),
            tenant: "organizations".into(),
        }
    }

    fn pending(error: &str, code: u32) -> Reply {
        Reply::json(
            400,
            &format!(
                r#"{{"error":"{error}","error_description":"AADSTS{code}: x","error_codes":[{code}]}}"#
            ),
        )
    }

    fn token_body() -> String {
        format!(
            r#"{{"token_type":"Bearer","scope":"https://graph.microsoft.com/.default","expires_in":3599,"access_token":"{SECRET}","refresh_token":"{SECRET}-rt","id_token":"x"}}"#
        )
    }

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        let p = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        // RFC 7636 appendix B's own value (the task brief quoted a different, mistyped one).
        assert_eq!(p.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let fresh = Pkce::new();
        let len = fresh.verifier.expose().len();
        assert!((43..=128).contains(&len), "{len}");
        assert_ne!(fresh.verifier, Pkce::new().verifier, "random each time");
    }

    #[test]
    fn callback_parsing() {
        let ok = parse_callback("/?code=abc&state=s1", "s1")
            .unwrap()
            .unwrap();
        assert_eq!(ok.expose(), "abc");
        assert!(parse_callback("/favicon.ico", "s1").is_none());

        let wrong = parse_callback("/?code=abc&state=other", "s1")
            .unwrap()
            .unwrap_err();
        assert_eq!(wrong.kind, ErrorKind::Interaction);
        assert!(wrong.message.contains("state"));
        assert_eq!(wrong.exit(), Exit::SignIn);
        let missing = parse_callback("/?code=abc", "s1").unwrap().unwrap_err();
        assert_eq!(missing.kind, ErrorKind::Interaction);

        let denied = parse_callback(
            "/?error=access_denied&error_description=AADSTS65004%3A+User+declined+to+consent.&state=s1",
            "s1",
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(denied.oauth_error.as_deref(), Some("access_denied"));
        assert_eq!(denied.aadsts, vec![65004]);
        assert_eq!(denied.exit(), Exit::SignIn);
    }

    #[test]
    fn poller_rules() {
        let err = |error: &str, codes: Vec<u32>| {
            let mut e = ApiError::new(Service::Authority, ErrorKind::Http, "x");
            e.status = Some(400);
            e.oauth_error = Some(error.into());
            e.aadsts = codes;
            e
        };
        let mut p = Poller::new(5);
        assert!(matches!(
            p.on_error(&err("authorization_pending", vec![70016])),
            PollStep::Again(PollEvent::Pending)
        ));
        assert_eq!(p.interval, 5);
        assert!(matches!(
            p.on_error(&err("slow_down", vec![])),
            PollStep::Again(PollEvent::SlowDown { interval: 10 })
        ));
        assert!(matches!(
            p.on_error(&err("invalid_grant", vec![50196])),
            PollStep::Again(PollEvent::LoopDetected)
        ));
        assert_eq!(p.interval, 20);
        for terminal in [
            "authorization_declined",
            "expired_token",
            "bad_verification_code",
        ] {
            assert!(matches!(p.on_error(&err(terminal, vec![])), PollStep::Stop));
        }
        // Entra's loop code on a `slow_down` answer: still the RFC's +5 s, not the loop back-off.
        let mut p = Poller::new(1);
        assert!(matches!(
            p.on_error(&err("slow_down", vec![50196])),
            PollStep::Again(PollEvent::SlowDown { interval: 6 })
        ));
        assert_eq!(Poller::new(0).interval, 0, "tests may ask for no wait");
        assert_eq!(Poller::new(1).interval, 1);
    }

    #[tokio::test]
    async fn device_code_flow_polls_until_signed_in() {
        let fake = serve(vec![
            Reply::json(
                200,
                &format!(
                    r#"{{"device_code":"{SECRET}","user_code":"ABCD-EFGH","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":0,"message":"To sign in, enter ABCD-EFGH"}}"#
                ),
            ),
            pending("authorization_pending", 70016),
            pending("authorization_pending", 70016),
            Reply::json(200, &token_body()),
        ])
        .await;
        let ep = endpoints(&fake.base);
        let scopes = graph_sign_in_scopes(&ep);
        let dc = device_code_start(&http(), &ep, &client(), &scopes)
            .await
            .unwrap();
        assert_eq!(dc.user_code, "ABCD-EFGH");
        assert!(!format!("{dc:?}").contains(SECRET), "{dc:?}");
        let mut events = Vec::new();
        let t = device_code_poll(&http(), &ep, &client(), &dc, |e| events.push(e))
            .await
            .unwrap();
        assert_eq!(events, vec![PollEvent::Pending, PollEvent::Pending]);
        assert_eq!(t.access_token.expose(), SECRET);
        assert_eq!(t.expires_in, 3599);

        let reqs = fake.requests();
        assert_eq!(reqs[0].target, "/organizations/oauth2/v2.0/devicecode");
        assert!(reqs[0].body.contains(
            "scope=https%3A%2F%2Fgraph.microsoft.com%2F.default+offline_access+openid+profile"
        ));
        assert_eq!(
            reqs[0].header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert!(
            reqs[1]
                .body
                .contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code")
        );
        assert!(reqs[1].body.contains("device_code=Zx8Q"));
        assert_eq!(reqs.len(), 4);
    }

    #[tokio::test]
    async fn a_device_code_without_expires_in_lasts_fifteen_minutes() {
        let fake = serve(vec![Reply::json(
            200,
            &format!(
                r#"{{"device_code":"{SECRET}","user_code":"ABCD-EFGH","verification_uri":"https://microsoft.com/devicelogin","interval":5}}"#
            ),
        )])
        .await;
        let ep = endpoints(&fake.base);
        let dc = device_code_start(&http(), &ep, &client(), &["s".into()])
            .await
            .unwrap();
        assert_eq!(dc.expires_in, 900, "not 0: the sign-in would end at once");
    }

    #[tokio::test]
    async fn device_code_start_errors_are_typed_even_with_status_200() {
        let blocked = r#"{"error":"access_denied","error_description":"AADSTS53003: Access has been blocked by Conditional Access policies.","error_codes":[53003]}"#;
        for status in [400, 200] {
            let fake = serve(vec![Reply::json(status, blocked)]).await;
            let ep = endpoints(&fake.base);
            let e = device_code_start(&http(), &ep, &client(), &["s".into()])
                .await
                .unwrap_err();
            assert!(e.has_aadsts(53003), "status {status}");
            assert_eq!(e.exit(), Exit::Permission);
            assert!(e.hint().unwrap().contains("--auth browser"));
        }
    }

    #[tokio::test]
    async fn device_code_declined_is_final() {
        let fake = serve(vec![
            pending("authorization_pending", 70016),
            pending("authorization_declined", 70000),
            Reply::json(200, &token_body()),
        ])
        .await;
        let ep = endpoints(&fake.base);
        let dc = DeviceCode {
            user_code: "X".into(),
            verification_uri: "u".into(),
            message: "m".into(),
            expires_in: 900,
            interval: 0,
            device_code: Secret::new(SECRET),
        };
        let e = device_code_poll(&http(), &ep, &client(), &dc, |_| {})
            .await
            .unwrap_err();
        assert_eq!(e.oauth_error.as_deref(), Some("authorization_declined"));
        assert_eq!(e.exit(), Exit::SignIn);
        assert_eq!(fake.requests().len(), 2);
    }

    #[tokio::test]
    async fn device_code_stops_when_it_expires() {
        let fake = serve(vec![pending("authorization_pending", 70016)]).await;
        let ep = endpoints(&fake.base);
        let dc = DeviceCode {
            user_code: "X".into(),
            verification_uri: "u".into(),
            message: "m".into(),
            expires_in: 1,
            interval: 1,
            device_code: Secret::new(SECRET),
        };
        let e = device_code_poll(&http(), &ep, &client(), &dc, |_| {})
            .await
            .unwrap_err();
        assert_eq!(e.oauth_error.as_deref(), Some("expired_token"));
        assert_eq!(e.exit(), Exit::SignIn);
        assert!(
            fake.requests().is_empty(),
            "no poll can fit in a 1 s code with a 1 s interval"
        );
    }

    #[tokio::test]
    async fn client_credentials_refuses_tenant_aliases_before_sending() {
        let fake = serve(vec![Reply::json(200, &token_body())]).await;
        let ep = endpoints(&fake.base);
        let secret = Secret::new(SECRET);
        for tenant in ["organizations", "common", "Consumers", ""] {
            let e = client_credentials(
                &http(),
                &ep,
                tenant,
                "app",
                &secret,
                &ep.partner_center_scope(),
            )
            .await
            .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Refused);
            assert_eq!(e.exit(), Exit::Usage);
            assert!(
                e.to_user_error()
                    .hint
                    .unwrap()
                    .contains("give the tenant ID")
            );
        }
        assert!(fake.requests().is_empty());

        let tenant = "8d3c0e7a-1f1b-4a1e-9b53-0c2a5b0f0001";
        let t = client_credentials(
            &http(),
            &ep,
            tenant,
            "app-1",
            &secret,
            &ep.partner_center_scope(),
        )
        .await
        .unwrap();
        assert_eq!(t.access_token.expose(), SECRET);
        let r = &fake.requests()[0];
        assert_eq!(r.target, format!("/{tenant}/oauth2/v2.0/token"));
        assert!(r.body.contains("grant_type=client_credentials"));
        assert!(
            r.body
                .contains("scope=https%3A%2F%2Fapi.partnercenter.microsoft.com%2F.default")
        );
    }

    #[tokio::test]
    async fn a_wrong_secret_is_an_api_error_without_the_secret() {
        let fake = serve(vec![Reply::json(
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215],"correlation_id":"c-1"}"#,
        )])
        .await;
        let ep = endpoints(&fake.base);
        let e = client_credentials(
            &http(),
            &ep,
            "contoso.com",
            "app",
            &Secret::new(SECRET),
            "s",
        )
        .await
        .unwrap_err();
        assert!(e.is_invalid_secret());
        assert_eq!(e.exit(), Exit::Verify);
        let shown = format!("{e:?} {e} {:?}", e.to_user_error());
        assert!(!shown.contains(SECRET), "{shown}");
        assert_eq!(
            fake.requests().len(),
            1,
            "a 401 is an answer, not a transient failure"
        );
    }

    #[test]
    fn token_response_debug_is_redacted() {
        let w: TokenWire = serde_json::from_str(&token_body()).unwrap();
        let t = TokenResponse {
            access_token: w.access_token,
            refresh_token: w.refresh_token,
            expires_in: w.expires_in,
            scope: w.scope,
        };
        let shown = format!("{t:?} {t:#?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("3599"));
        // A malformed token answer must not quote the token in its decode error either.
        let bad = format!(r#"{{"access_token":"{SECRET}","expires_in":[1]}}"#);
        let e = serde_json::from_str::<TokenWire>(&bad)
            .map_err(|e| ApiError::decode(Service::Authority, "token", &e))
            .err()
            .unwrap();
        assert!(!format!("{e:?} {e}").contains(SECRET));
    }

    #[tokio::test]
    async fn browser_sign_in_redeems_the_code_with_the_verifier() {
        let fake = serve(vec![Reply::json(200, &token_body())]).await;
        let ep = endpoints(&fake.base);
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let mut shown = String::new();
        let browser = tokio::spawn(async move {
            // Play the browser: follow the authorize URL's redirect_uri back with a code.
            let url = url::Url::parse(&rx.await.unwrap()).unwrap();
            let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
            assert_eq!(q["code_challenge_method"], "S256");
            assert_eq!(q["response_mode"], "query");
            let back = format!("{}/?code=the-code&state={}", q["redirect_uri"], q["state"]);
            let page = reqwest::get(back).await.unwrap().text().await.unwrap();
            (q, page)
        });
        let t = browser_sign_in(
            &http(),
            &ep,
            &client(),
            &graph_sign_in_scopes(&ep),
            |url| {
                tx.send(url.to_string()).unwrap();
                true
            },
            |url| shown = url.to_string(),
        )
        .await
        .unwrap();
        assert_eq!(t.access_token.expose(), SECRET);
        let (q, page) = browser.await.unwrap();
        assert!(page.contains("Signed in"));
        assert!(shown.contains("/organizations/oauth2/v2.0/authorize?"));
        let body = &fake.requests()[0].body;
        assert!(body.contains("grant_type=authorization_code"));
        assert!(body.contains("code=the-code"));
        let redirect: String =
            url::form_urlencoded::byte_serialize(q["redirect_uri"].as_bytes()).collect();
        assert!(body.contains(&format!("redirect_uri={redirect}")));
        // The verifier sent hashes to the challenge shown to the browser.
        let form: std::collections::HashMap<_, _> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let verifier = form["code_verifier"].clone();
        assert_eq!(Pkce::from_verifier(verifier).challenge, q["code_challenge"]);
        assert!(
            !body.contains("client_secret"),
            "a public client sends no secret"
        );
    }

    #[tokio::test]
    async fn a_browser_that_resolves_localhost_to_ipv6_reaches_the_listener() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("skipped: no IPv6 loopback on this machine");
            return;
        }
        let fake = serve(vec![Reply::json(200, &token_body())]).await;
        let ep = endpoints(&fake.base);
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let browser = tokio::spawn(async move {
            let url = url::Url::parse(&rx.await.unwrap()).unwrap();
            let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
            let port = url::Url::parse(&q["redirect_uri"]).unwrap().port().unwrap();
            let back = format!("http://[::1]:{port}/?code=the-code&state={}", q["state"]);
            reqwest::get(back).await.unwrap().status()
        });
        let t = browser_sign_in(
            &http(),
            &ep,
            &client(),
            &graph_sign_in_scopes(&ep),
            |url| tx.send(url.to_string()).is_ok(),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(t.access_token.expose(), SECRET);
        assert_eq!(browser.await.unwrap(), 200);
    }

    #[tokio::test]
    async fn browser_sign_in_gives_up_after_its_timeout() {
        let ep = endpoints("http://127.0.0.1:9");
        let e = browser_sign_in_within(
            &http(),
            &ep,
            &client(),
            &["s".into()],
            |_| false,
            |_| {},
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Interaction);
        assert_eq!(e.exit(), Exit::SignIn);
    }
}

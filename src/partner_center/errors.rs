//! Typed errors of the three Microsoft services, parsed from their error bodies, and THE one place that
//! turns them into a user message, a next step and an exit code (microsoft-apis.md §2.5, §3.1, §4).

use crate::exit::{Exit, UserError};
use std::fmt;

/// Which service answered (or failed to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The Entra ID sign-in authority (`login.microsoftonline.com`).
    Authority,
    Graph,
    PartnerCenter,
}

impl Service {
    pub fn label(self) -> &'static str {
        match self {
            Service::Authority => "Microsoft Entra sign-in",
            Service::Graph => "Microsoft Graph",
            Service::PartnerCenter => "Partner Center",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not connect, or the connection broke.
    Network,
    /// The request timed out.
    Timeout,
    /// The service answered with an error status (usually with a Microsoft error body).
    Http,
    /// The service answered 2xx but the body was not what the reference describes.
    Decode,
    /// The client refused to send the request (e.g. client credentials against `/organizations`).
    Refused,
    /// The interactive part of sign-in failed on this machine: the device code or the browser wait
    /// ran out, the browser came back with a wrong `state`, the loopback listener could not start.
    Interaction,
}

/// An error from one of the Microsoft services. Holds only what the server said about the failure
/// (codes, description, correlation IDs), never a request or response body, so never a secret.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub service: Service,
    pub status: Option<u16>,
    pub kind: ErrorKind,
    /// The OAuth `error` field (`invalid_client`, `authorization_pending`, …).
    pub oauth_error: Option<String>,
    /// The AADSTS numbers of `error_codes`.
    pub aadsts: Vec<u32>,
    /// Graph's `error.code`.
    pub graph_code: Option<String>,
    /// Partner Center's numeric `code`.
    pub partner_center_code: Option<i64>,
    /// The server's description (first line), or ours for client-side failures.
    pub message: String,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    /// Throttled with a `Retry-After` too long to wait out in this run: when to come back.
    pub retry_at: Option<time::OffsetDateTime>,
}

/// AADSTS codes for "you asked the authority about no tenant, or one it does not know".
const NEEDS_TENANT_ID: [u32; 3] = [50059, 900023, 9001023];
/// Longest server message we carry; a description longer than this is cut, not dumped.
const MAX_MESSAGE: usize = 600;

impl ApiError {
    /// An error with only a kind and a message; the constructors below fill the rest.
    pub fn new(service: Service, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            service,
            status: None,
            kind,
            oauth_error: None,
            aadsts: Vec::new(),
            graph_code: None,
            partner_center_code: None,
            message: message.into(),
            request_id: None,
            correlation_id: None,
            trace_id: None,
            retry_at: None,
        }
    }

    /// A transport failure. The URL is left out of the text (it is in the context the caller adds)
    /// and the body is never read into it.
    pub(crate) fn from_reqwest(service: Service, e: &reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else if e.is_decode() {
            ErrorKind::Decode
        } else {
            ErrorKind::Network
        };
        let mut text = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(e);
        // reqwest's top-level text repeats the URL; the causes say what actually broke.
        while let Some(s) = source {
            let part = s.to_string();
            // hyper's "client error (Connect)" only names the layer; its cause says what happened.
            let noise = part.starts_with("client error (");
            if !noise
                && !part.contains("http://")
                && !part.contains("https://")
                && !text.contains(&part)
            {
                if !text.is_empty() {
                    text.push_str(": ");
                }
                text.push_str(&part);
            }
            source = s.source();
        }
        if text.is_empty() {
            text = match kind {
                ErrorKind::Timeout => "the request timed out".into(),
                _ => "the connection failed".into(),
            };
        }
        ApiError::new(service, kind, truncate(&text))
    }

    /// A 2xx body that does not have the documented shape. serde's own message is not used: it can
    /// quote the offending value, which may be a token.
    pub(crate) fn decode(service: Service, what: &str, e: &serde_json::Error) -> Self {
        ApiError::new(
            service,
            ErrorKind::Decode,
            format!(
                "unexpected {what} response ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    }

    pub(crate) fn refused(service: Service, message: impl Into<String>) -> Self {
        ApiError::new(service, ErrorKind::Refused, message)
    }

    pub fn has_aadsts(&self, code: u32) -> bool {
        self.aadsts.contains(&code)
    }

    pub fn is_graph_code(&self, code: &str) -> bool {
        self.graph_code.as_deref() == Some(code)
    }

    pub fn is_oauth_error(&self, error: &str) -> bool {
        self.oauth_error.as_deref() == Some(error)
    }

    /// AADSTS7000215 / 70002: the secret does not authenticate (wrong value, or not yet propagated).
    pub fn is_invalid_secret(&self) -> bool {
        self.has_aadsts(7000215) || self.has_aadsts(70002)
    }

    /// The exit code of product.md for this failure.
    pub fn exit(&self) -> Exit {
        match self.kind {
            ErrorKind::Refused => return Exit::Usage,
            ErrorKind::Network | ErrorKind::Timeout => return Exit::Unreachable,
            ErrorKind::Interaction => return Exit::SignIn,
            ErrorKind::Decode => return Exit::Failure,
            ErrorKind::Http => {}
        }
        let any = |codes: &[u32]| codes.iter().any(|c| self.has_aadsts(*c));
        if any(&NEEDS_TENANT_ID) {
            return Exit::Usage;
        }
        if any(&[7000215, 70002, 7000222]) {
            return Exit::Verify;
        }
        if any(&[65001, 53003, 530035]) {
            return Exit::Permission;
        }
        if !self.aadsts.is_empty() || self.oauth_error.is_some() {
            // Every other sign-in failure: MFA, wrong tenant, declined, expired, revoked…
            return match self.status {
                Some(429 | 500..=599) => Exit::Unreachable,
                _ => Exit::SignIn,
            };
        }
        match self.graph_code.as_deref() {
            Some("Authorization_RequestDenied") => return Exit::Permission,
            Some("CredentialInvalidLifetimeAsPerAppPolicy")
            | Some("CredentialTypeNotAllowedAsPerAppPolicy") => return Exit::Policy,
            Some("Request_ResourceNotFound") => return Exit::NotFound,
            Some("InvalidAuthenticationToken") => return Exit::SignIn,
            _ => {}
        }
        if self.partner_center_code == Some(900421) {
            return Exit::SignIn;
        }
        match self.status {
            Some(300..=399) => Exit::Unreachable,
            Some(401) => Exit::SignIn,
            Some(403) => Exit::Permission,
            Some(404) => Exit::NotFound,
            Some(429 | 500..=599) => Exit::Unreachable,
            _ => Exit::Failure,
        }
    }

    /// The next step for the person at the terminal, when there is a useful one.
    pub fn hint(&self) -> Option<String> {
        let any = |codes: &[u32]| codes.iter().any(|c| self.has_aadsts(*c));
        let s = |t: &str| Some(t.to_string());
        match self.kind {
            // The authority refuses only tenant values (an alias for client credentials, or a
            // value that is not a tenant); other refusals' messages already say what to give.
            ErrorKind::Refused if self.service == Service::Authority => {
                return s("give the tenant ID (a GUID) or a verified domain with --tenant");
            }
            ErrorKind::Refused => return None,
            ErrorKind::Network => {
                return s(
                    "check the network connection and any proxy (HTTPS_PROXY, NO_PROXY), then run the command again",
                );
            }
            ErrorKind::Timeout => {
                return s("the service did not answer in time; run the command again in a minute");
            }
            ErrorKind::Decode => {
                return s(
                    "the service answered in an unexpected format; check --cloud and the endpoint URLs",
                );
            }
            ErrorKind::Interaction if self.is_oauth_error("expired_token") => {
                return s("the sign-in code expired; run the command again to get a new one");
            }
            ErrorKind::Interaction => {
                return s("run the command again, or sign in with --auth device-code");
            }
            ErrorKind::Http => {}
        }
        if any(&NEEDS_TENANT_ID) {
            return s("give the tenant ID (a GUID) or a verified domain with --tenant");
        }
        if any(&[7000215, 70002]) {
            return s(
                "the secret does not authenticate: use the secret's value, not its ID (a GUID); a secret created seconds ago may still be propagating",
            );
        }
        if self.has_aadsts(7000222) {
            return s("the secret has expired: run `csp-onboard rotate` to create a new one");
        }
        if self.has_aadsts(700016) {
            return s(
                "the application was not found in that tenant: check --tenant and the App ID (or --client-id)",
            );
        }
        if self.has_aadsts(7000229) {
            return s(
                "the app has no service principal in this tenant: create one, or check the tenant",
            );
        }
        if any(&[50076, 50079, 50074]) {
            return s(
                "multi-factor authentication is required: sign in interactively again (--auth browser or --auth device-code)",
            );
        }
        if self.has_aadsts(65001) {
            return s(
                "consent is missing: a Global admin must grant consent to the app (sign in as Global admin, or grant admin consent in the Entra admin center)",
            );
        }
        if any(&[53003, 530035]) {
            return s(
                "blocked by a Conditional Access policy: try the other sign-in method (--auth browser instead of --auth device-code, or the reverse), or ask your admin",
            );
        }
        if any(&[50020, 50034]) {
            return s(
                "this account is not in that tenant: sign in with an account of the partner tenant, or check --tenant",
            );
        }
        if any(&[90002, 90038]) {
            return s(
                "the tenant was not found in this cloud: check --tenant and --cloud (global, usgov, china)",
            );
        }
        if any(&[700082, 50173, 70043]) {
            return s("the sign-in has expired or was revoked: sign in again");
        }
        if self.has_aadsts(50196) {
            return s("the sign-in was polled too fast; wait a minute and sign in again");
        }
        match self.oauth_error.as_deref() {
            Some("authorization_declined") | Some("access_denied") => {
                return s("the sign-in was declined; run the command again and approve it");
            }
            Some("expired_token") => {
                return s("the sign-in code expired; run the command again to get a new one");
            }
            Some("bad_verification_code") => {
                return s("the device code was not recognised; run the command again");
            }
            _ => {}
        }
        match self.graph_code.as_deref() {
            Some("Authorization_RequestDenied") => {
                return s(
                    "this account lacks the directory role Graph requires (microsoft-apis.md §3.0): sign in as a Global Administrator or Application Administrator; an Admin agent adds the web app and its key in Partner Center > App management, then captures them (`csp-onboard init --app-id … --app-secret-stdin`)",
                );
            }
            Some("CredentialInvalidLifetimeAsPerAppPolicy") => {
                return s(
                    "a tenant policy caps secret lifetime: pass a shorter one with --secret-days N, or ask your admin for the app management policy's limit",
                );
            }
            Some("CredentialTypeNotAllowedAsPerAppPolicy") => {
                return s(
                    "a tenant policy forbids password credentials on apps: ask your admin to exempt this app from the app management policy",
                );
            }
            Some("Directory_ResourceSizeExceeded") => {
                return s(
                    "the app holds too many credentials: remove expired secrets, then run again",
                );
            }
            Some("Request_ResourceNotFound") => {
                return s("check the App ID and the tenant; the object may also have been deleted");
            }
            Some("InvalidAuthenticationToken") => {
                return s("the sign-in token was rejected or expired: sign in again");
            }
            _ => {}
        }
        if self.partner_center_code == Some(900421) {
            return s(
                "Partner Center requires multi-factor authentication: sign in again and complete MFA",
            );
        }
        if self.service == Service::PartnerCenter && matches!(self.status, Some(401 | 403)) {
            return s(
                "Partner Center refused the call: sign in as a Global admin or Admin agent of the partner tenant, and make sure the app is registered under App management (https://partner.microsoft.com/pcv/apiintegration/appmanagement)",
            );
        }
        if let Some(at) = self.retry_at {
            return Some(format!(
                "try again after {} UTC (a longer --deadline lets one run wait that out, up to 5 minutes)",
                at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ));
        }
        match self.status {
            Some(300..=399) => s(
                "the endpoint sent the request elsewhere: check --cloud and the endpoint URLs (or a proxy in between)",
            ),
            Some(429) => s(
                "the service kept throttling after several retries; wait a few minutes and run again",
            ),
            Some(500..=599) => s("the service kept failing after several retries; try again later"),
            Some(403) => s("sign in as a Global admin or an Admin agent of the partner tenant"),
            Some(401) => s("sign in again"),
            _ => None,
        }
    }

    pub fn to_user_error(&self) -> UserError {
        let e = UserError::new(self.exit(), self.to_string());
        match self.hint() {
            Some(h) => e.hint(h),
            None => e,
        }
    }

    /// Parse a non-2xx answer: an OAuth error (§2.5), a Graph error (§3.1), a Partner Center error or
    /// throttling body (§4), or anything else (reduced to the status line, never dumped).
    pub(crate) fn from_response(
        service: Service,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Self {
        let mut e = ApiError::new(service, ErrorKind::Http, String::new());
        e.status = Some(status);
        let json: Option<serde_json::Value> = serde_json::from_slice(strip_bom(body)).ok();
        if let Some(v) = json.as_ref().and_then(|v| v.as_object()) {
            fill_from_json(&mut e, v);
        }
        if e.message.is_empty() {
            e.message = format!(
                "HTTP {status}{}",
                reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            );
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.to_string())
        };
        if e.request_id.is_none() {
            e.request_id = header("request-id")
                .or_else(|| header("x-ms-request-id"))
                .or_else(|| header("ms-requestid"));
        }
        if e.correlation_id.is_none() {
            e.correlation_id = header("client-request-id").or_else(|| header("ms-correlationid"));
        }
        e
    }
}

/// The UTF-8 byte-order mark some Partner Center responses start with.
pub(crate) fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(body)
}

fn fill_from_json(e: &mut ApiError, v: &serde_json::Map<String, serde_json::Value>) {
    let str_of = |v: Option<&serde_json::Value>| v.and_then(|x| x.as_str()).map(str::to_string);
    match v.get("error") {
        // OAuth / Entra: {"error":"invalid_client","error_description":"AADSTS…","error_codes":[…],…}
        Some(serde_json::Value::String(code)) => {
            e.oauth_error = Some(code.clone());
            let description = str_of(v.get("error_description")).unwrap_or_default();
            e.aadsts = v
                .get("error_codes")
                .and_then(|c| c.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_u64())
                        .filter_map(|c| u32::try_from(c).ok())
                        .collect()
                })
                .unwrap_or_default();
            if e.aadsts.is_empty() {
                e.aadsts = aadsts_in(&description);
            }
            e.message = first_line_without_code(&description);
            if e.message.is_empty() {
                e.message = code.clone();
            }
            e.trace_id = str_of(v.get("trace_id"));
            e.correlation_id = str_of(v.get("correlation_id"));
        }
        // Graph: {"error":{"code":"…","message":"…","innerError":{"request-id":"…","client-request-id":"…"}}}
        Some(serde_json::Value::Object(err)) => {
            e.graph_code = str_of(err.get("code"));
            e.message = str_of(err.get("message")).unwrap_or_default();
            let inner = err.get("innerError").or_else(|| err.get("innererror"));
            if let Some(inner) = inner.and_then(|i| i.as_object()) {
                e.request_id = str_of(inner.get("request-id"));
                e.correlation_id = str_of(inner.get("client-request-id"));
            }
        }
        _ => {
            // Partner Center: {"code":3000,"description":"…","data":[],"source":"PartnerFD"}
            let code = v.get("code").and_then(|c| {
                c.as_i64()
                    .or_else(|| c.as_str().and_then(|s| s.trim().parse().ok()))
            });
            if let Some(code) = code {
                e.partner_center_code = Some(code);
                e.message = str_of(v.get("description"))
                    .or_else(|| str_of(v.get("message")))
                    .unwrap_or_default();
            } else if let Some(m) = str_of(v.get("message")) {
                // Partner Center throttling: {"statusCode":429,"message":"Rate limit is exceeded. …"}
                e.message = m;
            }
        }
    }
    e.message = truncate(e.message.trim());
}

/// All `AADSTSnnnn` numbers in a text (when a body has no `error_codes`).
fn aadsts_in(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("AADSTS") {
        rest = &rest[i + 6..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse() {
            out.push(n);
        }
    }
    out
}

/// "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: …" → "Invalid client secret provided."
/// The IDs that follow are carried in their own fields.
fn first_line_without_code(description: &str) -> String {
    let line = description.lines().next().unwrap_or("").trim();
    match line.strip_prefix("AADSTS") {
        Some(rest) => match rest.split_once(':') {
            Some((digits, text)) if digits.chars().all(|c| c.is_ascii_digit()) => {
                text.trim().to_string()
            }
            _ => line.to_string(),
        },
        None => line.to_string(),
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_MESSAGE).collect();
        t.push('…');
        t
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (self.kind, self.status) {
            (ErrorKind::Http, Some(status)) => {
                format!("{} refused the request (HTTP {status})", self.service)
            }
            (ErrorKind::Http, None) => format!("{} refused the request", self.service),
            (ErrorKind::Network, _) => format!("could not reach {}", self.service),
            (ErrorKind::Timeout, _) => format!("{} did not answer in time", self.service),
            (ErrorKind::Decode, _) => format!("{} sent an unexpected answer", self.service),
            (ErrorKind::Refused, _) => "refused to send the request".to_string(),
            (ErrorKind::Interaction, _) => "sign-in did not complete".to_string(),
        };
        write!(f, "{what}: {}", self.message)?;
        let mut tags: Vec<String> = Vec::new();
        tags.extend(self.aadsts.iter().map(|c| format!("AADSTS{c}")));
        if let Some(c) = &self.graph_code {
            tags.push(c.clone());
        }
        if let Some(c) = self.partner_center_code {
            tags.push(format!("Partner Center code {c}"));
        }
        if let Some(c) = &self.correlation_id {
            tags.push(format!("correlation ID {c}"));
        }
        if let Some(r) = &self.request_id {
            tags.push(format!("request ID {r}"));
        }
        if let Some(t) = &self.trace_id {
            tags.push(format!("trace ID {t}"));
        }
        if !tags.is_empty() {
            write!(f, " [{}]", tags.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn parse(service: Service, status: u16, body: &str) -> ApiError {
        ApiError::from_response(service, status, &HeaderMap::new(), body.as_bytes())
    }

    const AADSTS_BODY: &str = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app 'a1b2'.\r\nTrace ID: 0f1e-trace\r\nCorrelation ID: 9c8d-corr\r\nTimestamp: 2026-11-30 10:00:00Z","error_codes":[7000215],"timestamp":"2026-11-30 10:00:00Z","trace_id":"0f1e-trace","correlation_id":"9c8d-corr","error_uri":"https://login.microsoftonline.com/error?code=7000215"}"#;

    #[test]
    fn aadsts_body_gives_code_description_and_ids() {
        let e = parse(Service::Authority, 401, AADSTS_BODY);
        assert_eq!(e.oauth_error.as_deref(), Some("invalid_client"));
        assert_eq!(e.aadsts, vec![7000215]);
        assert!(
            e.message.starts_with("Invalid client secret provided."),
            "{}",
            e.message
        );
        assert!(
            !e.message.contains("Trace ID"),
            "IDs belong in their own fields"
        );
        assert_eq!(e.trace_id.as_deref(), Some("0f1e-trace"));
        assert_eq!(e.correlation_id.as_deref(), Some("9c8d-corr"));
        assert_eq!(e.exit(), Exit::Verify);
        let shown = e.to_user_error();
        assert!(shown.message.contains("AADSTS7000215"), "{}", shown.message);
        assert!(shown.message.contains("9c8d-corr"), "{}", shown.message);
        assert!(shown.hint.unwrap().contains("not its ID"));
    }

    #[test]
    fn aadsts_code_is_read_from_the_text_when_error_codes_is_missing() {
        let e = parse(
            Service::Authority,
            400,
            r#"{"error":"invalid_request","error_description":"AADSTS90002: Tenant 'x' not found."}"#,
        );
        assert_eq!(e.aadsts, vec![90002]);
        assert_eq!(e.exit(), Exit::SignIn);
        assert!(e.hint().unwrap().contains("--cloud"));
    }

    #[test]
    fn graph_body_gives_code_and_request_id() {
        let e = parse(
            Service::Graph,
            403,
            r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.","innerError":{"date":"2026-11-30T10:00:00","request-id":"req-1","client-request-id":"cli-1"}}}"#,
        );
        assert_eq!(e.graph_code.as_deref(), Some("Authorization_RequestDenied"));
        assert_eq!(
            e.message,
            "Insufficient privileges to complete the operation."
        );
        assert_eq!(e.request_id.as_deref(), Some("req-1"));
        assert_eq!(e.correlation_id.as_deref(), Some("cli-1"));
        assert_eq!(e.exit(), Exit::Permission);
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("Admin agent") && hint.contains("App management"),
            "{hint}"
        );
    }

    #[test]
    fn graph_lifetime_policy_error_is_a_policy_exit() {
        let e = parse(
            Service::Graph,
            400,
            r#"{"error":{"code":"CredentialInvalidLifetimeAsPerAppPolicy","message":"Credential lifetime exceeds the max value allowed as per assigned policy 'p'.","details":[{"code":"InvalidKeyEndDate","message":"x","target":"EndDate"}],"innerError":{}}}"#,
        );
        assert_eq!(e.exit(), Exit::Policy);
        let blocked = parse(
            Service::Graph,
            400,
            r#"{"error":{"code":"CredentialTypeNotAllowedAsPerAppPolicy","message":"no"}}"#,
        );
        assert_eq!(blocked.exit(), Exit::Policy);
        assert!(blocked.hint().unwrap().contains("forbids"));
    }

    #[test]
    fn partner_center_bodies() {
        let bom = "\u{feff}{\"code\":900150,\"description\":\"The supplied role does not have the rights to perform the requested operation.\",\"data\":[],\"source\":\"PartnerFD\"}";
        let e = parse(Service::PartnerCenter, 403, bom);
        assert_eq!(e.partner_center_code, Some(900150));
        assert!(e.message.starts_with("The supplied role"));
        assert_eq!(e.exit(), Exit::Permission);

        let throttled = parse(
            Service::PartnerCenter,
            429,
            r#"{"statusCode":429,"message":"Rate limit is exceeded. Try again in 57 seconds."}"#,
        );
        assert_eq!(
            throttled.message,
            "Rate limit is exceeded. Try again in 57 seconds."
        );
        assert_eq!(throttled.exit(), Exit::Unreachable);

        let mfa = parse(
            Service::PartnerCenter,
            401,
            r#"{"code":900421,"description":"MFA required","data":[],"source":"PartnerFD"}"#,
        );
        assert_eq!(mfa.exit(), Exit::SignIn);
        assert!(mfa.hint().unwrap().contains("MFA"));
    }

    #[test]
    fn a_non_json_body_is_never_dumped() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-request-id", HeaderValue::from_static("rid-7"));
        let e = ApiError::from_response(
            Service::Graph,
            502,
            &headers,
            b"<html><body>proxy error: token=abc</body></html>",
        );
        assert_eq!(e.message, "HTTP 502 Bad Gateway");
        assert_eq!(e.request_id.as_deref(), Some("rid-7"));
        assert!(!e.to_string().contains("<html>"));
        assert_eq!(e.exit(), Exit::Unreachable);
    }

    #[test]
    fn exit_table() {
        let with_code = |code: u32| {
            let mut e = ApiError::new(Service::Authority, ErrorKind::Http, "x");
            e.status = Some(400);
            e.oauth_error = Some("invalid_grant".into());
            e.aadsts = vec![code];
            e.exit()
        };
        for (code, exit) in [
            (7000215, Exit::Verify),
            (70002, Exit::Verify),
            (7000222, Exit::Verify),
            (65001, Exit::Permission),
            (53003, Exit::Permission),
            (530035, Exit::Permission),
            (50076, Exit::SignIn),
            (50020, Exit::SignIn),
            (90038, Exit::SignIn),
            (700082, Exit::SignIn),
            (700016, Exit::SignIn),
            (50059, Exit::Usage),
            (900023, Exit::Usage),
            (9001023, Exit::Usage),
        ] {
            assert_eq!(with_code(code), exit, "AADSTS{code}");
        }
        let graph = |status: u16, code: &str| {
            let mut e = ApiError::new(Service::Graph, ErrorKind::Http, "x");
            e.status = Some(status);
            e.graph_code = Some(code.into());
            e.exit()
        };
        assert_eq!(graph(404, "Request_ResourceNotFound"), Exit::NotFound);
        assert_eq!(graph(400, "Request_BadRequest"), Exit::Failure);
        assert_eq!(graph(503, "serviceNotAvailable"), Exit::Unreachable);
        assert_eq!(
            ApiError::new(Service::Graph, ErrorKind::Network, "refused").exit(),
            Exit::Unreachable
        );
        assert_eq!(
            ApiError::refused(Service::Authority, "no").exit(),
            Exit::Usage
        );
        assert_eq!(
            ApiError::new(Service::Authority, ErrorKind::Interaction, "x").exit(),
            Exit::SignIn
        );
    }

    #[test]
    fn missing_service_principal_says_create_one() {
        let e = parse(
            Service::Authority,
            400,
            r#"{"error":"invalid_client","error_description":"AADSTS7000229: The client application x is missing service principal in the tenant y.","error_codes":[7000229]}"#,
        );
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("no service principal in this tenant") && hint.contains("create one"),
            "{hint}"
        );
    }

    #[test]
    fn needs_tenant_codes_say_give_the_tenant_id() {
        let e = parse(
            Service::Authority,
            400,
            r#"{"error":"invalid_request","error_description":"AADSTS50059: No tenant-identifying information found.","error_codes":[50059]}"#,
        );
        assert!(e.hint().unwrap().contains("tenant ID"));
    }

    #[test]
    fn decode_error_never_quotes_the_value() {
        let err = serde_json::from_str::<u64>("\"s3cr3t-token-value\"").unwrap_err();
        let e = ApiError::decode(Service::Authority, "token", &err);
        assert!(!format!("{e:?} {e}").contains("s3cr3t"));
    }
}

//! The HTTP plumbing shared by the three services: loopback listeners, per-connection serving
//! (so a fault can drop a connection), and the per-request pipeline: sequence number, latency,
//! injected faults and throttling, dispatch, request log, and the "hang after applying" knob.

use super::{FaultKind, LoggedRequest, Service, Shared};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// One request, read whole: the services are small and synchronous over the locked state.
pub(crate) struct Req {
    pub method: Method,
    /// Percent-decoded path.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The media type of the body, lower-cased, without parameters such as `charset`.
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }

    pub fn bearer(&self) -> Option<&str> {
        let h = self.header("authorization")?;
        let (scheme, token) = h.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
            .filter(|t| !t.is_empty())
    }
}

/// Signals the connection task to close the socket without answering.
#[derive(Clone)]
pub(crate) struct Kill(pub Arc<Notify>);

#[derive(Clone)]
struct Entry {
    shared: Arc<Shared>,
    service: Service,
}

pub(crate) fn spawn_listener(
    listener: TcpListener,
    shared: Arc<Shared>,
    service: Service,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .fallback(entry)
        .with_state(Entry { shared, service });
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    // Transient accept errors (EMFILE…): keep serving.
                    Err(_) => continue,
                },
                _ = shutdown.changed() => break,
            };
            let kill = Kill(Arc::new(Notify::new()));
            let svc = hyper_util::service::TowerToHyperService::new(
                app.clone().layer(Extension(kill.clone())),
            );
            let mut conn_shutdown = shutdown.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
                // Dropping the connection future closes the socket with no response.
                tokio::select! {
                    _ = conn => {}
                    _ = kill.0.notified() => {}
                    _ = conn_shutdown.changed() => {}
                }
            });
        }
    })
}

const SENSITIVE_QUERY_KEYS: &[&str] = &[
    "code",
    "code_verifier",
    "client_secret",
    "refresh_token",
    "access_token",
    "device_code",
    "id_token",
    "assertion",
    "client_assertion",
    // A blob's SAS token: the signature is what grants access.
    "sig",
];

/// The path and query for the log, with any credential-like query value masked.
fn loggable_path(uri: &axum::http::Uri) -> String {
    let Some(q) = uri.query() else {
        return uri.path().to_string();
    };
    let parts: Vec<String> = q
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SENSITIVE_QUERY_KEYS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=****")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), parts.join("&"))
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hexpair = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hexpair, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const MAX_BODY: usize = 1 << 20;

async fn entry(State(e): State<Entry>, Extension(kill): Extension<Kill>, req: Request) -> Response {
    let shared = e.shared;
    let seq = shared.next_seq();
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let log_path = loggable_path(&parts.uri);
    let hdr = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut logged = LoggedRequest {
        seq,
        at,
        service: e.service,
        method: method.to_string(),
        path: log_path.clone(),
        status: 0,
        ms_request_id: hdr("ms-requestid"),
        ms_correlation_id: hdr("ms-correlationid"),
        client_request_id: hdr("client-request-id"),
        delivered: true,
    };

    let knobs = shared.knobs();
    if !knobs.latency.is_zero() {
        tokio::time::sleep(knobs.latency).await;
    }

    let route_key = format!("{method} {log_path}");
    let injected = match shared.match_fault(&route_key) {
        Some(FaultKind::DropConnection) => {
            logged.delivered = false;
            shared.log(logged);
            kill.0.notify_one();
            return std::future::pending().await;
        }
        Some(FaultKind::Status(code)) => Some(fault_response(e.service, code)),
        None => shared
            .match_throttle(&route_key)
            .map(|retry_after| throttle_response(e.service, retry_after)),
    };

    let response = match injected {
        Some(r) => r,
        None => match axum::body::to_bytes(body, MAX_BODY).await {
            Err(_) => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
            Ok(bytes) => {
                let query = parts
                    .uri
                    .query()
                    .map(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .into_owned()
                            .collect()
                    })
                    .unwrap_or_default();
                let r = Req {
                    method,
                    path: percent_decode(parts.uri.path()),
                    query,
                    headers: parts.headers,
                    body: bytes,
                };
                match e.service {
                    Service::Authority => super::authority::handle(&shared, &r),
                    Service::Graph => super::graph::handle(&shared, &r),
                    Service::PartnerCenter => super::pc::handle(&shared, &r),
                }
            }
        },
    };

    let mut response = response;
    echo_request_ids(e.service, &logged, &mut response);
    logged.status = response.status().as_u16();
    let hang = knobs.hang_after_request == Some(seq)
        || knobs
            .hang_after_route
            .as_deref()
            .is_some_and(|r| route_key.contains(r));
    logged.delivered = !hang;
    shared.log(logged);
    if hang {
        // Applied, never answered: the client sees a request that never completes.
        return std::future::pending().await;
    }
    response
}

/// Graph echoes `client-request-id`, Partner Center `MS-RequestId`/`MS-CorrelationId`, on every
/// answer, injected faults and throttling included (handlers set them on their own answers).
fn echo_request_ids(service: Service, logged: &LoggedRequest, response: &mut Response) {
    let pairs: &[(&str, &Option<String>)] = match service {
        Service::Graph => &[("client-request-id", &logged.client_request_id)],
        Service::PartnerCenter => &[
            ("ms-requestid", &logged.ms_request_id),
            ("ms-correlationid", &logged.ms_correlation_id),
        ],
        Service::Authority => &[],
    };
    for (name, value) in pairs {
        if let Some(v) = value
            && let Ok(v) = axum::http::HeaderValue::from_str(v)
        {
            response.headers_mut().insert(*name, v);
        }
    }
}

fn fault_response(service: Service, code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match service {
        Service::Authority => {
            let (error, aadsts, text) = if code == 500 {
                ("server_error", 90013, "An internal server error occurred.")
            } else {
                (
                    "temporarily_unavailable",
                    90033,
                    "A transient error has occurred. Please try again.",
                )
            };
            super::authority::aad_error_response(status, error, aadsts, text)
        }
        Service::Graph => {
            let gcode = match code {
                503 => "serviceNotAvailable",
                504 => "timeout",
                502 => "badGateway",
                _ => "generalException",
            };
            super::graph::GraphError::new(
                status,
                gcode,
                "The service is temporarily unavailable. Please retry.",
            )
            .render(None)
        }
        Service::PartnerCenter => super::pc::pc_error(
            status,
            code as i64,
            "The service is temporarily unavailable. Please retry.",
        ),
    }
}

fn throttle_response(service: Service, retry_after: u64) -> Response {
    let mut resp = match service {
        Service::Authority => super::authority::aad_error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        Service::Graph => super::graph::GraphError::throttled().render(None),
        Service::PartnerCenter => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({
                "statusCode": 429,
                "message": format!("Rate limit is exceeded. Try again in {retry_after} seconds.")
            })),
        )
            .into_response(),
    };
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_masks_credentials_in_queries() {
        let uri: axum::http::Uri = "/x/authorize?client_id=a&code=SECRET&state=s"
            .parse()
            .unwrap();
        assert_eq!(
            loggable_path(&uri),
            "/x/authorize?client_id=a&code=****&state=s"
        );
        // A blob's SAS token: its signature is the credential.
        let uri: axum::http::Uri = "/billing-storage/t/o/b.json.gz?sv=1&se=2&sp=rl&sig=SIGNATURE"
            .parse()
            .unwrap();
        assert_eq!(
            loggable_path(&uri),
            "/billing-storage/t/o/b.json.gz?sv=1&se=2&sp=rl&sig=****"
        );
    }

    #[test]
    fn percent_decoding_of_graph_alternate_keys() {
        assert_eq!(
            percent_decode("/v1.0/applications(appId=%27abc%27)/%24ref%"),
            "/v1.0/applications(appId='abc')/$ref%"
        );
    }
}

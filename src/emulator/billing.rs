//! Graph's partner billing export (microsoft-apis.md §5b): the export actions, the long-running
//! operation, the manifest, and the SAS-protected blobs of gzip JSON lines, generated from a seed.
//!
//! | route (Graph listener) | checks → answer |
//! |---|---|
//! | `POST /v1.0/reports/partners/billing/usage/unbilled/export` | App-only token whose `roles` (or delegated `scp`) hold `PartnerBilling.Read.All`, else 403 Authorization_RequestDenied; JSON body with `currencyCode` (3 letters) and `billingPeriod` (`current`/`last`), optional `attributeSet` (`full`/`basic`), nothing else, else 400 → 202 + `Location` |
//! | `POST /v1.0/reports/partners/billing/usage/billed/export` | same permission; `invoiceId` required, optional `attributeSet` → 202 + `Location` |
//! | `GET /v1.0/reports/partners/billing/operations/{id}` | 200 `runningOperation` + `Retry-After` while `operation_running` lasts (and the data is being generated); then `failedOperation` (`fail_export`) or `exportSuccessOperation` with `resourceLocation@odata.navigationLink` or inline `resourceLocation` |
//! | `GET /v1.0/reports/partners/billing/manifests/{id}` | the manifest: `rootDirectory`, `sasToken` (no leading `?`), `blobCount`, `blobs[{name, partitionValue}]`, `dataFormat` |
//! | `GET /billing-storage/{tenant}/{operation}/{blob}?{sas}` | Azure Storage's XML errors: 403 AuthenticationFailed when the signature is wrong or `se` has passed; 404 BlobNotFound → the gzip blob (`truncate_blob` cuts the first one short) |
//!
//! The loose points of the docs vary by default, one export to the next ([`ExportStyle`]): key
//! casing (PascalCase as the field table, or camelCase with `unitOfMeasure`/`resellerMpnId`),
//! `dataFormat` (`compressedJSONLines` / `compressedJSON`), the status word's casing, and the
//! manifest by link or inline. A knob pins one style.

use super::graph::GraphError;
use super::server::Req;
use super::state::{self, new_guid};
use super::{Emulator, Shared, token};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The Graph application permission the export needs.
pub const BILLING_ROLE: &str = "PartnerBilling.Read.All";
/// Where the emulator's "Azure Blob Storage" lives on the Graph listener.
pub(crate) const BLOB_PREFIX: &str = "/billing-storage/";
const OPS: &str = "/v1.0/reports/partners/billing/operations/";
const MANIFESTS: &str = "/v1.0/reports/partners/billing/manifests/";
const NS: &str = "#microsoft.graph.partners.billing";

/// How the loose points of the docs are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportStyle {
    /// PascalCase keys, `resourceLocation@odata.navigationLink`, `compressedJSONLines`, `succeeded`.
    PascalLink,
    /// camelCase keys (`unitOfMeasure`, `resellerMpnId`), inline `resourceLocation`,
    /// `compressedJSON`, `Succeeded`.
    CamelInline,
}

/// The billing export's knobs (part of [`super::Knobs`]).
#[derive(Clone, Debug)]
pub struct BillingKnobs {
    /// Line items in an export.
    pub usage_rows: u64,
    /// Seed of the synthetic data: the same seed and size give the same blobs.
    pub usage_seed: u64,
    /// An operation answers `running` for at least this long.
    pub operation_running: Duration,
    /// `Retry-After` on a running operation, in seconds.
    pub retry_after_secs: u64,
    /// Operations end `failed` (code 5000, "No data available").
    pub fail_export: bool,
    /// The first blob is served cut in half.
    pub truncate_blob: bool,
    /// How long a manifest's SAS token is valid (from when the manifest is first read).
    pub sas_lifetime: Duration,
    /// None: alternate the styles, one export to the next.
    pub style: Option<ExportStyle>,
    /// Also write the generated blobs here (benchmarks read the same files with other tools).
    pub blob_dir: Option<PathBuf>,
    /// Line items per blob (the last one holds the rest).
    pub rows_per_blob: u64,
    /// The admin who opens the admin-consent URL declines.
    pub admin_consent_declined: bool,
}

impl Default for BillingKnobs {
    fn default() -> Self {
        BillingKnobs {
            usage_rows: 20_000,
            usage_seed: 1,
            operation_running: Duration::from_secs(2),
            retry_after_secs: 1,
            fail_export: false,
            truncate_blob: false,
            sas_lifetime: Duration::from_secs(3600),
            style: None,
            blob_dir: None,
            rows_per_blob: 50_000,
            admin_consent_declined: false,
        }
    }
}

/// `csp-onboard emulator` flags for the billing export.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BillingArgs {
    /// Line items in each usage export (synthetic, seeded).
    #[arg(long, value_name = "N")]
    pub usage_rows: Option<u64>,
    /// Seed of the synthetic usage data.
    #[arg(long, value_name = "N")]
    pub usage_seed: Option<u64>,
    /// How long an export operation stays running, in milliseconds (default 2000).
    #[arg(long, value_name = "MS")]
    pub usage_running_ms: Option<u64>,
    /// Retry-After on a running export operation, in seconds (default 1).
    #[arg(long, value_name = "SECS")]
    pub usage_retry_after: Option<u64>,
    /// Export operations fail (code 5000, "No data available").
    #[arg(long)]
    pub usage_fail: bool,
    /// Serve the first blob of each export cut short.
    #[arg(long)]
    pub usage_truncate_blob: bool,
    /// SAS tokens expire this many seconds after the manifest is read (default 3600).
    #[arg(long, value_name = "SECS")]
    pub usage_sas_lifetime: Option<u64>,
    /// Pin the answers' style (default: alternate, one export to the next).
    #[arg(long, value_enum)]
    pub usage_style: Option<ExportStyle>,
    /// Also write the generated blobs into DIR.
    #[arg(long, value_name = "DIR")]
    pub usage_blob_dir: Option<PathBuf>,
}

impl BillingArgs {
    pub fn knobs(&self) -> BillingKnobs {
        let d = BillingKnobs::default();
        BillingKnobs {
            usage_rows: self.usage_rows.unwrap_or(d.usage_rows),
            usage_seed: self.usage_seed.unwrap_or(d.usage_seed),
            operation_running: self
                .usage_running_ms
                .map(Duration::from_millis)
                .unwrap_or(d.operation_running),
            retry_after_secs: self.usage_retry_after.unwrap_or(d.retry_after_secs),
            fail_export: self.usage_fail,
            truncate_blob: self.usage_truncate_blob,
            sas_lifetime: self
                .usage_sas_lifetime
                .map(Duration::from_secs)
                .unwrap_or(d.sas_lifetime),
            style: self.usage_style,
            blob_dir: self.usage_blob_dir.clone(),
            ..d
        }
    }
}

/// The generated blobs of one data set: (name, gzip bytes).
type Blobs = Vec<(String, Bytes)>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct DataKey {
    rows: u64,
    seed: u64,
    rows_per_blob: u64,
    /// `current`, `last` or `invoice:{id}`.
    scope: String,
    currency: String,
    basic: bool,
    camel: bool,
}

struct Operation {
    created: Instant,
    created_at: OffsetDateTime,
    running_for: Duration,
    retry_after: u64,
    fail: bool,
    truncate: bool,
    style: ExportStyle,
    data: Arc<OnceLock<Arc<Blobs>>>,
    /// Set when the manifest is first produced: the SAS expiry.
    sas_expires: Option<OffsetDateTime>,
    sas_lifetime: Duration,
}

/// Operations and generated data sets, in memory (an export lives within one emulator run).
#[derive(Default)]
pub(crate) struct Exports {
    ops: Mutex<HashMap<String, Operation>>,
    data: Mutex<HashMap<DataKey, Arc<OnceLock<Arc<Blobs>>>>>,
    count: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn denied() -> GraphError {
    GraphError::new(
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

fn bad(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn not_found(what: &str) -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("Resource '{what}' does not exist."),
    )
}

/// The caller may export: an App-only token holding the application permission, or a delegated
/// token with the delegated one (Graph "unbilledUsage: export", Permissions).
fn permitted(shared: &Shared, req: &Req) -> bool {
    let Some(bearer) = req.bearer() else {
        return false;
    };
    let Ok(claims) = shared.read(|d| token::verify(&d.signing_key, bearer)) else {
        return false;
    };
    let roles = claims["roles"].as_array().cloned().unwrap_or_default();
    let scp = claims["scp"].as_str().unwrap_or("");
    roles.iter().any(|r| r.as_str() == Some(BILLING_ROLE))
        || scp.split(' ').any(|s| s == BILLING_ROLE)
}

/// A JSON object body whose properties are all in `allowed` (Graph refuses unknown properties).
fn body(req: &Req, allowed: &[&str]) -> Result<Map<String, Value>, GraphError> {
    if req.media_type().as_deref() != Some("application/json") {
        return Err(bad(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        ));
    }
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&req.body) else {
        return Err(bad(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        ));
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "The property '{k}' does not exist on type 'microsoft.graph.partners.billing.exportRequest'."
        )));
    }
    Ok(m)
}

fn required<'a>(m: &'a Map<String, Value>, name: &str) -> Result<&'a str, GraphError> {
    match m.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(bad(format!("Invalid value for '{name}'."))),
        None => Err(bad(format!("The '{name}' parameter is required."))),
    }
}

fn attribute_set(m: &Map<String, Value>) -> Result<bool, GraphError> {
    match m.get("attributeSet") {
        None => Ok(false),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("full") => Ok(false),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("basic") => Ok(true),
        Some(_) => Err(bad("Invalid value for 'attributeSet': use full or basic.")),
    }
}

/// The Graph routes under `/v1.0/reports/partners/billing/` (`tail` is what follows it).
/// The caller's token has already been authenticated by the Graph router.
pub(crate) fn graph_route(
    shared: &Shared,
    req: &Req,
    tail: &[&str],
) -> Result<Response, GraphError> {
    let m = &req.method;
    match tail {
        ["usage", kind @ ("unbilled" | "billed"), "export"] => {
            if m != Method::POST {
                return Err(method_not_allowed());
            }
            if !permitted(shared, req) {
                return Err(denied());
            }
            let (scope, currency, basic) = if *kind == "unbilled" {
                let b = body(req, &["currencyCode", "billingPeriod", "attributeSet"])?;
                let currency = required(&b, "currencyCode")?;
                if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
                    return Err(bad(format!("Invalid currencyCode '{currency}'.")));
                }
                let period = required(&b, "billingPeriod")?.to_ascii_lowercase();
                if period != "current" && period != "last" {
                    return Err(bad(format!(
                        "Invalid billingPeriod '{period}': use current or last."
                    )));
                }
                (period, currency.to_ascii_uppercase(), attribute_set(&b)?)
            } else {
                let b = body(req, &["invoiceId", "attributeSet"])?;
                let invoice = required(&b, "invoiceId")?;
                // An invoice is billed in the partner's currency; the emulator's is USD.
                (
                    format!("invoice:{invoice}"),
                    "USD".to_string(),
                    attribute_set(&b)?,
                )
            };
            Ok(start_export(shared, scope, currency, basic))
        }
        ["operations", id] if m == Method::GET => operation(shared, id),
        ["manifests", id] if m == Method::GET => {
            let mut ops = lock(&shared.billing.ops);
            let op = ops.get_mut(*id).ok_or_else(|| not_found(id))?;
            let Some(data) = op.data.get().cloned() else {
                return Err(not_found(id));
            };
            let tenant = shared.read(|d| d.tenant_id.clone());
            let manifest = manifest(shared, op, id, &tenant, &data);
            Ok((StatusCode::OK, axum::Json(manifest)).into_response())
        }
        ["operations" | "manifests", _] => Err(method_not_allowed()),
        _ => Err(bad(format!(
            "Resource not found for the segment '{}'.",
            tail.first().copied().unwrap_or("")
        ))),
    }
}

fn method_not_allowed() -> GraphError {
    GraphError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
}

fn start_export(shared: &Shared, scope: String, currency: String, basic: bool) -> Response {
    let k = shared.knobs().billing;
    let n = shared.billing.count.fetch_add(1, Ordering::SeqCst);
    let style = k.style.unwrap_or(if n.is_multiple_of(2) {
        ExportStyle::PascalLink
    } else {
        ExportStyle::CamelInline
    });
    let key = DataKey {
        rows: k.usage_rows,
        seed: k.usage_seed,
        rows_per_blob: k.rows_per_blob.max(1),
        scope,
        currency,
        basic,
        camel: style == ExportStyle::CamelInline,
    };
    let (cell, fresh) = {
        let mut data = lock(&shared.billing.data);
        match data.get(&key) {
            Some(c) => (c.clone(), false),
            None => {
                let c = Arc::new(OnceLock::new());
                data.insert(key.clone(), c.clone());
                (c, true)
            }
        }
    };
    if fresh {
        // Microsoft prepares the data while the operation runs; so does the emulator.
        let (tenant, cell, dir) = (
            shared.read(|d| d.tenant_id.clone()),
            cell.clone(),
            k.blob_dir.clone(),
        );
        std::thread::spawn(move || {
            let blobs = generate(&key, &tenant);
            if let Some(dir) = dir {
                let _ = std::fs::create_dir_all(&dir);
                for (name, bytes) in &blobs {
                    if let Err(e) = std::fs::write(dir.join(name), bytes) {
                        eprintln!("csp-onboard emulator: could not write a usage blob: {e}");
                    }
                }
            }
            let _ = cell.set(Arc::new(blobs));
        });
    }
    let id = new_guid();
    lock(&shared.billing.ops).insert(
        id.clone(),
        Operation {
            created: Instant::now(),
            created_at: OffsetDateTime::now_utc(),
            running_for: k.operation_running,
            retry_after: k.retry_after_secs,
            fail: k.fail_export,
            truncate: k.truncate_blob,
            style,
            data: cell,
            sas_expires: None,
            sas_lifetime: k.sas_lifetime,
        },
    );
    let mut r = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}{OPS}{id}", shared.urls.graph)) {
        r.headers_mut().insert("location", v);
    }
    if let Ok(v) = HeaderValue::from_str(&k.retry_after_secs.to_string()) {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

fn operation(shared: &Shared, id: &str) -> Result<Response, GraphError> {
    let tenant = shared.read(|d| d.tenant_id.clone());
    let mut ops = lock(&shared.billing.ops);
    let op = ops.get_mut(id).ok_or_else(|| not_found(id))?;
    let now = OffsetDateTime::now_utc();
    let ctx =
        "https://graph.microsoft.com/v1.0/$metadata#reports/partners/billing/operations/$entity";
    let mut v = json!({
        "@odata.context": ctx,
        "id": id,
        "createdDateTime": rfc3339(op.created_at),
        "lastActionDateTime": rfc3339(now),
    });
    let ready = op.data.get().cloned();
    let running = op.created.elapsed() < op.running_for || ready.is_none();
    if running {
        v["@odata.type"] = json!(format!("{NS}.runningOperation"));
        v["status"] = json!("running");
        let mut r = (StatusCode::OK, axum::Json(v)).into_response();
        if let Ok(h) = HeaderValue::from_str(&op.retry_after.to_string()) {
            r.headers_mut().insert("retry-after", h);
        }
        return Ok(r);
    }
    if op.fail {
        v["@odata.type"] = json!(format!("{NS}.failedOperation"));
        v["status"] = json!("failed");
        v["error"] = json!({"code": "5000", "message": "No data available"});
        return Ok((StatusCode::OK, axum::Json(v)).into_response());
    }
    v["@odata.type"] = json!(format!("{NS}.exportSuccessOperation"));
    match op.style {
        ExportStyle::PascalLink => {
            v["status"] = json!("succeeded");
            v["resourceLocation@odata.navigationLink"] =
                json!(format!("{}{MANIFESTS}{id}", shared.urls.graph));
        }
        ExportStyle::CamelInline => {
            v["status"] = json!("Succeeded");
            let data = ready.expect("checked above");
            v["resourceLocation"] = manifest(shared, op, id, &tenant, &data);
        }
    }
    Ok((StatusCode::OK, axum::Json(v)).into_response())
}

/// The SAS signature over the folder and the expiry, keyed by the tenant's signing key.
fn sas_signature(shared: &Shared, folder: &str, se: &str) -> String {
    let key = shared.read(|d| d.signing_key.clone());
    state::sha256_hex(&format!("{key}\n{folder}\n{se}"))
}

fn manifest(shared: &Shared, op: &mut Operation, id: &str, tenant: &str, data: &Blobs) -> Value {
    let expires = *op.sas_expires.get_or_insert_with(|| {
        OffsetDateTime::now_utc() + time::Duration::try_from(op.sas_lifetime).unwrap_or_default()
    });
    let folder = format!("{BLOB_PREFIX}{tenant}/{id}");
    let se = rfc3339(expires);
    let st = rfc3339(op.created_at);
    let sig = sas_signature(shared, &folder, &se);
    let sas = format!(
        "sv=2023-11-03&st={}&se={}&sr=c&sp=rl&sig={sig}",
        url_encode(&st),
        url_encode(&se)
    );
    let camel = op.style == ExportStyle::CamelInline;
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#reports/partners/billing/manifests/$entity",
        "id": id,
        "schemaVersion": "2",
        "dataFormat": if camel { "compressedJSON" } else { "compressedJSONLines" },
        "createdDateTime": rfc3339(op.created_at),
        "eTag": format!("{:x}", op.created_at.unix_timestamp()),
        "partnerTenantId": tenant,
        "rootDirectory": format!("{}{folder}", shared.urls.graph),
        "sasToken": sas,
        "partitionType": "default",
        "blobCount": data.len(),
        "blobs": data.iter().map(|(name, _)| json!({"name": name, "partitionValue": "default"})).collect::<Vec<_>>(),
    })
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn storage_error(status: StatusCode, code: &str, message: &str, detail: Option<&str>) -> Response {
    let now = OffsetDateTime::now_utc();
    let detail = detail
        .map(|d| format!("<AuthenticationErrorDetail>{d}</AuthenticationErrorDetail>"))
        .unwrap_or_default();
    let body = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:{}\nTime:{}</Message>{detail}</Error>",
        new_guid(),
        rfc3339(now)
    );
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    r.headers_mut().insert(
        "x-ms-error-code",
        HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("Error")),
    );
    r
}

/// `GET /billing-storage/{tenant}/{operation}/{blob}?{sas}`: None for any other path.
pub(crate) fn serve_blob(shared: &Shared, req: &Req) -> Option<Response> {
    let rest = req.path.strip_prefix(BLOB_PREFIX)?;
    Some(blob(shared, req, rest))
}

fn blob(shared: &Shared, req: &Req, rest: &str) -> Response {
    let auth_failed = |detail: &str| {
        storage_error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            Some(detail),
        )
    };
    let not_found = || {
        storage_error(
            StatusCode::NOT_FOUND,
            "BlobNotFound",
            "The specified blob does not exist.",
            None,
        )
    };
    if req.method != Method::GET {
        return storage_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnsupportedHttpVerb",
            "The resource doesn't support specified Http Verb.",
            None,
        );
    }
    let mut parts = rest.splitn(3, '/');
    let (Some(tenant), Some(op_id), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return not_found();
    };
    // The SAS token is the blob's only credential: a client that also sends its Graph bearer
    // token to storage leaks it to another host. Azure Storage's exact answer to a request with
    // both is UNCONFIRMED; refusing it makes such a leak a failing test here.
    if req.headers.contains_key(axum::http::header::AUTHORIZATION) {
        return auth_failed("A SAS request must not carry an Authorization header.");
    }
    let (Some(se), Some(sig)) = (req.q("se"), req.q("sig")) else {
        return auth_failed("Signature fields not well formed.");
    };
    let folder = format!("{BLOB_PREFIX}{tenant}/{op_id}");
    if sas_signature(shared, &folder, se) != sig || req.q("sp").is_none_or(|p| !p.contains('r')) {
        return auth_failed(
            "Signature did not match. String to sign used was r\n\n\n/blob/billing/default",
        );
    }
    let now = OffsetDateTime::now_utc();
    match OffsetDateTime::parse(se, &Rfc3339) {
        Ok(exp) if exp > now => {}
        _ => {
            return auth_failed(&format!(
                "Signed expiry time [{se}] must be after signed start time. Signature not valid in the specified time frame: Current [{}]",
                rfc3339(now)
            ));
        }
    }
    let ops = lock(&shared.billing.ops);
    let Some(op) = ops.get(op_id) else {
        return not_found();
    };
    let Some(data) = op.data.get() else {
        return not_found();
    };
    let Some(index) = data.iter().position(|(n, _)| n == name) else {
        return not_found();
    };
    let mut bytes = data[index].1.clone();
    if op.truncate && index == 0 {
        bytes = bytes.slice(..bytes.len() / 2);
    }
    drop(ops);
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut()
        .insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
    r
}

impl Emulator {
    /// Admin consent in the Entra portal: the app's App-only Graph tokens carry `role` from now on.
    pub fn grant_graph_app_role(&self, app_id: &str, role: &str) -> bool {
        self.shared.write(|d| {
            let Some(app) = d.app_by_app_id_mut(app_id) else {
                return false;
            };
            if !app.graph_roles.iter().any(|r| r == role) {
                app.graph_roles.push(role.to_string());
            }
            true
        })
    }

    /// The number of export operations started.
    pub fn usage_exports(&self) -> u64 {
        self.shared.billing.count.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// The synthetic data: a deterministic generator (SplitMix64), so a seed and a size always give
// the same blobs, whatever the thread count.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn guid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

struct Meter {
    category: &'static str,
    sub: &'static str,
    name: &'static str,
    unit: &'static str,
    service: &'static str,
    /// Price per unit in micro-units of the currency.
    price_micro: i64,
    id: String,
}

const METERS: &[(&str, &str, &str, &str, &str, i64)] = &[
    (
        "Virtual Machines",
        "Dv5 Series",
        "D4s v5",
        "1 Hour",
        "Microsoft.Compute",
        192_000,
    ),
    (
        "Virtual Machines",
        "Bs Series",
        "B2s",
        "1 Hour",
        "Microsoft.Compute",
        41_600,
    ),
    (
        "Virtual Machines",
        "Ev5 Series",
        "E8s v5",
        "1 Hour",
        "Microsoft.Compute",
        504_000,
    ),
    (
        "Storage",
        "Premium SSD Managed Disks",
        "P10 LRS Disk",
        "1/Month",
        "Microsoft.Compute",
        19_710_000,
    ),
    (
        "Storage",
        "Tiered Block Blob",
        "Hot LRS Data Stored",
        "1 GB/Month",
        "Microsoft.Storage",
        18_400,
    ),
    (
        "Storage",
        "Files",
        "LRS Write Operations",
        "10K",
        "Microsoft.Storage",
        65_000,
    ),
    (
        "Bandwidth",
        "Rtn Preference: MGN",
        "Standard Data Transfer Out",
        "1 GB",
        "Microsoft.Network",
        87_000,
    ),
    (
        "Virtual Network",
        "IP Addresses",
        "Standard IPv4 Static Public IP",
        "1 Hour",
        "Microsoft.Network",
        5_000,
    ),
    (
        "Azure App Service",
        "Premium v3 Plan",
        "P1 v3 App",
        "1 Hour",
        "Microsoft.Web",
        223_000,
    ),
    (
        "SQL Database",
        "General Purpose - Compute Gen5",
        "vCore",
        "1 Hour",
        "Microsoft.Sql",
        252_600,
    ),
    (
        "Azure Cosmos DB",
        "Azure Cosmos DB",
        "100 RU/s",
        "1/Hour",
        "Microsoft.DocumentDB",
        8_000,
    ),
    (
        "Log Analytics",
        "Analytics Logs",
        "Pay-as-you-go Data Ingestion",
        "1 GB",
        "Microsoft.OperationalInsights",
        2_760_000,
    ),
    (
        "Azure Monitor",
        "Metrics",
        "Metrics ingestion",
        "10M",
        "Microsoft.Insights",
        258_000,
    ),
    (
        "Key Vault",
        "Standard",
        "Operations",
        "10K",
        "Microsoft.KeyVault",
        30_000,
    ),
    (
        "Azure DNS",
        "Public",
        "Public Zone",
        "1/Month",
        "Microsoft.Network",
        500_000,
    ),
    (
        "Backup",
        "Azure VM Protected Instances",
        "Protected Instances",
        "1/Month",
        "Microsoft.RecoveryServices",
        10_000_000,
    ),
    (
        "Functions",
        "Premium",
        "vCPU Duration",
        "1 Hour",
        "Microsoft.Web",
        173_000,
    ),
    (
        "Container Registry",
        "Standard",
        "Registry Unit",
        "1/Day",
        "Microsoft.ContainerRegistry",
        667_000,
    ),
    (
        "Azure Kubernetes Service",
        "Standard",
        "Uptime SLA",
        "1 Hour",
        "Microsoft.ContainerService",
        100_000,
    ),
    (
        "Microsoft Defender for Cloud",
        "Standard",
        "Servers Plan 2",
        "1 Hour",
        "Microsoft.Security",
        20_000,
    ),
];

const NAMES: &[&str] = &[
    "Fabrikam",
    "Contoso",
    "Northwind",
    "Tailspin",
    "Woodgrove",
    "Litware",
    "Adatum",
    "Proseware",
    "Wingtip",
    "Alpine Ski House",
    "Coho Winery",
    "Fourth Coffee",
    "Lamna Healthcare",
    "Margie's Travel",
    "Trey Research",
    "Relecloud",
    "VanArsdel",
    "Wide World Importers",
];
const COUNTRIES: &[&str] = &["US", "GB", "DE", "FR", "NL", "SE", "AU", "CA", "JP", "BR"];
const REGIONS: &[(&str, &str)] = &[
    ("US East", "eastus"),
    ("EU West", "westeurope"),
    ("EU North", "northeurope"),
    ("US West 2", "westus2"),
    ("UK South", "uksouth"),
    ("AU East", "australiaeast"),
];

/// One value of a generated line item.
enum V<'a> {
    S(&'a str),
    Micro(i64),
    Raw(&'static str),
}

struct Customer {
    id: String,
    name: String,
    domain: String,
    country: &'static str,
    subscriptions: Vec<String>,
}

/// The period's first day and number of days: `current` runs to today, `last` and an invoice are
/// the previous month.
fn period(scope: &str) -> (time::Date, u8) {
    let today = OffsetDateTime::now_utc().date();
    let first = today.replace_day(1).expect("day 1 exists");
    if scope == "current" {
        (first, today.day())
    } else {
        let prev_last = first.previous_day().expect("a day before");
        (
            prev_last.replace_day(1).expect("day 1 exists"),
            prev_last.day(),
        )
    }
}

/// Micro-units as a decimal with six places.
fn micro(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let v = v.unsigned_abs();
    format!("{sign}{}.{:06}", v / 1_000_000, v % 1_000_000)
}

/// camelCase names as the 2023 notice aligns them (with its two renames).
fn camel(pascal: &'static str) -> String {
    match pascal {
        "Unit" => "unitOfMeasure".into(),
        "Tier2MpnId" => "resellerMpnId".into(),
        "PCToBCExchangeRate" => "pcToBCExchangeRate".into(),
        "PCToBCExchangeRateDate" => "pcToBCExchangeRateDate".into(),
        _ => {
            let mut c = pascal.chars();
            let first = c.next().map(|f| f.to_ascii_lowercase()).unwrap_or_default();
            std::iter::once(first).chain(c).collect()
        }
    }
}

/// Columns the `basic` set leaves out (meter, resource and customer details).
const FULL_ONLY: &[&str] = &[
    "CustomerDomainName",
    "CustomerCountry",
    "MeterType",
    "MeterCategory",
    "MeterId",
    "MeterSubCategory",
    "MeterName",
    "MeterRegion",
    "ResourceLocation",
    "ConsumedService",
    "ResourceGroup",
    "ResourceURI",
    "ServiceInfo1",
    "ServiceInfo2",
    "Tags",
    "AdditionalInfo",
];

fn generate(key: &DataKey, tenant: &str) -> Blobs {
    let mut rng = Rng(key.seed ^ 0x5EED);
    let customers_n = (key.rows / 2000).clamp(5, 500);
    let customers: Vec<Customer> = (0..customers_n)
        .map(|i| {
            let base = NAMES[(i as usize) % NAMES.len()];
            let name = format!("{base} {:03}", i / NAMES.len() as u64 + 1);
            let slug: String = name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            let subs = 1 + rng.below(6) as usize;
            Customer {
                id: rng.guid(),
                domain: format!("{slug}.onmicrosoft.com"),
                name,
                country: COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize],
                subscriptions: (0..subs).map(|_| rng.guid()).collect(),
            }
        })
        .collect();
    let meters: Vec<Meter> = METERS
        .iter()
        .map(|&(category, sub, name, unit, service, price_micro)| Meter {
            category,
            sub,
            name,
            unit,
            service,
            price_micro,
            id: rng.guid(),
        })
        .collect();
    let per = key.rows_per_blob.max(1);
    let blobs = key.rows.div_ceil(per).max(1);
    let run_id = rng.guid();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(blobs as usize)
        .max(1);
    let next = AtomicU64::new(0);
    let out: Mutex<Vec<(u64, String, Bytes)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let b = next.fetch_add(1, Ordering::SeqCst);
                    if b >= blobs {
                        break;
                    }
                    let rows = per.min(key.rows.saturating_sub(b * per));
                    let bytes = blob_bytes(key, tenant, &customers, &meters, b, rows);
                    let name = format!("part-{b:05}-{run_id}-c000.json.gz");
                    lock(&out).push((b, name, bytes));
                }
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|e| e.into_inner());
    out.sort_by_key(|(b, _, _)| *b);
    out.into_iter().map(|(_, n, b)| (n, b)).collect()
}

fn blob_bytes(
    key: &DataKey,
    tenant: &str,
    customers: &[Customer],
    meters: &[Meter],
    blob: u64,
    rows: u64,
) -> Bytes {
    let mut rng = Rng(key.seed.wrapping_mul(0x100_0000_01B3) ^ (blob + 1));
    let (first_day, days) = period(if key.scope.starts_with("invoice:") {
        "last"
    } else {
        &key.scope
    });
    let invoice = key.scope.strip_prefix("invoice:").unwrap_or("");
    let charge_start = format!("{}T00:00:00Z", first_day);
    let charge_end = format!(
        "{}T00:00:00Z",
        first_day.replace_day(days).unwrap_or(first_day)
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut line = String::with_capacity(2048);
    for _ in 0..rows {
        // A few customers hold most of the usage, as in a real partner's book.
        let u = rng.unit();
        let c = &customers[((u * u) * customers.len() as f64) as usize % customers.len()];
        let sub = &c.subscriptions[rng.below(c.subscriptions.len() as u64) as usize];
        let m = &meters[rng.below(meters.len() as u64) as usize];
        let (region, location) = REGIONS[rng.below(REGIONS.len() as u64) as usize];
        let day = 1 + rng.below(u64::from(days)) as u8;
        let date = first_day.replace_day(day).unwrap_or(first_day);
        let qty_micro = 1 + rng.below(24_000_000) as i64;
        let pec = if rng.below(4) == 0 { 15 } else { 0 };
        let effective = m.price_micro * (100 - pec) / 100;
        let pricing_total = (i128::from(qty_micro) * i128::from(m.price_micro) / 1_000_000) as i64;
        let billing_total = (i128::from(qty_micro) * i128::from(effective) / 1_000_000) as i64;
        let rg = format!(
            "rg-{}-{:02}",
            m.service
                .rsplit('.')
                .next()
                .unwrap_or("app")
                .to_ascii_lowercase(),
            rng.below(8)
        );
        let resource_uri = format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}/res-{:03}",
            m.service,
            rng.below(40)
        );
        let tags = if rng.below(3) == 0 {
            V::Raw(r#""{\"env\":\"prod\",\"owner\":\"it\"}""#)
        } else {
            V::Raw("null")
        };
        let usage_date = format!("{date}T00:00:00Z");
        let fields: [(&'static str, V); 54] = [
            ("PartnerId", V::S(tenant)),
            ("PartnerName", V::S("Contoso Partner")),
            ("CustomerId", V::S(&c.id)),
            ("CustomerName", V::S(&c.name)),
            ("CustomerDomainName", V::S(&c.domain)),
            ("CustomerCountry", V::S(c.country)),
            ("MpnId", V::S("4914876")),
            ("Tier2MpnId", V::S("")),
            ("InvoiceNumber", V::S(invoice)),
            ("ProductId", V::S("DZH318Z0BQPS")),
            ("SkuId", V::S("0001")),
            ("AvailabilityId", V::S("DZH318Z08M22")),
            ("SkuName", V::S("Azure plan")),
            ("ProductName", V::S("Azure plan")),
            ("PublisherName", V::S("Microsoft")),
            ("PublisherId", V::S("")),
            ("SubscriptionId", V::S(sub)),
            ("ChargeStartDate", V::S(&charge_start)),
            ("ChargeEndDate", V::S(&charge_end)),
            ("UsageDate", V::S(&usage_date)),
            ("MeterType", V::S(m.unit)),
            ("MeterCategory", V::S(m.category)),
            ("MeterId", V::S(&m.id)),
            ("MeterSubCategory", V::S(m.sub)),
            ("MeterName", V::S(m.name)),
            ("MeterRegion", V::S(region)),
            ("Unit", V::S(m.unit)),
            ("ResourceLocation", V::S(location)),
            ("ConsumedService", V::S(m.service)),
            ("ResourceGroup", V::S(&rg)),
            ("ResourceURI", V::S(&resource_uri)),
            ("ChargeType", V::S("new")),
            ("UnitPrice", V::Micro(m.price_micro)),
            ("Quantity", V::Micro(qty_micro)),
            ("UnitType", V::S(m.unit)),
            ("BillingPreTaxTotal", V::Micro(billing_total)),
            ("BillingCurrency", V::S(&key.currency)),
            ("PricingPreTaxTotal", V::Micro(pricing_total)),
            ("PricingCurrency", V::S("USD")),
            ("ServiceInfo1", V::S("")),
            ("ServiceInfo2", V::S("")),
            ("Tags", tags),
            ("AdditionalInfo", V::S("")),
            ("EffectiveUnitPrice", V::Micro(effective)),
            ("PCToBCExchangeRate", V::Raw("1")),
            ("PCToBCExchangeRateDate", V::S(&charge_start)),
            ("EntitlementId", V::S(sub)),
            ("EntitlementDescription", V::S("Azure plan")),
            (
                "PartnerEarnedCreditPercentage",
                V::Raw(if pec == 0 { "0" } else { "15" }),
            ),
            ("CreditPercentage", V::Raw("0")),
            ("CreditType", V::S("Credit Not Applied")),
            ("BenefitOrderID", V::S("")),
            ("BenefitID", V::S("")),
            ("BenefitType", V::S("")),
        ];
        line.clear();
        line.push('{');
        let mut first = true;
        for (name, value) in &fields {
            if key.basic && FULL_ONLY.contains(name) {
                continue;
            }
            if !first {
                line.push(',');
            }
            first = false;
            line.push('"');
            if key.camel {
                line.push_str(&camel(name));
            } else {
                line.push_str(name);
            }
            line.push_str("\":");
            match value {
                // The generated strings hold no character that JSON needs escaped.
                V::S(s) => {
                    line.push('"');
                    line.push_str(s);
                    line.push('"');
                }
                // Amounts are decimal numbers with six places, never through a float.
                V::Micro(a) => line.push_str(&micro(*a)),
                V::Raw(r) => line.push_str(r),
            }
        }
        line.push_str("}\n");
        let _ = gz.write_all(line.as_bytes());
    }
    Bytes::from(gz.finish().unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Consent for the billing permission (microsoft-apis.md §5b and §3.0): the Graph service
// principal's appRoles, appRoleAssignments and the admin-consent URL (PATCH of requiredResourceAccess
// is the Graph router's own PATCH /applications/{id}).

/// The emulated Graph application permissions, by value. The IDs are this tenant's own (derived
/// from its signing key), not the public ones: a client that hard-codes an ID fails here, as it
/// would if Microsoft ever changed one.
const GRAPH_APP_ROLES: &[&str] = &[
    BILLING_ROLE,
    "Application.ReadWrite.All",
    "AppRoleAssignment.ReadWrite.All",
    "GroupMember.ReadWrite.All",
    "Organization.Read.All",
    "Policy.Read.All",
];

fn role_id(signing_key: &str, value: &str) -> String {
    let h = state::sha256_hex(&format!("{signing_key}/approle/{value}"));
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// `GET /servicePrincipals(appId='00000003-…')?$select=…appRoles…`: the Graph service principal
/// with its `appRoles`. None for any other request (the Graph router answers those).
pub(crate) fn graph_app_roles(shared: &Shared, req: &Req, app_id: &str) -> Option<Response> {
    let wants = req
        .q("$select")
        .is_some_and(|s| s.split(',').any(|p| p.trim() == "appRoles"));
    if !app_id.eq_ignore_ascii_case(state::GRAPH_APP_ID) || !wants {
        return None;
    }
    // Reading a service principal: any signed-in user, or an app with a directory-read role.
    let allowed = caller(shared, req).is_some_and(|(kind, _, roles, _)| {
        kind.is_some()
            || roles.iter().any(|r| {
                matches!(
                    r.as_str(),
                    "Application.Read.All" | "Application.ReadWrite.All" | "Directory.Read.All"
                )
            })
    });
    if !allowed {
        return Some(denied().render(Some(req)));
    }
    let v = shared.read(|d| {
        let id = d
            .sp_by_app_id(state::GRAPH_APP_ID)
            .map(|sp| sp.id.clone())
            .unwrap_or_default();
        let roles: Vec<Value> = GRAPH_APP_ROLES
            .iter()
            .map(|r| {
                json!({"id": role_id(&d.signing_key, r), "value": r, "allowedMemberTypes": ["Application"],
                       "displayName": r, "isEnabled": true, "origin": "Application",
                       "description": format!("Allows the app to {r} without a signed-in user.")})
            })
            .collect();
        json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals(id,appRoles)/$entity",
            "id": id, "appRoles": roles,
        })
    });
    Some((StatusCode::OK, axum::Json(v)).into_response())
}

/// Who calls, from a verified Graph token: (user kind if delegated, scp, roles).
fn caller(
    shared: &Shared,
    req: &Req,
) -> Option<(Option<super::UserKind>, String, Vec<String>, String)> {
    let claims = shared.read(|d| token::verify(&d.signing_key, req.bearer()?).ok())?;
    let scp = claims["scp"].as_str().unwrap_or("").to_string();
    let roles = claims["roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let oid = claims["oid"].as_str().unwrap_or("").to_string();
    let kind = if claims["idtyp"].as_str() == Some("app") {
        None
    } else {
        Some(shared.read(|d| d.user(&oid).map(|u| u.kind))?)
    };
    Some((kind, scp, roles, oid))
}

/// Grant an app the Graph roles (by ID) it is given; unknown IDs are refused.
fn grant_roles(d: &mut state::Data, app_id: &str, role_ids: &[String]) -> bool {
    let values: Vec<&str> = role_ids
        .iter()
        .filter_map(|id| {
            GRAPH_APP_ROLES
                .iter()
                .find(|v| role_id(&d.signing_key, v).eq_ignore_ascii_case(id))
                .copied()
        })
        .collect();
    if values.len() != role_ids.len() {
        return false;
    }
    let Some(app) = d.app_by_app_id_mut(app_id) else {
        return false;
    };
    for v in values {
        if !app.graph_roles.iter().any(|r| r == v) {
            app.graph_roles.push(v.to_string());
        }
    }
    true
}

/// `POST /servicePrincipals/{id}/appRoleAssignments` `{principalId, resourceId, appRoleId}`
/// (Graph "Grant an appRoleAssignment for a service principal"): `AppRoleAssignment.ReadWrite.All`
/// in the token, and a Global or Privileged Role Administrator signed in (§3.0); App-only callers
/// need the AppRoleAssignment.ReadWrite.All role.
pub(crate) fn assign_app_role(
    shared: &Shared,
    req: &Req,
    sp_id: &str,
) -> Result<Response, GraphError> {
    let Some((kind, scp, roles, _)) = caller(shared, req) else {
        return Err(denied());
    };
    let allowed = match kind {
        Some(k) => {
            k == super::UserKind::GlobalAdmin
                && scp
                    .split(' ')
                    .any(|s| s == "AppRoleAssignment.ReadWrite.All")
        }
        None => roles.iter().any(|r| r == "AppRoleAssignment.ReadWrite.All"),
    };
    if !allowed {
        return Err(denied());
    }
    let b = body(req, &["principalId", "resourceId", "appRoleId"])?;
    let (principal, resource, role) = (
        required(&b, "principalId")?,
        required(&b, "resourceId")?,
        required(&b, "appRoleId")?,
    );
    if !principal.eq_ignore_ascii_case(sp_id) {
        return Err(bad("principalId must be the service principal in the URL."));
    }
    shared.write(|d| {
        let graph_sp = d.sp_by_app_id(state::GRAPH_APP_ID).map(|s| s.id.clone());
        if graph_sp.as_deref().is_none_or(|g| !g.eq_ignore_ascii_case(resource)) {
            return Err(bad("resourceId is not the Microsoft Graph service principal."));
        }
        let Some(app_id) = d
            .service_principals
            .iter()
            .find(|s| s.id.eq_ignore_ascii_case(sp_id))
            .map(|s| s.app_id.clone())
        else {
            return Err(GraphError::new(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                format!("Resource '{sp_id}' does not exist or one of its queried reference-property objects are not present."),
            ));
        };
        let value = GRAPH_APP_ROLES
            .iter()
            .find(|v| role_id(&d.signing_key, v).eq_ignore_ascii_case(role));
        if value.is_some_and(|v| d.app_by_app_id(&app_id).is_some_and(|a| a.graph_roles.iter().any(|r| r == v))) {
            return Err(bad("Permission being assigned already exists on the object"));
        }
        if !grant_roles(d, &app_id, &[role.to_string()]) {
            return Err(bad("Permission being assigned was not found on application"));
        }
        let v = json!({
            "id": new_guid(), "principalId": sp_id, "principalType": "ServicePrincipal",
            "resourceId": resource, "appRoleId": role, "createdDateTime": rfc3339(OffsetDateTime::now_utc()),
        });
        Ok((StatusCode::CREATED, axum::Json(v)).into_response())
    })
}

fn loopback_redirect(uri: &str) -> Option<url::Url> {
    let u = url::Url::parse(uri).ok()?;
    (u.scheme() == "http" && matches!(u.host_str(), Some("localhost" | "127.0.0.1"))).then_some(u)
}

/// `GET /{tenant}/v2.0/adminconsent?client_id&scope&redirect_uri&state` (Entra "admin consent
/// endpoint"): the admin who opens it approves (unless `admin_consent_declined`), which grants the
/// Graph roles in the app's requiredResourceAccess; back to `redirect_uri` with
/// `admin_consent=True&tenant=…&state=…`, or `error=access_denied`.
pub(crate) fn admin_consent(shared: &Shared, req: &Req, tenant: &str) -> Response {
    let page = |status: StatusCode, msg: &str| {
        (
            status,
            axum::response::Html(format!("<h1>Sign in</h1><p>{msg}</p>")),
        )
            .into_response()
    };
    let (tid, domain) = shared.read(|d| (d.tenant_id.clone(), d.tenant_domain.clone()));
    if !(tenant.eq_ignore_ascii_case(&tid)
        || tenant.eq_ignore_ascii_case(&domain)
        || tenant == "organizations"
        || tenant == "common")
    {
        return page(StatusCode::BAD_REQUEST, "AADSTS90002: Tenant not found.");
    }
    let (Some(client_id), Some(redirect)) = (req.q("client_id"), req.q("redirect_uri")) else {
        return page(
            StatusCode::BAD_REQUEST,
            "AADSTS900144: The request body must contain the following parameter: 'client_id' or 'redirect_uri'.",
        );
    };
    let Some(mut back) = loopback_redirect(redirect) else {
        return page(
            StatusCode::BAD_REQUEST,
            "AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.",
        );
    };
    let requested: Option<Vec<String>> = shared.read(|d| {
        let app = d.app_by_app_id(client_id)?;
        let list = app.props.get("requiredResourceAccess")?.as_array()?.clone();
        Some(
            list.iter()
                .filter(|r| {
                    r["resourceAppId"]
                        .as_str()
                        .is_some_and(|a| a.eq_ignore_ascii_case(state::GRAPH_APP_ID))
                })
                .flat_map(|r| r["resourceAccess"].as_array().cloned().unwrap_or_default())
                .filter(|x| x["type"] == "Role")
                .filter_map(|x| x["id"].as_str().map(str::to_string))
                .collect(),
        )
    });
    if shared.read(|d| d.app_by_app_id(client_id).is_none()) {
        return page(
            StatusCode::BAD_REQUEST,
            &format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory."
            ),
        );
    }
    let scope_ok = req
        .q("scope")
        .is_some_and(|s| s.split(' ').any(|p| p.ends_with("/.default")));
    {
        let mut q = back.query_pairs_mut();
        if !scope_ok {
            q.append_pair("error", "invalid_request");
            q.append_pair(
                "error_description",
                "AADSTS90009: The scope must be {resource}/.default for admin consent.",
            );
        } else if shared.knobs().billing.admin_consent_declined {
            q.append_pair("error", "access_denied");
            q.append_pair(
                "error_description",
                "AADSTS65004: User declined to consent to access the app.",
            );
        } else {
            let ids = requested.unwrap_or_default();
            shared.write(|d| grant_roles(d, client_id, &ids));
            q.append_pair("admin_consent", "True");
            q.append_pair("tenant", &tid);
        }
        if let Some(s) = req.q("state") {
            q.append_pair("state", s);
        }
    }
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(back.as_str()) {
        r.headers_mut().insert("location", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_valid_json_lines() {
        let key = DataKey {
            rows: 300,
            seed: 7,
            rows_per_blob: 100,
            scope: "last".into(),
            currency: "EUR".into(),
            basic: false,
            camel: true,
        };
        let a = generate(&key, "t");
        let b = generate(&key, "t");
        assert_eq!(a.len(), 3);
        assert_eq!(a, b);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&a[0].1[..]), &mut text)
            .unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert!(first.get("unitOfMeasure").is_some() && first.get("resellerMpnId").is_some());
        assert!(first["billingPreTaxTotal"].is_number());
        assert_eq!(text.lines().count(), 100);
    }
}

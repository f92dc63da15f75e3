//! Graph's partner billing export (microsoft-apis.md §5b), App-only: start an unbilled or billed
//! usage export, wait for its long-running operation (honouring `Retry-After`, within a deadline),
//! read the manifest (by link or inline), and open each blob for streaming with the SAS token.
//!
//! What the docs leave loose is read loosely: keys case-insensitively, status words in any case
//! (`succeeded`/`completed`), `dataFormat` `compressedJSONLines` or `compressedJSON`, and a
//! `sasToken` with or without a leading `?`.

use super::auth::client_credentials;
use super::errors::{ApiError, ErrorKind, Service};
use super::http::{Body, HttpClient, Idempotency, Request, backoff, header, retry_after};
use crate::cloud::{Cloud, Endpoints};
use crate::exit::{Exit, UserError};
use crate::secret::Secret;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The Graph application permission the export needs.
pub const BILLING_PERMISSION: &str = "PartnerBilling.Read.All";
/// What the export leaves out (Partner Center's reconciliation API v2 GA page).
pub const EXCLUDES: &str = "reservations, savings plans and non-Azure products";
/// Without a `Retry-After` on a running operation, poll this often.
const DEFAULT_POLL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingPeriod {
    Current,
    Last,
}

impl BillingPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BillingPeriod::Current => "current",
            BillingPeriod::Last => "last",
        }
    }
}

/// Which usage to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportScope {
    Unbilled {
        currency: String,
        period: BillingPeriod,
    },
    Billed {
        invoice_id: String,
    },
}

/// `full` has meter, resource and customer-detail columns; `basic` leaves them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeSet {
    Full,
    Basic,
}

/// One blob of the export.
#[derive(Debug, Clone)]
pub struct BlobRef {
    pub name: String,
    pub partition_value: Option<String>,
}

/// Where the export's blobs are. The SAS token is a credential: never printed.
pub struct Manifest {
    pub id: String,
    pub root_directory: url::Url,
    sas_token: Secret,
    pub data_format: String,
    pub blobs: Vec<BlobRef>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("id", &self.id)
            .field("root_directory", &self.root_directory.as_str())
            .field("sas_token", &"****")
            .field("data_format", &self.data_format)
            .field("blobs", &self.blobs.len())
            .finish()
    }
}

impl Manifest {
    /// `{rootDirectory}/{name}?{sasToken}`.
    pub fn blob_url(&self, blob: &BlobRef) -> Result<url::Url, BillingError> {
        let raw = format!(
            "{}/{}?{}",
            self.root_directory.as_str().trim_end_matches('/'),
            blob.name.trim_start_matches('/'),
            self.sas_token.expose()
        );
        url::Url::parse(&raw)
            .map_err(|_| BillingError::Manifest("a blob name is not a valid URL path".into()))
    }
}

/// Why an export did not give usage data.
#[derive(Debug)]
pub enum BillingError {
    /// The cloud has no partner billing API (usgov, china).
    Unavailable(Cloud),
    /// The app's token lacks `PartnerBilling.Read.All`, or Graph refused the export.
    NoPermission(Option<Box<ApiError>>),
    /// The operation ended `failed`.
    ExportFailed {
        code: String,
        message: String,
    },
    /// Still running at the deadline (or the next `Retry-After` would pass it).
    TimedOut {
        waited: Duration,
    },
    /// The blob storage refused the SAS token: it expired (or was refused).
    SasRejected {
        blob: String,
        detail: String,
    },
    /// A blob's bytes are not complete gzip JSON lines.
    Corrupt {
        blob: String,
        detail: String,
    },
    /// The operation or the manifest does not have the documented shape.
    Manifest(String),
    Api(Box<ApiError>),
}

impl From<ApiError> for BillingError {
    fn from(e: ApiError) -> Self {
        BillingError::Api(Box::new(e))
    }
}

impl BillingError {
    pub fn to_user_error(&self) -> UserError {
        match self {
            BillingError::Unavailable(c) => UserError::new(
                Exit::Failure,
                format!(
                    "the partner billing export is not available in the {} cloud: Microsoft offers it in the public global cloud only",
                    c.as_str()
                ),
            )
            .hint("use Partner Center's own reconciliation files for this cloud"),
            BillingError::NoPermission(e) => UserError::new(
                Exit::Permission,
                format!(
                    "the app may not read partner billing data: it lacks Microsoft Graph's {BILLING_PERMISSION} application permission with admin consent{}",
                    e.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                ),
            )
            .hint("grant it with `csp-onboard init --billing` (an admin approves the consent once)"),
            BillingError::ExportFailed { code, message } => UserError::new(
                Exit::Failure,
                format!("Microsoft's usage export failed: {message} (code {code})"),
            )
            .hint("no total is shown for a failed export; run the command again later, or pick another --period or --invoice"),
            BillingError::TimedOut { waited } => UserError::new(
                Exit::Unreachable,
                format!(
                    "the usage export was still running after {} min",
                    waited.as_secs() / 60
                ),
            )
            .hint("exports can take many minutes; run the command again with a longer --wait-minutes"),
            BillingError::SasRejected { blob, detail } => UserError::new(
                Exit::Failure,
                format!(
                    "the export's download link was refused for {blob}, so no total is shown: {detail}"
                ),
            )
            .hint("the link (SAS token) expires; run the command again to get a fresh export"),
            BillingError::Corrupt { blob, detail } => UserError::new(
                Exit::Failure,
                format!("the export's data file {blob} is truncated or corrupt ({detail}), so no total is shown"),
            )
            .hint("run the command again; if it keeps failing, the export itself is damaged"),
            BillingError::Manifest(m) => UserError::new(
                Exit::Failure,
                format!("unexpected answer from the billing export: {m}"),
            ),
            BillingError::Api(e) => e.to_user_error(),
        }
    }
}

impl std::fmt::Display for BillingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_user_error().message)
    }
}

impl std::error::Error for BillingError {}

/// The clouds that have the export: the public global cloud, and stand-ins for it.
pub fn ensure_available(cloud: Cloud) -> Result<(), BillingError> {
    match cloud {
        Cloud::Usgov | Cloud::China => Err(BillingError::Unavailable(cloud)),
        Cloud::Global | Cloud::Emulator | Cloud::Custom => Ok(()),
    }
}

/// An App-only Graph token with the app's own secret (`scope=https://graph.microsoft.com/.default`).
pub async fn graph_app_token(
    http: &HttpClient,
    ep: &Endpoints,
    tenant: &str,
    app_id: &str,
    secret: &Secret,
) -> Result<Secret, ApiError> {
    let t = client_credentials(http, ep, tenant, app_id, secret, &ep.graph_scope()).await?;
    Ok(t.access_token)
}

/// The `roles` claim of a JWT access token, read without checking the signature (Graph checks it;
/// this only tells "no consent yet" early). None when the token is not a readable JWT.
pub fn token_roles(token: &Secret) -> Option<Vec<String>> {
    use base64::Engine;
    let payload = token.expose().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    Some(match claims.get("roles") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    })
}

/// A key of a JSON object, any casing.
pub fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn str_ci<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get_ci(v, key).and_then(Value::as_str)
}

/// The long-running operation, as the poll loop reports it.
#[derive(Debug, Clone, Copy)]
pub enum ExportEvent {
    /// Still running; the next poll follows in `next`.
    Running { elapsed: Duration, next: Duration },
}

pub struct BillingClient {
    http: HttpClient,
    graph: url::Url,
    token: Secret,
}

impl BillingClient {
    pub fn new(http: HttpClient, ep: &Endpoints, token: Secret) -> Self {
        BillingClient {
            http,
            graph: ep.graph.clone(),
            token,
        }
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> Request {
        let mut req = Request::new(Service::Graph, method, url);
        req.bearer = Some(self.token.clone());
        req.headers.push(header(
            "client-request-id",
            &uuid::Uuid::new_v4().to_string(),
        ));
        req.headers.push(header("accept", "application/json"));
        req
    }

    /// Links the service hands back carry the bearer token only to the Graph host itself.
    fn same_origin(&self, link: &str, what: &str) -> Result<url::Url, BillingError> {
        let url = url::Url::parse(link)
            .map_err(|_| BillingError::Manifest(format!("the {what} is not a URL")))?;
        if url.origin() != self.graph.origin() {
            return Err(BillingError::Manifest(format!(
                "the {what} points to another host ({}); the token is sent to Microsoft Graph only",
                url.host_str().unwrap_or("?")
            )));
        }
        Ok(url)
    }

    /// `POST …/usage/{unbilled|billed}/export` → the operation's URL (202 + `Location`).
    pub async fn start_export(
        &self,
        scope: &ExportScope,
        attributes: AttributeSet,
    ) -> Result<url::Url, BillingError> {
        let attribute_set = match attributes {
            AttributeSet::Full => "full",
            AttributeSet::Basic => "basic",
        };
        let (path, body) = match scope {
            ExportScope::Unbilled { currency, period } => (
                "v1.0/reports/partners/billing/usage/unbilled/export",
                json!({"currencyCode": currency, "billingPeriod": period.as_str(), "attributeSet": attribute_set}),
            ),
            ExportScope::Billed { invoice_id } => (
                "v1.0/reports/partners/billing/usage/billed/export",
                json!({"invoiceId": invoice_id, "attributeSet": attribute_set}),
            ),
        };
        let mut req = self.request(reqwest::Method::POST, Endpoints::join(&self.graph, path));
        req.body = Body::Json(serde_json::to_vec(&body).unwrap_or_default());
        // Each POST starts another export: repeated only when Graph provably did not take it.
        req.idempotency = Idempotency::NotIdempotent;
        let resp = self.http.execute(&req).await.map_err(|e| {
            if matches!(e.status, Some(401 | 403)) && e.kind == ErrorKind::Http {
                BillingError::NoPermission(Some(Box::new(e)))
            } else {
                BillingError::Api(Box::new(e))
            }
        })?;
        if resp.status != 202 {
            return Err(BillingError::Manifest(format!(
                "the export answered {} instead of 202 Accepted",
                resp.status
            )));
        }
        let location = resp
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                BillingError::Manifest("202 Accepted without a Location header".into())
            })?;
        self.same_origin(location, "operation Location")
    }

    /// Poll the operation until it succeeds (→ the manifest) or fails, within `deadline` from now.
    /// Waits exactly the `Retry-After` it is given (never less); gives up rather than wait past
    /// the deadline.
    pub async fn wait_for_manifest(
        &self,
        operation: &url::Url,
        deadline: Duration,
        mut on_event: impl FnMut(ExportEvent),
    ) -> Result<Manifest, BillingError> {
        let started = Instant::now();
        loop {
            let req = self.request(reqwest::Method::GET, operation.clone());
            let resp = self.http.execute(&req).await?;
            let v: Value = resp.json(Service::Graph, "export operation")?;
            let status = str_ci(&v, "status").unwrap_or("").to_ascii_lowercase();
            match status.as_str() {
                "succeeded" | "completed" => return self.manifest_of(&v).await,
                "failed" => {
                    let err = get_ci(&v, "error");
                    let field = |k: &str| {
                        err.and_then(|e| get_ci(e, k))
                            .map(|c| match c {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .unwrap_or_else(|| "unknown".into())
                    };
                    return Err(BillingError::ExportFailed {
                        code: field("code"),
                        message: field("message"),
                    });
                }
                "running" | "notstarted" | "inprogress" | "queued" => {
                    let next = retry_after(&resp.headers).unwrap_or(DEFAULT_POLL);
                    let elapsed = started.elapsed();
                    if elapsed + next > deadline {
                        return Err(BillingError::TimedOut { waited: elapsed });
                    }
                    on_event(ExportEvent::Running { elapsed, next });
                    tokio::time::sleep(next).await;
                }
                other => {
                    return Err(BillingError::Manifest(format!(
                        "the operation's status is {other:?}"
                    )));
                }
            }
        }
    }

    async fn manifest_of(&self, op: &Value) -> Result<Manifest, BillingError> {
        if let Some(link) = str_ci(op, "resourceLocation@odata.navigationLink") {
            let url = self.same_origin(link, "manifest link")?;
            let req = self.request(reqwest::Method::GET, url);
            let v: Value = self
                .http
                .execute(&req)
                .await?
                .json(Service::Graph, "export manifest")?;
            return parse_manifest(&v);
        }
        match get_ci(op, "resourceLocation") {
            Some(m @ Value::Object(_)) => parse_manifest(m),
            _ => Err(BillingError::Manifest(
                "a succeeded operation without resourceLocation".into(),
            )),
        }
    }
}

/// Microsoft Graph's own app ID: its service principal lists the app roles (application permissions).
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// `PartnerBilling.Read.All` as this tenant's Graph service principal defines it.
#[derive(Debug, Clone)]
pub struct BillingRole {
    pub graph_sp_id: String,
    pub role_id: String,
}

/// How the app got (or already had) the permission requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Added,
    AlreadyThere,
}

/// The admin-consent URL (Entra "admin consent endpoint", microsoft-apis.md §5b): an admin who
/// opens it grants the app's requested Graph application permissions in `tenant`.
pub fn admin_consent_url(
    ep: &Endpoints,
    tenant: &str,
    app_id: &str,
    redirect_uri: &str,
    state: &str,
) -> url::Url {
    let mut u = Endpoints::join(&ep.authority, &format!("{tenant}/v2.0/adminconsent"));
    u.query_pairs_mut()
        .append_pair("client_id", app_id)
        .append_pair("scope", &ep.graph_scope())
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", state);
    u
}

impl BillingClient {
    async fn get_json(&self, path: &str, what: &str) -> Result<Value, ApiError> {
        let mut req = self.request(reqwest::Method::GET, Endpoints::join(&self.graph, path));
        req.replication = Some(super::http::not_found_yet);
        self.http.execute(&req).await?.json(Service::Graph, what)
    }

    /// Find `PartnerBilling.Read.All` by value in the Graph service principal's `appRoles`
    /// (never a hard-coded ID).
    pub async fn billing_role(&self) -> Result<BillingRole, ApiError> {
        let v = self
            .get_json(
                &format!("v1.0/servicePrincipals(appId='{GRAPH_APP_ID}')?$select=id,appRoles"),
                "Microsoft Graph service principal",
            )
            .await?;
        let role = get_ci(&v, "appRoles")
            .and_then(Value::as_array)
            .and_then(|roles| {
                roles.iter().find(|r| {
                    str_ci(r, "value") == Some(BILLING_PERMISSION)
                        && get_ci(r, "allowedMemberTypes")
                            .and_then(Value::as_array)
                            .is_none_or(|t| t.iter().any(|m| m == "Application"))
                })
            })
            .and_then(|r| str_ci(r, "id"));
        match (str_ci(&v, "id"), role) {
            (Some(sp), Some(role)) => Ok(BillingRole {
                graph_sp_id: sp.to_string(),
                role_id: role.to_string(),
            }),
            _ => Err(ApiError::new(
                Service::Graph,
                ErrorKind::Decode,
                format!(
                    "Microsoft Graph's service principal does not offer {BILLING_PERMISSION} in this tenant"
                ),
            )),
        }
    }

    /// The object ID of an app's service principal in this tenant.
    pub async fn service_principal_id(&self, app_id: &str) -> Result<String, ApiError> {
        let v = self
            .get_json(
                &format!("v1.0/servicePrincipals(appId='{app_id}')?$select=id"),
                "service principal",
            )
            .await?;
        str_ci(&v, "id").map(str::to_string).ok_or_else(|| {
            ApiError::new(
                Service::Graph,
                ErrorKind::Decode,
                "a service principal without id",
            )
        })
    }

    /// Add `{resourceAppId: Graph, resourceAccess: [{id, type: Role}]}` to the app's
    /// `requiredResourceAccess`, keeping what is there (PATCH replaces the whole list).
    pub async fn request_permission(
        &self,
        app_object_id: &str,
        role: &BillingRole,
    ) -> Result<Requested, ApiError> {
        let v = self
            .get_json(
                &format!("v1.0/applications/{app_object_id}?$select=id,requiredResourceAccess"),
                "application",
            )
            .await?;
        let mut list = get_ci(&v, "requiredResourceAccess")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let is_graph = |r: &Value| {
            str_ci(r, "resourceAppId").is_some_and(|a| a.eq_ignore_ascii_case(GRAPH_APP_ID))
        };
        let entry = json!({"id": role.role_id, "type": "Role"});
        match list.iter_mut().find(|r| is_graph(r)) {
            Some(graph) => {
                let access = graph
                    .as_object_mut()
                    .map(|o| o.entry("resourceAccess").or_insert_with(|| json!([])))
                    .and_then(Value::as_array_mut);
                let Some(access) = access else {
                    return Err(ApiError::new(
                        Service::Graph,
                        ErrorKind::Decode,
                        "requiredResourceAccess is malformed",
                    ));
                };
                if access
                    .iter()
                    .any(|a| str_ci(a, "id").is_some_and(|i| i.eq_ignore_ascii_case(&role.role_id)))
                {
                    return Ok(Requested::AlreadyThere);
                }
                access.push(entry);
            }
            None => list.push(json!({"resourceAppId": GRAPH_APP_ID, "resourceAccess": [entry]})),
        }
        let url = Endpoints::join(&self.graph, &format!("v1.0/applications/{app_object_id}"));
        let mut req = self.request(reqwest::Method::PATCH, url);
        req.body = Body::Json(
            serde_json::to_vec(&json!({"requiredResourceAccess": list})).unwrap_or_default(),
        );
        req.replication = Some(super::http::not_found_yet);
        self.http.execute(&req).await?;
        Ok(Requested::Added)
    }

    /// Admin consent through Graph: `POST /servicePrincipals/{appSp}/appRoleAssignments`. Needs
    /// `AppRoleAssignment.ReadWrite.All` and a Global or Privileged Role Administrator (§3.0);
    /// "already exists" counts as done.
    pub async fn assign_billing_role(
        &self,
        app_sp_id: &str,
        role: &BillingRole,
    ) -> Result<(), ApiError> {
        let url = Endpoints::join(
            &self.graph,
            &format!("v1.0/servicePrincipals/{app_sp_id}/appRoleAssignments"),
        );
        let mut req = self.request(reqwest::Method::POST, url);
        req.body = Body::Json(
            serde_json::to_vec(&json!({
                "principalId": app_sp_id, "resourceId": role.graph_sp_id, "appRoleId": role.role_id,
            }))
            .unwrap_or_default(),
        );
        // Assigning twice is refused, not doubled: safe to repeat.
        req.replication = Some(super::http::not_found_yet);
        match self.http.execute(&req).await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(e.status, Some(400 | 409))
                    && e.message.to_ascii_lowercase().contains("already exists") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Poll App-only Graph tokens until their `roles` claim holds the billing permission, riding out
/// Entra's propagation (backoff from 1 s to 15 s) within `budget`. Returns the time it took.
pub async fn wait_for_billing_role(
    http: &HttpClient,
    ep: &Endpoints,
    tenant: &str,
    app_id: &str,
    secret: &Secret,
    budget: Duration,
    mut on_wait: impl FnMut(Duration),
) -> Result<Duration, BillingError> {
    let started = Instant::now();
    let mut step = Duration::from_secs(1);
    loop {
        let token = graph_app_token(http, ep, tenant, app_id, secret).await?;
        if token_roles(&token).is_some_and(|r| r.iter().any(|r| r == BILLING_PERMISSION)) {
            return Ok(started.elapsed());
        }
        let elapsed = started.elapsed();
        if elapsed + step > budget {
            return Err(BillingError::NoPermission(None));
        }
        on_wait(elapsed);
        tokio::time::sleep(step).await;
        step = (step * 2).min(Duration::from_secs(15));
    }
}

pub fn parse_manifest(v: &Value) -> Result<Manifest, BillingError> {
    let missing = |k: &str| BillingError::Manifest(format!("the manifest has no {k}"));
    let root = str_ci(v, "rootDirectory").ok_or_else(|| missing("rootDirectory"))?;
    let root_directory = url::Url::parse(root)
        .map_err(|_| BillingError::Manifest("rootDirectory is not a URL".into()))?;
    let secure = root_directory.scheme() == "https"
        || (root_directory.scheme() == "http" && crate::cloud::is_loopback(&root_directory));
    if !secure {
        return Err(BillingError::Manifest(
            "rootDirectory is not https (plain http only for loopback)".into(),
        ));
    }
    let sas = str_ci(v, "sasToken").ok_or_else(|| missing("sasToken"))?;
    let data_format = str_ci(v, "dataFormat").unwrap_or("compressedJSONLines");
    if !data_format.eq_ignore_ascii_case("compressedJSONLines")
        && !data_format.eq_ignore_ascii_case("compressedJSON")
    {
        return Err(BillingError::Manifest(format!(
            "unsupported dataFormat {data_format:?}"
        )));
    }
    let blobs: Vec<BlobRef> = get_ci(v, "blobs")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("blobs"))?
        .iter()
        .map(|b| {
            Ok(BlobRef {
                name: str_ci(b, "name")
                    .ok_or_else(|| missing("blob name"))?
                    .to_string(),
                partition_value: str_ci(b, "partitionValue").map(str::to_string),
            })
        })
        .collect::<Result<_, BillingError>>()?;
    if let Some(n) = get_ci(v, "blobCount").and_then(Value::as_u64)
        && n != blobs.len() as u64
    {
        // Never a partial total: a manifest that lists fewer blobs than it counts is incomplete.
        return Err(BillingError::Manifest(format!(
            "the manifest counts {n} blobs but lists {}",
            blobs.len()
        )));
    }
    Ok(Manifest {
        id: str_ci(v, "id").unwrap_or_default().to_string(),
        root_directory,
        sas_token: Secret::new(sas.trim_start_matches('?').to_string()),
        data_format: data_format.to_string(),
        blobs,
    })
}

/// Open one blob for streaming: `GET {rootDirectory}/{name}?{sas}`, no bearer token (the SAS is
/// the credential). Transient failures before the body starts are retried; a refused SAS is not.
pub async fn open_blob(
    http: &HttpClient,
    manifest: &Manifest,
    blob: &BlobRef,
) -> Result<reqwest::Response, BillingError> {
    let url = manifest.blob_url(blob)?;
    let policy = http.policy().clone();
    let mut attempt = 1u32;
    loop {
        let sent = http
            .raw()
            .get(url.clone())
            .header("x-ms-version", "2023-11-03")
            .send()
            .await;
        let transient = match sent {
            Ok(resp) if resp.status().is_success() => return Ok(resp),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let ra = retry_after(resp.headers());
                let text = resp.text().await.unwrap_or_default();
                let tag = |t: &str| {
                    text.split(&format!("<{t}>"))
                        .nth(1)
                        .and_then(|r| r.split(&format!("</{t}>")).next())
                        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
                };
                match status {
                    403 => {
                        return Err(BillingError::SasRejected {
                            blob: blob.name.clone(),
                            detail: tag("AuthenticationErrorDetail")
                                .or_else(|| tag("Message"))
                                .unwrap_or_else(|| "403 Forbidden".into()),
                        });
                    }
                    404 => {
                        return Err(BillingError::Corrupt {
                            blob: blob.name.clone(),
                            detail: "the storage says it does not exist".into(),
                        });
                    }
                    429 | 500 | 502 | 503 | 504 => Some((status, ra)),
                    _ => {
                        return Err(BillingError::Corrupt {
                            blob: blob.name.clone(),
                            detail: format!(
                                "the storage answered {status}{}",
                                tag("Code").map(|c| format!(" {c}")).unwrap_or_default()
                            ),
                        });
                    }
                }
            }
            Err(e) => {
                if attempt >= policy.max_attempts {
                    return Err(ApiError::from_reqwest(Service::Graph, &e).into());
                }
                None
            }
        };
        let asked = transient.and_then(|(_, ra)| ra);
        // Never sooner than the storage asked (as HttpClient): a wait longer than the policy
        // allows ends the run instead of being cut short.
        if attempt >= policy.max_attempts || asked.is_some_and(|ra| ra > policy.max_retry_after) {
            let (status, _) = transient.unwrap_or((0, None));
            let mut e = ApiError::new(
                Service::Graph,
                ErrorKind::Http,
                format!(
                    "the billing data's storage kept answering {status} for {}",
                    blob.name
                ),
            );
            e.status = Some(status);
            return Err(BillingError::Api(Box::new(e)));
        }
        attempt += 1;
        let wait = asked.unwrap_or_else(|| backoff(&policy, attempt - 1));
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_read_loosely() {
        let m = parse_manifest(&json!({
            "ID": "m1", "RootDirectory": "https://x.blob.core.windows.net/r/a",
            "sasToken": "?sv=1&sig=abc", "DATAFORMAT": "compressedJSON", "blobCount": 1,
            "Blobs": [{"Name": "part-1.json.gz", "partitionValue": "default"}]
        }))
        .unwrap();
        assert_eq!(
            m.blob_url(&m.blobs[0]).unwrap().as_str(),
            "https://x.blob.core.windows.net/r/a/part-1.json.gz?sv=1&sig=abc"
        );
        assert!(!format!("{m:?}").contains("sig=abc"));
        let short = parse_manifest(&json!({
            "rootDirectory": "https://x/r", "sasToken": "s", "blobCount": 2,
            "blobs": [{"name": "a"}]
        }));
        assert!(matches!(short, Err(BillingError::Manifest(_))));
        let plain = parse_manifest(
            &json!({"rootDirectory": "http://x.example/r", "sasToken": "s", "blobs": []}),
        );
        assert!(plain.is_err());
    }

    #[test]
    fn roles_come_from_the_token_payload() {
        use base64::Engine;
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"roles":["PartnerBilling.Read.All"]}"#);
        let t = Secret::new(format!("h.{p}.s"));
        assert_eq!(
            token_roles(&t).unwrap(),
            vec![BILLING_PERMISSION.to_string()]
        );
        assert_eq!(token_roles(&Secret::new("opaque")), None);
    }

    #[test]
    fn only_the_global_cloud_and_stand_ins_have_it() {
        assert!(ensure_available(Cloud::Usgov).is_err());
        assert!(ensure_available(Cloud::China).is_err());
        assert!(ensure_available(Cloud::Global).is_ok());
        let u = BillingError::Unavailable(Cloud::China).to_user_error();
        assert!(u.message.contains("china"), "{}", u.message);
    }
}

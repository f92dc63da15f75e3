//! Sign-in (the Microsoft identity platform v2 endpoints): device code, the token endpoint's four
//! grants, authorize with PKCE and a loopback redirect, and the device-login page.

use super::server::Req;
use super::state::{
    self, AuthCode, Data, DeviceCode, DeviceStatus, RefreshToken, is_guid, new_guid, sha256_hex,
};
use super::{Knobs, Shared, UserKind, token};
use crate::cloud::PARTNER_CENTER_APP_ID;
use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
pub const PC_AUDIENCE: &str = "https://api.partnercenter.microsoft.com";
pub const AAD_GRAPH_AUDIENCE: &str = "https://graph.windows.net";

/// Graph permissions the Azure CLI's delegated token carries (what its `.default` resolves to: the
/// permissions Graph pre-authorizes for that first-party client). `Policy.Read.All` is not among
/// them (microsoft-apis.md §3.0; an admin's token holding only `Directory.AccessAsUser.All` is refused
/// tenant policies, azure-powershell issue 24334); [`Knobs::grant_policy_read`] adds it.
const GRAPH_DELEGATED: &[&str] = &[
    "Application.ReadWrite.All",
    "AppRoleAssignment.ReadWrite.All",
    "AuditLog.Read.All",
    "DelegatedPermissionGrant.ReadWrite.All",
    "Directory.AccessAsUser.All",
    "Group.ReadWrite.All",
    "User.ReadWrite.All",
];
const POLICY_READ_ALL: &str = "Policy.Read.All";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// An error in the shape of §2.5.
pub(crate) struct AadError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    text: String,
}

fn aad(error: &'static str, code: u32, text: impl Into<String>) -> AadError {
    // Entra answers client authentication failures with 401, everything else with 400.
    let status = if error == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    AadError {
        status,
        error,
        code,
        text: text.into(),
    }
}

fn missing(param: &str) -> AadError {
    aad(
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

fn timestamp(now: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    now.format(&f).unwrap_or_default()
}

impl AadError {
    /// `AADSTSnnnn: text\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …`
    fn description(&self) -> (String, String, String, String) {
        let trace = new_guid();
        let corr = new_guid();
        let ts = timestamp(OffsetDateTime::now_utc());
        let desc = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}",
            self.code, self.text
        );
        (desc, trace, corr, ts)
    }

    fn into_response(self) -> Response {
        let (desc, trace, corr, ts) = self.description();
        let body = json!({
            "error": self.error,
            "error_description": desc,
            "error_codes": [self.code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        let mut r = (self.status, Json(body)).into_response();
        no_store(&mut r);
        r
    }
}

pub(crate) fn aad_error_response(
    status: StatusCode,
    error: &'static str,
    code: u32,
    text: &str,
) -> Response {
    let mut e = aad(error, code, text);
    e.status = status;
    e.into_response()
}

fn no_store(r: &mut Response) {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn ok_json(body: Value) -> Response {
    let mut r = (StatusCode::OK, Json(body)).into_response();
    no_store(&mut r);
    r
}

pub(crate) fn handle(shared: &Shared, req: &Req) -> Response {
    let path = req.path.trim_start_matches('/');
    let segs: Vec<&str> = path.split('/').collect();
    let result = match segs.as_slice() {
        ["devicelogin"] => return device_login(shared, req),
        [tenant, "oauth2", "v2.0", "authorize"] => return authorize(shared, req, tenant),
        [tenant, "v2.0", "adminconsent"] => {
            return super::billing::admin_consent(shared, req, tenant);
        }
        [tenant, "v2.0", ".well-known", "openid-configuration"] if req.method == Method::GET => {
            discovery(shared, tenant)
        }
        [tenant, "oauth2", "v2.0", "devicecode"] => device_code(shared, req, tenant),
        [tenant, "oauth2", "v2.0", "token"] => token_endpoint(shared, req, tenant),
        _ => return (StatusCode::NOT_FOUND, Html("<h1>404 Not Found</h1>")).into_response(),
    };
    result.unwrap_or_else(AadError::into_response)
}

/// The parameters of a form POST. A body of another content type is read as no parameters at
/// all, which is how Entra reports a JSON body: "must contain the following parameter".
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(req: &Req) -> Result<Form, AadError> {
        if req.method != Method::POST {
            return Err(aad(
                "invalid_request",
                900561,
                format!(
                    "The endpoint only accepts POST, OPTIONS requests. Received a {} request.",
                    req.method
                ),
            ));
        }
        if req.media_type().as_deref() != Some("application/x-www-form-urlencoded") {
            return Ok(Form(vec![]));
        }
        Ok(Form(
            url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect(),
        ))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    fn need(&self, name: &str) -> Result<&str, AadError> {
        self.get(name).ok_or_else(|| missing(name))
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum TenantRef {
    Ours,
    /// `organizations` or `common`: the user's home tenant decides.
    Multi,
}

fn resolve_tenant(d: &Data, t: &str) -> Result<TenantRef, AadError> {
    let lower = t.to_ascii_lowercase();
    if lower == "organizations" || lower == "common" {
        return Ok(TenantRef::Multi);
    }
    if lower == d.tenant_id || lower == d.tenant_domain.to_ascii_lowercase() {
        return Ok(TenantRef::Ours);
    }
    if is_guid(t) || (t.contains('.') && !t.contains(' ')) || lower == "consumers" {
        return Err(aad(
            "invalid_request",
            90002,
            format!(
                "Tenant '{t}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    }
    Err(aad(
        "invalid_request",
        900023,
        format!(
            "Specified tenant identifier '{t}' is neither a valid DNS name, nor a valid external domain."
        ),
    ))
}

enum Client {
    Public,
    /// An application registered in this tenant (confidential: it authenticates with a secret).
    App,
}

fn not_found_app(d: &Data, client_id: &str) -> AadError {
    aad(
        "unauthorized_client",
        700016,
        format!(
            "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            d.tenant_name
        ),
    )
}

fn resolve_client(
    d: &Data,
    knobs: &Knobs,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<Client, AadError> {
    if !is_guid(client_id) {
        return Err(aad(
            "invalid_request",
            700038,
            format!("{client_id} is not a valid application identifier."),
        ));
    }
    if state::PUBLIC_CLIENTS
        .iter()
        .any(|(id, _)| id.eq_ignore_ascii_case(client_id))
    {
        return Ok(Client::Public);
    }
    match d.app_by_app_id(client_id) {
        Some(app) if now >= app.created + knobs.replication_delay => Ok(Client::App),
        _ => Err(not_found_app(d, client_id)),
    }
}

fn client_name(d: &Data, client_id: &str) -> String {
    state::PUBLIC_CLIENTS
        .iter()
        .find(|(id, _)| id.eq_ignore_ascii_case(client_id))
        .map(|(_, n)| n.to_string())
        .or_else(|| d.app_by_app_id(client_id).map(|a| a.display_name.clone()))
        .unwrap_or_else(|| client_id.to_string())
}

fn public_client_sent_secret() -> AadError {
    aad(
        "invalid_client",
        700025,
        "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
    )
}

fn secret_required() -> AadError {
    aad(
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Resource {
    Graph,
    PartnerCenter,
    AadGraph,
}

impl Resource {
    fn audience(self) -> &'static str {
        match self {
            Resource::Graph => GRAPH_AUDIENCE,
            Resource::PartnerCenter => PC_AUDIENCE,
            Resource::AadGraph => AAD_GRAPH_AUDIENCE,
        }
    }
}

struct Scopes {
    resource: Resource,
    /// Permissions as asked (`.default`, `user_impersonation`, `User.Read`).
    perms: Vec<String>,
    openid: bool,
    offline: bool,
    /// The OIDC scopes as asked, echoed in the response's `scope`.
    oidc: Vec<String>,
}

fn invalid_scope(s: &str) -> AadError {
    aad(
        "invalid_scope",
        70011,
        format!(
            "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {s} is not valid."
        ),
    )
}

fn resource_not_found(d: &Data, res: &str) -> AadError {
    aad(
        "invalid_resource",
        500011,
        format!(
            "The resource principal named {res} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
            d.tenant_name
        ),
    )
}

fn is_permission_name(p: &str) -> bool {
    !p.is_empty()
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
}

fn parse_scope(d: &Data, knobs: &Knobs, scope: &str) -> Result<Scopes, AadError> {
    let mut resource: Option<Resource> = None;
    let mut out = Scopes {
        resource: Resource::Graph,
        perms: vec![],
        openid: false,
        offline: false,
        oidc: vec![],
    };
    for s in scope.split_whitespace() {
        match s {
            "openid" | "profile" | "email" | "offline_access" => {
                out.openid |= s == "openid";
                out.offline |= s == "offline_access";
                out.oidc.push(s.to_string());
                continue;
            }
            _ => {}
        }
        let (res, perm) = if let Some((res, perm)) = s.rsplit_once('/') {
            let res = res.trim_end_matches('/');
            let lower = res.to_ascii_lowercase();
            let r = match lower.as_str() {
                "https://graph.microsoft.com" | "00000003-0000-0000-c000-000000000000" => {
                    Resource::Graph
                }
                "https://api.partnercenter.microsoft.com" => Resource::PartnerCenter,
                l if l == PARTNER_CENTER_APP_ID => Resource::PartnerCenter,
                "https://graph.windows.net" | "00000002-0000-0000-c000-000000000000" => {
                    Resource::AadGraph
                }
                _ => return Err(resource_not_found(d, res)),
            };
            (r, perm)
        } else {
            (Resource::Graph, s)
        };
        let perm_ok = match res {
            Resource::Graph => perm == ".default" || is_permission_name(perm),
            Resource::PartnerCenter | Resource::AadGraph => {
                perm == ".default" || perm == "user_impersonation"
            }
        };
        if !perm_ok {
            return Err(invalid_scope(s));
        }
        // No Partner Center service principal (not a partner, or deleted): Entra cannot find
        // the resource (AADSTS500011 in Entra's error-code reference). That Entra answers so for a
        // deleted first-party service principal is UNCONFIRMED.
        if res == Resource::PartnerCenter
            && (knobs.not_csp_tenant || d.sp_by_app_id(PARTNER_CENTER_APP_ID).is_none())
        {
            return Err(resource_not_found(d, PC_AUDIENCE));
        }
        match resource {
            Some(r) if r != res => {
                return Err(aad(
                    "invalid_scope",
                    28000,
                    format!(
                        "Provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
                    ),
                ));
            }
            _ => resource = Some(res),
        }
        out.perms.push(perm.to_string());
    }
    if let Some(r) = resource {
        out.resource = r;
    } else if out.oidc.is_empty() {
        return Err(missing("scope"));
    }
    Ok(out)
}

fn lifetime_secs(knobs: &Knobs) -> i64 {
    knobs
        .access_token_lifetime
        .map(|d| d.as_secs() as i64)
        .unwrap_or(3599)
}

/// A delegated token carries every permission the client holds for the resource, whichever were
/// asked: for Graph the pre-authorized list (plus `Policy.Read.All` under the knob). A permission
/// outside it is simply not granted (Entra refuses consent for a first-party client, AADSTS65002),
/// so asking for `Policy.Read.All` by name does not get round the rule.
fn delegated_scp(scopes: &Scopes, knobs: &Knobs) -> String {
    match scopes.resource {
        Resource::Graph => {
            let mut scp = GRAPH_DELEGATED.to_vec();
            if knobs.grant_policy_read {
                scp.push(POLICY_READ_ALL);
                scp.sort_unstable();
            }
            scp.join(" ")
        }
        Resource::PartnerCenter | Resource::AadGraph => "user_impersonation".to_string(),
    }
}

/// Access token (+ refresh token, + ID token) for a user through a public client.
fn user_tokens(
    d: &mut Data,
    knobs: &Knobs,
    client_id: &str,
    user_id: &str,
    scopes: &Scopes,
    always_refresh: bool,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let Some(user) = d.user(user_id).cloned() else {
        return aad(
            "invalid_grant",
            50034,
            "The user account does not exist in the directory.",
        )
        .into_response();
    };
    let life = lifetime_secs(knobs);
    let iat = now.unix_timestamp();
    let scp = delegated_scp(scopes, knobs);
    let amr = if knobs.user_without_mfa {
        json!(["pwd"])
    } else {
        json!(["pwd", "mfa"])
    };
    let access = token::mint(
        &d.signing_key,
        &json!({
            "aud": scopes.resource.audience(),
            "iss": format!("https://sts.windows.net/{}/", d.tenant_id),
            "iat": iat, "nbf": iat, "exp": iat + life,
            "tid": d.tenant_id, "oid": user.id, "sub": user.id,
            "appid": client_id, "idtyp": "user", "scp": scp,
            "upn": user.upn, "name": user.display_name, "amr": amr,
            "ver": "1.0", "uti": new_guid(),
        }),
    );
    let granted: Vec<String> = scp
        .split(' ')
        .map(|p| format!("{}/{p}", scopes.resource.audience()))
        .chain(scopes.oidc.iter().cloned())
        .collect();
    let mut body = json!({
        "token_type": "Bearer",
        "scope": granted.join(" "),
        "expires_in": life,
        "ext_expires_in": life,
        "access_token": access,
    });
    if scopes.offline || always_refresh {
        let rt = format!("1.AX{}", state::random_string(180, state::ALNUM));
        d.refresh_tokens.push(RefreshToken {
            token_sha256: sha256_hex(&rt),
            client_id: client_id.to_ascii_lowercase(),
            user_id: user.id.clone(),
            expires: now + time::Duration::days(90),
        });
        body["refresh_token"] = json!(rt);
    }
    if scopes.openid {
        body["id_token"] = json!(token::mint(
            &d.signing_key,
            &json!({
                "aud": client_id,
                "iss": format!("https://login.microsoftonline.com/{}/v2.0", d.tenant_id),
                "iat": iat, "nbf": iat, "exp": iat + 3600,
                "tid": d.tenant_id, "oid": user.id, "sub": user.id,
                "preferred_username": user.upn, "name": user.display_name, "ver": "2.0",
            }),
        ));
        body["client_info"] =
            json!(URL_SAFE_NO_PAD.encode(json!({"uid": user.id, "utid": d.tenant_id}).to_string()));
    }
    d.prune(now);
    ok_json(body)
}

/// The OpenID Connect discovery document, pointing at this emulator.
fn discovery(shared: &Shared, tenant: &str) -> Result<Response, AadError> {
    let tid = shared.read(|d| resolve_tenant(d, tenant).map(|_| d.tenant_id.clone()))?;
    let base = format!("{}/{tenant}", shared.urls.authority);
    let issuer = if is_guid(tenant) || tenant.contains('.') {
        format!("https://login.microsoftonline.com/{tid}/v2.0")
    } else {
        "https://login.microsoftonline.com/{tenantid}/v2.0".to_string()
    };
    Ok(ok_json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", DEVICE_GRANT],
        "code_challenge_methods_supported": ["S256", "plain"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
    })))
}

fn device_code(shared: &Shared, req: &Req, tenant: &str) -> Result<Response, AadError> {
    let knobs = shared.knobs();
    let now = OffsetDateTime::now_utc();
    let form = Form::parse(req)?;
    shared.read(|d| resolve_tenant(d, tenant))?;
    let client_id = form.need("client_id")?;
    let scope = form.need("scope")?;
    let client = shared.read(|d| resolve_client(d, &knobs, client_id, now))?;
    match client {
        Client::Public if form.get("client_secret").is_some() => {
            return Err(public_client_sent_secret());
        }
        Client::Public => {}
        Client::App => return Err(secret_required()),
    }
    shared.read(|d| parse_scope(d, &knobs, scope))?;
    let device_code = format!("DAQABIQEAAAD--{}", state::random_string(150, state::ALNUM));
    let user_code = state::random_string(9, b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789");
    let lifetime = knobs
        .device_code_lifetime
        .unwrap_or(std::time::Duration::from_secs(900));
    let interval = knobs.device_code_interval_secs.unwrap_or(5);
    let verification_uri = format!("{}/devicelogin", shared.urls.authority);
    shared.write(|d| {
        d.prune(now);
        d.device_codes.push(DeviceCode {
            device_code_sha256: sha256_hex(&device_code),
            user_code: user_code.clone(),
            client_id: client_id.to_ascii_lowercase(),
            scope: scope.to_string(),
            expires: now + lifetime,
            interval_secs: interval,
            last_poll: None,
            polls: 0,
            status: DeviceStatus::Pending,
        });
    });
    Ok(ok_json(json!({
        "user_code": user_code,
        "device_code": device_code,
        "verification_uri": verification_uri,
        "expires_in": lifetime.as_secs(),
        "interval": interval,
        "message": format!("To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate."),
    })))
}

fn token_endpoint(shared: &Shared, req: &Req, tenant: &str) -> Result<Response, AadError> {
    let knobs = shared.knobs();
    let now = OffsetDateTime::now_utc();
    let form = Form::parse(req)?;
    let tenant_ref = shared.read(|d| resolve_tenant(d, tenant))?;
    let grant = form.need("grant_type")?;
    if ![
        DEVICE_GRANT,
        "authorization_code",
        "refresh_token",
        "client_credentials",
    ]
    .contains(&grant)
    {
        return Err(aad(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    if grant == "client_credentials" {
        return client_credentials(shared, &knobs, &form, tenant_ref, now);
    }
    let client_id = form.need("client_id")?;
    let client = shared.read(|d| resolve_client(d, &knobs, client_id, now))?;
    match client {
        Client::Public
            if form.get("client_secret").is_some() || form.get("client_assertion").is_some() =>
        {
            return Err(public_client_sent_secret());
        }
        Client::Public => {}
        // Only public clients sign users in here (see the route table).
        Client::App => return Err(secret_required()),
    }
    match grant {
        DEVICE_GRANT => redeem_device_code(shared, &knobs, &form, client_id, now),
        "authorization_code" => redeem_auth_code(shared, &knobs, &form, client_id, now),
        _ => redeem_refresh_token(shared, &knobs, &form, client_id, now),
    }
}

fn bad_device_code() -> AadError {
    aad(
        "bad_verification_code",
        70018,
        "The provided value for the input parameter 'device_code' is not valid.",
    )
}

fn redeem_device_code(
    shared: &Shared,
    knobs: &Knobs,
    form: &Form,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<Response, AadError> {
    let code = form.need("device_code")?;
    let hash = sha256_hex(code);
    shared.write(|d| {
        let signed_in = d
            .user_of_kind(knobs.signed_in_user)
            .map(|u| u.id.clone())
            .unwrap_or_default();
        let Some(dc) = d
            .device_codes
            .iter_mut()
            .find(|c| c.device_code_sha256 == hash)
        else {
            return Err(bad_device_code());
        };
        if !dc.client_id.eq_ignore_ascii_case(client_id) || dc.status == DeviceStatus::Redeemed {
            return Err(bad_device_code());
        }
        if now >= dc.expires {
            return Err(aad(
                "expired_token",
                70020,
                "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
            ));
        }
        if dc.status == DeviceStatus::Pending {
            let interval = time::Duration::seconds(dc.interval_secs as i64);
            let too_soon = dc.interval_secs > 0 && dc.last_poll.is_some_and(|t| now - t < interval);
            dc.last_poll = Some(now);
            if too_soon {
                // RFC 8628 `slow_down`; the code is Entra's own "request loop" answer.
                return Err(aad(
                    "slow_down",
                    50196,
                    "The server terminated an operation because it encountered a client request loop. Please poll no faster than the interval.",
                ));
            }
            dc.polls += 1;
            match knobs.auto_approve_device_code_after_polls {
                Some(n) if dc.polls > n => {
                    dc.status = DeviceStatus::Approved { user_id: signed_in };
                }
                _ => {
                    return Err(aad(
                        "authorization_pending",
                        70016,
                        "The provided request has not yet been authorized by the user. The user must input their code.",
                    ));
                }
            }
        }
        match dc.status.clone() {
            DeviceStatus::Declined => Err(aad(
                "authorization_declined",
                70000,
                "The user declined the sign-in request.",
            )),
            DeviceStatus::Approved { .. } if knobs.block_device_code => Err(aad(
                "invalid_grant",
                53003,
                "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
            )),
            DeviceStatus::Approved { user_id } => {
                dc.status = DeviceStatus::Redeemed;
                let scope = dc.scope.clone();
                let scopes = parse_scope(d, knobs, &scope)?;
                Ok(user_tokens(d, knobs, client_id, &user_id, &scopes, false))
            }
            DeviceStatus::Pending | DeviceStatus::Redeemed => Err(bad_device_code()),
        }
    })
}

/// Approve (as `kind`) or decline (None) a pending device code; the device-login page and the
/// test helper both land here.
pub(crate) fn decide_device_code(
    d: &mut Data,
    user_code: &str,
    kind: Option<UserKind>,
) -> Result<(), &'static str> {
    let now = OffsetDateTime::now_utc();
    let wanted: String = user_code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_uppercase();
    let user_id = match kind {
        Some(k) => Some(
            d.user_of_kind(k)
                .map(|u| u.id.clone())
                .ok_or("no such user")?,
        ),
        None => None,
    };
    let dc = d
        .device_codes
        .iter_mut()
        .find(|c| c.user_code == wanted && c.status == DeviceStatus::Pending)
        .ok_or("That code wasn't found, or it was already used. Check the code and try again.")?;
    if now >= dc.expires {
        return Err("That code has expired. Go back to the application and start again.");
    }
    dc.status = match user_id {
        Some(user_id) => DeviceStatus::Approved { user_id },
        None => DeviceStatus::Declined,
    };
    Ok(())
}

fn redeem_auth_code(
    shared: &Shared,
    knobs: &Knobs,
    form: &Form,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<Response, AadError> {
    let code = form.need("code")?;
    let redirect_uri = form.need("redirect_uri")?;
    let hash = sha256_hex(code);
    shared.write(|d| {
        let Some(ac) = d.auth_codes.iter_mut().find(|c| c.code_sha256 == hash) else {
            return Err(aad(
                "invalid_grant",
                70000,
                "The provided value for the 'code' parameter is not valid.",
            ));
        };
        if ac.redeemed {
            return Err(aad(
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            ));
        }
        if now >= ac.expires {
            return Err(aad(
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            ));
        }
        if !ac.client_id.eq_ignore_ascii_case(client_id) {
            return Err(aad(
                "invalid_grant",
                70000,
                "The provided value for the 'code' parameter is not valid. The code was issued to a different client.",
            ));
        }
        if ac.redirect_uri != redirect_uri {
            return Err(aad(
                "invalid_grant",
                500112,
                format!("The reply address '{redirect_uri}' does not match the reply address '{}' provided when requesting Authorization code.", ac.redirect_uri),
            ));
        }
        if let Some(challenge) = &ac.code_challenge {
            let verifier = form.get("code_verifier").unwrap_or("");
            let computed = if ac.code_challenge_method.as_deref() == Some("S256") {
                URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
            } else {
                verifier.to_string()
            };
            if verifier.is_empty() || &computed != challenge {
                return Err(aad(
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                ));
            }
        }
        ac.redeemed = true;
        let user_id = ac.user_id.clone();
        let scope = form
            .get("scope")
            .map(str::to_string)
            .unwrap_or_else(|| ac.scope.clone());
        let scopes = parse_scope(d, knobs, &scope)?;
        Ok(user_tokens(d, knobs, client_id, &user_id, &scopes, false))
    })
}

fn redeem_refresh_token(
    shared: &Shared,
    knobs: &Knobs,
    form: &Form,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<Response, AadError> {
    let rt = form.need("refresh_token")?;
    let scope = form.need("scope")?;
    let hash = sha256_hex(rt);
    shared.write(|d| {
        let Some(stored) = d.refresh_tokens.iter().find(|r| r.token_sha256 == hash).cloned() else {
            return Err(aad(
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid.",
            ));
        };
        if !stored.client_id.eq_ignore_ascii_case(client_id) {
            return Err(aad(
                "invalid_grant",
                70000,
                "Provided grant is invalid or malformed. The refresh token was issued to a different client.",
            ));
        }
        if now >= stored.expires {
            return Err(aad(
                "invalid_grant",
                700082,
                "The refresh token has expired due to inactivity. The token was issued and was inactive for 90.00:00:00.",
            ));
        }
        let scopes = parse_scope(d, knobs, scope)?;
        Ok(user_tokens(d, knobs, client_id, &stored.user_id, &scopes, true))
    })
}

fn client_credentials(
    shared: &Shared,
    knobs: &Knobs,
    form: &Form,
    tenant: TenantRef,
    now: OffsetDateTime,
) -> Result<Response, AadError> {
    if tenant == TenantRef::Multi {
        return Err(aad(
            "invalid_request",
            50059,
            "No tenant-identifying information found in either the request or implied by any provided credentials.",
        ));
    }
    let client_id = form.need("client_id")?;
    let client = shared.read(|d| resolve_client(d, knobs, client_id, now))?;
    if let Client::Public = client {
        return Err(if form.get("client_secret").is_some() {
            public_client_sent_secret()
        } else {
            secret_required()
        });
    }
    let secret = form.get("client_secret").ok_or_else(secret_required)?;
    let scope = form.need("scope")?;
    let parts: Vec<&str> = scope.split_whitespace().collect();
    if parts.len() != 1 || !parts[0].ends_with("/.default") {
        return Err(aad(
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    }
    shared.write(|d| {
        let scopes = parse_scope(d, knobs, scope)?;
        let tenant_id = d.tenant_id.clone();
        let sp = match d.sp_by_app_id(client_id) {
            None => {
                return Err(aad(
                    "invalid_client",
                    7000229,
                    format!("The client application {client_id} is missing service principal in the tenant {tenant_id}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119"),
                ));
            }
            Some(sp) if now < sp.created + knobs.replication_delay => {
                return Err(not_found_app(d, client_id));
            }
            Some(sp) => sp.id.clone(),
        };
        let hash = sha256_hex(secret);
        let not_found = not_found_app(d, client_id);
        let Some(app) = d.app_by_app_id_mut(client_id) else {
            return Err(not_found);
        };
        let app_id = app.app_id.clone();
        let wrong = || {
            aad(
                "invalid_client",
                7000215,
                format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{app_id}'."),
            )
        };
        let Some(pw) = app.passwords.iter_mut().find(|p| p.secret_sha256 == hash) else {
            return Err(wrong());
        };
        if now >= pw.end {
            return Err(aad(
                "invalid_client",
                7000222,
                format!("The provided client secret keys for app '{app_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."),
            ));
        }
        if now < pw.created + knobs.secret_propagation_delay {
            return Err(wrong());
        }
        let attempt = pw.auths_after_delay;
        pw.auths_after_delay = pw.auths_after_delay.saturating_add(1);
        // Another replica that has not seen the secret yet answers every other time.
        if attempt < 2 * knobs.propagation_flaps && attempt % 2 == 1 {
            return Err(wrong());
        }
        let roles: Vec<String> = match scopes.resource {
            Resource::Graph => app.graph_roles.clone(),
            _ => vec![],
        };
        let life = lifetime_secs(knobs);
        let iat = now.unix_timestamp();
        let mut claims = json!({
            "aud": scopes.resource.audience(),
            "iss": format!("https://sts.windows.net/{tenant_id}/"),
            "iat": iat, "nbf": iat, "exp": iat + life,
            "tid": tenant_id, "oid": sp, "sub": sp,
            "appid": app_id, "idtyp": "app", "ver": "1.0", "uti": new_guid(),
        });
        if !roles.is_empty() {
            claims["roles"] = json!(roles);
        }
        let access = token::mint(&d.signing_key, &claims);
        Ok(ok_json(json!({
            "token_type": "Bearer",
            "expires_in": life,
            "ext_expires_in": life,
            "access_token": access,
        })))
    })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">\
         <p><small>csp-onboard emulator — not Microsoft</small></p><h1>{title}</h1>{body}</body></html>"
    )
}

fn error_page(e: AadError) -> Response {
    let (desc, ..) = e.description();
    let body = format!(
        "<p>Sorry, but we’re having trouble signing you in.</p><pre>{}</pre>",
        html_escape(&desc)
    );
    (StatusCode::BAD_REQUEST, Html(page("Sign in", &body))).into_response()
}

fn device_login(shared: &Shared, req: &Req) -> Response {
    let form_html = |msg: &str| {
        page(
            "Enter code",
            &format!(
                "{msg}<p>Enter the code displayed on your app or device.</p>\
                 <form method=\"post\" action=\"/devicelogin\">\
                 <input name=\"user_code\" autofocus autocomplete=\"off\"> \
                 <button name=\"action\" value=\"approve\">Approve</button> \
                 <button name=\"action\" value=\"decline\">Decline</button></form>"
            ),
        )
    };
    match req.method {
        Method::GET => Html(form_html("")).into_response(),
        Method::POST => {
            let fields: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect();
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let user_code = get("user_code");
            let approve = get("action") != "decline";
            let kind = shared.knobs().signed_in_user;
            let (upn, client) = shared.read(|d| {
                let upn = d
                    .user_of_kind(kind)
                    .map(|u| u.upn.clone())
                    .unwrap_or_default();
                let wanted: String = user_code
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_ascii_uppercase();
                let client = d
                    .device_codes
                    .iter()
                    .find(|c| c.user_code == wanted)
                    .map(|c| client_name(d, &c.client_id))
                    .unwrap_or_default();
                (upn, client)
            });
            match shared.write(|d| decide_device_code(d, &user_code, approve.then_some(kind))) {
                Ok(()) if approve => Html(page(
                    "You're signed in",
                    &format!(
                        "<p>Signed in as {} to {} on your device. You may now close this window.</p>",
                        html_escape(&upn),
                        html_escape(&client)
                    ),
                ))
                .into_response(),
                Ok(()) => Html(page(
                    "Sign-in declined",
                    "<p>You declined. You may now close this window.</p>",
                ))
                .into_response(),
                Err(msg) => (
                    StatusCode::BAD_REQUEST,
                    Html(form_html(&format!("<p><b>{}</b></p>", html_escape(msg)))),
                )
                    .into_response(),
            }
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// Entra matches loopback redirect URIs ignoring the port (the Azure CLI registers `http://localhost`).
fn loopback_redirect_ok(uri: &str) -> bool {
    let Ok(u) = url::Url::parse(uri) else {
        return false;
    };
    u.scheme() == "http"
        && matches!(u.host_str(), Some("localhost") | Some("127.0.0.1"))
        && (u.path() == "/" || u.path().is_empty())
        && u.query().is_none()
        && u.fragment().is_none()
}

fn redirect_to(uri: &str, pairs: &[(&str, &str)]) -> Response {
    let mut u = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response(),
    };
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(u.as_str()) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn authorize(shared: &Shared, req: &Req, tenant: &str) -> Response {
    let knobs = shared.knobs();
    let now = OffsetDateTime::now_utc();
    if req.method != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let q = |k: &str| req.q(k).filter(|v| !v.is_empty());
    // Errors before the redirect URI is trusted go to an error page, never to the redirect URI.
    let checked = shared.read(|d| -> Result<(String, String), AadError> {
        resolve_tenant(d, tenant)?;
        let client_id = q("client_id").ok_or_else(|| missing("client_id"))?;
        match resolve_client(d, &knobs, client_id, now)? {
            Client::Public => {}
            Client::App => return Err(not_found_app(d, client_id)),
        }
        let redirect = q("redirect_uri").ok_or_else(|| missing("redirect_uri"))?;
        if !loopback_redirect_ok(redirect) {
            return Err(aad(
                "invalid_request",
                50011,
                format!("The redirect URI '{redirect}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this."),
            ));
        }
        Ok((client_id.to_string(), redirect.to_string()))
    });
    let (client_id, redirect) = match checked {
        Ok(v) => v,
        Err(e) => return error_page(e),
    };
    let state_param = req.q("state").unwrap_or("");
    let redirect_error = |e: AadError| {
        let (desc, ..) = e.description();
        let mut pairs = vec![("error", e.error), ("error_description", desc.as_str())];
        if !state_param.is_empty() {
            pairs.push(("state", state_param));
        }
        redirect_to(&redirect, &pairs)
    };
    let response_type = match q("response_type") {
        None => return redirect_error(missing("response_type")),
        Some(rt) => rt,
    };
    if response_type != "code" {
        return redirect_error(aad(
            "unsupported_response_type",
            700054,
            format!("response_type '{response_type}' is not enabled for the application."),
        ));
    }
    if let Some(mode) = q("response_mode").filter(|m| *m != "query") {
        return redirect_error(aad(
            "invalid_request",
            900144,
            format!("The emulator answers response_mode=query only, not '{mode}'."),
        ));
    }
    let Some(scope) = q("scope") else {
        return redirect_error(missing("scope"));
    };
    if let Err(e) = shared.read(|d| parse_scope(d, &knobs, scope)) {
        return redirect_error(e);
    }
    let challenge = q("code_challenge").map(str::to_string);
    let method = match (&challenge, q("code_challenge_method")) {
        (None, _) => None,
        (Some(_), None) => Some("plain".to_string()),
        (Some(_), Some(m @ ("S256" | "plain"))) => Some(m.to_string()),
        (Some(_), Some(m)) => {
            return redirect_error(aad(
                "invalid_request",
                501491,
                format!("Invalid code_challenge_method '{m}'. Use S256."),
            ));
        }
    };
    let code = format!("1.AX{}", state::random_string(200, state::ALNUM));
    let stored = shared.write(|d| {
        let user_id = d.user_of_kind(knobs.signed_in_user)?.id.clone();
        d.prune(now);
        d.auth_codes.push(AuthCode {
            code_sha256: sha256_hex(&code),
            client_id: client_id.to_ascii_lowercase(),
            redirect_uri: redirect.clone(),
            scope: scope.to_string(),
            code_challenge: challenge,
            code_challenge_method: method,
            user_id,
            expires: now + time::Duration::minutes(10),
            redeemed: false,
        });
        Some(())
    });
    if stored.is_none() {
        return error_page(aad(
            "invalid_request",
            50034,
            "The user account does not exist in the directory.",
        ));
    }
    let session = new_guid();
    let mut pairs = vec![("code", code.as_str())];
    if !state_param.is_empty() {
        pairs.push(("state", state_param));
    }
    pairs.push(("session_state", session.as_str()));
    redirect_to(&redirect, &pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_resolve_to_one_resource() {
        let d = Data::seed();
        let k = Knobs::default();
        let s = parse_scope(
            &d,
            &k,
            "https://graph.microsoft.com/.default offline_access openid profile",
        )
        .ok()
        .unwrap();
        assert_eq!(s.resource, Resource::Graph);
        assert!(s.offline && s.openid);
        let s = parse_scope(
            &d,
            &k,
            "https://api.partnercenter.microsoft.com/user_impersonation",
        )
        .ok()
        .unwrap();
        assert_eq!(s.resource, Resource::PartnerCenter);
        let e = parse_scope(&d, &k, "https://graph.microsoft.us/.default")
            .err()
            .unwrap();
        assert_eq!((e.error, e.code), ("invalid_resource", 500011));
        let e = parse_scope(
            &d,
            &k,
            "https://graph.microsoft.com/.default https://api.partnercenter.microsoft.com/.default",
        )
        .err()
        .unwrap();
        assert_eq!(e.code, 28000);
        let e = parse_scope(&d, &k, "https://api.partnercenter.microsoft.com/Everything")
            .err()
            .unwrap();
        assert_eq!(e.error, "invalid_scope");
    }

    #[test]
    fn graph_tokens_carry_policy_read_only_under_the_knob() {
        let d = Data::seed();
        let mut k = Knobs::default();
        let by_name = parse_scope(&d, &k, "https://graph.microsoft.com/Policy.Read.All")
            .ok()
            .unwrap();
        assert!(!delegated_scp(&by_name, &k).contains("Policy.Read.All"));
        let default = parse_scope(&d, &k, "https://graph.microsoft.com/.default")
            .ok()
            .unwrap();
        assert!(!delegated_scp(&default, &k).contains("Policy.Read.All"));
        k.grant_policy_read = true;
        assert!(delegated_scp(&default, &k).contains("Policy.Read.All"));
    }

    #[test]
    fn only_loopback_redirects_match_the_public_client() {
        assert!(loopback_redirect_ok("http://localhost:53817"));
        assert!(loopback_redirect_ok("http://127.0.0.1:1/"));
        assert!(!loopback_redirect_ok("http://localhost:1/callback"));
        assert!(!loopback_redirect_ok("https://evil.example/"));
        assert!(!loopback_redirect_ok("http://localhost.evil.example/"));
    }
}

//! Microsoft Graph v1.0: the directory reads and writes of the onboarding (me, organization,
//! memberOf and transitiveMemberOf, service principals, applications and their passwords, group
//! members, app policy), with Graph's error bodies, permissions and replication lag.

use super::authority::GRAPH_AUDIENCE;
use super::server::Req;
use super::state::{
    self, Application, Data, Password, ServicePrincipal, is_guid, new_guid, sha256_hex,
};
use super::{Knobs, Shared, token};
use crate::cloud::PARTNER_CENTER_APP_ID;
use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const CTX: &str = "https://graph.microsoft.com/v1.0/$metadata";
const POLICY_ID: &str = "00000000-0000-0000-0000-000000000000";

pub(crate) struct GraphError {
    status: StatusCode,
    code: String,
    message: String,
    details: Option<Value>,
}

impl GraphError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code: code.to_string(),
            message: message.into(),
            details: None,
        }
    }

    pub fn throttled() -> Self {
        GraphError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests. Please retry again later.",
        )
    }

    /// `{"error":{code, message, [details], innerError:{date, request-id, client-request-id}}}`
    pub fn render(self, req: Option<&Req>) -> Response {
        let request_id = new_guid();
        let client_request_id = req
            .and_then(|r| r.header("client-request-id"))
            .map(str::to_string)
            .unwrap_or_else(|| request_id.clone());
        let date = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "innerError": {"date": date, "request-id": request_id, "client-request-id": client_request_id},
        });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut r = (self.status, Json(json!({ "error": error }))).into_response();
        set_ids(&mut r, &request_id, &client_request_id);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\""),
            );
        }
        r
    }
}

fn set_ids(r: &mut Response, request_id: &str, client_request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(client_request_id) {
        r.headers_mut().insert("client-request-id", v);
    }
}

type GResult = Result<Response, GraphError>;

fn bad_request(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn request_bad(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
}

fn invalid_id(id: &str) -> GraphError {
    request_bad(format!("Invalid object identifier '{id}'."))
}

fn not_found(id: &str) -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn request_size_exceeded() -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "Directory_ResourceSizeExceeded",
        "The size of the object has exceeded its limit. Please reduce the number of values and retry your request.",
    )
}

fn denied() -> GraphError {
    GraphError::new(
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

fn unauthenticated(message: &str) -> GraphError {
    GraphError::new(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
    )
}

fn unknown_property(prop: &str, type_name: &str) -> GraphError {
    bad_request(format!(
        "The property '{prop}' does not exist on type 'microsoft.graph.{type_name}'. Make sure to only use property names that are defined by the type or mark the type as open type."
    ))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Who is calling, from a verified Graph token.
struct Caller {
    /// None for App-only tokens.
    user: Option<state::User>,
    /// App-only: the `roles` claim (application permissions). Delegated: the `scp` claim.
    perms: Vec<String>,
    /// Delegated: the template IDs of the user's directory roles.
    directory_roles: Vec<String>,
}

impl Caller {
    fn has_perm(&self, any_of: &[&str]) -> bool {
        self.perms.iter().any(|r| any_of.contains(&r.as_str()))
    }

    /// The signed-in user holds one of these directory roles (template IDs).
    fn holds_role(&self, any_of: &[&str]) -> bool {
        self.directory_roles
            .iter()
            .any(|r| any_of.contains(&r.as_str()))
    }

    /// Graph checks two things (microsoft-apis.md §3.0). Delegated: the token's `scp` holds one of
    /// `scopes` AND the user's own rights pass `user_ok` (a delegated token never grants more than
    /// the user has). App-only: the token's `roles` holds one of `app_roles`. Else 403.
    fn allow(
        &self,
        scopes: &[&str],
        app_roles: &[&str],
        user_ok: impl FnOnce(&state::User) -> bool,
    ) -> Result<(), GraphError> {
        let ok = match &self.user {
            Some(u) => self.has_perm(scopes) && user_ok(u),
            None => self.has_perm(app_roles),
        };
        if ok { Ok(()) } else { Err(denied()) }
    }

    fn delegated(&self) -> Result<&state::User, GraphError> {
        self.user.as_ref().ok_or_else(|| {
            bad_request("/me request is only valid with delegated authentication flow.")
        })
    }
}

// Application permissions (App-only `roles`) per route.
const APP_READ: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Application.ReadWrite.OwnedBy",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const APP_WRITE: &[&str] = &[
    "Application.ReadWrite.All",
    "Application.ReadWrite.OwnedBy",
    "Directory.ReadWrite.All",
];
const GROUP_READ: &[&str] = &[
    "GroupMember.Read.All",
    "GroupMember.ReadWrite.All",
    "Group.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const GROUP_WRITE: &[&str] = &[
    "GroupMember.ReadWrite.All",
    "Group.ReadWrite.All",
    "Directory.ReadWrite.All",
];
const ORG_READ: &[&str] = &[
    "Organization.Read.All",
    "Organization.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Graph "Get tenantAppManagementPolicy": Policy.Read.All, or the higher
/// Policy.Read.ApplicationConfiguration / Policy.ReadWrite.ApplicationConfiguration (both token kinds).
const POLICY_READ: &[&str] = &[
    "Policy.Read.All",
    "Policy.Read.ApplicationConfiguration",
    "Policy.ReadWrite.ApplicationConfiguration",
];

// Delegated permissions (`scp`) per route. `Directory.AccessAsUser.All` stands for "whatever the
// user may do" on the directory routes, but never for policies.
/// `POST /applications`, `POST /servicePrincipals`, `addPassword`, `removePassword` (§3.0).
const APP_WRITE_SCP: &[&str] = &["Application.ReadWrite.All", "Directory.AccessAsUser.All"];
const APP_READ_SCP: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
    "Directory.AccessAsUser.All",
];
/// `POST /groups/{id}/members/$ref` (§3.0, Graph "Add members").
const GROUP_WRITE_SCP: &[&str] = &[
    "GroupMember.ReadWrite.All",
    "Group.ReadWrite.All",
    "Directory.AccessAsUser.All",
];
const GROUP_READ_SCP: &[&str] = &[
    "GroupMember.Read.All",
    "GroupMember.ReadWrite.All",
    "Group.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
    "Directory.AccessAsUser.All",
];
/// `/me`, `/me/memberOf`, `/me/transitiveMemberOf`, `/organization`: User.Read or anything above it.
const USER_READ_SCP: &[&str] = &[
    "User.Read",
    "User.ReadWrite",
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
    "Directory.AccessAsUser.All",
];

// Directory roles (template IDs) per route, microsoft-apis.md §3.0.
/// Graph "Create servicePrincipal" (multi-tenant app), "application: addPassword" /
/// "removePassword", "Update application": any app, owner or not.
const APP_ADMIN_ROLES: &[&str] = &[
    state::GLOBAL_ADMIN_TEMPLATE,
    state::APPLICATION_ADMIN_TEMPLATE,
    state::CLOUD_APPLICATION_ADMIN_TEMPLATE,
];
/// Graph "Add members": any group (the emulator's groups are not role-assignable).
const GROUP_ADMIN_ROLES: &[&str] = &[
    state::GLOBAL_ADMIN_TEMPLATE,
    state::GROUPS_ADMIN_TEMPLATE,
    state::USER_ADMIN_TEMPLATE,
    state::PRIVILEGED_ROLE_ADMIN_TEMPLATE,
];
/// Graph "Get tenantAppManagementPolicy": "Global Reader is the least privileged role supported",
/// so Global Reader or higher. The app-admin roles manage app policies (Microsoft365DSC lists
/// Application Administrator for this resource; UNCONFIRMED on Graph's page).
const POLICY_READER_ROLES: &[&str] = &[
    state::GLOBAL_ADMIN_TEMPLATE,
    state::GLOBAL_READER_TEMPLATE,
    state::APPLICATION_ADMIN_TEMPLATE,
    state::CLOUD_APPLICATION_ADMIN_TEMPLATE,
];

fn authenticate(d: &Data, req: &Req, now: OffsetDateTime) -> Result<Caller, GraphError> {
    let Some(bearer) = req.bearer() else {
        return Err(unauthenticated("Access token is empty."));
    };
    let claims = token::verify(&d.signing_key, bearer)
        .map_err(|_| unauthenticated("Access token validation failure."))?;
    let aud = claims["aud"].as_str().unwrap_or("");
    if aud != GRAPH_AUDIENCE && aud != state::GRAPH_APP_ID {
        return Err(unauthenticated(
            "Access token validation failure. Invalid audience.",
        ));
    }
    if claims["tid"].as_str() != Some(d.tenant_id.as_str()) {
        return Err(unauthenticated(
            "Access token validation failure. Invalid issuer.",
        ));
    }
    if claims["exp"].as_i64().unwrap_or(0) <= now.unix_timestamp() {
        return Err(unauthenticated(
            "Lifetime validation failed, the token is expired.",
        ));
    }
    let oid = claims["oid"].as_str().unwrap_or("");
    if claims["idtyp"].as_str() == Some("app") {
        let roles = claims["roles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Caller {
            user: None,
            perms: roles,
            directory_roles: vec![],
        });
    }
    let user = d.user(oid).cloned().ok_or_else(|| {
        unauthenticated("Access token validation failure. The user does not exist.")
    })?;
    let scp = claims["scp"]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok(Caller {
        directory_roles: d.role_templates(&user.id),
        user: Some(user),
        perms: scp,
    })
}

pub(crate) fn handle(shared: &Shared, req: &Req) -> Response {
    if let Some(blob) = super::billing::serve_blob(shared, req) {
        return blob;
    }
    let r = route(shared, req);
    let request_id = new_guid();
    match r {
        Ok(mut resp) => {
            let client_request_id = req
                .header("client-request-id")
                .map(str::to_string)
                .unwrap_or_else(|| request_id.clone());
            set_ids(&mut resp, &request_id, &client_request_id);
            resp
        }
        Err(e) => e.render(Some(req)),
    }
}

fn method_not_allowed() -> GraphError {
    GraphError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
}

/// `applications(appId='…')` → `Some(Ok("…"))`; another segment → `None`.
fn alternate_key(seg: &str, entity: &str) -> Option<Result<String, GraphError>> {
    let inner = seg
        .strip_prefix(entity)?
        .strip_prefix('(')?
        .strip_suffix(')')?;
    let Some((key, value)) = inner.split_once('=') else {
        return Some(Err(bad_request(format!(
            "Bad key syntax in segment '{seg}'."
        ))));
    };
    if !key.trim().eq_ignore_ascii_case("appId") {
        return Some(Err(bad_request(format!(
            "Unsupported alternate key '{key}' in segment '{seg}'."
        ))));
    }
    let Some(v) = value
        .trim()
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
    else {
        return Some(Err(bad_request(format!(
            "Bad key syntax in segment '{seg}'."
        ))));
    };
    if !is_guid(v) {
        return Some(Err(invalid_id(v)));
    }
    Some(Ok(v.to_ascii_lowercase()))
}

fn route(shared: &Shared, req: &Req) -> GResult {
    let now = OffsetDateTime::now_utc();
    let knobs = shared.knobs();
    let Some(rest) = req.path.strip_prefix("/v1.0/") else {
        let version = req
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        return Err(bad_request(format!("Invalid version: {version}")));
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let caller = shared.read(|d| authenticate(d, req, now))?;
    let m = &req.method;
    match segs.as_slice() {
        ["reports", "partners", "billing", tail @ ..] => {
            super::billing::graph_route(shared, req, tail)
        }
        ["servicePrincipals", id, "appRoleAssignments"] if m == Method::POST => {
            super::billing::assign_app_role(shared, req, id)
        }
        ["me"] if m == Method::GET => me(req, &caller),
        // No nested groups here, so the transitive list is the direct one (same paging, same
        // $select strictness); only the next link names the route that was asked.
        ["me", route @ ("memberOf" | "transitiveMemberOf")] if m == Method::GET => {
            shared.read(|d| member_of(d, req, &caller, &knobs, &shared.urls.graph, route))
        }
        ["organization"] if m == Method::GET => shared.read(|d| organization(d, req, &caller)),
        ["servicePrincipals"] if m == Method::POST => {
            let body = json_body(req)?;
            shared.write(|d| create_sp(d, &caller, &knobs, &body, now))
        }
        ["servicePrincipals"] if m == Method::GET => {
            let app_id = filter_eq(req, &["appId"], "ServicePrincipal")?.map(|(_, v)| v);
            shared.read(|d| list_sps(d, req, &caller, &knobs, app_id, now))
        }
        [seg] if seg.starts_with("servicePrincipals(") => {
            let app_id = alternate_key(seg, "servicePrincipals").ok_or_else(|| segment(seg))??;
            if m != Method::GET {
                return Err(method_not_allowed());
            }
            if let Some(r) = super::billing::graph_app_roles(shared, req, &app_id) {
                return Ok(r);
            }
            shared.read(|d| {
                caller.allow(APP_READ_SCP, APP_READ, |_| true)?;
                let sp = visible_sp(d, &knobs, &app_id, now).ok_or_else(|| not_found(&app_id))?;
                let v = select(sp_json(d, sp), req, "servicePrincipal", SP_PROPS)?;
                Ok(entity("servicePrincipals/$entity", v))
            })
        }
        ["applications"] if m == Method::POST => {
            let body = json_body(req)?;
            shared.write(|d| create_app(d, &caller, &body, now))
        }
        ["applications"] if m == Method::GET => {
            let filter = filter_eq(req, &["appId", "displayName"], "Application")?;
            shared.read(|d| list_apps(d, req, &caller, &knobs, filter, now))
        }
        [seg, tail @ ..] if seg.starts_with("applications(") || *seg == "applications" => {
            let (key, tail): (AppKey, &[&str]) = if *seg == "applications" {
                match tail {
                    [id, t @ ..] => {
                        if !is_guid(id) {
                            return Err(invalid_id(id));
                        }
                        (AppKey::ObjectId(id.to_ascii_lowercase()), t)
                    }
                    [] => return Err(method_not_allowed()),
                }
            } else {
                let app_id = alternate_key(seg, "applications").ok_or_else(|| segment(seg))??;
                (AppKey::AppId(app_id), tail)
            };
            match (tail, m) {
                ([], &Method::GET) => shared.read(|d| {
                    caller.allow(APP_READ_SCP, APP_READ, |_| true)?;
                    let app = find_app(d, &knobs, &key, now)?;
                    let v = select(app_json(d, app), req, "application", APP_PROPS)?;
                    Ok(entity("applications/$entity", v))
                }),
                (["addPassword"], &Method::POST) => {
                    let body = json_body_or_empty(req)?;
                    shared.write(|d| add_password(d, &caller, &knobs, &key, &body, now))
                }
                (["removePassword"], &Method::POST) => {
                    let body = json_body(req)?;
                    shared.write(|d| remove_password(d, &caller, &knobs, &key, &body, now))
                }
                ([], &Method::DELETE) => {
                    shared.write(|d| delete_app(d, &caller, &knobs, &key, now))
                }
                ([], &Method::PATCH) => {
                    let body = json_body(req)?;
                    shared.write(|d| update_app(d, &caller, &knobs, &key, &body, now))
                }
                ([] | ["addPassword"] | ["removePassword"], _) => Err(method_not_allowed()),
                ([other, ..], _) => Err(segment(other)),
            }
        }
        ["groups"] if m == Method::GET => {
            let filter = filter_eq(req, &["displayName", "id"], "Group")?;
            shared.read(|d| list_groups(d, req, &caller, filter))
        }
        ["groups", gid, "members", "$ref"] => {
            if m != Method::POST {
                return Err(method_not_allowed());
            }
            if !is_guid(gid) {
                return Err(invalid_id(gid));
            }
            let body = json_body(req)?;
            shared.write(|d| add_member(d, &caller, &knobs, gid, &body, &shared.urls.graph, now))
        }
        ["policies", "defaultAppManagementPolicy"] if m == Method::GET => {
            caller.allow(POLICY_READ, POLICY_READ, |_| {
                caller.holds_role(POLICY_READER_ROLES)
            })?;
            Ok(entity(
                "policies/defaultAppManagementPolicy/$entity",
                policy_json(&knobs),
            ))
        }
        ["me" | "organization" | "applications" | "servicePrincipals" | "groups"]
        | ["me", "memberOf" | "transitiveMemberOf"]
        | ["policies", "defaultAppManagementPolicy"] => Err(method_not_allowed()),
        [first, ..] => Err(segment(first)),
        [] => Err(segment("")),
    }
}

fn segment(seg: &str) -> GraphError {
    bad_request(format!("Resource not found for the segment '{seg}'."))
}

fn entity(context: &str, mut v: Value) -> Response {
    if let Value::Object(map) = &mut v {
        let mut out = Map::new();
        out.insert("@odata.context".into(), json!(format!("{CTX}#{context}")));
        out.extend(std::mem::take(map));
        v = Value::Object(out);
    }
    (StatusCode::OK, Json(v)).into_response()
}

fn collection(context: &str, items: Vec<Value>, next: Option<String>) -> Response {
    let mut v = json!({"@odata.context": format!("{CTX}#{context}"), "value": items});
    if let Some(n) = next {
        v["@odata.nextLink"] = json!(n);
    }
    (StatusCode::OK, Json(v)).into_response()
}

/// A JSON object body, as Graph requires for POST.
fn json_body(req: &Req) -> Result<Map<String, Value>, GraphError> {
    let unreadable = || {
        bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        )
    };
    if req.media_type().as_deref() != Some("application/json") {
        return Err(unreadable());
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(unreadable()),
    }
}

/// addPassword may be sent without a body (Graph then picks the defaults).
fn json_body_or_empty(req: &Req) -> Result<Map<String, Value>, GraphError> {
    if req.body.is_empty() {
        return Ok(Map::new());
    }
    json_body(req)
}

fn select_list(req: &Req) -> Option<Vec<String>> {
    req.q("$select").map(|s| {
        s.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    })
}

fn check_select(props: &[String], type_name: &str, known: &[&str]) -> Result<(), GraphError> {
    for p in props {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(p)) {
            return Err(bad_request(format!(
                "Could not find a property named '{p}' on type 'microsoft.graph.{type_name}'."
            )));
        }
    }
    Ok(())
}

fn project(v: Value, props: &Option<Vec<String>>) -> Value {
    let (Some(props), Value::Object(map)) = (props, &v) else {
        return v;
    };
    let kept: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| {
            k.starts_with("@odata.") || props.iter().any(|p| p.eq_ignore_ascii_case(k))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(kept)
}

fn select(v: Value, req: &Req, type_name: &str, known: &[&str]) -> Result<Value, GraphError> {
    let props = select_list(req);
    if let Some(p) = &props {
        check_select(p, type_name, known)?;
    }
    Ok(project(v, &props))
}

/// `$filter=prop eq 'value'`, the only filter shape the onboarding uses.
fn filter_eq(
    req: &Req,
    props: &[&str],
    resource: &str,
) -> Result<Option<(String, String)>, GraphError> {
    let Some(f) = req.q("$filter") else {
        return Ok(None);
    };
    let invalid = || bad_request(format!("Invalid filter clause: {f}"));
    let (prop, value) = f.split_once(" eq ").ok_or_else(invalid)?;
    let prop = prop.trim();
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .ok_or_else(invalid)?
        .replace("''", "'");
    let Some(known) = props.iter().find(|p| p.eq_ignore_ascii_case(prop)) else {
        return Err(bad_request(format!(
            "Unsupported or invalid query filter clause specified for property '{prop}' of resource '{resource}'."
        )));
    };
    if (*known == "appId" || *known == "id") && !is_guid(&value) {
        return Err(invalid_id(&value));
    }
    Ok(Some((known.to_string(), value)))
}

const USER_PROPS: &[&str] = &[
    "id",
    "displayName",
    "userPrincipalName",
    "mail",
    "givenName",
    "surname",
    "jobTitle",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "businessPhones",
];

fn me(req: &Req, caller: &Caller) -> GResult {
    let u = caller.delegated()?;
    caller.allow(USER_READ_SCP, &[], |_| true)?;
    let (given, sur) = u
        .display_name
        .split_once(' ')
        .unwrap_or((&u.display_name, ""));
    let v = json!({
        "businessPhones": [], "displayName": u.display_name, "givenName": given,
        "jobTitle": null, "mail": u.upn, "mobilePhone": null, "officeLocation": null,
        "preferredLanguage": "en-US", "surname": sur, "userPrincipalName": u.upn, "id": u.id,
    });
    let v = select(v, req, "user", USER_PROPS)?;
    Ok(entity("users/$entity", v))
}

const DIR_OBJECT_PROPS: &[&str] = &[
    "id",
    "displayName",
    "description",
    "roleTemplateId",
    "securityEnabled",
    "mailEnabled",
    "groupTypes",
    "mail",
    "deletedDateTime",
];

/// `GET /me/memberOf` and `GET /me/transitiveMemberOf` (`route`, which the next link repeats).
fn member_of(
    d: &Data,
    req: &Req,
    caller: &Caller,
    knobs: &Knobs,
    graph_url: &str,
    route: &str,
) -> GResult {
    let u = caller.delegated()?;
    caller.allow(USER_READ_SCP, &[], |_| true)?;
    let props = select_list(req);
    if let Some(p) = &props {
        check_select(p, "directoryObject", DIR_OBJECT_PROPS)?;
    }
    // Groups first, roles last: the role that matters tends to sit on a later page.
    let mut items: Vec<Value> = d
        .groups
        .iter()
        .filter(|g| g.members.contains(&u.id))
        .map(|g| {
            json!({"@odata.type": "#microsoft.graph.group", "id": g.id, "deletedDateTime": null,
                "displayName": g.display_name, "description": g.description, "groupTypes": [],
                "mail": null, "mailEnabled": false, "securityEnabled": true})
        })
        .collect();
    items.extend(d.roles.iter().filter(|r| r.members.contains(&u.id)).map(|r| {
        json!({"@odata.type": "#microsoft.graph.directoryRole", "id": r.id, "deletedDateTime": null,
            "displayName": r.display_name, "description": format!("{} (seeded by the emulator)", r.display_name),
            "roleTemplateId": r.template_id})
    }));
    let page = match req.q("$top") {
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=999).contains(&n) => n,
            _ => {
                return Err(bad_request(format!(
                    "Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."
                )));
            }
        },
        None if knobs.member_of_page_size == 0 => 100,
        None => knobs.member_of_page_size,
    };
    let skip = match req.q("$skiptoken") {
        None => 0,
        Some(t) => t
            .strip_prefix("emu")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| bad_request("Invalid $skiptoken."))?,
    };
    let end = (skip + page).min(items.len());
    let next = (end < items.len()).then(|| {
        let mut q = Vec::new();
        if let Some(s) = req.q("$select") {
            q.push(format!(
                "$select={}",
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
            ));
        }
        if let Some(t) = req.q("$top") {
            q.push(format!("$top={t}"));
        }
        q.push(format!("$skiptoken=emu{end}"));
        format!("{graph_url}/v1.0/me/{route}?{}", q.join("&"))
    });
    let page_items = items[skip..end]
        .iter()
        .cloned()
        .map(|v| project(v, &props))
        .collect();
    Ok(collection("directoryObjects", page_items, next))
}

const ORG_PROPS: &[&str] = &[
    "id",
    "displayName",
    "verifiedDomains",
    "tenantType",
    "countryLetterCode",
    "preferredLanguage",
    "createdDateTime",
    "technicalNotificationMails",
];

fn organization(d: &Data, req: &Req, caller: &Caller) -> GResult {
    caller.allow(USER_READ_SCP, ORG_READ, |_| true)?;
    let v = json!({
        "id": d.tenant_id, "displayName": d.tenant_name, "tenantType": "AAD",
        "countryLetterCode": "US", "preferredLanguage": "en", "createdDateTime": "2019-04-01T09:00:00Z",
        "technicalNotificationMails": [format!("admin@{}", d.tenant_domain)],
        "verifiedDomains": [{"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": true,
            "isInitial": true, "name": d.tenant_domain, "type": "Managed"}],
    });
    let v = select(v, req, "organization", ORG_PROPS)?;
    Ok(collection("organization", vec![v], None))
}

const SP_PROPS: &[&str] = &[
    "id",
    "appId",
    "displayName",
    "appDisplayName",
    "servicePrincipalType",
    "appOwnerOrganizationId",
    "accountEnabled",
    "appRoleAssignmentRequired",
    "servicePrincipalNames",
    "signInAudience",
    "tags",
];

fn sp_json(_d: &Data, sp: &ServicePrincipal) -> Value {
    json!({
        "id": sp.id, "appId": sp.app_id, "displayName": sp.display_name, "appDisplayName": sp.display_name,
        "servicePrincipalType": "Application", "appOwnerOrganizationId": sp.owner_tenant,
        "accountEnabled": true, "appRoleAssignmentRequired": false,
        "servicePrincipalNames": [sp.app_id], "signInAudience": "AzureADMultipleOrgs", "tags": [],
    })
}

fn visible_sp<'a>(
    d: &'a Data,
    knobs: &Knobs,
    app_id: &str,
    now: OffsetDateTime,
) -> Option<&'a ServicePrincipal> {
    if knobs.not_csp_tenant && app_id.eq_ignore_ascii_case(PARTNER_CENTER_APP_ID) {
        return None;
    }
    d.sp_by_app_id(app_id)
        .filter(|sp| now >= sp.created + knobs.replication_delay)
}

fn list_sps(
    d: &Data,
    req: &Req,
    caller: &Caller,
    knobs: &Knobs,
    app_id: Option<String>,
    now: OffsetDateTime,
) -> GResult {
    caller.allow(APP_READ_SCP, APP_READ, |_| true)?;
    let props = select_list(req);
    if let Some(p) = &props {
        check_select(p, "servicePrincipal", SP_PROPS)?;
    }
    let items = d
        .service_principals
        .iter()
        .filter(|sp| {
            app_id
                .as_ref()
                .is_none_or(|a| sp.app_id.eq_ignore_ascii_case(a))
        })
        .filter(|sp| visible_sp(d, knobs, &sp.app_id, now).is_some())
        .map(|sp| project(sp_json(d, sp), &props))
        .collect();
    Ok(collection("servicePrincipals", items, None))
}

fn check_keys(
    body: &Map<String, Value>,
    allowed: &[&str],
    type_name: &str,
) -> Result<(), GraphError> {
    for k in body.keys() {
        if k == "@odata.type" {
            continue;
        }
        if !allowed.contains(&k.as_str()) {
            return Err(unknown_property(k, type_name));
        }
    }
    Ok(())
}

fn create_sp(
    d: &mut Data,
    caller: &Caller,
    knobs: &Knobs,
    body: &Map<String, Value>,
    now: OffsetDateTime,
) -> GResult {
    caller.allow(APP_WRITE_SCP, APP_WRITE, |_| true)?;
    check_keys(
        body,
        &[
            "appId",
            "accountEnabled",
            "tags",
            "appRoleAssignmentRequired",
            "notes",
            "description",
        ],
        "servicePrincipal",
    )?;
    let app_id = body.get("appId").and_then(Value::as_str).ok_or_else(|| {
        request_bad("The appId property is required to create a service principal.")
    })?;
    if !is_guid(app_id) {
        return Err(invalid_id(app_id));
    }
    let visible_app = d
        .app_by_app_id(app_id)
        .filter(|a| now >= a.created + knobs.replication_delay);
    // Graph "Create servicePrincipal": for a multi-tenant app (or one this tenant does not own),
    // Global / Application / Cloud Application Administrator; for a single-tenant app, also its
    // owner holding Application Developer (§3.0).
    if let Some(u) = &caller.user {
        let single_tenant_owner = visible_app.is_some_and(|a| {
            a.sign_in_audience == "AzureADMyOrg"
                && a.owners.contains(&u.id)
                && caller.holds_role(&[state::APPLICATION_DEVELOPER_TEMPLATE])
        });
        if !(caller.holds_role(APP_ADMIN_ROLES) || single_tenant_owner) {
            return Err(denied());
        }
    }
    if d.sp_by_app_id(app_id).is_some() {
        return Err(GraphError::new(
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            "Another object with the same value for property servicePrincipalNames already exists.",
        ));
    }
    // Microsoft's own multi-tenant apps (Partner Center, Graph, the public clients) exist in
    // every tenant's reach: creating their service principal installs them, as CIPP's SAM setup
    // does for a tenant missing Partner Center's. UNCONFIRMED: Graph's "Create servicePrincipal"
    // page does not speak of first-party apps; the same role rule as any multi-tenant app applies.
    let sp = match (visible_app, state::first_party_app_name(app_id)) {
        (Some(app), _) => ServicePrincipal {
            id: new_guid(),
            app_id: app.app_id.clone(),
            display_name: app.display_name.clone(),
            owner_tenant: d.tenant_id.clone(),
            created: now,
        },
        (None, Some(name)) => ServicePrincipal {
            id: new_guid(),
            app_id: app_id.to_ascii_lowercase(),
            display_name: name.to_string(),
            owner_tenant: state::MICROSOFT_SERVICES_TENANT.to_string(),
            created: now,
        },
        (None, None) => {
            return Err(request_bad(format!(
                "The appId '{app_id}' of the service principal does not reference a valid application object."
            )));
        }
    };
    let v = sp_json(d, &sp);
    d.service_principals.push(sp);
    let mut r = entity("servicePrincipals/$entity", v);
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

enum AppKey {
    ObjectId(String),
    AppId(String),
}

fn find_app<'a>(
    d: &'a Data,
    knobs: &Knobs,
    key: &AppKey,
    now: OffsetDateTime,
) -> Result<&'a Application, GraphError> {
    let (found, shown) = match key {
        AppKey::ObjectId(id) => (d.applications.iter().find(|a| a.id == *id), id),
        AppKey::AppId(app_id) => (d.app_by_app_id(app_id), app_id),
    };
    found
        .filter(|a| now >= a.created + knobs.replication_delay)
        .ok_or_else(|| not_found(shown))
}

fn find_app_index(
    d: &Data,
    knobs: &Knobs,
    key: &AppKey,
    now: OffsetDateTime,
) -> Result<usize, GraphError> {
    let id = find_app(d, knobs, key, now)?.id.clone();
    d.applications
        .iter()
        .position(|a| a.id == id)
        .ok_or_else(|| not_found(&id))
}

const APP_PROPS: &[&str] = &[
    "id",
    "appId",
    "applicationTemplateId",
    "createdDateTime",
    "deletedDateTime",
    "description",
    "disabledByMicrosoftStatus",
    "displayName",
    "groupMembershipClaims",
    "identifierUris",
    "isDeviceOnlyAuthSupported",
    "isFallbackPublicClient",
    "notes",
    "publisherDomain",
    "serviceManagementReference",
    "signInAudience",
    "tags",
    "tokenEncryptionKeyId",
    "defaultRedirectUri",
    "api",
    "appRoles",
    "info",
    "keyCredentials",
    "optionalClaims",
    "parentalControlSettings",
    "passwordCredentials",
    "publicClient",
    "requiredResourceAccess",
    "spa",
    "web",
];

/// Writable on create (everything else is read-only or unknown).
const APP_WRITABLE: &[&str] = &[
    "description",
    "displayName",
    "groupMembershipClaims",
    "identifierUris",
    "isDeviceOnlyAuthSupported",
    "isFallbackPublicClient",
    "notes",
    "serviceManagementReference",
    "signInAudience",
    "tags",
    "tokenEncryptionKeyId",
    "defaultRedirectUri",
    "api",
    "appRoles",
    "info",
    "keyCredentials",
    "optionalClaims",
    "parentalControlSettings",
    "passwordCredentials",
    "publicClient",
    "requiredResourceAccess",
    "spa",
    "web",
];

const SIGN_IN_AUDIENCES: &[&str] = &[
    "AzureADMyOrg",
    "AzureADMultipleOrgs",
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
];

fn password_json(p: &Password, secret_text: Option<&str>) -> Value {
    json!({
        "customKeyIdentifier": null, "displayName": p.display_name, "endDateTime": rfc3339(p.end),
        "hint": p.hint, "keyId": p.key_id, "secretText": secret_text, "startDateTime": rfc3339(p.start),
    })
}

fn app_json(d: &Data, app: &Application) -> Value {
    let mut v = json!({
        "id": app.id, "appId": app.app_id, "applicationTemplateId": null,
        "createdDateTime": rfc3339(whole_seconds(app.created)), "deletedDateTime": null,
        "description": null, "disabledByMicrosoftStatus": null, "displayName": app.display_name,
        "groupMembershipClaims": null, "identifierUris": [], "isDeviceOnlyAuthSupported": null,
        "isFallbackPublicClient": null, "notes": null, "publisherDomain": d.tenant_domain,
        "serviceManagementReference": null, "signInAudience": app.sign_in_audience, "tags": [],
        "tokenEncryptionKeyId": null, "defaultRedirectUri": null,
        "api": {"acceptMappedClaims": null, "knownClientApplications": [], "requestedAccessTokenVersion": null,
            "oauth2PermissionScopes": [], "preAuthorizedApplications": []},
        "appRoles": [],
        "info": {"logoUrl": null, "marketingUrl": null, "privacyStatementUrl": null, "supportUrl": null, "termsOfServiceUrl": null},
        "keyCredentials": [], "optionalClaims": null,
        "parentalControlSettings": {"countriesBlockedForMinors": [], "legalAgeGroupRule": "Allow"},
        "passwordCredentials": [], "publicClient": {"redirectUris": []}, "requiredResourceAccess": [],
        "spa": {"redirectUris": []},
        "web": {"homePageUrl": null, "logoutUrl": null, "redirectUris": [], "redirectUriSettings": [],
            "implicitGrantSettings": {"enableAccessTokenIssuance": false, "enableIdTokenIssuance": false}},
    });
    for (k, val) in &app.props {
        match (v.get_mut(k), val) {
            (Some(Value::Object(dst)), Value::Object(src)) => {
                for (sk, sv) in src {
                    dst.insert(sk.clone(), sv.clone());
                }
            }
            (Some(slot), _) => *slot = val.clone(),
            (None, _) => {}
        }
    }
    if let Some(uris) = v["web"]["redirectUris"].as_array().cloned() {
        v["web"]["redirectUriSettings"] = uris
            .iter()
            .map(|u| json!({"uri": u, "index": null}))
            .collect();
    }
    v["passwordCredentials"] = app
        .passwords
        .iter()
        .map(|p| password_json(p, None))
        .collect();
    v
}

/// The body of `POST /applications` (`creating`: `displayName` required) or `PATCH /applications/{id}`.
fn validate_app_body(body: &Map<String, Value>, creating: bool) -> Result<(), GraphError> {
    for k in body.keys() {
        if k == "@odata.type" {
            continue;
        }
        if APP_PROPS.contains(&k.as_str()) && !APP_WRITABLE.contains(&k.as_str()) {
            return Err(request_bad(format!(
                "Property '{k}' is read-only and cannot be set."
            )));
        }
        if !APP_WRITABLE.contains(&k.as_str()) {
            return Err(unknown_property(k, "application"));
        }
    }
    match body.get("displayName") {
        None if !creating => {}
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => {
            return Err(request_bad(
                "Invalid value specified for property 'displayName' of resource 'Application'.",
            ));
        }
    }
    if let Some(aud) = body.get("signInAudience")
        && !aud.as_str().is_some_and(|a| SIGN_IN_AUDIENCES.contains(&a))
    {
        return Err(request_bad(
            "Invalid value specified for property 'signInAudience' of resource 'Application'.",
        ));
    }
    if body
        .get("passwordCredentials")
        .is_some_and(|p| p.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(request_bad(
            "Property 'passwordCredentials' cannot be set on create; use addPassword.",
        ));
    }
    if let Some(web) = body.get("web") {
        let web = web
            .as_object()
            .ok_or_else(|| bad_request("Invalid value for property 'web'."))?;
        check_keys(
            web,
            &[
                "homePageUrl",
                "logoutUrl",
                "redirectUris",
                "implicitGrantSettings",
                "redirectUriSettings",
            ],
            "webApplication",
        )?;
        if let Some(uris) = web.get("redirectUris") {
            let uris = uris
                .as_array()
                .ok_or_else(|| bad_request("Invalid value for property 'redirectUris'."))?;
            for u in uris {
                let ok = u
                    .as_str()
                    .and_then(|s| url::Url::parse(s).ok())
                    .is_some_and(|url| {
                        url.scheme() == "https"
                            || (url.scheme() == "http"
                                && matches!(url.host_str(), Some("localhost") | Some("127.0.0.1")))
                    });
                if !ok {
                    return Err(request_bad(format!(
                        "Invalid value specified for property 'web.redirectUris' of resource 'Application': {u}"
                    )));
                }
            }
        }
    }
    if let Some(rra) = body.get("requiredResourceAccess") {
        let rra = rra
            .as_array()
            .ok_or_else(|| bad_request("Invalid value for property 'requiredResourceAccess'."))?;
        for r in rra {
            let r = r.as_object().ok_or_else(|| {
                bad_request("Invalid value for property 'requiredResourceAccess'.")
            })?;
            check_keys(
                r,
                &["resourceAppId", "resourceAccess"],
                "requiredResourceAccess",
            )?;
            let id = r.get("resourceAppId").and_then(Value::as_str).unwrap_or("");
            if !is_guid(id) {
                return Err(invalid_id(id));
            }
            let accesses = r
                .get("resourceAccess")
                .and_then(Value::as_array)
                .ok_or_else(|| bad_request("Invalid value for property 'resourceAccess'."))?;
            for a in accesses {
                let a = a
                    .as_object()
                    .ok_or_else(|| bad_request("Invalid value for property 'resourceAccess'."))?;
                check_keys(a, &["id", "type"], "resourceAccess")?;
                let id = a.get("id").and_then(Value::as_str).unwrap_or("");
                if !is_guid(id) {
                    return Err(invalid_id(id));
                }
                if !matches!(
                    a.get("type").and_then(Value::as_str),
                    Some("Scope" | "Role")
                ) {
                    return Err(request_bad(
                        "Invalid value specified for property 'type' of resource 'ResourceAccess'.",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn create_app(
    d: &mut Data,
    caller: &Caller,
    body: &Map<String, Value>,
    now: OffsetDateTime,
) -> GResult {
    // Any member may register an app while "users can register applications" is on (the
    // default); the creator becomes an owner (§3.0, Graph "Create application").
    caller.allow(APP_WRITE_SCP, APP_WRITE, |_| true)?;
    validate_app_body(body, true)?;
    let display_name = body
        .get("displayName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let sign_in_audience = body
        .get("signInAudience")
        .and_then(Value::as_str)
        // Graph's default when left out (see microsoft-apis.md §3).
        .unwrap_or("AzureADandPersonalMicrosoftAccount")
        .to_string();
    let props: Map<String, Value> = body
        .iter()
        .filter(|(k, _)| {
            ![
                "displayName",
                "signInAudience",
                "passwordCredentials",
                "@odata.type",
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let app = Application {
        id: new_guid(),
        app_id: new_guid(),
        display_name,
        sign_in_audience,
        created: now,
        owners: caller.user.iter().map(|u| u.id.clone()).collect(),
        passwords: vec![],
        props,
        graph_roles: vec![],
    };
    let v = app_json(d, &app);
    d.applications.push(app);
    let mut r = entity("applications/$entity", v);
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

fn list_apps(
    d: &Data,
    req: &Req,
    caller: &Caller,
    knobs: &Knobs,
    filter: Option<(String, String)>,
    now: OffsetDateTime,
) -> GResult {
    caller.allow(APP_READ_SCP, APP_READ, |_| true)?;
    let props = select_list(req);
    if let Some(p) = &props {
        check_select(p, "application", APP_PROPS)?;
    }
    let items = d
        .applications
        .iter()
        .filter(|a| now >= a.created + knobs.replication_delay)
        .filter(|a| match &filter {
            Some((p, v)) if p == "appId" => a.app_id.eq_ignore_ascii_case(v),
            Some((_, v)) => a.display_name == *v,
            None => true,
        })
        .map(|a| project(app_json(d, a), &props))
        .collect();
    Ok(collection("applications", items, None))
}

/// addPassword, removePassword, PATCH: the app's owner, or Global / Application / Cloud
/// Application Administrator (§3.0, Graph "application: addPassword"). App-only callers passed
/// their `roles` check already.
fn may_manage(caller: &Caller, app: &Application) -> bool {
    match &caller.user {
        Some(u) => caller.holds_role(APP_ADMIN_ROLES) || app.owners.contains(&u.id),
        None => true,
    }
}

/// `PATCH /applications/{id}`: the writable properties sent replace the stored ones (complex
/// properties such as `web` keep the sub-properties not sent) → 204.
fn update_app(
    d: &mut Data,
    caller: &Caller,
    knobs: &Knobs,
    key: &AppKey,
    body: &Map<String, Value>,
    now: OffsetDateTime,
) -> GResult {
    caller.allow(APP_WRITE_SCP, APP_WRITE, |_| true)?;
    validate_app_body(body, false)?;
    let idx = find_app_index(d, knobs, key, now)?;
    if !may_manage(caller, &d.applications[idx]) {
        return Err(denied());
    }
    let app = &mut d.applications[idx];
    for (k, v) in body {
        match (k.as_str(), v) {
            ("@odata.type" | "passwordCredentials", _) => {}
            ("displayName", Value::String(name)) => app.display_name = name.clone(),
            ("signInAudience", Value::String(aud)) => app.sign_in_audience = aud.clone(),
            (_, Value::Object(src)) => match app.props.get_mut(k) {
                Some(Value::Object(dst)) => {
                    dst.extend(src.iter().map(|(sk, sv)| (sk.clone(), sv.clone())))
                }
                _ => {
                    app.props.insert(k.clone(), v.clone());
                }
            },
            _ => {
                app.props.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn iso_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("P{}D", secs / 86_400)
    } else {
        format!("PT{secs}S")
    }
}

fn parse_time(v: &Value, field: &str) -> Result<Option<OffsetDateTime>, GraphError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => OffsetDateTime::parse(s, &Rfc3339).map(Some).map_err(|_| {
            bad_request(format!(
                "Cannot convert the literal '{s}' to the expected type 'Edm.DateTimeOffset' ({field})."
            ))
        }),
        other => Err(bad_request(format!(
            "Cannot convert the literal '{other}' to the expected type 'Edm.DateTimeOffset' ({field})."
        ))),
    }
}

fn add_password(
    d: &mut Data,
    caller: &Caller,
    knobs: &Knobs,
    key: &AppKey,
    body: &Map<String, Value>,
    now: OffsetDateTime,
) -> GResult {
    caller.allow(APP_WRITE_SCP, APP_WRITE, |_| true)?;
    check_keys(body, &["passwordCredential"], "addPassword")?;
    let pc = match body.get("passwordCredential") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(bad_request(
                "Invalid value for parameter 'passwordCredential'.",
            ));
        }
    };
    check_keys(
        &pc,
        &[
            "displayName",
            "endDateTime",
            "startDateTime",
            "customKeyIdentifier",
        ],
        "passwordCredential",
    )?;
    let idx = find_app_index(d, knobs, key, now)?;
    if !may_manage(caller, &d.applications[idx]) {
        return Err(denied());
    }
    let start = parse_time(
        pc.get("startDateTime").unwrap_or(&Value::Null),
        "startDateTime",
    )?
    .unwrap_or(now);
    let end = parse_time(pc.get("endDateTime").unwrap_or(&Value::Null), "endDateTime")?
        .unwrap_or(start + time::Duration::days(2 * 365));
    if end <= start {
        return Err(request_bad(
            "The end date of the credential must be after its start date.",
        ));
    }
    if knobs.passwords_disallowed {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "CredentialTypeNotAllowedAsPerAppPolicy",
            format!("Password credentials are not allowed as per assigned policy '{POLICY_ID}'."),
        ));
    }
    if let Some(max) = knobs.max_password_lifetime
        && end > start + max
    {
        {
            let mut e = GraphError::new(
                StatusCode::BAD_REQUEST,
                "CredentialInvalidLifetimeAsPerAppPolicy",
                format!(
                    "Credential lifetime exceeds the max value allowed as per assigned policy '{POLICY_ID}'."
                ),
            );
            // The maximum is not in the error (microsoft-apis.md §3.1 shows none): a caller who
            // may not read the policy must not learn it here either.
            e.details = Some(json!([{"code": "InvalidKeyEndDate",
                "message": "Key credential end date is invalid.",
                "target": "EndDate"}]));
            return Err(e);
        }
    }
    let app = &mut d.applications[idx];
    if app.sign_in_audience.contains("Personal") && app.passwords.len() >= 2 {
        return Err(request_bad(
            "TooManyAppPasswords: applications whose signInAudience includes personal Microsoft accounts can hold at most 2 password credentials.",
        ));
    }
    if knobs
        .max_app_passwords
        .is_some_and(|max| app.passwords.len() >= max)
    {
        return Err(request_size_exceeded());
    }
    let secret = state::new_client_secret();
    let display_name = pc
        .get("displayName")
        .and_then(Value::as_str)
        .map(str::to_string);
    let pw = Password {
        key_id: new_guid(),
        display_name,
        secret_sha256: sha256_hex(&secret),
        hint: secret.chars().take(3).collect(),
        start,
        end,
        created: now,
        auths_after_delay: 0,
    };
    let mut v = password_json(&pw, Some(&secret));
    if let Value::Object(m) = &mut v {
        let mut out = Map::new();
        out.insert(
            "@odata.context".into(),
            json!(format!("{CTX}#microsoft.graph.passwordCredential")),
        );
        out.extend(std::mem::take(m));
        v = Value::Object(out);
    }
    app.passwords.push(pw);
    Ok((StatusCode::OK, Json(v)).into_response())
}

fn remove_password(
    d: &mut Data,
    caller: &Caller,
    knobs: &Knobs,
    key: &AppKey,
    body: &Map<String, Value>,
    now: OffsetDateTime,
) -> GResult {
    caller.allow(APP_WRITE_SCP, APP_WRITE, |_| true)?;
    check_keys(body, &["keyId"], "removePassword")?;
    let key_id = match body.get("keyId") {
        Some(Value::String(s)) if is_guid(s) => s.to_ascii_lowercase(),
        Some(other) => {
            return Err(bad_request(format!(
                "Cannot convert the literal '{}' to the expected type 'Edm.Guid'.",
                other
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string())
            )));
        }
        None => return Err(bad_request("The parameter 'keyId' is missing.")),
    };
    let idx = find_app_index(d, knobs, key, now)?;
    if !may_manage(caller, &d.applications[idx]) {
        return Err(denied());
    }
    let app = &mut d.applications[idx];
    let before = app.passwords.len();
    app.passwords
        .retain(|p| !p.key_id.eq_ignore_ascii_case(&key_id));
    if app.passwords.len() == before {
        return Err(request_bad(format!(
            "No password credential with keyId '{key_id}' exists on application '{}'.",
            app.app_id
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Graph "Delete application": Application.ReadWrite scope or role, then 204 No Content. Who may
/// delete is UNCONFIRMED (microsoft-apis.md §3.0 has no row for it): taken to be who may manage
/// the app, as for removePassword (the owner, or Global / Application / Cloud Application admin).
fn delete_app(
    d: &mut Data,
    caller: &Caller,
    knobs: &Knobs,
    key: &AppKey,
    now: OffsetDateTime,
) -> GResult {
    caller.allow(APP_WRITE_SCP, APP_WRITE, |_| true)?;
    let idx = find_app_index(d, knobs, key, now)?;
    if !may_manage(caller, &d.applications[idx]) {
        return Err(denied());
    }
    d.applications.remove(idx);
    Ok(StatusCode::NO_CONTENT.into_response())
}

const GROUP_PROPS: &[&str] = &[
    "id",
    "displayName",
    "description",
    "securityEnabled",
    "mailEnabled",
    "groupTypes",
    "mail",
    "createdDateTime",
];

fn list_groups(d: &Data, req: &Req, caller: &Caller, filter: Option<(String, String)>) -> GResult {
    caller.allow(GROUP_READ_SCP, GROUP_READ, |_| true)?;
    let props = select_list(req);
    if let Some(p) = &props {
        check_select(p, "group", GROUP_PROPS)?;
    }
    let items = d
        .groups
        .iter()
        .filter(|g| match &filter {
            Some((p, v)) if p == "id" => g.id.eq_ignore_ascii_case(v),
            Some((_, v)) => g.display_name == *v,
            None => true,
        })
        .map(|g| {
            project(
                json!({"id": g.id, "displayName": g.display_name, "description": g.description,
                    "securityEnabled": true, "mailEnabled": false, "groupTypes": [], "mail": null,
                    "createdDateTime": "2019-04-01T09:00:00Z"}),
                &props,
            )
        })
        .collect();
    Ok(collection("groups", items, None))
}

fn add_member(
    d: &mut Data,
    caller: &Caller,
    knobs: &Knobs,
    gid: &str,
    body: &Map<String, Value>,
    graph_url: &str,
    now: OffsetDateTime,
) -> GResult {
    caller.allow(GROUP_WRITE_SCP, GROUP_WRITE, |_| true)?;
    check_keys(body, &["@odata.id"], "directoryObject")?;
    let reference = body
        .get("@odata.id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("The payload must contain '@odata.id'."))?;
    let bad_ref = || {
        request_bad(
            "Invalid URL format specified in @odata.id for the navigation property: members.",
        )
    };
    let rest = [
        "https://graph.microsoft.com/v1.0/".to_string(),
        format!("{graph_url}/v1.0/"),
    ]
    .iter()
    .find_map(|p| reference.strip_prefix(p.as_str()).map(str::to_string))
    .ok_or_else(bad_ref)?;
    let (kind, oid) = rest.split_once('/').ok_or_else(bad_ref)?;
    if !["directoryObjects", "users", "servicePrincipals", "groups"].contains(&kind)
        || oid.contains('/')
    {
        return Err(bad_ref());
    }
    if !is_guid(oid) {
        return Err(invalid_id(oid));
    }
    let oid = oid.to_ascii_lowercase();
    let gi = d
        .groups
        .iter()
        .position(|g| g.id.eq_ignore_ascii_case(gid))
        .ok_or_else(|| not_found(gid))?;
    // The group's owner, or Global / Groups / User / Privileged Role Administrator (§3.0, Graph
    // "Add members"). Membership of AdminAgents gives no right over AdminAgents itself.
    if let Some(u) = &caller.user
        && !(caller.holds_role(GROUP_ADMIN_ROLES) || d.groups[gi].owners.contains(&u.id))
    {
        return Err(denied());
    }
    let exists = match kind {
        "users" => d.user(&oid).is_some(),
        "groups" => d.groups.iter().any(|g| g.id == oid),
        "servicePrincipals" => d
            .service_principals
            .iter()
            .any(|sp| sp.id == oid && now >= sp.created + knobs.replication_delay),
        _ => {
            d.user(&oid).is_some()
                || d.groups.iter().any(|g| g.id == oid)
                || d.service_principals
                    .iter()
                    .any(|sp| sp.id == oid && now >= sp.created + knobs.replication_delay)
        }
    };
    if !exists {
        return Err(not_found(&oid));
    }
    let group = &mut d.groups[gi];
    if group.members.contains(&oid) {
        return Err(request_bad(
            "One or more added object references already exist for the following modified properties: 'members'.",
        ));
    }
    group.members.push(oid);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn policy_json(knobs: &Knobs) -> Value {
    let mut restrictions = vec![];
    if knobs.passwords_disallowed {
        restrictions.push(
            json!({"restrictionType": "passwordAddition", "maxLifetime": null,
            "restrictForAppsCreatedAfterDateTime": "2019-01-01T00:00:00Z"}),
        );
    }
    if let Some(max) = knobs.max_password_lifetime {
        restrictions.push(
            json!({"restrictionType": "passwordLifetime", "maxLifetime": iso_duration(max),
            "restrictForAppsCreatedAfterDateTime": "2019-01-01T00:00:00Z"}),
        );
    }
    json!({
        "id": POLICY_ID,
        "displayName": "Default app management tenant policy",
        "description": "Default tenant policy that enforces app management restrictions on applications and service principals. To apply policy to targeted resources, create a new policy under appManagementPolicies collection.",
        "isEnabled": !restrictions.is_empty(),
        "applicationRestrictions": {"passwordCredentials": restrictions, "keyCredentials": []},
        "servicePrincipalRestrictions": {"passwordCredentials": [], "keyCredentials": []},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_props_list_matches_what_reads_return() {
        let d = Data::seed();
        let v = app_json(&d, &d.applications[0]);
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut props = APP_PROPS.to_vec();
        keys.sort();
        props.sort();
        assert_eq!(keys, props);
    }

    #[test]
    fn policy_lifetime_is_an_iso_duration() {
        assert_eq!(
            iso_duration(std::time::Duration::from_secs(365 * 86_400)),
            "P365D"
        );
        assert_eq!(iso_duration(std::time::Duration::from_secs(90)), "PT90S");
    }

    #[test]
    fn alternate_keys_check_the_guid() {
        let ok = alternate_key(
            "applications(appId='0B5F2A3C-1111-2222-3333-444455556666')",
            "applications",
        );
        assert_eq!(
            ok.unwrap().ok().unwrap(),
            "0b5f2a3c-1111-2222-3333-444455556666"
        );
        let bad = alternate_key("applications(appId='nope')", "applications").unwrap();
        assert_eq!(bad.err().unwrap().code, "Request_BadRequest");
        assert!(alternate_key("groups", "applications").is_none());
    }
}

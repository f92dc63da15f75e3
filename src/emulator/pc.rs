//! Partner Center REST (`/v1`): the organization and legal business profiles and the customer
//! list, with its token rules (audience, App+User vs App-only, app registration, MFA).

use super::authority::{AAD_GRAPH_AUDIENCE, PC_AUDIENCE};
use super::server::Req;
use super::state::Data;
use super::{Knobs, Shared, token};
use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// `{"code":…,"description":…,"data":[],"source":"PartnerFD"}`
pub(crate) fn pc_error(status: StatusCode, code: i64, description: &str) -> Response {
    (
        status,
        Json(json!({"code": code, "description": description, "data": [], "source": "PartnerFD"})),
    )
        .into_response()
}

struct PcError(StatusCode, i64, String);

fn err(status: StatusCode, code: i64, description: impl Into<String>) -> PcError {
    PcError(status, code, description.into())
}

const ROLE_DENIED: &str =
    "The supplied role does not have the rights to perform the requested operation.";

pub(crate) fn handle(shared: &Shared, req: &Req) -> Response {
    let mut r = match route(shared, req) {
        Ok(r) => r,
        Err(PcError(s, c, d)) => pc_error(s, c, &d),
    };
    // Partner Center echoes the caller's tracking IDs.
    for name in ["ms-requestid", "ms-correlationid"] {
        if let Some(v) = req.header(name).and_then(|v| HeaderValue::from_str(v).ok()) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

struct Caller {
    app_only: bool,
}

fn authenticate(
    d: &Data,
    knobs: &Knobs,
    req: &Req,
    now: OffsetDateTime,
) -> Result<Caller, PcError> {
    let unauthorized = |why: &str| {
        err(
            StatusCode::UNAUTHORIZED,
            401,
            format!("Authentication failed: {why}"),
        )
    };
    let bearer = req
        .bearer()
        .ok_or_else(|| unauthorized("the Authorization header with a Bearer token is missing."))?;
    let claims = token::verify(&d.signing_key, bearer)
        .map_err(|_| unauthorized("the token is not valid."))?;
    let aud = claims["aud"].as_str().unwrap_or("");
    if aud == AAD_GRAPH_AUDIENCE {
        return Err(err(
            StatusCode::UNAUTHORIZED,
            900420,
            "Azure AD Graph tokens (audience https://graph.windows.net) are no longer accepted. Request a token for https://api.partnercenter.microsoft.com.",
        ));
    }
    if aud != PC_AUDIENCE {
        return Err(unauthorized(
            "the token audience is not https://api.partnercenter.microsoft.com.",
        ));
    }
    if claims["tid"].as_str() != Some(d.tenant_id.as_str()) {
        return Err(unauthorized("the token was issued for another tenant."));
    }
    if claims["exp"].as_i64().unwrap_or(0) <= now.unix_timestamp() {
        return Err(unauthorized("the token has expired."));
    }
    if knobs.not_csp_tenant {
        return Err(err(StatusCode::FORBIDDEN, 900150, ROLE_DENIED));
    }
    let app_only = claims["idtyp"].as_str() == Some("app");
    if app_only {
        let app_id = claims["appid"].as_str().unwrap_or("");
        let registered = d
            .pc_registered
            .iter()
            .any(|r| r.eq_ignore_ascii_case(app_id));
        if knobs.require_pc_app_registration && !registered {
            return Err(err(
                StatusCode::UNAUTHORIZED,
                800001,
                "Partner Token missing in request context",
            ));
        }
    } else {
        let mfa = claims["amr"]
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m == "mfa"));
        if !mfa {
            return Err(err(
                StatusCode::UNAUTHORIZED,
                900421,
                "Multi-factor authentication is required for this request: sign in again and complete MFA.",
            ));
        }
    }
    Ok(Caller { app_only })
}

fn route(shared: &Shared, req: &Req) -> Result<Response, PcError> {
    let now = OffsetDateTime::now_utc();
    let knobs = shared.knobs();
    let path = req.path.trim_end_matches('/');
    let known = [
        "/v1/profiles/organization",
        "/v1/profiles/legalbusiness",
        "/v1/customers",
    ];
    if !known.contains(&path) {
        return Err(err(
            StatusCode::NOT_FOUND,
            404,
            format!("The resource '{path}' was not found."),
        ));
    }
    if req.method != Method::GET {
        return Err(err(
            StatusCode::METHOD_NOT_ALLOWED,
            405,
            "The requested resource does not support this HTTP method.",
        ));
    }
    shared.read(|d| {
        let caller = authenticate(d, &knobs, req, now)?;
        let body = match path {
            "/v1/profiles/organization" => {
                if caller.app_only {
                    return Err(err(StatusCode::FORBIDDEN, 900150, ROLE_DENIED));
                }
                organization(d)
            }
            "/v1/profiles/legalbusiness" => {
                match req.q("vettingVersion") {
                    None | Some("Current") | Some("Last") => {}
                    Some(v) => {
                        return Err(err(
                            StatusCode::BAD_REQUEST,
                            400,
                            format!("Invalid vettingVersion '{v}': use Current or Last."),
                        ));
                    }
                }
                legal_business(d)
            }
            _ => customers(d, req)?,
        };
        Ok((StatusCode::OK, Json(body)).into_response())
    })
}

fn address(d: &Data) -> Value {
    json!({"country": "US", "city": "Redmond", "state": "WA", "addressLine1": "1 Contoso Way",
        "postalCode": "98052", "firstName": "Ada", "lastName": "Admin", "phoneNumber": "4255550100",
        "email": format!("admin@{}", d.tenant_domain)})
}

fn organization(d: &Data) -> Value {
    json!({
        "id": d.tenant_id, "companyName": d.tenant_name, "tenantId": d.tenant_id,
        "domain": d.tenant_domain, "email": format!("admin@{}", d.tenant_domain),
        "language": "en", "culture": "en-US", "defaultAddress": address(d),
        "links": {"self": {"uri": "/profiles/organization", "method": "GET", "headers": []}},
        "attributes": {"etag": "\"0000-emulator\"", "objectType": "OrganizationProfile"},
        "profileType": "OrganizationProfile",
    })
}

fn legal_business(d: &Data) -> Value {
    json!({
        "companyName": d.tenant_name, "address": address(d),
        "primaryContact": {"firstName": "Ada", "lastName": "Admin", "email": format!("admin@{}", d.tenant_domain), "phoneNumber": "4255550100"},
        "companyApproverAddress": address(d), "companyApproverEmail": format!("admin@{}", d.tenant_domain),
        "vettingStatus": "Authorized", "vettingSubStatus": "Verified",
        "links": {"self": {"uri": "/profiles/legalbusiness", "method": "GET", "headers": []}},
        "attributes": {"etag": "\"0000-emulator\"", "objectType": "LegalBusinessProfile"},
        "profileType": "LegalBusinessProfile",
    })
}

fn customers(d: &Data, req: &Req) -> Result<Value, PcError> {
    let size = match req.q("size") {
        None => 500,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                err(
                    StatusCode::BAD_REQUEST,
                    400,
                    format!("Invalid size '{s}': use 1 to 1000."),
                )
            })?,
    };
    let items: Vec<Value> = d
        .customers
        .iter()
        .take(size)
        .map(|c| {
            json!({
                "id": c.id, "commerceId": c.commerce_id,
                "companyProfile": {"tenantId": c.id, "domain": c.domain, "companyName": c.company_name,
                    "attributes": {"objectType": "CustomerCompanyProfile"}},
                "relationshipToPartner": "reseller", "allowDelegatedAccess": true,
                "links": {"self": {"uri": format!("/customers/{}", c.id), "method": "GET", "headers": []}},
                "attributes": {"objectType": "Customer"},
            })
        })
        .collect();
    Ok(json!({
        "totalCount": items.len(),
        "items": items,
        "links": {"self": {"uri": format!("/customers?size={size}"), "method": "GET", "headers": []}},
        "attributes": {"objectType": "Collection"},
    }))
}

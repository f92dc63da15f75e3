//! Microsoft Graph v1.0 calls of microsoft-apis.md §3: who am I, the tenant, roles, the web app,
//! its service principal, AdminAgents pre-consent, secrets, and the app management policy.

use super::errors::{ApiError, ErrorKind, Service};
use super::http::{
    Body, HttpClient, Idempotency, ReplicationCheck, Request, Response, header, not_found_yet,
    replication_lag,
};
use crate::cloud::{Endpoints, PARTNER_CENTER_APP_ID, PARTNER_CENTER_USER_IMPERSONATION};
use crate::secret::Secret;
use serde::Deserialize;
use time::OffsetDateTime;

/// A Graph client for one signed-in user (a delegated token with the Graph audience).
#[derive(Clone)]
pub struct Graph {
    http: HttpClient,
    base: url::Url,
    /// `https://graph.microsoft.com` (or the cloud's): the prefix of `@odata.id` references.
    resource: String,
    token: Secret,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub id: String,
    pub user_principal_name: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedDomain {
    pub name: String,
    #[serde(default)]
    pub is_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    /// The partner tenant ID (Partner Center's "Account ID").
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub verified_domains: Vec<VerifiedDomain>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryObject {
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub role_template_id: Option<String>,
}

impl DirectoryObject {
    /// The Global Administrator directory role.
    pub fn is_global_admin_role(&self) -> bool {
        self.role_template_id
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(super::GLOBAL_ADMIN_ROLE_TEMPLATE))
    }

    /// The `AdminAgents` group (membership makes the user an Admin agent).
    pub fn is_admin_agents_group(&self) -> bool {
        let is_group = self
            .odata_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("#microsoft.graph.group"));
        is_group && self.display_name.as_deref() == Some(super::ADMIN_AGENTS_GROUP)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    pub id: String,
    pub app_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordCredential {
    pub key_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub hint: Option<String>,
    #[serde(rename = "startDateTime", default, deserialize_with = "lenient_time")]
    pub start: Option<OffsetDateTime>,
    #[serde(rename = "endDateTime", default, deserialize_with = "lenient_time")]
    pub end: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// The object ID (for URL paths only).
    pub id: String,
    /// The App ID (client ID).
    pub app_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub password_credentials: Vec<PasswordCredential>,
    /// Only when selected (`find_applications_by_name`).
    #[serde(
        default,
        rename = "createdDateTime",
        with = "time::serde::rfc3339::option"
    )]
    pub created: Option<OffsetDateTime>,
}

/// The answer of `addPassword`. `secret` is shown by Graph only this once.
#[derive(Debug, Clone)]
pub struct NewPassword {
    pub key_id: String,
    pub secret: Secret,
    pub hint: Option<String>,
    pub display_name: Option<String>,
    pub start: Option<OffsetDateTime>,
    pub end: OffsetDateTime,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewPasswordWire {
    key_id: String,
    secret_text: Secret,
    #[serde(default)]
    hint: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_time")]
    start_date_time: Option<OffsetDateTime>,
    #[serde(default, deserialize_with = "lenient_time")]
    end_date_time: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Added,
    AlreadyMember,
}

/// What the tenant's default app management policy says about password credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LifetimePolicy {
    /// The longest lifetime allowed for a new secret, in days (`None`: no cap). Conservative:
    /// every enabled restriction already in force counts, whatever app it is limited to.
    pub max_password_lifetime_days: Option<u32>,
    /// Secrets are blocked for apps created now (a restriction with no date, or a date passed).
    /// For an existing app this is only advice: the restriction may date from after the app
    /// was created, and an app-specific policy may override the tenant default.
    pub passwords_blocked: bool,
}

#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Graph writes RFC 3339 with `Z`; accept fractions, a missing zone, and null.
fn lenient_time<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<OffsetDateTime>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.and_then(|s| parse_time(&s)))
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339))
        .ok()
}

/// `2027-06-01T00:00:00Z`: UTC, whole seconds, as the reference writes `endDateTime`.
fn graph_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// IDs go into URL paths: accept only the GUID form so nothing can change the path.
fn check_guid(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = value.len() == 36 && uuid::Uuid::try_parse(value).is_ok();
    if ok {
        Ok(())
    } else {
        Err(ApiError::refused(
            Service::Graph,
            format!(
                "{what} must be a GUID like 00000000-0000-0000-0000-000000000000, not {value:?}"
            ),
        ))
    }
}

/// An OData string literal in a `$filter`, made safe for the query string.
fn odata_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    let mut out = String::from("'");
    for c in quoted.chars() {
        match c {
            '%' => out.push_str("%25"),
            '&' => out.push_str("%26"),
            '#' => out.push_str("%23"),
            '+' => out.push_str("%2B"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

impl Graph {
    pub fn new(http: HttpClient, ep: &Endpoints, token: Secret) -> Self {
        Graph {
            http,
            base: Endpoints::join(&ep.graph, "v1.0"),
            resource: ep.graph_resource.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// The signed-in token, for calls outside this module (billing consent).
    pub(crate) fn token(&self) -> &Secret {
        &self.token
    }

    fn url(&self, path_and_query: &str) -> url::Url {
        Endpoints::join(&self.base, path_and_query)
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> Request {
        let mut req = Request::new(Service::Graph, method, url);
        req.bearer = Some(self.token.clone());
        // One ID per logical request, reused on its retries: what Graph support asks for.
        req.headers.push(header(
            "client-request-id",
            &uuid::Uuid::new_v4().to_string(),
        ));
        req.headers.push(header("accept", "application/json"));
        req
    }

    async fn get(
        &self,
        path: &str,
        replication: Option<ReplicationCheck>,
    ) -> Result<Response, ApiError> {
        let mut req = self.request(reqwest::Method::GET, self.url(path));
        req.replication = replication;
        self.http.execute(&req).await
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        idempotency: Idempotency,
        replication: Option<ReplicationCheck>,
    ) -> Result<Response, ApiError> {
        let mut req = self.request(reqwest::Method::POST, self.url(path));
        req.body = Body::Json(serde_json::to_vec(&body).unwrap_or_default());
        req.idempotency = idempotency;
        req.replication = replication;
        self.http.execute(&req).await
    }

    pub async fn me(&self) -> Result<Me, ApiError> {
        self.get("me?$select=id,userPrincipalName,displayName", None)
            .await?
            .json(Service::Graph, "me")
    }

    /// The signed-in user's tenant; its `id` is the partner tenant ID.
    pub async fn organization(&self) -> Result<Organization, ApiError> {
        let page: Page<Organization> = self
            .get("organization?$select=id,displayName,verifiedDomains", None)
            .await?
            .json(Service::Graph, "organization")?;
        page.value.into_iter().next().ok_or_else(|| {
            ApiError::new(
                Service::Graph,
                ErrorKind::Decode,
                "the organization list is empty",
            )
        })
    }

    /// Every group and directory role the user belongs to, directly or through nested groups
    /// (`me/transitiveMemberOf`), all pages. Transitive, because a Global Administrator may hold
    /// the role through a role-assignable group, and an Admin agent may sit in a group nested in
    /// AdminAgents: `me/memberOf` lists neither, and the role check would refuse them.
    pub async fn member_of(&self) -> Result<Vec<DirectoryObject>, ApiError> {
        let mut out = Vec::new();
        let mut url = self.url("me/transitiveMemberOf?$select=id,displayName,roleTemplateId");
        loop {
            let req = self.request(reqwest::Method::GET, url);
            let page: Page<DirectoryObject> = self
                .http
                .execute(&req)
                .await?
                .json(Service::Graph, "transitiveMemberOf")?;
            out.extend(page.value);
            match page.next_link {
                Some(next) => url = self.same_origin(&next)?,
                None => return Ok(out),
            }
        }
    }

    /// A next link, kept on our Graph host so the token never travels to another origin.
    fn same_origin(&self, link: &str) -> Result<url::Url, ApiError> {
        // A relative link (not what Graph sends, but legal) resolves against our own base.
        let next = url::Url::parse(link)
            .or_else(|_| self.base.join(link))
            .map_err(|_| {
                ApiError::new(
                    Service::Graph,
                    ErrorKind::Decode,
                    "an invalid @odata.nextLink",
                )
            })?;
        if next.origin() == self.base.origin() {
            return Ok(next);
        }
        // A stand-in (emulator, proxy) may write the public host: keep its path and query, on our host.
        let mut rebased = self.base.clone();
        rebased.set_path(next.path());
        rebased.set_query(next.query());
        Ok(rebased)
    }

    /// The Partner Center service principal: present in CSP partner tenants. 404 → `None`.
    pub async fn partner_center_service_principal(
        &self,
    ) -> Result<Option<ServicePrincipal>, ApiError> {
        self.service_principal_by_app_id(PARTNER_CENTER_APP_ID)
            .await
    }

    async fn service_principal_by_app_id(
        &self,
        app_id: &str,
    ) -> Result<Option<ServicePrincipal>, ApiError> {
        check_guid("the App ID", app_id)?;
        match self
            .get(&format!("servicePrincipals(appId='{app_id}')"), None)
            .await
        {
            Ok(r) => r.json(Service::Graph, "servicePrincipal").map(Some),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create the Partner Center web app (microsoft-apis.md §3, body as the reference).
    /// Not idempotent: repeated only when Graph provably did not run it.
    pub async fn create_application(&self, display_name: &str) -> Result<Application, ApiError> {
        let body = serde_json::json!({
            "displayName": display_name,
            "signInAudience": "AzureADMultipleOrgs",
            "web": { "redirectUris": ["http://localhost"] },
            "requiredResourceAccess": [{
                "resourceAppId": PARTNER_CENTER_APP_ID,
                "resourceAccess": [{ "id": PARTNER_CENTER_USER_IMPERSONATION, "type": "Scope" }]
            }]
        });
        self.post("applications", body, Idempotency::NotIdempotent, None)
            .await?
            .json(Service::Graph, "application")
    }

    fn application_path(app_id: &str) -> String {
        format!("applications(appId='{app_id}')?$select=id,appId,displayName,passwordCredentials")
    }

    /// The app with this App ID, with its secrets' metadata. 404 → `None`.
    pub async fn get_application(&self, app_id: &str) -> Result<Option<Application>, ApiError> {
        check_guid("the App ID", app_id)?;
        match self.get(&Self::application_path(app_id), None).await {
            Ok(r) => r.json(Service::Graph, "application").map(Some),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn application_by_object_id(
        &self,
        object_id: &str,
    ) -> Result<Option<Application>, ApiError> {
        let path =
            format!("applications/{object_id}?$select=id,appId,displayName,passwordCredentials");
        match self.get(&path, None).await {
            Ok(r) => r.json(Service::Graph, "application").map(Some),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The app's service principal in the partner tenant. An existing one is looked up: Graph says
    /// so with `Request_MultipleObjectsWithSameKeyValue`, listed with a 409, but the code is what
    /// Graph asks clients to branch on, so it decides whatever the status (a 409 without it too).
    pub async fn create_service_principal(
        &self,
        app_id: &str,
    ) -> Result<ServicePrincipal, ApiError> {
        check_guid("the App ID", app_id)?;
        let body = serde_json::json!({ "appId": app_id });
        match self
            .post(
                "servicePrincipals",
                body,
                Idempotency::NotIdempotent,
                Some(replication_lag),
            )
            .await
        {
            Ok(r) => r.json(Service::Graph, "servicePrincipal"),
            Err(e)
                if e.status == Some(409)
                    || e.is_graph_code("Request_MultipleObjectsWithSameKeyValue") =>
            {
                // The lookup can itself trail the create on another replica.
                let path = format!("servicePrincipals(appId='{app_id}')");
                self.get(&path, Some(not_found_yet))
                    .await?
                    .json(Service::Graph, "servicePrincipal")
            }
            Err(e) => Err(e),
        }
    }

    /// Partner Center's own service principal, for a tenant that lacks it (CIPP's SAM setup
    /// creates it). Not retried: Partner Center's app exists long before this call, so a 400 here
    /// is Graph's final answer, not replication lag.
    pub async fn create_partner_center_service_principal(
        &self,
    ) -> Result<ServicePrincipal, ApiError> {
        let body = serde_json::json!({ "appId": PARTNER_CENTER_APP_ID });
        self.post("servicePrincipals", body, Idempotency::NotIdempotent, None)
            .await?
            .json(Service::Graph, "servicePrincipal")
    }

    /// The ID of the group with this display name (e.g. `AdminAgents`), if there is one.
    pub async fn find_group(&self, display_name: &str) -> Result<Option<String>, ApiError> {
        #[derive(Deserialize)]
        struct Group {
            id: String,
        }
        let path = format!(
            "groups?$filter=displayName eq {}&$select=id",
            odata_literal(display_name)
        );
        let page: Page<Group> = self
            .get(&path, None)
            .await?
            .json(Service::Graph, "groups")?;
        Ok(page.value.into_iter().next().map(|g| g.id))
    }

    /// Applications with exactly this display name: how a re-run finds an app whose creation
    /// response was lost.
    pub async fn find_applications_by_name(
        &self,
        display_name: &str,
    ) -> Result<Vec<Application>, ApiError> {
        let path = format!(
            "applications?$filter=displayName eq {}&$select=id,appId,displayName,passwordCredentials,createdDateTime",
            odata_literal(display_name)
        );
        let page: Page<Application> = self
            .get(&path, None)
            .await?
            .json(Service::Graph, "applications")?;
        Ok(page.value)
    }

    /// Add a directory object (the web app's service principal) to a group. Already a member → ok.
    pub async fn add_group_member(
        &self,
        group_id: &str,
        object_id: &str,
    ) -> Result<Membership, ApiError> {
        check_guid("the group ID", group_id)?;
        check_guid("the object ID", object_id)?;
        let body = serde_json::json!({
            "@odata.id": format!("{}/v1.0/directoryObjects/{object_id}", self.resource)
        });
        // Repeating it is harmless (a second add answers "already exist"), so it may be retried.
        match self
            .post(
                &format!("groups/{group_id}/members/$ref"),
                body,
                Idempotency::Idempotent,
                Some(replication_lag),
            )
            .await
        {
            Ok(_) => Ok(Membership::Added),
            Err(e)
                if e.status == Some(400)
                    && e.message.to_ascii_lowercase().contains("already exist") =>
            {
                Ok(Membership::AlreadyMember)
            }
            Err(e) => Err(e),
        }
    }

    /// Add a secret ending at `end`. Never repeated blindly: only when Graph provably did not run
    /// it (throttled with Retry-After, connection refused, or the app not replicated yet: 404).
    pub async fn add_password(
        &self,
        app_object_id: &str,
        display_name: &str,
        end: OffsetDateTime,
    ) -> Result<NewPassword, ApiError> {
        check_guid("the application object ID", app_object_id)?;
        let body = serde_json::json!({
            "passwordCredential": { "displayName": display_name, "endDateTime": graph_time(end) }
        });
        let resp = self
            .post(
                &format!("applications/{app_object_id}/addPassword"),
                body,
                Idempotency::NotIdempotent,
                Some(not_found_yet),
            )
            .await?;
        let w: NewPasswordWire = resp.json(Service::Graph, "addPassword")?;
        Ok(NewPassword {
            key_id: w.key_id,
            secret: w.secret_text,
            hint: w.hint,
            display_name: w.display_name,
            start: w.start_date_time,
            end: w.end_date_time.unwrap_or(end),
        })
    }

    /// Remove a secret. An unknown `keyId`'s answer is UNCONFIRMED (§3): on 400/404 the app is read
    /// again, and a key that is gone counts as removed.
    pub async fn remove_password(&self, app_object_id: &str, key_id: &str) -> Result<(), ApiError> {
        check_guid("the application object ID", app_object_id)?;
        check_guid("the key ID", key_id)?;
        let body = serde_json::json!({ "keyId": key_id });
        let path = format!("applications/{app_object_id}/removePassword");
        // Removing twice ends the same way, so transient failures may be retried.
        match self.post(&path, body, Idempotency::Idempotent, None).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.status, Some(400 | 404)) => {
                match self.application_by_object_id(app_object_id).await? {
                    Some(app)
                        if !app
                            .password_credentials
                            .iter()
                            .any(|p| p.key_id.eq_ignore_ascii_case(key_id)) =>
                    {
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Delete an app registration (Graph "Delete application": `DELETE /applications/{id}`,
    /// 204 No Content). Deleting twice ends the same way: a 404 means it is already gone.
    pub async fn delete_application(&self, app_object_id: &str) -> Result<(), ApiError> {
        check_guid("the application object ID", app_object_id)?;
        let url = self.url(&format!("applications/{app_object_id}"));
        match self
            .http
            .execute(&self.request(reqwest::Method::DELETE, url))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The tenant's default app management policy, reduced to what matters for a new secret.
    pub async fn default_app_management_policy(&self) -> Result<LifetimePolicy, ApiError> {
        let v: serde_json::Value = self
            .get("policies/defaultAppManagementPolicy", None)
            .await?
            .json(Service::Graph, "defaultAppManagementPolicy")?;
        Ok(lifetime_policy(&v))
    }
}

fn lifetime_policy(v: &serde_json::Value) -> LifetimePolicy {
    lifetime_policy_at(v, OffsetDateTime::now_utc())
}

/// The restrictions in force for an app created at `now`: `restrictForAppsCreatedAfterDateTime`
/// (null: every app) limits a restriction to apps created on or after that date.
fn lifetime_policy_at(v: &serde_json::Value, now: OffsetDateTime) -> LifetimePolicy {
    let mut out = LifetimePolicy::default();
    if v.get("isEnabled").and_then(|e| e.as_bool()) == Some(false) {
        return out;
    }
    let restrictions = v
        .pointer("/applicationRestrictions/passwordCredentials")
        .and_then(|r| r.as_array());
    for r in restrictions.into_iter().flatten() {
        let disabled = r
            .get("state")
            .and_then(|s| s.as_str())
            .is_some_and(|s| s.eq_ignore_ascii_case("disabled"));
        let from = r
            .get("restrictForAppsCreatedAfterDateTime")
            .and_then(|d| d.as_str())
            .and_then(|d| {
                OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339).ok()
            });
        if disabled || from.is_some_and(|f| f > now) {
            continue;
        }
        match r.get("restrictionType").and_then(|t| t.as_str()) {
            Some("passwordLifetime") => {
                if let Some(days) = r
                    .get("maxLifetime")
                    .and_then(|m| m.as_str())
                    .and_then(iso8601_days)
                {
                    out.max_password_lifetime_days =
                        Some(out.max_password_lifetime_days.map_or(days, |d| d.min(days)));
                }
            }
            Some("passwordAddition") => out.passwords_blocked = true,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod policy_date_tests {
    use super::*;

    #[test]
    fn a_restriction_for_apps_created_later_is_not_in_force_yet() {
        let v = serde_json::json!({"isEnabled": true, "applicationRestrictions": {"passwordCredentials": [
            {"restrictionType": "passwordAddition", "state": "enabled", "maxLifetime": null,
             "restrictForAppsCreatedAfterDateTime": "2030-01-01T00:00:00Z"},
            {"restrictionType": "passwordLifetime", "state": "enabled", "maxLifetime": "P90D",
             "restrictForAppsCreatedAfterDateTime": "2030-01-01T00:00:00Z"},
            {"restrictionType": "passwordLifetime", "state": "enabled", "maxLifetime": "P365D",
             "restrictForAppsCreatedAfterDateTime": "2019-01-01T00:00:00Z"}]}});
        let now = time::macros::datetime!(2026-11-30 10:00 UTC);
        let p = lifetime_policy_at(&v, now);
        assert!(!p.passwords_blocked);
        assert_eq!(p.max_password_lifetime_days, Some(365));
        let later = lifetime_policy_at(&v, time::macros::datetime!(2030-06-01 0:00 UTC));
        assert!(later.passwords_blocked);
        assert_eq!(later.max_password_lifetime_days, Some(90));
    }
}

/// Whole days in an ISO 8601 duration (`P365D`, `P1Y`, `P1Y6M`, `P90D`, `P2W`, `P1DT12H`), counting a
/// year as 365 days and a month as 30, as .NET's `XmlConvert.ToTimeSpan` does. Rounds down, so an
/// offered lifetime never exceeds the policy. `None` if it cannot be read.
pub fn iso8601_days(s: &str) -> Option<u32> {
    let s = s.trim();
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    if rest.is_empty() {
        return None;
    }
    let mut seconds: f64 = 0.0;
    let mut in_time = false;
    let mut number = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => in_time = true,
            d if d.is_ascii_digit() || d == '.' || d == ',' => {
                number.push(if d == ',' { '.' } else { d })
            }
            unit => {
                let n: f64 = number.parse().ok()?;
                number.clear();
                let factor = match (in_time, unit) {
                    (false, 'Y') => 365.0 * 86400.0,
                    (false, 'M') => 30.0 * 86400.0,
                    (false, 'W') => 7.0 * 86400.0,
                    (false, 'D') => 86400.0,
                    (true, 'H') => 3600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    _ => return None,
                };
                seconds += n * factor;
                any = true;
            }
        }
    }
    if !number.is_empty() || !any {
        return None;
    }
    let days = (seconds / 86400.0).floor();
    (days <= u32::MAX as f64).then_some(days as u32)
}

#[cfg(test)]
mod tests {
    use super::super::http::fake::{Reply, serve};
    use super::super::http::test_policy;
    use super::*;
    use crate::cloud::Cloud;

    const APP_ID: &str = "11111111-2222-3333-4444-555555555555";
    const OBJ_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const KEY_ID: &str = "99999999-8888-7777-6666-555555555555";
    const SECRET: &str = "Qx8Q~the-new-secret-text-000";

    async fn graph(replies: Vec<Reply>) -> (Graph, super::super::http::fake::Fake) {
        let fake = serve(replies).await;
        let ep = Endpoints::from_urls(Cloud::Custom, &fake.base, &fake.base, &fake.base).unwrap();
        let http = HttpClient::new().unwrap().with_policy(test_policy());
        (Graph::new(http, &ep, Secret::new("graph-token")), fake)
    }

    fn not_found() -> Reply {
        Reply::json(
            404,
            r#"{"error":{"code":"Request_ResourceNotFound","message":"Resource does not exist.","innerError":{"request-id":"r"}}}"#,
        )
    }

    #[test]
    fn iso8601_durations() {
        for (s, days) in [
            ("P365D", Some(365)),
            ("P1Y", Some(365)),
            ("P2Y", Some(730)),
            ("P90D", Some(90)),
            ("P1Y6M", Some(545)),
            ("P2W", Some(14)),
            ("P1DT12H", Some(1)),
            ("PT36H", Some(1)),
            ("P0D", Some(0)),
            ("", None),
            ("P", None),
            ("365", None),
            ("P1X", None),
            ("P1", None),
        ] {
            assert_eq!(iso8601_days(s), days, "{s:?}");
        }
    }

    #[test]
    fn policy_reading() {
        let v = serde_json::json!({
            "isEnabled": true,
            "applicationRestrictions": { "passwordCredentials": [
                { "restrictionType": "passwordLifetime", "maxLifetime": "P1Y", "state": "enabled" },
                { "restrictionType": "passwordAddition", "maxLifetime": null, "state": "disabled" }
            ], "keyCredentials": [] }
        });
        assert_eq!(
            lifetime_policy(&v),
            LifetimePolicy {
                max_password_lifetime_days: Some(365),
                passwords_blocked: false
            }
        );
        let blocked = serde_json::json!({
            "applicationRestrictions": { "passwordCredentials": [
                { "restrictionType": "passwordAddition", "maxLifetime": null }
            ] }
        });
        assert!(lifetime_policy(&blocked).passwords_blocked);
        let off = serde_json::json!({ "isEnabled": false, "applicationRestrictions": { "passwordCredentials": [
            { "restrictionType": "passwordAddition" } ] } });
        assert_eq!(lifetime_policy(&off), LifetimePolicy::default());
        assert_eq!(
            lifetime_policy(&serde_json::json!({})),
            LifetimePolicy::default()
        );
    }

    #[test]
    fn odata_literal_escapes_quotes_and_query_syntax() {
        assert_eq!(odata_literal("AdminAgents"), "'AdminAgents'");
        assert_eq!(odata_literal("O'Neil & co#1+"), "'O''Neil %26 co%231%2B'");
    }

    #[tokio::test]
    async fn create_application_sends_the_reference_body() {
        let (g, fake) = graph(vec![Reply::json(
            201,
            &format!(r#"{{"id":"{OBJ_ID}","appId":"{APP_ID}","displayName":"Partner Center web app","passwordCredentials":[]}}"#),
        )])
        .await;
        let app = g
            .create_application("Partner Center web app")
            .await
            .unwrap();
        assert_eq!(app.app_id, APP_ID);
        let r = &fake.requests()[0];
        assert_eq!(r.target, "/v1.0/applications");
        assert_eq!(r.header("authorization"), Some("Bearer graph-token"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("client-request-id").is_some());
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "displayName": "Partner Center web app",
              "signInAudience": "AzureADMultipleOrgs",
              "web": { "redirectUris": ["http://localhost"] },
              "requiredResourceAccess": [
                { "resourceAppId": "fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd",
                  "resourceAccess": [ { "id": "1cebfa2a-fb4d-419e-b5f9-839b4383e05a", "type": "Scope" } ] } ] })
        );
    }

    #[tokio::test]
    async fn application_lookup() {
        let app = format!(
            r#"{{"id":"{OBJ_ID}","appId":"{APP_ID}","displayName":"x","passwordCredentials":[{{"keyId":"{KEY_ID}","displayName":"csp-onboard","hint":"Qx8","startDateTime":"2026-01-01T00:00:00Z","endDateTime":"2027-01-01T00:00:00.1234567Z","customKeyIdentifier":null,"secretText":null}}]}}"#
        );
        let (g, fake) = graph(vec![not_found(), Reply::json(200, &app)]).await;
        assert_eq!(g.get_application(APP_ID).await.unwrap(), None);
        let got = g.get_application(APP_ID).await.unwrap().expect("found");
        assert_eq!(got.password_credentials.len(), 1);
        assert_eq!(got.password_credentials[0].end.unwrap().year(), 2027);
        let r = &fake.requests()[0];
        assert_eq!(
            r.target,
            format!(
                "/v1.0/applications(appId='{APP_ID}')?$select=id,appId,displayName,passwordCredentials"
            )
        );
        assert_eq!(fake.requests().len(), 2);
        let e = g.get_application("x' or 1 eq 1").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused);
    }

    #[tokio::test]
    async fn member_of_reads_transitive_memberships_and_follows_next_links() {
        let (g, fake) = graph(vec![
            Reply::json(
                200,
                r##"{"value":[{"@odata.type":"#microsoft.graph.directoryRole","id":"r1","displayName":"Global Administrator","roleTemplateId":"62e90394-69f5-4237-9190-012177145e10"}],"@odata.nextLink":"https://graph.microsoft.com/v1.0/me/transitiveMemberOf?$skiptoken=abc"}"##,
            ),
            Reply::json(
                200,
                r##"{"value":[{"@odata.type":"#microsoft.graph.group","id":"g1","displayName":"AdminAgents","roleTemplateId":null}]}"##,
            ),
        ])
        .await;
        let all = g.member_of().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].display_name.as_deref(), Some("AdminAgents"));
        assert!(all[0].is_global_admin_role() && !all[0].is_admin_agents_group());
        assert!(all[1].is_admin_agents_group() && !all[1].is_global_admin_role());
        let reqs = fake.requests();
        // Transitive: a role held through a role-assignable group, or AdminAgents through a
        // nested group, is listed too.
        assert_eq!(
            reqs[0].target,
            "/v1.0/me/transitiveMemberOf?$select=id,displayName,roleTemplateId"
        );
        assert_eq!(reqs[1].target, "/v1.0/me/transitiveMemberOf?$skiptoken=abc");
        assert_eq!(reqs[1].header("authorization"), Some("Bearer graph-token"));
    }

    #[tokio::test]
    async fn add_password_sends_an_explicit_end_and_keeps_the_secret_secret() {
        let answer = format!(
            r#"{{"customKeyIdentifier":null,"displayName":"csp-onboard 2026-11-30","endDateTime":"2027-11-30T00:00:00Z","hint":"Qx8","keyId":"{KEY_ID}","secretText":"{SECRET}","startDateTime":"2026-11-30T10:00:00Z"}}"#
        );
        let (g, fake) = graph(vec![Reply::json(200, &answer)]).await;
        let end = time::macros::datetime!(2027-11-30 00:00:00 UTC);
        let p = g
            .add_password(OBJ_ID, "csp-onboard 2026-11-30", end)
            .await
            .unwrap();
        assert_eq!(p.secret.expose(), SECRET);
        assert_eq!(p.end, end);
        assert_eq!(p.hint.as_deref(), Some("Qx8"));
        let shown = format!("{p:?} {p:#?}");
        assert!(!shown.contains(SECRET), "{shown}");
        let r = &fake.requests()[0];
        assert_eq!(r.target, format!("/v1.0/applications/{OBJ_ID}/addPassword"));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"passwordCredential":{"displayName":"csp-onboard 2026-11-30","endDateTime":"2027-11-30T00:00:00Z"}})
        );
    }

    #[tokio::test]
    async fn add_password_is_not_repeated_after_a_server_error() {
        let (g, fake) = graph(vec![
            Reply::json(
                500,
                r#"{"error":{"code":"generalException","message":"x"}}"#,
            ),
            Reply::json(200, "{}"),
        ])
        .await;
        let e = g
            .add_password(OBJ_ID, "x", OffsetDateTime::now_utc())
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(500));
        assert_eq!(
            fake.requests().len(),
            1,
            "it may have created a secret: never blindly again"
        );
    }

    #[tokio::test]
    async fn remove_password_treats_an_absent_key_as_done() {
        let app_without_key =
            format!(r#"{{"id":"{OBJ_ID}","appId":"{APP_ID}","passwordCredentials":[]}}"#);
        let (g, fake) = graph(vec![
            Reply::json(
                400,
                r#"{"error":{"code":"Request_BadRequest","message":"No password credential found with keyId"}}"#,
            ),
            Reply::json(200, &app_without_key),
        ])
        .await;
        g.remove_password(OBJ_ID, KEY_ID).await.unwrap();
        let reqs = fake.requests();
        assert_eq!(reqs[0].body, format!(r#"{{"keyId":"{KEY_ID}"}}"#));
        assert!(
            reqs[1]
                .target
                .starts_with(&format!("/v1.0/applications/{OBJ_ID}?"))
        );

        // Still there after the error: the error stands.
        let app_with_key = format!(
            r#"{{"id":"{OBJ_ID}","appId":"{APP_ID}","passwordCredentials":[{{"keyId":"{KEY_ID}"}}]}}"#
        );
        let (g, _) = graph(vec![
            Reply::json(
                400,
                r#"{"error":{"code":"Request_BadRequest","message":"nope"}}"#,
            ),
            Reply::json(200, &app_with_key),
        ])
        .await;
        assert!(g.remove_password(OBJ_ID, KEY_ID).await.is_err());
    }

    #[tokio::test]
    async fn an_existing_service_principal_is_looked_up_whatever_the_status() {
        let sp = format!(r#"{{"id":"{OBJ_ID}","appId":"{APP_ID}"}}"#);
        let (g, fake) = graph(vec![
            Reply::json(
                400,
                r#"{"error":{"code":"Request_MultipleObjectsWithSameKeyValue","message":"Another object with the same value for property servicePrincipalNames already exists."}}"#,
            ),
            Reply::json(200, &sp),
        ])
        .await;
        let got = g.create_service_principal(APP_ID).await.unwrap();
        assert_eq!(got.id, OBJ_ID);
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            reqs[1].target,
            format!("/v1.0/servicePrincipals(appId='{APP_ID}')")
        );
    }

    #[tokio::test]
    async fn service_principal_and_group_membership() {
        let sp = format!(r#"{{"id":"{OBJ_ID}","appId":"{APP_ID}"}}"#);
        let (g, fake) = graph(vec![
            Reply::json(
                400,
                r#"{"error":{"code":"Request_BadRequest","message":"The appId of the service principal does not reference a valid application object."}}"#,
            ),
            Reply::json(
                409,
                r#"{"error":{"code":"Request_MultipleObjectsWithSameKeyValue","message":"exists"}}"#,
            ),
            Reply::json(200, &sp),
            Reply::json(200, r#"{"value":[{"id":"77777777-7777-7777-7777-777777777777"}]}"#),
            Reply::json(
                400,
                r#"{"error":{"code":"Request_BadRequest","message":"One or more added object references already exist for the following modified properties: 'members'."}}"#,
            ),
        ])
        .await;
        let got = g.create_service_principal(APP_ID).await.unwrap();
        assert_eq!(got.id, OBJ_ID);
        let group = g.find_group("AdminAgents").await.unwrap().unwrap();
        let m = g.add_group_member(&group, &got.id).await.unwrap();
        assert_eq!(m, Membership::AlreadyMember);
        let reqs = fake.requests();
        assert_eq!(
            reqs[2].target,
            format!("/v1.0/servicePrincipals(appId='{APP_ID}')")
        );
        assert_eq!(
            reqs[3].target,
            "/v1.0/groups?$filter=displayName%20eq%20%27AdminAgents%27&$select=id"
        );
        assert_eq!(reqs[4].target, format!("/v1.0/groups/{group}/members/$ref"));
        assert_eq!(
            reqs[4].body,
            format!(
                r#"{{"@odata.id":"https://graph.microsoft.com/v1.0/directoryObjects/{OBJ_ID}"}}"#
            )
        );
    }

    #[tokio::test]
    async fn partner_center_sp_absent_is_none() {
        let (g, _) = graph(vec![not_found()]).await;
        assert_eq!(g.partner_center_service_principal().await.unwrap(), None);
    }

    #[test]
    fn graph_time_is_utc_whole_seconds() {
        let t = time::macros::datetime!(2027-06-01 02:00:00.5 +02:00);
        assert_eq!(graph_time(t), "2027-06-01T00:00:00Z");
    }
}

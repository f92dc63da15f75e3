//! The strict local emulator of the Entra ID, Graph and Partner Center endpoints. Shares no types with `partner_center`.
//!
//! Three loopback listeners (sign-in authority, Graph, Partner Center) share one stateful tenant.
//! Written from `docs/microsoft-apis.md` alone: it never imports the client, so a field the client
//! misspells is a failing test, not a shared mistake.
//!
//! # Route table
//!
//! Every answer uses Microsoft's error body for that service:
//! - authority: `{error, error_description: "AADSTSnnnn: …\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …",
//!   error_codes, timestamp, trace_id, correlation_id, error_uri}`; 400, or 401 for `invalid_client`;
//! - Graph: `{"error":{code, message, [details], innerError:{date, request-id, client-request-id}}}`;
//! - Partner Center: `{code, description, data: [], source: "PartnerFD"}`; 429 `{statusCode, message}`.
//!
//! ## Authority (`authority_url()`); `{tenant}` = tenant GUID, tenant domain, `organizations` or `common`
//! | route | checks → error |
//! |---|---|
//! | `POST /{tenant}/oauth2/v2.0/devicecode` | POST only (else 400 invalid_request 900561); form content type and `client_id`, `scope` present (900144); tenant known (90002; junk 900023); client known (malformed 700038, unknown 400 unauthorized_client 700016; a tenant app without secret 401 invalid_client 7000218); scope valid (invalid_scope 70011; two resources 28000; unknown or other-cloud resource 400 invalid_resource 500011). → `{device_code, user_code, verification_uri, expires_in, interval, message}` (no `verification_uri_complete`) |
//! | `POST /{tenant}/oauth2/v2.0/token` `grant_type=urn:ietf:params:oauth:grant-type:device_code` | `client_id`, `device_code`; public client sending a secret 700025; unknown code `bad_verification_code` 70018 (BadVerificationCode in the error-code reference); `authorization_pending` 70016 (auto-approves as `signed_in_user` after `auto_approve_device_code_after_polls`); `slow_down` (`error_codes: [50196]`) when polled sooner than `interval`; `authorization_declined` 70000; `expired_token` 70020; redeemed twice `bad_verification_code`; `block_device_code` → invalid_grant 53003. → tokens |
//! | `… grant_type=authorization_code` | `client_id`, `code`, `redirect_uri`; unknown code invalid_grant 70000; expired 70008; reused 54005; other client 70000; redirect_uri differs 500112; PKCE: verifier missing or wrong 501481. → tokens |
//! | `… grant_type=refresh_token` | `client_id`, `refresh_token`, `scope`; unknown 9002313; other client 70000; expired 700082. → tokens (a new refresh token each time; one refresh token serves every resource) |
//! | `… grant_type=client_credentials` | tenant GUID/domain only (`organizations`/`common` → 400 invalid_request 50059); `client_id`, `client_secret` (7000218), `scope` = exactly one `{resource}/.default` (invalid_scope 1002012); public client 700025; app unknown or still replicating 700016; app without service principal 7000229; wrong secret, or a new secret still propagating or flapping: 401 invalid_client 7000215; expired secret 7000222. → `{token_type, expires_in, ext_expires_in, access_token}` |
//! | `… grant_type=other` | 400 unsupported_grant_type 70003 |
//! | `GET /{tenant}/oauth2/v2.0/authorize` | client_id/tenant/redirect_uri invalid → HTML error page (900144, 90002, 700016, 50011: loopback `http://localhost` or `http://127.0.0.1`, any port). Then errors go back as `302 redirect_uri?error=…&error_description=…&state=…`: `response_type` ≠ `code` (unsupported_response_type), scope (invalid_scope / invalid_resource), `code_challenge_method` not S256/plain (invalid_request). Success: auto-consents as `signed_in_user`, `302 redirect_uri?code=…&state=…&session_state=…` |
//! | `GET /{tenant}/v2.0/.well-known/openid-configuration` | tenant known (90002) → discovery document with this emulator's endpoints |
//! | `GET /devicelogin` | HTML form: the `verification_uri` |
//! | `POST /devicelogin` | form `user_code`, `action=approve|decline` → HTML result |
//!
//! Tokens are JWT-shaped (HMAC-signed by the emulator): `aud` `https://graph.microsoft.com` or
//! `https://api.partnercenter.microsoft.com` (or `https://graph.windows.net`, retired for Partner
//! Center), `tid`, `oid`, `appid`, `idtyp` `user`/`app`, `scp` or `roles`, `amr`, `exp`. Access
//! tokens live `access_token_lifetime` (3599 s).
//!
//! A delegated Graph token's `scp` is what the public client is pre-authorized for, whatever
//! Graph permissions were asked (`.default` or by name): `Application.ReadWrite.All
//! AppRoleAssignment.ReadWrite.All AuditLog.Read.All DelegatedPermissionGrant.ReadWrite.All
//! Directory.AccessAsUser.All Group.ReadWrite.All User.ReadWrite.All`. `Policy.Read.All` is not
//! among them (microsoft-apis.md §3.0: public token dumps of the Azure CLI client lack it) unless
//! `grant_policy_read`. Partner Center tokens carry `user_impersonation`.
//!
//! ## Graph (`graph_url()`) under `/v1.0`
//! Every route: `Authorization: Bearer` with a token for Graph, this tenant, unexpired, signed by the
//! emulator → else 401 InvalidAuthenticationToken. POST bodies: `application/json` and valid JSON
//! → else 400 BadRequest. `$select` of an unknown property → 400 BadRequest. Malformed GUID in a path
//! or filter → 400 Request_BadRequest "Invalid object identifier '…'." Unknown segment → 400 BadRequest.
//! Objects still inside `replication_delay` do not exist yet for reads, writes and group additions.
//! | route | checks → error |
//! |---|---|
//! | `GET /me` | app-only → 400 BadRequest "/me request is only valid with delegated authentication flow." |
//! | `GET /organization` | app-only without Organization.Read.All/Directory.Read.All → 403 Authorization_RequestDenied |
//! | `GET /me/memberOf`, `GET /me/transitiveMemberOf` | delegated only; groups and directory roles (`#microsoft.graph.directoryRole` with `roleTemplateId`; no nested groups here, so both list the same); `$select` of unknown properties 400; `@odata.nextLink` (absolute, this emulator's Graph URL, same route, `$skiptoken`) every `member_of_page_size` (or `$top`) items |
//! | `GET /servicePrincipals(appId='…')`, `GET /servicePrincipals?$filter=appId eq '…'` | 404 Request_ResourceNotFound; Partner Center's is absent when `not_csp_tenant` |
//! | `POST /servicePrincipals` `{"appId"}` | unknown props 400; **who** (below) 403; exists 409 Request_MultipleObjectsWithSameKeyValue; app unknown/replicating 400 Request_BadRequest (Microsoft's first-party apps, e.g. Partner Center's, are always known: their service principal is created in the tenant) → 201 |
//! | `POST /applications` | **who** 403; `displayName` required; unknown properties (also inside `web`, `requiredResourceAccess`) 400 BadRequest; bad `signInAudience` 400 Request_BadRequest; no `signInAudience` → `AzureADandPersonalMicrosoftAccount` (Graph's default); the signed-in creator becomes owner → 201 |
//! | `GET /applications(appId='…')`, `GET /applications/{id}`, `GET /applications?$filter=appId eq '…'` (or `displayName eq`) | 404 Request_ResourceNotFound (filter: empty `value`); `passwordCredentials[].secretText` is always null |
//! | `POST /applications/{id}/addPassword` (also `applications(appId='…')/addPassword`) | app unknown/replicating 404; **who** 403; `passwords_disallowed` 400 CredentialTypeNotAllowedAsPerAppPolicy; `endDateTime` beyond `max_password_lifetime` 400 CredentialInvalidLifetimeAsPerAppPolicy (details InvalidKeyEndDate); personal-account audiences hold at most 2 (400 Request_BadRequest "TooManyAppPasswords: …", UNCONFIRMED); `max_app_passwords` reached → 400 Directory_ResourceSizeExceeded; default end start+2 years → 200 with `secretText` (only here) |
//! | `PATCH /applications/{id}` (also `applications(appId='…')`) | the body rules of `POST /applications` (`displayName` optional); app unknown/replicating 404; **who** 403; complex properties keep the sub-properties not sent → 204 |
//! | `POST /applications/{id}/removePassword` `{"keyId"}` | app unknown/replicating 404; **who** 403; unknown keyId 400 Request_BadRequest (UNCONFIRMED) → 204 |
//! | `DELETE /applications/{id}` | Graph "Delete application"; app unknown/replicating 404; **who** 403 (as removePassword) → 204 |
//! | `GET /groups?$filter=displayName eq '…'` | delegated, or GroupMember.Read(Write).All / Group.Read(Write).All |
//! | `POST /groups/{id}/members/$ref` `{"@odata.id": "{https://graph.microsoft.com or graph_url()}/v1.0/directoryObjects/{id}"}` | group unknown 404; **who** 403; object unknown/replicating 404; already a member 400 Request_BadRequest "One or more added object references already exist…" → 204 |
//! | `GET /policies/defaultAppManagementPolicy` | **who** 403 (by default every delegated token: the public client lacks `Policy.Read.All`) → `applicationRestrictions.passwordCredentials[]` from the knobs |
//!
//! **Who** may write (microsoft-apis.md §3.0, from Graph's "Create application", "Create
//! servicePrincipal", "application: addPassword" / "removePassword", "Add members" and "Get
//! tenantAppManagementPolicy" pages). A delegated call needs BOTH a permission in `scp` and the
//! user's own right; an App-only call needs the application permission in `roles`. Else 403
//! `Authorization_RequestDenied` "Insufficient privileges to complete the operation."
//! | route | delegated `scp` (one of) | the signed-in user | App-only `roles` (one of) |
//! |---|---|---|---|
//! | `POST /applications` | Application.ReadWrite.All, Directory.AccessAsUser.All | any member ("users can register applications" is on) | Application.ReadWrite.All, Application.ReadWrite.OwnedBy, Directory.ReadWrite.All |
//! | `POST /servicePrincipals`, multi-tenant app | same | Global / Application / Cloud Application Administrator | same |
//! | `POST /servicePrincipals`, single-tenant app (`AzureADMyOrg`) | same | those, or the app's owner holding Application Developer | same |
//! | `addPassword`, `removePassword`, `PATCH /applications/{id}` | same | the app's owner, or Global / Application / Cloud Application Administrator | same |
//! | `POST /groups/{id}/members/$ref` | GroupMember.ReadWrite.All, Group.ReadWrite.All, Directory.AccessAsUser.All | the group's owner, or Global / Groups / User / Privileged Role Administrator | GroupMember.ReadWrite.All, Group.ReadWrite.All, Directory.ReadWrite.All |
//! | `GET /policies/defaultAppManagementPolicy` | Policy.Read.All, Policy.Read.ApplicationConfiguration, Policy.ReadWrite.ApplicationConfiguration | Global Reader or higher: Global Reader, Global Administrator, Application / Cloud Application Administrator (the last two UNCONFIRMED) | the same three permissions |
//! | reads (`/me`, `memberOf`, `/organization`, `/applications`, `/servicePrincipals`, `/groups`) | their Read/ReadWrite permission, or Directory.AccessAsUser.All | any member | their Read/ReadWrite permission |
//!
//! Role template IDs are those of Entra's "Microsoft Entra built-in roles" page. Membership of
//! AdminAgents is no directory role: it grants rights in customer tenants through Partner Center,
//! so an Admin agent may register an app and manage the apps it owns, nothing more. The
//! automation app holds Application.ReadWrite.All and GroupMember.ReadWrite.All.
//!
//! ## Partner Center (`partner_center_url()`) under `/v1`
//! Every route: Bearer token for `https://api.partnercenter.microsoft.com` → else 401 code 401
//! (audience `https://graph.windows.net`: 401 code 900420). `not_csp_tenant` → 403 code 900150.
//! App-only tokens of apps not registered (`require_pc_app_registration`) → 401 code 800001
//! "Partner Token missing in request context" (the chosen candidate). App+User without MFA
//! (`user_without_mfa`) → 401 code 900421.
//! | route | checks |
//! |---|---|
//! | `GET /v1/profiles/organization` | App+User only (App-only → 403 code 900150) → `{id, companyName, tenantId, domain, email, …, profileType: "OrganizationProfile"}` |
//! | `GET /v1/profiles/legalbusiness?vettingVersion=Current` | `vettingVersion` other than Current/Last → 400 → LegalBusinessProfile |
//! | `GET /v1/customers?size=N` | `size` 1..=1000 else 400 → `{totalCount, items, links, attributes}` |
//!
//! # Knobs ([`Knobs`], changeable while running with [`Emulator::update_knobs`])
//! `latency`, `replication_delay`, `secret_propagation_delay`, `propagation_flaps`, `throttle`
//! (429 + `Retry-After` with each service's body), `faults` (5xx or a dropped connection),
//! `max_password_lifetime`, `passwords_disallowed`, `signed_in_user`, `block_device_code`,
//! `not_csp_tenant`, `require_pc_app_registration`, `hang_after_request`,
//! `auto_approve_device_code_after_polls`, `member_of_page_size`, `device_code_interval_secs`,
//! `device_code_lifetime`, `access_token_lifetime`, `user_without_mfa`, `max_app_passwords`,
//! `grant_policy_read`.
//! Route matching for `throttle` and `faults` is a substring of `"METHOD /path?query"`.
//! Faults and throttles answer before the request is applied; `hang_after_request` and
//! `hang_after_route` apply it first.
//!
//! # Seed
//! A CSP partner tenant (random tenant GUID, domain `contoso-partner-xxxx.onmicrosoft.com`);
//! users `admin@` (Global Administrator and Global Reader roles), `agent@` (group AdminAgents, no
//! directory role), `appadmin@` (Application Administrator role, no group rights), `user@`
//! (plain; owns the group "Project Phoenix"), all in several groups so `memberOf` pages;
//! [`Emulator::assign_directory_role`] adds roles; service principals of Partner Center
//! (`fa3d9a0c-…`), Microsoft Graph and the Azure CLI; the automation app
//! ([`Emulator::automation_credentials`]); three customers. Known public clients: Azure CLI
//! `04b07795-…` and Azure PowerShell `1950a258-…`; any other client ID must be an app of the tenant.
//! State lives in memory, or in a JSON file (0600, atomic replace) where secrets, codes and
//! refresh tokens are SHA-256 digests (only the automation secret is kept in clear).

mod authority;
mod billing;
mod cli;
mod graph;
mod pc;
mod server;
pub(crate) mod state;
mod token;

pub use billing::{BILLING_ROLE, BillingKnobs, ExportStyle};
pub use cli::{EmulatorArgs, UserArg, banner, run};

use state::Data;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Which user signs in through the device-code page, `/authorize`, or auto-approval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UserKind {
    /// Member of the Global Administrator directory role.
    #[default]
    GlobalAdmin,
    /// Member of the `AdminAgents` group, with no directory role.
    AdminAgent,
    /// No role, no group rights.
    Plain,
    /// Member of the Application Administrator directory role, with no group rights.
    AppAdmin,
}

/// Throttle matching requests: 429 with `Retry-After` and the service's throttling body.
#[derive(Clone, Debug)]
pub struct ThrottleRule {
    /// Substring of `"METHOD /path?query"`, e.g. `"POST /v1.0/applications"`.
    pub route: String,
    /// Throttle the first n matching requests.
    pub first_n: u32,
    /// Also throttle every nth matching request (0 = off).
    pub every_nth: u32,
    pub retry_after_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status (500/502/503/504) and the service's error body.
    Status(u16),
    /// Close the connection without a response.
    DropConnection,
}

/// Fail the first `first_n` requests matching `route` (a substring of `"METHOD /path?query"`).
#[derive(Clone, Debug)]
pub struct FaultRule {
    pub route: String,
    pub first_n: u32,
    pub kind: FaultKind,
}

/// The real world's rough edges. Changeable at any time with [`Emulator::update_knobs`].
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// Added to every request.
    pub latency: Duration,
    /// After an app or service principal is created: reads, writes, group additions and token
    /// requests about it fail as Microsoft's do (404, 400, AADSTS700016) until this has passed.
    pub replication_delay: Duration,
    /// A new password does not authenticate (AADSTS7000215) until this has passed.
    pub secret_propagation_delay: Duration,
    /// After the delay, the first `2 × n` authentications of a new secret alternate success and
    /// AADSTS7000215 (success first): eventual consistency across replicas.
    pub propagation_flaps: u32,
    pub throttle: Vec<ThrottleRule>,
    pub faults: Vec<FaultRule>,
    /// Tenant policy capping password lifetime (`maxLifetime` "P365D" for 365 days).
    pub max_password_lifetime: Option<Duration>,
    /// Tenant policy blocking password credentials altogether.
    pub passwords_disallowed: bool,
    pub signed_in_user: UserKind,
    /// Conditional Access: redeeming a device code fails with AADSTS53003.
    pub block_device_code: bool,
    /// Not a CSP partner tenant: no Partner Center service principal, PC tokens refused
    /// (AADSTS500011) and Partner Center answers 403.
    pub not_csp_tenant: bool,
    /// Partner Center refuses App-only tokens of apps not registered in App management (401 code 800001).
    pub require_pc_app_registration: bool,
    /// The request with this sequence number (1-based, across services) is applied, then never answered.
    pub hang_after_request: Option<u64>,
    /// Every request whose `"METHOD /path?query"` contains this is applied, then never answered
    /// (sequence numbers vary when a client sends independent requests in parallel).
    pub hang_after_route: Option<String>,
    /// Approve a pending device code as `signed_in_user` once it has been polled this many times
    /// (the next poll gets the tokens). `None`: only the page or [`Emulator::approve_device_code`].
    pub auto_approve_device_code_after_polls: Option<u32>,
    /// Items per `memberOf` / `transitiveMemberOf` page (0 = 100).
    pub member_of_page_size: usize,
    /// Device code `interval` (None = 5 s). 0 disables `slow_down`.
    pub device_code_interval_secs: Option<u64>,
    /// Device code lifetime (None = 900 s).
    pub device_code_lifetime: Option<Duration>,
    /// Access token lifetime (None = 3599 s). Zero makes tokens that are already expired.
    pub access_token_lifetime: Option<Duration>,
    /// User sign-ins carry no MFA claim: Partner Center App+User calls get 401 code 900421.
    pub user_without_mfa: bool,
    /// An app holding this many passwords refuses another with 400 Directory_ResourceSizeExceeded
    /// (Entra's limit is about 1000 items across an app's collections). None: no limit.
    pub max_app_passwords: Option<usize>,
    /// The partner billing export (usage rows, operation time, faults, answer style).
    pub billing: BillingKnobs,
    /// The public client is pre-authorized for `Policy.Read.All`: delegated Graph tokens carry it
    /// in `scp`, so an admin may read the tenant's app management policy. Off by default, as for
    /// the Azure CLI client in a real tenant.
    pub grant_policy_read: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Authority,
    Graph,
    PartnerCenter,
}

/// One request as the emulator saw it. Secrets are never logged: no bodies, and credential-like
/// query values are masked.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub seq: u64,
    pub at: Instant,
    pub service: Service,
    pub method: String,
    /// Path with query.
    pub path: String,
    /// The status the emulator decided on (0 for a dropped connection).
    pub status: u16,
    pub ms_request_id: Option<String>,
    pub ms_correlation_id: Option<String>,
    pub client_request_id: Option<String>,
    /// False when the response was never sent (dropped or hung).
    pub delivered: bool,
}

#[derive(Clone, Debug)]
pub struct PasswordView {
    pub key_id: String,
    pub display_name: Option<String>,
    pub hint: String,
    pub end: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub struct AppView {
    pub object_id: String,
    pub app_id: String,
    pub display_name: String,
    pub sign_in_audience: String,
    pub passwords: Vec<PasswordView>,
    pub has_service_principal: bool,
    pub in_admin_agents: bool,
    pub registered_in_partner_center: bool,
}

#[derive(Clone, Debug, Default)]
pub struct EmulatorConfig {
    /// 0: an ephemeral port for each service. Otherwise authority = port, Graph = port+1,
    /// Partner Center = port+2.
    pub port: u16,
    /// JSON state, loaded at start and saved after each change. None: in memory.
    pub state_file: Option<PathBuf>,
    pub knobs: Knobs,
}

pub(crate) struct Urls {
    pub authority: String,
    pub graph: String,
    pub partner_center: String,
}

struct Runtime {
    knobs: Knobs,
    throttle_hits: Vec<u32>,
    fault_hits: Vec<u32>,
    log: Vec<LoggedRequest>,
}

pub(crate) struct Shared {
    data: Mutex<Data>,
    rt: Mutex<Runtime>,
    seq: AtomicU64,
    state_file: Option<PathBuf>,
    pub urls: Urls,
    billing: billing::Exports,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn knobs(&self) -> Knobs {
        lock(&self.rt).knobs.clone()
    }

    pub fn read<R>(&self, f: impl FnOnce(&Data) -> R) -> R {
        f(&lock(&self.data))
    }

    /// Mutate the state and persist it (atomically) when a state file is configured.
    pub fn write<R>(&self, f: impl FnOnce(&mut Data) -> R) -> R {
        let mut data = lock(&self.data);
        let r = f(&mut data);
        if let Some(path) = &self.state_file
            && let Err(e) = data.save(path)
        {
            // The emulator keeps serving from memory; say so once per failure.
            eprintln!("csp-onboard emulator: could not save state: {e:#}");
        }
        r
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn log(&self, entry: LoggedRequest) {
        lock(&self.rt).log.push(entry);
    }

    fn match_fault(&self, route: &str) -> Option<FaultKind> {
        let mut rt = lock(&self.rt);
        let rt = &mut *rt;
        for (i, rule) in rt.knobs.faults.iter().enumerate() {
            if route.contains(&rule.route) {
                rt.fault_hits[i] += 1;
                if rt.fault_hits[i] <= rule.first_n {
                    return Some(rule.kind.clone());
                }
            }
        }
        None
    }

    fn match_throttle(&self, route: &str) -> Option<u64> {
        let mut rt = lock(&self.rt);
        let rt = &mut *rt;
        for (i, rule) in rt.knobs.throttle.iter().enumerate() {
            if route.contains(&rule.route) {
                rt.throttle_hits[i] += 1;
                let n = rt.throttle_hits[i];
                if n <= rule.first_n || (rule.every_nth > 0 && n.is_multiple_of(rule.every_nth)) {
                    return Some(rule.retry_after_secs);
                }
            }
        }
        None
    }
}

/// A running emulator. Cheap to clone; [`Emulator::shutdown`] stops it.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
    control: Arc<Control>,
}

struct Control {
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding the emulator to 127.0.0.1:{port}"))
}

fn base_url(l: &TcpListener) -> anyhow::Result<String> {
    Ok(format!("http://127.0.0.1:{}", l.local_addr()?.port()))
}

impl Emulator {
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Emulator> {
        let (a, g, p) = if config.port == 0 {
            (bind(0).await?, bind(0).await?, bind(0).await?)
        } else {
            let port = config.port;
            anyhow::ensure!(port <= u16::MAX - 2, "--port must leave room for port+2");
            (
                bind(port).await?,
                bind(port + 1).await?,
                bind(port + 2).await?,
            )
        };
        let urls = Urls {
            authority: base_url(&a)?,
            graph: base_url(&g)?,
            partner_center: base_url(&p)?,
        };
        let (data, fresh) = match &config.state_file {
            Some(path) => match Data::load(path)? {
                Some(d) => (d, false),
                None => (Data::seed(), true),
            },
            None => (Data::seed(), true),
        };
        let knobs = config.knobs;
        let shared = Arc::new(Shared {
            data: Mutex::new(data),
            rt: Mutex::new(Runtime {
                throttle_hits: vec![0; knobs.throttle.len()],
                fault_hits: vec![0; knobs.faults.len()],
                knobs,
                log: Vec::new(),
            }),
            seq: AtomicU64::new(0),
            state_file: config.state_file,
            urls,
            billing: Default::default(),
        });
        if fresh && shared.state_file.is_some() {
            shared.write(|_| ());
        }
        let (tx, rx) = watch::channel(false);
        let tasks = vec![
            server::spawn_listener(a, shared.clone(), Service::Authority, rx.clone()),
            server::spawn_listener(g, shared.clone(), Service::Graph, rx.clone()),
            server::spawn_listener(p, shared.clone(), Service::PartnerCenter, rx),
        ];
        Ok(Emulator {
            shared,
            control: Arc::new(Control {
                shutdown: tx,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    pub fn authority_url(&self) -> String {
        self.shared.urls.authority.clone()
    }

    pub fn graph_url(&self) -> String {
        self.shared.urls.graph.clone()
    }

    pub fn partner_center_url(&self) -> String {
        self.shared.urls.partner_center.clone()
    }

    /// The page a user opens to enter a device code (the `verification_uri`).
    pub fn device_login_url(&self) -> String {
        format!("{}/devicelogin", self.shared.urls.authority)
    }

    /// Lines for a `.env` file or `export`: `--cloud custom` against this emulator.
    pub fn env_lines(&self) -> String {
        format!(
            "CSP_ONBOARD_CLOUD=custom\n{}={}\n{}={}\n{}={}\n",
            crate::cloud::ENV_AUTHORITY,
            self.authority_url(),
            crate::cloud::ENV_GRAPH,
            self.graph_url(),
            crate::cloud::ENV_PARTNER_CENTER,
            self.partner_center_url()
        )
    }

    pub fn tenant_id(&self) -> String {
        self.shared.read(|d| d.tenant_id.clone())
    }

    pub fn tenant_domain(&self) -> String {
        self.shared.read(|d| d.tenant_domain.clone())
    }

    /// The user principal name of the seeded user of that kind.
    pub fn user_principal_name(&self, kind: UserKind) -> String {
        self.shared
            .read(|d| d.user_of_kind(kind).map(|u| u.upn.clone()))
            .unwrap_or_default()
    }

    /// Assign a directory role (by template ID, e.g. Application Developer) to the seeded user of
    /// that kind, as an admin would in the Entra admin center. Activates the role when needed.
    pub fn assign_directory_role(&self, who: UserKind, role_template_id: &str) {
        self.shared.write(|d| {
            let Some(uid) = d.user_of_kind(who).map(|u| u.id.clone()) else {
                return;
            };
            let template = role_template_id.to_ascii_lowercase();
            let i = match d.roles.iter().position(|r| r.template_id == template) {
                Some(i) => i,
                None => {
                    d.roles.push(state::Role {
                        id: state::new_guid(),
                        display_name: state::role_display_name(&template).to_string(),
                        template_id: template,
                        members: vec![],
                    });
                    d.roles.len() - 1
                }
            };
            if !d.roles[i].members.contains(&uid) {
                d.roles[i].members.push(uid);
            }
        })
    }

    /// Change knobs; throttle and fault counters restart from zero.
    pub fn update_knobs(&self, f: impl FnOnce(&mut Knobs)) {
        let mut rt = lock(&self.shared.rt);
        f(&mut rt.knobs);
        rt.throttle_hits = vec![0; rt.knobs.throttle.len()];
        rt.fault_hits = vec![0; rt.knobs.faults.len()];
    }

    pub fn knobs(&self) -> Knobs {
        self.shared.knobs()
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.rt).log.clone()
    }

    /// Requests with exactly this method whose path (with query) contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        lock(&self.shared.rt)
            .log
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_contains))
            .count()
    }

    pub fn applications(&self) -> Vec<AppView> {
        self.shared.read(|d| {
            let agents = d.admin_agents();
            d.applications
                .iter()
                .map(|a| {
                    let sp = d.sp_by_app_id(&a.app_id);
                    AppView {
                        object_id: a.id.clone(),
                        app_id: a.app_id.clone(),
                        display_name: a.display_name.clone(),
                        sign_in_audience: a.sign_in_audience.clone(),
                        passwords: a
                            .passwords
                            .iter()
                            .map(|p| PasswordView {
                                key_id: p.key_id.clone(),
                                display_name: p.display_name.clone(),
                                hint: p.hint.clone(),
                                end: p.end,
                            })
                            .collect(),
                        has_service_principal: sp.is_some(),
                        in_admin_agents: match (sp, agents) {
                            (Some(sp), Some(g)) => g.members.contains(&sp.id),
                            _ => false,
                        },
                        registered_in_partner_center: d
                            .pc_registered
                            .iter()
                            .any(|r| r.eq_ignore_ascii_case(&a.app_id)),
                    }
                })
                .collect()
        })
    }

    /// The user codes of device codes still waiting for the user.
    pub fn pending_user_codes(&self) -> Vec<String> {
        let now = OffsetDateTime::now_utc();
        self.shared.read(|d| {
            d.device_codes
                .iter()
                .filter(|c| c.status == state::DeviceStatus::Pending && c.expires > now)
                .map(|c| c.user_code.clone())
                .collect()
        })
    }

    /// Approve as `signed_in_user`, as the device-login page does. False if no such pending code.
    pub fn approve_device_code(&self, user_code: &str) -> bool {
        let kind = self.knobs().signed_in_user;
        self.shared
            .write(|d| authority::decide_device_code(d, user_code, Some(kind)))
            .is_ok()
    }

    /// Decline, as the device-login page does. False if no such pending code.
    pub fn decline_device_code(&self, user_code: &str) -> bool {
        self.shared
            .write(|d| authority::decide_device_code(d, user_code, None))
            .is_ok()
    }

    /// "Register existing app" in Partner Center's App management.
    pub fn register_app_in_partner_center(&self, app_id: &str) {
        self.shared.write(|d| {
            if !d
                .pc_registered
                .iter()
                .any(|r| r.eq_ignore_ascii_case(app_id))
            {
                d.pc_registered.push(app_id.to_ascii_lowercase());
            }
        })
    }

    /// "Add new web app" then "Add key" in Partner Center: an app with a service principal,
    /// registered in App management, and a 1-year password; made earlier, so no replication or
    /// propagation delay applies. Returns (app ID, object ID, secret text).
    pub fn portal_create_app(&self, name: &str) -> (String, String, crate::secret::Secret) {
        let secret = state::new_client_secret();
        let earlier = OffsetDateTime::now_utc() - time::Duration::days(1);
        let (app_id, object_id) = self.shared.write(|d| {
            let owner = d
                .user_of_kind(UserKind::GlobalAdmin)
                .map(|u| u.id.clone())
                .into_iter()
                .collect();
            let mut props = serde_json::Map::new();
            props.insert(
                "web".into(),
                serde_json::json!({"redirectUris": ["http://localhost"]}),
            );
            props.insert(
                "requiredResourceAccess".into(),
                serde_json::json!([{"resourceAppId": crate::cloud::PARTNER_CENTER_APP_ID,
                    "resourceAccess": [{"id": crate::cloud::PARTNER_CENTER_USER_IMPERSONATION, "type": "Scope"}]}]),
            );
            let app = state::Application {
                id: state::new_guid(),
                app_id: state::new_guid(),
                display_name: name.to_string(),
                sign_in_audience: "AzureADMultipleOrgs".to_string(),
                created: earlier,
                owners: owner,
                passwords: vec![state::Password {
                    key_id: state::new_guid(),
                    display_name: Some("Partner Center key".to_string()),
                    secret_sha256: state::sha256_hex(&secret),
                    hint: secret.chars().take(3).collect(),
                    start: earlier,
                    end: earlier + time::Duration::days(365),
                    created: earlier,
                    auths_after_delay: 0,
                }],
                props,
                graph_roles: vec![],
            };
            let ids = (app.app_id.clone(), app.id.clone());
            d.service_principals.push(state::ServicePrincipal {
                id: state::new_guid(),
                app_id: app.app_id.clone(),
                display_name: name.to_string(),
                owner_tenant: d.tenant_id.clone(),
                created: earlier,
            });
            d.pc_registered.push(app.app_id.clone());
            d.applications.push(app);
            ids
        });
        (app_id, object_id, crate::secret::Secret::new(secret))
    }

    /// Delete an app's service principal ("Delete" on the enterprise application in the Entra
    /// admin center), e.g. Partner Center's: a CSP tenant whose Partner Center service principal is
    /// missing. False if there was none.
    pub fn portal_delete_service_principal(&self, app_id: &str) -> bool {
        self.shared.write(|d| {
            let Some(i) = d
                .service_principals
                .iter()
                .position(|sp| sp.app_id.eq_ignore_ascii_case(app_id))
            else {
                return false;
            };
            let gone = d.service_principals.remove(i).id;
            for g in &mut d.groups {
                g.members.retain(|m| *m != gone);
            }
            true
        })
    }

    /// "Add key" in Partner Center's App management on an existing app: a new 1-year password,
    /// made now (so `secret_propagation_delay` applies, as to any new key). Returns (key ID,
    /// secret text), or None if the app does not exist.
    pub fn portal_add_key(&self, app_id: &str) -> Option<(String, crate::secret::Secret)> {
        let secret = state::new_client_secret();
        let now = OffsetDateTime::now_utc();
        let key_id = self.shared.write(|d| {
            let app = d.app_by_app_id_mut(app_id)?;
            let key_id = state::new_guid();
            app.passwords.push(state::Password {
                key_id: key_id.clone(),
                display_name: Some("Partner Center key".to_string()),
                secret_sha256: state::sha256_hex(&secret),
                hint: secret.chars().take(3).collect(),
                start: now,
                end: now + time::Duration::days(365),
                created: now,
                auths_after_delay: 0,
            });
            Some(key_id)
        })?;
        Some((key_id, crate::secret::Secret::new(secret)))
    }

    /// Delete a password in the portal. False if the app or key does not exist.
    pub fn portal_remove_password(&self, app_id: &str, key_id: &str) -> bool {
        self.shared.write(|d| {
            let Some(app) = d.app_by_app_id_mut(app_id) else {
                return false;
            };
            let before = app.passwords.len();
            app.passwords
                .retain(|p| !p.key_id.eq_ignore_ascii_case(key_id));
            app.passwords.len() != before
        })
    }

    /// Move a password's end date (to make a key that expires soon, or has expired).
    pub fn portal_set_password_end(&self, app_id: &str, key_id: &str, end: OffsetDateTime) -> bool {
        self.shared.write(|d| {
            let Some(p) = d.app_by_app_id_mut(app_id).and_then(|a| {
                a.passwords
                    .iter_mut()
                    .find(|p| p.key_id.eq_ignore_ascii_case(key_id))
            }) else {
                return false;
            };
            p.end = end;
            true
        })
    }

    /// The automation identity (Graph Application.ReadWrite.All + GroupMember.ReadWrite.All,
    /// application permissions) for `--auth client-secret`: (app ID, secret).
    pub fn automation_credentials(&self) -> (String, crate::secret::Secret) {
        self.shared.read(|d| {
            (
                d.automation_app_id.clone(),
                crate::secret::Secret::new(d.automation_secret.clone()),
            )
        })
    }

    /// Stop listening and drop every open connection (hung requests included).
    pub async fn shutdown(self) {
        let _ = self.control.shutdown.send(true);
        let tasks = std::mem::take(&mut *lock(&self.control.tasks));
        for t in tasks {
            let _ = t.await;
        }
    }
}

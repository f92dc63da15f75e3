//! The onboarding plan: from the account, the way in and the app's state, the ordered steps, each
//! with its call and what Microsoft requires of the signed-in account (microsoft-apis.md §3.0).
//! Checked before the first write; `--dry-run` renders it, execution follows it.

use super::APP_MANAGEMENT;
use crate::cloud::{Endpoints, PARTNER_CENTER_APP_ID};
use crate::exit::{Exit, UserError};
use crate::partner_center::{
    APP_MANAGEMENT_URL, Application, GLOBAL_ADMIN_ROLE_TEMPLATE, LifetimePolicy,
};
use serde::Serialize;

/// Directory role templates (Entra "built-in roles" reference) that §3.0 names.
const APP_ADMIN_ROLES: [(&str, &str); 2] = [
    (
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
        "Application Administrator",
    ),
    (
        "158c047a-c907-4556-b7ef-446551a6b5f7",
        "Cloud Application Administrator",
    ),
];
const GROUP_ADMIN_ROLES: [(&str, &str); 3] = [
    (
        "fdd7a751-b60b-444a-984c-02652fe8fa1c",
        "Groups Administrator",
    ),
    ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"),
    (
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
        "Privileged Role Administrator",
    ),
];

/// What the signed-in account holds in the partner tenant, from `me/memberOf`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Roles {
    pub global_admin: bool,
    /// Application Administrator or Cloud Application Administrator.
    pub app_admin: bool,
    /// Groups, User or Privileged Role Administrator: may add members to any group.
    pub group_admin: bool,
    /// A member of AdminAgents: rights in customer tenants, none in the partner directory.
    pub admin_agent: bool,
    /// An automation identity (App-only token): its application permissions decide, not roles.
    pub app_only: bool,
}

impl Roles {
    /// From the `memberOf` objects: directory roles by template ID (or name), and AdminAgents.
    pub fn from_member_of(objects: &[crate::partner_center::DirectoryObject]) -> Roles {
        let role_is = |o: &crate::partner_center::DirectoryObject, set: &[(&str, &str)]| {
            set.iter().any(|(template, name)| {
                o.role_template_id
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(template))
                    || (o.role_template_id.is_some() && o.display_name.as_deref() == Some(*name))
            })
        };
        Roles {
            global_admin: objects.iter().any(|o| {
                o.is_global_admin_role()
                    || role_is(o, &[(GLOBAL_ADMIN_ROLE_TEMPLATE, "Global Administrator")])
            }),
            app_admin: objects.iter().any(|o| role_is(o, &APP_ADMIN_ROLES)),
            group_admin: objects.iter().any(|o| role_is(o, &GROUP_ADMIN_ROLES)),
            admin_agent: objects.iter().any(|o| o.is_admin_agents_group()),
            app_only: false,
        }
    }

    fn may_manage_apps(&self) -> bool {
        self.app_only || self.global_admin || self.app_admin
    }

    fn may_add_group_members(&self) -> bool {
        self.app_only || self.global_admin || self.group_admin
    }

    /// How the account is described to the person ("Global Administrator", "Admin agent"…).
    pub fn describe(&self) -> String {
        let mut held = Vec::new();
        if self.app_only {
            held.push("automation identity (application permissions)");
        }
        if self.global_admin {
            held.push("Global Administrator");
        }
        if self.app_admin {
            held.push("Application Administrator");
        }
        if self.group_admin {
            held.push("group administrator");
        }
        if self.admin_agent {
            held.push("Admin agent");
        }
        if held.is_empty() {
            "no admin role".into()
        } else {
            held.join(", ")
        }
    }
}

/// The tenant's secret-lifetime policy, or why it is not known. Unknown is never "no policy":
/// Graph still enforces it on addPassword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyState {
    Known(LifetimePolicy),
    /// The read was refused or failed, and why.
    Unknown(String),
    /// Not read yet: a rotation reads it only when Graph refuses a lifetime.
    NotRead,
}

impl PolicyState {
    pub fn known(&self) -> Option<&LifetimePolicy> {
        match self {
            PolicyState::Known(p) => Some(p),
            PolicyState::Unknown(_) | PolicyState::NotRead => None,
        }
    }

    pub fn max_days(&self) -> Option<i64> {
        self.known()
            .and_then(|p| p.max_password_lifetime_days)
            .map(i64::from)
    }

    pub fn describe(&self) -> String {
        match self {
            PolicyState::Unknown(_) => {
                "unknown: not readable with this sign-in (needs Policy.Read.All); Graph still enforces it".into()
            }
            PolicyState::NotRead => "not read (Graph enforces it on addPassword)".into(),
            PolicyState::Known(p) if p.passwords_blocked => "client secrets are not allowed".into(),
            PolicyState::Known(LifetimePolicy {
                max_password_lifetime_days: Some(d),
                ..
            }) => format!("secrets live at most {d} days"),
            PolicyState::Known(_) => "no secret-lifetime limit".into(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            PolicyState::Unknown(why) => serde_json::json!({"readable": false, "reason": why}),
            PolicyState::NotRead => serde_json::json!({"readable": null}),
            PolicyState::Known(p) => serde_json::json!({
                "readable": true,
                "passwords_blocked": p.passwords_blocked,
                "max_password_lifetime_days": p.max_password_lifetime_days,
            }),
        }
    }
}

/// The account and tenant, from the first round of reads.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user's sign-in name; `None` for an automation identity.
    pub user: Option<String>,
    pub tenant_id: String,
    pub tenant_name: Option<String>,
    pub roles: Roles,
    /// The Partner Center service principal exists (CSP partner tenants have it; its absence
    /// alone does not prove the tenant is not one).
    pub partner_center_sp: bool,
    pub policy: PolicyState,
}

/// A key's lifetime in days, and whether the admin asked for it (then it is never shortened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub days: i64,
    pub explicit: bool,
}

/// The way in, with what is known of the app.
#[derive(Debug, Clone)]
pub enum Way {
    /// Register a new web app (or reuse the one an interrupted run created).
    Create {
        name: String,
        adopted: Option<Application>,
    },
    /// Add a key to an existing app (looked up), making sure of its service principal. `ours`:
    /// an earlier, interrupted run of this profile created it, so it also joins AdminAgents.
    Existing { app: Application, ours: bool },
    /// An app and key made in App management: verify and store, no sign-in.
    Capture { tenant: String, app_id: String },
    /// A new key for a stored profile's app.
    Rotate {
        app_object_id: Option<String>,
        old_key: Option<String>,
        keep_old: bool,
        overlap_days: Option<u32>,
    },
}

impl Way {
    pub fn action(&self) -> &'static str {
        match self {
            Way::Create { .. } => "create",
            Way::Existing { .. } => "add_key",
            Way::Capture { .. } => "capture",
            Way::Rotate { .. } => "rotate",
        }
    }
}

/// What a step requires of the signed-in account (microsoft-apis.md §3.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Local, or a read any signed-in member may make.
    Nothing,
    /// The app's own secret (client credentials).
    AppSecret,
    /// Any member, while "users can register applications" is on (the default).
    AnyMember,
    /// Global, Application or Cloud Application Administrator.
    AppAdmin,
    /// The app's owner, or one of the app admins.
    OwnerOrAppAdmin,
    /// Global, Groups, User or Privileged Role Administrator (or the group's owner).
    GroupAdmin,
    /// Global or Privileged Role Administrator: grants an application permission.
    AppRoleAdmin,
}

impl Needs {
    pub fn permission(self) -> &'static str {
        match self {
            Needs::Nothing => "none",
            Needs::AppSecret => "the app's secret (client credentials), Partner Center App-only",
            Needs::AnyMember | Needs::AppAdmin | Needs::OwnerOrAppAdmin => {
                "delegated Application.ReadWrite.All"
            }
            Needs::GroupAdmin => "delegated GroupMember.ReadWrite.All",
            Needs::AppRoleAdmin => "delegated AppRoleAssignment.ReadWrite.All",
        }
    }

    pub fn role(self) -> &'static str {
        match self {
            Needs::Nothing | Needs::AppSecret => "none",
            Needs::AnyMember => "any member (the creator becomes the app's owner)",
            Needs::AppAdmin => {
                "Global Administrator, Application Administrator or Cloud Application Administrator"
            }
            Needs::OwnerOrAppAdmin => {
                "the app's owner, or Global / Application / Cloud Application Administrator"
            }
            Needs::GroupAdmin => {
                "Global, Groups, User or Privileged Role Administrator, or the group's owner"
            }
            Needs::AppRoleAdmin => "Global Administrator or Privileged Role Administrator",
        }
    }

    /// Whether `roles` may do it. `None` for the account of a rotation, which is not read:
    /// Graph decides, and a refusal there writes nothing.
    fn allows(self, roles: Option<&Roles>) -> Allowed {
        let Some(r) = roles else {
            return Allowed::Yes;
        };
        match self {
            Needs::Nothing | Needs::AppSecret | Needs::AnyMember => Allowed::Yes,
            Needs::AppAdmin if r.may_manage_apps() => Allowed::Yes,
            Needs::AppAdmin => Allowed::No,
            Needs::OwnerOrAppAdmin if r.may_manage_apps() => Allowed::Yes,
            // Ownership is not read: an owner's addPassword succeeds, anyone else's is refused
            // before anything is created.
            Needs::OwnerOrAppAdmin => Allowed::IfOwner,
            Needs::GroupAdmin if r.may_add_group_members() => Allowed::Yes,
            Needs::GroupAdmin => Allowed::No,
            // Roles does not tell a Privileged Role Administrator from the other group admins:
            // only a Global Administrator is sure to be allowed.
            Needs::AppRoleAdmin if r.app_only || r.global_admin => Allowed::Yes,
            Needs::AppRoleAdmin => Allowed::No,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Yes,
    IfOwner,
    No,
}

/// What a step is, for execution to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    CreatePartnerCenterSp,
    CreateApplication,
    ReuseApplication,
    CreateServicePrincipal,
    AddToAdminAgents,
    ReadSecret,
    AddPassword,
    VerifyToken,
    VerifyPartnerCenter,
    Store,
    RemoveOldKey,
    KeepOldKey,
    ReadGraphAppRoles,
    RequestBilling,
    GrantBilling,
    VerifyBilling,
}

impl Action {
    /// The step as the subject of a sentence ("creating the web app's service principal").
    pub fn gerund(self) -> &'static str {
        match self {
            Action::CreatePartnerCenterSp => "creating Partner Center's service principal",
            Action::CreateApplication => "registering the web app",
            Action::ReuseApplication => "using the web app",
            Action::CreateServicePrincipal => "creating the web app's service principal",
            Action::AddToAdminAgents => "adding it to AdminAgents",
            Action::ReadSecret => "reading the secret",
            Action::AddPassword => "adding a key",
            Action::VerifyToken | Action::VerifyPartnerCenter => "verifying the secret",
            Action::Store => "storing the secret",
            Action::RemoveOldKey => "removing the old key",
            Action::KeepOldKey => "keeping the old key",
            Action::ReadGraphAppRoles => "reading Microsoft Graph's application permissions",
            Action::RequestBilling => "requesting PartnerBilling.Read.All",
            Action::GrantBilling => "granting admin consent",
            Action::VerifyBilling => "verifying billing access",
        }
    }
}

/// Whether a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Status {
    Run,
    /// Runs if the account owns the app (not read beforehand).
    RunIfOwner,
    /// Left out, and why (the result still works; the reason says what it lacks).
    Skip(String),
    /// This account may not do it: the plan is refused before any write.
    Blocked(String),
    /// This account may not grant it through Graph: an admin approves it in a browser at the
    /// admin-consent URL instead, and the run waits for that.
    AdminConsentUrl(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub action: Action,
    /// What it does, in words.
    pub does: String,
    /// The HTTP call(s), or `local` for the secret store.
    pub call: String,
    /// The token permission it needs.
    pub permission: &'static str,
    /// Who may make it.
    pub role: &'static str,
    #[serde(flatten)]
    pub status: Status,
    /// A write to the tenant (Graph), as opposed to a read, a verification or the local store.
    pub writes: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub way: Way,
    pub tenant_id: String,
    pub lifetime: Option<Lifetime>,
    pub steps: Vec<Step>,
    /// Where the secret goes (the store's description).
    pub store: String,
}

/// The rest of a URL without its trailing slash.
fn base(u: &url::Url) -> &str {
    u.as_str().trim_end_matches('/')
}

impl Plan {
    /// The plan for `way`. `account`: the first round of reads (`None` for capture, which signs
    /// nobody in, and for a rotation, which reads no roles).
    pub fn build(
        way: Way,
        account: Option<&Account>,
        lifetime: Option<Lifetime>,
        ep: &Endpoints,
        tenant_id: &str,
        store: String,
    ) -> Plan {
        let g = format!("{}/v1.0", base(&ep.graph));
        let roles = account.map(|a| &a.roles);
        let mut steps = Vec::new();
        let mut step = |action, does: String, call: String, needs: Needs, writes| {
            let status = match needs.allows(roles) {
                Allowed::Yes => Status::Run,
                Allowed::IfOwner => Status::RunIfOwner,
                Allowed::No => Status::Blocked(format!("needs {}", needs.role())),
            };
            steps.push(Step {
                action,
                does,
                call,
                permission: needs.permission(),
                role: needs.role(),
                status,
                writes,
            });
        };
        let days = lifetime.map(|l| l.days).unwrap_or(365);
        match &way {
            Way::Create { name, adopted } => {
                if account.is_some_and(|a| !a.partner_center_sp) {
                    step(
                        Action::CreatePartnerCenterSp,
                        format!(
                            "create Partner Center's service principal ({PARTNER_CENTER_APP_ID}) in the tenant, which has none"
                        ),
                        format!("POST {g}/servicePrincipals"),
                        Needs::AppAdmin,
                        true,
                    );
                }
                match adopted {
                    Some(app) => step(
                        Action::ReuseApplication,
                        format!(
                            "reuse the web app '{name}' (App ID {}) that an interrupted run created",
                            app.app_id
                        ),
                        "none".into(),
                        Needs::Nothing,
                        false,
                    ),
                    None => step(
                        Action::CreateApplication,
                        format!(
                            "register the web app '{name}' (multi-tenant, redirect http://localhost, Partner Center user_impersonation)"
                        ),
                        format!("POST {g}/applications"),
                        Needs::AnyMember,
                        true,
                    ),
                }
                step(
                    Action::CreateServicePrincipal,
                    "create the web app's service principal (multi-tenant app)".into(),
                    format!("POST {g}/servicePrincipals"),
                    Needs::AppAdmin,
                    true,
                );
                step(
                    Action::AddToAdminAgents,
                    "add the service principal to AdminAgents (pre-consent, as Microsoft's secure-app-model scripts do)".into(),
                    format!("GET {g}/groups?$filter=displayName eq 'AdminAgents', then POST {g}/groups/{{id}}/members/$ref"),
                    Needs::GroupAdmin,
                    true,
                );
                step(
                    Action::AddPassword,
                    format!("add a secret that expires in {days} days"),
                    format!("POST {g}/applications/{{new app}}/addPassword"),
                    Needs::OwnerOrAppAdmin,
                    true,
                );
            }
            Way::Existing { app, ours } => {
                step(
                    Action::ReuseApplication,
                    format!(
                        "use the web app '{}' (App ID {})",
                        app.display_name.as_deref().unwrap_or("unnamed"),
                        app.app_id
                    ),
                    "none".into(),
                    Needs::Nothing,
                    false,
                );
                step(
                    Action::CreateServicePrincipal,
                    "create the app's service principal if it has none (409: it exists)".into(),
                    format!("POST {g}/servicePrincipals"),
                    Needs::AppAdmin,
                    true,
                );
                if *ours {
                    step(
                        Action::AddToAdminAgents,
                        "add the service principal to AdminAgents (pre-consent)".into(),
                        format!(
                            "GET {g}/groups?$filter=displayName eq 'AdminAgents', then POST {g}/groups/{{id}}/members/$ref"
                        ),
                        Needs::GroupAdmin,
                        true,
                    );
                }
                step(
                    Action::AddPassword,
                    format!("add a secret that expires in {days} days"),
                    format!("POST {g}/applications/{}/addPassword", app.id),
                    Needs::OwnerOrAppAdmin,
                    true,
                );
            }
            Way::Capture { .. } => step(
                Action::ReadSecret,
                "read the app's secret value (stdin, CSP_ONBOARD_APP_SECRET or a hidden prompt)"
                    .into(),
                "none".into(),
                Needs::Nothing,
                false,
            ),
            Way::Rotate { app_object_id, .. } => step(
                Action::AddPassword,
                format!("add a secret that expires in {days} days"),
                format!(
                    "POST {g}/applications/{}/addPassword",
                    app_object_id.as_deref().unwrap_or("{app}")
                ),
                Needs::OwnerOrAppAdmin,
                true,
            ),
        }
        step(
            Action::VerifyToken,
            "prove the secret gets a token, several times in a row (Entra's propagation)".into(),
            format!(
                "POST {}/{tenant_id}/oauth2/v2.0/token (client credentials, scope {})",
                base(&ep.authority),
                ep.partner_center_scope()
            ),
            Needs::AppSecret,
            false,
        );
        step(
            Action::VerifyPartnerCenter,
            "prove Partner Center accepts the app (App-only, once)".into(),
            format!(
                "GET {}/v1/profiles/legalbusiness?vettingVersion=Current",
                base(&ep.partner_center)
            ),
            Needs::AppSecret,
            false,
        );
        step(
            Action::Store,
            format!("store the secret in {store}"),
            "local".into(),
            Needs::Nothing,
            false,
        );
        if let Way::Rotate {
            app_object_id,
            old_key: Some(k),
            keep_old,
            overlap_days,
        } = &way
        {
            match (keep_old, overlap_days) {
                (_, Some(d)) => step(
                    Action::KeepOldKey,
                    format!("keep the old key {k} for {d} days"),
                    "none".into(),
                    Needs::Nothing,
                    false,
                ),
                (true, None) => step(
                    Action::KeepOldKey,
                    format!("keep the old key {k}"),
                    "none".into(),
                    Needs::Nothing,
                    false,
                ),
                (false, None) => step(
                    Action::RemoveOldKey,
                    format!("remove the old key {k}"),
                    format!(
                        "POST {g}/applications/{}/removePassword",
                        app_object_id.as_deref().unwrap_or("{app}")
                    ),
                    Needs::OwnerOrAppAdmin,
                    true,
                ),
            }
        }
        let mut plan = Plan {
            way,
            tenant_id: tenant_id.to_string(),
            lifetime,
            steps,
            store,
        };
        plan.skip_what_can_wait(account);
        plan
    }

    /// The AdminAgents membership only pre-consents the app for customer tenants: the app and
    /// its secret work without it. An account that may make everything else (an Application
    /// Administrator) skips it and is told who can finish it, rather than being refused.
    fn skip_what_can_wait(&mut self, account: Option<&Account>) {
        if account.is_none() {
            return;
        }
        if matches!(self.way, Way::Existing { .. }) {
            // An app made in App management has its service principal: an account that may
            // not create one (an Admin agent who owns the app) goes straight to the key.
            for s in &mut self.steps {
                if s.action == Action::CreateServicePrincipal
                    && matches!(s.status, Status::Blocked(_))
                {
                    s.status = Status::Skip("this account may not create service principals; an app made in App management already has one".into());
                }
            }
        }
        let others_ok = self.steps.iter().all(|s| {
            s.action == Action::AddToAdminAgents || !matches!(s.status, Status::Blocked(_))
        });
        if !others_ok {
            return;
        }
        for s in &mut self.steps {
            if s.action == Action::AddToAdminAgents && matches!(s.status, Status::Blocked(_)) {
                s.status = Status::Skip(
                    "this account may not add members to AdminAgents: a Global Administrator (or Groups, User or Privileged Role Administrator) can add the app's service principal later; the app and its secret work without it".into(),
                );
            }
        }
    }

    /// `--billing`: after the key is stored, request Microsoft Graph's PartnerBilling.Read.All
    /// application permission, grant admin consent, and prove it App-only (microsoft-apis.md
    /// §5b, "Grant an appRoleAssignment"). An account that may not grant it through Graph is
    /// not refused: an admin approves it at the admin-consent URL.
    pub fn add_billing(&mut self, ep: &Endpoints, account: Option<&Account>) {
        use crate::partner_center::billing::GRAPH_APP_ID;
        let g = format!("{}/v1.0", base(&ep.graph));
        let roles = account.map(|a| &a.roles);
        let (object_id, app_id) = match &self.way {
            Way::Existing { app, .. } => (app.id.clone(), app.app_id.clone()),
            Way::Capture { app_id, .. } => ("{app}".into(), app_id.clone()),
            Way::Rotate { app_object_id, .. } => (
                app_object_id.clone().unwrap_or_else(|| "{app}".into()),
                "{app id}".into(),
            ),
            Way::Create { .. } => ("{new app}".into(), "{new app id}".into()),
        };
        let tenant = &self.tenant_id;
        let consent = format!(
            "{}/{tenant}/v2.0/adminconsent?client_id={app_id}",
            base(&ep.authority)
        );
        let steps = [
            (
                Action::ReadGraphAppRoles,
                "find PartnerBilling.Read.All among Microsoft Graph's application permissions"
                    .to_string(),
                format!("GET {g}/servicePrincipals(appId='{GRAPH_APP_ID}')?$select=id,appRoles"),
                Needs::Nothing,
                false,
            ),
            (
                Action::RequestBilling,
                "request PartnerBilling.Read.All (application) in the app's requiredResourceAccess"
                    .into(),
                format!("PATCH {g}/applications/{object_id}"),
                Needs::OwnerOrAppAdmin,
                true,
            ),
            (
                Action::GrantBilling,
                "grant admin consent: assign the app role to the app's service principal".into(),
                format!(
                    "GET {g}/servicePrincipals(appId='{app_id}'), then POST {g}/servicePrincipals/{{id}}/appRoleAssignments"
                ),
                Needs::AppRoleAdmin,
                true,
            ),
            (
                Action::VerifyBilling,
                "prove the app's App-only Graph token holds PartnerBilling.Read.All in its roles"
                    .into(),
                format!(
                    "POST {}/{tenant}/oauth2/v2.0/token (client credentials, scope {})",
                    base(&ep.authority),
                    ep.graph_scope()
                ),
                Needs::AppSecret,
                false,
            ),
        ];
        for (action, does, call, needs, writes) in steps {
            let status = match needs.allows(roles) {
                Allowed::Yes => Status::Run,
                Allowed::IfOwner => Status::RunIfOwner,
                Allowed::No if needs == Needs::AppRoleAdmin => Status::AdminConsentUrl(format!(
                    "this account may not grant it through Graph: a Global Administrator approves it in a browser at {consent}"
                )),
                Allowed::No => Status::Blocked(format!("needs {}", needs.role())),
            };
            self.steps.push(Step {
                action,
                does,
                call,
                permission: needs.permission(),
                role: needs.role(),
                status,
                writes,
            });
        }
    }

    pub fn runs(&self, action: Action) -> bool {
        self.steps
            .iter()
            .any(|s| s.action == action && matches!(s.status, Status::Run | Status::RunIfOwner))
    }

    pub fn skipped(&self) -> impl Iterator<Item = (&Step, &str)> {
        self.steps.iter().filter_map(|s| match &s.status {
            Status::Skip(why) => Some((s, why.as_str())),
            _ => None,
        })
    }

    /// Refuse a plan that this account cannot carry out, before anything is written: exit 4,
    /// naming the missing role and the way in that works.
    pub fn check(&self, account: Option<&Account>) -> Result<(), UserError> {
        if let Some(a) = account
            && !(a.roles.may_manage_apps() || a.roles.admin_agent)
        {
            return Err(UserError::new(
                Exit::Permission,
                format!(
                    "{} holds none of the roles that can onboard: it is neither a Global Administrator (or Application Administrator) nor an Admin agent of this tenant",
                    a.user.as_deref().unwrap_or("this account")
                ),
            )
            .hint("sign in as a Global Administrator (or Application Administrator), or as an Admin agent (a member of AdminAgents), who uses App management and capture"));
        }
        let blocked: Vec<&Step> = self
            .steps
            .iter()
            .filter(|s| matches!(s.status, Status::Blocked(_)))
            .collect();
        if blocked.is_empty() {
            return Ok(());
        }
        let who = account
            .and_then(|a| a.user.clone())
            .unwrap_or_else(|| "this account".into());
        let roles = account.map(|a| a.roles).unwrap_or_default();
        let needs: Vec<String> = blocked
            .iter()
            .map(|s| format!("{} needs {}", s.action.gerund(), s.role))
            .collect();
        let message = if roles.admin_agent {
            format!(
                "{who} is an Admin agent without a directory role in the partner tenant, and Microsoft requires one here: {}. Nothing was changed",
                needs.join("; ")
            )
        } else {
            format!(
                "{who} may not do this: {}. Nothing was changed",
                needs.join("; ")
            )
        };
        Err(UserError::new(Exit::Permission, message).hint(agent_way(&self.tenant_id)))
    }

    /// The plan as `--dry-run --json` prints it.
    pub fn to_json(&self, account: Option<&Account>) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "action": self.way.action(),
            "tenant_id": self.tenant_id,
            "key_lifetime_days": self.lifetime.map(|l| l.days),
            "steps": self.steps,
            "store": self.store,
        });
        if let Some(a) = account {
            doc["account"] = serde_json::json!({
                "user": a.user, "roles": a.roles, "partner_center_service_principal": a.partner_center_sp,
            });
            doc["policy"] = a.policy.to_json();
        }
        doc
    }

    /// The plan as numbered lines for people.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            let mark = match &s.status {
                Status::Run => String::new(),
                Status::RunIfOwner => " [if you own the app]".into(),
                Status::Skip(_) => " [skipped]".into(),
                Status::Blocked(_) => " [NOT ALLOWED for this account]".into(),
                Status::AdminConsentUrl(_) => " [by the admin-consent URL]".into(),
            };
            out.push(format!("{}. {}{mark}", i + 1, s.does));
            if s.call != "none" && s.call != "local" {
                out.push(format!("   {}", s.call));
            }
            if s.role != "none" {
                out.push(format!("   needs: {}; {}", s.permission, s.role));
            }
            if let Status::Skip(why) | Status::Blocked(why) | Status::AdminConsentUrl(why) =
                &s.status
            {
                out.push(format!("   {why}"));
            }
        }
        out
    }
}

/// The way in that needs no directory role: App management, then capture.
pub fn agent_way(tenant: &str) -> String {
    format!(
        "an Admin agent's way in: in {APP_MANAGEMENT} ({APP_MANAGEMENT_URL}) choose \"Add new web app\", then \"Add key\", and capture them: printf '%s\\n' \"$SECRET\" | csp-onboard init --tenant {tenant} --app-id <App ID> --app-secret-stdin. Or sign in as a Global Administrator (or Application Administrator)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(roles: Roles) -> Account {
        Account {
            user: Some("someone@contoso.example".into()),
            tenant_id: "t".into(),
            tenant_name: None,
            roles,
            partner_center_sp: true,
            policy: PolicyState::Unknown("refused".into()),
        }
    }

    fn create_plan(roles: Roles) -> Plan {
        let ep = Endpoints::public(crate::cloud::Cloud::Global).expect("global");
        let a = account(roles);
        Plan::build(
            Way::Create {
                name: "x".into(),
                adopted: None,
            },
            Some(&a),
            None,
            &ep,
            "t",
            "the keychain".into(),
        )
    }

    #[test]
    fn an_admin_agent_is_refused_before_any_write_and_told_the_way_that_works() {
        let roles = Roles {
            admin_agent: true,
            ..Roles::default()
        };
        let plan = create_plan(roles);
        let err = plan.check(Some(&account(roles))).unwrap_err();
        assert_eq!(err.exit, Exit::Permission);
        assert!(err.message.contains("service principal"), "{}", err.message);
        let hint = err.hint.unwrap_or_default();
        assert!(hint.contains("App management") && hint.contains("--app-secret-stdin"));
    }

    #[test]
    fn an_application_administrator_skips_admin_agents_and_makes_the_rest() {
        let roles = Roles {
            app_admin: true,
            ..Roles::default()
        };
        let plan = create_plan(roles);
        assert!(plan.check(Some(&account(roles))).is_ok());
        assert!(plan.runs(Action::CreateServicePrincipal));
        assert!(!plan.runs(Action::AddToAdminAgents));
        assert_eq!(plan.skipped().count(), 1);
    }

    #[test]
    fn a_global_admin_runs_every_step() {
        let roles = Roles {
            global_admin: true,
            ..Roles::default()
        };
        let plan = create_plan(roles);
        assert!(plan.check(Some(&account(roles))).is_ok());
        assert!(plan.steps.iter().all(|s| s.status == Status::Run));
    }
}

//! The emulated directory (tenant, users, groups, roles, apps, service principals, credentials,
//! pending grants): the seed, and the JSON state file that survives restarts.
//!
//! Secrets, device codes, auth codes and refresh tokens are stored as SHA-256 digests, as a real
//! STS would. The one exception is the automation identity's secret, which tests ask for again.

use super::UserKind;
use crate::cloud::{DEFAULT_PUBLIC_CLIENT_ID, PARTNER_CENTER_APP_ID};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use time::OffsetDateTime;

/// Directory role template IDs, from Entra's "Microsoft Entra built-in roles" (permissions reference).
pub const GLOBAL_ADMIN_TEMPLATE: &str = "62e90394-69f5-4237-9190-012177145e10";
pub const APPLICATION_ADMIN_TEMPLATE: &str = "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3";
pub const CLOUD_APPLICATION_ADMIN_TEMPLATE: &str = "158c047a-c907-4556-b7ef-446551a6b5f7";
pub const APPLICATION_DEVELOPER_TEMPLATE: &str = "cf1c38e5-3621-4004-a7cb-879624dced7c";
pub const GROUPS_ADMIN_TEMPLATE: &str = "fdd7a751-b60b-444a-984c-02652fe8fa1c";
pub const USER_ADMIN_TEMPLATE: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
pub const PRIVILEGED_ROLE_ADMIN_TEMPLATE: &str = "e8611ab8-c189-46e8-94e1-60213ab1f814";
pub const GLOBAL_READER_TEMPLATE: &str = "f2ef992c-3afb-46b9-b7cf-a126ee74c451";
/// The display name Graph gives a directory role of this template.
pub fn role_display_name(template_id: &str) -> &'static str {
    match template_id {
        GLOBAL_ADMIN_TEMPLATE => "Global Administrator",
        APPLICATION_ADMIN_TEMPLATE => "Application Administrator",
        CLOUD_APPLICATION_ADMIN_TEMPLATE => "Cloud Application Administrator",
        APPLICATION_DEVELOPER_TEMPLATE => "Application Developer",
        GROUPS_ADMIN_TEMPLATE => "Groups Administrator",
        USER_ADMIN_TEMPLATE => "User Administrator",
        PRIVILEGED_ROLE_ADMIN_TEMPLATE => "Privileged Role Administrator",
        GLOBAL_READER_TEMPLATE => "Global Reader",
        _ => "Directory role",
    }
}

pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
pub const AZURE_POWERSHELL_APP_ID: &str = "1950a258-227b-4e31-a9cf-717495945fc2";
/// Microsoft's own services tenant, which owns first-party apps such as Partner Center.
pub const MICROSOFT_SERVICES_TENANT: &str = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";
pub const ADMIN_AGENTS: &str = "AdminAgents";

/// The public clients the emulator knows, as Entra knows first-party apps in every tenant.
pub const PUBLIC_CLIENTS: &[(&str, &str)] = &[
    (DEFAULT_PUBLIC_CLIENT_ID, "Microsoft Azure CLI"),
    (AZURE_POWERSHELL_APP_ID, "Microsoft Azure PowerShell"),
];

/// 2: the Application Administrator user and group owners (issue 10); version 1 is upgraded on load.
/// The name of a Microsoft first-party multi-tenant app this emulator knows, by app ID.
pub fn first_party_app_name(app_id: &str) -> Option<&'static str> {
    let app_id = app_id.to_ascii_lowercase();
    match app_id.as_str() {
        PARTNER_CENTER_APP_ID => Some("Partner Center"),
        GRAPH_APP_ID => Some("Microsoft Graph"),
        _ => PUBLIC_CLIENTS
            .iter()
            .find(|(id, _)| *id == app_id)
            .map(|(_, name)| *name),
    }
}

const STATE_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
pub struct Data {
    pub version: u32,
    pub tenant_id: String,
    pub tenant_domain: String,
    pub tenant_name: String,
    /// HMAC key that signs the emulator's JWT-shaped tokens (hex).
    pub signing_key: String,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub roles: Vec<Role>,
    pub applications: Vec<Application>,
    pub service_principals: Vec<ServicePrincipal>,
    /// App IDs registered in Partner Center's App management.
    pub pc_registered: Vec<String>,
    pub automation_app_id: String,
    pub automation_secret: String,
    pub customers: Vec<Customer>,
    pub device_codes: Vec<DeviceCode>,
    pub auth_codes: Vec<AuthCode>,
    pub refresh_tokens: Vec<RefreshToken>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct User {
    pub id: String,
    pub upn: String,
    pub display_name: String,
    pub kind: UserKind,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct Group {
    pub id: String,
    pub display_name: String,
    pub description: String,
    /// Object IDs of users and service principals.
    pub members: Vec<String>,
    /// Object IDs of the users who own the group (they may add members without a role).
    #[serde(default)]
    pub owners: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct Role {
    pub id: String,
    pub template_id: String,
    pub display_name: String,
    pub members: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct Application {
    pub id: String,
    pub app_id: String,
    pub display_name: String,
    pub sign_in_audience: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Object IDs of the users who own the app (its creator, for delegated creation).
    pub owners: Vec<String>,
    pub passwords: Vec<Password>,
    /// The other writable properties exactly as the creator sent them.
    pub props: serde_json::Map<String, serde_json::Value>,
    /// Graph application permissions granted with admin consent (the automation identity only).
    pub graph_roles: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct Password {
    pub key_id: String,
    pub display_name: Option<String>,
    pub secret_sha256: String,
    pub hint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Successful authentications after the propagation delay (drives `propagation_flaps`).
    #[serde(default)]
    pub auths_after_delay: u32,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct ServicePrincipal {
    pub id: String,
    pub app_id: String,
    pub display_name: String,
    pub owner_tenant: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct Customer {
    pub id: String,
    pub commerce_id: String,
    pub company_name: String,
    pub domain: String,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved { user_id: String },
    Declined,
    Redeemed,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct DeviceCode {
    pub device_code_sha256: String,
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub interval_secs: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_poll: Option<OffsetDateTime>,
    pub polls: u32,
    pub status: DeviceStatus,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct AuthCode {
    pub code_sha256: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub user_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub redeemed: bool,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct RefreshToken {
    pub token_sha256: String,
    pub client_id: String,
    pub user_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

pub fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random string over `alphabet`.
pub fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A client secret shaped like Entra's: three characters, a digit, `Q~`, then 34 more (40 in all).
pub fn new_client_secret() -> String {
    let tail: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~-";
    format!(
        "{}{}Q~{}",
        random_string(3, ALNUM),
        random_string(1, b"0123456789"),
        random_string(34, tail)
    )
}

pub fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

impl Data {
    /// A fresh CSP partner tenant.
    pub fn seed() -> Data {
        let now = OffsetDateTime::now_utc();
        let long_ago = now - time::Duration::days(400);
        let label = random_string(4, b"abcdefghijklmnopqrstuvwxyz0123456789");
        let tenant_domain = format!("contoso-partner-{label}.onmicrosoft.com");
        let user = |local: &str, name: &str, kind| User {
            id: new_guid(),
            upn: format!("{local}@{tenant_domain}"),
            display_name: name.to_string(),
            kind,
        };
        let admin = user("admin", "Ada Admin", UserKind::GlobalAdmin);
        let agent = user("agent", "Alex Agent", UserKind::AdminAgent);
        let plain = user("user", "Pat Plain", UserKind::Plain);
        let app_admin = user("appadmin", "Avery AppAdmin", UserKind::AppAdmin);

        let group = |name: &str, members: Vec<&User>| Group {
            id: new_guid(),
            display_name: name.to_string(),
            description: format!("{name} (seeded by the emulator)"),
            members: members.iter().map(|u| u.id.clone()).collect(),
            owners: vec![],
        };
        // Enough memberships that a small `member_of_page_size` pages through several links.
        // AdminAgents has no owner: Partner Center made it, and only directory roles add to it.
        let mut groups = vec![
            group(ADMIN_AGENTS, vec![&agent]),
            group("SalesAgents", vec![&agent]),
            group("HelpdeskAgents", vec![&agent, &plain]),
            group("All Staff", vec![&admin, &agent, &plain, &app_admin]),
            group("Finance", vec![&admin]),
            group("Engineering", vec![&admin, &plain, &app_admin]),
            group("Security Reviewers", vec![&admin]),
            group("Project Phoenix", vec![&admin, &agent]),
        ];
        // A group a plain user owns: owners add members without any role ("Add members").
        if let Some(g) = groups
            .iter_mut()
            .find(|g| g.display_name == "Project Phoenix")
        {
            g.owners.push(plain.id.clone());
        }
        let roles = vec![
            Role {
                id: new_guid(),
                template_id: GLOBAL_ADMIN_TEMPLATE.to_string(),
                display_name: role_display_name(GLOBAL_ADMIN_TEMPLATE).to_string(),
                members: vec![admin.id.clone()],
            },
            Role {
                id: new_guid(),
                template_id: GLOBAL_READER_TEMPLATE.to_string(),
                display_name: role_display_name(GLOBAL_READER_TEMPLATE).to_string(),
                members: vec![admin.id.clone()],
            },
            Role {
                id: new_guid(),
                template_id: APPLICATION_ADMIN_TEMPLATE.to_string(),
                display_name: role_display_name(APPLICATION_ADMIN_TEMPLATE).to_string(),
                members: vec![app_admin.id.clone()],
            },
        ];

        let sp = |app_id: &str, name: &str, owner: &str| ServicePrincipal {
            id: new_guid(),
            app_id: app_id.to_string(),
            display_name: name.to_string(),
            owner_tenant: owner.to_string(),
            created: long_ago,
        };
        let tenant_id = new_guid();
        let mut service_principals = vec![
            sp(
                PARTNER_CENTER_APP_ID,
                "Partner Center",
                MICROSOFT_SERVICES_TENANT,
            ),
            sp(GRAPH_APP_ID, "Microsoft Graph", MICROSOFT_SERVICES_TENANT),
            sp(
                DEFAULT_PUBLIC_CLIENT_ID,
                "Microsoft Azure CLI",
                MICROSOFT_SERVICES_TENANT,
            ),
        ];

        // The automation identity for `--auth client-secret`.
        let automation_secret = new_client_secret();
        let automation = Application {
            id: new_guid(),
            app_id: new_guid(),
            display_name: "csp-onboard automation".to_string(),
            sign_in_audience: "AzureADMyOrg".to_string(),
            created: long_ago,
            owners: vec![admin.id.clone()],
            passwords: vec![Password {
                key_id: new_guid(),
                display_name: Some("automation".to_string()),
                secret_sha256: sha256_hex(&automation_secret),
                hint: automation_secret.chars().take(3).collect(),
                start: long_ago,
                end: now + time::Duration::days(3650),
                created: long_ago,
                auths_after_delay: 0,
            }],
            props: serde_json::Map::new(),
            graph_roles: vec![
                "Application.ReadWrite.All".to_string(),
                "GroupMember.ReadWrite.All".to_string(),
            ],
        };
        service_principals.push(sp(&automation.app_id, &automation.display_name, &tenant_id));

        let customer = |name: &str, dom: &str| Customer {
            id: new_guid(),
            commerce_id: new_guid(),
            company_name: name.to_string(),
            domain: format!("{dom}.onmicrosoft.com"),
        };
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);

        Data {
            version: STATE_VERSION,
            tenant_id: tenant_id.clone(),
            tenant_domain,
            tenant_name: "Contoso Partner".to_string(),
            signing_key: hex(&key),
            users: vec![admin, agent, plain, app_admin],
            groups,
            roles,
            applications: vec![automation.clone()],
            service_principals,
            pc_registered: vec![],
            automation_app_id: automation.app_id,
            automation_secret,
            customers: vec![
                customer("Fabrikam Ltd", "fabrikam-emu"),
                customer("Northwind Traders", "northwind-emu"),
                customer("Tailspin Toys", "tailspin-emu"),
            ],
            device_codes: vec![],
            auth_codes: vec![],
            refresh_tokens: vec![],
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Option<Data>> {
        use anyhow::Context;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading emulator state {}", path.display()));
            }
        };
        let mut data: Data = serde_json::from_str(&text).with_context(|| {
            format!(
                "emulator state {} is not valid; move it away to start fresh",
                path.display()
            )
        })?;
        if data.version == 1 {
            data.upgrade_from_v1();
        }
        anyhow::ensure!(
            data.version == STATE_VERSION,
            "emulator state {} has version {}, expected {STATE_VERSION}; move it away to start fresh",
            path.display(),
            data.version
        );
        Ok(Some(data))
    }

    /// Version 1 had no Application Administrator user: add `appadmin@` with that role, so a
    /// tenant kept by `--cloud emulator` keeps its apps.
    fn upgrade_from_v1(&mut self) {
        if self.user_of_kind(UserKind::AppAdmin).is_none() {
            let app_admin = User {
                id: new_guid(),
                upn: format!("appadmin@{}", self.tenant_domain),
                display_name: "Avery AppAdmin".to_string(),
                kind: UserKind::AppAdmin,
            };
            self.roles.push(Role {
                id: new_guid(),
                template_id: APPLICATION_ADMIN_TEMPLATE.to_string(),
                display_name: role_display_name(APPLICATION_ADMIN_TEMPLATE).to_string(),
                members: vec![app_admin.id.clone()],
            });
            self.users.push(app_admin);
        }
        self.version = STATE_VERSION;
    }

    /// Atomic replace through the one private writer (0600 file, 0700 new directories): the file
    /// holds fake but working secrets.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let bytes = serde_json::to_vec_pretty(self)?;
        crate::store::write_private_file(path, &bytes)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Drop grants that can no longer be used, so the state file does not grow forever.
    pub fn prune(&mut self, now: OffsetDateTime) {
        let grace = time::Duration::hours(1);
        self.device_codes.retain(|d| d.expires + grace > now);
        self.auth_codes.retain(|c| c.expires + grace > now);
        self.refresh_tokens.retain(|r| r.expires > now);
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn user_of_kind(&self, kind: UserKind) -> Option<&User> {
        self.users.iter().find(|u| u.kind == kind)
    }

    /// The template IDs of the directory roles the user holds.
    pub fn role_templates(&self, user_id: &str) -> Vec<String> {
        self.roles
            .iter()
            .filter(|r| r.members.iter().any(|m| m == user_id))
            .map(|r| r.template_id.clone())
            .collect()
    }

    pub fn app_by_app_id(&self, app_id: &str) -> Option<&Application> {
        self.applications
            .iter()
            .find(|a| a.app_id.eq_ignore_ascii_case(app_id))
    }

    pub fn app_by_app_id_mut(&mut self, app_id: &str) -> Option<&mut Application> {
        self.applications
            .iter_mut()
            .find(|a| a.app_id.eq_ignore_ascii_case(app_id))
    }

    pub fn sp_by_app_id(&self, app_id: &str) -> Option<&ServicePrincipal> {
        self.service_principals
            .iter()
            .find(|s| s.app_id.eq_ignore_ascii_case(app_id))
    }

    pub fn admin_agents(&self) -> Option<&Group> {
        self.groups.iter().find(|g| g.display_name == ADMIN_AGENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_state_file_gains_the_application_administrator() {
        let mut d = Data::seed();
        d.users.retain(|u| u.kind != UserKind::AppAdmin);
        d.roles
            .retain(|r| r.template_id != APPLICATION_ADMIN_TEMPLATE);
        d.version = 1;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        d.save(&path).unwrap();
        let d = Data::load(&path).unwrap().unwrap();
        let app_admin = d.user_of_kind(UserKind::AppAdmin).unwrap();
        assert_eq!(
            d.role_templates(&app_admin.id),
            vec![APPLICATION_ADMIN_TEMPLATE]
        );
    }

    #[test]
    fn secrets_look_like_entra_secrets() {
        let s = new_client_secret();
        assert_eq!(s.len(), 40);
        assert_eq!(&s[4..6], "Q~");
    }

    #[test]
    fn seed_is_a_csp_tenant_with_the_four_kinds_of_user() {
        let d = Data::seed();
        assert!(d.sp_by_app_id(PARTNER_CENTER_APP_ID).is_some());
        let agent = d.user_of_kind(UserKind::AdminAgent).unwrap();
        assert!(d.admin_agents().unwrap().members.contains(&agent.id));
        assert!(d.role_templates(&agent.id).is_empty());
        let app_admin = d.user_of_kind(UserKind::AppAdmin).unwrap();
        assert_eq!(
            d.role_templates(&app_admin.id),
            vec![APPLICATION_ADMIN_TEMPLATE]
        );
        assert!(!d.admin_agents().unwrap().members.contains(&app_admin.id));
        assert!(d.app_by_app_id(&d.automation_app_id).is_some());
    }
}

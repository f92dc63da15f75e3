//! One signed-in session: the endpoints, the one HTTP client, a Graph client, and the first round
//! of reads (account, directory roles, CSP check, policy) that the plan is built from.

use super::plan::{Account, PolicyState, Roles};
use crate::cloud::Endpoints;
use crate::partner_center::{ApiError, Graph, HttpClient};
use crate::secret::Secret;
use anyhow::Context as _;
use futures_util::future::BoxFuture;

/// How the admin signs in. The terminal implements it (browser, device code, a given token, an
/// automation identity); the core only asks for the Graph token.
pub trait SignIn: Send + Sync {
    fn graph_token<'a>(
        &'a self,
        http: &'a HttpClient,
        ep: &'a Endpoints,
        tenant: Option<&'a str>,
    ) -> BoxFuture<'a, anyhow::Result<Secret>>;

    /// An automation identity (App-only token): there is no user and no directory role to read.
    fn app_only(&self) -> bool;
}

pub struct Session {
    pub ep: Endpoints,
    pub http: HttpClient,
    pub graph: Graph,
    app_only: bool,
}

impl Session {
    /// Sign in to `tenant` (or `organizations`) and set up Graph.
    pub async fn open(
        ep: Endpoints,
        http: HttpClient,
        sign_in: &dyn SignIn,
        tenant: Option<&str>,
    ) -> anyhow::Result<Session> {
        let token = sign_in.graph_token(&http, &ep, tenant).await?;
        let graph = Graph::new(http.clone(), &ep, token);
        Ok(Session {
            ep,
            http,
            graph,
            app_only: sign_in.app_only(),
        })
    }

    /// The first round of reads, in parallel: who signed in, the tenant, the user's roles and
    /// groups, the Partner Center service principal, and the lifetime policy. `tenant`: the one
    /// asked for, which stands when an automation identity may not read the organization.
    pub async fn survey(&self, tenant: Option<&str>) -> anyhow::Result<Account> {
        let g = &self.graph;
        if self.app_only {
            let (org, pc_sp, policy) = tokio::join!(
                g.organization(),
                g.partner_center_service_principal(),
                g.default_app_management_policy()
            );
            // Reading the organization needs Organization.Read.All, which an automation identity
            // made for app management often lacks: the tenant given with --tenant then stands.
            let (tenant_id, tenant_name) = match org {
                Ok(o) => (o.id, o.display_name),
                Err(_) => (tenant.unwrap_or_default().to_string(), None),
            };
            return Ok(Account {
                user: None,
                tenant_id,
                tenant_name,
                roles: Roles {
                    app_only: true,
                    ..Roles::default()
                },
                partner_center_sp: pc_sp
                    .context("looking for the Partner Center service principal")?
                    .is_some(),
                policy: policy_state(policy),
            });
        }
        let (me, org, member_of, pc_sp, policy) = tokio::join!(
            g.me(),
            g.organization(),
            g.member_of(),
            g.partner_center_service_principal(),
            g.default_app_management_policy(),
        );
        let me = me.context("reading the signed-in user")?;
        let org = org.context("reading the tenant")?;
        let member_of = member_of.context("reading the user's roles and groups")?;
        Ok(Account {
            user: Some(me.user_principal_name),
            tenant_id: org.id,
            tenant_name: org.display_name,
            roles: Roles::from_member_of(&member_of),
            partner_center_sp: pc_sp
                .context("looking for the Partner Center service principal")?
                .is_some(),
            policy: policy_state(policy),
        })
    }

    /// The lifetime policy alone (a rotation reads it only when Graph refuses a lifetime).
    pub async fn read_policy(&self) -> PolicyState {
        policy_state(self.graph.default_app_management_policy().await)
    }
}

/// A refused or failed policy read is "policy unknown", never "no policy": Graph still enforces it.
fn policy_state(read: Result<crate::partner_center::LifetimePolicy, ApiError>) -> PolicyState {
    match read {
        Ok(p) => PolicyState::Known(p),
        Err(e) if e.status == Some(403) => PolicyState::Unknown(
            "refused: reading it needs the delegated permission Policy.Read.All".into(),
        ),
        Err(e) => PolicyState::Unknown(format!(
            "could not be read ({})",
            e.graph_code
                .clone()
                .or(e.status.map(|s| format!("HTTP {s}")))
                .unwrap_or_else(|| "no answer".into())
        )),
    }
}

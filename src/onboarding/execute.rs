//! Carrying out a checked plan: the web app, its service principal and AdminAgents membership,
//! then the key (through `keys`), recording each step so an interrupted run converges.

use super::keys::{Engine, Outcome, Retired, Retirement};
use super::plan::{Action, Lifetime, Plan, PolicyState, Way};
use super::session::Session;
use super::{APP_MANAGEMENT, Observer};
use crate::exit::{Exit, UserError};
use crate::partner_center::{ADMIN_AGENTS_GROUP, Application, Graph, Membership};
use crate::store::{MetaStore, Profile, Secrets};
use anyhow::Context as _;
use time::{Duration, OffsetDateTime};

/// Where the run records what it makes.
pub struct Target<'a> {
    pub profile: &'a str,
    pub data_dir: &'a std::path::Path,
    pub meta: &'a MetaStore,
    pub secrets: &'a Secrets,
}

/// What the admin chose that the plan does not carry.
pub struct Answers {
    pub commerce_id: Option<String>,
    pub verify: crate::partner_center::VerifyOptions,
}

/// Run a create or add-key plan (checked by the caller). Returns the profile and the result's
/// action name (`created`, `key_added`).
pub async fn onboard(
    s: &Session,
    obs: &dyn Observer,
    plan: &Plan,
    policy: &mut PolicyState,
    t: &Target<'_>,
    existing: Option<Profile>,
    answers: Answers,
) -> anyhow::Result<(Profile, &'static str)> {
    let g = &s.graph;
    if plan.runs(Action::CreatePartnerCenterSp) {
        let spin = obs.progress("Creating Partner Center's service principal in the tenant…");
        let made = g.create_partner_center_service_principal().await;
        drop(spin);
        if let Err(e) = made {
            // Nothing else is written: an app in a tenant Partner Center does not know is no use.
            return Err(UserError::new(
                match e.exit() {
                    Exit::Unreachable => Exit::Unreachable,
                    _ => Exit::Permission,
                },
                format!(
                    "tenant {} is probably not a CSP partner tenant: it has no Partner Center service principal ({}), and creating one failed ({e})",
                    plan.tenant_id,
                    crate::cloud::PARTNER_CENTER_APP_ID
                ),
            )
            .hint("sign in to your partner tenant (the one enrolled in the Cloud Solution Provider program), not a customer tenant; nothing was changed")
            .into());
        }
        obs.done("Partner Center's service principal is in the tenant");
    }
    let marker = AppMarker::path(t.data_dir, t.profile);
    let (app_id, object_id, app_name, created) = match &plan.way {
        Way::Create {
            adopted: Some(app), ..
        } => {
            obs.done(&format!(
                "Reusing the web app '{}' (App ID {}) that an interrupted run created",
                app.display_name.as_deref().unwrap_or(""),
                app.app_id
            ));
            (
                app.app_id.clone(),
                app.id.clone(),
                app.display_name.clone(),
                true,
            )
        }
        Way::Create {
            name,
            adopted: None,
        } => {
            warn_if_name_taken(obs, g, name).await;
            // Recorded before the call: if its response is lost, the next run finds the app by name.
            AppMarker {
                display_name: name.clone(),
                started_at: OffsetDateTime::now_utc(),
            }
            .save(&marker)?;
            let spin = obs.progress("Creating the web app…");
            let app = g
                .create_application(name)
                .await
                .context("creating the web app")?;
            drop(spin);
            obs.done(&format!(
                "Created the web app '{name}' (App ID {})",
                app.app_id
            ));
            (app.app_id, app.id, Some(name.clone()), true)
        }
        Way::Existing { app, ours } => {
            obs.done(&format!(
                "Using the web app '{}' (App ID {})",
                app.display_name.as_deref().unwrap_or("unnamed"),
                app.app_id
            ));
            (
                app.app_id.clone(),
                app.id.clone(),
                app.display_name.clone(),
                *ours,
            )
        }
        Way::Capture { .. } | Way::Rotate { .. } => {
            unreachable!("capture and rotation are not onboarding plans")
        }
    };
    // Record the app at once, so that an interrupted run reuses it instead of creating another.
    let new_profile = existing.is_none();
    let mut p = existing.unwrap_or_else(|| {
        let mut p = Profile::new(
            t.profile,
            s.ep.cloud,
            &plan.tenant_id,
            &app_id,
            t.secrets.kind(),
        );
        p.app_display_name = app_name.clone().filter(|_| created);
        p
    });
    p.commerce_id = answers.commerce_id;
    p.app_object_id = Some(object_id.clone());
    t.meta.save(&p)?;
    let _ = std::fs::remove_file(&marker);

    let add_to_group = plan.runs(Action::AddToAdminAgents);
    if plan.runs(Action::CreateServicePrincipal) {
        let spin = obs.progress("Creating the service principal (waiting for replication)…");
        // The AdminAgents lookup depends on nothing just created: it runs beside the SP creation.
        let (sp, group) = tokio::join!(g.create_service_principal(&app_id), async {
            if add_to_group {
                Some(g.find_group(ADMIN_AGENTS_GROUP).await)
            } else {
                None
            }
        });
        drop(spin);
        let sp = sp.context("creating the app's service principal")?;
        obs.done("Service principal ready");
        add_to_admin_agents(g, obs, group, &sp.id).await?;
    }
    for (step, why) in plan.skipped() {
        obs.warn(&format!("Skipped: {}. {why}.", step.does));
    }

    let engine = Engine {
        obs,
        http: &s.http,
        ep: &s.ep,
        graph: g,
        secrets: t.secrets,
        meta: t.meta,
        verify: answers.verify,
    };
    let lifetime = plan.lifetime.unwrap_or(Lifetime {
        days: 365,
        explicit: false,
    });
    let added =
        replace_key_within_policy(&engine, s, &mut p, lifetime, policy, &Retirement::default())
            .await;
    if let Err(e) = added {
        // A key refused outright on an app this run did not make (not its owner, say): nothing
        // was written, so no profile is left behind either. A made app keeps its profile, so
        // that the next run reuses it.
        if new_profile && !created && p.pending.is_none() && p.key_id.is_none() {
            t.meta.delete(&p.profile)?;
        }
        return Err(not_allowed_to_add_key(e, &p));
    }
    Ok((p, if created { "created" } else { "key_added" }))
}

async fn add_to_admin_agents(
    g: &Graph,
    obs: &dyn Observer,
    group: Option<Result<Option<String>, crate::partner_center::ApiError>>,
    sp_id: &str,
) -> anyhow::Result<()> {
    match group
        .transpose()
        .context("looking up the AdminAgents group")?
    {
        Some(Some(gid)) => {
            let spin = obs.progress("Adding the app to AdminAgents…");
            let m = g
                .add_group_member(&gid, sp_id)
                .await
                .context("adding the app to AdminAgents")?;
            drop(spin);
            obs.done(match m {
                Membership::Added => "Added the app to AdminAgents",
                Membership::AlreadyMember => "The app is already in AdminAgents",
            });
        }
        Some(None) => {
            obs.warn("No AdminAgents group in this tenant; skipped the pre-consent step.")
        }
        None => {}
    }
    Ok(())
}

/// Graph refused the key for its lifetime (`CredentialInvalidLifetimeAsPerAppPolicy`); nothing
/// was created.
pub fn lifetime_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::partner_center::ApiError>()
            .is_some_and(|a| a.is_graph_code("CredentialInvalidLifetimeAsPerAppPolicy"))
    })
}

/// Add a key of `lifetime`; when Graph refuses that lifetime, learn the policy's limit (read it
/// if it is not known yet) and make the longest key allowed, unless the admin asked for that
/// lifetime. When the limit stays unknown, the observer may supply a shorter one (the wizard
/// asks); otherwise exit 5 naming `--secret-days`.
pub async fn replace_key_within_policy(
    engine: &Engine<'_>,
    s: &Session,
    p: &mut Profile,
    lifetime: Lifetime,
    policy: &mut PolicyState,
    retirement: &Retirement,
) -> anyhow::Result<(Outcome, Retired)> {
    let mut days = lifetime.days;
    let mut explicit = lifetime.explicit;
    // Read once, when a refusal makes it matter; a read already refused is not repeated.
    let mut policy_read = !matches!(policy, PolicyState::NotRead);
    loop {
        let end = crate::input::days_from_now(days, "the key lifetime")?;
        let e = match engine.replace_key(p, end, retirement).await {
            Ok(done) => return Ok(done),
            Err(e) if lifetime_refused(&e) => e,
            Err(e) => return Err(e),
        };
        if !policy_read {
            *policy = s.read_policy().await;
            policy_read = true;
        }
        let shorter = match policy.max_days() {
            Some(m) if m < days && explicit => {
                return Err(UserError::new(
                    Exit::Policy,
                    format!("the tenant's policy caps secret lifetime at {m} days; a key of {days} days was refused"),
                )
                .hint(format!("pass --secret-days {m} (or less)"))
                .into());
            }
            Some(m) if m < days => Some(m),
            _ => engine.obs.shorter_lifetime(days)?,
        };
        let Some(shorter) = shorter.filter(|d| *d >= 1 && *d < days) else {
            return Err(anyhow::Error::new(refused_unknown_limit(days, policy)).context(e));
        };
        engine.obs.info(&format!(
            "The tenant's policy refuses a key of {days} days; making a key of {shorter} days instead."
        ));
        days = shorter;
        explicit = true;
    }
}

/// The lifetime was refused and the policy does not say what it allows.
fn refused_unknown_limit(days: i64, policy: &PolicyState) -> UserError {
    let why = match policy {
        PolicyState::Unknown(_) | PolicyState::NotRead => {
            "and the policy's limit could not be read (reading it needs Policy.Read.All)"
        }
        PolicyState::Known(_) => {
            "although the tenant's default policy allows it (this app has its own)"
        }
    };
    UserError::new(
        Exit::Policy,
        format!("a tenant policy refuses a secret lifetime of {days} days, {why}"),
    )
    .hint(format!(
        "pass a shorter lifetime with --secret-days N (less than {days}; for example --secret-days {}), or ask an admin for the policy's limit",
        (days / 2).max(1)
    ))
}

/// A rotation Graph refused for lack of rights (not the app's owner, no app-admin role):
/// explain App management's "Add key" and the capture that replaces the stored key.
pub fn not_allowed_to_add_key(e: anyhow::Error, p: &Profile) -> anyhow::Error {
    let denied = e.chain().any(|c| {
        c.downcast_ref::<crate::partner_center::ApiError>()
            .is_some_and(|a| a.is_graph_code("Authorization_RequestDenied"))
    });
    if !denied {
        return e;
    }
    UserError::new(
        Exit::Permission,
        format!(
            "this account may not add a key to app {}: Microsoft requires the app's owner or a Global / Application / Cloud Application Administrator. Nothing was changed",
            p.app_id
        ),
    )
    .hint(format!(
        "in {APP_MANAGEMENT} ({}) choose \"Add key\" for this app, then capture it: printf '%s\\n' \"$SECRET\" | csp-onboard init --profile {} --app-id {} --app-secret-stdin (the new key replaces the stored one once it is verified)",
        crate::partner_center::APP_MANAGEMENT_URL,
        p.profile,
        p.app_id
    ))
    .into()
}

/// "An app is being created for this profile": written before `POST /applications`, removed once
/// the profile records the app. Holds no secret.
#[derive(serde::Serialize, serde::Deserialize)]
struct AppMarker {
    display_name: String,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
}

impl AppMarker {
    fn path(data_dir: &std::path::Path, profile: &str) -> std::path::PathBuf {
        data_dir.join("pending").join(format!("{profile}.app.json"))
    }

    fn load(path: &std::path::Path) -> Option<AppMarker> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn save(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let dir = path.parent().expect("a file in a directory");
        crate::store::ensure_private_dir(dir)
            .and_then(|()| crate::store::write_private_file(path, &serde_json::to_vec(self)?))
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The app an interrupted run created but never recorded: same name, created since the run
/// started (with slack for clock skew), and no keys yet. Adopted only when exactly one matches.
/// Read only when such a run left its marker.
pub async fn unrecorded_app(
    s: &Session,
    obs: &dyn Observer,
    data_dir: &std::path::Path,
    profile: &str,
) -> anyhow::Result<Option<Application>> {
    let Some(m) = AppMarker::load(&AppMarker::path(data_dir, profile)) else {
        return Ok(None);
    };
    let since = m.started_at - Duration::minutes(10);
    let mut candidates: Vec<_> = s
        .graph
        .find_applications_by_name(&m.display_name)
        .await
        .context("looking for the app an interrupted run created")?
        .into_iter()
        .filter(|a| a.password_credentials.is_empty() && a.created.is_some_and(|c| c >= since))
        .collect();
    if candidates.len() == 1 {
        return Ok(candidates.pop());
    }
    if candidates.len() > 1 {
        obs.warn(&format!(
            "{} apps named '{}' were created recently; creating a new one rather than guessing",
            candidates.len(),
            m.display_name
        ));
    }
    Ok(None)
}

/// Two apps of one name are told apart only by their GUIDs, in the portal and in consent
/// prompts: say so before creating the second, and how to reuse the first instead.
async fn warn_if_name_taken(obs: &dyn Observer, g: &crate::partner_center::Graph, name: &str) {
    // Only a warning depends on this read: a Graph that fails it must not stop the onboarding.
    let same = match g.find_applications_by_name(name).await {
        Ok(same) => same,
        Err(e) => {
            obs.warn(&format!(
                "Could not check for other apps named '{name}' ({e}); creating the web app anyway."
            ));
            return;
        }
    };
    if !same.is_empty() {
        let ids: Vec<&str> = same.iter().map(|a| a.app_id.as_str()).collect();
        obs.warn(&format!(
            "The tenant already has an app named '{name}' (App ID {}). Creating another one of \
             the same name; to add a key to an existing app instead, run init with --app-id \
             <App ID>, or choose another name with --app-name.",
            ids.join(", ")
        ));
    }
}

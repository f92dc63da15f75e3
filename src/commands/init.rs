//! `init`: the onboarding wizard. Three ways in (create, use existing, capture), one plan, and re-running rotates.

use super::{Ctx, print_json, profile_json};
use crate::cli::InitArgs;
use crate::cloud::{Endpoints, PARTNER_CENTER_APP_ID};
use crate::exit::{Exit, UserError};
use crate::partner_center::verify::VerifyOptions;
use crate::partner_center::{Graph, LifetimePolicy, Membership};
use crate::rotation::{self, Engine};
use crate::signin::{self, ENV_APP_SECRET};
use crate::store::{Profile, Secrets, Slot};
use anyhow::Context as _;
use time::{Duration, OffsetDateTime};

use crate::partner_center::ADMIN_AGENTS_GROUP as ADMIN_AGENTS;
const DEFAULT_APP_NAME: &str = "Partner Center web app (csp-onboard)";
const COMMERCE_ID_WHERE: &str =
    "Partner Center > Account settings > App management, next to the App ID";

#[derive(Debug, Clone, PartialEq, Eq)]
enum WayIn {
    Create,
    Existing(String),
    Capture,
}

pub async fn run(ctx: &mut Ctx, args: InitArgs) -> anyhow::Result<Exit> {
    validate_flags(&args)?;
    let _lock = ctx.meta.lock(&ctx.profile)?;
    let existing = ctx.meta.load(&ctx.profile)?;
    let cloud = ctx.cloud(existing.as_ref())?;
    if let Some(p) = existing.as_ref()
        && p.holds_key()
    {
        // Re-running rotates this profile's key; another app, or a captured secret, is another profile.
        let capture = args.app_secret_stdin
            || std::env::var(ENV_APP_SECRET).is_ok_and(|v| !v.trim().is_empty());
        let other_app = args
            .app_id
            .as_deref()
            .is_some_and(|a| !a.eq_ignore_ascii_case(&p.app_id));
        if other_app || capture {
            return Err(UserError::usage(format!(
                "profile '{}' already holds a key for app {}; re-running init rotates it",
                p.profile, p.app_id
            ))
            .hint("use --profile NEW for another app or a captured secret, or `csp-onboard remove` first")
            .into());
        }
        if let Some(c) = &args.commerce_id {
            // Adding or correcting the Commerce ID (copied from the portal) is all this run does:
            // it must not also rotate a key some tool may be using.
            let c = c.trim().to_lowercase();
            let mut updated = p.clone();
            updated.commerce_id = Some(c.clone());
            if args.dry_run {
                ctx.ui.info(format!(
                    "Dry run: would record the Commerce ID {c}; nothing else."
                ));
            } else {
                updated.updated_at = OffsetDateTime::now_utc();
                ctx.meta.save(&updated)?;
                ctx.ui.done(format!(
                    "Commerce ID recorded: {c} (the key was not rotated)"
                ));
            }
            let mut doc = profile_json(&updated);
            doc["ok"] = true.into();
            doc["action"] = "commerce_id_updated".into();
            doc["dry_run"] = args.dry_run.into();
            print_json(&ctx.ui, &doc);
            return Ok(Exit::Success);
        }
        if args.billing && !args.dry_run {
            // Adding billing access to an onboarded app is all this run does.
            return super::billing_access::add_to_existing(ctx, p.clone(), &args.sign_in).await;
        }
        if ctx.ui.interactive {
            // The facts on their own line: a prompt wider than the terminal wraps, and
            // dialoguer then leaves a stale copy of its first line on screen.
            ctx.ui.always(format!(
                "Profile '{}' already holds a key for app {}{}.",
                p.profile,
                p.app_id,
                p.secret_expires
                    .map(|e| format!(" (expires {})", e.date()))
                    .unwrap_or_default()
            ));
            if !ctx.ui.confirm("Rotate it now?", true)? {
                ctx.ui.info("Nothing changed.");
                print_json(
                    &ctx.ui,
                    &serde_json::json!({"ok": true, "action": "none", "profile": profile_json(p)}),
                );
                return Ok(Exit::Success);
            }
        } else {
            ctx.ui
                .info(format!("Profile '{}' exists: rotating its key.", p.profile));
        }
        let req = super::rotate::Request {
            sign_in: &args.sign_in,
            retirement: crate::rotation::Retirement {
                keep_old: args.keep_old,
                overlap_days: None,
            },
            years: args.secret_years,
            verify_timeout: args.verify_timeout,
            dry_run: args.dry_run,
        };
        return super::rotate::rotate_profile(ctx, p.clone(), &req).await;
    }

    ctx.ui.heading(format!(
        "csp-onboard init · profile '{}' · {} cloud",
        ctx.profile,
        cloud.as_str()
    ));
    let way = choose_way(ctx, &args, existing.as_ref())?;
    let ep = ctx.endpoints(cloud).await?;
    // Open the store first: finding a locked keychain after creating a key helps nobody.
    let secrets = ctx.secrets(cloud, existing.as_ref()).await?;
    match way {
        WayIn::Capture if args.dry_run => {
            ctx.ui
                .heading("Dry run: nothing was changed. Capturing would:");
            let tenant = args.sign_in.tenant.as_deref().unwrap_or("<tenant>");
            let mut steps = vec![
                "read the app's secret value (stdin, CSP_ONBOARD_APP_SECRET or a hidden prompt)"
                    .to_string(),
            ];
            steps.extend(rotation::verification_plan(&ep, tenant));
            steps.push(format!(
                "store the secret in {}",
                secrets.describe(&ctx.profile)
            ));
            for (i, s) in steps.iter().enumerate() {
                ctx.ui.info(format!("  {}. {s}", i + 1));
            }
            print_json(
                &ctx.ui,
                &serde_json::json!({"ok": true, "dry_run": true, "action": "capture", "plan": steps}),
            );
            Ok(Exit::Success)
        }
        WayIn::Capture => {
            let exit = capture(ctx, &args, &ep, &secrets).await?;
            match ctx.meta.load(&ctx.profile)? {
                // A captured app gets billing access with an admin sign-in, like an existing profile.
                Some(p) if args.billing && exit == Exit::Success => {
                    super::billing_access::add_to_existing(ctx, p, &args.sign_in).await
                }
                _ => Ok(exit),
            }
        }
        way => onboard(ctx, &args, &ep, &secrets, way, existing).await,
    }
}

fn validate_flags(args: &InitArgs) -> Result<(), UserError> {
    for (flag, v) in [
        ("--app-id", &args.app_id),
        ("--commerce-id", &args.commerce_id),
    ] {
        if let Some(v) = v {
            validate_guid(v).map_err(|m| UserError::usage(format!("{flag}: {m}")))?;
        }
    }
    if let Some(t) = &args.sign_in.tenant {
        signin::validate_tenant(t).map_err(|m| UserError::usage(format!("--tenant: {m}")))?;
    }
    if args.app_secret_stdin && args.app_id.is_none() {
        return Err(UserError::usage(
            "--app-secret-stdin captures an existing app and needs its --app-id",
        )
        .hint("pass --app-id with the App ID shown in Partner Center > App management"));
    }
    let stdin_flags = [
        args.app_secret_stdin,
        args.sign_in.client_secret_stdin,
        args.sign_in.access_token_stdin,
    ];
    if stdin_flags.iter().filter(|f| **f).count() > 1 {
        return Err(UserError::usage("only one of --app-secret-stdin, --client-secret-stdin and --access-token-stdin can read stdin")
            .hint("pass the other secret through its environment variable"));
    }
    Ok(())
}

pub fn validate_guid(v: &str) -> Result<(), String> {
    uuid::Uuid::try_parse(v.trim())
        .map(|_| ())
        .map_err(|_| format!("'{v}' is not a GUID (like 3f2504e0-4f89-11d3-9a0c-0305e82c3301)"))
}

/// A pasted secret value; a GUID here is nearly always the secret's ID copied by mistake.
fn validate_secret_value(v: &str) -> Result<(), String> {
    if uuid::Uuid::try_parse(v.trim()).is_ok() {
        return Err("that looks like the secret's ID; paste its Value".into());
    }
    if v.trim().len() < 8 {
        return Err("too short for a client secret; paste its Value".into());
    }
    Ok(())
}

fn choose_way(ctx: &Ctx, args: &InitArgs, existing: Option<&Profile>) -> anyhow::Result<WayIn> {
    let app_secret_in_env = std::env::var(ENV_APP_SECRET).is_ok_and(|v| !v.trim().is_empty());
    if let Some(app) = &args.app_id {
        if args.app_secret_stdin || app_secret_in_env {
            return Ok(WayIn::Capture);
        }
        return Ok(WayIn::Existing(app.clone()));
    }
    if let Some(p) = existing {
        // A run that created the app but stopped before its key: never create a second app.
        return Ok(WayIn::Existing(p.app_id.clone()));
    }
    if !ctx.ui.interactive {
        return Ok(WayIn::Create);
    }
    let choice = ctx.ui.select(
        "How do you want to set up the Partner Center web app?",
        &[
            "Create a new web app (recommended)",
            "Use an existing web app (add a new key to it)",
            "Capture an app and key made in the Partner Center portal (no sign-in)",
        ],
        0,
        "--app-id",
    )?;
    Ok(match choice {
        0 => WayIn::Create,
        1 => {
            let app = ctx.ui.input(
                "App ID of the existing web app",
                None,
                "--app-id",
                validate_guid,
            )?;
            WayIn::Existing(app)
        }
        _ => WayIn::Capture,
    })
}

fn ask_commerce_id(ctx: &Ctx, args: &InitArgs) -> anyhow::Result<Option<String>> {
    if let Some(c) = &args.commerce_id {
        return Ok(Some(c.trim().to_lowercase()));
    }
    // Short prompt, so that a GUID typed after it fits in 80 columns: where the input wraps,
    // dialoguer's redraw after a validation error leaves a stale line behind.
    if ctx.ui.interactive {
        ctx.ui
            .info(format!("The Commerce ID is shown in {COMMERCE_ID_WHERE}."));
    }
    let v = ctx
        .ui
        .input_optional("Commerce ID (optional, Enter to skip)", validate_guid)?;
    Ok(v.map(|c| c.to_lowercase()))
}

pub fn verify_options(timeout_secs: u64) -> VerifyOptions {
    VerifyOptions {
        budget: std::time::Duration::from_secs(timeout_secs),
        ..VerifyOptions::default()
    }
}

/// A pasted secret was usually made a while ago, and a wrong one would otherwise keep the admin
/// waiting the whole propagation window: a shorter window, still long enough for a fresh key.
fn capture_verify_options(timeout_secs: u64) -> VerifyOptions {
    VerifyOptions {
        app_is_new: false,
        ..verify_options(timeout_secs.min(90))
    }
}

/// Capture: an app and key made in the portal. No admin sign-in; prove the secret, store it.
async fn capture(
    ctx: &mut Ctx,
    args: &InitArgs,
    ep: &Endpoints,
    secrets: &Secrets,
) -> anyhow::Result<Exit> {
    let tenant = match &args.sign_in.tenant {
        Some(t) => t.clone(),
        None => ctx.ui.input(
            "Partner tenant (tenant ID or domain)",
            ctx.emulator_tenant().as_deref(),
            "--tenant",
            signin::validate_tenant,
        )?,
    };
    let app_id = match &args.app_id {
        Some(a) => a.trim().to_lowercase(),
        None => ctx.ui.input(
            "App ID (from App management)",
            None,
            "--app-id",
            validate_guid,
        )?,
    };
    let commerce_id = ask_commerce_id(ctx, args)?;
    let secret = signin::secret_input(
        &ctx.ui,
        "the app's secret value",
        args.app_secret_stdin,
        ENV_APP_SECRET,
        "--app-secret-stdin",
        validate_secret_value,
    )?;
    let http = ctx.http()?;
    rotation::verify(
        &ctx.ui,
        &http,
        ep,
        &tenant,
        &app_id,
        &secret,
        &capture_verify_options(args.verify_timeout),
    )
    .await?;
    let mut p = Profile::new(&ctx.profile, ep.cloud, &tenant, &app_id, secrets.kind());
    p.commerce_id = commerce_id;
    p.secret_hint = Some(secret.hint());
    p.verified_at = Some(p.created_at);
    secrets
        .set(&p.profile, Slot::Current, &secret)
        .await
        .context("storing the secret")?;
    ctx.meta.save(&p)?;
    ctx.ui.done(format!(
        "Stored the secret in {}",
        secrets.describe(&p.profile)
    ));
    summary(ctx, &p, secrets, "captured");
    Ok(Exit::Success)
}

struct Account {
    tenant_id: String,
    policy: Option<LifetimePolicy>,
}

/// Who signed in, which tenant, admin role, CSP tenant, lifetime policy: independent reads, in parallel.
async fn check_account(ctx: &Ctx, graph: &Graph) -> anyhow::Result<Account> {
    let spin = ctx.ui.spinner("Checking the account and the tenant…");
    let (me, org, member_of, pc_sp, policy) = tokio::join!(
        graph.me(),
        graph.organization(),
        graph.member_of(),
        graph.partner_center_service_principal(),
        graph.default_app_management_policy(),
    );
    spin.finish();
    let me = me.context("reading the signed-in user")?;
    let org = org.context("reading the tenant")?;
    let tenant_name = org.display_name.clone();
    ctx.ui.done(format!(
        "Account: {} in {} ({})",
        me.user_principal_name,
        tenant_name.as_deref().unwrap_or("the tenant"),
        org.id
    ));
    let member_of = member_of.context("reading the user's roles and groups")?;
    let global_admin = member_of.iter().any(|o| o.is_global_admin_role());
    let admin_agent = member_of.iter().any(|o| o.is_admin_agents_group());
    if !global_admin && !admin_agent {
        return Err(UserError::new(
            Exit::Permission,
            format!(
                "{} is neither a Global Administrator nor an Admin agent of this tenant",
                me.user_principal_name
            ),
        )
        .hint("sign in as a Global Administrator, or as a member of the AdminAgents group (Admin agent role in Partner Center)")
        .into());
    }
    ctx.ui.done(if global_admin {
        "Role: Global Administrator"
    } else {
        "Role: Admin agent"
    });
    if pc_sp
        .context("looking for the Partner Center service principal")?
        .is_none()
    {
        return Err(UserError::new(
            Exit::Permission,
            format!("tenant {} is not a CSP partner tenant: it has no Partner Center service principal ({PARTNER_CENTER_APP_ID})", org.id),
        )
        .hint("sign in to your partner tenant (the one enrolled in the Cloud Solution Provider program), not a customer tenant")
        .into());
    }
    ctx.ui
        .done("CSP partner tenant (Partner Center is present)");
    let policy = super::rotate::usable_policy(&ctx.ui, policy);
    Ok(Account {
        tenant_id: org.id,
        policy,
    })
}

/// The key lifetime in days: the flag, or a choice among those the policy allows.
fn choose_lifetime(
    ctx: &Ctx,
    years_flag: Option<u8>,
    policy: Option<&LifetimePolicy>,
    new_app: bool,
) -> anyhow::Result<i64> {
    // For a new app the tenant default is the whole story: stop before creating anything.
    // An existing app may be exempt (own policy, or created before the restriction): Graph decides.
    if policy.is_some_and(|p| p.passwords_blocked) && !new_app {
        ctx.ui.warn("The tenant's default policy blocks new secrets; trying anyway, since this app may be exempt.");
    } else if policy.is_some_and(|p| p.passwords_blocked) {
        return Err(UserError::new(Exit::Policy, "the tenant's app management policy does not allow client secrets")
            .hint("ask a Global Administrator to allow password credentials for this app (Entra ID > App management policies), or use a certificate-based tool")
            .into());
    }
    let max_days = policy
        .and_then(|p| p.max_password_lifetime_days)
        .map(i64::from);
    let allowed: Vec<u8> = [1u8, 2]
        .into_iter()
        .filter(|y| max_days.is_none_or(|m| i64::from(*y) * 365 <= m))
        .collect();
    if let Some(y) = years_flag {
        if !allowed.contains(&y) {
            return Err(UserError::new(
                Exit::Policy,
                format!("the tenant's policy caps secret lifetime at {} days; {y} year(s) is not allowed", max_days.unwrap_or(0)),
            )
            .hint(match allowed.first() {
                Some(a) => format!("pass --secret-years {a}"),
                None => "ask a Global Administrator to raise the limit".into(),
            })
            .into());
        }
        return Ok(i64::from(y) * 365);
    }
    match (allowed.as_slice(), max_days) {
        ([], Some(m)) => {
            ctx.ui.warn(format!(
                "The tenant's policy caps secret lifetime at {m} days; the key will last {m} days."
            ));
            Ok(m)
        }
        ([only], _) => {
            if max_days.is_some() {
                ctx.ui
                    .info("The tenant's policy allows keys of at most 1 year.");
            }
            Ok(i64::from(*only) * 365)
        }
        _ if ctx.ui.interactive => {
            let i = ctx.ui.select(
                "How long should the key last?",
                &["1 year (recommended)", "2 years"],
                0,
                "--secret-years",
            )?;
            Ok(if i == 0 { 365 } else { 730 })
        }
        _ => Ok(365),
    }
}

async fn onboard(
    ctx: &mut Ctx,
    args: &InitArgs,
    ep: &Endpoints,
    secrets: &Secrets,
    way: WayIn,
    existing: Option<Profile>,
) -> anyhow::Result<Exit> {
    let http = ctx.http()?;
    let tenant_hint = args
        .sign_in
        .tenant
        .clone()
        .or_else(|| existing.as_ref().map(|p| p.tenant_id.clone()));
    let signed = signin::sign_in(&ctx.ui, &http, ep, &args.sign_in, tenant_hint.as_deref()).await?;
    let graph = Graph::new(http.clone(), ep, signed.graph_token.clone());
    let account = if matches!(args.sign_in.auth, Some(crate::cli::AuthArg::ClientSecret)) {
        app_identity_account(ctx, &graph, tenant_hint.as_deref().unwrap_or_default()).await?
    } else {
        check_account(ctx, &graph).await?
    };
    // A mistyped App ID should fail before any further question.
    let existing_app = match &way {
        WayIn::Existing(app_id) => {
            let spin = ctx.ui.spinner("Looking up the web app…");
            let app = graph
                .get_application(app_id)
                .await
                .context("looking up the web app")?;
            spin.finish();
            Some(app.ok_or_else(|| rotation::app_not_found(app_id, &account.tenant_id))?)
        }
        _ => None,
    };
    let days = choose_lifetime(
        ctx,
        args.secret_years,
        account.policy.as_ref(),
        way == WayIn::Create,
    )?;
    if args.dry_run {
        return Ok(dry_run(
            ctx,
            args,
            ep,
            &account,
            existing_app.as_ref(),
            days,
            secrets,
        ));
    }
    let commerce_id = match &existing {
        Some(p) if args.commerce_id.is_none() => p.commerce_id.clone(),
        _ => ask_commerce_id(ctx, args)?,
    };

    let marker = AppMarker::path(&ctx.data_dir, &ctx.profile);
    let adopted = match (&way, AppMarker::load(&marker)) {
        (WayIn::Create, Some(m)) => adopt_unrecorded_app(ctx, &graph, &m).await?,
        _ => None,
    };
    let (app_id, object_id, app_name, created) = match way {
        WayIn::Create if adopted.is_some() => {
            let app = adopted.expect("checked");
            ctx.ui.done(format!(
                "Reusing the web app '{}' (App ID {}) that an interrupted run created",
                app.display_name.as_deref().unwrap_or(""),
                app.app_id
            ));
            (app.app_id, app.id, app.display_name, true)
        }
        WayIn::Create => {
            let name = match &args.app_name {
                Some(n) => n.clone(),
                None if ctx.ui.interactive => ctx.ui.input(
                    "Name of the new web app",
                    Some(DEFAULT_APP_NAME),
                    "--app-name",
                    |v| {
                        if v.is_empty() || v.len() > 120 {
                            Err("give a name of 1 to 120 characters".into())
                        } else {
                            Ok(())
                        }
                    },
                )?,
                None => DEFAULT_APP_NAME.to_string(),
            };
            // Recorded before the call: if its response is lost, the next run finds the app by name.
            AppMarker {
                display_name: name.clone(),
                started_at: OffsetDateTime::now_utc(),
            }
            .save(&marker)?;
            let spin = ctx.ui.spinner("Creating the web app…");
            let app = graph
                .create_application(&name)
                .await
                .context("creating the web app")?;
            spin.finish();
            ctx.ui.done(format!(
                "Created the web app '{name}' (App ID {})",
                app.app_id
            ));
            (app.app_id, app.id, Some(name), true)
        }
        WayIn::Existing(_) => {
            let app = existing_app.expect("looked up for WayIn::Existing");
            ctx.ui.done(format!(
                "Using the web app '{}' (App ID {})",
                app.display_name.as_deref().unwrap_or("unnamed"),
                app.app_id
            ));
            let created = existing.as_ref().is_some_and(|p| {
                p.app_id.eq_ignore_ascii_case(&app.app_id) && p.app_display_name.is_some()
            });
            (app.app_id, app.id, app.display_name, created)
        }
        WayIn::Capture => unreachable!("handled by capture()"),
    };
    // Record the app at once, so that an interrupted run reuses it instead of creating another.
    let mut p = existing.unwrap_or_else(|| {
        let mut p = Profile::new(
            &ctx.profile,
            ep.cloud,
            &account.tenant_id,
            &app_id,
            secrets.kind(),
        );
        p.app_display_name = app_name.clone().filter(|_| created);
        p
    });
    p.commerce_id = commerce_id;
    p.app_object_id = Some(object_id.clone());
    ctx.meta.save(&p)?;
    let _ = std::fs::remove_file(&marker);

    let spin = ctx
        .ui
        .spinner("Creating the service principal (waiting for replication)…");
    // The AdminAgents lookup depends on nothing just created: it runs beside the SP creation.
    let (sp, group) = tokio::join!(graph.create_service_principal(&app_id), async {
        if created {
            Some(graph.find_group(ADMIN_AGENTS).await)
        } else {
            None
        }
    });
    spin.finish();
    let sp = sp.context("creating the app's service principal")?;
    ctx.ui.done("Service principal ready");
    match group
        .transpose()
        .context("looking up the AdminAgents group")?
    {
        Some(Some(gid)) => {
            let spin = ctx.ui.spinner("Adding the app to AdminAgents…");
            let m = graph
                .add_group_member(&gid, &sp.id)
                .await
                .context("adding the app to AdminAgents")?;
            spin.finish();
            ctx.ui.done(match m {
                Membership::Added => "Added the app to AdminAgents",
                Membership::AlreadyMember => "The app is already in AdminAgents",
            });
        }
        Some(None) => {
            ctx.ui
                .warn("No AdminAgents group in this tenant; skipped the pre-consent step.");
        }
        None => {}
    }

    let engine = Engine {
        ui: &ctx.ui,
        http: &http,
        ep,
        graph: &graph,
        secrets,
        meta: &ctx.meta,
        verify: verify_options(args.verify_timeout),
    };
    let end = crate::input::days_from_now(days, "the key lifetime")?;
    engine
        .replace_key(&mut p, end, &crate::rotation::Retirement::default())
        .await?;
    if args.billing {
        let secret = ctx.stored_secret(secrets, &p).await?;
        super::billing_access::grant(ctx, &http, ep, &signed.graph_token, &p, &secret).await?;
    }
    summary(
        ctx,
        &p,
        secrets,
        if created { "created" } else { "key_added" },
    );
    Ok(Exit::Success)
}

/// With an automation identity there is no user: the tenant comes from the organization.
async fn app_identity_account(ctx: &Ctx, graph: &Graph, tenant: &str) -> anyhow::Result<Account> {
    let (org, pc_sp, policy) = tokio::join!(
        graph.organization(),
        graph.partner_center_service_principal(),
        graph.default_app_management_policy()
    );
    // Reading the organization needs Organization.Read.All, which an automation identity
    // made for app management often lacks: the tenant given with --tenant then stands.
    let (tenant_id, tenant_name) = match org {
        Ok(o) => (o.id, o.display_name),
        Err(e) => {
            ctx.ui
                .detail(format!("could not read the organization: {e}"));
            (tenant.to_string(), None)
        }
    };
    if pc_sp
        .context("looking for the Partner Center service principal")?
        .is_none()
    {
        return Err(UserError::new(
            Exit::Permission,
            format!("tenant {tenant_id} is not a CSP partner tenant"),
        )
        .into());
    }
    ctx.ui.done(format!(
        "Tenant {}{tenant_id}",
        tenant_name
            .as_deref()
            .map(|n| format!("{n} "))
            .unwrap_or_default()
    ));
    Ok(Account {
        tenant_id,
        policy: super::rotate::usable_policy(&ctx.ui, policy),
    })
}

/// The summary and next steps (stderr), and the result document (stdout with --json).
pub fn summary(ctx: &Ctx, p: &Profile, secrets: &Secrets, action: &str) {
    let location = secrets.describe(&p.profile);
    let ui = &ctx.ui;
    ui.heading("Done. Your Partner Center web app:");
    ui.info(format!("  Tenant ID (Account ID)  {}", p.tenant_id));
    ui.info(format!("  App ID                  {}", p.app_id));
    match &p.commerce_id {
        Some(c) => ui.info(format!("  Commerce ID             {c}")),
        None => {
            ui.info("  Commerce ID             not given (see Partner Center > App management)")
        }
    }
    ui.info(format!(
        "  Secret                  {}…  (expires {})",
        p.secret_hint.as_deref().unwrap_or(""),
        p.secret_expires
            .map(|e| e.date().to_string())
            .unwrap_or_else(|| "unknown".into())
    ));
    ui.info(format!("  Stored in               {location}"));
    ui.heading("Next steps");
    for line in [
        "  • Microsoft Cost Management for partners (Azure portal, billing-account",
        "    scope) needs no secret.",
        "  • A third-party cost tool takes the tenant ID, App ID and secret, plus the",
        "    \"Billing account reader\" role: `csp-onboard show --reveal` (or --json)",
        "    hands them over.",
        "  • `csp-onboard check` proves the key still works; `csp-onboard rotate`",
        "    (or `init` again) replaces it before it expires.",
    ] {
        ui.info(line);
    }
    let mut doc = profile_json(p);
    doc["ok"] = true.into();
    doc["action"] = action.into();
    doc["store"] = p.store.as_str().into();
    doc["store_location"] = location.into();
    print_json(ui, &doc);
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
async fn adopt_unrecorded_app(
    ctx: &Ctx,
    graph: &Graph,
    m: &AppMarker,
) -> anyhow::Result<Option<crate::partner_center::Application>> {
    let since = m.started_at - Duration::minutes(10);
    let mut candidates: Vec<_> = graph
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
        ctx.ui.warn(format!(
            "{} apps named '{}' were created recently; creating a new one rather than guessing",
            candidates.len(),
            m.display_name
        ));
    }
    Ok(None)
}

/// `init --dry-run`: after the read-only checks, what onboarding would do to the tenant.
/// `existing_app`: the app to reuse (already looked up), or None to create one.
fn dry_run(
    ctx: &Ctx,
    args: &InitArgs,
    ep: &Endpoints,
    account: &Account,
    existing_app: Option<&crate::partner_center::Application>,
    days: i64,
    secrets: &Secrets,
) -> Exit {
    let g = format!("{}/v1.0", rotation::base(&ep.graph));
    let mut plan = Vec::new();
    let app_json = match existing_app {
        Some(app) => {
            plan.push(format!(
                "reuse the web app '{}' (App ID {})",
                app.display_name.as_deref().unwrap_or(""),
                app.app_id
            ));
            plan.push(format!(
                "POST {g}/servicePrincipals  (only if the app has none; 409 means it exists)"
            ));
            plan.push(format!(
                "POST {g}/applications/{}/addPassword  (a key ending in {days} days)",
                app.id
            ));
            serde_json::json!({"action": "reuse", "app_id": app.app_id, "app_object_id": app.id})
        }
        None => {
            let name = args
                .app_name
                .clone()
                .unwrap_or_else(|| DEFAULT_APP_NAME.to_string());
            plan.push(format!(
                "POST {g}/applications  (displayName '{name}', signInAudience AzureADMultipleOrgs, \
                 redirect http://localhost, Partner Center delegated permission user_impersonation)"
            ));
            plan.push(format!(
                "POST {g}/servicePrincipals  (the app's service principal)"
            ));
            plan.push(format!("POST {g}/groups/<AdminAgents>/members/$ref  (pre-consent, as Microsoft's secure-app-model scripts do)"));
            plan.push(format!(
                "POST {g}/applications/<new app>/addPassword  (a key ending in {days} days)"
            ));
            serde_json::json!({"action": "create", "display_name": name})
        }
    };
    plan.extend(rotation::verification_plan(ep, &account.tenant_id));
    plan.push(format!(
        "store the secret in {}",
        secrets.describe(&ctx.profile)
    ));
    let permissions = [
        format!(
            "sign-in scopes: {}",
            crate::partner_center::graph_sign_in_scopes(ep).join(" ")
        ),
        format!(
            "the web app requests: Partner Center ({}) delegated user_impersonation ({})",
            crate::cloud::PARTNER_CENTER_APP_ID,
            crate::cloud::PARTNER_CENTER_USER_IMPERSONATION
        ),
    ];
    ctx.ui
        .heading("Dry run: nothing was changed. Onboarding would:");
    for (i, step) in plan.iter().enumerate() {
        ctx.ui.info(format!("  {}. {step}", i + 1));
    }
    ctx.ui.info("Permissions:");
    for p in &permissions {
        ctx.ui.info(format!("  • {p}"));
    }
    ctx.ui.info(format!(
        "Tenant policy: {}",
        super::rotate::describe_policy(account.policy.as_ref())
    ));
    print_json(
        &ctx.ui,
        &serde_json::json!({
            "ok": true, "dry_run": true, "tenant_id": account.tenant_id, "app": app_json,
            "key_lifetime_days": days, "plan": plan, "permissions": permissions,
            "policy": super::rotate::policy_json(account.policy.as_ref()),
        }),
    );
    Exit::Success
}

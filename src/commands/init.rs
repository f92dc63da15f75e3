//! `init`: three ways in (create, use existing, capture), one plan checked against the account
//! before any write, and re-running rotates. The questions are the wizard's; the plan and its
//! execution are the core's (`crate::onboarding`).

use super::{Ctx, print_json, print_plan, profile_json, summary, verify_options};
use crate::cli::InitArgs;
use crate::cloud::Endpoints;
use crate::exit::{Exit, UserError};
use crate::onboarding::execute::{self, Answers, Target};
use crate::onboarding::{Account, Plan, Way, keys};
use crate::partner_center::VerifyOptions;
use crate::signin::{self, ENV_APP_SECRET};
use crate::store::{Profile, Secrets, Slot};
use crate::wizard::{self, DEFAULT_APP_NAME, WayIn, validate_guid, validate_secret_value};
use anyhow::Context as _;
use time::OffsetDateTime;

pub async fn run(ctx: &mut Ctx, args: InitArgs) -> anyhow::Result<Exit> {
    validate_flags(&args)?;
    let _lock = ctx.meta.lock(&ctx.profile)?;
    let existing = ctx.meta.load(&ctx.profile)?;
    let cloud = ctx.cloud(existing.as_ref())?;
    let capture_given =
        args.app_secret_stdin || std::env::var(ENV_APP_SECRET).is_ok_and(|v| !v.trim().is_empty());
    if let Some(p) = existing.as_ref()
        && p.holds_key()
    {
        // Re-running rotates this profile's key; another app is another profile.
        let other_app = args
            .app_id
            .as_deref()
            .is_some_and(|a| !a.eq_ignore_ascii_case(&p.app_id));
        if other_app || (capture_given && args.app_id.is_none()) {
            return Err(UserError::usage(format!(
                "profile '{}' already holds a key for app {}; re-running init rotates it",
                p.profile, p.app_id
            ))
            .hint("use --profile NEW for another app, or `csp-onboard remove` first")
            .into());
        }
        if capture_given {
            // A key made in App management for the same app: the rotation of an Admin agent.
            let ep = ctx.endpoints(cloud).await?;
            let secrets = ctx.secrets(cloud, Some(p)).await?;
            return capture(ctx, &args, &ep, &secrets, Some(p.clone()), None).await;
        }
        if let Some(c) = &args.commerce_id {
            return record_commerce_id(ctx, p, c, args.dry_run);
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
                let mut doc = profile_json(p);
                doc["action"] = "none".into();
                print_json(&ctx.ui, &doc);
                return Ok(Exit::Success);
            }
        } else {
            ctx.ui
                .info(format!("Profile '{}' exists: rotating its key.", p.profile));
        }
        let req = super::rotate::Request {
            sign_in: &args.sign_in,
            retirement: keys::Retirement {
                keep_old: args.keep_old,
                overlap_days: None,
            },
            years: args.secret_years,
            days: args.secret_days,
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
    let way = wizard::choose_way(
        &ctx.ui,
        args.app_id.as_deref(),
        capture_given,
        existing.as_ref().map(|p| p.app_id.as_str()),
    )?;
    let ep = ctx.endpoints(cloud).await?;
    // Open the store first: finding a locked keychain after creating a key helps nobody.
    let secrets = ctx.secrets(cloud, existing.as_ref()).await?;
    match way {
        WayIn::Capture => {
            let exit = capture(ctx, &args, &ep, &secrets, None, None).await?;
            match ctx.meta.load(&ctx.profile)? {
                // A captured app gets billing access with an admin sign-in, like an existing profile.
                Some(p) if args.billing && exit == Exit::Success && !args.dry_run => {
                    super::billing_access::add_to_existing(ctx, p, &args.sign_in).await
                }
                _ => Ok(exit),
            }
        }
        way => onboard(ctx, &args, &ep, &secrets, way, existing).await,
    }
}

/// Adding or correcting the Commerce ID (copied from the portal) is all this run does: it must
/// not also rotate a key some tool may be using.
fn record_commerce_id(ctx: &Ctx, p: &Profile, c: &str, dry_run: bool) -> anyhow::Result<Exit> {
    let c = c.trim().to_lowercase();
    let mut updated = p.clone();
    updated.commerce_id = Some(c.clone());
    if dry_run {
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
    doc["dry_run"] = dry_run.into();
    print_json(&ctx.ui, &doc);
    Ok(Exit::Success)
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

/// A pasted secret was usually made a while ago, and a wrong one would otherwise keep the admin
/// waiting the whole propagation window: a shorter window, still long enough for a fresh key.
fn capture_verify_options(timeout_secs: u64) -> VerifyOptions {
    VerifyOptions {
        app_is_new: false,
        key_is_new: false,
        ..verify_options(timeout_secs.min(90))
    }
}

/// Capture: an app and key made in App management. No admin sign-in; prove the secret, then
/// store it. On an existing profile of the same app the new key replaces the stored one (an
/// Admin agent's rotation); the old key stays on the app, where App management removes it.
/// `tenant`: already known (an Admin agent led here after signing in).
async fn capture(
    ctx: &mut Ctx,
    args: &InitArgs,
    ep: &Endpoints,
    secrets: &Secrets,
    existing: Option<Profile>,
    tenant: Option<String>,
) -> anyhow::Result<Exit> {
    let tenant = match (tenant, &args.sign_in.tenant, &existing) {
        (Some(t), _, _) => t,
        (None, Some(t), _) => t.clone(),
        (None, None, Some(p)) => p.tenant_id.clone(),
        (None, None, None) => ctx.ui.input(
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
    if args.dry_run {
        let plan = Plan::build(
            Way::Capture {
                tenant: tenant.clone(),
                app_id: app_id.clone(),
            },
            None,
            None,
            ep,
            &tenant,
            secrets.describe(&ctx.profile),
        );
        print_plan(
            &ctx.ui,
            "Dry run: nothing was changed. Capturing would:",
            &plan,
            None,
            serde_json::json!({"action": "capture"}),
        );
        return Ok(Exit::Success);
    }
    let commerce_id = match &existing {
        Some(p) if args.commerce_id.is_none() => p.commerce_id.clone(),
        _ => wizard::ask_commerce_id(&ctx.ui, args.commerce_id.as_deref())?,
    };
    let secret = signin::secret_input(
        &ctx.ui,
        "the app's secret value",
        args.app_secret_stdin,
        ENV_APP_SECRET,
        "--app-secret-stdin",
        validate_secret_value,
    )?;
    let http = ctx.http()?;
    let opts = capture_verify_options(args.verify_timeout);
    let limit = opts.budget.as_secs();
    // Entra answers a mistyped secret and a just-made one alike (AADSTS7000215): say what the
    // wait is for, and how long it lasts at most.
    ctx.ui.info(format!(
        "Checking the secret with Entra ID, up to {limit} s: a key made in the last minutes may \
         still be spreading; a mistyped one never works. Ctrl-C to stop."
    ));
    keys::verify(&ctx.ui, &http, ep, &tenant, &app_id, &secret, &opts)
        .await
        .map_err(|e| likely_cause(e, limit))?;
    if let Some(p) = &existing
        && secrets
            .get(&p.profile, Slot::Current)
            .await
            .ok()
            .flatten()
            .is_some_and(|stored| stored == secret)
    {
        // The key already stored (a capture run twice): what the profile learnt about it, its
        // key ID and expiry, stays, and only a new Commerce ID is recorded.
        let mut p = p.clone();
        if commerce_id != p.commerce_id {
            p.commerce_id = commerce_id;
            p.updated_at = OffsetDateTime::now_utc();
            ctx.meta.save(&p)?;
        }
        ctx.ui
            .done("This is the key the profile already holds: nothing else changed.");
        let mut doc = profile_json(&p);
        doc["action"] = "none".into();
        print_json(&ctx.ui, &doc);
        return Ok(Exit::Success);
    }
    let replaced = existing.is_some();
    let mut p = match existing {
        Some(mut p) => {
            // The stored key is replaced by one this profile knows only by its hint.
            p.key_id = None;
            p.secret_expires = None;
            p.updated_at = OffsetDateTime::now_utc();
            p
        }
        None => Profile::new(&ctx.profile, ep.cloud, &tenant, &app_id, secrets.kind()),
    };
    p.commerce_id = commerce_id;
    p.secret_hint = Some(secret.hint());
    p.verified_at = Some(OffsetDateTime::now_utc());
    secrets
        .set(&p.profile, Slot::Current, &secret)
        .await
        .context("storing the secret")?;
    ctx.meta.save(&p)?;
    ctx.ui.done(format!(
        "Stored the secret in {}",
        secrets.describe(&p.profile)
    ));
    if replaced {
        ctx.ui.info(
            "The previous key stays on the app: remove it in App management once no tool uses it.",
        );
    }
    summary(
        ctx,
        &p,
        secrets,
        if replaced { "recaptured" } else { "captured" },
        None,
    );
    Ok(Exit::Success)
}

/// Report the account and tenant the first round of reads found.
fn report_account(ctx: &Ctx, a: &Account) {
    match &a.user {
        Some(user) => {
            ctx.ui.done(format!(
                "Account: {user} in {} ({})",
                a.tenant_name.as_deref().unwrap_or("the tenant"),
                a.tenant_id
            ));
            ctx.ui.done(format!("Role: {}", a.roles.describe()));
        }
        None => ctx.ui.done(format!(
            "Tenant {}{}",
            a.tenant_name
                .as_deref()
                .map(|n| format!("{n} "))
                .unwrap_or_default(),
            a.tenant_id
        )),
    }
    if a.partner_center_sp {
        ctx.ui
            .done("CSP partner tenant (Partner Center is present)");
    } else {
        ctx.ui.warn(format!(
            "The tenant has no Partner Center service principal ({}): a CSP partner tenant has one.",
            crate::cloud::PARTNER_CENTER_APP_ID
        ));
    }
    if let crate::onboarding::PolicyState::Unknown(why) = &a.policy {
        ctx.ui
            .detail(format!("could not read the app management policy: {why}"));
    }
}

/// Create, or add a key to an existing app: sign in, read the account, plan, check, then run.
async fn onboard(
    ctx: &mut Ctx,
    args: &InitArgs,
    ep: &Endpoints,
    secrets: &Secrets,
    way: WayIn,
    existing: Option<Profile>,
) -> anyhow::Result<Exit> {
    let tenant_hint = args
        .sign_in
        .tenant
        .clone()
        .or_else(|| existing.as_ref().map(|p| p.tenant_id.clone()));
    let s = ctx
        .session(ep.cloud, &args.sign_in, tenant_hint.as_deref())
        .await?;
    let spin = ctx.ui.spinner("Checking the account and the tenant…");
    let account = s.survey(tenant_hint.as_deref()).await;
    spin.finish();
    let mut account = account?;
    report_account(ctx, &account);
    // A mistyped App ID should fail before any further question.
    let plan_way = match &way {
        WayIn::Existing(app_id) => {
            let spin = ctx.ui.spinner("Looking up the web app…");
            let app = s
                .graph
                .get_application(app_id)
                .await
                .context("looking up the web app")?;
            spin.finish();
            let app = app.ok_or_else(|| keys::app_not_found(app_id, &account.tenant_id))?;
            let ours = existing.as_ref().is_some_and(|p| {
                p.app_id.eq_ignore_ascii_case(&app.app_id) && p.app_display_name.is_some()
            });
            Way::Existing { app, ours }
        }
        _ => Way::Create {
            name: args
                .app_name
                .clone()
                .unwrap_or_else(|| DEFAULT_APP_NAME.to_string()),
            adopted: execute::unrecorded_app(&s, &ctx.ui, &ctx.data_dir, &ctx.profile).await?,
        },
    };
    // Checked before any further question, and before any write.
    let store = secrets.describe(&ctx.profile);
    let mut draft = Plan::build(
        plan_way.clone(),
        Some(&account),
        None,
        ep,
        &account.tenant_id,
        store.clone(),
    );
    if args.billing {
        draft.add_billing(ep, Some(&account));
    }
    if let Err(refusal) = draft.check(Some(&account)) {
        if args.dry_run {
            print_plan(
                &ctx.ui,
                "Dry run: nothing was changed. This account cannot carry out the plan:",
                &draft,
                Some(&account),
                serde_json::json!({"ok": false, "error": {"exit_code": refusal.exit.code(), "kind": refusal.exit.name(), "message": refusal.message, "hint": refusal.hint}}),
            );
            ctx.ui.warn(&refusal.message);
            return Ok(refusal.exit);
        }
        if account.roles.admin_agent && wizard::offer_capture(&ctx.ui, &refusal)? {
            return capture(
                ctx,
                args,
                ep,
                secrets,
                None,
                Some(account.tenant_id.clone()),
            )
            .await;
        }
        return Err(refusal.into());
    }
    let lifetime = wizard::choose_lifetime(
        &ctx.ui,
        args.secret_years,
        args.secret_days,
        &account.policy,
        matches!(plan_way, Way::Create { .. }),
    )?;
    if args.dry_run {
        let mut plan = Plan::build(
            plan_way,
            Some(&account),
            Some(lifetime),
            ep,
            &account.tenant_id,
            store,
        );
        if args.billing {
            plan.add_billing(ep, Some(&account));
        }
        print_plan(
            &ctx.ui,
            "Dry run: nothing was changed. Onboarding would:",
            &plan,
            Some(&account),
            serde_json::json!({}),
        );
        return Ok(Exit::Success);
    }
    let commerce_id = match &existing {
        Some(p) if args.commerce_id.is_none() => p.commerce_id.clone(),
        _ => wizard::ask_commerce_id(&ctx.ui, args.commerce_id.as_deref())?,
    };
    let plan_way = match plan_way {
        Way::Create { adopted: None, .. } => Way::Create {
            name: wizard::ask_app_name(&ctx.ui, args.app_name.as_deref())?,
            adopted: None,
        },
        other => other,
    };
    let billing = args.billing || wizard::offer_billing(&ctx.ui, ep.cloud)?;
    let plan = Plan::build(
        plan_way,
        Some(&account),
        Some(lifetime),
        ep,
        &account.tenant_id,
        store,
    );
    plan.check(Some(&account))?;
    let target = Target {
        profile: &ctx.profile,
        data_dir: &ctx.data_dir,
        meta: &ctx.meta,
        secrets,
    };
    let answers = Answers {
        commerce_id,
        verify: verify_options(args.verify_timeout),
    };
    let (p, action) = execute::onboard(
        &s,
        &ctx.ui,
        &plan,
        &mut account.policy,
        &target,
        existing,
        answers,
    )
    .await?;
    if billing {
        let secret = ctx.stored_secret(secrets, &p).await?;
        super::billing_access::grant(ctx, &s.http, &s.ep, s.graph.token(), &p, &secret).await?;
    }
    summary(ctx, &p, secrets, action, None);
    Ok(Exit::Success)
}

/// A pasted secret refused for the whole wait: say which cause is likelier. Spreading takes a
/// minute or two, so a value refused that long was most likely mistyped or cut short.
fn likely_cause(e: anyhow::Error, waited_secs: u64) -> anyhow::Error {
    use crate::partner_center::verify::VerifyError;
    if !matches!(
        e.downcast_ref::<VerifyError>(),
        Some(VerifyError::NeverPropagated { .. })
    ) {
        return e;
    }
    let (message, hint) = if waited_secs >= 60 {
        (
            format!(
                "Entra ID refused the pasted secret for {waited_secs} s: most likely it is mistyped \
                 or cut short (a key made a few minutes ago is accepted by then)"
            ),
            "copy the key's Value again from Partner Center > Account settings > App management \
             (the Value, not its ID), or add a new key there, and run the capture again",
        )
    } else {
        (
            format!(
                "Entra ID refused the pasted secret for {waited_secs} s: most likely the key is \
                 still spreading (the wait was short), unless it is mistyped"
            ),
            "run the capture again in a few minutes; if it is still refused, copy the key's Value \
             again from Partner Center > Account settings > App management",
        )
    };
    UserError::new(Exit::Verify, message).hint(hint).into()
}

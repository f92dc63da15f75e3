//! `remove`: forget a profile (its secrets and metadata); `--revoke` first deletes its keys from the
//! app, `--delete-app` the app registration itself (only one this tool created).

use super::Ctx;
use crate::cli::RemoveArgs;
use crate::exit::{Exit, UserError};
use crate::store::Slot;

pub async fn run(ctx: &mut Ctx, args: RemoveArgs) -> anyhow::Result<Exit> {
    // Found first, locked second: a name that is not a profile leaves nothing behind (no lock file).
    ctx.require_profile()?;
    let _lock = ctx.meta.lock(&ctx.profile)?;
    let p = ctx.require_profile()?;
    let revoke = args.revoke || args.delete_app;
    if args.delete_app {
        refuse_foreign_app(ctx, &p)?;
    }
    // The profile may hold the only copy of its secret: forgetting it is confirmed, at a
    // terminal by a question, otherwise by --yes (--non-interactive alone confirms nothing).
    if !args.yes {
        if !ctx.ui.interactive {
            let what = if args.delete_app {
                "--delete-app deletes the app registration and forgets the profile's secret"
            } else if revoke {
                "--revoke deletes a key from the app and forgets the profile's secret"
            } else {
                "remove forgets the profile and its secret, which may be the only copy"
            };
            return Err(UserError::usage(format!("{what}; it needs confirmation"))
                .hint("pass --yes to confirm without a terminal")
                .into());
        }
        let what = if args.delete_app {
            format!(
                "forget it and delete the app registration {} (with its keys)",
                p.app_id
            )
        } else if revoke {
            "forget it and delete its key from the app".to_string()
        } else {
            "forget it (the key stays on the app)".to_string()
        };
        if !ctx
            .ui
            .confirm(&format!("Profile '{}': {what}?", p.profile), false)?
        {
            ctx.ui.info("Nothing changed.");
            return Ok(Exit::Success);
        }
    }
    let cloud = ctx.cloud(Some(&p))?;
    if revoke {
        let tenant = args
            .sign_in
            .tenant
            .clone()
            .unwrap_or_else(|| p.tenant_id.clone());
        let graph = ctx
            .session(cloud, &args.sign_in, Some(&tenant))
            .await?
            .graph;
        let object_id = match &p.app_object_id {
            Some(id) => id.clone(),
            None => {
                graph
                    .get_application(&p.app_id)
                    .await?
                    .ok_or_else(|| crate::onboarding::keys::app_not_found(&p.app_id, &p.tenant_id))?
                    .id
            }
        };
        if args.delete_app {
            // Deleting the registration takes its keys with it.
            graph.delete_application(&object_id).await?;
            ctx.ui.done(format!(
                "Deleted the app registration {} and its keys",
                p.app_id
            ));
            return forget(ctx, &p, cloud, &args).await;
        }
        // Every key the profile knows, once each: current, kept, and an unfinished rotation's
        // new key (by ID or by its unique name) and old key (not yet removed when it stopped).
        let mut keys: Vec<String> = Vec::new();
        let pending = p.pending.as_ref();
        for k in p
            .key_id
            .iter()
            .chain(pending.and_then(|r| r.key_id.as_ref()))
            .chain(pending.and_then(|r| r.old_key_id.as_ref()))
            .chain(p.retiring.iter().map(|r| &r.key_id))
        {
            if !keys.iter().any(|seen| seen.eq_ignore_ascii_case(k)) {
                keys.push(k.clone());
            }
        }
        let names: Vec<&str> = p
            .pending
            .iter()
            .map(|r| r.key_display_name.as_str())
            .chain(p.sweep_key_names.iter().map(String::as_str))
            .collect();
        if !names.is_empty()
            && let Some(app) = graph.get_application(&p.app_id).await?
        {
            for c in app.password_credentials {
                if c.display_name
                    .as_deref()
                    .is_some_and(|n| names.contains(&n))
                    && !keys.iter().any(|k| k.eq_ignore_ascii_case(&c.key_id))
                {
                    keys.push(c.key_id);
                }
            }
        }
        if keys.is_empty() {
            ctx.ui.warn("The profile does not know its key's ID (captured without sign-in); delete the key in the portal.");
        }
        for k in keys {
            if let Some(other) =
                crate::onboarding::keys::key_used_by_other_profile(&ctx.meta, &p, &k)?
            {
                ctx.ui.warn(format!(
                    "Kept key {k}: profile '{other}' uses the same app and may hold it."
                ));
                continue;
            }
            graph.remove_password(&object_id, &k).await?;
            ctx.ui.done(format!("Deleted key {k} from the app"));
        }
        ctx.ui.info(format!(
            "The app registration {} stays in the tenant (only keys were deleted); delete it in the Entra admin center > App registrations once no tool uses it.",
            p.app_id
        ));
    } else if let Some(k) = &p.key_id {
        ctx.ui.warn(format!(
            "The key {k} stays on app {} and keeps working for whoever holds it; `csp-onboard remove --revoke` (before forgetting) or the portal deletes it.",
            p.app_id
        ));
    }
    forget(ctx, &p, cloud, &args).await
}

/// Delete the profile's secrets and metadata.
async fn forget(
    ctx: &Ctx,
    p: &crate::store::Profile,
    cloud: crate::cloud::Cloud,
    args: &RemoveArgs,
) -> anyhow::Result<Exit> {
    let secrets = ctx.secrets(cloud, Some(p)).await?;
    secrets.delete(&p.profile, Slot::Current).await?;
    secrets.delete(&p.profile, Slot::Pending).await?;
    ctx.meta.delete(&p.profile)?;
    ctx.ui.done(format!("Forgot profile '{}'", p.profile));
    super::print_json(
        &ctx.ui,
        &serde_json::json!({
            "ok": true, "action": "removed", "profile": p.profile,
            "revoked": args.revoke || args.delete_app, "app_deleted": args.delete_app,
        }),
    );
    Ok(Exit::Success)
}

/// `--delete-app` deletes only an app this tool created for this profile (init records its
/// display name then; a reused or captured app has none) and that no other profile uses.
fn refuse_foreign_app(ctx: &Ctx, p: &crate::store::Profile) -> anyhow::Result<()> {
    if p.app_display_name.is_none() {
        return Err(UserError::usage(format!(
            "app {} was not created by csp-onboard for profile '{}' (it was reused or captured): --delete-app does not delete it",
            p.app_id, p.profile
        ))
        .hint("use --revoke to delete the profile's keys; delete the registration in the Entra admin center if you mean to")
        .into());
    }
    if let Some(other) = ctx
        .meta
        .list()?
        .into_iter()
        .find(|q| q.profile != p.profile && q.app_id.eq_ignore_ascii_case(&p.app_id))
    {
        return Err(UserError::usage(format!(
            "profile '{}' uses the same app {}: --delete-app would break it",
            other.profile, p.app_id
        ))
        .hint("remove that profile first, or use --revoke")
        .into());
    }
    Ok(())
}

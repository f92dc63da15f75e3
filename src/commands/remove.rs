//! `remove`: forget a profile (its secrets and metadata); `--revoke` first deletes its key from the app.

use super::Ctx;
use crate::cli::RemoveArgs;
use crate::exit::{Exit, UserError};
use crate::partner_center::Graph;
use crate::signin;
use crate::store::Slot;

pub async fn run(ctx: &mut Ctx, args: RemoveArgs) -> anyhow::Result<Exit> {
    // Found first, locked second: a name that is not a profile leaves nothing behind (no lock file).
    ctx.require_profile()?;
    let _lock = ctx.meta.lock(&ctx.profile)?;
    let p = ctx.require_profile()?;
    // The profile may hold the only copy of its secret: forgetting it is confirmed, at a
    // terminal by a question, otherwise by --yes (--non-interactive alone confirms nothing).
    if !args.yes {
        if !ctx.ui.interactive {
            let what = if args.revoke {
                "--revoke deletes a key from the app and forgets the profile's secret"
            } else {
                "remove forgets the profile and its secret, which may be the only copy"
            };
            return Err(UserError::usage(format!("{what}; it needs confirmation"))
                .hint("pass --yes to confirm without a terminal")
                .into());
        }
        let what = if args.revoke {
            "forget it and delete its key from the app"
        } else {
            "forget it (the key stays on the app)"
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
    if args.revoke {
        let ep = ctx.endpoints(cloud).await?;
        let http = ctx.http()?;
        let tenant = args
            .sign_in
            .tenant
            .clone()
            .unwrap_or_else(|| p.tenant_id.clone());
        let signed = signin::sign_in(&ctx.ui, &http, &ep, &args.sign_in, Some(&tenant)).await?;
        let graph = Graph::new(http, &ep, signed.graph_token);
        let object_id = match &p.app_object_id {
            Some(id) => id.clone(),
            None => {
                graph
                    .get_application(&p.app_id)
                    .await?
                    .ok_or_else(|| crate::rotation::app_not_found(&p.app_id, &p.tenant_id))?
                    .id
            }
        };
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
            if let Some(other) = crate::rotation::key_used_by_other_profile(&ctx.meta, &p, &k)? {
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
    let secrets = ctx.secrets(cloud, Some(&p)).await?;
    secrets.delete(&p.profile, Slot::Current).await?;
    secrets.delete(&p.profile, Slot::Pending).await?;
    ctx.meta.delete(&p.profile)?;
    ctx.ui.done(format!("Forgot profile '{}'", p.profile));
    super::print_json(
        &ctx.ui,
        &serde_json::json!({"ok": true, "action": "removed", "profile": p.profile, "revoked": args.revoke}),
    );
    Ok(Exit::Success)
}

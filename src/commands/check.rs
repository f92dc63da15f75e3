//! `check`: prove the stored secret still works and report the days left, with exit codes for monitors.

use super::{Ctx, days_left, print_json, rfc3339};
use crate::cli::CheckArgs;
use crate::exit::{Exit, UserError};
use crate::partner_center::verify::{VerifyError, VerifyOptions, verify_secret};
use crate::store::Slot;
use std::time::Duration;

pub async fn run(ctx: &mut Ctx, args: CheckArgs) -> anyhow::Result<Exit> {
    let p = ctx.require_profile()?;
    let cloud = ctx.cloud(Some(&p));
    let ep = ctx.endpoints(cloud).await?;
    let secrets = ctx.secrets(cloud).await?;
    let secret = secrets
        .get(&p.profile, Slot::Current)
        .await?
        .ok_or_else(|| {
            UserError::new(
                Exit::NotFound,
                format!("no secret is stored for profile '{}'", p.profile),
            )
            .hint("run `csp-onboard init` to create one")
        })?;
    let http = ctx.http()?;
    // A stored key has long propagated: one short confirmation, no propagation window.
    let opts = VerifyOptions {
        budget: Duration::from_secs(10),
        consecutive: 1,
        ..Default::default()
    };
    let spin = ctx.ui.spinner("Checking the stored secret…");
    let result = verify_secret(&http, &ep, &p.tenant_id, &p.app_id, &secret, &opts, |_| {}).await;
    spin.finish();
    let left = p.secret_expires.map(days_left);
    let (exit, status, problem) = match &result {
        Ok(_) => match left {
            Some(d) if d < 0 => (
                Exit::Expired,
                "expired",
                Some("the key has expired".to_string()),
            ),
            Some(d) if d <= i64::from(args.warn_days) => (
                Exit::Expiring,
                "expiring",
                Some(format!("the key expires in {d} days")),
            ),
            _ => (Exit::Success, "ok", None),
        },
        Err(VerifyError::Api(e)) if e.exit() == Exit::Unreachable => {
            return Err(anyhow::anyhow!(UserError::new(
                Exit::Unreachable,
                e.to_string()
            )));
        }
        Err(e) => (Exit::Expired, "rejected", Some(e.to_user_error().message)),
    };
    match exit {
        Exit::Success => ctx.ui.done(format!(
            "The secret works{}",
            left.map(|d| format!("; {d} days left")).unwrap_or_default()
        )),
        _ => ctx.ui.warn(format!(
            "{}; rotate it with `csp-onboard rotate`",
            problem.clone().unwrap_or_default()
        )),
    }
    print_json(
        &ctx.ui,
        &serde_json::json!({
            "ok": exit == Exit::Success,
            "status": status,
            "profile": p.profile,
            "app_id": p.app_id,
            "secret_expires": rfc3339(p.secret_expires),
            "days_left": left,
            "warn_days": args.warn_days,
            "problem": problem,
        }),
    );
    Ok(exit)
}

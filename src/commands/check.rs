//! `check`: prove the stored secret still works and report the days left, with exit codes for monitors.

use super::{Ctx, days_left, print_json, rfc3339};
use crate::cli::CheckArgs;
use crate::exit::Exit;
use crate::partner_center::verify::{VerifyError, VerifyOptions, verify_secret};
use crate::store::Profile;
use std::time::Duration;

/// What an admin sign-in adds: is our key still on the app, and are there others?
struct Drift {
    key_on_app: bool,
    other_keys: usize,
    /// The key's end date as the app shows it (found by ID, or by hint for a captured profile).
    key_end: Option<time::OffsetDateTime>,
    key_id: Option<String>,
}

pub async fn run(ctx: &mut Ctx, args: CheckArgs) -> anyhow::Result<Exit> {
    let mut p = ctx.require_profile()?;
    let cloud = ctx.cloud(Some(&p))?;
    let ep = ctx.endpoints(cloud).await?;
    let secrets = ctx.secrets(cloud, Some(&p)).await?;
    let secret = ctx.stored_secret(&secrets, &p).await?;
    let http = ctx.http()?;
    // A stored key has long propagated: a brief flap is tolerated, not a propagation window.
    let opts = VerifyOptions {
        budget: Duration::from_secs(2),
        consecutive: 1,
        key_is_new: false,
        ..Default::default()
    };
    let spin = ctx.ui.spinner("Checking the stored secret…");
    let result = verify_secret(&http, &ep, &p.tenant_id, &p.app_id, &secret, &opts, |_| {}).await;
    spin.finish();
    let drift = match args.sign_in.auth {
        Some(_) => Some(drift(ctx, &http, &ep, &p, &args).await?),
        None => None,
    };
    // A captured profile learns its key's ID and end date from the first signed-in check.
    // Only a secret that works identifies its key; and only under the profile's lock, on a fresh
    // copy, so a rotation running meanwhile is never overwritten (busy: learn next time).
    if let Some(d) = &drift
        && result.is_ok()
        && p.secret_expires.is_none()
        && let Some(end) = d.key_end
        && let Ok(_lock) = ctx.meta.lock(&p.profile)
        && let Some(mut fresh) = ctx.meta.load(&p.profile)?
        && fresh.secret_expires.is_none()
        && fresh.pending.is_none()
    {
        fresh.secret_expires = Some(end);
        fresh.key_id = fresh.key_id.clone().or(d.key_id.clone());
        ctx.meta.save(&fresh)?;
        p = fresh;
    }
    let left = p.secret_expires.map(days_left);
    // Expired is a matter of the instant; days left is for reading.
    let past = p
        .secret_expires
        .is_some_and(|e| e <= time::OffsetDateTime::now_utc());
    let (exit, status, problem) = match &result {
        Ok(_) => match left {
            _ if past => (
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
            return Err(e.to_user_error().into());
        }
        Err(VerifyError::Expired(_)) => (
            Exit::Expired,
            "expired",
            Some("the key has expired".to_string()),
        ),
        Err(e) => (Exit::Expired, "rejected", Some(e.to_user_error().message)),
    };
    match exit {
        Exit::Success if left.is_none() => ctx.ui.warn(
            "The secret works, but its expiry is unknown (captured without sign-in): \
             `csp-onboard check --auth device-code` reads it from the app",
        ),
        Exit::Success => ctx.ui.done(format!(
            "The secret works{}",
            left.map(|d| format!("; {d} days left")).unwrap_or_default()
        )),
        _ => ctx.ui.warn(format!(
            "{}; rotate it with `csp-onboard rotate`",
            problem.clone().unwrap_or_default()
        )),
    }
    // Billing access (usage): only a working secret can tell; a failure to ask is not a verdict.
    let billing = match &result {
        Ok(_) => super::billing_access::billing_access(&http, &ep, &p, &secret)
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    match billing {
        Some(true) => ctx.ui.done("Billing access (PartnerBilling.Read.All) holds: `csp-onboard usage` works"),
        Some(false) => ctx.ui.info("No billing access (PartnerBilling.Read.All): `csp-onboard init --billing` grants it for `csp-onboard usage`"),
        None => {}
    }
    if let Some(d) = &drift {
        if !d.key_on_app {
            ctx.ui
                .warn("The stored key is no longer on the app (deleted in the portal?)");
        }
        if d.other_keys > 0 {
            ctx.ui.info(format!(
                "The app holds {} other key(s) that this profile does not know about",
                d.other_keys
            ));
        }
    }
    print_json(
        &ctx.ui,
        &serde_json::json!({
            "ok": exit == Exit::Success,
            "status": status,
            "profile": p.profile,
            "app_id": p.app_id,
            "store": p.store.as_str(),
            "secret_expires": rfc3339(p.secret_expires),
            "days_left": left,
            "warn_days": args.warn_days,
            "problem": problem,
            "key_on_app": drift.as_ref().map(|d| d.key_on_app),
            "other_keys": drift.as_ref().map(|d| d.other_keys),
            "billing_access": billing,
        }),
    );
    Ok(exit)
}

async fn drift(
    ctx: &Ctx,
    http: &crate::partner_center::HttpClient,
    ep: &crate::cloud::Endpoints,
    p: &Profile,
    args: &CheckArgs,
) -> anyhow::Result<Drift> {
    let tenant = args
        .sign_in
        .tenant
        .clone()
        .unwrap_or_else(|| p.tenant_id.clone());
    let graph = crate::onboarding::Session::open(
        ep.clone(),
        http.clone(),
        &crate::signin::Terminal {
            ui: &ctx.ui,
            args: &args.sign_in,
        },
        Some(&tenant),
    )
    .await?
    .graph;
    let app = graph
        .get_application(&p.app_id)
        .await?
        .ok_or_else(|| crate::onboarding::keys::app_not_found(&p.app_id, &p.tenant_id))?;
    let ours = |k: &str| {
        p.key_id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(k))
            || p.retiring.iter().any(|r| r.key_id.eq_ignore_ascii_case(k))
    };
    let ours_now = match &p.key_id {
        Some(id) => app
            .password_credentials
            .iter()
            .find(|c| c.key_id.eq_ignore_ascii_case(id)),
        None => p
            .secret_hint
            .as_deref()
            .and_then(|h| crate::onboarding::keys::key_with_hint(&app, h)),
    };
    Ok(Drift {
        key_end: ours_now.and_then(|c| c.end),
        key_id: ours_now.map(|c| c.key_id.clone()),
        key_on_app: ours_now.is_some(),
        other_keys: app
            .password_credentials
            .iter()
            .filter(|c| !ours(&c.key_id) && ours_now.is_none_or(|o| o.key_id != c.key_id))
            .count(),
    })
}

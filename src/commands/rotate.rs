//! `rotate`: a new key, verified and stored, then the old one retired. `init` on an existing profile lands here too.

use super::{Ctx, days_left, print_json, profile_json};
use crate::cli::{RotateArgs, SignInArgs};
use crate::exit::Exit;
use crate::partner_center::Graph;
use crate::rotation::{Engine, Outcome};
use crate::signin;
use crate::store::Profile;
use anyhow::Context as _;
use time::{Duration, OffsetDateTime};

pub async fn run(ctx: &mut Ctx, args: RotateArgs) -> anyhow::Result<Exit> {
    let p = ctx.require_profile()?;
    if let (Some(days), Some(exp)) = (args.if_expiring_within, p.secret_expires)
        && p.pending.is_none()
        && days_left(exp) > i64::from(days)
    {
        ctx.ui.done(format!(
            "The key expires in {} days (after the {days}-day window): nothing to do",
            days_left(exp)
        ));
        print_json(
            &ctx.ui,
            &serde_json::json!({"ok": true, "action": "none", "profile": profile_json(&p)}),
        );
        return Ok(Exit::Success);
    }
    rotate_profile(
        ctx,
        p,
        &args.sign_in,
        args.keep_old,
        args.secret_years,
        args.verify_timeout,
    )
    .await
}

/// Sign in to the profile's tenant, then run the rotation engine on the profile.
pub async fn rotate_profile(
    ctx: &mut Ctx,
    mut p: Profile,
    sign_in: &SignInArgs,
    keep_old: bool,
    years: Option<u8>,
    verify_timeout: u64,
) -> anyhow::Result<Exit> {
    let cloud = ctx.cloud(Some(&p));
    let ep = ctx.endpoints(cloud).await?;
    let secrets = ctx.secrets(cloud).await?;
    let http = ctx.http()?;
    ctx.ui.heading(format!(
        "Rotating the key of profile '{}' (App ID {})",
        p.profile, p.app_id
    ));
    let tenant = sign_in
        .tenant
        .clone()
        .unwrap_or_else(|| p.tenant_id.clone());
    let signed = signin::sign_in(&ctx.ui, &http, &ep, sign_in, Some(&tenant)).await?;
    let graph = Graph::new(http.clone(), &ep, signed.graph_token.clone());
    let policy = graph.default_app_management_policy().await.ok();
    let max_days = policy
        .as_ref()
        .and_then(|p| p.max_password_lifetime_days)
        .map(i64::from);
    if policy.as_ref().is_some_and(|p| p.passwords_blocked) {
        return Err(crate::exit::UserError::new(
            Exit::Policy,
            "the tenant's app management policy does not allow client secrets",
        )
        .into());
    }
    let mut days = i64::from(years.unwrap_or(1)) * 365;
    if let Some(m) = max_days
        && days > m
    {
        if years.is_some() {
            return Err(crate::exit::UserError::new(
                Exit::Policy,
                format!("the tenant's policy caps secret lifetime at {m} days"),
            )
            .hint("pass a shorter --secret-years, or leave it out to use the longest allowed")
            .into());
        }
        days = m;
    }
    let engine = Engine {
        ui: &ctx.ui,
        http: &http,
        ep: &ep,
        graph: &graph,
        secrets: &secrets,
        meta: &ctx.meta,
        verify: super::init::verify_options(verify_timeout),
    };
    let end = OffsetDateTime::now_utc() + Duration::days(days);
    let (outcome, retired) = engine
        .replace_key(&mut p, end, keep_old)
        .await
        .context("rotating the key")?;
    let action = match outcome {
        Outcome::Replaced => "rotated",
        Outcome::Resumed => "resumed",
    };
    if outcome == Outcome::Resumed {
        ctx.ui
            .info("The interrupted rotation is complete; no new key was added.");
    }
    if retired.kept
        && let Some(old) = &retired.old_key_id
    {
        ctx.ui.info(format!(
            "The old key {old} stays on the app (--keep-old); remove it in the portal when no tool uses it."
        ));
    }
    super::init::summary(ctx, &p, &secrets, action).await;
    Ok(Exit::Success)
}

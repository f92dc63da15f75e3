//! `rotate`: a new key, verified and stored, then the old one retired; `--all` for every profile.
//! `init` on an existing profile lands here too.

use super::{
    Ctx, days_left, print_json, print_plan, profile_json, rfc3339, summary, verify_options,
};
use crate::cli::{RotateArgs, SignInArgs};
use crate::exit::{Exit, UserError};
use crate::onboarding::execute::{not_allowed_to_add_key, replace_key_within_policy};
use crate::onboarding::{
    Engine, Lifetime, Observer, Outcome, Plan, PolicyState, Retirement, Session, Way, keys,
};
use crate::report;
use crate::store::{MetaStore, Profile, Secrets};
use crate::ui::Ui;
use anyhow::Context as _;
use futures_util::{FutureExt as _, StreamExt as _};

/// What a rotation is asked to do, from `rotate` or from `init` on an existing profile.
pub struct Request<'a> {
    pub sign_in: &'a SignInArgs,
    pub retirement: Retirement,
    pub years: Option<u8>,
    pub days: Option<u32>,
    pub verify_timeout: u64,
    pub dry_run: bool,
}

pub async fn run(ctx: &mut Ctx, args: RotateArgs) -> anyhow::Result<Exit> {
    let req = Request {
        sign_in: &args.sign_in,
        retirement: Retirement {
            keep_old: args.keep_old,
            overlap_days: args.overlap,
        },
        years: args.secret_years,
        days: args.secret_days,
        verify_timeout: args.verify_timeout,
        dry_run: args.dry_run,
    };
    if args.all {
        return rotate_all(ctx, &req, args.if_expiring_within, args.jobs.into()).await;
    }
    ctx.require_profile()?; // found before locked: an unknown name leaves no lock file
    let _lock = ctx.meta.lock(&ctx.profile)?;
    let p = ctx.require_profile()?;
    if let Some(days) = args.if_expiring_within
        && is_fresh(&p, days)
    {
        ctx.ui.done(format!(
            "The key expires in {} days, after the {days}-day window: nothing to do",
            p.secret_expires.map(days_left).unwrap_or_default()
        ));
        let mut doc = profile_json(&p);
        doc["action"] = "none".into();
        print_json(&ctx.ui, &doc);
        return Ok(Exit::Success);
    }
    rotate_profile(ctx, p, &req).await
}

/// A key that expires after the window, with no rotation left unfinished, needs nothing.
fn is_fresh(p: &Profile, window_days: u32) -> bool {
    p.pending.is_none()
        && p.retiring.is_empty()
        && p.secret_expires
            .is_some_and(|e| days_left(e) > i64::from(window_days))
}

/// The lifetime a rotation keeps: the one the admin chose last time, unless told otherwise.
fn previous_days(p: &Profile) -> Option<i64> {
    let (end, start) = (p.secret_expires?, p.verified_at?);
    let days = ((end - start).whole_hours() + 12) / 24;
    Some(match days {
        d if d > 540 => 730,
        d if d > 300 => 365,
        d => d.max(1),
    })
}

/// The new key's lifetime: `--secret-days`, `--secret-years`, else the previous key's, within
/// the policy when it is known. An explicit lifetime above the policy's cap is refused (exit 5).
fn rotation_lifetime(
    p: &Profile,
    years: Option<u8>,
    days: Option<u32>,
    policy: &PolicyState,
) -> Result<Lifetime, UserError> {
    let explicit = years.is_some() || days.is_some();
    let wanted = days
        .map(i64::from)
        .or(years.map(|y| i64::from(y) * 365))
        .or_else(|| previous_days(p))
        .unwrap_or(365);
    match policy.max_days() {
        Some(m) if wanted > m && explicit => Err(UserError::new(
            Exit::Policy,
            format!("the tenant's policy caps secret lifetime at {m} days"),
        )
        .hint(format!(
            "pass --secret-days {m} (or less), or leave the lifetime out to use the longest allowed"
        ))),
        Some(m) if wanted > m => Ok(Lifetime {
            days: m,
            explicit: false,
        }),
        _ => Ok(Lifetime {
            days: wanted,
            explicit,
        }),
    }
}

fn engine<'a>(
    obs: &'a dyn Observer,
    s: &'a Session,
    secrets: &'a Secrets,
    meta: &'a MetaStore,
    verify_timeout: u64,
) -> Engine<'a> {
    Engine {
        obs,
        http: &s.http,
        ep: &s.ep,
        graph: &s.graph,
        secrets,
        meta,
        verify: verify_options(verify_timeout),
    }
}

fn rotation_way(p: &Profile, app_object_id: Option<String>, r: &Retirement) -> Way {
    Way::Rotate {
        app_object_id,
        old_key: p.key_id.clone(),
        keep_old: r.keep_old,
        overlap_days: r.overlap_days,
    }
}

/// Sign in to the profile's tenant, then add a key, verify, store and retire the old one.
pub async fn rotate_profile(
    ctx: &mut Ctx,
    mut p: Profile,
    req: &Request<'_>,
) -> anyhow::Result<Exit> {
    ctx.ui.heading(format!(
        "Rotating the key of profile '{}' (App ID {})",
        p.profile, p.app_id
    ));
    let cloud = ctx.cloud(Some(&p))?;
    let secrets = ctx.secrets(cloud, Some(&p)).await?;
    let tenant = req
        .sign_in
        .tenant
        .clone()
        .unwrap_or_else(|| p.tenant_id.clone());
    let s = ctx.session(cloud, req.sign_in, Some(&tenant)).await?;
    // An ordinary rotation reads the policy only if Graph refuses the lifetime: a request saved.
    let mut policy = if req.dry_run {
        s.read_policy().await
    } else {
        PolicyState::NotRead
    };
    let lifetime = rotation_lifetime(&p, req.years, req.days, &policy)?;
    if req.dry_run {
        let app = s
            .graph
            .get_application(&p.app_id)
            .await?
            .ok_or_else(|| keys::app_not_found(&p.app_id, &p.tenant_id))?;
        let plan = Plan::build(
            rotation_way(&p, Some(app.id.clone()), &req.retirement),
            None,
            Some(lifetime),
            &s.ep,
            &p.tenant_id,
            secrets.describe(&p.profile),
        );
        ctx.ui.info(format!(
            "Tenant policy: {}; keys on the app now: {}",
            policy.describe(),
            app.password_credentials.len()
        ));
        print_plan(
            &ctx.ui,
            "Dry run: nothing was changed. A rotation would:",
            &plan,
            None,
            serde_json::json!({
                "action": "rotate", "profile": p.profile, "store": p.store.as_str(), "app_id": p.app_id,
                "app_object_id": app.id, "old_key_id": p.key_id,
                "new_key_expires": rfc3339(Some(crate::input::days_from_now(lifetime.days, "the key lifetime")?)),
                "policy": policy.to_json(),
            }),
        );
        return Ok(Exit::Success);
    }
    let eng = engine(&ctx.ui, &s, &secrets, &ctx.meta, req.verify_timeout);
    let (outcome, retired) =
        replace_key_within_policy(&eng, &s, &mut p, lifetime, &mut policy, &req.retirement)
            .await
            .map_err(|e| not_allowed_to_add_key(e, &p))
            .context("rotating the key")?;
    let action = match outcome {
        Outcome::Replaced => "rotated",
        Outcome::Resumed => {
            ctx.ui
                .info("The interrupted rotation is complete; no new key was added.");
            "resumed"
        }
    };
    if let Some(old) = &retired.old_key_id {
        match retired.retire_after {
            Some(after) => ctx.ui.info(format!(
                "The old key {old} stays on the app until {} (--overlap); the first rotate or init after that removes it.",
                after.date()
            )),
            None if retired.kept => ctx.ui.info(format!(
                "The old key {old} stays on the app (--keep-old); remove it in the portal when no tool uses it."
            )),
            None => {}
        }
    }
    summary(ctx, &p, &secrets, action, Some(retired.removed));
    if retired.removed {
        // Said last, where it is read: every copy of the old value just stopped working.
        ctx.ui.warn(format!(
            "The old secret no longer works: its key was removed from the app. Any tool or \
             script that holds it (a cost tool, a pipeline, a vault) needs the new one: \
             `{} show --reveal --json` prints the tenant ID, App ID and secret.",
            crate::ui::invocation()
        ));
    }
    Ok(Exit::Success)
}

/// One line of the `--all` result table.
struct Row {
    profile: String,
    /// The action, the profile after it, and whether the old key was removed (its secret dead).
    result: Result<(&'static str, Profile, bool), UserError>,
}

/// `rotate --all`: one sign-in per tenant, then the profiles of that tenant several at a time.
/// The HTTP client is shared, so one `Retry-After` pauses the whole batch.
async fn rotate_all(
    ctx: &mut Ctx,
    req: &Request<'_>,
    window: Option<u32>,
    jobs: usize,
) -> anyhow::Result<Exit> {
    // A damaged profile file is a failed row; the others are still rotated.
    let mut rows: Vec<Row> = Vec::new();
    let mut all = Vec::new();
    for (name, p) in ctx.meta.list_each()? {
        match p {
            Ok(p) => all.push(p),
            Err(e) => rows.push(Row {
                profile: name,
                result: Err(report::classify(&e)),
            }),
        }
    }
    // With --tenant, the batch is that tenant's profiles (a sign-in is to one tenant).
    if let Some(t) = &req.sign_in.tenant {
        if crate::input::canonical_guid(t).is_none() {
            return Err(UserError::usage(
                "with --all, --tenant takes a tenant ID (GUID), as profiles record it",
            )
            .hint("`csp-onboard list --json` shows each profile's tenant_id")
            .into());
        }
        all.retain(|p| p.tenant_id.eq_ignore_ascii_case(t));
    }
    if all.is_empty() && rows.is_empty() {
        return Err(UserError::new(Exit::NotFound, "no profiles are stored")
            .hint("run `csp-onboard init` first")
            .into());
    }
    let mut todo: Vec<Profile> = Vec::new();
    let mut _locks = Vec::new();
    for p in all {
        let mut p = p;
        // Each profile is held to its own cloud and endpoints, as a single rotation is: the
        // environment never sends a stored secret elsewhere.
        if let Err(e) = ctx.cloud(Some(&p)) {
            rows.push(Row {
                profile: p.profile.clone(),
                result: Err(report::classify(&e)),
            });
            continue;
        }
        if !req.dry_run {
            match ctx.meta.lock(&p.profile) {
                Ok(l) => {
                    _locks.push(l);
                    // Another run may have changed (or removed) it before the lock was ours.
                    match ctx.meta.load(&p.profile)? {
                        Some(fresh) => p = fresh,
                        None => continue,
                    }
                }
                Err(e) => {
                    rows.push(Row {
                        profile: p.profile.clone(),
                        result: Err(report::classify(&e)),
                    });
                    continue;
                }
            }
        }
        if window.is_some_and(|d| is_fresh(&p, d)) {
            rows.push(Row {
                profile: p.profile.clone(),
                result: Ok(("none", p, false)),
            });
        } else {
            todo.push(p);
        }
    }
    if req.dry_run {
        return dry_run_all(ctx, req, &rows, &todo).await;
    }
    // Group by (cloud, tenant): one sign-in each.
    let mut groups: Vec<Vec<Profile>> = Vec::new();
    for p in todo {
        match groups
            .iter_mut()
            // One sign-in per tenant; one secret store per group (a profile keeps its own store).
            .find(|g| {
                g[0].cloud == p.cloud
                    && g[0].store == p.store
                    && g[0].tenant_id.eq_ignore_ascii_case(&p.tenant_id)
            }) {
            Some(g) => g.push(p),
            None => groups.push(vec![p]),
        }
    }
    // Per-profile progress would interleave, and nobody can be asked mid-batch: the batch
    // reports in its table instead.
    let quiet = Ui {
        quiet: true,
        interactive: false,
        ..ctx.ui.clone()
    };
    for group in groups {
        // A failed sign-in fails the whole tenant group, not the batch.
        let prepared = async {
            let cloud = group[0].cloud;
            let secrets = ctx.secrets(cloud, Some(&group[0])).await?;
            let s = ctx
                .session(cloud, req.sign_in, Some(&group[0].tenant_id))
                .await?;
            // Read once for the whole group: N refusals would cost more than one read.
            let policy = s.read_policy().await;
            anyhow::Ok((s, secrets, policy))
        }
        .await;
        let (session, secrets, policy) = match prepared {
            Ok(ok) => ok,
            Err(e) => {
                let u = report::classify(&e);
                for p in group {
                    rows.push(Row {
                        profile: p.profile,
                        result: Err(UserError {
                            exit: u.exit,
                            message: u.message.clone(),
                            hint: u.hint.clone(),
                        }),
                    });
                }
                continue;
            }
        };
        let spin = ctx.ui.spinner(format!(
            "Rotating {} profiles of tenant {}…",
            group.len(),
            group[0].tenant_id
        ));
        let eng = engine(&quiet, &session, &secrets, &ctx.meta, req.verify_timeout);
        let (eng, session, policy) = (&eng, &session, &policy);
        let results: Vec<Row> = futures_util::stream::iter(group)
            .map(|mut p| async move {
                // Each profile keeps its own previous lifetime, within the policy, as a single
                // rotation does.
                let r = match rotation_lifetime(&p, req.years, req.days, policy) {
                    Ok(lifetime) => {
                        let mut policy = policy.clone();
                        // A bug in one profile's rotation must not take the batch (and its
                        // table) down.
                        std::panic::AssertUnwindSafe(replace_key_within_policy(
                            eng,
                            session,
                            &mut p,
                            lifetime,
                            &mut policy,
                            &req.retirement,
                        ))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("internal error while rotating")))
                        .map_err(|e| not_allowed_to_add_key(e, &p))
                    }
                    Err(u) => Err(u.into()),
                };
                Row {
                    profile: p.profile.clone(),
                    result: match r {
                        Ok((Outcome::Replaced, r)) => Ok(("rotated", p, r.removed)),
                        Ok((Outcome::Resumed, r)) => Ok(("resumed", p, r.removed)),
                        Err(e) => Err(report::classify(&e)),
                    },
                }
            })
            .buffer_unordered(jobs)
            .collect()
            .await;
        spin.finish();
        rows.extend(results);
    }
    rows.sort_by(|a, b| a.profile.cmp(&b.profile));
    print_table(ctx, &rows);
    let failures: Vec<Exit> = rows
        .iter()
        .filter_map(|r| r.result.as_ref().err().map(|u| u.exit))
        .collect();
    Ok(match failures.first() {
        None => Exit::Success,
        Some(first) if failures.iter().all(|e| e == first) => *first,
        Some(_) => Exit::Failure,
    })
}

/// `rotate --all --dry-run`: each profile's rotation plan, from what the profiles record, with
/// no request at all (the policy is unknown until a sign-in reads it).
async fn dry_run_all(
    ctx: &mut Ctx,
    req: &Request<'_>,
    fresh: &[Row], // skipped as fresh, or refused
    todo: &[Profile],
) -> anyhow::Result<Exit> {
    ctx.ui.heading(
        "Dry run: nothing was changed. `rotate --all` would, with one sign-in per tenant:",
    );
    let unknown = PolicyState::NotRead;
    let mut items = Vec::new();
    for p in todo {
        let ep = ctx.endpoints(p.cloud).await?;
        let lifetime = rotation_lifetime(p, req.years, req.days, &unknown)?;
        let plan = Plan::build(
            rotation_way(p, p.app_object_id.clone(), &req.retirement),
            None,
            Some(lifetime),
            &ep,
            &p.tenant_id,
            format!("the {} store", p.store.as_str()),
        );
        ctx.ui.info(format!(
            "  rotate  {:<16} app {}  tenant {}  key {}  ({} days)",
            p.profile,
            p.app_id,
            p.tenant_id,
            p.key_id.as_deref().unwrap_or("-"),
            lifetime.days
        ));
        items.push(serde_json::json!({"profile": p.profile, "action": "rotate", "store": p.store.as_str(), "app_id": p.app_id, "tenant_id": p.tenant_id, "key_id": p.key_id, "plan": plan.to_json(None)}));
    }
    for r in fresh {
        match &r.result {
            Ok(_) => {
                ctx.ui.info(format!("  skip    {:<16} (fresh)", r.profile));
                items.push(serde_json::json!({"profile": r.profile, "action": "none"}));
            }
            Err(u) => {
                ctx.ui
                    .info(format!("  refuse  {:<16} {}", r.profile, u.message));
                items.push(serde_json::json!({"profile": r.profile, "ok": false,
                    "error": {"exit_code": u.exit.code(), "kind": u.exit.name(), "message": u.message, "hint": u.hint}}));
            }
        }
    }
    let refused = fresh.iter().find_map(|r| r.result.as_ref().err());
    print_json(
        &ctx.ui,
        &serde_json::json!({"ok": refused.is_none(), "dry_run": true, "profiles": items}),
    );
    Ok(refused.map_or(Exit::Success, |u| u.exit))
}

fn print_table(ctx: &Ctx, rows: &[Row]) {
    let dead: Vec<&str> = rows
        .iter()
        .filter(|r| matches!(r.result, Ok((_, _, true))))
        .map(|r| r.profile.as_str())
        .collect();
    if !dead.is_empty() {
        ctx.ui.warn(format!(
            "The old secrets of {} no longer work: their keys were removed from the apps. Any \
             tool or script that holds one needs the new value: `{} show --reveal --json \
             --profile NAME` prints it.",
            dead.join(", "),
            crate::ui::invocation()
        ));
    }
    if ctx.ui.json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| match &r.result {
                Ok((action, p, removed)) => {
                    let mut doc = profile_json(p);
                    doc["action"] = (*action).into();
                    doc["ok"] = true.into();
                    if *action != "none" {
                        doc["old_key_removed"] = (*removed).into();
                    }
                    doc
                }
                Err(u) => serde_json::json!({
                    "profile": r.profile, "ok": false,
                    "error": {"exit_code": u.exit.code(), "kind": u.exit.name(), "message": u.message, "hint": u.hint},
                }),
            })
            .collect();
        let ok = rows.iter().all(|r| r.result.is_ok());
        print_json(&ctx.ui, &serde_json::json!({"ok": ok, "profiles": items}));
        return;
    }
    println!(
        "{:<16} {:<9} {:<38} {:<12} RESULT",
        "PROFILE", "ACTION", "KEY ID", "EXPIRES"
    );
    for r in rows {
        match &r.result {
            Ok((action, p, _)) => println!(
                "{:<16} {:<9} {:<38} {:<12} ok",
                r.profile,
                action,
                p.key_id.as_deref().unwrap_or("-"),
                p.secret_expires
                    .map(|e| e.date().to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            Err(u) => println!(
                "{:<16} {:<9} {:<38} {:<12} failed ({}): {}",
                r.profile,
                "-",
                "-",
                "-",
                u.exit.code(),
                u.message
            ),
        }
    }
}

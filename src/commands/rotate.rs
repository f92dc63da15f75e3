//! `rotate`: a new key, verified and stored, then the old one retired; `--all` for every profile.
//! `init` on an existing profile lands here too.

use super::{Ctx, days_left, print_json, profile_json, rfc3339};
use crate::cli::{RotateArgs, SignInArgs};
use crate::cloud::Endpoints;
use crate::exit::{Exit, UserError};
use crate::partner_center::{Graph, HttpClient, LifetimePolicy};
use crate::report;
use crate::rotation::{Engine, Outcome, Retirement};
use crate::signin;
use crate::store::{MetaStore, Profile, Secrets};
use crate::ui::Ui;
use anyhow::Context as _;
use futures_util::{FutureExt as _, StreamExt as _};
use time::OffsetDateTime;

/// What a rotation is asked to do, from `rotate` or from `init` on an existing profile.
pub struct Request<'a> {
    pub sign_in: &'a SignInArgs,
    pub retirement: Retirement,
    pub years: Option<u8>,
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
        verify_timeout: args.verify_timeout,
        dry_run: args.dry_run,
    };
    if args.all {
        return rotate_all(ctx, &req, args.if_expiring_within, args.jobs.into()).await;
    }
    let _lock = ctx.meta.lock(&ctx.profile)?;
    let p = ctx.require_profile()?;
    if let Some(days) = args.if_expiring_within
        && is_fresh(&p, days)
    {
        ctx.ui.done(format!(
            "The key expires in {} days, after the {days}-day window: nothing to do",
            p.secret_expires.map(days_left).unwrap_or_default()
        ));
        print_json(
            &ctx.ui,
            &serde_json::json!({"ok": true, "action": "none", "profile": profile_json(&p)}),
        );
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

fn lifetime_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::partner_center::ApiError>()
            .is_some_and(|a| {
                a.graph_code.as_deref() == Some("CredentialInvalidLifetimeAsPerAppPolicy")
            })
    })
}

/// A rotation keeps the lifetime the admin chose last time (1 or 2 years), unless told otherwise.
fn previous_years(p: &Profile) -> Option<u8> {
    let (end, start) = (p.secret_expires?, p.verified_at?);
    Some(if (end - start).whole_days() > 540 {
        2
    } else {
        1
    })
}

/// The key lifetime in days for a rotation: the requested years within the tenant policy.
/// A policy that blocks secrets is not decided here: for an existing app it may not apply
/// (it can be limited to apps created later, or overridden for this app), so Graph decides.
fn lifetime_days(policy: Option<&LifetimePolicy>, years: Option<u8>) -> Result<i64, UserError> {
    let max = policy
        .and_then(|p| p.max_password_lifetime_days)
        .map(i64::from);
    let days = i64::from(years.unwrap_or(1)) * 365;
    match max {
        Some(m) if days > m && years.is_some() => Err(UserError::new(
            Exit::Policy,
            format!("the tenant's policy caps secret lifetime at {m} days"),
        )
        .hint("pass a shorter --secret-years, or leave it out to use the longest allowed")),
        Some(m) if days > m => Ok(m),
        _ => Ok(days),
    }
}

struct Session {
    ep: Endpoints,
    http: HttpClient,
    graph: Graph,
    secrets: Secrets,
    policy: Option<LifetimePolicy>,
}

/// Endpoints, store and one sign-in to `tenant`, shared by the rotations of that tenant.
/// The policy is read up front only when asked: a single rotation reads it only if Graph
/// refuses the lifetime, which saves a request on every ordinary rotation.
async fn open_session(
    ctx: &mut Ctx,
    p: &Profile,
    sign_in: &SignInArgs,
    read_policy: bool,
) -> anyhow::Result<Session> {
    let cloud = ctx.cloud(Some(p))?;
    let ep = ctx.endpoints(cloud).await?;
    let secrets = ctx.secrets(cloud, Some(p)).await?;
    let http = ctx.http()?;
    let tenant = sign_in
        .tenant
        .clone()
        .unwrap_or_else(|| p.tenant_id.clone());
    let signed = signin::sign_in(&ctx.ui, &http, &ep, sign_in, Some(&tenant)).await?;
    let graph = Graph::new(http.clone(), &ep, signed.graph_token);
    let policy = if read_policy {
        read_policy_of(&ctx.ui, &graph).await
    } else {
        None
    };
    Ok(Session {
        ep,
        http,
        graph,
        secrets,
        policy,
    })
}

async fn read_policy_of(ui: &Ui, graph: &Graph) -> Option<LifetimePolicy> {
    usable_policy(ui, graph.default_app_management_policy().await)
}

/// The policy when it could be read. Admin agents and automation identities often may not read
/// it; that is no failure, since addPassword still enforces it.
pub(super) fn usable_policy(
    ui: &Ui,
    read: Result<LifetimePolicy, crate::partner_center::ApiError>,
) -> Option<LifetimePolicy> {
    read.map_err(|e| ui.detail(format!("could not read the app management policy: {e}")))
        .ok()
}

fn engine<'a>(ui: &'a Ui, s: &'a Session, meta: &'a MetaStore, verify_timeout: u64) -> Engine<'a> {
    Engine {
        ui,
        http: &s.http,
        ep: &s.ep,
        graph: &s.graph,
        secrets: &s.secrets,
        meta,
        verify: super::init::verify_options(verify_timeout),
    }
}

/// Sign in to the profile's tenant, then run the rotation engine on the profile.
pub async fn rotate_profile(
    ctx: &mut Ctx,
    mut p: Profile,
    req: &Request<'_>,
) -> anyhow::Result<Exit> {
    ctx.ui.heading(format!(
        "Rotating the key of profile '{}' (App ID {})",
        p.profile, p.app_id
    ));
    let mut s = open_session(ctx, &p, req.sign_in, req.dry_run).await?;
    let years = req.years.or_else(|| previous_years(&p));
    let days = lifetime_days(s.policy.as_ref(), years)?;
    let end = crate::input::days_from_now(days, "the key lifetime")?;
    if req.dry_run {
        return dry_run(ctx, &s, &p, end, &req.retirement).await;
    }
    let first = engine(&ctx.ui, &s, &ctx.meta, req.verify_timeout)
        .replace_key(&mut p, end, &req.retirement)
        .await;
    let (outcome, retired) = match first {
        // Refused for its lifetime (nothing was created): read the policy, and unless the admin
        // asked for that lifetime explicitly, try once more with the longest one allowed.
        Err(e) if lifetime_refused(&e) && req.years.is_none() => {
            s.policy = read_policy_of(&ctx.ui, &s.graph).await;
            // The longest the policy allows; without a readable policy there is nothing to retry with.
            let Some(days) = s
                .policy
                .as_ref()
                .and_then(|p| p.max_password_lifetime_days)
                .map(i64::from)
                .filter(|m| *m < days)
            else {
                return Err(e.context("rotating the key"));
            };
            ctx.ui.info(format!(
                "The tenant's policy refuses that lifetime; making a key of {days} days instead."
            ));
            let end = crate::input::days_from_now(days, "the key lifetime")?;
            engine(&ctx.ui, &s, &ctx.meta, req.verify_timeout)
                .replace_key(&mut p, end, &req.retirement)
                .await
        }
        other => other,
    }
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
    super::init::summary(ctx, &p, &s.secrets, action);
    Ok(Exit::Success)
}

/// `--dry-run`: what a rotation would do to the tenant, after read-only calls only.
async fn dry_run(
    ctx: &Ctx,
    s: &Session,
    p: &Profile,
    end: OffsetDateTime,
    retirement: &Retirement,
) -> anyhow::Result<Exit> {
    let app = s
        .graph
        .get_application(&p.app_id)
        .await?
        .ok_or_else(|| crate::rotation::app_not_found(&p.app_id, &p.tenant_id))?;
    let old = p.key_id.clone();
    let graph = crate::rotation::base(&s.ep.graph);
    let mut plan = vec![format!(
        "POST {graph}/v1.0/applications/{}/addPassword  (a key ending {})",
        app.id,
        end.date()
    )];
    plan.extend(crate::rotation::verification_plan(&s.ep, &p.tenant_id));
    plan.push(format!(
        "store the new secret in {}",
        s.secrets.describe(&p.profile)
    ));
    match (&old, retirement) {
        (
            Some(k),
            Retirement {
                overlap_days: Some(d),
                ..
            },
        ) => plan.push(format!("keep the old key {k} for {d} days")),
        (Some(k), Retirement { keep_old: true, .. }) => plan.push(format!("keep the old key {k}")),
        (Some(k), _) => plan.push(format!(
            "POST {}/v1.0/applications/{}/removePassword  (the old key {k})",
            graph, app.id
        )),
        (None, _) => {}
    }
    ctx.ui
        .heading("Dry run: nothing was changed. A rotation would:");
    for (i, step) in plan.iter().enumerate() {
        ctx.ui.info(format!("  {}. {step}", i + 1));
    }
    ctx.ui.info(format!(
        "  Tenant policy: {}",
        describe_policy(s.policy.as_ref())
    ));
    ctx.ui.info(format!(
        "  Keys on the app now: {}",
        app.password_credentials.len()
    ));
    print_json(
        &ctx.ui,
        &serde_json::json!({
            "ok": true, "dry_run": true, "action": "rotate", "profile": p.profile,
            "app_id": p.app_id, "app_object_id": app.id, "new_key_expires": rfc3339(Some(end)),
            "old_key_id": old, "plan": plan, "policy": policy_json(s.policy.as_ref()),
        }),
    );
    Ok(Exit::Success)
}

pub fn describe_policy(p: Option<&LifetimePolicy>) -> String {
    match p {
        None => "not readable with this sign-in (addPassword still enforces it)".into(),
        Some(p) if p.passwords_blocked => "client secrets are not allowed".into(),
        Some(LifetimePolicy {
            max_password_lifetime_days: Some(d),
            ..
        }) => format!("secrets live at most {d} days"),
        Some(_) => "no secret-lifetime limit".into(),
    }
}

pub fn policy_json(p: Option<&LifetimePolicy>) -> serde_json::Value {
    match p {
        None => serde_json::Value::Null,
        Some(p) => serde_json::json!({
            "passwords_blocked": p.passwords_blocked,
            "max_password_lifetime_days": p.max_password_lifetime_days,
        }),
    }
}

/// One line of the `--all` result table.
struct Row {
    profile: String,
    result: Result<(&'static str, Profile), UserError>,
}

/// `rotate --all`: one sign-in per tenant, then the profiles of that tenant several at a time.
/// The HTTP client is shared, so one `Retry-After` pauses the whole batch.
async fn rotate_all(
    ctx: &mut Ctx,
    req: &Request<'_>,
    window: Option<u32>,
    jobs: usize,
) -> anyhow::Result<Exit> {
    let mut all = ctx.meta.list()?;
    // With --tenant, the batch is that tenant's profiles (a sign-in is to one tenant).
    if let Some(t) = &req.sign_in.tenant {
        if uuid::Uuid::try_parse(t).is_err() {
            return Err(UserError::usage(
                "with --all, --tenant takes a tenant ID (GUID), as profiles record it",
            )
            .hint("`csp-onboard list --json` shows each profile's tenant_id")
            .into());
        }
        all.retain(|p| p.tenant_id.eq_ignore_ascii_case(t));
    }
    if all.is_empty() {
        return Err(UserError::new(Exit::NotFound, "no profiles are stored")
            .hint("run `csp-onboard init` first")
            .into());
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut todo: Vec<Profile> = Vec::new();
    let mut _locks = Vec::new();
    for p in all {
        let mut p = p;
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
                result: Ok(("none", p)),
            });
        } else {
            todo.push(p);
        }
    }
    if req.dry_run {
        return Ok(dry_run_all(ctx, &rows, &todo));
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
    // Per-profile progress would interleave: the batch reports in its table instead.
    let quiet = Ui {
        quiet: true,
        ..ctx.ui.clone()
    };
    for group in groups {
        // A failed sign-in or a blocking policy fails the whole tenant group, not the batch.
        let prepared = match open_session(ctx, &group[0], req.sign_in, true).await {
            Ok(s) => lifetime_days(s.policy.as_ref(), req.years).map(|d| (s, d)),
            Err(e) => Err(report::classify(&e)),
        };
        let (session, days) = match prepared {
            Ok(ok) => ok,
            Err(u) => {
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
        let end = crate::input::days_from_now(days, "the key lifetime")?;
        let spin = ctx.ui.spinner(format!(
            "Rotating {} profiles of tenant {}…",
            group.len(),
            group[0].tenant_id
        ));
        let eng = engine(&quiet, &session, &ctx.meta, req.verify_timeout);
        let eng = &eng;
        let results: Vec<Row> = futures_util::stream::iter(group)
            .map(|mut p| async move {
                // A bug in one profile's rotation must not take the batch (and its table) down.
                let r = std::panic::AssertUnwindSafe(eng.replace_key(&mut p, end, &req.retirement))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("internal error while rotating")));
                Row {
                    profile: p.profile.clone(),
                    result: match r {
                        Ok((Outcome::Replaced, _)) => Ok(("rotated", p)),
                        Ok((Outcome::Resumed, _)) => Ok(("resumed", p)),
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

/// `rotate --all --dry-run`: which profiles a batch would rotate, with no request at all.
fn dry_run_all(ctx: &Ctx, fresh: &[Row], todo: &[Profile]) -> Exit {
    ctx.ui
        .heading("Dry run: nothing was changed. `rotate --all` would:");
    let mut items = Vec::new();
    for p in todo {
        ctx.ui.info(format!(
            "  rotate  {:<16} app {}  tenant {}  key {}",
            p.profile,
            p.app_id,
            p.tenant_id,
            p.key_id.as_deref().unwrap_or("-")
        ));
        items.push(serde_json::json!({"profile": p.profile, "action": "rotate", "app_id": p.app_id, "tenant_id": p.tenant_id, "key_id": p.key_id}));
    }
    for r in fresh {
        ctx.ui.info(format!("  skip    {:<16} (fresh)", r.profile));
        items.push(serde_json::json!({"profile": r.profile, "action": "none"}));
    }
    ctx.ui.info("Each rotation: addPassword, verify (tokens and one Partner Center call), store, removePassword; one sign-in per tenant.");
    print_json(
        &ctx.ui,
        &serde_json::json!({"ok": true, "dry_run": true, "profiles": items}),
    );
    Exit::Success
}

fn print_table(ctx: &Ctx, rows: &[Row]) {
    if ctx.ui.json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| match &r.result {
                Ok((action, p)) => {
                    let mut doc = profile_json(p);
                    doc["action"] = (*action).into();
                    doc["ok"] = true.into();
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
            Ok((action, p)) => println!(
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

//! `init --billing` and check's billing line: request Microsoft Graph's `PartnerBilling.Read.All`
//! application permission for the app, get admin consent (an appRoleAssignment when the signed-in
//! admin may make one, else the admin-consent URL in a browser), and prove it the only way that
//! counts: an App-only token whose `roles` claim holds the permission (microsoft-apis.md §5b).

use super::Ctx;
use crate::cloud::Endpoints;
use crate::exit::{Exit, UserError};
use crate::partner_center::billing::{
    BILLING_PERMISSION, BillingClient, BillingError, Requested, admin_consent_url,
    ensure_available, graph_app_token, token_roles, wait_for_billing_role,
};
use crate::partner_center::{ApiError, Graph, HttpClient};
use crate::secret::Secret;
use crate::store::Profile;
use anyhow::Context as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long consent may take to reach the app's tokens after it was given.
const PROPAGATION_BUDGET: Duration = Duration::from_secs(180);
/// How long to wait for an admin to open the consent URL.
const HUMAN_BUDGET: Duration = Duration::from_secs(15 * 60);

/// Request the permission, consent, verify. `admin_token` is the signed-in admin's Graph token.
pub async fn grant(
    ctx: &Ctx,
    http: &HttpClient,
    ep: &Endpoints,
    admin_token: &Secret,
    p: &Profile,
    secret: &Secret,
) -> anyhow::Result<()> {
    ensure_available(ep.cloud).map_err(|e| anyhow::Error::new(e.to_user_error()))?;
    ctx.ui
        .heading("Billing access (Microsoft Graph PartnerBilling.Read.All)");
    let admin = BillingClient::new(http.clone(), ep, admin_token.clone());
    let spin = ctx
        .ui
        .spinner("Requesting PartnerBilling.Read.All for the app…");
    let role = admin
        .billing_role()
        .await
        .context("reading Microsoft Graph's application permissions")?;
    let object_id = match &p.app_object_id {
        Some(id) => id.clone(),
        None => Graph::new(http.clone(), ep, admin_token.clone())
            .get_application(&p.app_id)
            .await?
            .map(|a| a.id)
            .ok_or_else(|| crate::onboarding::keys::app_not_found(&p.app_id, &p.tenant_id))?,
    };
    let requested = admin
        .request_permission(&object_id, &role)
        .await
        .context("adding PartnerBilling.Read.All to the app's requiredResourceAccess")?;
    let app_sp = admin
        .service_principal_id(&p.app_id)
        .await
        .context("finding the app's service principal")?;
    spin.set("Granting admin consent through Graph…");
    let assigned = admin.assign_billing_role(&app_sp, &role).await;
    spin.finish();
    ctx.ui.done(match requested {
        Requested::Added => "The app now requests PartnerBilling.Read.All",
        Requested::AlreadyThere => "The app already requests PartnerBilling.Read.All",
    });
    match assigned {
        Ok(()) => ctx.ui.done("Admin consent granted (appRoleAssignment)"),
        Err(e) if e.exit() == Exit::Permission => {
            ctx.ui.info(
                "Your account may not grant application permissions through Graph (that takes a \
                 Global or Privileged Role Administrator): an admin approves it in a browser instead.",
            );
            consent_in_browser(ctx, http, ep, p, secret).await?;
        }
        Err(e) => return Err(anyhow::Error::new(e).context("granting admin consent")),
    }
    let spin = ctx
        .ui
        .spinner("Waiting until the app's token carries PartnerBilling.Read.All…");
    let took = wait_for_billing_role(
        http,
        ep,
        &p.tenant_id,
        &p.app_id,
        secret,
        PROPAGATION_BUDGET,
        |e| {
            spin.set(format!(
                "Waiting until the app's token carries PartnerBilling.Read.All ({} s)…",
                e.as_secs()
            ))
        },
    )
    .await;
    spin.finish();
    match took {
        Ok(t) => {
            ctx.ui.done(format!(
                "Billing access verified: the app's App-only token holds {BILLING_PERMISSION} ({:.1} s)",
                t.as_secs_f64()
            ));
            ctx.ui.info("  Next: `csp-onboard usage` shows every customer's Azure costs.");
            Ok(())
        }
        Err(crate::partner_center::billing::BillingError::NoPermission(_)) => Err(UserError::new(
            Exit::Permission,
            format!(
                "consent was given, but the app's token still lacks {BILLING_PERMISSION} after {} s",
                PROPAGATION_BUDGET.as_secs()
            ),
        )
        .hint("consent can take minutes to reach Entra's replicas: run `csp-onboard check` later; if it still says no, run `csp-onboard init --billing` again")
        .into()),
        Err(e) => Err(e.to_user_error().into()),
    }
}

/// `init --billing` on a profile that holds a key: sign in, then [`grant`]. Nothing else changes.
pub async fn add_to_existing(
    ctx: &mut Ctx,
    p: Profile,
    sign_in: &crate::cli::SignInArgs,
) -> anyhow::Result<Exit> {
    let cloud = ctx.cloud(Some(&p))?;
    ensure_available(cloud).map_err(|e| anyhow::Error::new(e.to_user_error()))?;
    let ep = ctx.endpoints(cloud).await?;
    let secrets = ctx.secrets(cloud, Some(&p)).await?;
    let secret = ctx.stored_secret(&secrets, &p).await?;
    let http = ctx.http()?;
    let signed = crate::signin::sign_in(&ctx.ui, &http, &ep, sign_in, Some(&p.tenant_id)).await?;
    grant(ctx, &http, &ep, &signed.graph_token, &p, &secret).await?;
    super::print_json(
        &ctx.ui,
        &serde_json::json!({"ok": true, "action": "billing_granted", "profile": p.profile,
                            "app_id": p.app_id, "billing_access": true}),
    );
    Ok(Exit::Success)
}

/// The admin-consent URL, opened in a browser when there is one (its loopback redirect is caught
/// here), always printed so an admin can approve from anywhere; done when the redirect says so or
/// the app's token shows the permission.
async fn consent_in_browser(
    ctx: &Ctx,
    http: &HttpClient,
    ep: &Endpoints,
    p: &Profile,
    secret: &Secret,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("listening on loopback for the consent redirect")?;
    let port = listener.local_addr()?.port();
    let state = uuid::Uuid::new_v4().to_string();
    // Entra matches a loopback redirect ignoring the port; the app registers http://localhost.
    let redirect = format!("http://localhost:{port}");
    let url = admin_consent_url(ep, &p.tenant_id, &p.app_id, &redirect, &state);
    ctx.ui.always(format!(
        "An administrator of the partner tenant approves the billing permission at:\n  {url}"
    ));
    if ctx.ui.interactive && webbrowser::open(url.as_str()).is_ok() {
        ctx.ui.info("(opened in your browser)");
    }
    let spin = ctx.ui.spinner("Waiting for admin consent…");
    let outcome = tokio::select! {
        r = catch_redirect(listener, &state) => r,
        r = wait_for_billing_role(http, ep, &p.tenant_id, &p.app_id, secret, HUMAN_BUDGET, |_| {}) => {
            // Only a wait that ran out is "no consent"; a failed token request says what failed.
            r.map(|_| ()).map_err(|e| match e {
                BillingError::NoPermission(None) => UserError::new(
                    Exit::Permission,
                    format!("no admin consent for {BILLING_PERMISSION} within {} minutes", HUMAN_BUDGET.as_secs() / 60),
                ).hint("open the URL above as a Global Administrator, then run `csp-onboard init --billing` again").into(),
                e => anyhow::Error::from(e.to_user_error()),
            })
        }
    };
    spin.finish();
    outcome?;
    ctx.ui.done("Admin consent given");
    Ok(())
}

/// The first redirect to the loopback listener carrying our `state`: Ok on `admin_consent=True`.
async fn catch_redirect(listener: tokio::net::TcpListener, state: &str) -> anyhow::Result<()> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let n = sock.read(&mut buf).await.unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("/");
        let q: Vec<(String, String)> = url::Url::parse(&format!("http://localhost{target}"))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if get("state").as_deref() != Some(state) {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let (ok, text) = match (get("admin_consent"), get("error")) {
            (Some(v), _) if v.eq_ignore_ascii_case("true") => {
                (true, "Consent recorded. You can close this tab.")
            }
            _ => (false, "Consent was not given. You can close this tab."),
        };
        let body = format!("<!doctype html><p>csp-onboard: {text}</p>");
        let _ = sock
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        if ok {
            return Ok(());
        }
        let why = get("error_description")
            .or(get("error"))
            .unwrap_or_default();
        return Err(UserError::new(
            Exit::Permission,
            format!("admin consent for {BILLING_PERMISSION} was declined: {}", why.lines().next().unwrap_or("")),
        )
        .hint("a Global Administrator of the partner tenant must approve it; run `csp-onboard init --billing` again")
        .into());
    }
}

/// For `check`: does the app's App-only Graph token hold the billing permission? None where the
/// export does not exist (usgov, china) or the token is not readable.
pub async fn billing_access(
    http: &HttpClient,
    ep: &Endpoints,
    p: &Profile,
    secret: &Secret,
) -> Result<Option<bool>, ApiError> {
    if ensure_available(ep.cloud).is_err() {
        return Ok(None);
    }
    let token = graph_app_token(http, ep, &p.tenant_id, &p.app_id, secret).await?;
    Ok(token_roles(&token).map(|r| r.iter().any(|r| r == BILLING_PERMISSION)))
}

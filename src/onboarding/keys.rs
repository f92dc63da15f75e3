//! Adding a key to the app without ever losing a working secret: record, add, keep, verify, switch, retire, and recovery after a crash at any step.

use super::Observer;
use crate::cloud::Endpoints;
use crate::exit::{Exit, UserError};
use crate::partner_center::verify::{VerifyError, VerifyEvent, VerifyOptions, verify_secret};
use crate::partner_center::{Application, Graph, HttpClient, PasswordCredential};
use crate::secret::Secret;
use crate::store::{MetaStore, PendingRotation, Profile, Secrets, Slot};
use anyhow::Context as _;
use time::OffsetDateTime;

/// Every key this tool adds is named so; with the profile and a timestamp it is unique,
/// which is what lets a re-run find a key whose creation response was lost.
pub const KEY_NAME_PREFIX: &str = "csp-onboard";

pub struct Engine<'a> {
    pub obs: &'a dyn Observer,
    pub http: &'a HttpClient,
    pub ep: &'a Endpoints,
    pub graph: &'a Graph,
    pub secrets: &'a Secrets,
    pub meta: &'a MetaStore,
    pub verify: VerifyOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new key is stored and verified.
    Replaced,
    /// An interrupted rotation was finished instead of starting another.
    Resumed,
}

/// What happens to the old key once the new one is stored.
#[derive(Debug, Clone, Default)]
pub struct Retirement {
    /// Leave it on the app.
    pub keep_old: bool,
    /// Leave it on the app for this many days, then the next signed-in run removes it.
    /// (Graph cannot shorten a password credential's end date: no PATCH of
    /// `passwordCredentials`, only addPassword/removePassword.)
    pub overlap_days: Option<u32>,
}

pub struct Retired {
    pub old_key_id: Option<String>,
    pub kept: bool,
    /// The old key was taken off the app: its secret no longer works anywhere.
    pub removed: bool,
    /// When a kept-for-overlap key will be removed.
    pub retire_after: Option<OffsetDateTime>,
}

impl Engine<'_> {
    fn save(&self, p: &mut Profile) -> anyhow::Result<()> {
        p.updated_at = OffsetDateTime::now_utc();
        self.meta.save(p).context("saving the profile metadata")
    }

    /// Add a key ending at `end`, verify it, store it, and retire the old one as `plan` says.
    pub async fn replace_key(
        &self,
        p: &mut Profile,
        end: OffsetDateTime,
        plan: &Retirement,
    ) -> anyhow::Result<(Outcome, Retired)> {
        // The app is read at most once, and only when something needs its keys: an ordinary
        // rotation sends addPassword, the verification and removePassword, nothing more.
        let app = if needs_app(p) {
            Some(
                self.graph
                    .get_application(&p.app_id)
                    .await?
                    .ok_or_else(|| app_not_found(&p.app_id, &p.tenant_id))?,
            )
        } else {
            None
        };
        let object_id = match (&app, &p.app_object_id) {
            (Some(a), _) => a.id.clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => unreachable!("needs_app reads the app when its object ID is unknown"),
        };
        p.app_object_id = Some(object_id.clone());
        if let Some(app) = &app {
            learn_key_by_hint(p, app);
        }
        self.retire_due(p, &object_id).await?;
        if let Some(app) = &app {
            self.sweep(p, &object_id, app).await?;
        }
        if let Some(done) = self.recover(p, &object_id, app.as_ref()).await? {
            return Ok(done);
        }
        let now = OffsetDateTime::now_utc();
        let name = format!(
            "{KEY_NAME_PREFIX} {} {} {}",
            p.profile,
            now.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        // 1. Record the intent before the call: if its response is lost, the name finds the key.
        p.pending = Some(PendingRotation {
            key_display_name: name.clone(),
            started_at: now,
            key_id: None,
            secret_expires: None,
            old_key_id: p.key_id.clone(),
            keep_old: plan.keep_old,
            overlap_days: plan.overlap_days,
        });
        self.save(p)?;
        // 2. Add the key. Never retried blindly: a retry could leave a second key.
        let spin = self.obs.progress("Creating the secret…");
        let added = self.graph.add_password(&object_id, &name, end).await;
        drop(spin);
        let new = match added {
            Ok(n) => n,
            Err(e) => {
                if e.status
                    .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429)
                {
                    // Refused outright (policy, permissions): nothing was created.
                    p.pending = None;
                    self.save(p)?;
                }
                return Err(anyhow::Error::new(e).context("adding a secret to the app"));
            }
        };
        self.obs.done(&format!(
            "Created a secret ({}…, expires {})",
            new.hint.clone().unwrap_or_else(|| new.secret.hint()),
            new.end.date()
        ));
        // 3. Keep the new secret before anything else can fail: it is shown only once.
        if let Err(e) = self
            .secrets
            .set(&p.profile, Slot::Pending, &new.secret)
            .await
        {
            // Without a place to keep it the key is useless; take it off the app again. If that
            // fails too, the pending record (now with the key ID) lets the next run remove it.
            if let Some(pending) = p.pending.as_mut() {
                pending.key_id = Some(new.key_id.clone());
            }
            if self
                .graph
                .remove_password(&object_id, &new.key_id)
                .await
                .is_ok()
            {
                p.pending = None;
            }
            self.save(p)?;
            return Err(anyhow::Error::new(e).context("keeping the new secret"));
        }
        if let Some(pending) = p.pending.as_mut() {
            pending.key_id = Some(new.key_id.clone());
            pending.secret_expires = Some(new.end);
        }
        self.save(p)?;
        // 4–6. Verify, switch, retire.
        let retired = self
            .finish(p, &object_id, &new.secret, &new.key_id, new.end, now)
            .await?;
        Ok((Outcome::Replaced, retired))
    }

    /// Verify the pending secret, make it the current one, then retire the old key.
    async fn finish(
        &self,
        p: &mut Profile,
        object_id: &str,
        secret: &Secret,
        key_id: &str,
        end: OffsetDateTime,
        created: OffsetDateTime,
    ) -> anyhow::Result<Retired> {
        // A key an interrupted run made long ago is past propagation: "expired" is final then.
        let opts = VerifyOptions {
            key_is_new: OffsetDateTime::now_utc() - created < self.verify.budget,
            ..self.verify.clone()
        };
        verify(
            self.obs,
            self.http,
            self.ep,
            &p.tenant_id,
            &p.app_id,
            secret,
            &opts,
        )
        .await
        .context(
            "verifying the new secret (it stays pending: run the same command again to retry)",
        )?;
        // Verify before switching: only now does the new secret replace the working one.
        self.secrets
            .set(&p.profile, Slot::Current, secret)
            .await
            .context("storing the verified secret")?;
        p.key_id = Some(key_id.to_string());
        // Graph's hint is the secret's first characters: the same as this.
        p.secret_hint = Some(secret.hint());
        p.secret_expires = Some(end);
        p.verified_at = Some(OffsetDateTime::now_utc());
        p.store = self.secrets.kind();
        self.save(p)?;
        self.obs.done(&format!(
            "Stored the secret in {}",
            self.secrets.describe(&p.profile)
        ));
        self.retire(p, object_id).await
    }

    /// The new key is stored: take the old one off the app (unless kept) and close the rotation.
    async fn retire(&self, p: &mut Profile, object_id: &str) -> anyhow::Result<Retired> {
        let pending = p.pending.clone();
        let old = pending
            .as_ref()
            .and_then(|r| r.old_key_id.clone())
            .filter(|o| p.key_id.as_deref() != Some(o.as_str()));
        let keep = pending.as_ref().is_some_and(|r| r.keep_old);
        let overlap = pending.as_ref().and_then(|r| r.overlap_days);
        // A kept key is recorded, so it is never taken for a leftover: --overlap until its date,
        // --keep-old for good (its own end date may be far off).
        let hold_until = match (overlap, keep) {
            (Some(days), _) => Some(crate::input::days_from_now(days.into(), "--overlap")?),
            (None, true) => Some(OffsetDateTime::now_utc() + time::Duration::days(365 * 100)),
            (None, false) => None,
        };
        let mut removed = false;
        if let Some(old) = old.as_deref() {
            if let Some(after) = hold_until {
                if !p.retiring.iter().any(|r| r.key_id == old) {
                    p.retiring.push(crate::store::RetiringKey {
                        key_id: old.to_string(),
                        after,
                    });
                }
            } else if let Some(other) = key_used_by_other_profile(self.meta, p, old)? {
                self.obs.warn(&format!(
                    "The old key {old} was kept: profile '{other}' uses the same app and may hold it."
                ));
            } else {
                let spin = self.obs.progress("Removing the old key from the app…");
                self.graph.remove_password(object_id, old).await.context(
                    "removing the old key (the new one is stored and works; run again to finish)",
                )?;
                drop(spin);
                self.obs.done(&format!("Removed the old key {old}"));
                removed = true;
            }
        }
        let retire_after = hold_until.filter(|_| old.is_some() && overlap.is_some());
        self.secrets.delete(&p.profile, Slot::Pending).await?;
        p.pending = None;
        self.save(p)?;
        Ok(Retired {
            old_key_id: old,
            kept: keep || overlap.is_some(),
            removed,
            retire_after,
        })
    }

    /// Remove the kept keys whose grace period is over.
    pub async fn retire_due(&self, p: &mut Profile, object_id: &str) -> anyhow::Result<()> {
        let now = OffsetDateTime::now_utc();
        let (due, later): (Vec<_>, Vec<_>) = p.retiring.drain(..).partition(|r| r.after <= now);
        p.retiring = later;
        let mut removed = false;
        for r in due {
            if p.key_id.as_deref() == Some(r.key_id.as_str())
                || key_used_by_other_profile(self.meta, p, &r.key_id)?.is_some()
            {
                continue;
            }
            if let Err(e) = self.graph.remove_password(object_id, &r.key_id).await {
                p.retiring.push(r);
                self.save(p)?;
                return Err(
                    anyhow::Error::new(e).context("removing an old key whose grace period is over")
                );
            }
            self.obs.done(&format!(
                "Removed the old key {} (its grace period is over)",
                r.key_id
            ));
            removed = true;
        }
        if removed {
            self.save(p)?;
        }
        Ok(())
    }

    /// Bring an interrupted rotation to an end: finish it when its secret is kept and works,
    /// otherwise take its key off the app. Returns `Some` when it finished one.
    async fn recover(
        &self,
        p: &mut Profile,
        object_id: &str,
        app: Option<&Application>,
    ) -> anyhow::Result<Option<(Outcome, Retired)>> {
        let Some(pending) = p.pending.clone() else {
            return Ok(None);
        };
        self.obs
            .info("Found an interrupted rotation; bringing it to an end first.");
        if pending.key_id.is_some() && p.key_id == pending.key_id {
            // Crashed after the switch: only the old key is left to retire.
            let retired = self.retire(p, object_id).await?;
            return Ok(Some((Outcome::Resumed, retired)));
        }
        let app = app.expect("needs_app reads the app while a rotation is pending");
        let on_app = |key_id: &str| {
            app.password_credentials
                .iter()
                .any(|c| c.key_id.eq_ignore_ascii_case(key_id))
        };
        // A key created minutes ago may not show on every replica yet: trust the kept secret
        // (verification proves whether the key exists) rather than a read that may lag.
        let recent = OffsetDateTime::now_utc() - pending.started_at < time::Duration::minutes(10);
        if let Some(key_id) = pending.key_id.as_deref() {
            let kept = self.secrets.get(&p.profile, Slot::Pending).await?;
            if let (Some(secret), true) = (kept, on_app(key_id) || recent) {
                // Crashed between keeping the new secret and switching to it: verify and switch.
                let end = pending
                    .secret_expires
                    .unwrap_or_else(OffsetDateTime::now_utc);
                let retired = self
                    .finish(p, object_id, &secret, key_id, end, pending.started_at)
                    .await?;
                return Ok(Some((Outcome::Resumed, retired)));
            }
        }
        // The key's creation may have been applied with its response lost, or its secret never
        // kept: no store can use it, so take it off the app. Found by ID, or else by its unique name.
        let ours = |c: &PasswordCredential| {
            pending
                .key_id
                .as_deref()
                .is_some_and(|k| c.key_id.eq_ignore_ascii_case(k))
                || c.display_name.as_deref() == Some(pending.key_display_name.as_str())
        };
        for c in app.password_credentials.iter().filter(|c| ours(c)) {
            if p.key_id.as_deref() != Some(c.key_id.as_str()) {
                self.graph.remove_password(object_id, &c.key_id).await?;
                self.obs.done(&format!(
                    "Removed the unfinished key {} from the app",
                    c.key_id
                ));
            }
        }
        // Not found at all: either its creation never reached Graph, or no replica shows it yet.
        // Remember its name, so a later rotation removes it once it shows.
        let found = app.password_credentials.iter().any(ours);
        if !found && !p.sweep_key_names.contains(&pending.key_display_name) {
            p.sweep_key_names.push(pending.key_display_name.clone());
        }
        self.secrets.delete(&p.profile, Slot::Pending).await?;
        p.pending = None;
        self.save(p)?;
        Ok(None)
    }

    /// Remove keys an earlier interrupted rotation left behind but could not see then.
    async fn sweep(
        &self,
        p: &mut Profile,
        object_id: &str,
        app: &Application,
    ) -> anyhow::Result<()> {
        if p.sweep_key_names.is_empty() {
            return Ok(());
        }
        for c in &app.password_credentials {
            let named = c
                .display_name
                .as_deref()
                .is_some_and(|n| p.sweep_key_names.iter().any(|s| s == n));
            if named && p.key_id.as_deref() != Some(c.key_id.as_str()) {
                self.graph.remove_password(object_id, &c.key_id).await?;
                self.obs.done(&format!(
                    "Removed the leftover key {} from the app",
                    c.key_id
                ));
            }
        }
        // Names older than a day are given up: whatever was created has long shown by now.
        p.sweep_key_names.retain(|n| {
            n.split(' ')
                .nth(2)
                .and_then(|t| {
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
                })
                .is_some_and(|t| OffsetDateTime::now_utc() - t < time::Duration::days(1))
                && !app
                    .password_credentials
                    .iter()
                    .any(|c| c.display_name.as_deref() == Some(n.as_str()))
        });
        self.save(p)
    }
}

/// Whether a rotation must read the app first: its object ID is unknown, a captured profile's key
/// is to be identified by its hint, leftovers are to be swept, or an unfinished rotation (not yet
/// switched) is to be recovered.
fn needs_app(p: &Profile) -> bool {
    let unswitched = p
        .pending
        .as_ref()
        .is_some_and(|r| r.key_id.is_none() || r.key_id != p.key_id);
    p.app_object_id.is_none()
        || (p.key_id.is_none() && p.secret_hint.is_some())
        || !p.sweep_key_names.is_empty()
        || unswitched
}

/// The one key on the app with this hint (the first characters of its secret), if exactly one.
pub fn key_with_hint<'a>(app: &'a Application, hint: &str) -> Option<&'a PasswordCredential> {
    let mut same = app
        .password_credentials
        .iter()
        .filter(|c| c.hint.as_deref() == Some(hint));
    let first = same.next();
    if same.next().is_some() { None } else { first }
}

/// A captured profile knows its secret's hint but not its key ID: when exactly one key on the
/// app has that hint, that is the key to retire.
fn learn_key_by_hint(p: &mut Profile, app: &Application) {
    if p.key_id.is_none()
        && let Some(c) = p.secret_hint.as_deref().and_then(|h| key_with_hint(app, h))
    {
        p.key_id = Some(c.key_id.clone());
    }
}

/// The name of another profile on the same app that holds `key_id`, or whose key is unknown.
pub fn key_used_by_other_profile(
    meta: &MetaStore,
    p: &Profile,
    key_id: &str,
) -> anyhow::Result<Option<String>> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    for q in meta.list()? {
        if q.profile == p.profile || !same(&q.app_id, &p.app_id) {
            continue;
        }
        let holds = q.key_id.as_deref().is_none_or(|k| same(k, key_id))
            || q.pending
                .as_ref()
                .and_then(|r| r.key_id.as_deref())
                .is_some_and(|k| same(k, key_id))
            || q.retiring.iter().any(|r| same(&r.key_id, key_id));
        if holds {
            return Ok(Some(q.profile));
        }
    }
    Ok(None)
}

pub fn app_not_found(app_id: &str, tenant: &str) -> anyhow::Error {
    UserError::new(
        Exit::NotFound,
        format!("no application with App ID {app_id} in tenant {tenant}"),
    )
    .hint("check the App ID (Partner Center > Account settings > App management) and the tenant")
    .into()
}

/// Prove a secret works (token, then an App-only Partner Center call), showing the wait.
/// When Partner Center refuses an app whose secret authenticates, the observer may have the admin
/// register it in App management ("Register existing app") and check again.
pub async fn verify(
    obs: &dyn Observer,
    http: &HttpClient,
    ep: &Endpoints,
    tenant: &str,
    app_id: &str,
    secret: &Secret,
    opts: &VerifyOptions,
) -> anyhow::Result<()> {
    loop {
        let spin = obs.progress("Verifying the secret (token, then a Partner Center call)…");
        let result = verify_secret(http, ep, tenant, app_id, secret, opts, |e| match e {
            // The spinner shows the one timer; the message says only what is happening.
            VerifyEvent::Propagating { attempt, .. } => spin.set(format!(
                "Not accepted by Entra ID yet; trying again (attempt {attempt})…"
            )),
            VerifyEvent::Confirmed { count, of } => spin.set(format!("Confirming ({count}/{of})…")),
        })
        .await;
        drop(spin);
        match result {
            Ok(_) => {
                obs.done("Verified: the secret gets a token and Partner Center accepts it");
                return Ok(());
            }
            Err(VerifyError::NotRegisteredInPartnerCenter { .. })
                if obs.check_registration_again(app_id)? =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

//! The steps of `init` that ask: the way in, the app's name, the key's lifetime, the Commerce ID,
//! billing access.
//! Every question goes through a [`Prompter`] (dialoguer on a terminal; without one, the flag
//! that answers it is named), and the answers become the core's plan (`crate::onboarding`).
//! The terminal is also the core's [`Observer`].

use crate::exit::{Exit, UserError};
use crate::onboarding::{Lifetime, Observer, PolicyState, Progress};
use crate::ui::{Spinner, Ui};

pub const DEFAULT_APP_NAME: &str = "Partner Center web app (csp-onboard)";
pub const COMMERCE_ID_WHERE: &str = "Partner Center > Account settings > App management";

/// Questions, each with the flag that answers it when nobody can be asked.
pub trait Prompter {
    /// Prompts are possible (a terminal, not `--non-interactive`).
    fn interactive(&self) -> bool;
    fn say(&self, msg: &str);
    fn warn(&self, msg: &str);
    fn select(
        &self,
        prompt: &str,
        items: &[&str],
        default: usize,
        flag: &str,
    ) -> anyhow::Result<usize>;
    fn input(
        &self,
        prompt: &str,
        default: Option<&str>,
        flag: &str,
        validate: fn(&str) -> Result<(), String>,
    ) -> anyhow::Result<String>;
    fn input_optional(
        &self,
        prompt: &str,
        validate: fn(&str) -> Result<(), String>,
    ) -> anyhow::Result<Option<String>>;
    fn confirm(&self, prompt: &str, default: bool) -> anyhow::Result<bool>;
}

impl Prompter for Ui {
    fn interactive(&self) -> bool {
        self.interactive
    }
    fn say(&self, msg: &str) {
        self.info(msg);
    }
    fn warn(&self, msg: &str) {
        Ui::warn(self, msg);
    }
    fn select(
        &self,
        prompt: &str,
        items: &[&str],
        default: usize,
        flag: &str,
    ) -> anyhow::Result<usize> {
        Ui::select(self, prompt, items, default, flag)
    }
    fn input(
        &self,
        prompt: &str,
        default: Option<&str>,
        flag: &str,
        validate: fn(&str) -> Result<(), String>,
    ) -> anyhow::Result<String> {
        Ui::input(self, prompt, default, flag, validate)
    }
    fn input_optional(
        &self,
        prompt: &str,
        validate: fn(&str) -> Result<(), String>,
    ) -> anyhow::Result<Option<String>> {
        Ui::input_optional(self, prompt, validate)
    }
    fn confirm(&self, prompt: &str, default: bool) -> anyhow::Result<bool> {
        Ui::confirm(self, prompt, default)
    }
}

struct SpinnerProgress(Spinner);

impl Progress for SpinnerProgress {
    fn set(&self, msg: String) {
        self.0.set(msg);
    }
}

impl Observer for Ui {
    fn done(&self, msg: &str) {
        Ui::done(self, msg);
    }
    fn info(&self, msg: &str) {
        Ui::info(self, msg);
    }
    fn warn(&self, msg: &str) {
        Ui::warn(self, msg);
    }
    fn progress(&self, msg: &str) -> Box<dyn Progress + Send + Sync + '_> {
        Box::new(SpinnerProgress(self.spinner(msg)))
    }
    fn check_registration_again(&self, app_id: &str) -> anyhow::Result<bool> {
        if !self.interactive {
            return Ok(false);
        }
        Ui::warn(
            self,
            format!(
                "The secret authenticates, but Partner Center does not accept the app yet.\n  \
                 Open {}, choose \"Register existing app\" and register App ID {app_id}.",
                crate::partner_center::APP_MANAGEMENT_URL
            ),
        );
        self.confirm("Check again now?", true)
    }
    fn shorter_lifetime(&self, refused_days: i64) -> anyhow::Result<Option<i64>> {
        if !self.interactive || refused_days <= 1 {
            return Ok(None);
        }
        Ui::warn(
            self,
            format!(
                "The tenant's policy refuses a key of {refused_days} days, and its limit could not be read."
            ),
        );
        let v = Ui::input(
            self,
            &format!("Key lifetime in days (less than {refused_days})"),
            None,
            "--secret-days",
            move |v| match v.parse::<i64>() {
                Ok(d) if (1..refused_days).contains(&d) => Ok(()),
                _ => Err(format!(
                    "give a number of days from 1 to {}",
                    refused_days - 1
                )),
            },
        )?;
        Ok(v.parse().ok())
    }
}

/// How the admin wants to set up the web app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WayIn {
    Create,
    Existing(String),
    Capture,
}

pub const MENU: &str = "How do you want to set up the Partner Center web app?";

/// The way in from the flags, else the menu.
pub fn choose_way(
    p: &dyn Prompter,
    app_id: Option<&str>,
    capture: bool,
    resume_app: Option<&str>,
) -> anyhow::Result<WayIn> {
    if let Some(app) = app_id {
        return Ok(if capture {
            WayIn::Capture
        } else {
            WayIn::Existing(app.to_string())
        });
    }
    if let Some(app) = resume_app {
        // A run that created the app but stopped before its key: never create a second app.
        return Ok(WayIn::Existing(app.to_string()));
    }
    if !p.interactive() {
        return Ok(WayIn::Create);
    }
    let choice = p.select(
        MENU,
        &[
            "Create a new web app (recommended)",
            "Use an existing web app (add a new key to it)",
            "Capture an app and key made in the Partner Center portal (no sign-in)",
        ],
        0,
        "--app-id",
    )?;
    Ok(match choice {
        0 => WayIn::Create,
        1 => WayIn::Existing(p.input(
            "App ID of the existing web app",
            None,
            "--app-id",
            validate_guid,
        )?),
        _ => WayIn::Capture,
    })
}

/// An Admin agent's plan was refused: offer App management and capture instead (on a terminal).
pub fn offer_capture(p: &dyn Prompter, refusal: &UserError) -> anyhow::Result<bool> {
    if !p.interactive() {
        return Ok(false);
    }
    p.say(&format!(
        "\n{}.\n\nThe way that works for this account: in {} ({}),\n  \"Add new web app\", then \"Add key\"; copy the App ID and the key's value.",
        refusal.message,
        crate::onboarding::APP_MANAGEMENT,
        crate::partner_center::APP_MANAGEMENT_URL
    ));
    p.confirm("Capture the app and key made there now?", true)
}

pub fn ask_app_name(p: &dyn Prompter, flag: Option<&str>) -> anyhow::Result<String> {
    match flag {
        Some(n) => Ok(n.to_string()),
        None if p.interactive() => p.input(
            "Name of the new web app",
            Some(DEFAULT_APP_NAME),
            "--app-name",
            |v| {
                if v.is_empty() || v.len() > 120 {
                    Err("give a name of 1 to 120 characters".into())
                } else {
                    Ok(())
                }
            },
        ),
        None => Ok(DEFAULT_APP_NAME.to_string()),
    }
}

pub fn ask_commerce_id(p: &dyn Prompter, flag: Option<&str>) -> anyhow::Result<Option<String>> {
    if let Some(c) = flag {
        return Ok(Some(c.trim().to_lowercase()));
    }
    // Short prompt, so that a GUID typed after it fits in 80 columns: where the input wraps,
    // dialoguer's redraw after a validation error leaves a stale line behind.
    if p.interactive() {
        // Not "next to the App ID": when creating, the app does not exist yet.
        p.say(&format!(
            "The Commerce ID is shown in {COMMERCE_ID_WHERE}, for an app registered there. It is \
             optional: `{} init --commerce-id <guid>` adds it later.",
            crate::ui::invocation()
        ));
    }
    let v = p.input_optional("Commerce ID (optional, Enter to skip)", validate_guid)?;
    Ok(v.map(|c| c.to_lowercase()))
}

/// Offer billing access on a terminal, where the cloud has Graph's partner billing API.
/// Yes by default: reading customers' usage and costs is what the app is for (issue 13), and an
/// account that may not grant it through Graph is led to the admin-consent URL instead.
pub fn offer_billing(p: &dyn Prompter, cloud: crate::cloud::Cloud) -> anyhow::Result<bool> {
    if !p.interactive() || crate::partner_center::billing::ensure_available(cloud).is_err() {
        return Ok(false);
    }
    // The why on its own line, the question short: a prompt wider than 80 columns wraps.
    p.say(
        "The app can also read your customers' Azure usage and costs (Graph \
         PartnerBilling.Read.All; needs admin consent).",
    );
    p.confirm("Add billing access?", true)
}

/// The key lifetime: `--secret-days`, `--secret-years`, or a choice among those the policy allows.
/// An unknown policy limits nothing here: Graph decides, and a refusal is handled then.
pub fn choose_lifetime(
    p: &dyn Prompter,
    years_flag: Option<u8>,
    days_flag: Option<u32>,
    policy: &PolicyState,
    new_app: bool,
) -> anyhow::Result<Lifetime> {
    let known = policy.known();
    // For a new app the tenant default is the whole story: stop before creating anything.
    // An existing app may be exempt (own policy, or created before the restriction): Graph decides.
    if known.is_some_and(|k| k.passwords_blocked) && !new_app {
        p.warn("The tenant's default policy blocks new secrets; trying anyway, since this app may be exempt.");
    } else if known.is_some_and(|k| k.passwords_blocked) {
        return Err(UserError::new(Exit::Policy, "the tenant's app management policy does not allow client secrets")
            .hint("ask a Global Administrator to allow password credentials for this app (Entra ID > App management policies), or use a certificate-based tool")
            .into());
    }
    let max_days = policy.max_days();
    if let Some(d) = days_flag {
        let d = i64::from(d);
        if let Some(m) = max_days.filter(|m| d > *m) {
            return Err(UserError::new(
                Exit::Policy,
                format!(
                    "the tenant's policy caps secret lifetime at {m} days; {d} days is not allowed"
                ),
            )
            .hint(format!("pass --secret-days {m} (or less)"))
            .into());
        }
        return Ok(Lifetime {
            days: d,
            explicit: true,
        });
    }
    let allowed: Vec<u8> = [1u8, 2]
        .into_iter()
        .filter(|y| max_days.is_none_or(|m| i64::from(*y) * 365 <= m))
        .collect();
    if let Some(y) = years_flag {
        if !allowed.contains(&y) {
            return Err(UserError::new(
                Exit::Policy,
                format!(
                    "the tenant's policy caps secret lifetime at {} days; {y} year(s) is not allowed",
                    max_days.unwrap_or(0)
                ),
            )
            .hint(match (allowed.first(), max_days) {
                (Some(a), _) => format!("pass --secret-years {a}"),
                (None, Some(m)) => format!("pass --secret-days {m} (or less)"),
                (None, None) => "ask a Global Administrator to raise the limit".into(),
            })
            .into());
        }
        return Ok(Lifetime {
            days: i64::from(y) * 365,
            explicit: true,
        });
    }
    let days = match (allowed.as_slice(), max_days) {
        ([], Some(m)) => {
            p.warn(&format!(
                "The tenant's policy caps secret lifetime at {m} days; the key will last {m} days."
            ));
            m
        }
        ([only], _) => {
            if max_days.is_some() {
                p.say("The tenant's policy allows keys of at most 1 year.");
            }
            i64::from(*only) * 365
        }
        _ if p.interactive() => {
            let i = p.select(
                "How long should the key last?",
                &["1 year (recommended)", "2 years"],
                0,
                "--secret-years",
            )?;
            if i == 0 { 365 } else { 730 }
        }
        _ => 365,
    };
    Ok(Lifetime {
        days,
        explicit: false,
    })
}

pub fn validate_guid(v: &str) -> Result<(), String> {
    crate::input::canonical_guid(v)
        .map(|_| ())
        .ok_or_else(|| format!("'{v}' is not a GUID (like 3f2504e0-4f89-11d3-9a0c-0305e82c3301)"))
}

/// A pasted secret value; a GUID here is nearly always the secret's ID copied by mistake.
pub fn validate_secret_value(v: &str) -> Result<(), String> {
    if uuid::Uuid::try_parse(v.trim()).is_ok() {
        return Err("that looks like the secret's ID; paste its Value".into());
    }
    if v.trim().len() < 8 {
        return Err("too short for a client secret; paste its Value".into());
    }
    if v.trim().chars().any(char::is_whitespace) {
        return Err(
            "it has a space or line break inside, which a secret value never has; paste it again, whole"
                .into(),
        );
    }
    Ok(())
}

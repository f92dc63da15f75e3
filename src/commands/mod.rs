//! One file per subcommand, and the context they share (terminal, profile, endpoints, store).

mod billing_access;
mod check;
mod init;
mod list;
mod man;
mod remove;
mod rotate;
mod show;
mod usage;

use crate::cli::{CloudArg, Command, StoreArg};
use crate::cloud::{Cloud, Endpoints};
use crate::emulator::{Emulator, EmulatorConfig, Knobs};
use crate::exit::{Exit, UserError};
use crate::onboarding::Session;
use crate::partner_center::VerifyOptions;
use crate::partner_center::{HttpClient, WaitReason};
use crate::store::{self, MetaStore, Profile, Secrets, StoreKind};
use crate::ui::Ui;
use anyhow::Context as _;
use clap::CommandFactory;
use std::path::PathBuf;
use std::sync::Arc;

pub async fn run(cli: crate::cli::Cli) -> anyhow::Result<Exit> {
    let g = &cli.global;
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = crate::cli::Cli::command();
            clap_complete::generate(shell, &mut cmd, "csp-onboard", &mut std::io::stdout());
            return Ok(Exit::Success);
        }
        Command::Man => {
            use std::io::Write;
            std::io::stdout().write_all(&man::page()?)?;
            return Ok(Exit::Success);
        }
        Command::Emulator(args) => {
            crate::emulator::run(args).await?;
            return Ok(Exit::Success);
        }
        _ => {}
    }
    // Every command ends: a person signing in gets the device code's 15 minutes and more; a
    // check with no person involved gets a minute.
    let secs = g.deadline.unwrap_or(match &cli.command {
        Command::Check(a) if a.sign_in.auth.is_none() => 60,
        Command::Show(_) | Command::List(_) => 60,
        // The export's own wait (--wait-minutes), plus time to download and sum it.
        Command::Usage(a) => a.wait_minutes.saturating_mul(60).saturating_add(1800),
        _ => 1800,
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut ctx = Ctx::new(g)?;
    ctx.deadline = Some(deadline);
    let work = async {
        match cli.command {
            Command::Init(args) => init::run(&mut ctx, args).await,
            Command::Rotate(args) => rotate::run(&mut ctx, args).await,
            Command::Show(args) => show::run(&ctx, args).await,
            Command::List(_) => list::run(&ctx).await,
            Command::Check(args) => check::run(&mut ctx, args).await,
            Command::Remove(args) => remove::run(&mut ctx, args).await,
            Command::Usage(args) => usage::run(&mut ctx, args).await,
            Command::Completions { .. } | Command::Man | Command::Emulator(_) => unreachable!(),
        }
    };
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(result) => result,
        // Stopping here is as safe as a kill at the same point: the next run converges.
        Err(_) => Err(UserError::new(
            Exit::Unreachable,
            format!("stopped after {secs} s, this run's deadline, while waiting for the service"),
        )
        .hint("run the command again (it finishes or undoes what this run started), or allow more time with --deadline SECS")
        .into()),
    }
}

/// Every `CSP_ONBOARD_*` variable that is set must be readable: a non-UTF-8 value would
/// otherwise count as unset, and e.g. turn a capture (with `CSP_ONBOARD_APP_SECRET`) into a
/// sign-in and a new key the user did not ask for. Exit 2, naming the variable, never its value.
pub fn check_environment() -> Result<(), UserError> {
    for (name, value) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CSP_ONBOARD_") && value.to_str().is_none() {
            return Err(UserError::usage(format!(
                "{name} is set, but its value is not valid UTF-8"
            ))
            .hint(format!("set {name} to a readable value, or unset it")));
        }
    }
    Ok(())
}

/// What every profile command needs: the terminal, the profile name, the stores, the endpoints.
pub struct Ctx {
    pub ui: Ui,
    pub profile: String,
    cloud_flag: Option<Cloud>,
    /// `--store`, when given on the command line.
    store_flag: Option<StoreKind>,
    /// CSP_ONBOARD_STORE: the store for new profiles (a default, never a conflict).
    store_env: Option<StoreKind>,
    pub data_dir: PathBuf,
    pub meta: MetaStore,
    emulator: Option<Emulator>,
    /// The run's total deadline (--deadline), passed to the HTTP client.
    deadline: Option<std::time::Instant>,
}

impl Ctx {
    fn new(g: &crate::cli::GlobalArgs) -> anyhow::Result<Ctx> {
        let cloud_flag = g.cloud.map(|c| match c {
            CloudArg::Global => Cloud::Global,
            CloudArg::Usgov => Cloud::Usgov,
            CloudArg::China => Cloud::China,
            CloudArg::Emulator => Cloud::Emulator,
            CloudArg::Custom => Cloud::Custom,
        });
        // The emulator demo has a profile of its own: `default` stays free for the real tenant.
        let profile = g.profile.clone().unwrap_or_else(|| {
            if cloud_flag == Some(Cloud::Emulator) {
                DEMO_PROFILE.to_string()
            } else {
                "default".to_string()
            }
        });
        store::validate_profile_name(&profile)?;
        if cloud_flag == Some(Cloud::Custom) {
            // Checked before anything is written: a usage error leaves no trace.
            Endpoints::custom_from_env()?;
        }
        let data_dir = store::data_dir()?;
        let meta = MetaStore::open(&data_dir)?;
        Ok(Ctx {
            ui: Ui::new(g.json, g.quiet, g.verbose, g.non_interactive),
            profile,
            cloud_flag,
            store_flag: g.store.map(|s| match s {
                StoreArg::Keychain => StoreKind::Keychain,
                StoreArg::File => StoreKind::File,
            }),
            store_env: match std::env::var("CSP_ONBOARD_STORE") {
                Err(_) => None,
                Ok(v) if v.trim().is_empty() => None,
                Ok(v) => Some(v.trim().parse::<StoreKind>().map_err(|_| {
                    UserError::usage(format!("CSP_ONBOARD_STORE={v} is not a store"))
                        .hint("use keychain or file")
                })?),
            },
            data_dir,
            meta,
            emulator: None,
            deadline: None,
        })
    }

    /// The cloud: a stored profile's own, else the flag, else global. A profile belongs to its
    /// cloud, and a `custom` one to the endpoints it was made with: another cloud or other
    /// endpoints (by flag or environment) are refused here, before any request, so that a
    /// stored secret never goes where the environment happens to point.
    pub fn cloud(&self, existing: Option<&Profile>) -> anyhow::Result<Cloud> {
        let Some(p) = existing else {
            return Ok(self.cloud_flag.unwrap_or(Cloud::Global));
        };
        if let Some(flag) = self.cloud_flag
            && flag != p.cloud
        {
            let given = if std::env::args_os().any(|a| {
                // args_os: a non-UTF-8 argument (a path) must not panic here.
                let a = a.to_string_lossy();
                a == "--cloud" || a.starts_with("--cloud=")
            }) {
                format!("--cloud {}", flag.as_str())
            } else {
                format!("CSP_ONBOARD_CLOUD={}", flag.as_str())
            };
            return Err(UserError::usage(format!(
                "profile '{}' belongs to the {} cloud; {given} would send its secret elsewhere",
                p.profile,
                p.cloud.as_str()
            ))
            .hint(format!(
                "leave out --cloud and unset CSP_ONBOARD_CLOUD for this profile, or use another --profile for the {} cloud",
                flag.as_str()
            ))
            .into());
        }
        if p.cloud == Cloud::Custom
            && let Some(bound) = &p.endpoints
        {
            let here = store::BoundEndpoints::of(&Endpoints::custom_from_env()?);
            for (var, made, now) in [
                (
                    crate::cloud::ENV_AUTHORITY,
                    &bound.authority,
                    &here.authority,
                ),
                (crate::cloud::ENV_GRAPH, &bound.graph, &here.graph),
                (
                    crate::cloud::ENV_PARTNER_CENTER,
                    &bound.partner_center,
                    &here.partner_center,
                ),
            ] {
                if made != now {
                    return Err(UserError::usage(format!(
                        "profile '{}' was made with {var}={made}, not {now}; its secret is not sent to other endpoints",
                        p.profile
                    ))
                    .hint(format!("set {var} back to {made}, or use another --profile for these endpoints"))
                    .into());
                }
            }
        }
        Ok(p.cloud)
    }

    /// A profile that must exist (exit 8 otherwise).
    pub fn require_profile(&self) -> anyhow::Result<Profile> {
        self.meta.load(&self.profile)?.ok_or_else(|| {
            UserError::new(
                Exit::NotFound,
                format!("no profile named '{}' is stored", self.profile),
            )
            .hint(
                "run `csp-onboard init` to create it, or `csp-onboard list` to see what is stored",
            )
            .into()
        })
    }

    /// The endpoints of a cloud. `emulator` starts the built-in emulator in this process,
    /// with its state kept in the data directory so that a second run sees the first's app.
    pub async fn endpoints(&mut self, cloud: Cloud) -> anyhow::Result<Endpoints> {
        match cloud {
            Cloud::Custom => {
                let ep = Endpoints::custom_from_env()?;
                self.meta.bind_custom_endpoints(&ep);
                Ok(ep)
            }
            Cloud::Emulator => {
                if self.emulator.is_none() {
                    let dir = self.data_dir.join("emulator");
                    store::ensure_private_dir(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    let config = EmulatorConfig {
                        state_file: Some(dir.join("state.json")),
                        knobs: emulator_demo_knobs(),
                        ..Default::default()
                    };
                    let emu = Emulator::start(config)
                        .await
                        .context("starting the built-in emulator")?;
                    self.ui.detail(format!(
                        "built-in emulator: authority {}, Graph {}, Partner Center {}",
                        emu.authority_url(),
                        emu.graph_url(),
                        emu.partner_center_url()
                    ));
                    self.emulator = Some(emu);
                }
                let emu = self.emulator.as_ref().expect("started above");
                Ok(Endpoints::from_urls(
                    Cloud::Emulator,
                    &emu.authority_url(),
                    &emu.graph_url(),
                    &emu.partner_center_url(),
                )?)
            }
            public => Ok(Endpoints::public(public).expect("a public cloud")),
        }
    }

    /// Sign in to `tenant` of `cloud` and set up Graph: the one way every command opens a session.
    pub async fn session(
        &mut self,
        cloud: Cloud,
        sign_in: &crate::cli::SignInArgs,
        tenant: Option<&str>,
    ) -> anyhow::Result<Session> {
        let ep = self.endpoints(cloud).await?;
        let http = self.http()?;
        let terminal = crate::signin::Terminal {
            ui: &self.ui,
            args: sign_in,
        };
        Session::open(ep, http, &terminal, tenant).await
    }

    /// The tenant of the built-in emulator, the natural default there.
    pub fn emulator_tenant(&self) -> Option<String> {
        self.emulator.as_ref().map(|e| e.tenant_id())
    }

    /// One HTTP client for the run; waits (throttling, replication) are reported on stderr.
    pub fn http(&self) -> anyhow::Result<HttpClient> {
        let ui = self.ui.clone();
        let mut http = HttpClient::new()?;
        if let Some(d) = self.deadline {
            http = http.with_deadline(d);
        }
        Ok(http.on_wait(Arc::new(move |n| {
            let why = match n.reason {
                WaitReason::Throttled => "throttled by",
                WaitReason::Transient => "no answer from",
                WaitReason::Replication => "waiting for replication in",
                WaitReason::Propagation => "secret not accepted yet by",
            };
            let line = format!(
                "{why} {}; retrying in {:.1} s (attempt {})",
                n.service,
                n.delay.as_secs_f64(),
                n.attempt
            );
            // A service that does not answer is news at any verbosity: silence looks like a hang.
            if n.reason == WaitReason::Transient && !ui.quiet {
                ui.warn(line);
            } else {
                ui.detail(line);
            }
        })))
    }

    /// The profile's current secret (exit 8 when the store has none).
    pub async fn stored_secret(
        &self,
        secrets: &Secrets,
        p: &Profile,
    ) -> anyhow::Result<crate::secret::Secret> {
        Ok(secrets
            .get(&p.profile, store::Slot::Current)
            .await?
            .ok_or_else(|| {
                UserError::new(
                    Exit::NotFound,
                    format!("no secret is stored for profile '{}'", p.profile),
                )
                .hint("run `csp-onboard init` to create one")
            })?)
    }

    /// The secret store, opened and probed; the emulator cloud may fall back to the file store.
    /// A stored profile keeps using the store that holds its secret.
    pub async fn secrets(
        &self,
        cloud: Cloud,
        existing: Option<&Profile>,
    ) -> anyhow::Result<Secrets> {
        let kind = match (self.store_flag, existing) {
            // The emulator's fake secrets fell back to the file store once: keep using it.
            (Some(StoreKind::Keychain), Some(p))
                if p.store == StoreKind::File && p.cloud == Cloud::Emulator =>
            {
                StoreKind::File
            }
            (Some(flag), Some(p)) if flag != p.store => {
                return Err(UserError::usage(format!(
                    "profile '{}' keeps its secret in the {} store, not the {} store",
                    p.profile,
                    p.store.as_str(),
                    flag.as_str()
                ))
                .hint(format!(
                    "leave out --store (or pass --store {}); to move it, `csp-onboard remove` then `init` again",
                    p.store.as_str()
                ))
                .into());
            }
            (Some(flag), _) => flag,
            (None, Some(p)) => p.store,
            (None, None) => self.store_env.unwrap_or(StoreKind::Keychain),
        };
        // A profile whose secret is in the keychain: a locked keychain is said as such, never
        // hidden behind the emulator's file fallback ("no secret is stored", then a silent move).
        let stored = existing.filter(|p| p.store == kind && kind == StoreKind::Keychain);
        let (secrets, notice) = store::open_secrets_async(kind, cloud, stored.is_some())
            .await
            .map_err(|e| match stored {
                Some(p) => anyhow::Error::from(e.to_user_error_for_stored(&p.profile)),
                None => e.into(),
            })?;
        if let Some(n) = notice {
            self.ui.warn(n);
        }
        Ok(secrets)
    }

    /// Said once, when a new profile's secret has been stored: the file store is never a silent
    /// choice, but it is no news to whoever passed `--store file`, and later commands simply use
    /// the profile's own store.
    pub fn file_store_notice(&self, p: &Profile) -> Option<String> {
        (p.store == StoreKind::File && self.store_flag.is_none()).then(|| {
            "The profile keeps its secret in the file store (a file readable only by you), \
             not in the OS keychain."
                .to_string()
        })
    }
}

/// The profile of the emulator demo when no --profile is given.
pub const DEMO_PROFILE: &str = "emulator";

/// The in-process emulator behaves like a real tenant, but nobody is there to approve a device
/// code on its web page, so it approves after the first poll.
fn emulator_demo_knobs() -> Knobs {
    Knobs {
        auto_approve_device_code_after_polls: Some(1),
        device_code_interval_secs: Some(1),
        ..Default::default()
    }
}

/// The version of the `--json` documents' shapes (README "JSON output"): raised when a field
/// changes meaning or goes away; new fields may appear within a version.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Print the JSON result document (with `--json`), with the fields every document shares:
/// `schema_version`, and `ok` (true unless the command set it).
pub fn print_json(ui: &Ui, doc: &serde_json::Value) {
    if ui.json {
        let mut doc = doc.clone();
        if let Some(o) = doc.as_object_mut() {
            o.insert("schema_version".into(), JSON_SCHEMA_VERSION.into());
            o.entry("ok").or_insert(true.into());
        }
        println!("{doc:#}");
    }
}

pub fn rfc3339(t: Option<time::OffsetDateTime>) -> Option<String> {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
}

/// Days from today until `t`'s date (UTC), negative when past: counted as a person reads
/// "expires 2027-12-06", so a fresh one-year key has 365 days left, not 364 and some hours.
pub fn days_left(t: time::OffsetDateTime) -> i64 {
    let today = time::OffsetDateTime::now_utc().date();
    (t.to_offset(time::UtcOffset::UTC).date() - today).whole_days()
}

/// The profile as `show --json` documents it (and every result that names a profile).
pub fn profile_json(p: &Profile) -> serde_json::Value {
    serde_json::json!({
        "profile": p.profile,
        "cloud": p.cloud.as_str(),
        "tenant_id": p.tenant_id,
        "commerce_id": p.commerce_id,
        "app_id": p.app_id,
        "app_object_id": p.app_object_id,
        "key_id": p.key_id,
        "secret_hint": p.secret_hint,
        "secret_expires": rfc3339(p.secret_expires),
        "store": p.store.as_str(),
    })
}

pub fn verify_options(timeout_secs: u64) -> VerifyOptions {
    VerifyOptions {
        budget: std::time::Duration::from_secs(timeout_secs),
        ..VerifyOptions::default()
    }
}

/// The summary and next steps (stderr), and the result document (stdout with --json).
/// `old_key_removed`: for a rotation, whether the old key is gone (its secret is dead).
pub fn summary(
    ctx: &Ctx,
    p: &Profile,
    secrets: &Secrets,
    action: &str,
    old_key_removed: Option<bool>,
) {
    let ui = &ctx.ui;
    let location = secrets.describe(&p.profile);
    let cmd = crate::ui::invocation();
    // Commands as they work when pasted: a profile other than `default` (the emulator demo's
    // `emulator`) is named in them.
    let pf = if p.profile == "default" {
        String::new()
    } else {
        format!(" --profile {}", p.profile)
    };
    ui.heading("Done. Your Partner Center web app:");
    ui.info(format!("  Tenant ID (Account ID)  {}", p.tenant_id));
    ui.info(format!("  App ID                  {}", p.app_id));
    match &p.commerce_id {
        Some(c) => ui.info(format!("  Commerce ID             {c}")),
        None => ui.info(format!(
            "  Commerce ID             not given: copy it from {}, then \
             `{cmd} init{pf} --commerce-id <guid>`",
            crate::wizard::COMMERCE_ID_WHERE
        )),
    }
    ui.info(format!(
        "  Secret                  {}…  (expires {})",
        p.secret_hint.as_deref().unwrap_or(""),
        p.secret_expires
            .map(|e| e.date().to_string())
            .unwrap_or_else(|| "unknown".into())
    ));
    ui.info(format!("  Stored in               {location}"));
    if matches!(action, "created" | "key_added" | "captured")
        && let Some(notice) = ctx.file_store_notice(p)
    {
        ui.info(notice);
    }
    ui.heading("Next steps");
    for line in [
        "  • Microsoft Cost Management for partners (Azure portal, billing-account scope) needs \
         no secret."
            .to_string(),
        format!(
            "  • A third-party cost tool takes the tenant ID, App ID and secret, plus the \
             \"Billing account reader\" role: `{cmd} show{pf} --reveal --json` prints all three."
        ),
        format!(
            "  • `{cmd} check{pf}` proves the key still works; `{cmd} rotate{pf}` (or `init{pf}` \
             again) replaces it before it expires."
        ),
    ] {
        ui.info(line);
    }
    let mut doc = profile_json(p);
    doc["ok"] = true.into();
    doc["action"] = action.into();
    doc["store_location"] = location.into();
    if let Some(removed) = old_key_removed {
        doc["old_key_removed"] = removed.into();
    }
    print_json(ui, &doc);
}

/// A call wider than the terminal would be cut by it mid-URL: then each service's base URL is
/// named once (`{Graph} = https://graph.microsoft.com`) and the calls use the name, so every
/// line fits and no URL is split. Piped output keeps the whole URLs.
fn shorten_calls(lines: Vec<String>, width: Option<usize>) -> (Vec<String>, Option<String>) {
    let Some(width) = width else {
        return (lines, None);
    };
    if lines
        .iter()
        .all(|l| console::measure_text_width(l) <= width)
    {
        return (lines, None);
    }
    let mut names: Vec<(String, String)> = Vec::new();
    let shortened = lines
        .into_iter()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            words
                .iter()
                .enumerate()
                .map(|(i, word)| {
                    // Only the URL a call goes to, after its method; a scope stays as it is.
                    let after_method = i > 0
                        && matches!(words[i - 1], "GET" | "POST" | "PATCH" | "PUT" | "DELETE");
                    let url = url::Url::parse(word)
                        .ok()
                        .filter(|u| after_method && matches!(u.scheme(), "http" | "https"));
                    let Some(url) = url else {
                        return word.to_string();
                    };
                    let mut base = url.origin().ascii_serialization();
                    let name = service_name(url.path(), names.len());
                    if name == "Graph" && url.path().starts_with("/v1.0/") {
                        base.push_str("/v1.0");
                    }
                    if !word.starts_with(&base) {
                        return word.to_string();
                    }
                    let name = match names.iter().find(|(b, _)| *b == base) {
                        Some((_, n)) => n.clone(),
                        None => {
                            names.push((base.clone(), name.clone()));
                            name
                        }
                    };
                    format!("{{{name}}}{}", &word[base.len()..])
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let legend = names
        .iter()
        .map(|(base, name)| format!("{{{name}}} = {base}"))
        .collect::<Vec<_>>()
        .join(", ");
    (shortened, Some(format!("  where {legend}")))
}

/// A short name for a service, from the shape of the path called on it.
fn service_name(path: &str, index: usize) -> String {
    if path.starts_with("/v1.0/") || path.starts_with("/beta/") {
        "Graph".into()
    } else if path.contains("/oauth2/") {
        "Entra".into()
    } else if path.starts_with("/v1/") {
        "PartnerCenter".into()
    } else {
        format!("service{}", index + 1)
    }
}

/// `--dry-run`: the plan, for people on stderr and as the JSON document. `extra` adds fields.
pub fn print_plan(
    ui: &Ui,
    heading: &str,
    plan: &crate::onboarding::Plan,
    account: Option<&crate::onboarding::Account>,
    extra: serde_json::Value,
) {
    ui.heading(heading);
    let lines: Vec<String> = plan.lines().iter().map(|l| format!("  {l}")).collect();
    let (lines, legend) = shorten_calls(lines, crate::ui::width());
    for line in lines {
        ui.info(line);
    }
    if let Some(legend) = legend {
        ui.info(legend);
    }
    if let Some(a) = account {
        ui.info(format!(
            "Account: {} ({})",
            a.user.as_deref().unwrap_or("automation identity"),
            a.roles.describe()
        ));
        ui.info(format!("Tenant policy: {}", a.policy.describe()));
    }
    let mut doc = serde_json::json!({"ok": true, "dry_run": true, "plan": plan.to_json(account)});
    if let (Some(d), serde_json::Value::Object(x)) = (doc.as_object_mut(), extra) {
        d.extend(x);
    }
    print_json(ui, &doc);
}

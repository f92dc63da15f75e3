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
    let mut ctx = Ctx::new(g)?;
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
            let given = if std::env::args().any(|a| a == "--cloud" || a.starts_with("--cloud=")) {
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

    /// The tenant of the built-in emulator, the natural default there.
    pub fn emulator_tenant(&self) -> Option<String> {
        self.emulator.as_ref().map(|e| e.tenant_id())
    }

    /// One HTTP client for the run; waits (throttling, replication) are reported on stderr.
    pub fn http(&self) -> anyhow::Result<HttpClient> {
        let ui = self.ui.clone();
        Ok(HttpClient::new()?.on_wait(Arc::new(move |n| {
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
        } else if kind == StoreKind::File && existing.is_none() && self.store_flag.is_none() {
            // The file store is never a silent choice: a new profile that got it from
            // CSP_ONBOARD_STORE hears it once. Later commands use the profile's own store.
            self.ui.info(format!(
                "The profile keeps its secret in the file store ({}, readable only by you).",
                secrets.describe(&self.profile)
            ));
        }
        Ok(secrets)
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

/// Print the JSON result document (with `--json`).
pub fn print_json(ui: &Ui, doc: &serde_json::Value) {
    if ui.json {
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

/// The profile as `show --json` documents it.
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
    })
}

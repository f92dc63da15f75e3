//! The command-line interface: clap types only. Every argument's doc comment is its `--help`.

use clap::{Args, Parser, Subcommand, ValueEnum, builder::BoolishValueParser};

const EXAMPLES: &str = "\
Examples:
  Try the whole wizard against the built-in emulator (no Microsoft tenant needed):
    csp-onboard init --cloud emulator
  Onboard a real partner tenant, signing in with a device code:
    csp-onboard init --auth device-code
  Scripted onboarding:
    csp-onboard init --non-interactive --tenant contoso.onmicrosoft.com --secret-years 1 --json
  What is stored, and is it still good?
    csp-onboard show
    csp-onboard check --warn-days 30
  Hand the secret to another tool:
    csp-onboard show --reveal --json

Exit codes: 0 ok, 1 other failure, 2 usage, 3 sign-in, 4 permission denied, 5 tenant policy,
6 keychain unavailable, 7 secret not verified, 8 not found, 9 service unreachable,
10 expiring soon (check), 11 expired or rejected (check), 130 interrupted.";

/// Onboard a Microsoft CSP partner's Partner Center API web app: sign in, register the app, create
/// and verify a secret, keep it in the OS keychain, and rotate it before it expires.
#[derive(Debug, Parser)]
#[command(name = "csp-onboard", version, after_long_help = EXAMPLES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Shown last in every subcommand's help, under their own heading.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Which stored onboarding to act on. Default: `default`; with --cloud emulator, `emulator`
    /// (the demo never takes the real tenant's profile).
    #[arg(long, global = true, env = "CSP_ONBOARD_PROFILE")]
    pub profile: Option<String>,

    /// Which Microsoft cloud. `emulator` starts the built-in local emulator; `custom` reads
    /// CSP_ONBOARD_AUTHORITY_URL, CSP_ONBOARD_GRAPH_URL and CSP_ONBOARD_PARTNER_CENTER_URL.
    /// Default: the profile's cloud, else `global`.
    #[arg(long, global = true, env = "CSP_ONBOARD_CLOUD", value_enum)]
    pub cloud: Option<CloudArg>,

    /// Never prompt: a missing input is a usage error (exit 2) that names the flag to pass.
    #[arg(long, global = true, env = "CSP_ONBOARD_NON_INTERACTIVE",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub non_interactive: bool,

    /// Print the result as one JSON document on stdout; everything human goes to stderr.
    #[arg(long, global = true)]
    pub json: bool,

    /// Where secrets go: the OS keychain, or an explicit 0600 file in the data directory.
    /// Default: where the profile keeps its secret; for a new profile CSP_ONBOARD_STORE, else
    /// the keychain.
    #[arg(long, global = true, value_enum)]
    pub store: Option<StoreArg>,

    /// More detail on stderr (repeat for more). Secrets and tokens never appear at any level.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Give up after this many seconds in all, whatever the services do (exit 9; the next run
    /// finishes or undoes an interrupted one). Default: 60 for `check` without --auth, `show` and
    /// `list`; 1800 for commands that may wait for a person to sign in.
    #[arg(long, global = true, env = "CSP_ONBOARD_DEADLINE", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub deadline: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloudArg {
    Global,
    Usgov,
    China,
    Emulator,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreArg {
    Keychain,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// Sign in in a browser (authorization code with PKCE).
    Browser,
    /// Sign in on another device with a code (works over SSH).
    DeviceCode,
    /// An automation identity: --client-id plus a secret from stdin or CSP_ONBOARD_CLIENT_SECRET.
    ClientSecret,
    /// A Graph access token from stdin or CSP_ONBOARD_ACCESS_TOKEN.
    AccessToken,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The wizard: sign in, register (or reuse, or capture) the web app, create, verify and store
    /// its secret. On an existing profile it rotates the secret.
    #[command(after_long_help = INIT_EXAMPLES)]
    Init(InitArgs),
    /// Add a new secret, verify it, store it, then retire the old one.
    #[command(after_long_help = ROTATE_EXAMPLES)]
    Rotate(RotateArgs),
    /// Show the stored values of the profile (the secret is masked unless --reveal).
    #[command(
        after_long_help = "Examples:\n  csp-onboard show\n  csp-onboard show --reveal --json | jq -r .secret"
    )]
    Show(ShowArgs),
    /// List every stored profile with its app and key expiry (no secrets).
    #[command(after_long_help = "Examples:\n  csp-onboard list\n  csp-onboard list --json")]
    List(ListArgs),
    /// Prove the stored secret still works and report the days left (exit 0 ok, 10 expiring, 11 expired/rejected).
    #[command(
        after_long_help = "Examples:\n  csp-onboard check\n  csp-onboard check --warn-days 45 --json   # for cron and monitoring\n  csp-onboard check --auth device-code      # also look for drift on the app"
    )]
    Check(CheckArgs),
    /// Forget a profile; --revoke also deletes its key from the app.
    #[command(
        after_long_help = "Examples:\n  csp-onboard remove --profile old\n  csp-onboard remove --revoke --yes"
    )]
    Remove(RemoveArgs),
    /// Every customer's Azure usage and costs, from Microsoft Graph's partner billing export
    /// (App-only with the stored secret; needs `init --billing`).
    #[command(after_long_help = USAGE_EXAMPLES)]
    Usage(UsageArgs),
    /// Run the local emulator of the Microsoft endpoints on loopback.
    #[command(
        after_long_help = "Examples:\n  csp-onboard emulator --port 8400 --auto-approve\n  csp-onboard emulator --latency-ms 50 --propagation-delay-ms 8000 --state ./emulator.json"
    )]
    Emulator(crate::emulator::EmulatorArgs),
    /// Print shell completions.
    #[command(
        after_long_help = "Examples:\n  csp-onboard completions bash > ~/.local/share/bash-completion/completions/csp-onboard"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    #[command(after_long_help = "Examples:\n  csp-onboard man | man -l -")]
    Man,
}

const INIT_EXAMPLES: &str = "\
Examples:
  Try it against the built-in emulator:
    csp-onboard init --cloud emulator
  Sign in with a device code (over SSH):
    csp-onboard init --auth device-code --tenant contoso.onmicrosoft.com
  Add a key to an existing web app:
    csp-onboard init --app-id <app-id>
  Capture an app and key made in the portal (no sign-in):
    printf '%s\\n' \"$SECRET\" | csp-onboard init --non-interactive --tenant <tenant-id> \\
        --app-id <app-id> --commerce-id <commerce-id> --app-secret-stdin
  Scripted, with a JSON result:
    csp-onboard init --non-interactive --cloud emulator --secret-years 1 --json";

const ROTATE_EXAMPLES: &str = "\
Examples:
  csp-onboard rotate
  csp-onboard rotate --keep-old
  Keep the old key 7 days for tools that still hold it:
    csp-onboard rotate --overlap 7
  For schedulers (no request at all while the key is fresh):
    csp-onboard rotate --if-expiring-within 30 --non-interactive --auth device-code
  Every profile, with an automation identity:
    CSP_ONBOARD_CLIENT_SECRET=… csp-onboard rotate --all --non-interactive \\
        --auth client-secret --client-id <automation-app-id> --json
  csp-onboard rotate --dry-run";

#[derive(Debug, Args)]
pub struct SignInArgs {
    /// The tenant to sign in to: a tenant ID (GUID) or a verified domain.
    #[arg(long, env = "CSP_ONBOARD_TENANT", value_parser = tenant_arg)]
    pub tenant: Option<String>,

    /// How to sign in. Default: browser on a desktop session, device code otherwise.
    #[arg(long, value_enum)]
    pub auth: Option<AuthArg>,

    /// The public client used to sign in (or, with --auth client-secret, the automation app).
    #[arg(long, env = "CSP_ONBOARD_CLIENT_ID", value_parser = guid_arg)]
    pub client_id: Option<String>,

    /// Read the automation identity's secret (--auth client-secret) from one line of stdin.
    #[arg(long)]
    pub client_secret_stdin: bool,

    /// Read the access token (--auth access-token) from one line of stdin.
    #[arg(long)]
    pub access_token_stdin: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub sign_in: SignInArgs,

    /// Display name of the web app to create.
    #[arg(long)]
    pub app_name: Option<String>,

    /// Use this existing web app (its App ID) instead of creating one.
    #[arg(long, value_parser = guid_arg)]
    pub app_id: Option<String>,

    /// The Commerce ID shown in Partner Center > App management (optional; no API returns it).
    #[arg(long, value_parser = guid_arg)]
    pub commerce_id: Option<String>,

    /// Key lifetime in years (1 or 2, as the tenant policy allows).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub secret_years: Option<u8>,

    /// Key lifetime in days, for a tenant policy that allows less than a year.
    #[arg(long, value_name = "DAYS", conflicts_with = "secret_years",
          value_parser = clap::value_parser!(u32).range(1..=730))]
    pub secret_days: Option<u32>,

    /// Read the secret of an app made in the portal from one line of stdin (capture; no sign-in).
    #[arg(long)]
    pub app_secret_stdin: bool,

    /// On rotation, keep the old key on the app instead of deleting it.
    #[arg(long)]
    pub keep_old: bool,

    /// Print the plan (calls, permissions, app, policy) without changing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// How long to wait for a new secret to propagate through Entra ID before giving up (exit 7).
    #[arg(long, value_name = "SECONDS", default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub verify_timeout: u64,

    /// Also request Microsoft Graph's PartnerBilling.Read.All application permission and admin
    /// consent, which `usage` needs. On an existing profile, only that is done.
    #[arg(long)]
    pub billing: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub sign_in: SignInArgs,

    /// Keep the old key on the app instead of deleting it.
    #[arg(long, conflicts_with = "overlap")]
    pub keep_old: bool,

    /// Keep the old key for DAYS more, then remove it on the first signed-in run after that
    /// (Graph cannot shorten an existing key's end date).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=crate::input::MAX_OVERLAP_DAYS as i64))]
    pub overlap: Option<u32>,

    /// Rotate every stored profile (one sign-in per tenant), several at a time.
    #[arg(long)]
    pub all: bool,

    /// With --all: how many profiles to rotate at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Print the plan (calls, permissions, app, policy) without changing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Key lifetime in years (1 or 2). Default: the previous key's lifetime, within the tenant policy.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub secret_years: Option<u8>,

    /// Key lifetime in days, for a tenant policy that allows less than a year.
    #[arg(long, value_name = "DAYS", conflicts_with = "secret_years",
          value_parser = clap::value_parser!(u32).range(1..=730))]
    pub secret_days: Option<u32>,

    /// Do nothing unless the stored key expires within this many days.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=crate::input::MAX_WINDOW_DAYS as i64))]
    pub if_expiring_within: Option<u32>,

    /// How long to wait for the new secret to propagate through Entra ID before giving up (exit 7).
    #[arg(long, value_name = "SECONDS", default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub verify_timeout: u64,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print the secret itself.
    #[arg(long)]
    pub reveal: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// `list` shows every profile: this stands in for the global --profile, hidden from its
    /// help, and accepted (ignored) so a CSP_ONBOARD_PROFILE-style habit does not fail.
    #[arg(long, id = "profile", hide = true)]
    pub ignored_profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Exit 10 when the key expires within this many days.
    #[arg(long, default_value_t = 30, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=crate::input::MAX_WINDOW_DAYS as i64))]
    pub warn_days: u32,

    /// With --auth, also sign in and check that the key still exists on the app (drift:
    /// deleted in the portal, or newer keys made elsewhere). Without it, no sign-in is needed.
    #[command(flatten)]
    pub sign_in: SignInArgs,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Also delete the key from the app (needs an admin sign-in).
    #[arg(long)]
    pub revoke: bool,

    /// Also delete the app registration itself (implies --revoke); only for an app this tool
    /// created and no other profile uses.
    #[arg(long)]
    pub delete_app: bool,

    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,

    #[command(flatten)]
    pub sign_in: SignInArgs,
}

const USAGE_EXAMPLES: &str = "\
Examples:
  Try it against the built-in emulator:
    csp-onboard init --cloud emulator --billing && csp-onboard usage --cloud emulator
  Last month's unbilled usage per subscription, the 20 largest:
    csp-onboard usage --period last --by subscription --top 20
  An invoice's billed usage as CSV:
    csp-onboard usage --invoice G012345678 --format csv --out usage.csv
  Every line item as Parquet, and the per-customer summary as JSON:
    csp-onboard usage --out items.parquet --raw --json

The export covers Azure usage only: it excludes reservations, savings plans and non-Azure products.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeriodArg {
    Current,
    Last,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ByArg {
    Customer,
    Subscription,
    MeterCategory,
    Day,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Table,
    Csv,
    Json,
    Parquet,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Unbilled usage of the current or the last billing period.
    #[arg(long, value_enum, default_value_t = PeriodArg::Current)]
    pub period: PeriodArg,

    /// Billed usage of this invoice instead (e.g. G012345678).
    #[arg(long, value_name = "ID", conflicts_with = "period")]
    pub invoice: Option<String>,

    /// Currency of the unbilled amounts (ISO 4217).
    #[arg(long, default_value = "USD", value_name = "CODE")]
    pub currency: String,

    /// How to sum the costs.
    #[arg(long, value_enum, default_value_t = ByArg::Customer)]
    pub by: ByArg,

    /// Show only the N largest (the rest are summed into one line).
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,

    /// Output format. Default: a table on stdout; with --out, taken from the file's extension
    /// (.csv, .json, .parquet).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// Write to FILE (0600) instead of stdout: the summary, or with --raw every line item.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,

    /// With --out: every line item (csv, JSON lines or parquet) instead of the summary.
    #[arg(long, requires = "out")]
    pub raw: bool,

    /// Give up when Microsoft's export is still running after this many minutes.
    #[arg(long, value_name = "MINUTES", default_value_t = 60)]
    pub wait_minutes: u64,
}

/// A GUID flag: the canonical 8-4-4-4-12 form only, checked before anything is sent.
fn guid_arg(s: &str) -> Result<String, String> {
    crate::input::canonical_guid(s).ok_or_else(|| {
        "not a GUID: give 8-4-4-4-12 hex digits, e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47"
            .to_string()
    })
}

/// `--tenant`: a tenant ID (canonical GUID) or a verified domain.
fn tenant_arg(s: &str) -> Result<String, String> {
    if let Some(g) = crate::input::canonical_guid(s) {
        return Ok(g);
    }
    crate::signin::validate_tenant(s.trim()).map(|()| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

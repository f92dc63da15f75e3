//! `csp-onboard emulator`: the clap arguments (flattened into the CLI by the lead) and the runner
//! that prints the endpoints and serves until Ctrl-C.

use super::{Emulator, EmulatorConfig, FaultKind, FaultRule, Knobs, ThrottleRule, UserKind};
use std::path::PathBuf;
use std::time::Duration;

/// Longest injected delay (one hour): enough for any test, and no overflow when added to a clock.
const MAX_DELAY_MS: u64 = 3_600_000;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct EmulatorArgs {
    /// First of three consecutive ports (sign-in, Graph, Partner Center); 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Keep the emulated tenant in this JSON file (0600) across restarts.
    #[arg(long = "state", value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Delay added to every request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub latency_ms: u64,
    /// How long a new app or service principal stays invisible (404, AADSTS700016), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub replication_delay_ms: u64,
    /// How long a new secret is refused (AADSTS7000215), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub propagation_delay_ms: u64,
    /// Answer 429 with Retry-After to requests whose "METHOD /path" contains ROUTE, the first
    /// FIRST_N times (default 1). Repeatable. Example: --throttle "POST /v1.0/applications=2:3"
    #[arg(long, value_name = "ROUTE=RETRY_AFTER[:FIRST_N]", value_parser = parse_throttle)]
    pub throttle: Vec<ThrottleRule>,
    /// Fail requests whose "METHOD /path" contains ROUTE with a status (500/502/503/504) or by
    /// dropping the connection, the first FIRST_N times (default 1). Repeatable.
    #[arg(long = "fail", value_name = "ROUTE=STATUS|drop[:FIRST_N]", value_parser = parse_fault)]
    pub fail: Vec<FaultRule>,
    /// Tenant policy: secrets may live at most this many days.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub max_secret_lifetime_days: Option<u64>,
    /// Tenant policy: no password credentials at all.
    #[arg(long)]
    pub no_passwords: bool,
    /// Who signs in: global-admin (Global Administrator role), admin-agent (AdminAgents member,
    /// no directory role), app-admin (Application Administrator role), plain (neither).
    #[arg(long, value_enum, default_value_t = UserArg::GlobalAdmin)]
    pub user: UserArg,
    /// Pre-authorize the public client for Policy.Read.All, so an admin's Graph token may read the
    /// tenant's app management policy (off, as for the Azure CLI in a real tenant: 403).
    #[arg(long)]
    pub grant_policy_read: bool,
    /// Conditional Access blocks the device-code flow (AADSTS53003).
    #[arg(long)]
    pub block_device_code: bool,
    /// The tenant is not a CSP partner (no Partner Center service principal).
    #[arg(long)]
    pub not_csp: bool,
    /// Partner Center refuses App-only calls from apps not registered in App management.
    #[arg(long)]
    pub require_app_registration: bool,
    /// Apply request number N (1-based, all services), then never answer it.
    #[arg(long, value_name = "N")]
    pub hang_after_request: Option<u64>,
    /// Approve device codes by themselves after N polls (default 1), as the Global admin or --user.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1")]
    pub auto_approve: Option<u32>,
    /// Device-code polling interval in seconds (Entra: 5).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub device_code_interval: Option<u64>,
    /// Write the request log to FILE (replaced at start) as JSON lines (seq, start time in Unix ms, service, method,
    /// path with credentials masked, status), flushed every 20 ms and at exit. For benchmarks and
    /// scripts; no bodies or secrets are written.
    #[arg(long = "log", value_name = "FILE")]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub billing: super::billing::BillingArgs,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserArg {
    #[default]
    GlobalAdmin,
    AdminAgent,
    AppAdmin,
    Plain,
}

fn split_rule(s: &str) -> Result<(String, String, u32), String> {
    let (route, rest) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected ROUTE=VALUE[:FIRST_N], got {s:?}"))?;
    if route.is_empty() {
        return Err("ROUTE must not be empty".into());
    }
    let (value, first_n) = match rest.split_once(':') {
        Some((v, n)) => (
            v,
            n.parse::<u32>()
                .map_err(|_| format!("FIRST_N must be a whole number, got {n:?}"))?,
        ),
        None => (rest, 1),
    };
    Ok((route.to_string(), value.to_string(), first_n))
}

fn parse_throttle(s: &str) -> Result<ThrottleRule, String> {
    let (route, value, first_n) = split_rule(s)?;
    let retry_after_secs = value
        .parse::<u64>()
        .map_err(|_| format!("RETRY_AFTER must be whole seconds, got {value:?}"))?;
    Ok(ThrottleRule {
        route,
        first_n,
        every_nth: 0,
        retry_after_secs,
    })
}

fn parse_fault(s: &str) -> Result<FaultRule, String> {
    let (route, value, first_n) = split_rule(s)?;
    let kind = match value.as_str() {
        "drop" => FaultKind::DropConnection,
        v => match v.parse::<u16>() {
            Ok(code @ (500 | 502 | 503 | 504)) => FaultKind::Status(code),
            _ => {
                return Err(format!(
                    "STATUS must be 500, 502, 503, 504 or drop, got {v:?}"
                ));
            }
        },
    };
    Ok(FaultRule {
        route,
        first_n,
        kind,
    })
}

impl EmulatorArgs {
    pub fn config(&self) -> EmulatorConfig {
        let ms = Duration::from_millis;
        EmulatorConfig {
            port: self.port,
            state_file: self.state.clone(),
            knobs: Knobs {
                latency: ms(self.latency_ms),
                replication_delay: ms(self.replication_delay_ms),
                secret_propagation_delay: ms(self.propagation_delay_ms),
                throttle: self.throttle.clone(),
                faults: self.fail.clone(),
                max_password_lifetime: self
                    .max_secret_lifetime_days
                    .map(|d| Duration::from_secs(d * 86_400)),
                passwords_disallowed: self.no_passwords,
                signed_in_user: match self.user {
                    UserArg::GlobalAdmin => UserKind::GlobalAdmin,
                    UserArg::AdminAgent => UserKind::AdminAgent,
                    UserArg::AppAdmin => UserKind::AppAdmin,
                    UserArg::Plain => UserKind::Plain,
                },
                grant_policy_read: self.grant_policy_read,
                block_device_code: self.block_device_code,
                not_csp_tenant: self.not_csp,
                require_pc_app_registration: self.require_app_registration,
                hang_after_request: self.hang_after_request,
                auto_approve_device_code_after_polls: self.auto_approve,
                device_code_interval_secs: self.device_code_interval,
                billing: self.billing.knobs(),
                ..Knobs::default()
            },
        }
    }
}

/// Start, print where everything is, serve until Ctrl-C.
pub async fn run(args: EmulatorArgs) -> anyhow::Result<()> {
    // Taken before the listeners start, so every logged `Instant` is later than `t0`.
    let clock = (std::time::Instant::now(), std::time::SystemTime::now());
    let emu = Emulator::start(args.config()).await?;
    let log = match &args.log {
        Some(path) => Some(RequestLogFile::create(path, clock)?),
        None => None,
    };
    let flusher = log.clone().map(|log| {
        let emu = emu.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                log.flush(&emu);
            }
        })
    });
    print!("{}", banner(&emu, args.state.as_deref()));
    tokio::signal::ctrl_c().await?;
    if let Some(f) = flusher {
        f.abort();
    }
    if let Some(log) = log {
        log.flush(&emu);
    }
    emu.shutdown().await;
    Ok(())
}

/// `--log FILE`: the in-memory request log, appended to a file as it grows (entries are logged
/// when their response is decided, so each one written is final).
#[derive(Clone)]
struct RequestLogFile {
    inner: std::sync::Arc<std::sync::Mutex<(std::fs::File, usize)>>,
    clock: (std::time::Instant, std::time::SystemTime),
}

impl RequestLogFile {
    fn create(
        path: &std::path::Path,
        clock: (std::time::Instant, std::time::SystemTime),
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating the request log {}", path.display()))?;
        Ok(RequestLogFile {
            inner: std::sync::Arc::new(std::sync::Mutex::new((file, 0))),
            clock,
        })
    }

    fn flush(&self, emu: &Emulator) {
        use std::io::Write;
        let requests = emu.requests();
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (file, written) = &mut *guard;
        if requests.len() <= *written {
            return;
        }
        let (t0, wall0) = self.clock;
        let mut out = String::new();
        for r in &requests[*written..] {
            let start = wall0 + r.at.saturating_duration_since(t0);
            let start_ms = start
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or_default();
            let line = serde_json::json!({
                "seq": r.seq,
                "start_unix_ms": start_ms,
                "service": format!("{:?}", r.service),
                "method": r.method,
                "path": r.path,
                "status": r.status,
                "delivered": r.delivered,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        if let Err(e) = file.write_all(out.as_bytes()).and_then(|()| file.flush()) {
            eprintln!("csp-onboard emulator: could not write the request log: {e}");
            return;
        }
        *written = requests.len();
    }
}

/// What `csp-onboard emulator` prints: where everything is, and the variables for `--cloud custom`.
/// No secret appears here; the automation secret stays in the state file.
pub fn banner(emu: &Emulator, state: Option<&std::path::Path>) -> String {
    use std::fmt::Write;
    let (automation_app_id, _) = emu.automation_credentials();
    let mut out = String::new();
    let mut line = |s: String| {
        let _ = writeln!(out, "{s}");
    };
    line("csp-onboard emulator (a local stand-in for Microsoft's endpoints; not Microsoft)".into());
    line(String::new());
    line(format!("  sign-in authority  {}", emu.authority_url()));
    line(format!("  Microsoft Graph    {}", emu.graph_url()));
    line(format!("  Partner Center     {}", emu.partner_center_url()));
    line(format!("  device login page  {}", emu.device_login_url()));
    line(String::new());
    line(format!("  tenant ID          {}", emu.tenant_id()));
    line(format!("  tenant domain      {}", emu.tenant_domain()));
    line(format!(
        "  signs in as        {}",
        emu.user_principal_name(emu.knobs().signed_in_user)
    ));
    line(match state {
        Some(p) => format!(
            "  automation app ID  {automation_app_id} (secret: `automation_secret` in {})",
            p.display()
        ),
        None => format!(
            "  automation app ID  {automation_app_id} (pass --state FILE to read its secret there)"
        ),
    });
    line(match state {
        Some(p) => format!("  state file         {}", p.display()),
        None => "  state              in memory (pass --state FILE to keep it)".to_string(),
    });
    line(String::new());
    line("Use it with `--cloud custom` and these variables:".into());
    line(String::new());
    for l in emu.env_lines().lines() {
        line(format!("export {l}"));
    }
    line(String::new());
    line("Press Ctrl-C to stop.".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_the_command_line() {
        let t = parse_throttle("POST /v1.0/applications=7:3").unwrap();
        assert_eq!(
            (t.route.as_str(), t.retry_after_secs, t.first_n),
            ("POST /v1.0/applications", 7, 3)
        );
        let f = parse_fault("/oauth2/v2.0/token=drop").unwrap();
        assert_eq!((f.kind, f.first_n), (FaultKind::DropConnection, 1));
        assert!(parse_fault("x=418").is_err());
        assert!(parse_throttle("noequals").is_err());
    }

    #[derive(clap::Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    #[test]
    fn the_flags_parse_into_knobs() {
        use clap::{CommandFactory, Parser};
        Wrapper::command().debug_assert();
        let w = Wrapper::try_parse_from([
            "emulator",
            "--port",
            "8400",
            "--state",
            "/tmp/s.json",
            "--throttle",
            "POST /v1.0/applications=5",
            "--fail",
            "/token=drop:2",
            "--max-secret-lifetime-days",
            "365",
            "--user",
            "admin-agent",
            "--auto-approve",
            "--hang-after-request",
            "7",
        ])
        .unwrap();
        let c = w.args.config();
        assert_eq!(c.port, 8400);
        assert_eq!(
            c.knobs.max_password_lifetime,
            Some(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(c.knobs.signed_in_user, UserKind::AdminAgent);
        assert_eq!(c.knobs.auto_approve_device_code_after_polls, Some(1));
        assert_eq!(c.knobs.hang_after_request, Some(7));
        assert_eq!(c.knobs.faults[0].first_n, 2);
        assert_eq!(c.knobs.throttle[0].retry_after_secs, 5);
        assert!(!c.knobs.grant_policy_read);
        let w = Wrapper::try_parse_from(["emulator", "--auto-approve", "3"]).unwrap();
        assert_eq!(
            w.args.config().knobs.auto_approve_device_code_after_polls,
            Some(3)
        );
        let w = Wrapper::try_parse_from(["emulator", "--user", "app-admin", "--grant-policy-read"])
            .unwrap();
        let k = w.args.config().knobs;
        assert_eq!(k.signed_in_user, UserKind::AppAdmin);
        assert!(k.grant_policy_read);
    }

    #[tokio::test]
    async fn the_banner_shows_urls_and_env_lines_but_no_secret() {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let text = banner(&emu, None);
        assert!(text.contains(&format!("export CSP_ONBOARD_GRAPH_URL={}", emu.graph_url())));
        assert!(text.contains("export CSP_ONBOARD_CLOUD=custom"));
        assert!(text.contains(&emu.tenant_id()) && text.contains(&emu.device_login_url()));
        assert!(!text.contains(emu.automation_credentials().1.expose()));
        emu.shutdown().await;
    }
}

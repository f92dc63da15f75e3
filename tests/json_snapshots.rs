//! `--json` is a contract for scripts: snapshots of each command's document, with the values that
//! change between runs (GUIDs, dates, hints, paths) replaced by placeholders.

mod common;

use common::*;
use serde_json::Value;

fn normalize(v: &mut Value, data_dir: &str) {
    normalize_with(v, data_dir, &[]);
}

/// `swap`: text that changes between runs (URLs with a port, a tenant's domain) and its placeholder.
fn normalize_with(v: &mut Value, data_dir: &str, swap: &[(String, &str)]) {
    match v {
        Value::String(s) => {
            for (from, to) in swap {
                if s.contains(from.as_str()) {
                    *s = s.replace(from.as_str(), to);
                }
            }
            if uuid::Uuid::try_parse(s).is_ok() {
                *s = "[guid]".into();
            } else if time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .is_ok()
            {
                *s = "[rfc3339]".into();
            } else if s.contains(data_dir) {
                *s = s.replace(data_dir, "[data]");
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| normalize_with(x, data_dir, swap)),
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match k.as_str() {
                    "secret_hint" if x.is_string() => *x = "[hint]".into(),
                    "secret" if x.is_string() => *x = "[secret]".into(),
                    "days_left" if x.is_number() => *x = "[days]".into(),
                    _ => normalize_with(x, data_dir, swap),
                }
            }
        }
        _ => {}
    }
}

async fn doc(cli: &Cli, args: &[&str]) -> Value {
    let out = cli.run(args, "").await;
    let mut v = json(&out);
    normalize(&mut v, &cli.data_dir().display().to_string());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_documents_are_stable() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let init = [
        "init",
        "--non-interactive",
        "--json",
        "--auth",
        "device-code",
        "--tenant",
        &tenant,
        "--commerce-id",
        "8c2a9f1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b",
    ];
    insta::assert_json_snapshot!("init_created", doc(&cli, &init).await);
    // Re-running (without a new Commerce ID) rotates.
    insta::assert_json_snapshot!("init_rotated", doc(&cli, &init[..7]).await);
    insta::assert_json_snapshot!("show", doc(&cli, &["show", "--json"]).await);
    insta::assert_json_snapshot!(
        "show_reveal",
        doc(&cli, &["show", "--json", "--reveal"]).await
    );
    insta::assert_json_snapshot!("list", doc(&cli, &["list", "--json"]).await);
    insta::assert_json_snapshot!("check", doc(&cli, &["check", "--json"]).await);
    insta::assert_json_snapshot!(
        "error_not_found",
        doc(&cli, &["show", "--json", "--profile", "nope"]).await
    );
}

/// `init --dry-run --json` for each role: the plan, each step with its call, the delegated
/// permission and the role Microsoft requires (microsoft-apis.md §3.0), checked against the
/// account. The Admin agent's plan is refused (exit 4) with the way that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_for_each_role() {
    use csp_onboard::emulator::{Knobs, UserKind};
    for (name, user, exit) in [
        ("global_admin", UserKind::GlobalAdmin, 0),
        ("app_admin", UserKind::AppAdmin, 0),
        ("admin_agent", UserKind::AdminAgent, 4),
    ] {
        let emu = emulator(Knobs {
            signed_in_user: user,
            ..fast_knobs()
        })
        .await;
        let cli = Cli::new(&emu);
        let tenant = emu.tenant_id();
        let out = cli
            .run(
                &[
                    "init",
                    "--non-interactive",
                    "--json",
                    "--auth",
                    "device-code",
                    "--tenant",
                    &tenant,
                    "--dry-run",
                ],
                "",
            )
            .await;
        assert_eq!(code(&out), exit, "{name}: {}", stderr(&out));
        let mut v = json(&out);
        let swap = [
            (
                emu.authority_url().trim_end_matches('/').to_string(),
                "[authority]",
            ),
            (emu.graph_url().trim_end_matches('/').to_string(), "[graph]"),
            (
                emu.partner_center_url().trim_end_matches('/').to_string(),
                "[partner-center]",
            ),
            (emu.tenant_domain(), "[domain]"),
            (tenant.clone(), "[tenant]"),
        ];
        normalize_with(&mut v, &cli.data_dir().display().to_string(), &swap);
        insta::assert_json_snapshot!(format!("init_dry_run_{name}"), v);
        assert!(
            emu.requests()
                .iter()
                .all(|r| !r.path.starts_with("/v1.0") || r.method == "GET"),
            "{name}: a dry run writes nothing"
        );
    }
}

//! `--json` is a contract for scripts: one snapshot per command's success and error document,
//! and of stderr for the main errors, each in its own test so one change does not hide the rest.
//! Values that change between runs (GUIDs, dates, hints, paths, ports) become placeholders.

mod common;

use common::*;
use serde_json::Value;

const COMMERCE_ID: &str = "8c2a9f1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b";

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
            } else {
                *s = normalize_text(s, data_dir);
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

/// Text with the data directory, GUIDs and loopback ports replaced.
fn normalize_text(s: &str, data_dir: &str) -> String {
    let s = s.replace(data_dir, "[data]");
    let mut out = String::new();
    let mut rest = s.as_str();
    while !rest.is_empty() {
        if rest.len() >= 36
            && rest.is_char_boundary(36)
            && uuid::Uuid::try_parse(&rest[..36]).is_ok()
        {
            out.push_str("[guid]");
            rest = &rest[36..];
        } else if let Some(after) = rest.strip_prefix("127.0.0.1:") {
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            out.push_str("127.0.0.1:[port]");
            rest = &after[digits..];
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

struct Run {
    code: i32,
    doc: Value,
    stderr: String,
}

async fn run(cli: &Cli, args: &[&str], stdin: &str) -> Run {
    let out = cli.run(args, stdin).await;
    let data = cli.data_dir().display().to_string();
    let mut doc = json(&out);
    normalize(&mut doc, &data);
    Run {
        code: code(&out),
        doc,
        stderr: normalize_text(&stderr(&out), &data),
    }
}

async fn onboarded() -> (csp_onboard::emulator::Emulator, Cli) {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let r = run(&cli, &strs(&init_args(&emu.tenant_id(), true)), "").await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    (emu, cli)
}

fn init_args(tenant: &str, commerce: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "init",
        "--non-interactive",
        "--json",
        "--auth",
        "device-code",
        "--tenant",
        tenant,
    ]
    .map(String::from)
    .to_vec();
    if commerce {
        a.extend(["--commerce-id".into(), COMMERCE_ID.into()]);
    }
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---- The contract in plain assertions: what every document shares. ----

/// Every document says its schema version and `ok`; `profile` is always the profile's name
/// (it was an object in `rotate --if-expiring-within`); profile documents carry `store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_has_a_schema_version_ok_and_the_profile_as_a_string() {
    let (emu, cli) = onboarded().await;
    let tenant = emu.tenant_id();
    let init = init_args(&tenant, false);
    let runs = [
        strs(&init),
        vec!["show", "--json"],
        vec!["show", "--json", "--reveal"],
        vec!["list", "--json"],
        vec!["check", "--json"],
        vec!["rotate", "--json", "--if-expiring-within", "30"],
        vec![
            "rotate",
            "--json",
            "--all",
            "--non-interactive",
            "--auth",
            "device-code",
        ],
        vec!["show", "--json", "--profile", "nope"],
        vec!["remove", "--json", "--yes"],
    ];
    for args in runs {
        let r = run(&cli, &args, "").await;
        let d = &r.doc;
        assert_eq!(d["schema_version"], 1, "{args:?}: {d:#}");
        assert!(d["ok"].is_boolean(), "{args:?}: {d:#}");
        let mut profiles: Vec<&Value> = vec![d];
        if let Some(items) = d["profiles"].as_array() {
            profiles.extend(items);
        }
        for p in profiles {
            if let Some(name) = p.get("profile") {
                assert!(name.is_string(), "{args:?}: profile is a name: {d:#}");
            }
            if p.get("app_id").is_some() && p["ok"] != false {
                assert_eq!(p["store"], "file", "{args:?}: store is said: {d:#}");
            }
        }
    }
}

// ---- Success documents. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_created() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let r = run(&cli, &strs(&init_args(&emu.tenant_id(), true)), "").await;
    insta::assert_json_snapshot!("init_created", r.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_rotated() {
    let (emu, cli) = onboarded().await;
    let r = run(&cli, &strs(&init_args(&emu.tenant_id(), false)), "").await;
    insta::assert_json_snapshot!("init_rotated", r.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_commerce_id_updated() {
    let (emu, cli) = onboarded().await;
    let r = run(&cli, &strs(&init_args(&emu.tenant_id(), true)), "").await;
    insta::assert_json_snapshot!("init_commerce_id_updated", r.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show() {
    let (_emu, cli) = onboarded().await;
    insta::assert_json_snapshot!("show", run(&cli, &["show", "--json"], "").await.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_reveal() {
    let (_emu, cli) = onboarded().await;
    let r = run(&cli, &["show", "--json", "--reveal"], "").await;
    insta::assert_json_snapshot!("show_reveal", r.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list() {
    let (_emu, cli) = onboarded().await;
    insta::assert_json_snapshot!("list", run(&cli, &["list", "--json"], "").await.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check() {
    let (_emu, cli) = onboarded().await;
    insta::assert_json_snapshot!("check", run(&cli, &["check", "--json"], "").await.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_rotated() {
    let (_emu, cli) = onboarded().await;
    let r = run(
        &cli,
        &[
            "rotate",
            "--json",
            "--non-interactive",
            "--auth",
            "device-code",
        ],
        "",
    )
    .await;
    insta::assert_json_snapshot!("rotate_rotated", r.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_if_expiring_within_nothing_to_do() {
    let (_emu, cli) = onboarded().await;
    let r = run(
        &cli,
        &["rotate", "--json", "--if-expiring-within", "30"],
        "",
    )
    .await;
    insta::assert_json_snapshot!("rotate_if_expiring_within_none", r.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_all() {
    let (_emu, cli) = onboarded().await;
    let r = run(
        &cli,
        &[
            "rotate",
            "--json",
            "--all",
            "--non-interactive",
            "--auth",
            "device-code",
        ],
        "",
    )
    .await;
    insta::assert_json_snapshot!("rotate_all", r.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_all_dry_run() {
    let (_emu, cli) = onboarded().await;
    let r = run(
        &cli,
        &[
            "rotate",
            "--json",
            "--all",
            "--dry-run",
            "--non-interactive",
            "--auth",
            "device-code",
        ],
        "",
    )
    .await;
    insta::assert_json_snapshot!("rotate_all_dry_run", r.doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove() {
    let (_emu, cli) = onboarded().await;
    let r = run(&cli, &["remove", "--json", "--yes"], "").await;
    insta::assert_json_snapshot!("remove", r.doc);
}

// ---- Error documents, and what a person reads on stderr. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_not_found() {
    let (_emu, cli) = onboarded().await;
    let r = run(&cli, &["show", "--json", "--profile", "nope"], "").await;
    assert_eq!(r.code, 8);
    insta::assert_json_snapshot!("error_not_found", r.doc);
    insta::assert_snapshot!("error_not_found_stderr", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_usage_missing_input() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let (app_id, _, _) = emu.portal_create_app("Made in Partner Center");
    let r = run(
        &cli,
        &[
            "init",
            "--json",
            "--non-interactive",
            "--app-id",
            &app_id,
            "--app-secret-stdin",
        ],
        "some-secret-value\n",
    )
    .await;
    assert_eq!(r.code, 2);
    insta::assert_json_snapshot!("error_usage_missing_input", r.doc);
    insta::assert_snapshot!("error_usage_missing_input_stderr", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_secret_not_verified() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let (app_id, _, _) = emu.portal_create_app("Made in Partner Center");
    let tenant = emu.tenant_id();
    let r = run(
        &cli,
        &[
            "init",
            "--json",
            "--non-interactive",
            "--tenant",
            &tenant,
            "--app-id",
            &app_id,
            "--app-secret-stdin",
            "--verify-timeout",
            "1",
        ],
        "not-the-right-secret-value\n",
    )
    .await;
    assert_eq!(r.code, 7, "{}", r.stderr);
    insta::assert_json_snapshot!("error_secret_not_verified", r.doc);
    insta::assert_snapshot!("error_secret_not_verified_stderr", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_rejected() {
    let (_emu, cli) = onboarded().await;
    let secret = cli.data_dir().join("secrets/default.secret");
    std::fs::write(&secret, "a-secret-that-was-never-issued\n").unwrap();
    let r = run(&cli, &["check", "--json"], "").await;
    assert_eq!(r.code, 11, "{}", r.stderr);
    insta::assert_json_snapshot!("check_rejected", r.doc);
    insta::assert_snapshot!("check_rejected_stderr", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_error_not_found() {
    let (_emu, cli) = onboarded().await;
    let r = run(
        &cli,
        &["rotate", "--json", "--non-interactive", "--profile", "nope"],
        "",
    )
    .await;
    assert_eq!(r.code, 8);
    insta::assert_json_snapshot!("rotate_error_not_found", r.doc);
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

/// `init --dry-run --json --billing` lists the billing steps after the key's (microsoft-apis.md
/// §3.0 "Grant an appRoleAssignment", §5b): a Global admin grants consent through Graph; an
/// Admin agent, who may not, is sent to the admin-consent URL rather than blocked on that step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_with_billing_lists_the_billing_steps() {
    use csp_onboard::emulator::{Knobs, UserKind};
    for (name, user, exit, grant) in [
        ("global_admin", UserKind::GlobalAdmin, 0, "run"),
        ("admin_agent", UserKind::AdminAgent, 4, "admin_consent_url"),
    ] {
        let emu = emulator(Knobs {
            signed_in_user: user,
            ..fast_knobs()
        })
        .await;
        let cli = Cli::new(&emu);
        let tenant = emu.tenant_id();
        let args = [
            "init",
            "--non-interactive",
            "--json",
            "--auth",
            "device-code",
            "--tenant",
            &tenant,
            "--dry-run",
            "--billing",
        ];
        let out = cli.run(&args, "").await;
        assert_eq!(code(&out), exit, "{name}: {}", stderr(&out));
        let v = json(&out);
        let steps = v["plan"]["steps"].as_array().expect("steps");
        let billing: Vec<(&str, &str)> = steps
            .iter()
            .skip_while(|s| s["action"] != "store")
            .skip(1)
            .map(|s| {
                (
                    s["action"].as_str().unwrap_or(""),
                    s["status"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            billing,
            vec![
                ("read_graph_app_roles", "run"),
                (
                    "request_billing",
                    if exit == 0 { "run" } else { "run_if_owner" }
                ),
                ("grant_billing", grant),
                ("verify_billing", "run"),
            ],
            "{name}: {v:#}"
        );
        let assign = &steps[steps.len() - 2];
        assert!(
            assign["call"]
                .as_str()
                .is_some_and(|c| c.contains("/appRoleAssignments")),
            "{assign}"
        );
        assert_eq!(
            assign["permission"],
            "delegated AppRoleAssignment.ReadWrite.All"
        );
        assert_eq!(
            assign["role"],
            "Global Administrator or Privileged Role Administrator"
        );
        if exit != 0 {
            let reason = assign["reason"].as_str().unwrap_or("");
            assert!(
                reason.contains(&format!("{tenant}/v2.0/adminconsent?client_id=")),
                "{reason}"
            );
        }
        assert!(
            emu.requests()
                .iter()
                .all(|r| !r.path.starts_with("/v1.0") || r.method == "GET"),
            "{name}: a dry run writes nothing"
        );
        // Without --billing, the plan has no billing step.
        let out = cli.run(&args[..args.len() - 1], "").await;
        let plain = json(&out)["plan"]["steps"].as_array().expect("steps").len();
        assert_eq!(plain + 4, steps.len(), "{name}");
    }
}

//! `csp-onboard usage`, the built binary against the emulator's partner billing export (Graph
//! "unbilledUsage: export", "Get operation", "manifest resource type"; microsoft-apis.md §5b):
//! totals checked against an independent sum of the same blobs, and every fault a user can meet.

mod common;

use common::*;
use csp_onboard::emulator::{
    BILLING_ROLE, BillingKnobs, Emulator, ExportStyle, Knobs, ThrottleRule,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

fn billing(f: impl FnOnce(&mut BillingKnobs)) -> Knobs {
    let mut b = BillingKnobs {
        usage_rows: 3_000,
        rows_per_blob: 700,
        operation_running: Duration::ZERO,
        ..Default::default()
    };
    f(&mut b);
    Knobs {
        billing: b,
        ..fast_knobs()
    }
}

/// Onboarded with `init`, and (unless `consent` is false) granted the billing permission as an
/// admin would in the portal.
async fn onboarded(knobs: Knobs, consent: bool) -> (Emulator, Cli) {
    let emu = emulator(knobs).await;
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
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    if consent {
        let app_id = json(&out)["app_id"].as_str().unwrap().to_string();
        assert!(emu.grant_graph_app_role(&app_id, BILLING_ROLE));
    }
    (emu, cli)
}

/// Exact micro-units from a JSON number's text with at most six decimals (the test's own
/// arithmetic, independent of the tool's).
fn micros(text: &str) -> i128 {
    let t = text.trim_matches('"');
    let (neg, t) = t.strip_prefix('-').map(|t| (true, t)).unwrap_or((false, t));
    let (i, f) = t.split_once('.').unwrap_or((t, ""));
    assert!(f.len() <= 6, "more than six decimals: {text}");
    let v: i128 = format!("{i}{f:0<6}").parse().unwrap();
    if neg { -v } else { v }
}

/// Per customer ID: the sum of BillingPreTaxTotal over every line of every blob in `dir`,
/// decompressed and read here, keys matched case-insensitively.
fn independent_sums(dir: &Path) -> (BTreeMap<String, i128>, u64) {
    let mut sums = BTreeMap::new();
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(entry.unwrap().path()).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let m: BTreeMap<String, Box<serde_json::value::RawValue>> =
                serde_json::from_str(line).unwrap();
            let get = |k: &str| {
                m.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.get().to_string())
                    .unwrap()
            };
            let customer = get("customerId").trim_matches('"').to_string();
            *sums.entry(customer).or_insert(0) += micros(&get("billingPreTaxTotal"));
            lines += 1;
        }
    }
    (sums, lines)
}

fn cents(micros: i128) -> String {
    // Half away from zero, to the cent.
    let c = (micros.abs() + 5_000) / 10_000 * micros.signum();
    format!(
        "{}{}.{:02}",
        if c < 0 { "-" } else { "" },
        c.abs() / 100,
        c.abs() % 100
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_json_totals_equal_an_independent_sum_of_the_same_blobs() {
    let blobs = tempfile::tempdir().unwrap();
    let dir = blobs.path().to_path_buf();
    let (emu, cli) = onboarded(billing(|b| b.blob_dir = Some(dir.clone())), true).await;

    // First export: PascalCase keys, manifest by link, compressedJSONLines.
    let out = cli.run(&["usage", "--json"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    let (sums, lines) = independent_sums(&dir);
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["line_items"], lines);
    assert_eq!(doc["export"]["billing_period"], "current");
    assert!(sums.len() >= 5, "many customers: {}", sums.len());
    let customers = doc["customers"].as_array().unwrap();
    assert_eq!(customers.len(), sums.len());
    for c in customers {
        let id = c["customer_id"].as_str().unwrap();
        assert_eq!(
            c["total"].as_str().unwrap(),
            cents(sums[id]),
            "customer {id}"
        );
        assert_eq!(c["currency"], "USD");
        assert!(!c["name"].as_str().unwrap().is_empty());
    }
    let grand: i128 = sums.values().sum();
    assert_eq!(doc["totals"][0]["total"].as_str().unwrap(), cents(grand));
    assert!(stderr(&out).contains("excludes reservations, savings plans and non-Azure products"));

    // Second export: camelCase keys (unitOfMeasure, resellerMpnId), inline manifest,
    // compressedJSON, "Succeeded". Same seed, so the same amounts.
    let out = cli.run(&["usage", "--format", "csv"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let csv = stdout(&out);
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("customer_id,customer_name,currency,total,line_items")
    );
    let mut seen = 0;
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[f.len() - 2], cents(sums[f[0]]), "{row}");
        seen += 1;
    }
    assert_eq!(seen, sums.len());
    assert_eq!(emu.usage_exports(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_item_goes_to_the_raw_file_and_the_table_shows_the_customers() {
    let (_emu, cli) = onboarded(billing(|b| b.style = Some(ExportStyle::CamelInline)), true).await;
    let file = cli.data_dir().join("items.csv");
    let out = cli
        .run(
            &[
                "usage",
                "--raw",
                "--out",
                file.to_str().unwrap(),
                "--top",
                "3",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 3_001, "a header and every line item");
    assert!(
        text.starts_with("customer_id,customer_name,subscription_id,usage_date,meter_category")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let table = stdout(&out);
    assert!(table.starts_with("Customer"), "{table}");
    assert!(
        table.contains(" more") && table.contains("Total"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_export_is_polled_as_retry_after_says_until_it_succeeds() {
    let (emu, cli) = onboarded(
        billing(|b| {
            b.operation_running = Duration::from_millis(1500);
            b.retry_after_secs = 1;
        }),
        true,
    )
    .await;
    let out = cli.run(&["usage", "--by", "day", "--json"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(emu.count("GET", "/v1.0/reports/partners/billing/operations/") >= 2);
    let doc = json(&out);
    assert_eq!(doc["by"], "day");
    let days: Vec<&str> = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    let mut sorted = days.clone();
    sorted.sort();
    assert_eq!(days, sorted, "days in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_polls_are_retried_and_the_export_completes() {
    let mut knobs = billing(|_| {});
    knobs.throttle = vec![ThrottleRule {
        route: "GET /v1.0/reports/partners/billing/operations/".into(),
        first_n: 2,
        every_nth: 0,
        retry_after_secs: 1,
    }];
    let (emu, cli) = onboarded(knobs, true).await;
    let out = cli
        .run(&["usage", "--by", "meter-category", "--json"], "")
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let throttled = emu
        .requests()
        .iter()
        .filter(|r| r.status == 429 && r.path.contains("/billing/operations/"))
        .count();
    assert_eq!(throttled, 2);
    let groups = json(&out)["groups"].as_array().unwrap().clone();
    assert!(
        groups.iter().any(|g| g["key"] == "Virtual Machines"),
        "{groups:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_is_an_error_and_no_total() {
    let (_emu, cli) = onboarded(billing(|b| b.fail_export = true), true).await;
    let out = cli.run(&["usage"], "").await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("usage export failed: No data available (code 5000)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_cut_short_is_an_error_never_a_smaller_total() {
    let (_emu, cli) = onboarded(billing(|b| b.truncate_blob = true), true).await;
    let file = cli.data_dir().join("summary.csv");
    let out = cli
        .run(&["usage", "--json", "--out", file.to_str().unwrap()], "")
        .await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["ok"], false);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("truncated or corrupt"),
        "{doc}"
    );
    assert!(doc.get("customers").is_none());
    assert!(!file.exists(), "no file for a partial result");
    assert_eq!(
        std::fs::read_dir(cli.data_dir())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("partial"))
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_download_link_is_an_error_that_says_to_run_again() {
    let (_emu, cli) = onboarded(billing(|b| b.sas_lifetime = Duration::ZERO), true).await;
    let out = cli.run(&["usage"], "").await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("download link was refused") && err.contains("Signature not valid"),
        "{err}"
    );
    assert!(err.contains("run the command again"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_permission_usage_says_how_to_grant_it() {
    let (emu, cli) = onboarded(billing(|_| {}), false).await;
    let out = cli.run(&["usage"], "").await;
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("csp-onboard init --billing"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        emu.usage_exports(),
        0,
        "refused before asking for an export"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn national_clouds_say_the_export_is_unavailable() {
    let (_emu, mut cli) = onboarded(billing(|_| {}), true).await;
    // A profile of the china cloud (made there; here its metadata says so).
    let path = cli.data_dir().join("profiles/default.json");
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    meta["cloud"] = "china".into();
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    cli.env.retain(|(k, _)| k != "CSP_ONBOARD_CLOUD");
    let out = cli.run(&["usage"], "").await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not available in the china cloud"),
        "{}",
        stderr(&out)
    );
}

/// The emulator itself, over HTTP: Graph refuses an App-only token without the app role (403),
/// and an export body without its required fields (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_enforces_the_role_and_the_required_fields() {
    let emu = emulator(billing(|_| {})).await;
    let (app_id, secret) = emu.automation_credentials();
    let http = reqwest::Client::new();
    let token = |http: reqwest::Client, emu: Emulator, app_id: String, secret: String| async move {
        let v: Value = http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                emu.authority_url(),
                emu.tenant_id()
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app_id.as_str()),
                ("client_secret", secret.as_str()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_string()
    };
    let url = format!(
        "{}/v1.0/reports/partners/billing/usage/unbilled/export",
        emu.graph_url()
    );
    let body = serde_json::json!({"currencyCode": "USD", "billingPeriod": "current", "attributeSet": "full"});
    let t = token(
        http.clone(),
        emu.clone(),
        app_id.clone(),
        secret.expose().to_string(),
    )
    .await;
    let r = http
        .post(&url)
        .bearer_auth(&t)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "Authorization_RequestDenied");

    assert!(emu.grant_graph_app_role(&app_id, BILLING_ROLE));
    let t = token(
        http.clone(),
        emu.clone(),
        app_id,
        secret.expose().to_string(),
    )
    .await;
    let r = http
        .post(&url)
        .bearer_auth(&t)
        .json(&serde_json::json!({"currencyCode": "USD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(&url)
        .bearer_auth(&t)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/v1.0/reports/partners/billing/operations/")
    );
}

/// `init --billing` (non-interactive, a Global admin): requiredResourceAccess gains the role found
/// by value, an appRoleAssignment consents, the App-only token proves it; then `usage` and `check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_billing_grants_consent_and_usage_then_works() {
    let emu = emulator(billing(|_| {})).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let out = cli
        .run(
            &[
                "init",
                "--billing",
                "--non-interactive",
                "--json",
                "--auth",
                "device-code",
                "--tenant",
                &tenant,
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Admin consent granted (appRoleAssignment)"),
        "{err}"
    );
    assert!(err.contains("Billing access verified"), "{err}");
    assert_eq!(emu.count("PATCH", "/v1.0/applications/"), 1);
    assert_eq!(emu.count("POST", "/appRoleAssignments"), 1);
    assert_eq!(emu.count("GET", "/v2.0/adminconsent"), 0);

    let out = cli.run(&["usage", "--json"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(json(&out)["customers"].as_array().unwrap().len() >= 5);

    let out = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["billing_access"], true);

    // Again on the onboarded profile: only the permission and consent, no new key.
    let keys = emu.applications()[emu.applications().len() - 1]
        .passwords
        .len();
    let out = cli
        .run(
            &[
                "init",
                "--billing",
                "--non-interactive",
                "--auth",
                "device-code",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already requests PartnerBilling.Read.All"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        emu.applications()[emu.applications().len() - 1]
            .passwords
            .len(),
        keys
    );
}

/// An identity that may change the app but not grant application permissions (here the
/// automation app: Application.ReadWrite.All, no AppRoleAssignment.ReadWrite.All) gets the
/// admin-consent URL; an admin opening it in a browser consents, and the loopback redirect ends
/// the wait. Declined, it is exit 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_to_assign_roles_an_admin_consents_through_the_url() {
    let (emu, cli) = onboarded(billing(|_| {}), false).await;
    let (automation, secret) = emu.automation_credentials();
    let out = check_billing(&cli).await;
    assert_eq!(out, Value::Bool(false));
    for declined in [true, false] {
        emu.update_knobs(|k| k.billing.admin_consent_declined = declined);
        let mut c = cli.command(&[
            "init",
            "--billing",
            "--non-interactive",
            "--auth",
            "client-secret",
            "--client-id",
            &automation,
        ]);
        c.env("CSP_ONBOARD_CLIENT_SECRET", secret.expose());
        c.stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            for line in std::io::BufReader::new(stderr_pipe)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("/v2.0/adminconsent?") {
                    let _ = tx.send(line.trim().to_string());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let url =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)).unwrap())
                .await
                .unwrap();
        assert!(
            url.contains(&format!("client_id={}", json_app_id(&cli))),
            "{url}"
        );
        // The admin's browser: the consent page, then its redirect to the loopback listener.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let back = r.headers()["location"].to_str().unwrap().to_string();
        assert!(back.starts_with("http://localhost:"), "{back}");
        let r = http
            .get(back.replace("localhost", "127.0.0.1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        let err = reader.join().unwrap();
        if declined {
            assert_eq!(status.code(), Some(4), "{err}");
            assert!(err.contains("declined"), "{err}");
        } else {
            assert_eq!(status.code(), Some(0), "{err}");
            assert!(err.contains("Billing access verified"), "{err}");
        }
    }
    assert_eq!(check_billing(&cli).await, Value::Bool(true));
}

fn json_app_id(cli: &Cli) -> String {
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(cli.data_dir().join("profiles/default.json")).unwrap(),
    )
    .unwrap();
    meta["app_id"].as_str().unwrap().to_string()
}

async fn check_billing(cli: &Cli) -> Value {
    let out = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)["billing_access"].clone()
}

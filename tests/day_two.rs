//! Day two, the built binary against the emulator: check's exit codes from each situation,
//! drift, rotate --all under throttling, --overlap, --dry-run, remove --revoke, completions, man.

mod common;

use common::*;
use csp_onboard::emulator::{Emulator, Knobs, ThrottleRule};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

async fn onboarded(knobs: Knobs) -> (Emulator, Cli, Value) {
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
    let doc = json(&out);
    (emu, cli, doc)
}

/// Time passes: the key now ends at `end`, on the app and in the profile's metadata.
fn set_key_end(emu: &Emulator, cli: &Cli, doc: &Value, end: OffsetDateTime) {
    assert!(emu.portal_set_password_end(
        doc["app_id"].as_str().unwrap(),
        doc["key_id"].as_str().unwrap(),
        end
    ));
    let path = cli.data_dir().join("profiles/default.json");
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    meta["secret_expires"] = end
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .into();
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exit_codes_follow_the_key() {
    let (emu, cli, doc) = onboarded(fast_knobs()).await;
    let check = |extra: &'static [&'static str]| {
        let mut a = vec!["check", "--json"];
        a.extend_from_slice(extra);
        a
    };
    let fresh = cli.run(&check(&[]), "").await;
    assert_eq!(code(&fresh), 0, "fresh: {}", stderr(&fresh));
    assert_eq!(json(&fresh)["status"], "ok");

    set_key_end(
        &emu,
        &cli,
        &doc,
        OffsetDateTime::now_utc() + Duration::days(10),
    );
    let soon = cli.run(&check(&[]), "").await;
    assert_eq!(code(&soon), 10, "expiring in 10 days: {}", stderr(&soon));
    assert_eq!(json(&soon)["days_left"], 10, "ten days out reads as 10");
    assert_eq!(
        code(&cli.run(&check(&["--warn-days", "5"]), "").await),
        0,
        "outside a 5-day window"
    );

    set_key_end(
        &emu,
        &cli,
        &doc,
        OffsetDateTime::now_utc() - Duration::days(1),
    );
    let expired = cli.run(&check(&[]), "").await;
    assert_eq!(code(&expired), 11, "expired: {}", stderr(&expired));
    assert_eq!(json(&expired)["status"], "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_key_deleted_in_the_portal() {
    let (emu, cli, doc) = onboarded(fast_knobs()).await;
    assert!(emu.portal_remove_password(
        doc["app_id"].as_str().unwrap(),
        doc["key_id"].as_str().unwrap()
    ));
    let out = cli
        .run(&["check", "--json", "--auth", "device-code"], "")
        .await;
    assert_eq!(code(&out), 11, "{}", stderr(&out));
    let d = json(&out);
    assert_eq!(d["status"], "rejected");
    assert_eq!(d["key_on_app"], false, "drift seen with a sign-in");
    // Without a sign-in, check needs none: no device code was asked for.
    let before = emu.count("POST", "devicecode");
    let out = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&out), 11);
    assert!(json(&out)["key_on_app"].is_null());
    assert_eq!(emu.count("POST", "devicecode"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_rejects_a_wrong_stored_secret() {
    let (_emu, cli, _) = onboarded(fast_knobs()).await;
    std::fs::write(
        cli.data_dir().join("secrets/default.secret"),
        "not-the-secret-value",
    )
    .unwrap();
    let out = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&out), 11, "{}", stderr(&out));
    assert_eq!(json(&out)["status"], "rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_shows_the_plan() {
    let emu = emulator(fast_knobs()).await;
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
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let d = json(&out);
    assert_eq!(d["dry_run"], true);
    let steps = d["plan"]["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| {
        let call = s["call"].as_str().unwrap();
        call.starts_with("POST") && call.ends_with("/applications")
    }));
    assert!(
        steps
            .iter()
            .all(|s| s["permission"].is_string() && s["role"].is_string() && s["status"] == "run"),
        "each step names its permission and role: {d}"
    );
    assert_eq!(
        emu.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.starts_with("/v1.0"))
            .count(),
        0,
        "no Graph write"
    );
    assert!(
        !cli.data_dir().join("profiles/default.json").exists(),
        "nothing stored"
    );

    // The same for a rotation.
    let (emu, cli, doc) = onboarded(fast_knobs()).await;
    let writes = |emu: &Emulator| {
        emu.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.starts_with("/v1.0"))
            .count()
    };
    let before = writes(&emu);
    let out = cli
        .run(
            &[
                "rotate",
                "--json",
                "--non-interactive",
                "--auth",
                "device-code",
                "--dry-run",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["old_key_id"], doc["key_id"]);
    assert_eq!(writes(&emu), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_keeps_the_old_key_until_its_date_then_a_later_rotation_removes_it() {
    let (emu, cli, first) = onboarded(fast_knobs()).await;
    let rot = [
        "rotate",
        "--json",
        "--non-interactive",
        "--auth",
        "device-code",
        "--overlap",
        "7",
    ];
    let out = cli.run(&rot, "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let app_id = first["app_id"].as_str().unwrap();
    let keys = |emu: &Emulator| {
        emu.applications()
            .into_iter()
            .find(|a| a.app_id == app_id)
            .unwrap()
            .passwords
            .len()
    };
    assert_eq!(keys(&emu), 2, "the old key stays for the overlap");
    // Seven days pass.
    let path = cli.data_dir().join("profiles/default.json");
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(meta["retiring"][0]["key_id"], first["key_id"]);
    meta["retiring"][0]["after"] = "2000-01-01T00:00:00Z".into();
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let out = cli
        .run(
            &[
                "rotate",
                "--json",
                "--non-interactive",
                "--auth",
                "device-code",
                "--keep-old",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let app = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app_id)
        .unwrap();
    assert!(
        !app.passwords
            .iter()
            .any(|p| p.key_id == first["key_id"].as_str().unwrap()),
        "the overdue key was removed"
    );
    assert_eq!(
        app.passwords.len(),
        2,
        "the second key (kept) and the new one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_expiring_within_is_a_no_op_for_a_fresh_key() {
    let (emu, cli, _) = onboarded(fast_knobs()).await;
    let before = emu.requests().len();
    let out = cli
        .run(
            &[
                "rotate",
                "--json",
                "--non-interactive",
                "--if-expiring-within",
                "30",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["action"], "none");
    assert_eq!(emu.requests().len(), before, "no request at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_all_rotates_every_profile_and_one_throttle_slows_the_batch_once() {
    let emu = emulator(fast_knobs()).await;
    let mut cli = Cli::new(&emu);
    let (app, secret) = emu.automation_credentials();
    cli.env.push((
        "CSP_ONBOARD_CLIENT_SECRET".into(),
        secret.expose().to_string(),
    ));
    let tenant = emu.tenant_id();
    let n = 6;
    for i in 0..n {
        let profile = format!("p{i}");
        let out = cli
            .run(
                &[
                    "init",
                    "--non-interactive",
                    "--json",
                    "--auth",
                    "client-secret",
                    "--client-id",
                    &app,
                    "--tenant",
                    &tenant,
                    "--profile",
                    &profile,
                ],
                "",
            )
            .await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let before = emu.requests().len();
    emu.update_knobs(|k| {
        k.throttle = vec![ThrottleRule {
            route: "/addPassword".into(),
            first_n: 1,
            every_nth: 0,
            retry_after_secs: 2,
        }]
    });
    let out = cli
        .run(
            &[
                "rotate",
                "--all",
                "--json",
                "--non-interactive",
                "--auth",
                "client-secret",
                "--client-id",
                &app,
                "--tenant",
                &tenant,
                "--jobs",
                "3",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let d = json(&out);
    let rows = d["profiles"].as_array().unwrap();
    assert_eq!(rows.len(), n);
    assert!(rows.iter().all(|r| r["action"] == "rotated"), "{d:#}");
    let log: Vec<_> = emu.requests().into_iter().skip(before).collect();
    let throttled: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert_eq!(throttled.len(), 1);
    // After the 429, no task sent Graph anything until its Retry-After had passed: the batch
    // paused as one. (Requests already in flight when it came are allowed: 200 ms of slack.)
    let t429 = throttled[0].at;
    let slack = std::time::Duration::from_millis(200);
    let early: Vec<_> = log
        .iter()
        .filter(|r| r.at > t429 + slack && r.path.starts_with("/v1.0"))
        .filter(|r| r.at.duration_since(t429) < std::time::Duration::from_millis(1900))
        .map(|r| {
            format!(
                "{} {} after {:?}",
                r.method,
                r.path,
                r.at.duration_since(t429)
            )
        })
        .collect();
    assert!(
        early.is_empty(),
        "Graph requests during the Retry-After: {early:#?}"
    );
    assert!(
        log.iter().any(|r| r.path.starts_with("/v1.0")
            && r.at.duration_since(t429) >= std::time::Duration::from_millis(1900)),
        "the batch went on after the wait"
    );
    // Requests grow linearly: the same number per profile (one sign-in for the batch).
    let add = log
        .iter()
        .filter(|r| r.path.ends_with("/addPassword"))
        .count();
    let remove = log
        .iter()
        .filter(|r| r.path.ends_with("/removePassword"))
        .count();
    assert_eq!((add, remove), (n + 1, n));
    for app in emu
        .applications()
        .iter()
        .filter(|a| a.display_name == "Partner Center web app (csp-onboard)")
    {
        assert_eq!(app.passwords.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_revoke_deletes_the_key_and_forgets_the_profile() {
    let (emu, cli, doc) = onboarded(fast_knobs()).await;
    let out = cli.run(&["remove", "--revoke"], "").await;
    assert_eq!(
        code(&out),
        2,
        "no terminal and no --yes: nobody confirmed: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    // --non-interactive only says "never prompt"; the consent is --yes (issue 12.2).
    let out = cli
        .run(
            &[
                "remove",
                "--revoke",
                "--non-interactive",
                "--yes",
                "--json",
                "--auth",
                "device-code",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let app = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == doc["app_id"].as_str().unwrap())
        .unwrap();
    assert!(app.passwords.is_empty(), "the key is gone from the app");
    assert_eq!(code(&cli.run(&["show"], "").await), 8);
    assert!(!cli.data_dir().join("secrets/default.secret").exists());
}

#[test]
fn completions_load_in_bash_and_the_man_page_renders() {
    let out = std::process::Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("c.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("source {} && complete -p csp-onboard", script.display()),
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("csp-onboard"));
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let out = std::process::Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let man = std::process::Command::new(bin())
        .arg("man")
        .output()
        .unwrap();
    assert!(man.status.success());
    let roff = String::from_utf8_lossy(&man.stdout);
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH"),
        "roff: {}",
        &roff[..80.min(roff.len())]
    );
    assert!(roff.contains("rotate"));
    let page = dir.path().join("csp-onboard.1");
    std::fs::write(&page, &man.stdout).unwrap();
    if let Ok(rendered) = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        && rendered.status.success()
    {
        assert!(String::from_utf8_lossy(&rendered.stdout).contains("csp-onboard"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reads_the_policy_only_when_graph_refuses_the_lifetime() {
    let emu = emulator(fast_knobs()).await;
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
                "--secret-years",
                "2",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rot = [
        "rotate",
        "--non-interactive",
        "--json",
        "--auth",
        "device-code",
    ];
    let before = emu.count("GET", "defaultAppManagementPolicy");
    let out = cli.run(&rot, "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        emu.count("GET", "defaultAppManagementPolicy"),
        before,
        "no policy read on an ordinary rotation"
    );
    let end = time::OffsetDateTime::parse(
        json(&out)["secret_expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        (end - OffsetDateTime::now_utc()).whole_days() > 700,
        "the previous 2-year lifetime is kept"
    );

    // The tenant now caps secrets at a year: the 2-year attempt is refused, the policy read, a 1-year key made.
    emu.update_knobs(|k| {
        k.max_password_lifetime = Some(std::time::Duration::from_secs(365 * 86400));
        k.grant_policy_read = true;
    });
    let out = cli.run(&rot, "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let end = time::OffsetDateTime::parse(
        json(&out)["secret_expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!((end - OffsetDateTime::now_utc()).whole_days() <= 365);
    assert_eq!(emu.count("GET", "defaultAppManagementPolicy"), before + 1);
    // Asked for explicitly, a refused lifetime is exit 5.
    let out = cli
        .run(
            &[
                "rotate",
                "--non-interactive",
                "--auth",
                "device-code",
                "--secret-years",
                "2",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 5, "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_all_goes_on_when_one_profile_fails_and_the_exit_code_says_so() {
    let emu = emulator(fast_knobs()).await;
    let mut cli = Cli::new(&emu);
    let (app, secret) = emu.automation_credentials();
    cli.env.push((
        "CSP_ONBOARD_CLIENT_SECRET".into(),
        secret.expose().to_string(),
    ));
    let tenant = emu.tenant_id();
    let auth = [
        "--non-interactive",
        "--json",
        "--auth",
        "client-secret",
        "--client-id",
        &app,
        "--tenant",
        &tenant,
    ];
    for profile in ["a", "b", "c"] {
        let mut a = vec!["init", "--profile", profile];
        a.extend_from_slice(&auth);
        assert_eq!(code(&cli.run(&a, "").await), 0);
    }
    // Profile b's app is gone: its rotation fails with "not found", the others rotate.
    let path = cli.data_dir().join("profiles/b.json");
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    meta["app_id"] = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f".into();
    meta["app_object_id"] = Value::Null;
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let mut a = vec!["rotate", "--all"];
    a.extend_from_slice(&auth);
    let out = cli.run(&a, "").await;
    assert_eq!(code(&out), 8, "the failures' exit code: {}", stderr(&out));
    let d = json(&out);
    assert_eq!(d["ok"], false);
    let rows = d["profiles"].as_array().unwrap();
    let by = |p: &str| rows.iter().find(|r| r["profile"] == p).unwrap().clone();
    assert_eq!(by("a")["action"], "rotated");
    assert_eq!(by("c")["action"], "rotated");
    assert_eq!(by("b")["ok"], false);
    assert_eq!(by("b")["error"]["exit_code"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_profile_waits_its_turn_instead_of_orphaning_a_key() {
    let knobs = Knobs {
        secret_propagation_delay: std::time::Duration::from_secs(2),
        ..fast_knobs()
    };
    let (emu, cli, first) = onboarded(knobs).await;
    let rot = [
        "rotate",
        "--non-interactive",
        "--json",
        "--auth",
        "device-code",
    ];
    let adds = emu.count("POST", "/addPassword");
    let (a, b) = tokio::join!(cli.run(&rot, ""), async {
        // Start the second once the first has added its key and waits for it to propagate.
        while emu.count("POST", "/addPassword") == adds {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        cli.run(&rot, "").await
    });
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    assert_eq!(code(&b), 1, "{}", stderr(&b));
    assert!(
        stderr(&b).contains("another csp-onboard run"),
        "{}",
        stderr(&b)
    );
    let app = emu
        .applications()
        .into_iter()
        .find(|x| x.app_id == first["app_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(app.passwords.len(), 1, "one key: the first run's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_all_dry_run_sends_nothing() {
    let (emu, cli, doc) = onboarded(fast_knobs()).await;
    let before = emu.requests().len();
    let out = cli
        .run(
            &[
                "rotate",
                "--all",
                "--dry-run",
                "--json",
                "--non-interactive",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(emu.requests().len(), before, "no request at all");
    assert_eq!(json(&out)["profiles"][0]["action"], "rotate");
    let shown = json(&cli.run(&["show", "--json"], "").await);
    assert_eq!(shown["key_id"], doc["key_id"], "nothing rotated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_shorter_than_a_year_still_allows_rotation() {
    let knobs = Knobs {
        max_password_lifetime: Some(std::time::Duration::from_secs(180 * 86400)),
        grant_policy_read: true,
        ..fast_knobs()
    };
    let (_emu, cli, _) = onboarded(knobs).await;
    let out = cli
        .run(
            &[
                "rotate",
                "--non-interactive",
                "--json",
                "--auth",
                "device-code",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let end = OffsetDateTime::parse(
        json(&out)["secret_expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!((end - OffsetDateTime::now_utc()).whole_days() <= 180);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_keeps_the_store_it_was_made_with() {
    let (_emu, mut cli, _) = onboarded(fast_knobs()).await;
    // No --store on later runs: the profile's own (file) store is used, not the default keychain.
    cli.env.retain(|(k, _)| k != "CSP_ONBOARD_STORE");
    cli.env.push((
        "DBUS_SESSION_BUS_ADDRESS".into(),
        "unix:path=/nonexistent/bus".into(),
    ));
    let out = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = cli
        .run(&["show", "--reveal", "--json", "--store", "keychain"], "")
        .await;
    assert_eq!(
        code(&out),
        2,
        "a different store is refused, not silently used: {}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_a_captured_profile_learns_the_expiry_once_signed_in() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let (app_id, _, secret) = emu.portal_create_app("Made in the portal");
    let tenant = emu.tenant_id();
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--tenant",
                &tenant,
                "--app-id",
                &app_id,
                "--app-secret-stdin",
            ],
            &format!("{}\n", secret.expose()),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&out), 0);
    assert!(json(&out)["days_left"].is_null());
    assert!(
        stderr(&out).contains("expiry is unknown"),
        "{}",
        stderr(&out)
    );
    let out = cli
        .run(&["check", "--json", "--auth", "device-code"], "")
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let d = json(&out);
    assert_eq!(d["key_on_app"], true);
    assert_eq!(d["other_keys"], 0);
    assert!(d["days_left"].as_i64().unwrap() > 300, "{d}");
    assert!(
        json(&cli.run(&["show", "--json"], "").await)["key_id"].is_string(),
        "the key ID is learnt too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_revoke_also_deletes_kept_keys() {
    let (emu, cli, first) = onboarded(fast_knobs()).await;
    let out = cli
        .run(
            &[
                "rotate",
                "--non-interactive",
                "--auth",
                "device-code",
                "--overlap",
                "7",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = cli
        .run(
            &["remove", "--revoke", "--yes", "--auth", "device-code"],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let app = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == first["app_id"].as_str().unwrap())
        .unwrap();
    assert!(
        app.passwords.is_empty(),
        "the kept key went too: {:?}",
        app.passwords
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_one_profile_never_removes_a_key_another_profile_holds() {
    let (emu, cli, a) = onboarded(fast_knobs()).await;
    // Profile b captured the same app's key (shown by `show --reveal` of profile a).
    let secret = json(&cli.run(&["show", "--reveal", "--json"], "").await)["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let tenant = emu.tenant_id();
    let app_id = a["app_id"].as_str().unwrap();
    let out = cli
        .run(
            &[
                "init",
                "--profile",
                "b",
                "--non-interactive",
                "--tenant",
                &tenant,
                "--app-id",
                app_id,
                "--app-secret-stdin",
            ],
            &format!("{secret}\n"),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = cli
        .run(
            &["rotate", "--non-interactive", "--auth", "device-code"],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("profile 'b'"), "{}", stderr(&out));
    let out = cli.run(&["check", "--profile", "b"], "").await;
    assert_eq!(code(&out), 0, "b's key still works: {}", stderr(&out));
}

/// The file store is announced once, at `init`, in words that say what happened; `show`,
/// `check` and `rotate` on that profile say nothing about it. Passing `--store file` is
/// no news, so it is not repeated back either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_store_is_announced_once_at_init_when_it_is_news() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu); // CSP_ONBOARD_STORE=file: the environment chose it
    let init = ["init", "--non-interactive", "--auth", "device-code"];
    let out = cli.run(&init, "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("The profile keeps its secret in the file store"),
        "{}",
        stderr(&out)
    );
    for args in [
        &["show", "--reveal"][..],
        &["check"],
        &["rotate", "--non-interactive", "--auth", "device-code"],
    ] {
        let out = cli.run(args, "").await;
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("file store"),
            "{args:?} repeats the store notice: {}",
            stderr(&out)
        );
    }
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--auth",
                "device-code",
                "--store",
                "file",
                "--profile",
                "asked",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("file store"), "{}", stderr(&out));
}

/// A key made a moment ago for one year has 365 days left, as a person counts them from its
/// date, not 364 because a few seconds have passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_counts_the_days_left_of_a_fresh_one_year_key_as_365() {
    let (_emu, cli, doc) = onboarded(fast_knobs()).await;
    let end = OffsetDateTime::parse(
        doc["secret_expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expected = (end.date() - OffsetDateTime::now_utc().date()).whole_days();
    assert_eq!(expected, 365, "init's default is a one-year key");
    let out = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["days_left"], 365);
    let out = cli.run(&["check"], "").await;
    assert!(stderr(&out).contains("365 days left"), "{}", stderr(&out));
    let out = cli.run(&["list"], "").await;
    assert!(stdout(&out).contains(" 365"), "{}", stdout(&out));
}

const GLOBAL_FLAGS: [&str; 7] = [
    "--profile",
    "--cloud",
    "--non-interactive",
    "--json",
    "--store",
    "--verbose",
    "--quiet",
];

fn help_of(args: &[&str]) -> String {
    let out = std::process::Command::new(bin())
        .args(args)
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `init -h` interleaved the global options with init's own: they come last, under their own
/// heading, in every subcommand's help.
#[test]
fn every_subcommand_help_lists_its_own_options_first_and_the_global_ones_last() {
    for sub in ["init", "rotate", "show", "check", "remove"] {
        let help = help_of(&[sub, "-h"]);
        let global = help
            .find("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{sub} -h has a Global options heading:\n{help}"));
        for flag in GLOBAL_FLAGS {
            let at = help
                .find(&format!(" {flag}"))
                .unwrap_or_else(|| panic!("{sub} -h lists {flag}:\n{help}"));
            assert!(at > global, "{sub} -h: {flag} before the heading:\n{help}");
        }
        let own = help.find("\nOptions:\n").expect("an Options heading");
        assert!(own < global, "{sub} -h: its own options first:\n{help}");
    }
}

/// `list` lists every profile: it does not offer a `--profile` it would ignore.
#[test]
fn list_help_does_not_offer_profile() {
    for h in ["-h", "--help"] {
        let help = help_of(&["list", h]);
        assert!(!help.contains("--profile"), "list {h}:\n{help}");
    }
}

/// The man page is one page with every subcommand's options (it pointed to csp-onboard-init(1)
/// pages that do not exist), and its example lines are kept as written, not filled into prose.
#[test]
fn the_man_page_documents_every_subcommand_and_keeps_the_examples_whole() {
    let out = std::process::Command::new(bin())
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    let roff = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!roff.contains("csp-onboard-init(1)"), "no missing pages");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("csp-onboard.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let rendered = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man(1) renders the page");
    assert!(rendered.status.success());
    let text = String::from_utf8_lossy(&rendered.stdout).replace('\u{2010}', "-");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (sub, flag) in [
        ("init", "--verify-timeout"),
        ("init", "--app-secret-stdin"),
        ("rotate", "--if-expiring-within"),
        ("show", "--reveal"),
        ("check", "--warn-days"),
        ("remove", "--revoke"),
        ("emulator", "--auto-approve"),
    ] {
        assert!(
            lines.iter().any(|l| *l == format!("csp-onboard {sub}")),
            "a section for {sub}:\n{text}"
        );
        assert!(text.contains(flag), "{sub}'s {flag} is documented:\n{text}");
    }
    for example in [
        "csp-onboard init --non-interactive --tenant contoso.onmicrosoft.com --secret-years 1 --json",
        "csp-onboard check --warn-days 45 --json   # for cron and monitoring",
        "printf '%s\\n' \"$SECRET\" | csp-onboard init --non-interactive --tenant <tenant-id> \\",
        "--auth client-secret --client-id <automation-app-id> --json",
    ] {
        assert!(
            lines.contains(&example),
            "the example line is whole: {example}\n{text}"
        );
    }
}

/// One word for a Commerce ID nobody gave, in `show` as in `init`: "not given", with the command
/// that adds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_says_a_missing_commerce_id_is_not_given_and_how_to_add_it() {
    let (_emu, cli, _) = onboarded(fast_knobs()).await;
    let out = cli.run(&["show"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("commerce_id"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("not given"), "{line}");
    assert!(!line.contains("unknown"), "{line}");
    assert!(
        line.contains("csp-onboard init --commerce-id <guid>"),
        "{line}"
    );
}

/// An Admin agent who does not own the app may not add a key through Graph ("application:
/// addPassword" needs the owner or an app-admin role): `rotate` says so with exit 4, changes
/// nothing, and names the way that works (App management's "Add key", then capture again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_agent_rotation_is_refused_with_the_app_management_way() {
    let emu = emulator(csp_onboard::emulator::Knobs {
        signed_in_user: csp_onboard::emulator::UserKind::AdminAgent,
        ..fast_knobs()
    })
    .await;
    let cli = Cli::new(&emu);
    let (app_id, _, secret) = emu.portal_create_app("Made in App management");
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--json",
                "--tenant",
                &emu.tenant_id(),
                "--app-id",
                &app_id,
                "--app-secret-stdin",
            ],
            &format!("{}\n", secret.expose()),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let keys = emu
        .applications()
        .iter()
        .find(|a| a.app_id == app_id)
        .unwrap()
        .passwords
        .len();
    let out = cli
        .run(
            &[
                "rotate",
                "--non-interactive",
                "--json",
                "--auth",
                "device-code",
            ],
            "",
        )
        .await;
    let err = stderr(&out);
    assert_eq!(code(&out), 4, "{err}");
    assert!(
        err.contains("Add key") && err.contains("--app-secret-stdin"),
        "{err}"
    );
    let after = emu
        .applications()
        .iter()
        .find(|a| a.app_id == app_id)
        .unwrap()
        .passwords
        .len();
    assert_eq!(after, keys, "no key was added");
    let shown = json(&cli.run(&["show", "--reveal", "--json"], "").await);
    assert_eq!(
        shown["secret"],
        secret.expose(),
        "the stored secret is untouched"
    );
    assert!(shown["pending"].is_null());
}

/// `rotate --all` keeps each profile's previous lifetime, as a single rotation does: a 2-year
/// profile gets a 2-year key, not the 1-year default (it used to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_all_keeps_each_profiles_previous_lifetime() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--json",
                "--auth",
                "device-code",
                "--tenant",
                &emu.tenant_id(),
                "--secret-years",
                "2",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = cli
        .run(
            &[
                "rotate",
                "--all",
                "--json",
                "--non-interactive",
                "--auth",
                "device-code",
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    let end = OffsetDateTime::parse(
        doc["profiles"][0]["secret_expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        (end - OffsetDateTime::now_utc()).whole_days() > 700,
        "the previous 2-year lifetime is kept: {doc}"
    );
}

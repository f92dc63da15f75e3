//! The built binary, scripted, against the emulator over real HTTP: onboarding, rotation, capture,
//! and each exit code of product.md that `init` can produce, from the situation that causes it.

mod common;

use common::*;
use csp_onboard::emulator::{FaultKind, FaultRule, Knobs, UserKind};
use std::time::Duration;

const SCRIPTED: &[&str] = &[
    "init",
    "--non-interactive",
    "--json",
    "--auth",
    "device-code",
];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = SCRIPTED.to_vec();
    v.extend_from_slice(extra);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_init_creates_app_key_and_stores_a_verified_secret() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let out = cli
        .run(&args(&["--tenant", &tenant, "--secret-years", "1"]), "")
        .await;
    assert_eq!(code(&out), 0, "stderr:\n{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["action"], "created");
    assert_eq!(doc["tenant_id"], tenant.as_str());
    assert!(
        doc["commerce_id"].is_null(),
        "never filled in from the tenant ID"
    );
    assert!(
        doc.get("secret").is_none(),
        "the secret is not printed unless asked for"
    );

    // Exactly one app, with exactly the stored key, a service principal and AdminAgents membership.
    let apps = emu.applications();
    let created: Vec<_> = apps.iter().filter(|a| a.app_id == doc["app_id"]).collect();
    assert_eq!(created.len(), 1);
    let app = created[0];
    assert!(app.has_service_principal && app.in_admin_agents);
    assert_eq!(app.sign_in_audience, "AzureADMultipleOrgs");
    assert_eq!(app.passwords.len(), 1);
    assert_eq!(app.passwords[0].key_id, doc["key_id"].as_str().unwrap());
    let days = (app.passwords[0].end - time::OffsetDateTime::now_utc()).whole_days();
    assert!((363..=365).contains(&days), "1-year key, got {days} days");

    // The device code is printed plainly on stderr, even without a terminal.
    assert!(stderr(&out).contains("enter the code"), "{}", stderr(&out));

    // The stored secret is the one on the app: `show --reveal` hands it over and `check` proves it.
    let shown = cli.run(&["show", "--reveal", "--json"], "").await;
    assert_eq!(code(&shown), 0);
    let shown = json(&shown);
    assert_eq!(shown["key_id"], doc["key_id"]);
    let secret = shown["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with(&app.passwords[0].hint));
    let check = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&check), 0, "{}", stderr(&check));
    // No secret on stderr of any command, nor on stdout unless revealed.
    for o in [&out, &check] {
        assert!(!stdout(o).contains(&secret) && !stderr(o).contains(&secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_rotates_without_downtime_and_leaves_one_key() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let first = json(&cli.run(&args(&["--tenant", &tenant]), "").await);
    let second_out = cli.run(&args(&["--tenant", &tenant]), "").await;
    assert_eq!(code(&second_out), 0, "{}", stderr(&second_out));
    let second = json(&second_out);
    assert_eq!(second["action"], "rotated");
    assert_eq!(second["app_id"], first["app_id"], "the same app is reused");
    assert_ne!(second["key_id"], first["key_id"]);
    let apps = emu.applications();
    assert_eq!(
        apps.iter()
            .filter(|a| a.display_name == "Partner Center web app (csp-onboard)")
            .count(),
        1
    );
    let app = apps.iter().find(|a| a.app_id == first["app_id"]).unwrap();
    let keys: Vec<_> = app.passwords.iter().map(|p| p.key_id.as_str()).collect();
    assert_eq!(
        keys,
        vec![second["key_id"].as_str().unwrap()],
        "old key retired"
    );
    // The new key was verified before the old one was removed.
    let log = emu.requests();
    // (the last confirmation is a client-credentials token for the new key)
    let verified_at = log
        .iter()
        .rposition(|r| {
            r.path.ends_with("/oauth2/v2.0/token")
                || r.path.starts_with("/v1/profiles/legalbusiness")
        })
        .unwrap();
    let removed_at = log
        .iter()
        .position(|r| r.path.ends_with("/removePassword"))
        .unwrap();
    assert!(verified_at < removed_at);
    let check = cli.run(&["check"], "").await;
    assert_eq!(code(&check), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_old_keeps_the_previous_key() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let first = json(&cli.run(&args(&["--tenant", &tenant]), "").await);
    let second = json(
        &cli.run(&args(&["--tenant", &tenant, "--keep-old"]), "")
            .await,
    );
    let app = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == first["app_id"])
        .unwrap();
    assert_eq!(app.passwords.len(), 2);
    assert!(
        app.passwords
            .iter()
            .any(|p| p.key_id == first["key_id"].as_str().unwrap())
    );
    assert!(
        app.passwords
            .iter()
            .any(|p| p.key_id == second["key_id"].as_str().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_without_sign_in_stores_a_portal_secret() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let (app_id, _, secret) = emu.portal_create_app("Made in the portal");
    let commerce = "8c2a9f1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b";
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
                "--commerce-id",
                commerce,
                "--app-secret-stdin",
            ],
            &format!("{}\n", secret.expose()),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["action"], "captured");
    assert_eq!(doc["commerce_id"], commerce);
    assert_eq!(
        emu.count("POST", "devicecode"),
        0,
        "no admin sign-in on this path"
    );
    let shown = json(&cli.run(&["show", "--reveal", "--json"], "").await);
    assert_eq!(shown["secret"], secret.expose());
}

/// Capturing the key the profile already holds (a scripted capture run twice) changes nothing:
/// the key ID and expiry the profile knows are kept, so `check` still warns before it expires,
/// and no "previous key stays on the app" is claimed for what is the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capturing_the_stored_key_again_changes_nothing() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let made = json(&cli.run(&args(&["--tenant", &tenant]), "").await);
    let secret = json(&cli.run(&["show", "--reveal", "--json"], "").await)["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let app_id = made["app_id"].as_str().unwrap();
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--json",
                "--app-id",
                app_id,
                "--app-secret-stdin",
            ],
            &format!("{secret}\n"),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["action"], "none", "{doc}");
    assert_eq!(doc["key_id"], made["key_id"], "the key ID is kept");
    assert_eq!(
        doc["secret_expires"], made["secret_expires"],
        "the expiry is kept"
    );
    assert!(!stderr(&out).contains("previous key"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_refuses_a_secret_id_pasted_as_the_secret() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let (app_id, _, _) = emu.portal_create_app("Made in the portal");
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--tenant",
                &emu.tenant_id(),
                "--app-id",
                &app_id,
                "--app-secret-stdin",
            ],
            "0b7a1c52-1d2e-4f3a-8b9c-0d1e2f3a4b5c\n",
        )
        .await;
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("that looks like the secret's ID; paste its Value"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_inputs_in_non_interactive_mode_name_the_flag() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let (app_id, _, secret) = emu.portal_create_app("x");
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--app-id",
                &app_id,
                "--app-secret-stdin",
            ],
            &format!("{}\n", secret.expose()),
        )
        .await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--tenant"), "{}", stderr(&out));

    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--auth",
                "client-secret",
                "--tenant",
                &emu.tenant_id(),
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--client-id"), "{}", stderr(&out));

    let out = cli
        .run(&["init", "--non-interactive", "--app-id", "not-a-guid"], "")
        .await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--app-id"));

    let out = cli
        .run(&["init", "--non-interactive", "--secret-years", "3"], "")
        .await;
    assert_eq!(code(&out), 2, "clap refuses out-of-range years");
    assert_eq!(
        emu.requests().len(),
        0,
        "nothing was sent for a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_refused_for_a_non_loopback_host() {
    let emu = emulator(fast_knobs()).await;
    let mut cli = Cli::new(&emu);
    cli.env.push((
        "CSP_ONBOARD_GRAPH_URL".into(),
        "http://graph.example.com".into(),
    ));
    let out = cli.run(&args(&[]), "").await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("http://"), "{}", stderr(&out));
}

async fn init_exit(knobs: Knobs, extra: &[&str]) -> (i32, String, serde_json::Value) {
    let emu = emulator(knobs).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let mut a = args(&["--tenant", &tenant]);
    a.extend_from_slice(extra);
    let out = cli.run(&a, "").await;
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (code(&out), stderr(&out), doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_4_when_the_user_is_not_an_admin() {
    let (code, err, doc) = init_exit(
        Knobs {
            signed_in_user: UserKind::Plain,
            ..fast_knobs()
        },
        &[],
    )
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("Global Administrator") && err.contains("Admin agent"),
        "{err}"
    );
    assert_eq!(doc["error"]["exit_code"], 4);
    assert_eq!(doc["error"]["kind"], "permission_denied");
}

/// Graph requests that change the tenant (everything but reads).
fn graph_writes(emu: &csp_onboard::emulator::Emulator) -> usize {
    emu.requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1.0") && r.method != "GET")
        .count()
}

/// An Admin agent holds no directory role in the partner tenant: Graph "Create servicePrincipal"
/// needs Global / Application / Cloud Application Administrator, "Add members" a group admin. The
/// plan is refused before any write, and App management plus capture is the way that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_agent_is_refused_before_any_write_then_captures_an_app_management_key() {
    let emu = emulator(Knobs {
        signed_in_user: UserKind::AdminAgent,
        ..fast_knobs()
    })
    .await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let apps = emu.applications().len();
    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    let err = stderr(&out);
    assert_eq!(code(&out), 4, "{err}");
    assert_eq!(graph_writes(&emu), 0, "no write request: {err}");
    assert_eq!(emu.applications().len(), apps, "no application");
    assert!(
        !cli.data_dir().join("profiles/default.json").exists(),
        "no profile"
    );
    assert!(
        !cli.data_dir().join("profiles/default.lock").exists(),
        "nor the lock of a profile that does not exist (issue 11.9: a refused command writes nothing)"
    );
    assert!(err.contains("Admin agent"), "{err}");
    assert!(
        err.contains("App management") && err.contains("appmanagement"),
        "{err}"
    );
    assert!(
        err.contains("--app-id") && err.contains("--app-secret-stdin"),
        "names the capture command: {err}"
    );
    assert_eq!(json(&out)["error"]["exit_code"], 4);

    // The way that works: "Add new web app" and "Add key" in App management, then capture.
    let (app_id, _, secret) = emu.portal_create_app("Made in App management");
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--json",
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
    let shown = json(&cli.run(&["show", "--reveal", "--json"], "").await);
    assert_eq!(shown["secret"], secret.expose(), "verified and stored");

    // An agent's rotation: a new key made in App management, captured again, replaces it.
    let (_, new_secret) = emu.portal_add_key(&app_id).expect("the app exists");
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--json",
                "--app-id",
                &app_id,
                "--app-secret-stdin",
            ],
            &format!("{}\n", new_secret.expose()),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["action"], "recaptured");
    let shown = json(&cli.run(&["show", "--reveal", "--json"], "").await);
    assert_eq!(shown["secret"], new_secret.expose());
    assert_eq!(graph_writes(&emu), 0, "the agent never wrote through Graph");
}

/// An Application Administrator may create the app, its service principal and its secret
/// (Graph "Create servicePrincipal", "application: addPassword") but not add members to
/// AdminAgents ("Add members"): that step is skipped and said so; the rest works, and rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_administrator_onboards_without_the_admin_agents_step() {
    let emu = emulator(Knobs {
        signed_in_user: UserKind::AppAdmin,
        ..fast_knobs()
    })
    .await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains("Application Administrator"), "{err}");
    assert!(
        err.contains("Skipped")
            && err.contains("AdminAgents")
            && err.contains("Global Administrator"),
        "says what is skipped and who can do it: {err}"
    );
    assert_eq!(emu.count("POST", "/members/$ref"), 0, "never attempted");
    assert_eq!(json(&out)["action"], "created");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_4_when_conditional_access_blocks_device_code() {
    let (code, err, _) = init_exit(
        Knobs {
            block_device_code: true,
            ..fast_knobs()
        },
        &[],
    )
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("53003"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_4_when_the_tenant_is_not_a_csp_partner() {
    let (code, err, _) = init_exit(
        Knobs {
            not_csp_tenant: true,
            ..fast_knobs()
        },
        &[],
    )
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not a CSP partner tenant"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_5_when_the_policy_caps_lifetime_below_the_request() {
    // A sign-in that may read the policy (Policy.Read.All granted).
    let knobs = Knobs {
        max_password_lifetime: Some(Duration::from_secs(365 * 86400)),
        grant_policy_read: true,
        ..fast_knobs()
    };
    let (code, err, _) = init_exit(knobs.clone(), &["--secret-years", "2"]).await;
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("--secret-years 1"),
        "the hint offers what is allowed: {err}"
    );
    // Without the flag, the longest allowed key is made.
    let (code, err, doc) = init_exit(knobs, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(doc["secret_expires"].is_string());
}

/// The default: the policy read is refused (no Policy.Read.All), so the policy is unknown, not
/// absent. Graph refuses a year (CredentialInvalidLifetimeAsPerAppPolicy): scripted, exit 5
/// naming --secret-days, never the year just refused; then --secret-days finishes the same app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_policy_that_refuses_a_year_asks_for_secret_days() {
    let emu = emulator(Knobs {
        max_password_lifetime: Some(Duration::from_secs(180 * 86400)),
        ..fast_knobs()
    })
    .await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let out = cli
        .run(&args(&["--tenant", &tenant, "--secret-years", "1"]), "")
        .await;
    let err = stderr(&out);
    assert_eq!(code(&out), 5, "{err}");
    assert!(err.contains("--secret-days"), "{err}");
    assert!(
        !err.contains("--secret-years 1"),
        "1 year was just refused: {err}"
    );
    assert!(
        err.contains("Policy.Read.All"),
        "says why the limit is unknown: {err}"
    );
    let apps = emu.applications().len();

    let out = cli
        .run(&args(&["--tenant", &tenant, "--secret-days", "90"]), "")
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let end = time::OffsetDateTime::parse(
        json(&out)["secret_expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (end - time::OffsetDateTime::now_utc()).whole_days();
    assert!((88..=90).contains(&days), "{days}");
    assert_eq!(
        emu.applications().len(),
        apps,
        "the first run's app, not another"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_5_when_passwords_are_disallowed() {
    let (code, err, _) = init_exit(
        Knobs {
            passwords_disallowed: true,
            ..fast_knobs()
        },
        &[],
    )
    .await;
    assert_eq!(code, 5, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_7_when_the_secret_never_propagates() {
    let knobs = Knobs {
        secret_propagation_delay: Duration::from_secs(3600),
        ..fast_knobs()
    };
    let (code, err, _) = init_exit(knobs, &["--verify-timeout", "3"]).await;
    assert_eq!(code, 7, "{err}");
    assert!(!err.to_lowercase().contains("wrong secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_7_when_partner_center_refuses_the_app_then_a_rerun_finishes_after_registration() {
    let emu = emulator(Knobs {
        require_pc_app_registration: true,
        ..fast_knobs()
    })
    .await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Register existing app"),
        "{}",
        stderr(&out)
    );
    let app = emu
        .applications()
        .into_iter()
        .find(|a| a.display_name == "Partner Center web app (csp-onboard)")
        .unwrap();
    assert_eq!(
        app.passwords.len(),
        1,
        "the pending key is kept, known to the store"
    );
    emu.register_app_in_partner_center(&app.app_id);
    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["action"], "resumed");
    let app = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app.app_id)
        .unwrap();
    assert_eq!(
        app.passwords.len(),
        1,
        "no second key: the pending one was finished"
    );
    assert_eq!(app.passwords[0].key_id, doc["key_id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_8_when_the_existing_app_is_not_found() {
    let (code, err, _) = init_exit(
        fast_knobs(),
        &["--app-id", "5a8e1c3d-2b4f-4a6e-8c0d-1e2f3a4b5c6d"],
    )
    .await;
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("5a8e1c3d-2b4f-4a6e-8c0d-1e2f3a4b5c6d"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_3_when_the_device_code_expires() {
    let knobs = Knobs {
        auto_approve_device_code_after_polls: None,
        device_code_lifetime: Some(Duration::from_secs(2)),
        device_code_interval_secs: Some(1),
        ..fast_knobs()
    };
    let (code, err, _) = init_exit(knobs, &[]).await;
    assert_eq!(code, 3, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_6_when_the_keychain_is_unavailable_for_a_real_cloud() {
    let emu = emulator(fast_knobs()).await;
    let mut cli = Cli::new(&emu);
    cli.env.retain(|(k, _)| k != "CSP_ONBOARD_STORE");
    cli.env
        .push(("CSP_ONBOARD_STORE".into(), "keychain".into()));
    cli.env.push((
        "DBUS_SESSION_BUS_ADDRESS".into(),
        "unix:path=/nonexistent/bus".into(),
    ));
    cli.env
        .push(("XDG_RUNTIME_DIR".into(), "/nonexistent".into()));
    let out = cli.run(&args(&["--tenant", &emu.tenant_id()]), "").await;
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--store file"),
        "the fix is named: {}",
        stderr(&out)
    );
    assert_eq!(
        emu.count("POST", "/applications"),
        0,
        "nothing created before the store is known to work"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_9_when_graph_keeps_failing() {
    let knobs = Knobs {
        faults: vec![FaultRule {
            route: "GET /v1.0/organization".into(),
            first_n: 100,
            kind: FaultKind::Status(503),
        }],
        ..fast_knobs()
    };
    let (code, err, _) = init_exit(knobs, &[]).await;
    assert_eq!(code, 9, "{err}");
}

/// Network down: not 12 s of silence then exit 9, but a line per retry at the default verbosity
/// saying what does not answer and that the tool is trying again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_does_not_answer_is_named_while_retrying() {
    let knobs = Knobs {
        faults: vec![FaultRule {
            route: "GET /v1.0/organization".into(),
            first_n: 100,
            kind: FaultKind::DropConnection,
        }],
        ..fast_knobs()
    };
    let (code, err, _) = init_exit(knobs, &[]).await;
    assert_eq!(code, 9, "{err}");
    let retries: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("Microsoft Graph") && l.contains("retrying"))
        .collect();
    assert!(
        !retries.is_empty(),
        "the retries are shown without -v:\n{err}"
    );
    assert!(
        retries[0].contains("attempt 2"),
        "from the first failed attempt on: {retries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automation_identity_onboards_and_rotates_with_its_secret_from_the_environment() {
    let emu = emulator(fast_knobs()).await;
    let mut cli = Cli::new(&emu);
    let (app, secret) = emu.automation_credentials();
    cli.env.push((
        "CSP_ONBOARD_CLIENT_SECRET".into(),
        secret.expose().to_string(),
    ));
    let tenant = emu.tenant_id();
    let run = [
        "init",
        "--non-interactive",
        "--json",
        "--auth",
        "client-secret",
        "--client-id",
        &app,
        "--tenant",
        &tenant,
    ];
    let out = cli.run(&run, "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(emu.count("POST", "devicecode"), 0, "no user sign-in");
    let out = cli.run(&run, "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["action"], "rotated");
    assert!(!stderr(&out).contains(secret.expose()) && !stdout(&out).contains(secret.expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_access_token_is_read_from_stdin() {
    use csp_onboard::partner_center::{self as pc, HttpClient, SignInClient};
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    // An admin's delegated Graph token, obtained elsewhere (here: a device-code sign-in).
    let ep = csp_onboard::cloud::Endpoints::from_urls(
        csp_onboard::cloud::Cloud::Custom,
        &emu.authority_url(),
        &emu.graph_url(),
        &emu.partner_center_url(),
    )
    .unwrap();
    let http = HttpClient::new().unwrap();
    let client = SignInClient {
        client_id: csp_onboard::cloud::DEFAULT_PUBLIC_CLIENT_ID.into(),
        tenant: emu.tenant_id(),
    };
    let scopes = pc::graph_sign_in_scopes(&ep);
    let dc = pc::device_code_start(&http, &ep, &client, &scopes)
        .await
        .unwrap();
    let token = pc::device_code_poll(&http, &ep, &client, &dc, |_| {})
        .await
        .unwrap();
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--json",
                "--auth",
                "access-token",
                "--access-token-stdin",
                "--tenant",
                &emu.tenant_id(),
            ],
            &format!("{}\n", token.access_token.expose()),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains(token.access_token.expose()));
    // A token for the wrong audience is refused with a sign-in error, not a raw dump.
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--profile",
                "other",
                "--auth",
                "access-token",
                "--access-token-stdin",
            ],
            "not-a-real-token\n",
        )
        .await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(!stderr(&out).contains("HTTP/1.1"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_captured_profile_retires_the_portal_key_found_by_its_hint() {
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
    let doc = json(&out);
    let app = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app_id)
        .unwrap();
    let keys: Vec<&str> = app.passwords.iter().map(|p| p.key_id.as_str()).collect();
    assert_eq!(
        keys,
        vec![doc["key_id"].as_str().unwrap()],
        "the portal key was retired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_on_any_output_even_at_the_highest_verbosity() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let out = cli
        .run(
            &[
                "init",
                "-vvv",
                "--non-interactive",
                "--auth",
                "device-code",
                "--tenant",
                &tenant,
            ],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rotated = cli
        .run(
            &[
                "init",
                "-vvv",
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
    let secret = json(&cli.run(&["show", "--reveal", "--json"], "").await)["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let everything = format!(
        "{}{}{}{}",
        stdout(&out),
        stderr(&out),
        stdout(&rotated),
        stderr(&rotated)
    );
    assert!(!everything.contains(&secret), "the secret leaked");
    assert!(!everything.contains("eyJ"), "a JWT-shaped token leaked");
    let meta = std::fs::read_to_string(cli.data_dir().join("profiles/default.json")).unwrap();
    assert!(!meta.contains(&secret), "metadata holds no secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cli.data_dir().join("secrets/default.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_with_a_wrong_app_id_fails_fast_instead_of_waiting_for_propagation() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let (_, _, secret) = emu.portal_create_app("Made in the portal");
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--tenant",
                &emu.tenant_id(),
                "--app-id",
                "0f9e8d7c-6b5a-4c3d-9e1f-2a3b4c5d6e7f",
                "--app-secret-stdin",
            ],
            &format!("{}\n", secret.expose()),
        )
        .await;
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("700016"), "{}", stderr(&out));
    assert_eq!(
        emu.count("POST", "/oauth2/v2.0/token"),
        1,
        "one try: a portal app is not replicating"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_is_not_used_for_the_loopback_emulator() {
    let emu = emulator(fast_knobs()).await;
    let mut cli = Cli::new(&emu);
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        // Nothing listens there: a request sent through it would fail.
        cli.env.push((var.into(), "http://127.0.0.1:9".into()));
    }
    let tenant = emu.tenant_id();
    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_with_another_app_is_refused_and_a_commerce_id_can_be_added_later() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let first = json(&cli.run(&args(&["--tenant", &tenant]), "").await);
    let (other, _, secret) = emu.portal_create_app("Another app");
    let out = cli
        .run(&args(&["--tenant", &tenant, "--app-id", &other]), "")
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--profile"), "{}", stderr(&out));
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--tenant",
                &tenant,
                "--app-id",
                &other,
                "--app-secret-stdin",
            ],
            &format!("{}\n", secret.expose()),
        )
        .await;
    assert_eq!(
        code(&out),
        2,
        "capturing into an existing profile is refused: {}",
        stderr(&out)
    );
    let shown = json(&cli.run(&["show", "--json"], "").await);
    assert_eq!(shown["key_id"], first["key_id"], "nothing changed");

    let commerce = "8c2a9f1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b";
    let out = cli
        .run(
            &args(&["--tenant", &tenant, "--commerce-id", commerce, "--dry-run"]),
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        json(&cli.run(&["show", "--json"], "").await)["commerce_id"].is_null(),
        "dry run saves nothing"
    );
    let out = cli
        .run(&args(&["--tenant", &tenant, "--commerce-id", commerce]), "")
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["commerce_id"], commerce);
    assert_eq!(doc["action"], "commerce_id_updated");
    assert_eq!(
        doc["key_id"], first["key_id"],
        "adding the Commerce ID does not rotate the key"
    );
}

/// An Admin agent who gives the App ID of an app it does not own: the service principal step is
/// skipped (an App management app has one), addPassword is refused ("application: addPassword"),
/// and nothing is left behind: no key, no profile. The message names App management's "Add key".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_agent_adding_a_key_to_an_app_it_does_not_own_leaves_nothing() {
    let emu = emulator(Knobs {
        signed_in_user: UserKind::AdminAgent,
        ..fast_knobs()
    })
    .await;
    let (app_id, _, _) = emu.portal_create_app("Made in App management");
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let out = cli
        .run(&args(&["--tenant", &tenant, "--app-id", &app_id]), "")
        .await;
    let err = stderr(&out);
    assert_eq!(code(&out), 4, "{err}");
    assert!(err.contains("Add key"), "{err}");
    assert_eq!(emu.count("POST", "/servicePrincipals"), 0, "{err}");
    let app = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app_id)
        .unwrap();
    assert_eq!(app.passwords.len(), 1, "only App management's key");
    assert!(
        !cli.data_dir().join("profiles/default.json").exists(),
        "no profile"
    );
}

/// A CSP partner tenant whose Partner Center service principal is missing (deleted in the Entra
/// admin center) is still a partner tenant: for an account that may create it, creating it is
/// the plan's first step (as CIPP's SAM setup does); an Admin agent is told exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_partner_center_service_principal_is_created_by_an_admin_and_named_to_an_agent() {
    let emu = emulator(fast_knobs()).await;
    assert!(emu.portal_delete_service_principal(csp_onboard::cloud::PARTNER_CENTER_APP_ID));
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();

    emu.update_knobs(|k| k.signed_in_user = UserKind::AdminAgent);
    let out = cli
        .run(&args(&["--tenant", &tenant, "--dry-run"]), "")
        .await;
    let err = stderr(&out);
    assert_eq!(code(&out), 4, "{err}");
    assert!(
        err.contains("creating Partner Center's service principal needs"),
        "{err}"
    );
    assert_eq!(graph_writes(&emu), 0);

    emu.update_knobs(|k| k.signed_in_user = UserKind::GlobalAdmin);
    let pc_sp = format!(
        "servicePrincipals(appId='{}')",
        csp_onboard::cloud::PARTNER_CENTER_APP_ID
    );
    let before = emu.count("GET", &pc_sp);
    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("Partner Center's service principal is in the tenant"));
    assert_eq!(
        emu.count("GET", &pc_sp),
        before + 1,
        "read once, by the first round of reads"
    );
}

/// A delegated Graph token for whoever the emulator signs in now (device code, auto-approved).
async fn graph_as(
    emu: &csp_onboard::emulator::Emulator,
    who: UserKind,
) -> csp_onboard::partner_center::Graph {
    use csp_onboard::partner_center::{self as pc, Graph, HttpClient, SignInClient};
    emu.update_knobs(|k| k.signed_in_user = who);
    let ep = csp_onboard::cloud::Endpoints::from_urls(
        csp_onboard::cloud::Cloud::Custom,
        &emu.authority_url(),
        &emu.graph_url(),
        &emu.partner_center_url(),
    )
    .unwrap();
    let http = HttpClient::new().unwrap();
    let client = SignInClient {
        client_id: csp_onboard::cloud::DEFAULT_PUBLIC_CLIENT_ID.into(),
        tenant: emu.tenant_id(),
    };
    let dc = pc::device_code_start(&http, &ep, &client, &pc::graph_sign_in_scopes(&ep))
        .await
        .unwrap();
    let t = pc::device_code_poll(&http, &ep, &client, &dc, |_| {})
        .await
        .unwrap();
    Graph::new(http, &ep, t.access_token)
}

/// An Admin agent who owns the app (it registered it; an admin made its service principal) may
/// add and remove its keys through Graph ("application: addPassword": the owner may): `init
/// --app-id` skips the service principal step it may not take, and `rotate` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_agent_who_owns_the_app_adds_and_rotates_its_keys_through_graph() {
    let emu = emulator(fast_knobs()).await;
    let app = graph_as(&emu, UserKind::AdminAgent)
        .await
        .create_application("The agent's own app")
        .await
        .expect("any member may register an app, and owns it");
    graph_as(&emu, UserKind::GlobalAdmin)
        .await
        .create_service_principal(&app.app_id)
        .await
        .expect("an admin makes its service principal");
    emu.update_knobs(|k| k.signed_in_user = UserKind::AdminAgent);
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let out = cli
        .run(&args(&["--tenant", &tenant, "--app-id", &app.app_id]), "")
        .await;
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains("Skipped"), "the service principal step: {err}");
    let first = json(&out)["key_id"].clone();
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
    assert_ne!(json(&out)["key_id"], first);
    let keys = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app.app_id)
        .unwrap()
        .passwords;
    assert_eq!(keys.len(), 1, "the old key was removed by its owner");
}

// ---- Issue 12: what a new user reads after a run. ----

/// After a rotation that removed the old key, the old secret is dead: say so, and what must be
/// updated. `--json` carries `old_key_removed`. A kept old key is not dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_that_removed_the_old_key_says_the_old_secret_no_longer_works() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["old_key_removed"], true);
    let err = stderr(&out);
    assert!(err.contains("The old secret no longer works"), "{err}");
    assert!(
        err.contains("show --reveal"),
        "how to get the new one: {err}"
    );

    let out = cli
        .run(&args(&["--tenant", &tenant, "--keep-old"]), "")
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["old_key_removed"], false);
    assert!(
        !stderr(&out).contains("no longer works"),
        "{}",
        stderr(&out)
    );

    // rotate --all says it per profile too.
    let all = [
        "rotate",
        "--all",
        "--json",
        "--non-interactive",
        "--auth",
        "device-code",
    ];
    let out = cli.run(&all, "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["profiles"][0]["old_key_removed"], true);
    assert!(stderr(&out).contains("no longer work"), "{}", stderr(&out));
}

/// A pasted value with whitespace inside is refused before any request; the capture's wait says
/// what it is (one limit, the two causes, Ctrl-C) and the end says which cause is likelier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_checks_the_pasted_value_first_and_says_what_the_wait_is() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let (app_id, _, _) = emu.portal_create_app("Made in the portal");
    let tenant = emu.tenant_id();
    let capture = [
        "init",
        "--non-interactive",
        "--tenant",
        &tenant,
        "--app-id",
        &app_id,
        "--app-secret-stdin",
        "--verify-timeout",
        "2",
    ];
    let out = cli.run(&capture, "abc~defgh ijklmnop\n").await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("space"), "{}", stderr(&out));
    assert_eq!(emu.count("POST", "/token"), 0, "refused before any request");

    let out = cli.run(&capture, "a-value-that-was-never-issued\n").await;
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    let err = stderr(&out);
    for said in [
        "up to 2 s",
        "a key made in the last minutes may still be spreading",
        "a mistyped one never works",
        "Ctrl-C",
        "most likely",
    ] {
        assert!(err.contains(said), "{said:?} in:\n{err}");
    }
}

/// The next steps name the command the way this binary was started when `csp-onboard` is not on
/// PATH (after `cargo run`), and plainly `csp-onboard` when it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_steps_name_the_command_as_it_can_be_run() {
    let emu = emulator(fast_knobs()).await;
    let mut cli = Cli::new(&emu);
    cli.env.push(("PATH".into(), "/usr/bin:/bin".into()));
    let tenant = emu.tenant_id();
    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let started = format!("{} check", bin().display());
    assert!(
        stderr(&out).contains(&started),
        "{started} in:\n{}",
        stderr(&out)
    );

    let dir = bin().parent().unwrap().display().to_string();
    cli.env.retain(|(k, _)| k != "PATH");
    cli.env
        .push(("PATH".into(), format!("{dir}:/usr/bin:/bin")));
    cli.env
        .push(("CSP_ONBOARD_PROFILE".into(), "second".into()));
    let out = cli.run(&args(&["--tenant", &tenant]), "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`csp-onboard check --profile second`"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(&started), "{}", stderr(&out));
}

/// The Done screen: a missing Commerce ID is "not given" (as `show` says) with the command that
/// adds it later; the values for a cost tool come from `show --reveal --json` (plain
/// `show --reveal` prints the secret alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_done_screen_says_how_to_add_the_commerce_id_and_hand_over_the_values() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let out = cli.run(&args(&["--tenant", &emu.tenant_id()]), "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("not given"), "{err}");
    assert!(!err.contains("unknown"), "{err}");
    assert!(
        err.contains("csp-onboard init --commerce-id <guid>"),
        "{err}"
    );
    assert!(err.contains("show --reveal --json"), "{err}");
    assert!(!err.contains("hands them over"), "{err}");
}

/// A second app with the display name of one already in the tenant is not created silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_app_named_like_an_existing_one_warns_and_names_it() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let (existing, _, _) = emu.portal_create_app("Partner Center web app (csp-onboard)");
    let out = cli.run(&args(&["--tenant", &emu.tenant_id()]), "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("already has an app named"), "{err}");
    assert!(
        err.contains(&existing),
        "the existing App ID is named: {err}"
    );
    assert!(err.contains("--app-id"), "how to reuse it: {err}");
}

/// The same-name look-up only feeds a warning: when Graph keeps failing it, `init` still
/// onboards (and says it could not check) rather than stopping before the app exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_same_name_lookup_only_warns() {
    let knobs = Knobs {
        faults: vec![FaultRule {
            route: "GET /v1.0/applications?$filter=displayName".into(),
            first_n: 100,
            kind: FaultKind::Status(503),
        }],
        ..fast_knobs()
    };
    let (code, err, _) = init_exit(knobs, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Could not check for other apps named"),
        "{err}"
    );
}

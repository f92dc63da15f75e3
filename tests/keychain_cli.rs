//! The real OS keychain end to end: init, show, rotate, remove through the Secret Service, each
//! checked with `secret-tool`. Ignored unless asked for: `scripts/with-secret-service.sh cargo test
//! -- --include-ignored` runs it, as CI does.

mod common;

use common::*;

fn secret_tool_lookup(profile: &str) -> Option<String> {
    let out = std::process::Command::new("secret-tool")
        .args(["lookup", "service", "csp-onboard", "username", profile])
        .output()
        .expect("secret-tool runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        .filter(|s| !s.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Secret Service: scripts/with-secret-service.sh"]
async fn init_rotate_remove_through_the_real_secret_service() {
    let profile = format!("kc-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::with_keychain(&emu, &profile);
    let tenant = emu.tenant_id();
    let init = [
        "init",
        "--non-interactive",
        "--json",
        "--auth",
        "device-code",
        "--tenant",
        &tenant,
    ];

    let out = cli.run(&init, "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["store"], "keychain");
    let first = json(&cli.run(&["show", "--reveal", "--json"], "").await);
    let stored = secret_tool_lookup(&profile).expect("the item is in the Secret Service");
    assert_eq!(first["secret"].as_str(), Some(stored.as_str()));
    assert!(
        !cli.data_dir().join("secrets").exists(),
        "no file fallback for a keychain store"
    );

    let out = cli.run(&init, "").await;
    assert_eq!(code(&out), 0, "rotation: {}", stderr(&out));
    let second = json(&cli.run(&["show", "--reveal", "--json"], "").await);
    let rotated = secret_tool_lookup(&profile).expect("still one item");
    assert_ne!(rotated, stored);
    assert_eq!(second["secret"].as_str(), Some(rotated.as_str()));
    assert!(
        secret_tool_lookup(&format!("{profile}#pending")).is_none(),
        "no pending item left"
    );
    assert_eq!(code(&cli.run(&["check"], "").await), 0);

    let out = cli.run(&["remove", "--yes"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        secret_tool_lookup(&profile).is_none(),
        "removed from the Secret Service"
    );
    assert_eq!(code(&cli.run(&["show"], "").await), 8);
}

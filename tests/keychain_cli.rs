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

/// In a private session bus of its own (locking the shared test keyring would break the other
/// tests): make a login collection, onboard the emulator demo into it, lock it, then run.
#[cfg(target_os = "linux")]
const LOCKED_KEYRING_SCRIPT: &str = r#"
printf pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null
ok=""
for i in $(seq 1 100); do
  if dbus-send --session --print-reply --dest=org.freedesktop.DBus / \
      org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null \
      | grep -q 'boolean true'; then ok=1; break; fi
  sleep 0.05
done
[ -n "$ok" ] || exit 90
pid=$(dbus-send --session --print-reply --dest=org.freedesktop.DBus / \
  org.freedesktop.DBus.GetConnectionUnixProcessID string:org.freedesktop.secrets | awk '/uint32/ {print $2}')
trap 'kill "$pid" 2>/dev/null' EXIT
run() { name=$1; shift; "$BIN" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; echo $? >"$OUT/$name.code"; }
run init1 init --cloud emulator --non-interactive --json
dbus-send --session --print-reply --dest=org.freedesktop.secrets /org/freedesktop/secrets \
  org.freedesktop.Secret.Service.Lock array:objpath:/org/freedesktop/secrets/collection/login \
  >"$OUT/lock.out" 2>&1 || exit 91
run show show --reveal
run init2 init --non-interactive
"#;

/// With the keychain locked, the secret is there but locked (exit 6), not "no secret is stored"
/// (exit 8); init does not move the profile to the file store; and the hint is one that works
/// (unlock), not `--store file`, which this profile refuses.
#[cfg(target_os = "linux")]
#[test]
#[ignore = "needs gnome-keyring and a D-Bus session bus: scripts/with-secret-service.sh"]
fn a_locked_keychain_is_reported_as_locked_and_the_profile_stays_in_it() {
    let root = tempfile::tempdir().unwrap();
    let out_dir = root.path().join("out");
    let data = root.path().join("data-dir");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut cmd = std::process::Command::new("timeout");
    cmd.args([
        "120",
        "dbus-run-session",
        "--",
        "sh",
        "-c",
        LOCKED_KEYRING_SCRIPT,
    ]);
    for (var, sub) in [
        ("XDG_DATA_HOME", "xdg-data"),
        ("XDG_CACHE_HOME", "xdg-cache"),
        ("XDG_CONFIG_HOME", "xdg-config"),
        ("XDG_RUNTIME_DIR", "xdg-run"),
    ] {
        let p = root.path().join(sub);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        cmd.env(var, p);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("CSP_ONBOARD_") || k == "DISPLAY" || k == "WAYLAND_DISPLAY" {
            cmd.env_remove(k);
        }
    }
    cmd.env("BIN", bin())
        .env("OUT", &out_dir)
        .env("CSP_ONBOARD_DATA_DIR", &data)
        .env("CSP_ONBOARD_PROFILE", "locked-demo")
        .env("NO_COLOR", "1");
    let ran = cmd.output().unwrap();
    let read = |f: &str| std::fs::read_to_string(out_dir.join(f)).unwrap_or_default();
    assert!(
        ran.status.success(),
        "{:?} {}\ninit1: {}",
        ran.status,
        String::from_utf8_lossy(&ran.stderr),
        read("init1.err")
    );
    assert_eq!(read("init1.code").trim(), "0", "{}", read("init1.err"));
    let made: serde_json::Value = serde_json::from_str(&read("init1.out")).unwrap();
    assert_eq!(made["store"], "keychain", "the demo went to the keychain");

    let err = read("show.err");
    assert_eq!(read("show.code").trim(), "6", "show --reveal: {err}");
    assert!(
        err.contains("locked") && !err.contains("no secret is stored"),
        "{err}"
    );
    assert!(err.contains("unlock"), "the hint says how to unlock: {err}");
    assert!(
        !err.contains("--store file"),
        "a hint this profile would refuse: {err}"
    );

    let err = read("init2.err");
    assert_eq!(read("init2.code").trim(), "6", "init: {err}");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("profiles/locked-demo.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        meta["store"], "keychain",
        "init left the profile where it was"
    );
    assert!(
        !data.join("secrets/locked-demo.secret").exists(),
        "no secret went to the file store"
    );
}

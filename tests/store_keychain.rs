//! The store against the real OS keychain: set/get/replace/delete through a real Secret Service,
//! checked from outside with libsecret's `secret-tool`, plus the "unavailable" and "locked" cases.
//!
//! Tests that need a Secret Service are `#[ignore]`d with that reason: CI runs them with
//! `scripts/with-secret-service.sh cargo test -- --include-ignored`, inside a private, unlocked
//! gnome-keyring session. The no-bus test needs nothing and always runs. A test that starts
//! itself as a child process plays the child's part when `CSP_STORE_TEST_CHILD` is set.

use std::path::Path;
use std::process::{Command, Output};

use csp_onboard::cloud::Cloud;
use csp_onboard::exit::Exit;
use csp_onboard::secret::Secret;
use csp_onboard::store::{Slot, StoreError, StoreKind, open_secrets};

/// Set in the child processes this file spawns of itself.
const CHILD_ENV: &str = "CSP_STORE_TEST_CHILD";

#[cfg(target_os = "linux")]
fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

fn unique_profile(tag: &str) -> String {
    format!(
        "it-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn secret_tool(args: &[&str]) -> Output {
    Command::new("secret-tool")
        .args(args)
        .output()
        .expect("secret-tool is installed (libsecret-tools)")
}

/// What `secret-tool lookup service csp-onboard username <user>` prints, `None` if nothing matches.
fn lookup(user: &str) -> Option<String> {
    let out = secret_tool(&["lookup", "service", "csp-onboard", "username", user]);
    if out.status.success() && !out.stdout.is_empty() {
        Some(String::from_utf8(out.stdout).expect("utf-8 secret"))
    } else {
        None
    }
}

/// `secret-tool search --all` output for one user: how many items, and the text.
fn search(user: &str) -> (usize, String) {
    let out = secret_tool(&[
        "search",
        "--all",
        "service",
        "csp-onboard",
        "username",
        user,
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let items = text.lines().filter(|l| l.starts_with('[')).count();
    (items, text)
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs a real Secret Service: scripts/with-secret-service.sh"]
async fn secret_service_set_get_replace_delete_seen_by_secret_tool() {
    // A current-thread runtime: if a keychain call blocked it instead of going to the blocking
    // pool, the zbus store could not make progress inside it either way; this proves the path works.
    let (secrets, notice) =
        tokio::task::spawn_blocking(|| open_secrets(StoreKind::Keychain, Cloud::Global))
            .await
            .unwrap()
            .expect("the real Secret Service opens");
    assert_eq!(notice, None);
    assert_eq!(secrets.kind(), StoreKind::Keychain);
    let profile = unique_profile("rt");
    assert_eq!(
        secrets.describe(&profile),
        format!("Secret Service (service csp-onboard, username {profile})")
    );
    assert_eq!(secrets.get(&profile, Slot::Current).await.unwrap(), None);

    let first = format!("first~{}", uuid::Uuid::new_v4());
    secrets
        .set(&profile, Slot::Current, &Secret::new(&first))
        .await
        .unwrap();
    assert_eq!(lookup(&profile).as_deref(), Some(first.as_str()));
    let (n, text) = search(&profile);
    assert_eq!(n, 1, "{text}");
    assert!(
        text.contains(&format!("label = csp-onboard client secret ({profile})")),
        "{text}"
    );

    // Replace: still exactly one item, holding the new value.
    let second = format!("second~{}", uuid::Uuid::new_v4());
    secrets
        .set(&profile, Slot::Current, &Secret::new(&second))
        .await
        .unwrap();
    assert_eq!(lookup(&profile).as_deref(), Some(second.as_str()));
    assert_eq!(search(&profile).0, 1);
    let got = secrets.get(&profile, Slot::Current).await.unwrap().unwrap();
    assert_eq!(got.expose(), second);

    // The pending slot is a separate item.
    let pending = format!("pending~{}", uuid::Uuid::new_v4());
    secrets
        .set(&profile, Slot::Pending, &Secret::new(&pending))
        .await
        .unwrap();
    let pending_user = format!("{profile}#pending");
    assert_eq!(lookup(&pending_user).as_deref(), Some(pending.as_str()));
    assert_eq!(lookup(&profile).as_deref(), Some(second.as_str()));
    assert!(search(&pending_user).1.contains(&format!(
        "label = csp-onboard pending client secret ({profile})"
    )));

    // Delete: secret-tool finds nothing, and a second delete reports there was nothing.
    assert!(secrets.delete(&profile, Slot::Current).await.unwrap());
    assert_eq!(lookup(&profile), None);
    assert_eq!(search(&profile).0, 0);
    assert_eq!(secrets.get(&profile, Slot::Current).await.unwrap(), None);
    assert!(!secrets.delete(&profile, Slot::Current).await.unwrap());
    assert!(secrets.delete(&profile, Slot::Pending).await.unwrap());
    assert_eq!(lookup(&pending_user), None);
}

#[cfg(target_os = "linux")]
#[test]
#[ignore = "needs a real Secret Service: scripts/with-secret-service.sh"]
fn a_value_stored_by_secret_tool_is_read_back() {
    // Interop the other way: an item made by another Secret Service client is found by name.
    let profile = unique_profile("interop");
    let mut child = Command::new("secret-tool")
        .args([
            "store",
            "--label=interop",
            "service",
            "csp-onboard",
            "username",
            &profile,
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-secret-tool")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let (secrets, _) = open_secrets(StoreKind::Keychain, Cloud::Global).unwrap();
    let backend = secrets.backend();
    assert_eq!(
        backend
            .get(&profile, Slot::Current)
            .unwrap()
            .unwrap()
            .expose(),
        "from-secret-tool"
    );
    assert!(backend.delete(&profile, Slot::Current).unwrap());
    assert_eq!(lookup(&profile), None);
}

/// Run one test of this binary in a child process with extra environment.
fn run_child(test: &str, envs: &[(&str, &str)], wrapper: &[&str]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if wrapper.is_empty() {
        Command::new(&exe)
    } else {
        let mut c = Command::new(wrapper[0]);
        c.args(&wrapper[1..]).arg(&exe);
        c
    };
    // --include-ignored: the test may be one that needs a real Secret Service.
    cmd.args([
        "--exact",
        test,
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1")
    // No display: an unlock prompt must fail at once, never wait for a click.
    .env_remove("DISPLAY")
    .env_remove("WAYLAND_DISPLAY")
    .envs(envs.iter().copied());
    cmd.output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--stdout--\n{}\n--stderr--\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(target_os = "linux")]
#[test]
fn no_session_bus_is_reported_up_front_and_only_the_emulator_falls_back() {
    if is_child() {
        return child_no_bus();
    }
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let out = run_child(
        "no_session_bus_is_reported_up_front_and_only_the_emulator_falls_back",
        &[
            (
                "DBUS_SESSION_BUS_ADDRESS",
                "unix:path=/nonexistent/csp-onboard-test/bus",
            ),
            ("XDG_RUNTIME_DIR", "/nonexistent/csp-onboard-test"),
            ("CSP_ONBOARD_DATA_DIR", data_dir),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("child_no_bus checked"),
        "{}",
        show(&out)
    );
}

#[cfg(target_os = "linux")]
/// The child's part: a real cloud refuses a store without a bus; the emulator falls back.
fn child_no_bus() {
    // A real cloud: an error with exit 6, the reason and the alternatives.
    let err = open_secrets(StoreKind::Keychain, Cloud::Global).unwrap_err();
    assert!(matches!(err, StoreError::NoSessionBus(_)), "{err:?}");
    let ue = err.to_user_error();
    assert_eq!(ue.exit, Exit::Keychain);
    assert!(
        ue.message.contains("no D-Bus session bus"),
        "{}",
        ue.message
    );
    let hint = ue.hint.unwrap();
    assert!(
        hint.contains("dbus-run-session") && hint.contains("--store file"),
        "{hint}"
    );
    // The emulator: the file store, announced.
    let (secrets, notice) = open_secrets(StoreKind::Keychain, Cloud::Emulator).unwrap();
    assert_eq!(secrets.kind(), StoreKind::File);
    let notice = notice.expect("a notice says where the fake secrets go");
    let data_dir = std::env::var("CSP_ONBOARD_DATA_DIR").unwrap();
    assert!(
        notice.starts_with("keychain unavailable (") && notice.contains(&data_dir),
        "{notice}"
    );
    // --store file never needs the keychain.
    let (secrets, notice) = open_secrets(StoreKind::File, Cloud::Global).unwrap();
    assert_eq!((secrets.kind(), notice), (StoreKind::File, None));
    println!("child_no_bus checked");
}

/// Throw-away XDG dirs for a private gnome-keyring, as the CI script makes them. Every session
/// gets its own runtime dir: gnome-keyring's `--start` (how D-Bus activates it) first looks for a
/// running daemon's control socket there, and a daemon of the previous session that has not quite
/// exited yet would answer and leave the new bus without a Secret Service (activation timeout).
#[cfg(target_os = "linux")]
fn xdg_envs(root: &Path, session: &str) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    for (var, sub) in [
        ("XDG_DATA_HOME", "data".to_string()),
        ("XDG_CACHE_HOME", "cache".to_string()),
        ("XDG_CONFIG_HOME", "config".to_string()),
        ("XDG_RUNTIME_DIR", format!("run-{session}")),
    ] {
        let p = root.join(sub);
        std::fs::create_dir_all(&p).unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        v.push((var, p.to_str().unwrap().to_string()));
    }
    v
}

#[cfg(target_os = "linux")]
fn probe_in_private_session(root: &Path, session: &str, expect: &str) {
    let envs = xdg_envs(root, session);
    let mut envs: Vec<(&str, &str)> = envs.iter().map(|(a, b)| (*a, b.as_str())).collect();
    envs.push(("CSP_STORE_TEST_EXPECT", expect));
    // `timeout`: a misbehaving activation must fail the test, not hang it for D-Bus's 120 s.
    let out = run_child(
        "missing_then_locked_login_collection_are_told_apart",
        &envs,
        &["timeout", "60", "dbus-run-session", "--"],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("child_probe checked"),
        "{}",
        show(&out)
    );
}

/// Create and unlock "login", wait until it is on disk and the daemon owns the bus name, then stop
/// that daemon: one started with `--unlock` does not always exit with its bus.
#[cfg(target_os = "linux")]
const CREATE_LOGIN_COLLECTION: &str = r#"
printf pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null
ok=""
for i in $(seq 1 100); do
  if [ -f "$XDG_DATA_HOME/keyrings/login.keyring" ] && dbus-send --session --print-reply \
      --dest=org.freedesktop.DBus / org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets \
      2>/dev/null | grep -q 'boolean true'; then ok=1; break; fi
  sleep 0.05
done
[ -n "$ok" ] || exit 1
pid=$(dbus-send --session --print-reply --dest=org.freedesktop.DBus / \
  org.freedesktop.DBus.GetConnectionUnixProcessID string:org.freedesktop.secrets | awk '/uint32/ {print $2}')
kill "$pid"
"#;

#[cfg(target_os = "linux")]
#[test]
#[ignore = "needs a real Secret Service: scripts/with-secret-service.sh"]
fn missing_then_locked_login_collection_are_told_apart() {
    if is_child() {
        return child_probe();
    }
    let root = tempfile::tempdir().unwrap();

    // 1. A fresh bus whose D-Bus-activated gnome-keyring has no login collection yet.
    probe_in_private_session(root.path(), "1", "no-collection");

    // 2. Create the login collection with a password in one session...
    let envs = xdg_envs(root.path(), "2");
    let create = Command::new("timeout")
        .args([
            "60",
            "dbus-run-session",
            "--",
            "sh",
            "-c",
            CREATE_LOGIN_COLLECTION,
        ])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .envs(envs.iter().map(|(a, b)| (*a, b.as_str())))
        .output()
        .unwrap();
    assert!(create.status.success(), "{}", show(&create));
    assert!(root.path().join("data/keyrings/login.keyring").exists());

    // 3. ...then, in a new session, the daemon starts with it locked and no display to prompt on.
    probe_in_private_session(root.path(), "3", "locked");
}

#[cfg(target_os = "linux")]
/// The child's part: in a private session, the store says which state the keyring is in.
fn child_probe() {
    let expect = std::env::var("CSP_STORE_TEST_EXPECT").expect("set by the parent");
    let err = open_secrets(StoreKind::Keychain, Cloud::Global).unwrap_err();
    let ue = err.to_user_error();
    assert_eq!(ue.exit, Exit::Keychain);
    match expect.as_str() {
        "no-collection" => assert!(matches!(err, StoreError::NoCollection(_)), "{err:?}"),
        "locked" => {
            assert!(matches!(err, StoreError::Locked(_)), "{err:?}");
            assert!(ue.hint.unwrap().contains("gnome-keyring-daemon --unlock"));
        }
        other => panic!("unknown expectation {other}"),
    }
    println!("child_probe checked ({expect}): {}", ue.message);
}

#[cfg(target_os = "linux")]
#[test]
fn data_dir_follows_the_override_then_xdg_and_is_private() {
    if is_child() {
        return child_data_dir();
    }
    let root = tempfile::tempdir().unwrap();
    let xdg = root.path().join("xdg");
    let over = root.path().join("override/nested");
    for (expected, envs) in [
        (
            xdg.join("csp-onboard"),
            vec![
                ("XDG_DATA_HOME", xdg.to_str().unwrap()),
                ("CSP_ONBOARD_DATA_DIR", ""),
            ],
        ),
        (
            over.clone(),
            vec![
                ("XDG_DATA_HOME", xdg.to_str().unwrap()),
                ("CSP_ONBOARD_DATA_DIR", over.to_str().unwrap()),
            ],
        ),
    ] {
        let out = run_child(
            "data_dir_follows_the_override_then_xdg_and_is_private",
            &envs,
            &[],
        );
        assert!(out.status.success(), "{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("data_dir={}\n", expected.display())),
            "{}",
            show(&out)
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&expected).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
    }
}

#[cfg(target_os = "linux")]
/// The child's part: print the data directory the store chose.
fn child_data_dir() {
    println!(
        "data_dir={}",
        csp_onboard::store::data_dir().unwrap().display()
    );
}

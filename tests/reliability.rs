//! What an adversarial pass broke (issue 11), each as the built binary against the emulator:
//! panics from extreme values, a profile file whose name and content disagree, a stored secret
//! sent to another cloud, revocation after an unfinished rotation, symlinked temp files,
//! unreadable environment values, endless waits, core dumps, and input validation.

mod common;

use common::*;
use csp_onboard::emulator::{Emulator, Knobs};
use serde_json::Value;

const DEVICE: [&str; 3] = ["--non-interactive", "--auth", "device-code"];

async fn onboarded(knobs: Knobs) -> (Emulator, Cli, Value) {
    let emu = emulator(knobs).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let mut args = vec!["init", "--json", "--tenant", &tenant];
    args.extend(DEVICE);
    let out = cli.run(&args, "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    (emu, cli, doc)
}

fn args<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter().chain(tail).copied().collect()
}

fn assert_no_panic(out: &std::process::Output, what: &str) {
    let err = stderr(out);
    assert!(
        code(out) != 101 && !err.contains("panicked") && !err.contains("internal error"),
        "{what}: exit {} {err}",
        code(out)
    );
}

// ---------------------------------------------------------------------------------------------
// 1. No input can panic.

/// Every numeric flag, with values from the edges of every integer type and beyond: each run
/// ends with a handled exit code (a value out of range is exit 2), never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_numeric_flag_value_makes_the_binary_panic() {
    let (_emu, cli, _) = onboarded(fast_knobs()).await;
    let extreme = [
        "-1",
        "4294967295",
        "4294967296",
        "18446744073709551616",
        "99999999999999999999999",
        "1e9",
        "",
        "x",
    ];
    let rotate: Vec<&str> = args(&["rotate"], &DEVICE);
    let dry: Vec<&str> = args(&rotate, &["--dry-run"]);
    let init_dry: Vec<&str> = args(&["init", "--dry-run"], &DEVICE);
    // (command, flag, values a user may give that must work)
    let table: Vec<(Vec<&str>, &str, Vec<&str>)> = vec![
        (rotate.clone(), "--overlap", vec!["0", "730"]),
        (rotate.clone(), "--if-expiring-within", vec!["0", "3650"]),
        (dry.clone(), "--secret-years", vec!["1", "2"]),
        (dry.clone(), "--verify-timeout", vec!["1", "3600"]),
        (
            args(&["rotate", "--all", "--dry-run"], &DEVICE),
            "--jobs",
            vec!["1", "64"],
        ),
        (init_dry.clone(), "--secret-years", vec!["2"]),
        (init_dry, "--verify-timeout", vec!["1"]),
        (vec!["check"], "--warn-days", vec!["0", "3650"]),
        (vec!["check"], "--deadline", vec!["60", "86400"]),
    ];
    for (cmd, flag, good) in &table {
        for v in good {
            let out = cli.run(&args(cmd, &[flag, v]), "").await;
            assert_no_panic(&out, &format!("{cmd:?} {flag} {v}"));
            // check --warn-days 3650 rightly says "expiring" (10) for a one-year key.
            assert!(
                [0, 10].contains(&code(&out)),
                "{cmd:?} {flag} {v}: {}",
                stderr(&out)
            );
        }
        for v in extreme {
            let out = cli.run(&args(cmd, &[flag, v]), "").await;
            assert_no_panic(&out, &format!("{cmd:?} {flag} {v}"));
            assert_eq!(code(&out), 2, "{cmd:?} {flag} {v}: {}", stderr(&out));
        }
    }
    // Just past each bound.
    for (cmd, flag, v) in [
        (&rotate, "--overlap", "731"),
        (&rotate, "--overlap", "10000000"),
        (&rotate, "--if-expiring-within", "3651"),
        (&dry, "--secret-years", "3"),
        (&dry, "--verify-timeout", "0"),
        (&dry, "--verify-timeout", "3601"),
    ] {
        let out = cli.run(&args(cmd, &[flag, v]), "").await;
        assert_no_panic(&out, &format!("{flag} {v}"));
        assert_eq!(code(&out), 2, "{flag} {v}: {}", stderr(&out));
    }
    for (flag, v) in [
        ("--warn-days", "3651"),
        ("--deadline", "0"),
        ("--deadline", "86401"),
    ] {
        let out = cli.run(&["check", flag, v], "").await;
        assert_eq!(code(&out), 2, "{flag} {v}: {}", stderr(&out));
    }
    // The emulator's own knobs: a value it accepts runs a server, so only refusals are run.
    for flag in [
        "--port",
        "--latency-ms",
        "--replication-delay-ms",
        "--propagation-delay-ms",
        "--max-secret-lifetime-days",
        "--device-code-interval",
        "--auto-approve",
        "--hang-after-request",
    ] {
        for v in ["-1", "18446744073709551616", "1e9", "x"]
            .into_iter()
            .chain((flag != "--hang-after-request").then_some("18446744073709551615"))
        {
            let out = cli.run(&["emulator", flag, v], "").await;
            assert_no_panic(&out, &format!("emulator {flag} {v}"));
            assert_eq!(code(&out), 2, "emulator {flag} {v}: {}", stderr(&out));
        }
    }
}

/// A pending record written by an older version with an absurd overlap is a clear error naming
/// the file, not a panic on every later run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_overlap_out_of_range_is_a_clear_error_not_a_panic() {
    let (_emu, cli, _) = onboarded(fast_knobs()).await;
    let path = cli.data_dir().join("profiles/default.json");
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    meta["pending"] = serde_json::json!({
        "key_display_name": "csp-onboard default 2026-11-30T10:00:00Z abc123",
        "started_at": "2026-11-30T10:00:00Z",
        "old_key_id": meta["key_id"],
        "overlap_days": 10_000_000u32,
    });
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    for cmd in [args(&["rotate"], &DEVICE), vec!["show"], vec!["check"]] {
        let out = cli.run(&cmd, "").await;
        assert_no_panic(&out, &format!("{cmd:?}"));
        assert_eq!(code(&out), 1, "{cmd:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("default.json") && err.contains("overlap_days"),
            "{cmd:?}: {err}"
        );
    }
}

/// `rotate --all` with one damaged profile among good ones: the damaged one is a failed row of the
/// result table naming its file, and the others are rotated (issue 11.1: "the other profiles are
/// not rotated").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_all_reports_a_damaged_profile_and_rotates_the_others() {
    let (emu, cli, doc) = onboarded(fast_knobs()).await;
    let profiles = cli.data_dir().join("profiles");
    std::fs::write(profiles.join("broken.json"), b"{ not json").unwrap();
    let out = cli
        .run(&args(&["rotate", "--all", "--json"], &DEVICE), "")
        .await;
    assert_no_panic(&out, "rotate --all");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let table = json(&out);
    let rows = table["profiles"].as_array().expect("a result table");
    let row = |name: &str| rows.iter().find(|r| r["profile"] == name).cloned();
    let broken = row("broken").expect("the damaged profile has a row");
    assert_eq!(broken["ok"], false);
    assert!(
        broken["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken.json"),
        "{broken}"
    );
    let good = row("default").expect("default has a row");
    assert_eq!(good["ok"], true, "{good}");
    assert_eq!(good["action"], "rotated");
    assert_ne!(good["key_id"], doc["key_id"], "default was rotated");
    // The damaged file may be a profile of the same app holding the old key: it is kept.
    let app = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == doc["app_id"])
        .unwrap();
    assert!(
        app.passwords.iter().any(|k| k.key_id == doc["key_id"]),
        "the old key is kept"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The file name is the profile's identity.

/// A copied profile file names another profile inside: acting on it would change that one
/// while holding the copy's lock. Every command refuses it, naming both, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_file_naming_another_profile_is_refused() {
    let (emu, cli, doc) = onboarded(fast_knobs()).await;
    let profiles = cli.data_dir().join("profiles");
    std::fs::copy(profiles.join("default.json"), profiles.join("copy.json")).unwrap();
    let requests = emu.requests().len();
    for cmd in [
        vec!["remove", "--profile", "copy", "--yes"],
        args(&["rotate", "--profile", "copy"], &DEVICE),
        vec!["show", "--profile", "copy"],
        vec!["check", "--profile", "copy"],
    ] {
        let out = cli.run(&cmd, "").await;
        assert_eq!(code(&out), 1, "{cmd:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("copy.json") && err.contains("'default'") && err.contains("'copy'"),
            "{cmd:?}: {err}"
        );
    }
    assert_eq!(emu.requests().len(), requests, "no request at all");
    // default is untouched: its metadata, its secret, its key.
    assert!(profiles.join("default.json").exists());
    assert!(cli.data_dir().join("secrets/default.secret").exists());
    let out = cli.run(&["show", "--json"], "").await;
    assert_eq!(json(&out)["key_id"], doc["key_id"]);
}

/// Run a prepared command off the async runtime, with `stdin` as input.
async fn run_cmd(mut c: std::process::Command, stdin: Vec<u8>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::process::Stdio;
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn csp-onboard");
        if let Some(mut s) = child.stdin.take() {
            let _ = s.write_all(&stdin);
        }
        child.wait_with_output().expect("wait for csp-onboard")
    })
    .await
    .expect("join")
}

// ---------------------------------------------------------------------------------------------
// 6. An environment value that is set but unreadable is a usage error, not "unset".

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_utf8_environment_value_is_a_usage_error_naming_the_variable() {
    use std::os::unix::ffi::OsStrExt;
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let (app_id, _, _) = emu.portal_create_app("Captured");
    let bad = std::ffi::OsStr::from_bytes(b"abc\xff\xfedef");
    for var in [
        "CSP_ONBOARD_APP_SECRET",
        "CSP_ONBOARD_STORE",
        "CSP_ONBOARD_PROFILE",
        "CSP_ONBOARD_ANYTHING",
    ] {
        // A capture: with the secret unreadable, it must not turn into "add a key to the app".
        let mut c = cli.command(&[
            "init",
            "--non-interactive",
            "--tenant",
            &tenant,
            "--app-id",
            &app_id,
        ]);
        c.env(var, bad);
        let before = emu.requests().len();
        let out = run_cmd(c, Vec::new()).await;
        assert_eq!(code(&out), 2, "{var}: {}", stderr(&out));
        assert!(stderr(&out).contains(var), "{var}: {}", stderr(&out));
        assert!(!stderr(&out).contains("def"), "the value is never shown");
        assert_eq!(emu.requests().len(), before, "{var}: no request");
    }
    assert!(
        !cli.data_dir().join("profiles/default.json").exists(),
        "nothing stored"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. No core dump can hold a secret.

/// Started with `ulimit -c unlimited`, the binary lowers its own core limit to 0 and marks itself
/// not dumpable: a SIGQUIT while it waits for a pasted secret writes no core, even after the
/// limit is raised again from outside (as `prlimit --core=unlimited` would).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigquit_writes_no_core_dump() {
    use std::os::unix::process::CommandExt;
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let (app_id, _, _) = emu.portal_create_app("Captured");
    let cwd = tempfile::tempdir().unwrap();
    let mut c = cli.command(&[
        "init",
        "--non-interactive",
        "--tenant",
        &tenant,
        "--app-id",
        &app_id,
        "--app-secret-stdin",
    ]);
    c.current_dir(cwd.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit is async-signal-safe; it only touches the child's own limits.
    unsafe {
        c.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    let pid = child.id() as i32;
    // It waits for the secret on stdin, which stays open.
    let limits = format!("/proc/{pid}/limits");
    let core_line = || {
        std::fs::read_to_string(&limits)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .map(str::to_string)
            .unwrap_or_default()
    };
    // Start-up sets it first thing; poll (a guard, not a timing assertion) until it shows.
    let mut line = core_line();
    for _ in 0..200 {
        if line.split_whitespace().nth(4) == Some("0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        line = core_line();
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{line}");
    // Raise it again from outside, then ask for a core.
    // SAFETY: prlimit on our own child with a valid rlimit.
    // (An unprivileged user may not raise a hard limit of 0; then the dump stays off anyway.)
    unsafe { libc::prlimit(pid, libc::RLIMIT_CORE, &unlimited, std::ptr::null_mut()) };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    let status = child.wait().unwrap();
    // The kernel's own word: killed by SIGQUIT, and no core written (also where cores go to a
    // program such as systemd-coredump instead of the working directory).
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGQUIT), "{status:?}");
    assert!(!status.core_dumped(), "the kernel dumped core: {status:?}");
    let left: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a core dump was written: {left:?}");
}

/// Not dumpable (PR_SET_DUMPABLE 0) holds where a limit can be raised from outside, and keeps
/// other processes of the same user out of its memory and environment. The kernel shows it:
/// the files under /proc/<pid> of a process that is not dumpable belong to root (proc(5)).
/// The child runs as an unprivileged user (nobody when the test runs as root), so root-owned
/// entries mean "not dumpable" and nothing else.
#[cfg(target_os = "linux")]
#[test]
fn the_process_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new(bin());
    c.args(["emulator", "--port", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: getuid/setgid/setuid are async-signal-safe and change only the child.
    let root = unsafe { libc::getuid() } == 0;
    if root {
        unsafe {
            c.pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = c.spawn().unwrap();
    let environ = format!("/proc/{}/environ", child.id());
    let owner = || {
        std::fs::metadata(&environ)
            .map(|m| m.uid())
            .unwrap_or(u32::MAX)
    };
    // Start-up marks it first thing; poll (a guard, not a timing assertion) until it shows.
    let mut uid = owner();
    for _ in 0..200 {
        if uid == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        uid = owner();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        uid, 0,
        "/proc/<pid> of csp-onboard belongs to uid {uid}: it is dumpable"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Revocation after an unfinished rotation.

/// A rotation stored its new key but could not remove the old one (500 on removePassword).
/// `remove --revoke` then deletes every key the profile knows, old and new, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_revoke_after_an_unfinished_rotation_deletes_old_and_new_keys_once_each() {
    use csp_onboard::emulator::{FaultKind, FaultRule};
    let (emu, cli, first) = onboarded(fast_knobs()).await;
    emu.update_knobs(|k| {
        k.faults = vec![FaultRule {
            route: "/removePassword".into(),
            first_n: 1000,
            kind: FaultKind::Status(500),
        }]
    });
    let out = cli.run(&args(&["rotate"], &DEVICE), "").await;
    assert_ne!(
        code(&out),
        0,
        "removing the old key failed: {}",
        stderr(&out)
    );
    emu.update_knobs(|k| k.faults.clear());
    let app_id = first["app_id"].as_str().unwrap();
    let keys = |emu: &Emulator| {
        emu.applications()
            .into_iter()
            .find(|a| a.app_id == app_id)
            .unwrap()
            .passwords
    };
    assert_eq!(keys(&emu).len(), 2, "old and new key are on the app");
    let removes = emu.count("POST", "/removePassword");
    let out = cli
        .run(&args(&["remove", "--revoke", "--yes"], &DEVICE), "")
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(keys(&emu).is_empty(), "left on the app: {:?}", keys(&emu));
    assert_eq!(
        emu.count("POST", "/removePassword") - removes,
        2,
        "once each"
    );
    let deleted: Vec<_> = stderr(&out)
        .lines()
        .filter(|l| l.contains("Deleted key"))
        .map(str::to_string)
        .collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(
        stderr(&out).contains("app registration") && stderr(&out).contains("stays"),
        "{}",
        stderr(&out)
    );
    assert_ne!(deleted[0], deleted[1]);
}

// ---------------------------------------------------------------------------------------------
// 5. Every write through the one atomic writer; private directories.

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A symlink planted where the app marker's temp file used to go (`pending/<profile>.app.tmp`)
/// is not followed: the file it points to is untouched, and the directories are 0700.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_symlink_at_the_marker_temp_path_is_not_followed() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("victim");
    std::fs::write(&victim, "someone else's file").unwrap();
    let pending = cli.data_dir().join("pending");
    std::fs::create_dir(&pending).unwrap();
    // The old temp name (the reported attack) and the marker's own path, which init writes.
    std::os::unix::fs::symlink(&victim, pending.join("default.app.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, pending.join("default.app.json")).unwrap();
    let tenant = emu.tenant_id();
    let out = cli
        .run(&args(&["init", "--tenant", &tenant], &DEVICE), "")
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "someone else's file"
    );
    assert_eq!(mode(&pending), 0o700, "pending/");
    for d in ["profiles", "secrets"] {
        assert_eq!(mode(&cli.data_dir().join(d)), 0o700, "{d}/");
    }
}

/// The built-in emulator keeps its state (fake but working secrets) in a 0700 directory.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_emulator_state_is_private() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let out = cli
        .run(
            &["init", "--cloud", "emulator", "--non-interactive", "--json"],
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dir = cli.data_dir().join("emulator");
    assert_eq!(mode(&dir), 0o700, "emulator/");
    assert_eq!(mode(&dir.join("state.json")), 0o600);
}

/// A data directory others may write to (or that belongs to someone else) is refused before
/// anything is read from it or sent anywhere.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_others_can_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (emu, cli, _) = onboarded(fast_knobs()).await;
    let data = cli.data_dir();
    let before = emu.requests().len();
    for m in [0o770, 0o777] {
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(m)).unwrap();
        for cmd in [vec!["check"], vec!["show"]] {
            let out = cli.run(&cmd, "").await;
            assert_eq!(code(&out), 1, "{m:o} {cmd:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(&data.display().to_string())
                    && stderr(&out).contains("writable"),
                "{}",
                stderr(&out)
            );
        }
    }
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).unwrap();
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        std::os::unix::fs::chown(data, Some(65534), None).unwrap();
        let out = cli.run(&["show"], "").await;
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains("belongs to"), "{}", stderr(&out));
        std::os::unix::fs::chown(data, Some(0), None).unwrap();
    }
    assert_eq!(emu.requests().len(), before, "no request");
    assert_eq!(code(&cli.run(&["show"], "").await), 0);
}

// ---------------------------------------------------------------------------------------------
// 3. A profile belongs to its cloud and, for custom, to its endpoints. (With 12.1: the demo
// has its own profile.)

/// A profile made against one set of custom endpoints, then pointed at another (a second
/// emulator standing in for "somewhere else") by the environment: refused before any request,
/// so the secret never reaches the other endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_never_used_with_other_endpoints_or_another_cloud() {
    let (home, cli, _) = onboarded(fast_knobs()).await;
    let elsewhere = emulator(fast_knobs()).await;
    let mut moved = Cli::new(&elsewhere);
    // Same data directory, the other emulator's URLs in the environment.
    moved.env.retain(|(k, _)| k != "CSP_ONBOARD_DATA_DIR");
    moved.env.push((
        "CSP_ONBOARD_DATA_DIR".into(),
        cli.data_dir().display().to_string(),
    ));
    let home_before = home.requests().len();
    for cmd in [
        vec!["check"],
        args(&["rotate"], &DEVICE),
        args(&["remove", "--revoke", "--yes"], &DEVICE),
        args(&["init"], &DEVICE),
        // The batch too: each profile is held to its own endpoints (a failed row, exit 2).
        args(&["rotate", "--all"], &DEVICE),
        args(&["rotate", "--all", "--dry-run"], &DEVICE),
    ] {
        let out = moved.run(&cmd, "").await;
        assert_eq!(code(&out), 2, "{cmd:?}: {}", stderr(&out));
        // (`rotate --all` says it in its result table, on stdout.)
        let err = stderr(&out) + &stdout(&out);
        assert!(
            err.contains("CSP_ONBOARD_AUTHORITY_URL") && err.contains("profile 'default'"),
            "{cmd:?}: {err}"
        );
    }
    assert_eq!(
        elsewhere.requests().len(),
        0,
        "nothing reached the other endpoints"
    );
    // Another cloud by flag or by environment: refused too, before any request.
    for (flag, env) in [
        (Some("global"), None),
        (None, Some("emulator")),
        (Some("emulator"), None),
    ] {
        // (--profile named: with the emulator cloud the default profile is `emulator`.)
        let mut c = cli.command(&match flag {
            Some(f) => vec!["check", "--profile", "default", "--cloud", f],
            None => vec!["check", "--profile", "default"],
        });
        if let Some(e) = env {
            c.env("CSP_ONBOARD_CLOUD", e);
        }
        let out = run_cmd(c, Vec::new()).await;
        assert_eq!(code(&out), 2, "{flag:?} {env:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("belongs to the custom cloud"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        home.requests().len(),
        home_before,
        "no request at home either"
    );
    // The profile still works where it was made.
    assert_eq!(code(&cli.run(&["check"], "").await), 0);
}

/// The emulator demo (`init --cloud emulator`, twice) lives in its own profile: `default` stays
/// free for the real tenant, and a later real `init` is not offered the demo's fake key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_demo_never_occupies_the_default_profile() {
    let emu = emulator(fast_knobs()).await;
    let mut cli = Cli::new(&emu);
    cli.env.retain(|(k, _)| k != "CSP_ONBOARD_CLOUD");
    for action in ["created", "rotated"] {
        let out = cli
            .run(
                &["init", "--cloud", "emulator", "--non-interactive", "--json"],
                "",
            )
            .await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(json(&out)["action"], action, "{}", stdout(&out));
        assert_eq!(json(&out)["profile"], "emulator", "{}", stdout(&out));
    }
    assert!(!cli.data_dir().join("profiles/default.json").exists());
    // The next steps it prints name the demo's profile, so they work as printed.
    let out = cli
        .run(&["init", "--cloud", "emulator", "--non-interactive"], "")
        .await;
    assert!(
        stderr(&out).contains("csp-onboard check --profile emulator"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        code(&cli.run(&["check", "--profile", "emulator"], "").await),
        0
    );
    let out = cli
        .run(&["show", "--cloud", "emulator", "--json"], "")
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["cloud"], "emulator");
    // The real tenant's first init finds no profile to rotate.
    let out = cli.run(&["show"], "").await;
    assert_eq!(code(&out), 8, "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// 12.2. `remove` deletes the only copy of a secret: without a terminal it needs --yes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_without_a_terminal_needs_yes() {
    let (_emu, cli, _) = onboarded(fast_knobs()).await;
    for cmd in [
        vec!["remove"],
        vec!["remove", "--non-interactive"],
        vec!["remove", "--revoke", "--non-interactive"],
    ] {
        let out = cli.run(&cmd, "\n").await;
        assert_eq!(code(&out), 2, "{cmd:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
        assert!(cli.data_dir().join("profiles/default.json").exists());
        assert!(cli.data_dir().join("secrets/default.secret").exists());
    }
    let out = cli.run(&["remove", "--yes"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!cli.data_dir().join("profiles/default.json").exists());
    assert!(!cli.data_dir().join("secrets/default.secret").exists());
}

// ---------------------------------------------------------------------------------------------
// 7. Every command ends: a total deadline, and never a wait without end or shorter than asked.

/// Run with a guard: kill the child if it is still running after `guard` (a safety net for a
/// broken build, not the assertion: the assertions are the exit code and the message).
async fn run_guarded(
    mut c: std::process::Command,
    guard: std::time::Duration,
) -> (std::process::Output, bool) {
    tokio::task::spawn_blocking(move || {
        use std::process::Stdio;
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn csp-onboard");
        let start = std::time::Instant::now();
        let mut killed = false;
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > guard {
                let _ = child.kill();
                killed = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (child.wait_with_output().unwrap(), killed)
    })
    .await
    .unwrap()
}

/// A server that takes the request and never answers: `check` ends at its deadline
/// (CSP_ONBOARD_DEADLINE here; --deadline is the same) with exit 9, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_ends_at_the_deadline_with_exit_9() {
    let (emu, cli, _) = onboarded(fast_knobs()).await;
    emu.update_knobs(|k| k.hang_after_route = Some("/token".into()));
    let mut c = cli.command(&["check"]);
    c.env("CSP_ONBOARD_DEADLINE", "3");
    let (out, killed) = run_guarded(c, std::time::Duration::from_secs(90)).await;
    assert!(!killed, "still running after 90 s: {}", stderr(&out));
    assert_eq!(code(&out), 9, "{}", stderr(&out));
    assert!(stderr(&out).contains("deadline"), "{}", stderr(&out));
    // The same with the flag, for init (a sign-in that hangs).
    let mut c = cli.command(&args(
        &["init", "--profile", "other", "--deadline", "3"],
        &DEVICE,
    ));
    c.env("CSP_ONBOARD_TENANT", emu.tenant_id());
    let (out, killed) = run_guarded(c, std::time::Duration::from_secs(90)).await;
    assert!(!killed, "still running after 90 s: {}", stderr(&out));
    assert_eq!(code(&out), 9, "{}", stderr(&out));
}

/// `Retry-After: 3600` on /me is longer than any run may wait: init stops at once with exit 9
/// and says when to try again, instead of waiting an hour (or, worse, less than asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_deadline_stops_at_once_with_exit_9() {
    use csp_onboard::emulator::ThrottleRule;
    let emu = emulator(fast_knobs()).await;
    emu.update_knobs(|k| {
        k.throttle = vec![ThrottleRule {
            route: "GET /v1.0/me".into(),
            first_n: 1000,
            every_nth: 0,
            retry_after_secs: 3600,
        }]
    });
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let c = cli.command(&args(&["init", "--tenant", &tenant], &DEVICE));
    let (out, killed) = run_guarded(c, std::time::Duration::from_secs(90)).await;
    assert!(!killed, "still waiting after 90 s: {}", stderr(&out));
    assert_eq!(code(&out), 9, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("3600") && err.contains("try again after"),
        "{err}"
    );
    let me = emu
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.split('?').next() == Some("/v1.0/me"))
        .count();
    assert_eq!(me, 1, "asked once, not again sooner than told");
}

// ---------------------------------------------------------------------------------------------
// 9. Input validation: refused before any request, with exit 2, writing nothing.

/// Only the canonical 8-4-4-4-12 form (any case, blanks around it ignored) is a GUID; the other
/// forms a parser might accept are refused before any sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_canonical_guids_are_accepted_and_before_any_request() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let g = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let braced = format!("{{{g}}}");
    let urn = format!("urn:uuid:{g}");
    let bare = g.replace('-', "");
    for bad in [braced.as_str(), urn.as_str(), bare.as_str()] {
        for flag in ["--app-id", "--commerce-id", "--client-id", "--tenant"] {
            let mut a = vec!["init", "--non-interactive", "--auth", "device-code"];
            if flag != "--tenant" {
                a.extend(["--tenant", tenant.as_str()]);
            }
            a.extend([flag, bad]);
            let out = cli.run(&a, "").await;
            assert_eq!(code(&out), 2, "{flag} {bad}: {}", stderr(&out));
        }
    }
    assert_eq!(emu.requests().len(), 0, "no request at all");
    let left: Vec<_> = std::fs::read_dir(cli.data_dir().join("profiles"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing written: {left:?}");
    // Upper case with blanks around it is the same GUID.
    let (app_id, _, secret) = emu.portal_create_app("Captured");
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--tenant",
                &format!(" {} ", tenant.to_uppercase()),
                "--app-id",
                &app_id.to_uppercase(),
                "--app-secret-stdin",
            ],
            &format!("{}\n", secret.expose()),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// A secret piped on stdin: too long, not UTF-8, or more than one line is exit 2, and nothing
/// is sent (a 10 MB line used to go to Entra whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_secret_that_cannot_be_one_is_refused_with_exit_2() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let (app_id, _, secret) = emu.portal_create_app("Captured");
    let capture = [
        "init",
        "--non-interactive",
        "--tenant",
        tenant.as_str(),
        "--app-id",
        app_id.as_str(),
        "--app-secret-stdin",
    ];
    let long = format!("{}\n", "a".repeat(10 * 1024 * 1024));
    let two_lines = format!("{}\nsecond line\n", secret.expose());
    let mut not_utf8 = b"abc\xff\xfedefghijkl".to_vec();
    not_utf8.push(b'\n');
    for (what, input) in [
        ("10 MB", long.into_bytes()),
        ("two lines", two_lines.into_bytes()),
        ("not UTF-8", not_utf8),
    ] {
        let out = run_cmd(cli.command(&capture), input).await;
        assert_eq!(code(&out), 2, "{what}: {}", stderr(&out));
        assert!(!stderr(&out).contains("second line"), "{what}");
    }
    assert_eq!(emu.requests().len(), 0, "nothing sent");
    // A token with a line break inside (from the environment) is refused the same way.
    let mut c = cli.command(&[
        "init",
        "--non-interactive",
        "--tenant",
        &tenant,
        "--auth",
        "access-token",
    ]);
    c.env("CSP_ONBOARD_ACCESS_TOKEN", "eyJhbGciOi.part\none.sig");
    let out = run_cmd(c, Vec::new()).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("line break"), "{}", stderr(&out));
    assert_eq!(emu.requests().len(), 0, "nothing sent");
}

/// A wrong automation secret is a failed sign-in (exit 3), not "the secret could not be
/// verified" (exit 7, which is about the app's own secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_automation_secret_is_a_failed_sign_in() {
    let (emu, cli, _) = onboarded(fast_knobs()).await;
    let (automation, _, _) = emu.portal_create_app("Automation");
    let mut c = cli.command(&[
        "rotate",
        "--non-interactive",
        "--auth",
        "client-secret",
        "--client-id",
        &automation,
    ]);
    c.env("CSP_ONBOARD_CLIENT_SECRET", "definitely-not-the-secret");
    let out = run_cmd(c, Vec::new()).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}

/// A command that fails validation leaves nothing behind: no lock file for a profile that does
/// not exist, none for `--cloud custom` without its variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_fails_validation_writes_nothing() {
    let (_emu, cli, _) = onboarded(fast_knobs()).await;
    for cmd in [
        args(&["rotate", "--profile", "nosuch"], &DEVICE),
        vec!["remove", "--profile", "nosuch", "--yes"],
    ] {
        let out = cli.run(&cmd, "").await;
        assert_eq!(code(&out), 8, "{cmd:?}: {}", stderr(&out));
    }
    let mut c = cli.command(&args(
        &["init", "--profile", "fresh", "--cloud", "custom"],
        &DEVICE,
    ));
    c.env_remove("CSP_ONBOARD_GRAPH_URL");
    let out = run_cmd(c, Vec::new()).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let mut names: Vec<_> = std::fs::read_dir(cli.data_dir().join("profiles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["default.json", "default.lock"]);
}

/// A token endpoint that answers 307 is a refused redirect (exit 9): the secret is not sent on,
/// and the key is not called "rejected; rotate it" (exit 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_on_the_token_endpoint_is_refused_not_reported_as_a_rejected_key() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_emu, cli, _) = onboarded(fast_knobs()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    // The profile was made with the redirecting authority (as if it had started redirecting).
    let path = cli.data_dir().join("profiles/default.json");
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    meta["endpoints"]["authority"] = format!("{redirector}/").into();
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let mut c = cli.command(&["check"]);
    c.env("CSP_ONBOARD_AUTHORITY_URL", &redirector);
    let out = run_cmd(c, Vec::new()).await;
    assert_eq!(code(&out), 9, "{}", stderr(&out));
    assert!(stderr(&out).contains("redirect"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// 12.14. remove --delete-app: only an app this tool created.

/// `remove --delete-app` deletes the app registration init created (Graph "Delete application"),
/// and refuses, before any request, an app that was captured (made in the portal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_delete_app_deletes_only_an_app_this_tool_created() {
    let (emu, cli, doc) = onboarded(fast_knobs()).await;
    let app_id = doc["app_id"].as_str().unwrap().to_string();
    let exists = |emu: &Emulator, id: &str| emu.applications().iter().any(|a| a.app_id == id);
    // A captured app (made in the portal) in another profile.
    let (portal_app, _, secret) = emu.portal_create_app("Made in the portal");
    let tenant = emu.tenant_id();
    let out = cli
        .run(
            &[
                "init",
                "--profile",
                "captured",
                "--non-interactive",
                "--tenant",
                &tenant,
                "--app-id",
                &portal_app,
                "--app-secret-stdin",
            ],
            &format!("{}\n", secret.expose()),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = emu.requests().len();
    let out = cli
        .run(
            &args(
                &["remove", "--profile", "captured", "--delete-app", "--yes"],
                &DEVICE,
            ),
            "",
        )
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not created by csp-onboard"),
        "{}",
        stderr(&out)
    );
    assert_eq!(emu.requests().len(), before, "no request");
    assert!(exists(&emu, &portal_app));
    // Without a terminal it needs --yes, as --revoke does.
    let out = cli
        .run(&args(&["remove", "--delete-app"], &DEVICE), "")
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(exists(&emu, &app_id));
    let out = cli
        .run(
            &args(&["remove", "--delete-app", "--yes", "--json"], &DEVICE),
            "",
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["app_deleted"], true);
    assert!(!exists(&emu, &app_id), "the app registration is gone");
    assert!(exists(&emu, &portal_app), "the portal's app is untouched");
    assert_eq!(emu.count("DELETE", "/v1.0/applications/"), 1);
}

//! The crash matrix: for each mutating step of `init` and of rotation, the CLI is killed just after
//! the emulator applied that step (its response never comes), then run again. Every time the run
//! must converge: exit 0, one app, exactly one key on it, the key the store holds, and that secret works.

mod common;

use common::*;
use csp_onboard::emulator::{Emulator, Service};
use std::time::{Duration, Instant};

const APP_NAME: &str = "Partner Center web app (csp-onboard)";

fn init_args(tenant: &str) -> Vec<String> {
    [
        "init",
        "--non-interactive",
        "--json",
        "--auth",
        "device-code",
        "--tenant",
        tenant,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn run_init(cli: &Cli, emu: &Emulator) -> std::process::Output {
    let a = init_args(&emu.tenant_id());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    cli.run(&a, "").await
}

/// The steps worth interrupting in a run's log: every Graph write, and the first verification
/// call after a new key (the secret is then kept as pending but not yet stored as current).
fn crash_points(emu: &Emulator, after_seq: u64) -> Vec<(u64, String)> {
    let log = emu.requests();
    let mut points = Vec::new();
    let mut after_add = false;
    for r in log.iter().filter(|r| r.seq > after_seq) {
        if r.service == Service::Graph && r.method == "POST" {
            points.push((r.seq, format!("{} {}", r.method, r.path)));
            after_add = r.path.ends_with("/addPassword");
        } else if after_add && r.service == Service::PartnerCenter {
            points.push((r.seq, format!("{} {}", r.method, r.path)));
            after_add = false;
        }
    }
    points
}

/// Run init with the emulator hanging after applying request `seq`, and kill the CLI there.
async fn interrupted_init(cli: &Cli, emu: &Emulator, seq: u64, expect_route: &str) {
    emu.update_knobs(|k| k.hang_after_request = Some(seq));
    let a = init_args(&emu.tenant_id());
    let mut cmd = cli.command(&a.iter().map(String::as_str).collect::<Vec<_>>());
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = emu.requests().into_iter().find(|r| r.seq == seq) {
            let route = format!("{} {}", r.method, r.path);
            let same = route.split('?').next().map(strip_ids)
                == expect_route.split('?').next().map(strip_ids);
            assert!(same, "request {seq} was {route}, expected {expect_route}");
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the CLI ended ({status}) before request {seq} ({expect_route})");
        }
        assert!(Instant::now() < deadline, "request {seq} never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the applied request a moment to land, then kill without any chance to clean up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.kill().expect("kill");
    let _ = child.wait();
    emu.update_knobs(|k| k.hang_after_request = None);
}

/// GUIDs differ between runs; compare routes by shape.
fn strip_ids(s: &str) -> String {
    s.split('/')
        .map(|seg| {
            if uuid::Uuid::try_parse(seg).is_ok() {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn assert_converged(cli: &Cli, emu: &Emulator, what: &str) {
    let out = run_init(cli, emu).await;
    assert_eq!(code(&out), 0, "{what}: re-run failed:\n{}", stderr(&out));
    let doc = json(&out);
    let apps: Vec<_> = emu
        .applications()
        .into_iter()
        .filter(|a| a.display_name == APP_NAME)
        .collect();
    assert_eq!(apps.len(), 1, "{what}: exactly one app, got {}", apps.len());
    let app = &apps[0];
    assert_eq!(app.app_id, doc["app_id"].as_str().unwrap(), "{what}");
    let keys: Vec<&str> = app.passwords.iter().map(|p| p.key_id.as_str()).collect();
    assert_eq!(
        keys,
        vec![doc["key_id"].as_str().unwrap()],
        "{what}: one key, the stored one"
    );
    let check = cli.run(&["check"], "").await;
    assert_eq!(
        code(&check),
        0,
        "{what}: the stored secret works:\n{}",
        stderr(&check)
    );
    let meta = std::fs::read_to_string(cli.data_dir().join("profiles/default.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert!(
        meta["pending"].is_null(),
        "{what}: no rotation left pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_interrupted_at_each_write_converges_on_rerun() {
    let reference = emulator(fast_knobs()).await;
    let out = run_init(&Cli::new(&reference), &reference).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let points = crash_points(&reference, 0);
    let routes: Vec<&str> = points.iter().map(|(_, r)| r.as_str()).collect();
    for needle in [
        "/applications",
        "/servicePrincipals",
        "/members/$ref",
        "/addPassword",
        "/v1/profiles/legalbusiness",
    ] {
        assert!(
            routes.iter().any(|r| r.contains(needle)),
            "{needle} in {routes:?}"
        );
    }
    for (seq, route) in points {
        let emu = emulator(fast_knobs()).await;
        let cli = Cli::new(&emu);
        interrupted_init(&cli, &emu, seq, &route).await;
        assert_converged(&cli, &emu, &format!("init killed after {route}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_interrupted_at_each_write_converges_on_rerun() {
    let reference = emulator(fast_knobs()).await;
    let cli = Cli::new(&reference);
    assert_eq!(code(&run_init(&cli, &reference).await), 0);
    let base = reference.requests().len() as u64;
    assert_eq!(code(&run_init(&cli, &reference).await), 0);
    let points = crash_points(&reference, base);
    let routes: Vec<&str> = points.iter().map(|(_, r)| r.as_str()).collect();
    for needle in [
        "/addPassword",
        "/removePassword",
        "/v1/profiles/legalbusiness",
    ] {
        assert!(
            routes.iter().any(|r| r.contains(needle)),
            "{needle} in {routes:?}"
        );
    }
    for (seq, route) in points {
        let emu = emulator(fast_knobs()).await;
        let cli = Cli::new(&emu);
        let first = run_init(&cli, &emu).await;
        assert_eq!(code(&first), 0, "{}", stderr(&first));
        interrupted_init(&cli, &emu, seq, &route).await;
        assert_converged(&cli, &emu, &format!("rotation killed after {route}")).await;
    }
}

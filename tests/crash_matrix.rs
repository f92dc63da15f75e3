//! The crash matrix: for each mutating step of `init` and of rotation, the CLI is killed just after
//! the emulator applied that step (its response never comes), then run again. Every time the run
//! must converge: exit 0, one app, exactly one key on it, the key the store holds, and that secret works.

mod common;

use common::*;
use csp_onboard::emulator::Emulator;
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

/// The steps worth interrupting: every Graph write, and the first verification call after a
/// new key (its secret is then kept as pending but not yet stored as current). Matched by route,
/// since independent requests run in parallel and sequence numbers vary.
const INIT_STEPS: &[&str] = &[
    "POST /v1.0/applications",
    "POST /v1.0/servicePrincipals",
    "/members/$ref",
    "/addPassword",
    "GET /v1/profiles/legalbusiness",
];
const ROTATION_STEPS: &[&str] = &[
    "/addPassword",
    "GET /v1/profiles/legalbusiness",
    "/removePassword",
];

/// Run init with the emulator hanging after applying the first request matching `route`, and
/// kill the CLI there.
async fn interrupted_init(cli: &Cli, emu: &Emulator, route: &str) {
    let before = emu.requests().len();
    emu.update_knobs(|k| k.hang_after_route = Some(route.to_string()));
    let a = init_args(&emu.tenant_id());
    let mut cmd = cli.command(&a.iter().map(String::as_str).collect::<Vec<_>>());
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hung = emu
            .requests()
            .into_iter()
            .skip(before)
            .find(|r| !r.delivered);
        if let Some(r) = hung {
            let key = format!("{} {}", r.method, r.path);
            assert!(key.contains(route), "hung {key}, expected {route}");
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the CLI ended ({status}) before {route}");
        }
        assert!(Instant::now() < deadline, "{route} never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give any request sent alongside a moment to land, then kill without a chance to clean up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.kill().expect("kill");
    let _ = child.wait();
    emu.update_knobs(|k| k.hang_after_route = None);
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
    for route in INIT_STEPS {
        let emu = emulator(fast_knobs()).await;
        let cli = Cli::new(&emu);
        interrupted_init(&cli, &emu, route).await;
        assert_converged(&cli, &emu, &format!("init killed after {route}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_interrupted_at_each_write_converges_on_rerun() {
    for route in ROTATION_STEPS {
        let emu = emulator(fast_knobs()).await;
        let cli = Cli::new(&emu);
        let first = run_init(&cli, &emu).await;
        assert_eq!(code(&first), 0, "{}", stderr(&first));
        interrupted_init(&cli, &emu, route).await;
        assert_converged(&cli, &emu, &format!("rotation killed after {route}")).await;
    }
}

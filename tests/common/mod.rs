//! Shared test scaffolding: an emulator per test, and the built binary pointed at it.
#![allow(dead_code)]

use csp_onboard::emulator::{Emulator, EmulatorConfig, Knobs};
use std::path::{Path, PathBuf};
use std::process::Output;

/// Knobs for a fast, well-behaved tenant: device codes approved after one poll, polled every second at most.
pub fn fast_knobs() -> Knobs {
    Knobs {
        auto_approve_device_code_after_polls: Some(1),
        device_code_interval_secs: Some(0),
        ..Default::default()
    }
}

pub async fn emulator(knobs: Knobs) -> Emulator {
    Emulator::start(EmulatorConfig {
        knobs,
        ..Default::default()
    })
    .await
    .expect("the emulator starts")
}

/// Real Secret Service when the CI wrapper provides one, else the explicit file store.
pub fn real_keychain() -> bool {
    std::env::var("REAL_SECRET_SERVICE").is_ok_and(|v| v == "1")
}

pub struct Cli {
    pub data: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Cli {
    pub fn new(emu: &Emulator) -> Cli {
        let data = tempfile::tempdir().expect("tempdir");
        let mut env = vec![
            ("CSP_ONBOARD_CLOUD".into(), "custom".into()),
            ("CSP_ONBOARD_AUTHORITY_URL".into(), emu.authority_url()),
            ("CSP_ONBOARD_GRAPH_URL".into(), emu.graph_url()),
            (
                "CSP_ONBOARD_PARTNER_CENTER_URL".into(),
                emu.partner_center_url(),
            ),
            (
                "CSP_ONBOARD_DATA_DIR".into(),
                data.path().display().to_string(),
            ),
            ("RUST_BACKTRACE".into(), "0".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        env.push(("CSP_ONBOARD_STORE".into(), "file".into()));
        Cli { data, env }
    }

    /// The same, storing secrets in the OS keychain under a profile name unique to this test
    /// (the keychain is shared by every test of the run).
    pub fn with_keychain(emu: &Emulator, profile: &str) -> Cli {
        let mut cli = Cli::new(emu);
        cli.env.retain(|(k, _)| k != "CSP_ONBOARD_STORE");
        cli.env
            .push(("CSP_ONBOARD_STORE".into(), "keychain".into()));
        cli.env.push(("CSP_ONBOARD_PROFILE".into(), profile.into()));
        cli
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(bin());
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        for k in [
            "CSP_ONBOARD_PROFILE",
            "CSP_ONBOARD_NON_INTERACTIVE",
            "CSP_ONBOARD_APP_SECRET",
            "CSP_ONBOARD_CLIENT_SECRET",
            "CSP_ONBOARD_ACCESS_TOKEN",
            "CSP_ONBOARD_TENANT",
        ] {
            if !self.env.iter().any(|(e, _)| e == k) {
                c.env_remove(k);
            }
        }
        c
    }

    /// Run to completion off the async runtime (the emulator lives on it), with `stdin` as input.
    pub async fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut c = self.command(args);
        let input = stdin.to_string();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            use std::process::Stdio;
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().expect("spawn csp-onboard");
            if let Some(mut s) = child.stdin.take() {
                let _ = s.write_all(input.as_bytes());
            }
            child.wait_with_output().expect("wait for csp-onboard")
        })
        .await
        .expect("join")
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_csp-onboard"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
            stdout(o),
            stderr(o)
        )
    })
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

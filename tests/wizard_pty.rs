//! The interactive wizard in a real pseudo-terminal: `csp-onboard init` driven key by key
//! (arrows, Enter, typed text, Ctrl-C) against an emulator, checking what the person sees and
//! what ends up stored and on the app.
#![cfg(unix)]

mod common;

use common::{Cli, code, emulator, fast_knobs, json, stderr};
use csp_onboard::emulator::{AppView, Emulator, Knobs};
use rexpect::process::WaitStatus;
use rexpect::session::PtySession;
use std::process::Command;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Per expectation: generous, since two cores are shared with other builds.
const TIMEOUT_MS: u64 = 25_000;
const DOWN: &str = "\x1b[B";
const ENTER: &str = "\r";
const CTRL_C: &str = "\x03";
const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";

const MENU: &str = "How do you want to set up the Partner Center web app?";
const LIFETIME: &str = "How long should the key last?";
const COMMERCE_ID: &str = "Commerce ID (optional, Enter to skip)";
const NOT_A_GUID: &str = "is not a GUID";
const BILLING: &str = "Add billing access?";

/// A terminal window's size in rows and columns.
#[derive(Clone, Copy)]
struct Window {
    rows: u16,
    cols: u16,
}

/// Roomy enough that no prompt wraps.
const WIDE: Window = Window {
    rows: 40,
    cols: 120,
};
/// The classic default window, where long prompts wrap.
const CLASSIC: Window = Window { rows: 24, cols: 80 };

/// A terminal session with the wizard. rexpect hands over each byte as a `char`, so text is
/// compared as Latin-1 renderings of its UTF-8 bytes, and decoded back for messages.
struct Screen {
    session: PtySession,
    /// Everything read so far, byte for byte (as Latin-1 chars).
    seen: String,
}

fn latin1(s: &str) -> String {
    s.bytes().map(char::from).collect()
}

fn utf8(s: &str) -> String {
    let bytes: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Screen {
    /// Wait until `text` is on screen; everything before it is kept in the transcript.
    fn expect(&mut self, text: &str) {
        match self.session.exp_string(&latin1(text)) {
            Ok(before) => {
                self.seen.push_str(&before);
                self.seen.push_str(&latin1(text));
            }
            Err(e) => self.fail(&format!("expected {text:?} on screen"), e),
        }
    }

    /// Wait for a regex; returns the whole match (decoded).
    fn expect_regex(&mut self, re: &str) -> String {
        match self.session.exp_regex(re) {
            Ok((before, found)) => {
                self.seen.push_str(&before);
                self.seen.push_str(&found);
                utf8(&found)
            }
            Err(e) => self.fail(&format!("expected /{re}/ on screen"), e),
        }
    }

    /// Keys as typed: flushed at once, since rexpect buffers what it sends.
    fn keys(&mut self, keys: &str) {
        self.session.send(keys).expect("write to the pty");
        self.session.flush().expect("flush the pty");
    }

    /// Type a line of text and press Enter.
    fn answer(&mut self, text: &str) {
        self.keys(text);
        self.keys(ENTER);
    }

    /// The screen as a terminal of that size shows it now (the pty must have that size).
    fn visible(&self, window: Window) -> String {
        let size = |n| std::num::NonZeroU16::new(n).expect("a window is not empty");
        let mut term = vt100::Parser::new(size(window.rows), size(window.cols), 0);
        term.process(utf8(&self.seen).as_bytes());
        term.screen().contents()
    }

    /// Every line the whole run put on a terminal `cols` wide (a screen tall enough that nothing
    /// scrolls away), each with whether the terminal had to wrap it onto the next row.
    fn rows_at(&self, cols: u16) -> Vec<(String, bool)> {
        let size = |n| std::num::NonZeroU16::new(n).expect("a window is not empty");
        let mut term = vt100::Parser::new(size(2000), size(cols), 0);
        term.process(utf8(&self.seen).as_bytes());
        let screen = term.screen();
        let rows: Vec<String> = screen.rows(0, cols).collect();
        let last = rows.iter().rposition(|r| !r.trim().is_empty()).unwrap_or(0);
        rows.into_iter()
            .take(last + 1)
            .enumerate()
            .map(|(i, r)| (r, screen.row_wrapped(i as u16)))
            .collect()
    }

    /// Read to the end and reap the process: (exit code, full transcript, decoded).
    fn finish(mut self) -> (i32, String) {
        match self.session.exp_eof() {
            Ok(rest) => self.seen.push_str(&rest),
            Err(e) => self.fail("expected the wizard to exit", e),
        }
        let status = self.session.process().wait().expect("wait for csp-onboard");
        // Killed by a signal is not an exit: no handler ran, nothing restored the terminal.
        let code = match status {
            WaitStatus::Exited(_, c) => c,
            other => panic!(
                "the wizard did not exit by itself ({other:?})\n--- screen ---\n{}\n---",
                utf8(&self.seen)
            ),
        };
        (code, utf8(&self.seen))
    }

    fn fail(&self, what: &str, e: rexpect::error::Error) -> ! {
        use rexpect::error::Error;
        let (why, got) = match &e {
            Error::Timeout { got, timeout, .. } => {
                (format!("timed out after {timeout:?}"), utf8(got))
            }
            Error::EOF { got, .. } => (
                format!("the wizard ended: {:?}", self.session.process().wait()),
                utf8(got),
            ),
            other => (other.to_string(), String::new()),
        };
        panic!(
            "{what}, but {why}\n--- screen so far ---\n{}{}\n---",
            utf8(&self.seen),
            got
        );
    }
}

/// The wizard as a person starts it: a roomy window, no desktop session (so sign-in uses the
/// device code), plain colours.
fn wizard_command(cli: &Cli, args: &[&str]) -> Command {
    wizard_command_in(cli, args, WIDE)
}

fn wizard_command_in(cli: &Cli, args: &[&str], window: Window) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = cli.command(args);
    c.env("TERM", "xterm-256color");
    for k in [
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "SSH_CONNECTION",
        "SSH_TTY",
        "COLUMNS",
        "LINES",
    ] {
        c.env_remove(k);
    }
    // A fresh pty is 0×0; give it the size of an ordinary window before the wizard looks.
    // Through stderr, which stays on the pty even when a test redirects stdin.
    // SAFETY: runs in the child between fork and exec; ioctl is async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            let ws = libc::winsize {
                ws_row: window.rows,
                ws_col: window.cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            if libc::ioctl(libc::STDERR_FILENO, libc::TIOCSWINSZ, &ws) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Run `script` against the wizard in a pty, off the runtime that serves the emulator;
/// returns the exit code and everything the terminal showed.
async fn in_pty(cmd: Command, script: impl FnOnce(&mut Screen) + Send + 'static) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let session =
            rexpect::session::spawn_command(cmd, Some(TIMEOUT_MS)).expect("spawn in a pty");
        let mut screen = Screen {
            session,
            seen: String::new(),
        };
        script(&mut screen);
        screen.finish()
    })
    .await
    .expect("the pty script panicked")
}

/// A `Cli` on its own profile: with `REAL_SECRET_SERVICE=1` every test shares one keychain,
/// where the profile name is the item's key.
/// The real keychain under the CI wrapper, else the file store; a profile of its own either way
/// (the keychain is shared by every test of the run).
fn cli_for(emu: &Emulator) -> Cli {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let profile = format!("pty-{}", &unique[..12]);
    if common::real_keychain() {
        return Cli::with_keychain(emu, &profile);
    }
    let mut cli = Cli::new(emu);
    cli.env.push(("CSP_ONBOARD_PROFILE".into(), profile));
    cli
}

async fn show(cli: &Cli) -> serde_json::Value {
    let out = cli.run(&["show", "--json"], "").await;
    assert_eq!(code(&out), 0, "show --json: {}", stderr(&out));
    json(&out)
}

fn days_until(rfc3339: &serde_json::Value) -> i64 {
    let s = rfc3339.as_str().expect("secret_expires is a string");
    let t = OffsetDateTime::parse(s, &Rfc3339).expect("secret_expires is RFC 3339");
    (t - OffsetDateTime::now_utc()).whole_days()
}

/// The emulator seeds its tenant with an automation app; these are the apps a run added.
fn apps_added(emu: &Emulator, seeded: &[String]) -> Vec<AppView> {
    emu.applications()
        .into_iter()
        .filter(|a| !seeded.contains(&a.app_id))
        .collect()
}

fn app_ids(emu: &Emulator) -> Vec<String> {
    emu.applications().into_iter().map(|a| a.app_id).collect()
}

fn app(emu: &Emulator, app_id: &str) -> AppView {
    emu.applications()
        .into_iter()
        .find(|a| a.app_id == app_id)
        .unwrap_or_else(|| panic!("app {app_id} is in the tenant"))
}

fn assert_seen(screen: &str, text: &str) {
    assert!(
        screen.contains(text),
        "expected {text:?} on screen:\n{screen}"
    );
}

/// A profile made without the wizard, for the re-run tests.
async fn onboard_non_interactively(cli: &Cli) {
    let out = cli
        .run(&["init", "--non-interactive", "--auth", "device-code"], "")
        .await;
    assert_eq!(code(&out), 0, "init: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn way_in_1_creates_a_web_app_with_a_two_year_key() {
    let emu = emulator(fast_knobs()).await;
    let seeded = app_ids(&emu);
    let cli = cli_for(&emu);
    let device_login = emu.device_login_url();
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), move |s| {
        s.expect(MENU);
        s.expect("Create a new web app (recommended)");
        s.keys(ENTER);
        // A headless terminal signs in with a device code, printed for the person to use.
        s.expect(&format!(
            "To sign in, open {device_login} and enter the code "
        ));
        let user_code = s.expect_regex(r"^[A-Z0-9]+\s");
        assert!(
            user_code.trim().len() >= 6,
            "a user code is shown: {user_code:?}"
        );
        s.expect("Account: ");
        s.expect(LIFETIME);
        s.expect("2 years");
        s.keys(DOWN);
        s.keys(ENTER);
        s.expect(COMMERCE_ID);
        s.answer("12345");
        s.expect(&format!("'12345' {NOT_A_GUID}"));
        // The prompt stays: the next answer goes to the same question.
        s.expect(COMMERCE_ID);
        s.answer("3F2504E0-4F89-11D3-9A0C-0305E82C3301");
        s.expect("Name of the new web app");
        s.expect("Partner Center web app (csp-onboard)");
        s.keys(ENTER);
        s.expect(BILLING);
        s.keys("n");
        s.expect("Created the web app 'Partner Center web app (csp-onboard)'");
        s.expect("Verified");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    assert_seen(&screen, "How long should the key last? · 2 years");

    let apps = apps_added(&emu, &seeded);
    assert_eq!(apps.len(), 1, "one app created");
    assert_eq!(apps[0].display_name, "Partner Center web app (csp-onboard)");
    assert_eq!(apps[0].passwords.len(), 1, "one key on the app");
    assert_eq!(
        emu.count("POST", "devicecode"),
        1,
        "one device-code sign-in"
    );

    let p = show(&cli).await;
    assert_eq!(p["app_id"], apps[0].app_id.as_str());
    assert_eq!(p["key_id"], apps[0].passwords[0].key_id.as_str());
    assert_eq!(p["commerce_id"], "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
    assert_eq!(p["tenant_id"], emu.tenant_id().as_str());
    let days = days_until(&p["secret_expires"]);
    assert!(
        (725..=735).contains(&days),
        "a 2-year key expires about 730 days out, not {days}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn way_in_2_adds_a_key_to_an_existing_app() {
    let emu = emulator(fast_knobs()).await;
    let (app_id, _, _) = emu.portal_create_app("Billing reader app");
    let existing = app_ids(&emu);
    let cli = cli_for(&emu);
    let typed = app_id.clone();
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), move |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(DOWN);
        s.keys(ENTER);
        s.expect("App ID of the existing web app");
        s.answer("not-a-guid");
        s.expect(&format!("'not-a-guid' {NOT_A_GUID}"));
        s.expect("App ID of the existing web app");
        s.answer(&typed);
        s.expect("enter the code");
        s.expect(LIFETIME);
        s.keys(ENTER);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect(BILLING);
        s.keys("n");
        s.expect(&format!(
            "Using the web app 'Billing reader app' (App ID {typed})"
        ));
        s.expect("Created a secret");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    assert_seen(&screen, "Use an existing web app (add a new key to it)");

    assert!(apps_added(&emu, &existing).is_empty(), "no app was created");
    let app = app(&emu, &app_id);
    let p = show(&cli).await;
    assert_eq!(p["app_id"], app_id.as_str());
    assert_eq!(
        p["commerce_id"],
        serde_json::Value::Null,
        "skipped with Enter"
    );
    let key_id = p["key_id"]
        .as_str()
        .expect("a key ID is stored")
        .to_string();
    assert_eq!(app.passwords.len(), 2, "the portal's key and the new one");
    assert!(
        app.passwords.iter().any(|k| k.key_id == key_id),
        "the stored key is on the app"
    );
    let days = days_until(&p["secret_expires"]);
    assert!(
        (360..=370).contains(&days),
        "1 year by default, not {days} days"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn way_in_3_captures_a_portal_app_without_signing_in() {
    let emu = emulator(fast_knobs()).await;
    let (app_id, _, secret) = emu.portal_create_app("Made in Partner Center");
    let cli = cli_for(&emu);
    let tenant = emu.tenant_id();
    let typed_app = app_id.clone();
    let pasted = secret.expose().to_string();
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), move |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(DOWN);
        s.keys(DOWN);
        s.keys(ENTER);
        s.expect("Partner tenant (tenant ID or domain)");
        s.answer(&tenant);
        s.expect("App ID (from App management)");
        s.answer(&typed_app);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect("Paste the app's secret value");
        // The portal shows the secret's ID next to its Value; the ID is the usual slip.
        s.answer("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
        s.expect("that looks like the secret's ID; paste its Value");
        s.expect("Paste the app's secret value");
        s.answer(&pasted);
        s.expect("Verified");
        s.expect("Stored the secret in");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    // Where it went is said plainly: the keychain under the CI wrapper, else the asked-for file.
    let store = if common::real_keychain() {
        "Stored the secret in Secret Service"
    } else {
        "Stored the secret in file "
    };
    assert_seen(&screen, store);
    assert!(
        !screen.contains(secret.expose()),
        "the pasted secret is never echoed:\n{screen}"
    );
    assert_eq!(
        emu.count("POST", "devicecode"),
        0,
        "capture needs no sign-in"
    );

    let out = cli.run(&["show", "--json", "--reveal"], "").await;
    assert_eq!(code(&out), 0, "show: {}", stderr(&out));
    let p = json(&out);
    assert_eq!(p["app_id"], app_id.as_str());
    assert_eq!(p["tenant_id"], emu.tenant_id().as_str());
    assert_eq!(p["commerce_id"], serde_json::Value::Null);
    assert_eq!(
        p["secret"],
        secret.expose(),
        "the pasted secret is what is stored"
    );
    assert_eq!(
        app(&emu, &app_id).passwords.len(),
        1,
        "the app is untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rerun_offers_rotation_no_keeps_the_key_yes_replaces_it() {
    let emu = emulator(fast_knobs()).await;
    let cli = cli_for(&emu);
    onboard_non_interactively(&cli).await;
    let before = show(&cli).await;
    let old_key = before["key_id"].as_str().expect("a key").to_string();
    let app_id = before["app_id"].as_str().expect("an app").to_string();
    let apps_before = app_ids(&emu);

    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), |s| {
        s.expect("already holds a key for app");
        s.expect("Rotate it now?");
        s.keys("n");
        s.expect("Nothing changed.");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    assert_eq!(show(&cli).await, before, "answering n changes nothing");
    let keys: Vec<String> = app(&emu, &app_id)
        .passwords
        .iter()
        .map(|k| k.key_id.clone())
        .collect();
    assert_eq!(keys, vec![old_key.clone()]);
    let sign_ins = emu.count("POST", "devicecode");

    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), |s| {
        s.expect("Rotate it now?");
        s.keys("y");
        s.expect("enter the code");
        s.expect("Created a secret");
        s.expect("Removed the old key");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    assert_eq!(emu.count("POST", "devicecode"), sign_ins + 1);
    let after = show(&cli).await;
    let new_key = after["key_id"].as_str().expect("a key").to_string();
    assert_ne!(new_key, old_key, "a new key is stored");
    assert_eq!(app_ids(&emu), apps_before, "no app was added");
    let rotated = app(&emu, &app_id);
    let keys: Vec<&str> = rotated
        .passwords
        .iter()
        .map(|k| k.key_id.as_str())
        .collect();
    assert_eq!(
        keys,
        vec![new_key.as_str()],
        "the old key is gone from the app"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_at_the_first_menu_exits_130_and_restores_the_cursor() {
    let emu = emulator(fast_knobs()).await;
    let seeded = app_ids(&emu);
    let cli = cli_for(&emu);
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(CTRL_C);
        s.expect("Interrupted");
    })
    .await;
    assert_eq!(exit, 130, "{screen}");
    let hidden = screen
        .rfind(HIDE_CURSOR)
        .expect("the menu hides the cursor while it is shown");
    assert!(
        screen[hidden..].contains(SHOW_CURSOR),
        "the cursor is shown again after the menu hid it:\n{screen:?}"
    );
    assert!(apps_added(&emu, &seeded).is_empty(), "nothing was created");
    let out = cli.run(&["show", "--json"], "").await;
    assert_eq!(code(&out), 8, "no profile was stored: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_waiting_for_the_device_code_exits_130_and_a_rerun_converges() {
    // Nobody approves the code: the wizard waits until the person gives up.
    let emu = emulator(Knobs {
        auto_approve_device_code_after_polls: None,
        device_code_interval_secs: Some(1),
        ..Default::default()
    })
    .await;
    let seeded = app_ids(&emu);
    let cli = cli_for(&emu);
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(ENTER);
        s.expect("enter the code");
        s.expect("Waiting for you to sign in");
        s.keys(CTRL_C);
        s.expect("Interrupted");
    })
    .await;
    assert_eq!(exit, 130, "{screen}");
    if let Some(hidden) = screen.rfind(HIDE_CURSOR) {
        assert!(
            screen[hidden..].contains(SHOW_CURSOR),
            "the cursor is shown again after the spinner:\n{screen:?}"
        );
    }
    assert!(
        apps_added(&emu, &seeded).is_empty(),
        "stopped before any app"
    );

    emu.update_knobs(|k| k.auto_approve_device_code_after_polls = Some(1));
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(ENTER);
        s.expect(LIFETIME);
        s.expect("2 years");
        s.keys(ENTER);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect("Name of the new web app");
        s.keys(ENTER);
        s.expect(BILLING);
        s.keys("n");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    let apps = apps_added(&emu, &seeded);
    assert_eq!(apps.len(), 1, "one app");
    assert_eq!(apps[0].passwords.len(), 1, "one key");
    let p = show(&cli).await;
    assert_eq!(p["key_id"], apps[0].passwords[0].key_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_terminal_a_missing_tenant_is_a_usage_error_naming_the_flag() {
    let emu = emulator(fast_knobs()).await;
    let (app_id, _, secret) = emu.portal_create_app("Made in Partner Center");
    let cli = cli_for(&emu);
    let line = format!("{}\n", secret.expose());

    // Piped stdin, explicitly non-interactive.
    let out = cli
        .run(
            &[
                "init",
                "--non-interactive",
                "--app-id",
                &app_id,
                "--app-secret-stdin",
            ],
            &line,
        )
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--tenant"), "{}", stderr(&out));

    // Piped stdin, no flag: still no prompt, same answer.
    let out = cli
        .run(&["init", "--app-id", &app_id, "--app-secret-stdin"], &line)
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--tenant"), "{}", stderr(&out));

    // The usual slip: the secret piped in while stderr is a terminal. Stdin is not one, so
    // the wizard must not prompt (it could not read the answer) but name the flag.
    let secret_file = cli.data_dir().join("secret.txt");
    std::fs::write(&secret_file, &line).expect("write the secret file");
    let mut cmd = wizard_command(&cli, &["init", "--app-id", &app_id, "--app-secret-stdin"]);
    cmd.stdin(std::fs::File::open(&secret_file).expect("open the secret file"));
    let (exit, screen) = in_pty(cmd, |s| s.expect("--tenant")).await;
    assert_eq!(exit, 2, "{screen}");
    assert!(
        !screen.contains("Partner tenant (tenant ID or domain) ›"),
        "{screen}"
    );

    assert_eq!(emu.count("POST", "devicecode"), 0);
    let out = cli.run(&["show", "--json"], "").await;
    assert_eq!(code(&out), 8, "nothing stored: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_80_column_window_shows_each_prompt_once() {
    let emu = emulator(fast_knobs()).await;
    let cli = cli_for(&emu);
    let (exit, screen) = in_pty(wizard_command_in(&cli, &["init"], CLASSIC), |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(ENTER);
        s.expect(LIFETIME);
        s.expect("2 years");
        s.keys(ENTER);
        s.expect(COMMERCE_ID);
        s.answer("abc");
        s.expect(&format!("'abc' {NOT_A_GUID}"));
        s.expect(COMMERCE_ID);
        s.keys("3f2504e0-4f89-11d3-9a0c-0305e82c3301");
        s.expect("0305e82c3301");
        // A redraw after a refused answer must not leave a copy of the prompt behind.
        let shown = s.visible(CLASSIC);
        let prompts = shown
            .lines()
            .filter(|l| l.contains("Commerce ID ("))
            .count();
        assert_eq!(prompts, 1, "one Commerce ID prompt on screen:\n{shown}");
        assert!(
            shown.contains(
                "? Commerce ID (optional, Enter to skip) › 3f2504e0-4f89-11d3-9a0c-0305e82c3301"
            ),
            "the GUID is typed on the prompt's own line:\n{shown}"
        );
        s.keys(ENTER);
        s.expect("Name of the new web app");
        s.keys(ENTER);
        s.expect(BILLING);
        s.keys("n");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");

    let (exit, screen) = in_pty(wizard_command_in(&cli, &["init"], CLASSIC), |s| {
        s.expect("Rotate it now?");
        s.keys("n");
        s.expect("Nothing changed.");
        let shown = s.visible(CLASSIC);
        let lines: Vec<&str> = shown.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("Rotate it now?"))
                .count(),
            1,
            "the answered question shows once:\n{shown}"
        );
        assert!(
            lines.iter().any(|l| l.contains("Rotate it now? · no")),
            "the answer is on screen:\n{shown}"
        );
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
}

/// The secret prompt reads a line with echo off but signals on, so Ctrl-C there is a SIGINT,
/// not a key: the command runs in its own task so main still sees it, and echo comes back.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_at_the_secret_prompt_exits_130() {
    let emu = emulator(fast_knobs()).await;
    let (app_id, _, _) = emu.portal_create_app("Made in Partner Center");
    let cli = cli_for(&emu);
    let tenant = emu.tenant_id();
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), move |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(DOWN);
        s.keys(DOWN);
        s.keys(ENTER);
        s.expect("Partner tenant (tenant ID or domain)");
        s.answer(&tenant);
        s.expect("App ID (from App management)");
        s.answer(&app_id);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect("Paste the app's secret value");
        s.keys(CTRL_C);
        s.expect("Interrupted");
    })
    .await;
    assert_eq!(exit, 130, "{screen}");
    let out = cli.run(&["show", "--json"], "").await;
    assert_eq!(code(&out), 8, "nothing stored: {}", stderr(&out));
}

/// Found at 100 columns: `(expires 2027-12-` / `06).`. Human text is wrapped at spaces to the
/// window's width, so the terminal never has to break a line itself, and a GUID stays whole.
#[tokio::test(flavor = "multi_thread")]
async fn an_80_column_window_wraps_at_spaces_and_never_splits_a_guid() {
    let emu = emulator(fast_knobs()).await;
    let cli = cli_for(&emu);
    let (exit, screen) = in_pty(wizard_command_in(&cli, &["init"], CLASSIC), |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(ENTER);
        s.expect(LIFETIME);
        s.expect("2 years");
        s.keys(ENTER);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect("Name of the new web app");
        s.keys(ENTER);
        s.expect(BILLING);
        s.keys("n");
        s.expect("Done. Your Partner Center web app:");
        s.expect("before it expires.");
        let rows = s.rows_at(CLASSIC.cols);
        let shown: Vec<&str> = rows.iter().map(|(r, _)| r.as_str()).collect();
        println!(
            "--- the wizard at 80 columns ---\n{}\n---",
            shown.join("\n")
        );
        let broken: Vec<&str> = rows
            .iter()
            .filter(|(_, wrapped)| *wrapped)
            .map(|(r, _)| r.as_str())
            .collect();
        assert!(
            broken.is_empty(),
            "lines the terminal had to break at 80 columns: {broken:#?}\n{}",
            shown.join("\n")
        );
        let guid = split_guids(&shown);
        assert!(guid.is_empty(), "GUIDs split across lines: {guid:?}");
        // Asked before the app exists: where to find the Commerce ID cannot be "next to the App ID".
        assert!(
            !shown.iter().any(|l| l.contains("next to the App ID")),
            "{}",
            shown.join("\n")
        );
        assert!(
            shown
                .iter()
                .any(|l| l.contains("init --commerce-id <guid>")),
            "the Done screen says how to add it later:\n{}",
            shown.join("\n")
        );
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    let p = show(&cli).await;
    for id in [&p["app_id"], &p["tenant_id"]] {
        let id = id.as_str().expect("an ID");
        assert!(screen.contains(id), "{id} is shown whole:\n{screen}");
    }
}

/// Pieces of a GUID cut by a line end: a row ending in hex and dashes that is not a whole GUID,
/// or a row starting with the rest of one.
fn split_guids(rows: &[&str]) -> Vec<String> {
    let guidish = |w: &str| {
        w.len() >= 4 && w.contains('-') && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    };
    let token = |w: &str| {
        w.trim_matches(|c: char| !c.is_ascii_hexdigit() && c != '-')
            .to_string()
    };
    let mut found = Vec::new();
    for pair in rows.windows(2) {
        let end = pair[0]
            .split_whitespace()
            .last()
            .map(token)
            .unwrap_or_default();
        let start = pair[1]
            .split_whitespace()
            .next()
            .map(token)
            .unwrap_or_default();
        if guidish(&end)
            && uuid::Uuid::try_parse(&end).is_err()
            && uuid::Uuid::try_parse(&format!("{end}{start}")).is_ok()
        {
            found.push(format!("{end}|{start}"));
        }
    }
    found
}

const ESC: &str = "\x1b";

/// Esc cancels the menus; it must cancel the text prompts too (a typed line and a hidden
/// secret), with exit 130 and nothing stored.
#[tokio::test(flavor = "multi_thread")]
async fn esc_cancels_a_text_prompt_and_the_secret_prompt_with_exit_130() {
    let emu = emulator(fast_knobs()).await;
    let (app_id, _, _) = emu.portal_create_app("Made in Partner Center");
    let cli = cli_for(&emu);
    let tenant = emu.tenant_id();
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(DOWN);
        s.keys(DOWN);
        s.keys(ENTER);
        s.expect("Partner tenant (tenant ID or domain)");
        s.keys("half-typed");
        s.keys(ESC);
        s.expect("Cancelled.");
    })
    .await;
    assert_eq!(exit, 130, "{screen}");

    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), move |s| {
        s.expect(MENU);
        s.expect("Capture an app");
        s.keys(DOWN);
        s.keys(DOWN);
        s.keys(ENTER);
        s.expect("Partner tenant (tenant ID or domain)");
        s.answer(&tenant);
        s.expect("App ID (from App management)");
        s.answer(&app_id);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect("Paste the app's secret value");
        s.keys("not-all-of-it");
        s.keys(ESC);
        s.expect("Cancelled.");
    })
    .await;
    assert_eq!(exit, 130, "{screen}");
    assert!(
        !screen.contains("not-all-of-it"),
        "hidden input stays hidden:\n{screen}"
    );
    let out = cli.run(&["show", "--json"], "").await;
    assert_eq!(code(&out), 8, "nothing stored: {}", stderr(&out));
}

/// An Admin agent chooses "Create": before anything is written the wizard says why Microsoft
/// will not let this account do it, and offers the way that works (App management, then
/// capture), in the same run.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_agent_is_led_to_app_management_and_capture_before_any_write() {
    let emu = emulator(csp_onboard::emulator::Knobs {
        signed_in_user: csp_onboard::emulator::UserKind::AdminAgent,
        ..fast_knobs()
    })
    .await;
    let (app_id, _, secret) = emu.portal_create_app("Made in App management");
    let apps = app_ids(&emu);
    let cli = cli_for(&emu);
    let typed_app = app_id.clone();
    let pasted = secret.expose().to_string();
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), move |s| {
        s.expect(MENU);
        s.expect("Create a new web app (recommended)");
        s.keys(ENTER);
        s.expect("Role: Admin agent");
        s.expect("Admin agent without a directory role");
        s.expect("Add new web app");
        s.expect("Capture the app and key made there now?");
        s.keys(ENTER);
        s.expect("App ID (from App management)");
        s.answer(&typed_app);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect("Paste the app's secret value");
        s.answer(&pasted);
        s.expect("Verified");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    assert_eq!(app_ids(&emu), apps, "no app was created");
    assert!(
        emu.requests()
            .iter()
            .all(|r| !r.path.starts_with("/v1.0") || r.method == "GET"),
        "no Graph write"
    );
}

/// The tenant's policy cannot be read (no Policy.Read.All, the default) and Graph refuses a
/// year: the wizard asks for a shorter lifetime in days and finishes the same app with it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_policy_that_refuses_a_year_makes_the_wizard_ask_for_days() {
    let emu = emulator(csp_onboard::emulator::Knobs {
        max_password_lifetime: Some(std::time::Duration::from_secs(180 * 86400)),
        ..fast_knobs()
    })
    .await;
    let seeded = app_ids(&emu);
    let cli = cli_for(&emu);
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), move |s| {
        s.expect(MENU);
        s.keys(ENTER);
        s.expect(LIFETIME);
        s.keys(ENTER);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect("Name of the new web app");
        s.keys(ENTER);
        s.expect(BILLING);
        s.keys("n");
        s.expect("its limit could not be read");
        s.expect("Key lifetime in days (less than 365)");
        s.answer("400");
        s.expect("give a number of days from 1 to 364");
        s.expect("Key lifetime in days (less than 365)");
        s.answer("90");
        s.expect("Verified");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    assert_eq!(apps_added(&emu, &seeded).len(), 1, "one app");
    let days = days_until(&show(&cli).await["secret_expires"]);
    assert!((88..=90).contains(&days), "{days}");
}

/// Found at 100 columns: a dry-run plan's call cut as `…/removePasswo` / `rd`. At 80 columns
/// every plan line and call fits, or is wrapped at a space.
#[tokio::test(flavor = "multi_thread")]
async fn an_80_column_dry_run_plan_never_cuts_a_call() {
    let emu = emulator(fast_knobs()).await;
    let cli = cli_for(&emu);
    onboard_non_interactively(&cli).await;
    let cmd = wizard_command_in(
        &cli,
        &["rotate", "--dry-run", "--auth", "device-code"],
        CLASSIC,
    );
    let (exit, screen) = in_pty(cmd, |s| {
        s.expect("Dry run: nothing was changed.");
        s.expect("where {Graph} = ");
        s.expect("{PartnerCenter} = http");
        let rows = s.rows_at(CLASSIC.cols);
        let shown: Vec<&str> = rows.iter().map(|(r, _)| r.as_str()).collect();
        println!(
            "--- the dry run at 80 columns ---\n{}\n---",
            shown.join("\n")
        );
        let broken: Vec<&str> = rows
            .iter()
            .filter(|(_, wrapped)| *wrapped)
            .map(|(r, _)| r.as_str())
            .collect();
        assert!(
            broken.is_empty(),
            "lines the terminal had to break at 80 columns: {broken:#?}\n{}",
            shown.join("\n")
        );
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
}

/// The wizard offers billing access (issue 13); yes, as a Global admin: the app requests
/// PartnerBilling.Read.All, the emulator grants it (Graph "Grant an appRoleAssignment", 201) and
/// the App-only token proves it.
#[tokio::test(flavor = "multi_thread")]
async fn the_wizard_offers_billing_access_and_yes_grants_it() {
    let emu = emulator(fast_knobs()).await;
    let cli = cli_for(&emu);
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), |s| {
        s.expect(MENU);
        s.keys(ENTER);
        s.expect(LIFETIME);
        s.keys(ENTER);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect("Name of the new web app");
        s.keys(ENTER);
        s.expect("PartnerBilling.Read.All");
        s.expect(BILLING);
        s.keys("y");
        s.expect("Admin consent granted (appRoleAssignment)");
        s.expect("Billing access verified");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    assert_seen(&screen, "Add billing access? · yes");
    let granted: Vec<u16> = emu
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/appRoleAssignments"))
        .map(|r| r.status)
        .collect();
    assert_eq!(granted, vec![201], "one appRoleAssignment, granted");
    let out = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["billing_access"], true);
}

/// No: the app is onboarded without asking Graph for anything more, and holds no billing role.
#[tokio::test(flavor = "multi_thread")]
async fn the_wizard_offers_billing_access_and_no_leaves_it_out() {
    let emu = emulator(fast_knobs()).await;
    let cli = cli_for(&emu);
    let (exit, screen) = in_pty(wizard_command(&cli, &["init"]), |s| {
        s.expect(MENU);
        s.keys(ENTER);
        s.expect(LIFETIME);
        s.keys(ENTER);
        s.expect(COMMERCE_ID);
        s.keys(ENTER);
        s.expect("Name of the new web app");
        s.keys(ENTER);
        s.expect(BILLING);
        s.keys("n");
        s.expect("Done. Your Partner Center web app:");
    })
    .await;
    assert_eq!(exit, 0, "{screen}");
    assert!(!screen.contains("Billing access verified"), "{screen}");
    assert_eq!(emu.count("POST", "/appRoleAssignments"), 0);
    assert_eq!(emu.count("PATCH", "/v1.0/applications/"), 0);
    let out = cli.run(&["check", "--json"], "").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        json(&out)["billing_access"],
        false,
        "no PartnerBilling role"
    );
}

//! `--json` is a contract for scripts: snapshots of each command's document, with the values that
//! change between runs (GUIDs, dates, hints, paths) replaced by placeholders.

mod common;

use common::*;
use serde_json::Value;

fn normalize(v: &mut Value, data_dir: &str) {
    match v {
        Value::String(s) => {
            if uuid::Uuid::try_parse(s).is_ok() {
                *s = "[guid]".into();
            } else if time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .is_ok()
            {
                *s = "[rfc3339]".into();
            } else if s.contains(data_dir) {
                *s = s.replace(data_dir, "[data]");
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| normalize(x, data_dir)),
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match k.as_str() {
                    "secret_hint" if x.is_string() => *x = "[hint]".into(),
                    "secret" if x.is_string() => *x = "[secret]".into(),
                    "days_left" if x.is_number() => *x = "[days]".into(),
                    _ => normalize(x, data_dir),
                }
            }
        }
        _ => {}
    }
}

async fn doc(cli: &Cli, args: &[&str]) -> Value {
    let out = cli.run(args, "").await;
    let mut v = json(&out);
    normalize(&mut v, &cli.data_dir().display().to_string());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_documents_are_stable() {
    let emu = emulator(fast_knobs()).await;
    let cli = Cli::new(&emu);
    let tenant = emu.tenant_id();
    let init = [
        "init",
        "--non-interactive",
        "--json",
        "--auth",
        "device-code",
        "--tenant",
        &tenant,
        "--commerce-id",
        "8c2a9f1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b",
    ];
    insta::assert_json_snapshot!("init_created", doc(&cli, &init).await);
    // Re-running (without a new Commerce ID) rotates.
    insta::assert_json_snapshot!("init_rotated", doc(&cli, &init[..7]).await);
    insta::assert_json_snapshot!("show", doc(&cli, &["show", "--json"]).await);
    insta::assert_json_snapshot!(
        "show_reveal",
        doc(&cli, &["show", "--json", "--reveal"]).await
    );
    insta::assert_json_snapshot!("list", doc(&cli, &["list", "--json"]).await);
    insta::assert_json_snapshot!("check", doc(&cli, &["check", "--json"]).await);
    insta::assert_json_snapshot!(
        "error_not_found",
        doc(&cli, &["show", "--json", "--profile", "nope"]).await
    );
}

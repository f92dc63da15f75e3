//! `show`: the stored values of one profile; the secret only with `--reveal`.

use super::{Ctx, print_json, profile_json};
use crate::cli::ShowArgs;
use crate::exit::Exit;

pub async fn run(ctx: &Ctx, args: ShowArgs) -> anyhow::Result<Exit> {
    let p = ctx.require_profile()?;
    let mut doc = profile_json(&p);
    if args.reveal {
        let secrets = ctx.secrets(p.cloud, Some(&p)).await?;
        let secret = ctx.stored_secret(&secrets, &p).await?;
        if ctx.ui.json {
            doc["secret"] = serde_json::Value::String(secret.expose().to_string());
        } else {
            // The one deliberate way out for a secret: stdout, on request.
            println!("{}", secret.expose());
            return Ok(Exit::Success);
        }
    }
    if ctx.ui.json {
        print_json(&ctx.ui, &doc);
        return Ok(Exit::Success);
    }
    let line = |k: &str, v: Option<&str>| println!("{k:<16}{}", v.unwrap_or("-"));
    line("profile", Some(&p.profile));
    line("cloud", Some(p.cloud.as_str()));
    line("tenant_id", Some(&p.tenant_id));
    let add_it = format!(
        "not given (add it: csp-onboard init{} --commerce-id <guid>)",
        if p.profile == "default" {
            String::new()
        } else {
            format!(" --profile {}", p.profile)
        }
    );
    line(
        "commerce_id",
        p.commerce_id.as_deref().or(Some(add_it.as_str())),
    );
    line("app_id", Some(&p.app_id));
    line("app_object_id", p.app_object_id.as_deref());
    line("key_id", p.key_id.as_deref());
    let masked = p
        .secret_hint
        .as_ref()
        .map(|h| format!("{h}{}", "*".repeat(8)));
    line("secret", masked.as_deref());
    line(
        "secret_expires",
        super::rfc3339(p.secret_expires).as_deref(),
    );
    line("store", Some(p.store.as_str()));
    if p.pending.is_some() {
        eprintln!(
            "note: an interrupted rotation is pending; run `csp-onboard rotate` to finish it"
        );
    }
    Ok(Exit::Success)
}

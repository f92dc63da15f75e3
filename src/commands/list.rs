//! `list`: every stored profile with its app and key expiry, without unlocking anything.

use super::{Ctx, days_left, print_json, profile_json};
use crate::exit::Exit;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Exit> {
    let profiles = ctx.meta.list()?;
    if ctx.ui.json {
        let items: Vec<_> = profiles.iter().map(profile_json).collect();
        print_json(&ctx.ui, &serde_json::json!({ "profiles": items }));
        return Ok(Exit::Success);
    }
    if profiles.is_empty() {
        ctx.ui
            .info("No profiles yet. Run `csp-onboard init` to create one.");
        return Ok(Exit::Success);
    }
    println!(
        "{:<16} {:<9} {:<38} {:<12} DAYS LEFT",
        "PROFILE", "CLOUD", "APP ID", "EXPIRES"
    );
    for p in &profiles {
        let (date, left) = match p.secret_expires {
            Some(e) => (e.date().to_string(), days_left(e).to_string()),
            None => ("unknown".into(), "-".into()),
        };
        println!(
            "{:<16} {:<9} {:<38} {:<12} {}",
            p.profile,
            p.cloud.as_str(),
            p.app_id,
            date,
            left
        );
    }
    Ok(Exit::Success)
}

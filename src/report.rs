//! The one place that turns any error into a message with a next step, a JSON error document, and an exit code.

use crate::exit::{Exit, UserError};
use crate::partner_center::ApiError;
use crate::partner_center::verify::VerifyError;
use crate::store::StoreError;
use console::style;

pub fn interrupted() -> anyhow::Error {
    UserError::new(Exit::Interrupted, "interrupted").into()
}

/// Find the most specific known error in the chain and translate it.
pub fn classify(err: &anyhow::Error) -> UserError {
    for cause in err.chain() {
        if let Some(u) = cause.downcast_ref::<UserError>() {
            return UserError {
                exit: u.exit,
                message: u.message.clone(),
                hint: u.hint.clone(),
            };
        }
        if let Some(a) = cause.downcast_ref::<ApiError>() {
            return a.to_user_error();
        }
        if let Some(v) = cause.downcast_ref::<VerifyError>() {
            return v.to_user_error();
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return s.to_user_error();
        }
    }
    UserError::new(Exit::Failure, err.to_string())
}

/// Print the error for a person (stderr) and, with `--json`, as a document on stdout.
pub fn print_error(err: &anyhow::Error, json: bool) -> Exit {
    let u = classify(err);
    if u.exit == Exit::Interrupted {
        let word = if u.message == "cancelled" {
            "Cancelled."
        } else {
            "Interrupted."
        };
        eprintln!("\n{}", style(word).yellow());
        eprintln!("Running the same command again finishes or undoes whatever was under way.");
    } else {
        // The outer contexts say what we were doing; the classified error says what went wrong,
        // so the chain is shown only down to the first typed cause (not its raw text again).
        let typed = |c: &(dyn std::error::Error + 'static)| {
            c.is::<UserError>()
                || c.is::<ApiError>()
                || c.is::<VerifyError>()
                || c.is::<StoreError>()
        };
        let mut doing: Vec<String> = err
            .chain()
            .take_while(|c| !typed(*c))
            .map(|c| c.to_string())
            .take_while(|m| *m != u.message)
            .collect();
        doing.dedup();
        let error = style("error:").red().bold().to_string();
        eprintln!("{}", crate::ui::wrapped(&error, &u.message));
        for d in doing {
            let doing = format!("  {}", style("while").dim());
            eprintln!("{}", crate::ui::wrapped(&doing, &d));
        }
        if let Some(h) = &u.hint {
            let hint = style("hint:").cyan().bold().to_string();
            eprintln!("{}", crate::ui::wrapped(&hint, h));
        }
    }
    if json {
        let doc = serde_json::json!({
            "schema_version": crate::commands::JSON_SCHEMA_VERSION,
            "ok": false,
            "error": {
                "exit_code": u.exit.code(),
                "kind": u.exit.name(),
                "message": u.message,
                "hint": u.hint,
            }
        });
        println!("{doc:#}");
    }
    u.exit
}

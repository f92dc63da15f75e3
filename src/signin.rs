//! Getting a Graph token for the admin: browser (PKCE), device code, an automation identity, or a given token.

use crate::cli::{AuthArg, SignInArgs};
use crate::cloud::{Cloud, DEFAULT_PUBLIC_CLIENT_ID, Endpoints};
use crate::exit::{Exit, UserError};
use crate::partner_center::{self as pc, HttpClient, PollEvent, SignInClient};
use crate::secret::Secret;
use crate::ui::Ui;

pub const ENV_CLIENT_SECRET: &str = "CSP_ONBOARD_CLIENT_SECRET";
pub const ENV_ACCESS_TOKEN: &str = "CSP_ONBOARD_ACCESS_TOKEN";
pub const ENV_APP_SECRET: &str = "CSP_ONBOARD_APP_SECRET";

/// A Graph token for the admin (or the automation identity).
pub struct SignedIn {
    pub graph_token: Secret,
}

/// The tenants that name no tenant: a client-credentials call against them is undefined.
pub fn is_multi_tenant_alias(t: &str) -> bool {
    ["organizations", "common", "consumers"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(t))
}

/// A tenant ID (GUID) or a verified domain.
pub fn validate_tenant(t: &str) -> Result<(), String> {
    if crate::input::canonical_guid(t).is_some() {
        return Ok(());
    }
    if is_multi_tenant_alias(t) {
        return Err(format!(
            "'{t}' names no tenant; give the tenant ID or a verified domain"
        ));
    }
    let ok = t.contains('.')
        && t.len() <= 253
        && t.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{t}' is neither a tenant ID (GUID) nor a domain such as contoso.onmicrosoft.com"
        ))
    }
}

/// A desktop session where a browser can open: not over SSH, and a display on Linux.
fn desktop_likely() -> bool {
    if std::env::var_os("SSH_CONNECTION").is_some() || std::env::var_os("SSH_TTY").is_some() {
        return false;
    }
    if cfg!(any(target_os = "macos", target_os = "windows")) {
        return true;
    }
    std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
}

/// Read one line of stdin as a secret; the line ending is not part of it. At most `max_chars`
/// characters are read: a longer input is no credential and is never sent anywhere.
pub fn read_secret_line(what: &str, max_chars: usize) -> anyhow::Result<Secret> {
    use std::io::Read;
    use zeroize::Zeroize;
    // Room for the longest value in UTF-8 plus a line ending; one byte more means "too long".
    let limit = max_chars * 4 + 2;
    let mut buf = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(limit as u64 + 1)
        .read_to_end(&mut buf);
    let result = read
        .map_err(|e| anyhow::anyhow!("reading {what} from stdin: {e}"))
        .and_then(|_| {
            if buf.len() > limit {
                return Err(too_long(what, max_chars).into());
            }
            let text = std::str::from_utf8(&buf).map_err(|_| {
                UserError::usage(format!("{what} on stdin is not valid UTF-8"))
                    .hint("pipe the value as text, exactly one line")
            })?;
            // One line, optionally followed by its line ending (and blank lines).
            let (line, rest) = text.split_once('\n').unwrap_or((text, ""));
            if !rest.trim().is_empty() {
                return Err(
                    UserError::usage(format!("{what} on stdin has more than one line"))
                        .hint("pipe exactly one line holding the value")
                        .into(),
                );
            }
            let value = line.trim_end_matches('\r').trim();
            if value.is_empty() {
                return Err(UserError::usage(format!("{what} on stdin is empty"))
                    .hint("pipe exactly one line holding the value")
                    .into());
            }
            check_secret_shape(what, value, max_chars)?;
            Ok(Secret::new(value))
        });
    buf.zeroize();
    result
}

fn too_long(what: &str, max_chars: usize) -> UserError {
    UserError::usage(format!(
        "{what} is longer than {max_chars} characters: that is not a credential"
    ))
    .hint("pass the value itself, on one line")
}

/// What no credential holds: more than `max_chars` characters, a line break or another
/// control character (which would also break the HTTP header or form it goes into).
fn check_secret_shape(what: &str, value: &str, max_chars: usize) -> Result<(), UserError> {
    if value.chars().count() > max_chars {
        return Err(too_long(what, max_chars));
    }
    if value.chars().any(|c| c == '\n' || c == '\r') {
        return Err(UserError::usage(format!("{what} contains a line break"))
            .hint("give the value on one line"));
    }
    if value.chars().any(char::is_control) {
        return Err(
            UserError::usage(format!("{what} contains a control character"))
                .hint("give the value itself, as printed by the portal or the tool that made it"),
        );
    }
    Ok(())
}

/// A secret from its `--…-stdin` flag, else its environment variable, else a hidden prompt.
pub fn secret_input(
    ui: &Ui,
    what: &str,
    from_stdin: bool,
    env: &str,
    flag: &str,
    validate: impl Fn(&str) -> Result<(), String> + 'static,
) -> anyhow::Result<Secret> {
    // Access tokens run to a few thousand characters; client secrets to about forty.
    let max_chars = if env == ENV_ACCESS_TOKEN {
        crate::input::MAX_TOKEN_CHARS
    } else {
        crate::input::MAX_SECRET_CHARS
    };
    let value = if from_stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // Read from a terminal, a line would echo the secret on screen: ask hidden instead.
        if !ui.interactive {
            return Err(UserError::usage(format!(
                "{flag} reads {what} from a pipe, and stdin is a terminal"
            ))
            .hint(format!(
                "pipe the value (printf '%s\\n' \"$VALUE\" | csp-onboard … {flag}), or set {env}"
            ))
            .into());
        }
        return ui.password(&format!("Paste {what}"), flag, validate);
    } else if from_stdin {
        tokio::task::block_in_place(|| read_secret_line(what, max_chars))?
    } else if let Some(v) = std::env::var(env).ok().filter(|v| !v.trim().is_empty()) {
        check_secret_shape(&format!("{what} ({env})"), v.trim(), max_chars)?;
        Secret::new(v.trim())
    } else {
        return ui
            .password(
                &format!("Paste {what}"),
                &format!("{flag} or {env}"),
                validate,
            )
            .map_err(|e| {
                if e.downcast_ref::<UserError>()
                    .is_some_and(|u| u.exit == Exit::Usage)
                {
                    UserError::usage(format!("{what} is required in non-interactive mode"))
                        .hint(format!("pipe it to {flag}, or set {env}"))
                        .into()
                } else {
                    e
                }
            });
    };
    validate(value.expose()).map_err(|m| UserError::usage(format!("{what}: {m}")))?;
    Ok(value)
}

/// Signing in at this terminal, as `--auth` and its companions say: the core's way to a token.
pub struct Terminal<'a> {
    pub ui: &'a Ui,
    pub args: &'a SignInArgs,
}

impl crate::onboarding::SignIn for Terminal<'_> {
    fn graph_token<'a>(
        &'a self,
        http: &'a HttpClient,
        ep: &'a Endpoints,
        tenant: Option<&'a str>,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<Secret>> {
        Box::pin(async move {
            Ok(sign_in(self.ui, http, ep, self.args, tenant)
                .await?
                .graph_token)
        })
    }

    fn app_only(&self) -> bool {
        self.args.auth == Some(AuthArg::ClientSecret)
    }
}

/// Sign the admin in (or take an automation identity or a token) and return a Graph token.
pub async fn sign_in(
    ui: &Ui,
    http: &HttpClient,
    ep: &Endpoints,
    args: &SignInArgs,
    tenant: Option<&str>,
) -> anyhow::Result<SignedIn> {
    let method = args.auth.unwrap_or(if ep.cloud == Cloud::Emulator {
        // The built-in emulator approves device codes itself: the whole flow runs headless.
        AuthArg::DeviceCode
    } else if desktop_likely() {
        AuthArg::Browser
    } else {
        AuthArg::DeviceCode
    });
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| DEFAULT_PUBLIC_CLIENT_ID.to_string());
    let client_id = crate::input::require_guid(&client_id, "--client-id")?;
    let graph_token = match method {
        AuthArg::AccessToken => {
            let token = secret_input(
                ui,
                "the Graph access token",
                args.access_token_stdin,
                ENV_ACCESS_TOKEN,
                "--access-token-stdin",
                |_| Ok(()),
            )?;
            ui.done("Using the given access token");
            token
        }
        AuthArg::ClientSecret => {
            let Some(app) = args.client_id.as_deref() else {
                return Err(UserError::missing(
                    "the automation app's client ID",
                    "--client-id with --auth client-secret",
                )
                .into());
            };
            let Some(tenant) = tenant.filter(|t| !is_multi_tenant_alias(t)) else {
                return Err(UserError::missing("the tenant", "--tenant").into());
            };
            let secret = secret_input(
                ui,
                "the automation app's client secret",
                args.client_secret_stdin,
                ENV_CLIENT_SECRET,
                "--client-secret-stdin",
                |_| Ok(()),
            )?;
            let spin = ui.spinner("Signing in as the automation app…");
            let t = pc::client_credentials(http, ep, tenant, app, &secret, &ep.graph_scope())
                .await
                .map_err(|e| automation_sign_in_failed(e, app))?;
            spin.finish();
            ui.done(format!("Signed in as the automation app {app}"));
            t.access_token
        }
        AuthArg::DeviceCode => {
            let client = SignInClient {
                client_id,
                tenant: tenant.unwrap_or("organizations").to_string(),
            };
            let scopes = pc::graph_sign_in_scopes(ep);
            let dc = pc::device_code_start(http, ep, &client, &scopes).await?;
            // Printed plainly (not only in a spinner) so it shows without a terminal too.
            ui.always(format!(
                "\nTo sign in, open {} and enter the code {}\n",
                console::style(&dc.verification_uri).underlined(),
                console::style(&dc.user_code).bold()
            ));
            if ep.cloud == Cloud::Emulator {
                ui.info("(The built-in emulator approves this code by itself in a moment.)");
            }
            let spin = ui.spinner("Waiting for you to sign in…");
            let t = pc::device_code_poll(http, ep, &client, &dc, |e| match e {
                PollEvent::SlowDown { interval } => spin.set(format!(
                    "Waiting for you to sign in (polling every {interval} s)…"
                )),
                PollEvent::Pending | PollEvent::LoopDetected => {}
            })
            .await?;
            spin.finish();
            ui.done("Signed in");
            t.access_token
        }
        AuthArg::Browser => {
            let client = SignInClient {
                client_id,
                tenant: tenant.unwrap_or("organizations").to_string(),
            };
            let scopes = pc::graph_sign_in_scopes(ep);
            let emulated = ep.cloud == Cloud::Emulator;
            let spin = ui.spinner("Waiting for the browser sign-in…");
            let t = pc::browser_sign_in(
                http,
                ep,
                &client,
                &scopes,
                |url| {
                    if emulated {
                        // The emulator's /authorize consents at once: play the browser's part.
                        simulate_browser(url.to_string());
                        true
                    } else {
                        webbrowser::open(url).is_ok()
                    }
                },
                |url| {
                    spin.println(format!(
                        "If no browser opened, open this URL on this machine:\n  {url}"
                    ))
                },
            )
            .await?;
            spin.finish();
            ui.done("Signed in");
            t.access_token
        }
    };
    Ok(SignedIn { graph_token })
}

/// The automation identity's own secret refused is a failed sign-in (exit 3): exit 7 is about
/// the web app's secret, which this is not.
fn automation_sign_in_failed(e: pc::ApiError, app: &str) -> anyhow::Error {
    if e.exit() != Exit::Verify {
        return e.into();
    }
    UserError::new(
        Exit::SignIn,
        format!("the automation app {app} could not sign in: {e}"),
    )
    .hint(format!(
        "check its secret ({ENV_CLIENT_SECRET} or --client-secret-stdin: the secret's value, not its ID), --client-id and --tenant"
    ))
    .into()
}

/// Follow the authorize URL's redirects like a browser would (emulator only).
fn simulate_browser(url: String) {
    tokio::spawn(async move {
        if let Ok(client) = reqwest::Client::builder().no_proxy().build() {
            let _ = client.get(url).send().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants() {
        assert!(validate_tenant("contoso.onmicrosoft.com").is_ok());
        assert!(validate_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47").is_ok());
        assert!(validate_tenant("organizations").is_err());
        assert!(validate_tenant("contoso").is_err());
        assert!(validate_tenant("bad domain.com").is_err());
    }
}

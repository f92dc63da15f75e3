//! Everything the person at the terminal sees: styled lines and spinners on stderr, and the prompts.

use crate::exit::{Exit, UserError};
use console::{Term, style};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Clone)]
pub struct Ui {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    /// Prompts are allowed: not `--non-interactive`, and stdin and stderr are terminals.
    pub interactive: bool,
    /// `--non-interactive` was asked for (not merely a missing terminal): the caller has
    /// accepted that nothing is confirmed.
    pub non_interactive_requested: bool,
}

impl Ui {
    pub fn new(json: bool, quiet: bool, verbose: u8, non_interactive: bool) -> Ui {
        let tty = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        Ui {
            json,
            quiet,
            verbose,
            interactive: tty && !non_interactive,
            non_interactive_requested: non_interactive,
        }
    }

    /// A finished step: `✔ Signed in as admin@contoso`.
    pub fn done(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{} {}", style("✔").green(), msg.as_ref());
        }
    }

    /// Plain information.
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Something the person should read even with `-q` (a device code, a warning).
    pub fn always(&self, msg: impl AsRef<str>) {
        eprintln!("{}", msg.as_ref());
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("{} {}", style("!").yellow().bold(), msg.as_ref());
    }

    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{} {}", style("·").dim(), style(msg.as_ref()).dim());
        }
    }

    pub fn heading(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("\n{}", style(msg.as_ref()).bold());
        }
    }

    /// A spinner on stderr for a wait. On a non-terminal it prints the message once instead,
    /// since indicatif draws nothing there.
    pub fn spinner(&self, msg: impl Into<String>) -> Spinner {
        let msg = msg.into();
        let plain = (!self.quiet && !std::io::stderr().is_terminal())
            .then(|| PlainProgress::start(msg.clone()));
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else if std::io::stderr().is_terminal() {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                    .expect("static template"),
            );
            b.enable_steady_tick(Duration::from_millis(100));
            b.set_message(msg);
            b
        } else {
            eprintln!("… {msg}");
            ProgressBar::hidden()
        };
        Spinner { bar, plain }
    }

    fn require_interactive(&self, what: &str, flag: &str) -> Result<(), UserError> {
        if self.interactive {
            Ok(())
        } else {
            Err(UserError::missing(what, flag))
        }
    }

    /// Pick one of `items`. Without a terminal: the error names `flag`.
    pub fn select(
        &self,
        prompt: &str,
        items: &[&str],
        default: usize,
        flag: &str,
    ) -> anyhow::Result<usize> {
        self.require_interactive(prompt, flag)?;
        let theme = dialoguer::theme::ColorfulTheme::default();
        let choice = blocking(|| {
            dialoguer::Select::with_theme(&theme)
                .with_prompt(prompt)
                .items(items)
                .default(default)
                .interact_opt()
        })?;
        choice.ok_or_else(|| cancelled().into())
    }

    /// A line of text, validated as typed.
    pub fn input(
        &self,
        prompt: &str,
        default: Option<&str>,
        flag: &str,
        validate: impl Fn(&str) -> Result<(), String> + 'static,
    ) -> anyhow::Result<String> {
        self.require_interactive(prompt, flag)?;
        let theme = dialoguer::theme::ColorfulTheme::default();
        let value = blocking(|| {
            let mut input = dialoguer::Input::<String>::with_theme(&theme).with_prompt(prompt);
            if let Some(d) = default {
                input = input.default(d.to_string());
            }
            input
                .validate_with(move |v: &String| validate(v.trim()))
                .interact_text()
        })?;
        Ok(value.trim().to_string())
    }

    /// An optional line of text (empty allowed).
    pub fn input_optional(
        &self,
        prompt: &str,
        validate: impl Fn(&str) -> Result<(), String> + 'static,
    ) -> anyhow::Result<Option<String>> {
        if !self.interactive {
            return Ok(None);
        }
        let theme = dialoguer::theme::ColorfulTheme::default();
        let value = blocking(|| {
            dialoguer::Input::<String>::with_theme(&theme)
                .with_prompt(prompt)
                .allow_empty(true)
                .validate_with(move |v: &String| {
                    if v.trim().is_empty() {
                        Ok(())
                    } else {
                        validate(v.trim())
                    }
                })
                .interact_text()
        })?;
        let v = value.trim().to_string();
        Ok((!v.is_empty()).then_some(v))
    }

    /// A hidden input (a pasted secret).
    pub fn password(
        &self,
        prompt: &str,
        flag: &str,
        validate: impl Fn(&str) -> Result<(), String> + 'static,
    ) -> anyhow::Result<crate::secret::Secret> {
        self.require_interactive(prompt, flag)?;
        let theme = dialoguer::theme::ColorfulTheme::default();
        let value = blocking(|| {
            dialoguer::Password::with_theme(&theme)
                .with_prompt(prompt)
                .validate_with(move |v: &String| validate(v.trim()))
                .interact()
        })?;
        Ok(crate::secret::Secret::new(value.trim()))
    }

    pub fn confirm(&self, prompt: &str, default: bool) -> anyhow::Result<bool> {
        if !self.interactive {
            return Ok(default);
        }
        let theme = dialoguer::theme::ColorfulTheme::default();
        let answer = blocking(|| {
            dialoguer::Confirm::with_theme(&theme)
                .with_prompt(prompt)
                .default(default)
                .interact_opt()
        })?;
        answer.ok_or_else(|| cancelled().into())
    }
}

fn cancelled() -> UserError {
    UserError::new(Exit::Interrupted, "cancelled")
}

/// Run a blocking prompt without stalling the async runtime, and turn Ctrl-C in raw mode
/// (which arrives as an `Interrupted` read, not a signal) into exit 130.
fn blocking<T>(f: impl FnOnce() -> dialoguer::Result<T>) -> anyhow::Result<T> {
    // console answers a Ctrl-C read in raw mode by raising SIGINT at its own process, then
    // returns `Interrupted`. The first prompt can come before main's ctrl_c future is ever
    // polled, and then nothing catches that signal: its default action kills the process with
    // the cursor hidden and no message. Registering a handler here (tokio keeps it for the life
    // of the process) lets the `Interrupted` error take the orderly way out.
    #[cfg(unix)]
    let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    let result = tokio::task::block_in_place(f);
    result.map_err(|dialoguer::Error::IO(e)| {
        if e.kind() == std::io::ErrorKind::Interrupted {
            // Ctrl-C read as a key: the same outcome as the signal main may see first.
            let _ = Term::stderr().show_cursor();
            UserError::new(Exit::Interrupted, "interrupted").into()
        } else {
            anyhow::Error::new(e).context("reading from the terminal")
        }
    })
}

pub struct Spinner {
    bar: ProgressBar,
    /// Without a terminal nothing is drawn: a line is printed every so often instead, so a long
    /// wait in a script or CI log still shows it is alive.
    plain: Option<PlainProgress>,
}

struct PlainProgress {
    msg: std::sync::Arc<std::sync::Mutex<String>>,
    stop: std::sync::mpsc::Sender<()>,
}

/// How often a waiting spinner prints a progress line when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(15);

impl PlainProgress {
    fn start(msg: String) -> PlainProgress {
        let msg = std::sync::Arc::new(std::sync::Mutex::new(msg));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let shown = msg.clone();
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            // Ends when the spinner is dropped (its sender goes away) or told to stop.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(PLAIN_PROGRESS_EVERY)
            {
                let m = shown.lock().map(|m| m.clone()).unwrap_or_default();
                eprintln!("… {m} ({} s)", started.elapsed().as_secs());
            }
        });
        PlainProgress { msg, stop }
    }
}

impl Spinner {
    pub fn set(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(p) = &self.plain
            && let Ok(mut m) = p.msg.lock()
        {
            m.clone_from(&msg);
        }
        self.bar.set_message(msg);
    }

    /// Print a line above the spinner.
    pub fn println(&self, msg: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", msg.as_ref());
        } else {
            self.bar.println(msg.as_ref());
        }
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(p) = &self.plain {
            let _ = p.stop.send(());
        }
        self.bar.finish_and_clear();
    }
}

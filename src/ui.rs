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
            eprintln!("{}", wrapped(&style("✔").green().to_string(), msg.as_ref()));
        }
    }

    /// Plain information.
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", wrapped("", msg.as_ref()));
        }
    }

    /// Something the person should read even with `-q` (a device code, a warning).
    pub fn always(&self, msg: impl AsRef<str>) {
        eprintln!("{}", wrapped("", msg.as_ref()));
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!(
            "{}",
            wrapped(&style("!").yellow().bold().to_string(), msg.as_ref())
        );
    }

    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 && !self.quiet {
            let text = wrapped(&style("·").dim().to_string(), msg.as_ref());
            eprintln!("{}", style(text).dim());
        }
    }

    pub fn heading(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("\n{}", style(wrapped("", msg.as_ref())).bold());
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
                .report(false)
                .interact_opt()
        })?;
        let choice = choice.ok_or_else(cancelled)?;
        self.answered(&theme, prompt, items[choice]);
        Ok(choice)
    }

    /// A line of text, validated when entered.
    pub fn input(
        &self,
        prompt: &str,
        default: Option<&str>,
        flag: &str,
        validate: impl Fn(&str) -> Result<(), String> + 'static,
    ) -> anyhow::Result<String> {
        self.require_interactive(prompt, flag)?;
        let theme = dialoguer::theme::ColorfulTheme::default();
        let value = blocking(|| read_line(&theme, prompt, default, false, &validate))?
            .ok_or_else(cancelled)?;
        self.answered(&theme, prompt, &value);
        Ok(value)
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
        let check = |v: &str| if v.is_empty() { Ok(()) } else { validate(v) };
        let value =
            blocking(|| read_line(&theme, prompt, None, false, &check))?.ok_or_else(cancelled)?;
        self.answered(&theme, prompt, &value);
        Ok((!value.is_empty()).then_some(value))
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
        let value = blocking(|| read_line(&theme, prompt, None, true, &validate))?
            .map(zeroize::Zeroizing::new)
            .ok_or_else(cancelled)?;
        self.answered(&theme, prompt, "********");
        Ok(crate::secret::Secret::new(value.as_str()))
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
                .report(false)
                .interact_opt()
        })?;
        let answer = answer.ok_or_else(cancelled)?;
        self.answered(&theme, prompt, if answer { "yes" } else { "no" });
        Ok(answer)
    }

    /// The answered prompt, as dialoguer's theme shows it (`✔ Prompt · answer`), but wrapped at
    /// spaces: dialoguer's own line is cut wherever the terminal ends.
    fn answered(&self, theme: &dialoguer::theme::ColorfulTheme, prompt: &str, answer: &str) {
        let line = format!(
            "{} {} {}",
            theme.prompt_style.apply_to(prompt),
            theme.success_suffix,
            theme.values_style.apply_to(answer)
        );
        eprintln!("{}", wrapped(&theme.success_prefix.to_string(), &line));
    }
}

/// How to run this program again, for next steps: `csp-onboard` when that name on PATH is this
/// very program, else the path it was started with (after `cargo run` it is not installed).
pub fn invocation() -> String {
    static CMD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CMD.get_or_init(|| {
        let exe = std::env::current_exe().ok();
        let name = format!("csp-onboard{}", std::env::consts::EXE_SUFFIX);
        let on_path = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(&name))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.is_file());
        let same = |a: &std::path::Path, b: &std::path::Path| {
            a.canonicalize()
                .ok()
                .is_some_and(|a| b.canonicalize().ok() == Some(a))
        };
        match (&exe, on_path) {
            (Some(exe), Some(found)) if same(exe, &found) => "csp-onboard".to_string(),
            _ => {
                let started = std::env::args_os()
                    .next()
                    .map(std::path::PathBuf::from)
                    .filter(|p| p.components().count() > 1)
                    .or(exe)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "csp-onboard".into());
                shell_word(&started)
            }
        }
    })
    .clone()
}

/// `s` as one word for a POSIX shell: quoted only when it needs to be.
fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The width human text is wrapped at: the terminal's, when stderr is one. Piped output (logs,
/// scripts) is left alone, one message a line.
fn terminal_width() -> Option<usize> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Term::stderr()
        .size_checked()
        .map(|(_, cols)| usize::from(cols))
}

/// The terminal's width when stderr is one (what human text is wrapped to).
pub fn width() -> Option<usize> {
    terminal_width()
}

/// `prefix` (a styled mark such as ✔, or nothing) and `msg`, wrapped to the terminal's width.
pub fn wrapped(prefix: &str, msg: &str) -> String {
    wrap_to(terminal_width(), prefix, msg)
}

/// Wrap each line of `msg` at spaces only, so a GUID, a path or a URL is never split (one longer
/// than the line overflows whole rather than break). Continuation lines line up under the text:
/// after the prefix, a line's own indentation, and a leading `• ` or `1. `.
pub fn wrap_to(width: Option<usize>, prefix: &str, msg: &str) -> String {
    let lead = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix} ")
    };
    let Some(width) = width.filter(|w| *w > 20) else {
        return format!("{lead}{msg}");
    };
    let lead_width = console::measure_text_width(&lead);
    let mut out = Vec::new();
    for (i, line) in msg.split('\n').enumerate() {
        let body = line.trim_start_matches(' ');
        let indent = " ".repeat(line.len() - body.len());
        let marker = match bullet_width(body) {
            0 if !indent.is_empty() => value_column(body, width / 2),
            n => n,
        };
        let first = if i == 0 {
            format!("{lead}{indent}")
        } else {
            format!("{}{indent}", " ".repeat(lead_width))
        };
        let rest = format!("{}{indent}{}", " ".repeat(lead_width), " ".repeat(marker));
        let glued = glue_commands(body, width.saturating_sub(rest.len()));
        let body = glued.as_str();
        let options = textwrap::Options::new(width)
            .break_words(false)
            .word_separator(textwrap::WordSeparator::AsciiSpace)
            .word_splitter(textwrap::WordSplitter::NoHyphenation)
            .initial_indent(&first)
            .subsequent_indent(&rest);
        if body.is_empty() {
            out.push(first.trim_end().to_string());
        } else {
            out.extend(
                textwrap::wrap(body, options)
                    .into_iter()
                    .map(|l| l.replace(GLUE, " ")),
            );
        }
    }
    out.join("\n")
}

/// Joins the words of a `command in backquotes` so it is never cut across lines: a person
/// copies it whole. (A no-break space, which the ASCII-space wrapper does not break at.)
const GLUE: char = '\u{a0}';

/// Only a command that fits on a continuation line (`room` columns) is glued; a longer one
/// may break at its spaces rather than be cut by the terminal.
fn glue_commands(line: &str, room: usize) -> String {
    line.split('`')
        .enumerate()
        .map(|(i, part)| {
            let command = i % 2 == 1;
            if command && part.chars().count() + 2 <= room {
                part.replace(' ', &GLUE.to_string())
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// In an indented `label    value` row, the column where the value starts, so its wrapped
/// lines line up under it (0 when the row is not one, or the column is past `max`).
fn value_column(body: &str, max: usize) -> usize {
    let Some(gap) = body.find("  ") else {
        return 0;
    };
    let value = gap + body[gap..].len() - body[gap..].trim_start_matches(' ').len();
    if value < max && value < body.len() {
        value
    } else {
        0
    }
}

/// The width of a list marker (`• `, `12. `) opening a line, for hanging indentation.
fn bullet_width(body: &str) -> usize {
    if body.starts_with("• ") {
        return 2;
    }
    let digits = body.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && body[digits..].starts_with(". ") {
        return digits + 2;
    }
    0
}

/// A line read key by key, drawn with dialoguer's theme: `Some(trimmed value)`, or `None` when
/// Esc cancels it. dialoguer's own text prompts ignore Esc, which cancels its menus; the same key
/// must do the same thing everywhere. A refused value shows the reason above the prompt, which is
/// drawn again. `hidden`: nothing typed is shown, and the terminal's echo stays off throughout.
fn read_line(
    theme: &dialoguer::theme::ColorfulTheme,
    prompt: &str,
    default: Option<&str>,
    hidden: bool,
    validate: &dyn Fn(&str) -> Result<(), String>,
) -> dialoguer::Result<Option<String>> {
    use console::Key;
    use dialoguer::theme::Theme as _;
    let term = Term::stderr();
    #[cfg(unix)]
    let _echo = hidden.then(EchoOff::new);
    let mut error_shown = false;
    let to_io = |e: std::fmt::Error| std::io::Error::other(e);
    loop {
        let mut head = String::new();
        if hidden {
            theme.format_password_prompt(&mut head, prompt)
        } else {
            theme.format_input_prompt(&mut head, prompt, default)
        }
        .map_err(to_io)?;
        term.write_str(&head)?;
        term.flush()?;
        let mut typed = zeroize::Zeroizing::new(String::new());
        let shown = |typed: &str| {
            console::measure_text_width(&head) + if hidden { 0 } else { typed.chars().count() }
        };
        loop {
            match term.read_key()? {
                Key::Escape => {
                    clear_drawn(&term, shown(&typed), error_shown)?;
                    return Ok(None);
                }
                Key::Enter => break,
                Key::Backspace => {
                    let before = shown(&typed);
                    if typed.pop().is_some() && !hidden {
                        clear_drawn(&term, before, false)?;
                        term.write_str(&head)?;
                        term.write_str(&typed)?;
                    }
                }
                Key::Char(c) if !c.is_control() => {
                    typed.push(c);
                    if !hidden {
                        term.write_str(c.encode_utf8(&mut [0; 4]))?;
                    }
                }
                _ => {}
            }
            term.flush()?;
        }
        let value = match typed.trim() {
            "" => default.unwrap_or_default().to_string(),
            v => v.to_string(),
        };
        clear_drawn(&term, shown(&typed), error_shown)?;
        match validate(&value) {
            Ok(()) => return Ok(Some(value)),
            Err(why) => {
                let mut line = String::new();
                theme.format_error(&mut line, &why).map_err(to_io)?;
                term.write_line(&line)?;
                error_shown = true;
            }
        }
    }
}

/// Erase a prompt line of `width` columns (however many rows it wrapped onto), and the error
/// line above it when there is one; the cursor ends where the prompt began.
fn clear_drawn(term: &Term, width: usize, error_above: bool) -> std::io::Result<()> {
    let cols = usize::from(term.size().1).max(1);
    let extra_rows = width.saturating_sub(1) / cols;
    term.clear_line()?;
    for _ in 0..extra_rows + usize::from(error_above) {
        term.move_cursor_up(1)?;
        term.clear_line()?;
    }
    Ok(())
}

/// The terminal's echo off for a hidden prompt, put back on drop. console switches to raw mode
/// only while it reads a key; between keys the line discipline would echo a fast paste.
#[cfg(unix)]
struct EchoOff(Option<libc::termios>);

#[cfg(unix)]
impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios value we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff(Some(saved))
        }
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the settings read from the same descriptor.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
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
        let msg = wrapped("", msg.as_ref());
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
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

#[cfg(test)]
mod tests {
    use super::wrap_to;

    #[test]
    fn wraps_at_spaces_and_never_inside_a_guid_or_a_url() {
        let msg = "Profile 'default' already holds a key for app \
                   3f2504e0-4f89-11d3-9a0c-0305e82c3301 (expires 2027-12-06); see \
                   http://127.0.0.1:8401/v1.0/applications/removePassword";
        let text = wrap_to(Some(40), "!", msg);
        for line in text.lines() {
            assert!(
                line.chars().count() <= 40 || !line.trim().contains(' '),
                "{text}"
            );
        }
        for whole in [
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "2027-12-06);",
            "http://127.0.0.1:8401/v1.0/applications/removePassword",
        ] {
            assert!(
                text.lines().any(|l| l.contains(whole)),
                "{whole} split:\n{text}"
            );
        }
        assert!(
            text.lines().skip(1).all(|l| l.starts_with("  ")),
            "hangs under the text:\n{text}"
        );
    }

    #[test]
    fn a_command_in_backquotes_stays_on_one_line_and_table_values_line_up() {
        let text = wrap_to(
            Some(60),
            "",
            "  Commerce ID   not given: run `csp-onboard init --commerce-id <guid>` later",
        );
        assert_eq!(
            text,
            "  Commerce ID   not given: run\n                \
             `csp-onboard init --commerce-id <guid>`\n                later"
        );
    }

    #[test]
    fn a_command_too_long_for_a_line_breaks_at_its_spaces_rather_than_overflow() {
        let text = wrap_to(
            Some(30),
            "",
            "run `csp-onboard init --commerce-id <guid> --profile x`",
        );
        assert!(text.lines().all(|l| l.chars().count() <= 30), "{text}");
    }

    #[test]
    fn a_path_with_spaces_is_quoted_for_the_shell() {
        assert_eq!(
            super::shell_word("/opt/bin/csp-onboard"),
            "/opt/bin/csp-onboard"
        );
        assert_eq!(
            super::shell_word("/home/a b/it's/csp-onboard"),
            r"'/home/a b/it'\''s/csp-onboard'"
        );
    }

    #[test]
    fn bullets_hang_and_piped_output_is_left_alone() {
        let text = wrap_to(Some(30), "", "  • one two three four five six seven eight");
        assert_eq!(text, "  • one two three four five\n    six seven eight");
        assert_eq!(wrap_to(None, "✔", "a b"), "✔ a b");
    }
}

//! The csp-onboard binary: parse, run, and turn the outcome into one message and one exit code.

use clap::Parser;
use csp_onboard::cli::Cli;
use csp_onboard::exit::Exit;
use csp_onboard::report;

fn main() -> std::process::ExitCode {
    forbid_core_dumps();
    // Before clap reads them: an unreadable value would otherwise count as unset.
    if let Err(e) = csp_onboard::commands::check_environment() {
        let json = std::env::args_os().any(|a| a == "--json");
        let code = report::print_error(&e.into(), json).code();
        return std::process::ExitCode::from(code as u8);
    }
    let cli = Cli::parse();
    let json = cli.global.json;
    let terminal = TerminalSettings::save();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(Exit::Failure.code() as u8);
        }
    };
    let outcome = runtime.block_on(async {
        let interrupt = interrupt_signal();
        // The command runs in its own task so that a Ctrl-C is seen even while it blocks on a
        // prompt (a hidden prompt reads with the terminal's signals on: Ctrl-C is a SIGINT).
        let command = tokio::spawn(csp_onboard::commands::run(cli));
        tokio::select! {
            biased;
            _ = interrupt => Err(report::interrupted()),
            r = command => r.unwrap_or_else(|e| Err(anyhow::anyhow!("internal error: {e}"))),
        }
    });
    let code = match outcome {
        Ok(exit) => exit.code(),
        Err(err) => {
            // A prompt may have turned echo off or hidden the cursor when it was interrupted.
            terminal.restore();
            report::print_error(&err, json).code()
        }
    };
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let _ = console::Term::stderr().show_cursor();
    }
    // Dropping the runtime would wait for blocking tasks (a prompt waiting for a key).
    runtime.shutdown_background();
    std::process::ExitCode::from(code as u8)
}

/// A core dump of this process could hold a secret or a token: none is ever written. The limit
/// goes to 0 (soft and hard, so it cannot be raised again from inside), and on Linux the process
/// is also marked not dumpable, which holds even if someone raises the limit from outside.
fn forbid_core_dumps() {
    #[cfg(unix)]
    {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls on this process with a valid, owned argument.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
    }
}

/// Registered at once (not on first poll), so no Ctrl-C slips by before the command starts.
fn interrupt_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let sig = signal(SignalKind::interrupt());
        async move {
            match sig {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The terminal's settings at start, put back on an interrupted or failed run.
struct TerminalSettings {
    #[cfg(unix)]
    saved: Option<libc::termios>,
}

impl TerminalSettings {
    fn save() -> Self {
        #[cfg(unix)]
        {
            // SAFETY: tcgetattr writes a termios into the zeroed value we own; fd 0 is stdin.
            let saved = unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                (libc::isatty(0) == 1 && libc::tcgetattr(0, &mut t) == 0).then_some(t)
            };
            TerminalSettings { saved }
        }
        #[cfg(not(unix))]
        TerminalSettings {}
    }

    fn restore(&self) {
        #[cfg(unix)]
        if let Some(t) = &self.saved {
            // SAFETY: restores settings read from the same descriptor at start.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

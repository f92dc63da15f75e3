//! The csp-onboard binary: parse, run, and turn the outcome into one message and one exit code.

use clap::Parser;
use csp_onboard::cli::Cli;
use csp_onboard::exit::Exit;
use csp_onboard::report;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json = cli.global.json;
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
        tokio::select! {
            r = csp_onboard::commands::run(cli) => r,
            _ = tokio::signal::ctrl_c() => Err(report::interrupted()),
        }
    });
    let code = match outcome {
        Ok(exit) => exit.code(),
        Err(err) => report::print_error(&err, json).code(),
    };
    // Prompts and spinners may have hidden the cursor; a Ctrl-C must not leave it hidden.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let _ = console::Term::stderr().show_cursor();
    }
    // Dropping the runtime would wait for blocking tasks (a prompt waiting for a key).
    runtime.shutdown_background();
    std::process::ExitCode::from(code as u8)
}

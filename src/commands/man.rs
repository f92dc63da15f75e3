//! `man`: one man page holding every subcommand's options and examples.

use clap::CommandFactory;

/// The page: the global options, then a section per command (its description, its own options,
/// its examples), then the overall examples and exit codes. clap_mangen's page alone documents
/// only the global options and points to `csp-onboard-init(1)` pages nobody installs.
pub fn page() -> std::io::Result<Vec<u8>> {
    let cli = crate::cli::Cli::command();
    let top = clap_mangen::Man::new(cli.clone());
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    top.render_options_section(&mut out)?;
    out.extend_from_slice(b".SH COMMANDS\n");
    // Not built: each subcommand's own arguments, without the propagated global ones.
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("csp-onboard {}", sub.get_name());
        out.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            out.extend_from_slice(format!(".PP\n{}\n", escape(&about.to_string())).as_bytes());
        }
        let usage = sub.clone().bin_name(&name).render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ");
        out.extend_from_slice(format!(".PP\n\\fB{}\\fR\n", escape(usage)).as_bytes());
        let mut options = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut options)?;
        // Its options under the command's own heading, not a new top-level section.
        let options = String::from_utf8_lossy(&options).replace(".SH OPTIONS\n", ".PP\n");
        out.extend_from_slice(options.as_bytes());
        if let Some(examples) = sub.get_after_long_help() {
            verbatim(&mut out, &examples.to_string());
        }
    }
    if let Some(examples) = cli.get_after_long_help() {
        out.extend_from_slice(b".SH EXAMPLES\n");
        verbatim(&mut out, &examples.to_string());
    }
    top.render_version_section(&mut out)?;
    Ok(out)
}

/// Lines kept as written (no filling, no hyphenation): examples must stay copyable.
fn verbatim(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b".PP\n.nf\n.nh\n");
    for line in text.lines() {
        out.extend_from_slice(escape(line).as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b".hy\n.fi\n");
}

/// Text safe as roff input: backslashes, a leading dot or quote, and ASCII hyphens (which
/// would otherwise render as typographic hyphens that do not paste into a shell).
fn escape(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

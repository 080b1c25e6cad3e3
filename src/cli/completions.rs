//! Shell completions and the man page, generated from the clap definitions ([`super::Cli`])
//! so they cannot drift from `--help`: `boa-exchange completions SHELL` and the hidden
//! `boa-exchange manpage`. The packaged copies in `packaging/` are these outputs, checked
//! by a test (`packaging/generate.sh` rewrites them). Prose that clap does not hold (the
//! description, exit status, configuration, environment, files, …) is kept in
//! `src/cli/man/*.roff` and spliced in around the generated synopsis, commands and options.

use std::io::{self, Write};

use clap::CommandFactory;

pub use clap_complete::Shell;

/// The binary's name, as completions register it.
pub const BIN: &str = "boa-exchange";

/// The man page's DESCRIPTION section (roff).
const DESCRIPTION: &str = include_str!("man/description.roff");
/// The sections after OPTIONS (roff): exit status, configuration, environment, files, …
const SECTIONS: &str = include_str!("man/sections.roff");

/// The Debian changelog: the man page's date is its newest entry's (a release date, so the
/// page is the same on every build).
const CHANGELOG: &str = include_str!("../../packaging/changelog");

/// `27 November 2026` from the first ` -- NAME <MAIL>  Fri, 27 Nov 2026 22:54:01 +0000` line.
fn release_date() -> String {
    CHANGELOG
        .lines()
        .find_map(|l| l.strip_prefix(" -- ")?.split_once(">  ").map(|(_, d)| d))
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d.trim()).ok())
        .map(|d| d.format("%-d %B %Y").to_string())
        .unwrap_or_else(|| "unknown date".into())
}

/// The clap command tree.
pub fn command() -> clap::Command {
    super::Cli::command()
}

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut command(), BIN, out);
}

/// The lines of a rendered section without its `.SH` heading.
fn body(render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<String> {
    let mut buf = Vec::new();
    render(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(text
        .lines()
        .filter(|l| !l.starts_with(".SH "))
        .map(|l| format!("{l}\n"))
        .collect())
}

/// Writes boa-exchange(8): NAME, SYNOPSIS, DESCRIPTION, COMMANDS (every visible subcommand
/// with its synopsis, what it does and its options), OPTIONS (the global ones), then the
/// prose sections.
///
/// # Errors
/// Writing to `out` failed.
pub fn manpage(out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = command();
    cmd.build();
    let man = |c: clap::Command| {
        clap_mangen::Man::new(c)
            .title("BOA-EXCHANGE")
            .section("8")
            .manual("System Administration")
            .date(release_date())
    };
    let top = man(cmd.clone());
    writeln!(
        out,
        ".\\\" boa-exchange(8). Generated from the clap definitions by `boa-exchange manpage`;\n\
         .\\\" edit src/cli/mod.rs (commands, options) or src/cli/man/*.roff (prose), then run\n\
         .\\\" packaging/generate.sh."
    )?;
    top.render_title(out)?;
    top.render_name_section(out)?;
    top.render_synopsis_section(out)?;
    out.write_all(DESCRIPTION.as_bytes())?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // The global options and --help are in OPTIONS once, not under every command.
        let repeated: Vec<clap::Id> = sub
            .get_arguments()
            .filter(|a| a.is_global_set() || a.get_id() == "help")
            .map(|a| a.get_id().clone())
            .collect();
        let sub = repeated
            .into_iter()
            .fold(sub.clone(), |c, id| c.mut_arg(id, |a| a.hide(true)));
        let m = man(sub.clone());
        writeln!(out, ".TP")?;
        // The synopsis, `boa-exchange NAME [options] ARGS` (its bin name was set by build).
        let synopsis = body(|b| m.render_synopsis_section(b))?;
        out.write_all(synopsis.as_bytes())?;
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            for l in about.to_string().lines() {
                writeln!(out, "{}", escape(l))?;
            }
        }
        let options = body(|b| m.render_options_section(b))?;
        if !options.trim().is_empty() {
            writeln!(out, ".RS")?;
            out.write_all(options.as_bytes())?;
            writeln!(out, ".RE")?;
        }
    }
    top.render_options_section(out)?;
    out.write_all(SECTIONS.as_bytes())?;
    top.render_version_section(out)?;
    Ok(())
}

/// Text safe as a roff text line: backslashes doubled, `-` as `\-`, and a leading `.` or
/// `'` guarded (it would be a request).
fn escape(line: &str) -> String {
    let t = line.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The names of the visible subcommands (for tests and checks of the man page).
pub fn subcommand_names() -> Vec<String> {
    command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_man_entry_and_a_bash_completion() {
        let mut page = Vec::new();
        manpage(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        let mut bash = Vec::new();
        completions(Shell::Bash, &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        for name in subcommand_names() {
            let roff_name = name.replace('-', "\\-");
            assert!(
                page.contains(&format!("boa\\-exchange {roff_name}"))
                    || page.contains(&format!("\\fB{roff_name}\\fR")),
                "man page lacks {name}"
            );
            assert!(bash.contains(&name), "bash completion lacks {name}");
        }
        assert!(!subcommand_names().contains(&"manpage".to_string()));
    }
}

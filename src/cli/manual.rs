//! `leviathan completions SHELL` and `leviathan man [VERB]`: the shell
//! completion script and the manual page, generated from the same clap
//! definitions that parse the command line (so they never drift from it),
//! written to stdout for the user to put where their shell or `man` looks.
//!
//! The command is handed in by `main` (this room does not import it): the
//! arrows point from `main` down to `cli`.

use anyhow::{anyhow, Context};
use std::io::Write;

/// Writes the completion script of `shell` for `cmd`.
pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command, out: &mut dyn Write) -> anyhow::Result<()> {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
    out.flush().context("writing the completion script")
}

/// Writes the manual page of `cmd` (section 1), or of one of its verbs
/// (`leviathan-serve(1)`), in roff.
pub fn man(cmd: clap::Command, verb: Option<&str>, version: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let source = format!("{} {version}", cmd.get_name());
    let page = match verb {
        None => cmd,
        Some(v) => {
            let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
            cmd.find_subcommand(v).cloned().ok_or_else(|| anyhow!("no verb '{v}' (verbs: {})", names.join(", ")))?
        }
    };
    let mut text = Vec::new();
    clap_mangen::Man::new(page).source(source).manual("Leviathan Manual").render(&mut text)?;
    out.write_all(&text).and_then(|()| out.flush()).context("writing the manual page")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("lev")
            .version("1.2.3")
            .subcommand(clap::Command::new("serve").about("Run it").arg(clap::Arg::new("listen").long("listen")))
    }

    #[test]
    fn the_page_of_a_verb_is_named_after_both() {
        let mut out = Vec::new();
        man(cmd(), Some("serve"), "1.2.3 (commit abc)", &mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
        assert!(page.contains("lev\\-serve") && page.contains("listen"), "{page}");
        assert!(page.contains("1.2.3 (commit abc)"), "{page}");
        let e = man(cmd(), Some("nope"), "1", &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("serve"), "{e}");
    }
}

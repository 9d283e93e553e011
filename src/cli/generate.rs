//! `coffer generate man DIR` and `coffer generate completions SHELL`: man pages and shell
//! completions made from the same clap definitions as `--help`, so they never drift from it.
//! The Debian package (tools/package.sh) ships what these write.

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, Subcommand};

use super::{CliResult, Failure};

#[derive(Subcommand)]
pub enum GenerateCommand {
    /// Write a man page for coffer and for each subcommand (coffer.1, coffer-mount.1,
    /// coffer-keys-export.1, ...) into DIR
    Man {
        /// Where to write them (made if absent)
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on stdout
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

pub fn run(cmd: GenerateCommand) -> CliResult {
    let mut cli = super::Cli::command();
    match cmd {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure::from(format!("{}: {e}", dir.display())))?;
            cli.build();
            write_pages(&cli, &dir)?;
        }
        GenerateCommand::Completions { shell } => {
            // Into memory first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cli, "coffer", &mut script);
            let mut out = std::io::stdout().lock();
            match out.write_all(&script).and_then(|_| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(Failure::from(format!("cannot write the script: {e}"))),
            }
        }
    }
    Ok(0)
}

/// `cmd`'s page, then its subcommands', each named by its path (coffer-keys-export.1).
fn write_pages(cmd: &clap::Command, dir: &std::path::Path) -> Result<(), Failure> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .render(&mut page)
        .map_err(|e| Failure::from(format!("{}: {e}", path.display())))?;
    std::fs::write(&path, page).map_err(|e| Failure::from(format!("{}: {e}", path.display())))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, dir)?;
    }
    Ok(())
}

//! `coffer generate`: a man page for every command, each saying what its --help says, and
//! completion scripts that the shells accept.

mod common;

use std::process::Command;

use common::{bin, s, sh_ok};

#[test]
fn a_man_page_for_every_command_with_its_flags() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = Command::new(bin())
        .args(["generate", "man", s(dir.path())])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for page in [
        "coffer",
        "coffer-mount",
        "coffer-backup",
        "coffer-fsck",
        "coffer-keys-export",
        "coffer-keyserver",
    ] {
        let path = dir.path().join(format!("{page}.1"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}.1 is roff: {text:.80}"
        );
    }
    // The page says what --help says: the same flag, the same words.
    let page = std::fs::read_to_string(dir.path().join("coffer-mount.1")).expect("page");
    let help = Command::new(bin())
        .args(["mount", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--noexec") && page.contains("\\-\\-noexec"),
        "{page}"
    );
    // man renders it (man-db is installed by tools/setup.sh).
    let shown = sh_ok(&format!(
        "MANWIDTH=100 man -l {}/coffer-mount.1",
        s(dir.path())
    ));
    assert!(
        shown.contains("Mount a store; returns once the filesystem is serving"),
        "{shown}"
    );
}

#[test]
fn completion_scripts_load_in_their_shells() {
    let dir = tempfile::tempdir().expect("tmp");
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(bin())
            .args(["generate", "completions", shell])
            .output()
            .expect("run");
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}");
        std::fs::write(dir.path().join(shell), &o.stdout).expect("write");
    }
    let shown = sh_ok(&format!(
        "bash -c '. {}/bash && complete -p coffer'",
        s(dir.path())
    ));
    assert!(shown.contains("-F _coffer"), "{shown}");
    let bad = Command::new(bin())
        .args(["generate", "completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
}

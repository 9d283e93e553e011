//! The mount helper's call: `coffer STORE MOUNTPOINT -o opt,opt` (what mount.fuse3 runs for
//! `mount -t fuse.coffer` and an fstab line of type fuse.coffer), and `mount.coffer STORE
//! MOUNTPOINT [-sfnv] [-o opts]` (what mount(8) runs for type coffer when coffer is installed
//! under that name), made into the `coffer mount` command line it stands for.
//!
//! Every flag of `coffer mount` is an option, named with `_` for `-` (`passphrase_file=F`,
//! `allow_other`), read from the clap definition itself so the two never drift apart.
//! mount(8)'s own options (`noauto`, `nofail`, `_netdev`, `x-systemd.*`, `defaults`, `user`)
//! are ignored, as mount.fuse3 expects of its helpers.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use clap::{Args, CommandFactory};

use super::mount::MountArgs;
use super::Failure;

/// Options that belong to mount(8), systemd or the fstab line, not to the filesystem.
fn ignored(name: &str) -> bool {
    const IGNORED: &[&str] = &[
        "defaults",
        "auto",
        "noauto",
        "nofail",
        "_netdev",
        "user",
        "users",
        "nouser",
        "owner",
        "group",
        "rw",
        "exec",
        "atime",
        "relatime",
        "strictatime",
        "nodiratime",
        "lazytime",
        // mount.fuse3 adds dev,suid as root; coffer always mounts nosuid,nodev (a backup
        // holds other hosts' setuid programs and device nodes).
        "nosuid",
        "nodev",
        "suid",
        "dev",
        "async",
        "sync",
        "dirsync",
        "loop",
        "nobootwait",
        "nonempty_ok",
    ];
    IGNORED.contains(&name)
        || name.starts_with("x-")
        || name.starts_with("comment=")
        || name.starts_with("helper=")
}

/// The `coffer mount` arguments for a mount-helper call, or None when `args` is an ordinary
/// command line.
pub fn helper_call(args: &[OsString]) -> Option<Result<Vec<OsString>, Failure>> {
    let argv0 = args.first().map(|a| std::path::Path::new(a).file_name());
    let as_mount_helper =
        matches!(argv0, Some(Some(n)) if n == "mount.coffer" || n == "mount.fuse.coffer");
    let first = args.get(1)?;
    if !as_mount_helper {
        let b = first.as_bytes();
        if b.starts_with(b"-") || b == b"help" || args.len() < 3 {
            return None;
        }
        // A store is a path (mount(8) passes fstab's absolute one): a bare word that names
        // nothing here is a mistyped subcommand, for clap to answer.
        if !b.contains(&b'/') && std::fs::symlink_metadata(first).is_err() {
            return None;
        }
        // Only a call that could be the helper's pays for building the command tree.
        let named = super::Cli::command()
            .get_subcommands()
            .any(|c| c.get_name().as_bytes() == b);
        if named {
            return None;
        }
    }
    Some(translate(&args[1..]))
}

/// `STORE MOUNTPOINT [-o opts]... [-s|-f|-n|-v]...` into `mount STORE MOUNTPOINT --flags`.
fn translate(args: &[OsString]) -> Result<Vec<OsString>, Failure> {
    let mut places = Vec::new();
    let mut opts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_bytes() {
            b"-o" => opts.push(it.next().ok_or("-o needs a list of options")?.clone()),
            o if o.starts_with(b"-o") => opts.push(OsStr::from_bytes(&o[2..]).to_os_string()),
            // mount(8)'s sloppy, no-mtab and verbose flags; -t names the type it already knows.
            b"-s" | b"-n" | b"-v" => {}
            b"-t" => {
                it.next();
            }
            b"-f" => return Err(Failure::from("a fake mount (-f) is not supported")),
            o if o.starts_with(b"-") => {
                return Err(Failure::from(format!(
                    "unknown mount flag {}",
                    a.to_string_lossy()
                )))
            }
            _ => places.push(a.clone()),
        }
    }
    let [store, point] = <[OsString; 2]>::try_from(places).map_err(|p| {
        Failure::from(format!(
            "a mount helper call is `coffer STORE MOUNTPOINT -o OPTIONS`; got {} places",
            p.len()
        ))
    })?;
    let mut out: Vec<OsString> = vec!["coffer".into(), "mount".into(), store, point];
    let flags = MountArgs::augment_args(clap::Command::new("mount"));
    for list in &opts {
        let list = list.to_str().ok_or("mount options must be UTF-8")?;
        for o in list.split(',').filter(|o| !o.is_empty()) {
            out.extend(option(&flags, o)?);
        }
    }
    Ok(out)
}

/// One `-o` option as `coffer mount` flags (`flags`: its clap definition).
fn option(flags: &clap::Command, o: &str) -> Result<Vec<OsString>, Failure> {
    if ignored(o) {
        return Ok(Vec::new());
    }
    let (name, value) = match o.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (o, None),
    };
    match (name, value) {
        ("ro", None) => return Ok(vec!["--read-only".into()]),
        // A list inside a comma-separated list: providers=local+kms.
        ("providers", Some(v)) => {
            return Ok(vec!["--providers".into(), v.replace('+', ",").into()])
        }
        _ => {}
    }
    let long = name.replace('_', "-");
    let arg = flags
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()) && !a.is_hide_set())
        .ok_or_else(|| Failure::from(format!("unknown mount option {name}")))?;
    let flag: OsString = format!("--{long}").into();
    match (arg.get_action().takes_values(), value) {
        (true, Some(v)) => Ok(vec![flag, v.into()]),
        (false, None) => Ok(vec![flag]),
        (true, None) => Err(Failure::from(format!(
            "mount option {name} needs a value ({name}=...)"
        ))),
        (false, Some(_)) => Err(Failure::from(format!("mount option {name} takes no value"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> Option<Result<Vec<String>, String>> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        helper_call(&args).map(|r| {
            r.map(|v| v.iter().map(|a| a.to_string_lossy().into_owned()).collect())
                .map_err(|f| f.message)
        })
    }

    #[test]
    fn what_mount_fuse3_runs_becomes_coffer_mount() {
        let got = call(&[
            "coffer",
            "/srv/store",
            "/mnt/b",
            "-o",
            "ro,noexec,nosuid,nodev,keystore=/k,passphrase_file=/run/credentials/p,allow_other",
        ]);
        let want = "coffer mount /srv/store /mnt/b --read-only --noexec --keystore /k \
                    --passphrase-file /run/credentials/p --allow-other";
        assert_eq!(got, Some(Ok(want.split(' ').map(String::from).collect())));
    }

    #[test]
    fn fstab_and_systemd_options_are_ignored_and_unknown_ones_refused() {
        let got = call(&[
            "coffer",
            "/s",
            "/m",
            "-o",
            "noauto,nofail,_netdev,x-systemd.requires=k.service,defaults,log=/l",
        ]);
        assert_eq!(
            got,
            Some(Ok(["coffer", "mount", "/s", "/m", "--log", "/l"]
                .map(String::from)
                .to_vec()))
        );
        let bad = call(&["coffer", "/s", "/m", "-o", "frobnicate"]);
        assert_eq!(bad, Some(Err("unknown mount option frobnicate".into())));
        let bad = call(&["coffer", "/s", "/m", "-o", "keystore"]);
        assert_eq!(
            bad,
            Some(Err(
                "mount option keystore needs a value (keystore=...)".into()
            ))
        );
    }

    #[test]
    fn mount_dot_coffer_takes_mount8_flags() {
        let got = call(&[
            "/sbin/mount.coffer",
            "/s",
            "/m",
            "-n",
            "-o",
            "rw,providers=local+kms",
        ]);
        assert_eq!(
            got,
            Some(Ok([
                "coffer",
                "mount",
                "/s",
                "/m",
                "--providers",
                "local,kms"
            ]
            .map(String::from)
            .to_vec()))
        );
    }

    #[test]
    fn ordinary_command_lines_are_left_alone() {
        assert_eq!(call(&["coffer", "mount", "/s", "/m"]), None);
        assert_eq!(call(&["coffer", "--help"]), None);
        assert_eq!(call(&["coffer", "help", "mount"]), None);
        assert_eq!(call(&["coffer", "/s"]), None);
    }
}

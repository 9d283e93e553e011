//! `--exclude` and `--exclude-from`, as rsync reads them: a pattern without a slash matches a
//! name at any depth (`*.tmp`); one with a slash matches the path from the transfer's root
//! (`/var/cache`, `home/*/.cache`); a trailing slash matches directories only (`tmp/`);
//! `**` crosses slashes. An excluded directory is not entered.

use std::ffi::OsStr;
use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("bad exclude pattern {0:?}: {1}")]
    Pattern(String, globset::Error),
    #[error("cannot read exclude file {0}: {1}")]
    File(std::path::PathBuf, std::io::Error),
}

/// The patterns of a run, split by what they match against.
#[derive(Default)]
pub struct Filter {
    names: Option<GlobSet>,
    paths: Option<GlobSet>,
    dir_names: Option<GlobSet>,
    dir_paths: Option<GlobSet>,
}

#[derive(Default)]
struct Builders {
    names: Vec<Glob>,
    paths: Vec<Glob>,
    dir_names: Vec<Glob>,
    dir_paths: Vec<Glob>,
}

fn set(globs: Vec<Glob>) -> Result<Option<GlobSet>, FilterError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| FilterError::Pattern(String::new(), e))
}

impl Filter {
    /// Patterns from `--exclude` and from each `--exclude-from` file (one a line; blank lines
    /// and lines starting with # or ; are skipped).
    pub fn new(patterns: &[String], files: &[std::path::PathBuf]) -> Result<Filter, FilterError> {
        let mut all: Vec<String> = patterns.to_vec();
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|e| FilterError::File(f.clone(), e))?;
            let lines = text.lines().map(str::trim_end);
            all.extend(
                lines
                    .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
                    .map(String::from),
            );
        }
        let mut b = Builders::default();
        for p in &all {
            let (body, dir_only) = match p.strip_suffix('/') {
                Some(s) => (s, true),
                None => (p.as_str(), false),
            };
            let anchored = body.contains('/');
            let body = body.trim_start_matches('/');
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| FilterError::Pattern(p.clone(), e))?;
            match (anchored, dir_only) {
                (false, false) => b.names.push(glob),
                (true, false) => b.paths.push(glob),
                (false, true) => b.dir_names.push(glob),
                (true, true) => b.dir_paths.push(glob),
            }
        }
        Ok(Filter {
            names: set(b.names)?,
            paths: set(b.paths)?,
            dir_names: set(b.dir_names)?,
            dir_paths: set(b.dir_paths)?,
        })
    }

    /// Whether the entry at `rel` (from the transfer's root) is excluded.
    pub fn excludes(&self, rel: &Path, is_dir: bool) -> bool {
        let name = rel.file_name().unwrap_or(OsStr::new(""));
        let hit = |s: &Option<GlobSet>, what: &Path| s.as_ref().is_some_and(|s| s.is_match(what));
        hit(&self.names, Path::new(name))
            || hit(&self.paths, rel)
            || (is_dir && (hit(&self.dir_names, Path::new(name)) || hit(&self.dir_paths, rel)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(p: &[&str]) -> Filter {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        Filter::new(&p, &[]).expect("patterns")
    }

    #[test]
    fn patterns_match_as_rsync_reads_them() {
        let x = f(&["*.tmp", "/var/cache", "home/*/.cache", "tmp/", "a/**/z"]);
        assert!(x.excludes(Path::new("deep/in/it.tmp"), false));
        assert!(!x.excludes(Path::new("deep/in/it.tmpx"), false));
        assert!(x.excludes(Path::new("var/cache"), true));
        assert!(!x.excludes(Path::new("srv/var/cache"), true));
        assert!(x.excludes(Path::new("home/ann/.cache"), true));
        assert!(!x.excludes(Path::new("home/ann/sub/.cache"), true));
        assert!(x.excludes(Path::new("x/tmp"), true));
        assert!(!x.excludes(Path::new("x/tmp"), false));
        assert!(x.excludes(Path::new("a/b/c/z"), false));
        assert!(!f(&[]).excludes(Path::new("anything"), false));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = Filter::new(&["a[".to_string()], &[])
            .err()
            .expect("refused");
        assert!(
            e.to_string().starts_with("bad exclude pattern \"a[\""),
            "{e}"
        );
    }
}

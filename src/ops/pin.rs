//! `hoard cache pin` / `unpin`: the pins file in the cache folder (`pins`, one pattern a line),
//! which a running hoard reads at its next reconcile, beside the config's `cache.pin`. The file
//! is rewritten whole through a temp file and a rename, so hoard reads the old list or the new.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use crate::oci::RepoPattern;
use crate::ops::imageref::ImageRef;
use crate::ops::{OpsError, Outcome, io_error};
use crate::store::PINS_FILE;

/// What to pin: an image (`alpine:3.20`, resolved as docker resolves it; `latest` without a
/// tag) or, when it holds a `*`, a pattern as `cache.pin` writes it.
#[derive(Debug, Clone)]
pub struct PinTarget {
    pattern: RepoPattern,
    /// The image, when one was named rather than a pattern.
    image: Option<ImageRef>,
}

impl FromStr for PinTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<PinTarget, String> {
        if text.contains('*') {
            return Ok(PinTarget {
                pattern: RepoPattern::parse(text)?,
                image: None,
            });
        }
        let image = ImageRef::parse(text).map_err(|e| e.to_string())?;
        if image.digest.is_some() {
            return Err(format!("{text:?}: a pin names a tag, not a digest"));
        }
        Ok(PinTarget {
            pattern: RepoPattern::parse(&image.to_string())?,
            image: Some(image),
        })
    }
}

impl fmt::Display for PinTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pattern.fmt(f)
    }
}

impl PinTarget {
    /// The config pattern that pins this target too: one equal to it, or, for an image, one
    /// that matches its tag.
    fn pinned_by<'a>(&self, config: &'a [RepoPattern]) -> Option<&'a RepoPattern> {
        config.iter().find(|p| {
            **p == self.pattern
                || self.image.as_ref().is_some_and(|image| {
                    let tag = image.tag.as_deref().unwrap_or("latest");
                    p.matches_tag(&image.registry, &image.repository, tag)
                })
        })
    }
}

/// Adds the targets to the pins file, printing each.
pub fn pin(root: &Path, targets: &[PinTarget], out: &mut dyn Write) -> Result<Outcome, OpsError> {
    let mut lines = read_lines(root)?;
    for target in targets {
        let line = target.to_string();
        if lines.contains(&line) {
            writeln!(out, "{line} was pinned already")?;
        } else {
            writeln!(
                out,
                "pinned {line} (a running hoard keeps it from its next reconcile)"
            )?;
            lines.push(line);
        }
    }
    write_lines(root, &lines)?;
    Ok(Outcome::Done)
}

/// Takes the targets out of the pins file. One that a `cache.pin` pattern of the config pins,
/// or that was not pinned, is said so on `err` and makes the outcome [`Outcome::Trouble`].
pub fn unpin(
    root: &Path,
    config: &[RepoPattern],
    targets: &[PinTarget],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, OpsError> {
    let mut lines = read_lines(root)?;
    let mut trouble = false;
    for target in targets {
        let line = target.to_string();
        let was_pinned = lines.contains(&line);
        lines.retain(|l| *l != line);
        if let Some(pattern) = target.pinned_by(config) {
            writeln!(
                err,
                "hoard: {line} is pinned by cache.pin \"{pattern}\" in the config; unpin cannot undo that"
            )?;
            trouble = true;
        } else if was_pinned {
            writeln!(out, "unpinned {line}")?;
        } else {
            writeln!(err, "hoard: {line} is not pinned")?;
            trouble = true;
        }
    }
    write_lines(root, &lines)?;
    Ok(Outcome::from_trouble(trouble))
}

/// The lines of the pins file, in their canonical form; lines that are not a pattern are kept
/// as they are. No file: none.
fn read_lines(root: &Path) -> Result<Vec<String>, OpsError> {
    let path = root.join(PINS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| RepoPattern::parse(l).map_or_else(|_| l.to_owned(), |p| p.to_string()))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error("read", &path)(e)),
    }
}

/// Rewrites the pins file whole: a temp file in the cache folder, renamed over it.
fn write_lines(root: &Path, lines: &[String]) -> Result<(), OpsError> {
    let path = root.join(PINS_FILE);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut file =
        tempfile::NamedTempFile::new_in(root).map_err(io_error("create a file in", root))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .map_err(io_error("write", file.path()))?;
    file.persist(&path)
        .map_err(|e| io_error("write", &path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Result<String, String> {
        text.parse::<PinTarget>().map(|t| t.to_string())
    }

    #[test]
    fn images_resolve_as_docker_does_and_stars_make_patterns() {
        let latest = target("alpine");
        assert_eq!(
            latest.as_deref(),
            Ok("registry-1.docker.io/library/alpine:latest")
        );
        assert_eq!(
            target("gcr.io/team/*:v*").as_deref(),
            Ok("gcr.io/team/*:v*")
        );
        assert_eq!(
            target("docker.io/**").as_deref(),
            Ok("registry-1.docker.io/**")
        );
        let digest = format!("gcr.io/a@sha256:{}", "0".repeat(64));
        assert!(target(&digest).is_err_and(|e| e.contains("not a digest")));
        assert!(target("gcr.io/a*").is_err());
    }

    #[test]
    fn a_config_pattern_pins_the_images_it_matches() {
        let config =
            [RepoPattern::parse("docker.io/library/*:3.*").unwrap_or_else(|e| panic!("{e}"))];
        let pinned = |text: &str| {
            text.parse::<PinTarget>()
                .map(|t| t.pinned_by(&config).is_some())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(pinned("alpine:3.20"));
        assert!(!pinned("alpine"));
        assert!(pinned("docker.io/library/*:3.*"));
        assert!(!pinned("docker.io/library/*"));
    }
}

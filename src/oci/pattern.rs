//! Repository patterns, the one syntax `access.grants` (and the cache policy) match images with:
//! `registry/repo-path`, the registry written as hoard keys it (`docker.io` is Docker Hub's
//! `registry-1.docker.io`, port 443 dropped), `*` one path segment, `**` any number of them
//! (none included). `gcr.io/team/*` matches `gcr.io/team/app`, not `gcr.io/team/app/sub`;
//! `docker.io/**` matches every Docker Hub repository.

use super::registry_key;

/// A parsed repository pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    /// The registry key, or `*` for any registry.
    registry: String,
    /// The repository path's segments: names, `*` or `**`.
    path: Vec<String>,
}

impl RepoPattern {
    /// Parses `registry/repo-path`; the error says why not.
    pub fn parse(text: &str) -> Result<RepoPattern, String> {
        let (registry, path) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not registry/repository (e.g. gcr.io/team/*)"))?;
        let registry = match registry {
            "*" => "*".to_owned(),
            _ => registry_key(registry)
                .ok_or_else(|| format!("{text:?}: {registry:?} is not a registry host"))?,
        };
        let path: Vec<String> = path.split('/').map(str::to_owned).collect();
        for segment in &path {
            let valid = segment == "*"
                || segment == "**"
                || (!segment.is_empty()
                    && !segment.contains('*')
                    && super::valid_repository(segment));
            if !valid {
                return Err(format!(
                    "{text:?}: {segment:?} is not a repository name, * or **"
                ));
            }
        }
        Ok(RepoPattern { registry, path })
    }

    /// Whether the repository `repo` of the registry `registry` (a registry key, as hoard keys
    /// its registries) matches.
    pub fn matches(&self, registry: &str, repo: &str) -> bool {
        if self.registry != "*" && self.registry != registry {
            return false;
        }
        let segments: Vec<&str> = repo.split('/').collect();
        matches_from(&self.path, &segments)
    }
}

/// Whether `pattern` matches all of `segments`.
fn matches_from(pattern: &[String], segments: &[&str]) -> bool {
    match pattern.split_first() {
        None => segments.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=segments.len()).any(|skip| matches_from(rest, &segments[skip..]))
        }
        Some((first, rest)) => match segments.split_first() {
            Some((segment, others)) => {
                (first == "*" || first == segment) && matches_from(rest, others)
            }
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> RepoPattern {
        RepoPattern::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn one_star_is_one_segment_and_two_are_any_depth() {
        let team = pattern("gcr.io/team/*");
        assert!(team.matches("gcr.io", "team/app"));
        assert!(!team.matches("gcr.io", "team/app/sub"));
        assert!(!team.matches("gcr.io", "team"));
        assert!(!team.matches("quay.io", "team/app"));
        let deep = pattern("gcr.io/team/**");
        assert!(deep.matches("gcr.io", "team/app/sub"));
        assert!(deep.matches("gcr.io", "team"));
        let hub = pattern("docker.io/library/*");
        assert!(hub.matches("registry-1.docker.io", "library/alpine"));
        assert!(pattern("*/**").matches("r.test:5000", "a/b"));
        assert!(pattern("registry.test:443/a").matches("registry.test", "a"));
        for bad in [
            "gcr.io",
            "gcr.io/",
            "gcr.io/Team",
            "gcr.io/a*",
            "bad host/a",
            "gcr.io/a//b",
        ] {
            assert!(RepoPattern::parse(bad).is_err(), "{bad}");
        }
    }
}

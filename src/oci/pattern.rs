//! Repository patterns, the one syntax `access.grants` (and the cache policy) match images with:
//! `registry/repo-path`, the registry written as hoard keys it (`docker.io` is Docker Hub's
//! `registry-1.docker.io`, port 443 dropped), `*` one path segment, `**` any number of them
//! (none included). `gcr.io/team/*` matches `gcr.io/team/app`, not `gcr.io/team/app/sub`;
//! `docker.io/**` matches every Docker Hub repository. Where tags matter (the cache policy), a
//! pattern may end in `:tag`, its `*` matching any run of characters within a tag:
//! `docker.io/library/*:1.*` matches `library/alpine:1.21`, not `library/alpine:latest`.

use super::registry_key;

/// A parsed repository pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    /// The registry key, or `*` for any registry.
    registry: String,
    /// The repository path's segments: names, `*` or `**`.
    path: Vec<String>,
    /// The tag pattern after `:`, if any: tag characters and `*`.
    tag: Option<String>,
}

impl RepoPattern {
    /// Parses `registry/repo-path[:tag]`; the error says why not.
    pub fn parse(text: &str) -> Result<RepoPattern, String> {
        // A tag can only follow the last `/` (a registry's port comes before the first one).
        let last_slash = text.rfind('/').unwrap_or(0);
        let (text_without_tag, tag) = match text[last_slash..].split_once(':') {
            Some((_, tag)) => (&text[..text.len() - tag.len() - 1], Some(tag)),
            None => (text, None),
        };
        if let Some(tag) = tag
            && !valid_tag_pattern(tag)
        {
            return Err(format!(
                "{text:?}: {tag:?} is not a tag pattern (tag characters and *)"
            ));
        }
        let (registry, path) = text_without_tag
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
        Ok(RepoPattern {
            registry,
            path,
            tag: tag.map(str::to_owned),
        })
    }

    /// Whether the pattern has a `:tag` part.
    pub fn has_tag(&self) -> bool {
        self.tag.is_some()
    }

    /// Whether the repository `repo` of the registry `registry` (a registry key, as hoard keys
    /// its registries) matches; a `:tag` part is not looked at.
    pub fn matches(&self, registry: &str, repo: &str) -> bool {
        if self.registry != "*" && self.registry != registry {
            return false;
        }
        let segments: Vec<&str> = repo.split('/').collect();
        matches_from(&self.path, &segments)
    }

    /// Whether `repo:tag` of `registry` matches: the repository, and the tag if the pattern has
    /// a tag part (a pattern without one matches every tag).
    pub fn matches_tag(&self, registry: &str, repo: &str, tag: &str) -> bool {
        self.matches(registry, repo)
            && self
                .tag
                .as_deref()
                .is_none_or(|pattern| glob(pattern.as_bytes(), tag.as_bytes()))
    }
}

/// A tag pattern: what a tag may hold (letters, digits, `_`, `.`, `-`), and `*`.
fn valid_tag_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 128
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-*".contains(&b))
}

/// Whether `pattern` (`*` any run of bytes) matches all of `text`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((first, rest)) => text
            .split_first()
            .is_some_and(|(byte, others)| byte == first && glob(rest, others)),
    }
}

impl std::fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.path.join("/"))?;
        match &self.tag {
            Some(tag) => write!(f, ":{tag}"),
            None => Ok(()),
        }
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
            "gcr.io/a:",
            "gcr.io/a:1/2",
            "gcr.io/a:v 1",
            "gcr.io/a:b:c",
            "gcr.io:tag",
        ] {
            assert!(RepoPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tag_part_matches_tags_with_star_within_one_tag() {
        let minor = pattern("docker.io/library/*:1.*");
        assert!(minor.has_tag());
        assert!(minor.matches_tag("registry-1.docker.io", "library/alpine", "1.21"));
        assert!(minor.matches_tag("registry-1.docker.io", "library/alpine", "1."));
        assert!(!minor.matches_tag("registry-1.docker.io", "library/alpine", "latest"));
        assert!(!minor.matches_tag("registry-1.docker.io", "library/alpine", "v1.2"));
        assert!(!minor.matches_tag("registry-1.docker.io", "other/alpine", "1.2"));
        // The repository alone still matches: grants look at repositories only.
        assert!(minor.matches("registry-1.docker.io", "library/alpine"));
        let latest = pattern("gcr.io/distroless/**:latest");
        assert!(latest.matches_tag("gcr.io", "distroless/static/debian12", "latest"));
        assert!(!latest.matches_tag("gcr.io", "distroless/static", "latest-amd64"));
        assert!(pattern("*/**:*-rc*").matches_tag("r.test", "a", "2.0-rc1"));
        // A port is not a tag; a tag after it is.
        let ported = pattern("r.test:5000/a");
        assert!(!ported.has_tag());
        assert!(ported.matches_tag("r.test:5000", "a", "anything"));
        let ported_tag = pattern("r.test:5000/a:v*");
        assert!(ported_tag.matches_tag("r.test:5000", "a", "v2"));
        assert!(!ported_tag.matches_tag("r.test:5000", "a", "2"));
        assert_eq!(ported_tag.to_string(), "r.test:5000/a:v*");
        assert_eq!(
            pattern("docker.io/library/*:1.*").to_string(),
            "registry-1.docker.io/library/*:1.*"
        );
    }
}

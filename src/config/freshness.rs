//! `[[cache.freshness]]`: rules that set how long a tag is trusted by repository and tag
//! pattern (first match wins), or mark its tags immutable; `cache.tag_ttl` is the default.

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::units::parse_duration;
use crate::oci::RepoPattern;

/// One `[[cache.freshness]]` entry as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessSection {
    /// `registry/repo-path[:tag]`, as `access.grants` write repositories.
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    pub tag_ttl: Option<String>,
    #[serde(default)]
    pub immutable: bool,
}

/// A freshness rule, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshnessRule {
    /// The tags it applies to.
    pub pattern: RepoPattern,
    /// How long they are trusted.
    pub ttl: TagTtl,
}

/// How long a tag → digest mapping is served without asking the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagTtl {
    /// For this long after it was fetched.
    For(Duration),
    /// For ever: once fetched, the tag is never revalidated.
    Immutable,
}

impl TagTtl {
    /// `5m`, `immutable`: as the status page and `hoard cache ls` show it.
    pub fn as_text(&self) -> String {
        match self {
            TagTtl::Immutable => "immutable".to_owned(),
            TagTtl::For(ttl) => duration_text(*ttl),
        }
    }
}

/// The freshness of one tag: the rule that decided it (`None`: the global `cache.tag_ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagFreshness<'a> {
    pub rule: Option<&'a FreshnessRule>,
    pub ttl: TagTtl,
}

/// The freshness of `repo:tag` of `registry` (a registry key): the first rule that matches, else
/// `default`. `tag` is `None` for a referrers list, which changes when anyone attaches a
/// signature to an image, immutable or not: only rules without a `:tag` part that set a
/// `tag_ttl` apply to it.
pub(super) fn tag_freshness<'a>(
    rules: &'a [FreshnessRule],
    default: Duration,
    registry: &str,
    repo: &str,
    tag: Option<&str>,
) -> TagFreshness<'a> {
    let applies = |rule: &&FreshnessRule| match tag {
        Some(tag) => rule.pattern.matches_tag(registry, repo, tag),
        None => {
            !rule.pattern.has_tag()
                && rule.ttl != TagTtl::Immutable
                && rule.pattern.matches(registry, repo)
        }
    };
    match rules.iter().find(applies) {
        Some(rule) => TagFreshness {
            rule: Some(rule),
            ttl: rule.ttl,
        },
        None => TagFreshness {
            rule: None,
            ttl: TagTtl::For(default),
        },
    }
}

/// `[[cache.freshness]]`, checked: each entry has a `match` and exactly one of `tag_ttl` and
/// `immutable = true`.
pub(super) fn rules(sections: Vec<FreshnessSection>) -> Result<Vec<FreshnessRule>, ConfigError> {
    sections
        .into_iter()
        .enumerate()
        .map(|(index, section)| {
            let invalid = |message: String| ConfigError::Invalid {
                key: "cache.freshness",
                message: format!("entry {}: {message}", index + 1),
            };
            let text = section
                .pattern
                .ok_or_else(|| invalid("needs match = \"registry/repository[:tag]\"".into()))?;
            let pattern = RepoPattern::parse(&text).map_err(&invalid)?;
            let ttl = match (section.tag_ttl, section.immutable) {
                (Some(_), true) => {
                    return Err(invalid(format!(
                        "{text:?} sets both tag_ttl and immutable; an immutable tag has no TTL"
                    )));
                }
                (None, false) => {
                    return Err(invalid(format!(
                        "{text:?} sets neither tag_ttl nor immutable = true"
                    )));
                }
                (None, true) => TagTtl::Immutable,
                (Some(ttl), false) => {
                    TagTtl::For(parse_duration(&ttl).map_err(|e| invalid(format!("tag_ttl: {e}")))?)
                }
            };
            Ok(FreshnessRule { pattern, ttl })
        })
        .collect()
}

/// A duration in the largest unit `parse_duration` reads that writes it whole: `5m`, `90s`.
fn duration_text(duration: Duration) -> String {
    let ms = duration.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (size, unit) in units {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(pattern: &str, tag_ttl: Option<&str>, immutable: bool) -> FreshnessSection {
        FreshnessSection {
            pattern: Some(pattern.to_owned()),
            tag_ttl: tag_ttl.map(str::to_owned),
            immutable,
        }
    }

    #[test]
    fn the_first_matching_rule_decides_and_the_default_is_the_rest() {
        let rules = rules(vec![
            section("docker.io/library/*:1.*", Some("5m"), false),
            section("gcr.io/distroless/**:latest", None, true),
            section("docker.io/library/*", Some("1h"), false),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let hub = "registry-1.docker.io";
        let default = Duration::from_secs(600);
        let of = |registry, repo, tag| tag_freshness(&rules, default, registry, repo, tag);
        let minor = of(hub, "library/alpine", Some("1.21"));
        assert_eq!(minor.ttl, TagTtl::For(Duration::from_secs(300)));
        assert_eq!(minor.rule, Some(&rules[0]));
        let latest = of(hub, "library/alpine", Some("latest"));
        assert_eq!(latest.ttl, TagTtl::For(Duration::from_secs(3600)));
        assert_eq!(latest.rule, Some(&rules[2]));
        let distroless = of("gcr.io", "distroless/static", Some("latest"));
        assert_eq!(distroless.ttl, TagTtl::Immutable);
        let other = of("quay.io", "a/b", Some("latest"));
        assert_eq!((other.rule, other.ttl), (None, TagTtl::For(default)));
        // Referrers: no tag part, no immutability.
        let referrers = of(hub, "library/alpine", None);
        assert_eq!(referrers.rule, Some(&rules[2]));
        assert_eq!(of("gcr.io", "distroless/static", None).rule, None);
    }

    #[test]
    fn a_rule_sets_exactly_one_of_tag_ttl_and_immutable() {
        let error = |sections| match rules(sections) {
            Ok(rules) => panic!("accepted: {rules:?}"),
            Err(e) => e.to_string(),
        };
        assert!(error(vec![section("gcr.io/a", Some("5m"), true)]).contains("both"));
        assert!(error(vec![section("gcr.io/a", None, false)]).contains("neither"));
        assert!(error(vec![section("gcr.io/a", Some("5"), false)]).contains("tag_ttl"));
        assert!(error(vec![section("gcr.io", Some("5m"), false)]).contains("registry/"));
        let missing = FreshnessSection {
            tag_ttl: Some("5m".into()),
            ..FreshnessSection::default()
        };
        assert!(error(vec![missing]).contains("needs match"));
    }

    #[test]
    fn durations_are_written_in_their_largest_whole_unit() {
        let text = |ms| duration_text(Duration::from_millis(ms));
        assert_eq!(text(300_000), "5m");
        assert_eq!(text(90_000), "90s");
        assert_eq!(text(86_400_000), "1d");
        assert_eq!(text(250), "250ms");
        assert_eq!(text(0), "0ms");
    }
}

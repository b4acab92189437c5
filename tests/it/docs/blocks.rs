//! Reading the Markdown of README.md and docs/*.md: fenced blocks with their info strings,
//! indented code (which escapes every check, so it is refused), headings and their GitHub
//! anchors, and relative links.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The repository's root.
pub(super) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A page of the documentation: its path from the root, and its text.
pub(super) struct Doc {
    pub path: String,
    pub text: String,
}

/// README.md and every docs/*.md, in a fixed order.
pub(super) fn docs() -> Vec<Doc> {
    let mut paths = vec!["README.md".to_owned()];
    let mut pages: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    paths.extend(pages);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(root().join(&path)).unwrap();
            Doc { path, text }
        })
        .collect()
}

/// How a fenced block is checked, from its info string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    /// ```` ```sh ````: run in a sandbox.
    Run,
    /// ```` ```sh host ````: its `hoard` commands parsed, its hoard URLs fetched.
    Host,
    /// ```` ```sh cluster ````: its `-k` folders rendered, its `-f` files present.
    Cluster,
    /// ```` ```toml ````: a hoard config, resolved.
    HoardToml,
    /// ```` ```toml other ````: TOML that is not hoard's.
    OtherToml,
    /// ```` ```json ````.
    Json,
    /// ```` ```ini ````, ```` ```yaml ````, ```` ```text ```` or none: diagrams and output.
    Unchecked,
}

impl Kind {
    /// The kind an info string names; `None` for any other.
    fn of(info: &str) -> Option<Kind> {
        let words: Vec<&str> = info.split_whitespace().collect();
        Some(match words.as_slice() {
            ["sh"] => Kind::Run,
            ["sh", "host"] => Kind::Host,
            ["sh", "cluster"] => Kind::Cluster,
            ["toml"] => Kind::HoardToml,
            ["toml", "other"] => Kind::OtherToml,
            ["json"] => Kind::Json,
            [] | ["ini"] | ["yaml"] | ["text"] => Kind::Unchecked,
            _ => return None,
        })
    }
}

/// A fenced code block.
pub(super) struct Block {
    /// `file:line` of its opening fence.
    pub at: String,
    pub info: String,
    /// `None`: an info string the docs test does not know.
    pub kind: Option<Kind>,
    /// Its lines, without the fence's indentation.
    pub body: String,
}

/// What a page holds for the checks.
#[derive(Default)]
pub(super) struct Scan {
    pub blocks: Vec<Block>,
    /// `file:line` of each indented code block, and of each fence never closed.
    pub malformed: Vec<String>,
    /// The anchors of its headings, as GitHub makes them.
    pub anchors: HashSet<String>,
    /// `(file:line, target)` of each link outside code.
    pub links: Vec<(String, String)>,
}

/// An opening fence: its indentation, its backticks, and its info string. A line whose info
/// string holds a backtick is inline code, not a fence (as in CommonMark).
fn fence(line: &str) -> Option<(usize, usize, &str)> {
    let indent = line.len() - line.trim_start().len();
    let rest = &line[indent..];
    let ticks = rest.len() - rest.trim_start_matches('`').len();
    let info = rest[ticks..].trim();
    (ticks >= 3 && !info.contains('`')).then_some((indent, ticks, info))
}

/// A list item's marker (`-`, `*`, `+`, `1.`): the indentation of the item's content.
fn list_content_indent(line: &str) -> Option<usize> {
    let indent = line.len() - line.trim_start().len();
    let rest = &line[indent..];
    let marker = if rest.starts_with(['-', '*', '+']) {
        1
    } else {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || !rest[digits..].starts_with(['.', ')']) {
            return None;
        }
        digits + 1
    };
    let after = &rest[marker..];
    let spaces = after.len() - after.trim_start_matches(' ').len();
    (spaces >= 1).then_some(indent + marker + spaces)
}

/// Scans a page: blocks, indented code, headings, links.
pub(super) fn scan(doc: &Doc) -> Scan {
    let mut scan = Scan::default();
    let mut seen_slugs: Vec<String> = Vec::new();
    // The content indentation of the list items the current line may belong to.
    let mut lists: Vec<usize> = Vec::new();
    let mut after_blank = true;
    let mut lines = doc.text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let at = format!("{}:{}", doc.path, n + 1);
        let indent = line.len() - line.trim_start().len();
        if line.trim().is_empty() {
            after_blank = true;
            continue;
        }
        if let Some((fence_indent, ticks, info)) = fence(line) {
            let mut body = String::new();
            let mut closed = false;
            for (_, inner) in lines.by_ref() {
                let trimmed = inner.trim();
                if trimmed.len() >= ticks && trimmed.chars().all(|c| c == '`') {
                    closed = true;
                    break;
                }
                let strip = inner.len() - inner.trim_start().len();
                body.push_str(&inner[strip.min(fence_indent)..]);
                body.push('\n');
            }
            if !closed {
                scan.malformed
                    .push(format!("{at}: a fence that is never closed"));
            }
            scan.blocks.push(Block {
                at,
                info: info.to_owned(),
                kind: Kind::of(info),
                body,
            });
            after_blank = false;
            continue;
        }
        if after_blank {
            while lists.last().is_some_and(|&content| indent < content) {
                lists.pop();
            }
            let content = lists.last().copied().unwrap_or(0);
            if indent >= content + 4 {
                scan.malformed.push(format!(
                    "{at}: an indented code block (use a fenced block with an info string)"
                ));
            }
        }
        if let Some(content) = list_content_indent(line) {
            while lists.last().is_some_and(|&c| indent < c) {
                lists.pop();
            }
            lists.push(content);
        }
        if indent == 0 && line.starts_with('#') {
            let slug = slug(line.trim_start_matches('#'));
            let count = seen_slugs.iter().filter(|s| **s == slug).count();
            seen_slugs.push(slug.clone());
            scan.anchors.insert(match count {
                0 => slug,
                n => format!("{slug}-{n}"),
            });
        }
        scan.links
            .extend(links(line).into_iter().map(|target| (at.clone(), target)));
        after_blank = false;
    }
    scan
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces made hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The targets of the inline links `[text](target)` on a line, outside inline code.
fn links(line: &str) -> Vec<String> {
    let prose = without_code_spans(line);
    let mut found = Vec::new();
    let mut rest = prose.as_str();
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        if let Some(end) = rest.find(')') {
            found.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    found
}

/// A line without its code spans (a run of backticks up to the next run of as many), so that
/// `](` in code is not taken for a link.
fn without_code_spans(line: &str) -> String {
    let mut prose = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        prose.push_str(&rest[..start]);
        let after = &rest[start..];
        let ticks = after.len() - after.trim_start_matches('`').len();
        let fence = &after[..ticks];
        let inner = &after[ticks..];
        // The closing run: as many backticks, not part of a longer run.
        let close = inner
            .match_indices(fence)
            .find(|(i, _)| !inner[..*i].ends_with('`') && !inner[i + ticks..].starts_with('`'));
        match close {
            Some((i, _)) => rest = &inner[i + ticks..],
            None => {
                prose.push_str(fence);
                rest = inner;
            }
        }
    }
    prose.push_str(rest);
    prose
}

/// Where a relative link from the page at `from` leads: the file, and the anchor if any.
/// `None` for a link that leaves the repository (a URL).
pub(super) fn resolve_link(from: &str, target: &str) -> Option<(PathBuf, Option<String>)> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, anchor) = match target.split_once('#') {
        Some((file, anchor)) => (file, Some(anchor.to_owned())),
        None => (target, None),
    };
    let base = Path::new(from).parent().unwrap();
    let path = if file.is_empty() {
        PathBuf::from(from)
    } else {
        let mut path = PathBuf::new();
        for part in base.join(file).components() {
            match part {
                std::path::Component::ParentDir => {
                    path.pop();
                }
                std::path::Component::CurDir => {}
                other => path.push(other),
            }
        }
        path
    };
    Some((path, anchor))
}

#[test]
fn anchors_are_githubs() {
    assert_eq!(
        slug(" The mirror flavour: `?mode=mirror`"),
        "the-mirror-flavour-modemirror"
    );
    assert_eq!(
        slug(" Check the CA before trusting it: `--ca-sha256`"),
        "check-the-ca-before-trusting-it---ca-sha256"
    );
    assert_eq!(
        slug("## Shared S3 tier".trim_start_matches('#')),
        "shared-s3-tier"
    );
}

#[test]
fn links_in_code_spans_are_no_links() {
    assert_eq!(
        links("(```` ```sh ````, `a](b)`): [x](y.md#z) ``c](d``"),
        ["y.md#z"]
    );
}

#[test]
fn indented_code_is_found_in_and_out_of_lists() {
    let doc = Doc {
        path: "x.md".to_owned(),
        text: "text\n\n    code\n\n- item\n\n  more of the item\n\n      code in the item\n\n  - sub\n\n    sub text\n\nend\n".to_owned(),
    };
    let found = scan(&doc).malformed;
    assert_eq!(
        found,
        [
            "x.md:3: an indented code block (use a fenced block with an info string)",
            "x.md:9: an indented code block (use a fenced block with an info string)",
        ]
    );
}

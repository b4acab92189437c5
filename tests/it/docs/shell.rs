//! Just enough of the shell to read the docs' blocks without running them: the commands of a
//! block (continuations joined, comments dropped, split at pipes and lists), their words, the
//! `hoard` command lines among them, and the URLs they name.

/// The words of each simple command in `script`, quotes removed; a redirection ends a command's
/// words.
pub(super) fn commands(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    let mut commands = Vec::new();
    for line in joined.lines() {
        let mut words: Vec<String> = Vec::new();
        let mut word: Option<String> = None;
        let mut quote: Option<char> = None;
        let mut redirected = false;
        let mut chars = line.chars().peekable();
        let mut end_command =
            |words: &mut Vec<String>, word: &mut Option<String>, redirected: &mut bool| {
                words.extend(word.take());
                if !words.is_empty() {
                    commands.push(std::mem::take(words));
                }
                *redirected = false;
            };
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.get_or_insert_with(String::new).push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    word.get_or_insert_with(String::new);
                }
                (None, '#') if word.is_none() => break,
                (None, '|' | ';' | '&') => {
                    if c != ';' && chars.peek() == Some(&c) {
                        chars.next();
                    }
                    end_command(&mut words, &mut word, &mut redirected);
                }
                (None, '>' | '<') => {
                    // `2>`: the descriptor is no word of the command.
                    if word
                        .as_deref()
                        .is_some_and(|w| w.chars().all(|d| d.is_ascii_digit()))
                    {
                        word = None;
                    }
                    if !redirected {
                        words.extend(word.take());
                    }
                    word = None;
                    redirected = true;
                }
                (None, c) if c.is_whitespace() => {
                    if let Some(w) = word.take()
                        && !redirected
                    {
                        words.push(w);
                    }
                }
                (None, c) => word.get_or_insert_with(String::new).push(c),
            }
        }
        if redirected {
            word = None;
        }
        end_command(&mut words, &mut word, &mut redirected);
    }
    commands
}

/// The arguments of each `hoard` command: after `sudo`, variable assignments, and `docker exec
/// NAME`.
pub(super) fn hoard_commands(script: &str) -> Vec<Vec<String>> {
    commands(script)
        .into_iter()
        .filter_map(|words| {
            let mut rest = words.as_slice();
            loop {
                match rest {
                    [first, tail @ ..] if first == "sudo" || is_assignment(first) => rest = tail,
                    [docker, exec, tail @ ..] if docker == "docker" && exec == "exec" => {
                        let flags = tail.iter().take_while(|w| w.starts_with('-')).count();
                        rest = tail.get(flags + 1..).unwrap_or_default();
                    }
                    _ => break,
                }
            }
            match rest {
                [hoard, args @ ..] if hoard == "hoard" => Some(args.to_vec()),
                _ => None,
            }
        })
        .collect()
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Each `http://host:port/path` in `text` whose port is one of `ports`: the port and the path
/// with its query. URLs without a path are left out.
pub(super) fn urls(text: &str, ports: &[u16]) -> Vec<(u16, String)> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("http://") {
        let url = &text[i + "http://".len()..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '|' | ')' | '`'))
            .unwrap_or(url.len());
        let url = &url[..end];
        let Some(slash) = url.find('/') else {
            continue;
        };
        let authority = &url[..slash];
        let Some(port) = authority
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
        else {
            continue;
        };
        if ports.contains(&port) {
            found.push((port, url[slash..].to_owned()));
        }
    }
    found
}

#[test]
fn commands_are_split_as_the_shell_splits_them() {
    let script = "curl -fsSL http://hoard:3128/setup/docker | sudo sh -s -- --x  # comment\n\
                  hoard completions bash | sudo tee /x >/dev/null\n\
                  sudo systemctl daemon-reload && sudo hoard man --out-dir '/a b'\n\
                  docker exec -it hoard hoard cache stats 2>&1\n\
                  HOARD_CONFIG=/c hoard cache ls \\\n  --json\n";
    assert_eq!(
        hoard_commands(script),
        [
            vec!["completions", "bash"],
            vec!["man", "--out-dir", "/a b"],
            vec!["cache", "stats"],
            vec!["cache", "ls", "--json"],
        ]
    );
    assert_eq!(urls(script, &[3128]), [(3128, "/setup/docker".to_owned())]);
    assert_eq!(
        urls(
            "'http://a:3128/setup/x?mode=mirror' http://b:3128 http://c:80/x",
            &[3128]
        ),
        [(3128, "/setup/x?mode=mirror".to_owned())]
    );
}

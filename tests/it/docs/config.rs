//! The docs' TOML: hoard configs resolved by hoard's own parser (with fixtures for the files a
//! config names), other TOML parsed; and config.toml.example against the keys of the
//! `*Section` structs in src/config/.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hoard::config::{Config, FileConfig, Overrides};

use super::blocks::root;

/// The tables of hoard's config file.
pub(super) const HOARD_TABLES: &[&str] = &[
    "proxy",
    "ca",
    "cache",
    "intercept",
    "upstream",
    "admin",
    "log",
    "mirror",
    "fleet",
    "store",
    "access",
];

/// Resolves `text` as a hoard config, the files it names replaced by fixtures in `dir`: an
/// htpasswd file with every user its `lend_to` and grants name (and `alice`), a groups file
/// with each of their `@group`s, a fleet secret, S3 keys, passwords.
pub(super) fn resolve_hoard_config(text: &str, dir: &Path) -> Result<Config, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut users = BTreeSet::from(["alice".to_owned()]);
    let mut groups = BTreeSet::new();
    let named = |table: &toml::Table, path: &[&str], key: &str| -> Vec<String> {
        let mut values: Vec<&toml::Value> = vec![];
        if let Some(toml::Value::Array(items)) = dig(table, path) {
            values.extend(items.iter());
        }
        values
            .iter()
            .filter_map(|item| item.get(key)?.as_array())
            .flatten()
            .filter_map(|name| Some(name.as_str()?.to_owned()))
            .collect()
    };
    let names = named(&table, &["upstream", "credentials"], "lend_to")
        .into_iter()
        .chain(named(&table, &["access", "grants"], "users"));
    for name in names {
        match name.strip_prefix('@') {
            Some(group) => {
                groups.insert(group.to_owned());
            }
            None if name != "*" => {
                users.insert(name);
            }
            None => {}
        }
    }
    let fixture = |name: &str, content: String| -> toml::Value {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        toml::Value::String(path.display().to_string())
    };
    let hash = bcrypt::hash("docs", 4).unwrap();
    let htpasswd: String = users.iter().map(|u| format!("{u}:{hash}\n")).collect();
    let all_users = users.iter().cloned().collect::<Vec<_>>().join(" ");
    let group_lines: String = groups
        .iter()
        .map(|g| format!("{g}: {all_users}\n"))
        .collect();
    let files: [(&[&str], &str, toml::Value); 5] = [
        (&["proxy"], "auth_file", fixture("htpasswd", htpasswd)),
        (&["proxy"], "groups_file", fixture("groups", group_lines)),
        (
            &["fleet"],
            "secret_file",
            fixture("fleet.secret", "ab".repeat(32)),
        ),
        (
            &["store", "s3"],
            "access_key_id_file",
            fixture("s3-id", "id\n".into()),
        ),
        (
            &["store", "s3"],
            "secret_access_key_file",
            fixture("s3-secret", "s\n".into()),
        ),
    ];
    for (path, key, value) in files {
        if let Some(toml::Value::Table(section)) = dig_mut(&mut table, path)
            && section.contains_key(key)
        {
            section.insert(key.to_owned(), value);
        }
    }
    let password = fixture("password", "secret\n".into());
    if let Some(toml::Value::Table(upstream)) = table.get_mut("upstream")
        && let Some(toml::Value::Array(credentials)) = upstream.get_mut("credentials")
    {
        for credential in credentials.iter_mut().filter_map(|c| c.as_table_mut()) {
            if credential.contains_key("password_file") {
                credential.insert("password_file".to_owned(), password.clone());
            }
        }
    }
    let file: FileConfig = toml::from_str(&toml::to_string(&table).map_err(|e| e.to_string())?)
        .map_err(|e| format!("not a hoard config: {}", e.message()))?;
    Config::resolve(file, Overrides::default()).map_err(|e| e.to_string())
}

fn dig<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut table = table;
    for key in parents {
        table = table.get(*key)?.as_table()?;
    }
    table.get(*last)
}

fn dig_mut<'a>(table: &'a mut toml::Table, path: &[&str]) -> Option<&'a mut toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut table = table;
    for key in parents {
        table = table.get_mut(*key)?.as_table_mut()?;
    }
    table.get_mut(*last)
}

/// A `#[derive(Deserialize)]` struct of src/config/: its keys (serde's names) with the type
/// each field is written in.
type Structs = BTreeMap<String, Vec<(String, String)>>;

/// The `Deserialize` structs of src/config/*.rs, read from the source text.
fn deserialize_structs() -> Structs {
    let mut structs = Structs::new();
    let dir = root().join("src/config");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if !(line.starts_with("#[derive(") && line.contains("Deserialize")) {
                continue;
            }
            let Some(header) = lines.by_ref().find(|l| !l.starts_with("#[")) else {
                break;
            };
            let Some(name) = header
                .strip_prefix("pub struct ")
                .and_then(|rest| rest.strip_suffix(" {"))
            else {
                continue; // an enum
            };
            let mut fields = Vec::new();
            let mut rename = None;
            for line in lines.by_ref().take_while(|l| *l != "}") {
                let line = line.trim();
                if let Some(attr) = line.strip_prefix("#[serde(rename = \"") {
                    rename = attr.split('"').next().map(str::to_owned);
                } else if let Some(field) = line.strip_prefix("pub ") {
                    let (field, ty) = field.split_once(": ").unwrap();
                    let key = rename.take().unwrap_or_else(|| field.to_owned());
                    fields.push((key, ty.trim_end_matches(',').to_owned()));
                }
            }
            structs.insert(name.to_owned(), fields);
        }
    }
    structs
}

/// The struct a field's type names, through `Option<…>` and `Vec<…>`.
fn inner_type(ty: &str) -> &str {
    let mut ty = ty;
    for wrapper in ["Option<", "Vec<"] {
        if let Some(inner) = ty.strip_prefix(wrapper) {
            ty = inner.strip_suffix('>').unwrap_or(inner);
        }
    }
    ty
}

/// Every `(table, key)` hoard's config accepts, from `FileConfig` down, and the sections met.
pub(super) fn accepted_keys() -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let structs = deserialize_structs();
    let mut keys = BTreeSet::new();
    let mut reached = BTreeSet::new();
    let mut stack = vec![(String::new(), "FileConfig".to_owned())];
    while let Some((table, name)) = stack.pop() {
        reached.insert(name.clone());
        for (key, ty) in &structs[&name] {
            let inner = inner_type(ty);
            if structs.contains_key(inner) {
                let path = if table.is_empty() {
                    key.clone()
                } else {
                    format!("{table}.{key}")
                };
                stack.push((path, inner.to_owned()));
            } else {
                keys.insert((table.clone(), key.clone()));
            }
        }
    }
    let sections: BTreeSet<String> = structs
        .keys()
        .filter(|name| name.ends_with("Section"))
        .cloned()
        .collect();
    let unreached: Vec<&String> = sections.difference(&reached).collect();
    assert!(
        unreached.is_empty(),
        "*Section structs of src/config/ not reached from FileConfig: {unreached:?}"
    );
    (keys, sections)
}

/// Every `(table, key)` config.toml.example names, as `key =` or `# key =`, under the last
/// `[table]`, `[[table]]` or commented header before it; with its line.
pub(super) fn example_keys() -> BTreeMap<(String, String), usize> {
    let text = std::fs::read_to_string(root().join("config.toml.example")).unwrap();
    let mut table = String::new();
    let mut keys = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('#').trim();
        let header = line.trim_start_matches('[').trim_end_matches(']');
        if line.starts_with('[')
            && !header.is_empty()
            && header
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.'))
        {
            table = header.to_owned();
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            keys.entry((table.clone(), key.to_owned())).or_insert(n + 1);
        }
    }
    keys
}

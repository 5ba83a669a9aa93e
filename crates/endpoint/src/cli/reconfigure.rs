//! `configure NAME` on an endpoint that has a config: only the settings given change;
//! the rest of `config.toml` (every other value, the comments, the order) stays as it
//! is, and what changed is printed (`python: python3 -> /venv/bin/python`). The file is
//! edited with `toml_edit`, checked whole as `start` would check it, and written only
//! when valid.
//!
//! Changing the provider (or importing from Globus Compute) changes which settings
//! apply: that takes `--force`, which writes the file anew from the defaults.

use std::collections::BTreeMap;
use std::path::Path;

use super::configure::{Configure, ca_file, register_now};
use crate::config::EndpointConfig;

/// Changes the settings `args` gives in the config at `path`, and says what changed.
pub fn reconfigure(args: &Configure, path: &Path) -> anyhow::Result<()> {
    let name = &args.name;
    if !args.changes_anything() {
        anyhow::bail!(
            "{} exists: give the settings to change (`ferry-endpoint configure {name} --python PATH`, `--set KEY=VALUE`, `--unset KEY`, ...), or --force to write it anew from the defaults",
            path.display()
        );
    }
    if args.provider.is_some() || args.from_globus.is_some() {
        anyhow::bail!(
            "{} exists, and a new provider (or a Globus Compute import) changes which settings apply: pass --force to write it anew (every setting not given goes back to its default)",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    // A config that does not load can still be mended here (`--set` the bad key).
    let before = EndpointConfig::parse(&text).ok();
    let mut edits = edits_of(args)?;
    let text_unset = remove(&text, &args.unset)?;
    let mut new_text = apply(&text_unset, &edits)?;
    let invalid = |e: String| {
        anyhow::anyhow!(
            "the change would make {} invalid: {e}; nothing was changed",
            path.display()
        )
    };
    let mut after = EndpointConfig::parse(&new_text).map_err(invalid)?;
    let dir = path.parent().expect("config.toml is in the endpoint's directory");
    let mut registered = None;
    if let Some(token) = &args.token {
        match register_now(dir, &after, name, token) {
            Ok(line) => registered = Some(line),
            Err(e) => {
                println!(
                    "could not register the endpoint now ({e:#}); its next start will, with the token kept in config.toml"
                );
                edits.push(("token".into(), token.as_str().into()));
                new_text = apply(&text_unset, &edits)?;
                after = EndpointConfig::parse(&new_text).map_err(invalid)?;
            }
        }
    }
    if new_text != text {
        crate::state::write_private(path, &new_text, 0o600)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    let changes = changes(before.as_ref(), &after);
    if changes.is_empty() {
        println!("endpoint {name}: nothing changed in {}", path.display());
    } else {
        println!("endpoint {name}: changed in {}:", path.display());
        for line in &changes {
            println!("  {line}");
        }
    }
    if let Some(line) = registered {
        println!("{line}");
    }
    let url_changed = before.as_ref().is_some_and(|b| b.url != after.url);
    if url_changed && args.token.is_none() {
        println!(
            "the endpoint's credential is from the service it was registered with: give --token to register with {}",
            after.url
        );
    }
    if !changes.is_empty() && super::running_pid(dir).is_some() {
        println!("endpoint {name} is running: `ferry-endpoint restart {name}` applies the change");
    }
    Ok(())
}

/// The flags given, as (key in config.toml, value) edits; `--set` last, so it wins.
fn edits_of(args: &Configure) -> anyhow::Result<Vec<(String, toml_edit::Value)>> {
    let mut edits: Vec<(String, toml_edit::Value)> = Vec::new();
    let mut put = |key: &str, value: toml_edit::Value| edits.push((key.to_owned(), value));
    if let Some(url) = &args.url {
        put("url", url.as_str().into());
    }
    if let Some(ca) = &args.ca_file {
        put("ca_file", ca_file(ca)?.display().to_string().into());
    }
    let count = |n: u32| toml_edit::Value::from(i64::from(n));
    if let Some(n) = args.nodes {
        put("provider.nodes_per_block", count(n));
    }
    if let Some(n) = args.workers {
        put("provider.max_workers_per_node", count(n));
    }
    if let Some(n) = args.max_blocks {
        put("provider.max_blocks", count(n));
    }
    for (key, flag) in [
        ("provider.python", &args.python),
        ("provider.partition", &args.partition),
        ("provider.queue", &args.queue),
        ("provider.account", &args.account),
    ] {
        if let Some(text) = flag {
            put(key, text.as_str().into());
        }
    }
    if let Some(walltime) = &args.walltime {
        put("provider.walltime", walltime.to_string().into());
    }
    edits.extend(args.set.iter().cloned());
    Ok(edits)
}

/// `--set KEY=VALUE`: the value as TOML (`0`, `true`, `["a"]`, `"text"`), else as text
/// (`--set address=login01`; also `01:00:00`, which TOML would read as a time of day).
pub fn parse_set(arg: &str) -> Result<(String, toml_edit::Value), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not KEY=VALUE"))?;
    let key = parse_key(key)?;
    let value = match value.trim().parse::<toml_edit::Value>() {
        Ok(v) if !v.is_datetime() => v,
        _ => toml_edit::Value::from(value),
    };
    Ok((key, value))
}

/// A dotted config.toml key (`prefetch`, `provider.init_blocks`), for `--set` and `--unset`.
pub fn parse_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    let well_formed = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !well_formed {
        return Err(format!(
            "{key:?} is not a config.toml key (`prefetch`, `provider.init_blocks`)"
        ));
    }
    Ok(key.to_owned())
}

/// `text` with each dotted key in `keys` commented out (`# prefetch = 16`), so its
/// default applies again and the comments around it stay; a key that is not there is
/// an error naming it (a typo should not pass for done).
pub fn remove(text: &str, keys: &[String]) -> anyhow::Result<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for key in keys {
        let (table, last) = key.rsplit_once('.').unwrap_or(("", key));
        let mut current = String::new();
        let line = lines.iter().position(|line| {
            let line = line.trim();
            if line.starts_with('[') {
                current = line.trim_matches(['[', ']']).trim().to_owned();
                return false;
            }
            current == table
                && line
                    .split_once('=')
                    .is_some_and(|(k, _)| k.trim().trim_matches('"') == last)
        });
        let Some(line) = line else {
            anyhow::bail!("--unset {key}: config.toml has no such setting; nothing was changed");
        };
        lines[line].insert_str(0, "# ");
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    // A value over several lines (an array) is not one line to comment out.
    let doc: toml_edit::DocumentMut = out.parse().map_err(|e| {
        anyhow::anyhow!("--unset: a value spans several lines ({e}); edit config.toml by hand")
    })?;
    for key in keys {
        let mut item = Some(doc.as_item());
        for part in key.split('.') {
            item = item.and_then(|i| i.get(part));
        }
        if item.is_some() {
            anyhow::bail!("--unset {key}: it is set more than once in config.toml; edit it by hand");
        }
    }
    Ok(out)
}

/// `text` with each `(dotted key, value)` set: an existing value is replaced in place
/// (its comment kept), a new key goes at the end of its table (made if missing).
pub fn apply(text: &str, edits: &[(String, toml_edit::Value)]) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| anyhow::anyhow!("config.toml is not TOML: {e}"))?;
    for (key, value) in edits {
        let parts: Vec<&str> = key.split('.').collect();
        let (last, tables) = parts.split_last().expect("split yields one part at least");
        let mut table = doc.as_table_mut();
        for part in tables {
            table = table
                .entry(part)
                .or_insert_with(toml_edit::table)
                .as_table_mut()
                .ok_or_else(|| anyhow::anyhow!("{key}: {part} is not a table in config.toml"))?;
        }
        let mut value = value.clone();
        match table.get_mut(last).and_then(toml_edit::Item::as_value_mut) {
            Some(old) => {
                *value.decor_mut() = old.decor().clone();
                *old = value;
            }
            None => {
                value.decor_mut().clear();
                table.insert(last, toml_edit::Item::Value(value));
            }
        }
    }
    Ok(doc.to_string())
}

/// `key: old -> new` for each effective setting that differs (defaults included, so
/// `python: python3 -> /venv/bin/python` when the file had none; `(default)` for a
/// setting whose default depends on the provider); the token is not shown.
fn changes(before: Option<&EndpointConfig>, after: &EndpointConfig) -> Vec<String> {
    let before = before.map(settings).unwrap_or_default();
    let after = settings(after);
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let unset = "(default)".to_owned();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            let (old, new) = (before.get(k).unwrap_or(&unset), after.get(k).unwrap_or(&unset));
            if k == "token" {
                format!("token: {} -> {}", secret(old, &unset), secret(new, &unset))
            } else {
                format!("{k}: {old} -> {new}")
            }
        })
        .collect()
}

fn secret(value: &String, unset: &String) -> &'static str {
    if value == unset { "(none)" } else { "(set)" }
}

/// A config's settings by key (provider settings without their `provider.`), as text.
fn settings(config: &EndpointConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(toml::Value::Table(top)) = toml::Value::try_from(config) else {
        return out;
    };
    for (key, value) in top {
        match value {
            toml::Value::Table(provider) if key == "provider" => {
                out.extend(provider.into_iter().map(|(k, v)| (k, shown(&v))));
            }
            other => {
                out.insert(key, shown(&other));
            }
        }
    }
    out
}

/// Text as it is (quoted where it has several lines); anything else as TOML.
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) if s.contains('\n') => format!("{s:?}"),
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "url = \"http://a\"\n\n[provider]\nkind = \"slurm\"\npartition = \"debug\"    # Slurm partition\n# account = \"x\"    # the account charged\n";

    #[test]
    fn an_edit_keeps_the_rest_of_the_file_and_the_comment_of_the_value_it_replaces() {
        let edits = vec![
            parse_set("provider.partition=regular").unwrap(),
            parse_set("provider.max_blocks=4").unwrap(),
        ];

        let text = apply(FILE, &edits).unwrap();

        assert!(
            text.contains("partition = \"regular\"    # Slurm partition"),
            "{text}"
        );
        assert!(text.contains("max_blocks = 4"), "{text}");
        assert!(text.contains("url = \"http://a\""), "{text}");
        assert!(
            text.contains("# account = \"x\"    # the account charged"),
            "{text}"
        );
        EndpointConfig::parse(&text).unwrap();
    }

    #[test]
    fn unset_removes_a_key_and_refuses_one_that_is_not_there() {
        let text = remove(FILE, &["provider.partition".into()]).unwrap();
        assert!(
            text.contains("# partition = \"debug\"    # Slurm partition\n"),
            "{text}"
        );
        assert!(EndpointConfig::parse(&text).unwrap().provider.partition.is_none());
        assert!(text.contains("kind = \"slurm\""), "{text}");

        let missing = remove(FILE, &["provider.account".into()]).unwrap_err();
        assert!(missing.to_string().contains("provider.account"), "{missing}");
        assert!(remove(FILE, &["nope.x".into()]).is_err());
    }

    #[test]
    fn a_set_value_is_toml_where_it_parses_and_text_otherwise() {
        assert_eq!(parse_set("prefetch=32").unwrap().1.as_integer(), Some(32));
        assert_eq!(parse_set("public=true").unwrap().1.as_bool(), Some(true));
        assert_eq!(parse_set("address=login01").unwrap().1.as_str(), Some("login01"));
        assert_eq!(
            parse_set("provider.walltime=01:00:00").unwrap().1.as_str(),
            Some("01:00:00")
        );
        assert!(parse_set("no-equals").is_err());
        assert!(parse_set("provider..x=1").is_err());
    }

    #[test]
    fn changes_name_each_setting_that_differs_with_defaults_included() {
        let before = EndpointConfig::parse("url = \"http://a\"\n[provider]\npython = \"python3\"").unwrap();
        let after = EndpointConfig::parse(
            "url = \"http://a\"\ntoken = \"t\"\n[provider]\npython = \"/venv/bin/python\"",
        )
        .unwrap();

        assert_eq!(
            changes(Some(&before), &after),
            ["python: python3 -> /venv/bin/python", "token: (none) -> (set)"]
        );
    }
}

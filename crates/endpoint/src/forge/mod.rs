//! The forge: submission scripts made from templates with `@@NAME@@` markup.
//!
//! A template is a shell script in which `@@NAME@@` stands for a setting. Rendering
//! replaces each markup with its value, shell-quoted (`'a b'`, and a value of safe
//! characters as it is), or, for the few settings that are script text by nature
//! (`@@WORKER_INIT@@`, `@@SCHEDULER_OPTIONS@@`, the generated `@@MANAGER_COMMAND@@`), as
//! it is. A markup that names no setting, or a setting that is not set, is an error that
//! names it: nothing is silently left empty. A line holding only a markup whose value is
//! empty is dropped, so optional settings leave no blank lines among the directives.
//!
//! [`block`] fills the settings of a block script from the provider's config; the
//! templates themselves are in `crates/endpoint/templates/`.

use std::collections::BTreeMap;

pub mod block;

pub use block::{BlockScript, default_template};

/// A setting's value as the template gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A value: shell-quoted where it lands.
    Quoted(String),
    /// Script text (lines of shell or directives), inserted as it is.
    Raw(String),
    /// Not set: using it is an error that names the config key to set.
    Unset { key: &'static str },
}

/// Why a template cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("line {line}: @@{name}@@ names no setting; known: {known}")]
    Unknown {
        line: usize,
        name: String,
        known: String,
    },
    #[error("line {line}: @@{name}@@ needs `{key}`, which is not set")]
    Unset {
        line: usize,
        name: String,
        key: &'static str,
    },
}

/// Replaces every `@@NAME@@` in `template` from `settings`. Every problem is returned,
/// not only the first.
pub fn render(template: &str, settings: &BTreeMap<&'static str, Value>) -> Result<String, Vec<Error>> {
    let mut out = String::with_capacity(template.len() + 512);
    let mut errors = Vec::new();
    for (n, line) in template.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        if let Some(name) = sole_markup(body)
            && let Some(Value::Raw(text)) = settings.get(name)
            && text.trim().is_empty()
        {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("@@") {
            let after = &rest[at + 2..];
            let Some(len) = markup_len(after) else {
                out.push_str(&rest[..at + 2]);
                rest = after;
                continue;
            };
            out.push_str(&rest[..at]);
            let name = &after[..len];
            match settings.get(name) {
                Some(Value::Quoted(v)) => out.push_str(&quote(v)),
                Some(Value::Raw(v)) => out.push_str(v.trim_end_matches('\n')),
                Some(Value::Unset { key }) => errors.push(Error::Unset {
                    line: n + 1,
                    name: name.to_owned(),
                    key,
                }),
                None => errors.push(Error::Unknown {
                    line: n + 1,
                    name: name.to_owned(),
                    known: settings.keys().copied().collect::<Vec<_>>().join(", "),
                }),
            }
            rest = &after[len + 2..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// The length of the `NAME` of a markup that starts at `text` (after the opening `@@`):
/// capitals, digits and `_`, starting with a capital, closed by `@@`.
fn markup_len(text: &str) -> Option<usize> {
    let len = text
        .bytes()
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
        .count();
    let starts_well = text.as_bytes().first().is_some_and(|b| b.is_ascii_uppercase());
    (starts_well && text[len..].starts_with("@@")).then_some(len)
}

/// The name, when the line holds nothing but one markup (and blanks).
fn sole_markup(line: &str) -> Option<&str> {
    let inner = line.trim().strip_prefix("@@")?.strip_suffix("@@")?;
    (markup_len(&format!("{inner}@@")) == Some(inner.len())).then_some(inner)
}

/// `value` as one shell word: as it is when every character is safe, else in single
/// quotes (a `'` inside becomes `'\''`). Nothing in a quoted value is ever run.
pub fn quote(value: &str) -> String {
    let safe = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if safe {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&'static str, Value)]) -> BTreeMap<&'static str, Value> {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn markup_is_replaced_quoted_or_raw() {
        let s = settings(&[
            ("PARTITION", Value::Quoted("debug".into())),
            ("ACCOUNT", Value::Quoted("my project".into())),
            (
                "WORKER_INIT",
                Value::Raw("module load python\nsource venv/bin/activate\n".into()),
            ),
        ]);
        let out = render(
            "#SBATCH -p @@PARTITION@@ -A @@ACCOUNT@@\n@@WORKER_INIT@@\necho done\n",
            &s,
        )
        .unwrap();
        assert_eq!(
            out,
            "#SBATCH -p debug -A 'my project'\nmodule load python\nsource venv/bin/activate\necho done\n"
        );
    }

    #[test]
    fn a_value_can_never_run_a_command() {
        for evil in ["x; rm -rf /", "$(reboot)", "`id`", "a'b", "a\nb", "${HOME}", "*"] {
            let s = settings(&[("V", Value::Quoted(evil.into()))]);
            let script = render("printf '%s' @@V@@", &s).unwrap();
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), evil, "{script}");
        }
    }

    #[test]
    fn unknown_and_unset_markup_are_named_with_their_lines() {
        let s = settings(&[("QOS", Value::Unset { key: "provider.qos" })]);
        let errors = render("#!/bin/bash\n#SBATCH --qos=@@QOS@@\n@@PARTITON@@\n", &s).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].to_string(),
            "line 2: @@QOS@@ needs `provider.qos`, which is not set"
        );
        let unknown = errors[1].to_string();
        assert!(
            unknown.starts_with("line 3: @@PARTITON@@ names no setting; known: QOS"),
            "{unknown}"
        );
    }

    #[test]
    fn a_line_of_one_empty_raw_setting_is_dropped() {
        let s = settings(&[("OPTIONS", Value::Raw(String::new()))]);
        assert_eq!(render("a\n@@OPTIONS@@\nb\n", &s).unwrap(), "a\nb\n");
    }

    #[test]
    fn at_signs_that_are_not_markup_stay() {
        let s = settings(&[]);
        assert_eq!(
            render("mail me@@example.org @@ @@lower@@\n", &s).unwrap(),
            "mail me@@example.org @@ @@lower@@\n"
        );
    }

    #[test]
    fn quoting_leaves_plain_words_alone() {
        assert_eq!(quote("node-01.cluster:5000"), "node-01.cluster:5000");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}

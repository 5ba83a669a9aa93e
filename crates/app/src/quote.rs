//! POSIX shell quoting, and the `{name}` templates of Ferry's shell functions filled
//! with quoted values.
//!
//! Quoting is what keeps a value a value: whatever text it holds, once quoted it is one
//! word to `/bin/sh`, read literally (no expansion, no globbing, no command separators).

use std::borrow::Cow;

/// `s` as one literal word for a POSIX shell (`/bin/sh`, bash, dash, zsh in sh mode).
///
/// Text made only of `[A-Za-z0-9_./:=@%+,-]` comes back unchanged (none of these is
/// special to the shell); anything else, and the empty string, comes back inside single
/// quotes, where the shell reads every character literally, with each `'` written as
/// `'\''` (close the quotes, an escaped quote, reopen). Newlines, `$`, backticks, `;`,
/// `&`, `|`, `*`, `~`, `!`, `#`, spaces and non-ASCII text all end up inside quotes.
///
/// A NUL byte cannot be passed to a shell at all; callers refuse such values first.
///
/// ```
/// use ferry_app::shell_quote;
///
/// assert_eq!(shell_quote("out/log.txt"), "out/log.txt");
/// assert_eq!(shell_quote(""), "''");
/// assert_eq!(shell_quote("$(touch pwned)"), "'$(touch pwned)'");
/// assert_eq!(shell_quote("a'b"), r"'a'\''b'");
/// ```
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    if !s.is_empty() && s.chars().all(is_plain) {
        return Cow::Borrowed(s);
    }
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('\'');
    for c in s.chars() {
        if c == '\'' {
            quoted.push_str(r"'\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    Cow::Owned(quoted)
}

/// A character the shell never treats specially, wherever it stands in a word.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | ':' | '=' | '@' | '%' | '+' | ',' | '-')
}

/// Fills the `{name}` placeholders of a shell function's command from `values` (the
/// task's JSON object), each value shell-quoted; `{{` and `}}` stand for braces.
///
/// A string value is quoted as its text, any other JSON value as its JSON text (`3`,
/// `true`, `[1,2]` quoted since it holds brackets). A placeholder with no value fails
/// with `the command needs a value for {name}`; a string holding a NUL byte, which no
/// shell can be given, fails too. A `{` with no closing brace takes the rest of the
/// template as its name, as the worker's unquoted `render` always did.
///
/// ```
/// use ferry_app::fill_braces;
///
/// let values = serde_json::json!({"name": "ada; reboot", "n": 3});
/// let values = values.as_object().unwrap();
/// assert_eq!(fill_braces("echo {name} {n} {{x}}", values).unwrap(), "echo 'ada; reboot' 3 {x}");
/// ```
pub fn fill_braces(
    template: &str,
    values: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let text = match values.get(&name) {
                    Some(serde_json::Value::String(s)) => Cow::Borrowed(s.as_str()),
                    Some(v) => Cow::Owned(v.to_string()),
                    None => return Err(format!("the command needs a value for {{{name}}}")),
                };
                if text.contains('\0') {
                    return Err(format!("the value for {{{name}}} contains a NUL byte"));
                }
                out.push_str(&shell_quote(&text));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(json: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn plain_words_are_left_unquoted() {
        for word in [
            "steps",
            "out/log.txt",
            "a=b",
            "user@host:/p",
            "50%",
            "x+y,z",
            "--help",
            "-1.5e3",
        ] {
            assert_eq!(shell_quote(word), word);
            assert!(matches!(shell_quote(word), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn the_empty_string_is_two_quotes() {
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn every_special_character_ends_up_inside_quotes() {
        for special in [
            " ", "\n", "\t", "$", "`", ";", "&", "|", "*", "?", "~", "!", "#", "(", ")", "<", ">", "\\",
            "\"", "[", "{", "é", "日本",
        ] {
            let value = format!("a{special}b");
            assert_eq!(shell_quote(&value), format!("'{value}'"), "{special:?}");
        }
    }

    #[test]
    fn a_single_quote_closes_escapes_and_reopens() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("'"), r"''\'''");
    }

    #[test]
    fn placeholders_are_filled_quoted_and_braces_escaped() {
        let v = values(r#"{"name": "ada lovelace", "n": 3, "ok": true, "list": [1, 2], "plain": "x.txt"}"#);
        assert_eq!(
            fill_braces("echo {name} {n} {ok} {list} {plain} {{x}} }}{{", &v).unwrap(),
            "echo 'ada lovelace' 3 true '[1,2]' x.txt {x} }{"
        );
    }

    #[test]
    fn a_filled_value_cannot_add_a_command() {
        let v = values(r#"{"x": "$(touch pwned); rm -rf ~ `id` 'q'"}"#);
        assert_eq!(
            fill_braces("echo {x}", &v).unwrap(),
            r"echo '$(touch pwned); rm -rf ~ `id` '\''q'\'''"
        );
    }

    #[test]
    fn an_empty_string_and_null_are_words_too() {
        let v = values(r#"{"e": "", "n": null}"#);
        assert_eq!(fill_braces("f {e} {n}", &v).unwrap(), "f '' null");
    }

    #[test]
    fn a_missing_value_names_the_placeholder() {
        assert_eq!(
            fill_braces("echo {who}", &values("{}")).unwrap_err(),
            "the command needs a value for {who}"
        );
    }

    #[test]
    fn an_unclosed_brace_takes_the_rest_as_its_name() {
        let v = values(r#"{"rest of it": "v"}"#);
        assert_eq!(fill_braces("echo {rest of it", &v).unwrap(), "echo v");
        assert_eq!(
            fill_braces("echo {nope", &values("{}")).unwrap_err(),
            "the command needs a value for {nope}"
        );
    }

    #[test]
    fn a_lone_closing_brace_is_kept() {
        assert_eq!(fill_braces("a } b", &values("{}")).unwrap(), "a } b");
    }

    #[test]
    fn a_value_with_a_nul_byte_is_refused() {
        let v = values(r#"{"x": "a\u0000b"}"#);
        assert_eq!(
            fill_braces("echo {x}", &v).unwrap_err(),
            "the value for {x} contains a NUL byte"
        );
    }
}

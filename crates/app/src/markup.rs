//! `@@NAME@@` markup: where a script takes an input's value or a builtin.
//!
//! Markup is `@@`, a name following the identifier rule (`[A-Za-z_][A-Za-z0-9_]{0,63}`),
//! and `@@`. Any other text with `@@` in it (`@@` alone, `@@not valid-@@`, an
//! e-mail-like `a@@b`) is not markup and is left as it is. Occurrences are found left to
//! right without overlap, in the script as written: text put in by a replacement is
//! never scanned again, so a value holding `@@steps@@` stays that literal text.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use crate::quote::shell_quote;

/// The names every script may use besides the application's inputs: `RUN_DIR`, the
/// run directory's path, and `TASK_ID`, the task's ID. No input may take one of these
/// names (in any case).
pub const BUILTINS: [&str; 2] = ["RUN_DIR", "TASK_ID"];

/// The longest name: one letter or `_`, then up to 63 more characters.
const MAX_NAME_CHARS: usize = 64;

/// One occurrence of markup; group 1 is the name.
static MARKUP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"@@([A-Za-z_][A-Za-z0-9_]{0,63})@@").expect("the markup pattern compiles"));

/// The values of the builtins for one run: what `@@RUN_DIR@@` and `@@TASK_ID@@` become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtins<'a> {
    /// The run directory's path on the endpoint, where the phases run.
    pub run_dir: &'a str,
    /// The ID of the task running the application.
    pub task_id: &'a str,
}

impl<'a> Builtins<'a> {
    /// The value of builtin `name`, if it is one.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        match name {
            "RUN_DIR" => Some(self.run_dir),
            "TASK_ID" => Some(self.task_id),
            _ => None,
        }
    }
}

/// Whether `name` follows the identifier rule of input names and markup:
/// `[A-Za-z_][A-Za-z0-9_]{0,63}` (ASCII only).
///
/// ```
/// assert!(ferry_app::is_identifier("time_steps2"));
/// assert!(!ferry_app::is_identifier("2steps"));
/// assert!(!ferry_app::is_identifier("time-steps"));
/// ```
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && name.len() <= MAX_NAME_CHARS
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The names a text's markup uses, in order of appearance, repeats included.
pub(crate) fn names(text: &str) -> impl Iterator<Item = &str> {
    MARKUP
        .captures_iter(text)
        .map(|caps| caps.get(1).expect("the markup pattern has a name group").as_str())
}

/// `script` with each `@@NAME@@` for which `lookup` gives a value replaced by that
/// value shell-quoted ([`shell_quote`]); markup `lookup` knows nothing of (`None`) is
/// left as written. `lookup` gets the bare name and returns the unquoted text: the
/// quoting is done here, so no caller can forget it. Replaced text is not scanned again.
///
/// ```
/// use std::borrow::Cow;
///
/// let rendered = ferry_app::render("cp @@src@@ @@dst@@ @@other@@", |name| match name {
///     "src" => Some(Cow::Borrowed("my file")),
///     "dst" => Some(Cow::Borrowed("@@src@@")),
///     _ => None,
/// });
/// assert_eq!(rendered, "cp 'my file' @@src@@ @@other@@");
/// ```
pub fn render<'v>(script: &str, mut lookup: impl FnMut(&str) -> Option<Cow<'v, str>>) -> String {
    let mut out = String::with_capacity(script.len());
    let mut copied_to = 0;
    for caps in MARKUP.captures_iter(script) {
        let whole = caps.get(0).expect("a match has a group 0");
        let name = caps.get(1).expect("the markup pattern has a name group").as_str();
        if let Some(value) = lookup(name) {
            out.push_str(&script[copied_to..whole.start()]);
            out.push_str(&shell_quote(&value));
            copied_to = whole.end();
        }
    }
    out.push_str(&script[copied_to..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<Cow<'static, str>> {
        match name {
            "a" => Some(Cow::Borrowed("1")),
            "b" => Some(Cow::Borrowed("two words")),
            "loop" => Some(Cow::Borrowed("@@a@@")),
            "empty" => Some(Cow::Borrowed("")),
            _ => None,
        }
    }

    #[test]
    fn identifiers_follow_the_rule() {
        assert!(is_identifier("a"));
        assert!(is_identifier("_"));
        assert!(is_identifier(&format!("a{}", "b".repeat(63))));
        assert!(!is_identifier(&format!("a{}", "b".repeat(64))));
        assert!(!is_identifier(""));
        assert!(!is_identifier("1a"));
        assert!(!is_identifier("a b"));
        assert!(!is_identifier("é"));
    }

    #[test]
    fn markup_is_replaced_by_quoted_values() {
        assert_eq!(render("x @@a@@ @@b@@ @@empty@@", lookup), "x 1 'two words' ''");
    }

    #[test]
    fn adjacent_markup_is_replaced_in_turn() {
        assert_eq!(render("@@a@@@@a@@", lookup), "11");
        assert_eq!(render("@@@@a@@", lookup), "@@1");
    }

    #[test]
    fn text_that_is_not_markup_is_left_as_it_is() {
        for text in [
            "@@",
            "@@@",
            "@@not valid-@@",
            "@@1a@@",
            "a@@b",
            "@@ a @@",
            "@@é@@",
        ] {
            assert_eq!(render(text, lookup), text);
        }
        let long = format!("@@a{}@@", "b".repeat(64));
        assert_eq!(names(&long).count(), 0);
    }

    #[test]
    fn unknown_names_are_left_as_written() {
        assert_eq!(render("@@nope@@ @@a@@", lookup), "@@nope@@ 1");
    }

    #[test]
    fn replaced_text_is_not_scanned_again() {
        assert_eq!(render("@@loop@@", lookup), "@@a@@");
    }

    #[test]
    fn names_lists_every_occurrence_in_order() {
        assert_eq!(
            names("@@b@@ x @@a@@ @@b@@ @@ @@c-@@").collect::<Vec<_>>(),
            ["b", "a", "b"]
        );
    }

    #[test]
    fn builtins_give_their_values() {
        let builtins = Builtins {
            run_dir: "/r",
            task_id: "t",
        };
        assert_eq!(builtins.get("RUN_DIR"), Some("/r"));
        assert_eq!(builtins.get("TASK_ID"), Some("t"));
        assert_eq!(builtins.get("run_dir"), None);
    }
}

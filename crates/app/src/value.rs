//! One input's typed value, and the check that makes one from JSON.
//!
//! The same check serves an input's `default` (when the spec is parsed) and a
//! submitted value (when a submission is validated), so a default can never be
//! something a user could not have typed. It reports what it found as [`Problem`]s,
//! worded for a submission by `Display` and for a default by [`Problem::as_default`].

use std::borrow::Cow;
use std::fmt;

use regex::Regex;
use serde_json::{Map, Number, Value as Json};

use crate::spec::{InputSpec, InputType};

mod file;

pub use file::decode_upload;

/// How much of a given string an error message quotes, in characters.
const EXCERPT_CHARS: usize = 64;

/// One input's value once checked against its type and constraints.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An `int` input: a JSON integer (or a number with no fractional part) within `i64`.
    Int(i64),
    /// A `float` input: any finite JSON number (always finite when made by a check;
    /// one built by hand with NaN or an infinity renders as `NaN`/`inf` and is `null` in
    /// JSON).
    Float(f64),
    /// A `string` input, or the choice made for an `enum` input. Never holds NUL.
    Str(String),
    /// A `bool` input.
    Bool(bool),
    /// A `file` input: what the endpoint stages into the run directory before the
    /// prolog, and under which name.
    File(FileInput),
}

/// A file to stage into the run directory: where it comes from, how, and the name it
/// gets there. The name is always one path component (not empty, `.` or `..`, no `/`,
/// no NUL, at most 255 bytes), so staging it cannot write outside the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInput {
    /// Where the file is.
    pub source: FileSource,
    /// Copied or linked; always [`FileMode::Copy`] for an upload.
    pub mode: FileMode,
    /// The file's name in the run directory, which the scripts' markup renders.
    pub name: String,
}

/// Where a file input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// An absolute path on the endpoint's file system (no NUL).
    Path(String),
    /// The file's content, uploaded with the task's inputs: base64 (valid, see
    /// [`decode_upload`](crate::decode_upload)). The inputs travel through Ferry's data
    /// plane when large, within its limits (10 MiB per task's inputs).
    Upload(String),
}

/// How a file on the endpoint reaches the run directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileMode {
    /// A copy: the run sees the file as it was when staged. The default.
    #[default]
    Copy,
    /// A symbolic link: nothing copied, for large files on a shared file system.
    Link,
}

impl FileMode {
    /// The mode's JSON name: `copy` or `link`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileMode::Copy => "copy",
            FileMode::Link => "link",
        }
    }
}

impl Value {
    /// The value as text, unquoted: an int in decimal, a float in Rust's shortest
    /// round-trip form (`0.000001`, `1e300` written out), a bool as `true`/`false`, a
    /// string as it is, a file as its name in the run directory.
    pub fn render(&self) -> Cow<'_, str> {
        match self {
            Value::Int(n) => Cow::Owned(n.to_string()),
            Value::Float(x) => Cow::Owned(x.to_string()),
            Value::Str(s) => Cow::Borrowed(s),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::File(file) => Cow::Borrowed(&file.name),
        }
    }

    /// The value as JSON, in a form [`crate::AppSpec::validate`] takes back unchanged: a
    /// file is `{"path", "mode", "name"}` or `{"data", "name"}`.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Int(n) => Json::from(*n),
            Value::Float(x) => Number::from_f64(*x).map_or(Json::Null, Json::Number),
            Value::Str(s) => Json::from(s.as_str()),
            Value::Bool(b) => Json::from(*b),
            Value::File(file) => {
                let mut object = Map::new();
                match &file.source {
                    FileSource::Path(path) => {
                        object.insert("path".into(), Json::from(path.as_str()));
                        object.insert("mode".into(), Json::from(file.mode.as_str()));
                    }
                    FileSource::Upload(id) => {
                        object.insert("data".into(), Json::from(id.as_str()));
                    }
                }
                object.insert("name".into(), Json::from(file.name.as_str()));
                Json::Object(object)
            }
        }
    }
}

/// One thing wrong with a value for an input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Problem {
    /// Not of the input's type: what was expected, what was given (described).
    Expected {
        what: &'static str,
        got: String,
    },
    BelowMin {
        min: String,
        got: String,
    },
    AboveMax {
        max: String,
        got: String,
    },
    TooShort {
        min: u64,
        chars: usize,
    },
    TooLong {
        max: u64,
        chars: usize,
    },
    NoMatch {
        pattern: String,
    },
    NotAChoice {
        choices: Vec<String>,
        got: String,
    },
    Nul,
    /// Something wrong with a file input, worded in full.
    File(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Expected { what, got } => write!(f, "expected {what}, got {got}"),
            Problem::BelowMin { min, got } => write!(f, "must be at least {min}, got {got}"),
            Problem::AboveMax { max, got } => write!(f, "must be at most {max}, got {got}"),
            Problem::TooShort { min, chars } => {
                write!(f, "must be at least {min} characters long, got {chars}")
            }
            Problem::TooLong { max, chars } => {
                write!(f, "must be at most {max} characters long, got {chars}")
            }
            Problem::NoMatch { pattern } => write!(f, "must match the pattern {pattern}"),
            Problem::NotAChoice { choices, got } => {
                write!(f, "must be one of {}, got {got}", quoted_list(choices))
            }
            Problem::Nul => f.write_str("must not contain a NUL byte"),
            Problem::File(message) => f.write_str(message),
        }
    }
}

impl Problem {
    /// The problem worded for an input's `default` in a spec, e.g. `default 3 is above
    /// max 1`.
    pub(crate) fn as_default(&self, default: &Json) -> String {
        match self {
            Problem::Expected { what, got } => format!("default must be {what}, got {got}"),
            Problem::BelowMin { min, got } => format!("default {got} is below min {min}"),
            Problem::AboveMax { max, got } => format!("default {got} is above max {max}"),
            Problem::TooShort { min, chars } => {
                format!("default is {chars} characters long, below min_length {min}")
            }
            Problem::TooLong { max, chars } => {
                format!("default is {chars} characters long, above max_length {max}")
            }
            Problem::NoMatch { pattern } => {
                format!(
                    "default {} does not match pattern {pattern}",
                    excerpt_json(default)
                )
            }
            Problem::NotAChoice { choices, got } => {
                format!(
                    "default {got} is not one of the choices ({})",
                    quoted_list(choices)
                )
            }
            Problem::Nul => "default contains a NUL byte".to_owned(),
            Problem::File(message) => format!("default: {message}"),
        }
    }
}

/// Checks `given` against `input`'s type and constraints (`pattern` is the input's
/// compiled, anchored pattern, if it has one and it compiled). Every problem found is
/// returned, not only the first.
pub(crate) fn check(input: &InputSpec, pattern: Option<&Regex>, given: &Json) -> Result<Value, Vec<Problem>> {
    match input.kind {
        InputType::Int => check_int(input, given),
        InputType::Float => check_float(input, given),
        InputType::String => check_string(input, pattern, given),
        InputType::Bool => match given {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            other => Err(vec![expected("a boolean", other)]),
        },
        InputType::Enum => check_enum(input, given),
        InputType::File => file::check(given).map(Value::File).map_err(|p| vec![p]),
    }
}

fn expected(what: &'static str, given: &Json) -> Problem {
    Problem::Expected {
        what,
        got: describe(given),
    }
}

fn check_int(input: &InputSpec, given: &Json) -> Result<Value, Vec<Problem>> {
    let Some(n) = given.as_number().and_then(as_int) else {
        return Err(vec![expected("an integer", given)]);
    };
    if let Some(min) = input.min.as_ref().and_then(as_int)
        && n < min
    {
        return Err(vec![Problem::BelowMin {
            min: min.to_string(),
            got: n.to_string(),
        }]);
    }
    if let Some(max) = input.max.as_ref().and_then(as_int)
        && n > max
    {
        return Err(vec![Problem::AboveMax {
            max: max.to_string(),
            got: n.to_string(),
        }]);
    }
    Ok(Value::Int(n))
}

fn check_float(input: &InputSpec, given: &Json) -> Result<Value, Vec<Problem>> {
    let Some((number, x)) = given
        .as_number()
        .and_then(|n| n.as_f64().filter(|x| x.is_finite()).map(|x| (n, x)))
    else {
        return Err(vec![expected("a number", given)]);
    };
    if let Some(min) = &input.min
        && min.as_f64().is_some_and(|min| x < min)
    {
        return Err(vec![Problem::BelowMin {
            min: min.to_string(),
            got: number.to_string(),
        }]);
    }
    if let Some(max) = &input.max
        && max.as_f64().is_some_and(|max| x > max)
    {
        return Err(vec![Problem::AboveMax {
            max: max.to_string(),
            got: number.to_string(),
        }]);
    }
    Ok(Value::Float(x))
}

fn check_string(input: &InputSpec, pattern: Option<&Regex>, given: &Json) -> Result<Value, Vec<Problem>> {
    let Json::String(s) = given else {
        return Err(vec![expected("a string", given)]);
    };
    let mut problems = Vec::new();
    if s.contains('\0') {
        problems.push(Problem::Nul);
    }
    let chars = s.chars().count();
    if let Some(min) = input.min_length
        && (chars as u64) < min
    {
        problems.push(Problem::TooShort { min, chars });
    }
    if let Some(max) = input.max_length
        && (chars as u64) > max
    {
        problems.push(Problem::TooLong { max, chars });
    }
    if let (Some(regex), Some(source)) = (pattern, &input.pattern)
        && !regex.is_match(s)
    {
        problems.push(Problem::NoMatch {
            pattern: source.clone(),
        });
    }
    if problems.is_empty() {
        Ok(Value::Str(s.clone()))
    } else {
        Err(problems)
    }
}

fn check_enum(input: &InputSpec, given: &Json) -> Result<Value, Vec<Problem>> {
    let choices = input.choices.as_deref().unwrap_or_default();
    match given {
        Json::String(s) if choices.contains(s) => Ok(Value::Str(s.clone())),
        other => Err(vec![Problem::NotAChoice {
            choices: choices.to_vec(),
            got: describe(other),
        }]),
    }
}

/// A JSON number as an `i64`: an integer, or a number with no fractional part within
/// range (`3.0`, `1e3`).
pub(crate) fn as_int(n: &Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        // -2^63 is exactly representable; 2^63 is the first value out of range.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        n.as_f64()
            .filter(|x| x.fract() == 0.0 && *x >= -LIMIT && *x < LIMIT)
            .map(|x| x as i64)
    })
}

/// What a JSON value is, for an error message: `the string "3"`, `the number 2.5`,
/// `the boolean true`, `null`, `an array`, `an object`.
pub(crate) fn describe(given: &Json) -> String {
    match given {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("the boolean {b}"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) => format!("the string {}", excerpt(s)),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

/// `s` JSON-quoted for an error message, cut after 64 characters (then `...` follows).
pub(crate) fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", Json::from(&s[..cut])),
        None => Json::from(s).to_string(),
    }
}

/// A JSON value for an error message: a string as [`excerpt`], anything else as JSON.
fn excerpt_json(value: &Json) -> String {
    match value {
        Json::String(s) => excerpt(s),
        other => other.to_string(),
    }
}

/// `"a", "b", "c"`.
fn quoted_list(items: &[String]) -> String {
    items.iter().map(|s| excerpt(s)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rendering_gives_plain_text() {
        assert_eq!(Value::Int(-42).render(), "-42");
        assert_eq!(Value::Float(1e-6).render(), "0.000001");
        assert_eq!(Value::Float(0.1 + 0.2).render(), "0.30000000000000004");
        assert_eq!(Value::Float(2.0).render(), "2");
        assert_eq!(Value::Bool(true).render(), "true");
        assert_eq!(Value::Str("a b".into()).render(), "a b");
        let file = FileInput {
            source: FileSource::Upload("x".into()),
            mode: FileMode::Copy,
            name: "m.dat".into(),
        };
        assert_eq!(Value::File(file).render(), "m.dat");
    }

    #[test]
    fn integers_come_from_integral_numbers_only() {
        let int = |v: Json| v.as_number().and_then(as_int);
        assert_eq!(int(json!(3)), Some(3));
        assert_eq!(int(json!(3.0)), Some(3));
        assert_eq!(int(json!(1e3)), Some(1000));
        assert_eq!(int(json!(i64::MIN)), Some(i64::MIN));
        assert_eq!(int(json!(2.5)), None);
        assert_eq!(int(json!(u64::MAX)), None);
        assert_eq!(int(json!(1e300)), None);
    }

    #[test]
    fn given_values_are_described_by_kind() {
        assert_eq!(describe(&json!("3")), r#"the string "3""#);
        assert_eq!(describe(&json!(2.5)), "the number 2.5");
        assert_eq!(describe(&json!(false)), "the boolean false");
        assert_eq!(describe(&json!(null)), "null");
        assert_eq!(describe(&json!([1])), "an array");
        assert_eq!(describe(&json!({})), "an object");
    }

    #[test]
    fn long_strings_are_cut_in_messages() {
        let long = "é".repeat(100);
        assert_eq!(excerpt(&long), format!("\"{}\"...", "é".repeat(64)));
        assert_eq!(excerpt("a\"b"), r#""a\"b""#);
    }
}

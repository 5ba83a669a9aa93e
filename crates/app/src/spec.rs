//! An application's spec: its phases, its inputs, what it keeps, and the limits it is
//! held to.
//!
//! A spec is JSON (unknown fields refused) and is only ever made by
//! [`AppSpec::parse`] (or by deserializing, which goes through it): past that point it
//! holds no contradiction, every markup in its scripts names an input or a builtin, and
//! every input's pattern is compiled and its default checked. The checks themselves are
//! in [`check`]; they list every problem at once, each naming where it is
//! (`inputs[2] (tol): default 3 is above max 1`), so an author fixes a spec in one go.
//! A spec serializes back to the JSON it came from (for a `GET` of a registered
//! application).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Number;

use crate::inputs::Inputs;
use crate::markup::{self, Builtins};
use crate::value::Value;

mod check;
#[cfg(test)]
pub(crate) mod tests;

/// The most inputs an application may declare.
pub const MAX_INPUTS: usize = 256;
/// The most bytes one script (a phase's, or `env_script`) may hold: 1 MiB.
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;
/// The most output patterns an application may list.
pub const MAX_OUTPUTS: usize = 64;
/// How much of each phase's stdout and stderr a result carries when the spec does not
/// say.
pub const DEFAULT_SNIPPET_BYTES: usize = 4096;
/// The most `snippet_bytes` a spec may ask for: 1 MiB.
pub const MAX_SNIPPET_BYTES: usize = 1 << 20;

/// A checked application spec. Made by [`AppSpec::parse`]; read through its accessors.
///
/// ```
/// let spec = ferry_app::AppSpec::parse(br#"{
///     "inputs": [{"name": "steps", "type": "int", "min": 1}],
///     "execute": {"script": "solver --steps @@steps@@"},
///     "outputs": ["out/*.dat"]
/// }"#).unwrap();
/// assert_eq!(spec.inputs()[0].name, "steps");
/// assert_eq!(spec.snippet_bytes(), ferry_app::DEFAULT_SNIPPET_BYTES);
/// ```
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// The spec as written, which is also what it serializes to.
    raw: RawSpec,
    /// What parsing derived for each input, in declaration order.
    compiled: Vec<Compiled>,
    /// Where each input is in `raw.inputs`, by name.
    index: HashMap<String, usize>,
}

/// The JSON shape of a spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<InputSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prolog: Option<Phase>,
    execute: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    epilog: Option<Phase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env_script: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snippet_bytes: Option<u64>,
}

/// What parsing derived for one input.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    /// The input's pattern anchored to the whole value, `^(?:pattern)$`.
    pub(crate) pattern: Option<Regex>,
    /// The input's default, checked like a submitted value.
    pub(crate) default: Option<Value>,
}

/// One of the three phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PhaseName {
    /// Optional preparation, run first.
    Prolog,
    /// The application's work; every spec has it.
    Execute,
    /// Optional wrapping up, run last (after a failure too when it says
    /// `after_failure`).
    Epilog,
}

impl PhaseName {
    /// The three phases in the order they run.
    pub const ALL: [PhaseName; 3] = [PhaseName::Prolog, PhaseName::Execute, PhaseName::Epilog];

    /// The phase's name in the spec's JSON: `prolog`, `execute`, `epilog`.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Prolog => "prolog",
            PhaseName::Execute => "execute",
            PhaseName::Epilog => "epilog",
        }
    }
}

impl fmt::Display for PhaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One phase: a script run in the run directory, with an optional time limit.
///
/// Within an [`AppSpec`] the script is non-empty, holds no NUL and names only known
/// markup; a `walltime` is a positive number of seconds; `after_failure` is only ever
/// set on the epilog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    script: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    walltime: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after_failure: Option<bool>,
}

impl Phase {
    /// The script as written, markup included.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// The interpreter the script's `#!` line names (the rest of that line, trimmed,
    /// e.g. `/usr/bin/env python3`), which the endpoint runs the script with; `None`
    /// when there is no `#!` line and the script is for `/bin/sh`. Never empty within
    /// an [`AppSpec`].
    pub fn interpreter(&self) -> Option<&str> {
        let rest = self.script.strip_prefix("#!")?;
        Some(rest.split('\n').next().unwrap_or_default().trim())
    }

    /// How long the phase may run before the endpoint stops it; `None` for no limit of
    /// its own.
    pub fn walltime(&self) -> Option<Duration> {
        self.walltime_secs()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
    }

    /// The walltime as given, in seconds.
    pub fn walltime_secs(&self) -> Option<f64> {
        self.walltime.as_ref().and_then(Number::as_f64)
    }

    /// For the epilog: whether it also runs when an earlier phase failed. Always false
    /// for the prolog and the execute phase.
    pub fn after_failure(&self) -> bool {
        self.after_failure.unwrap_or(false)
    }
}

/// One declared input, as written in the spec. Within an [`AppSpec`] it holds no
/// contradiction: each constraint suits its type, bounds are ordered, its pattern
/// compiles and its default satisfies it all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// What submissions and markup call it: `[A-Za-z_][A-Za-z0-9_]{0,63}`, unique in
    /// the spec ignoring case (environment variables upper-case it), not a builtin.
    pub name: String,
    /// A form's label for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A form's help text for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The type of value it takes (`"type"` in JSON).
    #[serde(rename = "type")]
    pub kind: InputType,
    /// Whether a submission must give it, as written; see [`InputSpec::is_required`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The value used when a submission leaves it out (not for `file` inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// The smallest value taken, inclusive (`int` and `float`; an integer for `int`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<Number>,
    /// The largest value taken, inclusive (`int` and `float`; an integer for `int`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Number>,
    /// The fewest characters a `string` may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// The most characters a `string` may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// The values an `enum` takes: non-empty, no repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// A regular expression (Rust `regex` syntax) a `string` must match as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Where a form shows it: by `order`, then by declaration; inputs without one come
    /// after those with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
    /// Whether a form leaves it out of sight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
}

impl InputSpec {
    /// Whether a submission must give this input: as the spec says, or else when it has
    /// no default.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }
}

/// The type of value an input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// A JSON integer within `i64`.
    Int,
    /// Any finite JSON number.
    Float,
    /// A JSON string without NUL.
    String,
    /// `true` or `false`.
    Bool,
    /// One of the input's `choices`.
    Enum,
    /// A file staged into the run directory: a path on the endpoint or an upload.
    File,
}

impl InputType {
    /// The type's name in the spec's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::Int => "int",
            InputType::Float => "float",
            InputType::String => "string",
            InputType::Bool => "bool",
            InputType::Enum => "enum",
            InputType::File => "file",
        }
    }
}

impl fmt::Display for InputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with a spec, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Where: `inputs[2] (tol)`, `execute`, `outputs[0]`, `env_script`, `snippet_bytes`,
    /// or `spec` for JSON that does not have a spec's shape.
    pub at: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Every problem found in a spec (at least one); shown joined with `; `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(Vec<SpecError>);

impl SpecErrors {
    /// The problems, in the order the spec was read.
    pub fn errors(&self) -> &[SpecError] {
        &self.0
    }

    /// The problems, owned.
    pub fn into_vec(self) -> Vec<SpecError> {
        self.0
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl AppSpec {
    /// Reads and checks a spec. JSON that does not have a spec's shape (bad syntax, an
    /// unknown field, a wrong type, no `execute`) is one error naming its line and
    /// column; past that every problem found is listed at once.
    pub fn parse(bytes: &[u8]) -> Result<AppSpec, SpecErrors> {
        let raw: RawSpec = serde_json::from_slice(bytes).map_err(|e| {
            SpecErrors(vec![SpecError {
                at: "spec".into(),
                message: e.to_string(),
            }])
        })?;
        AppSpec::from_raw(raw)
    }

    fn from_raw(raw: RawSpec) -> Result<AppSpec, SpecErrors> {
        let compiled = check::check(&raw).map_err(SpecErrors)?;
        let index = raw
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| (input.name.clone(), i))
            .collect();
        Ok(AppSpec { raw, compiled, index })
    }

    /// The declared inputs, in declaration order.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.raw.inputs
    }

    /// The input called `name` (exactly), if there is one.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.index.get(name).map(|&i| &self.raw.inputs[i])
    }

    /// The inputs in the order a form shows them: by `order`, then by declaration;
    /// inputs without an `order` after those with one. Hidden inputs are included (the
    /// form decides what to do with them).
    pub fn inputs_for_form(&self) -> Vec<&InputSpec> {
        let mut inputs: Vec<(usize, &InputSpec)> = self.raw.inputs.iter().enumerate().collect();
        inputs.sort_by_key(|&(i, input)| (input.order.is_none(), input.order, i));
        inputs.into_iter().map(|(_, input)| input).collect()
    }

    /// The phase called `name`, if the spec has it (`execute` it always has).
    pub fn phase(&self, name: PhaseName) -> Option<&Phase> {
        match name {
            PhaseName::Prolog => self.raw.prolog.as_ref(),
            PhaseName::Execute => Some(&self.raw.execute),
            PhaseName::Epilog => self.raw.epilog.as_ref(),
        }
    }

    /// The phases the spec has, in the order they run.
    pub fn phases(&self) -> impl Iterator<Item = (PhaseName, &Phase)> {
        PhaseName::ALL
            .into_iter()
            .filter_map(|name| self.phase(name).map(|phase| (name, phase)))
    }

    /// The text sourced before each phase, as written (markup included), if any.
    pub fn env_script(&self) -> Option<&str> {
        self.raw.env_script.as_deref()
    }

    /// Glob patterns, relative to the run directory, of the files a run keeps.
    pub fn outputs(&self) -> &[String] {
        &self.raw.outputs
    }

    /// How much of each phase's stdout and stderr the result carries, in bytes.
    pub fn snippet_bytes(&self) -> usize {
        self.raw
            .snippet_bytes
            .map_or(DEFAULT_SNIPPET_BYTES, |n| n as usize)
    }

    /// Phase `name`'s script with its markup replaced, each value shell-quoted: an
    /// input's value ([`Value::render`]), `''` for an optional input left out, a
    /// builtin's value. `None` when the spec has no such phase.
    pub fn render(&self, name: PhaseName, inputs: &Inputs, builtins: &Builtins<'_>) -> Option<String> {
        self.phase(name)
            .map(|phase| self.render_text(phase.script(), inputs, builtins))
    }

    /// `env_script` with its markup replaced as [`AppSpec::render`] does, if the spec
    /// has one.
    pub fn render_env_script(&self, inputs: &Inputs, builtins: &Builtins<'_>) -> Option<String> {
        self.env_script()
            .map(|text| self.render_text(text, inputs, builtins))
    }

    fn render_text(&self, text: &str, inputs: &Inputs, builtins: &Builtins<'_>) -> String {
        markup::render(text, |name| {
            if let Some(value) = builtins.get(name) {
                return Some(Cow::Borrowed(value));
            }
            self.input(name)?;
            Some(inputs.get(name).map_or(Cow::Borrowed(""), Value::render))
        })
    }

    /// What parsing derived for each input, in declaration order.
    pub(crate) fn compiled(&self) -> &[Compiled] {
        &self.compiled
    }
}

impl PartialEq for AppSpec {
    fn eq(&self, other: &AppSpec) -> bool {
        self.raw == other.raw
    }
}

impl Serialize for AppSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AppSpec {
    /// Deserializing checks the spec as [`AppSpec::parse`] does; its problems become
    /// one error.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<AppSpec, D::Error> {
        let raw = RawSpec::deserialize(deserializer)?;
        AppSpec::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

/// The names `names` for a message: `steps, solver, title`, cut after 16 with the
/// count of the rest; `none` when there are none.
pub(crate) fn name_list<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 16;
    let total = names.len();
    if total == 0 {
        return "none".to_owned();
    }
    let mut list = names.take(SHOWN).collect::<Vec<_>>().join(", ");
    if total > SHOWN {
        list.push_str(&format!(", ... ({} more)", total - SHOWN));
    }
    list
}

//! A submission's values checked against its application's spec, before anything is
//! queued.
//!
//! [`AppSpec::validate`] lists every problem at once, each naming its input
//! (`input 'steps': must be at most 100000, got 200000`). What passes is [`Inputs`]:
//! one typed [`Value`] per input given or defaulted, in declaration order, ready to be
//! rendered into the scripts, written as `inputs.json` into the run directory, or set
//! as environment variables ([`env_vars`]).

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value as Json};

use crate::spec::{AppSpec, name_list};
use crate::value::{self, FileInput, Value, describe, excerpt};

/// A submission's values once checked: one per input given, or left out but with a
/// default, in the spec's declaration order. Optional inputs left out without a
/// default are absent (and render as `''`). File inputs' staged names are distinct.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inputs {
    values: Vec<(String, Value)>,
}

impl Inputs {
    /// The value of input `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Each input's name and value, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// How many inputs have a value.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no input has a value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values as a JSON object (for `inputs.json` in the run directory), which
    /// [`AppSpec::validate`] takes back to the same `Inputs`. A file is
    /// `{"path", "mode", "name"}` or `{"data", "name"}`, `name` being its name in the
    /// run directory.
    pub fn to_json(&self) -> Json {
        Json::Object(
            self.values
                .iter()
                .map(|(n, v)| (n.clone(), v.to_json()))
                .collect(),
        )
    }

    /// The file inputs to stage into the run directory before the prolog, with their
    /// input names, in declaration order.
    pub fn files(&self) -> Vec<(&str, &FileInput)> {
        self.values
            .iter()
            .filter_map(|(n, v)| match v {
                Value::File(file) => Some((n.as_str(), file)),
                _ => None,
            })
            .collect()
    }
}

/// One problem with a submission's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The input's name as the submission gave it (cut if very long); empty when the
    /// problem is with the values as a whole.
    pub input: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.input.is_empty() {
            write!(f, "inputs: {}", self.message)
        } else {
            write!(f, "input '{}': {}", self.input, self.message)
        }
    }
}

impl std::error::Error for InputError {}

impl AppSpec {
    /// Checks a submission's values, a JSON object of input name to value, and lists
    /// every problem at once: a name the application does not have, a required input
    /// missing, a value of the wrong type or outside its constraints, two files staged
    /// under one name. An input given as `null` counts as left out. Types are strict:
    /// an `int` takes a JSON integer (or a number with no fractional part, such as
    /// `3.0`), never a string.
    ///
    /// ```
    /// let spec = ferry_app::AppSpec::parse(br#"{
    ///     "inputs": [{"name": "steps", "type": "int", "max": 10}],
    ///     "execute": {"script": "run @@steps@@"}
    /// }"#).unwrap();
    /// let errors = spec.validate(&serde_json::json!({"steps": 20, "stpes": 1})).unwrap_err();
    /// assert_eq!(errors[0].to_string(), "input 'steps': must be at most 10, got 20");
    /// assert_eq!(
    ///     errors[1].to_string(),
    ///     "input 'stpes': the application has no such input (inputs: steps)"
    /// );
    /// ```
    pub fn validate(&self, values: &Json) -> Result<Inputs, Vec<InputError>> {
        let Json::Object(given) = values else {
            return Err(vec![InputError {
                input: String::new(),
                message: format!(
                    "must be a JSON object of input names to values, got {}",
                    describe(values)
                ),
            }]);
        };
        let mut errors = Vec::new();
        let mut inputs = Inputs::default();
        for (spec, compiled) in self.inputs().iter().zip(self.compiled()) {
            let error = |message: String| InputError {
                input: spec.name.clone(),
                message,
            };
            match given.get(&spec.name).filter(|v| !v.is_null()) {
                Some(v) => match value::check(spec, compiled.pattern.as_ref(), v) {
                    Ok(value) => inputs.values.push((spec.name.clone(), value)),
                    Err(problems) => errors.extend(problems.iter().map(|p| error(p.to_string()))),
                },
                None => match &compiled.default {
                    Some(default) => inputs.values.push((spec.name.clone(), default.clone())),
                    None if spec.is_required() => errors.push(error("required".to_owned())),
                    None => {}
                },
            }
        }
        self.unknown_names(given, &mut errors);
        files_clash(&inputs, &mut errors);
        if errors.is_empty() {
            Ok(inputs)
        } else {
            Err(errors)
        }
    }

    /// An error for each name in `given` that is no input of this application.
    fn unknown_names(&self, given: &Map<String, Json>, errors: &mut Vec<InputError>) {
        let mut known = None;
        for name in given.keys().filter(|name| self.input(name).is_none()) {
            let known = known.get_or_insert_with(|| match self.inputs().len() {
                0 => "the application has no inputs".to_owned(),
                _ => format!(
                    "the application has no such input (inputs: {})",
                    name_list(self.inputs().iter().map(|input| input.name.as_str()))
                ),
            });
            let shown = if name.chars().count() > 64 {
                excerpt(name)
            } else {
                name.clone()
            };
            errors.push(InputError {
                input: shown,
                message: known.clone(),
            });
        }
    }
}

/// An error for each file staged under a name an earlier file input has.
fn files_clash(inputs: &Inputs, errors: &mut Vec<InputError>) {
    let mut staged: HashMap<&str, &str> = HashMap::new();
    for (input, file) in inputs.files() {
        if let Some(first) = staged.insert(&file.name, input) {
            errors.push(InputError {
                input: input.to_owned(),
                message: format!(
                    "is staged as {}, as input '{first}' is (give a file object a distinct name)",
                    excerpt(&file.name)
                ),
            });
            staged.insert(&file.name, first);
        }
    }
}

/// The inputs as environment variables, for scripts run by an interpreter that is not
/// a shell: `FERRY_INPUT_<NAME>` (the name upper-cased, unique since input names are
/// unique ignoring case) set to the value's unquoted rendering ([`Value::render`]).
/// Optional inputs left out without a default have no variable.
///
/// ```
/// let spec = ferry_app::AppSpec::parse(br##"{
///     "inputs": [{"name": "steps", "type": "int"}],
///     "execute": {"script": "#!/usr/bin/env python3\nimport os; print(os.environ['FERRY_INPUT_STEPS'])"}
/// }"##).unwrap();
/// let inputs = spec.validate(&serde_json::json!({"steps": 7})).unwrap();
/// assert_eq!(ferry_app::env_vars(&inputs), [("FERRY_INPUT_STEPS".to_owned(), "7".to_owned())]);
/// ```
pub fn env_vars(inputs: &Inputs) -> Vec<(String, String)> {
    inputs
        .iter()
        .map(|(name, value)| {
            (
                format!("FERRY_INPUT_{}", name.to_ascii_uppercase()),
                value.render().into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;

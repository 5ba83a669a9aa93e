//! The checks of a spec that has a spec's JSON shape: every problem is collected, each
//! with where it is, and nothing stops at the first.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use regex::Regex;

use super::{
    Compiled, InputSpec, InputType, MAX_INPUTS, MAX_OUTPUTS, MAX_SCRIPT_BYTES, MAX_SNIPPET_BYTES, Phase,
    PhaseName, RawSpec, SpecError, name_list,
};
use crate::markup::{self, BUILTINS, is_identifier};
use crate::value::{self, as_int, excerpt};

/// Checks `raw`; on success, what each input compiled to.
pub(super) fn check(raw: &RawSpec) -> Result<Vec<Compiled>, Vec<SpecError>> {
    let mut errors = Errors::default();
    if raw.inputs.len() > MAX_INPUTS {
        errors.add(
            "inputs",
            format!("at most {MAX_INPUTS} inputs, got {}", raw.inputs.len()),
        );
    }
    let mut seen = HashMap::new();
    let compiled = raw
        .inputs
        .iter()
        .enumerate()
        .map(|(index, input)| check_input(index, input, &mut seen, &mut errors))
        .collect();
    let scripts = Scripts::new(&raw.inputs);
    let phases = [
        (PhaseName::Prolog, raw.prolog.as_ref()),
        (PhaseName::Execute, Some(&raw.execute)),
        (PhaseName::Epilog, raw.epilog.as_ref()),
    ];
    for (name, phase) in phases {
        if let Some(phase) = phase {
            check_phase(name, phase, &scripts, &mut errors);
        }
    }
    if let Some(text) = &raw.env_script {
        scripts.check("env_script", text, &mut errors);
    }
    check_outputs(&raw.outputs, &mut errors);
    if let Some(n) = raw.snippet_bytes
        && n > MAX_SNIPPET_BYTES as u64
    {
        errors.add(
            "snippet_bytes",
            format!("must be at most {MAX_SNIPPET_BYTES} (1 MiB), got {n}"),
        );
    }
    if errors.0.is_empty() {
        Ok(compiled)
    } else {
        Err(errors.0)
    }
}

/// The problems found so far.
#[derive(Default)]
struct Errors(Vec<SpecError>);

impl Errors {
    fn add(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError {
            at: at.into(),
            message: message.into(),
        });
    }
}

/// Checks one input; `seen` maps the lower-cased names of the inputs before it to
/// their index.
fn check_input(
    index: usize,
    input: &InputSpec,
    seen: &mut HashMap<String, usize>,
    errors: &mut Errors,
) -> Compiled {
    let shown = if is_identifier(&input.name) {
        input.name.clone()
    } else {
        excerpt(&input.name)
    };
    let at = format!("inputs[{index}] ({shown})");
    check_name(index, input, &at, seen, errors);
    check_constraints_apply(input, &at, errors);
    check_bounds(input, &at, errors);
    check_choices(input, &at, errors);
    let pattern = match (&input.pattern, input.kind) {
        (Some(source), InputType::String) => compile(source).map_err(|e| errors.add(&at, e)).ok(),
        _ => None,
    };
    let default = check_default(input, pattern.as_ref(), &at, errors);
    Compiled { pattern, default }
}

fn check_name(
    index: usize,
    input: &InputSpec,
    at: &str,
    seen: &mut HashMap<String, usize>,
    errors: &mut Errors,
) {
    if !is_identifier(&input.name) {
        errors.add(
            at,
            "name must be a letter or _ followed by up to 63 letters, digits or _",
        );
        return;
    }
    if let Some(builtin) = BUILTINS.iter().find(|b| b.eq_ignore_ascii_case(&input.name)) {
        errors.add(at, format!("name is taken by the builtin {builtin}"));
    }
    match seen.get(&input.name.to_ascii_lowercase()) {
        Some(&first) => errors.add(
            at,
            format!("name is already used by inputs[{first}] (names are unique ignoring case)"),
        ),
        None => {
            seen.insert(input.name.to_ascii_lowercase(), index);
        }
    }
}

/// Each constraint given is one the input's type has.
fn check_constraints_apply(input: &InputSpec, at: &str, errors: &mut Errors) {
    let kind = input.kind;
    let numeric = matches!(kind, InputType::Int | InputType::Float);
    let string = kind == InputType::String;
    let given = [
        ("min", input.min.is_some(), numeric, "int and float"),
        ("max", input.max.is_some(), numeric, "int and float"),
        ("min_length", input.min_length.is_some(), string, "string"),
        ("max_length", input.max_length.is_some(), string, "string"),
        ("pattern", input.pattern.is_some(), string, "string"),
        (
            "choices",
            input.choices.is_some(),
            kind == InputType::Enum,
            "enum",
        ),
    ];
    for (field, present, applies, types) in given {
        if present && !applies {
            errors.add(at, format!("{field} applies only to {types} inputs, not {kind}"));
        }
    }
}

/// `min`/`max` are integers for an int and in order; so are `min_length`/`max_length`.
fn check_bounds(input: &InputSpec, at: &str, errors: &mut Errors) {
    match input.kind {
        InputType::Int => {
            for (field, bound) in [("min", &input.min), ("max", &input.max)] {
                if let Some(n) = bound
                    && as_int(n).is_none()
                {
                    errors.add(at, format!("{field} {n} is not an integer"));
                }
            }
            if let (Some(min), Some(max)) = (&input.min, &input.max)
                && let (Some(lo), Some(hi)) = (as_int(min), as_int(max))
                && lo > hi
            {
                errors.add(at, format!("min {min} is above max {max}"));
            }
        }
        InputType::Float => {
            if let (Some(min), Some(max)) = (&input.min, &input.max)
                && let (Some(lo), Some(hi)) = (min.as_f64(), max.as_f64())
                && lo > hi
            {
                errors.add(at, format!("min {min} is above max {max}"));
            }
        }
        InputType::String => {
            if let (Some(lo), Some(hi)) = (input.min_length, input.max_length)
                && lo > hi
            {
                errors.add(at, format!("min_length {lo} is above max_length {hi}"));
            }
        }
        InputType::Bool | InputType::Enum | InputType::File => {}
    }
}

/// An enum has choices: some, each once, none holding NUL.
fn check_choices(input: &InputSpec, at: &str, errors: &mut Errors) {
    if input.kind != InputType::Enum {
        return;
    }
    let Some(choices) = &input.choices else {
        errors.add(at, "an enum input needs choices");
        return;
    };
    if choices.is_empty() {
        errors.add(at, "choices is empty");
    }
    let mut seen = HashSet::new();
    for choice in choices {
        if !seen.insert(choice) {
            errors.add(at, format!("choice {} is listed twice", excerpt(choice)));
        }
        if choice.contains('\0') {
            errors.add(at, format!("choice {} contains a NUL byte", excerpt(choice)));
        }
    }
}

/// `source` as a regex matching whole values. It is compiled on its own first, so a
/// pattern such as `a)(b` cannot pass by closing the group put around it.
fn compile(source: &str) -> Result<Regex, String> {
    Regex::new(source)
        .and_then(|_| Regex::new(&format!("^(?:{source})$")))
        .map_err(|e| format!("pattern does not compile: {}", regex_reason(&e)))
}

/// A regex error in one line: a syntax error's last line (the reason, without the
/// pattern drawn with carets above it), or the error as it is.
fn regex_reason(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => {
            let last = text.lines().last().unwrap_or_default();
            last.strip_prefix("error: ").unwrap_or(last).to_owned()
        }
        other => other.to_string(),
    }
}

/// The default agrees with `required`, its input's type and every constraint.
fn check_default(
    input: &InputSpec,
    pattern: Option<&Regex>,
    at: &str,
    errors: &mut Errors,
) -> Option<value::Value> {
    let default = input.default.as_ref()?;
    if input.required == Some(true) {
        errors.add(
            at,
            "required is true but there is a default (a default makes an input optional)",
        );
    }
    if input.kind == InputType::File {
        errors.add(at, "a file input cannot have a default");
        return None;
    }
    if input.kind == InputType::Enum && input.choices.as_ref().is_none_or(Vec::is_empty) {
        return None; // the missing choices are reported already
    }
    match value::check(input, pattern, default) {
        Ok(value) => Some(value),
        Err(problems) => {
            for problem in problems {
                errors.add(at, problem.as_default(default));
            }
            None
        }
    }
}

fn check_phase(name: PhaseName, phase: &Phase, scripts: &Scripts<'_>, errors: &mut Errors) {
    let at = name.as_str();
    if phase.script.trim().is_empty() {
        errors.add(at, "script is empty");
    }
    if phase.interpreter() == Some("") {
        errors.add(at, "the script's #! line names no interpreter");
    }
    if let Some(walltime) = &phase.walltime
        && walltime
            .as_f64()
            .is_none_or(|secs| secs <= 0.0 || Duration::try_from_secs_f64(secs).is_err())
    {
        errors.add(
            at,
            format!("walltime must be a positive number of seconds, got {walltime}"),
        );
    }
    if phase.after_failure.is_some() && name != PhaseName::Epilog {
        errors.add(at, "after_failure applies only to the epilog");
    }
    scripts.check(at, &phase.script, errors);
}

/// What the scripts' markup may name.
struct Scripts<'a> {
    inputs: HashSet<&'a str>,
    /// The list shown when markup names something unknown.
    known: String,
}

impl<'a> Scripts<'a> {
    fn new(inputs: &'a [InputSpec]) -> Scripts<'a> {
        let names = || inputs.iter().map(|input| input.name.as_str());
        // Each name once, in declaration order, though a spec may repeat one.
        let mut seen = HashSet::new();
        let distinct: Vec<&str> = names().filter(|name| seen.insert(*name)).collect();
        let known = match inputs.len() {
            0 => format!("no inputs; builtins: {}", BUILTINS.join(", ")),
            _ => format!(
                "inputs: {}; builtins: {}",
                name_list(distinct.into_iter()),
                BUILTINS.join(", ")
            ),
        };
        Scripts {
            inputs: names().collect(),
            known,
        }
    }

    /// `text` is within size, holds no NUL, and names only inputs and builtins (each
    /// unknown name reported once).
    fn check(&self, at: &str, text: &str, errors: &mut Errors) {
        if text.len() > MAX_SCRIPT_BYTES {
            errors.add(
                at,
                format!(
                    "script is {} bytes, above the limit of {MAX_SCRIPT_BYTES}",
                    text.len()
                ),
            );
        }
        if text.contains('\0') {
            errors.add(at, "script contains a NUL byte");
        }
        let mut reported = HashSet::new();
        for name in markup::names(text) {
            if !self.inputs.contains(name) && !BUILTINS.contains(&name) && reported.insert(name) {
                errors.add(at, format!("@@{name}@@ names no input ({})", self.known));
            }
        }
    }
}

/// Output patterns: few enough, each relative and staying inside the run directory.
fn check_outputs(outputs: &[String], errors: &mut Errors) {
    if outputs.len() > MAX_OUTPUTS {
        errors.add(
            "outputs",
            format!("at most {MAX_OUTPUTS} patterns, got {}", outputs.len()),
        );
    }
    for (i, pattern) in outputs.iter().enumerate() {
        let at = format!("outputs[{i}]");
        if pattern.is_empty() {
            errors.add(at, "pattern is empty");
        } else if pattern.contains('\0') {
            errors.add(at, "pattern contains a NUL byte");
        } else if pattern.starts_with('/') {
            errors.add(
                at,
                format!(
                    "pattern {} is absolute (outputs are relative to the run directory)",
                    excerpt(pattern)
                ),
            );
        } else if pattern.split('/').any(|part| part == "..") {
            errors.add(
                at,
                format!(
                    "pattern {} has a .. component (outputs stay in the run directory)",
                    excerpt(pattern)
                ),
            );
        }
    }
}

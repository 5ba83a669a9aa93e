use serde_json::json;

use super::*;

/// The spec of the design note: every kind of input, every phase.
pub(crate) const EXAMPLE: &str = r#"{
  "inputs": [
    {"name": "steps", "label": "Time steps", "type": "int", "required": true, "min": 1, "max": 100000, "order": 1},
    {"name": "solver", "type": "enum", "choices": ["cg", "gmres"], "default": "cg"},
    {"name": "title", "type": "string", "pattern": "[A-Za-z ]+", "max_length": 80, "required": false},
    {"name": "verbose", "type": "bool", "default": false, "hidden": true},
    {"name": "tol", "type": "float", "min": 0, "max": 1, "default": 1e-6},
    {"name": "mesh", "type": "file"}
  ],
  "prolog":  {"script": "mkdir out", "walltime": 60},
  "execute": {"script": "solver --steps @@steps@@ --solver @@solver@@ @@mesh@@ > out/log"},
  "epilog":  {"script": "tar czf out.tgz out", "after_failure": true},
  "env_script": "module load gcc",
  "outputs": ["out.tgz", "out/*.dat"],
  "snippet_bytes": 4096
}"#;

/// A spec with `inputs` and the execute script `script`.
fn spec_with(inputs: serde_json::Value, script: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"inputs": inputs, "execute": {"script": script}})).unwrap()
}

/// The problems `spec` has, shown as `at: message`.
fn problems(spec: &[u8]) -> Vec<String> {
    match AppSpec::parse(spec) {
        Ok(_) => panic!("the spec was accepted"),
        Err(errors) => errors.errors().iter().map(ToString::to_string).collect(),
    }
}

/// The one problem of a spec with the single input `input` (and no markup).
fn input_problem(input: serde_json::Value) -> String {
    let found = problems(&spec_with(json!([input]), "true"));
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

/// The one problem of a spec whose execute phase is `phase`.
fn phase_problem(phase: serde_json::Value) -> String {
    let found = problems(&serde_json::to_vec(&json!({"execute": phase})).unwrap());
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

#[test]
fn the_example_spec_is_accepted() {
    let spec = AppSpec::parse(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(spec.inputs().len(), 6);
    assert_eq!(
        spec.phases().map(|(name, _)| name).collect::<Vec<_>>(),
        PhaseName::ALL
    );
    assert_eq!(
        spec.phase(PhaseName::Prolog).unwrap().walltime(),
        Some(Duration::from_secs(60))
    );
    assert!(spec.phase(PhaseName::Epilog).unwrap().after_failure());
    assert!(!spec.phase(PhaseName::Execute).unwrap().after_failure());
    assert_eq!(spec.env_script(), Some("module load gcc"));
    assert_eq!(spec.outputs(), ["out.tgz", "out/*.dat"]);
    assert_eq!(spec.snippet_bytes(), 4096);
}

#[test]
fn required_follows_the_default_unless_given() {
    let spec = AppSpec::parse(EXAMPLE.as_bytes()).unwrap();
    let required: Vec<bool> = spec.inputs().iter().map(InputSpec::is_required).collect();
    assert_eq!(required, [true, false, false, false, false, true]);
}

#[test]
fn a_spec_serializes_back_to_the_json_it_came_from() {
    let spec = AppSpec::parse(EXAMPLE.as_bytes()).unwrap();
    let written = serde_json::to_value(&spec).unwrap();
    let original: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    assert_eq!(written, original);
    assert_eq!(AppSpec::parse(&serde_json::to_vec(&spec).unwrap()).unwrap(), spec);
}

#[test]
fn a_minimal_spec_serializes_without_empty_fields() {
    let spec = AppSpec::parse(br#"{"execute": {"script": "true"}}"#).unwrap();
    assert_eq!(
        serde_json::to_string(&spec).unwrap(),
        r#"{"execute":{"script":"true"}}"#
    );
    assert_eq!(spec.snippet_bytes(), DEFAULT_SNIPPET_BYTES);
    assert!(spec.phase(PhaseName::Prolog).is_none());
}

#[test]
fn deserializing_checks_the_spec_too() {
    let error = serde_json::from_str::<AppSpec>(r#"{"execute": {"script": "echo @@x@@"}}"#).unwrap_err();
    assert!(
        error.to_string().starts_with("execute: @@x@@ names no input"),
        "{error}"
    );
    let spec: AppSpec = serde_json::from_str(EXAMPLE).unwrap();
    assert_eq!(spec.inputs()[0].name, "steps");
}

#[test]
fn form_order_is_by_order_then_declaration_with_unordered_last() {
    let spec = AppSpec::parse(&spec_with(
        json!([
            {"name": "a", "type": "bool", "required": false},
            {"name": "b", "type": "bool", "required": false, "order": 2},
            {"name": "c", "type": "bool", "required": false, "order": -1},
            {"name": "d", "type": "bool", "required": false},
            {"name": "e", "type": "bool", "required": false, "order": 2},
        ]),
        "true",
    ))
    .unwrap();
    let order: Vec<&str> = spec.inputs_for_form().iter().map(|i| i.name.as_str()).collect();
    assert_eq!(order, ["c", "b", "e", "a", "d"]);
}

#[test]
fn the_interpreter_is_the_shebang_line() {
    let phase = |script: &str| -> Phase { serde_json::from_value(json!({"script": script})).unwrap() };
    assert_eq!(
        phase("#!/usr/bin/env python3\nprint(1)").interpreter(),
        Some("/usr/bin/env python3")
    );
    assert_eq!(
        phase("#! /bin/bash -e \r\necho").interpreter(),
        Some("/bin/bash -e")
    );
    assert_eq!(phase("echo hi\n#!/bin/bash").interpreter(), None);
    assert_eq!(phase(" #!/bin/bash").interpreter(), None);
}

#[test]
fn json_without_a_spec_shape_is_one_error_with_its_line() {
    for (spec, expected) in [
        (
            r#"{"execute": {"script": "x"}, "extra": 1}"#,
            "unknown field `extra`",
        ),
        (
            "{\"execute\": {\"script\": \"x\"},\n \"inputs\": [{\"name\": \"a\", \"type\": \"int\", \"lable\": \"A\"}]}",
            "unknown field `lable`",
        ),
        (
            r#"{"execute": {"script": "x", "timeout": 3}}"#,
            "unknown field `timeout`",
        ),
        (r#"{"prolog": {"script": "x"}}"#, "missing field `execute`"),
        (
            r#"{"execute": {"script": "x"}, "inputs": [{"name": "a", "type": "integer"}]}"#,
            "unknown variant `integer`",
        ),
        (
            r#"{"execute": {"script": "x"}, "snippet_bytes": -1}"#,
            "invalid value",
        ),
        ("{\"execute\": ", "EOF"),
    ] {
        let found = problems(spec.as_bytes());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("spec: ") && found[0].contains(expected),
            "{found:?}"
        );
        assert!(found[0].contains("line "), "{found:?}");
    }
}

#[test]
fn too_many_inputs_are_refused() {
    let inputs: Vec<_> = (0..=MAX_INPUTS)
        .map(|i| json!({"name": format!("i{i}"), "type": "bool"}))
        .collect();
    assert_eq!(
        problems(&spec_with(json!(inputs), "true")),
        ["inputs: at most 256 inputs, got 257"]
    );
    let inputs: Vec<_> = (0..MAX_INPUTS)
        .map(|i| json!({"name": format!("i{i}"), "type": "bool"}))
        .collect();
    assert!(AppSpec::parse(&spec_with(json!(inputs), "true")).is_ok());
}

#[test]
fn names_must_be_identifiers() {
    assert_eq!(
        input_problem(json!({"name": "time-steps", "type": "int"})),
        r#"inputs[0] ("time-steps"): name must be a letter or _ followed by up to 63 letters, digits or _"#
    );
    let long = "a".repeat(65);
    assert!(input_problem(json!({"name": long, "type": "int"})).contains("name must be"));
    assert!(input_problem(json!({"name": "", "type": "int"})).contains("name must be"));
}

#[test]
fn builtin_names_are_taken_in_any_case() {
    assert_eq!(
        input_problem(json!({"name": "RUN_DIR", "type": "string"})),
        "inputs[0] (RUN_DIR): name is taken by the builtin RUN_DIR"
    );
    assert_eq!(
        input_problem(json!({"name": "task_id", "type": "string"})),
        "inputs[0] (task_id): name is taken by the builtin TASK_ID"
    );
}

#[test]
fn names_are_unique_ignoring_case() {
    let found = problems(&spec_with(
        json!([
            {"name": "steps", "type": "int"},
            {"name": "steps", "type": "int"},
            {"name": "Steps", "type": "int"},
        ]),
        "true",
    ));
    assert_eq!(
        found,
        [
            "inputs[1] (steps): name is already used by inputs[0] (names are unique ignoring case)",
            "inputs[2] (Steps): name is already used by inputs[0] (names are unique ignoring case)",
        ]
    );
}

#[test]
fn a_constraint_for_another_type_is_named() {
    for (kind, field, value, types) in [
        ("string", "min", json!(1), "int and float"),
        ("bool", "max", json!(1), "int and float"),
        ("int", "min_length", json!(1), "string"),
        ("enum", "max_length", json!(1), "string"),
        ("file", "pattern", json!("x"), "string"),
        ("string", "choices", json!(["a"]), "enum"),
    ] {
        let mut input = json!({"name": "x", "type": kind});
        input[field] = value;
        if kind == "enum" {
            input["choices"] = json!(["a"]);
        }
        assert_eq!(
            input_problem(input),
            format!("inputs[0] (x): {field} applies only to {types} inputs, not {kind}")
        );
    }
}

#[test]
fn int_bounds_are_integers() {
    assert_eq!(
        input_problem(json!({"name": "n", "type": "int", "min": 1.5})),
        "inputs[0] (n): min 1.5 is not an integer"
    );
    assert_eq!(
        input_problem(json!({"name": "n", "type": "int", "max": 1e300})),
        "inputs[0] (n): max 1e+300 is not an integer"
    );
    assert!(
        AppSpec::parse(&spec_with(
            json!([{"name": "n", "type": "int", "min": 1.0}]),
            "true"
        ))
        .is_ok()
    );
}

#[test]
fn bounds_must_be_in_order() {
    assert_eq!(
        input_problem(json!({"name": "n", "type": "int", "min": 5, "max": 1})),
        "inputs[0] (n): min 5 is above max 1"
    );
    assert_eq!(
        input_problem(json!({"name": "x", "type": "float", "min": 0.5, "max": 0.25})),
        "inputs[0] (x): min 0.5 is above max 0.25"
    );
    assert_eq!(
        input_problem(json!({"name": "s", "type": "string", "min_length": 3, "max_length": 2})),
        "inputs[0] (s): min_length 3 is above max_length 2"
    );
    assert!(
        AppSpec::parse(&spec_with(
            json!([{"name": "n", "type": "int", "min": 2, "max": 2}]),
            "true"
        ))
        .is_ok()
    );
}

#[test]
fn an_enum_needs_distinct_choices() {
    assert_eq!(
        input_problem(json!({"name": "e", "type": "enum"})),
        "inputs[0] (e): an enum input needs choices"
    );
    assert_eq!(
        input_problem(json!({"name": "e", "type": "enum", "choices": []})),
        "inputs[0] (e): choices is empty"
    );
    assert_eq!(
        input_problem(json!({"name": "e", "type": "enum", "choices": ["cg", "gmres", "cg"]})),
        r#"inputs[0] (e): choice "cg" is listed twice"#
    );
    assert_eq!(
        input_problem(json!({"name": "e", "type": "enum", "choices": ["a\u{0}b"]})),
        r#"inputs[0] (e): choice "a\u0000b" contains a NUL byte"#
    );
}

#[test]
fn a_pattern_must_compile_on_its_own() {
    assert_eq!(
        input_problem(json!({"name": "s", "type": "string", "pattern": "[a-"})),
        "inputs[0] (s): pattern does not compile: unclosed character class"
    );
    // Wrapped in ^(?:...)$ this would compile, and match more than the author meant.
    assert!(
        input_problem(json!({"name": "s", "type": "string", "pattern": "a)|(b"}))
            .contains("does not compile")
    );
}

#[test]
fn required_with_a_default_is_a_contradiction() {
    assert_eq!(
        input_problem(json!({"name": "n", "type": "int", "required": true, "default": 1})),
        "inputs[0] (n): required is true but there is a default (a default makes an input optional)"
    );
}

#[test]
fn a_file_input_has_no_default() {
    assert_eq!(
        input_problem(json!({"name": "f", "type": "file", "default": "/etc/hosts"})),
        "inputs[0] (f): a file input cannot have a default"
    );
}

#[test]
fn a_default_must_satisfy_its_input() {
    for (input, expected) in [
        (
            json!({"name": "tol", "type": "float", "max": 1, "default": 3}),
            "inputs[0] (tol): default 3 is above max 1",
        ),
        (
            json!({"name": "n", "type": "int", "min": 1, "default": 0}),
            "inputs[0] (n): default 0 is below min 1",
        ),
        (
            json!({"name": "n", "type": "int", "default": "3"}),
            r#"inputs[0] (n): default must be an integer, got the string "3""#,
        ),
        (
            json!({"name": "n", "type": "int", "default": 2.5}),
            "inputs[0] (n): default must be an integer, got the number 2.5",
        ),
        (
            json!({"name": "b", "type": "bool", "default": 0}),
            "inputs[0] (b): default must be a boolean, got the number 0",
        ),
        (
            json!({"name": "s", "type": "string", "max_length": 2, "default": "abc"}),
            "inputs[0] (s): default is 3 characters long, above max_length 2",
        ),
        (
            json!({"name": "s", "type": "string", "min_length": 2, "default": "a"}),
            "inputs[0] (s): default is 1 characters long, below min_length 2",
        ),
        (
            json!({"name": "s", "type": "string", "pattern": "[a-z]+", "default": "abc1"}),
            r#"inputs[0] (s): default "abc1" does not match pattern [a-z]+"#,
        ),
        (
            json!({"name": "s", "type": "string", "default": "a\u{0}"}),
            "inputs[0] (s): default contains a NUL byte",
        ),
        (
            json!({"name": "e", "type": "enum", "choices": ["cg", "gmres"], "default": "lu"}),
            r#"inputs[0] (e): default the string "lu" is not one of the choices ("cg", "gmres")"#,
        ),
    ] {
        assert_eq!(input_problem(input), expected);
    }
}

#[test]
fn a_default_gets_every_problem_it_has() {
    let found = problems(&spec_with(
        json!([{"name": "s", "type": "string", "max_length": 2, "pattern": "[a-z]*", "default": "ABC"}]),
        "true",
    ));
    assert_eq!(
        found,
        [
            "inputs[0] (s): default is 3 characters long, above max_length 2",
            r#"inputs[0] (s): default "ABC" does not match pattern [a-z]*"#,
        ]
    );
}

#[test]
fn a_pattern_matches_the_whole_value() {
    let spec = |default: &str| {
        AppSpec::parse(&spec_with(
            json!([{"name": "s", "type": "string", "pattern": "(?m)[a-z]+", "default": default}]),
            "true",
        ))
    };
    assert!(spec("abc").is_ok());
    assert!(spec("abc1").is_err());
    assert!(spec("1abc").is_err());
    assert!(
        spec("abc\ndef").is_err(),
        "a flag inside the pattern cannot lift the anchors"
    );
}

#[test]
fn a_script_must_not_be_empty() {
    assert_eq!(phase_problem(json!({"script": ""})), "execute: script is empty");
    assert_eq!(
        phase_problem(json!({"script": " \n\t"})),
        "execute: script is empty"
    );
}

#[test]
fn a_script_holds_no_nul() {
    assert_eq!(
        phase_problem(json!({"script": "echo a\u{0}"})),
        "execute: script contains a NUL byte"
    );
}

#[test]
fn a_script_is_at_most_one_mebibyte() {
    let script = format!("#{}", "x".repeat(MAX_SCRIPT_BYTES));
    assert_eq!(
        phase_problem(json!({"script": script})),
        "execute: script is 1048577 bytes, above the limit of 1048576"
    );
    let script = format!("#{}", "x".repeat(MAX_SCRIPT_BYTES - 1));
    assert!(AppSpec::parse(&serde_json::to_vec(&json!({"execute": {"script": script}})).unwrap()).is_ok());
}

#[test]
fn a_shebang_must_name_an_interpreter() {
    assert_eq!(
        phase_problem(json!({"script": "#!  \necho"})),
        "execute: the script's #! line names no interpreter"
    );
}

#[test]
fn a_walltime_is_a_positive_number_of_seconds() {
    for walltime in [json!(0), json!(-5), json!(1e300)] {
        assert_eq!(
            phase_problem(json!({"script": "x", "walltime": walltime})),
            format!("execute: walltime must be a positive number of seconds, got {walltime}")
        );
    }
    let spec = AppSpec::parse(br#"{"execute": {"script": "x", "walltime": 1.5}}"#).unwrap();
    assert_eq!(
        spec.phase(PhaseName::Execute).unwrap().walltime(),
        Some(Duration::from_millis(1500))
    );
}

#[test]
fn after_failure_is_for_the_epilog_only() {
    let found = problems(
        br#"{"prolog": {"script": "x", "after_failure": false},
             "execute": {"script": "x", "after_failure": true},
             "epilog": {"script": "x", "after_failure": true}}"#,
    );
    assert_eq!(
        found,
        [
            "prolog: after_failure applies only to the epilog",
            "execute: after_failure applies only to the epilog",
        ]
    );
}

#[test]
fn markup_must_name_an_input_or_a_builtin() {
    let found = problems(
        br#"{"inputs": [{"name": "steps", "type": "int"}, {"name": "solver", "type": "string"}],
             "prolog": {"script": "echo @@nope@@ @@RUN_DIR@@ @@TASK_ID@@"},
             "execute": {"script": "run @@stpes@@ @@steps@@ @@stpes@@ @@run_dir@@"},
             "epilog": {"script": "@@ @@not valid-@@ @@1x@@ a@@b"},
             "env_script": "export X=@@envy@@"}"#,
    );
    let known = "(inputs: steps, solver; builtins: RUN_DIR, TASK_ID)";
    assert_eq!(
        found,
        [
            format!("prolog: @@nope@@ names no input {known}"),
            format!("execute: @@stpes@@ names no input {known}"),
            format!("execute: @@run_dir@@ names no input {known}"),
            format!("env_script: @@envy@@ names no input {known}"),
        ]
    );
}

#[test]
fn markup_in_a_spec_without_inputs_says_so() {
    assert_eq!(
        phase_problem(json!({"script": "@@x@@"})),
        "execute: @@x@@ names no input (no inputs; builtins: RUN_DIR, TASK_ID)"
    );
}

#[test]
fn the_env_script_is_held_to_the_script_limits() {
    let big = "x".repeat(MAX_SCRIPT_BYTES + 1);
    let found =
        problems(&serde_json::to_vec(&json!({"execute": {"script": "x"}, "env_script": big})).unwrap());
    assert_eq!(
        found,
        ["env_script: script is 1048577 bytes, above the limit of 1048576"]
    );
    let found = problems(br#"{"execute": {"script": "x"}, "env_script": "a\u0000"}"#);
    assert_eq!(found, ["env_script: script contains a NUL byte"]);
}

#[test]
fn outputs_stay_inside_the_run_directory() {
    let found = problems(
        br#"{"execute": {"script": "x"},
             "outputs": ["ok/*.dat", "/etc/passwd", "../up", "a/../../b", "a/..", "", "a\u0000", "a..b/c.."]}"#,
    );
    assert_eq!(
        found,
        [
            r#"outputs[1]: pattern "/etc/passwd" is absolute (outputs are relative to the run directory)"#,
            r#"outputs[2]: pattern "../up" has a .. component (outputs stay in the run directory)"#,
            r#"outputs[3]: pattern "a/../../b" has a .. component (outputs stay in the run directory)"#,
            r#"outputs[4]: pattern "a/.." has a .. component (outputs stay in the run directory)"#,
            "outputs[5]: pattern is empty",
            "outputs[6]: pattern contains a NUL byte",
        ]
    );
}

#[test]
fn too_many_outputs_are_refused() {
    let outputs: Vec<String> = (0..=MAX_OUTPUTS).map(|i| format!("f{i}")).collect();
    let found =
        problems(&serde_json::to_vec(&json!({"execute": {"script": "x"}, "outputs": outputs})).unwrap());
    assert_eq!(found, ["outputs: at most 64 patterns, got 65"]);
}

#[test]
fn snippet_bytes_is_at_most_one_mebibyte() {
    let found = problems(br#"{"execute": {"script": "x"}, "snippet_bytes": 1048577}"#);
    assert_eq!(
        found,
        ["snippet_bytes: must be at most 1048576 (1 MiB), got 1048577"]
    );
    let spec = AppSpec::parse(br#"{"execute": {"script": "x"}, "snippet_bytes": 0}"#).unwrap();
    assert_eq!(spec.snippet_bytes(), 0);
    let spec = AppSpec::parse(br#"{"execute": {"script": "x"}, "snippet_bytes": 1048576}"#).unwrap();
    assert_eq!(spec.snippet_bytes(), MAX_SNIPPET_BYTES);
}

#[test]
fn every_problem_is_listed_at_once_and_joined_with_semicolons() {
    let spec = br#"{
        "inputs": [
            {"name": "steps", "type": "int", "min": 10, "max": 1},
            {"name": "tol", "type": "float", "min": 0, "max": 1, "default": 3},
            {"name": "1bad", "type": "string", "choices": ["a"]}
        ],
        "execute": {"script": "run @@stpes@@", "walltime": 0},
        "outputs": ["/abs"],
        "snippet_bytes": 2000000
    }"#;
    let errors = AppSpec::parse(spec).unwrap_err();
    let known = "(inputs: steps, tol, 1bad; builtins: RUN_DIR, TASK_ID)";
    let expected = [
        "inputs[0] (steps): min 10 is above max 1".to_owned(),
        "inputs[1] (tol): default 3 is above max 1".to_owned(),
        r#"inputs[2] ("1bad"): name must be a letter or _ followed by up to 63 letters, digits or _"#
            .to_owned(),
        r#"inputs[2] ("1bad"): choices applies only to enum inputs, not string"#.to_owned(),
        "execute: walltime must be a positive number of seconds, got 0".to_owned(),
        format!("execute: @@stpes@@ names no input {known}"),
        r#"outputs[0]: pattern "/abs" is absolute (outputs are relative to the run directory)"#.to_owned(),
        "snippet_bytes: must be at most 1048576 (1 MiB), got 2000000".to_owned(),
    ];
    let found: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(found, expected);
    assert_eq!(errors.to_string(), expected.join("; "));
    assert_eq!(errors.errors()[1].at, "inputs[1] (tol)");
    assert_eq!(errors.errors()[1].message, "default 3 is above max 1");
}

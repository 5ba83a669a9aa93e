use serde_json::json;

use super::*;
use crate::markup::Builtins;
use crate::spec::PhaseName;
use crate::value::{FileMode, FileSource};

const EXAMPLE: &str = crate::spec::tests::EXAMPLE;

fn example() -> AppSpec {
    AppSpec::parse(EXAMPLE.as_bytes()).unwrap()
}

/// A spec with the single input `input`.
fn one_input(input: serde_json::Value) -> AppSpec {
    AppSpec::parse(&serde_json::to_vec(&json!({"inputs": [input], "execute": {"script": "true"}})).unwrap())
        .unwrap()
}

/// The problems of `values` for `spec`, shown.
fn problems(spec: &AppSpec, values: serde_json::Value) -> Vec<String> {
    match spec.validate(&values) {
        Ok(inputs) => panic!("the values were accepted: {inputs:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The one problem `value` has for `input`, shown.
fn problem(input: serde_json::Value, value: serde_json::Value) -> String {
    let name = input["name"].as_str().unwrap().to_owned();
    let found = problems(&one_input(input), json!({ name: value }));
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

fn file(value: serde_json::Value) -> Result<FileInput, String> {
    let spec = one_input(json!({"name": "f", "type": "file"}));
    match spec.validate(&json!({ "f": value })) {
        Ok(inputs) => Ok(inputs.files()[0].1.clone()),
        Err(errors) => Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

#[test]
fn defaults_are_filled_and_optional_inputs_left_out() {
    let inputs = example()
        .validate(&json!({"steps": 10, "mesh": "/data/mesh.msh"}))
        .unwrap();
    let names: Vec<&str> = inputs.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["steps", "solver", "verbose", "tol", "mesh"]);
    assert_eq!(inputs.get("steps"), Some(&Value::Int(10)));
    assert_eq!(inputs.get("solver"), Some(&Value::Str("cg".into())));
    assert_eq!(inputs.get("verbose"), Some(&Value::Bool(false)));
    assert_eq!(inputs.get("tol"), Some(&Value::Float(1e-6)));
    assert_eq!(inputs.get("title"), None);
    assert_eq!(inputs.len(), 5);
}

#[test]
fn given_values_take_the_place_of_defaults() {
    let inputs = example()
        .validate(&json!({"steps": 1, "solver": "gmres", "title": "Run A", "verbose": true, "tol": 0.5, "mesh": "/m"}))
        .unwrap();
    assert_eq!(inputs.get("solver"), Some(&Value::Str("gmres".into())));
    assert_eq!(inputs.get("title"), Some(&Value::Str("Run A".into())));
    assert_eq!(inputs.get("verbose"), Some(&Value::Bool(true)));
    assert_eq!(inputs.get("tol"), Some(&Value::Float(0.5)));
}

#[test]
fn null_counts_as_left_out() {
    let inputs = example()
        .validate(&json!({"steps": 1, "mesh": "/m", "solver": null, "title": null}))
        .unwrap();
    assert_eq!(inputs.get("solver"), Some(&Value::Str("cg".into())));
    assert_eq!(inputs.get("title"), None);
    assert_eq!(
        problems(&example(), json!({"steps": null, "mesh": "/m"})),
        ["input 'steps': required"]
    );
}

#[test]
fn values_must_be_an_object() {
    for values in [json!([1]), json!("steps=1"), json!(null)] {
        let errors = example().validate(&values).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].input, "");
        assert!(
            errors[0]
                .to_string()
                .starts_with("inputs: must be a JSON object of input names to values, got")
        );
    }
}

#[test]
fn a_missing_required_input_is_named() {
    assert_eq!(
        problems(&example(), json!({"mesh": "/m"})),
        ["input 'steps': required"]
    );
}

#[test]
fn an_unknown_name_lists_the_inputs() {
    assert_eq!(
        problems(&example(), json!({"steps": 1, "mesh": "/m", "stpes": 2})),
        [
            "input 'stpes': the application has no such input (inputs: steps, solver, title, verbose, tol, mesh)"
        ]
    );
    let none = AppSpec::parse(br#"{"execute": {"script": "true"}}"#).unwrap();
    assert_eq!(
        problems(&none, json!({"x": 1})),
        ["input 'x': the application has no inputs"]
    );
}

#[test]
fn an_int_is_a_json_integer() {
    let int = json!({"name": "n", "type": "int"});
    assert_eq!(
        problem(int.clone(), json!("3")),
        r#"input 'n': expected an integer, got the string "3""#
    );
    assert_eq!(
        problem(int.clone(), json!(2.5)),
        "input 'n': expected an integer, got the number 2.5"
    );
    assert_eq!(
        problem(int.clone(), json!(true)),
        "input 'n': expected an integer, got the boolean true"
    );
    assert_eq!(
        problem(int.clone(), json!([3])),
        "input 'n': expected an integer, got an array"
    );
    assert_eq!(
        problem(int.clone(), json!(u64::MAX)),
        "input 'n': expected an integer, got the number 18446744073709551615"
    );
    let inputs = one_input(int).validate(&json!({"n": 3.0})).unwrap();
    assert_eq!(inputs.get("n"), Some(&Value::Int(3)));
}

#[test]
fn numbers_stay_within_their_bounds() {
    let steps = json!({"name": "steps", "type": "int", "min": 1, "max": 100000});
    assert_eq!(
        problem(steps.clone(), json!(200000)),
        "input 'steps': must be at most 100000, got 200000"
    );
    assert_eq!(
        problem(steps.clone(), json!(0)),
        "input 'steps': must be at least 1, got 0"
    );
    assert!(one_input(steps).validate(&json!({"steps": 100000})).is_ok());
    let tol = json!({"name": "tol", "type": "float", "min": 0, "max": 1});
    assert_eq!(
        problem(tol.clone(), json!(1.5)),
        "input 'tol': must be at most 1, got 1.5"
    );
    assert_eq!(
        problem(tol.clone(), json!(-0.1)),
        "input 'tol': must be at least 0, got -0.1"
    );
    assert_eq!(
        one_input(tol).validate(&json!({"tol": 1})).unwrap().get("tol"),
        Some(&Value::Float(1.0))
    );
}

#[test]
fn a_float_is_any_number() {
    let x = json!({"name": "x", "type": "float"});
    assert_eq!(
        problem(x.clone(), json!("1.5")),
        r#"input 'x': expected a number, got the string "1.5""#
    );
    assert_eq!(problem(x, json!(null)), "input 'x': required");
}

#[test]
fn a_string_is_a_json_string_within_its_constraints() {
    let s = json!({"name": "s", "type": "string", "min_length": 2, "max_length": 4, "pattern": "[a-z]+"});
    assert_eq!(
        problem(s.clone(), json!(5)),
        "input 's': expected a string, got the number 5"
    );
    assert_eq!(
        problem(s.clone(), json!("a")),
        "input 's': must be at least 2 characters long, got 1"
    );
    assert_eq!(
        problem(json!({"name": "s", "type": "string"}), json!("é\u{0}")),
        "input 's': must not contain a NUL byte"
    );
    assert_eq!(
        problems(&one_input(s.clone()), json!({"s": "abcD5"})),
        [
            "input 's': must be at most 4 characters long, got 5",
            "input 's': must match the pattern [a-z]+",
        ]
    );
    assert_eq!(
        problem(s.clone(), json!("éé")),
        "input 's': must match the pattern [a-z]+"
    );
    assert_eq!(
        one_input(s).validate(&json!({"s": "abcd"})).unwrap().get("s"),
        Some(&Value::Str("abcd".into()))
    );
}

#[test]
fn string_lengths_count_characters() {
    let s = json!({"name": "s", "type": "string", "max_length": 2});
    assert!(one_input(s.clone()).validate(&json!({"s": "éé"})).is_ok());
    assert_eq!(
        problem(s, json!("日本語")),
        "input 's': must be at most 2 characters long, got 3"
    );
}

#[test]
fn a_bool_is_a_json_bool() {
    let b = json!({"name": "b", "type": "bool"});
    assert_eq!(
        problem(b.clone(), json!("true")),
        r#"input 'b': expected a boolean, got the string "true""#
    );
    assert_eq!(
        problem(b, json!(1)),
        "input 'b': expected a boolean, got the number 1"
    );
}

#[test]
fn an_enum_takes_one_of_its_choices() {
    let e = json!({"name": "solver", "type": "enum", "choices": ["cg", "gmres"]});
    assert_eq!(
        problem(e.clone(), json!("lu")),
        r#"input 'solver': must be one of "cg", "gmres", got the string "lu""#
    );
    assert_eq!(
        problem(e, json!(1)),
        r#"input 'solver': must be one of "cg", "gmres", got the number 1"#
    );
}

#[test]
fn a_file_is_a_path_a_path_object_or_an_upload() {
    assert_eq!(
        file(json!("/data/mesh.msh")).unwrap(),
        FileInput {
            source: FileSource::Path("/data/mesh.msh".into()),
            mode: FileMode::Copy,
            name: "mesh.msh".into()
        }
    );
    assert_eq!(
        file(json!({"path": "/data/big/", "mode": "link"})).unwrap(),
        FileInput {
            source: FileSource::Path("/data/big/".into()),
            mode: FileMode::Link,
            name: "big".into()
        }
    );
    assert_eq!(
        file(json!({"path": "/data/x", "name": "input.dat"})).unwrap(),
        FileInput {
            source: FileSource::Path("/data/x".into()),
            mode: FileMode::Copy,
            name: "input.dat".into()
        }
    );
    assert_eq!(
        file(json!({"data": "aGk=", "name": "mesh.msh"})).unwrap(),
        FileInput {
            source: FileSource::Upload("aGk=".into()),
            mode: FileMode::Copy,
            name: "mesh.msh".into()
        }
    );
}

#[test]
fn a_bad_file_says_why() {
    for (value, expected) in [
        (
            json!("data/mesh"),
            r#"the path must be absolute, got "data/mesh""#,
        ),
        (json!("/"), r#"the path "/" names no file"#),
        (json!("/data/.."), r#"the path "/data/.." names no file"#),
        (json!("/a\u{0}b"), "must not contain a NUL byte"),
        (
            json!(3),
            r#"expected a file (an absolute path, {"path", "mode"} or {"data", "name"}), got the number 3"#,
        ),
        (
            json!({"path": "/a", "size": 3}),
            r#"a file object has no key "size" (keys: path, mode, name, data)"#,
        ),
        (
            json!({"path": "/a", "data": "x"}),
            "a file object gives either path or data, not both",
        ),
        (
            json!({"mode": "copy"}),
            "a file object needs path (a file on the endpoint) or data (an upload)",
        ),
        (
            json!({"path": "/a", "mode": "move"}),
            r#"mode must be "copy" or "link", got "move""#,
        ),
        (json!({"path": 5}), "path must be a string, got the number 5"),
        (
            json!({"data": "x", "name": "n", "mode": "link"}),
            "mode applies only to a path: an upload is always copied",
        ),
        (
            json!({"data": "not base64!", "name": "n"}),
            "data must be the file's content in base64: Invalid symbol 32, offset 3.",
        ),
        (json!({"data": "x"}), "an upload needs a name to be staged under"),
        (
            json!({"data": "x", "name": "a/b"}),
            r#"the file name "a/b" must be one path component (no /)"#,
        ),
        (
            json!({"data": "x", "name": ".."}),
            r#"the file name ".." is not a file name"#,
        ),
        (json!({"data": "x", "name": ""}), r#"the file name "" is empty"#),
        (
            json!({"data": "eA==", "name": "execute.stdout"}),
            r#"the file name "execute.stdout" is the endpoint's own in the run directory (.ferry, <phase>.stdout, <phase>.stderr)"#,
        ),
        (
            json!({"path": "/data/x", "name": ".ferry"}),
            r#"the file name ".ferry" is the endpoint's own in the run directory (.ferry, <phase>.stdout, <phase>.stderr)"#,
        ),
        (
            json!({"data": "x", "name": "a\u{0}"}),
            r#"the file name "a\u0000" contains a NUL byte"#,
        ),
        (
            json!({"path": "/a", "name": "."}),
            r#"the file name "." is not a file name"#,
        ),
    ] {
        assert_eq!(
            file(value.clone()).unwrap_err(),
            format!("input 'f': {expected}"),
            "{value}"
        );
    }
    let long = "n".repeat(256);
    assert!(
        file(json!({"data": "x", "name": long}))
            .unwrap_err()
            .ends_with("is longer than 255 bytes")
    );
}

#[test]
fn two_files_staged_under_one_name_clash() {
    let spec = AppSpec::parse(
        br#"{"inputs": [{"name": "a", "type": "file"}, {"name": "b", "type": "file"}, {"name": "c", "type": "file"}],
             "execute": {"script": "true"}}"#,
    )
    .unwrap();
    assert_eq!(
        problems(
            &spec,
            json!({"a": "/x/mesh", "b": "/y/mesh", "c": {"data": "ZA==", "name": "mesh"}})
        ),
        [
            r#"input 'b': is staged as "mesh", as input 'a' is (give a file object a distinct name)"#,
            r#"input 'c': is staged as "mesh", as input 'a' is (give a file object a distinct name)"#,
        ]
    );
    assert!(
        spec.validate(&json!({"a": "/x/mesh", "b": {"path": "/y/mesh", "name": "mesh2"}, "c": "/z"}))
            .is_ok()
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let found = problems(
        &example(),
        json!({"steps": 200000, "solver": "lu", "title": "R2D2", "verbose": "yes", "tol": "small", "stpes": 1}),
    );
    assert_eq!(
        found,
        [
            "input 'steps': must be at most 100000, got 200000",
            r#"input 'solver': must be one of "cg", "gmres", got the string "lu""#,
            "input 'title': must match the pattern [A-Za-z ]+",
            r#"input 'verbose': expected a boolean, got the string "yes""#,
            r#"input 'tol': expected a number, got the string "small""#,
            "input 'mesh': required",
            "input 'stpes': the application has no such input (inputs: steps, solver, title, verbose, tol, mesh)",
        ]
    );
}

#[test]
fn a_very_long_unknown_name_is_cut() {
    let name = "x".repeat(1000);
    let errors = example()
        .validate(&json!({ "steps": 1, "mesh": "/m", name: 1 }))
        .unwrap_err();
    assert_eq!(errors[0].input, format!("\"{}\"...", "x".repeat(64)));
}

#[test]
fn inputs_go_to_json_and_back() {
    let spec = example();
    let inputs = spec
        .validate(&json!({"steps": 3, "title": "A", "mesh": {"path": "/m/mesh.msh", "mode": "link"}}))
        .unwrap();
    let written = inputs.to_json();
    assert_eq!(
        written,
        json!({
            "steps": 3, "solver": "cg", "title": "A", "verbose": false, "tol": 1e-6,
            "mesh": {"path": "/m/mesh.msh", "mode": "link", "name": "mesh.msh"}
        })
    );
    assert_eq!(spec.validate(&written).unwrap(), inputs);
    let upload = spec
        .validate(&json!({"steps": 3, "mesh": {"data": "b2Jq", "name": "m"}}))
        .unwrap();
    assert_eq!(upload.to_json()["mesh"], json!({"data": "b2Jq", "name": "m"}));
    assert_eq!(spec.validate(&upload.to_json()).unwrap(), upload);
}

#[test]
fn files_lists_the_file_inputs() {
    let inputs = example()
        .validate(&json!({"steps": 3, "mesh": "/m/mesh.msh"}))
        .unwrap();
    let files = inputs.files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "mesh");
    assert_eq!(files[0].1.name, "mesh.msh");
}

#[test]
fn env_vars_carry_unquoted_values_under_upper_case_names() {
    let inputs = example()
        .validate(&json!({"steps": 3, "title": "A b", "mesh": "/m/mesh.msh"}))
        .unwrap();
    assert_eq!(
        env_vars(&inputs),
        [
            ("FERRY_INPUT_STEPS", "3"),
            ("FERRY_INPUT_SOLVER", "cg"),
            ("FERRY_INPUT_TITLE", "A b"),
            ("FERRY_INPUT_VERBOSE", "false"),
            ("FERRY_INPUT_TOL", "0.000001"),
            ("FERRY_INPUT_MESH", "mesh.msh"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
}

#[test]
fn rendering_quotes_values_and_fills_builtins() {
    let spec = AppSpec::parse(
        br#"{"inputs": [
                {"name": "steps", "type": "int"},
                {"name": "title", "type": "string", "required": false},
                {"name": "mesh", "type": "file"}
             ],
             "prolog": {"script": "cd @@RUN_DIR@@ && echo @@TASK_ID@@"},
             "execute": {"script": "run --steps=@@steps@@ --title @@title@@ @@mesh@@ @@steps@@@@"},
             "env_script": "export T=@@title@@"}"#,
    )
    .unwrap();
    let builtins = Builtins {
        run_dir: "/scratch/my run",
        task_id: "0190-ab",
    };
    let inputs = spec
        .validate(&json!({"steps": 5, "mesh": {"data": "bw==", "name": "my mesh"}}))
        .unwrap();
    assert_eq!(
        spec.render(PhaseName::Execute, &inputs, &builtins).unwrap(),
        "run --steps=5 --title '' 'my mesh' 5@@"
    );
    assert_eq!(
        spec.render(PhaseName::Prolog, &inputs, &builtins).unwrap(),
        "cd '/scratch/my run' && echo 0190-ab"
    );
    assert_eq!(spec.render(PhaseName::Epilog, &inputs, &builtins), None);
    let inputs = spec
        .validate(&json!({"steps": 5, "mesh": "/m", "title": "@@steps@@ $X"}))
        .unwrap();
    assert_eq!(
        spec.render_env_script(&inputs, &builtins).unwrap(),
        "export T='@@steps@@ $X'"
    );
}

//! No value can add a command: scripts rendered from hostile values and run by a real
//! `/bin/sh` print each value back exactly and leave nothing behind.
//!
//! Each run happens in its own temporary directory with `HOME` pointing into it, so a
//! quoting bug that let `rm -rf ~` through would remove a canary file there (and fail
//! the test), never anything of the person running it.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_app::{AppSpec, Builtins, PhaseName, fill_braces, shell_quote};
use proptest::prelude::*;
use serde_json::json;

/// Values that would run a command, expand, glob or pass as an option if they reached
/// the shell unquoted.
const HOSTILE: &[&str] = &[
    "; rm -rf ~",
    "$(touch pwned)",
    "`touch pwned`",
    "a'b",
    "x\ny",
    "\"$HOME\"",
    "*",
    "--help",
    "-n",
    "",
    "'",
    "''",
    "\\",
    "\\'",
    "~",
    "~/x",
    "$((6*7))",
    "${HOME}",
    "&& touch pwned",
    "| touch pwned",
    "> pwned",
    "< /etc/passwd",
    "a b\tc",
    "# not a comment",
    "!!",
    "{a,b}",
    "[ab]",
    "x\n",
    "\n; touch pwned\n",
    "@@v@@",
    "$'\\x41'",
    "é ü 日本 \u{1F600}",
    "\u{7f}\u{1}\u{1b}[31m",
    "'; touch pwned; echo '",
    "\"; touch pwned; echo \"",
];

/// A directory of its own for one run, removed afterwards; `HOME` for the run is its
/// `home`, which holds a canary file.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ferry-app-injection-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("home")).unwrap();
        std::fs::write(dir.join("home/canary"), "still here").unwrap();
        // Something for a glob to match, were `*` ever left unquoted.
        std::fs::write(dir.join("a-file"), "").unwrap();
        Sandbox { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// Runs `script` with `/bin/sh -c` in the sandbox.
    fn sh(&self, script: &str) -> Output {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .current_dir(&self.dir)
            .env("HOME", self.home())
            .output()
            .expect("/bin/sh runs")
    }

    /// Nothing the value could have made exists, and nothing it could have removed is
    /// gone.
    fn assert_untouched(&self, value: &str) {
        assert!(!self.dir.join("pwned").exists(), "{value:?} created a file");
        assert!(!self.home().join("pwned").exists(), "{value:?} created a file");
        assert!(
            self.home().join("canary").exists(),
            "{value:?} removed the canary"
        );
        let mut entries: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        entries.sort();
        assert_eq!(entries, ["a-file", "home"], "{value:?} changed the directory");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `script` in a fresh sandbox and checks it printed `expected` exactly, succeeded,
/// and left the sandbox as it was.
fn assert_prints(script: &str, expected: &str, value: &str) {
    let sandbox = Sandbox::new();
    let out = sandbox.sh(script);
    assert!(
        out.status.success(),
        "{value:?}: {script:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "{value:?} rendered as {script:?}"
    );
    assert_eq!(out.stdout, expected.as_bytes());
    assert!(
        out.stderr.is_empty(),
        "{value:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sandbox.assert_untouched(value);
}

fn printing_spec() -> AppSpec {
    AppSpec::parse(
        br#"{"inputs": [{"name": "v", "type": "string"}],
             "execute": {"script": "printf '%s\\n' @@v@@"}}"#,
    )
    .unwrap()
}

#[test]
fn the_sandbox_notices_an_injection() {
    // The checks below could fail: an unquoted value does what it says.
    let sandbox = Sandbox::new();
    sandbox.sh("printf '%s\\n' ; rm -f ~/canary; touch pwned");
    assert!(sandbox.dir.join("pwned").exists());
    assert!(!sandbox.home().join("canary").exists());
}

#[test]
fn hostile_input_values_are_printed_not_run() {
    let spec = printing_spec();
    let builtins = Builtins {
        run_dir: "/nowhere",
        task_id: "t",
    };
    for &value in HOSTILE {
        let inputs = spec.validate(&json!({ "v": value })).unwrap();
        let script = spec.render(PhaseName::Execute, &inputs, &builtins).unwrap();
        assert_prints(&script, &format!("{value}\n"), value);
    }
}

#[test]
fn hostile_builtins_are_printed_not_run() {
    let spec =
        AppSpec::parse(br#"{"execute": {"script": "printf '%s|%s\\n' @@RUN_DIR@@ @@TASK_ID@@"}}"#).unwrap();
    for &value in HOSTILE {
        let builtins = Builtins {
            run_dir: value,
            task_id: value,
        };
        let script = spec
            .render(PhaseName::Execute, &Default::default(), &builtins)
            .unwrap();
        assert_prints(&script, &format!("{value}|{value}\n"), value);
    }
}

#[test]
fn hostile_file_names_are_printed_not_run() {
    let spec = AppSpec::parse(
        br#"{"inputs": [{"name": "f", "type": "file"}],
             "execute": {"script": "printf '%s\\n' @@f@@"}}"#,
    )
    .unwrap();
    let builtins = Builtins {
        run_dir: "/nowhere",
        task_id: "t",
    };
    for &name in HOSTILE
        .iter()
        .filter(|n| !n.is_empty() && !n.contains('/') && !matches!(**n, "." | ".."))
    {
        let inputs = spec
            .validate(&json!({"f": {"data": "b2JqZWN0LTE=", "name": name}}))
            .unwrap();
        let script = spec.render(PhaseName::Execute, &inputs, &builtins).unwrap();
        assert_prints(&script, &format!("{name}\n"), name);
    }
}

#[test]
fn an_optional_input_left_out_is_an_empty_word() {
    let spec = AppSpec::parse(
        br#"{"inputs": [{"name": "v", "type": "string", "required": false}],
             "execute": {"script": "printf '[%s]' @@v@@ x"}}"#,
    )
    .unwrap();
    let inputs = spec.validate(&json!({})).unwrap();
    let script = spec
        .render(
            PhaseName::Execute,
            &inputs,
            &Builtins {
                run_dir: "/",
                task_id: "t",
            },
        )
        .unwrap();
    assert_prints(&script, "[][x]", "(left out)");
}

#[test]
fn hostile_shell_function_values_are_printed_not_run() {
    for &value in HOSTILE {
        let values = json!({ "v": value });
        let command = fill_braces("printf '%s\\n' {v}", values.as_object().unwrap()).unwrap();
        assert_prints(&command, &format!("{value}\n"), value);
    }
}

#[test]
fn non_string_shell_function_values_are_their_json_text() {
    let values =
        json!({"n": 3, "list": ["a b", "$(touch pwned)"], "obj": {"k": "`touch pwned`"}, "null": null});
    let command = fill_braces(
        "printf '%s\\n' {n} {list} {obj} {null}",
        values.as_object().unwrap(),
    )
    .unwrap();
    assert_prints(
        &command,
        "3\n[\"a b\",\"$(touch pwned)\"]\n{\"k\":\"`touch pwned`\"}\nnull\n",
        "json values",
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_string_without_nul_is_one_literal_word(value in "[^\\x00]{0,40}") {
        let sandbox = Sandbox::new();
        let out = sandbox.sh(&format!("printf %s {}", shell_quote(&value)));
        prop_assert!(out.status.success(), "{:?}", String::from_utf8_lossy(&out.stderr));
        prop_assert_eq!(out.stdout, value.as_bytes());
    }
}

//! Ferry's applications: the pure part (no I/O).
//!
//! An application is a registered spec: up to three phase scripts (prolog, execute,
//! epilog) run in order in one run directory on an endpoint, and typed inputs that the
//! web-service checks before anything is queued. The inputs reach the scripts as
//! `@@NAME@@` markup, replaced by the value shell-quoted, so a value is always one word
//! to `/bin/sh` and can never add a command.
//!
//! - [`spec`]: the spec as JSON ([`AppSpec::parse`] lists every problem at once), its
//!   phases and inputs, and the limits it is held to.
//! - [`value`]: one input's typed value ([`Value`], [`FileInput`]) and the check of a
//!   JSON value against an input's type and constraints, shared by defaults and
//!   submissions.
//! - [`inputs`]: a submission checked against its spec ([`AppSpec::validate`]) into
//!   [`Inputs`], and the environment variables they make ([`env_vars`]).
//! - [`markup`]: finding and replacing `@@NAME@@` ([`render`]) and the builtins every
//!   script may name ([`Builtins`]).
//! - [`quote`]: POSIX shell quoting ([`shell_quote`]) and the `{name}` templates of
//!   Ferry's shell functions with quoted values ([`fill_braces`]).
//!
//! ```
//! use ferry_app::{AppSpec, Builtins, PhaseName};
//!
//! let spec = AppSpec::parse(br#"{
//!     "inputs": [{"name": "title", "type": "string"}],
//!     "execute": {"script": "echo @@title@@ > @@RUN_DIR@@/out"}
//! }"#).unwrap();
//! let inputs = spec.validate(&serde_json::json!({"title": "a; rm -rf ~"})).unwrap();
//! let builtins = Builtins { run_dir: "/scratch/run 1", task_id: "t-1" };
//! assert_eq!(
//!     spec.render(PhaseName::Execute, &inputs, &builtins).unwrap(),
//!     "echo 'a; rm -rf ~' > '/scratch/run 1'/out"
//! );
//! ```

#![forbid(unsafe_code)]

pub mod inputs;
pub mod markup;
pub mod quote;
pub mod spec;
pub mod value;

pub use inputs::{InputError, Inputs, env_vars};
pub use markup::{BUILTINS, Builtins, is_identifier, render};
pub use quote::{fill_braces, shell_quote};
pub use spec::{
    AppSpec, DEFAULT_SNIPPET_BYTES, InputSpec, InputType, MAX_INPUTS, MAX_OUTPUTS, MAX_SCRIPT_BYTES,
    MAX_SNIPPET_BYTES, Phase, PhaseName, SpecError, SpecErrors,
};
pub use value::{FileInput, FileMode, FileSource, Value, decode_upload};

//! Settings the service binaries share, and where settings come from.
//!
//! - [`Backends`]: the Redis, RabbitMQ and namespace settings the web-service and the
//!   forwarder both need, declared once and flattened into each one's `Config`.
//! - [`parse`]: every setting may come, in this order of precedence, from a flag, a
//!   `FERRY_*` environment variable, the TOML file named by `--config` (or
//!   `FERRY_CONFIG`), or its default; `--print-config` prints the effective values and
//!   where each came from, then exits.
//!
//! The file's keys are the flags' long names, with `-` or `_`. Top-level keys are for
//! every binary that reads the file (so they must be flags of each); a table named after
//! a binary (`[web-service]`, `[forwarder]`) is for that one alone, so one file serves
//! the whole service:
//!
//! ```toml
//! redis-url = "redis://redis.internal:6379"
//! amqp_url = "amqp://ferry:secret@rabbit.internal:5672/%2f"
//! namespace = "prod"
//!
//! [web-service]
//! listen = "0.0.0.0:8000"
//!
//! [forwarder]
//! prefetch = 64
//! ```
//!
//! An unknown key, an unknown table or a value of the wrong type is an error naming the
//! file and the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches};

/// The backends a service binary talks to. Flattened into the web-service's and the
/// forwarder's `Config`, so both read the same flags and variables.
#[derive(Debug, Clone, clap::Args)]
pub struct Backends {
    /// Redis URL (`redis://`, or `rediss://` for TLS).
    #[arg(long, env = "FERRY_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// RabbitMQ URL (`amqp://`, or `amqps://` for TLS).
    #[arg(
        long,
        env = "FERRY_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Prefix of every Redis key and queue name.
    #[arg(long, env = "FERRY_NAMESPACE", default_value = "ferry")]
    pub namespace: String,
    /// How long finished tasks and their results are kept, in seconds (0: forever).
    #[arg(long, env = "FERRY_RESULT_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub result_ttl_secs: u64,
    /// Delete queues unused for this many seconds (for tests; 0: never).
    #[arg(long, env = "FERRY_QUEUE_EXPIRES_SECS", default_value_t = 0)]
    pub queue_expires_secs: u64,
    /// A PEM file of CA certificates to trust, besides the system's: for `amqps://`, an
    /// `https://` --amqp-admin-url and `https://` webhooks; for `rediss://`, instead of
    /// the system's.
    #[arg(long, env = "FERRY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// RabbitMQ's management API (`http://user:password@host:15672`, the
    /// `rabbitmq_management` plugin). Set, every endpoint gets a broker user of its own
    /// that may read only its queues and write only to its exchange (the web-service
    /// makes them), each user's Globus Compute SDK one that may read only their task
    /// groups' result queues, and the forwarder takes a status or result message only
    /// from the identity of the endpoint it speaks for. Unset, all are handed the
    /// public broker URL as it is.
    #[arg(long, env = "FERRY_AMQP_ADMIN_URL", hide_env_values = true)]
    pub amqp_admin_url: Option<String>,
}

/// The two flags [`parse`] adds to a binary: flatten this into its top-level parser.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigFile {
    /// A TOML file of settings (keys are the flags' long names); flags and `FERRY_*`
    /// variables override it.
    #[arg(long, env = "FERRY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the effective settings and where each came from (flag, environment,
    /// file, default), then exit.
    #[arg(long)]
    pub print_config: bool,
}

/// A settings error: a file that cannot be read or holds what no flag takes.
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Parses `C` from the process's arguments, its environment and the config file (see
/// the module's doc); prints the settings and exits for `--print-config`; exits with
/// clap's message for bad flags and with a clear one for a bad file.
pub fn parse<C: clap::Parser>() -> C {
    match parse_from::<C>(std::env::args_os()) {
        Ok((config, None)) => config,
        Ok((_, Some(printed))) => {
            print!("{printed}");
            std::process::exit(0);
        }
        Err(Failure::Clap(e)) => e.exit(),
        Err(Failure::Settings(e)) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// Why [`parse_from`] failed.
#[derive(Debug)]
pub enum Failure {
    Clap(clap::Error),
    Settings(Error),
}

/// [`parse`] over given arguments: the parsed settings, and the `--print-config` text
/// when it was asked for.
pub fn parse_from<C: clap::Parser>(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<(C, Option<String>), Failure> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = C::command();
    let first = command
        .clone()
        .try_get_matches_from(&args)
        .map_err(Failure::Clap)?;
    let file = first.get_one::<PathBuf>("config").cloned();
    let mut from_file = Vec::new();
    let mut injected: Vec<OsString> = Vec::new();
    if let Some(path) = &file {
        for (id, values) in read_file(&command, path).map_err(Failure::Settings)? {
            // Flags and variables win over the file.
            if matches!(
                first.value_source(&id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            injected.extend(values);
            from_file.push(id);
        }
    }
    // The file's settings go first, before any subcommand: they are top-level flags.
    let mut full = Vec::with_capacity(args.len() + injected.len());
    full.extend(args.first().cloned());
    full.extend(injected);
    full.extend(args.iter().skip(1).cloned());
    let matches = command
        .clone()
        .try_get_matches_from(&full)
        .map_err(Failure::Clap)?;
    let config = C::from_arg_matches(&matches).map_err(Failure::Clap)?;
    let printed = matches
        .get_flag("print_config")
        .then(|| describe(&command, &matches, &from_file, file.as_deref()));
    Ok((config, printed))
}

/// The file's settings as `(arg id, flag arguments)`, checked against the command's
/// top-level flags.
fn read_file(command: &clap::Command, path: &Path) -> Result<Vec<(String, Vec<OsString>)>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error(format!("cannot read the config file {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e| {
        Error(format!(
            "the config file {} is not valid TOML: {e}",
            path.display()
        ))
    })?;
    // `ferry-web-service` reads `[web-service]`.
    let own = command.get_name().trim_start_matches("ferry-").to_owned();
    let mut entries = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(section) if key == own => entries.extend(section),
            toml::Value::Table(_) if SECTIONS.contains(&key.as_str()) => {}
            toml::Value::Table(_) => {
                return Err(Error(format!(
                    "{}: unknown table `[{key}]` (the tables are {})",
                    path.display(),
                    SECTIONS.join(", ")
                )));
            }
            value => entries.push((key, value)),
        }
    }
    let mut settings = Vec::new();
    for (key, value) in entries {
        let wanted = key.replace('_', "-");
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(wanted.as_str()) && !is_meta(a.get_id().as_str()))
        else {
            return Err(Error(format!(
                "{}: unknown setting `{key}` (the keys are the flags' long names; `--help` lists them)",
                path.display()
            )));
        };
        let flag = OsString::from(format!("--{wanted}"));
        let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
        let values = match (&value, takes_value) {
            (toml::Value::Boolean(true), false) => vec![flag],
            (toml::Value::Boolean(false), false) => Vec::new(),
            (toml::Value::String(s), true) => vec![flag, s.into()],
            (toml::Value::Integer(i), true) => vec![flag, i.to_string().into()],
            (toml::Value::Float(x), true) => vec![flag, x.to_string().into()],
            (toml::Value::Boolean(b), true) => vec![flag, b.to_string().into()],
            (other, _) => {
                return Err(Error(format!(
                    "{}: `{key}` must be {}, not {}",
                    path.display(),
                    if takes_value {
                        "a string or a number"
                    } else {
                        "true or false"
                    },
                    other.type_str()
                )));
            }
        };
        settings.push((arg.get_id().to_string(), values));
    }
    Ok(settings)
}

/// The binaries whose table a config file may have.
const SECTIONS: &[&str] = &["web-service", "forwarder"];

fn is_meta(id: &str) -> bool {
    matches!(id, "config" | "print_config" | "help" | "version")
}

/// `--print-config`'s text: one `key = value  # source` line per setting, passwords in
/// URLs and hidden values left out.
fn describe(
    command: &clap::Command,
    matches: &ArgMatches,
    from_file: &[String],
    file: Option<&Path>,
) -> String {
    let mut out = String::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if is_meta(id) || arg.get_long().is_none() {
            continue;
        }
        let value = match matches.get_raw(id) {
            Some(values) => values
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(","),
            None => {
                out.push_str(&format!("# {} (unset)\n", arg.get_long().unwrap_or(id)));
                continue;
            }
        };
        let value = if arg.is_hide_env_values_set() {
            redact(&value)
        } else {
            redact_url(&value)
        };
        let source = if from_file.iter().any(|f| f == id) {
            format!(
                "file {}",
                file.map(|p| p.display().to_string()).unwrap_or_default()
            )
        } else {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".to_owned(),
                Some(ValueSource::EnvVariable) => format!(
                    "environment {}",
                    arg.get_env()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                _ => "default".to_owned(),
            }
        };
        out.push_str(&format!(
            "{} = {}  # {source}\n",
            arg.get_long().unwrap_or(id),
            toml::Value::String(value)
        ));
    }
    out
}

/// A hidden value: its scheme and host at most.
fn redact(value: &str) -> String {
    let url = redact_url(value);
    if url == value && !value.is_empty() {
        "(hidden)".to_owned()
    } else {
        url
    }
}

/// A URL with its password replaced by `***`.
fn redact_url(value: &str) -> String {
    let Some(scheme) = value.find("://") else {
        return value.to_owned();
    };
    let rest = &value[scheme + 3..];
    let Some(at) = rest.find('@') else {
        return value.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}://{}:***{}", &value[..scheme], &userinfo[..colon], &rest[at..]),
        None => value.to_owned(),
    }
}

//! Where settings come from: flags over the file over defaults, the file's errors, and
//! `--print-config`. (Environment variables are checked through a real binary in
//! `crates/tests`, since a test may not change its own environment safely.)

use std::io::Write;

use ferry_settings::{Backends, ConfigFile, Failure, parse_from};

#[derive(clap::Parser, Debug)]
#[command(name = "ferry-forwarder")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    backends: Backends,
    #[command(flatten)]
    file: ConfigFile,
    /// A flag of the binary's own.
    #[arg(long, default_value_t = 7)]
    workers: u32,
    #[arg(long)]
    verbose: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    CreateUser { name: String },
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn parse(args: &[&str]) -> Result<(Cli, Option<String>), Failure> {
    parse_from::<Cli>(std::iter::once("bin").chain(args.iter().copied()))
}

#[test]
fn the_file_sets_what_no_flag_does_and_flags_win() {
    let f =
        file("redis-url = \"redis://file:6379\"\nnamespace = \"from-file\"\nworkers = 3\nverbose = true\n");
    let path = f.path().to_str().unwrap();
    let (cli, printed) = parse(&["--config", path, "--namespace", "from-flag"]).unwrap();
    assert_eq!(cli.backends.redis_url, "redis://file:6379");
    assert_eq!(cli.backends.namespace, "from-flag");
    assert_eq!(cli.workers, 3);
    assert!(cli.verbose);
    assert!(printed.is_none());
}

#[test]
fn snake_case_keys_work_too_and_defaults_stay() {
    let f = file("amqp_url = \"amqp://u:p@rabbit:5672/%2f\"\n");
    let (cli, _) = parse(&["--config", f.path().to_str().unwrap()]).unwrap();
    assert_eq!(cli.backends.amqp_url, "amqp://u:p@rabbit:5672/%2f");
    assert_eq!(cli.backends.redis_url, "redis://127.0.0.1:6379");
    assert_eq!(cli.workers, 7);
}

#[test]
fn file_settings_go_before_a_subcommand() {
    let f = file("namespace = \"ns\"\n");
    let (cli, _) = parse(&["--config", f.path().to_str().unwrap(), "create-user", "ada"]).unwrap();
    assert_eq!(cli.backends.namespace, "ns");
    assert!(matches!(cli.command, Some(Command::CreateUser { ref name }) if name == "ada"));
}

#[test]
fn an_unknown_key_is_named() {
    let f = file("redis-ulr = \"redis://x\"\n");
    let Err(Failure::Settings(e)) = parse(&["--config", f.path().to_str().unwrap()]) else {
        panic!("an unknown key must be refused");
    };
    let message = e.to_string();
    assert!(message.contains("unknown setting `redis-ulr`"), "{message}");
    assert!(message.contains(f.path().to_str().unwrap()), "{message}");
}

#[test]
fn a_wrong_type_is_named() {
    let f = file("workers = [1, 2]\n");
    let Err(Failure::Settings(e)) = parse(&["--config", f.path().to_str().unwrap()]) else {
        panic!("an array must be refused");
    };
    assert!(
        e.to_string()
            .contains("`workers` must be a string or a number, not array"),
        "{e}"
    );
    let f = file("workers = \"many\"\n");
    // A value the flag's parser refuses is clap's error, naming the flag.
    let Err(Failure::Clap(e)) = parse(&["--config", f.path().to_str().unwrap()]) else {
        panic!("a non-number must be refused");
    };
    assert!(e.to_string().contains("--workers"), "{e}");
}

#[test]
fn bad_toml_and_a_missing_file_are_named() {
    let f = file("redis-url = \n");
    let Err(Failure::Settings(e)) = parse(&["--config", f.path().to_str().unwrap()]) else {
        panic!("bad TOML must be refused");
    };
    assert!(e.to_string().contains("is not valid TOML"), "{e}");
    let Err(Failure::Settings(e)) = parse(&["--config", "/nonexistent/ferry.toml"]) else {
        panic!("a missing file must be refused");
    };
    assert!(
        e.to_string()
            .contains("cannot read the config file /nonexistent/ferry.toml"),
        "{e}"
    );
}

#[test]
fn print_config_says_where_each_value_came_from_and_hides_passwords() {
    let f = file("amqp-url = \"amqp://ferry:s3cret@rabbit:5672/%2f\"\n");
    let path = f.path().to_str().unwrap();
    let (_, printed) = parse(&[
        "--config",
        path,
        "--print-config",
        "--workers",
        "5",
        "--amqp-admin-url",
        "http://admin:hunter2@rabbit:15672",
    ])
    .unwrap();
    let printed = printed.expect("--print-config prints");
    assert!(
        printed.contains(&format!(
            "amqp-url = \"amqp://ferry:***@rabbit:5672/%2f\"  # file {path}"
        )),
        "{printed}"
    );
    assert!(printed.contains("workers = \"5\"  # flag"), "{printed}");
    assert!(
        printed.contains("redis-url = \"redis://127.0.0.1:6379\"  # default"),
        "{printed}"
    );
    assert!(
        printed.contains("amqp-admin-url = \"http://admin:***@rabbit:15672\"  # flag"),
        "{printed}"
    );
    assert!(printed.contains("# ca-file (unset)"), "{printed}");
    assert!(
        !printed.contains("s3cret") && !printed.contains("hunter2"),
        "{printed}"
    );
}

#[test]
fn a_binarys_table_is_its_own_and_other_tables_are_left() {
    let f = file("namespace = \"shared\"\n[forwarder]\nworkers = 9\n[web-service]\nlisten = \"0.0.0.0:1\"\n");
    let (cli, _) = parse(&["--config", f.path().to_str().unwrap()]).unwrap();
    assert_eq!(cli.backends.namespace, "shared");
    assert_eq!(cli.workers, 9);
    let f = file("[forwader]\nworkers = 9\n");
    let Err(Failure::Settings(e)) = parse(&["--config", f.path().to_str().unwrap()]) else {
        panic!("a misspelt table must be refused");
    };
    assert!(e.to_string().contains("unknown table `[forwader]`"), "{e}");
}

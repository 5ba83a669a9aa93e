//! The operator's commands: users and their tokens, straight in Redis (`ferry-web-service
//! user ...`, `token ...`). A token is printed once, when it is made; lists show ids (the
//! first 16 hex digits of its SHA-256), which revoke takes. A revoked or expired token
//! stops working within [`crate::TOKEN_CACHE_TTL`] on every web-service.

use std::time::Duration;

use ferry_proto::time::{Micros, now_micros, to_secs};
use ferry_store::{Principal, Store};

use crate::Config;

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user; prints their first token on stdout. A name already taken is
    /// refused (`token create NAME` gives that user another token).
    Create {
        name: String,
        /// The token stops working after this long (`90d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// Every user.
    List,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Another token for a user (by id or name); printed on stdout.
    Create {
        user: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// What the token is for, shown in lists.
        #[arg(long)]
        label: Option<String>,
    },
    /// A user's tokens, and their endpoints' credentials.
    List { user: String },
    /// Revoke a token by its id (from `token list`).
    Revoke { id: String },
}

async fn store(config: &Config) -> anyhow::Result<Store> {
    let ca = config.ca_pem()?;
    Ok(Store::connect_tls(
        &config.backends.redis_url,
        ca.as_deref(),
        &config.backends.namespace,
        config.backends.result_ttl_secs,
    )
    .await?)
}

fn micros(d: Option<Duration>) -> Option<Micros> {
    d.map(|d| d.as_micros() as Micros)
}

pub async fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let store = store(config).await?;
    match command {
        UserCommand::Create { name, expires } => {
            if let Some(existing) = store.find_user(&name).await?
                && existing.name == name
            {
                anyhow::bail!(
                    "a user named {name} exists already ({}): `ferry-web-service token create {name}` gives them another token",
                    existing.user_id
                );
            }
            let (user, token) = store.create_user_expiring(&name, micros(expires)).await?;
            eprintln!("created user {name} ({user})");
            println!("{token}");
        }
        UserCommand::List => {
            println!("{:<38} {:<24} CREATED", "USER", "NAME");
            for u in store.list_users().await? {
                println!("{:<38} {:<24} {}", u.user_id, u.name, when(u.created_at));
            }
        }
    }
    Ok(())
}

pub async fn token(config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let store = store(config).await?;
    let find = |who: String| {
        let store = store.clone();
        async move {
            store
                .find_user(&who)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user with the id or name {who:?}"))
        }
    };
    match command {
        TokenCommand::Create { user, expires, label } => {
            let u = find(user).await?;
            let token = store
                .create_credential(Principal::User(u.user_id), micros(expires), label.as_deref())
                .await?;
            eprintln!("created a token for {} ({})", u.name, u.user_id);
            println!("{token}");
        }
        TokenCommand::List { user } => {
            let u = find(user).await?;
            println!(
                "{:<18} {:<48} {:<20} {:<20} LABEL",
                "ID", "FOR", "CREATED", "EXPIRES"
            );
            for c in store.list_credentials(u.user_id).await? {
                let what = match c.principal {
                    Principal::User(_) => "user".to_owned(),
                    Principal::Endpoint { endpoint, .. } => format!("endpoint {endpoint}"),
                };
                println!(
                    "{:<18} {:<48} {:<20} {:<20} {}",
                    c.id,
                    what,
                    when(c.created_at),
                    c.expires_at.map(when).unwrap_or_else(|| "never".into()),
                    c.label.unwrap_or_default()
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !store.revoke_credential(&id).await? {
                anyhow::bail!("no token with the id {id:?} (see `token list USER`)");
            }
            println!(
                "revoked {id}; it stops working within {} s",
                crate::TOKEN_CACHE_TTL.as_secs()
            );
        }
    }
    Ok(())
}

/// Unix seconds, and how long ago or ahead.
fn when(at: Micros) -> String {
    let now = now_micros();
    let (d, sign) = if at > now {
        (at - now, "in ")
    } else {
        (now - at, "")
    };
    let ago = if sign.is_empty() { " ago" } else { "" };
    format!(
        "{}{}{} ({:.0})",
        sign,
        humantime::format_duration(Duration::from_secs(d / 1_000_000)),
        ago,
        to_secs(at)
    )
}

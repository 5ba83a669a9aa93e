//! Broker identities: a RabbitMQ user for each endpoint, and one for each user's
//! Globus Compute result stream, made and removed through RabbitMQ's management HTTP
//! API (the `rabbitmq_management` plugin, which ships with RabbitMQ), so that each can
//! do with the broker exactly what it needs and nothing more.
//!
//! Why the management API and not `rabbitmq_auth_backend_http`: it needs nothing of the
//! broker's own configuration (the backend plugin must be named in `rabbitmq.conf`, and
//! then every login and every resource check of every client waits on the web-service),
//! and a user made here keeps working while the web-service is down.
//!
//! | identity | user name | configure | write | read |
//! |---|---|---|---|---|
//! | endpoint `E` | `<ns>-ep-E` | nothing | its exchange `<ns>.ep.E.out` | its queues `<ns>.ep.E.tasks`, `<ns>.ep.E.control` |
//! | user `U`'s result stream | `<ns>-user-U` | nothing | nothing | its task-group queues `<ns>.tg.U.*` |
//!
//! An endpoint's password is made anew at each registration (the endpoint gets the URL
//! then); a result-stream password is made once and kept in Redis, since the Globus
//! Compute SDK asks for the URL on every reconnection.

use std::time::Duration;

use serde_json::json;

/// The management API of one RabbitMQ, and the vhost Ferry uses.
#[derive(Clone)]
pub struct BrokerAdmin {
    http: reqwest::Client,
    /// `http://host:15672` (no credentials).
    base: String,
    user: String,
    password: String,
    vhost: String,
}

/// What went wrong talking to the management API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("FERRY_AMQP_ADMIN_URL {0:?} is not http(s)://user:password@host:port")]
    BadUrl(String),
    #[error("FERRY_AMQP_URL: {0}")]
    BadAmqpUrl(String),
    #[error("the broker's management API at {url} cannot be reached: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the broker's management API answered {status} to {what}: {body}")]
    Refused {
        what: String,
        status: reqwest::StatusCode,
        body: String,
    },
}

/// `.` and friends escaped for a regular expression (queue names hold dots).
fn escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let special = ".^$*+?()[]{}|\\-".contains(c);
            special.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

impl BrokerAdmin {
    /// For the management API at `admin_url` (`http://user:password@host:15672`) and
    /// Ferry's vhost (from its AMQP URL).
    pub fn new(admin_url: &str, amqp_url: &str, http: reqwest::Client) -> Result<Self, Error> {
        let bad = || Error::BadUrl(admin_url.to_owned());
        let parsed = reqwest::Url::parse(admin_url).map_err(|_| bad())?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.username().is_empty() {
            return Err(bad());
        }
        let user = percent_decode(parsed.username());
        let password = percent_decode(parsed.password().unwrap_or_default());
        let mut base = parsed.clone();
        base.set_username("").map_err(|_| bad())?;
        base.set_password(None).map_err(|_| bad())?;
        let vhost = ferry_broker::url_parts(amqp_url)
            .map(|(_, vhost)| vhost)
            .map_err(|e| Error::BadAmqpUrl(e.to_string()))?;
        Ok(Self {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
            user,
            password,
            vhost,
        })
    }

    fn vhost_path(&self) -> String {
        urlencode(&self.vhost)
    }

    async fn put(&self, path: &str, body: serde_json::Value, what: &str) -> Result<(), Error> {
        let url = format!("{}/api/{path}", self.base);
        let answer = self
            .http
            .put(&url)
            .basic_auth(&self.user, Some(&self.password))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|source| Error::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        check(answer, what).await
    }

    async fn delete(&self, path: &str, what: &str) -> Result<(), Error> {
        let url = format!("{}/api/{path}", self.base);
        let answer = self
            .http
            .delete(&url)
            .basic_auth(&self.user, Some(&self.password))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|source| Error::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        if answer.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(answer, what).await
    }

    /// Makes (or updates) a user with this password and these permissions on Ferry's
    /// vhost (regular expressions over resource names).
    async fn grant(
        &self,
        name: &str,
        password: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), Error> {
        self.put(
            &format!("users/{}", urlencode(name)),
            json!({"password": password, "tags": ""}),
            &format!("making broker user {name}"),
        )
        .await?;
        self.put(
            &format!("permissions/{}/{}", self.vhost_path(), urlencode(name)),
            json!({"configure": configure, "write": write, "read": read}),
            &format!("granting broker user {name} its permissions"),
        )
        .await
    }

    /// Makes (or renews) an endpoint's broker user `name` with a new password: it may
    /// write to `exchange` and read `queues`, nothing else. Returns the password.
    pub async fn endpoint_identity(
        &self,
        name: &str,
        exchange: &str,
        queues: &[String],
    ) -> Result<String, Error> {
        let password = hex::encode(rand::random::<[u8; 24]>());
        let read: Vec<String> = queues.iter().map(|q| escape(q)).collect();
        self.grant(
            name,
            &password,
            "^$",
            &format!("^{}$", escape(exchange)),
            &format!("^({})$", read.join("|")),
        )
        .await?;
        Ok(password)
    }

    /// Removes a broker user (its connections close).
    pub async fn remove_user(&self, name: &str) -> Result<(), Error> {
        self.delete(
            &format!("users/{}", urlencode(name)),
            &format!("removing broker user {name}"),
        )
        .await
    }

    /// Makes (or renews) the broker user `name` that reads a user's task-group result
    /// queues (those named `prefix...`), with this password; it may do nothing else.
    pub async fn result_reader(&self, name: &str, password: &str, prefix: &str) -> Result<(), Error> {
        let queues = format!("^{}", escape(prefix));
        self.grant(name, password, "^$", "^$", &queues).await
    }
}

async fn check(answer: reqwest::Response, what: &str) -> Result<(), Error> {
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let body = answer.text().await.unwrap_or_default();
    Err(Error::Refused {
        what: what.to_owned(),
        status,
        body: body.chars().take(500).collect(),
    })
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with its credentials replaced by `user` and `password`.
pub fn with_credentials(url: &str, user: &str, password: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{}:{}@{host}", urlencode(user), urlencode(password))
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_escaped_for_permissions() {
        assert_eq!(escape("ferry.ep.1-2.out"), r"ferry\.ep\.1\-2\.out");
    }

    #[test]
    fn credentials_are_replaced_in_a_url() {
        assert_eq!(
            with_credentials("amqps://guest:guest@mq.example.org:5671/%2f", "ferry-ep-x", "p/w"),
            "amqps://ferry-ep-x:p%2Fw@mq.example.org:5671/%2f"
        );
        assert_eq!(
            with_credentials("amqp://mq:5672/%2f", "u", "p"),
            "amqp://u:p@mq:5672/%2f"
        );
    }

    #[test]
    fn an_admin_url_needs_credentials() {
        let http = reqwest::Client::new();
        assert!(BrokerAdmin::new("http://127.0.0.1:15672", "amqp://x/%2f", http.clone()).is_err());
        let admin =
            BrokerAdmin::new("http://guest:g%40st@127.0.0.1:15672/", "amqp://x:5672/%2f", http).unwrap();
        assert_eq!(
            (admin.user.as_str(), admin.password.as_str(), admin.vhost.as_str()),
            ("guest", "g@st", "/")
        );
        assert_eq!(admin.base, "http://127.0.0.1:15672");
    }
}

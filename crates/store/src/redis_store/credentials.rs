//! Users and their credentials: bearer tokens for users, and for endpoints (an endpoint
//! credential acts for one endpoint only). Only a token's SHA-256 is stored; a token is
//! named in lists by the first 16 hex digits of that hash (its id), which cannot be
//! turned back into the token.
//!
//! Keys:
//! - `<ns>:users`: every user id;
//! - `<ns>:user:<id>`: `name`, `created`;
//! - `<ns>:cred:<sha256>`: a credential: `u` user, `e` endpoint (endpoint credentials),
//!   `c` created, `x` expires (micros; the key expires then too), `n` label;
//! - `<ns>:credid:<id>`: the full hash of the credential with that id;
//! - `<ns>:user:<id>:creds`, `<ns>:ep:<id>:creds`: the ids of a user's, an endpoint's,
//!   credentials;
//! - `<ns>:token:<sha256>`: a user token of an earlier version (still honoured);
//! - `<ns>:user:<id>:amqp`: the password of the broker identity that reads the user's
//!   task-group result queues (kept as is: the Globus Compute SDK is handed it in a URL
//!   on every reconnection, and it opens nothing but those queues).

use std::collections::HashMap;

use ferry_proto::time::{Micros, now_micros};
use ferry_proto::{EndpointId, UserId};
use redis::AsyncCommands;
use sha2::{Digest, Sha256};

use super::{Fields, Store, parse_id};
use crate::Result;

/// Who a credential acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A user: their own functions, endpoints, tasks.
    User(UserId),
    /// One endpoint of `owner`: it registers, reads and deletes itself, and moves its
    /// own tasks' data; nothing else.
    Endpoint { endpoint: EndpointId, owner: UserId },
}

impl Principal {
    /// The user the credential belongs to.
    pub fn owner(self) -> UserId {
        match self {
            Principal::User(u) | Principal::Endpoint { owner: u, .. } => u,
        }
    }
}

/// A credential as lists show it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The first 16 hex digits of the token's SHA-256.
    pub id: String,
    pub principal: Principal,
    pub created_at: Micros,
    pub expires_at: Option<Micros>,
    pub label: Option<String>,
}

/// A user as lists show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub user_id: UserId,
    pub name: String,
    pub created_at: Micros,
}

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token with this prefix (`fy_` users, `fe_` endpoints).
fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 24]>()))
}

impl Store {
    fn cred_key(&self, hash: &str) -> String {
        format!("{}:cred:{hash}", self.ns)
    }

    fn cred_id_key(&self, id: &str) -> String {
        format!("{}:credid:{id}", self.ns)
    }

    fn user_creds_key(&self, user: UserId) -> String {
        format!("{}:user:{user}:creds", self.ns)
    }

    fn endpoint_creds_key(&self, endpoint: EndpointId) -> String {
        format!("{}:ep:{endpoint}:creds", self.ns)
    }

    fn users_key(&self) -> String {
        format!("{}:users", self.ns)
    }

    fn legacy_token_key(&self, token: &str) -> String {
        format!("{}:token:{}", self.ns, sha(token))
    }

    /// Creates a user and a first token for them (expiring after `expires_in` micros,
    /// if given). Returns the user's id and the token, the one time it is seen.
    pub async fn create_user(&self, name: &str) -> Result<(UserId, String)> {
        self.create_user_expiring(name, None).await
    }

    pub async fn create_user_expiring(
        &self,
        name: &str,
        expires_in: Option<Micros>,
    ) -> Result<(UserId, String)> {
        let user_id = UserId::new();
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset_multiple(
                self.user_key(user_id),
                &[("name", name.to_owned()), ("created", now_micros().to_string())],
            )
            .sadd(self.users_key(), user_id.to_string())
            .query_async::<()>(&mut conn)
            .await?;
        let token = self
            .create_credential(Principal::User(user_id), expires_in, Some("first token"))
            .await?;
        Ok((user_id, token))
    }

    /// The password of `user`'s result-reading broker identity: made the first time,
    /// the same ever after.
    pub async fn result_reader_password(&self, user: UserId) -> Result<String> {
        let key = format!("{}:user:{user}:amqp", self.ns);
        let mut conn = self.conn.clone();
        let fresh = hex::encode(rand::random::<[u8; 24]>());
        let _: bool = conn.set_nx(&key, &fresh).await?;
        Ok(conn.get(&key).await?)
    }

    /// Makes a credential for `principal`; returns the token, the one time it is seen.
    pub async fn create_credential(
        &self,
        principal: Principal,
        expires_in: Option<Micros>,
        label: Option<&str>,
    ) -> Result<String> {
        let token = new_token(match principal {
            Principal::User(_) => "fy_",
            Principal::Endpoint { .. } => "fe_",
        });
        let hash = sha(&token);
        let id = &hash[..16];
        let now = now_micros();
        let mut fields: Vec<(&str, String)> =
            vec![("u", principal.owner().to_string()), ("c", now.to_string())];
        if let Principal::Endpoint { endpoint, .. } = principal {
            fields.push(("e", endpoint.to_string()));
        }
        let expires_at = expires_in.map(|d| now + d);
        if let Some(x) = expires_at {
            fields.push(("x", x.to_string()));
        }
        if let Some(l) = label {
            fields.push(("n", l.to_owned()));
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(self.cred_key(&hash), &fields)
            .set(self.cred_id_key(id), &hash)
            .sadd(self.user_creds_key(principal.owner()), id);
        if let Principal::Endpoint { endpoint, .. } = principal {
            pipe.sadd(self.endpoint_creds_key(endpoint), id);
        }
        if let Some(x) = expires_at {
            let secs = (x / 1_000_000) as i64 + 1;
            pipe.expire_at(self.cred_key(&hash), secs)
                .expire_at(self.cred_id_key(id), secs);
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(token)
    }

    /// Who a bearer token acts for; `None` for an unknown, revoked or expired token.
    pub async fn principal_for_token(&self, token: &str) -> Result<Option<Principal>> {
        let hash = sha(token);
        let mut conn = self.conn.clone();
        let map: HashMap<String, Vec<u8>> = conn.hgetall(self.cred_key(&hash)).await?;
        if map.is_empty() {
            let legacy: Option<String> = conn.get(self.legacy_token_key(token)).await?;
            return legacy
                .map(|s| parse_id(&s, "user", &s).map(Principal::User))
                .transpose();
        }
        let f = Fields::new(map, "credential", hash[..16].to_owned());
        if f.opt_num::<Micros>("x")?.is_some_and(|x| x <= now_micros()) {
            return Ok(None);
        }
        let owner: UserId = f.id("u")?;
        Ok(Some(match f.opt_string("e") {
            Some(e) => Principal::Endpoint {
                endpoint: parse_id(&e, "endpoint", &e)?,
                owner,
            },
            None => Principal::User(owner),
        }))
    }

    /// The user a user token belongs to (not an endpoint credential).
    pub async fn user_for_token(&self, token: &str) -> Result<Option<UserId>> {
        Ok(match self.principal_for_token(token).await? {
            Some(Principal::User(u)) => Some(u),
            _ => None,
        })
    }

    /// A user's credentials (theirs and their endpoints'), oldest first.
    pub async fn list_credentials(&self, user: UserId) -> Result<Vec<CredentialInfo>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(self.user_creds_key(user)).await?;
        let mut out = Vec::new();
        for id in ids {
            let Some(hash): Option<String> = conn.get(self.cred_id_key(&id)).await? else {
                // Expired: forget the id.
                let _: () = conn.srem(self.user_creds_key(user), &id).await?;
                continue;
            };
            let map: HashMap<String, Vec<u8>> = conn.hgetall(self.cred_key(&hash)).await?;
            if map.is_empty() {
                continue;
            }
            let f = Fields::new(map, "credential", id.clone());
            let owner = f.id("u")?;
            let principal = match f.opt_string("e") {
                Some(e) => Principal::Endpoint {
                    endpoint: parse_id(&e, "endpoint", &e)?,
                    owner,
                },
                None => Principal::User(owner),
            };
            out.push(CredentialInfo {
                id,
                principal,
                created_at: f.num("c")?,
                expires_at: f.opt_num("x")?,
                label: f.opt_string("n"),
            });
        }
        out.sort_by_key(|c| c.created_at);
        Ok(out)
    }

    /// Revokes the credential with this id (or a unique prefix of it, at least 8 hex
    /// digits); `false` when there is none.
    pub async fn revoke_credential(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let Some(hash): Option<String> = conn.get(self.cred_id_key(id)).await? else {
            return Ok(false);
        };
        let map: HashMap<String, String> = conn.hgetall(self.cred_key(&hash)).await?;
        let mut pipe = redis::pipe();
        pipe.atomic().del(self.cred_key(&hash)).del(self.cred_id_key(id));
        if let Some(u) = map.get("u") {
            pipe.srem(format!("{}:user:{u}:creds", self.ns), id);
        }
        if let Some(e) = map.get("e") {
            pipe.srem(format!("{}:ep:{e}:creds", self.ns), id);
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(true)
    }

    /// Revokes every credential of an endpoint (it is deleted).
    pub async fn revoke_endpoint_credentials(&self, endpoint: EndpointId) -> Result<()> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(self.endpoint_creds_key(endpoint)).await?;
        for id in ids {
            self.revoke_credential(&id).await?;
        }
        let _: () = conn.del(self.endpoint_creds_key(endpoint)).await?;
        Ok(())
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(self.users_key()).await?;
        let mut out = Vec::new();
        for id in ids {
            let user: UserId = parse_id(&id, "user", &id)?;
            let map: HashMap<String, Vec<u8>> = conn.hgetall(self.user_key(user)).await?;
            if map.is_empty() {
                continue;
            }
            let f = Fields::new(map, "user", id.clone());
            out.push(UserInfo {
                user_id: user,
                name: f.string("name")?,
                created_at: f.num("created")?,
            });
        }
        out.sort_by_key(|u| u.created_at);
        Ok(out)
    }

    /// A user by id or by name.
    /// A user's name, if the user exists.
    pub async fn user_name(&self, id: UserId) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        Ok(conn.hget(self.user_key(id), "name").await?)
    }

    /// Whether a user with this id exists.
    pub async fn user_exists(&self, id: UserId) -> Result<bool> {
        let mut conn = self.conn.clone();
        Ok(conn.sismember(self.users_key(), id.to_string()).await?)
    }

    pub async fn find_user(&self, id_or_name: &str) -> Result<Option<UserInfo>> {
        Ok(self
            .list_users()
            .await?
            .into_iter()
            .find(|u| u.user_id.to_string() == id_or_name || u.name == id_or_name))
    }
}

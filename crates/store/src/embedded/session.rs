//! One client's session: what belongs to the connection rather than the keyspace —
//! authentication, the MULTI queue, subscriptions, its name, and the blocking XREAD,
//! which waits here (without the keyspace lock) until a stream grows.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::commands::{self, Handler, keyword, streams::XRead};
use super::connection::{Connection, Read};
use super::frame::Frame;
use super::server::Shared;

/// What the connection does after a request.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

pub(crate) struct Session {
    id: u64,
    shared: Arc<Shared>,
    authenticated: bool,
    /// The commands queued since MULTI, and whether one of them was refused (EXEC
    /// then aborts).
    multi: Option<(Vec<Vec<Bytes>>, bool)>,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    inbox: mpsc::UnboundedSender<Frame>,
    pushes: mpsc::UnboundedReceiver<Frame>,
}

fn ok_or_error(reply: Result<Frame, Frame>) -> Frame {
    reply.unwrap_or_else(|e| e)
}

impl Session {
    pub(crate) fn new(id: u64, shared: Arc<Shared>) -> Self {
        let (inbox, pushes) = mpsc::unbounded_channel();
        Self {
            id,
            authenticated: shared.password.is_none(),
            shared,
            multi: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            inbox,
            pushes,
        }
    }

    /// Serves the client until it leaves, sends bytes that are not RESP, or the server
    /// shuts down.
    pub(crate) async fn run(
        &mut self,
        stream: TcpStream,
        shutdown: &CancellationToken,
    ) -> std::io::Result<()> {
        let mut conn = Connection::new(stream);
        loop {
            while let Some(read) = conn.buffered_request() {
                let args = match read {
                    Read::Request(args) if args.is_empty() => continue,
                    Read::Request(args) => args,
                    Read::Malformed(message) => {
                        conn.queue(&Frame::error(format!("ERR {message}")));
                        return conn.flush().await;
                    }
                };
                if self.handle(&mut conn, args, shutdown).await == Next::Close {
                    return conn.flush().await;
                }
            }
            conn.flush().await?;
            tokio::select! {
                more = conn.fill() => {
                    if !more? {
                        return Ok(());
                    }
                }
                Some(push) = self.pushes.recv() => {
                    conn.queue(&push);
                    while let Ok(push) = self.pushes.try_recv() {
                        conn.queue(&push);
                    }
                }
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Leaves every channel and pattern.
    pub(crate) fn close(&mut self) {
        for channel in std::mem::take(&mut self.channels) {
            self.shared.hub.unsubscribe(self.id, &channel, false);
        }
        for pattern in std::mem::take(&mut self.patterns) {
            self.shared.hub.unsubscribe(self.id, &pattern, true);
        }
    }

    fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    async fn handle(
        &mut self,
        conn: &mut Connection,
        args: Vec<Bytes>,
        shutdown: &CancellationToken,
    ) -> Next {
        let name = keyword(&args[0]);
        if !self.authenticated && !matches!(name.as_str(), "AUTH" | "HELLO" | "QUIT") {
            conn.queue(&Frame::error("NOAUTH Authentication required."));
            return Next::Continue;
        }
        if self.subscriptions() > 0
            && !matches!(
                name.as_str(),
                "SUBSCRIBE" | "UNSUBSCRIBE" | "PSUBSCRIBE" | "PUNSUBSCRIBE" | "PING" | "QUIT" | "RESET"
            )
        {
            conn.queue(&Frame::error(format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                name.to_lowercase()
            )));
            return Next::Continue;
        }
        if self.multi.is_some() && !matches!(name.as_str(), "EXEC" | "DISCARD" | "MULTI" | "QUIT" | "RESET") {
            let reply = self.queue_in_multi(args);
            conn.queue(&reply);
            return Next::Continue;
        }
        if let Err(e) = commands::resolve(&args) {
            conn.queue(&e);
            return Next::Continue;
        }
        let reply = match name.as_str() {
            "QUIT" => {
                conn.queue(&Frame::ok());
                return Next::Close;
            }
            "AUTH" => self.auth(&args),
            "HELLO" => self.hello(&args),
            "CLIENT" => self.client(&args),
            "RESET" => {
                self.multi = None;
                self.close();
                Frame::Simple("RESET".to_owned())
            }
            "MULTI" if self.multi.is_some() => Frame::error("ERR MULTI calls can not be nested"),
            "MULTI" if args.len() == 1 => {
                self.multi = Some((Vec::new(), false));
                Frame::ok()
            }
            "EXEC" if args.len() == 1 => self.exec(),
            "DISCARD" if args.len() == 1 => match self.multi.take() {
                Some(_) => Frame::ok(),
                None => Frame::error("ERR DISCARD without MULTI"),
            },
            "SUBSCRIBE" | "PSUBSCRIBE" if args.len() >= 2 => {
                self.subscribe(conn, &args[1..], name == "PSUBSCRIBE");
                return Next::Continue;
            }
            "UNSUBSCRIBE" | "PUNSUBSCRIBE" => {
                self.unsubscribe(conn, &args[1..], name == "PUNSUBSCRIBE");
                return Next::Continue;
            }
            "PING" if self.subscriptions() > 0 && args.len() <= 2 => Frame::Array(vec![
                Frame::bulk("pong"),
                Frame::Bulk(args.get(1).cloned().unwrap_or_default()),
            ]),
            "XREAD" => match XRead::parse(&args) {
                Ok(read) if read.block_ms.is_some() => match self.blocking_read(conn, read, shutdown).await {
                    Some(reply) => reply,
                    None => return Next::Close,
                },
                _ => self.shared.execute(&args),
            },
            _ => self.shared.execute(&args),
        };
        conn.queue(&reply);
        Next::Continue
    }

    /// A command sent inside MULTI: checked now, run at EXEC.
    fn queue_in_multi(&mut self, args: Vec<Bytes>) -> Frame {
        let Some((queue, refused)) = self.multi.as_mut() else {
            return Frame::error("ERR not in a transaction");
        };
        match commands::resolve(&args) {
            Err(e) => {
                *refused = true;
                e
            }
            Ok(command) if matches!(command.handler, Handler::Session) => {
                *refused = true;
                Frame::error(format!(
                    "ERR Command not allowed inside a transaction: '{}'",
                    command.name.to_lowercase()
                ))
            }
            Ok(_) => {
                queue.push(args);
                Frame::Simple("QUEUED".to_owned())
            }
        }
    }

    /// Runs the queued commands in one hold of the lock: no other client's command
    /// (nor script) runs in between.
    fn exec(&mut self) -> Frame {
        match self.multi.take() {
            None => Frame::error("ERR EXEC without MULTI"),
            Some((_, true)) => Frame::error("EXECABORT Transaction discarded because of previous errors."),
            Some((queue, false)) => {
                let mut engine = self.shared.lock();
                Frame::Array(
                    queue
                        .iter()
                        .map(|args| engine.execute(&self.shared.hub, args))
                        .collect(),
                )
            }
        }
    }

    /// Whether `user`/`password` are the server's (the only user is `default`).
    fn credentials_match(&self, user: Option<&[u8]>, password: &[u8]) -> bool {
        user.is_none_or(|u| u == b"default")
            && self
                .shared
                .password
                .as_ref()
                .is_some_and(|p| p.as_bytes() == password)
    }

    fn auth(&mut self, args: &[Bytes]) -> Frame {
        let (user, password) = match args {
            [_, password] => (None, password),
            [_, user, password] => (Some(user.as_ref()), password),
            _ => return Frame::error("ERR syntax error"),
        };
        if self.shared.password.is_none() {
            return Frame::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        }
        if self.credentials_match(user, password) {
            self.authenticated = true;
            Frame::ok()
        } else {
            Frame::error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    /// `HELLO [2 [AUTH user password] [SETNAME name]]`: RESP2 only.
    fn hello(&mut self, args: &[Bytes]) -> Frame {
        if let Some(version) = args.get(1) {
            match commands::int(version) {
                Ok(2) => {}
                Ok(_) => return Frame::error("NOPROTO sorry, this protocol version is not supported."),
                Err(_) => return Frame::error("ERR Protocol version is not an integer or out of range"),
            }
        }
        let mut options = args.iter().skip(2);
        while let Some(option) = options.next() {
            match keyword(option).as_str() {
                "AUTH" => {
                    let (Some(user), Some(password)) = (options.next(), options.next()) else {
                        return Frame::error("ERR syntax error");
                    };
                    if !self.credentials_match(Some(user), password) {
                        return Frame::error("WRONGPASS invalid username-password pair or user is disabled.");
                    }
                    self.authenticated = true;
                }
                "SETNAME" => {
                    let Some(name) = options.next() else {
                        return Frame::error("ERR syntax error");
                    };
                    if let Err(e) = self.set_name(name) {
                        return e;
                    }
                }
                _ => return Frame::error("ERR syntax error"),
            }
        }
        if !self.authenticated {
            return Frame::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        Frame::Array(vec![
            Frame::bulk("server"),
            Frame::bulk("redis"),
            Frame::bulk("version"),
            Frame::bulk(commands::REDIS_VERSION),
            Frame::bulk("proto"),
            Frame::Integer(2),
            Frame::bulk("id"),
            Frame::Integer(self.id as i64),
            Frame::bulk("mode"),
            Frame::bulk("standalone"),
            Frame::bulk("role"),
            Frame::bulk("master"),
            Frame::bulk("modules"),
            Frame::Array(Vec::new()),
        ])
    }

    fn set_name(&self, name: &[u8]) -> Result<(), Frame> {
        if !name.iter().all(|b| (b'!'..=b'~').contains(b)) {
            return Err(Frame::error(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        if let Some(client) = self.shared.clients().get_mut(&self.id) {
            client.name = String::from_utf8_lossy(name).into_owned();
        }
        Ok(())
    }

    /// `CLIENT SETNAME|GETNAME|SETINFO|ID|LIST|INFO`.
    fn client(&mut self, args: &[Bytes]) -> Frame {
        let sub = keyword(&args[1]);
        match (sub.as_str(), args.len()) {
            ("SETNAME", 3) => ok_or_error(self.set_name(&args[2]).map(|()| Frame::ok())),
            ("GETNAME", 2) => match self.shared.clients().get(&self.id) {
                Some(c) if !c.name.is_empty() => Frame::bulk(c.name.clone()),
                _ => Frame::Null,
            },
            // The library's name and version (redis-rs sends them on connect).
            ("SETINFO", 4) => match keyword(&args[2]).as_str() {
                "LIB-NAME" | "LIB-VER" => Frame::ok(),
                other => Frame::error(format!("ERR Unrecognized option '{other}'")),
            },
            ("ID", 2) => Frame::Integer(self.id as i64),
            ("LIST", 2) | ("INFO", 2) => {
                let clients = self.shared.clients();
                let mut text = String::new();
                for (id, c) in clients.iter().filter(|(id, _)| sub == "LIST" || **id == self.id) {
                    text.push_str(&format!(
                        "id={id} addr={} laddr={} fd=0 name={} db=0 sub={} psub={} multi=-1\n",
                        c.addr,
                        self.shared.local_addr,
                        c.name,
                        if *id == self.id { self.channels.len() } else { 0 },
                        if *id == self.id { self.patterns.len() } else { 0 },
                    ));
                }
                Frame::bulk(text)
            }
            ("SETNAME" | "GETNAME" | "SETINFO" | "ID" | "LIST" | "INFO", _) => Frame::error(format!(
                "ERR wrong number of arguments for 'client|{}' command",
                sub.to_lowercase()
            )),
            _ => Frame::error(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                sub.to_lowercase()
            )),
        }
    }

    fn subscribe(&mut self, conn: &mut Connection, names: &[Bytes], pattern: bool) {
        for name in names {
            let set = if pattern {
                &mut self.patterns
            } else {
                &mut self.channels
            };
            if set.insert(name.clone()) {
                self.shared
                    .hub
                    .subscribe(self.id, &self.inbox, name.clone(), pattern);
            }
            let kind = if pattern { "psubscribe" } else { "subscribe" };
            conn.queue(&Frame::Array(vec![
                Frame::bulk(kind),
                Frame::Bulk(name.clone()),
                Frame::Integer(self.subscriptions() as i64),
            ]));
        }
    }

    /// Leaves the named channels (or patterns), or all of them when none is named.
    fn unsubscribe(&mut self, conn: &mut Connection, names: &[Bytes], pattern: bool) {
        let kind = if pattern { "punsubscribe" } else { "unsubscribe" };
        let set = if pattern { &self.patterns } else { &self.channels };
        let names: Vec<Bytes> = if names.is_empty() {
            set.iter().cloned().collect()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            conn.queue(&Frame::Array(vec![
                Frame::bulk(kind),
                Frame::Null,
                Frame::Integer(self.subscriptions() as i64),
            ]));
        }
        for name in names {
            let set = if pattern {
                &mut self.patterns
            } else {
                &mut self.channels
            };
            if set.remove(&name) {
                self.shared.hub.unsubscribe(self.id, &name, pattern);
            }
            conn.queue(&Frame::Array(vec![
                Frame::bulk(kind),
                Frame::Bulk(name),
                Frame::Integer(self.subscriptions() as i64),
            ]));
        }
    }

    /// XREAD with BLOCK: reads at once if there is anything; else waits (without the
    /// lock) for a stream to grow, the timeout, the client leaving (`None`) or the
    /// server stopping.
    async fn blocking_read(
        &mut self,
        conn: &mut Connection,
        mut read: XRead,
        shutdown: &CancellationToken,
    ) -> Option<Frame> {
        let mut grown = {
            let mut engine = self.shared.lock();
            if let Err(e) = read.resolve_new(&mut engine.db) {
                return Some(e);
            }
            match read.read(&mut engine.db) {
                Ok(Some(reply)) => return Some(reply),
                Ok(None) => {}
                Err(e) => return Some(e),
            }
            // Subscribed before the lock is let go: no XADD can slip in between.
            engine.db.stream_added()
        };
        // The replies to requests before this one go out before it waits.
        if conn.flush().await.is_err() {
            return None;
        }
        let block_ms = read.block_ms.unwrap_or(0);
        let deadline =
            (block_ms > 0).then(|| tokio::time::Instant::now() + std::time::Duration::from_millis(block_ms));
        loop {
            tokio::select! {
                changed = grown.changed() => {
                    if changed.is_err() {
                        return Some(Frame::NullArray);
                    }
                }
                () = sleep_until(deadline) => return Some(Frame::NullArray),
                more = conn.fill() => {
                    if !matches!(more, Ok(true)) {
                        return None;
                    }
                }
                () = shutdown.cancelled() => return None,
            }
            let mut engine = self.shared.lock();
            match read.read(&mut engine.db) {
                Ok(Some(reply)) => return Some(reply),
                Ok(None) => {}
                Err(e) => return Some(e),
            }
        }
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

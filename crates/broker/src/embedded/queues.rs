//! The embedded broker's state: queues, exchanges, connections with their consumers and
//! unacked messages. Plain synchronous code behind one mutex; frames for a connection
//! go out through its channel, so nothing here waits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::protocol::{Answer, Message, Op, ServerFrame};

/// A connection's id within one server.
pub(crate) type ConnId = u64;

/// Everything the broker holds.
#[derive(Default)]
pub(crate) struct Queues {
    queues: HashMap<String, Queue>,
    /// Direct exchanges: routing key -> queue.
    exchanges: HashMap<String, HashMap<String, String>>,
    connections: HashMap<ConnId, Connection>,
    next_conn: ConnId,
}

/// A message waiting in a queue.
struct Ready {
    message: Message,
    routing_key: String,
    redelivered: bool,
}

struct Queue {
    ready: VecDeque<Ready>,
    /// Consumers in round-robin order.
    consumers: Vec<(ConnId, u64)>,
    /// Where the round-robin goes on.
    next: usize,
    /// Deleted after this long without a consumer (`x-expires`).
    expires: Option<Duration>,
    /// Since when it has had no consumer (or was declared again).
    idle_since: Instant,
}

struct Connection {
    user: String,
    out: UnboundedSender<ServerFrame>,
    consumers: HashMap<u64, ConsumerState>,
    /// Delivered and not settled, by delivery tag (in delivery order).
    unacked: BTreeMap<u64, Unacked>,
    next_tag: u64,
}

struct ConsumerState {
    queue: String,
    /// At most this many unacked at a time (0: no limit).
    prefetch: u16,
    unacked: u32,
}

impl ConsumerState {
    fn has_room(&self) -> bool {
        self.prefetch == 0 || self.unacked < u32::from(self.prefetch)
    }
}

struct Unacked {
    queue: String,
    consumer: u64,
    ready: Ready,
}

impl Queues {
    /// Registers a connection of `user` whose frames go to `out`.
    pub(crate) fn connect(&mut self, user: String, out: UnboundedSender<ServerFrame>) -> ConnId {
        self.next_conn += 1;
        let id = self.next_conn;
        self.connections.insert(
            id,
            Connection {
                user,
                out,
                consumers: HashMap::new(),
                unacked: BTreeMap::new(),
                next_tag: 0,
            },
        );
        id
    }

    /// Forgets a connection: its consumers stop, and every message it held unacked goes
    /// back to the head of its queue, in the order it was delivered, marked redelivered.
    pub(crate) fn disconnect(&mut self, conn: ConnId) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        let now = Instant::now();
        for (id, consumer) in &connection.consumers {
            if let Some(queue) = self.queues.get_mut(&consumer.queue) {
                queue.remove_consumer((conn, *id), now);
            }
        }
        let mut touched = Vec::new();
        for (_, unacked) in connection.unacked.into_iter().rev() {
            if let Some(queue) = self.queues.get_mut(&unacked.queue) {
                queue.ready.push_front(Ready {
                    redelivered: true,
                    ..unacked.ready
                });
                touched.push(unacked.queue);
            }
        }
        touched.sort();
        touched.dedup();
        for queue in touched {
            self.dispatch(&queue);
        }
    }

    /// Carries out one operation of connection `conn`.
    pub(crate) fn handle(&mut self, conn: ConnId, op: Op) -> Result<Answer, String> {
        match op {
            Op::DeclareQueue { name, expires_ms } => {
                self.declare_queue(name, expires_ms.map(Duration::from_millis));
                Ok(Answer::Done)
            }
            Op::DeclareExchange { name, routes } => self.declare_exchange(name, routes),
            Op::DeleteExchange { name } => {
                self.exchanges.remove(&name);
                Ok(Answer::Done)
            }
            Op::Publish {
                exchange,
                key,
                message,
            } => self.publish(conn, &exchange, key, message),
            Op::Consume {
                consumer,
                queue,
                prefetch,
            } => self.consume(conn, consumer, queue, prefetch),
            Op::Cancel { consumer } => {
                self.cancel(conn, consumer);
                Ok(Answer::Done)
            }
            Op::Ack { tag } => self.settle(conn, tag, false),
            Op::Requeue { tag } => self.settle(conn, tag, true),
            Op::QueueLen { name } => match self.queues.get(&name) {
                Some(queue) => Ok(Answer::Count(
                    u32::try_from(queue.ready.len()).unwrap_or(u32::MAX),
                )),
                None => Err(not_found(&name)),
            },
            Op::DeleteQueue { name } => {
                self.delete_queue(&name);
                Ok(Answer::Done)
            }
            Op::Ping => Ok(Answer::Done),
        }
    }

    /// Deletes the queues with an `x-expires` that have had no consumer that long.
    pub(crate) fn expire(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                q.consumers.is_empty()
                    && q.expires
                        .is_some_and(|expires| now.saturating_duration_since(q.idle_since) >= expires)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            tracing::debug!(queue = %name, "the embedded broker deletes an expired queue");
            self.delete_queue(&name);
        }
    }

    fn declare_queue(&mut self, name: String, expires: Option<Duration>) {
        let now = Instant::now();
        self.queues
            .entry(name)
            .and_modify(|queue| queue.idle_since = now)
            .or_insert_with(|| Queue {
                ready: VecDeque::new(),
                consumers: Vec::new(),
                next: 0,
                expires,
                idle_since: now,
            });
    }

    fn declare_exchange(&mut self, name: String, routes: Vec<(String, String)>) -> Result<Answer, String> {
        if let Some((_, queue)) = routes.iter().find(|(_, queue)| !self.queues.contains_key(queue)) {
            return Err(not_found(queue));
        }
        self.exchanges.entry(name).or_default().extend(routes);
        Ok(Answer::Done)
    }

    /// Enqueues a message, as RabbitMQ would route it: the empty exchange to the queue
    /// named `key`, a direct exchange by its routes. A message nothing routes is dropped
    /// (and confirmed), like RabbitMQ's unroutable messages.
    fn publish(
        &mut self,
        conn: ConnId,
        exchange: &str,
        key: String,
        message: Message,
    ) -> Result<Answer, String> {
        let user = self
            .connections
            .get(&conn)
            .map(|c| c.user.as_str())
            .unwrap_or_default();
        if let Some(claimed) = &message.user_id
            && claimed != user
        {
            return Err(format!(
                "user_id property set to '{claimed}' but the connection's user is '{user}'"
            ));
        }
        let queue = if exchange.is_empty() {
            Some(key.clone())
        } else {
            let routes = self
                .exchanges
                .get(exchange)
                .ok_or_else(|| format!("no exchange '{exchange}'"))?;
            routes.get(&key).cloned()
        };
        let Some(queue_name) = queue.filter(|q| self.queues.contains_key(q)) else {
            tracing::debug!(exchange, key = %key, "the embedded broker drops an unroutable message");
            return Ok(Answer::Done);
        };
        if let Some(queue) = self.queues.get_mut(&queue_name) {
            queue.ready.push_back(Ready {
                message,
                routing_key: key,
                redelivered: false,
            });
        }
        self.dispatch(&queue_name);
        Ok(Answer::Done)
    }

    fn consume(
        &mut self,
        conn: ConnId,
        consumer: u64,
        queue_name: String,
        prefetch: u16,
    ) -> Result<Answer, String> {
        let queue = self
            .queues
            .get_mut(&queue_name)
            .ok_or_else(|| not_found(&queue_name))?;
        let connection = self
            .connections
            .get_mut(&conn)
            .ok_or_else(|| "the connection is closed".to_owned())?;
        if connection.consumers.contains_key(&consumer) {
            return Err(format!("consumer {consumer} exists already"));
        }
        connection.consumers.insert(
            consumer,
            ConsumerState {
                queue: queue_name.clone(),
                prefetch,
                unacked: 0,
            },
        );
        queue.consumers.push((conn, consumer));
        self.dispatch(&queue_name);
        Ok(Answer::Done)
    }

    fn cancel(&mut self, conn: ConnId, consumer: u64) {
        let Some(state) = self
            .connections
            .get_mut(&conn)
            .and_then(|c| c.consumers.remove(&consumer))
        else {
            return;
        };
        if let Some(queue) = self.queues.get_mut(&state.queue) {
            queue.remove_consumer((conn, consumer), Instant::now());
        }
    }

    /// Acks, or requeues at the head of its queue marked redelivered, a delivery.
    fn settle(&mut self, conn: ConnId, tag: u64, requeue: bool) -> Result<Answer, String> {
        let connection = self
            .connections
            .get_mut(&conn)
            .ok_or_else(|| "the connection is closed".to_owned())?;
        let unacked = connection
            .unacked
            .remove(&tag)
            .ok_or_else(|| format!("unknown delivery tag {tag}"))?;
        if let Some(consumer) = connection.consumers.get_mut(&unacked.consumer) {
            consumer.unacked = consumer.unacked.saturating_sub(1);
        }
        if requeue && let Some(queue) = self.queues.get_mut(&unacked.queue) {
            queue.ready.push_front(Ready {
                redelivered: true,
                ..unacked.ready
            });
        }
        self.dispatch(&unacked.queue);
        Ok(Answer::Done)
    }

    /// Deletes a queue and its messages; its consumers are told they were cancelled.
    fn delete_queue(&mut self, name: &str) {
        let Some(queue) = self.queues.remove(name) else {
            return;
        };
        for (conn, consumer) in queue.consumers {
            if let Some(connection) = self.connections.get_mut(&conn) {
                connection.consumers.remove(&consumer);
                let _ = connection.out.send(ServerFrame::Cancelled { consumer });
            }
        }
    }

    /// Hands out `queue`'s messages, round-robin, to its consumers with room.
    fn dispatch(&mut self, queue_name: &str) {
        let Some(queue) = self.queues.get_mut(queue_name) else {
            return;
        };
        while !queue.ready.is_empty() && !queue.consumers.is_empty() {
            let count = queue.consumers.len();
            let with_room = (0..count).map(|i| (queue.next + i) % count).find(|&i| {
                let (conn, consumer) = queue.consumers[i];
                self.connections
                    .get(&conn)
                    .and_then(|c| c.consumers.get(&consumer))
                    .is_some_and(ConsumerState::has_room)
            });
            let Some(i) = with_room else {
                return;
            };
            queue.next = (i + 1) % count;
            let (conn, consumer) = queue.consumers[i];
            let (Some(connection), Some(ready)) = (self.connections.get_mut(&conn), queue.ready.pop_front())
            else {
                return;
            };
            connection.next_tag += 1;
            let tag = connection.next_tag;
            if let Some(state) = connection.consumers.get_mut(&consumer) {
                state.unacked += 1;
            }
            // A connection whose writer has gone is cleaned up by its reader, which
            // requeues this message with the rest of its unacked ones.
            let _ = connection.out.send(ServerFrame::Deliver {
                consumer,
                tag,
                routing_key: ready.routing_key.clone(),
                redelivered: ready.redelivered,
                message: ready.message.clone(),
            });
            connection.unacked.insert(
                tag,
                Unacked {
                    queue: queue_name.to_owned(),
                    consumer,
                    ready,
                },
            );
        }
    }
}

impl Queue {
    fn remove_consumer(&mut self, key: (ConnId, u64), now: Instant) {
        self.consumers.retain(|c| *c != key);
        if self.next >= self.consumers.len() {
            self.next = 0;
        }
        if self.consumers.is_empty() {
            self.idle_since = now;
        }
    }
}

fn not_found(queue: &str) -> String {
    format!("no queue '{queue}'")
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    use super::*;

    fn message(body: &'static [u8], user_id: Option<&str>) -> Message {
        Message {
            body: bytes::Bytes::from_static(body),
            timestamp: None,
            user_id: user_id.map(str::to_owned),
            headers: Vec::new(),
        }
    }

    fn connect(queues: &mut Queues, user: &str) -> (ConnId, UnboundedReceiver<ServerFrame>) {
        let (tx, rx) = unbounded_channel();
        (queues.connect(user.to_owned(), tx), rx)
    }

    fn publish(queues: &mut Queues, conn: ConnId, body: &'static [u8]) {
        let op = Op::Publish {
            exchange: String::new(),
            key: "q".to_owned(),
            message: message(body, None),
        };
        assert!(queues.handle(conn, op).is_ok());
    }

    /// The deliveries waiting for a connection: (tag, body, redelivered).
    fn delivered(rx: &mut UnboundedReceiver<ServerFrame>) -> Vec<(u64, Vec<u8>, bool)> {
        let mut out = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            if let ServerFrame::Deliver {
                tag,
                message,
                redelivered,
                ..
            } = frame
            {
                out.push((tag, message.body.to_vec(), redelivered));
            }
        }
        out
    }

    fn consume(queues: &mut Queues, conn: ConnId, prefetch: u16) {
        let op = Op::Consume {
            consumer: 1,
            queue: "q".to_owned(),
            prefetch,
        };
        assert!(queues.handle(conn, op).is_ok());
    }

    #[test]
    fn a_connection_that_goes_returns_its_unacked_messages_in_order_redelivered() {
        let mut queues = Queues::default();
        queues.declare_queue("q".to_owned(), None);
        let (publisher, _) = connect(&mut queues, "p");
        for body in [&b"a"[..], b"b", b"c"] {
            publish(&mut queues, publisher, body);
        }
        let (holder, mut held) = connect(&mut queues, "h");
        consume(&mut queues, holder, 2);
        assert_eq!(delivered(&mut held).len(), 2);

        queues.disconnect(holder);

        let (reader, mut read) = connect(&mut queues, "r");
        consume(&mut queues, reader, 10);
        let bodies: Vec<_> = delivered(&mut read).into_iter().map(|(_, b, r)| (b, r)).collect();
        assert_eq!(
            bodies,
            [
                (b"a".to_vec(), true),
                (b"b".to_vec(), true),
                (b"c".to_vec(), false)
            ]
        );
    }

    #[test]
    fn a_publish_claiming_another_user_is_refused() {
        let mut queues = Queues::default();
        queues.declare_queue("q".to_owned(), None);
        let (conn, _) = connect(&mut queues, "ep-1");

        let forged = queues.handle(
            conn,
            Op::Publish {
                exchange: String::new(),
                key: "q".to_owned(),
                message: message(b"x", Some("ep-2")),
            },
        );
        let own = queues.handle(
            conn,
            Op::Publish {
                exchange: String::new(),
                key: "q".to_owned(),
                message: message(b"x", Some("ep-1")),
            },
        );

        assert!(forged.is_err_and(|e| e.contains("'ep-2'")));
        assert!(own.is_ok());
        assert_eq!(queues.queues["q"].ready.len(), 1);
    }

    #[test]
    fn an_unknown_delivery_tag_is_an_error_not_a_panic() {
        let mut queues = Queues::default();
        let (conn, _) = connect(&mut queues, "c");

        assert!(queues.handle(conn, Op::Ack { tag: 7 }).is_err());
        assert!(queues.handle(conn, Op::Requeue { tag: 7 }).is_err());
    }

    #[test]
    fn deliveries_go_round_robin_to_consumers_with_room() {
        let mut queues = Queues::default();
        queues.declare_queue("q".to_owned(), None);
        let (one, mut first) = connect(&mut queues, "1");
        let (two, mut second) = connect(&mut queues, "2");
        consume(&mut queues, one, 0);
        consume(&mut queues, two, 1);

        for body in [&b"a"[..], b"b", b"c", b"d"] {
            publish(&mut queues, one, body);
        }

        let first: Vec<_> = delivered(&mut first).into_iter().map(|(_, b, _)| b).collect();
        let second: Vec<_> = delivered(&mut second).into_iter().map(|(_, b, _)| b).collect();
        assert_eq!(second, [b"b".to_vec()], "prefetch 1 holds one");
        assert_eq!(first, [b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn an_expired_queue_is_deleted_only_without_consumers() {
        let mut queues = Queues::default();
        queues.declare_queue("q".to_owned(), Some(Duration::from_secs(1)));
        let (conn, _) = connect(&mut queues, "c");
        consume(&mut queues, conn, 1);
        let later = Instant::now() + Duration::from_secs(5);

        queues.expire(later);
        assert!(queues.queues.contains_key("q"));
        queues.disconnect(conn);
        queues.expire(later + Duration::from_secs(5));

        assert!(!queues.queues.contains_key("q"));
    }
}

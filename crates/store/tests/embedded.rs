//! The embedded Redis-compatible server on its own: what the shared store suite does
//! not reach (bad bytes, AUTH, transactions under contention, script errors, blocking
//! reads, pub/sub, expiry, snapshots). Each test starts a server on port 0 and talks to
//! it with redis-rs, as Ferry does, or with raw bytes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_store::embedded::{Options, Server};
use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stream entry as redis-rs reads it: its ID and its fields.
type Entry = (String, HashMap<String, String>);

async fn server(options: Options) -> Server {
    Server::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

async fn connect(server: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Sends `bytes` on a fresh connection and returns what comes back until the server
/// closes it or goes quiet for 500 ms.
async fn raw(server: &Server, bytes: &[u8]) -> String {
    let mut socket = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), socket.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn eval<T: redis::FromRedisValue>(
    conn: &mut redis::aio::MultiplexedConnection,
    script: &str,
    keys: &[&str],
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
    cmd.query_async(conn).await
}

#[tokio::test]
async fn bytes_that_are_not_resp_get_an_error_reply_and_the_connection_closes() {
    let server = server(Options::default()).await;
    for (bytes, says) in [
        (&b"*1\r\n:3\r\n"[..], "-ERR Protocol error: expected '$', got ':'"),
        (b"*1\r\n$-7\r\n", "-ERR Protocol error: invalid bulk length"),
        (b"*x\r\n", "-ERR Protocol error: invalid multibulk length"),
        (
            b"*1\r\n$2\r\nabcd\r\n",
            "-ERR Protocol error: bulk string not ended by CRLF",
        ),
        (
            b"*1\r\n$99999999999999999999\r\n",
            "-ERR Protocol error: invalid bulk length",
        ),
    ] {
        let reply = raw(&server, bytes).await;
        assert!(reply.starts_with(says), "{bytes:?} got {reply:?}");
    }
    // Requests before the bad bytes are answered; the server goes on serving others.
    assert_eq!(
        raw(&server, b"PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n:1\r\n")
            .await
            .lines()
            .take(2)
            .collect::<Vec<_>>(),
        ["+PONG", "+PONG"]
    );
    assert_eq!(
        raw(&server, b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n").await,
        "$2\r\nhi\r\n"
    );
    // Commands the session answers itself check their arguments too.
    assert_eq!(
        raw(&server, b"CLIENT\r\nHELLO 3\r\nSUBSCRIBE\r\nPING\r\n").await,
        "-ERR wrong number of arguments for 'client' command\r\n-NOPROTO sorry, this protocol version is not supported.\r\n-ERR wrong number of arguments for 'subscribe' command\r\n+PONG\r\n"
    );
}

#[tokio::test]
async fn bad_arguments_get_redis_error_replies() {
    let server = server(Options::default()).await;
    let mut conn = connect(&server).await;
    let _: () = conn.set("s", "v").await.unwrap();
    let cases: Vec<(redis::Cmd, &str)> = vec![
        (redis::cmd("NOSUCH"), "unknown command 'NOSUCH'"),
        (
            redis::cmd("GET").arg("a").arg("b").clone(),
            "wrong number of arguments for 'get' command",
        ),
        (redis::cmd("HGET").arg("s").arg("f").clone(), "WRONGTYPE"),
        (
            redis::cmd("EXPIRE").arg("s").arg("soon").clone(),
            "value is not an integer",
        ),
        (
            redis::cmd("ZADD").arg("z").arg("NaN").arg("m").clone(),
            "not a valid float",
        ),
        (
            redis::cmd("SET").arg("s").arg("v").arg("EX").clone(),
            "syntax error",
        ),
        (
            redis::cmd("XADD").arg("x").arg("0-0").arg("f").arg("v").clone(),
            "greater than 0-0",
        ),
        (
            redis::cmd("XRANGE").arg("x").arg("bad").arg("+").clone(),
            "Invalid stream ID",
        ),
        (redis::cmd("SELECT").arg(3).clone(), "DB index is out of range"),
        (redis::cmd("EXEC"), "EXEC without MULTI"),
    ];
    for (cmd, says) in cases {
        let err = cmd.query_async::<redis::Value>(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[tokio::test]
async fn a_password_makes_every_connection_authenticate_first() {
    let server = server(Options {
        password: Some("s3cret/pw".into()),
        snapshot: None,
        snapshot_every: None,
    })
    .await;
    assert!(
        server.url().starts_with("redis://:s3cret%2Fpw@127.0.0.1:"),
        "{}",
        server.url()
    );
    assert!(
        raw(&server, b"GET k\r\n")
            .await
            .starts_with("-NOAUTH Authentication required.")
    );
    assert!(
        raw(&server, b"AUTH wrong\r\nGET k\r\n")
            .await
            .starts_with("-WRONGPASS")
    );
    assert_eq!(
        raw(&server, b"AUTH s3cret/pw\r\nGET k\r\n").await,
        "+OK\r\n$-1\r\n"
    );
    assert_eq!(
        raw(&server, b"AUTH default s3cret/pw\r\nPING\r\n").await,
        "+OK\r\n+PONG\r\n"
    );

    let wrong = format!("redis://:nope@{}", server.local_addr());
    let refused = redis::Client::open(wrong)
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    assert!(refused.is_err());
    // redis-rs sends AUTH from the URL, then CLIENT SETINFO: both answered.
    let mut conn = connect(&server).await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_runs_whole_with_nothing_in_between() {
    let server = server(Options::default()).await;
    let mut writer = connect(&server).await;
    let mut reader = connect(&server).await;
    let writes = tokio::spawn(async move {
        for i in 0..300 {
            redis::pipe()
                .atomic()
                .set("a", i)
                .ignore()
                .hset("h", "x", i)
                .ignore()
                .set("b", i)
                .ignore()
                .query_async::<()>(&mut writer)
                .await
                .unwrap();
        }
    });
    while !writes.is_finished() {
        let (a, b): (Option<i64>, Option<i64>) = redis::cmd("MGET")
            .arg("a")
            .arg("b")
            .query_async(&mut reader)
            .await
            .unwrap();
        assert_eq!(a, b, "a reader saw half a transaction");
    }
    writes.await.unwrap();

    // A command refused while queued aborts the whole transaction; a command that fails
    // when run fails alone.
    let aborted = raw(&server, b"MULTI\r\nSET c 1\r\nNOSUCH\r\nEXEC\r\nGET c\r\n").await;
    let lines: Vec<&str> = aborted.lines().collect();
    assert_eq!(lines[..2], ["+OK", "+QUEUED"]);
    assert!(lines[2].starts_with("-ERR unknown command 'NOSUCH'"), "{aborted}");
    assert_eq!(
        lines[3..],
        [
            "-EXECABORT Transaction discarded because of previous errors.",
            "$-1"
        ]
    );
    let mut conn = connect(&server).await;
    let failed = redis::pipe()
        .atomic()
        .hset("a", "f", 1)
        .set("c", 2)
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("WRONGTYPE"), "{failed}");
    assert_eq!(conn.get::<_, Option<i64>>("c").await.unwrap(), Some(2));
}

#[tokio::test]
async fn scripts_convert_replies_and_report_errors_as_redis_does() {
    let server = server(Options::default()).await;
    let mut conn = connect(&server).await;
    let _: () = conn.set("s", "v").await.unwrap();

    // Numbers truncate, false is nil, an array stops at its first nil.
    let value: redis::Value = eval(&mut conn, "return {1, 2.9, 'x', false, 5, nil, 6}", &[], &[])
        .await
        .unwrap();
    assert_eq!(
        value,
        redis::Value::Array(vec![
            redis::Value::Int(1),
            redis::Value::Int(2),
            redis::Value::BulkString(b"x".to_vec()),
            redis::Value::Nil,
            redis::Value::Int(5),
        ])
    );
    let status: redis::Value = eval(&mut conn, "return redis.status_reply('FINE')", &[], &[])
        .await
        .unwrap();
    assert_eq!(status, redis::Value::SimpleString("FINE".into()));
    let echoed: Vec<String> = eval(
        &mut conn,
        "return {KEYS[1], ARGV[1], ARGV[2]}",
        &["k"],
        &["a", "b"],
    )
    .await
    .unwrap();
    assert_eq!(echoed, ["k", "a", "b"]);
    // redis.call raises a command's error; redis.pcall hands it back.
    let err = eval::<()>(&mut conn, "return redis.call('HGET', KEYS[1], 'f')", &["s"], &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"), "{err}");
    assert!(err.to_string().contains("script:"), "{err}");
    let caught: String = eval(
        &mut conn,
        "local r = redis.pcall('HGET', KEYS[1], 'f') return r.err",
        &["s"],
        &[],
    )
    .await
    .unwrap();
    assert!(caught.starts_with("WRONGTYPE"), "{caught}");
    let mine = eval::<()>(&mut conn, "return redis.error_reply('MINE went wrong')", &[], &[])
        .await
        .unwrap_err();
    assert_eq!(mine.code(), Some("MINE"), "{mine}");
    // Lua errors, and the global lock.
    let runtime = eval::<()>(&mut conn, "error('boom')", &[], &[])
        .await
        .unwrap_err();
    assert!(runtime.to_string().contains("user_script:1: boom"), "{runtime}");
    let global = eval::<()>(&mut conn, "x = 1", &[], &[]).await.unwrap_err();
    assert!(
        global.to_string().contains("create global variable 'x'"),
        "{global}"
    );
    let syntax = eval::<()>(&mut conn, "return (", &[], &[]).await.unwrap_err();
    assert!(syntax.to_string().contains("Error compiling script"), "{syntax}");
    // Shebangs and their flags.
    let read_only = eval::<()>(
        &mut conn,
        "#!lua flags=no-writes\nreturn redis.call('SET', 'k', 'v')",
        &[],
        &[],
    )
    .await
    .unwrap_err();
    assert!(
        read_only.to_string().contains("Write commands are not allowed"),
        "{read_only}"
    );
    let flagged: i64 = eval(&mut conn, "#!lua flags=allow-oom\nreturn 7", &[], &[])
        .await
        .unwrap();
    assert_eq!(flagged, 7);
    let unknown = eval::<()>(&mut conn, "#!lua flags=bogus\nreturn 1", &[], &[])
        .await
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("Unexpected flag in script shebang: bogus"),
        "{unknown}"
    );
    // EVALSHA of an unknown script is NOSCRIPT; redis-rs's Script loads it and goes on.
    let missing = redis::cmd("EVALSHA")
        .arg("0".repeat(40))
        .arg(0)
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(
        missing.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
    );
    let script = redis::Script::new("return redis.call('SET', KEYS[1], ARGV[1])");
    let _: () = script
        .key("via-sha")
        .arg("yes")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(conn.get::<_, String>("via-sha").await.unwrap(), "yes");
    let exists: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(script.get_hash())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, [true]);
}

#[tokio::test]
async fn a_blocked_xread_is_woken_by_xadd() {
    let server = server(Options::default()).await;
    let mut adder = connect(&server).await;
    let client = redis::Client::open(server.url()).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let mut reader = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();

    // Nothing comes: the read ends empty at its timeout.
    let started = Instant::now();
    let none: Option<redis::Value> = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(150)
        .arg("STREAMS")
        .arg("s")
        .arg("$")
        .query_async(&mut reader)
        .await
        .unwrap();
    assert!(none.is_none());
    assert!(started.elapsed() >= Duration::from_millis(150));

    let read = tokio::spawn(async move {
        let reply: Vec<(String, Vec<Entry>)> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(10)
            .arg("BLOCK")
            .arg(10_000)
            .arg("STREAMS")
            .arg("s")
            .arg("$")
            .query_async(&mut reader)
            .await
            .unwrap();
        reply
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let id: String = redis::cmd("XADD")
        .arg("s")
        .arg("MAXLEN")
        .arg("~")
        .arg(16)
        .arg("*")
        .arg("f")
        .arg("v")
        .query_async(&mut adder)
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].0, "s");
    assert_eq!(reply[0].1[0].0, id);
    assert_eq!(reply[0].1[0].1["f"], "v");

    // Ranges, both ways, exclusive starts and counts.
    for i in 0..5 {
        let _: String = redis::cmd("XADD")
            .arg("s")
            .arg("*")
            .arg("i")
            .arg(i)
            .query_async(&mut adder)
            .await
            .unwrap();
    }
    let after: Vec<Entry> = redis::cmd("XRANGE")
        .arg("s")
        .arg(format!("({id}"))
        .arg("+")
        .arg("COUNT")
        .arg(2)
        .query_async(&mut adder)
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|(_, f)| f["i"].clone()).collect::<Vec<_>>(),
        ["0", "1"]
    );
    let last: Vec<Entry> = redis::cmd("XREVRANGE")
        .arg("s")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut adder)
        .await
        .unwrap();
    assert_eq!(last[0].1["i"], "4");
    let len: i64 = redis::cmd("XLEN").arg("s").query_async(&mut adder).await.unwrap();
    assert_eq!(len, 6);
}

#[tokio::test]
async fn subscribers_hear_what_commands_and_scripts_publish() {
    let server = server(Options {
        password: Some("pw".into()),
        snapshot: None,
        snapshot_every: None,
    })
    .await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("ns:finished").await.unwrap();
    pubsub.psubscribe("ns:*").await.unwrap();
    let mut messages = pubsub.into_on_message();
    let mut conn = connect(&server).await;

    let heard: i64 = conn.publish("ns:finished", "a b").await.unwrap();
    assert_eq!(heard, 2, "the channel and the pattern");
    let _: () = eval(
        &mut conn,
        "redis.call('PUBLISH', KEYS[1], ARGV[1])",
        &["ns:finished"],
        &["c"],
    )
    .await
    .unwrap();

    let mut got = Vec::new();
    while got.len() < 4 {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap();
        got.push((message.from_pattern(), message.get_payload::<String>().unwrap()));
    }
    got.sort();
    assert_eq!(
        got,
        [
            (false, "a b".into()),
            (false, "c".into()),
            (true, "a b".into()),
            (true, "c".into())
        ]
    );
}

#[tokio::test]
async fn keys_expire_when_read_and_when_nobody_reads_them() {
    let server = server(Options::default()).await;
    let mut conn = connect(&server).await;
    let _: () = redis::cmd("SET")
        .arg("read")
        .arg("v")
        .arg("PX")
        .arg(100)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("unread")
        .arg("v")
        .arg("PX")
        .arg(100)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = conn.hset("kept", "f", "v").await.unwrap();
    let _: bool = conn.expire("kept", 100).await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("kept")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ttl, 100);
    let pttl: i64 = redis::cmd("PTTL")
        .arg("read")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=100).contains(&pttl), "{pttl}");
    assert_eq!(
        redis::cmd("TTL")
            .arg("none")
            .query_async::<i64>(&mut conn)
            .await
            .unwrap(),
        -2
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(conn.get::<_, Option<String>>("read").await.unwrap(), None);
    // The sweep deletes the key nobody read (DBSIZE counts keys not yet looked at).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let size: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        if size == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{size} keys left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A time already past deletes the key.
    let _: bool = conn.expire_at("kept", 1).await.unwrap();
    assert!(!conn.exists::<_, bool>("kept").await.unwrap());
}

#[tokio::test]
async fn scan_visits_every_matching_key() {
    let server = server(Options::default()).await;
    let mut conn = connect(&server).await;
    for i in 0..250 {
        let _: () = conn.set(format!("ns:{i}"), i).await.unwrap();
    }
    let _: () = conn.set("other", 1).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("ns:*")
            .arg("COUNT")
            .arg(40)
            .query_async(&mut conn)
            .await
            .unwrap();
        seen.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 250);
    let keys: Vec<String> = conn.keys("oth?r").await.unwrap();
    assert_eq!(keys, ["other"]);
}

#[tokio::test]
async fn a_snapshot_keeps_the_keyspace_across_a_restart_but_not_expired_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.json");
    let options = Options {
        password: None,
        snapshot: Some(path.clone()),
        snapshot_every: None,
    };
    let first = server(options.clone()).await;
    let mut conn = connect(&first).await;
    let binary = vec![0u8, 159, 146, 150, 255];
    redis::pipe()
        .set("string", "text")
        .set("binary", binary.clone())
        .hset("hash", "f", "v")
        .sadd("set", &["a", "b"])
        .zadd("zset", "low", "-inf")
        .zadd("zset", "mid", 1.5)
        .rpush("list", &["x", "y"])
        .cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(150)
        .cmd("SET")
        .arg("long")
        .arg("v")
        .arg("EX")
        .arg(3600)
        .cmd("XADD")
        .arg("stream")
        .arg("5-1")
        .arg("f")
        .arg("v")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    first.shutdown().await.unwrap();
    assert!(path.exists());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let second = server(options).await;
    let mut conn = connect(&second).await;
    assert_eq!(conn.get::<_, String>("string").await.unwrap(), "text");
    assert_eq!(conn.get::<_, Vec<u8>>("binary").await.unwrap(), binary);
    assert_eq!(conn.hget::<_, _, String>("hash", "f").await.unwrap(), "v");
    assert_eq!(conn.scard::<_, i64>("set").await.unwrap(), 2);
    let zset: Vec<(String, f64)> = conn
        .zrangebyscore_withscores("zset", "-inf", "+inf")
        .await
        .unwrap();
    assert_eq!(
        zset,
        [("low".to_owned(), f64::NEG_INFINITY), ("mid".to_owned(), 1.5)]
    );
    assert_eq!(
        conn.lrange::<_, Vec<String>>("list", 0, -1).await.unwrap(),
        ["x", "y"]
    );
    assert!(
        !conn.exists::<_, bool>("short").await.unwrap(),
        "expired while down"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg("long")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((3590..=3600).contains(&ttl), "{ttl}");
    // The stream goes on after its last ID.
    let stale = redis::cmd("XADD")
        .arg("stream")
        .arg("5-1")
        .arg("f")
        .arg("v")
        .query_async::<String>(&mut conn)
        .await;
    assert!(stale.is_err());
    let next: String = redis::cmd("XADD")
        .arg("stream")
        .arg("5-*")
        .arg("f")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(next, "5-2");
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_snapshot_is_an_error_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, b"{\"format\": \"ferry-embedded-redis/1\", \"keys\": [tru").unwrap();
    let options = Options {
        password: None,
        snapshot: Some(path.clone()),
        snapshot_every: None,
    };
    let err = Server::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[tokio::test]
async fn a_snapshot_is_written_every_interval_so_a_killed_process_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.json");
    let options = Options {
        password: None,
        snapshot: Some(path.clone()),
        snapshot_every: Some(Duration::from_millis(100)),
    };
    let first = server(options.clone()).await;
    let mut conn = connect(&first).await;
    conn.set::<_, _, ()>("kept", "yes").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&path).is_ok_and(|text| text.contains("kept")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot written within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dropped, not shut down: as a process killed would leave it.
    drop(conn);
    drop(first);
    let second = server(options).await;
    let mut conn = connect(&second).await;
    assert_eq!(conn.get::<_, String>("kept").await.unwrap(), "yes");
    second.shutdown().await.unwrap();
}

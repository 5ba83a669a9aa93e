//! The floor under Ferry's round trip: how long one AMQP hop takes on this machine, the
//! way Ferry makes it (a persistent message to a durable queue, its confirm not awaited,
//! a consumer on another connection with manual acks), one message at a time. A task
//! makes three such hops (web-service -> forwarder -> endpoint -> forwarder).
//!
//!     cargo run --release -p ferry-broker --example hop -- 1000

use std::time::{Duration, Instant};

use ferry_broker::{Broker, Options};
use ferry_proto::EndpointId;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let url =
        std::env::var("FERRY_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let options = Options {
        queue_expires: Some(Duration::from_secs(60)),
        ..Options::default()
    };
    let sender = Broker::connect(&url, "ferry-hop", options.clone()).await?;
    let receiver = Broker::connect(&url, "ferry-hop", options).await?;
    let endpoint = EndpointId::new();
    // The endpoint's queue is bound to the results exchange's dead letters: declare
    // what it needs first.
    sender.declare_core().await?;
    sender.declare_endpoint(endpoint).await?;
    let queue = sender.endpoint_queue(endpoint);
    let mut consumer = receiver.consume(&queue, 64, "hop").await?;

    let mut hops = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let at = Instant::now();
        let confirm = sender.publish_pending(&queue, b"one task").await?;
        let delivery = consumer.next().await.expect("consuming")?;
        let took = at.elapsed();
        delivery.ack().await?;
        confirm.wait().await?;
        if i >= 50 {
            hops.push(took);
        }
    }
    sender.delete_queue(&queue).await?;
    hops.sort();
    let at = |q: f64| hops[((hops.len() as f64 * q) as usize).min(hops.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "AMQP hop (publish -> delivered), {n} one at a time: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
        at(0.5),
        at(0.9),
        at(0.99)
    );
    Ok(())
}

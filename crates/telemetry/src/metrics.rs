//! Prometheus metrics: each process keeps one [`Registry`] of its own counters, gauges
//! and histograms ([`prometheus_client`]) and serves it at `/metrics` in the
//! OpenMetrics text format that Prometheus scrapes (docs/operations.md). A crate with
//! labelled metrics depends on `prometheus-client` itself, for its `EncodeLabelSet`
//! derive.

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
pub use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry whose metrics are all named `ferry_…`.
pub fn registry() -> Registry {
    Registry::with_prefix("ferry")
}

/// The registry's metrics in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String fails only if a metric's own encoding does, which the
    // library's types never do.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    text
}

/// Serves `GET /metrics` on `listener` (bound by the caller, so that a taken address
/// is an error at its start), answering with what `text` renders, until the process
/// ends. For the processes that serve nothing else over HTTP (the forwarder, the
/// endpoint).
pub async fn serve(
    listener: tokio::net::TcpListener,
    text: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = text.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text()) }
        }),
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// Binds `listen` (a taken address is an error naming `setting`, at the caller's
/// start) and serves [`serve`] there in a task of its own, stopped when the returned
/// guard is dropped.
pub async fn serve_on(
    listen: std::net::SocketAddr,
    setting: &str,
    text: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> anyhow::Result<crate::AbortOnDrop<anyhow::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {listen} ({setting}): {e}"))?;
    tracing::info!(%listen, "serving metrics at /metrics");
    Ok(crate::AbortOnDrop(tokio::spawn(serve(listener, text))))
}

/// Buckets for durations from 0.5 ms to about 9 minutes, doubling.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 21)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_the_text_format_with_the_prefix() {
        let mut registry = registry();
        let done = Counter::<u64>::default();
        registry.register("tasks_done", "Tasks done", done.clone());
        let took = Histogram::new(duration_buckets());
        registry.register("task_seconds", "How long tasks took", took.clone());
        done.inc_by(3);
        took.observe(0.003);
        let text = render(&registry);
        assert!(text.contains("# TYPE ferry_tasks_done counter"), "{text}");
        assert!(text.contains("ferry_tasks_done_total 3"), "{text}");
        assert!(text.contains("ferry_task_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

//! Task traces, exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and nothing at all otherwise.
//!
//! A task's trace ID **is its task ID** (the UUID's 128 bits), so every process that
//! touches a task puts its spans in the task's trace without a trace context travelling
//! in the messages, and a user finds a task's trace by pasting the task ID (without the
//! dashes) into Jaeger or Tempo. The root span (`task`, emitted by the forwarder when
//! the result is recorded) and each attempt's `endpoint` span have IDs derived from the
//! task ID too ([`root_span`], [`attempt_span`]), so the other hops name them as parents
//! before they exist. Each process emits the spans of its own hop, with its service name
//! (`ferry-web-service`, `ferry-forwarder`, `ferry-endpoint`); the endpoint speaks for its
//! managers and workers (their times travel in the reports), which run on compute nodes
//! that often cannot reach a collector.
//!
//! The rest of the exporter's settings come from the usual variables:
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or `http/json`),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_SCHEDULE_DELAY`
//! (how often spans are sent, 5 s by default), `OTEL_SERVICE_NAME` (overrides the
//! process's name). Only plain HTTP: run a collector beside the services.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

pub use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

thread_local! {
    /// The IDs the next span built on this thread takes instead of random ones.
    static PLANNED: Cell<(Option<u128>, Option<u64>)> = const { Cell::new((None, None)) };
}

/// Gives the planned IDs when a span asks for IDs right after [`emit`] planned them,
/// random ones otherwise.
#[derive(Debug, Default)]
struct PlannedIds(RandomIdGenerator);

impl IdGenerator for PlannedIds {
    fn new_trace_id(&self) -> TraceId {
        let (trace, span) = PLANNED.get();
        PLANNED.set((None, span));
        trace.map_or_else(|| self.0.new_trace_id(), TraceId::from)
    }

    fn new_span_id(&self) -> SpanId {
        let (trace, span) = PLANNED.get();
        PLANNED.set((trace, None));
        span.map_or_else(|| self.0.new_span_id(), SpanId::from)
    }
}

/// While this lives, spans are exported; dropping it sends what is left (up to 5 s).
pub struct Exporting(SdkTracerProvider);

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "cannot send the last trace spans");
        }
    }
}

/// Starts exporting this process's spans as `service` when an OTLP endpoint is
/// configured; `None` (and nothing exported, at no cost) when none is. An exporter that
/// cannot be built is logged and traces stay off: they never stop a service.
pub fn init(service: &'static str) -> Option<Exporting> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot export traces (OTEL_EXPORTER_OTLP_*): traces are off");
            return None;
        }
    };
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| service.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_id_generator(PlannedIds::default())
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "ferry");
    if TRACER.set(tracer).is_err() {
        return None;
    }
    tracing::info!(service, "exporting task traces over OTLP");
    Some(Exporting(provider))
}

/// Whether spans are exported (callers skip gathering a span's facts when not).
pub fn on() -> bool {
    TRACER.get().is_some()
}

/// The ID of a task's root span (`task`), from its trace (task) ID.
pub fn root_span(trace: u128) -> u64 {
    derived(trace, 0)
}

/// The ID of the `endpoint` span of one attempt of a task.
pub fn attempt_span(trace: u128, attempt: u32) -> u64 {
    derived(trace, u64::from(attempt) + 1)
}

fn derived(trace: u128, n: u64) -> u64 {
    // The task ID's low half mixed with `n` (splitmix64's finalizer): spread, fixed.
    let mut z = (trace as u64) ^ (trace >> 64) as u64 ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

/// Unix micros as a span time.
pub fn at_micros(micros: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(micros)
}

/// One hop of one task, already over.
#[derive(Debug, Clone)]
pub struct Hop {
    pub name: &'static str,
    /// The task's ID as 128 bits: the trace.
    pub trace: u128,
    /// Its parent's span ID (`None`: this is the root).
    pub parent: Option<u64>,
    /// A fixed ID for this span (one other spans name as parent), else a random one.
    pub id: Option<u64>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Set for a hop that failed: the span's status says so, with these words.
    pub error: Option<String>,
}

impl Hop {
    /// A hop of task `task_id` (its `trace`) under the task's root span, from `start`
    /// to `end` (Unix micros), tagged with the task's ID.
    pub fn of_task(name: &'static str, trace: u128, task_id: String, start: u64, end: u64) -> Self {
        Self {
            name,
            trace,
            parent: Some(root_span(trace)),
            id: None,
            start: at_micros(start),
            end: at_micros(end),
            attributes: vec![KeyValue::new("ferry.task_id", task_id)],
            error: None,
        }
    }

    /// This hop with one more attribute.
    pub fn with(mut self, key: &'static str, value: impl Into<opentelemetry::Value>) -> Self {
        self.attributes.push(KeyValue::new(key, value));
        self
    }
}

/// Exports one hop's span (nothing when traces are off).
pub fn emit(hop: Hop) {
    let Some(tracer) = TRACER.get() else {
        return;
    };
    let parent = match hop.parent {
        Some(p) => opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(hop.trace),
            SpanId::from(p),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )),
        None => opentelemetry::Context::new(),
    };
    PLANNED.set((hop.parent.is_none().then_some(hop.trace), hop.id));
    let builder = SpanBuilder::from_name(hop.name)
        .with_start_time(hop.start)
        .with_attributes(hop.attributes);
    let mut span = tracer.build_with_context(builder, &parent);
    PLANNED.set((None, None));
    if let Some(error) = hop.error {
        span.set_status(Status::error(error));
    }
    span.end_with_timestamp(hop.end.max(hop.start));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_span_ids_are_fixed_distinct_and_never_zero() {
        let task = 0x0123_4567_89ab_cdef_0011_2233_4455_6677u128;
        assert_eq!(root_span(task), root_span(task));
        assert_ne!(root_span(task), attempt_span(task, 0));
        assert_ne!(attempt_span(task, 0), attempt_span(task, 1));
        assert_ne!(root_span(task), root_span(task + 1));
        assert_ne!(root_span(0), 0);
    }

    #[test]
    fn planned_ids_are_taken_once_then_random() {
        let ids = PlannedIds::default();
        PLANNED.set((Some(7), Some(9)));
        assert_eq!(ids.new_span_id(), SpanId::from(9u64));
        assert_eq!(ids.new_trace_id(), TraceId::from(7u128));
        assert_ne!(ids.new_span_id(), SpanId::from(9u64));
        assert_ne!(ids.new_trace_id(), TraceId::from(7u128));
    }
}

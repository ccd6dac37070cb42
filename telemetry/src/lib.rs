//! Logs and traces of a node, and the signal that stops it ([`shutdown_signal`]).
//!
//! Tracing follows the OpenTelemetry conventions: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans go over OTLP/gRPC to that endpoint
//! (Jaeger's `:4317`), named by `OTEL_SERVICE_NAME` (default: the node's name); without
//! it, or with `OTEL_SDK_DISABLED=true`, tracing is off. Export is batched on the SDK's
//! own background thread: a slow or absent collector never blocks or slows a request,
//! spans are dropped instead once the queue is full.
//!
//! W3C trace context crosses every hop: [`extract`] reads `traceparent`/`tracestate`
//! from any carrier (HTTP headers, gRPC metadata, an event record's headers) and
//! [`inject`] writes the current span's context for the next hop.
//!
//! Logs go to stderr (or stdout, see [`init_with`]), filtered by `RUST_LOG` (default `info`); `GATEHOUSE_LOG_FORMAT=json`
//! makes them JSON lines that carry the span fields, the trace id among them.

mod signal;

pub use signal::shutdown_signal;

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The environment variables this crate reads, with what they do: every Gatehouse
/// process reads them (the configuration reference lists them once).
pub const ENV_VARS: &[(&str, &str)] = &[
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTLP/gRPC endpoint for traces (e.g. http://jaeger:4317); unset: tracing off",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "Same, for traces only (wins over the generic one)",
    ),
    (
        "OTEL_SERVICE_NAME",
        "Service name in Jaeger (default: the node's name)",
    ),
    (
        "OTEL_SDK_DISABLED",
        "`true` turns tracing off even with an endpoint",
    ),
    (
        "OTEL_BSP_SCHEDULE_DELAY",
        "Batch export delay in ms (default 5000)",
    ),
    (
        "RUST_LOG",
        "Log filter (default `info`; `warn` for `gatehouse up`)",
    ),
    ("GATEHOUSE_LOG_FORMAT", "`json` for JSON log lines"),
];

/// Keeps the trace exporter alive; dropping it (or [`Telemetry::shutdown`]) flushes the
/// spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes queued spans and stops the exporter.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Installs logging (to stderr), and trace export when an OTLP endpoint is configured.
///
/// Call once per process, inside a Tokio runtime. A second call changes nothing.
pub fn init(default_service_name: &str) -> Telemetry {
    init_with(default_service_name, "info", LogTarget::Stderr)
}

/// [`init`] with another log filter than `info` when `RUST_LOG` is not set.
pub fn init_with_filter(default_service_name: &str, default_filter: &str) -> Telemetry {
    init_with(default_service_name, default_filter, LogTarget::Stderr)
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
}

/// [`init`] with every choice explicit.
pub fn init_with(default_service_name: &str, default_filter: &str, target: LogTarget) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let wanted = !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    let mut export_error = None;
    let provider = if wanted {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => {
                let mut resource = opentelemetry_sdk::Resource::builder();
                if !env_set("OTEL_SERVICE_NAME") {
                    resource = resource.with_service_name(default_service_name.to_string());
                }
                Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(resource.build())
                        .build(),
                )
            }
            Err(e) => {
                export_error = Some(e.to_string());
                None
            }
        }
    } else {
        None
    };

    use std::io::IsTerminal;
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("GATEHOUSE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let writer = move || -> Box<dyn std::io::Write> {
        match target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::Stderr => Box::new(std::io::stderr()),
        }
    };
    let terminal = match target {
        LogTarget::Stdout => std::io::stdout().is_terminal(),
        LogTarget::Stderr => std::io::stderr().is_terminal(),
    };
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(writer)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(terminal)
            .with_filter(filter())
            .boxed()
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("gatehouse"))
            .with_filter(EnvFilter::new("info"))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(e) = export_error {
        tracing::warn!(error = %e, "trace export disabled: cannot build the OTLP exporter");
    }
    Telemetry { provider }
}

/// The trace context carried by `headers` (`traceparent`, `tracestate`; names compared
/// case-insensitively).
pub fn extract<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> opentelemetry::Context {
    let carrier: HashMap<String, String> = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` a child of the trace context carried by `headers`, if they carry one.
pub fn set_parent_from<'a>(
    span: &tracing::Span,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let context = extract(headers);
    use opentelemetry::trace::TraceContextExt;
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
    record_trace_id(span);
}

/// Records the span's trace id in its `trace_id` field (when it declares one and traces
/// are exported), so JSON log lines inside the span carry it.
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string().as_str());
    }
}

/// The W3C headers (`traceparent`, and `tracestate` when non-empty) of `span`'s context;
/// empty when tracing is off.
pub fn inject(span: &tracing::Span) -> Vec<(String, String)> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    let mut headers: Vec<(String, String)> = carrier.into_iter().collect();
    headers.sort();
    headers
}

/// `traceparent` of the current span, or empty.
pub fn current_traceparent() -> (String, String) {
    let headers = inject(&tracing::Span::current());
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    (get("traceparent"), get("tracestate"))
}

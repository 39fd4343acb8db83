//! Logs and traces. Logs go to stderr (`RUST_LOG`, default `info`). Spans at info level and above
//! (whatever `RUST_LOG` says) are exported over
//! OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` names a
//! collector (the standard OpenTelemetry variables, `OTEL_SERVICE_NAME` too; the service name
//! defaults to `moe-<binary>`). A span's context crosses processes as a W3C `traceparent` string
//! inside our own messages ([`traceparent`], [`set_remote_parent`]), since one long-lived stream
//! carries the requests of many traces.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// The process's trace export, flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: logs to stderr and, with a collector configured, spans
    /// to it. The OTLP client lives on `runtime`. A collector that cannot be set up is reported
    /// on stderr and the process goes on without export.
    pub fn init(runtime: &tokio::runtime::Runtime) -> Telemetry {
        let configured = ENDPOINT_VARIABLES
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|e| !e.is_empty()));
        let provider = configured
            .then(|| runtime.block_on(async { exporting_provider() }))
            .and_then(|built| {
                built
                    .map_err(|e| eprintln!("warning: no trace export: {e}"))
                    .ok()
            });
        // `RUST_LOG` filters the logs only: exported spans are every span at info and above.
        let otel = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("moe-cluster"))
                .with_filter(LevelFilter::INFO)
        });
        // Colours only on a terminal: logs written to files stay plain text.
        let logs = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            );
        tracing_subscriber::registry().with(logs).with(otel).init();
        Telemetry { provider }
    }

    /// Sends the spans still buffered; call before the runtime stops.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces: {e}");
        }
    }
}

fn exporting_provider() -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "server".into());
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(format!("moe-{binary}"));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The W3C `traceparent` of `span`'s context; empty when there is none to carry (no trace
/// export in this process, or a disabled span).
pub fn traceparent(span: &tracing::Span) -> String {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of the remote span `traceparent` names, so a trace continues across
/// processes; an empty or malformed `traceparent` leaves `span` as it is.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    use super::*;

    #[test]
    fn a_traceparent_makes_a_span_elsewhere_a_child_in_the_same_trace() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let call = tracing::info_span!("expert_call");
            let carried = traceparent(&call);
            assert_eq!(carried.len(), 55, "{carried}");
            assert!(carried.starts_with("00-"), "{carried}");
            let served = tracing::info_span!("layer_request");
            set_remote_parent(&served, &carried);
            let other = tracing::info_span!("unrelated");
            set_remote_parent(&other, "");
            set_remote_parent(&other, "not a traceparent");
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let named = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
        let (call, served, other) = (
            named("expert_call"),
            named("layer_request"),
            named("unrelated"),
        );
        assert_eq!(served.span_context.trace_id(), call.span_context.trace_id());
        assert_eq!(served.parent_span_id, call.span_context.span_id());
        assert_ne!(other.span_context.trace_id(), call.span_context.trace_id());
        // Without an OpenTelemetry layer there is nothing to carry.
        assert_eq!(traceparent(&tracing::info_span!("untraced")), "");
    }
}

//! Stdout line formats. Both carry the `trace_id`/`span_id` of the request's OTel context, so a
//! line can be joined to its trace:
//! - JSON: one object per event, every value escaped by serde_json (user text can never start a
//!   second line);
//! - text: tracing-subscriber's own format, with the ids appended.

use std::fmt;

use opentelemetry::trace::TraceContextExt;

use super::server_span::hex_into;
use tracing::field::{Field, Visit};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// One JSON object per event, written straight into the line (no intermediate map): the access
/// event is on every request's path.
pub struct JsonWithTraceIds;

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = JsonLine {
            buf: Vec::with_capacity(256),
            has_ids: false,
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.buf.push(b'{');
        line.string_field("timestamp", &now);
        line.string_field("level", meta.level().as_str());
        line.string_field("target", meta.target());
        event.record(&mut line);
        // The HTTP middleware runs each request in its span's OTel context.
        let context = opentelemetry::Context::current();
        let span = context.span();
        let span_context = span.span_context();
        if span_context.is_valid() && !line.has_ids {
            // Hex ids need no escaping.
            let mut ids = *b",\"trace_id\":\"________________________________\",\"span_id\":\"________________\"";
            hex_into(&mut ids[13..45], &span_context.trace_id().to_bytes());
            hex_into(&mut ids[58..74], &span_context.span_id().to_bytes());
            line.buf.extend_from_slice(&ids);
        }
        line.buf.push(b'}');
        let text = std::str::from_utf8(&line.buf).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The JSON object being written: `"key":value` pairs, every key and string escaped by
/// serde_json.
struct JsonLine {
    buf: Vec<u8>,
    /// The event names its own `trace_id`/`span_id`; the context's are not added.
    has_ids: bool,
}

impl JsonLine {
    fn key(&mut self, name: &str) {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        if name == "trace_id" || name == "span_id" {
            self.has_ids = true;
        }
        let _ = serde_json::to_writer(&mut self.buf, name);
        self.buf.push(b':');
    }

    fn value(&mut self, name: &str, value: impl serde::Serialize) {
        self.key(name);
        // Writing to a Vec cannot fail; a non-finite float becomes null.
        let _ = serde_json::to_writer(&mut self.buf, &value);
    }

    fn string_field(&mut self, name: &str, value: &str) {
        self.value(name, value);
    }
}

impl Visit for JsonLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.value(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field.name(), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field.name());
        // Escaped while it is formatted: no intermediate String (the message is one of these).
        use serde::Serializer as _;
        let _ = serde_json::Serializer::new(&mut self.buf).collect_str(&AsDisplay(value));
    }
}

/// A `Debug` value (`fmt::Arguments` for the message) written through `Display`.
struct AsDisplay<'a>(&'a dyn fmt::Debug);

impl fmt::Display for AsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// tracing-subscriber's full text format, then ` trace_id=… span_id=…` when the event happened
/// inside a traced request.
pub struct TextWithTraceIds(pub tracing_subscriber::fmt::format::Format);

impl<S, N> FormatEvent<S, N> for TextWithTraceIds
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        let context = opentelemetry::Context::current();
        let span = context.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            writeln!(
                writer,
                "{line} trace_id={} span_id={}",
                span_context.trace_id(),
                span_context.span_id()
            )
        } else {
            writeln!(writer, "{line}")
        }
    }
}

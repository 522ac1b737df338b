//! Stdout line formats. Both carry the `trace_id`/`span_id` of the request's OTel context, so a
//! line can be joined to its trace:
//! - JSON: one object per event, every value escaped by serde_json (user text can never start a
//!   second line);
//! - text: tracing-subscriber's own format, with the ids appended.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

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
        let mut object = Map::new();
        object.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        object.insert("level".into(), meta.level().as_str().into());
        object.insert("target".into(), meta.target().into());
        event.record(&mut JsonVisitor(&mut object));
        // The HTTP middleware runs each request in its span's OTel context.
        let context = opentelemetry::Context::current();
        let span = context.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            object
                .entry("trace_id")
                .or_insert_with(|| span_context.trace_id().to_string().into());
            object
                .entry("span_id")
                .or_insert_with(|| span_context.span_id().to_string().into());
        }
        let line = serde_json::to_string(&object).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
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

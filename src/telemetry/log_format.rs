//! JSON log lines for stdout: one object per event, every value escaped by serde_json (so user
//! text can never start a second line), and the `trace_id`/`span_id` of the active span, so a
//! line can be joined to its trace.

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
        // tracing-opentelemetry activates the span's OTel context on entry.
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

/// Stdout for the text format: one event is one line. Control characters inside an event
/// (a newline or carriage return in an error message a client provoked) are written escaped,
/// so no client can forge a second log line. The formatter writes each event in one call.
pub struct LineSafeStdout;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineSafeStdout {
    type Writer = LineSafeWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineSafeWriter(std::io::stdout())
    }
}

pub struct LineSafeWriter(std::io::Stdout);

/// One formatted event as exactly one line.
fn escape_line(event: &str) -> String {
    let body = event.strip_suffix('\n').unwrap_or(event);
    let mut line = String::with_capacity(event.len() + 1);
    for ch in body.chars() {
        match ch {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            // Tab is harmless; ESC starts the formatter's own colour codes (tracing-subscriber
            // already escapes ESC inside field values).
            '\t' | '\x1b' => line.push(ch),
            c if c.is_control() => line.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => line.push(c),
        }
    }
    line.push('\n');
    line
}

impl std::io::Write for LineSafeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .write_all(escape_line(&String::from_utf8_lossy(buf)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_event_stays_one_line() {
        let event = "INFO detail=\"a\nERROR forged\r\" \u{7}bell\tok\n";
        let line = super::escape_line(event);
        assert_eq!(line, "INFO detail=\"a\\nERROR forged\\r\" \\u{7}bell\tok\n");
        assert_eq!(line.lines().count(), 1);
    }
}

//! Stdout, the log pipe every deployment has, made safe to block: lines go through a bounded,
//! lossy, non-blocking writer (tracing-appender), so a log reader that stops reading (a stuck log
//! driver, a paused `| less`) costs log lines, counted on `/metrics`, and never a request.

use std::{io::Write, sync::OnceLock};

use opentelemetry::metrics::Meter;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines that may wait for stdout; past it, lines are dropped and counted. About a megabyte of
/// JSON lines: seconds of logging at full load, a blip of a slow reader.
const BUFFERED_LINES: usize = 4096;

/// The writer's drop count, for the metric; one stdout per process.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The non-blocking stdout and the guard that flushes it when dropped.
pub fn non_blocking() -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("stdout-writer")
        .finish(std::io::stdout());
    let _ = DROPPED.set(writer.error_counter());
    (writer, guard)
}

/// `log.stdout.dropped`: lines not written because stdout was not keeping up.
pub fn register_stdout_metrics(meter: &Meter) {
    meter
        .u64_observable_counter("log.stdout.dropped")
        .with_unit("{line}")
        .with_description("Log lines dropped because stdout was not being read fast enough")
        .with_callback(|counter| {
            let dropped = DROPPED.get().map_or(0, ErrorCounter::dropped_lines);
            counter.observe(dropped as u64, &[]);
        })
        .build();
}

/// Any writer, one event per line: control characters inside an event (a newline or carriage
/// return in an error message a client provoked) are written escaped, so no client can forge a
/// second log line. The formatters write each event in one call.
#[derive(Clone)]
pub struct LineSafe<W>(pub W);

impl<'a, W: Write + Clone + 'a> tracing_subscriber::fmt::MakeWriter<'a> for LineSafe<W> {
    type Writer = LineSafe<W>;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

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

impl<W: Write> Write for LineSafe<W> {
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

//! Process and Tokio runtime gauges, read when `/metrics` is scraped (or the OTLP reader
//! collects). Values come from `/proc/self` through `procfs`; one read serves every instrument
//! of a collection.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry::{metrics::Meter, KeyValue};
use opentelemetry_semantic_conventions::{
    attribute::CPU_MODE,
    metric::{
        PROCESS_CPU_TIME, PROCESS_MEMORY_USAGE, PROCESS_MEMORY_VIRTUAL, PROCESS_THREAD_COUNT,
        PROCESS_UNIX_FILE_DESCRIPTOR_COUNT, PROCESS_UPTIME,
    },
};
use tokio::runtime::Handle;

/// What one read of `/proc/self` tells.
#[derive(Debug, Default, Clone, Copy)]
struct Snapshot {
    user_seconds: f64,
    system_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    threads: i64,
    open_fds: i64,
}

/// A collection calls every callback within microseconds; reading `/proc` once for all of them
/// keeps a scrape cheap.
struct Cached {
    taken: Option<Instant>,
    snapshot: Snapshot,
}

const FRESH_FOR: Duration = Duration::from_millis(200);

fn read() -> Snapshot {
    let Ok(process) = procfs::process::Process::myself() else {
        return Snapshot::default();
    };
    let Ok(stat) = process.stat() else {
        return Snapshot::default();
    };
    let ticks = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    Snapshot {
        user_seconds: stat.utime as f64 / ticks,
        system_seconds: stat.stime as f64 / ticks,
        resident_bytes: i64::try_from(stat.rss.saturating_mul(page)).unwrap_or(i64::MAX),
        virtual_bytes: i64::try_from(stat.vsize).unwrap_or(i64::MAX),
        threads: stat.num_threads,
        open_fds: process.fd_count().map_or(0, |n| n as i64),
    }
}

#[derive(Clone)]
struct Reader(Arc<Mutex<Cached>>);

impl Reader {
    fn get(&self) -> Snapshot {
        let mut cached = match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cached.taken.is_none_or(|t| t.elapsed() > FRESH_FOR) {
            cached.snapshot = read();
            cached.taken = Some(Instant::now());
        }
        cached.snapshot
    }
}

/// Registers the `process.*` instruments of docs/DESIGN.md §6.
pub fn register_process_metrics(meter: &Meter) {
    let reader = Reader(Arc::new(Mutex::new(Cached {
        taken: None,
        snapshot: Snapshot::default(),
    })));
    let started = Instant::now();

    let r = reader.clone();
    meter
        .f64_observable_counter(PROCESS_CPU_TIME)
        .with_unit("s")
        .with_description("CPU time spent by the process, by mode")
        .with_callback(move |counter| {
            let s = r.get();
            counter.observe(s.user_seconds, &[KeyValue::new(CPU_MODE, "user")]);
            counter.observe(s.system_seconds, &[KeyValue::new(CPU_MODE, "system")]);
        })
        .build();
    let r = reader.clone();
    meter
        .i64_observable_up_down_counter(PROCESS_MEMORY_USAGE)
        .with_unit("By")
        .with_description("Resident memory of the process")
        .with_callback(move |gauge| gauge.observe(r.get().resident_bytes, &[]))
        .build();
    let r = reader.clone();
    meter
        .i64_observable_up_down_counter(PROCESS_MEMORY_VIRTUAL)
        .with_unit("By")
        .with_description("Virtual memory of the process")
        .with_callback(move |gauge| gauge.observe(r.get().virtual_bytes, &[]))
        .build();
    let r = reader.clone();
    meter
        .i64_observable_up_down_counter(PROCESS_THREAD_COUNT)
        .with_unit("{thread}")
        .with_description("Threads of the process")
        .with_callback(move |gauge| gauge.observe(r.get().threads, &[]))
        .build();
    let r = reader;
    meter
        .i64_observable_up_down_counter(PROCESS_UNIX_FILE_DESCRIPTOR_COUNT)
        .with_unit("{file_descriptor}")
        .with_description("Open file descriptors of the process (semconv renamed process.open_file_descriptor.count to this)")
        .with_callback(move |gauge| gauge.observe(r.get().open_fds, &[]))
        .build();
    meter
        .f64_observable_gauge(PROCESS_UPTIME)
        .with_unit("s")
        .with_description("Time since the process started serving")
        .with_callback(move |gauge| gauge.observe(started.elapsed().as_secs_f64(), &[]))
        .build();
}

/// Registers `tokio.runtime.*` from the stable `RuntimeMetrics` of the runtime `handle` runs.
pub fn register_runtime_metrics(meter: &Meter, handle: &Handle) {
    let metrics = handle.metrics();
    let m = metrics.clone();
    meter
        .i64_observable_up_down_counter("tokio.runtime.workers")
        .with_unit("{worker}")
        .with_description("Worker threads of the Tokio runtime")
        .with_callback(move |gauge| gauge.observe(m.num_workers() as i64, &[]))
        .build();
    let m = metrics.clone();
    meter
        .i64_observable_up_down_counter("tokio.runtime.alive_tasks")
        .with_unit("{task}")
        .with_description("Tasks alive in the Tokio runtime")
        .with_callback(move |gauge| gauge.observe(m.num_alive_tasks() as i64, &[]))
        .build();
    let m = metrics.clone();
    meter
        .i64_observable_up_down_counter("tokio.runtime.global_queue_depth")
        .with_unit("{task}")
        .with_description("Tasks waiting in the runtime's global queue")
        .with_callback(move |gauge| gauge.observe(m.global_queue_depth() as i64, &[]))
        .build();
    let m = metrics;
    meter
        .f64_observable_counter("tokio.runtime.busy_time")
        .with_unit("s")
        .with_description("Time the runtime's workers spent busy, summed over workers")
        .with_callback(move |counter| {
            let busy: Duration = (0..m.num_workers())
                .map(|w| m.worker_total_busy_duration(w))
                .sum();
            counter.observe(busy.as_secs_f64(), &[]);
        })
        .build();
}

//! Business counters (`items.created` …) and the `items.stored` gauge. Handlers call the typed
//! methods after a success; nothing here takes a label from a request.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use opentelemetry::metrics::{Counter, Meter};

#[derive(Clone)]
pub struct BusinessMetrics {
    created: Counter<u64>,
    read: Counter<u64>,
    updated: Counter<u64>,
    deleted: Counter<u64>,
    stored: Arc<AtomicI64>,
}

impl BusinessMetrics {
    pub fn new(meter: &Meter) -> Self {
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit("{item}")
                .with_description(description)
                .build()
        };
        let stored = Arc::new(AtomicI64::new(0));
        let observed = Arc::clone(&stored);
        meter
            .i64_observable_gauge("items.stored")
            .with_unit("{item}")
            .with_description("Items in the database, as last counted by this instance")
            .with_callback(move |gauge| gauge.observe(observed.load(Ordering::Relaxed), &[]))
            .build();
        let metrics = Self {
            created: counter("items.created", "Items created"),
            read: counter(
                "items.read",
                "Items returned by reads (one per item in a list)",
            ),
            updated: counter("items.updated", "Items updated (PUT or PATCH)"),
            deleted: counter("items.deleted", "Items deleted"),
            stored,
        };
        // A counter is exported only once it has been added to; adding 0 now makes all four
        // exist at 0 from start-up, so `sum` over them (and a "no deletes yet" panel) is a
        // number instead of an empty result.
        for counter in [
            &metrics.created,
            &metrics.read,
            &metrics.updated,
            &metrics.deleted,
        ] {
            counter.add(0, &[]);
        }
        metrics
    }

    pub fn created(&self) {
        self.created.add(1, &[]);
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self, items: u64) {
        self.read.add(items, &[]);
    }

    pub fn updated(&self) {
        self.updated.add(1, &[]);
    }

    pub fn deleted(&self) {
        self.deleted.add(1, &[]);
        self.stored.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets `items.stored` from a fresh count, correcting for other instances' writes.
    pub fn set_stored(&self, count: u64) {
        self.stored
            .store(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

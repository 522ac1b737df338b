//! OTLP to real backends (docs/DESIGN.md §7): the span, log and metric exporters built from the
//! `OTEL_EXPORTER_OTLP_*` settings (endpoint, protocol, TLS, headers, compression, timeout), their
//! batching (`OTEL_BSP_*`, `OTEL_BLRP_*`, `OTEL_METRIC_EXPORT_*`), and the propagator
//! (`OTEL_PROPAGATORS`).
//!
//! - TLS is rustls with the ring provider on both protocols. The trusted roots are the CA file of
//!   `OTEL_EXPORTER_OTLP[_SIGNAL]_CERTIFICATE` when set (and then only it, as the other SDKs do),
//!   else the system's (`rustls-native-certs`, which honours `SSL_CERT_FILE`/`SSL_CERT_DIR`).
//!   A client certificate and key give mutual TLS.
//! - Every export runs on a one-thread runtime of its own (`otlp-export`): the SDK calls exporters
//!   from its own threads, and the HTTP client and the gRPC channel need a Tokio runtime, which
//!   then neither competes with requests nor has to outlive them at shutdown.
//! - A backend that fails is reported once per signal and outage, with the cause, by `Watched`;
//!   the SDK's own per-batch error lines are filtered out by [`quiet_sdk_export_errors`].

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{
    tonic_types::{
        metadata::MetadataMap,
        transport::{ClientTlsConfig, Identity},
    },
    Compression, LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig,
    WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    logs::{BatchLogProcessor, LogBatch},
    metrics::{data::ResourceMetrics, exporter::PushMetricExporter, PeriodicReader, Temporality},
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::SpanData,
    Resource,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tracing::Metadata;
use tracing_subscriber::filter::FilterFn;

use super::span_pipeline::{BoundedSpanProcessor, SpanBatching};
use crate::config::{OtelConfig, OtlpCompression, OtlpProtocol, PemFile, Propagators, Signal};

/// `OTEL_EXPORTER_OTLP_TIMEOUT` when unset, as the specification has it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A setting that cannot work, in one line naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OtlpError(String);

/// The propagator `OTEL_PROPAGATORS` asks for; `none` gives one that reads and writes nothing.
pub fn propagator(propagators: Propagators) -> TextMapCompositePropagator {
    let mut chosen: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    if propagators.tracecontext {
        chosen.push(Box::new(TraceContextPropagator::new()));
    }
    if propagators.baggage {
        chosen.push(Box::new(BaggagePropagator::new()));
    }
    TextMapCompositePropagator::new(chosen)
}

/// The SDK's processors and retry loop log every failed export, batch after batch, and the HTTP
/// exporter's line only says "network error". `Watched` reports each outage once, with its
/// cause, so a global filter drops exactly those events. It looks at static metadata only, so
/// `tracing` caches its answer per call site: it costs nothing per event.
///
/// It also turns every `tracing` span off (sea-orm, sqlx and poem make them): no layer uses
/// spans, ours are made with the OTel tracer, and an enabled span costs registry work on every
/// poll of the futures it instruments.
pub fn quiet_sdk_export_errors() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    FilterFn::new(|meta| meta.is_event() && !is_replaced_sdk_event(meta))
}

fn is_replaced_sdk_event(meta: &Metadata<'_>) -> bool {
    const REPLACED: [&str; 6] = [
        "BatchSpanProcessor.ExportError",
        "BatchLogProcessor.ExportError",
        "PeriodicReader.ExportError",
        "Export.Failed.DeadlineExceeded",
        "Export.Failed.NonRetryable",
        "Export.Failed.Exhausted",
    ];
    meta.is_event() && meta.target().starts_with("opentelemetry") && REPLACED.contains(&meta.name())
}

/// The span processor: batching from `OTEL_BSP_*`, the queue cap following
/// `OTEL_BSP_MAX_QUEUE_SIZE`, each export bounded by `OTEL_BSP_EXPORT_TIMEOUT`.
pub fn span_processor(
    otel: &OtelConfig,
    endpoint: String,
) -> Result<BoundedSpanProcessor, OtlpError> {
    let batching = SpanBatching {
        max_queue_size: otel.bsp_max_queue_size,
        max_export_batch_size: batch_size(
            "OTEL_BSP",
            otel.bsp_max_export_batch_size,
            otel.bsp_max_queue_size,
        )?,
        scheduled_delay: otel.bsp_schedule_delay,
    };
    let settings = ExportSettings::resolve(otel, Signal::Traces, endpoint)?;
    let watch = Watch::new(&settings, otel.bsp_export_timeout)?;
    let _runtime = watch.runtime.enter();
    let processor = match settings.protocol {
        OtlpProtocol::Grpc => {
            let exporter = grpc(SpanExporter::builder().with_tonic(), &settings)?
                .build()
                .map_err(|e| settings.build_error(e))?;
            BoundedSpanProcessor::new(Watched::new(exporter, watch), batching)
        }
        // OTLP/HTTP spans are encoded by `otlp_encode`, straight from the SDK's span data.
        OtlpProtocol::HttpProtobuf => {
            let exporter = ProtobufHttp::new(&settings, &watch)?;
            BoundedSpanProcessor::new(Watched::new(exporter, watch), batching)
        }
    };
    Ok(processor)
}

/// The log record processor: batching from `OTEL_BLRP_*`, each export bounded by
/// `OTEL_BLRP_EXPORT_TIMEOUT`.
pub fn log_processor(otel: &OtelConfig, endpoint: String) -> Result<BatchLogProcessor, OtlpError> {
    let config = opentelemetry_sdk::logs::BatchConfigBuilder::default()
        .with_max_queue_size(otel.blrp_max_queue_size)
        .with_max_export_batch_size(batch_size(
            "OTEL_BLRP",
            otel.blrp_max_export_batch_size,
            otel.blrp_max_queue_size,
        )?)
        .with_scheduled_delay(otel.blrp_schedule_delay)
        .build();
    let settings = ExportSettings::resolve(otel, Signal::Logs, endpoint)?;
    let watch = Watch::new(&settings, otel.blrp_export_timeout)?;
    let _runtime = watch.runtime.enter();
    let processor = match settings.protocol {
        OtlpProtocol::Grpc => {
            let exporter = grpc(LogExporter::builder().with_tonic(), &settings)?
                .build()
                .map_err(|e| settings.build_error(e))?;
            BatchLogProcessor::builder(Watched::new(exporter, watch))
                .with_batch_config(config)
                .build()
        }
        // OTLP/HTTP log records are encoded by `otlp_encode`, straight from the SDK's records.
        OtlpProtocol::HttpProtobuf => {
            let exporter = ProtobufHttp::new(&settings, &watch)?;
            BatchLogProcessor::builder(Watched::new(exporter, watch))
                .with_batch_config(config)
                .build()
        }
    };
    Ok(processor)
}

/// The OTLP metric reader: every `OTEL_METRIC_EXPORT_INTERVAL`, each push bounded by
/// `OTEL_METRIC_EXPORT_TIMEOUT`.
pub fn metric_reader(
    otel: &OtelConfig,
    endpoint: String,
) -> Result<PeriodicReader<Watched<MetricExporter>>, OtlpError> {
    let settings = ExportSettings::resolve(otel, Signal::Metrics, endpoint)?;
    let watch = Watch::new(&settings, otel.metric_export_timeout)?;
    let _runtime = watch.runtime.enter();
    let exporter = match settings.protocol {
        OtlpProtocol::Grpc => grpc(MetricExporter::builder().with_tonic(), &settings)?.build(),
        OtlpProtocol::HttpProtobuf => {
            http(MetricExporter::builder().with_http(), &settings, &watch)?.build()
        }
    }
    .map_err(|e| settings.build_error(e))?;
    Ok(PeriodicReader::builder(Watched::new(exporter, watch))
        .with_interval(otel.metric_export_interval)
        .build())
}

/// The export batch size when unset, as the specification has it.
pub const DEFAULT_BATCH_SIZE: usize = 512;

/// The specification wants a batch no larger than the queue: a batch size set larger is refused
/// (the SDK would shrink it silently); the default shrinks to a smaller queue.
fn batch_size(prefix: &str, batch: Option<usize>, queue: usize) -> Result<usize, OtlpError> {
    match batch {
        Some(batch) if batch > queue => Err(OtlpError(format!(
            "{prefix}_MAX_EXPORT_BATCH_SIZE ({batch}) is larger than {prefix}_MAX_QUEUE_SIZE ({queue})"
        ))),
        Some(batch) => Ok(batch),
        None => Ok(DEFAULT_BATCH_SIZE.min(queue)),
    }
}

/// One signal's exporter settings: its own variable where set, else the base one.
#[derive(Debug, Clone)]
struct ExportSettings {
    signal: &'static str,
    endpoint: String,
    protocol: OtlpProtocol,
    headers: Vec<(String, String)>,
    gzip: bool,
    timeout: Duration,
    /// Only for `https://` endpoints.
    tls: Option<Tls>,
}

impl ExportSettings {
    fn resolve(otel: &OtelConfig, signal: Signal, endpoint: String) -> Result<Self, OtlpError> {
        let (name, var, headers, compression, timeout, certificate, client_certificate, client_key) =
            match signal {
                Signal::Traces => (
                    "trace",
                    "TRACES",
                    &otel.otlp_traces_headers,
                    otel.otlp_traces_compression,
                    otel.otlp_traces_timeout,
                    &otel.otlp_traces_certificate,
                    &otel.otlp_traces_client_certificate,
                    &otel.otlp_traces_client_key,
                ),
                Signal::Metrics => (
                    "metric",
                    "METRICS",
                    &otel.otlp_metrics_headers,
                    otel.otlp_metrics_compression,
                    otel.otlp_metrics_timeout,
                    &otel.otlp_metrics_certificate,
                    &otel.otlp_metrics_client_certificate,
                    &otel.otlp_metrics_client_key,
                ),
                Signal::Logs => (
                    "log",
                    "LOGS",
                    &otel.otlp_logs_headers,
                    otel.otlp_logs_compression,
                    otel.otlp_logs_timeout,
                    &otel.otlp_logs_certificate,
                    &otel.otlp_logs_client_certificate,
                    &otel.otlp_logs_client_key,
                ),
            };
        let https = url::Url::parse(&endpoint).is_ok_and(|url| url.scheme() == "https");
        let tls = https
            .then(|| {
                // Which variable each file came from, for the error line.
                let pick =
                    |own: &Option<PemFile>, base: &Option<PemFile>, what: &str| match (own, base) {
                        (Some(file), _) => {
                            Some((file.clone(), format!("OTEL_EXPORTER_OTLP_{var}_{what}")))
                        }
                        (None, Some(file)) => {
                            Some((file.clone(), format!("OTEL_EXPORTER_OTLP_{what}")))
                        }
                        (None, None) => None,
                    };
                Tls::load(
                    pick(certificate, &otel.otlp_certificate, "CERTIFICATE"),
                    pick(
                        client_certificate,
                        &otel.otlp_client_certificate,
                        "CLIENT_CERTIFICATE",
                    ),
                    pick(client_key, &otel.otlp_client_key, "CLIENT_KEY"),
                )
            })
            .transpose()?;
        Ok(Self {
            signal: name,
            endpoint,
            protocol: otel.otlp_protocol,
            headers: headers
                .as_ref()
                .or(otel.otlp_headers.as_ref())
                .map(|h| h.0.clone())
                .unwrap_or_default(),
            gzip: compression.or(otel.otlp_compression) == Some(OtlpCompression::Gzip),
            timeout: timeout.or(otel.otlp_timeout).unwrap_or(DEFAULT_TIMEOUT),
            tls,
        })
    }

    fn header_map(&self) -> http::HeaderMap {
        // The names and values were checked when the configuration was parsed.
        self.headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                    http::HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect()
    }

    fn build_error(&self, error: impl std::fmt::Display) -> OtlpError {
        OtlpError(format!(
            "OTLP {} exporter for {}: {error}",
            self.signal, self.endpoint
        ))
    }
}

/// The trust and identity of an `https://` export, read from the PEM files at start-up.
#[derive(Debug, Clone)]
struct Tls {
    roots: rustls::RootCertStore,
    /// The client certificate and key files (PEM), for mutual TLS.
    identity: Option<(PemFile, PemFile)>,
    /// The same, for HTTP: the rustls configuration is built once to check them.
    client: Arc<rustls::ClientConfig>,
}

impl Tls {
    fn load(
        ca: Option<(PemFile, String)>,
        client_certificate: Option<(PemFile, String)>,
        client_key: Option<(PemFile, String)>,
    ) -> Result<Self, OtlpError> {
        let mut roots = rustls::RootCertStore::empty();
        match &ca {
            Some((file, var)) => {
                for certificate in CertificateDer::pem_slice_iter(&file.pem) {
                    let certificate = certificate.map_err(|e| OtlpError(format!("{var}: {e}")))?;
                    roots.add(certificate).map_err(|e| {
                        OtlpError(format!(
                            "{var}: {} holds a certificate that cannot be a trust root ({e})",
                            file.path.display()
                        ))
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    let why = native
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default();
                    return Err(OtlpError(format!(
                        "no system CA certificates found{why}: set OTEL_EXPORTER_OTLP_CERTIFICATE for an https endpoint"
                    )));
                }
            }
        }
        let identity = match (client_certificate, client_key) {
            (Some(certificate), Some(key)) => Some((certificate, key)),
            (None, None) => None,
            (Some((_, var)), None) => {
                return Err(OtlpError(format!(
                    "{var} is set but {} is not",
                    var.replace("CERTIFICATE", "KEY")
                )))
            }
            (None, Some((_, var))) => {
                return Err(OtlpError(format!(
                    "{var} is set but {} is not",
                    var.replace("KEY", "CERTIFICATE")
                )))
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| OtlpError(format!("TLS: {e}")))?
        .with_root_certificates(roots.clone());
        let client = match &identity {
            None => builder.with_no_client_auth(),
            Some(((certificate, certificate_var), (key, key_var))) => {
                let chain = CertificateDer::pem_slice_iter(&certificate.pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| OtlpError(format!("{certificate_var}: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(&key.pem)
                    .map_err(|e| OtlpError(format!("{key_var}: {e}")))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    OtlpError(format!(
                        "{certificate_var} and {key_var} do not make a client identity: {e}"
                    ))
                })?
            }
        };
        Ok(Self {
            roots,
            identity: identity.map(|((certificate, _), (key, _))| (certificate, key)),
            client: Arc::new(client),
        })
    }

    fn for_grpc(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().trust_anchors(self.roots.roots.iter().cloned());
        match &self.identity {
            Some((certificate, key)) => {
                config.identity(Identity::from_pem(&certificate.pem, &key.pem))
            }
            None => config,
        }
    }
}

/// What an OTLP/gRPC exporter builder needs from the settings.
fn grpc<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    settings: &ExportSettings,
) -> Result<B, OtlpError> {
    let mut builder = builder
        .with_endpoint(&settings.endpoint)
        .with_protocol(Protocol::Grpc)
        .with_timeout(settings.timeout)
        .with_metadata(MetadataMap::from_headers(settings.header_map()));
    if settings.gzip {
        builder = builder.with_compression(Compression::Gzip);
    }
    if let Some(tls) = &settings.tls {
        builder = builder.with_tls_config(tls.for_grpc());
    }
    Ok(builder)
}

/// What an OTLP/HTTP exporter builder needs: its client carries TLS, headers and the timeout.
fn http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    settings: &ExportSettings,
    watch: &Watch,
) -> Result<B, OtlpError> {
    let mut builder = builder
        .with_endpoint(&settings.endpoint)
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(settings.timeout)
        .with_http_client(http_client(settings, watch));
    if settings.gzip {
        builder = builder.with_compression(Compression::Gzip);
    }
    Ok(builder)
}

/// The OTLP/HTTP client of one signal: TLS, headers and the timeout, sending on the export
/// runtime.
fn http_client(settings: &ExportSettings, watch: &Watch) -> OnExportRuntime {
    let client: Arc<dyn HttpClient> = match &settings.tls {
        Some(tls) => {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*tls.client).clone())
                .https_or_http()
                .enable_http1()
                .build();
            Arc::new(opentelemetry_http::hyper::HyperClient::new(
                connector,
                settings.timeout,
                None,
            ))
        }
        None => Arc::new(
            opentelemetry_http::hyper::HyperClient::with_default_connector(settings.timeout, None),
        ),
    };
    OnExportRuntime {
        client,
        headers: settings.header_map(),
        runtime: watch.runtime.clone(),
        transport_error: watch.transport_error.clone(),
    }
}

/// OTLP/HTTP protobuf for spans and log records, encoded by `otlp_encode` (see there for why),
/// sent with the signal's client like the other exporters.
#[derive(Debug)]
struct ProtobufHttp {
    endpoint: http::Uri,
    gzip: bool,
    client: OnExportRuntime,
    resource: Resource,
}

impl opentelemetry_sdk::trace::SpanExporter for ProtobufHttp {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.post(super::otlp_encode::encode_spans(&self.resource, &batch))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

impl opentelemetry_sdk::logs::LogExporter for ProtobufHttp {
    fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
        self.post(super::otlp_encode::encode_logs(&self.resource, &batch))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

impl ProtobufHttp {
    fn new(settings: &ExportSettings, watch: &Watch) -> Result<Self, OtlpError> {
        Ok(Self {
            endpoint: http::Uri::try_from(settings.endpoint.as_str())
                .map_err(|e| settings.build_error(e))?,
            gzip: settings.gzip,
            client: http_client(settings, watch),
            resource: Resource::builder_empty().build(),
        })
    }

    /// Sends one encoded request; any answer but 2xx is a failed export.
    fn post(&self, body: Vec<u8>) -> impl Future<Output = OTelSdkResult> + Send + '_ {
        let request = self.request(body);
        async move {
            let request = request?;
            let response = self
                .client
                .send_bytes(request)
                .await
                .map_err(|e| OTelSdkError::InternalFailure(error_chain(e.as_ref())))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(OTelSdkError::InternalFailure(format!(
                    "the collector answered HTTP {}",
                    response.status()
                )))
            }
        }
    }

    fn request(&self, body: Vec<u8>) -> Result<Request<Bytes>, OTelSdkError> {
        let failed = |e: &dyn std::fmt::Display| OTelSdkError::InternalFailure(e.to_string());
        let mut request = Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf");
        let body = if self.gzip {
            use std::io::Write as _;
            request = request.header(http::header::CONTENT_ENCODING, "gzip");
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                Default::default(),
            );
            encoder.write_all(&body).map_err(|e| failed(&e))?;
            encoder.finish().map_err(|e| failed(&e))?
        } else {
            body
        };
        request.body(Bytes::from(body)).map_err(|e| failed(&e))
    }
}

/// The runtime every export runs on (see the module documentation). Built once; a static, so it
/// is never dropped inside another runtime.
fn export_runtime() -> Result<tokio::runtime::Handle, OtlpError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otlp-export")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map(|runtime| runtime.handle().clone())
        .map_err(|e| OtlpError(format!("cannot start the OTLP export runtime: {e}")))
}

/// The HTTP client the OTLP/HTTP exporter is given: it sends on the export runtime, adds the
/// configured headers, and keeps the transport error the exporter would reduce to
/// "network error".
#[derive(Debug)]
struct OnExportRuntime {
    client: Arc<dyn HttpClient>,
    headers: http::HeaderMap,
    runtime: tokio::runtime::Handle,
    transport_error: Arc<Mutex<Option<String>>>,
}

#[async_trait::async_trait]
impl HttpClient for OnExportRuntime {
    async fn send_bytes(&self, mut request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        for (name, value) in &self.headers {
            request.headers_mut().insert(name, value.clone());
        }
        let client = self.client.clone();
        let result = match self
            .runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
        {
            Ok(result) => result,
            Err(join) => Err(Box::new(join) as HttpError),
        };
        if let Ok(mut slot) = self.transport_error.lock() {
            *slot = result.as_ref().err().map(|e| error_chain(e.as_ref()));
        }
        result
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

/// Error chains rendered by the crates repeat themselves ("tcp connect error: tcp connect error:
/// …", "invalid peer certificate: UnknownIssuer: invalid peer certificate: UnknownIssuer"): a run
/// of `: `-separated parts that repeats right after itself is said once.
fn without_repeats(text: &str) -> String {
    let mut parts: Vec<&str> = text.split(": ").collect();
    let mut i = 0;
    while i < parts.len() {
        let repeat =
            (1..=(parts.len() - i) / 2).find(|&k| parts[i..i + k] == parts[i + k..i + 2 * k]);
        match repeat {
            Some(k) => {
                parts.drain(i + k..i + 2 * k);
            }
            None => i += 1,
        }
    }
    parts.join(": ")
}

/// The state behind one signal's exporter: its deadline, and whether it is failing.
#[derive(Debug)]
struct Watch {
    signal: &'static str,
    endpoint: String,
    deadline: Duration,
    runtime: tokio::runtime::Handle,
    failing: AtomicBool,
    /// The HTTP client's last transport error (TLS, connection), which the exporter's own error
    /// does not carry.
    transport_error: Arc<Mutex<Option<String>>>,
}

impl Watch {
    fn new(settings: &ExportSettings, deadline: Duration) -> Result<Self, OtlpError> {
        Ok(Self {
            signal: settings.signal,
            endpoint: settings.endpoint.clone(),
            deadline,
            runtime: export_runtime()?,
            failing: AtomicBool::new(false),
            transport_error: Arc::default(),
        })
    }

    async fn run(&self, export: impl Future<Output = OTelSdkResult> + Send) -> OTelSdkResult {
        use futures_util::future::{select, Either};
        // The timer is made inside the task: the SDK's export threads have no runtime.
        let deadline = self.deadline;
        let timer = self
            .runtime
            .spawn(async move { tokio::time::sleep(deadline).await });
        let export = std::pin::pin!(export);
        let result = match select(export, timer).await {
            Either::Left((result, timer)) => {
                timer.abort();
                result
            }
            Either::Right(_) => Err(OTelSdkError::Timeout(self.deadline)),
        };
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        signal = self.signal,
                        "OTLP {} export to {} works again",
                        self.signal,
                        self.endpoint
                    );
                }
            }
            Err(error) => {
                let cause = self
                    .transport_error
                    .lock()
                    .ok()
                    .and_then(|mut slot| slot.take())
                    .unwrap_or_else(|| error.to_string());
                let cause = without_repeats(&cause);
                if self.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(
                        signal = self.signal,
                        endpoint = %self.endpoint,
                        error = %cause,
                        "OTLP {} export failed again",
                        self.signal
                    );
                } else {
                    tracing::error!(
                        signal = self.signal,
                        "OTLP {} export to {} failed: {cause} (its data is dropped; further failures are logged at debug level until an export succeeds)",
                        self.signal,
                        self.endpoint
                    );
                }
            }
        }
        result
    }
}

/// An exporter whose exports are bounded by the signal's export timeout and whose failures are
/// reported once per outage.
#[derive(Debug)]
pub struct Watched<E> {
    inner: E,
    watch: Watch,
}

impl<E> Watched<E> {
    fn new(inner: E, watch: Watch) -> Self {
        Self { inner, watch }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Watched<E>
{
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.watch.run(self.inner.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter for Watched<E> {
    fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
        self.watch.run(self.inner.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Watched<E> {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        self.watch.run(self.inner.export(metrics))
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use opentelemetry::{
        baggage::BaggageExt,
        propagation::TextMapPropagator,
        trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
        Context, KeyValue,
    };

    use super::*;

    fn injected(propagators: Propagators) -> HashMap<String, String> {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new()
            .with_remote_span_context(span)
            .with_baggage([KeyValue::new("tenant", "acme")]);
        let mut carrier = HashMap::new();
        propagator(propagators).inject_context(&cx, &mut carrier);
        carrier
    }

    #[test]
    fn the_default_propagates_trace_context_and_baggage() {
        let carrier = injected(Propagators {
            tracecontext: true,
            baggage: true,
        });
        assert_eq!(
            carrier,
            HashMap::from([
                (
                    "traceparent".to_owned(),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()
                ),
                // The SDK writes the (empty) trace state along with the parent.
                ("tracestate".to_owned(), String::new()),
                ("baggage".to_owned(), "tenant=acme".to_owned()),
            ])
        );
        let extracted = propagator(Propagators {
            tracecontext: true,
            baggage: true,
        })
        .extract(&carrier);
        assert_eq!(
            extracted.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            extracted.baggage().get("tenant").map(|v| v.to_string()),
            Some("acme".to_owned())
        );
    }

    #[test]
    fn each_propagator_alone_and_none() {
        let trace_only = injected(Propagators {
            tracecontext: true,
            baggage: false,
        });
        assert_eq!(
            trace_only.keys().collect::<BTreeSet<_>>(),
            BTreeSet::from([&"traceparent".to_owned(), &"tracestate".to_owned()])
        );
        let baggage_only = injected(Propagators {
            tracecontext: false,
            baggage: true,
        });
        assert_eq!(baggage_only.keys().collect::<Vec<_>>(), vec!["baggage"]);
        assert_eq!(injected(Propagators::default()), HashMap::new());
        let nothing = propagator(Propagators::default()).extract(&HashMap::from([(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]));
        assert!(!nothing.span().span_context().is_valid());
    }

    #[test]
    fn a_signal_setting_wins_over_the_base_one() {
        use clap::Parser;
        let otel = crate::config::Config::parse_from([
            "items-api",
            "--otel-exporter-otlp-headers=a=1,b=2",
            "--otel-exporter-otlp-logs-headers=c=3",
            "--otel-exporter-otlp-compression=gzip",
            "--otel-exporter-otlp-metrics-compression=none",
            "--otel-exporter-otlp-timeout=2500",
            "--otel-exporter-otlp-traces-timeout=700",
        ])
        .otel;
        let resolve = |signal| {
            ExportSettings::resolve(&otel, signal, "http://collector:4318/x".into()).unwrap()
        };
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let traces = resolve(Signal::Traces);
        assert_eq!(traces.headers, pairs(&[("a", "1"), ("b", "2")]));
        assert!(traces.gzip);
        assert_eq!(traces.timeout, Duration::from_millis(700));
        assert!(traces.tls.is_none(), "http:// needs no TLS");
        let logs = resolve(Signal::Logs);
        assert_eq!(logs.headers, pairs(&[("c", "3")]));
        assert!(logs.gzip);
        assert_eq!(logs.timeout, Duration::from_millis(2500));
        let metrics = resolve(Signal::Metrics);
        assert_eq!(metrics.headers, pairs(&[("a", "1"), ("b", "2")]));
        assert!(!metrics.gzip);
        assert_eq!(metrics.timeout, Duration::from_millis(2500));

        let defaults = crate::config::Config::parse_from(["items-api"]).otel;
        let plain =
            ExportSettings::resolve(&defaults, Signal::Traces, "http://c:4318".into()).unwrap();
        assert_eq!(
            (plain.headers, plain.gzip, plain.timeout),
            (vec![], false, DEFAULT_TIMEOUT)
        );
    }

    #[test]
    fn repeated_causes_are_said_once() {
        assert_eq!(
            without_repeats(
                "Unavailable: transport error: invalid peer certificate: UnknownIssuer: invalid peer certificate: UnknownIssuer"
            ),
            "Unavailable: transport error: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(
            without_repeats(
                "tcp connect error: tcp connect error: Connection refused (os error 111)"
            ),
            "tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(without_repeats("a: b: a: c"), "a: b: a: c");
        assert_eq!(without_repeats(""), "");
    }

    #[test]
    fn a_batch_larger_than_its_queue_is_refused() {
        assert_eq!(batch_size("OTEL_BSP", None, 2048).unwrap(), 512);
        assert_eq!(batch_size("OTEL_BSP", None, 100).unwrap(), 100);
        assert_eq!(batch_size("OTEL_BSP", Some(100), 100).unwrap(), 100);
        assert_eq!(
            batch_size("OTEL_BLRP", Some(1024), 512)
                .unwrap_err()
                .to_string(),
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE (1024) is larger than OTEL_BLRP_MAX_QUEUE_SIZE (512)"
        );
    }
}

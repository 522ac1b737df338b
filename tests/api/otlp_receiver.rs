//! An in-process OTLP receiver over real gRPC (tonic) and real HTTP/protobuf (poem), keeping
//! every export request it is sent, with its headers. It can be made slow, to test that slowness
//! never reaches a request of the app, and it can serve over TLS (rustls) with certificates made
//! at test time ([`Pki`]), asking the client for its certificate as a backend with mutual TLS
//! would. HTTP bodies sent with `Content-Encoding: gzip` are decompressed; gRPC accepts gzip.

use std::{
    io::Read,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
};
use poem::{
    handler,
    http::{HeaderMap, StatusCode},
    listener::Acceptor,
    web::{Data, LocalAddr, RemoteAddr},
    EndpointExt, Response,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        server::WebPkiClientVerifier,
    },
    server::TlsStream,
    TlsAcceptor,
};
use tonic::codec::CompressionEncoding;

#[derive(Default)]
pub struct Received {
    pub metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    pub traces: Mutex<Vec<ExportTraceServiceRequest>>,
    pub logs: Mutex<Vec<ExportLogsServiceRequest>>,
    /// The headers (gRPC metadata) of every export request, with the path it was sent to.
    pub headers: Mutex<Vec<(String, HeaderMap)>>,
    /// Why each refused TLS handshake failed (TLS receivers only).
    pub tls_failures: Mutex<Vec<String>>,
    /// Added before every answer.
    pub delay: Mutex<Duration>,
}

impl Received {
    fn delay(&self) -> Duration {
        *self.delay.lock().unwrap()
    }

    fn record_headers(&self, path: &str, headers: HeaderMap) {
        self.headers
            .lock()
            .unwrap()
            .push((path.to_owned(), headers));
    }
}

pub struct OtlpReceiver {
    /// `http://127.0.0.1:port` of the gRPC server.
    pub grpc_endpoint: String,
    /// `http://127.0.0.1:port` of the HTTP/protobuf server (signals under `/v1/…`).
    pub http_endpoint: String,
    pub received: Arc<Received>,
}

#[derive(Clone)]
struct Grpc(Arc<Received>);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        tokio::time::sleep(self.0.delay()).await;
        self.0.record_headers(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            request.metadata().clone().into_headers(),
        );
        self.0.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        tokio::time::sleep(self.0.delay()).await;
        self.0.record_headers(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request.metadata().clone().into_headers(),
        );
        self.0.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        tokio::time::sleep(self.0.delay()).await;
        self.0.record_headers(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            request.metadata().clone().into_headers(),
        );
        self.0.logs.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn protobuf(body: Vec<u8>) -> Response {
    Response::builder()
        .content_type("application/x-protobuf")
        .body(body)
}

/// The body as sent, decompressed when it says it is gzip; the headers are recorded.
fn body_of(path: &str, headers: &HeaderMap, body: Vec<u8>, received: &Received) -> Vec<u8> {
    received.record_headers(path, headers.clone());
    if headers.get("content-encoding").is_some_and(|e| e == "gzip") {
        let mut plain = Vec::new();
        match flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut plain) {
            Ok(_) => plain,
            // Not gzip after all: an empty body, which fails to decode as a request below.
            Err(_) => vec![0xff],
        }
    } else {
        body
    }
}

#[handler]
async fn http_metrics(
    headers: &HeaderMap,
    body: Vec<u8>,
    received: Data<&Arc<Received>>,
) -> Response {
    tokio::time::sleep(received.delay()).await;
    let body = body_of("/v1/metrics", headers, body, &received);
    match ExportMetricsServiceRequest::decode(body.as_slice()) {
        Ok(request) => {
            received.metrics.lock().unwrap().push(request);
            protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
        }
        Err(_) => StatusCode::BAD_REQUEST.into(),
    }
}

#[handler]
async fn http_traces(
    headers: &HeaderMap,
    body: Vec<u8>,
    received: Data<&Arc<Received>>,
) -> Response {
    tokio::time::sleep(received.delay()).await;
    let body = body_of("/v1/traces", headers, body, &received);
    match ExportTraceServiceRequest::decode(body.as_slice()) {
        Ok(request) => {
            received.traces.lock().unwrap().push(request);
            protobuf(ExportTraceServiceResponse::default().encode_to_vec())
        }
        Err(_) => StatusCode::BAD_REQUEST.into(),
    }
}

#[handler]
async fn http_logs(headers: &HeaderMap, body: Vec<u8>, received: Data<&Arc<Received>>) -> Response {
    tokio::time::sleep(received.delay()).await;
    let body = body_of("/v1/logs", headers, body, &received);
    match ExportLogsServiceRequest::decode(body.as_slice()) {
        Ok(request) => {
            received.logs.lock().unwrap().push(request);
            protobuf(ExportLogsServiceResponse::default().encode_to_vec())
        }
        Err(_) => StatusCode::BAD_REQUEST.into(),
    }
}

fn routes(received: &Arc<Received>) -> impl poem::Endpoint {
    poem::Route::new()
        .at("/v1/metrics", poem::post(http_metrics))
        .at("/v1/traces", poem::post(http_traces))
        .at("/v1/logs", poem::post(http_logs))
        .data(received.clone())
}

fn grpc_server(received: &Arc<Received>) -> tonic::transport::server::Router {
    let service = Grpc(received.clone());
    tonic::transport::Server::builder()
        .add_service(
            MetricsServiceServer::new(service.clone()).accept_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            TraceServiceServer::new(service.clone()).accept_compressed(CompressionEncoding::Gzip),
        )
        .add_service(LogsServiceServer::new(service).accept_compressed(CompressionEncoding::Gzip))
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let received = Arc::new(Received::default());

        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_port = grpc.local_addr().unwrap().port();
        tokio::spawn(
            grpc_server(&received)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
        );

        let acceptor = poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind(
            "127.0.0.1:0",
        ))
        .await
        .unwrap();
        let http_port = poem::listener::Acceptor::local_addr(&acceptor)[0]
            .as_socket_addr()
            .unwrap()
            .port();
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(routes(&received)));

        Self {
            grpc_endpoint: format!("http://127.0.0.1:{grpc_port}"),
            http_endpoint: format!("http://127.0.0.1:{http_port}"),
            received,
        }
    }

    /// The same receiver over TLS: `https://127.0.0.1:port` endpoints with the server
    /// certificate of `pki`, and every client asked for a certificate signed by its CA.
    pub async fn start_tls(pki: &Pki) -> Self {
        let received = Arc::new(Received::default());

        let (grpc_port, grpc) = tls_incoming(pki, b"h2", &received).await;
        tokio::spawn(
            grpc_server(&received)
                .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(grpc)),
        );

        let (http_port, http) = tls_incoming(pki, b"http/1.1", &received).await;
        let acceptor = TlsConnections {
            incoming: http,
            port: http_port,
        };
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(routes(&received)));

        Self {
            grpc_endpoint: format!("https://127.0.0.1:{grpc_port}"),
            http_endpoint: format!("https://127.0.0.1:{http_port}"),
            received,
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.received.delay.lock().unwrap() = delay;
    }

    /// Polls until `check` holds, failing the test after `within`.
    pub async fn wait_for(&self, within: Duration, what: &str, check: impl Fn(&Received) -> bool) {
        let deadline = Instant::now() + within;
        while !check(&self.received) {
            assert!(
                Instant::now() < deadline,
                "OTLP receiver never saw {what}; it holds {} metric, {} trace and {} log exports",
                self.received.metrics.lock().unwrap().len(),
                self.received.traces.lock().unwrap().len(),
                self.received.logs.lock().unwrap().len(),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A test certificate authority, a server certificate for 127.0.0.1 and a client certificate,
/// all made fresh (rcgen).
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    pub fn generate() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("items-api test CA {}", rand::random::<u64>()),
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) =
            leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert_pem, client_key_pem) =
            leaf("items-api", ExtendedKeyUsagePurpose::ClientAuth);
        Self {
            ca_pem: ca.pem(),
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
        }
    }

    fn server_config(&self, alpn: &[u8]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let clients =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let chain = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

type TlsConnection = TlsStream<tokio::net::TcpStream>;

/// TLS connections accepted on a fresh port: each handshake runs in its own task, successful
/// ones are handed on, failed ones are recorded in `tls_failures`.
async fn tls_incoming(
    pki: &Pki,
    alpn: &[u8],
    received: &Arc<Received>,
) -> (u16, mpsc::Receiver<Result<TlsConnection, std::io::Error>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(pki.server_config(alpn));
    let (sender, connections) = mpsc::channel(16);
    let received = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, sender, received) = (acceptor.clone(), sender.clone(), received.clone());
            tokio::spawn(async move {
                match acceptor.accept(socket).await {
                    Ok(stream) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Err(error) => received
                        .tls_failures
                        .lock()
                        .unwrap()
                        .push(error.to_string()),
                }
            });
        }
    });
    (port, connections)
}

/// poem's side of [`tls_incoming`].
struct TlsConnections {
    incoming: mpsc::Receiver<Result<TlsConnection, std::io::Error>>,
    port: u16,
}

impl Acceptor for TlsConnections {
    type Io = TlsConnection;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![LocalAddr(
            std::net::SocketAddr::from(([127, 0, 0, 1], self.port)).into(),
        )]
    }

    async fn accept(
        &mut self,
    ) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, poem::http::uri::Scheme)> {
        let stream = self
            .incoming
            .recv()
            .await
            .ok_or_else(|| std::io::Error::other("listener closed"))??;
        let remote = stream.get_ref().0.peer_addr()?;
        Ok((
            stream,
            self.local_addr()[0].clone(),
            RemoteAddr(remote.into()),
            poem::http::uri::Scheme::HTTPS,
        ))
    }
}

//! An in-process OTLP receiver over real gRPC (tonic) and real HTTP/protobuf (poem), keeping
//! every export request it is sent. It can be made slow, to test that slowness never reaches a
//! request of the app.

use std::{
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
use poem::{handler, http::StatusCode, web::Data, EndpointExt, Response};
use prost::Message;

#[derive(Default)]
pub struct Received {
    pub metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    pub traces: Mutex<Vec<ExportTraceServiceRequest>>,
    pub logs: Mutex<Vec<ExportLogsServiceRequest>>,
    /// Added before every answer.
    pub delay: Mutex<Duration>,
}

impl Received {
    fn delay(&self) -> Duration {
        *self.delay.lock().unwrap()
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
        self.0.logs.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn protobuf(body: Vec<u8>) -> Response {
    Response::builder()
        .content_type("application/x-protobuf")
        .body(body)
}

#[handler]
async fn http_metrics(body: Vec<u8>, received: Data<&Arc<Received>>) -> Response {
    tokio::time::sleep(received.delay()).await;
    match ExportMetricsServiceRequest::decode(body.as_slice()) {
        Ok(request) => {
            received.metrics.lock().unwrap().push(request);
            protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
        }
        Err(_) => StatusCode::BAD_REQUEST.into(),
    }
}

#[handler]
async fn http_traces(body: Vec<u8>, received: Data<&Arc<Received>>) -> Response {
    tokio::time::sleep(received.delay()).await;
    match ExportTraceServiceRequest::decode(body.as_slice()) {
        Ok(request) => {
            received.traces.lock().unwrap().push(request);
            protobuf(ExportTraceServiceResponse::default().encode_to_vec())
        }
        Err(_) => StatusCode::BAD_REQUEST.into(),
    }
}

#[handler]
async fn http_logs(body: Vec<u8>, received: Data<&Arc<Received>>) -> Response {
    tokio::time::sleep(received.delay()).await;
    match ExportLogsServiceRequest::decode(body.as_slice()) {
        Ok(request) => {
            received.logs.lock().unwrap().push(request);
            protobuf(ExportLogsServiceResponse::default().encode_to_vec())
        }
        Err(_) => StatusCode::BAD_REQUEST.into(),
    }
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let received = Arc::new(Received::default());

        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_port = grpc.local_addr().unwrap().port();
        let service = Grpc(received.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(MetricsServiceServer::new(service.clone()))
                .add_service(TraceServiceServer::new(service.clone()))
                .add_service(LogsServiceServer::new(service))
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
        let routes = poem::Route::new()
            .at("/v1/metrics", poem::post(http_metrics))
            .at("/v1/traces", poem::post(http_traces))
            .at("/v1/logs", poem::post(http_logs))
            .data(received.clone());
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(routes));

        Self {
            grpc_endpoint: format!("http://127.0.0.1:{grpc_port}"),
            http_endpoint: format!("http://127.0.0.1:{http_port}"),
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

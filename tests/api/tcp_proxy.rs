//! A TCP proxy in front of a real server that a test can cut and restore: while cut, every
//! connection through it is closed and new ones are refused, as when a database host goes away.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Mutex,
    task::JoinHandle,
};

pub struct TcpProxy {
    pub port: u16,
    upstream: SocketAddr,
    state: Arc<Mutex<Option<Running>>>,
}

struct Running {
    acceptor: JoinHandle<()>,
    connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            upstream,
            state: Arc::new(Mutex::new(None)),
        };
        *proxy.state.lock().await = Some(Self::serve(listener, upstream));
        proxy
    }

    fn serve(listener: TcpListener, upstream: SocketAddr) -> Running {
        let connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = connections.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tracked.lock().unwrap().push(pipe);
            }
        });
        Running {
            acceptor,
            connections,
        }
    }

    /// Closes every connection and stops listening: connects are refused from now on.
    pub async fn cut(&self) {
        if let Some(running) = self.state.lock().await.take() {
            running.acceptor.abort();
            let _ = running.acceptor.await;
            for pipe in running.connections.lock().unwrap().drain(..) {
                pipe.abort();
            }
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        *self.state.lock().await = Some(Self::serve(listener, self.upstream));
    }
}

//! One gRPC server skeleton per back-end protocol, shared by the zero-compute sim and the
//! scripted doubles. A skeleton holds what every server of its protocol says the same way
//! — health, the metadata and configuration queries, the calls it does not support — and
//! the transport (listener, HTTP/2 windows, TLS, stream caps, shutdown). What answers a
//! stream is the one part the sim and each double write ([`riva::RivaStreams`],
//! [`triton::TritonModel`]).

pub mod riva;
pub mod triton;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// A server's answer stream for one call.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// How long shutdown waits for open streams before it abandons them (a hanging stream
/// never ends by itself).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Transport settings of a test server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Serve TLS (e.g. demanding client certificates).
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// HTTP/2 `MAX_CONCURRENT_STREAMS` per connection, as proxies set it; `None`: no cap.
    pub max_concurrent_streams: Option<u32>,
    /// The HTTP/2 stream window advertised (flow-control tests); `None`: hyper's.
    pub stream_window: Option<u32>,
    /// The HTTP/2 connection window advertised; `None`: hyper's 1 MiB.
    pub connection_window: Option<u32>,
}

impl ServerOptions {
    fn builder(&self) -> tonic::transport::Server {
        let mut builder =
            tonic::transport::Server::builder().max_concurrent_streams(self.max_concurrent_streams);
        if let Some(tls) = &self.tls {
            builder = builder
                .tls_config(tls.clone())
                .expect("valid server TLS config");
        }
        if let Some(w) = self.stream_window {
            builder = builder.initial_stream_window_size(w);
        }
        if let Some(w) = self.connection_window {
            builder = builder.initial_connection_window_size(w);
        }
        builder
    }
}

/// Accepted connections with `TCP_NODELAY` (tonic ignores its own setting for a
/// caller-supplied listener, and small responses must not wait for Nagle).
fn incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            let _ = c.set_nodelay(true);
        }
        conn
    })
}

/// Runs `router` on `listener` until `shutdown`, then gives open streams
/// [`SHUTDOWN_GRACE`] to finish.
async fn serve(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let stop = CancellationToken::new();
    let server =
        router.serve_with_incoming_shutdown(incoming(listener), stop.clone().cancelled_owned());
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => stop.cancel(),
    }
    tokio::time::timeout(SHUTDOWN_GRACE, server)
        .await
        .unwrap_or(Ok(()))
}

/// A server running in this process on 127.0.0.1:0; dropping it stops it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Binds 127.0.0.1:0 and spawns `serve(listener, shutdown)`.
    pub async fn spawn<F, Fut>(serve: F) -> Running
    where
        F: FnOnce(TcpListener, Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    {
        Self::spawn_at("127.0.0.1:0".parse().expect("literal"), serve).await
    }

    /// Binds `addr` (e.g. another loopback address, for replicas behind one DNS name) and
    /// spawns `serve(listener, shutdown)`.
    pub async fn spawn_at<F, Fut>(addr: std::net::SocketAddr, serve: F) -> Running
    where
        F: FnOnce(TcpListener, Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let server = serve(listener, shutdown);
        tokio::spawn(async move { server.await.expect("test server runs") });
        Running {
            addr,
            stop: Some(stop),
        }
    }

    /// Stops serving (closing the listener and every connection).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

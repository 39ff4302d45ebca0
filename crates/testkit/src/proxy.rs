//! A fault-injecting TCP proxy: bytes pass both ways between each client connection and
//! its own upstream connection until a [`Fault`] says otherwise. A fault applies at once
//! to live connections and to every new one, so a test can cut, stall or slow the network
//! path between the gateway and a back end in the middle of a session.
//!
//! Each connection is one task with one queue per direction: the reader stamps each chunk
//! with the time it is due (now, or now plus the delay) and the writer sends it then, so a
//! delay shifts the stream without costing it throughput, and order is always kept.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the network path does to the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Pass everything through.
    #[default]
    None,
    /// Reset every live connection (TCP RST to both ends, nothing flushed) and accept new
    /// ones only to reset them at once.
    Reset,
    /// Keep connections open but forward nothing either way (bytes, and end-of-stream, are
    /// read and dropped), as a dead path looks: only timeouts notice.
    Blackhole,
    /// Forward each chunk this long after it was read, both ways, in order.
    Delay(Duration),
}

/// Bytes delivered so far, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forwarded {
    pub to_upstream: u64,
    pub to_client: u64,
}

/// A running proxy. Dropping it (or [`FaultProxy::shutdown`]) stops it and closes every
/// connection.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Default)]
struct Counters {
    live: AtomicUsize,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
}

/// Bytes read from a socket at a time.
const CHUNK: usize = 16 * 1024;
/// Chunks queued per direction before the reader waits (bounds memory under a delay).
const QUEUE: usize = 256;

impl FaultProxy {
    /// Proxies connections accepted on `listen` to `upstream`, with no fault.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(listen: TcpListener, upstream: SocketAddr) -> io::Result<FaultProxy> {
        let addr = listen.local_addr()?;
        let (fault, watching) = watch::channel(Fault::None);
        let proxy = FaultProxy {
            addr,
            fault,
            counters: Arc::new(Counters::default()),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let accept = accept_loop(
            listen,
            upstream,
            watching,
            proxy.counters.clone(),
            proxy.stop.clone(),
            proxy.tasks.clone(),
        );
        proxy.tasks.spawn(accept);
        Ok(proxy)
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` to live and new connections.
    pub fn set_fault(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Connections open now (each is a client and its upstream).
    pub fn connections(&self) -> usize {
        self.counters.live.load(Ordering::Relaxed)
    }

    pub fn forwarded(&self) -> Forwarded {
        Forwarded {
            to_upstream: self.counters.to_upstream.load(Ordering::Relaxed),
            to_client: self.counters.to_client.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, closes every connection and waits until they are closed.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors or an aborted handshake: try again shortly.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if *fault.borrow() == Fault::Reset {
            reset(client);
            continue;
        }
        let conn = connection(
            client,
            upstream,
            fault.clone(),
            counters.clone(),
            stop.clone(),
        );
        tasks.spawn(conn);
    }
}

/// Closes with RST rather than FIN: with a zero linger, close discards unsent data and
/// resets. (Shutting the write side first would send a FIN the peer reads as a clean end.)
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// How a connection ended.
#[derive(PartialEq)]
enum End {
    /// Both directions ended, or the proxy stopped: close normally.
    Closed,
    /// A fault, or an error on either side (passed on to the other): reset both.
    Reset,
}

/// Counts a connection as live for as long as it exists.
struct Live(Arc<Counters>);

impl Live {
    fn new(counters: Arc<Counters>) -> Live {
        counters.live.fetch_add(1, Ordering::Relaxed);
        Live(counters)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let live = Live::new(counters);
    let mut upstream = tokio::select! {
        () = stop.cancelled() => return,
        conn = TcpStream::connect(upstream) => match conn {
            Ok(conn) => conn,
            // The upstream refused: the client sees the path fail as it would.
            Err(_) => return reset(client),
        },
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let end = {
        let (client_in, client_out) = client.split();
        let (upstream_in, upstream_out) = upstream.split();
        let counters = &live.0;
        let up = pump(
            client_in,
            upstream_out,
            fault.clone(),
            &counters.to_upstream,
        );
        let down = pump(upstream_in, client_out, fault.clone(), &counters.to_client);
        tokio::select! {
            biased;
            () = stop.cancelled() => End::Closed,
            () = reset_ordered(&mut fault) => End::Reset,
            done = futures::future::try_join(up, down) => match done {
                Ok(_) => End::Closed,
                Err(_) => End::Reset,
            },
        }
    };
    if end == End::Reset {
        reset(client);
        reset(upstream);
    }
}

/// Resolves when the fault becomes [`Fault::Reset`] (never, once the proxy is gone).
async fn reset_ordered(fault: &mut watch::Receiver<Fault>) {
    if fault.wait_for(|f| *f == Fault::Reset).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One direction: reads chunks, queues them with the time each is due, writes them then.
/// The end of the input is passed on as a write shutdown (FIN), in order.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    fault: watch::Receiver<Fault>,
    forwarded: &AtomicU64,
) -> io::Result<()> {
    // `None` is the end of the input.
    let (queue, mut due) = mpsc::channel::<(Instant, Option<Bytes>)>(QUEUE);
    let read_fault = fault.clone();
    let read = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            let n = from.read_buf(&mut buf).await?;
            let chunk = buf.split().freeze();
            let at = match *read_fault.borrow() {
                // A dead path passes nothing on, not even the end.
                Fault::Blackhole if n == 0 => return Ok(()),
                Fault::Blackhole => continue,
                Fault::Delay(delay) => Instant::now() + delay,
                Fault::None | Fault::Reset => Instant::now(),
            };
            let item = (n > 0).then_some(chunk);
            if queue.send((at, item)).await.is_err() || n == 0 {
                return Ok::<(), io::Error>(());
            }
        }
    };
    let write = async move {
        while let Some((at, item)) = due.recv().await {
            if at > Instant::now() {
                sleep_until(at).await;
            }
            let Some(chunk) = item else {
                return to.shutdown().await;
            };
            if *fault.borrow() == Fault::Blackhole {
                continue;
            }
            to.write_all(&chunk).await?;
            forwarded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    };
    futures::future::try_join(read, write).await.map(|_| ())
}

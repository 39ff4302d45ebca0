//! The connection layer under the HTTP router: accepting TCP connections, the TLS
//! handshake, HTTP/1.1 with its timeouts, and the caps that keep one client from costing
//! the others descriptors or memory.
//!
//! Every connection on the main listener is counted from its accept until it closes — TLS
//! handshake, HTTP requests, and the WebSocket session after an upgrade (the count travels
//! inside the connection's I/O) — against:
//!
//! - `limits.max_connections` (automatic: below the process's open-file limit, see
//!   [`auto_max_connections`]). Past it, a connection lands in a small **overflow** pool
//!   ([`OVERFLOW_CONNECTIONS`]) that answers only the operational endpoints (`/health`,
//!   `/ready`, `/status`, `/metrics`; everything else gets 503) with a short header timeout
//!   and no keep-alive, so health checks still get through while the gateway is full.
//!   When the overflow pool is full too, its oldest connection is closed to make room
//!   (a health check asks at once; a connection that sits there is the one to go), so
//!   the descriptors in use never exceed the two pools.
//! - `limits.max_connections_per_ip` per TCP peer address, and, while the TLS handshake
//!   runs, `tls.max_handshakes_per_ip` and `tls.max_handshakes` — closed at accept beyond.
//!
//! Each connection is bounded in time:
//!
//! - the TLS handshake must finish within `tls.handshake_timeout`;
//! - a request's headers must arrive complete within `limits.header_timeout`, counted from
//!   the accept or from the end of the previous response (slowloris requests and
//!   connections that never send a request, or sit idle between requests, are closed);
//! - a write that cannot make progress for `limits.write_timeout` (a client that does not
//!   read its responses) closes the connection. After an upgrade, the WebSocket session
//!   keeps its own write deadline on every message ([`crate::session::engine`]).
//!
//! Only HTTP/1.1 is served (WebSocket upgrades need it; HTTP/2 is not offered, on either
//! plain or TLS listeners).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::security::quota::{Quota, QuotaGuard};
use crate::security::tls::PeerAddr;
use crate::telemetry::metrics::Metrics;

/// Connections beyond `limits.max_connections` that are still served the operational
/// endpoints (health checks, scrapes) before new ones are closed at accept.
pub const OVERFLOW_CONNECTIONS: usize = 64;

/// Header timeout and TLS handshake deadline of an overflow connection: it is there for a
/// health check, which asks at once.
pub const OVERFLOW_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections of the admin listener at once (operators and scrapers only).
pub const ADMIN_CONNECTIONS: usize = 64;

/// How long connections still in their HTTP phase get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The TLS side of a listener.
pub struct TlsStage {
    pub acceptor: TlsAcceptor,
    pub timeout: Duration,
    /// Handshakes in progress at once, gateway-wide.
    pub handshakes: Arc<Semaphore>,
    /// Handshakes in progress at once per peer address.
    pub per_ip: Arc<Quota<IpAddr>>,
}

/// What a listener enforces.
pub struct ListenerLimits {
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    /// Connections served the full router at once.
    pub max_connections: usize,
    /// Beyond those, connections served only the operational endpoints.
    pub overflow: usize,
    /// Per TCP peer address (0: no cap).
    pub per_ip: usize,
}

/// One listener: its socket, the routers it serves, its limits.
pub struct Listener {
    pub tcp: TcpListener,
    /// Served to connections within `max_connections`.
    pub app: Router,
    /// Served to overflow connections: the operational endpoints, 503 for the rest.
    pub overflow_app: Router,
    pub tls: Option<TlsStage>,
    pub limits: ListenerLimits,
    /// Counted in `sgw_connections_open` (the main listener; not the admin one).
    pub counted: bool,
}

/// The most connections the main listener takes when `limits.max_connections` is 0: the
/// open-file limit less an eighth and 64 more for everything else the process opens (back-end
/// connections, the overflow pool, the admin listener, files), at least 16.
pub fn auto_max_connections(open_file_limit: u64) -> usize {
    let n = open_file_limit
        .saturating_sub(open_file_limit / 8)
        .saturating_sub(64);
    usize::try_from(n).unwrap_or(usize::MAX).max(16)
}

/// The process's soft open-file limit, raised to the hard limit first (a server holding
/// one descriptor per client wants every one it may have). Returns the limit in force.
pub fn raise_open_file_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        Some(lim.rlim_cur)
    }
}

/// Accepts and serves connections until `stop` is cancelled, then lets connections still
/// in their HTTP phase finish (bounded) and returns. Upgraded connections belong to their
/// sessions, which the caller drains before cancelling `stop`.
pub async fn run(listener: Listener, metrics: Arc<Metrics>, stop: CancellationToken) {
    let Listener {
        tcp,
        app,
        overflow_app,
        tls,
        limits,
        counted,
    } = listener;
    let tls = tls.map(Arc::new);
    let main = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Overflow::new(limits.overflow));
    let per_ip: Arc<Quota<IpAddr>> = Quota::new(limits.per_ip);
    let limits = Arc::new(limits);
    let tasks = TaskTracker::new();
    let mut accept_errors = AcceptErrors::default();
    loop {
        let (tcp_stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    accept_errors.log(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp_stream.set_nodelay(true);
        let Some(ip_guard) = per_ip.enter(&peer.ip()) else {
            metrics.connection_refused("per_ip_limit");
            continue; // dropped: closed at once
        };
        let slot = match main.clone().try_acquire_owned() {
            Ok(p) => Slot::Main(p),
            // The accept loop waits here while an evicted connection closes, so the
            // descriptors in use exceed the pools by at most the one just accepted.
            Err(_) => match overflow.enter().await {
                Some((place, evicted)) => {
                    metrics.connection_refused("overflow");
                    if evicted {
                        metrics.connection_refused("overflow_evicted");
                    }
                    Slot::Overflow(place)
                }
                None => {
                    metrics.connection_refused("connection_limit");
                    continue;
                }
            },
        };
        let full_service = matches!(slot, Slot::Main(_));
        let evict = match &slot {
            Slot::Main(_) => None,
            Slot::Overflow(place) => Some(place.evicted.clone()),
        };
        let held = Held::new(slot, ip_guard, counted.then(|| metrics.clone()));
        let app = if full_service {
            app.clone()
        } else {
            overflow_app.clone()
        };
        let conn = Connection {
            peer,
            app,
            limits: limits.clone(),
            full_service,
            metrics: metrics.clone(),
            stop: stop.clone(),
        };
        let tls = tls.clone();
        let serve = conn.serve(tcp_stream, tls, held);
        tasks.spawn(async move {
            match evict {
                None => serve.await,
                Some(evicted) => {
                    tokio::select! {
                        _ = serve => {}
                        _ = evicted.cancelled() => {}
                    }
                }
            }
        });
    }
    drop(tcp);
    tasks.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await;
}

/// Accept errors are logged at most once a second (an exhausted descriptor table fails
/// every accept).
#[derive(Default)]
struct AcceptErrors {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn log(&mut self, e: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// What a connection holds while it is open: its place in the pool, its place in its
/// address's quota, and its mark in `sgw_connections_open`. It travels with the I/O, into
/// the WebSocket session after an upgrade, and is given back when the socket is dropped.
struct Held {
    _slot: Slot,
    _ip: Option<QuotaGuard<IpAddr>>,
    gauge: Option<Arc<Metrics>>,
}

impl Held {
    fn new(slot: Slot, ip: Option<QuotaGuard<IpAddr>>, gauge: Option<Arc<Metrics>>) -> Self {
        if let Some(m) = &gauge {
            m.connections_open.inc();
        }
        Held {
            _slot: slot,
            _ip: ip,
            gauge,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(m) = &self.gauge {
            m.connections_open.dec();
        }
    }
}

/// A connection's place: in the main pool, or in the overflow pool.
enum Slot {
    Main(#[allow(dead_code)] OwnedSemaphorePermit),
    Overflow(OverflowPlace),
}

/// The overflow pool: at most `cap` connections, oldest evicted first.
struct Overflow {
    cap: usize,
    next: AtomicU64,
    /// Each connection's id, its eviction token, and whether it was evicted (it keeps its
    /// place until its socket is closed).
    places: std::sync::Mutex<std::collections::VecDeque<(u64, CancellationToken, bool)>>,
    /// Told when a place is left.
    freed: tokio::sync::Notify,
}

/// Longest the accept loop waits for an evicted overflow connection to close.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// One overflow connection's place; dropping it leaves the pool.
struct OverflowPlace {
    pool: Arc<Overflow>,
    id: u64,
    /// Cancelled when a newer connection takes the place.
    evicted: CancellationToken,
}

impl Overflow {
    fn new(cap: usize) -> Self {
        Overflow {
            cap,
            next: AtomicU64::new(0),
            places: std::sync::Mutex::new(std::collections::VecDeque::new()),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// A place for a new connection (and whether an older one was evicted for it). When
    /// the pool is full, its oldest connection is evicted and this waits (at most
    /// [`EVICTION_WAIT`]) until that one has closed. `None`: no place (the pool has none,
    /// or the evicted connection did not close in time).
    async fn enter(self: &Arc<Self>) -> Option<(OverflowPlace, bool)> {
        if self.cap == 0 {
            return None;
        }
        let deadline = tokio::time::Instant::now() + EVICTION_WAIT;
        let mut evicted_one = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut places = self.places.lock().expect("overflow lock");
                if places.len() < self.cap {
                    let id = self.next.fetch_add(1, Ordering::Relaxed);
                    let evicted = CancellationToken::new();
                    places.push_back((id, evicted.clone(), false));
                    let place = OverflowPlace {
                        pool: self.clone(),
                        id,
                        evicted,
                    };
                    return Some((place, evicted_one));
                }
                if let Some(oldest) = places.iter_mut().find(|p| !p.2) {
                    oldest.1.cancel();
                    oldest.2 = true;
                    evicted_one = true;
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for OverflowPlace {
    fn drop(&mut self) {
        let mut places = self.pool.places.lock().expect("overflow lock");
        if let Some(i) = places.iter().position(|p| p.0 == self.id) {
            places.remove(i);
        }
        drop(places);
        self.pool.freed.notify_waiters();
    }
}

struct Connection {
    peer: SocketAddr,
    app: Router,
    limits: Arc<ListenerLimits>,
    full_service: bool,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

type Io = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

impl Connection {
    async fn serve(self, tcp: TcpStream, tls: Option<Arc<TlsStage>>, held: Held) {
        let io: Io = match tls {
            None => Either::Left(tcp),
            Some(stage) => match self.handshake(tcp, &stage).await {
                Some(s) => Either::Right(s),
                None => return,
            },
        };
        let watch = Arc::new(WriteWatch::default());
        let io = Watched {
            io,
            watch: watch.clone(),
            _held: held,
        };
        let peer = PeerAddr(self.peer);
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let header_timeout = if self.full_service {
            self.limits.header_timeout
        } else {
            self.limits.header_timeout.min(OVERFLOW_TIMEOUT)
        };
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(self.full_service);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let write_timeout = self.limits.write_timeout;
        let mut check = tokio::time::interval((write_timeout / 4).max(Duration::from_millis(25)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done
                        && e.is_timeout()
                    {
                        self.metrics.connection_cut("header_timeout");
                    }
                    return;
                }
                _ = self.stop.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = check.tick() => {
                    if watch.blocked_for() >= write_timeout {
                        self.metrics.connection_cut("write_timeout");
                        tracing::debug!("closed a connection whose client does not read its responses");
                        return;
                    }
                }
            }
        }
    }

    /// The TLS handshake, within the gateway-wide and per-address handshake caps and the
    /// deadline. `None`: the connection is closed (and counted).
    async fn handshake(
        &self,
        tcp: TcpStream,
        stage: &TlsStage,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let Some(_per_ip) = stage.per_ip.enter(&self.peer.ip()) else {
            self.metrics.connection_refused("handshake_per_ip_limit");
            return None;
        };
        let timeout = if self.full_service {
            stage.timeout
        } else {
            stage.timeout.min(OVERFLOW_TIMEOUT)
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let handshake = async {
            let _permit = stage.handshakes.acquire().await.ok()?;
            Some(stage.acceptor.accept(tcp).await)
        };
        match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Some(Ok(tls))) => Some(tls),
            Ok(Some(Err(e))) => {
                self.metrics.tls_handshake_failed("error");
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Ok(None) => None,
            Err(_) => {
                self.metrics.tls_handshake_failed("timeout");
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}

/// Since when writes on a connection have been unable to make progress.
#[derive(Default)]
struct WriteWatch {
    /// Milliseconds since [`epoch`] + 1 when a write first returned `Pending`; 0 while
    /// writes go through.
    blocked_since: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl WriteWatch {
    fn pending(&self) {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let _ = self
            .blocked_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn progressed(&self) {
        self.blocked_since.store(0, Ordering::Relaxed);
    }

    fn blocked_for(&self) -> Duration {
        match self.blocked_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => {
                let now = epoch().elapsed().as_millis() as u64 + 1;
                Duration::from_millis(now.saturating_sub(since))
            }
        }
    }
}

/// A connection's I/O with what it holds (see [`Held`]) and its write watch.
struct Watched<IO> {
    io: IO,
    watch: Arc<WriteWatch>,
    _held: Held,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> Watched<IO> {
    /// A write that returns `Pending` starts (or continues) a blocked spell; one that
    /// writes something ends it. Flushes only start spells (a plain socket's flush is
    /// always ready, whatever the writes are doing).
    fn watched<T>(&self, p: Poll<io::Result<T>>, ends_spell: bool) -> Poll<io::Result<T>> {
        match &p {
            Poll::Pending => self.watch.pending(),
            Poll::Ready(_) if ends_spell => self.watch.progressed(),
            Poll::Ready(_) => {}
        }
        p
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watched(p, true)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.io).poll_flush(cx);
        self.watched(p, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watched(p, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_cap_stays_below_the_file_limit() {
        assert_eq!(auto_max_connections(1024), 1024 - 128 - 64);
        assert_eq!(auto_max_connections(100), 100 - 12 - 64);
        assert_eq!(auto_max_connections(50), 16);
        let big = auto_max_connections(1 << 20);
        assert!(big < 1 << 20 && big > 900_000);
        // Room left for the overflow pool and the admin listener beside it.
        assert!(auto_max_connections(1024) + OVERFLOW_CONNECTIONS + ADMIN_CONNECTIONS < 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn the_overflow_pool_evicts_its_oldest_connection_and_waits_for_it_to_close() {
        let pool = Arc::new(Overflow::new(2));
        let (a, evicted) = pool.enter().await.unwrap();
        assert!(!evicted);
        let (b, _) = pool.enter().await.unwrap();
        // The oldest connection closes when it sees its eviction (as a connection task does).
        let closer = tokio::spawn(async move {
            a.evicted.cancelled().await;
            drop(a);
        });
        let (c, evicted) = pool.enter().await.unwrap();
        assert!(evicted, "the third connection took the oldest one's place");
        closer.await.unwrap();
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert_eq!(pool.places.lock().unwrap().len(), 2);
        // An evicted connection that never closes: the newcomer gets no place.
        let stuck = pool.clone();
        let t0 = tokio::time::Instant::now();
        assert!(stuck.enter().await.is_none());
        assert!(t0.elapsed() >= EVICTION_WAIT);
        drop((b, c));
        let (_d, evicted) = pool.enter().await.unwrap();
        assert!(!evicted, "places were free");
        assert!(Arc::new(Overflow::new(0)).enter().await.is_none());
    }

    #[test]
    fn write_watch_measures_a_blocked_spell() {
        let w = WriteWatch::default();
        assert_eq!(w.blocked_for(), Duration::ZERO);
        w.pending();
        std::thread::sleep(Duration::from_millis(30));
        w.pending(); // a second Pending does not restart the spell
        assert!(w.blocked_for() >= Duration::from_millis(25));
        w.progressed();
        assert_eq!(w.blocked_for(), Duration::ZERO);
    }
}

//! A WebSocket as a session, for any dialect: the endpoint runs the gate, upgrades with
//! the transport's limits, and runs the session engine with the dialect's codec between
//! the socket and the engine; at the end it closes the socket with the write deadline and
//! reads briefly for the client's close, so the last messages are not lost to a reset.
//!
//! A dialect whose client interleaves several channels ([`Dialect::channels`] > 1) gets
//! one session per channel on the one socket ([`run_channels`]): each holds an admission
//! place, the client's messages are split between them, their events are written as they
//! come, and the connection closes once every channel's session has — or at once when one
//! fails.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::Either;
use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, SinkExt, Stream, StreamExt, future, stream};

use super::dialect::{Decoded, Dialect, Upgrade};
use super::{AppState, WS_READ_BUFFER, gate, transport_limit};
use crate::resilience::admission::Ticket;
use crate::security::tls::PeerAddr;
use crate::session::{self, CloseCause, Command, ErrorKind, Event, SessionContext, SessionError};

/// How long a closed session waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The session endpoint of dialect `D` (see [`gate`] for what is checked before the
/// upgrade).
pub async fn endpoint<D: Dialect>(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade_with(state, peer, &headers, query.as_deref(), ws, D::accept)
}

/// [`endpoint`] with the codec made by `accept` instead of [`Dialect::accept`], once the
/// gate let the request through: for a dialect whose codec needs more than the request
/// (state its route shares between connections).
pub fn upgrade_with<D: Dialect>(
    state: AppState,
    peer: PeerAddr,
    headers: &HeaderMap,
    query: Option<&str>,
    ws: WebSocketUpgrade,
    accept: impl FnOnce(&Upgrade<'_>) -> Result<D, SessionError>,
) -> Response {
    let request = Upgrade {
        headers,
        query,
        config: &state.config,
    };
    let admitted = match gate::check::<D>(&state, peer, &request) {
        Ok(a) => a,
        Err(refusal) => return *refusal,
    };
    let codec = match accept(&request) {
        Ok(codec) => codec,
        Err(e) => return gate::bad_request::<D>(&state, &e),
    };
    let (ticket, key, places) = admitted.into_parts();
    // A multichannel connection holds one admission place per channel.
    let mut tickets = vec![ticket];
    for _ in 1..codec.channels() {
        match state.admission.admit() {
            Some(t) => tickets.push(t),
            None => {
                let retry_after = gate::retry_after_secs(&state);
                state.ctx.metrics.rejected("global_limit");
                return gate::refusal::<D>(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    Some(retry_after),
                    ErrorKind::RateLimitExceeded,
                    &format!(
                        "the gateway has no place for {} sessions (one per channel); retry \
                         after {retry_after} s",
                        codec.channels()
                    ),
                );
            }
        }
    }
    let limit = transport_limit(&state.config);
    ws.protocols(D::SUBPROTOCOLS.iter().copied())
        .max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite allocates its read buffer eagerly (128 KiB by default) and touches
        // all of it as audio streams through: per session that is twice the memory goal.
        // Frames are read in pieces of this size and assembled up to `limit` anyway.
        .read_buffer_size(WS_READ_BUFFER)
        // What a client that does not read may cost: automatic pongs and messages queue
        // up to this, then the connection is cut off (unbounded by default).
        .max_write_buffer_size(state.config.limits.max_write_buffer_bytes)
        .on_upgrade(move |socket| {
            let tracker = state.sessions.clone();
            tracker.track_future(async move {
                let _places = places;
                if tickets.len() > 1 {
                    run_channels(socket, state.ctx, tickets, key, limit, codec).await
                } else {
                    let ticket = tickets.pop().expect("one ticket");
                    run(socket, state.ctx, ticket, key, limit, codec).await
                }
            })
        })
}

async fn run<D: Dialect>(
    socket: WebSocket,
    ctx: Arc<SessionContext>,
    ticket: Ticket,
    key: Option<Arc<str>>,
    limit: usize,
    codec: D,
) {
    let codec = Arc::new(codec);
    let (mut sink, socket_stream) = socket.split();
    for m in codec.greeting() {
        if !matches!(
            tokio::time::timeout(ctx.limits.write_timeout, sink.send(m)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
    // The command stream ends at the client's close or a read error. A message above the
    // size limit is a read error the client must hear about: it becomes a
    // `MESSAGE_TOO_LARGE` error (the session then closes with 1009).
    let received = Received {
        socket: socket_stream,
        codec: codec.clone(),
        pending: codec.opening().into(),
        limit,
        done: false,
    };
    // Commands from elsewhere (a control connection) join the client's, until the client's
    // end: the session ends with its own socket.
    let mut commands = match codec.side_channel() {
        None => Either::Left(received),
        Some(side) => Either::Right(
            stream::select(
                received.map(Some).chain(stream::once(future::ready(None))),
                side.map(Some),
            )
            .take_while(|c| future::ready(c.is_some()))
            .filter_map(future::ready)
            .boxed(),
        ),
    };
    let write_timeout = ctx.limits.write_timeout;
    let mut events = Outgoing {
        sink,
        codec,
        pending: Vec::new().into_iter(),
    };
    let outcome = session::run(ctx, D::NAME, ticket, key, &mut commands, &mut events).await;
    if outcome == session::Outcome::SlowClient {
        // It does not read: nothing more can reach it. Dropping the socket closes it.
        return;
    }
    close_and_linger::<Event, _, _>(&mut events, &mut commands, write_timeout).await;
}

/// Events queued from the channels' sessions to the writer, and commands queued to each
/// session: small, so a client that does not read holds back its sessions (which then
/// hit the write deadline), and one that floods holds back its own reading.
const CHANNEL_QUEUE: usize = 16;

/// A multichannel connection: one session per channel (each already holds its admission
/// ticket). A reader splits the client's messages between the sessions, a writer sends
/// their events; the connection closes when every session has closed, or at once with
/// the first that fails.
async fn run_channels<D: Dialect>(
    socket: WebSocket,
    ctx: Arc<SessionContext>,
    tickets: Vec<Ticket>,
    key: Option<Arc<str>>,
    limit: usize,
    codec: D,
) {
    let codec = Arc::new(codec);
    let channels = tickets.len();
    let write_timeout = ctx.limits.write_timeout;
    let (mut sink, mut input) = socket.split();
    let (event_tx, mut event_rx) = futures::channel::mpsc::channel::<(usize, Event)>(CHANNEL_QUEUE);
    let mut command_txs = Vec::with_capacity(channels);
    let mut sessions = Vec::with_capacity(channels);
    for (channel, ticket) in tickets.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Command>(CHANNEL_QUEUE);
        command_txs.push(tx);
        let commands =
            stream::iter(codec.opening()).chain(tokio_stream::wrappers::ReceiverStream::new(rx));
        let events = event_tx.clone().with(move |ev| {
            future::ready(Ok::<_, futures::channel::mpsc::SendError>((channel, ev)))
        });
        sessions.push(tokio::spawn(session::run(
            ctx.clone(),
            D::NAME,
            ticket,
            key.clone(),
            Box::pin(commands),
            Box::pin(events),
        )));
    }
    drop(event_tx);
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = async {
        let txs = command_txs;
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = input.next() => next,
            };
            let commands = match next {
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(m)) => codec.decode_channels(m),
                Some(Err(e)) => {
                    if let Some(err) = read_error(e, limit) {
                        for tx in &txs {
                            // Full queue: that session is busy ending anyway.
                            let _ = tx.try_send(Command::Reject(err.clone()));
                        }
                    }
                    break;
                }
            };
            // A send waits while that session's queue is full (the client's reading is
            // held back), but not past the end of the connection.
            let deliver = async {
                for (target, command) in commands {
                    match target {
                        Some(channel) => {
                            if let Some(tx) = txs.get(channel) {
                                let _ = tx.send(command).await;
                            }
                        }
                        None => {
                            for tx in &txs {
                                let _ = tx.send(command.clone()).await;
                            }
                        }
                    }
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = deliver => {}
            }
        }
        // Dropping the senders tells the sessions the client is gone (they end as
        // `client_gone` unless they already closed).
        drop(txs);
    };
    let writer = async {
        let _stop = stop.clone().drop_guard();
        let mut open = channels;
        let mut cause: Option<CloseCause> = None;
        while let Some((channel, ev)) = event_rx.next().await {
            if let Event::Close(c) = ev {
                open -= 1;
                let failed = matches!(c, CloseCause::Error(_));
                if failed || cause.is_none() || c == CloseCause::GoingAway {
                    cause = Some(c);
                }
                if failed || open == 0 {
                    break;
                }
                continue;
            }
            for m in codec.encode_channel(channel, &ev) {
                match tokio::time::timeout(write_timeout, sink.send(m)).await {
                    Ok(Ok(())) => {}
                    // The client is gone, or does not read: nothing more reaches it.
                    _ => return None,
                }
            }
        }
        cause
    };
    let (cause, ()) = tokio::join!(writer, reader);
    // Whatever the others were doing, their client is gone now: let them end.
    drop(event_rx);
    if let Some(cause) = cause {
        for m in codec.encode(&Event::Close(cause)) {
            if !matches!(
                tokio::time::timeout(write_timeout, sink.send(m)).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
        close_and_linger::<Message, _, _>(&mut sink, &mut input, write_timeout).await;
    }
    for s in sessions {
        let _ = s.await;
    }
}

/// The client's messages as session commands: the dialect's opening command, then each
/// message decoded, until the client's close or a read error (a read error the client
/// must hear about comes through as a `Reject` first). Written out rather than composed
/// from stream adapters: it is polled at every wake-up of every session.
struct Received<D> {
    socket: SplitStream<WebSocket>,
    codec: Arc<D>,
    /// Decoded and not yet taken.
    pending: Decoded,
    limit: usize,
    done: bool,
}

impl<D: Dialect> Stream for Received<D> {
    type Item = Command;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        let this = self.get_mut();
        loop {
            if let Some(command) = this.pending.next() {
                return Poll::Ready(Some(command));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match std::task::ready!(this.socket.poll_next_unpin(cx)) {
                Some(Ok(Message::Close(_))) | None => this.done = true,
                Some(Ok(m)) => this.pending = this.codec.decode(m),
                Some(Err(e)) => {
                    this.done = true;
                    this.pending = read_error(e, this.limit).map(Command::Reject).into();
                }
            }
        }
    }
}

/// The session's events as the dialect's messages, written to the client's socket in
/// order (an event may make several messages, or none).
struct Outgoing<D> {
    sink: SplitSink<WebSocket, Message>,
    codec: Arc<D>,
    /// Encoded and not yet handed to the socket.
    pending: std::vec::IntoIter<Message>,
}

impl<D> Outgoing<D> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        while self.pending.len() > 0 {
            std::task::ready!(self.sink.poll_ready_unpin(cx))?;
            let m = self.pending.next().expect("not empty");
            self.sink.start_send_unpin(m)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<D: Dialect> Sink<Event> for Outgoing<D> {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        this.sink.poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, ev: Event) -> Result<(), Self::Error> {
        let this = self.get_mut();
        debug_assert_eq!(this.pending.len(), 0, "poll_ready first");
        this.pending = this.codec.encode(&ev).into_iter();
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        this.sink.poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        this.sink.poll_close_unpin(cx)
    }
}

/// The closing handshake. Our close frame (or, when the client closed first, the echo of
/// its close frame that the WebSocket layer queued) goes out now, within the write
/// deadline; then read (and discard) until the client's close, briefly. Dropping a socket
/// with unread input makes the kernel reset the connection, and the client would lose the
/// last messages (the final, or the error that explains the close).
async fn close_and_linger<T, W, R>(events: &mut W, input: &mut R, write_timeout: Duration)
where
    W: futures::Sink<T> + Unpin,
    R: futures::Stream + Unpin,
{
    let _ = tokio::time::timeout(write_timeout, SinkExt::close(events)).await;
    // The deadline is polled first: a client that floods (pings) would otherwise spend the
    // task's cooperative budget on reading and keep the linger from ever ending.
    let linger = tokio::time::sleep(CLOSE_LINGER);
    tokio::pin!(linger);
    loop {
        tokio::select! {
            biased;
            () = &mut linger => break,
            next = input.next() => if next.is_none() { break },
        }
    }
}

/// What the client must hear about a read error, if anything: a message above the size
/// limit, or a frame that breaks the protocol (the connection cannot go on after either).
/// Other errors (a reset, a vanished client) have nobody to tell.
fn read_error(e: axum::Error, limit: usize) -> Option<SessionError> {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    match e.into_inner().downcast_ref::<WsError>()? {
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => Some(SessionError::new(
            ErrorKind::MessageTooLarge,
            format!(
                "a message of {size} bytes is above the limit of {limit} bytes \
                 (limits.max_message_bytes)"
            ),
        )),
        WsError::Utf8(_) => Some(SessionError::new(
            ErrorKind::ProtocolError,
            "a text frame was not valid UTF-8",
        )),
        WsError::Protocol(p) => Some(SessionError::new(
            ErrorKind::ProtocolError,
            format!("WebSocket protocol violation: {p}"),
        )),
        _ => None,
    }
}

//! A WebSocket as a session, for any dialect: the endpoint runs the gate, upgrades with
//! the transport's limits, and runs the session engine with the dialect's codec between
//! the socket and the engine; at the end it closes the socket with the write deadline and
//! reads briefly for the client's close, so the last messages are not lost to a reset.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt, future, stream};

use super::dialect::{Decoded, Dialect, Upgrade};
use super::{AppState, WS_READ_BUFFER, gate, transport_limit};
use crate::resilience::admission::Ticket;
use crate::security::tls::PeerAddr;
use crate::session::{self, Command, ErrorKind, SessionContext, SessionError};

/// How long a closed session waits for the client's close frame.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The session endpoint of dialect `D` (see [`gate`] for what is checked before the
/// upgrade).
pub async fn endpoint<D: Dialect>(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let request = Upgrade {
        headers: &headers,
        query: query.as_deref(),
        config: &state.config,
    };
    let admitted = match gate::check::<D>(&state, peer, &request) {
        Ok(a) => a,
        Err(refusal) => return *refusal,
    };
    let codec = match D::accept(&request) {
        Ok(codec) => codec,
        Err(e) => return gate::bad_request::<D>(&state, &e),
    };
    let (ticket, key, places) = admitted.into_parts();
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
                run(socket, state.ctx, ticket, key, limit, codec).await
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
    let (sink, socket_stream) = socket.split();
    // The command stream ends at the client's close or a read error. A message above the
    // size limit is a read error the client must hear about: it becomes a
    // `MESSAGE_TOO_LARGE` error (the session then closes with 1009).
    let decoder = codec.clone();
    let received = socket_stream
        .scan(false, move |done, m| {
            if *done {
                return future::ready(None);
            }
            let next = match m {
                Ok(Message::Close(_)) => None,
                Ok(m) => Some(decoder.decode(m)),
                Err(e) => {
                    *done = true;
                    read_error(e, limit).map(|err| Decoded::One(Command::Reject(err)))
                }
            };
            future::ready(next)
        })
        .flat_map(stream::iter);
    let mut commands = Box::pin(stream::iter(codec.opening()).chain(received));
    let write_timeout = ctx.limits.write_timeout;
    let encoder = codec.clone();
    let mut events = Box::pin(sink.with_flat_map(move |ev| {
        stream::iter(encoder.encode(&ev).into_iter().map(Ok::<_, axum::Error>))
    }));
    let outcome = session::run(ctx, D::NAME, ticket, key, &mut commands, &mut events).await;
    if outcome == session::Outcome::SlowClient {
        // It does not read: nothing more can reach it. Dropping the socket closes it.
        return;
    }
    // Closing handshake. Our close frame (or, when the client closed first, the echo of
    // its close frame that the WebSocket layer queued) goes out now, within the write
    // deadline; then read (and discard) until the client's close, briefly. Dropping a
    // socket with unread input makes the kernel reset the connection, and the client
    // would lose the last messages (the final, or the error that explains the close).
    let _ = tokio::time::timeout(write_timeout, events.close()).await;
    // The deadline is polled first: a client that floods (pings) would otherwise spend the
    // task's cooperative budget on reading and keep the linger from ever ending.
    let linger = tokio::time::sleep(CLOSE_LINGER);
    tokio::pin!(linger);
    loop {
        tokio::select! {
            biased;
            () = &mut linger => break,
            next = commands.next() => if next.is_none() { break },
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

//! The seam between the gateway and a client contract — a *dialect*: how a client's
//! WebSocket messages become session [`Command`]s, how session [`Event`]s are rendered
//! back, the error body of a refusal before the upgrade, the close codes, and where the
//! client's credentials come from.
//!
//! Everything else is shared by every dialect: the pre-upgrade gate ([`super::gate`]:
//! limits, Origin, credentials, admission), the socket loop with its write deadline and
//! close handshake ([`super::socket`]), and the session engine. A WebSocket dialect is one
//! file implementing [`Dialect`] plus one route line in [`super::app`]:
//!
//! ```ignore
//! .route("/v1/audio/stream", get(socket::endpoint::<V1>))
//! ```
//!
//! A dialect's methods are pure: they never log or count (the caller does, once).
//!
//! [`Contract`] is the part every client contract has, WebSocket or plain HTTP (its name,
//! credentials, error shape): the gate takes any contract, so an HTTP endpoint (a file
//! upload) is refused in its own API's shape too.

use std::borrow::Cow;

use axum::extract::ws::Message;
use axum::http::{HeaderMap, header};

use crate::config::Config;
use crate::security::auth::{self, AuthError};
use crate::session::{CloseCause, Command, ErrorKind, Event, SessionError};

/// The HTTP request that asks for the upgrade, as a dialect sees it.
#[derive(Debug, Clone, Copy)]
pub struct Upgrade<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// The gateway's configuration (routes, limits), for settings a dialect checks before
    /// the upgrade.
    pub config: &'a Config,
}

impl<'a> Upgrade<'a> {
    /// Every query parameter, percent-decoded, in order (an unreadable query is empty).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default()
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The `Authorization` header as text; a value that is not text is malformed.
    pub fn authorization(&self) -> Result<Option<&'a str>, AuthError> {
        match self.headers.get(header::AUTHORIZATION) {
            Some(v) => v.to_str().map(Some).map_err(|_| AuthError::Malformed),
            None => Ok(None),
        }
    }
}

/// What one client message decodes to. Iterating it yields the commands in order; the
/// usual case, one command, allocates nothing.
#[derive(Debug)]
pub enum Decoded {
    Nothing,
    One(Command),
    Many(std::vec::IntoIter<Command>),
}

impl From<Command> for Decoded {
    fn from(command: Command) -> Self {
        Decoded::One(command)
    }
}

impl From<Option<Command>> for Decoded {
    fn from(command: Option<Command>) -> Self {
        command.map_or(Decoded::Nothing, Decoded::One)
    }
}

impl Iterator for Decoded {
    type Item = Command;

    fn next(&mut self) -> Option<Command> {
        match std::mem::replace(self, Decoded::Nothing) {
            Decoded::Nothing => None,
            Decoded::One(command) => Some(command),
            Decoded::Many(mut rest) => {
                let next = rest.next();
                *self = Decoded::Many(rest);
                next
            }
        }
    }
}

/// What every client contract has, on a WebSocket or plain HTTP: its name, where its
/// clients put their credentials, and the shape of its error answers (the pre-upgrade
/// [`super::gate`] needs nothing more).
pub trait Contract: Sized + Send + Sync + 'static {
    /// The dialect's name: the `dialect` label of session metrics and of the session span.
    const NAME: &'static str;

    /// The client's credential (a JWT or API key), if it sent one. `allow_query`:
    /// `auth.query_token` is on. The default is v1's: `Authorization: Bearer …`, else
    /// `?token=` when allowed.
    fn credentials<'a>(
        request: &Upgrade<'a>,
        allow_query: bool,
    ) -> Result<Option<Cow<'a, str>>, AuthError> {
        let authorization = request.authorization()?;
        if authorization.is_some() {
            return Ok(auth::token_from(authorization, None, false).map(Cow::Borrowed));
        }
        if !allow_query {
            return Ok(None);
        }
        Ok(request
            .query_param("token")
            .filter(|t| !t.is_empty())
            .map(Cow::Owned))
    }

    /// The body of a refusal (before an upgrade, or of an HTTP request), in the dialect's error shape.
    fn error_body(kind: ErrorKind, message: &str) -> serde_json::Value;
}

/// A client contract on a WebSocket. See the module docs.
pub trait Dialect: Contract {
    /// WebSocket subprotocols the server selects when a client offers one (a browser that
    /// cannot set headers sends its credential as a subprotocol).
    const SUBPROTOCOLS: &'static [&'static str] = &[];

    /// The per-session codec for this request, or why the request cannot open a session
    /// (answered before the upgrade with 400 and [`Dialect::error_body`]). Dialects whose
    /// clients put their settings in the query string read them here.
    fn accept(request: &Upgrade<'_>) -> Result<Self, SessionError>;

    /// Messages the client gets as soon as the connection is open, before any event (a
    /// dialect whose server speaks first, e.g. `session.created`).
    fn greeting(&self) -> Vec<Message> {
        Vec::new()
    }

    /// Commands the session runs before the client's first message (a dialect whose
    /// settings come with the request starts the session at once).
    fn opening(&self) -> Option<Command> {
        None
    }

    /// Commands for the session from elsewhere than its socket (a contract whose control
    /// messages come on a second connection), merged with the client's until the socket
    /// ends. Taken once, at the start; `None` (the default): the socket's only. Not for
    /// multichannel connections.
    fn side_channel(&self) -> Option<futures::stream::BoxStream<'static, Command>> {
        None
    }

    /// One client message as commands: none for messages that mean nothing to the session
    /// (control frames), usually one, several when the dialect splits a message (audio
    /// longer than a session frame).
    fn decode(&self, msg: Message) -> Decoded;

    /// One session event as the messages the client gets (none, if the dialect has no
    /// such message). [`Event::Close`] renders the close frame.
    fn encode(&self, ev: &Event) -> Vec<Message>;

    /// Channels the client's audio interleaves. With more than one, each channel is a
    /// session of its own (the socket fans out, [`Dialect::decode_channels`] splits the
    /// messages and [`Dialect::encode_channel`] renders each channel's events).
    fn channels(&self) -> usize {
        1
    }

    /// One message of a multichannel connection as commands for channels (`None`: every
    /// channel, e.g. a control message). Called only when [`Dialect::channels`] > 1.
    fn decode_channels(&self, msg: Message) -> Vec<(Option<usize>, Command)> {
        self.decode(msg).map(|c| (None, c)).collect()
    }

    /// An event of channel `channel`'s session (multichannel); the connection's close is
    /// rendered once, by [`Dialect::encode`].
    fn encode_channel(&self, channel: usize, ev: &Event) -> Vec<Message> {
        let _ = channel;
        self.encode(ev)
    }

    /// The WebSocket close code that ends a session for `cause`.
    fn close_code(cause: CloseCause) -> u16;
}

//! The contract of RealtimeSTT's `stt-server` (the phone-call STT server this gateway
//! replaces): a *data* WebSocket that carries the audio and the results, and a *control*
//! WebSocket for `set_parameter` / `get_parameter` / `call_method`. The server listens on
//! two ports (8011 control, 8012 data, path `/`); the gateway has one listener, so they are
//! `/realtimestt/control` and `/realtimestt/data`.
//!
//! The server serves one client; the gateway serves many, so the connections of one client
//! are *paired*: each data connection is a session ([`data`]), and a control connection
//! acts on the most recent live data session of its pair. A pair is the client's address
//! (as the gate counts it), its credential (when authentication is on) and the optional
//! `session` query parameter (the same label on both URLs separates a client's calls).
//! Parameters set on a control connection before the data session starts (its first audio)
//! apply to its start: the RealtimeSTT client sets `language` as it connects.
//!
//! | module | role |
//! |---|---|
//! | [`data`] | the data connection as a [`Dialect`](super::dialect::Dialect): framing, results |
//! | [`control`] | the control connection: commands, answers, what each method does here |
//! | [`health`] | the server's JSON health shape, as a view of the gateway's state |

pub mod control;
pub mod data;
pub mod health;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use axum::Extension;
use axum::Router as HttpRouter;
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::dialect::{Contract, Upgrade};
use crate::session::{Command, ErrorKind};

pub use data::RealtimeStt;

/// The contract's routes: the two connections (their pairs shared through the router).
pub fn router() -> HttpRouter<AppState> {
    HttpRouter::new()
        .route("/realtimestt/data", get(data::endpoint))
        .route("/realtimestt/control", get(control::endpoint))
        .layer(Extension(Arc::new(Pairs::default())))
}

/// Commands a control connection may queue for a data session before it is refused as busy.
const SIDE_QUEUE: usize = 8;

/// Which connections belong to one client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PairKey {
    ip: IpAddr,
    /// SHA-256 of the credential (the credential itself is not kept).
    credential: Option<[u8; 32]>,
    label: String,
}

impl PairKey {
    /// The pair of a request from `ip`.
    fn of(request: &Upgrade<'_>, ip: IpAddr, allow_query: bool) -> PairKey {
        let credential = RealtimeStt::credentials(request, allow_query)
            .ok()
            .flatten()
            .map(|c| {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c.as_bytes());
                let mut out = [0u8; 32];
                out.copy_from_slice(d.as_ref());
                out
            });
        let label = request
            .query_param("session")
            .map(|l| l.chars().take(64).collect())
            .unwrap_or_default();
        PairKey {
            ip,
            credential,
            label,
        }
    }
}

/// Every pair with a live connection.
#[derive(Debug, Default)]
pub struct Pairs {
    slots: Mutex<HashMap<PairKey, Weak<Slot>>>,
}

impl Pairs {
    /// The pair's slot, made if no connection of the pair is live.
    fn join(self: &Arc<Self>, key: PairKey) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("pairs");
        if let Some(slot) = slots.get(&key).and_then(Weak::upgrade) {
            return slot;
        }
        let slot = Arc::new(Slot {
            key: key.clone(),
            pairs: Arc::downgrade(self),
            params: Mutex::new(BTreeMap::new()),
            data: Mutex::new(Vec::new()),
        });
        slots.insert(key, Arc::downgrade(&slot));
        slot
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().expect("pairs").len()
    }
}

/// What the connections of one pair share; it lives while one of them does.
#[derive(Debug)]
pub struct Slot {
    key: PairKey,
    pairs: Weak<Pairs>,
    /// Parameters set on a control connection (the allowed names only, bounded values).
    params: Mutex<BTreeMap<&'static str, Value>>,
    /// The pair's live data sessions, oldest first: control acts on the last.
    data: Mutex<Vec<Arc<DataLink>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pairs) = self.pairs.upgrade() {
            let mut slots = pairs.slots.lock().expect("pairs");
            if slots.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                slots.remove(&self.key);
            }
        }
    }
}

impl Slot {
    fn param(&self, name: &str) -> Option<Value> {
        self.params.lock().expect("params").get(name).cloned()
    }

    fn set_param(&self, name: &'static str, value: Value) {
        self.params.lock().expect("params").insert(name, value);
    }

    /// The most recent live data session.
    fn current(&self) -> Option<Arc<DataLink>> {
        self.data.lock().expect("data links").last().cloned()
    }

    fn attach(&self, link: Arc<DataLink>) {
        self.data.lock().expect("data links").push(link);
    }

    fn detach(&self, id: u64) {
        self.data.lock().expect("data links").retain(|l| l.id != id);
    }
}

/// A data session as its pair's control connections reach it.
#[derive(Debug)]
pub struct DataLink {
    id: u64,
    commands: tokio::sync::mpsc::Sender<Command>,
    /// An utterance is open (a partial came since the last final): `is_recording`.
    recording: AtomicBool,
    /// `abort`s whose Finalize is not done: the results until then are dropped.
    discarding: AtomicU32,
}

impl DataLink {
    fn new(commands: tokio::sync::mpsc::Sender<Command>) -> DataLink {
        static IDS: AtomicU64 = AtomicU64::new(0);
        DataLink {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            commands,
            recording: AtomicBool::new(false),
            discarding: AtomicU32::new(0),
        }
    }
}

/// The server's answer shape, `{"status": "error", "message": …}`, with the gateway's
/// code (before an upgrade, and for errors on either connection).
fn error_value(kind: ErrorKind, message: &str) -> Value {
    json!({"status": "error", "message": message, "code": kind.label()})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(label: &str) -> PairKey {
        PairKey {
            ip: IpAddr::from([127, 0, 0, 1]),
            credential: None,
            label: label.into(),
        }
    }

    #[test]
    fn a_pair_lives_while_one_of_its_connections_does() {
        let pairs = Arc::new(Pairs::default());
        let a = pairs.join(key(""));
        let b = pairs.join(key(""));
        assert!(Arc::ptr_eq(&a, &b));
        let other = pairs.join(key("call-2"));
        assert!(!Arc::ptr_eq(&a, &other));
        a.set_param("language", json!("de"));
        drop(a);
        assert_eq!(b.param("language"), Some(json!("de")));
        drop(b);
        assert_eq!(pairs.len(), 1, "only call-2 is left");
        drop(other);
        assert_eq!(pairs.len(), 0);
        let fresh = pairs.join(key(""));
        assert_eq!(fresh.param("language"), None, "a new pair starts afresh");
    }
}

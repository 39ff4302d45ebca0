//! The `/ws` contract of the dual-model realtime STT server this gateway replaces (fast
//! interim model, quality final model), as a [`Dialect`].
//!
//! - Binary messages are PCM16 mono at 16 kHz (any length: one longer than
//!   `session.max_frame` is split). Audio before `start` starts the session with the
//!   defaults.
//! - `{"event":"start","language":…}` starts the session (`model`, a route, is the
//!   gateway's addition); a `start` while running is answered with a `status` only, so a
//!   client may pair `start` with `stop` on one connection.
//! - `{"event":"stop"}` ends the utterance: the back end finalises what it holds and the
//!   `final` follows; the connection stays open (closing it ends the session).
//! - `{"event":"set","interimRate":N}` sends at most N `interim` messages a second (0: none),
//!   answered with a `status`.
//! - Server messages: `interim` (`text`, `stable_chars`, `t0`/`t1`), `final` (`text`,
//!   `segments`, `language`, `t0`/`t1`), `status` (`backpressure`, `cooldown_ms`,
//!   `tail_s`, `interim_paused`) and `error`, each with the connection's `conn`.
//!
//! Times: `t0`/`t1` are Unix times in seconds, the wall-clock time of the session's first
//! audio plus the audio offset (audio of a live client arrives in real time); a segment's
//! `start`/`end` are seconds from its final's `t0`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Message;
use bytes::Bytes;
use serde_json::{Value, json};

use super::dialect::{Contract, Decoded, Dialect, Upgrade};
use crate::session::audio::max_frame_bytes;
use crate::session::{
    CloseCause, Command, ErrorKind, Event, SessionError, StartConfig, StatusState, Transcript,
};

/// The contract's only audio rate.
const RATE: u32 = 16_000;

/// Partials whose common prefix is `stable_chars` (the current one and those before it in
/// the same utterance).
const STABLE_WINDOW: usize = 3;

/// Highest `interimRate` taken (interims a second).
const MAX_INTERIM_RATE: u64 = 100;

/// The back end's load as the contract's `backpressure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backpressure {
    Normal,
    /// The back end's results trail the audio (`backend_lagging`) until it catches up.
    High,
}

impl Backpressure {
    fn label(self) -> &'static str {
        match self {
            Backpressure::Normal => "normal",
            Backpressure::High => "high",
        }
    }
}

#[derive(Debug)]
struct State {
    started: bool,
    language: String,
    /// Unix time (s) of the first audio: session time 0.
    epoch: Option<f64>,
    /// `interimRate`: `None` sends every partial, `Some(0)` none.
    interim_rate: Option<u64>,
    last_interim: Option<Instant>,
    /// The open utterance's latest partials, oldest first.
    recent: VecDeque<String>,
    /// Session time (ms) where the open utterance began: the end of the last final.
    utterance_start_ms: u64,
    backpressure: Backpressure,
    /// The back end's finals-first queue paused partial re-decodes (`interim_paused`
    /// notice) and has not resumed them.
    queue_paused: bool,
}

/// One `/ws` connection's codec.
#[derive(Debug)]
pub struct DualModel {
    /// `conn_…`, in every message.
    conn: String,
    /// Most PCM16 bytes of one session frame at 16 kHz.
    frame_bytes: usize,
    /// `tail_s`: the audio the gateway keeps since the last final (`session.replay`).
    tail_s: f64,
    state: Mutex<State>,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn reject(kind: ErrorKind, message: impl Into<String>) -> Command {
    Command::Reject(SessionError::new(kind, message))
}

/// Characters (not bytes) the texts share from their start.
fn common_prefix_chars<'a>(texts: impl IntoIterator<Item = &'a str>) -> usize {
    let mut texts = texts.into_iter();
    let Some(first) = texts.next() else { return 0 };
    let mut n = first.chars().count();
    for t in texts {
        n = n.min(
            first
                .chars()
                .zip(t.chars())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    n
}

/// Seconds, rounded to the millisecond.
fn secs(ms: f64) -> f64 {
    (ms).round() / 1000.0
}

impl DualModel {
    fn text(&self, mut value: Value) -> Message {
        value["conn"] = Value::String(self.conn.clone());
        Message::Text(value.to_string().into())
    }

    fn status(&self, state: &State) -> Value {
        let (cooldown_ms, paused) = match state.interim_rate {
            None => (0, false),
            Some(0) => (0, true),
            Some(n) => (1000 / n, false),
        };
        json!({
            "type": "status",
            "conn": self.conn,
            "backpressure": state.backpressure.label(),
            "cooldown_ms": cooldown_ms,
            "tail_s": self.tail_s,
            "interim_paused": paused || state.queue_paused,
        })
    }

    fn reply(value: Value) -> Command {
        Command::Reply(value.to_string().into())
    }

    /// Audio as session frames, the session started first if it was not.
    fn audio(&self, mut pcm: Bytes) -> Decoded {
        let mut out = Vec::with_capacity(pcm.len() / self.frame_bytes.max(1) + 2);
        {
            let mut state = self.state.lock().expect("dual-model state");
            if !state.started {
                state.started = true;
                out.push(Command::Start(start_config(&state.language, None)));
            }
            state.epoch.get_or_insert_with(now_unix);
        }
        while pcm.len() > self.frame_bytes {
            out.push(Command::Audio(pcm.split_to(self.frame_bytes)));
        }
        out.push(Command::Audio(pcm));
        Decoded::Many(out.into_iter())
    }

    fn control(&self, text: &str) -> Decoded {
        let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
            return reject(
                ErrorKind::InvalidRequest,
                "control messages are JSON objects with an `event`; this one was ignored",
            )
            .into();
        };
        match msg.get("event").and_then(Value::as_str) {
            Some("start") => self.start(&msg),
            Some("stop") => Command::Finalize.into(),
            Some("set") => self.set(&msg),
            Some(other) => reject(
                ErrorKind::InvalidRequest,
                format!(
                    "unknown event `{}`: start, stop and set are taken; it was ignored",
                    other.chars().take(32).collect::<String>()
                ),
            )
            .into(),
            None => reject(
                ErrorKind::InvalidRequest,
                "a control message needs an `event` (start, stop or set); it was ignored",
            )
            .into(),
        }
    }

    fn start(&self, msg: &serde_json::Map<String, Value>) -> Decoded {
        let language = match msg.get("language") {
            None | Some(Value::Null) => "auto".to_string(),
            Some(Value::String(l)) if !l.trim().is_empty() && l.len() <= 32 => l.trim().to_string(),
            Some(_) => {
                return reject(
                    ErrorKind::InvalidRequest,
                    "`language` is a language code (at most 32 bytes) or \"auto\"; the start \
                     was ignored",
                )
                .into();
            }
        };
        let model = match msg.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) if m.len() <= 128 => Some(m.clone()),
            Some(_) => {
                return reject(
                    ErrorKind::InvalidRequest,
                    "`model` is a route name; the start was ignored",
                )
                .into();
            }
        };
        let mut state = self.state.lock().expect("dual-model state");
        let status = Self::reply(self.status(&state));
        if state.started {
            return status.into();
        }
        state.started = true;
        state.language = language.clone();
        let start = Command::Start(start_config(&language, model));
        Decoded::Many(vec![start, status].into_iter())
    }

    fn set(&self, msg: &serde_json::Map<String, Value>) -> Decoded {
        let Some(rate) = msg.get("interimRate") else {
            return reject(
                ErrorKind::InvalidRequest,
                "`set` takes `interimRate` (interim messages a second, 0 for none)",
            )
            .into();
        };
        let rate = match rate.as_f64() {
            Some(r) if (0.0..=MAX_INTERIM_RATE as f64).contains(&r) => r.ceil() as u64,
            _ => {
                return reject(
                    ErrorKind::InvalidRequest,
                    format!(
                        "`interimRate` is a number from 0 to {MAX_INTERIM_RATE}; it was ignored"
                    ),
                )
                .into();
            }
        };
        let mut state = self.state.lock().expect("dual-model state");
        state.interim_rate = Some(rate);
        Self::reply(self.status(&state)).into()
    }

    fn on_partial(&self, t: &Transcript) -> Vec<Message> {
        let mut state = self.state.lock().expect("dual-model state");
        if state.recent.len() == STABLE_WINDOW {
            state.recent.pop_front();
        }
        state.recent.push_back(t.text.clone());
        let now = Instant::now();
        let due = match state.interim_rate {
            None => true,
            Some(0) => false,
            Some(n) => state.last_interim.is_none_or(|last| {
                now.duration_since(last) >= Duration::from_secs_f64(1.0 / n as f64)
            }),
        };
        if !due {
            return Vec::new();
        }
        state.last_interim = Some(now);
        let stable = common_prefix_chars(state.recent.iter().map(String::as_str));
        let epoch = *state.epoch.get_or_insert_with(now_unix);
        let t0 = epoch * 1000.0 + state.utterance_start_ms as f64;
        let t1 = epoch * 1000.0 + t.timestamp_ms.max(state.utterance_start_ms) as f64;
        vec![self.text(json!({
            "type": "interim",
            "text": t.text,
            "stable_chars": stable,
            "t0": secs(t0),
            "t1": secs(t1),
        }))]
    }

    fn on_final(&self, t: &Transcript) -> Vec<Message> {
        let mut state = self.state.lock().expect("dual-model state");
        state.recent.clear();
        let start_ms = state.utterance_start_ms;
        let end_ms = start_ms + t.duration_ms;
        state.utterance_start_ms = end_ms;
        let epoch = *state.epoch.get_or_insert_with(now_unix);
        let span = t
            .words
            .as_deref()
            .and_then(|w| Some((w.first()?.start, w.last()?.end)));
        let (seg_start, seg_end) = match span {
            Some((first, last)) => (
                (first * 1000.0 - start_ms as f64).max(0.0),
                (last * 1000.0 - start_ms as f64).max(0.0),
            ),
            None => (0.0, t.duration_ms as f64),
        };
        let segments = if t.text.is_empty() {
            Vec::new()
        } else {
            vec![json!({"start": secs(seg_start), "end": secs(seg_end), "text": t.text})]
        };
        vec![self.text(json!({
            "type": "final",
            "text": t.text,
            "segments": segments,
            "language": state.language,
            "t0": secs(epoch * 1000.0 + start_ms as f64),
            "t1": secs(epoch * 1000.0 + end_ms as f64),
        }))]
    }

    fn on_status(&self, kind: StatusState, message: &str) -> Vec<Message> {
        let mut state = self.state.lock().expect("dual-model state");
        match kind {
            StatusState::BackendLagging => state.backpressure = Backpressure::High,
            StatusState::BackendCaughtUp => state.backpressure = Backpressure::Normal,
            StatusState::InterimPaused => state.queue_paused = true,
            StatusState::InterimResumed => state.queue_paused = false,
            StatusState::Failover | StatusState::AudioGap => {}
        }
        let mut status = self.status(&state);
        // The gateway's notice, for clients that read it (others skip unknown fields).
        status["notice"] = json!(kind.label());
        status["message"] = json!(message);
        vec![Message::Text(status.to_string().into())]
    }
}

/// The session's start: 16 kHz, partials and word times (for the segments), ended by the
/// client's close.
fn start_config(language: &str, model: Option<String>) -> StartConfig {
    StartConfig {
        language: language.to_string(),
        sample_rate: RATE,
        model,
        interim_results: true,
        word_timestamps: true,
        ends_by_closing: true,
        ..StartConfig::default()
    }
}

impl Contract for DualModel {
    const NAME: &'static str = "dualmodel_ws";

    fn error_body(kind: ErrorKind, message: &str) -> Value {
        json!({"type": "error", "code": kind.label(), "message": message})
    }
}

impl Dialect for DualModel {
    fn accept(request: &Upgrade<'_>) -> Result<Self, SessionError> {
        Ok(DualModel {
            conn: format!("conn_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            frame_bytes: max_frame_bytes(RATE, request.config.session.max_frame),
            tail_s: request.config.session.replay.as_secs_f64(),
            state: Mutex::new(State {
                started: false,
                language: "auto".into(),
                epoch: None,
                interim_rate: None,
                last_interim: None,
                recent: VecDeque::with_capacity(STABLE_WINDOW),
                utterance_start_ms: 0,
                backpressure: Backpressure::Normal,
                queue_paused: false,
            }),
        })
    }

    fn decode(&self, msg: Message) -> Decoded {
        match msg {
            Message::Binary(pcm) => self.audio(pcm),
            Message::Text(text) => self.control(text.as_str()),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Decoded::Nothing,
        }
    }

    fn encode(&self, ev: &Event) -> Vec<Message> {
        match ev {
            Event::Partial(t) => self.on_partial(t),
            Event::Final(t) => self.on_final(t),
            Event::Status { state, message } => self.on_status(*state, message),
            Event::Error(e) => vec![self.text(json!({
                "type": "error",
                "code": e.kind.label(),
                "message": e.message,
                "recoverable": e.kind.recoverable(),
            }))],
            Event::Reply(text) => vec![Message::Text(text.to_string().into())],
            Event::Pong { .. }
            | Event::Finalized
            | Event::SpeechStarted { .. }
            | Event::UtteranceEnd { .. } => Vec::new(),
            Event::Close(cause) => vec![super::v1::close_message(*cause, "end of session")],
        }
    }

    fn close_code(cause: CloseCause) -> u16 {
        super::v1::close_code(cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> DualModel {
        let env = [
            ("SGW_ROUTES__DEFAULT", "riva://127.0.0.1:50051"),
            ("SGW_AUTH__ENABLED", "false"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let config =
            crate::config::Config::load(None, env, Default::default()).expect("a valid config");
        let headers = axum::http::HeaderMap::new();
        DualModel::accept(&Upgrade {
            headers: &headers,
            query: None,
            config: &config,
        })
        .expect("accepted")
    }

    fn partial(text: &str, at_ms: u64) -> Event {
        Event::Partial(std::sync::Arc::new(Transcript {
            text: text.into(),
            confidence: 0.0,
            timestamp_ms: at_ms,
            duration_ms: 0,
            words: None,
            from_finalize: false,
        }))
    }

    fn json_of(m: &Message) -> Value {
        match m {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn stable_chars_is_the_prefix_the_last_partials_share() {
        assert_eq!(
            common_prefix_chars(["héllo wörld", "héllo wörk", "héllo wö"]),
            8
        );
        assert_eq!(common_prefix_chars(["abc"]), 3);
        assert_eq!(common_prefix_chars(Vec::<&str>::new()), 0);
        let c = codec();
        let _ = c.decode(Message::Binary(Bytes::from(vec![0u8; 3200])));
        let a = json_of(&c.encode(&partial("hello", 500))[0]);
        assert_eq!(a["stable_chars"], 5, "one partial: all of it");
        let b = json_of(&c.encode(&partial("hello word", 800))[0]);
        assert_eq!(b["stable_chars"], 5);
        let d = json_of(&c.encode(&partial("hello world", 1000))[0]);
        assert_eq!(d["stable_chars"], 5);
        let e = json_of(&c.encode(&partial("hello world again", 1200))[0]);
        assert_eq!(e["stable_chars"], 9, "the last three share `hello wor`");
        assert!(e["t1"].as_f64().unwrap() - e["t0"].as_f64().unwrap() > 1.19);
    }

    #[test]
    fn interim_rate_zero_pauses_and_a_rate_throttles() {
        let c = codec();
        let _ = c.decode(Message::Text(r#"{"event":"set","interimRate":0}"#.into()));
        assert!(c.encode(&partial("a", 100)).is_empty());
        let replies: Vec<Command> = c
            .decode(Message::Text(r#"{"event":"set","interimRate":2}"#.into()))
            .collect();
        let Command::Reply(status) = &replies[0] else {
            panic!("{replies:?}")
        };
        let status: Value = serde_json::from_str(status).unwrap();
        assert_eq!(status["cooldown_ms"], 500);
        assert_eq!(status["interim_paused"], false);
        assert_eq!(c.encode(&partial("a b", 200)).len(), 1);
        assert!(c.encode(&partial("a b c", 300)).is_empty(), "within 500 ms");
    }

    #[test]
    fn bad_messages_are_refused_in_the_contracts_shape() {
        let c = codec();
        for bad in [
            "not json",
            "[1]",
            r#"{"event":"dance"}"#,
            r#"{"x":1}"#,
            r#"{"event":"set","interimRate":-1}"#,
        ] {
            let out: Vec<Command> = c.decode(Message::Text(bad.into())).collect();
            assert!(
                matches!(&out[..], [Command::Reject(e)] if e.kind == ErrorKind::InvalidRequest),
                "{bad}: {out:?}"
            );
            let Command::Reject(e) = &out[0] else {
                unreachable!()
            };
            let msg = json_of(&c.encode(&Event::Error(e.clone()))[0]);
            assert_eq!(msg["type"], "error");
            assert_eq!(msg["code"], "INVALID_REQUEST");
            assert!(msg["conn"].as_str().unwrap().starts_with("conn_"));
        }
    }
}

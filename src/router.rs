//! Routes and back-end health: which back ends may take a session, in which order.
//!
//! A route is an ordered list of back ends (the failover order). Each back end is probed
//! on an interval by the health monitor; candidates are offered healthy first (in route
//! order), then not yet known, then unhealthy (a last resort rather than a refusal, since a
//! probe can lag a recovery). One back end named in several routes is one [`BackendHandle`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backend::{Health, SpeechBackend};
use crate::telemetry::metrics::Metrics;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A back end plus what the gateway knows about it.
pub struct BackendHandle {
    pub backend: Arc<dyn SpeechBackend>,
    state: AtomicU8,
    last_problem: Mutex<Option<String>>,
    /// Sessions currently streaming to this back end.
    active: AtomicUsize,
}

impl BackendHandle {
    fn new(backend: Arc<dyn SpeechBackend>) -> Self {
        BackendHandle {
            backend,
            state: AtomicU8::new(UNKNOWN),
            last_problem: Mutex::new(None),
            active: AtomicUsize::new(0),
        }
    }

    pub fn name(&self) -> &str {
        self.backend.name()
    }

    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            UP => "up",
            DOWN => "down",
            _ => "unknown",
        }
    }

    /// Counts a session on this back end until the guard drops.
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

/// Decrements the back end's active-session count on drop.
pub struct ActiveGuard(Arc<BackendHandle>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct RouteEntry {
    pub name: String,
    pub backends: Vec<Arc<BackendHandle>>,
}

/// All routes, and the health of every back end they name.
pub struct Router {
    routes: Vec<RouteEntry>,
    unique: Vec<Arc<BackendHandle>>,
    metrics: Arc<Metrics>,
}

#[derive(Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub state: &'static str,
    pub active_sessions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Serialize)]
pub struct RouteStatus {
    pub name: String,
    pub ready: bool,
    pub backends: Vec<BackendStatus>,
}

impl Router {
    /// `routes`: name → back ends in failover order. Back ends with the same name are shared.
    pub fn new(routes: Vec<(String, Vec<Arc<dyn SpeechBackend>>)>, metrics: Arc<Metrics>) -> Self {
        let mut by_name: HashMap<String, Arc<BackendHandle>> = HashMap::new();
        let mut unique = Vec::new();
        let routes = routes
            .into_iter()
            .map(|(name, backends)| RouteEntry {
                name,
                backends: backends
                    .into_iter()
                    .map(|b| {
                        by_name
                            .entry(b.name().to_string())
                            .or_insert_with(|| {
                                let h = Arc::new(BackendHandle::new(b));
                                unique.push(h.clone());
                                h
                            })
                            .clone()
                    })
                    .collect(),
            })
            .collect();
        for b in &unique {
            metrics.set_backend_up(b.name(), false);
        }
        Router {
            routes,
            unique,
            metrics,
        }
    }

    pub fn route(&self, name: &str) -> Option<&RouteEntry> {
        self.routes.iter().find(|r| r.name == name)
    }

    pub fn route_names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.name.as_str()).collect()
    }

    /// The route's back ends in the order to try them: up, then unknown, then down; route
    /// order within each group. `last` (a back end that just failed) goes to the end.
    pub fn candidates(&self, route: &str, last: Option<&str>) -> Vec<Arc<BackendHandle>> {
        let Some(r) = self.route(route) else {
            return Vec::new();
        };
        let mut out = r.backends.clone();
        out.sort_by_key(|b| {
            let rank = match b.state.load(Ordering::Relaxed) {
                UP => 0,
                UNKNOWN => 1,
                _ => 2,
            };
            (Some(b.name()) == last, rank)
        });
        out
    }

    /// Ready when every route has at least one back end whose last probe passed.
    pub fn ready(&self) -> bool {
        self.routes
            .iter()
            .all(|r| r.backends.iter().any(|b| b.is_up()))
    }

    pub fn status(&self) -> Vec<RouteStatus> {
        self.routes
            .iter()
            .map(|r| RouteStatus {
                name: r.name.clone(),
                ready: r.backends.iter().any(|b| b.is_up()),
                backends: r
                    .backends
                    .iter()
                    .map(|b| BackendStatus {
                        name: b.name().to_string(),
                        state: b.state_name(),
                        active_sessions: b.active.load(Ordering::Relaxed),
                        problem: b.last_problem.lock().expect("not poisoned").clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Probes every back end once, concurrently, and records the answers.
    pub async fn check_all(&self) {
        let probes = self
            .unique
            .iter()
            .map(|b| async move { (b, b.backend.health().await) });
        for (b, health) in futures::future::join_all(probes).await {
            let (state, problem) = match health {
                Health::Up => (UP, None),
                Health::Down(why) => (DOWN, Some(why)),
            };
            let before = b.state.swap(state, Ordering::Relaxed);
            if before != state {
                match &problem {
                    None => tracing::info!(backend = b.name(), "back end healthy"),
                    Some(why) => {
                        tracing::warn!(backend = b.name(), problem = %why, "back end unhealthy")
                    }
                }
            }
            *b.last_problem.lock().expect("not poisoned") = problem;
            self.metrics.set_backend_up(b.name(), state == UP);
        }
    }

    /// Probes on `interval` until `stop` is cancelled. The first probe runs at once.
    pub async fn monitor(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.check_all().await,
            }
        }
    }
}

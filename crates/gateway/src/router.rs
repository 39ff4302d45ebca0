//! Routes, back-end health and breakers: which back ends may take a session, in which order.
//!
//! A route is an ordered list of tiers, each a set of back ends. Each back end is probed
//! on an interval by the health monitor (with hysteresis: `unhealthy_after` failed probes
//! in a row mark it down, `healthy_after` passed ones mark it up again; the very first
//! probe decides at once), guarded by a circuit breaker fed by the sessions' own outcomes,
//! and may have a capacity (`max_sessions`). A back end is *usable* when its breaker
//! passes, it is not down and not full. Sessions (new ones and failovers alike) go to the
//! first tier with a usable back end, spread over that tier's usable back ends by least
//! outstanding sessions (list order breaks ties): a lower tier (a paid cloud fallback)
//! takes sessions only while every back end of the tiers above is down, open or full.
//! Down back ends whose breaker passes are a last resort after every usable one (a probe
//! can lag a recovery); open and full ones are not tried. Sessions already on a lower
//! tier stay there until their stream ends or fails; new ones return to tier 0 as soon as
//! it is usable. One back end named in several routes is one [`BackendHandle`], so its
//! load, capacity and breaker are shared.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backend::{Health, SpeechBackend};
use crate::config::HealthSettings;
use crate::resilience::breaker::{Breaker, BreakerSettings, BreakerState, Pass, Transition};
use crate::telemetry::metrics::Metrics;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A back end plus what the gateway knows about it.
pub struct BackendHandle {
    pub backend: Arc<dyn SpeechBackend>,
    state: AtomicU8,
    /// Consecutive probe results that disagree with `state` (hysteresis).
    streak: AtomicUsize,
    last_problem: Mutex<Option<String>>,
    /// Sessions currently streaming to this back end (the load-balancing signal).
    active: AtomicUsize,
    /// At most this many sessions at once.
    max_sessions: Option<usize>,
    /// Left its DNS pool: its gauges are gone and stay gone.
    retired: std::sync::atomic::AtomicBool,
    breaker: Breaker,
    metrics: Arc<Metrics>,
}

/// One back end of a route, or one DNS pool of them, as configured.
pub struct Member {
    /// The back end; for a DNS pool, an adapter for the pool's URL that is never opened
    /// or probed: it names the pool and gives its rate.
    pub backend: Arc<dyn SpeechBackend>,
    /// Its tier in the route (0 first).
    pub tier: usize,
    /// Its capacity (`max_sessions=` on its URL; for a pool, each address's); `None`: no cap.
    pub max_sessions: Option<usize>,
    /// A DNS pool: its addresses come from [`Router::update_pool`].
    pub dns: bool,
}

impl Member {
    /// Tier 0, no cap.
    pub fn new(backend: Arc<dyn SpeechBackend>) -> Self {
        Member {
            backend,
            tier: 0,
            max_sessions: None,
            dns: false,
        }
    }
}

impl BackendHandle {
    fn new(
        backend: Arc<dyn SpeechBackend>,
        max_sessions: Option<usize>,
        breaker: BreakerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        BackendHandle {
            backend,
            state: AtomicU8::new(UNKNOWN),
            streak: AtomicUsize::new(0),
            last_problem: Mutex::new(None),
            active: AtomicUsize::new(0),
            max_sessions,
            retired: std::sync::atomic::AtomicBool::new(false),
            breaker: Breaker::new(breaker),
            metrics,
        }
    }

    /// Publishes the active-session gauge (not for a back end that left its pool).
    fn publish_sessions(&self, active: usize) {
        if !self.retired.load(Ordering::Relaxed) {
            self.metrics.set_backend_sessions(self.name(), active);
        }
    }

    pub fn name(&self) -> &str {
        self.backend.name()
    }

    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// Up by its probes and not refused by its breaker.
    pub fn is_usable(&self) -> bool {
        self.is_up() && self.breaker.state() != BreakerState::Open
    }

    pub fn breaker_state(&self) -> BreakerState {
        let s = self.breaker.state();
        self.metrics.set_breaker_state(self.name(), s.gauge());
        s
    }

    pub fn active_sessions(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// At its `max_sessions`: takes no session until one ends.
    pub fn is_full(&self) -> bool {
        self.max_sessions
            .is_some_and(|max| self.active_sessions() >= max)
    }

    fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            UP => "up",
            DOWN => "down",
            _ => "unknown",
        }
    }

    /// Takes a place on this back end (within its capacity) and asks its breaker; the
    /// lease counts the session until it drops and carries the verdict back to the
    /// breaker. `None`: full, or refused by the breaker.
    pub fn lease(self: &Arc<Self>) -> Option<Lease> {
        let max = self.max_sessions.unwrap_or(usize::MAX);
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        let Some(pass) = self.breaker.try_pass() else {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        };
        if pass == Pass::Probe {
            tracing::info!(
                backend = self.name(),
                "breaker half-open: probing with one session"
            );
            self.metrics
                .set_breaker_state(self.name(), BreakerState::HalfOpen.gauge());
        }
        self.publish_sessions(self.active_sessions());
        Some(Lease {
            handle: self.clone(),
            pass,
            settled: false,
        })
    }

    fn record(&self, t: Option<Transition>) {
        match t {
            Some(Transition::Opened) => {
                tracing::warn!(
                    backend = self.name(),
                    "breaker opened: consecutive upstream failures"
                );
                self.metrics.breaker_transition(self.name(), "opened");
            }
            Some(Transition::Closed) => {
                tracing::info!(
                    backend = self.name(),
                    "breaker closed: the back end answered"
                );
                self.metrics.breaker_transition(self.name(), "closed");
            }
            None => {}
        }
        if !self.retired.load(Ordering::Relaxed) {
            self.metrics
                .set_breaker_state(self.name(), self.breaker.state().gauge());
        }
    }
}

/// One session's use of one back end. Report the verdict once with [`Lease::succeeded`]
/// or [`Lease::failed`]; a probe dropped without one frees the probe slot.
pub struct Lease {
    handle: Arc<BackendHandle>,
    pass: Pass,
    settled: bool,
}

impl Lease {
    pub fn handle(&self) -> &Arc<BackendHandle> {
        &self.handle
    }

    pub fn name(&self) -> &str {
        self.handle.name()
    }

    /// The back end answered: the breaker's failure count resets (a probe closes it).
    pub fn succeeded(&mut self) {
        if !self.settled {
            self.settled = true;
            self.handle.record(self.handle.breaker.on_success());
        }
    }

    /// An upstream failure (never a client fault) on this back end.
    pub fn failed(&mut self) {
        if !self.settled {
            self.settled = true;
            self.handle
                .record(self.handle.breaker.on_failure(self.pass));
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let left = self.handle.active.fetch_sub(1, Ordering::AcqRel) - 1;
        self.handle.publish_sessions(left);
        if !self.settled && self.pass == Pass::Probe {
            self.handle.breaker.release_probe();
        }
    }
}

/// One configured member of a route: a back end, or a DNS pool of them.
struct Source {
    tier: usize,
    max_sessions: Option<usize>,
    /// The pool's name (its URL as configured) when the member is a DNS pool.
    pool: Option<String>,
    /// The back end, or the pool's current addresses.
    handles: Vec<Arc<BackendHandle>>,
}

pub struct RouteEntry {
    pub name: String,
    /// Rate of the audio the route's back ends take (its first member's).
    pub sample_rate: u32,
    sources: RwLock<Vec<Source>>,
}

impl RouteEntry {
    /// The route's back ends now, each with its tier, in configuration order (a pool's
    /// addresses in the order resolved).
    pub fn members(&self) -> Vec<(Arc<BackendHandle>, usize)> {
        let sources = self.sources.read().expect("not poisoned");
        sources
            .iter()
            .flat_map(|s| s.handles.iter().map(|h| (h.clone(), s.tier)))
            .collect()
    }
}

/// What the gateway last learnt of one DNS pool.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolStatus {
    /// The pool as configured (`riva+dns://NAME:PORT`).
    pub name: String,
    /// Addresses in the last good answer.
    pub addresses: usize,
    /// Why the last resolution failed (the last good set is kept meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// All routes, and the health of every back end they name.
pub struct Router {
    routes: Vec<RouteEntry>,
    /// Every back end some route names now, by name (DNS pools add and remove theirs).
    handles: Mutex<HashMap<String, Arc<BackendHandle>>>,
    pools: Mutex<Vec<PoolStatus>>,
    breaker: BreakerSettings,
    metrics: Arc<Metrics>,
    health: HealthSettings,
}

#[derive(Serialize)]
pub struct BackendStatus {
    pub name: String,
    /// Its tier in this route (0 first).
    pub tier: usize,
    /// The DNS pool it was found in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub state: &'static str,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub active_sessions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Request/response back ends: their finals-first decode queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<crate::backend::scheduler::QueueStatus>,
}

#[derive(Serialize)]
pub struct RouteStatus {
    pub name: String,
    pub ready: bool,
    pub backends: Vec<BackendStatus>,
    /// The route's DNS pools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolStatus>,
}

impl Router {
    /// `routes`: name → its members, tier 0's first. Back ends with the same name are
    /// shared (the first member's capacity holds). A DNS member (`dns`) starts empty: its
    /// `backend` only names the pool and gives its rate; [`Router::update_pool`] fills it.
    pub fn new(
        routes: Vec<(String, Vec<Member>)>,
        health: HealthSettings,
        breaker: BreakerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let router = Router {
            routes: Vec::new(),
            handles: Mutex::new(HashMap::new()),
            pools: Mutex::new(Vec::new()),
            breaker,
            metrics,
            health,
        };
        let mut entries = Vec::new();
        let mut pools = Vec::new();
        for (name, members) in routes {
            let sample_rate = members
                .first()
                .map_or(16_000, |m| m.backend.sample_rate_hz());
            let sources = members
                .into_iter()
                .map(|m| {
                    let pool = m.dns.then(|| m.backend.name().to_string());
                    if let Some(p) = &pool
                        && !pools.iter().any(|s: &PoolStatus| &s.name == p)
                    {
                        pools.push(PoolStatus {
                            name: p.clone(),
                            ..PoolStatus::default()
                        });
                    }
                    let handles = if m.dns {
                        Vec::new()
                    } else {
                        vec![router.handle(&name, m.tier, m.max_sessions, || m.backend.clone())]
                    };
                    Source {
                        tier: m.tier,
                        max_sessions: m.max_sessions,
                        pool,
                        handles,
                    }
                })
                .collect();
            entries.push(RouteEntry {
                name,
                sample_rate,
                sources: RwLock::new(sources),
            });
        }
        Router {
            routes: entries,
            pools: Mutex::new(pools),
            ..router
        }
    }

    /// The handle of back end `name`, made (with `make`) when no route names it yet.
    fn handle_named(
        &self,
        name: &str,
        max_sessions: Option<usize>,
        make: impl FnOnce() -> Arc<dyn SpeechBackend>,
    ) -> Arc<BackendHandle> {
        let mut handles = self.handles.lock().expect("not poisoned");
        if let Some(h) = handles.get(name) {
            return h.clone();
        }
        let h = Arc::new(BackendHandle::new(
            make(),
            max_sessions,
            self.breaker,
            self.metrics.clone(),
        ));
        self.metrics.set_backend_up(name, false);
        self.metrics
            .set_breaker_state(name, BreakerState::Closed.gauge());
        self.metrics.set_backend_sessions(name, 0);
        handles.insert(name.to_string(), h.clone());
        h
    }

    fn handle(
        &self,
        route: &str,
        tier: usize,
        max_sessions: Option<usize>,
        make: impl FnOnce() -> Arc<dyn SpeechBackend>,
    ) -> Arc<BackendHandle> {
        let backend = make();
        let name = backend.name().to_string();
        let h = self.handle_named(&name, max_sessions, || backend);
        self.metrics.set_backend_tier(route, &name, tier);
        h
    }

    /// Sets DNS pool `pool`'s back ends to `names` (in that order), in every route that
    /// names the pool: back ends already known keep their handle (connections, health,
    /// breaker, load); `make` builds the others (`None`: skipped). A back end no route
    /// names any more takes no new session; its live sessions keep their lease until
    /// their stream ends or fails. Returns the back ends that joined (to probe at once).
    pub fn update_pool(
        &self,
        pool: &str,
        names: &[String],
        make: &dyn Fn(&str) -> Option<Arc<dyn SpeechBackend>>,
    ) -> Vec<Arc<BackendHandle>> {
        let mut joined: Vec<Arc<BackendHandle>> = Vec::new();
        for r in &self.routes {
            let mut sources = r.sources.write().expect("not poisoned");
            for src in sources
                .iter_mut()
                .filter(|s| s.pool.as_deref() == Some(pool))
            {
                let mut handles = Vec::with_capacity(names.len());
                for name in names {
                    let known = self
                        .handles
                        .lock()
                        .expect("not poisoned")
                        .get(name.as_str())
                        .cloned();
                    let h = match known {
                        Some(h) => h,
                        None => {
                            let Some(b) = make(name) else { continue };
                            let h = self.handle_named(name, src.max_sessions, || b);
                            if !joined.iter().any(|j| Arc::ptr_eq(j, &h)) {
                                joined.push(h.clone());
                            }
                            h
                        }
                    };
                    self.metrics.set_backend_tier(&r.name, name, src.tier);
                    handles.push(h);
                }
                for gone in src
                    .handles
                    .iter()
                    .filter(|h| !names.iter().any(|n| n == h.name()))
                {
                    self.metrics.forget_backend_tier(&r.name, gone.name());
                }
                src.handles = handles;
            }
        }
        // Forget the back ends no route names any more.
        let named: std::collections::HashSet<String> = self
            .routes
            .iter()
            .flat_map(|r| r.members())
            .map(|(h, _)| h.name().to_string())
            .collect();
        let mut handles = self.handles.lock().expect("not poisoned");
        handles.retain(|name, h| {
            let keep = named.contains(name);
            if !keep {
                h.retired.store(true, Ordering::Relaxed);
                tracing::info!(pool, backend = %name, "address left its DNS pool: no new sessions");
                self.metrics.forget_backend(name);
            }
            keep
        });
        drop(handles);
        let mut pools = self.pools.lock().expect("not poisoned");
        if let Some(p) = pools.iter_mut().find(|p| p.name == pool) {
            p.addresses = names.len();
            p.problem = None;
        }
        joined
    }

    /// Records why pool `pool` could not be resolved (its last good set stays).
    pub fn pool_problem(&self, pool: &str, problem: String) {
        let mut pools = self.pools.lock().expect("not poisoned");
        if let Some(p) = pools.iter_mut().find(|p| p.name == pool) {
            p.problem = Some(problem);
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn route(&self, name: &str) -> Option<&RouteEntry> {
        self.routes.iter().find(|r| r.name == name)
    }

    pub fn route_names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.name.as_str()).collect()
    }

    /// The route's back ends not in `tried`, in the order to try them: the usable ones
    /// (breaker passing, not down, not full) of tier 0, then of tier 1, …; then the down
    /// ones whose breaker passes, by tier; then the open and full ones (their lease is
    /// refused). Within a class and tier: up before unknown, then fewest active sessions,
    /// then list order.
    pub fn candidates(&self, route: &str, tried: &[String]) -> Vec<Arc<BackendHandle>> {
        let Some(r) = self.route(route) else {
            return Vec::new();
        };
        let mut ranked: Vec<_> = r
            .members()
            .into_iter()
            .enumerate()
            .filter(|(_, (b, _))| !tried.iter().any(|t| t == b.name()))
            .map(|(i, (b, tier))| {
                let health = match b.state.load(Ordering::Relaxed) {
                    UP => 0,
                    UNKNOWN => 1,
                    _ => 2,
                };
                let class = if !b.breaker.would_pass() || b.is_full() {
                    2
                } else if health == 2 {
                    1
                } else {
                    0
                };
                let key = (class, tier, health, b.active_sessions(), i);
                (key, b)
            })
            .collect();
        ranked.sort_by_key(|(k, _)| *k);
        ranked.into_iter().map(|(_, b)| b).collect()
    }

    /// Ready when every route has a back end that is up and whose breaker is not open.
    pub fn ready(&self) -> bool {
        self.routes
            .iter()
            .all(|r| r.members().iter().any(|(b, _)| b.is_usable()))
    }

    pub fn status(&self) -> Vec<RouteStatus> {
        let pools = self.pools.lock().expect("not poisoned").clone();
        self.routes
            .iter()
            .map(|r| {
                let sources = r.sources.read().expect("not poisoned");
                let backends = sources
                    .iter()
                    .flat_map(|s| s.handles.iter().map(move |b| (b, s)))
                    .map(|(b, s)| BackendStatus {
                        name: b.name().to_string(),
                        tier: s.tier,
                        pool: s.pool.clone(),
                        state: b.state_name(),
                        breaker: b.breaker_state(),
                        consecutive_failures: b.breaker.consecutive_failures(),
                        active_sessions: b.active_sessions(),
                        max_sessions: b.max_sessions,
                        problem: b.last_problem.lock().expect("not poisoned").clone(),
                        queue: b.backend.queue(),
                    })
                    .collect::<Vec<_>>();
                let route_pools = pools
                    .iter()
                    .filter(|p| sources.iter().any(|s| s.pool.as_ref() == Some(&p.name)))
                    .cloned()
                    .collect();
                RouteStatus {
                    name: r.name.clone(),
                    ready: sources
                        .iter()
                        .flat_map(|s| &s.handles)
                        .any(|b| b.is_usable()),
                    backends,
                    pools: route_pools,
                }
            })
            .collect()
    }

    /// Probes every back end once, concurrently, and records the answers.
    pub async fn check_all(&self) {
        let all: Vec<Arc<BackendHandle>> = self
            .handles
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect();
        self.check(&all).await;
    }

    /// Probes these back ends once, concurrently, and records the answers.
    pub async fn check(&self, backends: &[Arc<BackendHandle>]) {
        let probes = backends
            .iter()
            .map(|b| async move { (b, b.backend.health().await) });
        for (b, health) in futures::future::join_all(probes).await {
            let passed = health == Health::Up;
            let before = b.state.load(Ordering::Relaxed);
            let agrees = matches!((before, passed), (UP, true) | (DOWN, false));
            let next = if before == UNKNOWN {
                Some(if passed { UP } else { DOWN })
            } else if agrees {
                b.streak.store(0, Ordering::Relaxed);
                None
            } else {
                let streak = b.streak.fetch_add(1, Ordering::Relaxed) + 1;
                let needed = if passed {
                    self.health.healthy_after
                } else {
                    self.health.unhealthy_after
                };
                (streak >= needed as usize).then_some(if passed { UP } else { DOWN })
            };
            if let Some(state) = next {
                b.state.store(state, Ordering::Relaxed);
                b.streak.store(0, Ordering::Relaxed);
                match &health {
                    Health::Up => tracing::info!(backend = b.name(), "back end healthy"),
                    Health::Down(why) => {
                        tracing::warn!(backend = b.name(), problem = %why, "back end unhealthy")
                    }
                }
                self.metrics.set_backend_up(b.name(), state == UP);
            }
            *b.last_problem.lock().expect("not poisoned") = match health {
                Health::Up => None,
                Health::Down(why) => Some(why),
            };
            b.breaker_state(); // refreshes the gauge as open breakers turn half-open
        }
    }

    /// Probes on `interval` until `stop` is cancelled. The first probe runs at once.
    pub async fn monitor(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.health.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.check_all().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{AudioStream, BackendError, EventStream, RecognitionParams};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[tokio::test]
    async fn health_changes_only_after_enough_probes_in_a_row() {
        let probe = Arc::new(Named("riva://probe:1", AtomicBool::new(true)));
        let backend: Arc<dyn SpeechBackend> = probe.clone();
        let settings = HealthSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
        };
        let router = Router::new(
            vec![("default".into(), vec![Member::new(backend)])],
            settings,
            BreakerSettings::default(),
            Arc::new(Metrics::new()),
        );
        router.check_all().await;
        assert!(router.ready(), "the first probe decides at once");
        probe.1.store(false, Ordering::Relaxed);
        router.check_all().await;
        router.check_all().await;
        assert!(router.ready(), "two failures are not yet three");
        probe.1.store(true, Ordering::Relaxed);
        router.check_all().await; // a pass resets the streak
        probe.1.store(false, Ordering::Relaxed);
        for _ in 0..2 {
            router.check_all().await;
        }
        assert!(router.ready());
        router.check_all().await;
        assert!(!router.ready(), "three failures in a row");
        probe.1.store(true, Ordering::Relaxed);
        router.check_all().await;
        assert!(!router.ready(), "one pass is not yet two");
        router.check_all().await;
        assert!(router.ready());
    }

    /// A back end with a name whose health the test sets; it never streams.
    struct Named(&'static str, AtomicBool);

    #[async_trait::async_trait]
    impl SpeechBackend for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn sample_rate_hz(&self) -> u32 {
            16_000
        }
        async fn open(
            &self,
            _: RecognitionParams,
            _: AudioStream,
        ) -> Result<EventStream, BackendError> {
            unreachable!("health and ranking only")
        }
        async fn health(&self) -> Health {
            if self.1.load(Ordering::Relaxed) {
                Health::Up
            } else {
                Health::Down("down".into())
            }
        }
    }

    fn names(c: &[Arc<BackendHandle>]) -> Vec<&str> {
        c.iter().map(|b| b.name()).collect()
    }

    #[tokio::test]
    async fn a_lower_tier_takes_sessions_only_while_the_tiers_above_cannot() {
        let a = Arc::new(Named("a", AtomicBool::new(true)));
        let b = Arc::new(Named("b", AtomicBool::new(true)));
        let cloud = Arc::new(Named("cloud", AtomicBool::new(true)));
        let member = |n: &Arc<Named>, tier, max_sessions| Member {
            backend: n.clone() as Arc<dyn SpeechBackend>,
            tier,
            max_sessions,
            dns: false,
        };
        let router = Router::new(
            vec![(
                "default".into(),
                vec![
                    member(&a, 0, None),
                    member(&b, 0, Some(1)),
                    member(&cloud, 1, None),
                ],
            )],
            HealthSettings {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                unhealthy_after: 1,
                healthy_after: 1,
            },
            BreakerSettings::default(),
            Arc::new(Metrics::new()),
        );
        // Before any probe (unknown), tier 0 still comes first.
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["a", "b", "cloud"]
        );
        router.check_all().await;
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["a", "b", "cloud"]
        );
        // Least outstanding within tier 0: a session on `a` puts `b` first.
        let on_a = router.candidates("default", &[])[0]
            .lease()
            .expect("a place");
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["b", "a", "cloud"]
        );
        // `b` full (max_sessions 1): it is refused and ranked with the unusable ones.
        let on_b = router.candidates("default", &[])[0]
            .lease()
            .expect("a place");
        let b_handle = router.candidates("default", &[])[2].clone();
        assert_eq!(b_handle.name(), "b");
        assert!(b_handle.is_full() && b_handle.lease().is_none(), "full");
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["a", "cloud", "b"]
        );
        // Tier 0 down: the cloud first, the down back end only as a last resort.
        a.1.store(false, Ordering::Relaxed);
        router.check_all().await;
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["cloud", "a", "b"]
        );
        // A place on `b` frees: tier 0 takes sessions again.
        drop(on_b);
        assert!(!b_handle.is_full());
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["b", "cloud", "a"]
        );
        // `a` recovers: back to tier 0 first.
        a.1.store(true, Ordering::Relaxed);
        router.check_all().await;
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["b", "a", "cloud"]
        );
        drop(on_a);
        let status = router.status();
        let tiers: Vec<(String, usize)> = status[0]
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.tier))
            .collect();
        assert_eq!(
            tiers,
            [("a".into(), 0), ("b".into(), 0), ("cloud".into(), 1)]
        );
        assert_eq!(status[0].backends[1].max_sessions, Some(1));
    }

    #[tokio::test]
    async fn a_dns_pool_gains_and_loses_addresses_and_a_leaver_keeps_its_sessions() {
        let template: Arc<dyn SpeechBackend> =
            Arc::new(Named("riva+dns://pool:1", AtomicBool::new(true)));
        let fixed: Arc<dyn SpeechBackend> = Arc::new(Named("fixed", AtomicBool::new(true)));
        let router = Router::new(
            vec![(
                "default".into(),
                vec![
                    Member {
                        backend: template,
                        tier: 0,
                        max_sessions: Some(2),
                        dns: true,
                    },
                    Member {
                        backend: fixed,
                        tier: 1,
                        max_sessions: None,
                        dns: false,
                    },
                ],
            )],
            HealthSettings {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                unhealthy_after: 1,
                healthy_after: 1,
            },
            BreakerSettings::default(),
            Arc::new(Metrics::new()),
        );
        // Before the first answer the pool is empty: only the tier-1 back end.
        assert_eq!(names(&router.candidates("default", &[])), ["fixed"]);
        let names_of = |v: &[&'static str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let made = std::sync::Mutex::new(Vec::new());
        let make = |name: &str| -> Option<Arc<dyn SpeechBackend>> {
            made.lock().unwrap().push(name.to_string());
            let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
            Some(Arc::new(Named(leaked, AtomicBool::new(true))))
        };
        let joined = router.update_pool("riva+dns://pool:1", &names_of(&["p1", "p2"]), &make);
        assert_eq!(joined.len(), 2);
        router.check(&joined).await;
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["p1", "p2", "fixed"]
        );
        let on_p1 = router.candidates("default", &[])[0]
            .lease()
            .expect("a place");
        // p3 joins, p1 leaves: p2 is not rebuilt, p1's session keeps its lease.
        let joined = router.update_pool("riva+dns://pool:1", &names_of(&["p2", "p3"]), &make);
        assert_eq!(names(&joined), ["p3"]);
        assert_eq!(
            *made.lock().unwrap(),
            ["p1", "p2", "p3"],
            "known addresses are kept"
        );
        router.check(&joined).await;
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["p2", "p3", "fixed"]
        );
        assert_eq!(on_p1.name(), "p1");
        assert_eq!(
            on_p1.handle().active_sessions(),
            1,
            "the leaver's session goes on"
        );
        // Each address has the pool's capacity.
        assert_eq!(router.status()[0].backends[0].max_sessions, Some(2));
        assert_eq!(
            router.status()[0].backends[0].pool.as_deref(),
            Some("riva+dns://pool:1")
        );
        // A failed lookup keeps the set and says why.
        router.pool_problem("riva+dns://pool:1", "`pool` does not resolve".into());
        let status = router.status();
        assert_eq!(status[0].pools[0].addresses, 2);
        assert!(
            status[0].pools[0]
                .problem
                .as_deref()
                .unwrap()
                .contains("does not resolve")
        );
        assert_eq!(
            names(&router.candidates("default", &[])),
            ["p2", "p3", "fixed"]
        );
        drop(on_p1);
    }
}

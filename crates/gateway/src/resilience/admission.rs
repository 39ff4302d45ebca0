//! Admission control: how many sessions the gateway, and each route, takes at once, and
//! whether a route whose back end has fallen behind takes new ones at all.
//!
//! The global limit is checked before the WebSocket upgrade (refused with HTTP 503 and
//! `Retry-After`); the route is only known from the `start` message, so a route's limits
//! are checked then (refused with the recoverable `RATE_LIMIT_EXCEEDED`: the session stays
//! open and may `start` again). A route refuses new sessions when it is at its session
//! limit, or while at least `shed_lagging_percent` % of its live sessions are lagging
//! (their results trail the audio by more than `session.lag_warning`): a back end that
//! cannot keep up with the sessions it has would only fall further behind with more, and
//! every session on it would suffer. A [`Ticket`] holds the places (and the lagging mark)
//! and gives them back on drop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Limits; 0 means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionSettings {
    pub max_sessions: usize,
    /// Route name → the most sessions it takes at once.
    pub route_max_sessions: HashMap<String, usize>,
    /// Every configured route (load is tracked for each, limited or not).
    pub route_names: Vec<String>,
    /// A route refuses new sessions while at least this share (%) of its live sessions
    /// are lagging; 0 = never.
    pub shed_lagging_percent: u32,
    /// The gateway refuses new sessions while its tasks run later than this on average
    /// ([`crate::resilience::overload`]); `None` = never.
    pub max_delay: Option<Duration>,
    /// What `Retry-After` tells a refused client.
    pub retry_after: Duration,
}

/// One route's live and lagging sessions.
#[derive(Default)]
struct RouteLoad {
    live: AtomicUsize,
    lagging: AtomicUsize,
    /// The most sessions it takes at once (0 = no limit).
    limit: usize,
}

pub struct Admission {
    settings: AdmissionSettings,
    active: AtomicUsize,
    routes: HashMap<String, RouteLoad>,
}

/// Why a session was refused (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    GlobalLimit,
    RouteLimit,
    /// Too many of the route's sessions are lagging (`shed_lagging_percent`).
    RouteLagging,
    /// The gateway's own tasks run late (`admission.max_delay`).
    Overloaded,
    Draining,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::GlobalLimit => "global_limit",
            Refusal::RouteLimit => "route_limit",
            Refusal::RouteLagging => "route_lagging",
            Refusal::Overloaded => "overloaded",
            Refusal::Draining => "draining",
        }
    }
}

/// Takes `counter` up by one unless it is at `limit` (0 = no limit).
fn take(counter: &AtomicUsize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (limit == 0 || n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// A route's sessions right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RouteCount {
    pub live: usize,
    pub lagging: usize,
    /// New sessions are refused because enough of these lag.
    pub shedding: bool,
}

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Self {
        let routes = settings
            .route_names
            .iter()
            .chain(settings.route_max_sessions.keys())
            .map(|name| {
                let load = RouteLoad {
                    limit: settings.route_max_sessions.get(name).copied().unwrap_or(0),
                    ..RouteLoad::default()
                };
                (name.clone(), load)
            })
            .collect();
        Admission {
            settings,
            active: AtomicUsize::new(0),
            routes,
        }
    }

    pub fn settings(&self) -> &AdmissionSettings {
        &self.settings
    }

    /// Sessions admitted and not yet ended.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// A route's live and lagging sessions (`None` for a route not configured).
    pub fn route_count(&self, route: &str) -> Option<RouteCount> {
        self.routes.get(route).map(|r| self.count(r))
    }

    /// Every configured route's sessions, by name.
    pub fn route_counts(&self) -> std::collections::BTreeMap<&str, RouteCount> {
        self.routes
            .iter()
            .map(|(name, r)| (name.as_str(), self.count(r)))
            .collect()
    }

    fn count(&self, r: &RouteLoad) -> RouteCount {
        RouteCount {
            live: r.live.load(Ordering::Acquire),
            lagging: r.lagging.load(Ordering::Acquire),
            shedding: self.shedding(r),
        }
    }

    /// A place under the global limit, or `None` when the gateway is full.
    pub fn admit(self: &Arc<Self>) -> Option<Ticket> {
        take(&self.active, self.settings.max_sessions).then(|| Ticket {
            admission: self.clone(),
            route: None,
            lagging: false,
        })
    }

    /// Whether `load` is shedding: some sessions lag, and at least the configured share.
    fn shedding(&self, load: &RouteLoad) -> bool {
        let percent = self.settings.shed_lagging_percent as usize;
        let lagging = load.lagging.load(Ordering::Acquire);
        percent > 0 && lagging > 0 && lagging * 100 >= percent * load.live.load(Ordering::Acquire)
    }
}

/// One admitted session's places; dropping it frees them.
pub struct Ticket {
    admission: Arc<Admission>,
    route: Option<String>,
    lagging: bool,
}

impl Ticket {
    /// Takes a place on `route`, or says why the route refuses one. A route not in the
    /// configuration (none reach here: the router refuses unknown routes first) is not
    /// tracked and always has a place.
    pub fn enter_route(&mut self, route: &str) -> Result<(), Refusal> {
        if self.route.is_some() {
            return Ok(());
        }
        let Some(load) = self.admission.routes.get(route) else {
            return Ok(());
        };
        if self.admission.shedding(load) {
            return Err(Refusal::RouteLagging);
        }
        if !take(&load.live, load.limit) {
            return Err(Refusal::RouteLimit);
        }
        self.route = Some(route.to_string());
        Ok(())
    }

    /// The load of the route this session entered, if any.
    fn route_load(&self) -> Option<&RouteLoad> {
        self.admission.routes.get(self.route.as_deref()?)
    }

    /// Marks this session as lagging or not; its route counts it (the mark goes with
    /// the ticket). Before the session has entered a route there is nothing to mark.
    pub fn set_lagging(&mut self, lagging: bool) {
        if lagging == self.lagging {
            return;
        }
        // Only a session on a tracked route is counted, so only one can be marked.
        let Some(load) = self.route_load() else {
            return;
        };
        if lagging {
            load.lagging.fetch_add(1, Ordering::AcqRel);
        } else {
            load.lagging.fetch_sub(1, Ordering::AcqRel);
        }
        self.lagging = lagging;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.set_lagging(false);
        self.admission.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(load) = self.route_load() {
            load.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_route_limits_hold_and_free_on_drop() {
        let a = Arc::new(Admission::new(AdmissionSettings {
            max_sessions: 2,
            route_max_sessions: [("offline".to_string(), 1)].into(),
            route_names: vec!["default".into(), "offline".into()],
            shed_lagging_percent: 0,
            max_delay: None,
            retry_after: Duration::from_secs(5),
        }));
        let mut t1 = a.admit().expect("first");
        let mut t2 = a.admit().expect("second");
        assert!(a.admit().is_none(), "global limit");
        assert_eq!(t1.enter_route("offline"), Ok(()));
        assert_eq!(
            t2.enter_route("offline"),
            Err(Refusal::RouteLimit),
            "route limit"
        );
        assert_eq!(t2.enter_route("default"), Ok(()), "unlimited route");
        drop(t1);
        let mut t4 = a.admit().expect("a place was freed");
        assert_eq!(
            t4.enter_route("offline"),
            Ok(()),
            "the route place was freed"
        );
        drop(t4);
        let t3 = a.admit().expect("a place was freed");
        assert_eq!(a.active(), 2);
        drop((t2, t3));
        assert_eq!(a.active(), 0);
        assert_eq!(a.route_count("offline"), counted(0, 0, false));
        assert_eq!(a.route_count("default"), counted(0, 0, false));
    }

    fn counted(live: usize, lagging: usize, shedding: bool) -> Option<RouteCount> {
        Some(RouteCount {
            live,
            lagging,
            shedding,
        })
    }

    fn shedding_at(percent: u32) -> Arc<Admission> {
        Arc::new(Admission::new(AdmissionSettings {
            route_names: vec!["default".into(), "other".into()],
            shed_lagging_percent: percent,
            ..AdmissionSettings::default()
        }))
    }

    fn enter(a: &Arc<Admission>, route: &str) -> Result<Ticket, Refusal> {
        let mut t = a.admit().expect("no global limit");
        t.enter_route(route).map(|()| t)
    }

    #[test]
    fn a_route_with_enough_lagging_sessions_refuses_new_ones_until_they_catch_up() {
        let a = shedding_at(25);
        let mut live: Vec<Ticket> = (0..8).map(|_| enter(&a, "default").unwrap()).collect();
        live[0].set_lagging(true);
        // 1 of 8 lagging (12.5 %) is under 25 %: still admitting.
        live.push(enter(&a, "default").expect("under the share"));
        live[1].set_lagging(true);
        live[1].set_lagging(true); // marking twice counts once
        live[2].set_lagging(true);
        // 3 of 9 lagging (33 %): refused, on this route only.
        assert_eq!(a.route_count("default"), counted(9, 3, true));
        assert_eq!(enter(&a, "default").err(), Some(Refusal::RouteLagging));
        assert!(enter(&a, "other").is_ok(), "another route is not affected");
        // One catches up, one lagging session ends: 1 of 8 lagging, admitting again.
        live[1].set_lagging(false);
        drop(live.remove(2));
        assert_eq!(a.route_count("default"), counted(8, 1, false));
        assert!(enter(&a, "default").is_ok());
        drop(live);
        assert_eq!(a.route_count("default"), counted(0, 0, false));
        assert_eq!(a.active(), 0);
    }

    #[test]
    fn shedding_off_or_nobody_lagging_admits() {
        let off = shedding_at(0);
        let mut t = enter(&off, "default").unwrap();
        t.set_lagging(true);
        assert!(enter(&off, "default").is_ok(), "0 % = never shed");
        let on = shedding_at(1);
        let _quiet: Vec<Ticket> = (0..3).map(|_| enter(&on, "default").unwrap()).collect();
        assert!(enter(&on, "default").is_ok(), "no session lagging");
        // A session marked lagging before it entered a route is not counted anywhere.
        let mut early = on.admit().unwrap();
        early.set_lagging(true);
        assert_eq!(on.route_count("default"), counted(3, 0, false));
    }

    #[test]
    fn zero_means_unlimited() {
        let a = Arc::new(Admission::new(AdmissionSettings::default()));
        let tickets: Vec<_> = (0..1000).map(|_| a.admit().expect("no limit")).collect();
        assert_eq!(a.active(), 1000);
        drop(tickets);
        assert_eq!(a.active(), 0);
    }
}

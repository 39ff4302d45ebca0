//! Admission control: how many sessions the gateway, and each route, takes at once.
//!
//! The global limit is checked before the WebSocket upgrade (refused with HTTP 503 and
//! `Retry-After`); the route is only known from the `start` message, so a route's limit
//! is checked then (refused with the recoverable `RATE_LIMIT_EXCEEDED`: the session stays
//! open and may `start` again). A [`Ticket`] holds the places and gives them back on drop.

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
    /// What `Retry-After` tells a refused client.
    pub retry_after: Duration,
}

pub struct Admission {
    settings: AdmissionSettings,
    active: AtomicUsize,
    routes: HashMap<String, AtomicUsize>,
}

/// Why a session was refused (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    GlobalLimit,
    RouteLimit,
    Draining,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::GlobalLimit => "global_limit",
            Refusal::RouteLimit => "route_limit",
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

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Self {
        let routes = settings
            .route_max_sessions
            .keys()
            .map(|k| (k.clone(), AtomicUsize::new(0)))
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

    /// A place under the global limit, or `None` when the gateway is full.
    pub fn admit(self: &Arc<Self>) -> Option<Ticket> {
        take(&self.active, self.settings.max_sessions).then(|| Ticket {
            admission: self.clone(),
            route: None,
        })
    }
}

/// One admitted session's places; dropping it frees them.
pub struct Ticket {
    admission: Arc<Admission>,
    route: Option<String>,
}

impl Ticket {
    /// Takes a place on `route` (routes without a limit always have one).
    pub fn enter_route(&mut self, route: &str) -> bool {
        if self.route.is_some() {
            return true;
        }
        let Some(counter) = self.admission.routes.get(route) else {
            return true;
        };
        let limit = self.admission.settings.route_max_sessions[route];
        if take(counter, limit) {
            self.route = Some(route.to_string());
            true
        } else {
            false
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(r) = &self.route {
            self.admission.routes[r].fetch_sub(1, Ordering::AcqRel);
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
            retry_after: Duration::from_secs(5),
        }));
        let mut t1 = a.admit().expect("first");
        let mut t2 = a.admit().expect("second");
        assert!(a.admit().is_none(), "global limit");
        assert!(t1.enter_route("offline"));
        assert!(!t2.enter_route("offline"), "route limit");
        assert!(t2.enter_route("default"), "unlimited route");
        drop(t1);
        assert!(t2.enter_route("offline"), "the route place was freed");
        let t3 = a.admit().expect("a place was freed");
        assert_eq!(a.active(), 2);
        drop((t2, t3));
        assert_eq!(a.active(), 0);
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

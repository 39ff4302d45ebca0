//! The gateway's word to its live sessions that the drain is over and they must finish
//! (flush their pending finals and close with "going away").
//!
//! Every session waits for it in its loop, which polls the wait at every wake-up: tens
//! of thousands of polls a second at a thousand sessions. So a poll is one atomic load
//! and a waker check (no lock; a `CancellationToken` takes two mutexes per poll). The
//! flag is written once, so the cache line that holds it stays shared between the cores.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// Cloned into every session; [`Shutdown::cancel`] wakes them all.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    next_id: AtomicU64,
    /// The wakers of the waits alive now (a wait removes its own when dropped).
    waiters: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Tells every session, now and later, to finish.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
        let waiters = self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for waker in waiters.values() {
            waker.wake();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// A future that completes once [`Shutdown::cancel`] was called (at once if it
    /// already was), as often as it is polled after that.
    pub fn wait(&self) -> Wait {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(AtomicWaker::new());
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, waker.clone());
        Wait {
            shutdown: self.clone(),
            id,
            waker,
        }
    }
}

/// See [`Shutdown::wait`].
pub struct Wait {
    shutdown: Shutdown,
    id: u64,
    waker: Arc<AtomicWaker>,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.is_cancelled() {
            return Poll::Ready(());
        }
        // Registered before the second look: a cancel in between wakes this waker.
        self.waker.register(cx.waker());
        if self.shutdown.is_cancelled() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.shutdown
            .inner
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_cancelled_and_not_before() {
        let shutdown = Shutdown::new();
        let mut wait = Box::pin(shutdown.wait());
        assert!(futures::poll!(&mut wait).is_pending());
        let waiter = tokio::spawn(wait);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the cancel woke the waiting task")
            .expect("no panic");
        // A wait made after the cancel is ready at once.
        assert!(futures::poll!(Box::pin(shutdown.wait())).is_ready());
    }

    #[test]
    fn a_dropped_wait_leaves_no_waker_behind() {
        let shutdown = Shutdown::new();
        let waits: Vec<_> = (0..3).map(|_| shutdown.wait()).collect();
        assert_eq!(shutdown.inner.waiters.lock().unwrap().len(), 3);
        drop(waits);
        assert!(shutdown.inner.waiters.lock().unwrap().is_empty());
    }
}

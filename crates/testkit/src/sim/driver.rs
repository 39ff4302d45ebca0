//! One response stream per call, pulled by tonic's connection task: each poll reads the
//! next request, lets the protocol [`Responder`] answer it, and hands the answers out, with
//! the process's [`Behaviour`] applied on the way. Nothing is spawned per stream, and in
//! normal mode nothing waits on a timer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::{Instant, sleep_until};
use tonic::Status;

use super::Behaviour;

/// What a protocol adds to the driver: how to answer a request and the end of requests.
pub trait Responder: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// Answers one request, pushing zero or more responses. An error fails the stream.
    fn request(&mut self, req: Self::Request, out: &mut Vec<Self::Response>) -> Result<(), Status>;
    /// The client half-closed: the last responses before the stream ends.
    fn half_close(&mut self, out: &mut Vec<Self::Response>);
    /// Stream audio consumed so far (what `fail-after` counts).
    fn audio_ms(&self) -> u64;
}

pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The response stream of one call.
pub fn respond<S, D>(inbound: S, dialect: D, behaviour: Behaviour) -> ResponseStream<D::Response>
where
    S: Stream<Item = Result<D::Request, Status>> + Send + Unpin + 'static,
    D: Responder,
{
    let mut driver = Driver {
        inbound: Some(inbound),
        dialect,
        queue: VecDeque::new(),
        scratch: Vec::new(),
        epoch: Instant::now(),
        delay: Duration::ZERO,
        fail_after_ms: None,
        hang: false,
        failure: None,
        finished: false,
    };
    match behaviour {
        Behaviour::Normal => {}
        Behaviour::Unavailable => driver.fail(unavailable()),
        Behaviour::Hang => driver.hang = true,
        Behaviour::Slow(delay) => driver.delay = delay,
        Behaviour::FailAfter(audio) => driver.fail_after_ms = Some(audio.as_millis() as u64),
    }
    Box::pin(futures::stream::unfold(driver, |mut d| async move {
        let item = d.next().await?;
        Some((item, d))
    }))
}

/// The status of every call under [`Behaviour::Unavailable`].
pub fn unavailable() -> Status {
    Status::unavailable("sim-backend: behaviour `unavailable`")
}

struct Driver<S, D: Responder> {
    /// `None` once the requests ended or are no longer read.
    inbound: Option<S>,
    dialect: D,
    /// Answers and when they are due (all due at once unless `delay` is set).
    queue: VecDeque<(Instant, D::Response)>,
    /// Reused for each request's answers.
    scratch: Vec<D::Response>,
    epoch: Instant,
    delay: Duration,
    fail_after_ms: Option<u64>,
    hang: bool,
    /// Sent once the queue is empty, then the stream ends.
    failure: Option<Status>,
    /// No more answers will be queued: the stream ends once the queue is empty.
    finished: bool,
}

impl<S, D> Driver<S, D>
where
    S: Stream<Item = Result<D::Request, Status>> + Send + Unpin + 'static,
    D: Responder,
{
    async fn next(&mut self) -> Option<Result<D::Response, Status>> {
        loop {
            match self.queue.front() {
                Some((due, _)) if self.delay.is_zero() || *due <= Instant::now() => {
                    return self.queue.pop_front().map(|(_, r)| Ok(r));
                }
                Some(_) => {}
                None => {
                    if let Some(status) = self.failure.take() {
                        self.finished = true;
                        return Some(Err(status));
                    }
                    if self.finished {
                        return None;
                    }
                }
            }
            let due = self.queue.front().map(|(due, _)| *due);
            let event = match (self.inbound.as_mut(), due) {
                (Some(inbound), None) => Some(inbound.next().await),
                (Some(inbound), Some(due)) => tokio::select! {
                    biased;
                    () = sleep_until(due) => None,
                    event = inbound.next() => Some(event),
                },
                (None, Some(due)) => {
                    sleep_until(due).await;
                    None
                }
                // Hanging after the half-close: stay open until the client gives up.
                (None, None) => return std::future::pending().await,
            };
            if let Some(event) = event {
                self.on_inbound(event);
            }
        }
    }

    fn on_inbound(&mut self, event: Option<Result<D::Request, Status>>) {
        match event {
            Some(Ok(_)) if self.hang => {}
            Some(Ok(req)) => {
                if let Err(status) = self.dialect.request(req, &mut self.scratch) {
                    return self.fail(status);
                }
                if let Some(limit) = self.fail_after_ms
                    && self.dialect.audio_ms() >= limit
                {
                    return self.fail(Status::unavailable(format!(
                        "sim-backend: behaviour `fail-after`, {limit} ms of stream audio"
                    )));
                }
                self.enqueue();
            }
            // The request side broke: the client is gone, nobody reads the answers.
            Some(Err(_)) => {
                self.inbound = None;
                self.queue.clear();
                self.finished = true;
            }
            None if self.hang => self.inbound = None,
            None => {
                self.dialect.half_close(&mut self.scratch);
                self.enqueue();
                self.inbound = None;
                self.finished = true;
            }
        }
    }

    fn enqueue(&mut self) {
        let due = if self.delay.is_zero() {
            self.epoch
        } else {
            Instant::now() + self.delay
        };
        self.queue.extend(self.scratch.drain(..).map(|r| (due, r)));
    }

    /// Stops reading; answers already queued go first, then `status`.
    fn fail(&mut self, status: Status) {
        self.scratch.clear();
        self.inbound = None;
        self.failure = Some(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::UnboundedReceiverStream;
    use tonic::Code;

    /// Answers request `n` with `n` and `n + 100`; at the half-close says 999. Each request
    /// is 100 ms of audio.
    struct Echo {
        requests: u64,
    }

    impl Responder for Echo {
        type Request = u64;
        type Response = u64;
        fn request(&mut self, req: u64, out: &mut Vec<u64>) -> Result<(), Status> {
            if req == 0 {
                return Err(Status::invalid_argument("zero"));
            }
            self.requests += 1;
            out.extend([req, req + 100]);
            Ok(())
        }
        fn half_close(&mut self, out: &mut Vec<u64>) {
            out.push(999);
        }
        fn audio_ms(&self) -> u64 {
            self.requests * 100
        }
    }

    type Tx = mpsc::UnboundedSender<Result<u64, Status>>;

    fn start(behaviour: Behaviour) -> (Tx, ResponseStream<u64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let out = respond(
            UnboundedReceiverStream::new(rx),
            Echo { requests: 0 },
            behaviour,
        );
        (tx, out)
    }

    async fn collect(mut out: ResponseStream<u64>) -> (Vec<u64>, Option<Code>) {
        let mut got = Vec::new();
        while let Some(item) = out.next().await {
            match item {
                Ok(v) => got.push(v),
                Err(s) => return (got, Some(s.code())),
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn answers_in_order_and_ends_after_the_half_close() {
        let (tx, out) = start(Behaviour::Normal);
        tx.send(Ok(1)).unwrap();
        tx.send(Ok(2)).unwrap();
        drop(tx);
        assert_eq!(collect(out).await, (vec![1, 101, 2, 102, 999], None));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_delays_every_answer_and_keeps_the_order() {
        let (tx, mut out) = start(Behaviour::Slow(Duration::from_millis(300)));
        let t0 = Instant::now();
        tx.send(Ok(1)).unwrap();
        assert_eq!(out.next().await.unwrap().unwrap(), 1);
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
        tx.send(Ok(2)).unwrap();
        drop(tx);
        assert_eq!(collect(out).await, (vec![101, 2, 102, 999], None));
        assert_eq!(t0.elapsed(), Duration::from_millis(600));
    }

    #[tokio::test]
    async fn fail_after_answers_until_the_limit_then_fails() {
        let (tx, out) = start(Behaviour::FailAfter(Duration::from_millis(250)));
        for n in 1..=5 {
            tx.send(Ok(n)).unwrap();
        }
        let (got, code) = collect(out).await;
        assert_eq!(got, vec![1, 101, 2, 102]);
        assert_eq!(code, Some(Code::Unavailable));
    }

    #[tokio::test]
    async fn unavailable_and_bad_requests_fail_the_stream() {
        let (_tx, out) = start(Behaviour::Unavailable);
        assert_eq!(collect(out).await, (vec![], Some(Code::Unavailable)));
        let (tx, out) = start(Behaviour::Normal);
        tx.send(Ok(3)).unwrap();
        tx.send(Ok(0)).unwrap();
        assert_eq!(
            collect(out).await,
            (vec![3, 103], Some(Code::InvalidArgument))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hang_reads_everything_and_never_answers() {
        let (tx, mut out) = start(Behaviour::Hang);
        tx.send(Ok(1)).unwrap();
        drop(tx);
        let waited = tokio::time::timeout(Duration::from_secs(3600), out.next()).await;
        assert!(waited.is_err(), "no answer, not even the end of the stream");
    }
}

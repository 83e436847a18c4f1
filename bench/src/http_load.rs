//! A small HTTP/1.1 load generator on hyper: keep-alive connections, an open-loop schedule
//! (request `i` is due at `start + i / rate`, whether or not earlier answers have come back) and a
//! closed loop (each connection sends its next request when the previous answer arrived).
//!
//! Latency in the open loop is counted from a request's *scheduled* time, not from when a
//! connection got round to sending it, so a stalled server shows up in the figures instead of
//! silently lowering the request rate (no coordinated omission). Every connection takes the next
//! unclaimed slot of the shared schedule, so one slow answer delays only the requests that had to
//! wait for a free connection. Timers have millisecond granularity: a request leaves up to 1 ms
//! after its scheduled time, and that wait counts in its latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A request that takes longer than this is abandoned and counted as a transport error (the
/// server's own request timeout, 10 s by default, answers first).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one number from a 2xx answer's body (kept in [`Sample::value`]).
pub type Inspect = fn(&[u8]) -> Option<i64>;

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: &'static str,
    /// JSON body (`None`: no body).
    pub body: Option<Bytes>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Applied to the body of a 2xx answer.
    pub inspect: Option<Inspect>,
}

impl Call {
    pub fn get(path: &'static str) -> Self {
        Self {
            method: Method::GET,
            path,
            body: None,
            headers: Vec::new(),
            inspect: None,
        }
    }

    pub fn post_json(path: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            method: Method::POST,
            path,
            body: Some(body.into()),
            headers: Vec::new(),
            inspect: None,
        }
    }
}

/// A complete answer: status and the whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection; reopened on the next request after a failure.
pub struct Connection {
    addr: SocketAddr,
    open: Option<(SendRequest<Full<Bytes>>, JoinHandle<()>)>,
}

impl Connection {
    /// A connection to `addr`, connected at the first request.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, open: None }
    }

    async fn connect(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.open.as_ref().is_some_and(|(s, _)| s.is_closed()) {
            self.close();
        }
        if self.open.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connect to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP/1.1 handshake")?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            self.open = Some((sender, driver));
        }
        let (sender, _) = self.open.as_mut().context("no connection")?;
        Ok(sender)
    }

    fn close(&mut self) {
        if let Some((_, driver)) = self.open.take() {
            driver.abort();
        }
    }

    /// Sends `call` and reads the whole answer; on any failure the connection is closed (the next
    /// call reconnects).
    pub async fn send(&mut self, call: &Call) -> anyhow::Result<Answer> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(call)).await;
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.close();
                Err(e)
            }
            Err(_) => {
                self.close();
                anyhow::bail!("no answer within {REQUEST_TIMEOUT:?}")
            }
        }
    }

    async fn exchange(&mut self, call: &Call) -> anyhow::Result<Answer> {
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(call.path)
            .header(HOST, "edge-mes-bench");
        if call.body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in &call.headers {
            builder = builder.header(name, value);
        }
        let request = builder.body(Full::new(call.body.clone().unwrap_or_default()))?;
        let sender = self.connect().await?;
        sender.ready().await.context("connection not ready")?;
        let response = sender
            .send_request(request)
            .await
            .context("send the request")?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .context("read the answer")?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// The open-loop schedule: slot `i` is due at `start + i / rate`; slots due at or after `end` are
/// not sent. Connections claim slots in order.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    end: Instant,
    interval: Duration,
    /// Added to the slot index to number the requests (distinct numbers across phases).
    first_number: u64,
    next: AtomicU64,
}

/// A claimed slot: the request's number and when it is due.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub number: u64,
    pub due: Instant,
}

impl Schedule {
    pub fn new(start: Instant, end: Instant, rate: f64, first_number: u64) -> Self {
        Self {
            start,
            end,
            interval: Duration::from_secs_f64(1.0 / rate.max(1e-9)),
            first_number,
            next: AtomicU64::new(0),
        }
    }

    /// The next unclaimed slot, or `None` once the schedule has ended.
    pub fn claim(&self) -> Option<Slot> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let offset = self.interval.checked_mul(u32::try_from(i).ok()?)?;
        let due = self.start + offset;
        (due < self.end).then_some(Slot {
            number: self.first_number + i,
            due,
        })
    }

    /// Slots handed out (claimed and within the schedule) so far.
    pub fn claimed(&self) -> u64 {
        let n = self.next.load(Ordering::Relaxed);
        let total = (self.end.saturating_duration_since(self.start)).as_secs_f64()
            / self.interval.as_secs_f64();
        n.min(total.ceil() as u64)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer with this status arrived (the whole body was read).
    Status(u16),
    /// No answer: connect, send or read failed, or it timed out; whether the server acted on it
    /// is unknown.
    Transport,
}

impl Outcome {
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(&s))
    }
}

/// One request: its number, when it was due (open loop) or sent (closed loop), when its answer
/// was complete.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub number: u64,
    pub due: Instant,
    pub done: Instant,
    pub outcome: Outcome,
    /// What [`Call::inspect`] read from a 2xx answer.
    pub value: Option<i64>,
}

impl Sample {
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.due)
    }
}

/// Builds request number `n`.
pub type MakeCall = Arc<dyn Fn(u64) -> Call + Send + Sync>;

async fn timed(conn: &mut Connection, call: &Call, number: u64, due: Instant) -> Sample {
    let (outcome, value) = match conn.send(call).await {
        Ok(answer) => {
            let done = Instant::now();
            let outcome = Outcome::Status(answer.status);
            let value = call
                .inspect
                .filter(|_| outcome.is_success())
                .and_then(|inspect| inspect(&answer.body));
            return Sample {
                number,
                due,
                done,
                outcome,
                value,
            };
        }
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), number, "request failed");
            (Outcome::Transport, None)
        }
    };
    Sample {
        number,
        due,
        done: Instant::now(),
        outcome,
        value,
    }
}

/// Sends the requests of `schedule` over `connections` keep-alive connections, each taking the
/// next slot when it is free; returns every request's sample once the schedule has ended and the
/// last answers are in.
pub async fn open_loop(
    addr: SocketAddr,
    connections: usize,
    schedule: Arc<Schedule>,
    make: MakeCall,
) -> anyhow::Result<Vec<Sample>> {
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (schedule, make) = (schedule.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::new(addr);
            let mut samples = Vec::new();
            while let Some(slot) = schedule.claim() {
                tokio::time::sleep_until(slot.due.into()).await;
                let call = make(slot.number);
                samples.push(timed(&mut conn, &call, slot.number, slot.due).await);
            }
            samples
        }));
    }
    collect(tasks).await
}

/// Every connection sends request after request until `until`; a sample's `due` is its send time.
/// Request numbers start at `first_number`.
pub async fn closed_loop(
    addr: SocketAddr,
    connections: usize,
    until: Instant,
    first_number: u64,
    make: MakeCall,
) -> anyhow::Result<Vec<Sample>> {
    let next = Arc::new(AtomicU64::new(first_number));
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (next, make) = (next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::new(addr);
            let mut samples = Vec::new();
            while Instant::now() < until {
                let number = next.fetch_add(1, Ordering::Relaxed);
                let call = make(number);
                samples.push(timed(&mut conn, &call, number, Instant::now()).await);
            }
            samples
        }));
    }
    collect(tasks).await
}

async fn collect(tasks: Vec<JoinHandle<Vec<Sample>>>) -> anyhow::Result<Vec<Sample>> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("a load connection task failed")?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_hands_out_evenly_spaced_slots_until_its_end() {
        let start = Instant::now();
        let s = Schedule::new(start, start + Duration::from_millis(10), 1000.0, 500);
        let slots: Vec<Slot> = std::iter::from_fn(|| s.claim()).collect();
        assert_eq!(slots.len(), 10);
        assert_eq!(slots[0].number, 500);
        assert_eq!(slots[0].due, start);
        assert_eq!(slots[9].due - start, Duration::from_millis(9));
        assert!(s.claim().is_none());
        assert_eq!(s.claimed(), 10);
    }

    #[test]
    fn only_2xx_answers_count_as_success() {
        assert!(Outcome::Status(200).is_success());
        assert!(Outcome::Status(201).is_success());
        assert!(!Outcome::Status(409).is_success());
        assert!(!Outcome::Status(503).is_success());
        assert!(!Outcome::Transport.is_success());
    }

    #[tokio::test]
    async fn a_keep_alive_connection_reads_whole_answers_and_reconnects_after_a_failure() {
        // A minimal HTTP/1.1 server: answers every request on a connection with a fixed body,
        // and closes the first connection after one answer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for conn_no in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    let answer = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok";
                    s.write_all(answer).await.unwrap();
                    if conn_no == 0 {
                        break;
                    }
                }
            }
        });
        let mut conn = Connection::new(addr);
        let call = Call::post_json("/x", r#"{"a":1}"#);
        let a = conn.send(&call).await.unwrap();
        assert_eq!((a.status, a.body.as_ref()), (201, b"ok".as_ref()));
        // The server closed the first connection: this one fails or reconnects; either way the
        // next one is answered on a new connection.
        let _ = conn.send(&call).await;
        let b = conn.send(&call).await.unwrap();
        assert_eq!(b.status, 201);
        drop(conn);
        server.abort();
    }
}

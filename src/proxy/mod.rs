//! The gateway's HTTP/1 proxy: a Pingora [`ServerApp`], so Pingora runs the listeners,
//! the worker runtimes, graceful shutdown and upgrades, while the request path is the
//! gateway's own.
//!
//! Why not Pingora's `ProxyHttp`: on a 2-core machine a bare Pingora proxy forwarded at
//! ~0.6x nginx's rate (one worker each), and ~24 KiB per idle keep-alive connection. This
//! path parses heads with `httparse` into one buffer, writes the upstream's head in a
//! single pass (no header maps), coalesces head and body into one write, keeps nothing per
//! idle connection but the socket and a small task, and reuses upstream connections from a
//! plain most-recent-first pool. `bench/README.md` has the figures.
//!
//! A request goes through, in order ([`Gateway::exchange`]):
//! 1. its head is read (within [`ClientTimeouts::head`]) and checked, routed and rewritten
//!    ([`request`]); anything refused gets a JSON error ([`respond`]);
//! 2. an upstream connection is taken from the pool or opened ([`crate::upstream`]);
//! 3. the head and body go upstream ([`body`]), after `100 Continue` if the client asked;
//! 4. the response head is read and rewritten ([`response`]), and its body streamed back;
//!    a `101` turns both connections into a tunnel;
//! 5. the access line is written ([`access_log`]) and both connections are kept or closed.

mod access_log;
mod body;
mod chunked;
mod headers;
mod request;
mod request_id;
mod respond;
mod response;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use body::{BodyError, Side, Timeouts};
use headers::ClientIp;
use request::{Framing, Incomplete, Refusal, Request};
use response::{Parsed, Response};

use crate::router::RouteTable;
use crate::upstream::{ConnectError, Connection, Upstream};

/// Largest request head (request line and headers) accepted: 431 beyond.
const MAX_HEAD: usize = 32 * 1024;
/// Largest response head accepted from a service: 502 beyond.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Each read of a request body and each write to the client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Buffer for a request head when a connection wakes up; it grows when a head is larger.
const FIRST_READ: usize = 1024;
/// When the gateway ends a connection, how long and how much of what the client still
/// sends is read and dropped before the socket is closed (see `Client::linger`).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// The gateway: the route table and, index for index, each route's upstream.
pub struct Gateway {
    routes: RouteTable,
    upstreams: Vec<Upstream>,
    timeouts: ClientTimeouts,
}

/// How long the gateway waits on a client between and within request heads.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// A keep-alive connection with no request for this long is closed.
    pub keepalive: Duration,
    /// From the first byte of a request to the end of its head: slow-header clients
    /// (slowloris) get 408.
    pub head: Duration,
}

#[async_trait]
impl ServerApp for Gateway {
    /// Pingora's accept task for a connection is sized for its TLS handshake (~2 KiB);
    /// the connection is served from a task of its own, a third of that, and Pingora's is
    /// freed at once. What an idle keep-alive connection costs is then this task and the
    /// socket's registration.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = match take_socket(stream) {
            Ok(stream) => stream,
            Err(e) => {
                log::error!("cannot take over an accepted connection: {e}");
                return None;
            }
        };
        tokio::spawn(Arc::clone(self).serve(stream, shutdown.clone()));
        None
    }
}

impl Gateway {
    /// Serve a client connection until it closes, idles out, or the gateway shuts down.
    async fn serve(self: Arc<Self>, stream: tokio::net::TcpStream, mut shutdown: ShutdownWatch) {
        let ip = stream.peer_addr().ok().map(|a| ClientIp::new(a.ip()));
        let mut client = Client {
            stream,
            ip,
            buf: Vec::new(),
        };
        // One keep-alive timer for the connection's life, not one per request (see
        // `Client::wait_for_request`); unarmed until the connection first waits.
        let keepalive = self.timeouts.keepalive;
        let mut idle = std::pin::pin!(tokio::time::sleep(keepalive));
        while client
            .wait_for_request(&mut shutdown, keepalive, idle.as_mut())
            .await
        {
            // Boxed, so that an idle connection's task holds only the small waiting state,
            // not the larger state of a request in flight.
            if !Box::pin(self.exchange(&mut client, &shutdown)).await {
                Box::pin(client.linger()).await;
                break;
            }
        }
    }
}

/// The accepted socket itself, out of Pingora's stream wrapper.
///
/// Pingora's wrapper keeps timing digests (two clock reads per pending read or write) and
/// only offers reads into a caller's buffer. Owning the socket lets an idle keep-alive
/// connection wait for readiness with no buffer at all, and a busy one read and write with
/// no layer in between. The listener is plain TCP (see `server.rs`); the socket is
/// duplicated, then Pingora's wrapper and its descriptor are dropped.
fn take_socket(stream: Stream) -> std::io::Result<tokio::net::TcpStream> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let l4 = stream
        .as_any()
        .downcast_ref::<pingora_core::protocols::l4::stream::Stream>()
        .ok_or_else(|| std::io::Error::other("not a plain TCP connection"))?;
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow; it is only
    // borrowed to be duplicated.
    let fd = unsafe { BorrowedFd::borrow_raw(l4.as_raw_fd()) }.try_clone_to_owned()?;
    drop(stream);
    let socket = std::net::TcpStream::from(fd);
    socket.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(socket)
}

/// A client connection and the bytes read from it that are not handled yet.
struct Client {
    stream: tokio::net::TcpStream,
    /// For `X-Forwarded-For`.
    ip: Option<ClientIp>,
    /// The current request's head (and whatever followed it). Empty between requests, so
    /// an idle connection holds no buffer.
    buf: Vec<u8>,
}

impl Client {
    /// Wait for the next request's first bytes. False: the client left, stayed idle for
    /// `keepalive`, or the gateway is shutting down.
    ///
    /// `idle` is the connection's one timer. It is not moved on every request (a timer
    /// wheel insertion and removal each time): when it fires, the wait it was armed for
    /// may be long over, so it is checked against this wait's own deadline and re-armed
    /// for it. It fires no later than that deadline, as every earlier wait began earlier.
    async fn wait_for_request(
        &mut self,
        shutdown: &mut ShutdownWatch,
        keepalive: Duration,
        mut idle: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> bool {
        if !self.buf.is_empty() {
            return !*shutdown.borrow();
        }
        let mut deadline = None;
        loop {
            if *shutdown.borrow() {
                return false;
            }
            // Under load the next request is often here already: no timer, no wait. A
            // poll rather than `try_read`: a poll that reads less than it asked for marks
            // the socket not ready, so the next look costs no `recv` that would find
            // nothing (a `try_read` leaves it marked ready: one wasted syscall per request).
            self.buf.reserve(FIRST_READ);
            let read = std::pin::pin!(self.stream.read_buf(&mut self.buf));
            match body::poll_once(read).await {
                std::task::Poll::Ready(Ok(n)) => return n > 0,
                std::task::Poll::Ready(Err(_)) => return false,
                std::task::Poll::Pending => {}
            }
            // Idle: hold no buffer while waiting.
            self.buf = Vec::new();
            let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + keepalive);
            tokio::select! {
                ready = self.stream.readable() => if ready.is_err() { return false },
                _ = shutdown.changed() => return false,
                _ = idle.as_mut() => {
                    if tokio::time::Instant::now() >= deadline {
                        return false;
                    }
                    idle.as_mut().reset(deadline);
                }
            }
        }
    }

    /// Read more of the head, never past [`MAX_HEAD`] (plus one byte, to tell a head that
    /// is too large). Ok(false): the client left or sent nothing more.
    async fn read_more(&mut self, deadline: tokio::time::Instant) -> Result<bool, ()> {
        let room = (MAX_HEAD + 1).saturating_sub(self.buf.len());
        self.buf.reserve(room.min(4 * 1024));
        let mut limited = (&mut self.stream).take(room as u64);
        let limit = deadline.saturating_duration_since(tokio::time::Instant::now());
        match body::within(limit, limited.read_buf(&mut self.buf)).await {
            Some(Ok(n)) => Ok(n > 0),
            Some(Err(_)) => Ok(false),
            None => Err(()),
        }
    }

    /// End a connection the gateway decided to close, without losing its last answer.
    ///
    /// A socket closed with unread bytes (a client still sending a body or a slow head the
    /// gateway refused) makes the kernel send a reset, and a reset can destroy the answer
    /// before the client reads it: the client sees "connection reset" instead of its 408
    /// or 502. So, as nginx's lingering close does: end the sending side (the client gets
    /// the answer, then end-of-stream), and read and drop what still comes, until the
    /// client closes, [`LINGER_BYTES`] or [`LINGER_TIME`].
    async fn linger(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            // The connection's own buffer, unzeroed: for clients that close after every
            // response this runs once per request.
            self.buf.clear();
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => dropped += n,
                _ => return,
            }
        }
    }

    /// Send bytes the gateway wrote itself (an error, `100 Continue`).
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        body::within(CLIENT_TIMEOUT, write)
            .await
            .unwrap_or_else(|| Err(std::io::ErrorKind::TimedOut.into()))
    }
}

/// Why a request failed after it was accepted.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream: {0}")]
    Upstream(&'static str),
    #[error("upstream timed out after {0:?}")]
    UpstreamTimeout(Duration),
    #[error("sending the request: {0}")]
    RequestBody(BodyError),
    #[error("sending the response: {0}")]
    ResponseBody(BodyError),
}

impl Failure {
    /// The status the client gets when nothing was sent yet; 0: nobody to answer.
    fn status(&self) -> (u16, &'static str) {
        match self {
            Failure::Connect(ConnectError::TimedOut { .. }) | Failure::UpstreamTimeout(_) => {
                (504, "upstream timed out")
            }
            Failure::Connect(_) | Failure::Upstream(_) => (502, "upstream unavailable"),
            Failure::RequestBody(e) if e.side() == Side::Destination => {
                (502, "upstream unavailable")
            }
            Failure::RequestBody(BodyError::TimedOut(_)) => (408, "request body timed out"),
            Failure::RequestBody(BodyError::Chunked(_)) => (400, "invalid chunked request body"),
            Failure::RequestBody(_) | Failure::ResponseBody(_) => (0, ""),
        }
    }
}

/// What happened to one request, for the access log and the connection's fate.
struct Outcome {
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    upstream_addr: Option<std::net::SocketAddr>,
    error: Option<Failure>,
    /// Bytes of the client buffer this request used (head and any body in it).
    consumed: usize,
    /// Bytes the client sent past this request, read along with its body.
    tail: Vec<u8>,
    keep_alive: bool,
}

impl Gateway {
    pub fn new(routes: RouteTable, timeouts: ClientTimeouts) -> Self {
        let upstreams = routes.routes().iter().map(Upstream::new).collect();
        Gateway {
            routes,
            upstreams,
            timeouts,
        }
    }

    /// Serve one request. False: the client connection ends.
    async fn exchange(&self, client: &mut Client, shutdown: &ShutdownWatch) -> bool {
        let start = Instant::now();
        let mut out = Vec::with_capacity(2048);
        // Set when the head turns out to need more than one read.
        let mut deadline = None;
        let prepared = loop {
            match request::prepare(&client.buf, &self.routes, client.ip.as_ref(), &mut out) {
                Ok(prepared) => break prepared,
                Err(Incomplete) if client.buf.len() >= MAX_HEAD => {
                    let refusal = if client.buf.contains(&b'\n') {
                        Refusal::unparsed(431, "request head too large")
                    } else {
                        Refusal::unparsed(414, "request target too long")
                    };
                    return self.refuse(client, refusal, start, out).await;
                }
                Err(Incomplete) => {
                    let deadline = *deadline
                        .get_or_insert_with(|| tokio::time::Instant::now() + self.timeouts.head);
                    match client.read_more(deadline).await {
                        Ok(true) => {}
                        Ok(false) => return false,
                        Err(()) => {
                            let refusal = Refusal::unparsed(408, "request head timed out");
                            return self.refuse(client, refusal, start, out).await;
                        }
                    }
                }
            }
        };
        let req = match prepared {
            Ok(req) => req,
            Err(refusal) => return self.refuse(client, refusal, start, out).await,
        };

        let upstream = &self.upstreams[req.route];
        let outcome = self
            .forward(client, &req, upstream, &mut out, shutdown)
            .await;
        if let Some(e) = &outcome.error
            && outcome.status == 0
        {
            let (status, message) = e.status();
            if status > 0 {
                let close = true;
                respond::error(
                    &mut out,
                    status,
                    message,
                    &req.request_id,
                    req.is_head,
                    close,
                );
                let sent = client.send(&out).await.is_ok();
                self.log(client, &req, start, &outcome, if sent { status } else { 0 });
                return false;
            }
        }
        self.log(client, &req, start, &outcome, outcome.status);
        let keep_alive = outcome.keep_alive;
        client.buf.drain(..outcome.consumed.min(client.buf.len()));
        if client.buf.is_empty() {
            // Idle connections hold no buffer (see `Client::buf`).
            client.buf = outcome.tail;
        } else {
            client.buf.extend_from_slice(&outcome.tail);
        }
        keep_alive
    }

    /// Steps 2 to 4 for an accepted request.
    async fn forward(
        &self,
        client: &mut Client,
        req: &Request,
        upstream: &Upstream,
        out: &mut Vec<u8>,
        shutdown: &ShutdownWatch,
    ) -> Outcome {
        let mut outcome = Outcome {
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            upstream_addr: None,
            error: None,
            consumed: req.head_len,
            tail: Vec::new(),
            keep_alive: false,
        };
        let upstream_timeouts = Timeouts {
            read: CLIENT_TIMEOUT,
            write: upstream.read_timeout(),
        };
        let mut buf = Vec::new();
        let mut fresh = false;
        // A pooled connection may have been closed by the service just now; a request
        // without a body is sent again once, on a new connection (which is never `reused`,
        // so there is no second retry). `out` holds the upstream head until the response
        // head replaces it, so it can be sent again.
        let (mut conn, resp) = loop {
            let mut conn = match upstream.connect(fresh).await {
                Ok(conn) => conn,
                Err(e) => {
                    outcome.error = Some(e.into());
                    return outcome;
                }
            };
            outcome.upstream_addr = Some(conn.addr);
            let waiting = req.expect_continue && client.buf.len() == req.head_len;
            if waiting && client.send(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                return outcome;
            }
            let sent = body::forward(
                req.framing,
                false,
                out,
                &client.buf[req.head_len..],
                &mut client.stream,
                &mut conn.stream,
                &mut buf,
                upstream_timeouts,
            )
            .await;
            let request_done = match sent {
                Ok(sent) => {
                    outcome.consumed = req.head_len + sent.used;
                    outcome.tail = sent.tail;
                    outcome.bytes_in = sent.sent;
                    true
                }
                Err(e)
                    if e.side() == Side::Destination
                        && conn.reused
                        && req.framing == Framing::Empty =>
                {
                    fresh = true;
                    continue;
                }
                // The service may have answered early (413, 401) and closed: read on.
                Err(e) if e.side() == Side::Destination => {
                    outcome.error = Some(Failure::RequestBody(e));
                    false
                }
                Err(e) => {
                    outcome.error = Some(Failure::RequestBody(e));
                    return outcome;
                }
            };
            let closing = !request_done || *shutdown.borrow();
            match read_response(
                &mut conn,
                req,
                upstream.read_timeout(),
                closing,
                out,
                &mut buf,
            )
            .await
            {
                Ok(resp) => {
                    outcome.error = None;
                    break (conn, resp);
                }
                // Nothing came back on a pooled connection: the service had closed it. The
                // request may have been read before that, so only an idempotent one is
                // sent again.
                Err(Failure::Upstream(_))
                    if conn.reused
                        && req.idempotent
                        && req.framing == Framing::Empty
                        && buf.is_empty() =>
                {
                    fresh = true;
                }
                Err(e) => {
                    if outcome.error.is_none() {
                        outcome.error = Some(e);
                    }
                    return outcome;
                }
            }
        };

        outcome.status = resp.status;
        // The response head's buffer keeps the body bytes read with it; later reads (a
        // long body) go to a scratch buffer, allocated only then.
        let head_buf = std::mem::take(&mut buf);
        let first = &head_buf[resp.head_len..];
        if resp.switching {
            outcome.bytes_out = self.tunnel(client, req, conn, out, first).await;
            return outcome;
        }
        let sent = body::forward(
            resp.framing,
            resp.dechunk,
            out,
            first,
            &mut conn.stream,
            &mut client.stream,
            &mut buf,
            Timeouts {
                read: upstream.read_timeout(),
                write: CLIENT_TIMEOUT,
            },
        )
        .await;
        match sent {
            Ok(sent) => {
                outcome.bytes_out = sent.sent;
                let clean = sent.used == first.len() && sent.tail.is_empty();
                if resp.upstream_reusable && clean && outcome.error.is_none() {
                    upstream.release(conn);
                }
                outcome.keep_alive = resp.client_keep_alive && outcome.error.is_none();
            }
            Err(e) => outcome.error = Some(Failure::ResponseBody(e)),
        }
        outcome
    }

    /// After `101 Switching Protocols`: pass bytes both ways until either side closes.
    /// Returns the bytes sent to the client.
    async fn tunnel(
        &self,
        client: &mut Client,
        req: &Request,
        mut conn: Connection,
        head: &mut Vec<u8>,
        from_upstream: &[u8],
    ) -> u64 {
        head.extend_from_slice(from_upstream);
        let greeted = client.send(head).await.is_ok()
            && conn
                .stream
                .write_all(&client.buf[req.head_len..])
                .await
                .is_ok();
        client.buf.truncate(req.head_len);
        if !greeted {
            return 0;
        }
        // No timeout: a quiet WebSocket is a healthy one.
        match tokio::io::copy_bidirectional(&mut client.stream, &mut conn.stream).await {
            Ok((_, to_client)) => to_client + from_upstream.len() as u64,
            Err(_) => from_upstream.len() as u64,
        }
    }

    /// Answer a refused request; true when the connection can serve the next one.
    async fn refuse(
        &self,
        client: &mut Client,
        r: Refusal,
        start: Instant,
        mut out: Vec<u8>,
    ) -> bool {
        let method_is_head = client.buf.get(r.method.clone()) == Some(b"HEAD".as_slice());
        respond::error(
            &mut out,
            r.status,
            r.message,
            &r.request_id,
            method_is_head,
            !r.can_continue,
        );
        let sent = client.send(&out).await.is_ok();
        let entry = access_log::Entry {
            start,
            method: text(&client.buf, &r.method),
            path: text(&client.buf, &r.path),
            route: "-",
            upstream: "-",
            upstream_addr: None,
            status: if sent { r.status } else { 0 },
            request_id: &r.request_id,
            bytes_in: 0,
            bytes_out: 0,
            error: Some(&r.message),
        };
        access_log::write(&entry);
        if sent && r.can_continue {
            client.buf.drain(..r.head_len.min(client.buf.len()));
            return true;
        }
        false
    }

    fn log(&self, client: &Client, req: &Request, start: Instant, o: &Outcome, status: u16) {
        let route = &self.routes.routes()[req.route];
        let entry = access_log::Entry {
            start,
            method: text(&client.buf, &req.method),
            path: text(&client.buf, &req.path),
            route: &route.name,
            upstream: self.upstreams[req.route].target(),
            upstream_addr: o.upstream_addr,
            status,
            request_id: &req.request_id,
            bytes_in: o.bytes_in,
            bytes_out: o.bytes_out,
            error: o.error.as_ref().map(|e| e as &dyn std::fmt::Display),
        };
        access_log::write(&entry);
    }
}

/// Read the upstream's response head (skipping interim `1xx`) into `buf`; the client's head
/// goes into `out`.
async fn read_response(
    conn: &mut Connection,
    req: &Request,
    timeout: Duration,
    closing: bool,
    out: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Result<Response, Failure> {
    buf.clear();
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8 * 1024);
        }
        let n = match body::within(timeout, conn.stream.read_buf(buf)).await {
            Some(Ok(n)) => n,
            Some(Err(_)) => return Err(Failure::Upstream("connection reset")),
            None => return Err(Failure::UpstreamTimeout(timeout)),
        };
        if n == 0 {
            return Err(Failure::Upstream(
                "closed the connection without a response",
            ));
        }
        loop {
            match response::prepare(buf, req, closing, out) {
                Parsed::Final(resp) => return Ok(resp),
                Parsed::Interim(len) => {
                    buf.drain(..len);
                }
                Parsed::Incomplete if buf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(Failure::Upstream("response head too large"));
                }
                Parsed::Incomplete => break,
                Parsed::Invalid(why) => return Err(Failure::Upstream(why)),
            }
        }
    }
}

/// A part of the head, as text for the log (`-` when unknown).
fn text<'a>(buf: &'a [u8], range: &std::ops::Range<usize>) -> &'a str {
    buf.get(range.clone())
        .and_then(|b| std::str::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
        .unwrap_or("-")
}

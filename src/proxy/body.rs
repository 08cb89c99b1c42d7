//! Moving a message body from one side to the other as it arrives, never holding more than
//! one buffer of it, so a 100 MiB upload costs the same memory as a 1 KiB one and a slow
//! reader slows the sender instead of filling the gateway.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::{ChunkError, Chunked};
use super::request::Framing;

/// Size of one read when streaming.
pub const CHUNK: usize = 64 * 1024;

/// Which side failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side the body comes from.
    Source,
    /// The side the body goes to.
    Destination,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0:?} timed out")]
    TimedOut(Side),
    #[error("{0:?} closed the connection before the body ended")]
    Closed(Side),
    #[error("{0:?}: {1}")]
    Io(Side, std::io::Error),
    #[error("invalid chunked body ({0:?})")]
    Chunked(ChunkError),
}

impl BodyError {
    pub fn side(&self) -> Side {
        match self {
            BodyError::TimedOut(s) | BodyError::Closed(s) | BodyError::Io(s, _) => *s,
            BodyError::Chunked(_) => Side::Source,
        }
    }
}

/// How the body went.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// Bytes of `first` that belonged to this message.
    pub used: usize,
    /// Bytes read from the source past the end of the message (the next message).
    pub tail: Vec<u8>,
    /// Body bytes sent, as the destination received them.
    pub sent: u64,
}

/// The two deadlines of a transfer: for each read from the source, for each write to the
/// destination.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub read: Duration,
    pub write: Duration,
}

enum Remaining {
    Length(u64),
    Chunks(Chunked),
    Eof,
    Done,
}

impl Remaining {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Remaining::Done,
            Framing::Length(n) => Remaining::Length(n),
            Framing::Chunked => Remaining::Chunks(Chunked::new()),
            Framing::UntilClose => Remaining::Eof,
        }
    }

    fn is_done(&self) -> bool {
        matches!(self, Remaining::Done)
    }

    /// Take the part of `input` that belongs to the body and return its length. With a
    /// `sink`, append what the destination gets to it: the same bytes, or only the chunk
    /// data when `decode` is set. Without one the caller sends `input[..used]` itself.
    fn take(
        &mut self,
        input: &[u8],
        sink: Option<&mut Vec<u8>>,
        decode: bool,
    ) -> Result<usize, BodyError> {
        let used = match self {
            Remaining::Length(n) => {
                let used = usize::try_from(*n).map_or(input.len(), |n| n.min(input.len()));
                *n -= used as u64;
                if *n == 0 {
                    *self = Remaining::Done;
                }
                used
            }
            Remaining::Eof => input.len(),
            Remaining::Done => 0,
            Remaining::Chunks(parser) => {
                let used = match sink {
                    Some(sink) if decode => {
                        let used = parser
                            .feed(input, |data| sink.extend_from_slice(data))
                            .map_err(BodyError::Chunked)?;
                        if parser.is_done() {
                            *self = Remaining::Done;
                        }
                        return Ok(used);
                    }
                    _ => parser.feed(input, |_| {}).map_err(BodyError::Chunked)?,
                };
                if parser.is_done() {
                    *self = Remaining::Done;
                }
                used
            }
        };
        if let Some(sink) = sink {
            sink.extend_from_slice(&input[..used]);
        }
        Ok(used)
    }
}

/// Send `head`, then the body framed by `framing`, from `src` to `dst`.
///
/// `first` holds body bytes already read along with the head (it may run past the end of
/// the body). They are sent in the same write as `head`. When `decode` is set, chunked
/// data goes out decoded (for HTTP/1.0 clients, which end on close). `buf` is scratch space.
#[allow(clippy::too_many_arguments)]
pub async fn forward<R, W>(
    framing: Framing,
    decode: bool,
    head: &mut Vec<u8>,
    first: &[u8],
    src: &mut R,
    dst: &mut W,
    buf: &mut Vec<u8>,
    timeouts: Timeouts,
) -> Result<Forwarded, BodyError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut remaining = Remaining::new(framing);
    let decode = decode && framing == Framing::Chunked;
    let head_len = head.len();
    let used = remaining.take(first, Some(head), decode)?;
    let mut done = Forwarded {
        used,
        tail: Vec::new(),
        sent: (head.len() - head_len) as u64,
    };
    write(dst, head, timeouts.write).await?;

    while !remaining.is_done() {
        buf.clear();
        buf.reserve(CHUNK);
        let n = match within(timeouts.read, src.read_buf(buf)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(BodyError::Io(Side::Source, e)),
            None => return Err(BodyError::TimedOut(Side::Source)),
        };
        if n == 0 {
            if matches!(remaining, Remaining::Eof) {
                break;
            }
            return Err(BodyError::Closed(Side::Source));
        }
        let used = if decode {
            head.clear();
            let used = remaining.take(&buf[..n], Some(head), true)?;
            write(dst, head, timeouts.write).await?;
            done.sent += head.len() as u64;
            used
        } else {
            let used = remaining.take(&buf[..n], None, false)?;
            write(dst, &buf[..used], timeouts.write).await?;
            done.sent += used as u64;
            used
        };
        if used < n {
            done.tail = buf[used..n].to_vec();
        }
    }
    flush(dst, timeouts.write).await?;
    Ok(done)
}

/// `fut`, unless it takes longer than `limit` (`None`). It is polled once before any timer
/// exists: most socket operations complete at once, and then neither the clock is read nor
/// a timer registered (several times per request otherwise).
pub async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let std::task::Poll::Ready(output) = poll_once(fut.as_mut()).await {
        return Some(output);
    }
    tokio::time::timeout(limit, fut).await.ok()
}

/// Poll `fut` once with the task's own waker: its output if it is ready at once.
pub async fn poll_once<F: std::future::Future>(
    mut fut: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await
}

async fn write<W>(dst: &mut W, bytes: &[u8], timeout: Duration) -> Result<(), BodyError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    if bytes.is_empty() {
        return Ok(());
    }
    match within(timeout, dst.write_all(bytes)).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(BodyError::Io(Side::Destination, e)),
        None => Err(BodyError::TimedOut(Side::Destination)),
    }
}

async fn flush<W>(dst: &mut W, timeout: Duration) -> Result<(), BodyError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    match within(timeout, dst.flush()).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(BodyError::Io(Side::Destination, e)),
        None => Err(BodyError::TimedOut(Side::Destination)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        read: Duration::from_secs(5),
        write: Duration::from_secs(5),
    };

    async fn run(
        framing: Framing,
        decode: bool,
        first: &[u8],
        rest: &[u8],
    ) -> (Result<Forwarded, BodyError>, Vec<u8>) {
        let mut head = b"HEAD|".to_vec();
        let mut src = rest;
        let mut dst = Vec::new();
        let mut buf = Vec::new();
        let r = forward(
            framing, decode, &mut head, first, &mut src, &mut dst, &mut buf, T,
        )
        .await;
        (r, dst)
    }

    #[tokio::test]
    async fn length_stops_at_its_end_and_keeps_the_tail() {
        let (r, out) = run(Framing::Length(5), false, b"he", b"lloNEXT").await;
        let r = r.unwrap();
        assert_eq!(out, b"HEAD|hello");
        assert_eq!((r.used, r.sent, r.tail.as_slice()), (2, 5, &b"NEXT"[..]));

        let (r, out) = run(Framing::Length(3), false, b"abcNEXT", b"").await;
        assert_eq!(r.unwrap().used, 3);
        assert_eq!(out, b"HEAD|abc");
    }

    #[tokio::test]
    async fn chunked_passes_through_or_decodes() {
        let (r, out) = run(Framing::Chunked, false, b"3\r\nab", b"c\r\n0\r\n\r\nNEXT").await;
        let r = r.unwrap();
        assert_eq!(out, b"HEAD|3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(r.tail, b"NEXT");

        let (r, out) = run(
            Framing::Chunked,
            true,
            b"3\r\nab",
            b"c\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(out, b"HEAD|abcde");
        assert_eq!(r.unwrap().sent, 5);
    }

    #[tokio::test]
    async fn early_close_and_bad_chunks_are_errors() {
        let (r, _) = run(Framing::Length(10), false, b"abc", b"de").await;
        assert!(matches!(r, Err(BodyError::Closed(Side::Source))));
        let (r, _) = run(Framing::Chunked, false, b"", b"3\r\nabcd\r\n").await;
        assert!(matches!(r, Err(BodyError::Chunked(_))));
        let (r, out) = run(Framing::UntilClose, false, b"ab", b"cd").await;
        assert_eq!(r.unwrap().sent, 4);
        assert_eq!(out, b"HEAD|abcd");
        let (r, out) = run(Framing::Empty, false, b"NEXT", b"").await;
        assert_eq!(r.unwrap().used, 0);
        assert_eq!(out, b"HEAD|");
    }
}

#[cfg(test)]
mod within_tests {
    use super::*;

    #[tokio::test]
    async fn ready_at_once_or_within_the_limit_or_none() {
        assert_eq!(within(Duration::from_millis(1), async { 7 }).await, Some(7));
        let slow = tokio::time::sleep(Duration::from_millis(20));
        assert_eq!(within(Duration::from_millis(200), slow).await, Some(()));
        let slower = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(within(Duration::from_millis(20), slower).await, None);
    }
}

//! Log output: `RUST_LOG` picks the level (default `info`), `LOG_FORMAT` the shape: `text`
//! for people (`ts LEVEL target: msg key=value ...`) or `json` for log aggregation (one
//! object per line, structured fields at the top level).
//!
//! Lines are written to stderr by a background thread, so a request never waits on the
//! terminal or the log collector: the request path formats its line into a reused buffer
//! and appends it to a shared one, which the writer thread takes whole every few
//! milliseconds (no allocation and no hand-over per line). If stderr cannot keep up and
//! the shared buffer reaches its bound, lines are dropped and counted rather than stalling
//! the proxy, and the count is logged.
//!
//! The access line, written once per request, skips the `log` machinery's dynamic
//! dispatch: [`access`] formats it straight into its buffer, in the same shape as every
//! other line, and still honours `RUST_LOG` for the `access` target.

use std::fmt::Display;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use log::kv::{self, VisitSource};

use crate::settings::LogFormat;

/// One structured field of a log line.
pub enum Field<'a> {
    Str(&'a str),
    U64(u64),
    F64(f64),
    /// Milliseconds with two decimals, given in microseconds (no float formatting).
    Millis(u64),
    /// A socket address, written without the formatting machinery.
    Addr(std::net::SocketAddr),
    Display(&'a dyn Display),
}

/// Where access lines go once [`init`] has run.
static ACCESS: OnceLock<Sink> = OnceLock::new();

#[derive(Clone)]
struct Sink {
    format: LogFormat,
    writer: Option<BackgroundWriter>,
}

pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.format(move |buf, record| {
        write_head(buf, format, record.level(), record.target(), record.args())?;
        let mut fields = KvFields { out: buf, format };
        let _ = record.key_values().visit(&mut fields);
        write_tail(fields.out, format)
    });
    // Never colour: lines go to files and collectors, and env_logger would otherwise scan
    // every line for escape codes to strip.
    builder.write_style(env_logger::WriteStyle::Never);
    let writer = BackgroundWriter::start();
    if let Some(writer) = &writer {
        builder.target(env_logger::Target::Pipe(Box::new(writer.clone())));
    }
    // A second init (tests that call it twice) is harmless.
    if builder.try_init().is_ok() {
        let _ = ACCESS.set(Sink { format, writer });
    }
}

/// `RUST_LOG` lets access lines of this level through: check before gathering fields.
pub fn access_enabled(level: log::Level) -> bool {
    log::log_enabled!(target: "access", level)
}

/// Write one access line (target `access`, message `request`). Callers check
/// [`access_enabled`] first, so that neither they nor this gather fields for a line that
/// `RUST_LOG` filters out.
pub fn access(level: log::Level, fields: &[(&str, Field<'_>)]) {
    let Some(sink) = ACCESS.get() else {
        return;
    };
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        let _ = write_head(line, sink.format, level, "access", &format_args!("request"));
        for (key, value) in fields {
            let _ = write_field(line, sink.format, key, value);
        }
        let _ = write_tail(line, sink.format);
        match &sink.writer {
            Some(writer) => writer.append(line),
            None => {
                let _ = std::io::stderr().write_all(line);
            }
        }
    });
}

fn write_head(
    out: &mut impl Write,
    format: LogFormat,
    level: log::Level,
    target: &str,
    msg: &std::fmt::Arguments<'_>,
) -> std::io::Result<()> {
    let ts = Timestamp::now();
    let ts = ts.text().as_bytes();
    match format {
        LogFormat::Text => {
            // Written piece by piece: this runs for every access line.
            let level: &[u8] = match level {
                log::Level::Error => b"ERROR",
                log::Level::Warn => b"WARN ",
                log::Level::Info => b"INFO ",
                log::Level::Debug => b"DEBUG",
                log::Level::Trace => b"TRACE",
            };
            out.write_all(ts)?;
            out.write_all(b" ")?;
            out.write_all(level)?;
            out.write_all(b" ")?;
            out.write_all(target.as_bytes())?;
            out.write_all(b": ")?;
            match msg.as_str() {
                Some(text) => out.write_all(text.as_bytes()),
                None => out.write_fmt(*msg),
            }
        }
        LogFormat::Json => {
            out.write_all(b"{\"ts\":\"")?;
            out.write_all(ts)?;
            write!(out, "\",\"level\":\"{level}\",\"target\":")?;
            serde_json::to_writer(&mut *out, target)?;
            out.write_all(b",\"msg\":")?;
            // A literal message (the usual case) is escaped in place, without a String.
            match msg.as_str() {
                Some(text) => serde_json::to_writer(&mut *out, text)?,
                None => serde_json::to_writer(&mut *out, &msg.to_string())?,
            }
            Ok(())
        }
    }
}

/// The current time as RFC 3339 with milliseconds (`2026-11-23T00:22:01.123Z`). The date
/// and time are formatted once per second per thread; within the second only the
/// milliseconds change.
struct Timestamp {
    text: [u8; 24],
}

impl Timestamp {
    fn now() -> Self {
        thread_local! {
            static LAST: std::cell::Cell<(i64, [u8; 24])> = const { std::cell::Cell::new((i64::MIN, [0; 24])) };
        }
        let now = jiff::Timestamp::now();
        let second = now.as_second();
        let millis = now.subsec_millisecond().clamp(0, 999) as u16;
        let (cached, mut text) = LAST.get();
        if cached != second {
            let full = format!("{now:.3}");
            if full.len() != text.len() {
                // Outside years 0000-9999: no fixed layout to patch, nothing cached.
                let mut text = [b' '; 24];
                let n = full.len().min(24);
                text[..n].copy_from_slice(&full.as_bytes()[..n]);
                return Timestamp { text };
            }
            text.copy_from_slice(full.as_bytes());
            LAST.set((second, text));
        }
        text[20] = b'0' + (millis / 100) as u8;
        text[21] = b'0' + (millis / 10 % 10) as u8;
        text[22] = b'0' + (millis % 10) as u8;
        Timestamp { text }
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.text).unwrap_or("-").trim_end()
    }
}

fn write_tail(out: &mut impl Write, format: LogFormat) -> std::io::Result<()> {
    match format {
        LogFormat::Text => out.write_all(b"\n"),
        LogFormat::Json => out.write_all(b"}\n"),
    }
}

/// ` key=value` (quoted when empty or holding spaces, quotes or '='), or `,"key":value`.
/// Numbers and addresses, on every access line, are written with `itoa` rather than the
/// `fmt` machinery.
fn write_field(
    out: &mut impl Write,
    format: LogFormat,
    key: &str,
    value: &Field<'_>,
) -> std::io::Result<()> {
    match format {
        LogFormat::Text => {
            if let Field::Display(d) = value {
                let text = d.to_string();
                return write_field(out, format, key, &Field::Str(&text));
            }
            out.write_all(b" ")?;
            out.write_all(key.as_bytes())?;
            out.write_all(b"=")?;
            match value {
                Field::Str(s)
                    if s.is_empty() || s.bytes().any(|b| matches!(b, b' ' | b'"' | b'=')) =>
                {
                    write!(out, "{s:?}")
                }
                Field::Str(s) => out.write_all(s.as_bytes()),
                Field::U64(n) => out.write_all(itoa::Buffer::new().format(*n).as_bytes()),
                Field::F64(f) => write!(out, "{f}"),
                Field::Millis(us) => write_millis(out, *us),
                Field::Addr(a) => write_addr(out, a),
                Field::Display(_) => Ok(()),
            }
        }
        LogFormat::Json => {
            out.write_all(b",")?;
            serde_json::to_writer(&mut *out, key)?;
            out.write_all(b":")?;
            match value {
                Field::Str(s) => serde_json::to_writer(&mut *out, s)?,
                Field::U64(n) => out.write_all(itoa::Buffer::new().format(*n).as_bytes())?,
                Field::F64(f) if f.is_finite() => write!(out, "{f}")?,
                Field::F64(_) => out.write_all(b"null")?,
                Field::Millis(us) => write_millis(out, *us)?,
                Field::Addr(a) => {
                    out.write_all(b"\"")?;
                    write_addr(out, a)?;
                    out.write_all(b"\"")?;
                }
                Field::Display(d) => serde_json::to_writer(&mut *out, &d.to_string())?,
            }
            Ok(())
        }
    }
}

/// `1234` microseconds as `1.23`.
fn write_millis(out: &mut impl Write, micros: u64) -> std::io::Result<()> {
    let hundredths = (micros + 5) / 10;
    out.write_all(itoa::Buffer::new().format(hundredths / 100).as_bytes())?;
    let frac = hundredths % 100;
    out.write_all(&[b'.', b'0' + (frac / 10) as u8, b'0' + (frac % 10) as u8])
}

fn write_addr(out: &mut impl Write, addr: &std::net::SocketAddr) -> std::io::Result<()> {
    match addr {
        std::net::SocketAddr::V4(v4) => {
            write_ip(out, std::net::IpAddr::V4(*v4.ip()))?;
            out.write_all(b":")?;
            out.write_all(itoa::Buffer::new().format(v4.port()).as_bytes())
        }
        std::net::SocketAddr::V6(v6) => write!(out, "{v6}"),
    }
}

/// An IP address as text, IPv4 without the formatting machinery: it is written on every
/// access line and into every request's `X-Forwarded-For`.
pub fn write_ip(out: &mut impl Write, ip: std::net::IpAddr) -> std::io::Result<()> {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.write_all(b".")?;
                }
                out.write_all(digits.format(*octet).as_bytes())?;
            }
            Ok(())
        }
        std::net::IpAddr::V6(v6) => write!(out, "{v6}"),
    }
}

/// The fields of a `log` record, written like the access line's.
struct KvFields<'a> {
    out: &'a mut env_logger::fmt::Formatter,
    format: LogFormat,
}

impl<'kvs> VisitSource<'kvs> for KvFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let field = if let Some(n) = value.to_u64() {
            Field::U64(n)
        } else if let Some(f) = value.to_f64() {
            Field::F64(f)
        } else if let Some(s) = value.to_borrowed_str() {
            Field::Str(s)
        } else {
            Field::Display(&value)
        };
        write_field(self.out, self.format, key.as_str(), &field)
            .map_err(|_| kv::Error::msg("cannot write the log line"))
    }
}

/// Bytes waiting for stderr before new lines are dropped (a few seconds of a busy gateway).
const PENDING_LIMIT: usize = 16 * 1024 * 1024;

/// How often the writer takes what has gathered: under load, one write per interval
/// instead of per line; when idle, a line still shows within this time.
const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Lines waiting for the writer thread, and how many were dropped.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
}

/// The appending end; env_logger's records arrive as one `write` call each.
#[derive(Clone)]
struct BackgroundWriter {
    pending: Arc<Mutex<Pending>>,
}

impl BackgroundWriter {
    /// `None` if the thread cannot be started; logging then writes to stderr directly.
    fn start() -> Option<Self> {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let shared = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || drain(&shared))
            .ok()?;
        Some(BackgroundWriter { pending })
    }

    fn append(&self, line: &[u8]) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if pending.bytes.len() + line.len() > PENDING_LIMIT {
            pending.dropped += 1;
        } else {
            pending.bytes.extend_from_slice(line);
        }
    }
}

impl Write for BackgroundWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every interval, swap the shared buffer for an empty one (keeping the two allocations
/// in rotation) and write what it held.
fn drain(pending: &Mutex<Pending>) {
    let mut stderr = std::io::stderr();
    let mut batch = Vec::new();
    loop {
        std::thread::sleep(WRITE_INTERVAL);
        let dropped = match pending.lock() {
            Ok(mut p) => {
                std::mem::swap(&mut p.bytes, &mut batch);
                std::mem::take(&mut p.dropped)
            }
            Err(_) => return,
        };
        if dropped > 0 {
            let _ = writeln!(
                batch,
                "beat-gateway: {dropped} log lines dropped: stderr is not keeping up"
            );
        }
        if !batch.is_empty() {
            let _ = stderr.write_all(&batch);
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: LogFormat, fields: &[(&str, Field<'_>)]) -> String {
        let mut out = Vec::new();
        for (k, v) in fields {
            write_field(&mut out, format, k, v).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_fields_quote_only_when_needed() {
        let addr: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
        let got = line(
            LogFormat::Text,
            &[
                ("a", Field::Str("plain")),
                ("b", Field::Str("two words")),
                ("c", Field::Str("")),
                ("n", Field::U64(7)),
                ("f", Field::F64(1.5)),
                ("d", Field::Display(&addr)),
                ("a4", Field::Addr(addr)),
                ("a6", Field::Addr("[::1]:8080".parse().unwrap())),
                ("m", Field::Millis(1234)),
                ("m0", Field::Millis(4)),
                ("m1", Field::Millis(120_005)),
            ],
        );
        assert_eq!(
            got,
            " a=plain b=\"two words\" c=\"\" n=7 f=1.5 d=127.0.0.1:80 a4=127.0.0.1:80 \
             a6=[::1]:8080 m=1.23 m0=0.00 m1=120.01"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_with_millis() {
        for _ in 0..3 {
            let before = jiff::Timestamp::now();
            let ts = Timestamp::now();
            let parsed: jiff::Timestamp = ts.text().parse().unwrap();
            let after = jiff::Timestamp::now();
            assert_eq!(ts.text().len(), 24, "{}", ts.text());
            assert!(
                parsed
                    >= before.round(jiff::Unit::Millisecond).unwrap()
                        - jiff::SignedDuration::from_millis(1)
            );
            assert!(parsed <= after, "{} > {after}", ts.text());
            std::thread::sleep(std::time::Duration::from_millis(7));
        }
    }

    #[test]
    fn json_fields_are_typed_and_escaped() {
        let got = line(
            LogFormat::Json,
            &[
                ("s", Field::Str("q\"x\n")),
                ("n", Field::U64(7)),
                ("f", Field::F64(f64::NAN)),
                ("a", Field::Addr("10.0.0.1:3000".parse().unwrap())),
                ("m", Field::Millis(99)),
            ],
        );
        assert_eq!(
            got,
            r#","s":"q\"x\n","n":7,"f":null,"a":"10.0.0.1:3000","m":0.10"#
        );
    }
}

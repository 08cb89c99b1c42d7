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
    /// Text known to hold only `[A-Za-z0-9._-]` (a checked request id): written as is,
    /// without looking for characters to quote or escape.
    Token(&'a str),
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
        let mut line = Vec::with_capacity(256);
        write_head(
            &mut line,
            format,
            record.level(),
            record.target(),
            record.args(),
        );
        let mut fields = KvFields {
            out: &mut line,
            format,
        };
        let _ = record.key_values().visit(&mut fields);
        write_tail(&mut line, format);
        buf.write_all(&line)
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
pub fn access(level: log::Level, fields: &[(Key, Field<'_>)]) {
    let Some(sink) = ACCESS.get() else {
        return;
    };
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        write_head(line, sink.format, level, "access", &format_args!("request"));
        for (key, value) in fields {
            line.extend_from_slice(key.separated(sink.format));
            write_value(line, sink.format, value);
        }
        write_tail(line, sink.format);
        match &sink.writer {
            Some(writer) => writer.append(line),
            None => {
                let _ = std::io::stderr().write_all(line);
            }
        }
    });
}

/// The fields below write into a `Vec<u8>`: single bytes are pushed and the rest copied
/// without the `io::Write` layer, which cannot fail here and would only add calls on a
/// path taken for every request.
fn write_head(
    out: &mut Vec<u8>,
    format: LogFormat,
    level: log::Level,
    target: &str,
    msg: &std::fmt::Arguments<'_>,
) {
    let ts = Timestamp::now();
    let ts = ts.bytes();
    match format {
        LogFormat::Text => {
            let level: &[u8] = match level {
                log::Level::Error => b"ERROR",
                log::Level::Warn => b"WARN ",
                log::Level::Info => b"INFO ",
                log::Level::Debug => b"DEBUG",
                log::Level::Trace => b"TRACE",
            };
            out.extend_from_slice(ts);
            out.push(b' ');
            out.extend_from_slice(level);
            out.push(b' ');
            out.extend_from_slice(target.as_bytes());
            out.extend_from_slice(b": ");
            match msg.as_str() {
                Some(text) => out.extend_from_slice(text.as_bytes()),
                None => {
                    let _ = out.write_fmt(*msg);
                }
            }
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"ts\":\"");
            out.extend_from_slice(ts);
            let _ = write!(out, "\",\"level\":\"{level}\",\"target\":");
            json_string(out, target);
            out.extend_from_slice(b",\"msg\":");
            // A literal message (the usual case) is escaped in place, without a String.
            match msg.as_str() {
                Some(text) => json_string(out, text),
                None => json_string(out, &msg.to_string()),
            }
        }
    }
}

/// `s` as a JSON string, escaped.
fn json_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
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

    /// ASCII by construction: no UTF-8 check on a path taken for every line.
    fn bytes(&self) -> &[u8] {
        self.text.trim_ascii_end()
    }

    #[cfg(test)]
    fn text(&self) -> &str {
        std::str::from_utf8(self.bytes()).unwrap_or("-")
    }
}

fn write_tail(out: &mut Vec<u8>, format: LogFormat) {
    match format {
        LogFormat::Text => out.push(b'\n'),
        LogFormat::Json => out.extend_from_slice(b"}\n"),
    }
}

/// A field's name with its separators, as each format writes it (` name=` and
/// `,"name":`), so that a line copies it in one go. Made by [`log_key!`].
#[derive(Debug, Clone, Copy)]
pub struct Key {
    text: &'static str,
    json: &'static str,
}

impl Key {
    #[doc(hidden)]
    pub const fn __new(text: &'static str, json: &'static str) -> Key {
        Key { text, json }
    }

    fn separated(&self, format: LogFormat) -> &'static [u8] {
        match format {
            LogFormat::Text => self.text.as_bytes(),
            LogFormat::Json => self.json.as_bytes(),
        }
    }
}

/// A [`Key`] for a field name (a literal that needs no JSON escaping).
#[macro_export]
macro_rules! log_key {
    ($name:literal) => {
        $crate::logging::Key::__new(concat!(" ", $name, "="), concat!(",\"", $name, "\":"))
    };
}

/// ` key=` or `,"key":` for a name known only at run time (a `log` record's fields).
fn write_key(out: &mut Vec<u8>, format: LogFormat, key: &str) {
    match format {
        LogFormat::Text => {
            out.push(b' ');
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
        }
        LogFormat::Json => {
            out.push(b',');
            json_string(out, key);
            out.push(b':');
        }
    }
}

/// A field's value: in text quoted when empty or holding spaces, quotes or '='; in JSON
/// typed and escaped. Numbers and addresses, on every access line, are written with
/// `itoa` rather than the `fmt` machinery.
fn write_value(out: &mut Vec<u8>, format: LogFormat, value: &Field<'_>) {
    match format {
        LogFormat::Text => match value {
            Field::Str(s) if s.is_empty() || s.bytes().any(|b| matches!(b, b' ' | b'"' | b'=')) => {
                let _ = write!(out, "{s:?}");
            }
            Field::Str(s) | Field::Token(s) => out.extend_from_slice(s.as_bytes()),
            Field::U64(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Field::F64(f) => {
                let _ = write!(out, "{f}");
            }
            Field::Millis(us) => write_millis(out, *us),
            Field::Addr(a) => write_addr(out, a),
            Field::Display(d) => write_value(out, format, &Field::Str(&d.to_string())),
        },
        LogFormat::Json => match value {
            Field::Str(s) => json_string(out, s),
            Field::Token(s) => {
                out.push(b'"');
                out.extend_from_slice(s.as_bytes());
                out.push(b'"');
            }
            Field::U64(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Field::F64(f) if f.is_finite() => {
                let _ = write!(out, "{f}");
            }
            Field::F64(_) => out.extend_from_slice(b"null"),
            Field::Millis(us) => write_millis(out, *us),
            Field::Addr(a) => {
                out.push(b'"');
                write_addr(out, a);
                out.push(b'"');
            }
            Field::Display(d) => json_string(out, &d.to_string()),
        },
    }
}

/// `1234` microseconds as `1.23`.
fn write_millis(out: &mut Vec<u8>, micros: u64) {
    let hundredths = (micros + 5) / 10;
    out.extend_from_slice(itoa::Buffer::new().format(hundredths / 100).as_bytes());
    let frac = hundredths % 100;
    out.extend_from_slice(&[b'.', b'0' + (frac / 10) as u8, b'0' + (frac % 10) as u8]);
}

/// A socket address as text. The upstream's address is on every access line and is
/// nearly always the one before: the last one written by this thread is kept as text.
fn write_addr(out: &mut Vec<u8>, addr: &std::net::SocketAddr) {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::SocketAddr, Vec<u8>)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((cached, text)) if cached == addr => out.extend_from_slice(text),
        _ => {
            let mut text = Vec::with_capacity(24);
            let _ = write!(text, "{addr}");
            out.extend_from_slice(&text);
            *last = Some((*addr, text));
        }
    });
}

/// The fields of a `log` record, written like the access line's.
struct KvFields<'a> {
    out: &'a mut Vec<u8>,
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
        write_key(self.out, self.format, key.as_str());
        write_value(self.out, self.format, &field);
        Ok(())
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
            write_key(&mut out, format, k);
            write_value(&mut out, format, v);
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
                ("a6", Field::Addr("[::1]:8080".parse().unwrap())),
                ("a4", Field::Addr(addr)),
                ("t", Field::Token("abc-1.2_3")),
                ("m", Field::Millis(1234)),
                ("m0", Field::Millis(4)),
                ("m1", Field::Millis(120_005)),
            ],
        );
        assert_eq!(
            got,
            " a=plain b=\"two words\" c=\"\" n=7 f=1.5 d=127.0.0.1:80 a4=127.0.0.1:80 \
             a6=[::1]:8080 a6=[::1]:8080 a4=127.0.0.1:80 t=abc-1.2_3 m=1.23 m0=0.00 m1=120.01"
        );
    }

    #[test]
    fn prebuilt_keys_match_run_time_ones() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let mut at_run_time = Vec::new();
            write_key(&mut at_run_time, format, "duration_ms");
            assert_eq!(log_key!("duration_ms").separated(format), at_run_time);
        }
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
                ("t", Field::Token("id-1")),
            ],
        );
        assert_eq!(
            got,
            r#","s":"q\"x\n","n":7,"f":null,"a":"10.0.0.1:3000","m":0.10,"t":"id-1""#
        );
    }
}

//! Log output: `RUST_LOG` picks the level (default `info`), `LOG_FORMAT` the shape: `text`
//! for people (`ts LEVEL target: msg key=value ...`) or `json` for log aggregation (one
//! object per line, structured fields at the top level).
//!
//! Lines are written to stderr by a background thread, so a request never waits on the
//! terminal or the log collector: the request path formats its line and hands it over
//! through a bounded queue. If stderr cannot keep up and the queue fills, lines are dropped
//! and counted rather than stalling the proxy, and the count is logged.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use log::kv::{self, VisitSource};

use crate::settings::LogFormat;

pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Text => builder.format(|buf, record| {
            write!(
                buf,
                "{} {:<5} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )?;
            let mut fields = TextFields(buf);
            let _ = record.key_values().visit(&mut fields);
            writeln!(fields.0)
        }),
        LogFormat::Json => builder.format(|buf, record| {
            // Written field by field: no intermediate map, no allocation per field.
            write!(
                buf,
                "{{\"ts\":\"{}\",\"level\":\"{}\",\"target\":",
                buf.timestamp_millis(),
                record.level()
            )?;
            serde_json::to_writer(&mut *buf, record.target())?;
            buf.write_all(b",\"msg\":")?;
            match record.args().as_str() {
                Some(msg) => serde_json::to_writer(&mut *buf, msg)?,
                None => serde_json::to_writer(&mut *buf, &record.args().to_string())?,
            }
            let mut fields = JsonFields(buf);
            let _ = record.key_values().visit(&mut fields);
            writeln!(fields.0, "}}")
        }),
    };
    // Never colour: lines go to files and collectors, and env_logger would otherwise scan
    // every line for escape codes to strip.
    builder.write_style(env_logger::WriteStyle::Never);
    if let Some(writer) = BackgroundWriter::start() {
        builder.target(env_logger::Target::Pipe(Box::new(writer)));
    }
    // A second init (tests that call it twice) is harmless.
    let _ = builder.try_init();
}

struct TextFields<'a>(&'a mut env_logger::fmt::Formatter);

impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let result = match value.to_borrowed_str() {
            Some(text) if text.is_empty() || text.contains([' ', '"', '=']) => {
                write!(self.0, " {key}={text:?}")
            }
            _ => write!(self.0, " {key}={value}"),
        };
        result.map_err(|_| kv::Error::msg("cannot write the log line"))
    }
}

struct JsonFields<'a>(&'a mut env_logger::fmt::Formatter);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let out = &mut *self.0;
        let result = (|| -> std::io::Result<()> {
            out.write_all(b",")?;
            serde_json::to_writer(&mut *out, key.as_str())?;
            out.write_all(b":")?;
            if let Some(n) = value.to_u64() {
                write!(out, "{n}")
            } else if let Some(n) = value.to_i64() {
                write!(out, "{n}")
            } else if let Some(f) = value.to_f64().filter(|f| f.is_finite()) {
                write!(out, "{f}")
            } else if let Some(text) = value.to_borrowed_str() {
                Ok(serde_json::to_writer(&mut *out, text)?)
            } else {
                Ok(serde_json::to_writer(&mut *out, &value.to_string())?)
            }
        })();
        result.map_err(|_| kv::Error::msg("cannot write the log line"))
    }
}

/// Lines queued for stderr before new ones are dropped.
const QUEUE_LINES: usize = 64 * 1024;

/// `Write` end handed to env_logger: each record arrives as one `write` call.
struct BackgroundWriter {
    queue: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl BackgroundWriter {
    /// `None` if the thread cannot be started; logging then writes to stderr directly.
    fn start() -> Option<Self> {
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || drain(lines, &counter))
            .ok()?;
        Some(BackgroundWriter { queue, dropped })
    }
}

impl Write for BackgroundWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.queue.try_send(buf.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                return std::io::stderr().write(buf);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How long the writer lets lines gather after the first one: under load, one wake-up and
/// one write per batch instead of per line; when idle, a line still shows within this time.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// Write queued lines in batches: block for the first, let more gather, take everything
/// waiting, then one flush.
fn drain(lines: Receiver<Vec<u8>>, dropped: &AtomicU64) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stderr());
    while let Ok(line) = lines.recv() {
        let _ = out.write_all(&line);
        std::thread::sleep(BATCH_WINDOW);
        while let Ok(line) = lines.try_recv() {
            let _ = out.write_all(&line);
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                "beat-gateway: {lost} log lines dropped: stderr is not keeping up"
            );
        }
        let _ = out.flush();
    }
}

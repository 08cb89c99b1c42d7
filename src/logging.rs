//! Log output: `RUST_LOG` picks the level (default `info`), `LOG_FORMAT` the shape: `text`
//! for people (`ts LEVEL target: msg key=value ...`) or `json` for log aggregation (one
//! object per line, structured fields at the top level).

use std::io::Write;

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
            let mut line = serde_json::Map::new();
            line.insert("ts".into(), buf.timestamp_millis().to_string().into());
            line.insert("level".into(), record.level().as_str().into());
            line.insert("target".into(), record.target().into());
            line.insert("msg".into(), record.args().to_string().into());
            let mut fields = JsonFields(&mut line);
            let _ = record.key_values().visit(&mut fields);
            serde_json::to_writer(&mut *buf, &line)?;
            writeln!(buf)
        }),
    };
    // A second init (tests that call it twice) is harmless.
    let _ = builder.try_init();
}

struct TextFields<'a>(&'a mut env_logger::fmt::Formatter);

impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let text = value.to_string();
        let quoted = text.is_empty() || text.contains([' ', '"', '=']);
        let result = if quoted {
            write!(self.0, " {key}={text:?}")
        } else {
            write!(self.0, " {key}={text}")
        };
        result.map_err(|_| kv::Error::msg("cannot write the log line"))
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let json = if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(f) = value.to_f64() {
            f.into()
        } else {
            value.to_string().into()
        };
        self.0.insert(key.as_str().to_owned(), json);
        Ok(())
    }
}

//! hclog JSON lines on stderr, the only log format spire-server turns into leveled log entries:
//! one object per line, `@level` in trace|debug|info|warn|error, `@message`, `@timestamp` with
//! exactly six fractional digits, and every extra field as a string.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Environment variable with an `env_logger` filter (default [`DEFAULT_FILTER`]).
pub(crate) const FILTER_ENV: &str = "AZKV_LOG";
/// The plugin's own records down to debug; other crates from info. ureq logs several debug
/// lines per HTTP request (pool, resolver, request and response heads): at debug they were
/// most of the plugin's signing cost, and spire-server has to read and parse every line.
pub(crate) const DEFAULT_FILTER: &str =
    "info,azkv=debug,azure_key_vault=debug,grpc=warn,grpcio=warn";

/// hclog's name for `level`.
fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// `2006-01-02T15:04:05.000000Z`.
pub(crate) fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, micros) = (d.as_secs() as i64, d.subsec_micros());
    let (sod, (y, m, day)) = (secs % 86_400, civil_from_days(secs / 86_400));
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct FieldCollector<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for FieldCollector<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        // The three hclog keys are reserved: a field named like them would break SPIRE's parser.
        let k = match key.as_str() {
            k if k.starts_with('@') => format!("_{k}"),
            k => k.to_owned(),
        };
        self.0.insert(k, value.to_string().into());
        Ok(())
    }
}

/// One hclog JSON line (without the newline) for `record` at `now`.
pub(crate) fn format_record(record: &log::Record<'_>, now: SystemTime) -> String {
    let mut map = serde_json::Map::new();
    map.insert("@level".into(), level_name(record.level()).into());
    map.insert("@message".into(), record.args().to_string().into());
    map.insert("@timestamp".into(), format_timestamp(now).into());
    if !record.target().starts_with("azkv") && !record.target().starts_with("azure_key_vault") {
        map.insert("@module".into(), record.target().to_string().into());
    }
    let _ = record.key_values().visit(&mut FieldCollector(&mut map));
    // serde_json escapes newlines, so a message can never span lines.
    serde_json::Value::Object(map).to_string()
}

/// Installs the logger. Safe to call more than once (later calls do nothing).
pub fn init() {
    let filter = std::env::var(FILTER_ENV).unwrap_or_else(|_| DEFAULT_FILTER.into());
    let _ = builder(&filter).try_init();
}

/// The logger for an `env_logger` filter string.
fn builder(filter: &str) -> env_logger::Builder {
    let mut b = env_logger::Builder::new();
    b.parse_filters(filter)
        .target(env_logger::Target::Stderr)
        // ureq's protocol layer dumps raw HTTP (bearer tokens included) at trace: never let it out.
        .filter_module("ureq_proto", log::LevelFilter::Info)
        .filter_module("rustls", log::LevelFilter::Warn)
        .format(|buf, record| {
            if !crate::azure::http::log_record_allowed(record.target(), record.level()) {
                return Ok(());
            }
            let line = format_record(record, SystemTime::now());
            writeln!(buf, "{line}")
        });
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;
    use std::time::Duration;

    #[test]
    fn default_filter_keeps_our_debug_lines_and_drops_other_crates_debug_lines() {
        let logger = builder(DEFAULT_FILTER).build();
        let on = |target: &str, level| {
            logger.enabled(&log::Metadata::builder().target(target).level(level).build())
        };
        assert!(on("azkv::keys", log::Level::Debug));
        assert!(on("azure_key_vault", log::Level::Debug));
        assert!(!on("azkv::azure::keyvault", log::Level::Trace));
        // ureq writes several debug lines per HTTP request.
        assert!(!on("ureq::pool", log::Level::Debug));
        assert!(!on("ureq::unversioned::resolver", log::Level::Debug));
        assert!(on("ureq::pool", log::Level::Warn));
        assert!(!on("grpc", log::Level::Info));
        // An explicit filter still reaches them.
        assert!(builder("debug").build().enabled(
            &log::Metadata::builder()
                .target("ureq::pool")
                .level(log::Level::Debug)
                .build()
        ));
    }

    #[test]
    fn timestamp_has_six_fraction_digits() {
        let t = UNIX_EPOCH + Duration::from_micros(1_748_781_296_123_456);
        assert_eq!(format_timestamp(t), "2025-06-01T12:34:56.123456Z");
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_timestamp(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn record_is_one_json_object_with_string_fields() {
        let kvs: &[(&str, i64)] = &[("count", 3)];
        let record = log::Record::builder()
            .level(log::Level::Warn)
            .target("azkv::keys")
            .args(format_args!("line one\nline two \"quoted\""))
            .key_values(&kvs)
            .build();
        let line = format_record(&record, UNIX_EPOCH);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["@level"], "warn");
        assert_eq!(v["@message"], "line one\nline two \"quoted\"");
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["count"], "3");
        assert!(v.get("@module").is_none());
    }

    #[test]
    fn levels_are_hclog_names() {
        for (level, name) in [
            (log::Level::Error, "error"),
            (log::Level::Warn, "warn"),
            (log::Level::Info, "info"),
            (log::Level::Debug, "debug"),
            (log::Level::Trace, "trace"),
        ] {
            let record = log::Record::builder().level(level).build();
            let v: serde_json::Value =
                serde_json::from_str(&format_record(&record, UNIX_EPOCH)).unwrap();
            assert_eq!(v["@level"], name);
        }
    }
}

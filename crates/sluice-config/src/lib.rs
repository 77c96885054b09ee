//! Sluice configuration, in layers: compiled-in defaults, then a TOML file, then `SLUICE__SECTION__KEY`
//! environment variables, then command-line flags. Unknown keys and bad values are errors that name the key.
//!
//! Main types: [`Config`] (the whole file), [`ByteSize`] and [`HumanDuration`] (values like `"32MiB"` and
//! `"7d"`), [`FsyncSetting`], [`TopicConfig`] (topics declared in the file).
//!
//! Modules: `sections` (every section and its defaults), `load` (layering, validation, rendering), `units` (the
//! value types).

mod load;
mod sections;
mod units;

pub use sections::*;
pub use units::*;

#[cfg(test)]
// figment's Jail API returns its large error type by value.
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;

    use figment::Jail;

    fn load_str(jail: &mut Jail, toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        jail.create_file("sluice.toml", toml).unwrap();
        for (k, v) in env {
            jail.set_env(k, v);
        }
        Config::load(Some(Path::new("sluice.toml")), &Overrides::default())
    }

    fn err(toml: &str, env: &[(&str, &str)]) -> String {
        let mut out = String::new();
        Jail::expect_with(|jail| {
            out = load_str(jail, toml, env).unwrap_err().to_string();
            Ok(())
        });
        out
    }

    #[test]
    fn defaults_need_no_file() {
        Jail::expect_with(|_| {
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c, Config::default());
            assert_eq!(c.data_dir, PathBuf::from("./sluice-data"));
            assert_eq!(c.limits.max_body_bytes, ByteSize(32 << 20));
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            let toml = "data_dir = \"/a\"\n[log]\ndefault_partitions = 2\nfsync = \"50ms\"\n[[topics]]\nname = \"t\"\npartitions = 3\n";
            let env = [("SLUICE__LOG__DEFAULT_PARTITIONS", "6"), ("SLUICE__LIMITS__MAX_BODY_BYTES", "4MiB")];
            let c = load_str(jail, toml, &env).unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/a"));
            assert_eq!(c.log.default_partitions, 6);
            assert_eq!(c.log.fsync, FsyncSetting::Interval(HumanDuration(Duration::from_millis(50))));
            assert_eq!(c.limits.max_body_bytes, ByteSize(4 << 20));
            assert_eq!(c.topics[0].partitions, Some(3));
            let o = Overrides {
                data_dir: Some("/b".into()),
                http_addr: Some("0.0.0.0:9".parse().unwrap()),
                log_format: Some(LogFormat::Json),
            };
            let c = Config::load(Some(Path::new("sluice.toml")), &o).unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/b"));
            assert_eq!(c.http.addr.port(), 9);
            assert_eq!(c.logging.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err("[log]\nfsynk = \"always\"\n", &[]);
        assert!(e.contains("log.fsynk") && e.contains("sluice.toml"), "{e}");
        let e = err("", &[("SLUICE__LIMITS__MAX_BODY", "1")]);
        assert!(e.contains("limits.max_body") && e.contains("SLUICE__"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = err("[log]\nfsync = \"sometimes\"\n", &[]);
        assert!(e.contains("log.fsync") && e.contains("sometimes"), "{e}");
        let e = err("[limits]\nmax_json_depth = 0\n", &[]);
        assert!(e.contains("limits.max_json_depth"), "{e}");
        let e = err("[limits]\nmax_body_bytes = \"12 parsecs\"\n", &[]);
        assert!(e.contains("limits.max_body_bytes"), "{e}");
        let e = err("[http]\naddr = \"nowhere\"\n", &[]);
        assert!(e.contains("http.addr"), "{e}");
        let e = err("[[topics]]\nname = \"a\"\n[[topics]]\nname = \"a\"\n", &[]);
        assert!(e.contains("declared twice"), "{e}");
    }

    #[test]
    fn tracing_section() {
        assert!(Config::default().tracing.otlp_endpoint.is_empty(), "export is off by default");
        let e = err("[tracing]\nsample_ratio = 1.5\n", &[]);
        assert!(e.contains("tracing.sample_ratio"), "{e}");
        let e = err("[tracing]\notlp_endpoint = \"localhost:4318\"\n", &[]);
        assert!(e.contains("tracing.otlp_endpoint"), "{e}");
        Jail::expect_with(|jail| {
            let env = [("SLUICE__TRACING__SAMPLE_RATIO", "0.5")];
            let c = load_str(jail, "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n", &env).unwrap();
            assert_eq!((c.tracing.otlp_endpoint.as_str(), c.tracing.sample_ratio), ("http://127.0.0.1:4318", 0.5));
            Ok(())
        });
    }

    #[test]
    fn alerts_section_parses() {
        Jail::expect_with(|jail| {
            let toml = "[alerts]\nlag_records = 50\ne2e_p99 = \"250ms\"\nerror_rate = 0.01\ndisk_used_ratio = 0.9\nfor = \"2s\"\nwindow = \"10s\"\neval_interval = \"200ms\"\n";
            let c = load_str(jail, toml, &[("SLUICE__ALERTS__DISK_SCAN_INTERVAL", "5s")]).unwrap();
            let a = &c.alerts;
            assert_eq!(a.lag_records, 50);
            assert_eq!(a.e2e_p99.0, Duration::from_millis(250));
            assert_eq!((a.error_rate, a.disk_used_ratio), (0.01, 0.9));
            assert_eq!(a.for_.0, Duration::from_secs(2));
            assert_eq!(a.window.0, Duration::from_secs(10));
            assert_eq!(a.eval_interval.0, Duration::from_millis(200));
            assert_eq!(a.disk_scan_interval.0, Duration::from_secs(5));
            assert_eq!(Config::default().alerts.lag_records, 10_000);
            Ok(())
        });
        let e = err("[alerts]\nerror_rate = 2\n", &[]);
        assert!(e.contains("alerts.error_rate"), "{e}");
        let e = err("[alerts]\nwindow = \"1s\"\n", &[]);
        assert!(e.contains("alerts.window"), "{e}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = Config::load(Some(Path::new("/nonexistent/sluice.toml")), &Overrides::default());
        assert!(matches!(e, Err(ConfigError::FileNotFound(_))));
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(ByteSize::parse("32MiB").unwrap(), ByteSize(32 << 20));
        assert_eq!(ByteSize::parse("1000").unwrap(), ByteSize(1000));
        assert_eq!(ByteSize::parse("2 GB").unwrap(), ByteSize(2_000_000_000));
        assert!(ByteSize::parse("MiB").is_err());
        assert_eq!(ByteSize(32 << 20).to_string(), "32MiB");
        Jail::expect_with(|jail| {
            let c = load_str(jail, "[log]\nretention = \"forever\"\n", &[]).unwrap();
            assert_eq!(c.log.retention, Retention(None));
            // The TOML printed by `config check` loads back to the same config.
            let printed = Config::default().to_toml();
            assert_eq!(load_str(jail, &printed, &[]).unwrap(), Config::default());
            Ok(())
        });
    }
}

//! Ferry's configuration: TOML files with `${VAR}` expansion, validated into typed pipelines.
//!
//! Parsing and validation are separate and pure: [`load_str`] reports every problem of a file at once, each with
//! the file, the key path and the expected form. Connecting to servers comes later (`ferry check`).

mod env;
mod model;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use env::{expand, ExpandError};
pub use model::{
    Case, ColumnRef, ConflictPolicy, ConflictRule, DecimalHandling, FilterConfig, KafkaFormat,
    KafkaSink, KafkaSource, KafkaTopics, MaskKind, MergeRule, MysqlSource, OriginFilter,
    PipelineConfig, PostgresSource, Resolver, RouteTo, RowErrorPolicy, SchemaChangePolicy,
    SinkConfig, SinkKind, SnapshotMode, SourceConfig, TransformConfig, TransformKind,
};
pub use validate::parse_duration;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path, e.g. `sink[1].url`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Parses and validates config text. `env` looks up `${VAR}` references.
pub fn load_str(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PipelineConfig, ConfigErrors> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let key = match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                format!("line {line}")
            }
            None => "(syntax)".to_owned(),
        };
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            key,
            message: format!("not valid TOML: {}", e.message()),
        }])
    })?;
    validate::validate(file, &doc, env)
}

/// Reads, parses and validates a config file using the process environment.
pub fn load_file(file: &Path) -> Result<PipelineConfig, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str(file, &text, &|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<PipelineConfig, ConfigErrors> {
        load_str(Path::new("/etc/ferry/p.toml"), text, &|n| {
            (n == "PW").then(|| "pw".to_owned())
        })
    }

    const GOOD: &str = r#"
        [pipeline]
        name = "orders"
        [source]
        type = "postgres"
        url = "postgres://ferry:${PW}@127.0.0.1:5432/shop"
        tables = ["public.orders", "items"]
        [sink]
        type = "sqlite"
        path = "replica.db"
    "#;

    #[test]
    fn reads_a_complete_pipeline() {
        let p = load(GOOD).unwrap();
        assert_eq!(p.name, "orders");
        let SourceConfig::Postgres(pg) = &p.source else {
            panic!("not a PostgreSQL source")
        };
        assert_eq!(pg.url, "postgres://ferry:pw@127.0.0.1:5432/shop");
        assert_eq!(pg.slot, "ferry_orders");
        assert_eq!(pg.snapshot, SnapshotMode::Initial);
        assert_eq!(pg.tables.as_ref().unwrap()[1].to_string(), "public.items");
        assert_eq!(
            p.sinks[0].kind,
            SinkKind::Sqlite {
                path: "/etc/ferry/replica.db".into()
            }
        );
        assert_eq!(
            p.heartbeat_interval,
            Some(std::time::Duration::from_secs(10))
        );
    }

    #[test]
    fn the_spool_directory_is_relative_to_the_file_and_checked() {
        let SourceConfig::Postgres(pg) = load(GOOD).unwrap().source else {
            panic!("not a PostgreSQL source")
        };
        assert_eq!(pg.spool_dir, None);
        assert!(!pg.streaming, "streaming is off unless asked for");
        let with = GOOD.replace(
            "tables = [",
            "spool_dir = \"spool\"\n        streaming = true\n        tables = [",
        );
        let SourceConfig::Postgres(pg) = load(&with).unwrap().source else {
            panic!("not a PostgreSQL source")
        };
        assert_eq!(pg.spool_dir, Some("/etc/ferry/spool".into()));
        assert!(pg.streaming);
        let wrong = GOOD.replace("tables = [", "spool_dir = 5\n        tables = [");
        let e = load(&wrong).unwrap_err().to_string();
        assert!(
            e.contains("source.spool_dir") && e.contains("expected a directory"),
            "{e}"
        );
    }

    #[test]
    fn reports_every_error_with_key_and_expectation() {
        let text = r#"
            [pipeline]
            name = "bad name"
            colour = "red"
            [source]
            type = "postgres"
            url = "mysql://x"
            snapshot = "sometimes"
            [[sink]]
            type = "postgres"
            [[sink]]
            type = "kafkaa"
        "#;
        let errs = load(text).unwrap_err();
        let keys: Vec<_> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "pipeline.name",
                "pipeline.colour",
                "source.url",
                "source.snapshot",
                "sink[0].url",
                "sink[1].type"
            ]
        );
        let text = errs.to_string();
        assert!(text.contains("/etc/ferry/p.toml: source.snapshot: expected \"initial\", \"never\" or \"only\", found \"sometimes\""), "{text}");
        assert!(
            text.contains("pipeline.colour: unknown key; expected one of:"),
            "{text}"
        );
    }

    #[test]
    fn a_kafka_source_reads_as_written_and_reports_every_error_at_once() {
        let good = r#"
            [pipeline]
            name = "replica"
            [source]
            type = "kafka"
            brokers = "127.0.0.1:9092"
            topics = ["shop.public.orders", "shop.public.customers"]
            group_id = "ferry-replica-eu"
            format = "json"
            [source.kafka]
            "security.protocol" = "SASL_SSL"
            [[sink]]
            type = "postgres"
            url = "postgres://h/db"
        "#;
        let SourceConfig::Kafka(k) = load(good).unwrap().source else {
            panic!("not a Kafka source")
        };
        assert_eq!(k.group_id, "ferry-replica-eu");
        assert_eq!(
            k.topics,
            KafkaTopics::List(vec![
                "shop.public.orders".into(),
                "shop.public.customers".into()
            ])
        );
        assert_eq!(
            (k.assignment.as_str(), k.from_earliest),
            ("cooperative-sticky", true)
        );
        assert_eq!(
            k.properties,
            [("security.protocol".to_owned(), "SASL_SSL".to_owned())]
        );

        let bad = r#"
            [pipeline]
            name = "replica"
            [source]
            type = "kafka"
            brokers = "127.0.0.1:9092"
            topics = ["shop orders"]
            topic_pattern = "shop.*"
            group_id = ""
            assignment = "sticky"
            [[sink]]
            type = "kafka"
            brokers = "h:9092"
        "#;
        let errs = load(bad).unwrap_err();
        let keys: Vec<_> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "source.topic_pattern",
                "source.group_id",
                "source.assignment",
                "sink[0].type"
            ],
            "{errs}"
        );
    }

    #[test]
    fn unknown_keys_are_reported_beside_a_missing_required_key() {
        let text = r#"
            [pipeline]
            name = "p"
            [source]
            type = "postgres"
            tabels = ["public.t"]
            [sink]
            type = "kafka"
            partitions = 0
            formatt = "json"
            delivery = "sometimes"
        "#;
        let errs = load(text).unwrap_err();
        let keys: Vec<_> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "source.url",
                "source.tabels",
                "sink.brokers",
                "sink.delivery",
                "sink.partitions",
                "sink.formatt"
            ],
            "{errs}"
        );
    }

    #[test]
    fn a_server_id_beyond_32_bits_is_refused_not_truncated() {
        let text = GOOD.replace(
            "type = \"postgres\"\n        url = \"postgres://ferry:${PW}@127.0.0.1:5432/shop\"\n        tables = [\"public.orders\", \"items\"]",
            "type = \"mysql\"\n        url = \"mysql://ferry@127.0.0.1:3306/shop\"\n        server_id = 4294967297",
        );
        let errs = load(&text).unwrap_err();
        assert_eq!(errs.0.len(), 1, "{errs}");
        assert_eq!(errs.0[0].key, "source.server_id");
    }

    #[test]
    fn every_numeric_setting_is_bounded_and_names_are_not_empty() {
        let text = GOOD
            .replace(
                "name = \"orders\"",
                "name = \"orders\"\n        snapshot_parallelism = 9223372036854775807\n        \
                 source_timeout = \"0s\"\n        heartbeat_interval = \"1ms\"\n        \
                 [pipeline.batch]\n        max_events = 0\n        max_bytes = 99999999999999",
            )
            .replace(
                "tables = [\"public.orders\", \"items\"]",
                "tables = [\"public.orders\", \"items\"]\n        slot = \"\"\n        publication = \"\"",
            )
            .replace("path = \"replica.db\"", "path = \"\"");
        let errs = load(&text).unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "pipeline.snapshot_parallelism",
            "pipeline.source_timeout",
            "pipeline.heartbeat_interval",
            "pipeline.batch.max_events",
            "pipeline.batch.max_bytes",
            "source.slot",
            "source.publication",
            "sink.path",
        ] {
            assert!(keys.contains(&key), "{key} not reported: {errs}");
        }
        assert!(
            errs.to_string()
                .contains("expected an integer from 1 to 64"),
            "{errs}"
        );
        let slot = load(&GOOD.replace(
            "tables = [\"public.orders\", \"items\"]",
            "slot = \"Bad-Slot\"",
        ))
        .unwrap_err();
        assert_eq!(slot.0[0].key, "source.slot", "{slot}");
    }

    #[test]
    fn unset_variable_names_the_key() {
        let errs = load(&GOOD.replace("${PW}", "${MISSING}")).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].key, "source.url");
        assert!(errs.0[0].message.contains("MISSING is not set"));
    }

    #[test]
    fn a_bad_sslmode_is_reported_with_its_key() {
        let text = GOOD.replace("/shop\"", "/shop?sslmode=verify\"");
        let errs = load(&text).unwrap_err();
        assert_eq!(errs.0.len(), 1, "{errs}");
        assert_eq!(errs.0[0].key, "source.url");
        assert!(
            errs.0[0].message.contains("verify-ca or verify-full"),
            "{errs}"
        );
    }

    #[test]
    fn reads_a_mysql_source() {
        let text = GOOD
            .replace("type = \"postgres\"", "type = \"mysql\"\nserver_id = 4242")
            .replace(
                "postgres://ferry:${PW}@127.0.0.1:5432",
                "mysql://ferry@127.0.0.1:3306",
            );
        assert_ne!(text, GOOD, "the replacement must hit");
        let p = load(&text).unwrap();
        let SourceConfig::Mysql(my) = &p.source else {
            panic!("not a MySQL source: {:?}", p.source)
        };
        assert_eq!(my.server_id, Some(4242));
        let errs = load(&text.replace("mysql://", "http://")).unwrap_err();
        assert!(
            errs.to_string().contains("mysql:// or mariadb://"),
            "{errs}"
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let errs = load("[pipeline]\nname = \n").unwrap_err();
        assert!(errs.0[0].key.starts_with("line "), "{errs}");
    }

    #[test]
    fn duplicate_sink_names_are_rejected() {
        let text = GOOD.to_owned() + "\n[[sink]]\n";
        assert!(load(&text).is_err());
        let fan_out = GOOD.replace("[sink]", "[[sink]]")
            + "[[sink]]\ntype = \"sqlite\"\npath = \"b.db\"\nname = \"sqlite\"\n";
        let errs = load(&fan_out).unwrap_err();
        assert!(errs.to_string().contains("used twice"), "{errs}");
    }

    #[test]
    fn reads_the_transform_chain_as_documented() {
        let text = format!(
            "{GOOD}\n{}",
            r#"
            [[transform]]
            type = "filter"
            tables = ["public.orders"]
            where = "op == 'd' || after.status != 'draft'"
            [[transform]]
            type = "mask"
            columns = ["public.customers.email"]
            with = "sha256"
            salt = "${PW}"
            [[transform]]
            type = "compute"
            tables = ["public.customers"]
            column = "full_name"
            column_type = "text"
            expression = "after.first_name + ' ' + after.last_name"
            [[transform]]
            type = "route"
            tables = ["public.orders"]
            to = "archive.orders_v2"
            "#
        );
        let p = load(&text).unwrap();
        assert_eq!(p.transforms.len(), 4);
        // `table = "…"` is one table.
        let one = load(&format!(
            "{GOOD}\n[[transform]]\ntype = \"filter\"\ntable = \"public.orders\"\nwhere = \"true\"\n"
        ))
        .unwrap();
        assert_eq!(
            one.transforms[0].tables,
            Some(vec!["public.orders".to_owned()])
        );
        assert_eq!(p.transforms[2].key, "transform[2]");
        assert_eq!(
            p.transforms[1].kind,
            TransformKind::Mask {
                columns: vec![ColumnRef {
                    table: Some("public.customers".into()),
                    column: "email".into()
                }],
                with: MaskKind::Sha256 { salt: "pw".into() }
            }
        );
        // The salt is a secret: never in a debug print.
        assert!(!format!("{:?}", p.transforms[1]).contains("pw\""));
    }

    #[test]
    fn every_transform_error_is_reported_at_once_with_its_key() {
        let text = format!(
            "{GOOD}\n{}",
            r#"
            [[transform]]
            type = "filter"
            where = "after.status != "
            [[transform]]
            type = "compute"
            column = "x"
            column_type = "varchar"
            expression = "1 +"
            [[transform]]
            type = "mask"
            columns = ["a.b.c.d"]
            with = "sha256"
            [[transform]]
            type = "convert"
            columns = ["c"]
            zone = "Mars/Olympus"
            [[transform]]
            type = "uppercase"
            [[transform]]
            type = "route"
            [[transform]]
            type = "filter"
            where = "true"
            on_error = "retry"
            "#
        );
        let errors = load(&text).unwrap_err().0;
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "transform[0].where",
            "transform[1].column_type",
            "transform[1].expression",
            "transform[2].columns[0]",
            "transform[2].salt",
            "transform[3].zone",
            "transform[3].to",
            "transform[4].type",
            "transform[5].to",
            "transform[6].on_error",
        ] {
            assert!(keys.contains(&key), "{key} missing from {errors:#?}");
        }
        let cel = errors
            .iter()
            .find(|e| e.key == "transform[0].where")
            .unwrap();
        assert!(
            cel.message.contains("not a valid CEL expression"),
            "{}",
            cel.message
        );
        assert!(errors
            .iter()
            .all(|e| e.file == Path::new("/etc/ferry/p.toml")));
    }

    /// Every file in examples/ is a valid config as written (with its `${VAR}`s set).
    #[test]
    fn the_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                load_str(&path, &text, &|_| Some("x".to_owned()))
                    .unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 5, "{n} examples");
    }

    /// The issue's keys as written: on_error, retry, per-table rules, alerts; and each mistake named by its key.
    #[test]
    fn row_error_and_alert_keys_load_and_their_errors_name_the_key() {
        let text = "[pipeline]\nname = \"p\"\non_error = \"dead_letter\"\nmax_dead_letters = 50\n\
             [pipeline.retry]\ninitial = \"100ms\"\nmax = \"30s\"\nattempts = 5\n\
             [[pipeline.on_error_rules]]\ntables = [\"public.audit\"]\non_error = \"skip\"\n\
             [pipeline.alerts]\nlag_seconds = 30\nlag_bytes = \"1GB\"\nretained_wal = \"10GB\"\nreadyz = true\n\
             [source]\ntype = \"postgres\"\nurl = \"postgres://h/d\"\n[[sink]]\ntype = \"postgres\"\nurl = \"postgres://h/e\"\n";
        let p = load(text).unwrap();
        let e = &p.row_errors;
        assert_eq!(e.on_error, ferry_core::OnError::DeadLetter);
        assert_eq!(e.max_dead_letters, 50);
        assert_eq!(e.retry.initial, std::time::Duration::from_millis(100));
        assert_eq!(e.retry.max, std::time::Duration::from_secs(30));
        assert_eq!(e.retry.attempts, 5);
        assert_eq!(
            e.for_table(&ferry_core::TableId::new("public", "audit")),
            ferry_core::OnError::Skip
        );
        assert_eq!(p.alerts.lag_seconds, Some(30.0));
        assert_eq!(p.alerts.lag_bytes, Some(1 << 30));
        assert_eq!(p.alerts.retained_wal, Some(10 << 30));
        assert!(p.alerts.readyz);

        let bad = "[pipeline]\nname = \"p\"\non_error = \"ignore\"\nheartbeat_interval = \"10s\"\n\
                   [pipeline.retry]\ninitial = \"1m\"\nmax = \"1s\"\nattempts = 0\n\
                   [[pipeline.on_error_rules]]\ntables = [\"audit\"]\n\
                   [pipeline.alerts]\nlag_seconds = 5\nlag_bytes = \"lots\"\n\
                   [source]\ntype = \"postgres\"\nurl = \"postgres://h/d\"\n[[sink]]\ntype = \"postgres\"\nurl = \"postgres://h/e\"\n";
        let errors = load(bad).unwrap_err().0;
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "pipeline.on_error",
            "pipeline.retry.max",
            "pipeline.retry.attempts",
            "pipeline.on_error_rules[0].on_error",
            "pipeline.alerts.lag_seconds",
            "pipeline.alerts.lag_bytes",
        ] {
            assert!(keys.contains(&key), "{key} missing from {errors:#?}");
        }
    }

    /// A stage may set failing rows aside only when every sink keeps dead letters.
    #[test]
    fn a_transform_dead_letter_needs_sinks_that_keep_them() {
        let stage = "[[transform]]\ntype = \"convert\"\ncolumns = [\"n\"]\nto = \"bigint\"\non_error = \"dead_letter\"\n";
        let head =
            "[pipeline]\nname = \"p\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://h/d\"\n";
        let sql = format!("{head}{stage}[[sink]]\ntype = \"postgres\"\nurl = \"postgres://h/e\"\n");
        let p = load(&sql).unwrap();
        assert_eq!(p.transforms[0].on_error, RowErrorPolicy::DeadLetter);
        let kafka = format!(
            "{head}{stage}[[sink]]\ntype = \"postgres\"\nurl = \"postgres://h/e\"\n\
             [[sink]]\ntype = \"kafka\"\nbrokers = \"h:9092\"\ndead_letter_topic = \"refused\"\n"
        );
        let p = load(&kafka).unwrap();
        let SinkKind::Kafka(k) = &p.sinks[1].kind else {
            panic!()
        };
        assert_eq!(k.dead_letter_topic, "refused");
        let discard = format!("{head}{stage}[[sink]]\ntype = \"discard\"\npath = \"/tmp/x.pos\"\n");
        let errors = load(&discard).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].key, "transform[0].on_error");
        assert!(
            errors[0].message.contains("discard"),
            "{}",
            errors[0].message
        );
    }

    /// Multi-master keys: node, origins, conflict resolvers, rules with merges and version vectors.
    #[test]
    fn conflict_rules_load_and_their_errors_name_the_key() {
        let text = "[pipeline]\nname = \"p\"\nnode = \"a\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://h/d\"\n\
             skip_origins = [\"ferry_b\"]\n[[sink]]\ntype = \"postgres\"\nurl = \"postgres://h/e\"\n\
             conflict = \"first_write_wins\"\n[[sink.conflict_rules]]\ntables = [\"public.c*\"]\n\
             columns = { n = \"sum_delta\", tags = \"union\" }\nversion_vectors = true\n";
        let p = load(text).unwrap();
        assert_eq!(p.node.as_deref(), Some("a"));
        let SourceConfig::Postgres(source) = &p.source else {
            panic!()
        };
        assert_eq!(source.origins, OriginFilter::Skip(vec!["ferry_b".into()]));
        let c = &p.sinks[0].conflicts;
        assert_eq!(c.default, Some(Resolver::FirstWriteWins));
        let t = ferry_core::TableId::new("public", "counters");
        let (resolver, columns) = c.for_table(&t).unwrap();
        assert_eq!(resolver, Resolver::FirstWriteWins);
        assert_eq!(columns.len(), 2);
        assert!(c.vectors_for(&t));
        assert!(!c.vectors_for(&ferry_core::TableId::new("public", "orders")));

        let bad = "[pipeline]\nname = \"p\"\nnode = \"a b\"\n[source]\ntype = \"postgres\"\n\
                   url = \"postgres://h/d\"\norigins = \"local\"\nskip_origins = [\"x\"]\n\
                   [[sink]]\ntype = \"mysql\"\nurl = \"mysql://h/d\"\nconflict = \"newest\"\n\
                   [[sink.conflict_rules]]\ntables = [\"public.t\"]\ncolumns = { a = \"avg\", b = \"union\" }\n\
                   version_vectors = true\n[[sink.conflict_rules]]\ntables = [\"public.u\"]\n\
                   [[sink]]\ntype = \"discard\"\npath = \"x.pos\"\nconflict = \"keep_local\"\n";
        let errors = load(bad).unwrap_err().0;
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "pipeline.node",
            "source.skip_origins",
            "sink[0].conflict",
            "sink[0].conflict_rules[0].columns.a",
            "sink[0].conflict_rules[1]",
            "sink[1].conflict",
        ] {
            assert!(keys.contains(&key), "{key} missing from {errors:#?}");
        }
        // MySQL sinks take union (computed in Ferry from the locked row) and version vectors.
        assert!(!keys.contains(&"sink[0].conflict_rules[0].columns.b"));
        assert!(!keys.contains(&"sink[0].conflict_rules[0].version_vectors"));

        // SQLite sinks take conflict rules like the other SQL sinks.
        let sqlite =
            "[pipeline]\nname = \"p\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://h/d\"\n\
             [[sink]]\ntype = \"sqlite\"\npath = \"r.db\"\nconflict = \"last_write_wins\"\n";
        let config = load(sqlite).unwrap();
        assert!(config.sinks[0].conflicts.default.is_some());

        // A rule with only a merge expression puts its tables under a policy, even without a default resolver.
        let merge_only = "[pipeline]\nname = \"p\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://h/d\"\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"mysql://h/d\"\n[[sink.conflict_rules]]\ntables = [\"public.m\"]\n\
             merge = '{\"a\": local.a}'\n";
        let p = load(merge_only).unwrap();
        let c = &p.sinks[0].conflicts;
        assert!(c
            .for_table(&ferry_core::TableId::new("public", "m"))
            .is_some());
        assert!(c
            .for_table(&ferry_core::TableId::new("public", "n"))
            .is_none());
    }

    /// CEL's parser recurses per nesting level: deep expressions are refused before it runs, never a crash.
    #[test]
    fn deeply_nested_expressions_are_errors_not_stack_overflows() {
        let filter =
            |e: &str| format!("{GOOD}\n[[transform]]\ntype = \"filter\"\nwhere = \"{e}\"\n");
        // Long chains of unary and binary operators parse without recursing per operator.
        for expression in [
            format!("{}true", "!".repeat(20000)),
            format!("{}1 > 0", "-".repeat(20001)),
            format!("true{}", " || true".repeat(10000)),
        ] {
            load(&filter(&expression)).unwrap();
        }
        for expression in [
            format!("{}true{}", "(".repeat(60), ")".repeat(60)),
            format!("{}1]", "[".repeat(5000)),
            format!("true{}", " || true".repeat(20000)),
        ] {
            let errors = load(&filter(&expression)).map(|_| ()).unwrap_err().0;
            assert!(
                errors.iter().any(|e| e.key == "transform[0].where"),
                "{errors:?}"
            );
        }
    }
}

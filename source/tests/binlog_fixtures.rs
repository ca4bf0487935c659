//! Real binlog files written by MySQL 5.x–9.x, Percona and MariaDB (tests/fixtures/mysql-binlog/README.md),
//! decoded by the same decoder the live stream uses. No MySQL server can be installed on the build machines, so
//! these files are how MySQL-only formats are tested: v2 rows events, MySQL GTIDs (plain and tagged), binary
//! JSON with opaque values, zstd transaction payloads, metadata levels.

use ferry_core::{Change, Decimal, Event, Position, RowOp, Timestamp, Value};
use ferry_source::mysql::decoder::{Selection, UnknownDdl};
use ferry_source::mysql::file::decode_file;

fn decode(name: &str) -> Vec<Event> {
    let path = format!(
        "{}/tests/fixtures/mysql-binlog/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    decode_file(name, &bytes, Selection::All, UnknownDdl::Skip)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn rows(events: &[Event]) -> Vec<&RowOp> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Change(Change::Row { op, .. }) => Some(op),
            _ => None,
        })
        .collect()
}

fn after(op: &RowOp) -> &[Value] {
    match op {
        RowOp::Insert { after } | RowOp::Read { after } | RowOp::Update { after, .. } => after,
        RowOp::Delete { before } => before,
    }
}

fn commits(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Commit { position, .. } => Some(position.to_string()),
            _ => None,
        })
        .collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[test]
fn mariadb_gtids_enums_and_timestamps() {
    let events = decode("rmc__mariadb-bin.000001");
    assert_eq!(
        commits(&events),
        [
            "mysql:rmc__mariadb-bin.000001:702;gtid=0-1-1",
            "mysql:rmc__mariadb-bin.000001:1074;gtid=0-1-2"
        ]
    );
    let rows = rows(&events);
    assert_eq!(
        after(rows[0]),
        [
            Value::Int(62),
            text("foo"),
            text("JSON"),
            Value::Bytes(b"{\"foo\":1}".to_vec()),
            Value::TimestampTz(Timestamp::from_unix_micros(1_650_493_084_000_000)),
        ]
    );
    // Begin carries the transaction's first byte and its own GTID, Commit the end of its last: the next
    // transaction starts there.
    let begins: Vec<&ferry_core::TxContext> = events
        .iter()
        .filter_map(|e| match e {
            Event::Begin(tx) => Some(&**tx),
            _ => None,
        })
        .collect();
    assert_eq!(
        begins[1].commit_at,
        "mysql:rmc__mariadb-bin.000001:702;gtid=0-1-2"
            .parse::<Position>()
            .unwrap()
    );
    // Its context: the GTID and server of the GTID event, and that header's seconds as the commit time.
    assert_eq!(begins[1].origin.gtid.as_deref(), Some("0-1-2"));
    assert_eq!(begins[1].origin.server_id, Some(1));
    assert_eq!(
        begins[1].commit_time.and_then(|t| t.unix_micros()),
        Some(1_650_493_195_000_000)
    );
}

#[test]
fn mysql8_enum_and_set_labels_from_full_metadata() {
    let events = decode("rmc__mysql-enum-string-set.000001");
    let schema = events
        .iter()
        .find_map(|e| match e {
            Event::Schema(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["f1", "f2", "f3", "f4", "f5"]);
    assert_eq!(
        schema.columns[3].source_type,
        "set('one','two','three','four')"
    );
    let rows = rows(&events);
    assert_eq!(rows.len(), 3);
    assert_eq!(
        &after(rows[2])[..4],
        [
            text("field1"),
            text("field_2"),
            text("variant2"),
            text("two,four")
        ]
    );
    assert!(
        commits(&events)[2].ends_with(";gtid=93e95066-a2f4-11ec-9b69-9657f0ae95e2:2-5"),
        "{:?}",
        commits(&events)
    );
}

#[test]
fn mysql_bit_and_invisible_columns() {
    let rows_bit = decode("rmc__mysql_type_bit.000001");
    assert_eq!(
        after(rows(&rows_bit)[0]),
        [Value::Bytes(vec![4]), text("foo"), Value::Bytes(vec![32])]
    );
    let events = decode("rmc__binlog-invisible-columns.000001");
    let rows = rows(&events);
    assert_eq!(
        after(rows[0]),
        [
            Value::Int(1),
            Value::Int(2),
            Value::Int(-3),
            text("4"),
            Value::Bytes(vec![5]),
            Value::Int(6_000_000_000)
        ]
    );
    match rows[2] {
        RowOp::Update {
            before: Some(b),
            after,
        } => {
            assert_eq!(b[2], Value::Int(-33));
            assert_eq!(
                after[..3],
                [Value::Int(111), Value::Int(222), Value::Int(-333)]
            );
        }
        other => panic!("expected an update, got {other:?}"),
    }
}

#[test]
fn mysql_binary_json_with_opaque_values() {
    let events = decode("rmc__json-opaque.binlog");
    let docs: Vec<String> = rows(&events)
        .iter()
        .map(|op| match &after(op)[0] {
            Value::Json(j) => j.clone(),
            other => panic!("expected JSON, got {other:?}"),
        })
        .collect();
    assert_eq!(
        docs,
        [
            r#"{"a": "base64:type15:VQ=="}"#,
            r#"{"b": "2012-03-18"}"#,
            r#"{"c": "2012-03-18 11:30:45.000000"}"#,
            r#"{"c": "87:31:46.654321"}"#,
            r#"{"d": 123.456}"#,
            r#"{"e": 9.00}"#,
            r#"{"e": [0, 1, true, false]}"#,
            r#"{"e": null}"#,
        ]
    );
}

#[test]
fn mysql8_zstd_transaction_payload() {
    let events = decode("rmc__transaction_compression.000001");
    assert_eq!(after(rows(&events)[0]), [Value::Int(1)]);
    // The inner events carry no positions of their own: the commit ends where the payload event ends.
    assert_eq!(
        commits(&events),
        ["mysql:rmc__transaction_compression.000001:431;gtid=357df524-4139-11ee-9979-b033ee13919e:1"]
    );
    // MySQL 8's (anonymous) GTID event: no GTID of the transaction's own, its immediate commit timestamp in
    // microseconds.
    let tx = events
        .iter()
        .filter_map(|e| match e {
            Event::Begin(tx) => Some(tx),
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!(tx.origin.gtid, None);
    let micros = tx.commit_time.and_then(|t| t.unix_micros()).unwrap();
    assert_ne!(micros % 1_000_000, 0, "whole seconds: {micros}");
    let movies = decode("obc__mysql-bin.compressed");
    assert_eq!(rows(&movies).len(), 1);
    assert!(matches!(rows(&movies)[0], RowOp::Update { .. }));
}

#[test]
fn mysql9_tagged_gtids() {
    let events = decode("rmc__binlog_transaction_with_GTID_TAG.000001");
    assert_eq!(
        after(rows(&events)[0]),
        [
            Value::Int(3),
            Value::Int(100),
            Value::Decimal(Decimal::Finite("250.00".into()))
        ]
    );
    assert_eq!(
        commits(&events),
        ["mysql:rmc__binlog_transaction_with_GTID_TAG.000001:541;gtid=55778904-0299-11f1-b1b8-4ef0c4956feb:1-13,55778904-0299-11f1-b1b8-4ef0c4956feb:mytag:1-3"]
    );
    // The transaction's own GTID, tag included, is in its context.
    let gtids: Vec<Option<&str>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Begin(tx) => Some(tx.origin.gtid.as_deref()),
            _ => None,
        })
        .collect();
    assert_eq!(
        gtids,
        [Some("55778904-0299-11f1-b1b8-4ef0c4956feb:mytag:3")]
    );
}

#[test]
fn negative_time_and_minimal_metadata() {
    let events = decode("rmc__time_issue.000001");
    // -507:48:27
    let micros = -(507 * 3600 + 48 * 60 + 27) * 1_000_000;
    assert_eq!(
        after(rows(&events)[0]),
        [Value::Interval(ferry_core::Interval {
            months: 0,
            days: 0,
            micros
        })]
    );
    // Without FULL metadata the file names no columns; offline decoding numbers them. int unsigned 3230202323
    // would read as a negative int without the signedness the catalog or metadata supplies; MINIMAL metadata
    // still carries signedness.
    let events = decode("rmc__minimal_row_metadata.000001");
    let row = after(rows(&events)[0]);
    assert_eq!(row[0], Value::Int(1));
    assert_eq!(row[2], text("a"));
    assert_eq!(row[4], Value::Int(3_230_202_323));
}

#[test]
fn row_counts_match_the_provenance_table() {
    for (file, expected) in [
        ("obc__mysql-bin.checksum-crc32", 63),
        ("obc__mysql-bin.checksum-none", 36),
        ("gomysql__tcb-eval002c-bin.003320", 17),
        ("rmc__vector.binlog", 10),
    ] {
        assert_eq!(rows(&decode(file)).len(), expected, "{file}");
    }
    let decimals = decode("gomysql__tcb-eval002c-bin.003320");
    assert_eq!(
        after(rows(&decimals)[0])[1],
        Value::Decimal(Decimal::Finite("-10.55".into()))
    );
}

#[test]
fn statement_logged_changes_are_never_skipped_silently() {
    let path = format!(
        "{}/tests/fixtures/mysql-binlog/rmc__binlog_transaction.000001",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).unwrap();
    let err = decode_file(
        "rmc__binlog_transaction.000001",
        &bytes,
        Selection::All,
        UnknownDdl::Fail,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("statement-logged change") && err.contains("insert into t1"),
        "{err}"
    );
}

/// This file was written with binlog_row_image = MINIMAL: its partial JSON updates (PARTIAL_UPDATE_ROWS) come
/// without the old document, so the new one cannot be known. Ferry says so (with FULL images, which Ferry's
/// checks require, the diffs are applied to the old document: see jsonb.rs's tests).
#[test]
fn partial_json_updates_without_the_old_document_stop_with_the_setting_to_change() {
    let path = format!(
        "{}/tests/fixtures/mysql-binlog/rmc__json.binlog.000001",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).unwrap();
    let err = decode_file(
        "rmc__json.binlog.000001",
        &bytes,
        Selection::All,
        UnknownDdl::Skip,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("partial JSON update") && err.contains("binlog_row_image = FULL"),
        "{err}"
    );
}

#[test]
fn truncated_and_corrupt_files_are_errors_not_panics() {
    let path = format!(
        "{}/tests/fixtures/mysql-binlog/rmc__mariadb-bin.000001",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).unwrap();
    for cut in [3, 10, 200, 500, bytes.len() - 1] {
        let _ = decode_file("cut", &bytes[..cut], Selection::All, UnknownDdl::Skip);
    }
    let mut flipped = bytes.clone();
    for i in (4..flipped.len()).step_by(37) {
        flipped[i] ^= 0x5a;
        let _ = decode_file("flipped", &flipped, Selection::All, UnknownDdl::Skip);
        flipped[i] ^= 0x5a;
    }
}

/// Decodes an input cargo-fuzz found (`tests/fixtures/fuzz/`, binlog file bytes) and returns the error it must give.
fn decode_fuzz_input(name: &str) -> ferry_core::Error {
    let path = format!("{}/tests/fixtures/fuzz/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(path).unwrap();
    let file = [
        &b"\xfebin"[..],
        bytes.strip_prefix(b"\xfebin").unwrap_or(&bytes),
    ]
    .concat();
    decode_file("fuzz", &file, Selection::All, UnknownDdl::Skip).unwrap_err()
}

/// An input cargo-fuzz found (`scripts/fuzz`, target binlog): an event after a checksummed format description that
/// is shorter than its checksum made mysql_common subtract with overflow. Now an error naming the offset.
#[test]
fn an_event_shorter_than_its_checksum_is_an_error_not_a_panic() {
    let err = decode_fuzz_input("binlog-event-shorter-than-its-checksum.bin");
    assert!(err.to_string().contains("offset"), "{err}");
}

/// An input cargo-fuzz found: a DECIMAL whose last digit group holds more than its digits allow made mysql_common
/// multiply with overflow. Ferry checks the groups first: an error naming the column type.
#[test]
fn a_decimal_digit_group_out_of_range_is_an_error_not_a_panic() {
    let err = decode_fuzz_input("binlog-decimal-digit-group-out-of-range.bin");
    assert!(err.to_string().contains("DECIMAL"), "{err}");
}

/// An input cargo-fuzz found: a PREVIOUS_GTIDS event whose count of source ids made mysql_common reserve petabytes
/// (an abort, not even a panic). Ferry checks every count against the bytes left first.
#[test]
fn a_previous_gtids_count_beyond_the_event_is_an_error_not_an_abort() {
    let err = decode_fuzz_input("binlog-previous-gtids-huge-count.bin");
    assert!(err.to_string().contains("PREVIOUS_GTIDS"), "{err}");
}

/// An input cargo-fuzz found: a MySQL 8 TRANSACTION_PAYLOAD event naming compression type 179 made mysql_common
/// unwrap an error. Ferry walks the payload header first: an error naming the compression type.
#[test]
fn an_unknown_transaction_payload_compression_is_an_error_not_a_panic() {
    let err = decode_fuzz_input("binlog-transaction-payload-unknown-compression.bin");
    assert!(err.to_string().contains("compression type"), "{err}");
}

/// An input cargo-fuzz found: a DECIMAL inside a binary JSON document whose scale exceeds its precision made
/// mysql_common subtract with overflow. Ferry checks the document's decimals first.
#[test]
fn a_malformed_decimal_inside_json_is_an_error_not_a_panic() {
    let err = decode_fuzz_input("binlog-json-decimal-scale-above-precision.bin");
    assert!(err.to_string().contains("DECIMAL"), "{err}");
}

/// An input cargo-fuzz found: a TABLE_MAP whose BIT column claims 255 whole bytes and some bits made the layout
/// code add with overflow. BIT metadata is checked against BIT(64) first.
#[test]
fn bit_metadata_out_of_range_is_an_error_not_a_panic() {
    let err = decode_fuzz_input("binlog-bit-metadata-out-of-range.bin");
    assert!(err.to_string().contains("BIT"), "{err}");
}

/// An input cargo-fuzz found: a TRANSACTION_PAYLOAD header field type beyond a byte made mysql_common unwrap an
/// error. Ferry's walk of the header refuses it first.
#[test]
fn an_unknown_transaction_payload_field_type_is_an_error_not_a_panic() {
    let err = decode_fuzz_input("binlog-transaction-payload-unknown-field-type.bin");
    assert!(err.to_string().contains("header field type"), "{err}");
}

/// An input cargo-fuzz found: a TABLE_MAP whose ENUM / SET label count exceeds its bytes made mysql_common reserve
/// an impossible capacity (a panic). Every count is checked against the bytes that follow first.
#[test]
fn an_enum_or_set_label_count_beyond_the_event_is_an_error_not_a_panic() {
    let err = decode_fuzz_input("binlog-table-map-label-count-overflow.bin");
    assert!(err.to_string().contains("labels"), "{err}");
}

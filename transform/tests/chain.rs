//! The chain on in-memory events (pure logic): each stage kind, scoping, positions, errors.

use std::path::Path;
use std::sync::Arc;

use ferry_core::{
    Change, Column, ColumnType, Event, Lsn, Origin, PipelineStats, Position, RowOp, SchemaRef,
    TableId, TableSchema, Timestamp, Transform, TxContext, Value,
};
use ferry_transform::Chain;

fn chain(transforms: &str) -> (Chain, Arc<PipelineStats>) {
    let text = format!(
        "[pipeline]\nname = \"t\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://u@h/db\"\n\
         [sink]\ntype = \"sqlite\"\npath = \"/tmp/x.db\"\n{transforms}"
    );
    let env = |v: &str| (v == "SALT").then(|| "pepper".to_owned());
    let config = ferry_config::load_str(Path::new("ferry.toml"), &text, &env).unwrap();
    let stats = Arc::new(PipelineStats::new("t", &["s"]));
    (Chain::new(&config, stats.clone()).unwrap().unwrap(), stats)
}

fn customers() -> SchemaRef {
    let col = |n: &str, ty: ColumnType, st: &str| Column::new(n, ty, st, true);
    Arc::new(TableSchema {
        id: TableId::new("public", "customers"),
        columns: vec![
            col("id", ColumnType::Int4, "integer"),
            col("first_name", ColumnType::Text, "text"),
            col("last_name", ColumnType::Text, "text"),
            col("email", ColumnType::Text, "text"),
            col("status", ColumnType::Text, "text"),
        ],
        primary_key: vec![0],
        identity: Vec::new(),
        version: 1,
        relation_id: Some(77),
        lineage: Default::default(),
        dialect: Default::default(),
        keeps_absent_columns: false,
    })
}

fn row(id: i64, status: &str) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Text("Ada".into()),
        Value::Text("Lovelace".into()),
        Value::Text(format!("ada{id}@example.com")),
        Value::Text(status.into()),
    ]
}

fn begin(lsn: u64) -> Event {
    Event::Begin(Arc::new(TxContext {
        commit_time: Some(Timestamp::from_unix_micros(1_700_000_000_000_000)),
        xid: Some(9),
        origin: Origin {
            name: Some("pg_16384".into()),
            ..Origin::default()
        },
        ..TxContext::at(Position::pg(Lsn(lsn)))
    }))
}

fn commit(lsn: u64) -> Event {
    Event::Commit {
        position: Position::pg(Lsn(lsn)),
        commit_time: Timestamp::from_unix_micros(1_700_000_000_000_000),
    }
}

fn insert(table: &SchemaRef, after: Vec<Value>) -> Event {
    Event::Change(Change::Row {
        table: table.clone(),
        op: RowOp::Insert { after },
    })
}

fn run(chain: &mut Chain, events: Vec<Event>) -> ferry_core::Result<Vec<Event>> {
    let mut out = Vec::new();
    for e in events {
        chain.apply(e, &mut out)?;
    }
    Ok(out)
}

fn rows(events: &[Event]) -> Vec<(&TableSchema, &RowOp)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Change(Change::Row { table, op }) => Some((&**table, op)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_filter_that_drops_every_row_keeps_the_positions() {
    let (mut c, stats) = chain(
        "[[transform]]\ntype = \"filter\"\ntables = [\"public.*\"]\nwhere = \"op == 'd' || after.status != 'draft'\"\n",
    );
    let t = customers();
    let out = run(
        &mut c,
        vec![
            begin(10),
            insert(&t, row(1, "draft")),
            insert(&t, row(2, "draft")),
            commit(11),
            begin(20),
            insert(&t, row(3, "paid")),
            Event::Change(Change::Row {
                table: t.clone(),
                op: RowOp::Delete {
                    before: row(1, "draft"),
                },
            }),
            commit(21),
            Event::Heartbeat {
                position: Position::pg(Lsn(30)),
            },
        ],
    )
    .unwrap();
    assert!(matches!(out[0], Event::Begin(_)));
    assert!(matches!(out[1], Event::Commit { .. }), "{out:?}");
    assert_eq!(rows(&out).len(), 2);
    assert!(matches!(out.last(), Some(Event::Heartbeat { .. })));
    assert_eq!(
        stats
            .rows_filtered
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn the_transaction_context_is_visible_to_expressions() {
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"compute\"\ncolumn = \"origin\"\ncolumn_type = \"text\"\n\
         expression = \"tx.origin + '@' + string(tx.commit_time)\"\n",
    );
    let t = customers();
    let out = run(&mut c, vec![begin(10), insert(&t, row(1, "x")), commit(11)]).unwrap();
    let (_, RowOp::Insert { after }) = rows(&out)[0] else {
        panic!()
    };
    assert_eq!(
        after[5],
        Value::Text("pg_16384@2023-11-14T22:13:20Z".into())
    );
}

#[test]
fn mask_compute_and_route_reshape_schema_and_rows() {
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"mask\"\ncolumns = [\"public.customers.email\"]\nwith = \"sha256\"\nsalt = \"${SALT}\"\n\
         [[transform]]\ntype = \"compute\"\ntables = [\"public.customers\"]\ncolumn = \"full_name\"\ncolumn_type = \"text\"\n\
         expression = \"after.first_name + ' ' + after.last_name\"\n\
         [[transform]]\ntype = \"route\"\ntables = [\"public.customers\"]\nto = \"archive.{table}_v2\"\n\
         [[transform]]\ntype = \"drop_columns\"\ncolumns = [\"status\"]\n",
    );
    let t = customers();
    let out = run(
        &mut c,
        vec![
            Event::Schema(t.clone()),
            begin(10),
            insert(&t, row(1, "x")),
            insert(&t, row(1, "y")),
            Event::Change(Change::Truncate {
                tables: vec![t.id.clone()],
                snapshot: false,
            }),
            commit(11),
        ],
    )
    .unwrap();
    let Event::Schema(s) = &out[0] else { panic!() };
    assert_eq!(s.id, TableId::new("archive", "customers_v2"));
    let names: Vec<&str> = s.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["id", "first_name", "last_name", "email", "full_name"]
    );
    assert_eq!(s.columns[3].ty, ColumnType::Text);
    assert_eq!(s.columns[4].source_type, "text");
    let r = rows(&out);
    let (table, RowOp::Insert { after }) = r[0] else {
        panic!()
    };
    assert_eq!(table.id, s.id);
    assert_eq!(after[4], Value::Text("Ada Lovelace".into()));
    // Salted SHA-256 of the text: hex, stable for equal inputs, not the input.
    let Value::Text(h) = &after[3] else { panic!() };
    assert_eq!(h.len(), 64);
    let (_, RowOp::Insert { after: second }) = r[1] else {
        panic!()
    };
    assert_eq!(second[3], after[3]);
    assert!(out.iter().any(|e| matches!(e, Event::Change(Change::Truncate { tables, .. }) if tables == &vec![s.id.clone()])));
}

#[test]
fn a_value_that_does_not_convert_halts_naming_stage_table_and_key_or_is_skipped() {
    let t = customers();
    let convert = "[[transform]]\ntype = \"convert\"\ncolumns = [\"status\"]\nto = \"bigint\"\n";
    let (mut c, _) = chain(convert);
    let err = run(
        &mut c,
        vec![
            begin(1),
            insert(&t, row(7, "12")),
            insert(&t, row(8, "paid")),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("transform[0]"), "{err}");
    assert!(err.contains("public.customers"), "{err}");
    assert!(err.contains("id=8"), "{err}");
    assert!(err.contains("\"paid\" is not an integer"), "{err}");

    let (mut c, stats) = chain(&format!("{convert}on_error = \"skip\"\n"));
    let out = run(
        &mut c,
        vec![
            begin(1),
            insert(&t, row(7, "12")),
            insert(&t, row(8, "paid")),
            commit(2),
        ],
    )
    .unwrap();
    let r = rows(&out);
    assert_eq!(r.len(), 1);
    let (_, RowOp::Insert { after }) = r[0] else {
        panic!()
    };
    assert_eq!(after[4], Value::Int(12));
    assert_eq!(
        stats.rows_skipped(),
        vec![("transform[0]".to_owned(), "public.customers".to_owned(), 1)]
    );
}

#[test]
fn a_row_that_fails_under_dead_letter_is_set_aside_as_read_and_its_key_follows_it() {
    let t = customers();
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"convert\"\ncolumns = [\"status\"]\nto = \"bigint\"\non_error = \"dead_letter\"\n",
    );
    let update = |before: Vec<Value>, after: Vec<Value>| {
        Event::Change(Change::Row {
            table: t.clone(),
            op: RowOp::Update {
                before: Some(before),
                after,
            },
        })
    };
    let out = run(
        &mut c,
        vec![
            begin(1),
            insert(&t, row(7, "12")),
            insert(&t, row(8, "paid")),
            update(row(8, "paid"), row(8, "13")),
            insert(&t, row(9, "14")),
            commit(2),
        ],
    )
    .unwrap();
    let refused: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Event::Change(Change::Refused(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2, "{out:?}");
    // The row as the source read it (status still text), with the stage, the key and the cause.
    assert!(!refused[0].follows);
    assert_eq!(
        refused[0].op,
        RowOp::Insert {
            after: row(8, "paid")
        }
    );
    assert!(
        refused[0].error.contains("transform[0]"),
        "{}",
        refused[0].error
    );
    assert!(refused[0].error.contains("id=8"), "{}", refused[0].error);
    // The later change of key 8 converts fine, but follows the letter rather than overtake it.
    assert!(refused[1].follows);
    assert!(matches!(refused[1].op, RowOp::Update { .. }));
    let applied: Vec<i64> = rows(&out)
        .iter()
        .map(|(_, op)| match &op.row()[0] {
            Value::Int(id) => *id,
            v => panic!("{v:?}"),
        })
        .collect();
    assert_eq!(applied, vec![7, 9]);
    // Rows keep their place among the positions.
    assert!(matches!(out.last(), Some(Event::Commit { .. })));
    // A key change of the dead key follows, and holds back its new key too.
    let out = run(
        &mut c,
        vec![
            begin(3),
            update(row(8, "13"), row(80, "13")),
            update(row(80, "13"), row(80, "14")),
            commit(4),
        ],
    )
    .unwrap();
    let follows = out
        .iter()
        .filter(|e| matches!(e, Event::Change(Change::Refused(r)) if r.follows))
        .count();
    assert_eq!(follows, 2, "{out:?}");

    // Letters from an earlier run (read from the sinks at start) are followed too; a TRUNCATE ends that.
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"convert\"\ncolumns = [\"status\"]\nto = \"bigint\"\non_error = \"dead_letter\"\n",
    );
    c.follow(t.id.clone(), ["[\"5\"]".to_owned()]);
    let out = run(&mut c, vec![begin(3), insert(&t, row(5, "1"))]).unwrap();
    assert!(matches!(&out[1], Event::Change(Change::Refused(r)) if r.follows));
    let out = run(
        &mut c,
        vec![
            Event::Change(Change::Truncate {
                tables: vec![t.id.clone()],
                snapshot: false,
            }),
            insert(&t, row(5, "1")),
        ],
    )
    .unwrap();
    assert_eq!(rows(&out).len(), 1);
}

#[test]
fn plan_errors_name_the_key_path() {
    let t = customers();
    for (transforms, expected) in [
        ("[[transform]]\ntype = \"filter\"\nwhere = \"after.statuz == 'x'\"\n", "transform[0].where: public.customers has no column statuz"),
        ("[[transform]]\ntype = \"filter\"\nwhere = \"after.status\"\n", "transform[0].where: \"after.status\" gives a string, not a bool"),
        ("[[transform]]\ntype = \"filter\"\nwhere = \"after.status != 'draft'\"\n", "fails for deletes"),
        ("[[transform]]\ntype = \"compute\"\ncolumn = \"n\"\ncolumn_type = \"bigint\"\nexpression = \"after.first_name + 'x'\"\n", "transform[0].expression"),
        ("[[transform]]\ntype = \"compute\"\ncolumn = \"n\"\ncolumn_type = \"bigint\"\nexpression = \"after.id + 'x'\"\n", "transform[0].expression"),
        ("[[transform]]\ntype = \"drop_columns\"\ncolumns = [\"id\"]\n", "transform[0].columns: would remove id, a key column"),
        ("[[transform]]\ntype = \"mask\"\ncolumns = [\"phone\"]\nwith = \"null\"\n", "transform[0].columns: public.customers has no column phone"),
    ] {
        let (mut c, _) = chain(transforms);
        let err = run(&mut c, vec![Event::Schema(t.clone())]).unwrap_err().to_string();
        assert!(err.contains("ferry.toml"), "{err}");
        assert!(err.contains(expected), "{transforms}\n→ {err}");
    }
}

#[test]
fn two_tables_routed_into_one_is_an_error() {
    let (mut c, _) = chain("[[transform]]\ntype = \"route\"\nto = \"archive.all\"\n");
    let a = customers();
    let mut b = TableSchema::clone(&a);
    b.id = TableId::new("public", "other");
    let err = run(&mut c, vec![Event::Schema(a), Event::Schema(Arc::new(b))])
        .unwrap_err()
        .to_string();
    assert!(err.contains("both routed to archive.all"), "{err}");
}

#[test]
fn computed_columns_stay_unchanged_when_their_inputs_were_not_sent() {
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"compute\"\ncolumn = \"full_name\"\ncolumn_type = \"text\"\n\
         expression = \"after.first_name + ' ' + after.last_name\"\n",
    );
    let t = customers();
    let mut after = row(1, "x");
    after[1] = Value::Unchanged;
    after[2] = Value::Unchanged;
    let out = run(
        &mut c,
        vec![
            begin(1),
            Event::Change(Change::Row {
                table: t.clone(),
                op: RowOp::Update {
                    before: None,
                    after: after.clone(),
                },
            }),
        ],
    )
    .unwrap();
    let (_, RowOp::Update { after: a, .. }) = rows(&out)[0] else {
        panic!()
    };
    assert_eq!(a[5], Value::Unchanged);
    // One input sent, the other not: the value cannot be computed, which is an error, not a stale value.
    after[1] = Value::Text("Grace".into());
    let err = run(
        &mut c,
        vec![Event::Change(Change::Row {
            table: t.clone(),
            op: RowOp::Update {
                before: None,
                after,
            },
        })],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("last_name"), "{err}");
}

#[test]
fn convert_casts_trims_and_shifts_zones() {
    let col = |n: &str, ty: ColumnType, st: &str| Column::new(n, ty, st, true);
    let t = Arc::new(TableSchema {
        id: TableId::new("public", "events"),
        columns: vec![
            col("id", ColumnType::Int8, "bigint"),
            col("at", ColumnType::Timestamp, "timestamp without time zone"),
            col("code", ColumnType::Text, "text"),
            col("amount", ColumnType::Numeric, "numeric(10,2)"),
        ],
        primary_key: vec![0],
        identity: Vec::new(),
        version: 1,
        relation_id: None,
        lineage: Default::default(),
        dialect: Default::default(),
        keeps_absent_columns: false,
    });
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"convert\"\ncolumns = [\"at\"]\nto = \"timestamptz\"\nzone = \"Europe/Paris\"\n\
         [[transform]]\ntype = \"convert\"\ncolumns = [\"code\"]\ntrim = true\ncase = \"upper\"\n\
         [[transform]]\ntype = \"convert\"\ncolumns = [\"amount\"]\nto = \"text\"\n",
    );
    let out = run(
        &mut c,
        vec![
            Event::Schema(t.clone()),
            insert(
                &t,
                vec![
                    Value::Int(1),
                    Value::Timestamp(Timestamp::parse_iso("2024-07-01 12:00:00").unwrap()),
                    Value::Text("  ab-c ".into()),
                    Value::Decimal(ferry_core::Decimal::Finite("12.50".into())),
                ],
            ),
        ],
    )
    .unwrap();
    let Event::Schema(s) = &out[0] else { panic!() };
    assert_eq!(s.columns[1].ty, ColumnType::TimestampTz);
    assert_eq!(s.columns[3].ty, ColumnType::Text);
    let (_, RowOp::Insert { after }) = rows(&out)[0] else {
        panic!()
    };
    // 12:00 in Paris (CEST, UTC+2) is 10:00 UTC.
    assert_eq!(
        after[1],
        Value::TimestampTz(Timestamp::parse_iso("2024-07-01 10:00:00").unwrap())
    );
    assert_eq!(after[2], Value::Text("AB-C".into()));
    assert_eq!(after[3], Value::Text("12.50".into()));
}

#[test]
fn a_row_filter_turns_an_update_leaving_the_selection_into_a_delete() {
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"filter\"\nmode = \"rows\"\nwhere = \"after.status != 'draft'\"\n",
    );
    let t = customers();
    let update = |status: &str| {
        Event::Change(Change::Row {
            table: t.clone(),
            op: RowOp::Update {
                before: None,
                after: row(1, status),
            },
        })
    };
    let out = run(
        &mut c,
        vec![
            begin(1),
            insert(&t, row(1, "draft")),
            update("paid"),
            update("draft"),
            Event::Change(Change::Row {
                table: t.clone(),
                op: RowOp::Delete {
                    before: row(1, "draft"),
                },
            }),
            commit(2),
        ],
    )
    .unwrap();
    let ops: Vec<&str> = rows(&out)
        .iter()
        .map(|(_, op)| match op {
            RowOp::Insert { .. } => "c",
            RowOp::Update { .. } => "u",
            RowOp::Delete { .. } => "d",
            RowOp::Read { .. } => "r",
        })
        .collect();
    assert_eq!(ops, ["u", "d", "d"]);
}

/// The functions docs/transforms.md names work on row values.
#[test]
fn documented_functions_work() {
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"filter\"\nmode = \"rows\"\nwhere = \"after.email.matches('^ada[0-9]+@') && after.email.endsWith('.com') \
         && size(after.first_name) == 3 && int('7') == 7 && has(after.status) && after.first_name.startsWith('A') \
         && string(after.id) == '1' && [1, 2].exists(x, x == 2) && after.last_name.contains('love') == false\"\n",
    );
    let t = customers();
    let out = run(&mut c, vec![begin(1), insert(&t, row(1, "x"))]).unwrap();
    assert_eq!(rows(&out).len(), 1);
}

/// PostgreSQL's old key image (a key change without REPLICA IDENTITY FULL) holds NULL for the columns it does not
/// carry: they are unknown, not NULL, so an unchanged TOAST value is never read as NULL from it.
#[test]
fn columns_an_old_key_image_does_not_carry_are_unknown_not_null() {
    let t = customers();
    // Key change: old key only, email not sent (unchanged TOAST value).
    let mut before = vec![Value::Null; 5];
    before[0] = Value::Int(1);
    let mut after = row(10, "paid");
    after[3] = Value::Unchanged;
    let key_change = Event::Change(Change::Row {
        table: t.clone(),
        op: RowOp::Update {
            before: Some(before),
            after,
        },
    });
    // compute over the unsent column: the result is unchanged too (the target keeps its value), not false.
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"compute\"\ncolumn = \"has_email\"\ncolumn_type = \"boolean\"\nexpression = \"after.email != null\"\n",
    );
    let out = run(&mut c, vec![begin(1), key_change.clone()]).unwrap();
    let (_, RowOp::Update { after, .. }) = rows(&out)[0] else {
        panic!()
    };
    assert_eq!(after[5], Value::Unchanged);
    // A row filter reading it cannot decide: a row error, not a lost row.
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"filter\"\nmode = \"rows\"\nwhere = \"has(after.email) && after.email != ''\"\n",
    );
    let err = run(&mut c, vec![begin(1), key_change.clone()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not send email"), "{err}");
    assert!(err.contains("REPLICA IDENTITY FULL"), "{err}");
    // A row filter not reading it passes the row only if it cannot be entering the selection: here it might be.
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"filter\"\nmode = \"rows\"\nwhere = \"after.status != 'draft'\"\n",
    );
    let err = run(&mut c, vec![begin(1), key_change])
        .unwrap_err()
        .to_string();
    assert!(err.contains("entering the selection"), "{err}");
}

/// With REPLICA IDENTITY FULL the old image holds every value: unchanged values are taken from it, so a row
/// entering a row filter's selection reaches the target whole.
#[test]
fn a_full_old_image_fills_unchanged_values() {
    let mut t = TableSchema::clone(&customers());
    t.identity = (0..t.columns.len()).collect();
    let t = Arc::new(t);
    let mut after = row(1, "paid");
    after[3] = Value::Unchanged;
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"filter\"\nmode = \"rows\"\nwhere = \"after.status != 'draft' && size(after.email) > 0\"\n",
    );
    let out = run(
        &mut c,
        vec![
            begin(1),
            Event::Change(Change::Row {
                table: t.clone(),
                op: RowOp::Update {
                    before: Some(row(1, "draft")),
                    after,
                },
            }),
        ],
    )
    .unwrap();
    let (_, RowOp::Update { after, .. }) = rows(&out)[0] else {
        panic!()
    };
    assert_eq!(after[3], Value::Text("ada1@example.com".into()));
}

/// The plan tries expressions on the old images the table's source really sends: without REPLICA IDENTITY FULL,
/// updates have no `before`.
#[test]
fn expressions_reading_before_are_checked_against_the_replica_identity() {
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"filter\"\nwhere = \"op != 'u' || before.status != after.status\"\n",
    );
    let err = run(&mut c, vec![Event::Schema(customers())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("fails for updates"), "{err}");
    assert!(err.contains("REPLICA IDENTITY FULL"), "{err}");
    let mut full = TableSchema::clone(&customers());
    full.identity = (0..full.columns.len()).collect();
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"filter\"\nwhere = \"op != 'u' || before.status != after.status\"\n",
    );
    run(&mut c, vec![Event::Schema(Arc::new(full))]).unwrap();
}

#[test]
fn long_operator_chains_evaluate_without_overflowing_the_stack() {
    for expression in [
        format!("{}true", "!".repeat(20000)),
        format!("true{}", " || false".repeat(10000)),
    ] {
        let (mut c, _) = chain(&format!(
            "[[transform]]\ntype = \"filter\"\nmode = \"rows\"\nwhere = \"{expression}\"\n"
        ));
        let t = customers();
        let out = run(
            &mut c,
            vec![Event::Schema(t.clone()), begin(1), insert(&t, row(1, "x"))],
        )
        .unwrap();
        // An even number of negations of true, and true || …: the row passes.
        assert_eq!(rows(&out).len(), 1);
    }
}

/// A table routed onto the name of another replicated table would merge them: an error naming both.
#[test]
fn routing_onto_a_replicated_table_is_an_error() {
    let (mut c, _) = chain(
        "[[transform]]\ntype = \"route\"\ntables = [\"public.customers\"]\nto = \"public.other\"\n",
    );
    let mut other = TableSchema::clone(&customers());
    other.id = TableId::new("public", "other");
    let err = run(
        &mut c,
        vec![Event::Schema(Arc::new(other)), Event::Schema(customers())],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("public.other and public.customers are both routed to public.other"),
        "{err}"
    );
}

/// Keys stay one-to-one: only masks and casts that keep distinct keys distinct apply to key columns.
#[test]
fn lossy_masks_and_casts_of_key_columns_are_refused() {
    let t = customers();
    for transforms in [
        "[[transform]]\ntype = \"mask\"\ncolumns = [\"id\"]\nwith = \"keep_first\"\nn = 1\n",
        "[[transform]]\ntype = \"mask\"\ncolumns = [\"id\"]\nwith = \"redact\"\n",
        "[[transform]]\ntype = \"convert\"\ncolumns = [\"id\"]\nto = \"double precision\"\n",
    ] {
        let (mut c, _) = chain(transforms);
        let err = run(&mut c, vec![Event::Schema(t.clone())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("id is a key column"), "{transforms}: {err}");
    }
    for transforms in [
        "[[transform]]\ntype = \"mask\"\ncolumns = [\"id\"]\nwith = \"sha256\"\nsalt = \"s\"\n",
        "[[transform]]\ntype = \"convert\"\ncolumns = [\"id\"]\nto = \"text\"\n",
    ] {
        let (mut c, _) = chain(transforms);
        run(&mut c, vec![Event::Schema(t.clone())]).unwrap();
    }
}

//! Re-copying one table online, for every SQL sink (see [`ferry_core::RecopyStep`]).
//!
//! A sink re-copies `t` into its shadow table ([`recopy_shadow`]) rather than into `t` itself: the shadow receives
//! the chunks' rows and every change of `t` from the re-copy's start on, so when the last chunk lands it equals the
//! source table, rows deleted at the source while the target was wrong included. `Finish` then replaces `t`'s rows
//! with the shadow's in the same transaction as the checkpoint. `t` keeps its indexes, grants and the columns an
//! operator added, and readers see the old rows until that commit.
//!
//! [`Shadows::expand`] turns a batch into what the sink applies: each change of a table under re-copy twice (the
//! table, then the shadow), chunk rows to the shadow only, the shadow's schema before its first row. The sink
//! records the cursor in the table's `ferry_schemas` record ([`crate::evolve::Applied::recopy`]), so the re-copy
//! survives restarts.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_core::{recopy_shadow, Change, Event, RecopyStep, RowOp, SchemaRef, TableId};

use crate::evolve::Applied;

/// The tables a sink re-copies, and their shadow schemas.
#[derive(Default)]
pub struct Shadows {
    active: HashSet<TableId>,
    /// Per table: the last schema seen and its shadow.
    schemas: HashMap<TableId, (SchemaRef, SchemaRef)>,
}

impl Shadows {
    /// The re-copies under way according to a sink's records.
    pub fn from_records(applied: &HashMap<TableId, Applied>) -> Shadows {
        Shadows {
            active: applied
                .iter()
                .filter(|(_, a)| a.recopy.is_some() && !a.in_place)
                .map(|(t, _)| t.clone())
                .collect(),
            schemas: HashMap::new(),
        }
    }

    /// The events to apply for `events`: unchanged (borrowed) unless a re-copy is under way or starts.
    pub fn expand<'a>(&mut self, events: &'a [Event]) -> Cow<'a, [Event]> {
        let concerns = |e: &Event| match e {
            Event::Change(Change::Recopy { .. }) => true,
            Event::Change(Change::Truncate {
                snapshot: true,
                tables,
            }) => tables.iter().any(|t| self.active.contains(t)),
            _ => false,
        };
        if self.active.is_empty() && !events.iter().any(concerns) {
            return Cow::Borrowed(events);
        }
        let mut out = Vec::with_capacity(events.len() + 4);
        for e in events {
            match e {
                Event::Change(Change::Row { table, op }) if self.active.contains(&table.id) => {
                    let shadow = self.shadow(table, &mut out);
                    if !matches!(op, RowOp::Read { .. }) {
                        out.push(e.clone());
                    }
                    out.push(Event::Change(Change::Row {
                        table: shadow,
                        op: op.clone(),
                    }));
                }
                Event::Schema(schema) if self.active.contains(&schema.id) => {
                    out.push(e.clone());
                    self.shadow(schema, &mut out);
                }
                Event::Change(Change::Truncate { tables, snapshot }) => {
                    out.push(e.clone());
                    let shadows: Vec<TableId> = tables
                        .iter()
                        .filter(|t| self.active.contains(*t))
                        .map(recopy_shadow)
                        .collect();
                    if *snapshot {
                        // A new snapshot copies these tables whole: their re-copies end.
                        for t in tables.iter().filter(|t| self.active.contains(*t)) {
                            out.push(Event::Change(Change::Recopy {
                                table: t.clone(),
                                step: RecopyStep::Cancel,
                            }));
                        }
                        self.active.retain(|t| !tables.contains(t));
                    } else if !shadows.is_empty() {
                        out.push(Event::Change(Change::Truncate {
                            tables: shadows,
                            snapshot: false,
                        }));
                    }
                }
                Event::Change(Change::Recopy {
                    table,
                    step: RecopyStep::Start { schema },
                }) => {
                    if self.active.contains(table) {
                        // The copy starts over: its old shadow goes, with any quarantine of its own.
                        out.push(Event::Change(Change::Recopy {
                            table: table.clone(),
                            step: RecopyStep::Cancel,
                        }));
                    }
                    self.active.insert(table.clone());
                    self.schemas.remove(table);
                    let shadow = self.shadow(schema, &mut out);
                    out.push(Event::Change(Change::Truncate {
                        tables: vec![shadow.id.clone()],
                        snapshot: false,
                    }));
                    out.push(e.clone());
                }
                Event::Change(Change::Recopy {
                    table,
                    step: RecopyStep::Finish { .. } | RecopyStep::Cancel,
                }) => {
                    out.push(e.clone());
                    self.active.remove(table);
                    self.schemas.remove(table);
                }
                _ => out.push(e.clone()),
            }
        }
        Cow::Owned(out)
    }

    /// The shadow schema of `schema`, announced (an [`Event::Schema`] in `out`) when it is new to this sink.
    fn shadow(&mut self, schema: &SchemaRef, out: &mut Vec<Event>) -> SchemaRef {
        if let Some((live, shadow)) = self.schemas.get(&schema.id) {
            if Arc::ptr_eq(live, schema) {
                return shadow.clone();
            }
        }
        let mut s = (**schema).clone();
        s.id = recopy_shadow(&schema.id);
        // No relation id: the shadow must never be taken for the source table renamed.
        s.relation_id = None;
        for c in &mut s.columns {
            c.previous_name = None;
        }
        let shadow = Arc::new(s);
        out.push(Event::Schema(shadow.clone()));
        self.schemas
            .insert(schema.id.clone(), (schema.clone(), shadow.clone()));
        shadow
    }
}

/// The re-copies recorded in a sink's `ferry_schemas` (for [`ferry_core::Sink::recopies`]).
/// A table whose initial copy was cut short, and whose re-copy has not started, reports
/// [`ferry_core::INTERRUPTED_COPY`].
pub fn recorded(applied: &HashMap<TableId, Applied>) -> Vec<(TableId, String)> {
    let mut out: Vec<(TableId, String)> = applied
        .iter()
        .filter_map(|(t, a)| {
            let cursor = match &a.recopy {
                Some(cursor) => cursor.clone(),
                None if a.copying => ferry_core::INTERRUPTED_COPY.to_owned(),
                None => return None,
            };
            Some((t.clone(), cursor))
        })
        .collect();
    out.sort();
    out
}

/// Whether `table` is being filled in place by an initial copy resumed after a crash
/// ([`ferry_core::RecopyStep::Chunk`]): it may lack rows the copy has not reached, so a change that finds no row
/// and cannot write it anew is left to the copy, which reads that row later.
pub fn fills_in_place(applied: &HashMap<TableId, Applied>, table: &TableId) -> bool {
    applied
        .get(table)
        .is_some_and(|a| a.in_place && a.recopy.is_some())
}

/// The statements that end a re-copy of `live` (names quoted for the dialect): its rows become the shadow's
/// (the sink drops the shadow after). `columns` are the (quoted) columns the sink writes.
pub fn finish_statements(live: &str, shadow: &str, columns: &[String]) -> [String; 2] {
    let cols = columns.join(", ");
    [
        format!("DELETE FROM {live}"),
        format!("INSERT INTO {live} ({cols}) SELECT {cols} FROM {shadow}"),
    ]
}

/// How a sink ends a re-copy at its `Finish` ([`record_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finishing {
    /// Replace the table's rows with its shadow's ([`finish_statements`]), then drop the shadow.
    Swap,
    /// Drop the shadow only: it was quarantined during the copy (a change this target cannot reproduce on the
    /// rows it already held), so its rows are not the source's; the table stays quarantined.
    Discard,
    /// Nothing to do: the copy filled the table itself.
    InPlace,
    /// Not a `Finish`.
    None,
}

/// Updates the records for a re-copy step (before the sink acts on it); returns how to finish (for `Finish`) and
/// the table's record to store, if it changed, and logs.
pub fn record_step(
    applied: &mut HashMap<TableId, Applied>,
    sink: &str,
    table: &TableId,
    step: &RecopyStep,
) -> (Finishing, Option<Applied>) {
    let shadow_quarantine = applied
        .get(&recopy_shadow(table))
        .and_then(|a| a.quarantined.clone());
    let Some(record) = applied.get_mut(table) else {
        return (Finishing::None, None);
    };
    let mut finishing = Finishing::None;
    match step {
        RecopyStep::Start { .. } => {
            tracing::info!(sink, %table, "re-copy started: the table's rows are copied into its shadow table");
            record.recopy = Some(String::new());
            if std::mem::take(&mut record.in_place) && record.copying {
                // An initial copy resumed in place gives way to a copy anew (the source table was rewritten or
                // replaced): the table may lack rows, so its changes wait for the shadow to replace its rows.
                record.quarantined = Some(crate::evolve::interrupted_copy(table));
            }
        }
        RecopyStep::Chunk {
            cursor, in_place, ..
        } => {
            record.recopy = Some(cursor.clone());
            record.in_place = *in_place;
        }
        RecopyStep::Finish { .. } if record.in_place => {
            tracing::info!(sink, %table, "the initial copy resumed in place is complete");
            record.recopy = None;
            record.copying = false;
            record.in_place = false;
            finishing = Finishing::InPlace;
        }
        RecopyStep::Finish { .. } => {
            record.recopy = None;
            record.copying = false;
            match shadow_quarantine {
                Some(why) => {
                    let reason = format!(
                        "its re-copy could not be finished here: the copy's shadow table was quarantined ({why}); \
                         copy the table anew (`ferry snapshot --table`)"
                    );
                    tracing::error!(sink, %table, %reason, "re-copy discarded: the table stays quarantined");
                    record.quarantined = Some(reason);
                    finishing = Finishing::Discard;
                }
                None => {
                    tracing::info!(sink, %table, "re-copy finished: the table's rows are replaced by the copy");
                    if record.quarantined.take().is_some() {
                        tracing::info!(sink, %table, "the re-copied table leaves quarantine: its changes are applied again");
                    }
                    finishing = Finishing::Swap;
                }
            }
        }
        RecopyStep::Cancel => {
            record.recopy = None;
            record.in_place = false;
        }
    }
    (finishing, Some(record.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{Column, ColumnType, TableSchema, Value};

    fn schema() -> SchemaRef {
        Arc::new(TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![Column::new("id", ColumnType::Int8, "bigint", false)],
            primary_key: vec![0],
            identity: Vec::new(),
            version: 1,
            relation_id: Some(42),
            lineage: Default::default(),
            dialect: Default::default(),
            keeps_absent_columns: false,
        })
    }

    fn row(table: &SchemaRef, op: RowOp) -> Event {
        Event::Change(Change::Row {
            table: table.clone(),
            op,
        })
    }

    #[test]
    fn changes_go_to_both_tables_and_chunk_rows_to_the_shadow() {
        let t = schema();
        let mut shadows = Shadows::default();
        let plain = [row(
            &t,
            RowOp::Insert {
                after: vec![Value::Int(1)],
            },
        )];
        assert!(matches!(shadows.expand(&plain), Cow::Borrowed(_)));
        let events = [
            Event::Change(Change::Recopy {
                table: t.id.clone(),
                step: RecopyStep::Start { schema: t.clone() },
            }),
            row(
                &t,
                RowOp::Insert {
                    after: vec![Value::Int(2)],
                },
            ),
            row(
                &t,
                RowOp::Read {
                    after: vec![Value::Int(3)],
                },
            ),
        ];
        let out = shadows.expand(&events).into_owned();
        let targets: Vec<String> = out
            .iter()
            .map(|e| match e {
                Event::Schema(s) => format!("schema {}", s.id.name),
                Event::Change(Change::Row { table, op }) => {
                    format!("{} {}", table.id.name, matches!(op, RowOp::Read { .. }))
                }
                Event::Change(Change::Truncate { tables, .. }) => {
                    format!("truncate {}", tables[0].name)
                }
                Event::Change(Change::Recopy { .. }) => "recopy".to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        let shadow = recopy_shadow(&t.id).name;
        assert_eq!(
            targets,
            [
                format!("schema {shadow}"),
                format!("truncate {shadow}"),
                "recopy".to_owned(),
                "t false".to_owned(),
                format!("{shadow} false"),
                format!("{shadow} true"),
            ]
        );
        let Event::Schema(s) = &out[0] else {
            unreachable!()
        };
        assert_eq!(s.relation_id, None);
    }

    #[test]
    fn shadow_names_are_short_and_distinct() {
        let a = recopy_shadow(&TableId::new("public", "orders"));
        let b = recopy_shadow(&TableId::new("public", "orders2"));
        let c = recopy_shadow(&TableId::new("publico", "rders"));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(a.name.len() <= 26, "{}", a.name);
        assert_eq!(a, recopy_shadow(&TableId::new("public", "orders")));
    }
    #[test]
    fn a_finish_swaps_a_good_shadow_discards_a_quarantined_one_and_ends_a_copy_in_place() {
        let t = schema();
        let finish = RecopyStep::Finish { schema: t.clone() };
        let records = |shadow_quarantined: bool, in_place: bool| {
            let mut applied = HashMap::new();
            let mut record = Applied::of(&t);
            record.quarantined = Some("type change".into());
            record.recopy = Some("{}".into());
            record.in_place = in_place;
            record.copying = in_place;
            applied.insert(t.id.clone(), record);
            let mut shadow = Applied::of(&t);
            if shadow_quarantined {
                shadow.quarantined = Some("column c changed type".into());
            }
            applied.insert(recopy_shadow(&t.id), shadow);
            applied
        };
        let mut applied = records(false, false);
        let (how, record) = record_step(&mut applied, "s", &t.id, &finish);
        assert_eq!(how, Finishing::Swap);
        assert_eq!(
            record.unwrap().quarantined,
            None,
            "a good copy ends the quarantine"
        );

        let mut applied = records(true, false);
        let (how, record) = record_step(&mut applied, "s", &t.id, &finish);
        assert_eq!(how, Finishing::Discard);
        let record = record.unwrap();
        assert!(record
            .quarantined
            .unwrap()
            .contains("column c changed type"));
        assert_eq!(record.recopy, None);

        let mut applied = records(false, true);
        let (how, record) = record_step(&mut applied, "s", &t.id, &finish);
        assert_eq!(how, Finishing::InPlace);
        let record = record.unwrap();
        assert!(!record.copying && !record.in_place && record.recopy.is_none());
    }

    #[test]
    fn a_copy_that_starts_over_drops_its_old_shadow_first() {
        let t = schema();
        let start = || {
            Event::Change(Change::Recopy {
                table: t.id.clone(),
                step: RecopyStep::Start { schema: t.clone() },
            })
        };
        let mut shadows = Shadows::default();
        let first = shadows.expand(&[start()]).into_owned();
        assert!(!first.iter().any(|e| matches!(
            e,
            Event::Change(Change::Recopy {
                step: RecopyStep::Cancel,
                ..
            })
        )));
        let again = shadows.expand(&[start()]).into_owned();
        assert!(matches!(
            again.first(),
            Some(Event::Change(Change::Recopy {
                step: RecopyStep::Cancel,
                ..
            }))
        ));
    }
}

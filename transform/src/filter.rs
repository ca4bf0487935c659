//! Table include / exclude lists and column exclusion.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_config::FilterConfig;
use ferry_core::{
    Change, Event, RecopyStep, Row, RowOp, SchemaRef, TableId, TableSchema, Transform,
};

/// Drops changes of tables not included (or excluded) and removes excluded columns from rows and schemas.
pub struct TableFilter {
    include: Option<HashSet<TableId>>,
    exclude: HashSet<TableId>,
    exclude_columns: HashMap<TableId, HashSet<String>>,
    /// Source schema (table and version) → the narrowed schema and the kept column indexes.
    narrowed: HashMap<(TableId, u64), (SchemaRef, Vec<usize>)>,
}

impl TableFilter {
    pub fn new(config: &FilterConfig) -> Self {
        let mut exclude_columns: HashMap<TableId, HashSet<String>> = HashMap::new();
        for (t, c) in &config.exclude_columns {
            exclude_columns
                .entry(t.clone())
                .or_default()
                .insert(c.clone());
        }
        TableFilter {
            include: config
                .include_tables
                .as_ref()
                .map(|t| t.iter().cloned().collect()),
            exclude: config.exclude_tables.iter().cloned().collect(),
            exclude_columns,
            narrowed: HashMap::new(),
        }
    }

    /// Whether this filter changes anything at all (the runner skips it otherwise).
    pub fn is_noop(&self) -> bool {
        self.include.is_none() && self.exclude.is_empty() && self.exclude_columns.is_empty()
    }

    fn passes(&self, t: &TableId) -> bool {
        self.include.as_ref().is_none_or(|i| i.contains(t)) && !self.exclude.contains(t)
    }

    fn narrow(&mut self, schema: &SchemaRef) -> (SchemaRef, Vec<usize>) {
        let Some(drop) = self.exclude_columns.get(&schema.id) else {
            return (schema.clone(), Vec::new());
        };
        let key = (schema.id.clone(), schema.version);
        if let Some((narrowed, keep)) = self.narrowed.get(&key) {
            return (narrowed.clone(), keep.clone());
        }
        let keep: Vec<usize> = (0..schema.columns.len())
            .filter(|&i| !drop.contains(&schema.columns[i].name))
            .collect();
        let remap = |columns: &[usize]| -> Vec<usize> {
            columns
                .iter()
                .filter_map(|k| keep.iter().position(|i| i == k))
                .collect()
        };
        let primary_key = remap(&schema.primary_key);
        let identity = remap(&schema.identity);
        let narrowed = Arc::new(TableSchema {
            id: schema.id.clone(),
            columns: keep.iter().map(|&i| schema.columns[i].clone()).collect(),
            primary_key,
            identity,
            version: schema.version,
            relation_id: schema.relation_id,
            lineage: schema.lineage.clone(),
            dialect: schema.dialect,
        });
        self.narrowed.insert(key, (narrowed.clone(), keep.clone()));
        (narrowed, keep)
    }
}

fn project(row: Row, keep: &[usize]) -> Row {
    if keep.is_empty() {
        return row;
    }
    let mut row: Vec<Option<ferry_core::Value>> = row.into_iter().map(Some).collect();
    keep.iter()
        .filter_map(|&i| row.get_mut(i).and_then(Option::take))
        .collect()
}

impl Transform for TableFilter {
    fn apply(&mut self, event: Event) -> Option<Event> {
        match event {
            Event::Schema(schema) => {
                if !self.passes(&schema.id) {
                    return None;
                }
                Some(Event::Schema(self.narrow(&schema).0))
            }
            Event::Change(Change::Row { table, op }) => {
                if !self.passes(&table.id) {
                    return None;
                }
                let (table, keep) = self.narrow(&table);
                let op = match op {
                    RowOp::Insert { after } => RowOp::Insert {
                        after: project(after, &keep),
                    },
                    RowOp::Read { after } => RowOp::Read {
                        after: project(after, &keep),
                    },
                    RowOp::Update { before, after } => RowOp::Update {
                        before: before.map(|b| project(b, &keep)),
                        after: project(after, &keep),
                    },
                    RowOp::Delete { before } => RowOp::Delete {
                        before: project(before, &keep),
                    },
                };
                Some(Event::Change(Change::Row { table, op }))
            }
            Event::Change(Change::Truncate { tables, snapshot }) => {
                let tables: Vec<TableId> = tables.into_iter().filter(|t| self.passes(t)).collect();
                (!tables.is_empty()).then_some(Event::Change(Change::Truncate { tables, snapshot }))
            }
            Event::Change(Change::Quarantine { table, reason }) => self
                .passes(&table)
                .then_some(Event::Change(Change::Quarantine { table, reason })),
            Event::Change(Change::Recopy { table, step }) => {
                if !self.passes(&table) {
                    return None;
                }
                // The shadow table gets the columns the rows keep.
                let step = match step {
                    RecopyStep::Start { schema } => RecopyStep::Start {
                        schema: self.narrow(&schema).0,
                    },
                    RecopyStep::Finish { schema } => RecopyStep::Finish {
                        schema: self.narrow(&schema).0,
                    },
                    other => other,
                };
                Some(Event::Change(Change::Recopy { table, step }))
            }
            other => Some(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{Column, ColumnType, Lsn, Position, Value};

    fn schema(name: &str) -> SchemaRef {
        let col = |n: &str| Column::new(n, ColumnType::Text, "text", true);
        Arc::new(TableSchema {
            id: TableId::new("public", name),
            columns: vec![col("id"), col("secret"), col("v")],
            primary_key: vec![0],
            identity: Vec::new(),
            version: 1,
            relation_id: None,
            lineage: Default::default(),
            dialect: Default::default(),
        })
    }

    fn insert(table: &SchemaRef) -> Event {
        let row = vec![
            Value::Text("1".into()),
            Value::Text("s".into()),
            Value::Text("v".into()),
        ];
        Event::Change(Change::Row {
            table: table.clone(),
            op: RowOp::Insert { after: row },
        })
    }

    #[test]
    fn excluded_tables_drop_rows_but_not_positions() {
        let config = FilterConfig {
            exclude_tables: vec![TableId::new("public", "audit")],
            ..Default::default()
        };
        let mut f = TableFilter::new(&config);
        assert!(f.apply(insert(&schema("audit"))).is_none());
        assert!(f.apply(insert(&schema("orders"))).is_some());
        let commit = Event::Heartbeat {
            position: Position::Pg(Lsn(5)),
        };
        assert_eq!(f.apply(commit.clone()), Some(commit));
    }

    #[test]
    fn excluded_columns_leave_rows_and_schema() {
        let config = FilterConfig {
            exclude_columns: vec![(TableId::new("public", "t"), "secret".into())],
            ..Default::default()
        };
        let mut f = TableFilter::new(&config);
        let Some(Event::Change(Change::Row {
            table,
            op: RowOp::Insert { after },
        })) = f.apply(insert(&schema("t")))
        else {
            panic!("row dropped")
        };
        assert_eq!(
            table
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["id", "v"]
        );
        assert_eq!(
            after,
            vec![Value::Text("1".into()), Value::Text("v".into())]
        );
        assert_eq!(table.primary_key, vec![0]);
    }
}

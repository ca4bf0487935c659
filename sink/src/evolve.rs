//! Keeping a target table in step with its source table across schema changes, for every SQL sink.
//!
//! Each SQL sink keeps, per target table, what it last applied ([`Applied`]: the source table's identity and each
//! column's source number, name, type, nullability and default) in `ferry_schemas` in the target, written in the
//! same transaction as the rows where the target allows it (MySQL commits DDL on its own: there the record follows
//! the DDL). A new source schema is compared with that record, so a renamed column or table is renamed in the
//! target, even after a restart, instead of being dropped and added empty; and with the target's actual columns,
//! so a step already done (a crash between a MySQL DDL and its record) is not done twice. Columns the target has
//! that Ferry never applied (an operator's audit column) are left alone.

use std::collections::{HashMap, HashSet};

use std::borrow::Cow;

use ferry_core::type_change::{narrowed_at_source, narrows};
use ferry_core::{Error, Lineage, LogPoint, TableId, TableSchema};
use serde::{Deserialize, Serialize};

/// Creates the table of applied schemas (portable across PostgreSQL, SQLite and MySQL).
pub const CREATE_SCHEMAS_TABLE: &str = "CREATE TABLE IF NOT EXISTS ferry_schemas (\
    pipeline VARCHAR(255) NOT NULL, sink VARCHAR(255) NOT NULL, source_table VARCHAR(255) NOT NULL, \
    applied TEXT NOT NULL, PRIMARY KEY (pipeline, sink, source_table))";

/// One column as a sink applied it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedColumn {
    pub name: String,
    pub source_id: Option<u32>,
    pub source_type: String,
    pub nullable: bool,
    pub default: Option<String>,
    /// The point of the source log whose description gave the column this form ([`ferry_core::Column::described_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub described_at: Option<LogPoint>,
}

impl AppliedColumn {
    /// Whether this is the source column numbered `source_id` and named `name`: the same number when both have
    /// one, else the same name.
    fn is(&self, source_id: Option<u32>, name: &str) -> bool {
        match (self.source_id, source_id) {
            (Some(a), Some(b)) => a == b,
            _ => self.name == name,
        }
    }
}

/// A target table as a sink last made it, from which source table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub relation_id: Option<u32>,
    pub columns: Vec<AppliedColumn>,
    /// Why the table's changes are no longer applied ([`ferry_core::Change::Quarantine`]); `None` while they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
    /// The cursor of the re-copy under way ([`ferry_core::RecopyStep`]), empty before its first chunk; `None`
    /// when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recopy: Option<String>,
    /// The initial snapshot emptied the table and has not yet copied all its rows ([`ferry_core::Change::Copied`]).
    /// Found at a sink's start, the copy was cut short: the table is quarantined until an online re-copy
    /// replaces its rows ([`interrupted_copy`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copying: bool,
    /// The re-copy under way (`recopy`) fills the table itself: an initial copy in chunks, resumed where a crash
    /// cut it short ([`ferry_core::RecopyStep::Chunk`]). Such a table is not quarantined: it takes its changes,
    /// and may lack the rows of the chunks not copied yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
}

impl Applied {
    pub fn of(schema: &TableSchema) -> Applied {
        Applied {
            relation_id: schema.relation_id,
            columns: schema
                .columns
                .iter()
                .map(|c| AppliedColumn {
                    name: c.name.clone(),
                    source_id: c.source_id,
                    source_type: c.source_type.clone(),
                    nullable: c.nullable,
                    default: c.default.clone(),
                    described_at: c.described_at,
                })
                .collect(),
            quarantined: None,
            recopy: None,
            copying: false,
            in_place: false,
        }
    }

    /// The record once `schema` is applied to a table last recorded as `previous`. A quarantined table's target
    /// keeps in step with its schema, and stays quarantined until copied anew; a re-copy under way goes on.
    /// A schema that keeps absent columns ([`TableSchema::keeps_absent_columns`]) keeps their records too: the
    /// target still has them, in the form (and from the source point) last applied.
    pub fn following(schema: &TableSchema, previous: Option<&Applied>) -> Applied {
        let mut record = Applied {
            quarantined: previous.and_then(|a| a.quarantined.clone()),
            recopy: previous.and_then(|a| a.recopy.clone()),
            copying: previous.is_some_and(|a| a.copying),
            in_place: previous.is_some_and(|a| a.in_place),
            ..Applied::of(schema)
        };
        if let Some(previous) = previous.filter(|_| schema.keeps_absent_columns) {
            let absent: Vec<AppliedColumn> = previous
                .columns
                .iter()
                .filter(|pc| !record.columns.iter().any(|c| c.is(pc.source_id, &pc.name)))
                .cloned()
                .collect();
            record.columns.extend(absent);
        }
        record
    }

    /// The record of `table` once quarantined: its last applied columns, or none if it was never applied.
    pub fn quarantined(previous: Option<&Applied>, reason: &str) -> Applied {
        let mut record = previous.cloned().unwrap_or(Applied {
            relation_id: None,
            columns: Vec::new(),
            quarantined: None,
            recopy: None,
            copying: false,
            in_place: false,
        });
        record.quarantined = Some(reason.to_owned());
        record
    }
}

/// Quarantines `record` (unless it already is) when the target cannot follow a type change among `steps`, by its
/// own rule `follows(column, old_type)`: a change that rewrote the source's values without a row event for any of
/// them, which the target cannot do to its copies in the same way (`why` says what the target does instead).
/// Logged at ERROR, naming the `target` kind.
pub fn quarantine_unfollowed(
    record: &mut Applied,
    schema: &TableSchema,
    steps: &[Step],
    follows: impl Fn(&ferry_core::Column, &str) -> bool,
    (why, target): (&str, &str),
) {
    if record.quarantined.is_some() {
        return;
    }
    let reason = steps.iter().find_map(|step| {
        let Step::AlterColumn { i, ty: Some(old), .. } = step else {
            return None;
        };
        let c = &schema.columns[*i];
        (!follows(c, old)).then(|| {
            format!(
                "column {} changed type from {old} to {}, and {why}; copy the table anew (`ferry snapshot \
                 --table`, or `ferry reset` for a MySQL source)",
                c.name, c.source_type
            )
        })
    });
    if let Some(reason) = reason {
        tracing::error!(table = %schema.id, %reason, "table quarantined in the {target} target");
        record.quarantined = Some(reason);
    }
}

/// Whether the target table of `schema` was dropped outside Ferry: this sink wrote it (its record has columns,
/// for the same source table) but the target has no such table now. Its rows cannot come back from the stream,
/// so the sink creates it again empty and quarantines it until a re-copy (`ferry snapshot --table`) fills it.
pub fn dropped_outside(
    applied: &HashMap<TableId, Applied>,
    schema: &TableSchema,
    target_exists: bool,
) -> Option<String> {
    let record = applied.get(&schema.id)?;
    let same_table = match (record.relation_id, schema.relation_id) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    (!target_exists && !record.columns.is_empty() && same_table && record.quarantined.is_none())
        .then(|| {
            tracing::error!(table = %schema.id, "the target table was dropped outside Ferry: it is created again \
                empty and quarantined; `ferry snapshot --config <file> --table <table>` copies it anew");
            "the target table was dropped outside Ferry; `ferry snapshot --table` copies it anew".to_owned()
        })
}

/// Refuses a target table with columns of its own (not from the source) that take no NULL and have no default:
/// every row Ferry writes would fail there. `required` lists the target's NOT NULL columns without a default.
pub fn check_required_target_columns(
    schema: &TableSchema,
    required: &[String],
) -> Result<(), Error> {
    let own: Vec<&str> = required
        .iter()
        .filter(|c| schema.column_index(c).is_none())
        .map(String::as_str)
        .collect();
    if own.is_empty() {
        return Ok(());
    }
    Err(Error::fatal(format!(
        "target table of {} has column(s) {} that the source table does not have, NOT NULL and without a \
         default: no row Ferry writes can satisfy them; give them a default on the target, or allow NULL",
        schema.id,
        own.join(", ")
    )))
}

/// Whether a sink skips `table`'s changes, logging the reason once per sink start.
pub fn is_quarantined(applied: &HashMap<TableId, Applied>, table: &TableId) -> bool {
    applied.get(table).is_some_and(|a| a.quarantined.is_some())
}

/// A new snapshot empties `table` to copy it anew: its quarantine ends, and its copy is under way until
/// [`copied`]. Returns the record to store.
pub fn snapshot_starts(
    applied: &mut HashMap<TableId, Applied>,
    table: &TableId,
) -> Option<Applied> {
    let record = applied.get_mut(table)?;
    if record.quarantined.take().is_some() {
        tracing::info!(%table, "a new snapshot copies the quarantined table: its changes are applied again");
    }
    record.copying = true;
    if record.in_place {
        record.in_place = false;
        record.recopy = None;
    }
    Some(record.clone())
}

/// The snapshot copied every row of `table` ([`ferry_core::Change::Copied`]). Returns the record to store.
pub fn copied(applied: &mut HashMap<TableId, Applied>, table: &TableId) -> Option<Applied> {
    let record = applied.get_mut(table).filter(|a| a.copying)?;
    record.copying = false;
    if record.in_place {
        record.in_place = false;
        record.recopy = None;
    }
    Some(record.clone())
}

/// The reason a table whose initial copy was cut short is quarantined at a sink's start.
pub(crate) fn interrupted_copy(table: &TableId) -> String {
    format!(
        "the initial copy of {table} was cut short (the process stopped during the snapshot): its changes wait until an online re-copy replaces its rows"
    )
}

/// Logs each quarantined table of a sink at its start: the target stays behind for those tables.
pub fn report_quarantined(sink: &str, applied: &HashMap<TableId, Applied>) {
    // A copy cut short was reported as it was read, with what happens to it.
    for (table, record) in applied.iter().filter(|(_, a)| !a.copying) {
        if let Some(reason) = &record.quarantined {
            tracing::error!(sink, %table, reason, "table is quarantined: its changes are not applied (ferry reset takes a new snapshot)");
        }
    }
}

impl Applied {
    /// The record as stored in `ferry_schemas.applied`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(table: &str, text: &str) -> Result<Applied, Error> {
        serde_json::from_str(text).map_err(|e| {
            Error::fatal_from(
                format!("the ferry_schemas record of {table} in the target is not readable"),
                e,
            )
        })
    }
}

/// `PRIMARY KEY (a, b)` for a CREATE TABLE, with the dialect's identifier quoting; `None` for keyless tables.
pub fn primary_key_clause(schema: &TableSchema, quote: fn(&str) -> String) -> Option<String> {
    schema.has_primary_key().then(|| {
        let pk: Vec<String> = schema
            .primary_key
            .iter()
            .map(|&k| quote(&schema.columns[k].name))
            .collect();
        format!("PRIMARY KEY ({})", pk.join(", "))
    })
}

/// Refuses a second source table that would land in the same target table as another one (SQLite folds schemas
/// into names, `public.s_t` and `s.t` both become `s_t`; a MySQL target database holds every source schema's
/// tables): their rows would overwrite each other.
pub fn check_target_name(
    applied: &HashMap<TableId, Applied>,
    schema: &TableSchema,
    target_name: &dyn Fn(&TableId) -> String,
) -> Result<(), Error> {
    let name = target_name(&schema.id);
    match applied.keys().find(|t| **t != schema.id && target_name(t) == name) {
        Some(other) if schema.relation_id.is_none_or(|r| applied[other].relation_id != Some(r)) => {
            Err(Error::fatal(format!(
                "source tables {other} and {} would both be written to target table {name}, overwriting each \
                 other's rows; follow only one of them (`tables`), or give the other its own sink",
                schema.id
            )))
        }
        _ => Ok(()),
    }
}

/// Replaces the sink's record of `table` with `stored`, the `ferry_schemas.applied` text just read from the target
/// (`None`: there is none), for a schema described out of order ([`described_out_of_order`]).
pub fn refresh_record(
    applied: &mut HashMap<TableId, Applied>,
    table: &TableId,
    stored: Option<String>,
) -> Result<(), Error> {
    match stored {
        Some(text) => {
            applied.insert(
                table.clone(),
                Applied::from_json(&record_key(table), &text)?,
            );
        }
        None => {
            applied.remove(table);
        }
    }
    Ok(())
}

/// The `ferry_schemas.source_table` key of a table.
pub fn record_key(table: &TableId) -> String {
    table.to_string()
}

/// Reads the records of every table: `(source_table, applied)` rows as the target returned them.
/// A sink's records as read at its start. A table whose initial copy was cut short (`copying`) is quarantined
/// here, in memory: the record keeps saying so until its online re-copy finishes, which ends both.
pub fn parse_records(rows: Vec<(String, String)>) -> Result<HashMap<TableId, Applied>, Error> {
    let mut applied = rows
        .into_iter()
        .filter_map(|(key, text)| {
            let (schema, name) = key.split_once('.')?;
            Some((TableId::new(schema, name), key.clone(), text))
        })
        .map(|(id, key, text)| Ok((id, Applied::from_json(&key, &text)?)))
        .collect::<Result<HashMap<_, _>, Error>>()?;
    for (table, record) in applied.iter_mut().filter(|(_, a)| a.copying) {
        if record.in_place && record.recopy.is_some() {
            tracing::warn!(%table, "the table's initial copy was cut short: it resumes online at the chunks it had \
                not copied, and its changes are applied meanwhile");
        } else if record.quarantined.is_none() {
            tracing::warn!(%table, "the table's initial copy was cut short: it is copied anew online, and its \
                changes wait until then");
            record.quarantined = Some(interrupted_copy(table));
        }
    }
    Ok(applied)
}

/// Whether `schema` comes from a source whose descriptions of a table arrive out of order ([`settle`]): its sink
/// reads its record of the table afresh, under a lock where the target has one, before applying it, since
/// another process of the pipeline (or this one before a restart) may have applied a later description.
pub fn described_out_of_order(schema: &TableSchema) -> bool {
    schema.columns.iter().any(|c| c.described_at.is_some())
}

/// `schema` as the target should have it, given the sink's record of the table (`previous`): a column the record
/// holds in the form of a later point of the source log ([`ferry_core::Column::described_at`]) keeps that form,
/// so a description read late (another partition, another process, or a restart) never narrows a column the
/// source widened, or rounds values to a scale the source raised. The rows of the older description still fit:
/// the target converts them to the later form as the source did.
///
/// Errors: such a column renamed since; the rows of the older description name it as it was, which the target
/// table no longer has.
pub fn settle<'a>(
    schema: &'a TableSchema,
    previous: Option<&Applied>,
) -> Result<Cow<'a, TableSchema>, Error> {
    let Some(previous) = previous else {
        return Ok(Cow::Borrowed(schema));
    };
    let mut settled = Cow::Borrowed(schema);
    for (i, c) in schema.columns.iter().enumerate() {
        let Some(at) = c.described_at else { continue };
        let recorded = previous
            .columns
            .iter()
            .find(|pc| pc.is(c.source_id, &c.name));
        let Some(pc) = recorded else { continue };
        if pc.described_at.is_none_or(|p| p <= at) {
            // A later description that narrows the column within its type: the source narrowed it, rewriting
            // its rows (rounded, cut) without a row change for any of them.
            if narrows(&pc.source_type, &c.source_type) {
                return Err(narrowed_at_source(
                    &schema.id,
                    &c.name,
                    &pc.source_type,
                    &c.source_type,
                ));
            }
            continue;
        }
        if pc.name != c.name {
            return Err(Error::fatal(format!(
                "table {table}: column {old} was renamed {new} by a later change of the source, already applied \
                 to the target, and a change written before the rename still names it {old}: the target cannot \
                 take it exactly. Nothing was applied of it. Publish the table anew from a new snapshot of the \
                 source (a new topic, or `ferry reset` of the capture pipeline) and apply from there",
                table = schema.id,
                old = c.name,
                new = pc.name
            )));
        }
        let later = &mut settled.to_mut().columns[i];
        later.source_type = pc.source_type.clone();
        later.nullable = pc.nullable;
        later.default = pc.default.clone();
        later.described_at = pc.described_at;
    }
    Ok(settled)
}

/// One change to a target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Drop the target table of the schema's name: its source table was dropped and created again, or another
    /// table took its name.
    DropTable,
    /// Rename the target table of another source table (`from`) to the schema's name: the source table was
    /// renamed (a gh-ost / pt-online-schema-change swap ends this way).
    RenameTable {
        from: TableId,
    },
    CreateTable,
    RenameColumn {
        from: String,
        to: String,
    },
    /// Add column `i` of the schema; rows already in the target get its `missing_value`.
    AddColumn(usize),
    DropColumn(String),
    /// Column `i`'s type, nullability or default changed.
    AlterColumn {
        i: usize,
        /// The type the column had (its source spelling), when its type changed.
        ty: Option<String>,
        nullable: bool,
        default: bool,
    },
}

/// The steps that turn the target table into `schema`'s. `applied` holds the sink's records of every table;
/// `existing` the target table's current columns, `None` when it does not exist.
pub fn plan(
    applied: &HashMap<TableId, Applied>,
    schema: &TableSchema,
    existing: Option<&[String]>,
) -> Result<Vec<Step>, Error> {
    let mut steps = Vec::new();
    let same_name = applied.get(&schema.id);
    // A renamed source table: by its stable relation id (PostgreSQL), or by what the DDL said (MySQL). A rename
    // whose old table has no record here was applied already (or never reached this sink): nothing to move.
    let renamed_from = match &schema.lineage {
        Lineage::RenamedFrom(from) if *from != schema.id && applied.contains_key(from) => {
            Some(from.clone())
        }
        _ => schema.relation_id.and_then(|rid| {
            applied
                .iter()
                .find(|(t, a)| **t != schema.id && a.relation_id == Some(rid))
                .map(|(t, _)| t.clone())
        }),
    };
    let replaced = schema.lineage == Lineage::Recreated
        || matches!(
            (same_name.and_then(|a| a.relation_id), schema.relation_id),
            (Some(old), Some(new)) if old != new
        );
    let (previous, columns): (Option<&Applied>, Vec<String>) = match (renamed_from, existing) {
        (Some(from), existing) => {
            if existing.is_some() {
                steps.push(Step::DropTable);
            }
            let previous = &applied[&from];
            steps.push(Step::RenameTable { from });
            let names = previous.columns.iter().map(|c| c.name.clone()).collect();
            (Some(previous), names)
        }
        (None, Some(_)) if replaced => return Ok(vec![Step::DropTable, Step::CreateTable]),
        (None, None) => return Ok(vec![Step::CreateTable]),
        (None, Some(existing)) => (same_name, existing.to_vec()),
    };
    let mut columns: HashSet<String> = columns.into_iter().collect();
    let previous_columns: &[AppliedColumn] = previous.map_or(&[], |p| &p.columns);
    // Which previous column each new one is: the same source number; else the name a rename gave up; else the
    // same name, unless both have numbers and they differ (dropped and added again under that name).
    let mut matched: Vec<Option<usize>> = vec![None; schema.columns.len()];
    let mut taken = HashSet::new();
    for (i, c) in schema.columns.iter().enumerate() {
        let by_id = c.source_id.and_then(|id| {
            previous_columns
                .iter()
                .position(|pc| pc.source_id == Some(id))
        });
        let by_previous_name = || {
            let old = c.previous_name.as_ref()?;
            previous_columns.iter().position(|pc| pc.name == *old)
        };
        let by_name = || {
            previous_columns.iter().position(|pc| {
                pc.name == c.name
                    && !matches!((pc.source_id, c.source_id), (Some(a), Some(b)) if a != b)
            })
        };
        let j = by_id.or_else(by_previous_name).or_else(by_name);
        if let Some(j) = j.filter(|j| taken.insert(*j)) {
            matched[i] = Some(j);
        }
    }
    let dropped: Vec<&AppliedColumn> = previous_columns
        .iter()
        .enumerate()
        .filter(|(j, pc)| {
            !taken.contains(j) && columns.contains(&pc.name) && !schema.keeps_absent_columns
        })
        .map(|(_, pc)| pc)
        .collect();
    let added: Vec<usize> = (0..schema.columns.len())
        .filter(|&i| matched[i].is_none())
        .collect();
    // A PostgreSQL table described without column numbers, now or when it was last applied (it changed again
    // after that point of the stream): a column gone and another come could be a rename, which dropping would
    // lose. (MySQL sources never number columns; their DDL names renames.)
    let added_new: Vec<usize> = added
        .iter()
        .copied()
        .filter(|&i| !columns.contains(&schema.columns[i].name))
        .collect();
    let unnumbered = dropped.iter().any(|pc| pc.source_id.is_none())
        || added_new
            .iter()
            .any(|&i| schema.columns[i].source_id.is_none());
    let dropped_and_added = !dropped.is_empty() && !added_new.is_empty();
    if schema.dialect == ferry_core::Dialect::Postgres && unnumbered && dropped_and_added {
        return Err(Error::fatal(format!(
            "table {}: columns {} disappeared and {} appeared, and Ferry cannot tell whether they were renamed \
             (the table changed again after this point of the stream, so the source's column numbers no longer \
             describe it). Nothing was changed; copy the table anew (`ferry reset --config <file> --yes`)",
            schema.id,
            dropped.iter().map(|pc| pc.name.as_str()).collect::<Vec<_>>().join(", "),
            added
                .iter()
                .map(|&i| schema.columns[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for pc in &dropped {
        steps.push(Step::DropColumn(pc.name.clone()));
        columns.remove(&pc.name);
    }
    // Renames, through temporary names when one takes a name another still has (a swap).
    let renames: Vec<(String, String)> = (0..schema.columns.len())
        .filter_map(|i| {
            let pc = &previous_columns[matched[i]?];
            let c = &schema.columns[i];
            (pc.name != c.name && columns.contains(&pc.name))
                .then(|| (pc.name.clone(), c.name.clone()))
        })
        .collect();
    let collides = renames.iter().any(|(_, to)| columns.contains(to));
    if collides {
        for (n, (from, _)) in renames.iter().enumerate() {
            steps.push(Step::RenameColumn {
                from: from.clone(),
                to: format!("__ferry_rename_{n}"),
            });
        }
        for (n, (_, to)) in renames.iter().enumerate() {
            steps.push(Step::RenameColumn {
                from: format!("__ferry_rename_{n}"),
                to: to.clone(),
            });
        }
    } else {
        for (from, to) in &renames {
            steps.push(Step::RenameColumn {
                from: from.clone(),
                to: to.clone(),
            });
        }
    }
    for (from, _) in &renames {
        columns.remove(from);
    }
    for (_, to) in &renames {
        columns.insert(to.clone());
    }
    for (i, c) in schema.columns.iter().enumerate() {
        if !columns.contains(&c.name) {
            steps.push(Step::AddColumn(i));
            columns.insert(c.name.clone());
            continue;
        }
        let Some(pc) = matched[i].map(|j| &previous_columns[j]) else {
            continue;
        };
        let (ty, nullable, default) = (
            (pc.source_type != c.source_type).then(|| pc.source_type.clone()),
            pc.nullable != c.nullable,
            pc.default != c.default,
        );
        if ty.is_some() || nullable || default {
            steps.push(Step::AlterColumn {
                i,
                ty,
                nullable,
                default,
            });
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::{Column, ColumnType};

    fn table(name: &str, rid: u32, cols: &[(&str, u32, &str)]) -> TableSchema {
        TableSchema {
            id: TableId::new("public", name),
            columns: cols
                .iter()
                .map(|(n, id, ty)| {
                    let mut c = Column::new(*n, ColumnType::Text, *ty, true);
                    c.source_id = Some(*id);
                    c
                })
                .collect(),
            primary_key: vec![0],
            identity: Vec::new(),
            version: 1,
            relation_id: Some(rid),
            lineage: Default::default(),
            dialect: Default::default(),
            keeps_absent_columns: false,
        }
    }

    fn names(t: &TableSchema) -> Vec<String> {
        t.columns.iter().map(|c| c.name.clone()).collect()
    }

    #[test]
    fn same_number_new_name_is_a_rename_and_new_numbers_are_added() {
        let before = table(
            "t",
            10,
            &[("id", 1, "int"), ("a", 2, "text"), ("gone", 3, "text")],
        );
        let applied = HashMap::from([(before.id.clone(), Applied::of(&before))]);
        let after = table(
            "t",
            10,
            &[("id", 1, "int"), ("b", 2, "varchar(5)"), ("c", 4, "text")],
        );
        assert_eq!(
            plan(&applied, &after, Some(&names(&before))).unwrap(),
            vec![
                Step::DropColumn("gone".into()),
                Step::RenameColumn {
                    from: "a".into(),
                    to: "b".into()
                },
                Step::AlterColumn {
                    i: 1,
                    ty: Some("text".into()),
                    nullable: false,
                    default: false
                },
                Step::AddColumn(2),
            ]
        );
        // Done already (a crash after the DDL, before its record): nothing to do but the type.
        let done = plan(&applied, &after, Some(&names(&after))).unwrap();
        assert!(!done
            .iter()
            .any(|s| matches!(s, Step::RenameColumn { .. } | Step::AddColumn(_))));
    }

    #[test]
    fn a_new_relation_under_a_known_name_replaces_the_table_and_a_renamed_one_moves() {
        let old = table("t", 10, &[("id", 1, "int")]);
        let shadow = table("t_new", 11, &[("id", 1, "int"), ("x", 2, "text")]);
        let applied = HashMap::from([
            (old.id.clone(), Applied::of(&old)),
            (shadow.id.clone(), Applied::of(&shadow)),
        ]);
        let recreated = table("t", 12, &[("id", 1, "int")]);
        assert_eq!(
            plan(&applied, &recreated, Some(&names(&old))).unwrap(),
            vec![Step::DropTable, Step::CreateTable]
        );
        let swapped = table("t", 11, &[("id", 1, "int"), ("x", 2, "text")]);
        assert_eq!(
            plan(&applied, &swapped, Some(&names(&old))).unwrap(),
            vec![
                Step::DropTable,
                Step::RenameTable {
                    from: shadow.id.clone()
                }
            ]
        );
    }

    #[test]
    fn columns_ferry_never_applied_are_kept() {
        let schema = table("t", 10, &[("id", 1, "int")]);
        let existing = vec!["id".to_owned(), "audit".to_owned()];
        assert_eq!(
            plan(&HashMap::new(), &schema, Some(&existing)).unwrap(),
            vec![]
        );
    }

    #[test]
    fn swapped_names_go_through_temporary_ones_and_a_readded_name_is_a_new_column() {
        let before = table(
            "t",
            10,
            &[("id", 1, "int"), ("a", 2, "text"), ("b", 3, "text")],
        );
        let applied = HashMap::from([(before.id.clone(), Applied::of(&before))]);
        let swapped = table(
            "t",
            10,
            &[("id", 1, "int"), ("b", 2, "text"), ("a", 3, "text")],
        );
        let steps = plan(&applied, &swapped, Some(&names(&before))).unwrap();
        let rename = |f: &str, t: &str| Step::RenameColumn {
            from: f.into(),
            to: t.into(),
        };
        assert_eq!(
            steps,
            vec![
                rename("a", "__ferry_rename_0"),
                rename("b", "__ferry_rename_1"),
                rename("__ferry_rename_0", "b"),
                rename("__ferry_rename_1", "a"),
            ]
        );
        // `b` dropped and added again: a new column (its new number), filled anew.
        let readded = table(
            "t",
            10,
            &[("id", 1, "int"), ("a", 2, "text"), ("b", 4, "text")],
        );
        assert_eq!(
            plan(&applied, &readded, Some(&names(&before))).unwrap(),
            vec![Step::DropColumn("b".into()), Step::AddColumn(2)]
        );
    }

    #[test]
    fn a_gone_and_a_new_column_without_source_numbers_stop_rather_than_drop() {
        let before = table("t", 10, &[("id", 1, "int"), ("a", 2, "text")]);
        let applied = HashMap::from([(before.id.clone(), Applied::of(&before))]);
        let mut later = table("t", 10, &[("id", 1, "int"), ("tmp", 2, "text")]);
        for c in &mut later.columns {
            c.source_id = None;
        }
        let err = plan(&applied, &later, Some(&names(&before))).unwrap_err();
        assert!(
            err.to_string()
                .contains("columns a disappeared and tmp appeared"),
            "{err}"
        );
    }

    /// `table` with each column described at `at` (a Kafka source's merged schema).
    fn described(cols: &[(&str, u32, &str)], at: u64) -> TableSchema {
        let mut t = table("t", 10, cols);
        t.keeps_absent_columns = true;
        for c in &mut t.columns {
            c.described_at = Some(LogPoint {
                file: 0,
                offset: at,
                row: 0,
            });
        }
        t
    }

    /// A description read late (another partition or process, or after a restart) never takes a column back to
    /// an earlier form; a later one still changes it.
    #[test]
    fn a_column_described_later_keeps_its_form_against_an_earlier_description() {
        let later = described(
            &[
                ("id", 1, "int"),
                ("v", 2, "varchar(40)"),
                ("n", 3, "numeric(12,4)"),
            ],
            200,
        );
        let applied = HashMap::from([(later.id.clone(), Applied::of(&later))]);
        let earlier = described(
            &[
                ("id", 1, "int"),
                ("v", 2, "varchar(10)"),
                ("n", 3, "numeric(10,2)"),
            ],
            100,
        );
        let settled = settle(&earlier, applied.get(&earlier.id)).unwrap();
        let types: Vec<&str> = settled
            .columns
            .iter()
            .map(|c| c.source_type.as_str())
            .collect();
        assert_eq!(types, ["int", "varchar(40)", "numeric(12,4)"]);
        assert_eq!(
            plan(&applied, &settled, Some(&names(&later))).unwrap(),
            vec![]
        );
        assert_eq!(
            Applied::following(&settled, applied.get(&later.id)),
            applied[&later.id]
        );

        let newest = described(
            &[
                ("id", 1, "int"),
                ("v", 2, "varchar(60)"),
                ("n", 3, "numeric(12,4)"),
            ],
            300,
        );
        let settled = settle(&newest, applied.get(&newest.id)).unwrap();
        assert_eq!(settled.columns[1].source_type, "varchar(60)");
        assert_eq!(
            plan(&applied, &settled, Some(&names(&later))).unwrap(),
            vec![Step::AlterColumn {
                i: 1,
                ty: Some("varchar(40)".into()),
                nullable: false,
                default: false
            }]
        );
    }

    /// A later description narrower than the target's column (the source narrowed it, rewriting its rows without
    /// row changes) stops loudly; an earlier one leaves it as it is; a column a description leaves out keeps its
    /// record.
    #[test]
    fn a_narrowing_at_the_source_stops_and_absent_columns_keep_their_record() {
        let wide = described(
            &[
                ("id", 1, "int"),
                ("n", 3, "numeric(12,4)"),
                ("c", 4, "varchar(20)"),
            ],
            100,
        );
        let applied = HashMap::from([(wide.id.clone(), Applied::of(&wide))]);
        let narrow = described(&[("id", 1, "int"), ("n", 3, "numeric(10,2)")], 150);
        let err = settle(&narrow, applied.get(&narrow.id)).unwrap_err();
        assert!(
            err.to_string().contains(
                "column n was narrowed at the source from numeric(12,4) to numeric(10,2)"
            ),
            "{err}"
        );
        let earlier = described(&[("id", 1, "int"), ("n", 3, "numeric(10,2)")], 50);
        let settled = settle(&earlier, applied.get(&earlier.id)).unwrap();
        assert_eq!(settled.columns[1].source_type, "numeric(12,4)");
        assert_eq!(
            plan(&applied, &settled, Some(&names(&wide))).unwrap(),
            vec![]
        );
        let record = Applied::following(&settled, applied.get(&wide.id));
        let kept: Vec<(&str, &str)> = record
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.source_type.as_str()))
            .collect();
        assert_eq!(
            kept,
            [("id", "int"), ("n", "numeric(12,4)"), ("c", "varchar(20)")]
        );
        for (old, new, narrower) in [
            ("numeric(12,4)", "numeric(10,2)", true),
            ("varchar(40)", "character varying(10)", true),
            ("bigint", "integer", true),
            ("text", "varchar(5)", true),
            ("numeric(10,2)", "numeric(12,4)", false),
            ("text", "integer", false),
            ("integer", "text", false),
            ("timestamp(6)", "timestamp(3)", true),
        ] {
            assert_eq!(narrows(old, new), narrower, "{old} -> {new}");
        }
    }

    #[test]
    fn a_column_renamed_by_a_later_description_stops_an_earlier_one_loudly() {
        let later = described(&[("id", 1, "int"), ("b2", 2, "text")], 200);
        let applied = HashMap::from([(later.id.clone(), Applied::of(&later))]);
        let earlier = described(&[("id", 1, "int"), ("b", 2, "text")], 100);
        let err = settle(&earlier, applied.get(&earlier.id)).unwrap_err();
        assert!(err.to_string().contains("column b was renamed b2"), "{err}");
    }
}

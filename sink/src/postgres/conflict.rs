//! Conflict-aware writes into a PostgreSQL target (see [`crate::conflict`] and docs/multi-master.md).
//!
//! One statement per group of changes: it locks the target rows the changes meet (`FOR UPDATE`), decides per
//! row with the table's resolver compiled into SQL, updates the winners (merge-rule columns whatever wins),
//! inserts the changes whose row is missing when the resolver and the tombstones allow it, and returns only the
//! rows another writer touched, which go to `ferry_conflicts` in the same transaction.

use ferry_config::{MergeRule, Resolver};
use ferry_core::{Error, Row, TableSchema};
use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::ddl::{pg_type, qualified_name, quote_ident};
use super::text::pg_text;
use crate::conflict::{
    decide_change, ConflictKind, ConflictRecord, Decision, TablePolicy, Version, CONFLICTS_TABLE,
    TOMBSTONES_TABLE, VERSION_NODE, VERSION_TS,
};
use ferry_core::VERSION_VECTOR;

/// The conflict log table, created once per sink.
pub fn conflicts_table_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CONFLICTS_TABLE} (
  id bigserial PRIMARY KEY, pipeline text NOT NULL, sink text NOT NULL, table_name text NOT NULL,
  key text NOT NULL, kind text NOT NULL, resolver text NOT NULL, winner text NOT NULL,
  local_row text, remote_row text NOT NULL, local_node text, local_ts bigint, remote_node text NOT NULL,
  remote_ts bigint NOT NULL, source_position text NOT NULL, detected_at timestamptz NOT NULL DEFAULT now())"
    )
}

/// Gives a target table the version columns and the triggers that stamp local writes, when it lacks them.
pub async fn ensure_table(
    client: &Client,
    table: &TableSchema,
    vectors: bool,
) -> Result<(), Error> {
    ferry_pgconn::versions::prepare_table(client, &qualified_name(&table.id), vectors)
        .await
        .map(|_| ())
        .map_err(|e| Error::fatal_from(format!("preparing {} for conflict detection", table.id), e))
}

/// What a change is, for the conflict it may meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A source insert.
    Insert,
    /// A snapshot row.
    Read,
    /// A source update (all columns, or only those sent).
    Update,
}

/// One change of a conflict-aware group.
#[derive(Clone)]
pub struct Change<'a> {
    pub kind: ChangeKind,
    pub row: &'a Row,
    /// The old row of an update, when the source sent one.
    pub old: Option<&'a Row>,
    pub version: Version,
    /// The change's version vector (JSON), when the table keeps them and the source row carries one.
    pub vector: Option<String>,
    /// The version an update's old row had (its writer saw it), when the old row carries it.
    pub seen: Option<i64>,
    pub position: std::sync::Arc<str>,
}

/// One delete of a conflict-aware group.
pub struct Delete<'a> {
    pub row: &'a Row,
    pub version: Version,
    /// The version the source row had when deleted, when its old image carries it.
    pub seen: Option<i64>,
    pub position: std::sync::Arc<str>,
}

/// Who the sink and pipeline are, for the log.
pub struct Context<'a> {
    pub pipeline: &'a str,
    pub sink: &'a str,
}

/// The target row `t` as a JSON object of column name to its text (what [`crate::conflict::row_json`] gives for
/// a change), version columns left out.
fn local_row_sql(table: &TableSchema, alias: &str) -> String {
    let pairs: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !crate::conflict::is_version_column(&c.name))
        .map(|c| {
            format!(
                "'{}', {alias}.{}::text",
                c.name.replace('\'', "''"),
                quote_ident(&c.name)
            )
        })
        .collect();
    format!("jsonb_build_object({})::text", pairs.join(", "))
}

/// `(u.vts, u.vnode) > (local)`-style condition under which the change wins over a row of another writer.
fn resolver_sql(resolver: Resolver, local_ts: &str, local_node: &str) -> String {
    match resolver {
        Resolver::ApplyRemote => "true".to_owned(),
        Resolver::KeepLocal | Resolver::Skip | Resolver::Error => "false".to_owned(),
        Resolver::LastWriteWins => format!("(u.vts, u.vnode) > ({local_ts}, {local_node})"),
        Resolver::FirstWriteWins => format!("(u.vts, u.vnode) < ({local_ts}, {local_node})"),
    }
}

/// The SQL type a value of column `c` is cast to: the target column's own type when the sink read it (`types`,
/// by the schema's column index; a target table can differ from what the source's types map to, such as a
/// MariaDB JSON column replicated into an existing `jsonb` one, or a `DATETIME` into `timestamptz`), else the
/// type the source's column maps to.
fn target_type(table: &TableSchema, types: &[String], c: usize) -> String {
    types
        .get(c)
        .filter(|t| !t.is_empty())
        .cloned()
        .unwrap_or_else(|| pg_type(table, c))
}

/// The target's column types of `table` (by the schema's column index; empty where the target has no such
/// column), read once per table and schema version.
pub async fn target_types(client: &Client, table: &TableSchema) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            &[&qualified_name(&table.id)],
        )
        .await
        .map_err(super::write_error(&format!(
            "reading the column types of {}",
            table.id
        )))?;
    let found: std::collections::HashMap<String, String> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(table
        .columns
        .iter()
        .map(|c| found.get(&c.name).cloned().unwrap_or_default())
        .collect())
}

const LOCAL_NODE: &str = "coalesce(t._ferry_node, public.ferry_local_node(), '')";

/// The `unnest` of the statement's parameters: text arrays for `columns` then for the old values of
/// `old_columns`, and the per-row version, order and flags.
fn unnest(columns: usize, olds: usize, extra: &[(&str, &str)]) -> String {
    let mut params = Vec::new();
    let mut names = Vec::new();
    for i in 0..columns {
        params.push(format!("${}::text[]", params.len() + 1));
        names.push(format!("c{i}"));
    }
    for i in 0..olds {
        params.push(format!("${}::text[]", params.len() + 1));
        names.push(format!("o{i}"));
    }
    for (name, ty) in extra {
        params.push(format!("${}::{ty}[]", params.len() + 1));
        names.push((*name).to_owned());
    }
    format!(
        "SELECT * FROM unnest({}) AS u({})",
        params.join(", "),
        names.join(", ")
    )
}

/// The parts both statements of a group of changes share.
struct ChangeSql {
    name: String,
    unnest: String,
    /// `t.pk = u.c…` over the key columns, for the alias given.
    key_match: Box<dyn Fn(&str) -> String>,
    /// The `SET` list, each column decided by `win`.
    sets: Vec<String>,
    /// The condition under which a change wins over the row it meets (`t`).
    win: String,
}

/// The first statement of a group of changes, for the common case: the rows each change follows (an unstamped
/// row, the very version its writer saw, or a row its own node wrote last) take the change, in one plain
/// `UPDATE … FROM unnest(…)` that returns the places of the changes it applied. `None` with version vectors
/// (every change is compared with the row's vector in [`change_statement`]).
pub fn fast_statement(
    table: &TableSchema,
    types: &[String],
    policy: &TablePolicy,
    columns: &[usize],
) -> Option<String> {
    if policy.vectors {
        return None;
    }
    let sql = change_sql(table, types, policy, columns);
    Some(format!(
        "WITH u AS ({}) UPDATE {} t SET {} FROM u WHERE {} AND (t.{VERSION_TS} IS NULL OR t.{VERSION_TS} = u.seen \
         OR {LOCAL_NODE} = u.vnode) RETURNING u.ord",
        sql.unnest,
        sql.name,
        sql.sets
            .iter()
            .map(|set| set.replace(&sql.win, "true"))
            .collect::<Vec<_>>()
            .join(", "),
        (sql.key_match)("t")
    ))
}

/// The statement for the changes [`fast_statement`] left: each meets a row of another writer, a missing row or
/// a tombstone.
///
/// One `UPDATE … FROM` the incoming rows and the target rows as the statement found them (`o`, for the log),
/// deciding per row in `SET` on the row's current version; then an `INSERT` of the changes whose row is
/// missing, when the resolver and the tombstones allow it. Only rows of another writer are returned.
///
/// A row the snapshot holds that the `UPDATE` no longer finds was deleted while the statement waited for its
/// lock: the delete's tombstone is newer than the snapshot, so deciding on the snapshot would bring the row back.
/// Such a change is returned as raced (`'r'`) and goes again in a statement of its own.
pub fn change_statement(
    table: &TableSchema,
    types: &[String],
    policy: &TablePolicy,
    columns: &[usize],
) -> String {
    let ChangeSql {
        name,
        unnest,
        key_match,
        sets,
        ..
    } = change_sql(table, types, policy, columns);
    let col = |c: usize| quote_ident(&table.columns[c].name);
    let value = |c: usize| {
        let i = columns.iter().position(|&x| x == c).unwrap_or(0);
        format!("u.c{i}::{}", target_type(table, types, c))
    };
    let key_text = table
        .primary_key
        .iter()
        .map(|&k| format!("{}::text", value(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let cmp = |t: &str| format!("public.ferry_vv_cmp(u.vv::jsonb, {t}.{VERSION_VECTOR})");
    let o_conflict = if policy.vectors {
        format!(
            "(CASE WHEN o.{VERSION_VECTOR} IS NULL OR u.vv IS NULL THEN o.{VERSION_TS} IS NOT NULL \
             AND o.{VERSION_TS} IS DISTINCT FROM u.seen AND {o_node} <> u.vnode ELSE {} = 2 END)",
            cmp("o"),
            o_node = "coalesce(o._ferry_node, public.ferry_local_node(), '')"
        )
    } else {
        format!(
            "o.{VERSION_TS} IS NOT NULL AND o.{VERSION_TS} IS DISTINCT FROM u.seen \
             AND coalesce(o._ferry_node, public.ferry_local_node(), '') <> u.vnode"
        )
    };
    let tomb_win = resolver_sql(policy.missing_resolver(), "tb.ts", "coalesce(tb.node, '')");
    let col_list: Vec<String> = columns.iter().map(|&c| col(c)).collect();
    let values: Vec<String> = columns.iter().map(|&c| value(c)).collect();
    let o_node = "coalesce(o._ferry_node, public.ferry_local_node(), '')";
    let sums = columns
        .iter()
        .filter(|&&c| policy.merge_of(c) == Some(MergeRule::SumDelta))
        .count();
    format!(
        "WITH u AS ({unnest}),
upd AS (UPDATE {name} t SET {sets} FROM u, {name} o
        WHERE {t_key} AND {o_key}
        RETURNING u.ord,
          CASE WHEN {won} THEN o.{VERSION_TS} ELSE t.{VERSION_TS} END AS lts,
          CASE WHEN {won} THEN {o_node} ELSE {t_node} END AS lnode,
          CASE WHEN {won} THEN (CASE WHEN {o_conflict} THEN {local} END)
               WHEN {merged} THEN {local} ELSE {t_local} END AS local,
          {won} AS won),
found AS (SELECT ord FROM upd),
gone AS (SELECT u.ord FROM u JOIN {name} o ON {o_key} WHERE NOT EXISTS (SELECT 1 FROM found WHERE found.ord = u.ord)),
tomb AS (SELECT u.ord, tb.{VERSION_TS} AS ts, tb.{VERSION_NODE} AS node FROM u
         JOIN public.{TOMBSTONES_TABLE} tb ON tb.table_name = $1000 AND tb.key = ARRAY[{key_text}]
         WHERE NOT EXISTS (SELECT 1 FROM found WHERE found.ord = u.ord)),
cand AS (SELECT u.*, ARRAY[{key_text}] AS key FROM u
        WHERE u.ins AND NOT EXISTS (SELECT 1 FROM found WHERE found.ord = u.ord)
          AND NOT EXISTS (SELECT 1 FROM gone WHERE gone.ord = u.ord)
          AND NOT EXISTS (SELECT 1 FROM tomb tb WHERE tb.ord = u.ord AND coalesce(tb.node, '') <> u.vnode
                          AND NOT ({tomb_win}))),
ins AS (INSERT INTO {name} AS n ({cols}, {VERSION_TS}, {VERSION_NODE}{vv_col})
        SELECT {values}, u.vts, u.vnode{vv_val} FROM cand u
        ON CONFLICT ({pk}) DO NOTHING RETURNING ARRAY[{inserted_key}] AS key)
SELECT 'x'::text, ord, lts, lnode, local, won FROM upd WHERE local IS NOT NULL
UNION ALL SELECT 'm', u.ord, tb.ts, tb.node, NULL, NULL FROM u LEFT JOIN tomb tb ON tb.ord = u.ord
  WHERE NOT EXISTS (SELECT 1 FROM found WHERE found.ord = u.ord) AND (u.upd OR tb.ord IS NOT NULL)
    AND NOT EXISTS (SELECT 1 FROM gone WHERE gone.ord = u.ord)
UNION ALL SELECT 'r', c.ord, NULL, NULL, NULL, NULL FROM cand c
  WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.key = c.key)
UNION ALL SELECT 'r', ord, NULL, NULL, NULL, NULL FROM gone",
        pk = table
            .primary_key
            .iter()
            .map(|&k| col(k))
            .collect::<Vec<_>>()
            .join(", "),
        inserted_key = table
            .primary_key
            .iter()
            .map(|&k| format!("n.{}::text", col(k)))
            .collect::<Vec<_>>()
            .join(", "),
        sets = sets.join(", "),
        t_key = key_match("t"),
        o_key = key_match("o"),
        local = local_row_sql(table, "o"),
        // A change that lost kept the row as the statement found it when it got the lock (a local write may
        // have come after the snapshot `o` shows): that is the version it lost to.
        t_local = local_row_sql(table, "t"),
        t_node = LOCAL_NODE,
        won = format!("(t.{VERSION_TS} IS NOT DISTINCT FROM u.vts AND t.{VERSION_NODE} IS NOT DISTINCT FROM u.vnode)"),
        merged = !policy.merges.is_empty(),
        o_conflict = o_conflict,
        vv_col = if policy.vectors { format!(", {VERSION_VECTOR}") } else { String::new() },
        vv_val = if policy.vectors { ", u.vv::jsonb" } else { "" },
        cols = col_list.join(", "),
        values = values.join(", "),
    )
    .replace("$1000", &format!("${}", columns.len() + sums + 8))
}

/// The unnest, key match, `SET` list and winning condition of a group of changes writing `columns`.
fn change_sql(
    table: &TableSchema,
    types: &[String],
    policy: &TablePolicy,
    columns: &[usize],
) -> ChangeSql {
    let name = qualified_name(&table.id);
    let col = |c: usize| quote_ident(&table.columns[c].name);
    let value = |c: usize| {
        let i = columns.iter().position(|&x| x == c).unwrap_or(0);
        format!("u.c{i}::{}", target_type(table, types, c))
    };
    let sums: Vec<usize> = columns
        .iter()
        .copied()
        .filter(|&c| policy.merge_of(c) == Some(MergeRule::SumDelta))
        .collect();
    // No conflict: an unstamped row, the very version the change's writer saw (its old row says so), or a row
    // last written by the change's own node.
    let by_version = format!(
        "(t.{VERSION_TS} IS NULL OR t.{VERSION_TS} = u.seen OR {LOCAL_NODE} = u.vnode OR {})",
        resolver_sql(
            policy.row_resolver(),
            &format!("t.{VERSION_TS}"),
            LOCAL_NODE
        )
    );
    // With version vectors: a change whose writer had seen the row (its vector follows the row's) applies, a
    // stale one does not, and only concurrent ones go to the resolver.
    let cmp = |t: &str| format!("public.ferry_vv_cmp(u.vv::jsonb, {t}.{VERSION_VECTOR})");
    let win = if policy.vectors {
        format!(
            "(CASE WHEN t.{VERSION_VECTOR} IS NULL OR u.vv IS NULL THEN {by_version} ELSE {} IN (0, 1) OR ({} = 2 AND {}) END)",
            cmp("t"),
            cmp("t"),
            resolver_sql(policy.row_resolver(), &format!("t.{VERSION_TS}"), LOCAL_NODE)
        )
    } else {
        by_version
    };
    let mut sets = Vec::new();
    for &c in columns {
        if table.primary_key.contains(&c) {
            continue;
        }
        let new = value(c);
        let old = format!("t.{}", col(c));
        let set = match policy.merge_of(c) {
            None => format!("CASE WHEN {win} THEN {new} ELSE {old} END"),
            Some(MergeRule::Max) => format!("greatest({old}, {new})"),
            Some(MergeRule::Min) => format!("least({old}, {new})"),
            Some(MergeRule::PreferNonNull) => {
                format!(
                    "CASE WHEN {win} THEN coalesce({new}, {old}) ELSE coalesce({old}, {new}) END"
                )
            }
            Some(MergeRule::SumDelta) => {
                let j = sums.iter().position(|&s| s == c).unwrap_or(0);
                let ty = target_type(table, types, c);
                format!("coalesce({old}, 0) + (coalesce({new}, 0) - coalesce(u.o{j}::{ty}, 0))")
            }
            // Each element once: the earlier write's in their order, then the later's that it lacks (so both
            // sides of a pair compute the same array; conflict::union_by_version). A value that is not an array
            // counts as one element.
            Some(MergeRule::Union) => {
                let ty = target_type(table, types, c);
                let arr = |v: &str| {
                    format!(
                        "(CASE WHEN jsonb_typeof(({v})::jsonb) = 'array' THEN ({v})::jsonb \
                         WHEN ({v}) IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(({v})::jsonb) END)"
                    )
                };
                let union = |first: &str, second: &str| {
                    format!(
                        "(SELECT coalesce(jsonb_agg(e ORDER BY n), '[]'::jsonb) FROM (SELECT e, min(n) AS n FROM \
                         jsonb_array_elements({} || {}) WITH ORDINALITY AS a(e, n) GROUP BY e) d)",
                        arr(first),
                        arr(second)
                    )
                };
                format!(
                    "(CASE WHEN (coalesce(t.{VERSION_TS}, 0), {LOCAL_NODE}) > (u.vts, u.vnode) THEN {} ELSE {} END)::{ty}",
                    union(&new, &old),
                    union(&old, &new)
                )
            }
        };
        sets.push(format!("{} = {set}", col(c)));
    }
    // The version last: the conditions above read the row's version before this statement.
    if policy.vectors {
        sets.push(format!(
            "{VERSION_VECTOR} = CASE WHEN t.{VERSION_VECTOR} IS NOT NULL AND u.vv IS NOT NULL AND {} = 2 \
             THEN public.ferry_vv_max(t.{VERSION_VECTOR}, u.vv::jsonb) WHEN {win} THEN u.vv::jsonb ELSE t.{VERSION_VECTOR} END",
            cmp("t")
        ));
    }
    sets.push(format!(
        "{VERSION_NODE} = CASE WHEN {win} THEN u.vnode ELSE t.{VERSION_NODE} END"
    ));
    sets.push(format!(
        "{VERSION_TS} = CASE WHEN {win} THEN u.vts ELSE t.{VERSION_TS} END"
    ));
    let key_columns: Vec<(String, String)> = table
        .primary_key
        .iter()
        .map(|&k| (col(k), value(k)))
        .collect();
    ChangeSql {
        name,
        unnest: unnest(
            columns.len(),
            sums.len(),
            &[
                ("vts", "int8"),
                ("vnode", "text"),
                ("ord", "int4"),
                ("ins", "bool"),
                ("upd", "bool"),
                ("vv", "text"),
                ("seen", "int8"),
            ],
        ),
        key_match: Box::new(move |alias: &str| {
            key_columns
                .iter()
                .map(|(c, v)| format!("{alias}.{c} = {v}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        }),
        sets,
        win,
    }
}

/// The delete statement of a group of deletes (parameters: the key columns).
pub fn delete_statement(table: &TableSchema, types: &[String], policy: &TablePolicy) -> String {
    let name = qualified_name(&table.id);
    let keys = &table.primary_key;
    let col = |c: usize| quote_ident(&table.columns[c].name);
    let value = |c: usize| {
        let i = keys.iter().position(|&x| x == c).unwrap_or(0);
        format!("u.c{i}::{}", target_type(table, types, c))
    };
    let key_match = |alias: &str| {
        keys.iter()
            .map(|&k| format!("{alias}.{} = {}", col(k), value(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let key_text = keys
        .iter()
        .map(|&k| format!("{}::text", value(k)))
        .collect::<Vec<_>>()
        .join(", ");
    // No conflict: an unstamped row, the very version the delete saw, or (when it saw none) a row last written
    // by the delete's own node.
    let agreed = |t: &str| {
        let node = format!("coalesce({t}._ferry_node, public.ferry_local_node(), '')");
        format!(
            "({t}.{VERSION_TS} IS NULL OR (u.seen IS NOT NULL AND {t}.{VERSION_TS} = u.seen) OR (u.seen IS NULL AND {node} = u.vnode))"
        )
    };
    let win = |t: &str| {
        let node = format!("coalesce({t}._ferry_node, public.ferry_local_node(), '')");
        format!(
            "({} OR {})",
            agreed(t),
            resolver_sql(
                policy.missing_resolver(),
                &format!("{t}.{VERSION_TS}"),
                &node
            )
        )
    };
    let o_node = "coalesce(o._ferry_node, public.ferry_local_node(), '')";
    format!(
        "WITH u AS ({unnest}),
d AS (DELETE FROM {name} t USING u, {name} o WHERE {t_key} AND {o_key} AND {t_win}
      RETURNING u.ord, o.{VERSION_TS} AS lts, {o_node} AS lnode,
        CASE WHEN NOT {o_agreed} THEN {local} END AS local, true AS won),
kept AS (SELECT u.ord, o.{VERSION_TS} AS lts, {o_node} AS lnode, {local} AS local, false AS won
         FROM u JOIN {name} o ON {o_key} WHERE NOT {o_win}),
tb AS (INSERT INTO public.{TOMBSTONES_TABLE} AS tb (table_name, key, {VERSION_TS}, {VERSION_NODE})
       SELECT ${tname}, ARRAY[{key_text}], u.vts, u.vnode FROM u
       WHERE NOT EXISTS (SELECT 1 FROM kept WHERE kept.ord = u.ord)
       ON CONFLICT (table_name, key) DO UPDATE SET {VERSION_TS} = excluded.{VERSION_TS},
         {VERSION_NODE} = excluded.{VERSION_NODE}, deleted_at = now()
       WHERE (excluded.{VERSION_TS}, coalesce(excluded.{VERSION_NODE}, '')) > (tb.{VERSION_TS}, coalesce(tb.{VERSION_NODE}, ''))
       RETURNING 1)
SELECT 'x'::text, ord, lts, lnode, local, won FROM d WHERE local IS NOT NULL
UNION ALL SELECT 'x', ord, lts, lnode, local, won FROM kept
UNION ALL SELECT 'm', u.ord, NULL, NULL, NULL, NULL FROM u
  WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.ord = u.ord) AND NOT EXISTS (SELECT 1 FROM kept WHERE kept.ord = u.ord)",
        unnest = unnest(
            keys.len(),
            0,
            &[
                ("vts", "int8"),
                ("vnode", "text"),
                ("ord", "int4"),
                ("seen", "int8")
            ]
        ),
        t_key = key_match("t"),
        o_key = key_match("o"),
        t_win = win("t"),
        o_win = win("o"),
        o_agreed = agreed("o"),
        local = local_row_sql(table, "o"),
        tname = keys.len() + 5,
    )
}

/// The statement parameters every group carries after its columns: each change's version (µs, node) and its
/// place in the group.
fn push_versions<'v>(
    params: &mut Vec<Box<dyn ToSql + Sync + Send>>,
    versions: impl Iterator<Item = &'v Version>,
) {
    let (ts, node): (Vec<i64>, Vec<String>) = versions.map(|v| (v.ts, v.node.clone())).unzip();
    let ord: Vec<i32> = (0..ts.len() as i32).collect();
    params.push(Box::new(ts));
    params.push(Box::new(node));
    params.push(Box::new(ord));
}

/// One returned row of a conflict-aware statement.
struct Outcome {
    what: String,
    ord: i32,
    local_ts: Option<i64>,
    local_node: Option<String>,
    local: Option<String>,
    won: Option<bool>,
}

/// The advisory lock class of [`KeyLocks`] (two-key advisory locks do not share a space with Ferry's one-key
/// ones): "fkey".
const KEY_LOCK_CLASS: i32 = 0x666b_6579;

/// How many locks [`KeyLocks`] spreads a table's keys over. Each lock held is an entry in PostgreSQL's shared lock
/// table (`max_locks_per_transaction` × connections, 6,400 by default), and a transaction may apply 100,000
/// changes: a lock per key would exhaust it, so keys share a lock by their hash. Transactions that meet few keys
/// still rarely wait for each other.
const KEY_LOCKS_PER_TABLE: i32 = 256;

/// The statement of [`KeyLocks`] for `table`: `$1…$k` the key columns' texts, `$k+1` the table's name.
fn key_lock_statement(table: &TableSchema, types: &[String]) -> String {
    let keys = &table.primary_key;
    let key_text = keys
        .iter()
        .enumerate()
        .map(|(i, &k)| format!("u.c{i}::{}::text", target_type(table, types, k)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT pg_advisory_xact_lock({KEY_LOCK_CLASS}, l) FROM (SELECT DISTINCT hashtext(${t}) # \
         (hashtext(ARRAY[{key_text}]::text) & {mask}) AS l FROM ({unnest}) u ORDER BY 1) k",
        t = keys.len() + 1,
        mask = KEY_LOCKS_PER_TABLE - 1,
        unnest = unnest(keys.len(), 0, &[]),
    )
}

/// Serializes Ferry's writers of the same keys of a table until the transaction ends: a pipeline per peer writes
/// into this target, and each statement decides on the snapshot it starts with. Two of them deciding one missing
/// key at once would each miss the other's write (an insert beside a delete that found no row and left a
/// tombstone), and this target would keep a row its peers deleted. The locks ([`KEY_LOCKS_PER_TABLE`] per table,
/// a key's by its hash) are taken in order by a statement of their own that runs before the deciding ones, so
/// those start from a snapshot holding every earlier writer's commit.
struct KeyLocks {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl KeyLocks {
    fn new<'r>(
        table: &TableSchema,
        types: &[String],
        rows: impl Iterator<Item = &'r Row> + Clone,
    ) -> Self {
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        for &k in &table.primary_key {
            params.push(Box::new(
                rows.clone().map(|r| pg_text(&r[k])).collect::<Vec<_>>(),
            ));
        }
        params.push(Box::new(table.id.to_string()));
        KeyLocks {
            sql: key_lock_statement(table, types),
            params,
        }
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| &**p as _).collect()
    }
}

async fn run(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    table: &TableSchema,
) -> Result<Vec<Outcome>, Error> {
    let rows = client
        .query(sql, params)
        .await
        .map_err(super::write_error(&format!("writing to {}", table.id)))?;
    Ok(rows
        .iter()
        .map(|r| Outcome {
            what: r.get(0),
            ord: r.get(1),
            local_ts: r.get(2),
            local_node: r.get(3),
            // jsonb's text has spaces; the log keeps one compact form for both rows.
            local: r.get::<_, Option<String>>(4).map(|j| {
                serde_json::from_str::<serde_json::Value>(&j).map_or(j, |v| v.to_string())
            }),
            won: r.get(5),
        })
        .collect())
}

/// Local writes kept inserting keys the statements found missing, several times in a row: the transaction is
/// retried from the checkpoint.
fn raced_error(table: &TableSchema) -> Error {
    Error::transient(
        format!(
            "a write on the target changed rows of {} while Ferry resolved conflicts on them; retrying",
            table.id
        ),
        std::io::Error::other("concurrent target write"),
    )
}

/// What a group of inserts / updates writes: the table, the target's column types (see [`target_types`]), the
/// table's policy, the columns written (the key included), and whether each change carries every column.
#[derive(Clone, Copy)]
pub struct Writes<'a> {
    pub table: &'a TableSchema,
    pub types: &'a [String],
    pub policy: &'a TablePolicy,
    pub columns: &'a [usize],
    pub complete: bool,
}

/// Applies a group of inserts / updates (`writes`); returns the conflicts met.
///
/// `prepared` keeps the first statement of each table and column set prepared, run with its generic plan: it
/// looks the rows up by key, as the plain sink's upserts do (a custom plan for a batch of thousands of rows
/// tends to hash the whole table instead).
pub async fn apply_changes(
    client: &Client,
    prepared: &mut HashMap<String, Statement>,
    writes: Writes<'_>,
    changes: &[Change<'_>],
) -> Result<Vec<ConflictRecord>, Error> {
    let (mut records, mut raced) = apply_changes_once(client, prepared, writes, changes).await?;
    for _ in 0..3 {
        if raced.is_empty() {
            return Ok(records);
        }
        let again: Vec<Change<'_>> = raced.iter().map(|&i| changes[i].clone()).collect();
        let (more, still) = apply_changes_once(client, prepared, writes, &again).await?;
        records.extend(more);
        raced = still.into_iter().map(|i| raced[i]).collect();
    }
    if raced.is_empty() {
        Ok(records)
    } else {
        Err(raced_error(writes.table))
    }
}

/// Whether a change may insert its row when the row is missing.
fn may_insert(policy: &TablePolicy, complete: bool, ch: &Change<'_>) -> bool {
    crate::conflict::may_insert(
        policy.missing_resolver(),
        complete,
        ch.kind == ChangeKind::Update,
    )
}

/// `changes` applied: the common case first ([`fast_statement`]), then the changes it left
/// ([`change_statement`]). Returns the conflicts met, and the changes a concurrent insert kept out (to go again).
async fn apply_changes_once(
    client: &Client,
    prepared: &mut HashMap<String, Statement>,
    writes: Writes<'_>,
    changes: &[Change<'_>],
) -> Result<(Vec<ConflictRecord>, Vec<usize>), Error> {
    let Writes {
        table,
        types,
        policy,
        columns,
        ..
    } = writes;
    let what = format!("writing to {}", table.id);
    let error = super::write_error(&what);
    let locks = KeyLocks::new(table, types, changes.iter().map(|ch| ch.row));
    let lock = prepare(client, prepared, &locks.sql, table).await?;
    let lock_refs = locks.refs();
    let Some(sql) = fast_statement(table, types, policy, columns) else {
        client.query(&lock, &lock_refs).await.map_err(&error)?;
        return resolve_changes(client, writes, changes).await;
    };
    let statement = prepare(client, prepared, &sql, table).await?;
    let params = change_params(writes, changes)?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
    // The generic plan from the first batch on (PostgreSQL would plan the first five for their exact row count,
    // and hash the whole table); the setting is back to the session's for every other statement. The four are
    // sent together, without waiting for each other, and run in order. The first error is the one to report:
    // after it, the others fail only because the transaction is aborted, and that would hide a deadlock
    // (transient).
    let (locked, set, rows, reset) = tokio::join!(
        client.query(&lock, &lock_refs),
        client.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan"),
        client.query(&statement, &refs),
        client.batch_execute("SET LOCAL plan_cache_mode = DEFAULT"),
    );
    locked.map_err(&error)?;
    let rows = rows.map_err(&error)?;
    set.and(reset).map_err(&error)?;
    let applied: std::collections::HashSet<i32> = rows.iter().map(|r| r.get(0)).collect();
    if applied.len() == changes.len() {
        return Ok((Vec::new(), Vec::new()));
    }
    let left: Vec<usize> = (0..changes.len())
        .filter(|&i| !applied.contains(&(i as i32)))
        .collect();
    let rest: Vec<Change<'_>> = left.iter().map(|&i| changes[i].clone()).collect();
    let (records, raced) = resolve_changes(client, writes, &rest).await?;
    Ok((records, raced.into_iter().map(|i| left[i]).collect()))
}

/// `sql` prepared once per sink session (kept in `prepared`).
async fn prepare(
    client: &Client,
    prepared: &mut HashMap<String, Statement>,
    sql: &str,
    table: &TableSchema,
) -> Result<Statement, Error> {
    if let Some(s) = prepared.get(sql) {
        return Ok(s.clone());
    }
    let s = client
        .prepare(sql)
        .await
        .map_err(super::write_error(&format!(
            "preparing a write to {}",
            table.id
        )))?;
    prepared.insert(sql.to_owned(), s.clone());
    Ok(s)
}

/// The parameters of both statements of a group of changes (the table's name, which only
/// [`change_statement`] takes, left out).
fn change_params(
    writes: Writes<'_>,
    changes: &[Change<'_>],
) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, Error> {
    let Writes {
        table,
        policy,
        columns,
        complete,
        ..
    } = writes;
    let sums: Vec<usize> = columns
        .iter()
        .copied()
        .filter(|&c| policy.merge_of(c) == Some(MergeRule::SumDelta))
        .collect();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    for &c in columns {
        params.push(Box::new(
            changes
                .iter()
                .map(|ch| pg_text(&ch.row[c]))
                .collect::<Vec<_>>(),
        ));
    }
    for &c in &sums {
        let mut olds = Vec::with_capacity(changes.len());
        for ch in changes {
            olds.push(match ch.kind {
                ChangeKind::Read => pg_text(&ch.row[c]),
                ChangeKind::Insert => None,
                ChangeKind::Update => match ch.old.map(|o| &o[c]) {
                    Some(v) if *v != ferry_core::Value::Unchanged => pg_text(v),
                    _ => {
                        return Err(crate::conflict::sum_delta_needs_old(
                            table,
                            &table.columns[c].name,
                        ))
                    }
                },
            });
        }
        params.push(Box::new(olds));
    }
    push_versions(&mut params, changes.iter().map(|c| &c.version));
    params.push(Box::new(
        changes
            .iter()
            .map(|ch| may_insert(policy, complete, ch))
            .collect::<Vec<bool>>(),
    ));
    params.push(Box::new(
        changes
            .iter()
            .map(|c| c.kind == ChangeKind::Update)
            .collect::<Vec<bool>>(),
    ));
    params.push(Box::new(
        changes
            .iter()
            .map(|c| c.vector.clone())
            .collect::<Vec<Option<String>>>(),
    ));
    params.push(Box::new(
        changes.iter().map(|c| c.seen).collect::<Vec<Option<i64>>>(),
    ));
    Ok(params)
}

/// [`change_statement`] for `changes`: the conflicts met, and the changes a concurrent insert kept out.
async fn resolve_changes(
    client: &Client,
    writes: Writes<'_>,
    changes: &[Change<'_>],
) -> Result<(Vec<ConflictRecord>, Vec<usize>), Error> {
    let Writes {
        table,
        types,
        policy,
        columns,
        complete,
    } = writes;
    let mut params = change_params(writes, changes)?;
    params.push(Box::new(table.id.to_string()));
    let sql = change_statement(table, types, policy, columns);
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
    let outcomes = run(client, &sql, &refs, table).await?;
    // Keys a local write inserted, or deleted, after the statement's snapshot: those changes were not applied;
    // they go again, now meeting the row (or its tombstone) like any other.
    let raced: Vec<usize> = outcomes
        .iter()
        .filter(|o| o.what == "r")
        .map(|o| o.ord as usize)
        .collect();
    let mut records = Vec::new();
    for o in &outcomes {
        let Some(ch) = changes.get(o.ord as usize) else {
            continue;
        };
        match o.what.as_str() {
            "x" => {
                let local = Version {
                    ts: o.local_ts.unwrap_or(0),
                    node: o.local_node.clone().unwrap_or_default(),
                };
                let won = o.won.unwrap_or(false);
                let kind = if ch.kind == ChangeKind::Update {
                    ConflictKind::UpdateOriginDiffers
                } else {
                    ConflictKind::InsertExists
                };
                let winner = if won {
                    "remote"
                } else if policy.merges.is_empty() {
                    "local"
                } else {
                    "merged"
                };
                let mut rec = record(
                    table,
                    policy,
                    ch,
                    kind,
                    winner,
                    Some(local),
                    o.local.clone(),
                );
                if let (Some(merge), false) = (&policy.merge, won) {
                    merge_row(client, table, types, merge, &rec, ch).await?;
                    rec.winner = "merged";
                }
                records.push(rec);
            }
            // A change a concurrent insert kept out goes again (below): it is decided, and logged, then.
            "m" if raced.contains(&(o.ord as usize)) => {}
            "m" => {
                let tomb = o.local_ts.map(|ts| Version {
                    ts,
                    node: o.local_node.clone().unwrap_or_default(),
                });
                // The statement applied the same rule; this names the conflict and its winner.
                let Decision::Conflict { kind, remote_wins } = decide_change(
                    policy.missing_resolver(),
                    None,
                    tomb.as_ref(),
                    &ch.version,
                    ch.seen,
                    ch.kind == ChangeKind::Update,
                    complete,
                ) else {
                    continue;
                };
                let winner = if remote_wins { "remote" } else { "local" };
                records.push(record(table, policy, ch, kind, winner, tomb, None));
            }
            _ => {}
        }
    }
    Ok((records, raced))
}

/// Writes the application-level merge of a conflicting row: the columns the expression decides, and the larger
/// of both versions (each side of a pair computes the same).
async fn merge_row(
    client: &Client,
    table: &TableSchema,
    types: &[String],
    merge: &crate::conflict::MergeExpression,
    rec: &ConflictRecord,
    ch: &Change<'_>,
) -> Result<(), Error> {
    let mut merged = merge.merge(table, rec)?;
    let remote_newer = rec
        .local_version
        .as_ref()
        .is_none_or(|l| rec.remote_version > *l);
    // The columns the expression leaves alone follow the later version, as under last-write-wins: both sides
    // pick the same.
    if remote_newer {
        for (c, column) in table.columns.iter().enumerate() {
            if table.primary_key.contains(&c)
                || crate::conflict::is_version_column(&column.name)
                || super::ddl::computed_by_target(table, c)
                || ch.row[c] == ferry_core::Value::Unchanged
                || merged.iter().any(|(m, _)| *m == c)
            {
                continue;
            }
            merged.push((c, pg_text(&ch.row[c])));
        }
    }
    let version = rec
        .local_version
        .clone()
        .map_or(rec.remote_version.clone(), |l| {
            l.max(rec.remote_version.clone())
        });
    let mut sets: Vec<String> = merged
        .iter()
        .enumerate()
        .map(|(n, (c, _))| {
            format!(
                "{} = ${}::text::{}",
                quote_ident(&table.columns[*c].name),
                n + 1,
                target_type(table, types, *c)
            )
        })
        .collect();
    let mut params: Vec<Option<String>> = merged.into_iter().map(|(_, v)| v).collect();
    sets.push(format!("{VERSION_TS} = ${}::text::int8", params.len() + 1));
    params.push(Some(version.ts.to_string()));
    sets.push(format!("{VERSION_NODE} = ${}::text", params.len() + 1));
    params.push(Some(version.node));
    let keys: Vec<String> = table
        .primary_key
        .iter()
        .map(|&k| {
            params.push(pg_text(&ch.row[k]));
            format!(
                "{} = ${}::text::{}",
                quote_ident(&table.columns[k].name),
                params.len(),
                target_type(table, types, k)
            )
        })
        .collect();
    let sql = format!(
        "UPDATE {} SET {} WHERE {}",
        qualified_name(&table.id),
        sets.join(", "),
        keys.join(" AND ")
    );
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
    client
        .execute(sql.as_str(), &refs)
        .await
        .map_err(super::write_error(&format!(
            "merging a conflicting row of {}",
            table.id
        )))?;
    Ok(())
}

fn record(
    table: &TableSchema,
    policy: &TablePolicy,
    ch: &Change<'_>,
    kind: ConflictKind,
    winner: &'static str,
    local_version: Option<Version>,
    local_row: Option<String>,
) -> ConflictRecord {
    ConflictRecord {
        table: table.id.to_string(),
        key: crate::rows::describe_key(table, ch.row),
        kind,
        resolver: policy.resolver_name(),
        winner,
        local_row,
        remote_row: crate::conflict::row_json(table, ch.row),
        local_version,
        remote_version: ch.version.clone(),
        position: ch.position.to_string(),
    }
}

/// Applies a group of deletes; returns the conflicts met.
pub async fn apply_deletes(
    client: &Client,
    table: &TableSchema,
    types: &[String],
    policy: &TablePolicy,
    deletes: &[Delete<'_>],
) -> Result<Vec<ConflictRecord>, Error> {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    for &k in &table.primary_key {
        params.push(Box::new(
            deletes
                .iter()
                .map(|d| pg_text(&d.row[k]))
                .collect::<Vec<_>>(),
        ));
    }
    push_versions(&mut params, deletes.iter().map(|d| &d.version));
    params.push(Box::new(
        deletes.iter().map(|d| d.seen).collect::<Vec<Option<i64>>>(),
    ));
    params.push(Box::new(table.id.to_string()));
    let sql = delete_statement(table, types, policy);
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
    let locks = KeyLocks::new(table, types, deletes.iter().map(|d| d.row));
    client
        .query(&locks.sql, &locks.refs())
        .await
        .map_err(super::write_error(&format!("writing to {}", table.id)))?;
    let outcomes = run(client, &sql, &refs, table).await?;
    let mut records = Vec::new();
    for o in &outcomes {
        let Some(d) = deletes.get(o.ord as usize) else {
            continue;
        };
        let (kind, won, local_version) = match o.what.as_str() {
            "x" => (
                ConflictKind::DeleteOriginDiffers,
                o.won.unwrap_or(false),
                Some(Version {
                    ts: o.local_ts.unwrap_or(0),
                    node: o.local_node.clone().unwrap_or_default(),
                }),
            ),
            "m" => (ConflictKind::DeleteMissing, false, None),
            _ => continue,
        };
        records.push(ConflictRecord {
            table: table.id.to_string(),
            key: crate::rows::describe_key(table, d.row),
            kind,
            resolver: policy.resolver_name(),
            winner: if won { "remote" } else { "local" },
            local_row: o.local.clone(),
            remote_row: crate::conflict::row_json(table, d.row),
            local_version,
            remote_version: d.version.clone(),
            position: d.position.to_string(),
        });
    }
    Ok(records)
}

/// Writes conflict records to `ferry_conflicts` in the open transaction.
pub async fn log(
    client: &Client,
    cx: &Context<'_>,
    records: &[ConflictRecord],
) -> Result<(), Error> {
    if records.is_empty() {
        return Ok(());
    }
    let texts = |f: &dyn Fn(&ConflictRecord) -> Option<String>| -> Vec<Option<String>> {
        records.iter().map(f).collect()
    };
    let ints = |f: &dyn Fn(&ConflictRecord) -> Option<i64>| -> Vec<Option<i64>> {
        records.iter().map(f).collect()
    };
    let table = texts(&|r| Some(r.table.clone()));
    let key = texts(&|r| Some(r.key.clone()));
    let kind = texts(&|r| Some(r.kind.name().to_owned()));
    let resolver = texts(&|r| Some(r.resolver.to_owned()));
    let winner = texts(&|r| Some(r.winner.to_owned()));
    let local_row = texts(&|r| r.local_row.clone());
    let remote_row = texts(&|r| Some(r.remote_row.clone()));
    let local_node = texts(&|r| r.local_version.as_ref().map(|v| v.node.clone()));
    let local_ts = ints(&|r| r.local_version.as_ref().map(|v| v.ts));
    let remote_node = texts(&|r| Some(r.remote_version.node.clone()));
    let remote_ts = ints(&|r| Some(r.remote_version.ts));
    let position = texts(&|r| Some(r.position.clone()));
    client
        .execute(
            &format!(
                "INSERT INTO {CONFLICTS_TABLE} (pipeline, sink, table_name, key, kind, resolver, winner, local_row, \
                 remote_row, local_node, local_ts, remote_node, remote_ts, source_position) \
                 SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                 $8::text[], $9::text[], $10::text[], $11::int8[], $12::text[], $13::int8[], $14::text[])"
            ),
            &[
                &cx.pipeline,
                &cx.sink,
                &table,
                &key,
                &kind,
                &resolver,
                &winner,
                &local_row,
                &remote_row,
                &local_node,
                &local_ts,
                &remote_node,
                &remote_ts,
                &position,
            ],
        )
        .await
        .map_err(super::write_error("writing to ferry_conflicts"))?;
    Ok(())
}

/// The conflicts `pipeline`'s sink `sink` logged in the target at `url`, oldest first, only `table`'s when given
/// (`ferry conflicts`). A target without a conflict log has none.
pub async fn list(
    url: &str,
    pipeline: &str,
    sink: &str,
    table: Option<&str>,
) -> Result<Vec<crate::conflict::LoggedConflict>, Error> {
    let client = super::connect(url).await?;
    let exists: bool = client
        .query_one(
            &format!("SELECT to_regclass('{CONFLICTS_TABLE}') IS NOT NULL"),
            &[],
        )
        .await
        .map_err(super::write_error("looking for ferry_conflicts"))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT id, detected_at::text, pipeline, sink, table_name, key, kind, resolver, winner, local_row, \
                 remote_row, local_node, local_ts, remote_node, remote_ts, source_position FROM {CONFLICTS_TABLE} \
                 WHERE pipeline = $1 AND sink = $2 AND ($3::text IS NULL OR table_name = $3) ORDER BY id"
            ),
            &[&pipeline, &sink, &table],
        )
        .await
        .map_err(super::write_error("reading ferry_conflicts"))?;
    Ok(rows
        .iter()
        .map(|r| crate::conflict::LoggedConflict {
            id: r.get(0),
            detected_at: r.get(1),
            pipeline: r.get(2),
            sink: r.get(3),
            table: r.get(4),
            key: r.get(5),
            kind: r.get(6),
            resolver: r.get(7),
            winner: r.get(8),
            local_row: crate::conflict::logged_row(r.get(9)),
            remote_row: crate::conflict::logged_row(r.get(10)),
            local_node: r.get(11),
            local_ts: r.get(12),
            remote_node: r.get(13),
            remote_ts: r.get(14),
            source_position: r.get(15),
        })
        .collect())
}

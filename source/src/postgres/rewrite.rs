//! Noticing table rewrites: DDL that changes rows without any row event in the WAL, which logical decoding
//! therefore never shows (`ALTER COLUMN … TYPE … USING <expression>`, `ADD COLUMN` with a volatile default).
//!
//! A `table_rewrite` event trigger (it needs a superuser to create) emits a transactional logical message with
//! the rewritten table's OID, PostgreSQL's rewrite reason and the statement, so the message reaches the slot at
//! the exact point of the rewrite. The streamer then decides whether a target can reproduce the rewrite itself
//! (a plain type change: the target casts the same way) or not (the pipeline's `on_schema_change` policy).

use tokio_postgres::Client;

use ferry_core::Error;

/// The logical message prefix of a rewrite notice.
pub const PREFIX: &str = "ferry_rewrite";

/// PostgreSQL's rewrite reasons (`AT_REWRITE_*` in src/include/commands/event_trigger.h).
const DEFAULT_VAL: i32 = 0x02;
const COLUMN_REWRITE: i32 = 0x04;
/// Ferry's own reasons, from the `ddl_command_end` trigger: a partition holding rows was attached or detached; an
/// enum label was renamed.
const PARTITION_WITH_ROWS: i32 = 0x100;
const ENUM_LABEL_RENAMED: i32 = 0x200;

pub const INSTALL: &str = "CREATE OR REPLACE FUNCTION public.ferry_table_rewrite() RETURNS event_trigger
LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM pg_logical_emit_message(true, 'ferry_rewrite',
    pg_event_trigger_table_rewrite_oid()::oid::text || E'\\t' || pg_event_trigger_table_rewrite_reason() || E'\\t'
    || current_setting('TimeZone') || E'\\t' || current_setting('DateStyle') || E'\\t'
    || (SELECT coalesce(json_agg(json_build_array(attname, atttypid::int8, atttypmod) ORDER BY attnum), '[]')
        FROM pg_attribute WHERE attrelid = pg_event_trigger_table_rewrite_oid() AND attnum > 0
        AND NOT attisdropped)::text
    || E'\\t' || current_query());
END $f$;
CREATE OR REPLACE FUNCTION public.ferry_ddl_end() RETURNS event_trigger LANGUAGE plpgsql AS $f$
DECLARE
  cmd record;
  rel record;
  part regclass;
  has_rows boolean;
  q text := current_query();
  notice text := E'\\t' || current_setting('TimeZone') || E'\\t' || current_setting('DateStyle') || E'\\t' || q;
BEGIN
  FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    IF cmd.command_tag = 'ALTER TABLE' THEN
      part := to_regclass(substring(q from '(?i)(?:ATTACH|DETACH)\\s+PARTITION\\s+([^\\s;]+)'));
      IF part IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', part) INTO has_rows;
        IF has_rows THEN
          PERFORM pg_logical_emit_message(true, 'ferry_rewrite', cmd.objid::oid::text || E'\\t256' || notice);
        END IF;
      END IF;
    ELSIF cmd.command_tag = 'ALTER TYPE' AND q ~* 'RENAME\\s+VALUE' THEN
      FOR rel IN SELECT DISTINCT attrelid FROM pg_attribute WHERE atttypid = cmd.objid AND attnum > 0
                 AND NOT attisdropped LOOP
        PERFORM pg_logical_emit_message(true, 'ferry_rewrite', rel.attrelid::oid::text || E'\\t512' || notice);
      END LOOP;
    END IF;
  END LOOP;
END $f$;
DO $ferry$ BEGIN
IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ferry_table_rewrite') THEN
  CREATE EVENT TRIGGER ferry_table_rewrite ON table_rewrite EXECUTE FUNCTION public.ferry_table_rewrite();
END IF;
IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ferry_ddl_end') THEN
  CREATE EVENT TRIGGER ferry_ddl_end ON ddl_command_end WHEN TAG IN ('ALTER TABLE', 'ALTER TYPE')
    EXECUTE FUNCTION public.ferry_ddl_end();
END IF;
END $ferry$";

/// Whether the event trigger exists, and whether the current role is a superuser (who may create it).
pub async fn state(client: &Client) -> Result<(bool, bool), Error> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) = 2 FROM pg_event_trigger WHERE evtname IN ('ferry_table_rewrite', 'ferry_ddl_end')), \
                    rolsuper \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| Error::transient("reading the source's event triggers", e))?;
    Ok((row.get(0), row.get(1)))
}

/// Installs the event trigger when it is missing and the role may create it. Returns whether it is in place.
pub async fn install(client: &Client) -> Result<bool, Error> {
    let (present, superuser) = state(client).await?;
    if !superuser {
        return Ok(present);
    }
    // Always (idempotent): the function takes this version's notice format.
    client
        .batch_execute(&ferry_pgconn::setup_locked(INSTALL))
        .await
        .map_err(|e| Error::fatal_from("creating the ferry_table_rewrite event trigger", e))?;
    Ok(true)
}

/// One rewrite notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub oid: u32,
    pub reason: i32,
    /// The rewriting session's `TimeZone` and `DateStyle`: a date/time type change's values depend on them.
    pub timezone: String,
    pub datestyle: String,
    /// The rewritten relation's columns as the rewrite leaves them (name, type OID, type modifier), when the
    /// notice carries them (`table_rewrite` notices from this version on).
    pub columns: Option<Vec<(String, u32, i32)>>,
    pub statement: String,
}

impl Rewrite {
    /// Parses a notice's content: `<oid>\t<reason>\t<TimeZone>\t<DateStyle>\t[<columns>\t]<statement>`, where
    /// `<columns>` is a JSON array of `[name, type OID, type modifier]` (a statement never starts with `[`).
    pub fn parse(content: &[u8]) -> Option<Rewrite> {
        let text = std::str::from_utf8(content).ok()?;
        let mut parts = text.splitn(5, '\t');
        let (oid, reason, timezone, datestyle) = (
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
            parts.next()?.to_owned(),
            parts.next()?.to_owned(),
        );
        let rest = parts.next().unwrap_or_default();
        let (columns, statement) = match rest.split_once('\t') {
            // Columns that do not read leave the notice as it was before they were sent.
            Some((json, statement)) if json.starts_with('[') => {
                (serde_json::from_str(json).ok(), statement)
            }
            _ => (None, rest),
        };
        Some(Rewrite {
            oid,
            reason,
            timezone,
            datestyle,
            columns,
            statement: statement.to_owned(),
        })
    }

    /// Whether the rewrite changed a column's type (the targets follow the notice's column types then).
    pub fn changes_types(&self) -> bool {
        self.reason & COLUMN_REWRITE != 0
    }

    /// `Err(why)` when a target cannot derive the rewritten rows from the ones it has.
    pub fn reproducible(&self) -> Result<(), &'static str> {
        if self.reason & PARTITION_WITH_ROWS != 0 {
            return Err("a partition holding rows was attached or detached, so its rows entered or left the table \
                        without row events");
        }
        if self.reason & ENUM_LABEL_RENAMED != 0 {
            return Err(
                "an enum label was renamed, so every row holding it changed without row events",
            );
        }
        if self.reason & DEFAULT_VAL != 0 {
            return Err("a column was added with a volatile default, so every existing row got its own value");
        }
        if self.reason & COLUMN_REWRITE != 0 && !plain_using(&self.statement) {
            return Err("a column's values were rewritten by a USING expression");
        }
        let utc = matches!(
            self.timezone.as_str(),
            "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT" | "Z"
        );
        if self.reason & COLUMN_REWRITE != 0
            && (!utc || !self.datestyle.starts_with("ISO"))
            && mentions_temporal_type(&self.statement)
        {
            return Err("a date/time type change whose values depend on the session's TimeZone or DateStyle, which \
                        the targets do not share");
        }
        Ok(())
    }
}

/// Whether every `USING` clause of the statement is a plain cast of a column (`USING n::bigint`, `USING n`), which
/// a target's own type change reproduces. Text in quotes is skipped; anything else counts as an expression.
fn plain_using(statement: &str) -> bool {
    let words = tokens(statement);
    // A rewrite from inside a DO block or a function: the statement that did it is not in sight.
    if !words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("alter"))
    {
        return false;
    }
    let mut i = 0;
    while i < words.len() {
        if words[i].eq_ignore_ascii_case("using") {
            // The clause runs to the next comma or the end of the statement.
            let clause: Vec<&str> = words[i + 1..]
                .iter()
                .take_while(|w| *w != "," && *w != ";")
                .map(String::as_str)
                .collect();
            // The column this USING belongs to: `ALTER [COLUMN] <name> [SET DATA] TYPE … USING`.
            let altered = words[..i]
                .iter()
                .rposition(|w| w.eq_ignore_ascii_case("type"))
                .and_then(|t| {
                    words[..t]
                        .iter()
                        .rev()
                        .find(|w| !w.eq_ignore_ascii_case("data") && !w.eq_ignore_ascii_case("set"))
                })
                .map(|w| normalize(w));
            let same = |column: &str| altered.as_deref() == Some(normalize(column).as_str());
            let plain = match clause.as_slice() {
                [column] => is_identifier(column) && same(column),
                [column, "::", ty @ ..] => {
                    is_identifier(column)
                        && same(column)
                        && !ty.is_empty()
                        && ty.iter().all(|t| {
                            is_identifier(t)
                                || t.chars().all(|c| c.is_ascii_digit() || "()[]".contains(c))
                        })
                }
                _ => false,
            };
            if !plain {
                return false;
            }
        }
        i += 1;
    }
    true
}

/// Whether a statement names a date/time type (whose casts depend on the session's TimeZone and DateStyle).
fn mentions_temporal_type(statement: &str) -> bool {
    tokens(statement).iter().any(|w| {
        let w = w.to_ascii_lowercase();
        w.starts_with("timestamp")
            || w.starts_with("date")
            || w.starts_with("time")
            || w == "interval"
            || w == "abstime"
    })
}

/// An identifier as PostgreSQL resolves it: quoted ones as written, others folded to lower case.
fn normalize(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => word.to_lowercase(),
    }
}

fn is_identifier(word: &str) -> bool {
    word.starts_with('"')
        || word
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Splits SQL into identifiers (quoted ones whole), string literals (whole), `::` and single punctuation.
fn tokens(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() {
                if chars[i] == c {
                    if chars.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(chars.len());
            out.push(chars[start..i].iter().collect());
        } else if c.is_alphanumeric() || c == '_' || c == '$' || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_$.".contains(chars[i])) {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".to_owned());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(reason: i32, statement: &str) -> Rewrite {
        Rewrite::parse(format!("16384\t{reason}\tUTC\tISO, YMD\t{statement}").as_bytes()).unwrap()
    }

    #[test]
    fn plain_type_changes_are_reproducible_expressions_and_volatile_defaults_are_not() {
        assert_eq!(
            rewrite(4, "ALTER TABLE t ALTER COLUMN a TYPE numeric(10,5)").oid,
            16384
        );
        for ok in [
            "ALTER TABLE t ALTER COLUMN a TYPE numeric(10,5)",
            "ALTER TABLE t ALTER a TYPE bigint USING a::bigint, ALTER b TYPE int USING \"b\"",
            "ALTER TABLE t ALTER COLUMN \"A\" SET DATA TYPE int USING \"A\"::int",
            "alter table t alter column a type int using a::integer[]",
            "ALTER TABLE t ALTER COLUMN note TYPE text, ALTER c SET DEFAULT 'USING x + 1'",
        ] {
            assert_eq!(rewrite(4, ok).reproducible(), Ok(()), "{ok}");
        }
        for bad in [
            "ALTER TABLE t ALTER COLUMN a TYPE int USING a * 2",
            "ALTER TABLE t ALTER COLUMN a TYPE int USING length(a)",
            "ALTER TABLE t ALTER a TYPE int USING a::int, ALTER b TYPE text USING b || 'x'",
            "ALTER TABLE t ALTER a TYPE int USING b::int",
            "DO $$ BEGIN EXECUTE 'ALTER TABLE t ALTER a TYPE bigint USING a * 100'; END $$",
        ] {
            assert!(rewrite(4, bad).reproducible().is_err(), "{bad}");
        }
        assert!(rewrite(
            2,
            "ALTER TABLE t ADD COLUMN at timestamptz DEFAULT clock_timestamp()"
        )
        .reproducible()
        .is_err());
        // SET LOGGED / SET ACCESS METHOD rewrite without changing values.
        assert_eq!(
            rewrite(1, "ALTER TABLE t SET LOGGED").reproducible(),
            Ok(())
        );
        // A date/time type change in a session whose TimeZone or DateStyle the targets do not share.
        let berlin = Rewrite::parse(
            b"16384\t4\tEurope/Berlin\tISO, YMD\tALTER TABLE t ALTER ts TYPE timestamptz",
        )
        .unwrap();
        assert!(berlin.reproducible().is_err());
        let int =
            Rewrite::parse(b"16384\t4\tEurope/Berlin\tSQL, DMY\tALTER TABLE t ALTER n TYPE bigint")
                .unwrap();
        assert_eq!(int.reproducible(), Ok(()));
        assert!(Rewrite::parse(b"x\t4\tUTC\tISO\tALTER").is_none());
        assert!(Rewrite::parse(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn notices_carry_the_columns_as_the_rewrite_leaves_them() {
        let n = Rewrite::parse(
            b"16384\t4\tUTC\tISO, MDY\t[[\"id\", 23, -1], [\"a\\tb\", 1700, 786438]]\tALTER TABLE t ALTER \"a\tb\" TYPE numeric(12,2)",
        )
        .unwrap();
        assert_eq!(
            n.columns,
            Some(vec![("id".into(), 23, -1), ("a\tb".into(), 1700, 786438)])
        );
        assert_eq!(
            n.statement,
            "ALTER TABLE t ALTER \"a\tb\" TYPE numeric(12,2)"
        );
        assert!(n.changes_types());
        // A notice from before the columns were sent (still in the WAL), its statement holding a tab.
        let old =
            Rewrite::parse(b"16384\t4\tUTC\tISO, MDY\tALTER TABLE t\tALTER n TYPE bigint").unwrap();
        assert_eq!(old.columns, None);
        assert_eq!(old.statement, "ALTER TABLE t\tALTER n TYPE bigint");
        let unread = Rewrite::parse(b"16384\t4\tUTC\tISO\t[not json\tALTER").unwrap();
        assert_eq!((unread.columns, unread.statement.as_str()), (None, "ALTER"));
    }
}

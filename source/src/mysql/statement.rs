//! What a QUERY event's statement does to the tables Ferry follows: transaction control, TRUNCATE, DDL, or a
//! statement-logged data change (which a row-based pipeline must never silently skip).

use ferry_core::TableId;

/// A QUERY event's statement, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
    Truncate(TableId),
    /// CREATE / ALTER / DROP / RENAME TABLE and the like: the tables whose definition changes.
    SchemaChange(Vec<TableId>),
    /// INSERT / UPDATE / DELETE / REPLACE / LOAD logged as a statement (binlog_format STATEMENT or MIXED).
    DataChange,
    /// Anything else (GRANT, CREATE USER, SAVEPOINT, FLUSH, …): nothing to apply.
    Other,
}

/// Splits SQL into words and identifiers, skipping comments and string literals. Backquoted identifiers keep
/// their case and lose their quotes; `db.t` is three tokens (`db`, `.`, `t`).
fn tokens(sql: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if out.len() >= limit {
            break;
        }
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            // MySQL's executable comments `/*!50001 … */` hold real SQL: read their body as SQL.
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'!') {
                    chars.next();
                    while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
                        chars.next();
                    }
                    continue;
                }
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            '*' if chars.peek() == Some(&'/') => {
                chars.next();
            }
            '`' => {
                let mut ident = String::new();
                while let Some(n) = chars.next() {
                    if n == '`' {
                        if chars.peek() == Some(&'`') {
                            chars.next();
                            ident.push('`');
                            continue;
                        }
                        break;
                    }
                    ident.push(n);
                }
                out.push(format!("`{ident}"));
            }
            '\'' | '"' => {
                let quote = c;
                while let Some(n) = chars.next() {
                    if n == '\\' {
                        chars.next();
                    } else if n == quote {
                        break;
                    }
                }
                out.push("'".into());
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut word = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(word);
            }
            other => out.push(other.to_string()),
        }
    }
    out
}

fn is_kw(token: Option<&String>, kw: &str) -> bool {
    token.is_some_and(|t| !t.starts_with('`') && t.eq_ignore_ascii_case(kw))
}

fn ident(token: &str) -> String {
    token.strip_prefix('`').unwrap_or(token).to_owned()
}

/// Reads `name` or `db.name` at `i`; unqualified names are in `default_db`.
fn table_at(t: &[String], i: usize, default_db: &str) -> Option<(TableId, usize)> {
    let first = t.get(i)?;
    if t.get(i + 1).map(String::as_str) == Some(".") {
        let second = t.get(i + 2)?;
        Some((TableId::new(ident(first), ident(second)), i + 3))
    } else {
        Some((TableId::new(default_db, ident(first)), i + 1))
    }
}

/// Classifies `sql`, run with `default_db` as the current database.
pub fn classify(sql: &str, default_db: &str) -> Statement {
    let t = tokens(sql, 64);
    let kw = |i: usize, k: &str| is_kw(t.get(i), k);
    let skip_if_exists = |mut i: usize| {
        if kw(i, "IF") {
            i += 2 + usize::from(kw(i + 1, "NOT"));
        }
        i
    };
    if kw(0, "BEGIN") || (kw(0, "START") && kw(1, "TRANSACTION")) || (kw(0, "XA") && kw(1, "START"))
    {
        return Statement::Begin;
    }
    if kw(0, "COMMIT") || (kw(0, "XA") && kw(1, "COMMIT")) {
        return Statement::Commit;
    }
    if kw(0, "ROLLBACK") && !kw(1, "TO") || (kw(0, "XA") && kw(1, "ROLLBACK")) {
        return Statement::Rollback;
    }
    if kw(0, "TRUNCATE") {
        let i = if kw(1, "TABLE") { 2 } else { 1 };
        return match table_at(&t, i, default_db) {
            Some((table, _)) => Statement::Truncate(table),
            None => Statement::Other,
        };
    }
    if ["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD"]
        .iter()
        .any(|k| kw(0, k))
    {
        return Statement::DataChange;
    }
    // CREATE [OR REPLACE] [TEMPORARY] TABLE, ALTER [ONLINE] [IGNORE] TABLE, DROP [TEMPORARY] TABLE a, b, RENAME TABLE a TO b, c TO d.
    let verb = ["CREATE", "ALTER", "DROP", "RENAME"]
        .iter()
        .find(|k| kw(0, k));
    let Some(verb) = verb else {
        return Statement::Other;
    };
    let mut i = 1;
    while i < t.len() && !kw(i, "TABLE") {
        if !["OR", "REPLACE", "TEMPORARY", "ONLINE", "IGNORE", "OFFLINE"]
            .iter()
            .any(|k| kw(i, k))
        {
            // CREATE INDEX / DROP DATABASE / ALTER USER …: not a table definition, except indexes, which do not
            // change how rows decode.
            return Statement::Other;
        }
        i += 1;
    }
    if !kw(i, "TABLE") {
        return Statement::Other;
    }
    if *verb == "CREATE" && kw(1, "TEMPORARY") || *verb == "DROP" && kw(1, "TEMPORARY") {
        return Statement::Other;
    }
    i = skip_if_exists(i + 1);
    let mut tables = Vec::new();
    while let Some((table, next)) = table_at(&t, i, default_db) {
        tables.push(table);
        i = next;
        match *verb {
            "RENAME" if kw(i, "TO") => {
                if let Some((to, next)) = table_at(&t, i + 1, default_db) {
                    tables.push(to);
                    i = next;
                }
                if t.get(i).map(String::as_str) == Some(",") {
                    i += 1;
                    continue;
                }
                break;
            }
            "DROP" if t.get(i).map(String::as_str) == Some(",") => i += 1,
            "ALTER" if kw(i, "RENAME") => {
                let j = i + 1 + usize::from(kw(i + 1, "TO") || kw(i + 1, "AS"));
                if !kw(j, "COLUMN") && !kw(j, "INDEX") && !kw(j, "KEY") {
                    if let Some((to, _)) = table_at(&t, j, default_db) {
                        tables.push(to);
                    }
                }
                break;
            }
            _ => break,
        }
    }
    if tables.is_empty() {
        Statement::Other
    } else {
        Statement::SchemaChange(tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, name: &str) -> TableId {
        TableId::new(db, name)
    }

    #[test]
    fn statements_are_classified() {
        assert_eq!(classify("BEGIN", "d"), Statement::Begin);
        assert_eq!(classify("COMMIT /* implicit */", "d"), Statement::Commit);
        assert_eq!(classify("ROLLBACK TO SAVEPOINT x", "d"), Statement::Other);
        assert_eq!(
            classify("truncate table `a b`", "d"),
            Statement::Truncate(t("d", "a b"))
        );
        assert_eq!(
            classify("TRUNCATE x.y", "d"),
            Statement::Truncate(t("x", "y"))
        );
        assert_eq!(
            classify("/* c */ ALTER TABLE `db`.`t` ADD COLUMN c int", "d"),
            Statement::SchemaChange(vec![t("db", "t")])
        );
        assert_eq!(
            classify("CREATE TABLE IF NOT EXISTS t (id int)", "d"),
            Statement::SchemaChange(vec![t("d", "t")])
        );
        assert_eq!(
            classify("DROP TABLE IF EXISTS a, b.c /* generated by server */", "d"),
            Statement::SchemaChange(vec![t("d", "a"), t("b", "c")])
        );
        assert_eq!(
            classify("RENAME TABLE a TO b, c TO x.d", "d"),
            Statement::SchemaChange(vec![t("d", "a"), t("d", "b"), t("d", "c"), t("x", "d")])
        );
        assert_eq!(
            classify("ALTER TABLE a RENAME TO b", "d"),
            Statement::SchemaChange(vec![t("d", "a"), t("d", "b")])
        );
        assert_eq!(
            classify("CREATE TEMPORARY TABLE tmp (x int)", "d"),
            Statement::Other
        );
        assert_eq!(classify("CREATE INDEX i ON t (x)", "d"), Statement::Other);
        assert_eq!(
            classify("insert into t values ('a;b')", "d"),
            Statement::DataChange
        );
        assert_eq!(classify("GRANT ALL ON *.* TO x", "d"), Statement::Other);
        assert_eq!(classify("", "d"), Statement::Other);
    }
}

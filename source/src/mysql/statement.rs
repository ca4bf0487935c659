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
                // A literal, kept as `'` followed by its unescaped content.
                let quote = c;
                let mut literal = String::from("'");
                while let Some(n) = chars.next() {
                    match n {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                // MySQL's escapes; `\%` and `\_` keep their backslash (LIKE patterns).
                                match e {
                                    'n' => literal.push('\n'),
                                    't' => literal.push('\t'),
                                    'r' => literal.push('\r'),
                                    'b' => literal.push('\u{8}'),
                                    'Z' => literal.push('\u{1a}'),
                                    '0' => literal.push('\0'),
                                    '%' | '_' => {
                                        literal.push('\\');
                                        literal.push(e);
                                    }
                                    other => literal.push(other),
                                }
                            }
                        }
                        n if n == quote && chars.peek() == Some(&quote) => {
                            chars.next();
                            literal.push(quote);
                        }
                        n if n == quote => break,
                        n => literal.push(n),
                    }
                }
                out.push(literal);
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

/// A column as a CREATE / ALTER TABLE statement defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    /// As information_schema's `COLUMN_TYPE` would show it, near enough to create the column again.
    pub column_type: String,
    pub data_type: String,
    pub unsigned: bool,
    pub binary: bool,
    /// The character set the definition names (`CHARACTER SET`, a `COLLATE` prefix, NCHAR's utf8mb3, `binary`
    /// for binary types); `None`: the table's default.
    pub charset: Option<String>,
    pub labels: Vec<String>,
    pub nullable: bool,
    pub primary_key: bool,
    pub default: DefaultValue,
}

/// Where ADD / CHANGE / MODIFY put a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Last,
    First,
    After(String),
}

/// One change of an ALTER TABLE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterSpec {
    Add(ColumnDef, Placement),
    Drop(String),
    /// CHANGE old new … / MODIFY name …: the column's new definition.
    Change(String, ColumnDef, Placement),
    RenameColumn(String, String),
    AddPrimaryKey(Vec<String>),
    DropPrimaryKey,
    RenameTable(TableId),
    /// `[DEFAULT] CHARACTER SET x` / `COLLATE y`: the character set columns added later take.
    DefaultCharset(String),
    /// `CONVERT TO CHARACTER SET x`: every string column's character set, and the default.
    ConvertCharset(String),
    /// Indexes, constraints, defaults, table options, partitions: rows are laid out as before.
    NoLayoutChange,
}

/// A table-definition statement, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ddl {
    Create {
        table: TableId,
        columns: Vec<ColumnDef>,
        primary_key: Vec<String>,
        /// The table option `[DEFAULT] CHARACTER SET` / `COLLATE`; `None`: the database's default.
        default_charset: Option<String>,
    },
    Alter(TableId, Vec<AlterSpec>),
    Drop(Vec<TableId>),
    Rename(Vec<(TableId, TableId)>),
}

fn upper(t: &str) -> String {
    if t.starts_with('`') || t.starts_with('\'') {
        String::new()
    } else {
        t.to_ascii_uppercase()
    }
}

/// Splits tokens at commas outside parentheses.
fn split_top(tokens: &[String]) -> Vec<&[String]> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, t) in tokens.iter().enumerate() {
        match t.as_str() {
            "(" => depth += 1,
            ")" => depth -= 1,
            "," if depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < tokens.len() {
        parts.push(&tokens[start..]);
    }
    parts
}

/// The character set a collation name starts with (`latin1_swedish_ci` → latin1, `binary` → binary); `None` for
/// MariaDB's set-less `uca1400_…` names.
fn collation_charset(collation: &str) -> Option<String> {
    let lower = collation.to_ascii_lowercase();
    super::charset::Charset::from_collation_name(&lower).map(drop)?;
    lower.split('_').next().map(str::to_owned)
}

/// The character set that table options (`DEFAULT CHARSET = x`, `CHARACTER SET x`, `COLLATE = y`, or
/// `CONVERT TO CHARACTER SET x`) name.
fn charset_option(t: &[String]) -> Option<String> {
    let value = |i: usize| {
        let i = if t.get(i).map(String::as_str) == Some("=") {
            i + 1
        } else {
            i
        };
        t.get(i).map(|x| ident(x.strip_prefix('\'').unwrap_or(x)))
    };
    let mut charset = None;
    let mut collation = None;
    for (i, x) in t.iter().enumerate() {
        match upper(x).as_str() {
            "CHARSET" => charset = value(i + 1),
            "CHARACTER" if upper(t.get(i + 1).map_or("", String::as_str)) == "SET" => {
                charset = value(i + 2)
            }
            "COLLATE" => collation = value(i + 1),
            _ => {}
        }
    }
    charset
        .map(|c| c.to_ascii_lowercase())
        .or_else(|| collation.as_deref().and_then(collation_charset))
}

/// Whether a column of this type has a character set.
pub fn takes_charset(data_type: &str) -> bool {
    matches!(
        data_type,
        "char"
            | "varchar"
            | "nchar"
            | "nvarchar"
            | "tinytext"
            | "text"
            | "mediumtext"
            | "longtext"
            | "long"
            | "enum"
            | "set"
    )
}

/// The identifiers inside `( … )` at `i` (a key's columns; prefix lengths dropped).
fn ident_list(t: &[String], i: usize) -> Option<Vec<String>> {
    if t.get(i).map(String::as_str) != Some("(") {
        return None;
    }
    let close = t[i..].iter().position(|x| x == ")")? + i;
    Some(
        split_top(&t[i + 1..close])
            .into_iter()
            .filter_map(|part| part.first().map(|x| ident(x)))
            .collect(),
    )
}

/// Parses `name type[(args)] [UNSIGNED] [CHARACTER SET cs] [NOT NULL] [PRIMARY KEY] …`.
fn column_def(t: &[String]) -> Result<ColumnDef, String> {
    let name = ident(t.first().ok_or("a column definition without a name")?);
    let raw_type = t
        .get(1)
        .filter(|x| !x.starts_with('\''))
        .ok_or_else(|| format!("column {name} has no type"))?
        .to_ascii_lowercase();
    let mut data_type = match raw_type.as_str() {
        "integer" => "int",
        "bool" | "boolean" => "tinyint",
        "dec" | "numeric" | "fixed" => "decimal",
        "real" => "double",
        "character" => "char",
        other => other,
    }
    .to_owned();
    let mut i = 2;
    if data_type == "double" && upper(t.get(2).map_or("", String::as_str)) == "PRECISION" {
        i += 1;
    }
    if data_type == "char" && upper(t.get(i).map_or("", String::as_str)) == "VARYING" {
        data_type = "varchar".into();
        i += 1;
    }
    let mut args = Vec::new();
    if t.get(i).map(String::as_str) == Some("(") {
        let close = t[i..]
            .iter()
            .position(|x| x == ")")
            .ok_or_else(|| format!("column {name}: unbalanced parentheses"))?
            + i;
        args = t[i + 1..close].to_vec();
        i = close + 1;
    }
    let labels: Vec<String> = args
        .iter()
        .filter_map(|a| a.strip_prefix('\'').map(str::to_owned))
        .collect();
    let args_text = args
        .iter()
        .map(|a| match a.strip_prefix('\'') {
            Some(l) => format!("'{}'", l.replace('\'', "''")),
            None => a.clone(),
        })
        .collect::<String>();
    let (mut unsigned, mut zerofill, mut charset_binary) = (false, false, false);
    let mut charset: Option<String> =
        matches!(data_type.as_str(), "nchar" | "nvarchar").then(|| "utf8mb3".to_owned());
    let mut collation: Option<String> = None;
    let (mut nullable, mut primary_key) = (true, false);
    let mut default = DefaultValue::None;
    while i < t.len() {
        match upper(&t[i]).as_str() {
            "DEFAULT" => {
                let (value, used) = default_literal(&t[i + 1..]);
                default = value;
                i += used;
            }
            "UNSIGNED" => unsigned = true,
            "ZEROFILL" => {
                zerofill = true;
                unsigned = true;
            }
            "CHARACTER" | "CHARSET" => {
                let j = if upper(&t[i]) == "CHARACTER" {
                    i + 2
                } else {
                    i + 1
                };
                charset_binary = t
                    .get(j)
                    .is_some_and(|c| ident(c).eq_ignore_ascii_case("binary"));
                charset = t.get(j).map(|c| ident(c).to_ascii_lowercase());
                i = j;
            }
            "COLLATE" => {
                collation = t.get(i + 1).and_then(|c| collation_charset(&ident(c)));
                i += 1;
            }
            // MySQL's shorthands: ASCII is latin1, UNICODE is ucs2.
            "ASCII" => charset = Some("latin1".into()),
            "UNICODE" => charset = Some("ucs2".into()),
            "NOT" if upper(t.get(i + 1).map_or("", String::as_str)) == "NULL" => {
                nullable = false;
                i += 1;
            }
            "PRIMARY" => {
                primary_key = true;
                nullable = false;
            }
            _ => {}
        }
        i += 1;
    }
    let binary = charset_binary
        || matches!(
            data_type.as_str(),
            "binary"
                | "varbinary"
                | "tinyblob"
                | "blob"
                | "mediumblob"
                | "longblob"
                | "bit"
                | "geometry"
        );
    let charset = if binary {
        Some("binary".to_owned())
    } else if takes_charset(&data_type) {
        charset.or(collation)
    } else {
        None
    };
    let mut column_type = data_type.clone();
    if !args_text.is_empty() {
        column_type = format!("{column_type}({args_text})");
    }
    if unsigned {
        column_type.push_str(" unsigned");
    }
    if zerofill {
        column_type.push_str(" zerofill");
    }
    Ok(ColumnDef {
        name,
        column_type,
        data_type,
        unsigned,
        binary,
        charset,
        labels: if matches!(raw_type.as_str(), "enum" | "set") {
            labels
        } else {
            Vec::new()
        },
        nullable,
        primary_key,
        default,
    })
}

/// A column's `DEFAULT` from the tokens after the keyword: the literal's text (`Ok(None)` for `NULL`), or `Err`
/// for what Ferry cannot evaluate (an expression, a function), with how many tokens were read.
fn default_literal(t: &[String]) -> (DefaultValue, usize) {
    let first = t.first().map_or("", String::as_str);
    // A character-set introducer (`_utf8mb4'x'`) before a string.
    if first.starts_with('_') && t.get(1).is_some_and(|x| x.starts_with('\'')) {
        return (DefaultValue::Known(t[1][1..].to_owned()), 2);
    }
    if let Some(text) = first.strip_prefix('\'') {
        return (DefaultValue::Known(text.to_owned()), 1);
    }
    match upper(first).as_str() {
        "NULL" => return (DefaultValue::Null, 1),
        "TRUE" => return (DefaultValue::Known("1".into()), 1),
        "FALSE" => return (DefaultValue::Known("0".into()), 1),
        _ => {}
    }
    // A number: its sign, digits, point and exponent are tokens of their own (`-`, `1`, `.`, `5e0`).
    let mut text = String::new();
    let mut used = 0;
    for x in t {
        let part = x.as_str();
        let fits = match part {
            "-" | "+" => text.is_empty(),
            "." => !text.contains('.'),
            _ => part.chars().next().is_some_and(|c| c.is_ascii_digit()) && !part.starts_with("0x"),
        };
        if !fits {
            break;
        }
        text.push_str(part);
        used += 1;
    }
    match text.parse::<f64>() {
        Ok(_) => (DefaultValue::Known(text), used),
        Err(_) => (
            DefaultValue::Unknown(t.first().cloned().unwrap_or_default()),
            1,
        ),
    }
}

/// What a column's `DEFAULT` clause says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DefaultValue {
    /// No DEFAULT clause.
    #[default]
    None,
    Null,
    /// A constant, as text.
    Known(String),
    /// An expression or function Ferry does not evaluate (`CURRENT_TIMESTAMP`, `(1 + 2)`, `0x4142`).
    Unknown(String),
}

fn placement(t: &[String]) -> Placement {
    for (i, x) in t.iter().enumerate() {
        match upper(x).as_str() {
            "FIRST" => return Placement::First,
            "AFTER" => {
                if let Some(c) = t.get(i + 1) {
                    return Placement::After(ident(c));
                }
            }
            _ => {}
        }
    }
    Placement::Last
}

/// One ALTER TABLE specification.
fn alter_spec(t: &[String], default_db: &str) -> Result<AlterSpec, String> {
    let kw = |i: usize| upper(t.get(i).map_or("", String::as_str));
    let column_words = |i: usize| if kw(i) == "COLUMN" { i + 1 } else { i };
    let skip_if = |i: usize| {
        if kw(i) == "IF" {
            i + 2 + usize::from(kw(i + 1) == "NOT")
        } else {
            i
        }
    };
    Ok(match kw(0).as_str() {
        "ADD" => match kw(1).as_str() {
            "PRIMARY" => AlterSpec::AddPrimaryKey(
                ident_list(t, 3).ok_or("ADD PRIMARY KEY without a column list")?,
            ),
            "CONSTRAINT" if t.iter().any(|x| upper(x) == "PRIMARY") => {
                let at = t
                    .iter()
                    .position(|x| upper(x) == "KEY")
                    .ok_or("ADD CONSTRAINT … PRIMARY without KEY")?;
                AlterSpec::AddPrimaryKey(
                    ident_list(t, at + 1).ok_or("ADD PRIMARY KEY without a column list")?,
                )
            }
            "INDEX" | "KEY" | "UNIQUE" | "FULLTEXT" | "SPATIAL" | "CONSTRAINT" | "FOREIGN"
            | "CHECK" | "PARTITION" | "PERIOD" | "SYSTEM" => AlterSpec::NoLayoutChange,
            _ => {
                let i = skip_if(column_words(1));
                if t.get(i).map(String::as_str) == Some("(") {
                    return Err("ADD COLUMN with a parenthesised list".into());
                }
                let def = column_def(&t[i..])?;
                AlterSpec::Add(def, placement(&t[i + 2..]))
            }
        },
        "DROP" => match kw(1).as_str() {
            "PRIMARY" => AlterSpec::DropPrimaryKey,
            "INDEX" | "KEY" | "FOREIGN" | "CONSTRAINT" | "CHECK" | "PARTITION" | "PERIOD"
            | "SYSTEM" => AlterSpec::NoLayoutChange,
            _ => {
                let i = skip_if(column_words(1));
                AlterSpec::Drop(ident(t.get(i).ok_or("DROP without a column")?))
            }
        },
        "CHANGE" => {
            let i = skip_if(column_words(1));
            let old = ident(t.get(i).ok_or("CHANGE without a column")?);
            let def = column_def(&t[i + 1..])?;
            AlterSpec::Change(old, def, placement(&t[i + 3..]))
        }
        "MODIFY" => {
            let i = skip_if(column_words(1));
            let def = column_def(&t[i..])?;
            AlterSpec::Change(def.name.clone(), def, placement(&t[i + 2..]))
        }
        "RENAME" => match kw(1).as_str() {
            "COLUMN" => {
                let from = ident(t.get(2).ok_or("RENAME COLUMN without a name")?);
                if kw(3) != "TO" {
                    return Err("RENAME COLUMN without TO".into());
                }
                AlterSpec::RenameColumn(
                    from,
                    ident(t.get(4).ok_or("RENAME COLUMN without a new name")?),
                )
            }
            "INDEX" | "KEY" => AlterSpec::NoLayoutChange,
            _ => {
                let at = if matches!(kw(1).as_str(), "TO" | "AS") {
                    2
                } else {
                    1
                };
                let (to, _) = table_at(t, at, default_db).ok_or("RENAME without a new name")?;
                AlterSpec::RenameTable(to)
            }
        },
        "CONVERT" => AlterSpec::ConvertCharset(
            charset_option(t).ok_or("CONVERT TO without a character set")?,
        ),
        // Table options: a new default character set is the one columns added later take.
        "ALTER" | "ALGORITHM" | "LOCK" | "ENGINE" | "COMMENT" | "AUTO_INCREMENT" | "ROW_FORMAT"
        | "FORCE" | "ORDER" | "DEFAULT" | "CHARACTER" | "CHARSET" | "COLLATE"
        | "KEY_BLOCK_SIZE" | "STATS_PERSISTENT" | "STATS_AUTO_RECALC" | "STATS_SAMPLE_PAGES"
        | "PARTITION" | "REMOVE" | "COALESCE" | "REORGANIZE" | "ANALYZE" | "CHECK" | "OPTIMIZE"
        | "REBUILD" | "REPAIR" | "TRUNCATE" | "DISCARD" | "IMPORT" | "ENABLE" | "DISABLE"
        | "WITH" | "WITHOUT" | "PAGE_CHECKSUM" | "TRANSACTIONAL" | "ADD_PERIOD" => {
            match charset_option(t) {
                Some(charset) if kw(0) != "ALTER" => AlterSpec::DefaultCharset(charset),
                _ => AlterSpec::NoLayoutChange,
            }
        }
        other => return Err(format!("the ALTER TABLE clause {other:?}")),
    })
}

/// Interprets a CREATE / ALTER / DROP / RENAME TABLE statement, or says why it cannot.
pub fn parse_ddl(sql: &str, default_db: &str) -> Result<Ddl, String> {
    let t = tokens(sql, usize::MAX);
    let kw = |i: usize| upper(t.get(i).map_or("", String::as_str));
    let mut i = 1;
    while i < t.len() && kw(i) != "TABLE" {
        i += 1;
    }
    let skip_if = |i: usize| {
        if kw(i) == "IF" {
            i + 2 + usize::from(kw(i + 1) == "NOT")
        } else {
            i
        }
    };
    match kw(0).as_str() {
        "CREATE" => {
            let (table, next) =
                table_at(&t, skip_if(i + 1), default_db).ok_or("CREATE TABLE without a name")?;
            if t.get(next).map(String::as_str) != Some("(") {
                return Err("CREATE TABLE … LIKE / AS SELECT: the new table's columns are not in the statement".into());
            }
            let close = {
                let mut depth = 0;
                let mut at = None;
                for (j, x) in t.iter().enumerate().skip(next) {
                    match x.as_str() {
                        "(" => depth += 1,
                        ")" => {
                            depth -= 1;
                            if depth == 0 {
                                at = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                at.ok_or("CREATE TABLE with unbalanced parentheses")?
            };
            if t[close + 1..]
                .iter()
                .any(|x| matches!(upper(x).as_str(), "SELECT" | "AS"))
            {
                return Err("CREATE TABLE … SELECT: the columns come from a query".into());
            }
            let mut columns = Vec::new();
            let mut primary_key = Vec::new();
            for part in split_top(&t[next + 1..close]) {
                let first = upper(part.first().map_or("", String::as_str));
                match first.as_str() {
                    "PRIMARY" => {
                        primary_key = ident_list(part, 2).ok_or("PRIMARY KEY without columns")?
                    }
                    "CONSTRAINT" if part.iter().any(|x| upper(x) == "PRIMARY") => {
                        let at = part
                            .iter()
                            .position(|x| upper(x) == "KEY")
                            .ok_or("PRIMARY without KEY")?;
                        primary_key =
                            ident_list(part, at + 1).ok_or("PRIMARY KEY without columns")?;
                    }
                    "INDEX" | "KEY" | "UNIQUE" | "FULLTEXT" | "SPATIAL" | "CONSTRAINT"
                    | "FOREIGN" | "CHECK" | "PERIOD" => {}
                    _ => {
                        let def = column_def(part)?;
                        if def.primary_key {
                            primary_key = vec![def.name.clone()];
                        }
                        columns.push(def);
                    }
                }
            }
            Ok(Ddl::Create {
                table,
                columns,
                primary_key,
                default_charset: charset_option(&t[close + 1..]),
            })
        }
        "ALTER" => {
            let (table, next) =
                table_at(&t, skip_if(i + 1), default_db).ok_or("ALTER TABLE without a name")?;
            let specs = split_top(&t[next..])
                .into_iter()
                .map(|part| alter_spec(part, default_db))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Ddl::Alter(table, specs))
        }
        "DROP" => match classify(sql, default_db) {
            Statement::SchemaChange(tables) => Ok(Ddl::Drop(tables)),
            _ => Err("DROP without tables".into()),
        },
        "RENAME" => match classify(sql, default_db) {
            Statement::SchemaChange(tables) if tables.len() % 2 == 0 => Ok(Ddl::Rename(
                tables
                    .chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
            )),
            _ => Err("RENAME TABLE without pairs".into()),
        },
        other => Err(format!("{other} statements")),
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

    #[test]
    fn defaults_are_read_whole_or_not_at_all() {
        let def = |sql: &str| {
            let t = tokens(sql, 100);
            default_literal(&t).0
        };
        let known = |v: &str| DefaultValue::Known(v.into());
        assert_eq!(def("9.99"), known("9.99"));
        assert_eq!(def("-1.5e0 NOT NULL"), known("-1.5e0"));
        assert_eq!(def("TRUE"), known("1"));
        assert_eq!(def("_utf8mb4'uu'"), known("uu"));
        assert_eq!(def("'50\\% a\\rb'"), known("50\\% a\rb"));
        assert_eq!(def("NULL"), DefaultValue::Null);
        assert!(matches!(def("0x4142"), DefaultValue::Unknown(_)));
        assert!(matches!(def("(1 + 2)"), DefaultValue::Unknown(_)));
        assert!(matches!(def("CURRENT_TIMESTAMP"), DefaultValue::Unknown(_)));
    }

    #[test]
    fn ddl_is_interpreted_into_column_changes() {
        let create = parse_ddl(
            "CREATE TABLE IF NOT EXISTS `s`.`t` (id int(10) unsigned NOT NULL AUTO_INCREMENT, \
             e enum('a','b''c') DEFAULT 'a', b varbinary(8), n decimal(10,2), c varchar(20) CHARACTER SET binary, \
             PRIMARY KEY (id), KEY k (n)) ENGINE=InnoDB",
            "d",
        )
        .unwrap();
        let Ddl::Create {
            table,
            columns,
            primary_key,
            default_charset,
        } = create
        else {
            panic!("{create:?}")
        };
        assert_eq!(table, t("s", "t"));
        assert_eq!(primary_key, ["id"]);
        assert_eq!(columns[0].column_type, "int(10) unsigned");
        assert!(columns[0].unsigned && !columns[0].nullable);
        assert_eq!(columns[1].labels, ["a", "b'c"]);
        assert_eq!(columns[1].column_type, "enum('a','b''c')");
        assert!(columns[2].binary && columns[4].binary && !columns[3].binary);
        assert_eq!(default_charset, None);
        assert_eq!(columns[1].charset, None);
        assert_eq!(columns[2].charset.as_deref(), Some("binary"));
        assert_eq!(columns[3].charset, None);

        let Ddl::Create {
            columns,
            default_charset,
            ..
        } = parse_ddl(
            "CREATE TABLE t (a varchar(5) CHARACTER SET latin2, b text COLLATE cp1251_general_ci, c char(3), \
             d nvarchar(4), e varchar(2) ASCII, f int, g enum('x') CHARSET sjis) DEFAULT CHARSET=gbk",
            "d",
        )
        .unwrap()
        else {
            panic!()
        };
        let charsets: Vec<Option<&str>> = columns.iter().map(|c| c.charset.as_deref()).collect();
        assert_eq!(
            charsets,
            [
                Some("latin2"),
                Some("cp1251"),
                None,
                Some("utf8mb3"),
                Some("latin1"),
                None,
                Some("sjis")
            ]
        );
        assert_eq!(default_charset.as_deref(), Some("gbk"));
        let Ddl::Alter(_, specs) = parse_ddl(
            "ALTER TABLE t CONVERT TO CHARACTER SET big5, ENGINE=InnoDB DEFAULT COLLATE = latin1_bin",
            "d",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            specs,
            [
                AlterSpec::ConvertCharset("big5".into()),
                AlterSpec::DefaultCharset("latin1".into())
            ]
        );

        let alter = parse_ddl(
            "ALTER TABLE t ADD COLUMN x int AFTER id, DROP COLUMN y, CHANGE a b bigint unsigned FIRST, \
             MODIFY c text, RENAME COLUMN d TO e, ADD INDEX (x), ALGORITHM=INPLACE, DROP PRIMARY KEY, ADD PRIMARY KEY (x, b)",
            "d",
        )
        .unwrap();
        let Ddl::Alter(table, specs) = alter else {
            panic!("{alter:?}")
        };
        assert_eq!(table, t("d", "t"));
        assert!(
            matches!(&specs[0], AlterSpec::Add(c, Placement::After(a)) if c.name == "x" && a == "id")
        );
        assert_eq!(specs[1], AlterSpec::Drop("y".into()));
        assert!(
            matches!(&specs[2], AlterSpec::Change(old, c, Placement::First) if old == "a" && c.name == "b" && c.unsigned)
        );
        assert!(
            matches!(&specs[3], AlterSpec::Change(old, c, Placement::Last) if old == "c" && c.data_type == "text")
        );
        assert_eq!(specs[4], AlterSpec::RenameColumn("d".into(), "e".into()));
        assert_eq!(specs[5], AlterSpec::NoLayoutChange);
        assert_eq!(specs[6], AlterSpec::NoLayoutChange);
        assert_eq!(specs[7], AlterSpec::DropPrimaryKey);
        assert_eq!(
            specs[8],
            AlterSpec::AddPrimaryKey(vec!["x".into(), "b".into()])
        );

        assert!(parse_ddl("CREATE TABLE a LIKE b", "d").is_err());
        assert!(parse_ddl("CREATE TABLE a AS SELECT 1", "d").is_err());
        assert!(parse_ddl("ALTER TABLE a FROBNICATE", "d").is_err());
        assert_eq!(
            parse_ddl("RENAME TABLE a TO b", "d").unwrap(),
            Ddl::Rename(vec![(t("d", "a"), t("d", "b"))])
        );
    }
}

//! Values as PostgreSQL input text: every value is sent as text and cast to its column type in SQL, which is
//! exact for every type and keeps one statement shape for all of them.

use ferry_core::Value;

pub use ferry_core::pg_text::pg_text;
use ferry_core::pg_text::write_pg_text;

/// Appends one line of COPY's text format: tab-separated, `\N` for NULL, backslash escapes.
pub fn write_copy_line(out: &mut String, row: &[Value], columns: &[usize]) {
    let mut field = String::new();
    for (i, &c) in columns.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match &row[c] {
            Value::Null | Value::Unchanged | Value::ZeroDate(_) => out.push_str("\\N"),
            v => {
                field.clear();
                write_pg_text(&mut field, v);
                for ch in field.chars() {
                    match ch {
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    #[test]
    fn copy_lines_escape_separators_and_mark_nulls() {
        let row = vec![
            Value::Int(7),
            Value::Text("a\tb\nc\\d".into()),
            Value::Null,
            Value::Bytes(vec![0xde, 0xad]),
        ];
        let mut out = String::new();
        write_copy_line(&mut out, &row, &[0, 1, 2, 3]);
        assert_eq!(out, "7\ta\\tb\\nc\\\\d\t\\N\t\\\\xdead\n");
    }
}

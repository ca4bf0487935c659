//! MySQL values against real servers. Character sets: Ferry's decoding of each set (source/src/mysql/charset.rs)
//! agrees with the server's own conversion to UTF-8 on every one- and two-byte sequence, and string columns in
//! each set arrive exactly, through the snapshot and the binlog, in MariaDB, PostgreSQL and SQLite. ENUM / SET
//! error values: the '' a non-strict source stores for an invalid ENUM, and the empty SET, arrive as the same
//! index 0 in MariaDB and as '' elsewhere.

mod support;

use std::time::Duration;

use ferry_source::mysql::charset::Charset;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn decoding_agrees_with_the_server_on_every_short_sequence() {
    let my = MariaDbServer::start();
    my.sql("CREATE DATABASE t");
    let charsets = [
        "latin1", "latin2", "cp1251", "ascii", "gbk", "gb2312", "big5", "sjis", "cp932", "euckr",
        "cp1250", "cp1256", "cp1257", "koi8r", "koi8u", "greek", "hebrew", "latin7", "cp866",
        "macroman", "utf8mb3", "utf8mb4",
    ];
    let mut failures = Vec::new();
    for name in charsets {
        let charset = Charset::from_name(name).unwrap();
        let out = my.sql(&format!(
            "SELECT HEX(b), HEX(CONVERT(CONVERT(b USING {name}) USING utf8mb4)) FROM (\
               SELECT UNHEX(LPAD(HEX(seq), 2, '0')) b FROM t.seq_0_to_255 \
               UNION ALL SELECT UNHEX(LPAD(HEX(seq), 4, '0')) FROM t.seq_32768_to_65535) s"
        ));
        let (mut same, mut only_ferry) = (0, 0);
        for line in out.lines() {
            let (input, server) = line.split_once('\t').unwrap();
            let (input, server) = (unhex(input), String::from_utf8(unhex(server)).unwrap());
            // The server writes '?' (or, for a few Big5 pairs, U+FFFD) for what it cannot convert.
            let server_refuses = server.contains('\u{FFFD}')
                || server.matches('?').count() > input.iter().filter(|&&b| b == b'?').count();
            match (charset.text(&input), server_refuses) {
                (Ok(ours), false) if ours == server => same += 1,
                (Err(_), true) => same += 1,
                // Bytes the server cannot convert that Ferry still maps (C1 controls of single-byte sets, pairs
                // beyond MySQL's table in GBK, Big5 and Shift_JIS): never different text for what the server reads.
                (Ok(_), true) => only_ferry += 1,
                (ours, _) => failures.push(format!(
                    "{name} {:02X?}: server {server:?}, ferry {ours:?}",
                    input
                )),
            }
        }
        eprintln!(
            "{name}: {same} sequences agree, {only_ferry} decoded only by Ferry, {} disagree",
            failures
                .iter()
                .filter(|f| f.starts_with(&format!("{name} ")))
                .count()
        );
    }
    // FERRY_CHARSET_DIFFS=<file> writes every disagreement there, for working on charset.rs's tables.
    if let Ok(path) = std::env::var("FERRY_CHARSET_DIFFS") {
        std::fs::write(path, failures.join("\n")).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} disagreements, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}

/// MariaDB's `shop` into MariaDB's `copy`, PostgreSQL's `replica` and an SQLite file.
fn config(
    name: &str,
    my: &MariaDbServer,
    target: &MariaDbServer,
    pg: &PgServer,
    sqlite: &std::path::Path,
) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\n[pipeline.batch]\nmax_wait = \"50ms\"\n\n[source]\ntype = \"mysql\"\nurl = \"{}\"\n\n\
         [[sink]]\ntype = \"mysql\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n\
         [[sink]]\ntype = \"sqlite\"\npath = \"{}\"\n",
        my.url("shop"),
        target.url("copy"),
        pg.url("replica"),
        sqlite.display()
    )
}

/// One column per character set; `bin` is bytes, `e` an ENUM whose labels are latin1.
/// The ENUM comes second: charset metadata counts string columns and ENUM / SET columns apart.
const WORDS: &str = "CREATE TABLE shop.words (id int PRIMARY KEY, e enum('né','€uro') CHARACTER SET latin1, \
    l1 varchar(40) CHARACTER SET latin1, l2 varchar(40) CHARACTER SET latin2, cy varchar(40) CHARACTER SET cp1251, \
    u3 varchar(40) CHARACTER SET utf8mb3, u4 text CHARACTER SET utf8mb4, gb varchar(40) CHARACTER SET gbk, \
    sj varchar(40) CHARACTER SET sjis, b5 varchar(40) CHARACTER SET big5, a varchar(12) CHARACTER SET ascii, \
    bin varbinary(16))";

const INSERT: &str =
    "INSERT INTO shop.words (id, l1, l2, cy, u3, u4, gb, sj, b5, a, bin, e) VALUES";

const COLUMNS: &str = "id, l1, l2, cy, u3, u4, gb, sj, b5, a";

/// Rows as `INSERT` values and as the `id|l1|…|a` line every target must show (then `bin` as hex, then `e`).
const ROWS: [(&str, &str, &str, &str); 4] = [
    (
        "(1, '€uro', 'Żółć', 'Привет', 'Żółć', '中文 😀', '中文', 'ｶﾀｶﾅ日本', '繁體', 'plain', X'00FF80', '€uro')",
        "1|€uro|Żółć|Привет|Żółć|中文 😀|中文|ｶﾀｶﾅ日本|繁體|plain",
        "00ff80",
        "€uro",
    ),
    (
        "(2, 'Œuvre “quoted”', 'Łódź', 'Ёжик', 'naïve', '𝄞 clef', '汉字', '〜波', '臺灣', 'x y', X'', 'né')",
        "2|Œuvre “quoted”|Łódź|Ёжик|naïve|𝄞 clef|汉字|〜波|臺灣|x y",
        "",
        "né",
    ),
    (
        "(3, 'Ã© stays two', 'Šárka', 'Щука', 'ü', 'ß', '中文', '日本語', '繁體中文', 'ascii', X'C3A9', 'né')",
        "3|Ã© stays two|Šárka|Щука|ü|ß|中文|日本語|繁體中文|ascii",
        "c3a9",
        "né",
    ),
    (
        "(4, '‰ • … ™', 'ĄĘ', 'Київ', '€', '🙂', '中文', 'ｶﾀｶﾅ日本', '繁體', '', X'7F', '€uro')",
        "4|‰ • … ™|ĄĘ|Київ|€|🙂|中文|ｶﾀｶﾅ日本|繁體|",
        "7f",
        "€uro",
    ),
];

fn expected(ids: &[usize]) -> String {
    ids.iter()
        .map(|&i| {
            let (_, line, hex, e) = ROWS[i];
            format!("{line}|{hex}|{e}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rows in each character set reach every target exactly: written before Ferry starts (the snapshot reads them
/// unconverted and decodes them), then while it runs (the binlog), an update, and a table created while
/// streaming with a latin1 default.
fn strings_arrive_exactly(metadata: &str) {
    let my = MariaDbServer::start_with(&[&format!("--binlog-row-metadata={metadata}")]);
    let target = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    target.sql("CREATE DATABASE copy");
    my.sql(&format!("CREATE DATABASE shop; {WORDS}"));
    my.sql(&format!("{INSERT} {}, {}", ROWS[0].0, ROWS[1].0));
    // The source itself holds the latin1 bytes: '€' is 0x80, “ ” are 0x93 0x94 (Windows-1252).
    assert_eq!(
        my.sql("SELECT hex(l1) FROM shop.words WHERE id = 2"),
        "8C75767265209371756F74656494"
    );
    let dir = scratch();
    let db = dir.path().join("t.db");
    let cfg = write_config(dir.path(), "c", &config("c", &my, &target, &pg, &db));
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    let mariadb = || {
        target
            .try_sql(&format!(
                "SELECT {COLUMNS}, lower(hex(bin)), e FROM copy.words ORDER BY id"
            ))
            .unwrap_or_default()
            .replace('\t', "|")
            .replace("NULL", "")
    };
    let postgres = || {
        pg.try_psql(
            "replica",
            &format!("SELECT {COLUMNS}, encode(bin, 'hex'), e FROM shop.words ORDER BY id"),
        )
        .unwrap_or_default()
    };
    let sqlite = || {
        sqlite_rows(
            &db,
            &format!("SELECT {COLUMNS}, bin, e FROM shop_words ORDER BY id"),
        )
        .join("\n")
    };
    let check = |want: &str, when: &str| {
        for (target, rows) in [
            ("MariaDB", &mariadb as &dyn Fn() -> String),
            ("PostgreSQL", &postgres),
            ("SQLite", &sqlite),
        ] {
            assert!(
                wait_until(WAIT, || rows() == want),
                "{when}: {target} differs:\nwant:\n{want}\ngot:\n{}\n{}",
                rows(),
                ferry.log()
            );
        }
    };
    check(&expected(&[0, 1]), "snapshot");

    my.sql(&format!(
        "{INSERT} {}, {}; UPDATE shop.words SET l1 = 'Œuvre “quoted”', e = 'né' WHERE id = 1",
        ROWS[2].0, ROWS[3].0
    ));
    let mut rows = expected(&[0, 1, 2, 3]);
    rows = rows.replacen("1|€uro|", "1|Œuvre “quoted”|", 1);
    rows = rows.replacen("|00ff80|€uro", "|00ff80|né", 1);
    check(&rows, "binlog");

    // A table created while streaming: its character sets come from the TABLE_MAP metadata, or, with NO_LOG, from
    // the statement (the table default latin1, column sjis, and big5 by collation).
    my.sql(
        "CREATE TABLE shop.later (id int PRIMARY KEY, l1 varchar(20), sj varchar(20) CHARACTER SET sjis, \
         b5 text COLLATE big5_chinese_ci) DEFAULT CHARSET=latin1;
         INSERT INTO shop.later VALUES (1, '€ “x”', '〜日本', '繁體');",
    );
    let later = "1|€ “x”|〜日本|繁體";
    // Each sink applies at its own pace: wait for every target, not only the first.
    let later_rows = [
        (
            "PostgreSQL",
            Box::new(|| {
                pg.try_psql("replica", "SELECT id, l1, sj, b5 FROM shop.later")
                    .unwrap_or_default()
            }) as Box<dyn Fn() -> String>,
        ),
        (
            "MariaDB",
            Box::new(|| {
                target
                    .try_sql("SELECT id, l1, sj, b5 FROM copy.later")
                    .unwrap_or_default()
                    .replace('\t', "|")
            }),
        ),
        (
            "SQLite",
            Box::new(|| sqlite_rows(&db, "SELECT id, l1, sj, b5 FROM shop_later").join("\n")),
        ),
    ];
    for (name, rows) in &later_rows {
        assert!(
            wait_until(WAIT, || rows() == later),
            "shop.later in {name}: {:?}\n{}",
            rows(),
            ferry.log()
        );
    }
    assert!(ferry.terminate().success());
}

#[test]
fn strings_arrive_exactly_with_full_row_metadata() {
    strings_arrive_exactly("FULL");
}

#[test]
fn strings_arrive_exactly_with_minimal_row_metadata() {
    strings_arrive_exactly("MINIMAL");
}

#[test]
fn strings_arrive_exactly_without_row_metadata() {
    strings_arrive_exactly("NO_LOG");
}

#[test]
fn an_unsupported_character_set_stops_with_table_column_and_charset() {
    let my = MariaDbServer::start();
    let target = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    target.sql("CREATE DATABASE copy");
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.ok (id int PRIMARY KEY, v varchar(10))");
    let dir = scratch();
    let cfg = write_config(
        dir.path(),
        "u",
        &config("u", &my, &target, &pg, &dir.path().join("t.db")),
    );
    // In the binlog: a table created while streaming.
    let mut ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    my.sql(
        "INSERT INTO shop.ok VALUES (1, 'a'); \
         CREATE TABLE shop.bad (id int PRIMARY KEY, old varchar(10) CHARACTER SET swe7); \
         INSERT INTO shop.bad VALUES (1, 'x');",
    );
    let status = ferry
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("ferry should stop on swe7:\n{}", ferry.log()));
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("shop.bad") && log.contains("column old") && log.contains("swe7"),
        "{log}"
    );

    // In the snapshot: a new pipeline copying the table.
    let cfg = write_config(
        dir.path(),
        "u2",
        &config("u2", &my, &target, &pg, &dir.path().join("t2.db")).replacen(
            "type = \"mysql\"\nurl = \"mysql://root",
            "type = \"mysql\"\ntables = [\"shop.bad\"]\nurl = \"mysql://root",
            1,
        ),
    );
    let mut ferry = Ferry::start(&cfg, &dir.path().join("ferry2.log"));
    let status = ferry
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("ferry should stop on swe7:\n{}", ferry.log()));
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("shop.bad") && log.contains("column old") && log.contains("swe7"),
        "{log}"
    );
}

#[test]
fn enum_error_values_and_empty_sets_are_copied_exactly() {
    let my = MariaDbServer::start();
    let target = MariaDbServer::start();
    let pg = PgServer::start();
    pg.create_db("replica");
    target.sql("CREATE DATABASE copy");
    // 20 rows before Ferry starts, so the snapshot's batch is large enough for LOAD DATA; every third holds
    // the ENUM error value, and SETs are empty or not.
    my.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.tasks (id int PRIMARY KEY, state enum('new','done') NOT NULL, \
         tags set('a','b'), note varchar(10), opt enum('x','y'));
         SET SESSION sql_mode = '';
         INSERT INTO shop.tasks SELECT seq, IF(seq % 3 = 0, 'bogus', 'new'), IF(seq % 2 = 0, '', 'a,b'), 'n', \
           IF(seq % 5 = 0, 'zz', NULL) FROM shop.seq_1_to_20;",
    );
    assert_eq!(
        my.sql("SELECT state + 0, tags + 0, opt + 0 FROM shop.tasks WHERE id = 30 DIV 2"),
        "0\t3\t0",
        "the source stores index 0 for the invalid values"
    );
    let dir = scratch();
    let db = dir.path().join("t.db");
    let cfg = write_config(dir.path(), "e", &config("e", &my, &target, &pg, &db));
    let ferry = Ferry::start(&cfg, &dir.path().join("ferry.log"));
    let exact =
        "SELECT id, state, state + 0, tags, tags + 0, note, opt, opt + 0 FROM {} ORDER BY id";
    let source = || my.sql(&exact.replace("{}", "shop.tasks"));
    let mariadb = || {
        target
            .try_sql(&exact.replace("{}", "copy.tasks"))
            .unwrap_or_default()
    };
    // A last column '.' so that psql and the mariadb client, which trim line ends, keep an empty last value.
    let text = "SELECT id, state, tags, note, coalesce(opt, 'NULL'), '.' FROM {} ORDER BY id";
    let postgres = || {
        pg.try_psql("replica", &text.replace("{}", "shop.tasks"))
            .unwrap_or_default()
    };
    let sqlite = || sqlite_rows(&db, &text.replace("{}", "shop_tasks")).join("\n");
    let check = |when: &str| {
        let want = source();
        assert!(
            wait_until(WAIT, || mariadb() == want),
            "{when}: MariaDB differs:\nwant:\n{want}\ngot:\n{}\n{}",
            mariadb(),
            ferry.log()
        );
        let want = my.sql(&text.replace("{}", "shop.tasks")).replace('\t', "|");
        assert!(
            want.contains("||a,b|n|NULL|.") && want.contains("15||a,b|n||."),
            "{want}"
        );
        for (name, rows) in [
            ("PostgreSQL", &postgres as &dyn Fn() -> String),
            ("SQLite", &sqlite),
        ] {
            assert!(
                wait_until(WAIT, || rows() == want),
                "{when}: {name} differs:\nwant:\n{want}\ngot:\n{}\n{}",
                rows(),
                ferry.log()
            );
        }
    };
    check("snapshot");

    // The binlog: inserts and updates writing the error value, one turning it back into a label, under a
    // non-strict session; an update that only touches another column of an error-value row.
    my.sql(
        "SET SESSION sql_mode = '';
         INSERT INTO shop.tasks VALUES (21, 'bogus', '', 'b', 'nope'), (22, 'done', 'b', 'c', 'y');
         UPDATE shop.tasks SET state = 'bogus', opt = 'x' WHERE id = 1;
         UPDATE shop.tasks SET state = 'done' WHERE id = 3;
         UPDATE shop.tasks SET note = 'edited' WHERE id = 6;
         UPDATE shop.tasks SET id = 100 WHERE id = 9;",
    );
    check("binlog");

    // Leaving strict mode for an ENUM error value lets nothing else through: a string the target would cut
    // short in the same row stops the pipeline, as strict mode would.
    target.sql("ALTER TABLE copy.tasks MODIFY note varchar(6)");
    my.sql("SET SESSION sql_mode = ''; INSERT INTO shop.tasks VALUES (30, 'bogus', '', 'too long', NULL)");
    let mut ferry = ferry;
    let status = ferry
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("ferry should stop on a truncated string:\n{}", ferry.log()));
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("ENUM error value") && log.contains("column 'note'"),
        "{log}"
    );
    assert_eq!(
        target.sql("SELECT count(*) FROM copy.tasks WHERE id = 30"),
        "0"
    );
}

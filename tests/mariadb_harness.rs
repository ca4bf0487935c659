//! The MariaDB harness the MySQL source builds on: a throwaway server with the row binlog the source needs.

mod support;

use support::*;

#[test]
fn mariadb_starts_with_a_full_row_binlog_and_gtids() {
    let db = MariaDbServer::start();
    let settings = db.sql(
        "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, @@server_id",
    );
    assert_eq!(settings, "1\tROW\tFULL\tFULL\t1");
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY, v varchar(10)); INSERT INTO shop.t VALUES (1, 'a');");
    let events = db.sql("SHOW BINLOG EVENTS IN 'binlog.000001'");
    assert!(events.contains("Write_rows"), "{events}");
    assert!(events.contains("Gtid"), "{events}");
    let gtid = db.sql("SELECT @@gtid_binlog_pos");
    assert!(gtid.starts_with("0-1-"), "{gtid}");
}

//! Any bytes, as the events of a binlog file (after the `\xfebin` magic) through one row-event decoder, so table
//! maps, format descriptions and transaction state carry over between events: errors are fine, panics are not.
//! Seed corpus: the binlog files of source/tests/fixtures/mysql-binlog (copy them into corpus/binlog).
#![no_main]

use ferry_source::mysql::decoder::{Selection, UnknownDdl};
use ferry_source::mysql::file::decode_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = if data.starts_with(b"\xfebin") {
        data.to_vec()
    } else {
        [&b"\xfebin"[..], data].concat()
    };
    for unknown in [UnknownDdl::Skip, UnknownDdl::Fail] {
        let _ = decode_file("fuzz-bin.000001", &file, Selection::All, unknown);
    }
});

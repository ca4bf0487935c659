use ferry_source::mysql::decoder::Selection;
use ferry_source::mysql::file::decode_file;
#[test]
fn explore() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mysql-binlog");
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let sel = Selection::Databases(vec![]);
        let _ = sel;
        // every database: use a selection that includes all by listing none? use Tables empty => nothing
        match decode_file(
            &name,
            &bytes,
            AllTables::sel(),
            ferry_source::mysql::decoder::UnknownDdl::Skip,
        ) {
            Ok(evs) => {
                println!("== {name}: {} events", evs.len());
                for ev in evs.iter().take(12) {
                    println!("   {ev:?}");
                }
            }
            Err(e) => println!("== {name}: ERROR {e}"),
        }
    }
}
struct AllTables;
impl AllTables {
    fn sel() -> Selection {
        Selection::All
    }
}

//! Reading binlog files from disk (tests, fixtures, offline inspection): the same events the network stream
//! delivers, each bounds-checked before mysql_common sees it.

use std::io::Cursor as IoCursor;

use ferry_core::{BinlogFilePos, BinlogPosition, Error, Event as FerryEvent};
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};
use mysql_common::binlog::EventStreamReader;

use super::decoder::{Decoder, Selection, UnknownDdl};

const MAGIC: &[u8; 4] = b"\xfebin";
const HEADER_LEN: usize = 19;

/// Splits a binlog file into raw events and parses each with mysql_common, expanding MySQL 8 transaction
/// payloads into their inner events.
pub fn read_events(file: &[u8]) -> Result<Vec<Event>, String> {
    let body = file
        .strip_prefix(MAGIC)
        .ok_or("not a binlog file: the magic number \\xfebin is missing")?;
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut events = Vec::new();
    let mut offset = 0usize;
    while offset < body.len() {
        let rest = &body[offset..];
        if rest.len() < HEADER_LEN {
            return Err(format!("event header cut short at offset {}", offset + 4));
        }
        let size = u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize;
        if size < HEADER_LEN || size > rest.len() {
            return Err(format!(
                "event at offset {} claims {size} bytes",
                offset + 4
            ));
        }
        let event = reader
            .read(&rest[..size])
            .map_err(|e| format!("event at offset {}: {e}", offset + 4))?
            .ok_or("unexpected end of the file")?;
        let payload = (event.header().event_type_raw() == 40)
            .then(|| event.read_event::<TransactionPayloadEvent<'_>>())
            .transpose()
            .map_err(|e| format!("transaction payload at offset {}: {e}", offset + 4))?
            .map(|p| {
                p.decompressed().and_then(|mut d| {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(&mut d, &mut out).map(|_| out)
                })
            });
        events.push(event);
        if let Some(inner) = payload {
            let inner = inner.map_err(|e| format!("transaction payload: {e}"))?;
            let mut cur = IoCursor::new(inner);
            while let Some(e) = reader
                .read_decompressed(&mut cur)
                .map_err(|e| format!("inside a transaction payload: {e}"))?
            {
                events.push(e);
            }
        }
        offset += size;
    }
    Ok(events)
}

/// Decodes a whole binlog file named `name` into Ferry events for the tables `selection` picks.
pub fn decode_file(
    name: &str,
    file: &[u8],
    selection: Selection,
    on_unknown_ddl: UnknownDdl,
) -> Result<Vec<FerryEvent>, Error> {
    let events = read_events(file).map_err(|e| Error::fatal(format!("{name}: {e}")))?;
    let start = BinlogPosition {
        pos: BinlogFilePos::new(name, 4),
        gtid: None,
    };
    let mut decoder = Decoder::new(selection, on_unknown_ddl, Default::default(), &start);
    let mut out = Vec::new();
    for event in &events {
        decoder.decode(event, &mut out)?;
    }
    Ok(out)
}

//! Reading binlog files from disk (tests, fixtures, offline inspection): the same events the network stream
//! delivers, each bounds-checked before mysql_common sees it.

use ferry_core::{BinlogFilePos, BinlogPosition, Error, Event as FerryEvent};
use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion};
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};
use mysql_common::binlog::EventStreamReader;

use super::decoder::{Decoder, Selection, UnknownDdl};
use super::rows::{lenenc, Cursor};

const MAGIC: &[u8; 4] = b"\xfebin";
const HEADER_LEN: usize = 19;
const CHECKSUM_LEN: usize = 4;
const FORMAT_DESCRIPTION_EVENT: u8 = 15;
const TRANSACTION_PAYLOAD_EVENT: u8 = 40;

/// Splits a binlog file into raw events and parses each with mysql_common, expanding MySQL 8 transaction
/// payloads into their inner events.
pub fn read_events(file: &[u8]) -> Result<Vec<Event>, String> {
    let body = file
        .strip_prefix(MAGIC)
        .ok_or("not a binlog file: the magic number \\xfebin is missing")?;
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut events = Vec::new();
    // Whether the last format description announced checksums: every other event then ends with 4 of them.
    let mut checksummed = false;
    for (offset, raw) in split_events(body, 4)? {
        let is_fde = raw[4] == FORMAT_DESCRIPTION_EVENT;
        if checksummed && !is_fde && raw.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(format!(
                "event at offset {offset} is too short to hold its checksum"
            ));
        }
        let event = reader
            .read(raw)
            .map_err(|e| format!("event at offset {offset}: {e}"))?
            .ok_or("unexpected end of the file")?;
        if is_fde {
            checksummed = !matches!(
                event.footer().get_checksum_alg(),
                Ok(None) | Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF))
            );
        }
        let payload = (event.header().event_type_raw() == TRANSACTION_PAYLOAD_EVENT)
            .then(|| {
                check_payload_header(event.data()).map_err(std::io::Error::other)?;
                event.read_event::<TransactionPayloadEvent<'_>>()
            })
            .transpose()
            .map_err(|e| format!("transaction payload at offset {offset}: {e}"))?
            .map(|p| {
                p.decompressed().and_then(|mut d| {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(&mut d, &mut out).map(|_| out)
                })
            });
        events.push(event);
        if let Some(inner) = payload {
            let inner = inner.map_err(|e| format!("transaction payload: {e}"))?;
            for (_, raw) in split_events(&inner, 0)? {
                if let Some(e) = reader
                    .read_decompressed(raw)
                    .map_err(|e| format!("inside a transaction payload: {e}"))?
                {
                    events.push(e);
                }
            }
        }
    }
    Ok(events)
}

/// Walks the header of a MySQL 8 TRANSACTION_PAYLOAD event body (type-length-value fields, each a
/// length-encoded integer, ended by field type 0; layout of `Transaction_payload_event` in MySQL's
/// `libbinlogevents`) and checks what mysql_common trusts: every integer is complete, an unknown field's length
/// lies within the body, the compression type is one MySQL writes (0 ZSTD, 255 none), and the payload fits.
fn check_payload_header(data: &[u8]) -> Result<(), String> {
    let read = |cur: &mut Cursor<'_>| lenenc(cur).map_err(|e| e.0);
    let mut cur = Cursor::new(data);
    let (mut size, mut compression) = (None, None);
    while !cur.is_empty() {
        match read(&mut cur)? {
            0 => {
                let size = size.ok_or("the payload size field is missing")?;
                compression.ok_or("the compression type field is missing")?;
                if size > cur.remaining() as u64 {
                    return Err(format!(
                        "the payload claims {size} bytes, {} remain",
                        cur.remaining()
                    ));
                }
                return Ok(());
            }
            field @ 1..=3 => {
                read(&mut cur)?;
                let value = read(&mut cur)?;
                match field {
                    1 => size = Some(value),
                    2 if value == 0 || value == 255 => compression = Some(value),
                    2 => return Err(format!("unknown compression type {value}")),
                    _ => {}
                }
            }
            // mysql_common skips unknown fields whose type fits a byte, and panics on the others.
            field if field > u64::from(u8::MAX) => {
                return Err(format!("unknown header field type {field}"))
            }
            _ => {
                let len = usize::try_from(read(&mut cur)?).unwrap_or(usize::MAX);
                cur.take(len, "a header field")
                    .map_err(|_| "a header field is longer than the event")?;
            }
        }
    }
    Ok(())
}

/// Splits `body` into raw events by their headers' sizes, each checked to hold at least a header and to lie
/// within `body`, before mysql_common (which trusts them) sees it. `base`: the offset of `body` in its file.
fn split_events(body: &[u8], base: usize) -> Result<Vec<(usize, &[u8])>, String> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    while offset < body.len() {
        let rest = &body[offset..];
        if rest.len() < HEADER_LEN {
            return Err(format!(
                "event header cut short at offset {}",
                base + offset
            ));
        }
        let size = u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize;
        if size < HEADER_LEN || size > rest.len() {
            return Err(format!(
                "event at offset {} claims {size} bytes",
                base + offset
            ));
        }
        out.push((base + offset, &rest[..size]));
        offset += size;
    }
    Ok(out)
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

//! MariaDB's own binlog events, which mysql_common passes through undecoded: GTID (162), GTID_LIST (163) and the
//! zlib-compressed forms of QUERY (165) and rows events (166–171).

use std::io::Read;

use ferry_core::{MariaGtid, MariaGtidList};

use super::rows::Cursor;

pub const GTID: u8 = 162;
pub const GTID_LIST: u8 = 163;
pub const START_ENCRYPTION: u8 = 164;
pub const QUERY_COMPRESSED: u8 = 165;
pub const WRITE_ROWS_COMPRESSED_V1: u8 = 166;
pub const UPDATE_ROWS_COMPRESSED_V1: u8 = 167;
pub const DELETE_ROWS_COMPRESSED_V1: u8 = 168;
pub const WRITE_ROWS_COMPRESSED: u8 = 169;
pub const UPDATE_ROWS_COMPRESSED: u8 = 170;
pub const DELETE_ROWS_COMPRESSED: u8 = 171;

/// GTID event flag: the transaction is a single statement without BEGIN / COMMIT (DDL).
const FL_STANDALONE: u8 = 1;

/// A MariaDB GTID event: the start of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GtidEvent {
    pub gtid: MariaGtid,
    pub standalone: bool,
}

pub fn parse_gtid(data: &[u8], server_id: u32) -> Result<GtidEvent, String> {
    let mut cur = Cursor::new(data);
    let seq = cur.take(8, "GTID").map_err(|e| e.0)?;
    let domain = cur.take(4, "GTID").map_err(|e| e.0)?;
    let flags = cur.take(1, "GTID").map_err(|e| e.0)?[0];
    Ok(GtidEvent {
        gtid: MariaGtid {
            domain: u32::from_le_bytes(domain.try_into().unwrap_or_default()),
            server: server_id,
            sequence: u64::from_le_bytes(seq.try_into().unwrap_or_default()),
        },
        standalone: flags & FL_STANDALONE != 0,
    })
}

/// A GTID_LIST event: the binlog state at the start of a file (or the connect state when resuming).
pub fn parse_gtid_list(data: &[u8]) -> Result<MariaGtidList, String> {
    let mut cur = Cursor::new(data);
    let count = cur.take(4, "GTID_LIST").map_err(|e| e.0)?;
    // The top 4 bits are flags.
    let count = u32::from_le_bytes(count.try_into().unwrap_or_default()) & 0x0fff_ffff;
    let mut list = MariaGtidList::default();
    for _ in 0..count {
        let entry = cur.take(16, "GTID_LIST").map_err(|e| e.0)?;
        list.advance(MariaGtid {
            domain: u32::from_le_bytes(entry[0..4].try_into().unwrap_or_default()),
            server: u32::from_le_bytes(entry[4..8].try_into().unwrap_or_default()),
            sequence: u64::from_le_bytes(entry[8..16].try_into().unwrap_or_default()),
        });
    }
    Ok(list)
}

/// Largest uncompressed body Ferry accepts (MariaDB's max_allowed_packet ceiling is 1 GiB).
const MAX_UNCOMPRESSED: usize = 1 << 30;

/// Inflates a compressed body: a header byte (`0x80 | algorithm << 4 | length-of-length`), the uncompressed
/// length big-endian in that many bytes, then a zlib stream.
pub fn uncompress(buf: &[u8]) -> Result<Vec<u8>, String> {
    let header = *buf.first().ok_or("empty compressed body")?;
    if header & 0x80 == 0 {
        return Err(format!(
            "compressed body starts with {header:#04x}, not a compression header"
        ));
    }
    let algorithm = (header & 0x70) >> 4;
    if algorithm != 0 {
        return Err(format!(
            "compression algorithm {algorithm} (only zlib, 0, exists)"
        ));
    }
    let len_len = usize::from(header & 0x07);
    if !(1..=4).contains(&len_len) || buf.len() < 1 + len_len {
        return Err("compressed body too short for its length".into());
    }
    let len = buf[1..1 + len_len]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if len > MAX_UNCOMPRESSED {
        return Err(format!("compressed body claims {len} bytes"));
    }
    let mut out = Vec::with_capacity(len);
    flate2::read::ZlibDecoder::new(&buf[1 + len_len..])
        .take(len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zlib: {e}"))?;
    if out.len() != len {
        return Err(format!(
            "zlib body inflated to {} bytes, its header says {len}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gtid_events_parse() {
        let mut data = 42u64.to_le_bytes().to_vec();
        data.extend(3u32.to_le_bytes());
        data.push(FL_STANDALONE);
        let g = parse_gtid(&data, 7).unwrap();
        assert_eq!(g.gtid.to_string(), "3-7-42");
        assert!(g.standalone);
        assert!(parse_gtid(&data[..5], 7).is_err());

        let mut list = 2u32.to_le_bytes().to_vec();
        for (d, s, n) in [(0u32, 1u32, 10u64), (1, 2, 5)] {
            list.extend(d.to_le_bytes());
            list.extend(s.to_le_bytes());
            list.extend(n.to_le_bytes());
        }
        assert_eq!(parse_gtid_list(&list).unwrap().to_string(), "0-1-10,1-2-5");
        assert!(parse_gtid_list(&list[..20]).is_err());
    }

    #[test]
    fn compressed_bodies_inflate() {
        let text = b"INSERT INTO t VALUES (1)".repeat(20);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        let mut buf = vec![0x82, (text.len() >> 8) as u8, text.len() as u8];
        buf.extend(z.finish().unwrap());
        assert_eq!(uncompress(&buf).unwrap(), text);
        let mut wrong = buf.clone();
        wrong[2] ^= 1;
        assert!(uncompress(&wrong).is_err());
        assert!(uncompress(&[0x02, 1]).is_err());
        assert!(uncompress(&buf[..6]).is_err());
    }
}

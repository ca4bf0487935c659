//! Decoding of the replication stream: the CopyData envelope (XLogData, keepalive) and pgoutput's messages.
//!
//! Every read is length-checked: malformed or truncated bytes give a [`DecodeError`], never a panic. Tuple values
//! borrow from the message buffer; nothing is copied until a value is converted.

use ferry_core::Lsn;

/// Bytes that are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed replication message: {0}")]
pub struct DecodeError(pub String);

fn malformed(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// A bounds-checked cursor over a message.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(malformed(format!(
                "truncated {what}: need {n} bytes, have {}",
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(self.u32(what)? as i32)
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(self.u64(what)? as i64)
    }

    fn lsn(&mut self, what: &str) -> Result<Lsn, DecodeError> {
        Ok(Lsn(self.u64(what)?))
    }

    fn cstr(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| malformed(format!("unterminated {what}")))?;
        let s = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| malformed(format!("{what} is not UTF-8")))?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    fn finish(&self, what: &str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} trailing bytes after {what}",
                self.buf.len()
            )))
        }
    }
}

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A CopyData payload from the walsender.
#[derive(Debug, PartialEq)]
pub enum ReplicationMessage<'a> {
    /// WAL data: `wal_start` is the LSN of this message, `data` a pgoutput message.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        data: &'a [u8],
    },
    /// The server is alive at `wal_end`; `reply_requested` asks for a status update now.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

impl<'a> ReplicationMessage<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor { buf };
        match c.u8("message tag")? {
            b'w' => {
                let wal_start = c.lsn("XLogData start")?;
                let wal_end = c.lsn("XLogData end")?;
                let _send_time = c.i64("XLogData time")?;
                Ok(ReplicationMessage::XLogData {
                    wal_start,
                    wal_end,
                    data: c.buf,
                })
            }
            b'k' => {
                let wal_end = c.lsn("keepalive end")?;
                let _send_time = c.i64("keepalive time")?;
                let reply_requested = c.u8("keepalive reply flag")? == 1;
                c.finish("keepalive")?;
                Ok(ReplicationMessage::Keepalive {
                    wal_end,
                    reply_requested,
                })
            }
            tag => Err(malformed(format!(
                "unknown replication message tag {:?}",
                tag as char
            ))),
        }
    }
}

/// A standby status update reporting `lsn` as written, flushed and applied.
pub fn standby_status_update(lsn: Lsn, now_unix_micros: i64, reply_requested: bool) -> [u8; 34] {
    let mut out = [0u8; 34];
    out[0] = b'r';
    for i in 0..3 {
        out[1 + 8 * i..9 + 8 * i].copy_from_slice(&lsn.0.to_be_bytes());
    }
    out[25..33].copy_from_slice(&(now_unix_micros - PG_EPOCH_OFFSET_MICROS).to_be_bytes());
    out[33] = u8::from(reply_requested);
    out
}

/// One column value of a tuple as pgoutput sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleValue<'a> {
    Null,
    /// An unchanged TOASTed value the server did not send.
    Unchanged,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

/// A column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn<'a> {
    /// Part of the replica identity (the key the server sends for updates and deletes).
    pub is_key: bool,
    pub name: &'a str,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A decoded pgoutput message.
#[derive(Debug, PartialEq)]
pub enum PgOutput<'a> {
    Begin {
        final_lsn: Lsn,
        commit_time_micros: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time_micros: i64,
    },
    Origin {
        commit_lsn: Lsn,
        name: &'a str,
    },
    Relation {
        xid: Option<u32>,
        oid: u32,
        namespace: &'a str,
        name: &'a str,
        replica_identity: u8,
        columns: Vec<RelationColumn<'a>>,
    },
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: &'a str,
        name: &'a str,
    },
    Insert {
        xid: Option<u32>,
        oid: u32,
        new: Vec<TupleValue<'a>>,
    },
    /// `old` is the key (`'K'`) or full old row (`'O'`) when the server sent one.
    Update {
        xid: Option<u32>,
        oid: u32,
        old: Option<Vec<TupleValue<'a>>>,
        old_is_full_row: bool,
        new: Vec<TupleValue<'a>>,
    },
    Delete {
        xid: Option<u32>,
        oid: u32,
        old: Vec<TupleValue<'a>>,
        old_is_full_row: bool,
    },
    Truncate {
        xid: Option<u32>,
        cascade: bool,
        restart_identity: bool,
        oids: Vec<u32>,
    },
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: Lsn,
        prefix: &'a str,
        content: &'a [u8],
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time_micros: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

/// Decodes pgoutput messages, tracking whether the stream is inside a streamed-transaction block (protocol 2),
/// where data messages carry a transaction id.
#[derive(Debug, Default)]
pub struct Decoder {
    in_stream: bool,
}

impl Decoder {
    /// A decoder for the data messages of streamed blocks read back from a spool (each carries its transaction
    /// id; the Stream Start that says so is not spooled).
    pub fn streamed() -> Decoder {
        Decoder { in_stream: true }
    }

    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<PgOutput<'a>, DecodeError> {
        let mut c = Cursor { buf };
        let tag = c.u8("pgoutput tag")?;
        let xid = |c: &mut Cursor<'a>, in_stream: bool| -> Result<Option<u32>, DecodeError> {
            if in_stream {
                Ok(Some(c.u32("stream xid")?))
            } else {
                Ok(None)
            }
        };
        let msg = match tag {
            b'B' => PgOutput::Begin {
                final_lsn: c.lsn("begin lsn")?,
                commit_time_micros: c.i64("begin time")?,
                xid: c.u32("begin xid")?,
            },
            b'C' => {
                let _flags = c.u8("commit flags")?;
                PgOutput::Commit {
                    commit_lsn: c.lsn("commit lsn")?,
                    end_lsn: c.lsn("commit end lsn")?,
                    commit_time_micros: c.i64("commit time")?,
                }
            }
            b'O' => PgOutput::Origin {
                commit_lsn: c.lsn("origin lsn")?,
                name: c.cstr("origin name")?,
            },
            b'R' => {
                let xid = xid(&mut c, self.in_stream)?;
                let oid = c.u32("relation oid")?;
                let namespace = c.cstr("relation namespace")?;
                let name = c.cstr("relation name")?;
                let replica_identity = c.u8("replica identity")?;
                let n = c.i16("column count")?;
                if n < 0 {
                    return Err(malformed("negative column count"));
                }
                let mut columns = Vec::with_capacity((n as usize).min(c.buf.len()));
                for _ in 0..n {
                    let flags = c.u8("column flags")?;
                    columns.push(RelationColumn {
                        is_key: flags & 1 == 1,
                        name: c.cstr("column name")?,
                        type_oid: c.u32("column type")?,
                        type_modifier: c.i32("column typmod")?,
                    });
                }
                PgOutput::Relation {
                    xid,
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                }
            }
            b'Y' => PgOutput::Type {
                xid: xid(&mut c, self.in_stream)?,
                oid: c.u32("type oid")?,
                namespace: c.cstr("type namespace")?,
                name: c.cstr("type name")?,
            },
            b'I' => {
                let xid = xid(&mut c, self.in_stream)?;
                let oid = c.u32("insert relation")?;
                expect(&mut c, b'N', "insert new tuple marker")?;
                PgOutput::Insert {
                    xid,
                    oid,
                    new: tuple(&mut c)?,
                }
            }
            b'U' => {
                let xid = xid(&mut c, self.in_stream)?;
                let oid = c.u32("update relation")?;
                let mut old = None;
                let mut old_is_full_row = false;
                let mut marker = c.u8("update tuple marker")?;
                if marker == b'K' || marker == b'O' {
                    old_is_full_row = marker == b'O';
                    old = Some(tuple(&mut c)?);
                    marker = c.u8("update new tuple marker")?;
                }
                if marker != b'N' {
                    return Err(malformed(format!(
                        "unexpected update tuple marker {:?}",
                        marker as char
                    )));
                }
                PgOutput::Update {
                    xid,
                    oid,
                    old,
                    old_is_full_row,
                    new: tuple(&mut c)?,
                }
            }
            b'D' => {
                let xid = xid(&mut c, self.in_stream)?;
                let oid = c.u32("delete relation")?;
                let marker = c.u8("delete tuple marker")?;
                if marker != b'K' && marker != b'O' {
                    return Err(malformed(format!(
                        "unexpected delete tuple marker {:?}",
                        marker as char
                    )));
                }
                PgOutput::Delete {
                    xid,
                    oid,
                    old: tuple(&mut c)?,
                    old_is_full_row: marker == b'O',
                }
            }
            b'T' => {
                let xid = xid(&mut c, self.in_stream)?;
                let n = c.u32("truncate relation count")?;
                let options = c.u8("truncate options")?;
                let mut oids = Vec::with_capacity((n as usize).min(c.buf.len() / 4));
                for _ in 0..n {
                    oids.push(c.u32("truncate relation")?);
                }
                PgOutput::Truncate {
                    xid,
                    cascade: options & 1 != 0,
                    restart_identity: options & 2 != 0,
                    oids,
                }
            }
            b'M' => {
                let xid = xid(&mut c, self.in_stream)?;
                let transactional = c.u8("message flags")? & 1 == 1;
                let lsn = c.lsn("message lsn")?;
                let prefix = c.cstr("message prefix")?;
                let len = c.u32("message length")? as usize;
                let content = c.take(len, "message content")?;
                PgOutput::Message {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content,
                }
            }
            b'S' => {
                self.in_stream = true;
                PgOutput::StreamStart {
                    xid: c.u32("stream start xid")?,
                    first_segment: c.u8("stream first segment")? == 1,
                }
            }
            b'E' => {
                self.in_stream = false;
                PgOutput::StreamStop
            }
            b'c' => {
                let xid = c.u32("stream commit xid")?;
                let _flags = c.u8("stream commit flags")?;
                PgOutput::StreamCommit {
                    xid,
                    commit_lsn: c.lsn("stream commit lsn")?,
                    end_lsn: c.lsn("stream commit end lsn")?,
                    commit_time_micros: c.i64("stream commit time")?,
                }
            }
            b'A' => {
                let xid = c.u32("stream abort xid")?;
                let subxid = c.u32("stream abort subxid")?;
                // Protocol 4 appends the abort LSN and time; they are not needed.
                c.buf = &[];
                PgOutput::StreamAbort { xid, subxid }
            }
            other => {
                return Err(malformed(format!(
                    "unknown pgoutput message {:?}",
                    other as char
                )))
            }
        };
        c.finish("pgoutput message")?;
        Ok(msg)
    }
}

fn expect(c: &mut Cursor<'_>, want: u8, what: &str) -> Result<(), DecodeError> {
    let got = c.u8(what)?;
    if got == want {
        Ok(())
    } else {
        Err(malformed(format!(
            "{what}: expected {:?}, found {:?}",
            want as char, got as char
        )))
    }
}

fn tuple<'a>(c: &mut Cursor<'a>) -> Result<Vec<TupleValue<'a>>, DecodeError> {
    let n = c.i16("tuple column count")?;
    if n < 0 {
        return Err(malformed("negative tuple column count"));
    }
    let mut values = Vec::with_capacity((n as usize).min(c.buf.len()));
    for _ in 0..n {
        values.push(match c.u8("tuple value kind")? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::Unchanged,
            kind @ (b't' | b'b') => {
                let len = c.i32("tuple value length")?;
                let len =
                    usize::try_from(len).map_err(|_| malformed("negative tuple value length"))?;
                let bytes = c.take(len, "tuple value")?;
                if kind == b't' {
                    TupleValue::Text(bytes)
                } else {
                    TupleValue::Binary(bytes)
                }
            }
            other => {
                return Err(malformed(format!(
                    "unknown tuple value kind {:?}",
                    other as char
                )))
            }
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn insert_message() -> Vec<u8> {
        let mut m = vec![b'I'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        m.push(b'N');
        m.extend_from_slice(&3i16.to_be_bytes());
        m.push(b't');
        m.extend_from_slice(&2i32.to_be_bytes());
        m.extend_from_slice(b"42");
        m.push(b'n');
        m.push(b'u');
        m
    }

    #[test]
    fn decodes_an_insert() {
        let msg = insert_message();
        let decoded = Decoder::default().decode(&msg).unwrap();
        assert_eq!(
            decoded,
            PgOutput::Insert {
                xid: None,
                oid: 16384,
                new: vec![
                    TupleValue::Text(b"42"),
                    TupleValue::Null,
                    TupleValue::Unchanged
                ]
            }
        );
    }

    #[test]
    fn stream_blocks_carry_xids() {
        let mut d = Decoder::default();
        let mut start = vec![b'S'];
        start.extend_from_slice(&7u32.to_be_bytes());
        start.push(1);
        assert_eq!(
            d.decode(&start).unwrap(),
            PgOutput::StreamStart {
                xid: 7,
                first_segment: true
            }
        );
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&7u32.to_be_bytes());
        insert.extend_from_slice(&insert_message()[1..]);
        assert!(matches!(
            d.decode(&insert).unwrap(),
            PgOutput::Insert { xid: Some(7), .. }
        ));
        assert_eq!(d.decode(b"E").unwrap(), PgOutput::StreamStop);
        assert!(
            d.decode(&insert).is_err(),
            "outside a stream block the xid is not expected"
        );
    }

    #[test]
    fn every_truncation_of_a_message_is_an_error() {
        let msg = insert_message();
        for len in 0..msg.len() {
            assert!(
                Decoder::default().decode(&msg[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn status_update_reports_the_given_lsn_three_times() {
        let m = standby_status_update(Lsn(0x0102), PG_EPOCH_OFFSET_MICROS, true);
        assert_eq!(m[0], b'r');
        assert_eq!(&m[1..9], &0x0102u64.to_be_bytes());
        assert_eq!(&m[17..25], &0x0102u64.to_be_bytes());
        assert_eq!(&m[25..33], &[0; 8]);
        assert_eq!(m[33], 1);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Decoder::default().decode(&bytes);
            let _ = ReplicationMessage::parse(&bytes);
        }

        #[test]
        fn decoder_never_panics_on_mutated_messages(i in 0usize..17, b in any::<u8>()) {
            let mut msg = insert_message();
            let i = i % msg.len();
            msg[i] = b;
            let _ = Decoder::default().decode(&msg);
        }
    }
}

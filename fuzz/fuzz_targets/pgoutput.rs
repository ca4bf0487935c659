//! Any bytes, as a replication CopyData frame and as a sequence of pgoutput messages through one decoder
//! (so Relation and stream state carry over between messages): errors are fine, panics are not.
#![no_main]

use ferry_source::postgres::pgoutput::{Decoder, ReplicationMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ReplicationMessage::parse(data);
    let mut decoder = Decoder::default();
    // A length byte before each message splits the input into several messages.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (message, next) = tail.split_at((len as usize).min(tail.len()));
        let _ = decoder.decode(message);
        rest = next;
    }
});

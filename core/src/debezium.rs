//! Debezium's wire conventions that Ferry both writes (the Kafka sink) and reads (the Kafka source), so the two
//! agree by construction. Sources: Debezium's PostgreSQL and MySQL connector documentation (data type mappings)
//! and Kafka Connect's `Decimal` logical type.

use std::collections::BTreeMap;

use crate::value::Value;

/// Debezium's placeholder for a value the source did not send (PostgreSQL's unchanged TOAST), the default of its
/// `unavailable.value.placeholder`: consumers of Debezium topics already recognise it, and it is never mistaken
/// for a NULL the source wrote.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// The record header in which Ferry's Kafka sink names the columns a change leaves as they are (values the source
/// did not send, such as unchanged TOAST), as a JSON array of names: Debezium's placeholder value cannot mark them
/// in every type (a number, an array of numbers, a timestamp). Ferry's Kafka source reads it.
pub const UNCHANGED_HEADER: &str = "ferry.unchanged";

/// The record header in which Ferry's Kafka sink numbers a row change within its source transaction (1, 2, …):
/// the `source` block's position is the transaction's, so this orders the records of one transaction that land
/// on different partitions (Ferry's Kafka source uses it to tell which describes a table as it is later).
pub const ORDER_HEADER: &str = "ferry.order";

/// The record header in which Ferry's Kafka sink carries the values its Debezium envelope holds only
/// approximately or as null ([`ExactValues`]), so Ferry's Kafka source applies them exactly while other consumers
/// read what Debezium would have written.
pub const EXACT_HEADER: &str = "ferry.exact";

/// The [`EXACT_HEADER`]'s content: per row image, column name → Ferry's own value (its serde form, as dead letters
/// store rows). Carried for the values Debezium's forms lose: an interval with months or days (`MicroDuration`
/// counts microseconds, a month as 30 days), a decimal NaN or ±Infinity (Kafka Connect's `Decimal` has no form
/// for them) or any decimal written as a double (`decimal.handling.mode = double`), MySQL's zero dates (null),
/// and arrays holding any of these.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExactValues {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub before: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub after: BTreeMap<String, Value>,
}

impl ExactValues {
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }
}

/// Debezium's `MicroTimestamp` for PostgreSQL's `infinity` and `-infinity`: the JDBC driver's
/// `PGStatement.DATE_POSITIVE_INFINITY` / `DATE_NEGATIVE_INFINITY`, as Debezium's PostgreSQL connector writes them.
pub const MICRO_TIMESTAMP_INFINITY: i64 = 9_223_372_036_825_200_000;
pub const MICRO_TIMESTAMP_NEG_INFINITY: i64 = -9_223_372_036_832_400_000;

/// The unscaled value of a decimal as big-endian two's-complement bytes, and its scale (Kafka Connect's
/// `Decimal` logical type).
pub fn unscaled_bytes(text: &str) -> (Vec<u8>, usize) {
    let negative = text.starts_with('-');
    let body = text.trim_start_matches(['-', '+']);
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    // Magnitude as little-endian base-256 digits, built by multiply-and-add over the decimal digits.
    let mut mag: Vec<u8> = vec![0];
    for d in whole.bytes().chain(frac.bytes()) {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    // Room for the sign bit.
    if mag.last().is_some_and(|b| b & 0x80 != 0) {
        mag.push(0);
    }
    if negative {
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    // Shortest form: drop redundant sign bytes.
    while mag.len() > 1 {
        let top = mag[mag.len() - 1];
        let next = mag[mag.len() - 2];
        if (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0) {
            mag.pop();
        } else {
            break;
        }
    }
    mag.reverse();
    (mag, frac.len())
}

/// The decimal text of big-endian two's-complement `bytes` scaled by `scale` (the inverse of [`unscaled_bytes`]):
/// `[0x7d]`, 2 is `1.25`. `None` for no bytes.
pub fn decimal_text(bytes: &[u8], scale: usize) -> Option<String> {
    let (&first, _) = bytes.split_first()?;
    let negative = first & 0x80 != 0;
    // Magnitude, big-endian.
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, overflow) = b.overflowing_add(1);
            *b = v;
            if !overflow {
                break;
            }
        }
    }
    // Base-256 to decimal digits by repeated division by 10.
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let v = (rem << 8) | u32::from(*b);
            *b = (v / 10) as u8;
            rem = v % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let (whole, frac) = digits.split_at(digits.len() - scale);
    let mut text = String::with_capacity(digits.len() + 2);
    if negative {
        text.push('-');
    }
    text.push_str(std::str::from_utf8(whole).ok()?);
    if scale > 0 {
        text.push('.');
        text.push_str(std::str::from_utf8(frac).ok()?);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_go_to_bytes_and_back() {
        for text in [
            "1.25",
            "-1.25",
            "128",
            "-128",
            "0.000",
            "65536",
            "-0.01",
            "123456789012345678901234567890.123456789",
        ] {
            let (bytes, scale) = unscaled_bytes(text);
            assert_eq!(decimal_text(&bytes, scale).as_deref(), Some(text), "{text}");
        }
        assert_eq!(decimal_text(&[0x7d], 2).as_deref(), Some("1.25"));
        assert_eq!(decimal_text(&[0xff], 0).as_deref(), Some("-1"));
        assert_eq!(decimal_text(&[], 0), None);
    }
}

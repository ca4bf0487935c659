//! MySQL / MariaDB character sets, and how the bytes of a string column become text.
//!
//! A string column's bytes are in the column's character set, whatever the client's: the binlog carries them as
//! stored, and the snapshot reads them unconverted (`character_set_results = binary`), so both paths decode the
//! same bytes with the same table below, exactly once. The binlog names a column's character set by a collation
//! id (TABLE_MAP optional metadata); information_schema by `CHARACTER_SET_NAME`. Both resolve here.
//!
//! Source of the table: the character-set chapter of the MySQL manual ("Character Sets and Collations in MySQL",
//! the per-set sections on Western European, Central European, Cyrillic and Asian sets, and "The cp932 Character
//! Set") for what each set is, and `SHOW COLLATION` (`information_schema.COLLATIONS`, MariaDB's
//! `COLLATION_CHARACTER_SET_APPLICABILITY.ID`) of MySQL 8.4 and MariaDB 10.11 for the collation ids, which the two
//! servers never assign to different character sets. Each decoding is checked against the server's own conversion
//! of every one- and two-byte sequence (tests/mysql_charsets.rs).
//!
//! Decodings are the WHATWG encodings of `encoding_rs`, with MySQL's own mapping where it differs:
//! - `latin1` is Windows-1252 (the manual: "cp1252 West European"), not ISO-8859-1: 0x80 is '€', 0x93 '“'. The five
//!   bytes Windows-1252 leaves undefined map to U+0081, U+008D, U+008F, U+0090, U+009D in both.
//! - `sjis` is Shift_JIS (JIS X 0208) and `cp932` is Microsoft's Windows-31J. WHATWG's Shift_JIS is Windows-31J, so
//!   `sjis` takes back JIS X 0208's mapping for the seven characters where the two differ (0x815F '\', 0x8160 '〜',
//!   0x8161 '‖', 0x817C '−', 0x8191 '¢', 0x8192 '£', 0x81CA '¬').
//! - `gbk` and `gb2312` decode as GBK (gb2312 with MySQL's '・' and '―' at 0xA1A4 and 0xA1AA), `euckr` as EUC-KR:
//!   each a superset of the MySQL set on the sequences MySQL accepts.
//! - `big5` decodes pair by pair: MySQL's table where WHATWG's Big5-HKSCS differs (a few punctuation marks, the
//!   ETEN kana and Cyrillic in C6A1–C7FC), WHATWG's Big5 elsewhere.
//! - a few single-byte sets take back MySQL's mapping of one to three bytes (koi8u, greek, hebrew, cp866).
//! - `ujis` and `eucjpms` (EUC-JP) differ from WHATWG's EUC-JP on thousands of sequences: not decoded.
//! - `ascii` is 7-bit: a byte above 0x7F is malformed, as the server says.
//!
//! A byte sequence that is malformed in its character set is an error, never a replacement character; so is a
//! character set this table cannot decode, naming it.

use encoding_rs::Encoding;
use ferry_core::Value;

/// How the bytes of one character set become a value.
#[derive(Debug, PartialEq, Eq)]
enum Decoding {
    /// The `binary` character set: bytes, never text.
    Bytes,
    /// 7-bit ASCII.
    Ascii,
    /// A WHATWG encoding; then each (WHATWG's char, MySQL's char) pair put back to MySQL's mapping.
    Whatwg(&'static Encoding, &'static [(char, char)]),
    /// A double-byte set decoded pair by pair: first the (first, last, char of first) ranges where MySQL's table
    /// differs from the WHATWG encoding (U+FFFD: a pair the server itself cannot convert), then the encoding.
    DoubleByte(&'static Encoding, &'static [(u16, u16, char)]),
    /// UTF-32 big-endian (MySQL's `utf32`).
    Utf32,
    /// A character set Ferry does not decode (its bytes would need a mapping encoding_rs does not have).
    Unsupported,
}

/// One character set: its name, decoding and collation ids (inclusive ranges).
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    name: &'static str,
    decoding: Decoding,
    collations: &'static [(u16, u16)],
}

/// MySQL's `sjis` where WHATWG Shift_JIS (= cp932) differs: (cp932's char, sjis's char).
const SJIS_FROM_CP932: &[(char, char)] = &[
    ('\u{FF3C}', '\u{005C}'),
    ('\u{FF5E}', '\u{301C}'),
    ('\u{2225}', '\u{2016}'),
    ('\u{FF0D}', '\u{2212}'),
    ('\u{FFE0}', '\u{00A2}'),
    ('\u{FFE1}', '\u{00A3}'),
    ('\u{FFE2}', '\u{00AC}'),
];

/// MySQL's `big5` where WHATWG Big5 (Big5-HKSCS) differs: punctuation in rows A1–A2, and the ETEN extensions
/// (kana, Cyrillic, enclosed numbers) in C6A1–C7FC, which HKSCS assigns otherwise.
const BIG5_FROM_MYSQL: &[(u16, u16, char)] = &[
    (0xA145, 0xA145, '\u{2022}'),
    (0xA14E, 0xA14E, '\u{FF64}'),
    (0xA15A, 0xA15A, '\u{FFFD}'),
    (0xA1C2, 0xA1C2, '\u{203E}'),
    (0xA1C3, 0xA1C3, '\u{FFFD}'),
    (0xA1C5, 0xA1C5, '\u{FFFD}'),
    (0xA1E3, 0xA1E3, '\u{223C}'),
    (0xA1F2, 0xA1F2, '\u{2641}'),
    (0xA1F3, 0xA1F3, '\u{2609}'),
    (0xA1FE, 0xA1FE, '\u{FFFD}'),
    (0xA240, 0xA240, '\u{FFFD}'),
    (0xA241, 0xA241, '\u{FF0F}'),
    (0xA242, 0xA242, '\u{FF3C}'),
    (0xA244, 0xA244, '\u{00A5}'),
    (0xA246, 0xA246, '\u{00A2}'),
    (0xA247, 0xA247, '\u{00A3}'),
    (0xA2CC, 0xA2CC, '\u{FFFD}'),
    (0xA2CE, 0xA2CE, '\u{FFFD}'),
    (0xC6A1, 0xC6A1, '\u{30FE}'),
    (0xC6A2, 0xC6A3, '\u{309D}'),
    (0xC6A4, 0xC6A4, '\u{3005}'),
    (0xC6A5, 0xC6F7, '\u{3041}'),
    (0xC6F8, 0xC6FE, '\u{30A1}'),
    (0xC740, 0xC77E, '\u{30A8}'),
    (0xC7A1, 0xC7B0, '\u{30E7}'),
    (0xC7B1, 0xC7B2, '\u{0414}'),
    (0xC7B3, 0xC7B3, '\u{0401}'),
    (0xC7B4, 0xC7BA, '\u{0416}'),
    (0xC7BB, 0xC7CD, '\u{0423}'),
    (0xC7CE, 0xC7CE, '\u{0451}'),
    (0xC7CF, 0xC7E8, '\u{0436}'),
    (0xC7E9, 0xC7F2, '\u{2460}'),
    (0xC7F3, 0xC7FC, '\u{2474}'),
];

const fn whatwg(e: &'static Encoding) -> Decoding {
    Decoding::Whatwg(e, &[])
}

/// Every character set of MySQL 8.4 and MariaDB 10.11, with the collation ids that belong to it (MariaDB's
/// `uca1400` collations take a block of 256 ids per set: 2048 utf8mb3, 2304 utf8mb4, 2560 ucs2, 2816 utf16, 3072 utf32).
#[rustfmt::skip]
static CHARSETS: &[Entry] = &[
    Entry { name: "utf8mb4", decoding: whatwg(encoding_rs::UTF_8), collations: &[(45, 46), (224, 247), (255, 323), (608, 610), (1069, 1070), (1248, 1248), (1270, 1270), (2304, 2559)] },
    Entry { name: "utf8mb3", decoding: whatwg(encoding_rs::UTF_8), collations: &[(33, 33), (76, 76), (83, 83), (192, 215), (223, 223), (576, 578), (1057, 1057), (1107, 1107), (1216, 1216), (1238, 1238), (2048, 2303)] },
    Entry { name: "binary", decoding: Decoding::Bytes, collations: &[(63, 63)] },
    Entry { name: "latin1", decoding: whatwg(encoding_rs::WINDOWS_1252), collations: &[(5, 5), (8, 8), (15, 15), (31, 31), (47, 49), (94, 94), (1032, 1032), (1071, 1071)] },
    Entry { name: "latin2", decoding: whatwg(encoding_rs::ISO_8859_2), collations: &[(2, 2), (9, 9), (21, 21), (27, 27), (77, 77), (1033, 1033), (1101, 1101)] },
    Entry { name: "cp1251", decoding: whatwg(encoding_rs::WINDOWS_1251), collations: &[(14, 14), (23, 23), (50, 52), (1074, 1075)] },
    Entry { name: "ascii", decoding: Decoding::Ascii, collations: &[(11, 11), (65, 65), (1035, 1035), (1089, 1089)] },
    Entry { name: "gbk", decoding: whatwg(encoding_rs::GBK), collations: &[(28, 28), (87, 87), (1052, 1052), (1111, 1111)] },
    Entry { name: "gb2312", decoding: Decoding::Whatwg(encoding_rs::GBK, &[('\u{00B7}', '\u{30FB}'), ('\u{2014}', '\u{2015}')]), collations: &[(24, 24), (86, 86), (1048, 1048), (1110, 1110)] },
    Entry { name: "big5", decoding: Decoding::DoubleByte(encoding_rs::BIG5, BIG5_FROM_MYSQL), collations: &[(1, 1), (84, 84), (1025, 1025), (1108, 1108)] },
    Entry { name: "sjis", decoding: Decoding::Whatwg(encoding_rs::SHIFT_JIS, SJIS_FROM_CP932), collations: &[(13, 13), (88, 88), (1037, 1037), (1112, 1112)] },
    Entry { name: "cp932", decoding: whatwg(encoding_rs::SHIFT_JIS), collations: &[(95, 96), (1119, 1120)] },
    Entry { name: "ujis", decoding: Decoding::Unsupported, collations: &[(12, 12), (91, 91), (1036, 1036), (1115, 1115)] },
    Entry { name: "eucjpms", decoding: Decoding::Unsupported, collations: &[(97, 98), (1121, 1122)] },
    Entry { name: "euckr", decoding: whatwg(encoding_rs::EUC_KR), collations: &[(19, 19), (85, 85), (1043, 1043), (1109, 1109)] },
    Entry { name: "cp1250", decoding: whatwg(encoding_rs::WINDOWS_1250), collations: &[(26, 26), (34, 34), (44, 44), (66, 66), (99, 99), (1050, 1050), (1090, 1090)] },
    Entry { name: "cp1256", decoding: whatwg(encoding_rs::WINDOWS_1256), collations: &[(57, 57), (67, 67), (1081, 1081), (1091, 1091)] },
    Entry { name: "cp1257", decoding: whatwg(encoding_rs::WINDOWS_1257), collations: &[(29, 29), (58, 59), (1082, 1083)] },
    Entry { name: "koi8r", decoding: whatwg(encoding_rs::KOI8_R), collations: &[(7, 7), (74, 74), (1031, 1031), (1098, 1098)] },
    Entry { name: "koi8u", decoding: Decoding::Whatwg(encoding_rs::KOI8_U, &[('\u{2219}', '\u{2022}'), ('\u{045E}', '\u{255D}'), ('\u{040E}', '\u{256C}')]), collations: &[(22, 22), (75, 75), (1046, 1046), (1099, 1099)] },
    Entry { name: "greek", decoding: Decoding::Whatwg(encoding_rs::ISO_8859_7, &[('\u{2018}', '\u{02BD}'), ('\u{2019}', '\u{02BC}')]), collations: &[(25, 25), (70, 70), (1049, 1049), (1094, 1094)] },
    Entry { name: "hebrew", decoding: Decoding::Whatwg(encoding_rs::ISO_8859_8, &[('\u{00AF}', '\u{203E}')]), collations: &[(16, 16), (71, 71), (1040, 1040), (1095, 1095)] },
    Entry { name: "latin7", decoding: whatwg(encoding_rs::ISO_8859_13), collations: &[(20, 20), (41, 42), (79, 79), (1065, 1065), (1103, 1103)] },
    Entry { name: "cp866", decoding: Decoding::Whatwg(encoding_rs::IBM866, &[('\u{2116}', '\u{207F}'), ('\u{00A4}', '\u{00B2}')]), collations: &[(36, 36), (68, 68), (1060, 1060), (1092, 1092)] },
    Entry { name: "macroman", decoding: whatwg(encoding_rs::MACINTOSH), collations: &[(39, 39), (53, 53), (1063, 1063), (1077, 1077)] },
    Entry { name: "ucs2", decoding: whatwg(encoding_rs::UTF_16BE), collations: &[(35, 35), (90, 90), (128, 151), (159, 159), (640, 642), (1059, 1059), (1114, 1114), (1152, 1152), (1174, 1174), (2560, 2815)] },
    Entry { name: "utf16", decoding: whatwg(encoding_rs::UTF_16BE), collations: &[(54, 55), (101, 124), (672, 674), (1078, 1079), (1125, 1125), (1147, 1147), (2816, 3071)] },
    Entry { name: "utf16le", decoding: whatwg(encoding_rs::UTF_16LE), collations: &[(56, 56), (62, 62), (1080, 1080), (1086, 1086)] },
    Entry { name: "utf32", decoding: Decoding::Utf32, collations: &[(60, 61), (160, 183), (736, 738), (1084, 1085), (1184, 1184), (1206, 1206), (3072, 3327)] },
    Entry { name: "latin5", decoding: Decoding::Unsupported, collations: &[(30, 30), (78, 78), (1054, 1054), (1102, 1102)] },
    Entry { name: "tis620", decoding: Decoding::Unsupported, collations: &[(18, 18), (89, 89), (1042, 1042), (1113, 1113)] },
    Entry { name: "gb18030", decoding: Decoding::Unsupported, collations: &[(248, 250)] },
    Entry { name: "armscii8", decoding: Decoding::Unsupported, collations: &[(32, 32), (64, 64), (1056, 1056), (1088, 1088)] },
    Entry { name: "cp850", decoding: Decoding::Unsupported, collations: &[(4, 4), (80, 80), (1028, 1028), (1104, 1104)] },
    Entry { name: "cp852", decoding: Decoding::Unsupported, collations: &[(40, 40), (81, 81), (1064, 1064), (1105, 1105)] },
    Entry { name: "dec8", decoding: Decoding::Unsupported, collations: &[(3, 3), (69, 69), (1027, 1027), (1093, 1093)] },
    Entry { name: "geostd8", decoding: Decoding::Unsupported, collations: &[(92, 93), (1116, 1117)] },
    Entry { name: "hp8", decoding: Decoding::Unsupported, collations: &[(6, 6), (72, 72), (1030, 1030), (1096, 1096)] },
    Entry { name: "keybcs2", decoding: Decoding::Unsupported, collations: &[(37, 37), (73, 73), (1061, 1061), (1097, 1097)] },
    Entry { name: "macce", decoding: Decoding::Unsupported, collations: &[(38, 38), (43, 43), (1062, 1062), (1067, 1067)] },
    Entry { name: "swe7", decoding: Decoding::Unsupported, collations: &[(10, 10), (82, 82), (1034, 1034), (1106, 1106)] },
];

/// A character set whose bytes Ferry decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charset(&'static Entry);

/// A character set (or collation) Ferry cannot decode; shown as "character set swe7 (collation id 10)".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}, which Ferry cannot decode (docs/type-mapping.md lists the character sets it can)")]
pub struct UnsupportedCharset(String);

impl Charset {
    /// utf8mb4: what non-string columns (JSON, numbers, dates) are read as.
    pub const UTF8MB4: Charset = Charset(&CHARSETS[0]);
    /// The `binary` character set.
    pub const BINARY: Charset = Charset(&CHARSETS[2]);

    fn supported(entry: &'static Entry, what: String) -> Result<Charset, UnsupportedCharset> {
        match entry.decoding {
            Decoding::Unsupported => Err(UnsupportedCharset(what)),
            _ => Ok(Charset(entry)),
        }
    }

    /// The character set of a collation id, as the binlog's TABLE_MAP metadata gives it.
    pub fn from_collation_id(id: u16) -> Result<Charset, UnsupportedCharset> {
        match CHARSETS.iter().find(|e| {
            e.collations
                .iter()
                .any(|&(low, high)| (low..=high).contains(&id))
        }) {
            Some(e) => Self::supported(e, format!("character set {} (collation id {id})", e.name)),
            None => Err(UnsupportedCharset(format!(
                "collation id {id}, of no character set Ferry knows"
            ))),
        }
    }

    /// A character set by name, as information_schema's `CHARACTER_SET_NAME` or DDL spells it (`utf8` is
    /// utf8mb3, as in MySQL 8 and MariaDB).
    pub fn from_name(name: &str) -> Result<Charset, UnsupportedCharset> {
        let lower = name.to_ascii_lowercase();
        let lower = match lower.as_str() {
            "utf8" => "utf8mb3",
            other => other,
        };
        match CHARSETS.iter().find(|e| e.name == lower) {
            Some(e) => Self::supported(e, format!("character set {}", e.name)),
            None => Err(UnsupportedCharset(format!("character set {name}"))),
        }
    }

    /// The character set of a collation named in DDL (`latin1_swedish_ci`, `binary`); `None` for a name that
    /// does not start with a character set (MariaDB's `uca1400_ai_ci` applies to the table's own set).
    pub fn from_collation_name(name: &str) -> Option<Result<Charset, UnsupportedCharset>> {
        let lower = name.to_ascii_lowercase();
        let prefix = lower.split('_').next().unwrap_or_default();
        let known = prefix == "utf8" || CHARSETS.iter().any(|e| e.name == prefix);
        known.then(|| Self::from_name(prefix))
    }

    /// The character set's MySQL name.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// Whether values are bytes rather than text (the `binary` character set).
    pub fn is_binary(&self) -> bool {
        self.0.decoding == Decoding::Bytes
    }

    /// A string column's value: text decoded from this character set, or bytes for `binary`. Malformed bytes are
    /// an error that quotes them.
    pub fn value(&self, bytes: &[u8]) -> Result<Value, String> {
        match self.0.decoding {
            Decoding::Bytes => Ok(Value::Bytes(bytes.to_vec())),
            _ => self.text(bytes).map(Value::Text),
        }
    }

    /// The text of `bytes` in this character set (`binary` bytes must be UTF-8 here: a label or a name).
    pub fn text(&self, bytes: &[u8]) -> Result<String, String> {
        let decoded = match &self.0.decoding {
            Decoding::Bytes => std::str::from_utf8(bytes).ok().map(str::to_owned),
            Decoding::Ascii => bytes
                .is_ascii()
                .then(|| String::from_utf8_lossy(bytes).into_owned()),
            Decoding::Utf32 => utf32(bytes),
            Decoding::DoubleByte(encoding, table) => double_byte(encoding, table, bytes),
            Decoding::Whatwg(encoding, fixes) => encoding
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(|text| {
                    if fixes.is_empty() || !text.chars().any(|c| fixes.iter().any(|f| f.0 == c)) {
                        text.into_owned()
                    } else {
                        text.chars()
                            .map(|c| fixes.iter().find(|f| f.0 == c).map_or(c, |f| f.1))
                            .collect()
                    }
                }),
            Decoding::Unsupported => None,
        };
        decoded.ok_or_else(|| format!("the bytes {} are not valid {}", excerpt(bytes), self.0.name))
    }
}

/// A double-byte set: ASCII, or a lead byte 0x81–0xFE and a trail byte, looked up in `table` before `encoding`.
fn double_byte(
    encoding: &'static Encoding,
    table: &[(u16, u16, char)],
    bytes: &[u8],
) -> Option<String> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let lead = bytes[i];
        if lead < 0x80 {
            out.push(char::from(lead));
            i += 1;
            continue;
        }
        let pair = bytes.get(i..i + 2)?;
        let code = u16::from_be_bytes([pair[0], pair[1]]);
        match table
            .iter()
            .find(|(low, high, _)| (*low..=*high).contains(&code))
        {
            Some(&(_, _, '\u{FFFD}')) => return None,
            Some(&(low, _, first)) => {
                out.push(char::from_u32(u32::from(first) + u32::from(code - low))?)
            }
            None => {
                out.push_str(&encoding.decode_without_bom_handling_and_without_replacement(pair)?)
            }
        }
        i += 2;
    }
    Some(out)
}

fn utf32(bytes: &[u8]) -> Option<String> {
    let chunks = bytes.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    chunks
        .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

/// `0x…` of the first bytes of a value, for error messages.
fn excerpt(bytes: &[u8]) -> String {
    let mut out = String::from("0x");
    for b in bytes.iter().take(24) {
        out.push_str(&format!("{b:02X}"));
    }
    if bytes.len() > 24 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(charset: &str, bytes: &[u8]) -> String {
        Charset::from_name(charset).unwrap().text(bytes).unwrap()
    }

    #[test]
    fn latin1_is_windows_1252() {
        assert_eq!(text("latin1", b"\x80uro"), "€uro");
        assert_eq!(text("latin1", b"\x8Cuvre \x93quoted\x94"), "Œuvre “quoted”");
        // UTF-8 bytes stored in a latin1 column are two latin1 characters each, never 'é'.
        assert_eq!(text("latin1", b"\xC3\xA9"), "Ã©");
        assert_eq!(
            text("latin1", b"\x81\x8D\x8F\x90\x9D"),
            "\u{81}\u{8D}\u{8F}\u{90}\u{9D}"
        );
    }

    #[test]
    fn each_character_set_decodes_its_own_bytes() {
        assert_eq!(text("latin2", b"\xAF\xF3\xB3\xE6"), "Żółć");
        assert_eq!(text("cp1251", b"\xCF\xF0\xE8\xE2\xE5\xF2"), "Привет");
        assert_eq!(text("utf8mb4", "中文 😀".as_bytes()), "中文 😀");
        assert_eq!(text("utf8", "Żółć".as_bytes()), "Żółć");
        assert_eq!(text("gbk", b"\xD6\xD0\xCE\xC4"), "中文");
        assert_eq!(
            text("sjis", b"\xB6\xC0\xB6\xC5\x93\xFA\x96\x7B"),
            "ｶﾀｶﾅ日本"
        );
        assert_eq!(text("big5", b"\xC1\x63\xC5\xE9"), "繁體");
        assert_eq!(text("ascii", b"plain"), "plain");
        assert_eq!(text("ucs2", b"\x04\x1F\x00a"), "Пa");
        assert_eq!(text("utf16le", b"\x1F\x04a\x00"), "Пa");
        assert_eq!(text("utf32", b"\x00\x01\xF6\x00"), "😀");
        assert_eq!(
            Charset::BINARY.value(b"\x00\xFF").unwrap(),
            Value::Bytes(vec![0, 0xFF])
        );
    }

    #[test]
    fn sjis_keeps_jis_x_0208_where_cp932_differs() {
        assert_eq!(text("sjis", b"\x81\x60\x81\x5F"), "\u{301C}\\");
        assert_eq!(text("cp932", b"\x81\x60\x81\x5F"), "\u{FF5E}\u{FF3C}");
    }

    #[test]
    fn malformed_bytes_are_errors_never_replacement_characters() {
        let err = Charset::from_name("utf8mb4")
            .unwrap()
            .text(b"ok\xFF")
            .unwrap_err();
        assert!(err.contains("0x6F6BFF") && err.contains("utf8mb4"), "{err}");
        assert!(Charset::from_name("ascii").unwrap().text(b"\xE9").is_err());
        assert!(Charset::from_name("sjis").unwrap().text(b"\x81").is_err());
        assert!(Charset::from_name("utf32")
            .unwrap()
            .text(b"\x00\x00")
            .is_err());
        assert!(Charset::from_name("utf32")
            .unwrap()
            .text(b"\x00\x11\x00\x00")
            .is_err());
    }

    #[test]
    fn collation_ids_and_names_resolve_to_their_character_set() {
        for (id, name) in [
            (8, "latin1"),
            (33, "utf8mb3"),
            (45, "utf8mb4"),
            (255, "utf8mb4"),
            (2304, "utf8mb4"),
            (63, "binary"),
            (13, "sjis"),
            (95, "cp932"),
            (28, "gbk"),
            (1, "big5"),
            (9, "latin2"),
            (51, "cp1251"),
        ] {
            assert_eq!(Charset::from_collation_id(id).unwrap().name(), name, "{id}");
        }
        let swe7 = Charset::from_collation_id(10).unwrap_err().to_string();
        assert!(swe7.contains("swe7") && swe7.contains("10"), "{swe7}");
        assert!(Charset::from_collation_id(9999)
            .unwrap_err()
            .to_string()
            .contains("9999"));
        assert!(Charset::from_name("swe7").is_err());
        assert_eq!(
            Charset::from_collation_name("latin1_swedish_ci")
                .unwrap()
                .unwrap()
                .name(),
            "latin1"
        );
        assert_eq!(
            Charset::from_collation_name("utf8_general_ci")
                .unwrap()
                .unwrap()
                .name(),
            "utf8mb3"
        );
        assert!(Charset::from_collation_name("uca1400_ai_ci").is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            for entry in CHARSETS {
                let charset = Charset(entry);
                // A replacement character only where the input spells U+FFFD itself (the UTF encodings).
                if let Ok(text) = charset.text(&bytes) {
                    let replaced = text.contains(char::REPLACEMENT_CHARACTER);
                    proptest::prop_assert!(!replaced || entry.name.starts_with("utf") || entry.name == "ucs2");
                }
                let _ = charset.value(&bytes);
            }
        }
    }

    #[test]
    fn no_collation_id_belongs_to_two_character_sets() {
        for id in 0..4096u16 {
            let owners = CHARSETS
                .iter()
                .filter(|e| e.collations.iter().any(|&(l, h)| (l..=h).contains(&id)))
                .count();
            assert!(owners <= 1, "collation id {id}");
        }
    }
}

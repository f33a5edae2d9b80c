//! PostgreSQL's binary `COPY` format, for the per-check rows: ~18 rows a result made an
//! `INSERT … SELECT FROM UNNEST` the sink's largest cost; `COPY` inserts them in bulk and
//! parses nothing. See <https://www.postgresql.org/docs/current/sql-copy.html> (Binary Format).

use std::borrow::Cow;

/// Signature, flags (no OIDs) and an empty header extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Rows of `fields` columns, each row written column by column in the table's `COPY` order.
pub struct BinaryCopy {
    buf: Vec<u8>,
    fields: i16,
    rows: u64,
}

impl BinaryCopy {
    pub fn new(fields: i16) -> Self {
        Self {
            buf: HEADER.to_vec(),
            fields,
            rows: 0,
        }
    }

    /// Starts a row; exactly `fields` values must follow.
    pub fn row(&mut self) {
        self.buf.extend_from_slice(&self.fields.to_be_bytes());
        self.rows += 1;
    }

    pub fn int8(&mut self, v: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn int2(&mut self, v: Option<i16>) {
        match v {
            Some(v) => {
                self.buf.extend_from_slice(&2i32.to_be_bytes());
                self.buf.extend_from_slice(&v.to_be_bytes());
            }
            None => self.null(),
        }
    }

    pub fn text(&mut self, v: &str) {
        let v = pg_text(v);
        // A text value over 2 GiB cannot reach here: messages are capped far below that.
        let len = i32::try_from(v.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(v.as_bytes());
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The whole `COPY` data, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

/// PostgreSQL text cannot hold NUL; a result whose reason carries one (from a `\u0000` escape
/// in scorecard's JSON) would fail its batch on every retry and block the sink. The character
/// is replaced instead, and the rest of the result kept.
pub fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_rows_in_the_binary_layout() {
        let mut c = BinaryCopy::new(3);
        c.row();
        c.int8(7);
        c.text("ab");
        c.int2(None);
        assert_eq!(c.rows(), 1);
        let data = c.finish();
        let mut want = HEADER.to_vec();
        want.extend_from_slice(&[0, 3]);
        want.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(data, want);
        assert_eq!(HEADER.len(), 19);
    }

    #[test]
    fn nul_is_replaced_and_other_text_borrowed() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(pg_text("plain"), Cow::Borrowed("plain")));
    }
}

//! The one DER codec: a reader for what we parse (PKCS#12 files, encrypted PKCS#8 keys) and a
//! writer for what we build (SubjectPublicKeyInfo, ECDSA signatures). Definite lengths only,
//! low tag numbers only: everything these formats use.

pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const CONTEXT_0: u8 = 0xa0;
pub(crate) const CONTEXT_0_PRIMITIVE: u8 = 0x80;

/// Why DER could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DerError {
    #[error("truncated DER")]
    Truncated,
    /// A high tag number (`0x1f` form), which none of our formats uses.
    #[error("unsupported DER tag")]
    UnsupportedTag,
    /// BER's indefinite length (`0x80`), which some old PKCS#12 writers use.
    #[error("BER indefinite lengths are not supported; re-export the file with `openssl pkcs12`")]
    IndefiniteLength,
    #[error("bad DER length")]
    BadLength,
    /// `what` holds another tag than expected.
    #[error("{what}: unexpected DER tag 0x{tag:02x}")]
    UnexpectedTag { what: String, tag: u8 },
}

/// A reader over DER: one tag-length-value at a time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(der: &'a [u8]) -> Self {
        Reader(der)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next element: (tag, content, the whole encoding).
    pub(crate) fn read(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), DerError> {
        let d = self.0;
        if d.len() < 2 {
            return Err(DerError::Truncated);
        }
        let tag = d[0];
        if tag & 0x1f == 0x1f {
            return Err(DerError::UnsupportedTag);
        }
        let (len, header) = match d[1] {
            l if l < 0x80 => (l as usize, 2),
            0x80 => return Err(DerError::IndefiniteLength),
            l => {
                let n = (l & 0x7f) as usize;
                if n > 4 || d.len() < 2 + n {
                    return Err(DerError::BadLength);
                }
                let len = d[2..2 + n]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                (len, 2 + n)
            }
        };
        if d.len() - header < len {
            return Err(DerError::Truncated);
        }
        let whole = &d[..header + len];
        self.0 = &d[header + len..];
        Ok((tag, &whole[header..], whole))
    }

    /// The content of the next element, which must have `tag`.
    pub(crate) fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], DerError> {
        let (t, content, _) = self.read()?;
        if t != tag {
            let what = what.to_string();
            return Err(DerError::UnexpectedTag { what, tag: t });
        }
        Ok(content)
    }

    /// A sequence's content, as a reader.
    pub(crate) fn sequence(&mut self, what: &str) -> Result<Reader<'a>, DerError> {
        self.expect(SEQUENCE, what).map(Reader)
    }
}

/// The value of a non-negative INTEGER's `content` of at most 5 bytes, else `None`.
pub(crate) fn small_unsigned(content: &[u8]) -> Option<u64> {
    let small = !content.is_empty() && content.len() <= 5 && content[0] & 0x80 == 0;
    small.then(|| content.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b)))
}

/// One element: `tag`, the minimal length, `content`.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The big-endian unsigned integer `bytes` without its leading zeros.
pub(crate) fn magnitude(bytes: &[u8]) -> &[u8] {
    &bytes[bytes.iter().take_while(|b| **b == 0).count()..]
}

/// An INTEGER holding the unsigned big-endian `bytes` (minimal encoding).
pub(crate) fn unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let mut v = magnitude(bytes).to_vec();
    if v.is_empty() {
        v.push(0);
    } else if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    tlv(INTEGER, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let inner = tlv(OCTET_STRING, &content);
            let outer = tlv(
                SEQUENCE,
                &[inner.clone(), unsigned_integer(&[0x80])].concat(),
            );
            let mut r = Reader::new(&outer);
            let mut seq = r.sequence("outer").unwrap();
            assert!(r.is_empty());
            assert_eq!(seq.expect(OCTET_STRING, "content").unwrap(), &content[..]);
            let (tag, int, whole) = seq.read().unwrap();
            assert_eq!(
                (tag, int, whole),
                (INTEGER, &[0x00, 0x80][..], &[2, 2, 0, 0x80][..])
            );
            assert!(seq.is_empty());
        }
    }

    #[test]
    fn integers_are_minimal() {
        assert_eq!(unsigned_integer(&[0, 0, 1]), vec![2, 1, 1]);
        assert_eq!(unsigned_integer(&[]), vec![2, 1, 0]);
        assert_eq!(unsigned_integer(&[0xff]), vec![2, 2, 0, 0xff]);
    }

    #[test]
    fn small_unsigned_integers_read_back() {
        for n in [
            0u64,
            1,
            0x7f,
            0x80,
            2048,
            u64::from(u32::MAX) + 1,
            (1 << 39) - 1,
        ] {
            let encoded = unsigned_integer(&n.to_be_bytes());
            let content = Reader::new(&encoded).expect(INTEGER, "n").unwrap();
            assert_eq!(small_unsigned(content), Some(n));
        }
        for bad in [&[][..], &[0x80], &[0xff, 0xff], &[1, 0, 0, 0, 0, 0]] {
            assert_eq!(small_unsigned(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        let read = |d: &[u8]| Reader::new(d).read().map(|_| ()).unwrap_err();
        assert_eq!(read(&[0x30]), DerError::Truncated);
        assert_eq!(read(&[0x30, 0x05, 1]), DerError::Truncated);
        assert_eq!(read(&[0x1f, 0x01, 0]), DerError::UnsupportedTag);
        assert_eq!(read(&[0x30, 0x80, 0, 0]), DerError::IndefiniteLength);
        assert_eq!(read(&[0x30, 0x85, 1, 1, 1, 1, 1]), DerError::BadLength);
        let e = Reader::new(&[0x02, 0x01, 0x05])
            .expect(SEQUENCE, "PFX")
            .unwrap_err();
        assert_eq!(e.to_string(), "PFX: unexpected DER tag 0x02");
    }
}

//! A chunk's bytes, held as shared parts in order.

use std::fmt;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// The bytes of a chunk: one or more shared [`Bytes`] parts, in order, that are never
/// concatenated to be hashed, spooled or stored.
///
/// Copy mode builds a chunk from its MP4 header and the demuxer's own packet buffers, so each
/// byte of a file is copied once in user space (by the read that brings it in) instead of once
/// more into a chunk-sized buffer. Cloning is one reference count.
///
/// ```
/// use bytes::Bytes;
/// use crispy_core::Payload;
///
/// let p = Payload::from_parts([Bytes::from_static(b"ftyp"), Bytes::new(), Bytes::from_static(b"mdat")]);
/// assert_eq!(p.len(), 8);
/// assert_eq!(p.parts().len(), 2); // empty parts are dropped
/// assert_eq!(&p.to_bytes()[..], b"ftypmdat");
///
/// let mut out = Vec::new();
/// p.write_to(&mut out)?;
/// assert_eq!(out, b"ftypmdat");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Payload {
    parts: Arc<[Bytes]>,
    len: usize,
}

impl Payload {
    /// A payload made of `parts`, in order; empty parts are left out.
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: Arc<[Bytes]> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let len = parts.iter().map(Bytes::len).sum();
        Self { parts, len }
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order; none of them is empty.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The bytes in one piece: free for a payload of one part, a copy otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match &*self.parts {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut whole = BytesMut::with_capacity(self.len);
                for part in many {
                    whole.extend_from_slice(part);
                }
                whole.freeze()
            }
        }
    }

    /// Writes every byte to `w` with vectored writes (one `writev` for up to 1024 parts on a
    /// file), retrying short writes and interruptions as `write_all` does.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self.parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match w.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Self::from_parts([bytes])
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Self::from(Bytes::from(bytes))
    }
}

impl From<&'static [u8]> for Payload {
    fn from(bytes: &'static [u8]) -> Self {
        Self::from(Bytes::from_static(bytes))
    }
}

/// Equal when the bytes are, wherever the parts are cut.
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .parts
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.parts.iter().flat_map(|p| p.iter()))
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("len", &self.len)
            .field("parts", &self.parts.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `limit` bytes per call and is interrupted every other
    /// call: `write_to` must still write everything, in order.
    struct Stingy {
        out: Vec<u8>,
        limit: usize,
        calls: usize,
    }

    impl Write for Stingy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let mut taken = 0;
            for b in bufs {
                let n = b.len().min(self.limit - taken);
                self.out.extend_from_slice(&b[..n]);
                taken += n;
                if taken == self.limit {
                    break;
                }
            }
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sample() -> Payload {
        Payload::from_parts((0u8..40).map(|i| Bytes::from(vec![i; usize::from(i % 7) + 1])))
    }

    #[test]
    fn short_and_interrupted_writes_still_write_everything_in_order() {
        let p = sample();
        let mut w = Stingy {
            out: Vec::new(),
            limit: 5,
            calls: 0,
        };
        p.write_to(&mut w).expect("write");
        assert_eq!(w.out, p.to_bytes());
        assert!(w.calls > p.len() / 5, "the limit was exercised");
    }

    #[test]
    fn a_writer_that_takes_nothing_is_an_error_not_a_hang() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = sample().write_to(&mut Full).expect_err("no progress");
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn equality_ignores_where_parts_are_cut() {
        let p = sample();
        let whole = Payload::from(p.to_bytes());
        assert_eq!(p, whole);
        assert_eq!(whole.parts().len(), 1);
        let mut other = p.to_bytes().to_vec();
        other[17] ^= 1;
        assert_ne!(p, Payload::from(other));
        assert_ne!(p, Payload::from(&b"short"[..]));
        assert!(Payload::default().is_empty());
        assert_eq!(Payload::default().to_bytes(), Bytes::new());
    }
}

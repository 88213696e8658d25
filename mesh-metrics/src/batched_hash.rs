//! Hands what a value's `Hash` writes to the hasher in a few large writes.
//!
//! A label set is hashed once per request to find its series, with SipHash (the family's map
//! must stay safe against label values chosen to collide). SipHash pays for each `write` call,
//! and a derived `Hash` makes one per field, per tag, per length: seven or more for
//! [`HttpLabels`](crate::HttpLabels). Gathered in a stack buffer first, they cost one or two.

use std::hash::Hasher;

/// How many bytes are gathered before they are handed on.
const CAPACITY: usize = 128;

/// A [`Hasher`] that gathers writes and hands them to `inner` when full and when dropped.
/// Equal values still hash alike: what `inner` sees depends only on the bytes written.
pub(crate) struct Batched<'a, H: Hasher> {
    inner: &'a mut H,
    buf: [u8; CAPACITY],
    len: usize,
}

impl<'a, H: Hasher> Batched<'a, H> {
    pub(crate) fn new(inner: &'a mut H) -> Self {
        Self {
            inner,
            buf: [0; CAPACITY],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.inner.write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<H: Hasher> Hasher for Batched<'_, H> {
    fn write(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > CAPACITY {
            self.flush();
            if bytes.len() > CAPACITY {
                self.inner.write(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Not used to hash (the value's `Hash` only writes); what `inner` has so far.
    fn finish(&self) -> u64 {
        self.inner.finish()
    }
}

impl<H: Hasher> Drop for Batched<'_, H> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash, RandomState};

    /// Records the writes it is given.
    #[derive(Default)]
    struct Recorder(Vec<Vec<u8>>);

    impl Hasher for Recorder {
        fn write(&mut self, bytes: &[u8]) {
            self.0.push(bytes.to_vec());
        }
        fn finish(&self) -> u64 {
            0
        }
    }

    #[test]
    fn writes_are_gathered_and_nothing_is_lost() {
        let mut recorder = Recorder::default();
        {
            let mut batched = Batched::new(&mut recorder);
            batched.write_u8(1);
            batched.write(b"web.ns.svc");
            batched.write_u64(7);
        }
        assert_eq!(recorder.0.len(), 1, "one write");
        let mut expected = vec![1u8];
        expected.extend_from_slice(b"web.ns.svc");
        expected.extend_from_slice(&7u64.to_ne_bytes());
        assert_eq!(recorder.0[0], expected);

        // Past the buffer: everything still arrives, in order.
        let long = vec![b'x'; CAPACITY + 10];
        let mut recorder = Recorder::default();
        {
            let mut batched = Batched::new(&mut recorder);
            batched.write(b"ab");
            batched.write(&long);
            batched.write(b"cd");
        }
        let all: Vec<u8> = recorder.0.concat();
        assert_eq!(all, [b"ab".as_slice(), &long, b"cd"].concat());
    }

    #[test]
    fn equal_values_hash_alike_and_others_apart() {
        let state = RandomState::new();
        let hash = |v: &(u8, &str, Option<u32>)| {
            let mut hasher = state.build_hasher();
            v.hash(&mut Batched::new(&mut hasher));
            hasher.finish()
        };
        assert_eq!(hash(&(1, "web", Some(3))), hash(&(1, "web", Some(3))));
        assert_ne!(hash(&(1, "web", Some(3))), hash(&(1, "web", None)));
        assert_ne!(hash(&(1, "web", Some(3))), hash(&(2, "web", Some(3))));
    }
}

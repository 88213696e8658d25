//! HTTP/2 frames a client may send cheaply but the server pays for: PING and SETTINGS (each
//! owes an acknowledgement), RST_STREAM (rapid reset, CVE-2023-44487: each reset stream was a
//! request started), empty DATA and PRIORITY frames (CVE-2019-9518), and CONTINUATION frames
//! (CVE-2024-27316 and friends). The `h2` crate bounds the memory these take; this bounds the
//! work: each kind draws from a token bucket of the connection, and a connection that empties
//! one is closed.
//!
//! The frame headers are read off the byte stream as it passes (nine bytes a frame, no copy of
//! payloads), so the cost is a few comparisons per frame.

use std::io;
use std::sync::Arc;

use tokio::time::Instant;

use super::ServeStats;
use super::watch::OnRead;

/// How many cheap-to-send frames one HTTP/2 connection may send: a burst, then a rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FloodLimits {
    /// PING, SETTINGS, PRIORITY and empty non-final DATA frames: at most this many at once.
    pub control_burst: u32,
    /// ... refilled at this many per second.
    pub control_per_second: u32,
    /// RST_STREAM frames from the client: at most this many at once.
    pub reset_burst: u32,
    /// ... refilled at this many per second.
    pub resets_per_second: u32,
    /// CONTINUATION frames after one HEADERS frame. A header list within the 64 KiB bound
    /// needs five 16 KiB frames; many tiny ones are an attack.
    pub max_continuations: u32,
}

impl Default for FloodLimits {
    fn default() -> Self {
        Self {
            control_burst: 200,
            control_per_second: 50,
            reset_burst: 500,
            resets_per_second: 200,
            max_continuations: 32,
        }
    }
}

/// Which limit a connection broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// Too many PING, SETTINGS, PRIORITY or empty DATA frames.
    Control,
    /// Too many RST_STREAM frames.
    Resets,
    /// A header block in too many CONTINUATION frames.
    Continuations,
}

impl Flood {
    /// A stable name for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Control => "h2_control_flood",
            Self::Resets => "h2_reset_flood",
            Self::Continuations => "h2_continuation_flood",
        }
    }
}

impl std::fmt::Display for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Control => "too many HTTP/2 PING, SETTINGS, PRIORITY or empty DATA frames",
            Self::Resets => "too many HTTP/2 stream resets (rapid reset)",
            Self::Continuations => "a header block in too many HTTP/2 CONTINUATION frames",
        })
    }
}

impl std::error::Error for Flood {}

const PREFACE_LEN: u32 = 24;
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const CONTINUATION: u8 = 9;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new(burst: u32, rate: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            rate: f64::from(rate),
            at: None,
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where the reader is in the stream of frames.
#[derive(Debug)]
struct Frames {
    /// Bytes of the current frame's payload (or the preface) still to pass.
    skip: u32,
    header: [u8; 9],
    have: usize,
    continuations: Option<u32>,
    control: Bucket,
    resets: Bucket,
    max_continuations: u32,
}

impl Frames {
    fn new(limits: &FloodLimits) -> Self {
        Self {
            skip: PREFACE_LEN,
            header: [0; 9],
            have: 0,
            continuations: None,
            control: Bucket::new(limits.control_burst, limits.control_per_second),
            resets: Bucket::new(limits.reset_burst, limits.resets_per_second),
            max_continuations: limits.max_continuations,
        }
    }

    /// Reads frame headers off `bytes`; the first limit broken, if any.
    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Flood> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = (self.skip as usize).min(bytes.len());
                self.skip -= n as u32;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let h = self.header;
                let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                self.skip = len;
                self.frame(h[3], h[4], len)?;
            }
        }
        Ok(())
    }

    fn frame(&mut self, kind: u8, flags: u8, len: u32) -> Result<(), Flood> {
        let control = match kind {
            PING | SETTINGS => flags & ACK == 0,
            PRIORITY => true,
            DATA => len == 0 && flags & END_STREAM == 0,
            RST_STREAM => {
                return if self.resets.take() {
                    Ok(())
                } else {
                    Err(Flood::Resets)
                };
            }
            HEADERS => {
                self.continuations = (flags & END_HEADERS == 0).then_some(0);
                false
            }
            CONTINUATION => {
                if let Some(count) = &mut self.continuations {
                    *count += 1;
                    if *count > self.max_continuations {
                        return Err(Flood::Continuations);
                    }
                }
                if flags & END_HEADERS != 0 {
                    self.continuations = None;
                }
                false
            }
            _ => false,
        };
        if control && !self.control.take() {
            return Err(Flood::Control);
        }
        Ok(())
    }
}

/// Counts an HTTP/2 server connection's client frames; a flood ends the connection with an
/// error (the [`Flood`]), which closes it.
#[derive(Debug)]
pub(crate) struct FloodGuard {
    frames: Frames,
    tripped: Option<Flood>,
    stats: Arc<ServeStats>,
}

impl FloodGuard {
    pub(crate) fn new(limits: &FloodLimits, stats: Arc<ServeStats>) -> Self {
        Self {
            frames: Frames::new(limits),
            tripped: None,
            stats,
        }
    }
}

impl OnRead for FloodGuard {
    fn on_read(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(flood) = self.frames.scan(bytes) {
            tracing::info!(%flood, "closing an HTTP/2 connection");
            self.stats.flood(flood);
            self.tripped = Some(flood);
            return Err(io::Error::new(io::ErrorKind::InvalidData, flood));
        }
        Ok(())
    }

    fn before_read(&self) -> io::Result<()> {
        match self.tripped {
            Some(flood) => Err(io::Error::new(io::ErrorKind::InvalidData, flood)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, flags, 0, 0, 0, 1]);
        out.extend_from_slice(payload);
        out
    }

    fn preface() -> Vec<u8> {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn pings_beyond_the_burst_trip_and_acks_do_not_count() {
        let mut frames = Frames::new(&FloodLimits::default());
        let mut bytes = preface();
        for _ in 0..200 {
            bytes.extend(frame(PING, 0, &[0; 8]));
            bytes.extend(frame(PING, ACK, &[0; 8]));
        }
        // Split at awkward places: headers cross reads.
        for chunk in bytes.chunks(7) {
            assert_eq!(frames.scan(chunk), Ok(()));
        }
        assert_eq!(frames.scan(&frame(PING, 0, &[0; 8])), Err(Flood::Control));
    }

    #[tokio::test(start_paused = true)]
    async fn the_buckets_refill_with_time() {
        let mut frames = Frames::new(&FloodLimits::default());
        frames.scan(&preface()).expect("preface");
        for _ in 0..500 {
            frames.scan(&frame(RST_STREAM, 0, &[0; 4])).expect("burst");
        }
        assert_eq!(
            frames.scan(&frame(RST_STREAM, 0, &[0; 4])),
            Err(Flood::Resets)
        );
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        frames
            .scan(&frame(RST_STREAM, 0, &[0; 4]))
            .expect("refilled");
    }

    #[tokio::test(start_paused = true)]
    async fn continuations_are_counted_per_header_block() {
        let mut frames = Frames::new(&FloodLimits::default());
        frames.scan(&preface()).expect("preface");
        for _ in 0..10 {
            frames.scan(&frame(HEADERS, 0, &[0x82])).expect("headers");
            for _ in 0..31 {
                frames
                    .scan(&frame(CONTINUATION, 0, &[]))
                    .expect("continuation");
            }
            frames
                .scan(&frame(CONTINUATION, END_HEADERS, &[]))
                .expect("last");
        }
        frames.scan(&frame(HEADERS, 0, &[0x82])).expect("headers");
        let flood = (0..33).find_map(|_| frames.scan(&frame(CONTINUATION, 0, &[])).err());
        assert_eq!(flood, Some(Flood::Continuations));
    }
}

//! A raw HTTP/2 client for abuse tests: it writes whatever frames a test builds, in any order
//! and number (no flow control, no stream limits of its own), and reports what the server sent.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const CONTINUATION: u8 = 9;
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
/// RST_STREAM / GOAWAY error codes.
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;

/// One frame as bytes (mesh-core's test fixture, under the name these tests use).
pub use mesh_core::test_util::h2_frame as frame;

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A string literal, not Huffman-coded.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// The header block of a request: `method` (`GET` or `POST`), `/`, `authority`, and `extra`
/// headers, as literals without indexing.
pub fn request_block(method: &str, authority: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = vec![if method == "POST" { 0x83 } else { 0x82 }, 0x86, 0x84];
    // `:authority`, the static table's first name.
    int(&mut out, 0, 4, 1);
    string(&mut out, authority.as_bytes());
    for (name, value) in extra {
        out.push(0);
        string(&mut out, name.as_bytes());
        string(&mut out, value);
    }
    out
}

/// What the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    },
    /// The connection ended (EOF or an error).
    Closed,
}

/// A raw connection: write frames, read events.
pub struct RawH2 {
    pub write: OwnedWriteHalf,
    pub events: mpsc::UnboundedReceiver<Event>,
}

impl RawH2 {
    /// Connects to `addr` and sends the preface and an empty SETTINGS frame.
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (read, mut write) = tcp.into_split();
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        write.write_all(&hello).await.expect("preface");
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(read, tx));
        Self { write, events }
    }

    /// Like [`RawH2::connect`], then waits for the server's SETTINGS and acknowledges them, so
    /// that the server's limits are in force.
    pub async fn settled(addr: std::net::SocketAddr) -> Self {
        let mut conn = Self::connect(addr).await;
        conn.until(|e| {
            matches!(
                e,
                Event::Frame {
                    kind: SETTINGS,
                    flags: 0,
                    ..
                }
            )
        })
        .await
        .expect("server SETTINGS");
        conn.send(&frame(SETTINGS, ACK, 0, &[])).await;
        // A PING answered means the ACK has been read.
        conn.send(&frame(PING, 0, 0, &[1; 8])).await;
        conn.until(|e| {
            matches!(
                e,
                Event::Frame {
                    kind: PING,
                    flags: ACK,
                    ..
                }
            )
        })
        .await
        .expect("PING answered");
        conn
    }

    /// Writes `bytes`; false if the server has closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.write.write_all(bytes).await.is_ok()
    }

    /// Events until one matches `what` (returned), the connection closes (`None`), or 15 s pass
    /// (a panic).
    pub async fn until(&mut self, mut what: impl FnMut(&Event) -> bool) -> Option<Event> {
        tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(event) = self.events.recv().await {
                if what(&event) {
                    return Some(event);
                }
                if event == Event::Closed {
                    return None;
                }
            }
            None
        })
        .await
        .expect("the server answered or closed within 15 s")
    }

    /// Reads until the connection closes (within 15 s) and returns the GOAWAY error code, if
    /// the server sent one.
    pub async fn closed(&mut self) -> Option<u32> {
        let mut goaway = None;
        let mut events = std::mem::replace(&mut self.events, mpsc::unbounded_channel().1);
        tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Frame {
                        kind: GOAWAY,
                        payload,
                        ..
                    } if payload.len() >= 8 => {
                        goaway = Some(u32::from_be_bytes([
                            payload[4], payload[5], payload[6], payload[7],
                        ]));
                    }
                    Event::Closed => return,
                    _ => {}
                }
            }
        })
        .await
        .expect("the server closed the connection within 15 s");
        goaway
    }
}

async fn read_frames(mut read: OwnedReadHalf, tx: mpsc::UnboundedSender<Event>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let event = Event::Frame {
                kind: buf[3],
                flags: buf[4],
                stream,
                payload: buf[9..9 + len].to_vec(),
            };
            buf.drain(..9 + len);
            if tx.send(event).is_err() {
                return;
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Event::Closed);
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

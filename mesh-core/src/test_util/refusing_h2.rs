//! A raw HTTP/2 server that turns requests away as a test says ([`RefusingH2Server`]): a
//! stream reset with a code of the test's choosing, a `GOAWAY` below the request's stream, or
//! silence, written frame by frame so that each refusal is exactly the one named. Loopback
//! only.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The `RST_STREAM` code that says a stream was refused unprocessed.
pub const REFUSED_STREAM: u32 = 0x7;
/// The `RST_STREAM` code of an internal error (the request may have been processed).
pub const INTERNAL_ERROR: u32 = 0x2;

/// What a [`RefusingH2Server`] does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Act {
    /// Resets the stream with this code.
    Reset(u32),
    /// Sends `GOAWAY` (last stream 0, `NO_ERROR`), then closes the connection.
    GoAway,
    /// Sends `GOAWAY` (last stream 0, `NO_ERROR`) and keeps the connection open, as a server
    /// finishing older streams does, ignoring the streams that come after it.
    GoAwayOpen,
    /// Answers `200` with no body.
    Answer,
    /// Answers nothing more on this connection, `PING`s included, and keeps it open: a peer
    /// behind a network partition, which sends no reset.
    Stall,
}

/// A request as a [`RefusingH2Server`] saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    /// The connection it came on, numbered from 0 in the order they were accepted.
    pub conn: usize,
    /// Its stream.
    pub stream: u32,
}

/// A raw HTTP/2 (prior knowledge) server on 127.0.0.1 that acts on the n-th request it sees by
/// the n-th entry of its plan (the last entry for the rest) and records every request. Stops
/// accepting when dropped.
pub struct RefusingH2Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    accept: JoinHandle<()>,
}

impl RefusingH2Server {
    /// Starts a server following `plan`; an empty plan answers every request.
    pub async fn start(plan: Vec<H2Act>) -> io::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(if plan.is_empty() {
            vec![H2Act::Answer]
        } else {
            plan
        });
        let record = Arc::clone(&seen);
        let accept = tokio::spawn(async move {
            for conn in 0.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(tcp, conn, Arc::clone(&plan), Arc::clone(&record)));
            }
        });
        Ok(Self { addr, seen, accept })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests it has seen, in order (the ones it ignored after a `GOAWAY` not among
    /// them).
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for RefusingH2Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Records `request` and returns what the plan says to do with it (`None` if the record is
/// poisoned by a panicking test).
fn record(seen: &Mutex<Vec<SeenRequest>>, plan: &[H2Act], request: SeenRequest) -> Option<H2Act> {
    let mut seen = seen.lock().ok()?;
    let act = plan[seen.len().min(plan.len() - 1)];
    seen.push(request);
    Some(act)
}

/// One HTTP/2 frame as bytes: a 9-byte header (`payload`'s length, `kind`, `flags`, `stream`)
/// and the payload, which must be under 16 MiB. For tests that write raw frames.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One connection: the preface, then frame by frame until the client closes or the plan closes
/// it.
async fn serve(
    mut tcp: TcpStream,
    conn: usize,
    plan: Arc<Vec<H2Act>>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
) {
    let (mut going_away, mut stalled) = (false, false);
    let mut preface = [0u8; 24];
    if tcp.read_exact(&mut preface).await.is_err() {
        return;
    }
    if tcp.write_all(&h2_frame(SETTINGS, 0, 0, &[])).await.is_err() {
        return;
    }
    loop {
        let mut head = [0u8; 9];
        if tcp.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return;
        }
        let reply = match kind {
            _ if stalled => continue,
            SETTINGS if flags & ACK == 0 => h2_frame(SETTINGS, ACK, 0, &[]),
            PING if flags & ACK == 0 => h2_frame(PING, ACK, 0, &payload),
            // Above the GOAWAY's last stream: ignored, as RFC 9113 §6.8 says.
            HEADERS if going_away => continue,
            HEADERS => {
                let Some(act) = record(&seen, &plan, SeenRequest { conn, stream }) else {
                    return;
                };
                match act {
                    H2Act::Reset(code) => h2_frame(RST_STREAM, 0, stream, &code.to_be_bytes()),
                    // `:status 200` is the static table's entry 8.
                    H2Act::Answer => h2_frame(HEADERS, END_HEADERS | END_STREAM, stream, &[0x88]),
                    H2Act::Stall => {
                        stalled = true;
                        continue;
                    }
                    H2Act::GoAwayOpen => {
                        going_away = true;
                        h2_frame(GOAWAY, 0, 0, &[0; 8])
                    }
                    H2Act::GoAway => {
                        let _ = tcp.write_all(&h2_frame(GOAWAY, 0, 0, &[0; 8])).await;
                        return;
                    }
                }
            }
            _ => continue,
        };
        if tcp.write_all(&reply).await.is_err() {
            return;
        }
    }
}

//! Every performative the endpoint writes goes out with all of its fields, as Event Hubs sends
//! them.
//!
//! AMQP 1.0 lets a peer omit trailing fields that are null or at their default, and a null
//! field means "the default". `fe2o3-amqp`'s encoder does both. The stock Python client
//! (`azure-eventhub` 5.15.1, its `_pyamqp`) indexes performative fields by position and
//! compares them without applying defaults, so a short `flow`, `disposition` or `transfer`
//! (for a transfer, the payload then lands at the wrong index) breaks it. The real service
//! always sends every field, so this layer sits between `fe2o3-amqp` and the socket and
//! rewrites each outgoing performative: missing trailing fields are appended and nulls that
//! have a spec default are replaced by that default (`disposition.last` by `first`). Everything
//! else (protocol headers, empty heartbeat frames, transfer payloads, field values) passes
//! through byte for byte. Reads are not touched.
//!
//! One frame is withheld: the answer to a detach when the peer has already ended that
//! link's session. The Rust client (its `fe2o3-amqp` 0.16.2) detaches its `$cbs` links and
//! ends the session in one go, drops the links at once, and then treats the detach answer
//! for a dropped link as a session error, which makes it close the whole connection
//! ("Session is not found") when the session's End arrives. Ending a session detaches its
//! links, so the answer carries nothing the peer needs.
//!
//! With `RUST_LOG=glucoguard_testkit=trace` every frame in both directions is logged
//! (connection, channel, performative code, length).

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Stop taking more bytes from the encoder while this much rewritten output waits for the
/// socket.
const MAX_BUFFERED_BYTES: usize = 1 << 20;

/// How long an outgoing Detach waits for the peer's End on its session (see `Hold`).
const DETACH_HOLD: std::time::Duration = std::time::Duration::from_millis(50);

/// An outgoing Detach held back, and everything written after it. The Rust client detaches
/// its `$cbs` links and ends their session in one go; whether its End is read before the
/// acceptor answers the Detach is a race, and a Detach that reaches the client after it
/// ended the session makes it close the connection. So a Detach waits, reading ahead, until
/// the peer's End for that session is seen (then it is dropped) or `DETACH_HOLD` passes
/// (then it goes out, as for a peer that waits for it).
#[derive(Default)]
enum Hold {
    #[default]
    None,
    Waiting {
        deadline: tokio::time::Instant,
        timer: Pin<Box<tokio::time::Sleep>>,
    },
    Release,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hold::None => "None",
            Hold::Waiting { .. } => "Waiting",
            Hold::Release => "Release",
        })
    }
}

/// The encoded value of one field's default, or `None` for "no default: keep null".
type Default = Option<&'static [u8]>;

const NULL: &[u8] = &[0x40];
const FALSE: &[u8] = &[0x42];
const UINT_MAX: &[u8] = &[0x70, 0xff, 0xff, 0xff, 0xff];
const USHORT_MAX: &[u8] = &[0x60, 0xff, 0xff];
const SND_SETTLE_MIXED: &[u8] = &[0x50, 0x02];
const RCV_SETTLE_FIRST: &[u8] = &[0x50, 0x00];

/// Marks `disposition.last`, whose default is the value of `first`.
const SAME_AS_FIRST: &[u8] = &[];

/// The fields of each performative (AMQP 1.0 part 2.7 and 5.3), with their defaults.
fn fields_of(frame_type: u8, code: u64) -> Option<&'static [Default]> {
    const N: Default = None;
    Some(match (frame_type, code) {
        // open: container-id, hostname, max-frame-size, channel-max, idle-time-out,
        // outgoing-locales, incoming-locales, offered-, desired-capabilities, properties
        (0, 0x10) => &[N, N, Some(UINT_MAX), Some(USHORT_MAX), N, N, N, N, N, N],
        // begin: remote-channel, next-outgoing-id, incoming-window, outgoing-window,
        // handle-max, offered-, desired-capabilities, properties
        (0, 0x11) => &[N, N, N, N, Some(UINT_MAX), N, N, N],
        // attach: name, handle, role, snd-settle-mode, rcv-settle-mode, source, target,
        // unsettled, incomplete-unsettled, initial-delivery-count, max-message-size,
        // offered-, desired-capabilities, properties
        (0, 0x12) => &[
            N,
            N,
            N,
            Some(SND_SETTLE_MIXED),
            Some(RCV_SETTLE_FIRST),
            N,
            N,
            N,
            Some(FALSE),
            N,
            N,
            N,
            N,
            N,
        ],
        // flow: next-incoming-id, incoming-window, next-outgoing-id, outgoing-window, handle,
        // delivery-count, link-credit, available, drain, echo, properties
        (0, 0x13) => &[N, N, N, N, N, N, N, N, Some(FALSE), Some(FALSE), N],
        // transfer: handle, delivery-id, delivery-tag, message-format, settled, more,
        // rcv-settle-mode, state, resume, aborted, batchable
        (0, 0x14) => &[
            N,
            N,
            N,
            N,
            N,
            Some(FALSE),
            N,
            N,
            Some(FALSE),
            Some(FALSE),
            Some(FALSE),
        ],
        // disposition: role, first, last, settled, state, batchable
        (0, 0x15) => &[N, N, Some(SAME_AS_FIRST), Some(FALSE), N, Some(FALSE)],
        // detach: handle, closed, error
        (0, 0x16) => &[N, Some(FALSE), N],
        // end, close: error
        (0, 0x17) | (0, 0x18) => &[N],
        // sasl-mechanisms, sasl-challenge: one field; sasl-outcome: code, additional-data
        (1, 0x40) | (1, 0x42) => &[N],
        (1, 0x44) => &[N, N],
        _ => return None,
    })
}

/// A socket whose outgoing AMQP performatives are rewritten to carry every field.
#[derive(Debug)]
pub struct FullFrames<S> {
    inner: S,
    /// Bytes from the encoder that do not yet form a whole frame.
    pending: Vec<u8>,
    /// Rewritten bytes not yet written to `inner`, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// Incoming bytes not yet traced (only kept while trace logging is on).
    inbound: Vec<u8>,
    /// Names the connection in trace logs.
    label: u16,
    /// The peer's channel of each session → ours (from the Begin we answered with).
    our_channel: HashMap<u16, u16>,
    /// Our channels whose session the peer has ended (see `ended_by_peer`).
    ended_by_peer: HashSet<u16>,
    /// Our channel → the number the peer sees it as. The acceptor reuses the lowest free
    /// channel, so a session begun right after another ended would go out on the channel the
    /// peer has just seen end; fe2o3-amqp 0.16.2 (the Rust client) can still be tearing that
    /// session down and then closes the connection ("Session is not found"). Each new
    /// session therefore goes out on the next number in turn, as the service's do.
    shown_channel: HashMap<u16, u16>,
    next_shown: u16,
    hold: Hold,
    /// Bytes read ahead from the peer while a Detach is held, already scanned, served to the
    /// next reads first.
    read_ahead: Vec<u8>,
}

impl<S> FullFrames<S> {
    pub fn new(inner: S, label: u16) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            out: Vec::new(),
            written: 0,
            inbound: Vec::new(),
            label,
            our_channel: HashMap::new(),
            ended_by_peer: HashSet::new(),
            shown_channel: HashMap::new(),
            next_shown: 0,
            hold: Hold::None,
            read_ahead: Vec::new(),
        }
    }

    /// Notes the peer's End frames (and traces every incoming frame).
    fn scan_inbound(&mut self, read: &[u8]) {
        self.inbound.extend_from_slice(read);
        let mut start = 0;
        loop {
            let rest = &self.inbound[start..];
            if rest.len() >= 8 && &rest[..4] == b"AMQP" {
                start += 8;
                continue;
            }
            if rest.len() < 4 {
                break;
            }
            let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if size < 8 || rest.len() < size {
                if size < 8 {
                    start = self.inbound.len();
                }
                break;
            }
            let frame = &rest[..size];
            trace_frame(self.label, "<-", frame);
            if performative(frame) == Some((0, 0x17)) {
                let channel = u16::from_be_bytes([frame[6], frame[7]]);
                if let Some(ours) = self.our_channel.remove(&channel) {
                    self.ended_by_peer.insert(ours);
                }
            }
            start += size;
        }
        self.inbound.drain(..start);
    }

    /// Moves every complete frame (or protocol header) from `pending` to `out`.
    fn rewrite_pending(&mut self) {
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            if rest.len() >= 4 && &rest[..4] == b"AMQP" {
                if rest.len() < 8 {
                    break;
                }
                self.out.extend_from_slice(&rest[..8]);
                start += 8;
                continue;
            }
            if rest.len() < 4 {
                break;
            }
            let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if size < 8 || rest.len() < size {
                if size < 8 {
                    // Not a frame this layer understands: pass everything through untouched.
                    self.out.extend_from_slice(rest);
                    start = self.pending.len();
                }
                break;
            }
            let frame = &rest[..size];
            trace_frame(self.label, "->", frame);
            let channel = u16::from_be_bytes([frame[6], frame[7]]);
            let kind = performative(frame);
            match kind {
                Some((0, 0x11)) => {
                    if let Some(peer) = begin_remote_channel(frame) {
                        self.our_channel.insert(peer, channel);
                    }
                    let shown = next_free_shown_channel(&mut self.next_shown, &self.shown_channel);
                    self.shown_channel.insert(channel, shown);
                }
                Some((0, 0x16)) if self.ended_by_peer.contains(&channel) => {
                    // The peer ended this session right after detaching a link: the
                    // session's end detaches the link, so the answer is not sent. The
                    // Rust client's fe2o3-amqp 0.16.2 has already dropped the link and
                    // would close the whole connection over a detach for it.
                    tracing::debug!(channel, "detach after the peer's end not sent");
                    self.hold = Hold::None;
                    start += size;
                    continue;
                }
                Some((0, 0x16)) => match self.hold {
                    Hold::Release => self.hold = Hold::None,
                    Hold::Waiting { .. } => break,
                    Hold::None => {
                        let deadline = tokio::time::Instant::now() + DETACH_HOLD;
                        self.hold = Hold::Waiting {
                            deadline,
                            timer: Box::pin(tokio::time::sleep_until(deadline)),
                        };
                        break;
                    }
                },
                Some((0, 0x17)) => {
                    self.ended_by_peer.remove(&channel);
                }
                _ => {}
            }
            let at = self.out.len();
            match full_frame(frame) {
                Some(rewritten) => self.out.extend_from_slice(&rewritten),
                None => self.out.extend_from_slice(frame),
            }
            // Session frames go out on the channel number the peer knows the session by
            // (connection frames, Open and Close, and SASL frames keep theirs).
            if let Some((0, code)) = kind
                && code != 0x10
                && code != 0x18
                && let Some(&shown) = self.shown_channel.get(&channel)
            {
                self.out[at + 6..at + 8].copy_from_slice(&shown.to_be_bytes());
                if code == 0x17 {
                    self.shown_channel.remove(&channel);
                }
            }
            start += size;
        }
        self.pending.drain(..start);
    }
}

/// The next channel number in turn (0 to 255, then round again) that no live session goes
/// out on (`FullFrames::shown_channel`).
fn next_free_shown_channel(next: &mut u16, shown: &HashMap<u16, u16>) -> u16 {
    loop {
        let n = *next;
        *next = if n >= 255 { 0 } else { n + 1 };
        if !shown.values().any(|&v| v == n) {
            return n;
        }
    }
}

impl<S: AsyncWrite + Unpin> FullFrames<S> {
    /// Writes `out` to the socket until it is empty or the socket is not ready.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FullFrames<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_ahead.is_empty() {
            let n = self.read_ahead.len().min(buf.remaining());
            buf.put_slice(&self.read_ahead[..n]);
            self.read_ahead.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = buf.filled()[before..].to_vec();
        self.scan_inbound(&read);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for FullFrames<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.out.len() - this.written >= MAX_BUFFERED_BYTES {
            ready!(this.poll_drain(cx))?;
        }
        this.pending.extend_from_slice(buf);
        this.rewrite_pending();
        // Push what is ready without waiting; flush writes the rest.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            this.rewrite_pending();
            ready!(this.poll_drain(cx))?;
            if !matches!(this.hold, Hold::Waiting { .. }) {
                break;
            }
            // A Detach is held: read ahead for the peer's End.
            let mut chunk = [0u8; 4096];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.hold = Hold::Release,
                Poll::Ready(Ok(())) => {
                    let bytes = read.filled().to_vec();
                    this.scan_inbound(&bytes);
                    this.read_ahead.extend_from_slice(&bytes);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let Hold::Waiting { deadline, timer } = &mut this.hold else {
                        unreachable!("checked above")
                    };
                    if tokio::time::Instant::now() >= *deadline
                        || timer.as_mut().poll(cx).is_ready()
                    {
                        this.hold = Hold::Release;
                    } else {
                        return Poll::Pending;
                    }
                }
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.pending.is_empty() {
            let rest = std::mem::take(&mut this.pending);
            this.out.extend_from_slice(&rest);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The frame type and performative code of a frame, when it carries a performative.
fn performative(frame: &[u8]) -> Option<(u8, u64)> {
    let doff = *frame.get(4)? as usize * 4;
    let body = frame.get(doff..)?;
    match (body.first()?, body.get(1)?) {
        (0x00, 0x53) => Some((frame[5], *body.get(2)? as u64)),
        (0x00, 0x80) => Some((
            frame[5],
            u64::from_be_bytes(body.get(2..10)?.try_into().ok()?),
        )),
        _ => None,
    }
}

/// The `remote-channel` of a Begin frame (its first field), when set.
fn begin_remote_channel(frame: &[u8]) -> Option<u16> {
    let doff = frame[4] as usize * 4;
    let body = frame.get(doff..)?;
    let list = match body.get(1)? {
        0x53 => body.get(3..)?,
        _ => body.get(10..)?,
    };
    let first = match list.first()? {
        0xc0 => list.get(3..)?,
        0xd0 => list.get(9..)?,
        _ => return None,
    };
    match first.first()? {
        0x60 => Some(u16::from_be_bytes(first.get(1..3)?.try_into().ok()?)),
        _ => None,
    }
}

/// Logs an outgoing frame's channel and performative code at trace level.
fn trace_frame(connection: u16, direction: &str, frame: &[u8]) {
    if tracing::enabled!(tracing::Level::TRACE) && frame.len() > 10 {
        let channel = u16::from_be_bytes([frame[6], frame[7]]);
        let doff = frame[4] as usize * 4;
        let code = frame.get(doff + 2).copied().unwrap_or(0);
        tracing::trace!(
            connection,
            direction,
            channel,
            performative = format_args!("{code:#04x}"),
            len = frame.len(),
            "frame"
        );
    }
}

/// The frame with its performative completed, or `None` to send it unchanged (a heartbeat,
/// an unknown frame, or one this layer cannot parse).
fn full_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let doff = frame[4] as usize * 4;
    let frame_type = frame[5];
    if doff < 8 || frame.len() <= doff {
        return None;
    }
    let body = &frame[doff..];
    // A described list: 0x00, a descriptor (smallulong or ulong code), then the list.
    if body[0] != 0x00 {
        return None;
    }
    let (code, descriptor_len) = match *body.get(1)? {
        0x53 => (*body.get(2)? as u64, 2),
        0x80 => (u64::from_be_bytes(body.get(2..10)?.try_into().ok()?), 9),
        _ => return None,
    };
    let defaults = fields_of(frame_type, code)?;
    let list = &body[1 + descriptor_len..];
    let (items, count, list_len) = match *list.first()? {
        0x45 => (&list[1..1], 0usize, 1usize),
        0xc0 => {
            let size = *list.get(1)? as usize;
            let count = *list.get(2)? as usize;
            (list.get(3..2 + size)?, count, 2 + size)
        }
        0xd0 => {
            let size = u32::from_be_bytes(list.get(1..5)?.try_into().ok()?) as usize;
            let count = u32::from_be_bytes(list.get(5..9)?.try_into().ok()?) as usize;
            (list.get(9..5 + size)?, count, 5 + size)
        }
        _ => return None,
    };
    // Split the items into one encoded value each.
    let mut fields: Vec<&[u8]> = Vec::with_capacity(defaults.len().max(count));
    let mut at = 0;
    for _ in 0..count {
        let len = encoded_len(&items[at..])?;
        fields.push(&items[at..at + len]);
        at += len;
    }
    if at != items.len() {
        return None;
    }
    let payload = &list[list_len..];
    if count >= defaults.len() && fields.iter().zip(defaults).all(|(f, d)| !fills(f, d)) {
        return None;
    }
    let first = fields.get(1).copied().unwrap_or(NULL);
    let mut encoded_items = Vec::with_capacity(items.len() + 32);
    for (i, default) in defaults.iter().enumerate() {
        let value = fields.get(i).copied().unwrap_or(NULL);
        match default {
            Some(d) if value == NULL => {
                encoded_items.extend_from_slice(if d.is_empty() { first } else { d })
            }
            _ => encoded_items.extend_from_slice(value),
        }
    }
    // Fields beyond the ones this layer knows (none today) are kept as they came.
    for value in fields.iter().skip(defaults.len()) {
        encoded_items.extend_from_slice(value);
    }
    let count = defaults.len().max(fields.len());
    let mut out = Vec::with_capacity(frame.len() + 32);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&frame[4..doff]);
    out.extend_from_slice(&body[..1 + descriptor_len]);
    if encoded_items.len() < 255 && count <= 255 {
        out.push(0xc0);
        out.push((encoded_items.len() + 1) as u8);
        out.push(count as u8);
    } else {
        out.push(0xd0);
        out.extend_from_slice(&((encoded_items.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(&(count as u32).to_be_bytes());
    }
    out.extend_from_slice(&encoded_items);
    out.extend_from_slice(payload);
    let size = u32::try_from(out.len()).ok()?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Some(out)
}

/// Whether the rewrite would change this field.
fn fills(field: &[u8], default: &Default) -> bool {
    default.is_some() && field == NULL
}

/// The length of the first encoded AMQP value in `bytes` (constructor included).
fn encoded_len(bytes: &[u8]) -> Option<usize> {
    let constructor = *bytes.first()?;
    if constructor == 0x00 {
        let descriptor = encoded_len(&bytes[1..])?;
        let value = encoded_len(bytes.get(1 + descriptor..)?)?;
        return Some(1 + descriptor + value);
    }
    let len = match constructor >> 4 {
        0x4 => 1,
        0x5 => 2,
        0x6 => 3,
        0x7 => 5,
        0x8 => 9,
        0x9 => 17,
        0xa | 0xc | 0xe => 2 + *bytes.get(1)? as usize,
        0xb | 0xd | 0xf => 5 + u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize,
        _ => return None,
    };
    (bytes.len() >= len).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Wraps a performative body into an AMQP frame on channel 0.
    fn frame(frame_type: u8, body: &[u8]) -> Vec<u8> {
        let mut f = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[2, frame_type, 0, 0]);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_short_flow_gets_every_field_with_its_defaults() {
        // flow with 7 fields: next-incoming-id 0, incoming-window 2048, next-outgoing-id 0,
        // outgoing-window 2048, handle 0, delivery-count 0, link-credit 300.
        let body = [
            0x00, 0x53, 0x13, 0xc0, 0x10, 0x07, 0x43, 0x70, 0, 0, 8, 0, 0x43, 0x70, 0, 0, 8, 0,
            0x43, 0x43, 0x70, 0, 0, 1, 0x2c,
        ];
        // Fix the list size: 1 (count) + 21 bytes of items.
        let mut body = body.to_vec();
        body[4] = (body.len() - 5) as u8;
        let out = full_frame(&frame(0, &body)).expect("rewritten");
        let items = &out[8 + 6..];
        assert_eq!(out[8 + 5], 11, "eleven fields");
        assert_eq!(&items[items.len() - 4..], &[0x40, 0x42, 0x42, 0x40]);
        assert_eq!(
            u32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
            out.len()
        );
    }

    #[test]
    fn a_transfer_keeps_its_payload_after_the_completed_fields() {
        // transfer: handle 0, delivery-id 0, delivery-tag (bin8 1 byte), message-format 0.
        let mut body = vec![0x00, 0x53, 0x14, 0xc0, 0, 4, 0x43, 0x43, 0xa0, 1, 7, 0x43];
        body[4] = (body.len() - 5) as u8;
        let payload = [0x00, 0x53, 0x77, 0xa1, 2, b'h', b'i'];
        body.extend_from_slice(&payload);
        let out = full_frame(&frame(0, &body)).expect("rewritten");
        assert_eq!(out[8 + 5], 11);
        assert!(out.ends_with(&[
            0x40, 0x42, 0x40, 0x40, 0x42, 0x42, 0x42, 0x00, 0x53, 0x77, 0xa1, 2, b'h', b'i'
        ]));
    }

    #[test]
    fn disposition_last_defaults_to_first_and_nulls_get_defaults() {
        // disposition: role true, first 5 (smalluint), last null, settled true.
        let mut body = vec![0x00, 0x53, 0x15, 0xc0, 0, 4, 0x41, 0x52, 5, 0x40, 0x41];
        body[4] = (body.len() - 5) as u8;
        let out = full_frame(&frame(0, &body)).expect("rewritten");
        assert_eq!(&out[8 + 6..], &[0x41, 0x52, 5, 0x52, 5, 0x41, 0x40, 0x42]);
    }

    #[test]
    fn a_complete_performative_and_a_heartbeat_are_left_alone() {
        let mut body = vec![0x00, 0x53, 0x16, 0xc0, 0, 3, 0x43, 0x41, 0x40];
        body[4] = (body.len() - 5) as u8;
        assert_eq!(full_frame(&frame(0, &body)), None);
        assert_eq!(full_frame(&[0, 0, 0, 8, 2, 0, 0, 0]), None);
    }

    #[tokio::test]
    async fn the_writer_rewrites_frames_split_across_writes_and_passes_headers() {
        let mut body = vec![0x00, 0x53, 0x17, 0x45];
        let end = frame(0, &body);
        body.clear();
        let mut input = b"AMQP\x00\x01\x00\x00".to_vec();
        input.extend_from_slice(&end);
        // A stream that writes into a Vec (and reads nothing).
        let mut w = FullFrames::new(tokio::io::join(tokio::io::empty(), Vec::new()), 0);
        for chunk in input.chunks(3) {
            w.write_all(chunk).await.unwrap();
        }
        w.flush().await.unwrap();
        let out = w.inner.into_inner().1;
        assert_eq!(&out[..8], b"AMQP\x00\x01\x00\x00");
        // end with its one field: error null.
        assert_eq!(
            &out[8..],
            &frame(0, &[0x00, 0x53, 0x17, 0xc0, 2, 1, 0x40])[..]
        );
    }
}

//! The WebSocket protocol after the handshake (RFC 6455 §5–§7), sans I/O: client bytes in,
//! events out (whole messages, the peer's pong and close, a protocol failure with its close
//! code); control replies (pong, the close handshake) and the server's own frames out as
//! bytes in [`Machine::out`]. Frame headers are read and written by tungstenite's
//! `FrameHeader`; this module applies the protocol's rules to them.

use std::io::Cursor;
use std::ops::Range;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data as Kind, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Close codes the server sends (RFC 6455 §7.4.1).
pub mod code {
    /// 1000: normal closure.
    pub const NORMAL: u16 = 1000;
    /// 1001: the server is going away (a reload, a stop).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: a protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// 1007: a text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// 1009: a message larger than `websocket_max_message`.
    pub const TOO_BIG: u16 = 1009;
    /// 1011: the app failed.
    pub const INTERNAL: u16 = 1011;
}

/// Longest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL: usize = 125;

/// Where a message's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// In the input given to [`Machine::next`] (a message of one frame), unmasked in place.
    Input(Range<usize>),
    /// Assembled from fragments: [`Machine::message`].
    Assembled,
}

/// What [`Machine::next`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// More input is needed.
    Incomplete,
    /// A control frame was handled (a ping answered in [`Machine::out`]) or a fragment
    /// taken; nothing for the app.
    Handled,
    /// A whole message: text (valid UTF-8) or binary.
    Message {
        /// Text (opcode 1) rather than binary (opcode 2).
        text: bool,
        /// Its bytes.
        payload: Payload,
    },
    /// The peer answered a ping.
    Pong,
    /// The peer sent a close frame (its code, if any); the reply is in [`Machine::out`]
    /// unless the server had sent its close first. The connection ends once `out` is sent.
    Closed(Option<u16>),
    /// The peer broke the protocol: a close frame with this code is in [`Machine::out`]; the
    /// connection ends once it is sent.
    Failed(u16),
}

/// Where the closing handshake stands (RFC 6455 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Messages flow both ways.
    Open,
    /// The server sent a close frame and waits for the peer's.
    Sent,
    /// Both close frames were exchanged (or the peer failed): nothing more is read.
    Done,
}

/// One WebSocket connection's protocol state, server side.
#[derive(Debug)]
pub struct Machine {
    /// `websocket_max_message`: the longest message taken, in bytes.
    max_message: usize,
    /// The fragmented message in progress: its kind, if one is.
    fragmented: Option<bool>,
    /// Its bytes so far.
    message: Vec<u8>,
    /// Bytes of a text message in progress already checked as UTF-8.
    checked: usize,
    /// Of the frame at the start of the input, still arriving: its payload bytes already
    /// unmasked in place, and of those, the bytes checked as UTF-8 (a text frame's, see
    /// [`Machine::check_arriving`]).
    arrived: usize,
    arrived_checked: usize,
    /// Frames to send: control replies and whatever the server queues.
    pub out: Vec<u8>,
    closing: Closing,
    /// The reason in the peer's close frame.
    peer_reason: Vec<u8>,
    /// permessage-deflate was negotiated: a message's first frame may set RSV1.
    deflate: bool,
    /// The message in progress is compressed (its first frame set RSV1).
    compressed: bool,
}

impl Machine {
    /// A connection that takes messages of up to `max_message` bytes.
    pub fn new(max_message: usize) -> Machine {
        Machine {
            max_message,
            fragmented: None,
            message: Vec::new(),
            checked: 0,
            arrived: 0,
            arrived_checked: 0,
            out: Vec::new(),
            closing: Closing::Open,
            peer_reason: Vec::new(),
            deflate: false,
            compressed: false,
        }
    }

    /// permessage-deflate was negotiated (RFC 7692): compressed messages are taken.
    pub fn with_deflate(mut self) -> Machine {
        self.deflate = true;
        self
    }

    /// Where the closing handshake stands.
    pub fn closing(&self) -> Closing {
        self.closing
    }

    /// The reason the peer's close frame gave (empty before it, or without one).
    pub fn peer_reason(&self) -> &[u8] {
        &self.peer_reason
    }

    /// The message assembled from fragments ([`Payload::Assembled`]).
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Drops the assembled message once the app has had it.
    pub fn message_taken(&mut self) {
        self.message.clear();
        self.checked = 0;
        if self.message.capacity() > 64 * 1024 {
            self.message = Vec::new();
        }
    }

    /// Reads the next frame at the start of `input` (client bytes, unmasked in place, also
    /// the part of a text frame that arrived so far): the bytes it used (to be dropped from
    /// the input once the event is dealt with) and what it was. After
    /// [`Event::Incomplete`] the input must come back with the same start and more bytes.
    pub fn next(&mut self, input: &mut [u8]) -> (usize, Event) {
        if self.closing == Closing::Done {
            return (input.len(), Event::Handled);
        }
        let mut cursor = Cursor::new(&input[..]);
        let (header, length) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return (0, Event::Incomplete),
            Err(_) => return (0, self.fail(code::PROTOCOL)),
        };
        let start = cursor.position() as usize;
        let limit = match header.opcode {
            OpCode::Control(_) => MAX_CONTROL,
            OpCode::Data(_) => self.max_message - self.message.len().min(self.max_message),
        };
        if let Some(failure) = self.check_header(&header) {
            return (0, self.fail(failure));
        }
        if length > limit as u64 {
            let failure = match header.opcode {
                OpCode::Control(_) => code::PROTOCOL,
                OpCode::Data(_) => code::TOO_BIG,
            };
            return (0, self.fail(failure));
        }
        let end = start + length as usize;
        if input.len() < end {
            if let OpCode::Data(kind) = header.opcode {
                if !self.check_arriving(kind, &header, &mut input[start..]) {
                    return (0, self.fail(code::INVALID_DATA));
                }
            }
            return (0, Event::Incomplete);
        }
        if let Some(mask) = header.mask {
            unmask(&mut input[start + self.arrived..end], mask, self.arrived);
        }
        (self.arrived, self.arrived_checked) = (0, 0);
        let event = match header.opcode {
            OpCode::Control(control) => self.control(control, &input[start..end]),
            OpCode::Data(kind) => {
                if kind != Kind::Continue {
                    self.compressed = header.rsv1;
                }
                self.data(kind, header.is_final, input, start..end)
            }
        };
        (end, event)
    }

    /// A protocol failure in `header` alone (its close code), before its payload is read.
    fn check_header(&self, header: &FrameHeader) -> Option<u16> {
        // RSV1 marks a compressed message's first frame (RFC 7692 §6), nothing else.
        let rsv1_allowed =
            self.deflate && matches!(header.opcode, OpCode::Data(Kind::Text | Kind::Binary));
        if header.mask.is_none() || (header.rsv1 && !rsv1_allowed) || header.rsv2 || header.rsv3 {
            return Some(code::PROTOCOL);
        }
        match header.opcode {
            OpCode::Control(_) if !header.is_final => Some(code::PROTOCOL),
            OpCode::Data(Kind::Continue) if self.fragmented.is_none() => Some(code::PROTOCOL),
            OpCode::Data(Kind::Text | Kind::Binary) if self.fragmented.is_some() => {
                Some(code::PROTOCOL)
            }
            _ => None,
        }
    }

    fn control(&mut self, control: Control, payload: &[u8]) -> Event {
        match control {
            Control::Ping => {
                if self.closing == Closing::Open {
                    frame(&mut self.out, OpCode::Control(Control::Pong), payload);
                }
                Event::Handled
            }
            Control::Pong => Event::Pong,
            Control::Close => self.peer_closed(payload),
            Control::Reserved(_) => self.fail(code::PROTOCOL),
        }
    }

    /// The peer's close frame (RFC 6455 §5.5.1, §7.4): a code the protocol allows and a UTF-8
    /// reason, echoed back unless the server's close went first.
    fn peer_closed(&mut self, payload: &[u8]) -> Event {
        let code = match payload {
            [] => None,
            [_] => return self.fail(code::PROTOCOL),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                if !CloseCode::from(code).is_allowed() || code < 1000 {
                    return self.fail(code::PROTOCOL);
                }
                if std::str::from_utf8(reason).is_err() {
                    return self.fail(code::INVALID_DATA);
                }
                self.peer_reason = reason.to_vec();
                Some(code)
            }
        };
        if self.closing == Closing::Open {
            let echo = code.map(u16::to_be_bytes);
            frame(
                &mut self.out,
                OpCode::Control(Control::Close),
                echo.as_ref().map_or(&[][..], |c| &c[..]),
            );
        }
        self.closing = Closing::Done;
        Event::Closed(code)
    }

    fn data(&mut self, kind: Kind, fin: bool, input: &[u8], payload: Range<usize>) -> Event {
        let text = match kind {
            Kind::Text => true,
            Kind::Binary => false,
            Kind::Continue => self.fragmented.unwrap_or(false),
            Kind::Reserved(_) => return self.fail(code::PROTOCOL),
        };
        if self.compressed {
            return self.compressed_data(text, fin, &input[payload]);
        }
        if fin && self.fragmented.is_none() {
            // A message of one frame: handed over where it lies.
            if text && std::str::from_utf8(&input[payload.clone()]).is_err() {
                return self.fail(code::INVALID_DATA);
            }
            return Event::Message {
                text,
                payload: Payload::Input(payload),
            };
        }
        self.fragmented = Some(text);
        self.message.extend_from_slice(&input[payload]);
        if text && !self.utf8_so_far(fin) {
            return self.fail(code::INVALID_DATA);
        }
        if !fin {
            return Event::Handled;
        }
        self.fragmented = None;
        Event::Message {
            text,
            payload: Payload::Assembled,
        }
    }

    /// A frame of a compressed message: its bytes are kept until the last frame, then the
    /// message is inflated (at most `websocket_max_message` bytes: 1009 past it; 1007 for
    /// data that is not deflate) and, for text, checked as UTF-8.
    fn compressed_data(&mut self, text: bool, fin: bool, payload: &[u8]) -> Event {
        self.fragmented = Some(text);
        self.message.extend_from_slice(payload);
        if !fin {
            return Event::Handled;
        }
        self.fragmented = None;
        self.compressed = false;
        let mut inflated = Vec::new();
        match super::deflate::inflate_message(&self.message, &mut inflated, self.max_message) {
            Ok(()) => {}
            Err(super::deflate::InflateError::TooBig) => return self.fail(code::TOO_BIG),
            Err(super::deflate::InflateError::Corrupt) => return self.fail(code::INVALID_DATA),
        }
        if text && std::str::from_utf8(&inflated).is_err() {
            return self.fail(code::INVALID_DATA);
        }
        self.message = inflated;
        Event::Message {
            text,
            payload: Payload::Assembled,
        }
    }

    /// Fails fast (false) on invalid UTF-8 in a text frame still arriving (RFC 6455 §8.1):
    /// unmasks the payload bytes that came since the last look (`arrived`) and checks them
    /// as far as whole characters go. Compressed frames wait for inflation, and a
    /// continuation whose message has a character cut at the previous fragment's end is
    /// checked when the frame is complete.
    fn check_arriving(&mut self, kind: Kind, header: &FrameHeader, payload: &mut [u8]) -> bool {
        let text = match kind {
            Kind::Text => !header.rsv1,
            Kind::Continue => self.fragmented == Some(true) && !self.compressed,
            _ => false,
        };
        let Some(mask) = header
            .mask
            .filter(|_| text && self.checked == self.message.len())
        else {
            return true;
        };
        unmask(&mut payload[self.arrived..], mask, self.arrived);
        self.arrived = payload.len();
        match std::str::from_utf8(&payload[self.arrived_checked..]) {
            Ok(_) => self.arrived_checked = payload.len(),
            Err(e) if e.error_len().is_some() => return false,
            Err(e) => self.arrived_checked += e.valid_up_to(),
        }
        true
    }

    /// Checks the text message in progress as far as it goes: a character cut at the end
    /// of a fragment is fine unless the message ends there (RFC 6455 §8.1: fail fast).
    fn utf8_so_far(&mut self, fin: bool) -> bool {
        match std::str::from_utf8(&self.message[self.checked..]) {
            Ok(_) => {
                self.checked = self.message.len();
                true
            }
            Err(e) => {
                self.checked += e.valid_up_to();
                e.error_len().is_none() && !fin
            }
        }
    }

    /// Queues a close frame with `failure` and ends the connection.
    fn fail(&mut self, failure: u16) -> Event {
        if self.closing == Closing::Open {
            frame(
                &mut self.out,
                OpCode::Control(Control::Close),
                &failure.to_be_bytes(),
            );
        }
        self.closing = Closing::Done;
        Event::Failed(failure)
    }

    /// Starts the closing handshake from the server's side with `code` and `reason` (cut to
    /// fit a control frame); false if it had started already.
    pub fn close(&mut self, code: u16, reason: &[u8]) -> bool {
        if self.closing != Closing::Open {
            return false;
        }
        let mut payload = [0u8; MAX_CONTROL];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let reason = &reason[..reason.len().min(MAX_CONTROL - 2)];
        payload[2..2 + reason.len()].copy_from_slice(reason);
        frame(
            &mut self.out,
            OpCode::Control(Control::Close),
            &payload[..2 + reason.len()],
        );
        self.closing = Closing::Sent;
        true
    }

    /// Queues a ping with `payload` (at most [`MAX_CONTROL`] bytes).
    pub fn ping(&mut self, payload: &[u8]) {
        if self.closing == Closing::Open {
            let payload = &payload[..payload.len().min(MAX_CONTROL)];
            frame(&mut self.out, OpCode::Control(Control::Ping), payload);
        }
    }
}

/// Appends one unfragmented, unmasked frame (the server's, RFC 6455 §5.1) of `opcode` with
/// `payload` to `out`.
pub fn frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    frame_with(out, opcode, payload, false);
}

/// [`frame`] with RSV1 set when `compressed` (a permessage-deflate message, RFC 7692 §6).
pub fn frame_with(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], compressed: bool) {
    let header = FrameHeader {
        is_final: true,
        rsv1: compressed,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Unmasks part of a client frame's payload in place, `payload` starting at octet `offset`
/// of the frame's (RFC 6455 §5.3: octet i XOR mask[i mod 4]).
fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mask: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: FIN, opcode, masked with a fixed mask.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Messages as (text, bytes).
    type Messages = Vec<(bool, Vec<u8>)>;

    /// Feeds `input` whole; returns the events, the messages and what the machine would send.
    fn run(max: usize, input: &[u8]) -> (Vec<Event>, Messages, Vec<u8>) {
        let mut m = Machine::new(max);
        let mut buf = input.to_vec();
        let (mut events, mut messages) = (Vec::new(), Vec::new());
        loop {
            let (used, event) = m.next(&mut buf);
            if let Event::Message { text, payload } = &event {
                let bytes = match payload {
                    Payload::Input(r) => buf[r.clone()].to_vec(),
                    Payload::Assembled => m.message().to_vec(),
                };
                messages.push((*text, bytes));
                m.message_taken();
            }
            let stop = matches!(
                event,
                Event::Incomplete | Event::Closed(_) | Event::Failed(_)
            );
            events.push(event);
            buf.drain(..used);
            if stop {
                return (events, messages, m.out);
            }
        }
    }

    #[test]
    fn messages_whole_and_fragmented_with_a_ping_between() {
        let mut input = client(true, 1, b"Hello");
        input.extend(client(false, 2, b"ab"));
        input.extend(client(true, 9, b"p"));
        input.extend(client(true, 0, b"cd"));
        input.extend(client(true, 8, &1000u16.to_be_bytes()));
        let (events, messages, out) = run(1 << 20, &input);
        assert_eq!(
            messages,
            vec![(true, b"Hello".to_vec()), (false, b"abcd".to_vec())]
        );
        assert_eq!(events.last(), Some(&Event::Closed(Some(1000))));
        // The pong, then the echoed close.
        assert_eq!(out, [&[0x8a, 1, b'p'][..], &[0x88, 2, 0x03, 0xe8]].concat());
    }

    #[test]
    fn protocol_errors_close_with_their_codes() {
        let failed = |input: Vec<u8>| run(1000, &input).0.last().cloned();
        let unmasked = vec![0x81, 1, b'x'];
        assert_eq!(failed(unmasked), Some(Event::Failed(code::PROTOCOL)));
        assert_eq!(
            failed(client(true, 3, b"")),
            Some(Event::Failed(code::PROTOCOL))
        );
        assert_eq!(
            failed(client(true, 0, b"x")),
            Some(Event::Failed(code::PROTOCOL))
        );
        assert_eq!(
            failed(client(false, 9, b"x")),
            Some(Event::Failed(code::PROTOCOL))
        );
        assert_eq!(
            failed(client(true, 9, &[0; 126])),
            Some(Event::Failed(code::PROTOCOL))
        );
        assert_eq!(
            failed(client(true, 2, &[0; 1001])),
            Some(Event::Failed(code::TOO_BIG))
        );
        let mut rsv = client(true, 1, b"x");
        rsv[0] |= 0x40;
        assert_eq!(failed(rsv), Some(Event::Failed(code::PROTOCOL)));
        let mut two_starts = client(false, 1, b"a");
        two_starts.extend(client(true, 1, b"b"));
        assert_eq!(failed(two_starts), Some(Event::Failed(code::PROTOCOL)));
        assert_eq!(
            failed(client(true, 1, b"\xff")),
            Some(Event::Failed(code::INVALID_DATA))
        );
        assert_eq!(
            failed(client(true, 8, &[3])),
            Some(Event::Failed(code::PROTOCOL))
        );
        assert_eq!(
            failed(client(true, 8, &1005u16.to_be_bytes())),
            Some(Event::Failed(code::PROTOCOL))
        );
        assert_eq!(
            failed(client(true, 8, &[3, 232, 0xff])),
            Some(Event::Failed(code::INVALID_DATA))
        );
        // The close frame that fails the connection.
        let (_, _, out) = run(1000, &client(true, 1, b"\xff"));
        assert_eq!(out, [0x88, 2, 0x03, 0xef]);
    }

    #[test]
    fn invalid_utf8_split_across_fragments_fails_at_the_fragment() {
        // "é" is C3 A9: cut between fragments it is fine; C3 followed by 28 is not.
        let mut good = client(false, 1, b"caf\xc3");
        good.extend(client(true, 0, b"\xa9!"));
        assert_eq!(run(100, &good).1, vec![(true, "café!".as_bytes().to_vec())]);
        let mut bad = client(false, 1, b"caf\xc3");
        bad.extend(client(false, 0, b"\x28"));
        bad.extend(client(true, 0, b"never read"));
        let (events, _, _) = run(100, &bad);
        assert_eq!(
            events,
            vec![Event::Handled, Event::Failed(code::INVALID_DATA)]
        );
        // A message may not end inside a character.
        let mut cut = client(false, 1, b"caf");
        cut.extend(client(true, 0, b"\xc3"));
        assert_eq!(
            run(100, &cut).0.last(),
            Some(&Event::Failed(code::INVALID_DATA))
        );
    }

    #[test]
    fn invalid_utf8_in_a_frame_still_arriving_fails_before_the_rest() {
        let frame = client(true, 1, b"caf\xc3\xa9 \xff and the rest, never sent");
        // Header (2) and mask (4), then "caf" and half of "é": fine so far.
        let mut m = Machine::new(100);
        let mut buf = frame[..10].to_vec();
        assert_eq!(m.next(&mut buf), (0, Event::Incomplete));
        // The rest of "é", a space, then 0xFF: never UTF-8, whatever follows.
        buf.extend_from_slice(&frame[10..13]);
        assert_eq!(m.next(&mut buf), (0, Event::Failed(code::INVALID_DATA)));
        assert_eq!(m.out, [0x88, 2, 0x03, 0xef]);
        // The same bytes with valid text after them: one message, unmasked once.
        let good = client(true, 1, "café ü, and the rest".as_bytes());
        let mut m = Machine::new(100);
        let mut buf = Vec::new();
        for piece in good.chunks(3) {
            buf.extend_from_slice(piece);
            let (_, event) = m.next(&mut buf);
            if let Event::Message {
                payload: Payload::Input(r),
                ..
            } = event
            {
                assert_eq!(&buf[r], "café ü, and the rest".as_bytes());
                return;
            }
            assert_eq!(event, Event::Incomplete);
        }
        panic!("the message never came");
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_messages() {
        let mut input = client(true, 1, b"one");
        input.extend(client(true, 1, "çà et là, ünïcödé ".repeat(40).as_bytes()));
        input.extend(client(false, 2, &[7; 300]));
        input.extend(client(true, 0, &[8; 70000]));
        let whole = run(1 << 20, &input).1;
        for cut in [1, 2, 5, 10, 300, 320, 70000] {
            let mut m = Machine::new(1 << 20);
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for piece in input.chunks(cut) {
                buf.extend_from_slice(piece);
                loop {
                    let (used, event) = m.next(&mut buf);
                    if let Event::Message { payload, .. } = &event {
                        got.push(match payload {
                            Payload::Input(r) => buf[r.clone()].to_vec(),
                            Payload::Assembled => m.message().to_vec(),
                        });
                        m.message_taken();
                    }
                    buf.drain(..used);
                    if event == Event::Incomplete {
                        break;
                    }
                }
            }
            let expected: Vec<Vec<u8>> = whole.iter().map(|(_, b)| b.clone()).collect();
            assert_eq!(got, expected, "cut {cut}");
        }
    }

    #[test]
    fn the_servers_close_waits_for_the_peers() {
        let mut m = Machine::new(100);
        assert!(m.close(code::GOING_AWAY, b"restarting"));
        assert!(!m.close(code::NORMAL, b""));
        assert_eq!(&m.out[..4], &[0x88, 12, 0x03, 0xe9]);
        m.out.clear();
        let mut reply = client(true, 8, &1001u16.to_be_bytes());
        assert_eq!(m.next(&mut reply).1, Event::Closed(Some(1001)));
        assert!(m.out.is_empty(), "no second close frame");
        assert_eq!(m.closing(), Closing::Done);
    }
}

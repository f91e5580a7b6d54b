//! The terminal protocol of the API (issue 12, docs/terminal.md): after
//! `GET /v1/runs/{id}/terminal` is upgraded (`Upgrade: moat-terminal`), both
//! sides exchange binary frames on the same Unix socket connection:
//!
//! ```text
//! kind: u8 | length: u32 (big-endian) | payload: `length` bytes
//! ```
//!
//! The client's first frame is [`Open`]. Frames, messages and codec, used
//! by the daemon's server and the typed client alike.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use moat_core::RunState;
use moat_core::TerminalSize;
use moat_core::logs::Stream;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The `Upgrade` header's protocol name.
pub const UPGRADE_PROTOCOL: &str = "moat-terminal";
/// Largest payload accepted in one frame.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Largest input chunk a client sends in one frame.
pub const MAX_INPUT_CHUNK: usize = 64 * 1024;

/// What the client asks for, in its first frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "open")]
pub enum Open {
    /// Join the run's terminal: a repaint of its screen, then live output.
    /// `take_input` moves the input to this client; otherwise it gets the
    /// input only when nobody holds it (and `watch` is false).
    Attach {
        #[serde(default)]
        take_input: bool,
        #[serde(default)]
        watch: bool,
        /// The client's terminal size (applied when it holds the input).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<TerminalSize>,
    },
    /// Run a command in the run's container with this connection as its
    /// terminal (a TTY of `size`) or its pipes (`size` is `None`).
    Exec {
        command: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<TerminalSize>,
        /// Run it as the run's own command runs (`moat join`); otherwise as
        /// the container's user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        as_agent: Option<AgentExec>,
    },
}

/// A second agent started in a live run (`moat join`): it runs as the run's
/// user, with its variables (placeholders, never a credential) and its home
/// files staged first where the home has none of that name yet (the first
/// agent's own files are kept).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentExec {
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub home_files: Vec<crate::wire::HomeFile>,
}

/// How the program on the other end ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exit {
    pub state: RunState,
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One frame, either way.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    // client → daemon
    Open(Open),
    /// Keystrokes (ignored unless this client holds the input).
    Input(Bytes),
    Resize(TerminalSize),
    /// End of input: the program's stdin is closed.
    Eof,
    /// Asks for a repaint of the current screen.
    Redraw,
    /// Moves the input to this client.
    TakeInput,
    // daemon → client
    Output(Stream, Bytes),
    /// The current screen, to draw over whatever the client shows.
    Repaint(Bytes),
    /// A line for the user (e.g. "another client took the input").
    Notice(String),
    /// Whether this client now holds the input.
    HoldsInput(bool),
    Exit(Exit),
    /// The session could not go on (e.g. the runtime refused the exec).
    Error(String),
}

mod kind {
    pub const OPEN: u8 = 0x01;
    pub const INPUT: u8 = 0x02;
    pub const RESIZE: u8 = 0x03;
    pub const EOF: u8 = 0x04;
    pub const REDRAW: u8 = 0x05;
    pub const TAKE_INPUT: u8 = 0x06;
    pub const OUTPUT: u8 = 0x81;
    pub const REPAINT: u8 = 0x82;
    pub const NOTICE: u8 = 0x83;
    pub const HOLDS_INPUT: u8 = 0x84;
    pub const EXIT: u8 = 0x85;
    pub const ERROR: u8 = 0x86;
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("terminal connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("terminal connection: frame of {0} bytes is larger than {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("terminal connection: malformed frame (kind {kind:#04x}): {detail}")]
    Malformed { kind: u8, detail: String },
}

fn stream_tag(stream: Stream) -> u8 {
    match stream {
        Stream::Tty => 0,
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}

fn tag_stream(tag: u8) -> Option<Stream> {
    match tag {
        0 => Some(Stream::Tty),
        1 => Some(Stream::Stdout),
        2 => Some(Stream::Stderr),
        _ => None,
    }
}

impl Frame {
    /// The frame as bytes on the wire.
    pub fn encode(&self) -> Bytes {
        let (kind, payload): (u8, Bytes) = match self {
            Frame::Open(open) => (kind::OPEN, json(open)),
            Frame::Input(data) => (kind::INPUT, data.clone()),
            Frame::Resize(size) => {
                let mut payload = BytesMut::with_capacity(4);
                payload.put_u16(size.rows);
                payload.put_u16(size.cols);
                (kind::RESIZE, payload.freeze())
            }
            Frame::Eof => (kind::EOF, Bytes::new()),
            Frame::Redraw => (kind::REDRAW, Bytes::new()),
            Frame::TakeInput => (kind::TAKE_INPUT, Bytes::new()),
            Frame::Output(stream, data) => {
                let mut payload = BytesMut::with_capacity(1 + data.len());
                payload.put_u8(stream_tag(*stream));
                payload.put_slice(data);
                (kind::OUTPUT, payload.freeze())
            }
            Frame::Repaint(data) => (kind::REPAINT, data.clone()),
            Frame::Notice(text) => (kind::NOTICE, Bytes::from(text.clone().into_bytes())),
            Frame::HoldsInput(holds) => (kind::HOLDS_INPUT, Bytes::from(vec![u8::from(*holds)])),
            Frame::Exit(exit) => (kind::EXIT, json(exit)),
            Frame::Error(text) => (kind::ERROR, Bytes::from(text.clone().into_bytes())),
        };
        let mut frame = BytesMut::with_capacity(5 + payload.len());
        frame.put_u8(kind);
        frame.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        frame.put_slice(&payload);
        frame.freeze()
    }

    fn decode(kind: u8, mut payload: Bytes) -> Result<Frame, FrameError> {
        let malformed = |detail: &str| FrameError::Malformed {
            kind,
            detail: detail.to_string(),
        };
        Ok(match kind {
            kind::OPEN => Frame::Open(from_json(kind, &payload)?),
            kind::INPUT => Frame::Input(payload),
            kind::RESIZE if payload.len() == 4 => Frame::Resize(TerminalSize {
                rows: payload.get_u16(),
                cols: payload.get_u16(),
            }),
            kind::EOF => Frame::Eof,
            kind::REDRAW => Frame::Redraw,
            kind::TAKE_INPUT => Frame::TakeInput,
            kind::OUTPUT if !payload.is_empty() => {
                let stream = tag_stream(payload.get_u8()).ok_or_else(|| malformed("unknown stream"))?;
                Frame::Output(stream, payload)
            }
            kind::REPAINT => Frame::Repaint(payload),
            kind::NOTICE => Frame::Notice(String::from_utf8_lossy(&payload).into_owned()),
            kind::HOLDS_INPUT if payload.len() == 1 => Frame::HoldsInput(payload[0] != 0),
            kind::EXIT => Frame::Exit(from_json(kind, &payload)?),
            kind::ERROR => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
            _ => return Err(malformed("unknown kind or wrong length")),
        })
    }
}

fn json(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn from_json<T: serde::de::DeserializeOwned>(kind: u8, payload: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(|e| FrameError::Malformed {
        kind,
        detail: e.to_string(),
    })
}

/// Reads one frame; `None` when the peer closed the connection between
/// frames.
pub async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; 5];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    reader.read_exact(&mut header[1..]).await?;
    let mut length = &header[1..];
    let length = length.get_u32() as usize;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(length));
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    Frame::decode(header[0], Bytes::from(payload)).map(Some)
}

/// Writes one frame and flushes it.
pub async fn write_frame(writer: &mut (impl AsyncWrite + Unpin), frame: &Frame) -> Result<(), FrameError> {
    writer.write_all(&frame.encode()).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(frame: Frame) -> Frame {
        let bytes = frame.encode();
        let mut reader = &bytes[..];
        read_frame(&mut reader).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn every_frame_survives_the_wire() {
        let size = TerminalSize { rows: 50, cols: 132 };
        let frames = vec![
            Frame::Open(Open::Attach {
                take_input: true,
                watch: false,
                size: Some(size),
            }),
            Frame::Open(Open::Exec {
                command: vec!["bash".into()],
                size: None,
                as_agent: None,
            }),
            Frame::Open(Open::Exec {
                command: vec!["claude".into()],
                size: Some(size),
                as_agent: Some(AgentExec {
                    env: vec![("DISABLE_AUTOUPDATER".into(), "1".into())],
                    home_files: vec![crate::wire::HomeFile {
                        path: ".claude.json".into(),
                        mode: 0o600,
                        contents: "{}".into(),
                    }],
                }),
            }),
            Frame::Input(Bytes::from_static(b"\x1f\x03ls\r")),
            Frame::Resize(size),
            Frame::Eof,
            Frame::Redraw,
            Frame::TakeInput,
            Frame::Output(Stream::Stderr, Bytes::from_static(b"\xff\x00x")),
            Frame::Output(Stream::Tty, Bytes::new()),
            Frame::Repaint(Bytes::from_static(b"\x1b[H")),
            Frame::Notice("hello".into()),
            Frame::HoldsInput(true),
            Frame::Exit(Exit {
                state: RunState::Exited,
                exit_code: Some(3),
                failure: None,
            }),
            Frame::Error("no".into()),
        ];
        for frame in frames {
            assert_eq!(round_trip(frame.clone()).await, frame);
        }
    }

    #[tokio::test]
    async fn oversized_and_unknown_frames_are_refused() {
        let mut big = vec![kind::INPUT];
        big.extend_from_slice(&((MAX_FRAME_BYTES as u32) + 1).to_be_bytes());
        assert!(matches!(read_frame(&mut &big[..]).await, Err(FrameError::TooLarge(_))));
        let unknown = [0x7f, 0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut &unknown[..]).await,
            Err(FrameError::Malformed { .. })
        ));
        let empty: [u8; 0] = [];
        assert!(read_frame(&mut &empty[..]).await.unwrap().is_none());
    }
}

//! The few messages of the ssh-agent protocol moat speaks
//! (draft-miller-ssh-agent): framing, listing identities and signing. The
//! daemon's per-run agent parses what a container asks with these, and both
//! the CLI (at grant time) and the daemon (when forwarding a signature)
//! talk to the host's agent with them. Nothing here holds a private key.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `SSH_AGENT_FAILURE`: the answer to everything moat does not serve.
pub const FAILURE: u8 = 5;
/// `SSH_AGENTC_REQUEST_IDENTITIES`.
pub const REQUEST_IDENTITIES: u8 = 11;
/// `SSH_AGENT_IDENTITIES_ANSWER`.
pub const IDENTITIES_ANSWER: u8 = 12;
/// `SSH_AGENTC_SIGN_REQUEST`.
pub const SIGN_REQUEST: u8 = 13;
/// `SSH_AGENT_SIGN_RESPONSE`.
pub const SIGN_RESPONSE: u8 = 14;
/// The largest message accepted either way (OpenSSH's agent uses 256 KiB).
pub const MAX_MESSAGE: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("malformed ssh-agent message: {0}")]
    Malformed(&'static str),
    #[error("ssh-agent message of {0} bytes is larger than {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("ssh-agent at {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("ssh-agent at {} refused to {what}", path.display())]
    Refused { path: PathBuf, what: &'static str },
}

/// One key an agent holds: its public blob and comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub blob: Vec<u8>,
    pub comment: String,
}

/// A request a client sends to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Identities,
    Sign {
        key_blob: Vec<u8>,
        data: Vec<u8>,
        flags: u32,
    },
    /// Any other message type (adding, removing, locking, extensions…).
    Other(u8),
}

/// Reads SSH wire fields from a message body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, AgentError> {
        let (&first, rest) = self.0.split_first().ok_or(AgentError::Malformed("empty message"))?;
        self.0 = rest;
        Ok(first)
    }

    fn u32(&mut self) -> Result<u32, AgentError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8], AgentError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], AgentError> {
        if self.0.len() < len {
            return Err(AgentError::Malformed("truncated field"));
        }
        let (field, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(field)
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The message `payload` with its length prefix, ready to write.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(payload.len() + 4);
    put_string(&mut framed, payload);
    framed
}

/// The payload length a 4-byte prefix announces, refused when too large.
pub fn announced_len(prefix: [u8; 4]) -> Result<usize, AgentError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_MESSAGE {
        return Err(AgentError::TooLarge(len));
    }
    if len == 0 {
        return Err(AgentError::Malformed("empty message"));
    }
    Ok(len)
}

/// What a client's message (without its length prefix) asks for.
pub fn parse_request(payload: &[u8]) -> Result<Request, AgentError> {
    let mut reader = Reader(payload);
    match reader.u8()? {
        REQUEST_IDENTITIES => Ok(Request::Identities),
        SIGN_REQUEST => Ok(Request::Sign {
            key_blob: reader.string()?.to_vec(),
            data: reader.string()?.to_vec(),
            flags: reader.u32()?,
        }),
        other => Ok(Request::Other(other)),
    }
}

/// The payload of `request` as a client sends it.
pub fn encode_request(request: &Request) -> Vec<u8> {
    match request {
        Request::Identities => vec![REQUEST_IDENTITIES],
        Request::Sign { key_blob, data, flags } => {
            let mut out = vec![SIGN_REQUEST];
            put_string(&mut out, key_blob);
            put_string(&mut out, data);
            out.extend_from_slice(&flags.to_be_bytes());
            out
        }
        Request::Other(kind) => vec![*kind],
    }
}

/// `SSH_AGENT_IDENTITIES_ANSWER` listing `identities`.
pub fn identities_answer(identities: &[Identity]) -> Vec<u8> {
    let mut out = vec![IDENTITIES_ANSWER];
    out.extend_from_slice(&(identities.len() as u32).to_be_bytes());
    for identity in identities {
        put_string(&mut out, &identity.blob);
        put_string(&mut out, identity.comment.as_bytes());
    }
    out
}

/// The identities an agent's answer lists.
pub fn parse_identities_answer(payload: &[u8]) -> Result<Vec<Identity>, AgentError> {
    let mut reader = Reader(payload);
    if reader.u8()? != IDENTITIES_ANSWER {
        return Err(AgentError::Malformed("not an identities answer"));
    }
    let count = reader.u32()?;
    let mut identities = Vec::new();
    for _ in 0..count {
        identities.push(Identity {
            blob: reader.string()?.to_vec(),
            comment: String::from_utf8_lossy(reader.string()?).into_owned(),
        });
    }
    Ok(identities)
}

/// `SSH_AGENT_FAILURE`.
pub fn failure() -> Vec<u8> {
    vec![FAILURE]
}

/// The identities of the agent at `socket` (blocking, every read and write
/// bounded by `timeout`).
pub fn list_identities(socket: &Path, timeout: Duration) -> Result<Vec<Identity>, AgentError> {
    let io_error = |source| AgentError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io_error)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    stream
        .write_all(&frame(&encode_request(&Request::Identities)))
        .map_err(io_error)?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).map_err(io_error)?;
    let mut payload = vec![0u8; announced_len(prefix)?];
    stream.read_exact(&mut payload).map_err(io_error)?;
    if payload.first() == Some(&FAILURE) {
        return Err(AgentError::Refused {
            path: socket.to_path_buf(),
            what: "list its keys",
        });
    }
    parse_identities_answer(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_types_are_other() {
        let sign = Request::Sign {
            key_blob: b"blob".to_vec(),
            data: b"session data".to_vec(),
            flags: 2,
        };
        for request in [Request::Identities, sign, Request::Other(17)] {
            assert_eq!(parse_request(&encode_request(&request)).unwrap(), request);
        }
    }

    #[test]
    fn identities_round_trip() {
        let keys = vec![
            Identity {
                blob: vec![1, 2, 3],
                comment: "first".into(),
            },
            Identity {
                blob: vec![4],
                comment: String::new(),
            },
        ];
        assert_eq!(parse_identities_answer(&identities_answer(&keys)).unwrap(), keys);
    }

    #[test]
    fn truncated_and_oversized_messages_are_refused() {
        let mut truncated = encode_request(&Request::Sign {
            key_blob: vec![9; 10],
            data: vec![],
            flags: 0,
        });
        truncated.truncate(8);
        assert!(parse_request(&truncated).is_err());
        assert!(parse_request(&[]).is_err());
        assert!(announced_len((MAX_MESSAGE as u32 + 1).to_be_bytes()).is_err());
        assert!(announced_len([0; 4]).is_err());
        assert_eq!(announced_len(5u32.to_be_bytes()).unwrap(), 5);
    }
}

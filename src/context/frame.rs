//! The framing between the supervisor and a context's driver: a 4-byte big-endian length, then
//! that many bytes of UTF-8 JSON (one object). The driver runs the cell's code, so everything it
//! sends is hostile input: a frame over the cap, or one that is not a JSON object, ends the
//! context; nothing it sends can make the supervisor allocate beyond the cap.

use std::io;

/// The largest frame either side accepts. A result (a PNG, an HTML table) also counts against
/// the run's output cap; this bounds what is read before that check.
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// Why a frame from the driver was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum FrameError {
    #[error("the context's driver sent a frame of {0} bytes (the limit is {MAX_FRAME})")]
    TooLarge(usize),
    #[error("the context's driver sent a frame that is not a JSON object: {0}")]
    Invalid(String),
}

/// Encodes one frame.
pub(crate) fn encode(msg: &serde_json::Value) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("a JSON value serialises");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Accumulates bytes read from the driver and yields complete frames.
#[derive(Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub(crate) fn next(
        &mut self,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let parsed = serde_json::from_slice::<serde_json::Value>(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        match parsed {
            Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
            Ok(other) => Err(FrameError::Invalid(format!("a JSON {}", kind(&other)))),
            Err(e) => Err(FrameError::Invalid(e.to_string())),
        }
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Sends a whole frame on a blocking socket, without SIGPIPE when the driver is gone (the
/// embedding program may not ignore it).
pub(crate) fn send(
    sock: &std::os::unix::net::UnixStream,
    msg: &serde_json::Value,
) -> io::Result<()> {
    let bytes = encode(msg);
    let mut sent = 0;
    while sent < bytes.len() {
        match rustix::net::send(sock, &bytes[sent..], rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_round_trip_in_pieces() {
        let a = encode(&json!({"ev": "ready", "pid": 7}));
        let b = encode(&json!({"ev": "done", "id": 1}));
        let mut d = Decoder::default();
        let all: Vec<u8> = a.iter().chain(&b).copied().collect();
        let mut got = Vec::new();
        for chunk in all.chunks(3) {
            d.push(chunk);
            while let Some(m) = d.next().unwrap() {
                got.push(m["ev"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(got, ["ready", "done"]);
    }

    #[test]
    fn hostile_frames_are_refused() {
        let mut d = Decoder::default();
        d.push(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert_eq!(d.next(), Err(FrameError::TooLarge(MAX_FRAME + 1)));
        let mut d = Decoder::default();
        d.push(&[0, 0, 0, 3, b'[', b']', b' ']);
        assert_eq!(d.next(), Err(FrameError::Invalid("a JSON array".into())));
        let mut d = Decoder::default();
        d.push(&[0, 0, 0, 2, 0xff, b'{']);
        assert!(matches!(d.next(), Err(FrameError::Invalid(_))));
    }
}

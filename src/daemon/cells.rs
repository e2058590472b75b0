//! How a cell of a stateful context looks on the wire: the answer's JSON, and the NDJSON
//! lines streamed while it runs. Every facade (native, `/run_jupyter`, the seed clients) starts
//! from these.

use hyper::body::Bytes;
use serde_json::{json, Value};

use super::admission::Counted;
use super::http::line;
use crate::{CellStatus, Event, Execution};

impl Counted for Execution {
    fn outcome_name(&self) -> &'static str {
        status_name(self.status)
    }
}

pub(crate) fn status_name(s: CellStatus) -> &'static str {
    match s {
        CellStatus::Ok => "ok",
        CellStatus::Error => "error",
        CellStatus::Timeout => "timeout",
        CellStatus::Interrupted => "interrupted",
        CellStatus::Died => "died",
    }
}

/// The native answer for a cell.
pub(crate) fn answer(e: &Execution, context_id: &str) -> Value {
    json!({
        "status": status_name(e.status),
        "stdout": e.stdout,
        "stderr": e.stderr,
        "stdout_truncated": e.stdout_truncated,
        "stderr_truncated": e.stderr_truncated,
        "text": e.text,
        "results": e.results,
        "error": e.error,
        "execution_count": e.execution_count,
        "context_id": context_id,
        "context_restarted": e.context_restarted,
        "wall_ms": e.wall_ms,
    })
}

/// Output arrives in chunks that may split a UTF-8 character: the incomplete tail waits for
/// the next chunk, so text stays text. Bytes that are not UTF-8 at all go as base64.
#[derive(Default)]
pub(crate) struct Utf8Carry {
    tail: Vec<u8>,
}

impl Utf8Carry {
    /// The chunk as `{"text": ...}` or `{"b64": ...}` fields (None: nothing complete yet).
    pub(crate) fn take(&mut self, chunk: &[u8]) -> Option<(&'static str, String)> {
        self.tail.extend_from_slice(chunk);
        let bytes = std::mem::take(&mut self.tail);
        match std::str::from_utf8(&bytes) {
            Ok(s) => Some(("text", s.to_string())),
            Err(e) if e.error_len().is_none() => {
                let (done, rest) = bytes.split_at(e.valid_up_to());
                self.tail = rest.to_vec();
                (!done.is_empty()).then(|| {
                    (
                        "text",
                        String::from_utf8(done.to_vec()).expect("valid prefix"),
                    )
                })
            }
            Err(_) => {
                use base64::Engine;
                Some((
                    "b64",
                    base64::engine::general_purpose::STANDARD.encode(&bytes),
                ))
            }
        }
    }
}

/// The NDJSON line of an event (None: a partial character, held for the next chunk).
pub(crate) fn event_line(ev: &Event<'_>, carry: &mut [Utf8Carry; 2]) -> Option<Bytes> {
    let v = match ev {
        Event::Stdout(b) | Event::Stderr(b) => {
            let (i, kind) = match ev {
                Event::Stdout(_) => (0, "stdout"),
                _ => (1, "stderr"),
            };
            let (field, value) = carry[i].take(b)?;
            json!({"type": kind, field: value})
        }
        Event::Result(r) => json!({"type": "result", "data": r.data, "main": r.main}),
        Event::Error(e) => {
            json!({"type": "error", "name": e.name, "value": e.value, "traceback": e.traceback})
        }
    };
    Some(line(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_tail() {
        let mut c = Utf8Carry::default();
        let e = "é".as_bytes();
        assert_eq!(c.take(&[b'a', e[0]]), Some(("text", "a".into())));
        assert_eq!(c.take(&e[1..]), Some(("text", "é".into())));
        assert_eq!(c.take(&[0xff, b'x']).unwrap().0, "b64");
    }
}

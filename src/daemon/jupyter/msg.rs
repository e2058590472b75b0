//! Jupyter messaging 5.x as the websocket's default protocol carries it: one JSON text frame
//! per message (`header`, `parent_header`, `metadata`, `content`, `buffers`, `channel`). What
//! a kernel sends in answer to each request, built from a cell's events and its `Execution`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::{CellError, CellStatus, DisplayData, Execution};

/// The protocol version the kernel speaks.
pub(crate) const PROTOCOL_VERSION: &str = "5.3";

/// A request as a client sent it, checked for the fields every answer needs.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) header: Value,
    pub(crate) msg_type: String,
    pub(crate) channel: String,
    pub(crate) content: Value,
}

/// Why a frame is not a Jupyter message (the connection is closed with this reason).
pub(crate) fn parse(text: &str) -> Result<Incoming, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("a frame is not JSON: {e}"))?;
    let header = v
        .get("header")
        .filter(|h| h.is_object())
        .ok_or("a message has no header object")?
        .clone();
    let msg_type = header
        .get("msg_type")
        .and_then(Value::as_str)
        .ok_or("a message's header has no msg_type")?
        .to_string();
    let channel = v
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or("shell")
        .to_string();
    if !matches!(channel.as_str(), "shell" | "control" | "stdin" | "iopub") {
        return Err(format!("unknown channel {channel:?}"));
    }
    let content = v.get("content").cloned().unwrap_or_else(|| json!({}));
    if !content.is_object() {
        return Err("a message's content is not an object".into());
    }
    Ok(Incoming {
        header,
        msg_type,
        channel,
        content,
    })
}

/// Builds the messages a kernel sends: ids unique within the kernel's session.
pub(crate) struct Sender {
    session: String,
    next: AtomicU64,
}

impl Sender {
    pub(crate) fn new(session: String) -> Sender {
        Sender {
            session,
            next: AtomicU64::new(0),
        }
    }

    /// One message on `channel` answering `parent` (a request's header).
    pub(crate) fn msg(
        &self,
        channel: &str,
        msg_type: &str,
        parent: &Value,
        content: Value,
    ) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}_{n}", self.session);
        json!({
            "header": {
                "msg_id": id,
                "msg_type": msg_type,
                "username": "rsandbox",
                "session": self.session,
                "date": iso8601(SystemTime::now()),
                "version": PROTOCOL_VERSION,
            },
            "msg_id": id,
            "msg_type": msg_type,
            "parent_header": parent,
            "metadata": {},
            "content": content,
            "buffers": [],
            "channel": channel,
        })
        .to_string()
    }

    /// `status` on iopub: `busy`, `idle`, `restarting`, `dead`.
    pub(crate) fn status(&self, parent: &Value, state: &str) -> String {
        self.msg("iopub", "status", parent, json!({"execution_state": state}))
    }
}

/// `kernel_info_reply`'s content.
pub(crate) fn kernel_info() -> Value {
    json!({
        "status": "ok",
        "protocol_version": PROTOCOL_VERSION,
        "implementation": "rsandbox",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {
            "name": "python",
            "version": "3",
            "mimetype": "text/x-python",
            "file_extension": ".py",
            "pygments_lexer": "ipython3",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "nbconvert_exporter": "python",
        },
        "banner": "rsandbox: a stateful Python context in a sandbox",
        "help_links": [],
        "debugger": false,
    })
}

/// The iopub message of a result: the cell's value (`execute_result`) or display data.
pub(crate) fn result(d: &DisplayData, count: u64) -> (&'static str, Value) {
    if d.main {
        (
            "execute_result",
            json!({"execution_count": count, "data": d.data, "metadata": {}}),
        )
    } else {
        (
            "display_data",
            json!({"data": d.data, "metadata": {}, "transient": {}}),
        )
    }
}

/// An error's content (iopub `error`, and the reply's fields): the traceback as lines.
pub(crate) fn error(e: &CellError) -> Value {
    let lines: Vec<&str> = e.traceback.lines().collect();
    json!({"ename": e.name, "evalue": e.value, "traceback": lines})
}

/// The error a cell that ended without one of its own reports (its interpreter died).
pub(crate) fn status_error(e: &Execution) -> Option<CellError> {
    let (name, value) = match e.status {
        CellStatus::Died => (
            "DeadKernelError",
            "the interpreter died; the next cell starts with a fresh namespace",
        ),
        CellStatus::Timeout => (
            "TimeoutError",
            "the cell ran past the daemon's maximum run time",
        ),
        CellStatus::Interrupted => ("KeyboardInterrupt", "the cell was interrupted"),
        _ => return None,
    };
    Some(CellError {
        name: name.into(),
        value: value.into(),
        traceback: format!("{name}: {value}"),
    })
}

/// `execute_reply`'s content for a cell that ran.
pub(crate) fn execute_reply(e: &Execution) -> Value {
    match e.error.clone().or_else(|| status_error(e)) {
        None => json!({
            "status": "ok",
            "execution_count": e.execution_count,
            "user_expressions": {},
            "payload": [],
        }),
        Some(err) => {
            let mut v = error(&err);
            v["status"] = json!("error");
            v["execution_count"] = json!(e.execution_count);
            v
        }
    }
}

/// `t` as Jupyter writes times: `2024-05-01T12:00:00.000000Z`.
pub(crate) fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_iso8601() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_714_564_800_000_123);
        assert_eq!(iso8601(t), "2024-05-01T12:00:00.000123Z");
        assert_eq!(
            iso8601(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn frames_that_are_not_messages_are_named() {
        assert!(parse("{").unwrap_err().contains("not JSON"));
        assert!(parse("{}").unwrap_err().contains("no header"));
        assert!(parse(r#"{"header": {}}"#).unwrap_err().contains("msg_type"));
        assert!(parse(r#"{"header": {"msg_type": "x"}, "channel": "hb2"}"#)
            .unwrap_err()
            .contains("channel"));
        let m = parse(r#"{"header": {"msg_type": "kernel_info_request"}, "channel": "shell"}"#)
            .unwrap();
        assert_eq!(
            (m.msg_type.as_str(), m.channel.as_str()),
            ("kernel_info_request", "shell")
        );
    }
}

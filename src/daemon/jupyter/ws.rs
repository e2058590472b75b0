//! A kernel's websocket (`/api/kernels/{id}/channels`): hyper hands the upgraded connection
//! to tokio-tungstenite, which does the framing. Shell requests run one after another in a
//! task of their own, so that control requests (interrupt, shutdown) are answered while a
//! cell runs; every message to the client goes through one writer. A frame that is not a
//! Jupyter message closes the connection with a close frame that says why (1007), a binary
//! frame (the v1 protocol, buffers) with 1003; the kernel lives on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::msg::{self, Sender};
use super::{failure, shut_down, Kernel};
use crate::daemon::admission::in_slot;
use crate::daemon::cells::Utf8Carry;
use crate::daemon::http::{whole, Body};
use crate::daemon::server::Ctx;
use crate::Event;

/// Answers the upgrade request with 101 and serves the websocket once hyper lets go of the
/// connection; anything but a websocket handshake is 400.
pub(super) fn upgrade(ctx: Arc<Ctx>, k: Arc<Kernel>, mut req: Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let wants = h
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = h.get(SEC_WEBSOCKET_KEY).filter(|_| wants) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "this is a kernel's websocket: connect with a websocket client (Upgrade: websocket)",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let session = crate::daemon::http::query(&req, "session_id")
        .and_then(Result::ok)
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .unwrap_or_else(|| format!("{}-kernel", k.id()));
    let on = hyper::upgrade::on(&mut req);
    let max = ctx.config.max_body;
    tokio::spawn(async move {
        let Ok(up) = on.await else { return };
        let cfg = WebSocketConfig {
            max_message_size: Some(max),
            max_frame_size: Some(max),
            ..Default::default()
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, Some(cfg)).await;
        serve(ctx, k, ws, session).await;
    });
    let mut r = Response::new(whole(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        hs.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// What the reader hands the writer: a message, or a close with its reason.
enum Out {
    Text(String),
    Close(CloseCode, String),
}

/// Counts an open websocket on its kernel (and as activity of its session) until dropped.
struct Connected(Arc<Kernel>, Option<crate::daemon::session::InUse>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
        self.1.take();
    }
}

async fn serve<S>(ctx: Arc<Ctx>, k: Arc<Kernel>, ws: WebSocketStream<S>, session: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    k.connections.fetch_add(1, Ordering::SeqCst);
    let _connected = Connected(k.clone(), k.session.begin());
    let (mut sink, mut frames) = ws.split();
    let (out, mut rx) = mpsc::channel::<Out>(256);
    let writer = tokio::spawn(async move {
        while let Some(o) = rx.recv().await {
            let sent = match o {
                Out::Text(t) => sink.send(Message::Text(t)).await,
                Out::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let tx = Arc::new(Sender::new(session));
    let (shell, shell_rx) = mpsc::unbounded_channel::<msg::Incoming>();
    let worker = tokio::spawn(shell_worker(
        ctx.clone(),
        k.clone(),
        tx.clone(),
        out.clone(),
        shell_rx,
    ));
    while let Some(frame) = frames.next().await {
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                let _ = out
                    .send(Out::Close(
                        CloseCode::Unsupported,
                        "binary frames (the v1.kernel.websocket.jupyter.org protocol, buffers) \
                         are not supported: send JSON text frames"
                            .into(),
                    ))
                    .await;
                break;
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let m = match msg::parse(&text) {
            Ok(m) => m,
            Err(why) => {
                let mut why = format!("malformed Jupyter message: {why}");
                // A close frame's reason is at most 123 bytes.
                while why.len() > 120 {
                    why.pop();
                }
                let _ = out.send(Out::Close(CloseCode::Invalid, why)).await;
                break;
            }
        };
        if m.channel == "control" {
            if !control(&ctx, &k, &tx, &out, m).await {
                break;
            }
        } else if shell.send(m).is_err() {
            break;
        }
    }
    drop(shell);
    worker.abort();
    drop(out);
    let _ = writer.await;
}

/// Answers a control request; false: the kernel was shut down (the connection ends).
async fn control(
    ctx: &Ctx,
    k: &Arc<Kernel>,
    tx: &Sender,
    out: &mpsc::Sender<Out>,
    m: msg::Incoming,
) -> bool {
    let send = |t: String| out.send(Out::Text(t));
    match m.msg_type.as_str() {
        "interrupt_request" => {
            let c = k.context.clone();
            let _ = tokio::task::spawn_blocking(move || c.interrupt()).await;
            let _ = send(tx.msg(
                "control",
                "interrupt_reply",
                &m.header,
                json!({"status": "ok"}),
            ))
            .await;
        }
        "shutdown_request" => {
            let restart = m.content["restart"].as_bool().unwrap_or(false);
            if restart {
                let c = k.context.clone();
                let _ = tokio::task::spawn_blocking(move || c.restart()).await;
            }
            let reply = json!({"status": "ok", "restart": restart});
            let _ = send(tx.msg("control", "shutdown_reply", &m.header, reply.clone())).await;
            // Clients wait for it on iopub too (jupyter_client's shutdown).
            let _ = send(tx.msg("iopub", "shutdown_reply", &m.header, reply)).await;
            if !restart {
                let _ = send(tx.status(&m.header, "dead")).await;
                shut_down(ctx, k.id()).await;
                let _ = out
                    .send(Out::Close(CloseCode::Normal, "kernel shut down".into()))
                    .await;
                return false;
            }
            let _ = send(tx.status(&m.header, "idle")).await;
        }
        "kernel_info_request" => {
            let _ = send(tx.msg(
                "control",
                "kernel_info_reply",
                &m.header,
                msg::kernel_info(),
            ))
            .await;
        }
        // A kernel ignores requests it does not know (the messaging spec).
        _ => {}
    }
    true
}

/// Runs the shell requests of one connection in order.
async fn shell_worker(
    ctx: Arc<Ctx>,
    k: Arc<Kernel>,
    tx: Arc<Sender>,
    out: mpsc::Sender<Out>,
    mut rx: mpsc::UnboundedReceiver<msg::Incoming>,
) {
    while let Some(m) = rx.recv().await {
        let reply = |t: &str, content: Value| Out::Text(tx.msg("shell", t, &m.header, content));
        let content = match m.msg_type.as_str() {
            "execute_request" => {
                execute(&ctx, &k, &tx, &out, &m).await;
                continue;
            }
            "kernel_info_request" => ("kernel_info_reply", msg::kernel_info()),
            "complete_request" => {
                let at = m.content["cursor_pos"].as_u64().unwrap_or(0);
                (
                    "complete_reply",
                    json!({"status": "ok", "matches": [], "cursor_start": at,
                    "cursor_end": at, "metadata": {}}),
                )
            }
            "inspect_request" => (
                "inspect_reply",
                json!({"status": "ok", "found": false, "data": {}, "metadata": {}}),
            ),
            "is_complete_request" => ("is_complete_reply", json!({"status": "unknown"})),
            "comm_info_request" => ("comm_info_reply", json!({"status": "ok", "comms": {}})),
            "history_request" => ("history_reply", json!({"status": "ok", "history": []})),
            _ => continue,
        };
        let _ = out.send(Out::Text(tx.status(&m.header, "busy"))).await;
        let _ = out.send(reply(content.0, content.1)).await;
        let _ = out.send(Out::Text(tx.status(&m.header, "idle"))).await;
    }
}

/// One `execute_request`: busy, `execute_input`, the cell's output as it comes, the reply,
/// idle. The cell takes a daemon slot; its timeout is the daemon's maximum run time (a kernel
/// has none of its own: clients interrupt).
async fn execute(
    ctx: &Arc<Ctx>,
    k: &Arc<Kernel>,
    tx: &Arc<Sender>,
    out: &mpsc::Sender<Out>,
    m: &msg::Incoming,
) {
    let parent = m.header.clone();
    let _ = out.send(Out::Text(tx.status(&parent, "busy"))).await;
    // The count this cell will have (the context's own count is known when it ends).
    let count = k.count.load(Ordering::SeqCst) + 1;
    let Some(code) = m.content["code"].as_str().map(str::to_string) else {
        let e = crate::CellError {
            name: "ValueError".into(),
            value: "execute_request's content has no code string".into(),
            traceback: "ValueError: execute_request's content has no code string".into(),
        };
        let mut v = msg::error(&e);
        v["status"] = json!("error");
        v["execution_count"] = json!(0);
        let _ = out
            .send(Out::Text(tx.msg("shell", "execute_reply", &parent, v)))
            .await;
        let _ = out.send(Out::Text(tx.status(&parent, "idle"))).await;
        return;
    };
    let _ = out
        .send(Out::Text(tx.msg(
            "iopub",
            "execute_input",
            &parent,
            json!({"code": code, "execution_count": count}),
        )))
        .await;
    let Some(in_use) = k.session.begin() else {
        let _ = out.send(Out::Text(tx.status(&parent, "dead"))).await;
        return;
    };
    let c = k.context.clone();
    let (events, sender, p) = (out.clone(), tx.clone(), parent.clone());
    let timeout = ctx.config.max.timeout;
    let ran = in_slot(ctx, Instant::now(), move |cancel, done| {
        let mut carry = [Utf8Carry::default(), Utf8Carry::default()];
        let emit = |t: String| {
            if events.blocking_send(Out::Text(t)).is_err() {
                cancel.cancel();
            }
        };
        let r = c.execute(&code, Some(timeout), Some(cancel), &mut |ev| match ev {
            Event::Stdout(b) | Event::Stderr(b) => {
                let (i, name) = match ev {
                    Event::Stdout(_) => (0, "stdout"),
                    _ => (1, "stderr"),
                };
                // Bytes that are not UTF-8 (base64 on the native API): a stream message is
                // text, so they go as replacement characters.
                let text = match carry[i].take(b) {
                    Some(("text", t)) => t,
                    Some(_) => String::from_utf8_lossy(b).into_owned(),
                    None => return,
                };
                emit(sender.msg("iopub", "stream", &p, json!({"name": name, "text": text})));
            }
            Event::Result(d) => {
                let (t, content) = msg::result(d, count);
                emit(sender.msg("iopub", t, &p, content));
            }
            Event::Error(e) => emit(sender.msg("iopub", "error", &p, msg::error(e))),
        });
        let _ = done.send(r);
    })
    .await;
    drop(in_use);
    let content = match ran.0 {
        Ok(e) => {
            k.count.store(e.execution_count, Ordering::SeqCst);
            if e.error.is_none() {
                if let Some(err) = msg::status_error(&e) {
                    let _ = out
                        .send(Out::Text(tx.msg(
                            "iopub",
                            "error",
                            &parent,
                            msg::error(&err),
                        )))
                        .await;
                }
            }
            msg::execute_reply(&e)
        }
        Err(f) => {
            let why = match f {
                crate::daemon::admission::Failed::Refused(r) => {
                    crate::daemon::admission::refusal_message(&r).to_string()
                }
                crate::daemon::admission::Failed::Engine(e) => e.to_string(),
            };
            let e = crate::CellError {
                name: "RuntimeError".into(),
                value: why.clone(),
                traceback: format!("RuntimeError: {why}"),
            };
            let _ = out
                .send(Out::Text(tx.msg("iopub", "error", &parent, msg::error(&e))))
                .await;
            let mut v = msg::error(&e);
            v["status"] = json!("error");
            v["execution_count"] = json!(0);
            v
        }
    };
    let _ = out
        .send(Out::Text(tx.msg(
            "shell",
            "execute_reply",
            &parent,
            content,
        )))
        .await;
    let _ = out.send(Out::Text(tx.status(&parent, "idle"))).await;
}

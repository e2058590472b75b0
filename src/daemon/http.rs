//! Request and response helpers shared by every endpoint: JSON answers and the error shapes
//! (the native `{"error": ...}`, FastAPI's `{"detail": ...}`), 503 with Retry-After, reading a
//! body within the size limit, reading and checking a JSON body, and URL decoding.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::error::RequestError;
use crate::Error;

/// Every answer's body: built whole ([`whole`]), or streamed line by line ([`ndjson`]).
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// A body sent whole.
pub(crate) fn whole(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub(crate) fn json<T: serde::Serialize>(code: StatusCode, v: &T) -> Response<Body> {
    let mut r = Response::new(whole(serde_json::to_vec(v).expect("serializable")));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"error": {"status": N, "stage": ..., "message": ...}}`.
pub(crate) fn error(code: StatusCode, stage: &str, message: impl Into<String>) -> Response<Body> {
    json(
        code,
        &serde_json::json!({"error": {"status": code.as_u16(), "stage": stage, "message": message.into()}}),
    )
}

/// FastAPI's shape for a malformed request, which SandboxFusion clients know.
pub(crate) fn unprocessable(message: impl Into<String>) -> Response<Body> {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({"detail": [{"loc": ["body"], "msg": message.into(), "type": "value_error"}]}),
    )
}

/// 503 with `Retry-After: 1`.
pub(crate) fn unavailable(stage: &str, message: &str) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, stage, message);
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

/// 422 with the native API's error shape.
pub(crate) fn request_error(message: impl Into<String>) -> Response<Body> {
    error(StatusCode::UNPROCESSABLE_ENTITY, "request", message)
}

pub(crate) fn method_not_allowed(m: &Method, path: &str) -> Response<Body> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "request",
        format!("{m} is not allowed on {path}"),
    )
}

pub(crate) fn no_endpoint(path: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "request",
        format!("no endpoint {path} (see api/openapi.yaml)"),
    )
}

/// An engine error as an HTTP answer: the request's fault is a 422, the host's a 500.
pub(crate) fn engine_error(e: &Error) -> Response<Body> {
    let code = match e {
        Error::Invalid { .. } | Error::Path { .. } | Error::Exec { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        // GPUs that exist but stayed busy for the daemon's whole GPU wait: try again later.
        Error::Gpu(g) if g.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        // No GPU here, more than exist, an unknown index: the request cannot ever be met.
        Error::Gpu(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, e.stage(), e.to_string())
}

/// Reads the whole body, at most `max` bytes; `Err` is the answer to send instead.
pub(crate) async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Response<Body>> {
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request",
            format!("the body is over this daemon's limit of {max} bytes"),
        )
    };
    if declared_length(&req).is_some_and(|len| len > max as u64) {
        return Err(too_big());
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_big())
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "request",
            format!("reading the body: {e}"),
        )),
    }
}

/// The request's `Content-Length`, when it has a readable one.
fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a JSON body (an empty one is `{}`, at most `max` bytes) and checks it: 400 for bad
/// JSON, 422 for wrong fields or what `check` refuses.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned, U>(
    req: Request<Incoming>,
    max: usize,
    check: impl FnOnce(T) -> Result<U, RequestError>,
) -> Result<U, Response<Body>> {
    let body = read_body(req, max).await?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &body[..]
    };
    let t = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            request_error(e.to_string())
        } else {
            error(
                StatusCode::BAD_REQUEST,
                "request",
                format!("malformed JSON: {e}"),
            )
        }
    })?;
    check(t).map_err(|e| request_error(e.to_string()))
}

/// A streamed answer: one JSON object per line, each sent as it is produced. The body ends
/// when every sender is gone; when the client goes away the receiver is dropped, which the
/// producer sees as a failed send (and [`Lines::closed`]).
pub(crate) fn ndjson(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Lines(rx)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Whether the request asks for a streamed answer (`Accept: application/x-ndjson`).
pub(crate) fn wants_ndjson(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().starts_with("application/x-ndjson"))
        })
}

/// One JSON value as an NDJSON line.
pub(crate) fn line<T: serde::Serialize>(v: &T) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("serializable");
    b.push(b'\n');
    Bytes::from(b)
}

/// The body of [`ndjson`]: each received chunk is one frame.
struct Lines(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Decodes `%XX` escapes of a URL path or query value (`+` stays as it is).
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of `name` in the request's query string, decoded (`Err`: the raw value, which
/// does not decode).
pub(crate) fn query<'a>(req: &'a Request<Incoming>, name: &str) -> Option<Result<String, &'a str>> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v).ok_or(v))
    })
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b/c%2Fd").as_deref(), Some("a b/c/d"));
        assert_eq!(percent_decode("..%2f..").as_deref(), Some("../.."));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}

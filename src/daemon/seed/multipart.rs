//! Just enough `multipart/form-data` (RFC 7578) for AI Computer's upload: the boundary from
//! the Content-Type, then each part's name, filename and bytes.

/// A form field.
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) data: Vec<u8>,
}

/// Why a body is not a form.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormError {
    #[error("multipart body: {0}")]
    Malformed(&'static str),
}

/// The boundary of a `multipart/form-data` Content-Type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty()).then(|| v.to_string())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The quoted (or bare) value of `key=` in a Content-Disposition header.
fn param(header: &str, key: &str) -> Option<String> {
    header.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The parts of a form body.
pub(crate) fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, FormError> {
    let delim = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delim).ok_or(FormError::Malformed("no boundary"))? + delim.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let rest = rest
            .strip_prefix(b"\r\n")
            .ok_or(FormError::Malformed("a boundary without its line end"))?;
        let head_end =
            find(rest, b"\r\n\r\n").ok_or(FormError::Malformed("a part without headers"))?;
        let head = std::str::from_utf8(&rest[..head_end])
            .map_err(|_| FormError::Malformed("headers that are not UTF-8"))?;
        let content = &rest[head_end + 4..];
        let mut next = b"\r\n".to_vec();
        next.extend_from_slice(&delim);
        let end = find(content, &next).ok_or(FormError::Malformed("a part without its end"))?;
        let disposition = head
            .split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then_some(v)
            })
            .ok_or(FormError::Malformed("a part without Content-Disposition"))?;
        parts.push(Part {
            name: param(disposition, "name").unwrap_or_default(),
            filename: param(disposition, "filename"),
            data: content[..end].to_vec(),
        });
        at = body.len() - content.len() + end + next.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse() {
        let b = boundary("multipart/form-data; boundary=\"xyz\"").unwrap();
        assert_eq!(b, "xyz");
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhi\r\nthere\r\n--xyz\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/workspace\r\n--xyz--\r\n";
        let p = parse(body, &b).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].filename.as_deref()),
            ("file", Some("a.txt"))
        );
        assert_eq!(p[0].data, b"hi\r\nthere");
        assert_eq!(p[1].data, b"/workspace");
        assert!(parse(b"garbage", "xyz").is_err());
        assert!(parse(b"--xyz\r\nno end", "xyz").is_err());
        assert!(boundary("application/json").is_none());
    }
}

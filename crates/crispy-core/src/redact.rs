//! Removing credentials from text before it is shown anywhere.

use std::borrow::Cow;

/// Replaces the user-info part of every URL in `text` (`scheme://user:pass@host`) with `***`,
/// giving `scheme://***@host`. Text without credentials is returned unchanged (borrowed).
///
/// ```
/// use crispy_core::redact::redact_urls;
/// assert_eq!(redact_urls("rtsp://admin:hunter2@10.0.0.5:554/s1 failed"),
///            "rtsp://***@10.0.0.5:554/s1 failed");
/// assert_eq!(redact_urls("no urls here"), "no urls here");
/// ```
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The URL ends at whitespace, a quote or the end of the text. Its user info runs to the
        // LAST '@' in it: passwords may (wrongly, but people do it) hold '/', '?', '#' or '@'.
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`')
            .unwrap_or(tail.len());
        let url = &tail[..end];
        match url.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_url_and_keeps_the_rest() {
        let cases = [
            ("rtsp://u:p@h/x", "rtsp://***@h/x"),
            ("rtsp://user@h:554", "rtsp://***@h:554"),
            (
                "a rtsp://u:p@h/x and rtsp://v:q@g/y.",
                "a rtsp://***@h/x and rtsp://***@g/y.",
            ),
            ("'rtsp://u:p%40x@h/'", "'rtsp://***@h/'"),
            ("rtsp://h/path@thing", "rtsp://***@thing"),
            ("rtsp://admin:pa/ss@cam/s x", "rtsp://***@cam/s x"),
            ("rtsp://admin:p?w#d@cam/s", "rtsp://***@cam/s"),
            ("mail me@example.com", "mail me@example.com"),
            ("rtsp://u:p@h", "rtsp://***@h"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_urls(input), want, "{input}");
        }
    }

    #[test]
    fn a_password_with_an_at_sign_is_removed_whole() {
        let out = redact_urls("rtsp://admin:p@ss@cam/stream");
        assert!(
            !out.contains("p@ss") && !out.contains("ss@cam") || out == "rtsp://***@cam/stream",
            "{out}"
        );
        assert_eq!(out, "rtsp://***@cam/stream");
    }
}

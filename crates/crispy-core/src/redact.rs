//! Removing credentials from text before it is shown anywhere.

use std::borrow::Cow;

/// Replaces the user-info part of every URL in `text` (`scheme://user:pass@host`) with `***`,
/// giving `scheme://***@host`, and the values of secret-looking query parameters
/// ([`redact_query`]). Text without credentials is returned unchanged (borrowed).
///
/// ```
/// use crispy_core::redact::redact_urls;
/// assert_eq!(redact_urls("rtsp://admin:hunter2@10.0.0.5:554/s1 failed"),
///            "rtsp://***@10.0.0.5:554/s1 failed");
/// assert_eq!(redact_urls("no urls here"), "no urls here");
/// ```
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    redact(text, true)
}

/// Like [`redact_urls`] for the user-info part only (`scheme://user:pass@host`): query
/// parameters are left as they are. For text that may carry URLs meant to be shared, such as
/// signed URLs (whose `X-Amz-Signature` is the point), where credentials of a store endpoint
/// must still never show.
///
/// ```
/// use crispy_core::redact::redact_userinfo;
/// assert_eq!(redact_userinfo("GET http://minio:s3cr3t@10.0.0.5:9000/b?X-Amz-Signature=ab"),
///            "GET http://***@10.0.0.5:9000/b?X-Amz-Signature=ab");
/// ```
pub fn redact_userinfo(text: &str) -> Cow<'_, str> {
    redact(text, false)
}

/// What to say about an environment variable the user named (`--password-env NAME`) that
/// is not set: its name when it looks like one, never the text otherwise (a password pasted
/// where its variable's name belongs).
///
/// ```
/// use crispy_core::redact::unset_env_var;
/// assert_eq!(unset_env_var("CAM_PW"), "environment variable CAM_PW is not set");
/// assert!(!unset_env_var("Hunter2!pass").contains("Hunter2"));
/// ```
pub fn unset_env_var(name: &str) -> String {
    let plausible = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plausible {
        format!("environment variable {name} is not set")
    } else {
        "it takes the name of an environment variable (letters, digits and _), not the secret \
         itself: the value given is not shown"
            .to_owned()
    }
}

fn redact<'a>(text: &'a str, queries: bool) -> Cow<'a, str> {
    if !text.contains("://") || !(text.contains('@') || (queries && text.contains('='))) {
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
        let rest_of_url = |u: &'a str| {
            if queries {
                redact_query(u)
            } else {
                Cow::Borrowed(u)
            }
        };
        match url.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&rest_of_url(&url[at..]));
            }
            None => out.push_str(&rest_of_url(url)),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Whether `c` is shown as an escape by [`escape_controls`]: control characters (C0 and C1)
/// and the Unicode line and paragraph separators.
pub fn is_escaped(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` with the characters of [`is_escaped`] written as Rust escapes (`\n`, `\u{9b}`),
/// so that a name from outside (a file, an object, an argument) cannot start a line of its
/// own or move a terminal's cursor. Text without any is returned unchanged (borrowed).
///
/// ```
/// use crispy_core::redact::escape_controls;
/// assert_eq!(escape_controls("cam\nINFO forged\u{1b}[2J"), "cam\\nINFO forged\\u{1b}[2J");
/// assert_eq!(escape_controls("plain"), "plain");
/// ```
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.contains(is_escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_escaped(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Query parameter names whose values are secrets: any name containing one of these (ASCII
/// case ignored), as cameras and signed URLs use them (`password`, `pwd`, `pw`, `passwd`,
/// `access_token`, `X-Amz-Signature`, `sig`, `apikey`, `auth`, `secret`).
const SECRET_PARAMS: [&str; 7] = ["pass", "pw", "token", "sig", "key", "auth", "secret"];

/// Where a `name=value` pair of a URL ends (and the next may begin): query and fragment
/// separators, and `,` for lists of URLs in one value.
const PAIR_ENDS: [char; 6] = ['?', '&', ';', '#', ',', '@'];

/// Replaces the value of every `name=value` pair in `url` (query, fragment, or anywhere else)
/// whose name looks like it holds a secret with `***`:
/// `rtsp://cam/live?user=admin&password=x` gives `rtsp://cam/live?user=admin&password=***`
/// (some cameras take their credentials there). Names are compared percent-decoded. URLs
/// without such a pair are returned unchanged (borrowed).
///
/// ```
/// use crispy_core::redact::redact_query;
/// assert_eq!(redact_query("rtsp://cam/s?channel=1&pwd=hunter2#x"),
///            "rtsp://cam/s?channel=1&pwd=***#x");
/// assert_eq!(redact_query("rtsp://cam/s?channel=1"), "rtsp://cam/s?channel=1");
/// ```
pub fn redact_query(url: &str) -> Cow<'_, str> {
    let secret = is_secret_name;
    let is_secret_pair = |piece: &str| piece.split_once('=').is_some_and(|(name, _)| secret(name));
    if !url.split(PAIR_ENDS).any(is_secret_pair) {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len());
    for piece in url.split_inclusive(PAIR_ENDS) {
        // Keep whichever separator ended the pair.
        let pair = piece.trim_end_matches(PAIR_ENDS);
        match pair.split_once('=') {
            // Already redacted, in text that goes on after the URL (`…?password=***: refused`):
            // the punctuation is the text's, not part of a secret.
            Some((_, value))
                if value.strip_prefix("***").is_some_and(|after| {
                    after
                        .chars()
                        .all(|c| matches!(c, ':' | '.' | ')' | ']' | '!'))
                }) =>
            {
                out.push_str(pair);
            }
            Some((name, _)) if secret(name) => {
                out.push_str(name);
                out.push_str("=***");
            }
            _ => out.push_str(pair),
        }
        out.push_str(&piece[pair.len()..]);
    }
    Cow::Owned(out)
}

/// Whether a `name=value` pair with this name holds a secret (`password`, `pwd`, `pw`,
/// `token`, `sig`, `key`, `auth`, `secret` anywhere in it; ASCII case and `%XX` escapes
/// ignored).
///
/// ```
/// use crispy_core::redact::is_secret_name;
/// assert!(is_secret_name("Password") && is_secret_name("access_token"));
/// assert!(!is_secret_name("channel"));
/// ```
pub fn is_secret_name(name: &str) -> bool {
    let name = percent_decoded_lowercase(name);
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

/// `name` with `%XX` escapes decoded (invalid ones kept as written), ASCII-lowercased.
fn percent_decoded_lowercase(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
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
            (
                "open rtsp://h/s?user=admin&password=hunter2 failed",
                "open rtsp://h/s?user=admin&password=*** failed",
            ),
            ("rtsp://u:p@h/s?PWD=x;c=1#f", "rtsp://***@h/s?PWD=***;c=1#f"),
            (
                "https://b.s3.amazonaws.com/o?X-Amz-Credential=AK&X-Amz-Signature=ab12",
                "https://b.s3.amazonaws.com/o?X-Amz-Credential=AK&X-Amz-Signature=***",
            ),
            (
                "what? rtsp://h/s?channel=1&subtype=0",
                "what? rtsp://h/s?channel=1&subtype=0",
            ),
            ("rtsp://h/s?token=&a=b&", "rtsp://h/s?token=***&a=b&"),
            // An `@` in the query, a second `?`, a list of URLs, a fragment, an escaped name.
            (
                "rtsp://cam/s?user=me@corp.com&password=hunter2",
                "rtsp://***@corp.com&password=***",
            ),
            ("rtsp://h/s?a=1?password=x", "rtsp://h/s?a=1?password=***"),
            (
                "x=rtsp://a/?x=1,rtsp://b/?pwd=y z",
                "x=rtsp://a/?x=1,rtsp://b/?pwd=*** z",
            ),
            ("rtsp://h/s#v=1&token=t", "rtsp://h/s#v=1&token=***"),
            (
                "rtsp://h/s?p%61ssword=x&%C3=1",
                "rtsp://h/s?p%61ssword=***&%C3=1",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(redact_urls(input), want, "{input}");
        }
    }

    #[test]
    fn redacting_twice_keeps_the_text_after_a_url() {
        // A URL shown redacted, then a message after it; the whole text redacted again.
        let url = redact_urls("rtsp://cam/live?password=hunter2");
        let once = format!("cannot connect to {url}: refused");
        assert_eq!(
            once,
            "cannot connect to rtsp://cam/live?password=***: refused"
        );
        assert_eq!(redact_urls(&once), once);
        // In raw text a trailing `:` may be the password's own: hidden with it.
        assert_eq!(
            redact_urls("rtsp://cam/live?password=hunter2: refused"),
            "rtsp://cam/live?password=*** refused"
        );
        assert_eq!(
            redact_urls("at rtsp://cam/live?pwd=***. Then rtsp://cam/x?pwd=***)."),
            "at rtsp://cam/live?pwd=***. Then rtsp://cam/x?pwd=***)."
        );
        // Anything else after `***` is a value to hide.
        assert_eq!(
            redact_urls("rtsp://cam/live?pwd=***x: refused"),
            "rtsp://cam/live?pwd=*** refused"
        );
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

//! Text that came from outside (a target's answer, an error a library
//! produced from it) made fit to store and show.
//!
//! Postgres refuses U+0000 in `text`, and one refused value fails the whole
//! write-back statement it sits in, so nothing from a target reaches the
//! store without passing through here. Stored text is valid UTF-8, holds no
//! control characters other than `\n` and `\t`, and is bounded in bytes. A
//! body that is not text (invalid UTF-8, a NUL byte, a binary content type,
//! a content encoding such as gzip) is not shown at all but described:
//! `<binary, 5.2 KiB, image/png>`.

/// Appended when text was cut to fit.
const ELLIPSIS: char = '…';

/// Longest content type / encoding quoted in a binary description.
const MAX_LABEL: usize = 100;

/// `text` without control characters other than `\n` and `\t` (`\r` is
/// dropped, so CRLF reads as LF; the others, NUL included, become U+FFFD,
/// so the reader sees that something was there), cut on a character
/// boundary to at most `max_bytes` bytes, `…` included when cut.
pub fn clean_text(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes.saturating_add(4)));
    for c in text.chars() {
        match c {
            '\r' => {}
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push(char::REPLACEMENT_CHARACTER),
            c => out.push(c),
        }
        // Past the bound: it will be cut, nothing more is needed.
        if out.len() > max_bytes {
            break;
        }
    }
    if out.len() <= max_bytes {
        return out;
    }
    let Some(mut end) = max_bytes.checked_sub(ELLIPSIS.len_utf8()) else {
        return String::new();
    };
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out.push(ELLIPSIS);
    out
}

/// What is known about a response body when its excerpt is stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyInfo<'a> {
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The `Content-Encoding` header, if any.
    pub content_encoding: Option<&'a str>,
    /// Bytes read from the body (the read stops at a cap).
    pub bytes_read: usize,
    /// The read stopped before the end of the body (at the cap, or on an error).
    pub cut_off: bool,
}

/// The excerpt to store for a response body whose first bytes are `head`
/// (at most `max_bytes` of them are kept): the text, cleaned with
/// [`clean_text`], or a description such as `<binary, 5.2 KiB, image/png>`
/// when the body is not text. The size is what was read, so for a body cut
/// off at the cap it reads `at least 64.0 KiB`.
pub fn body_excerpt(head: &[u8], info: BodyInfo<'_>, max_bytes: usize) -> String {
    match body_text(head, info) {
        Some(text) => clean_text(text, max_bytes),
        None => clean_text(&describe_binary(info), max_bytes),
    }
}

/// `head` as text, or `None` when the body is binary.
fn body_text<'a>(head: &'a [u8], info: BodyInfo<'_>) -> Option<&'a str> {
    if info.content_encoding.is_some_and(is_binary_encoding)
        || info.content_type.is_some_and(is_binary_type)
        || head.contains(&0)
    {
        return None;
    }
    match std::str::from_utf8(head) {
        Ok(text) => Some(text),
        // A multi-byte character cut at the end of the excerpt is not binary.
        Err(e) if e.error_len().is_none() && info.bytes_read > head.len() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

fn describe_binary(info: BodyInfo<'_>) -> String {
    let mut text = format!(
        "<binary, {}{}",
        if info.cut_off { "at least " } else { "" },
        human_size(info.bytes_read)
    );
    for label in [info.content_type, info.content_encoding]
        .into_iter()
        .flatten()
    {
        let label = label.trim();
        if !label.is_empty() {
            text.push_str(", ");
            text.push_str(&clean_text(label, MAX_LABEL));
        }
    }
    text.push('>');
    text
}

/// Compressed bodies are bytes, whatever their content type says.
fn is_binary_encoding(encoding: &str) -> bool {
    encoding
        .split(',')
        .map(str::trim)
        .any(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
}

/// Media types that are never text. Unknown `application/*` types are
/// judged by their bytes instead (many are JSON or XML in disguise).
fn is_binary_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    if sub.ends_with("+json") || sub.ends_with("+xml") || sub.ends_with("+yaml") {
        return false;
    }
    match kind {
        "image" | "audio" | "video" | "font" | "model" => true,
        "application" => matches!(
            sub,
            "octet-stream"
                | "zip"
                | "gzip"
                | "x-gzip"
                | "x-tar"
                | "x-bzip2"
                | "x-xz"
                | "zstd"
                | "x-7z-compressed"
                | "pdf"
                | "wasm"
                | "protobuf"
                | "x-protobuf"
                | "grpc"
                | "msgpack"
                | "x-msgpack"
                | "cbor"
                | "vnd.apache.parquet"
                | "vnd.apache.avro"
        ),
        _ => false,
    }
}

/// `512 B`, `5.2 KiB`, `3.0 MiB`.
fn human_size(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / (KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_info(len: usize) -> BodyInfo<'static> {
        BodyInfo {
            bytes_read: len,
            ..Default::default()
        }
    }

    #[test]
    fn clean_text_strips_nul_and_controls() {
        assert_eq!(clean_text("a\0b", 100), "a\u{fffd}b");
        assert_eq!(clean_text("line\r\nnext\tcol", 100), "line\nnext\tcol");
        assert_eq!(
            clean_text("bell\u{7}esc\u{1b}del\u{7f}c1\u{85}", 100),
            "bell\u{fffd}esc\u{fffd}del\u{fffd}c1\u{fffd}"
        );
        assert_eq!(clean_text("héllo wörld", 100), "héllo wörld");
        for s in ["a\0b", "\0\0\0", "x\u{1}y"] {
            let cleaned = clean_text(s, 100);
            assert!(!cleaned.contains('\0'));
            assert!(!cleaned
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'));
        }
    }

    #[test]
    fn clean_text_is_bounded_and_cuts_on_char_boundaries() {
        assert_eq!(clean_text("abc", 3), "abc");
        assert_eq!(clean_text("abcd", 4), "abcd");
        assert_eq!(clean_text("abcde", 4), "a…");
        assert_eq!(clean_text("ééééé", 6), "é…");
        assert_eq!(clean_text("abc\r", 3), "abc");
        assert_eq!(clean_text("abcdef", 2), "");
        for max in 0..40 {
            let s = clean_text("día\0 ünïcødé\r\n ✓✓✓ 🙂🙂", max);
            assert!(s.len() <= max, "{max}: {s:?}");
        }
        let long = "x".repeat(10_000);
        let cut = clean_text(&long, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'));
    }

    proptest::proptest! {
        #[test]
        fn clean_text_always_fits_a_text_column(s in ".*", max in 0usize..64) {
            let cleaned = clean_text(&s, max);
            proptest::prop_assert!(cleaned.len() <= max);
            proptest::prop_assert!(!cleaned.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        }

        #[test]
        fn body_excerpts_never_hold_nul(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let excerpt = body_excerpt(&bytes, text_info(bytes.len()), 32);
            proptest::prop_assert!(excerpt.len() <= 32 && !excerpt.contains('\0'));
        }
    }

    #[test]
    fn text_bodies_are_kept() {
        assert_eq!(body_excerpt(b"ok", text_info(2), 1024), "ok");
        let json = BodyInfo {
            content_type: Some("application/problem+json; charset=utf-8"),
            ..text_info(9)
        };
        assert_eq!(body_excerpt(b"{\"a\":1}\r\n", json, 1024), "{\"a\":1}\n");
        // A character cut in half by the excerpt is dropped, not binary.
        let head = "aé".as_bytes();
        assert_eq!(body_excerpt(&head[..2], text_info(3), 1024), "a");
    }

    #[test]
    fn binary_bodies_are_described() {
        assert_eq!(body_excerpt(b"a\0b", text_info(3), 1024), "<binary, 3 B>");
        assert_eq!(
            body_excerpt(&[0xff, 0xfe, 0x41], text_info(3), 1024),
            "<binary, 3 B>"
        );
        let png = BodyInfo {
            content_type: Some("image/png"),
            bytes_read: 5325,
            ..Default::default()
        };
        assert_eq!(
            body_excerpt(b"PNG", png, 1024),
            "<binary, 5.2 KiB, image/png>"
        );
        let gz = BodyInfo {
            content_type: Some("application/json"),
            content_encoding: Some("gzip"),
            bytes_read: 65536,
            cut_off: true,
        };
        assert_eq!(
            body_excerpt(b"plain-looking", gz, 1024),
            "<binary, at least 64.0 KiB, application/json, gzip>"
        );
        let identity = BodyInfo {
            content_encoding: Some("identity"),
            ..text_info(2)
        };
        assert_eq!(body_excerpt(b"ok", identity, 1024), "ok");
        let octets = BodyInfo {
            content_type: Some("Application/Octet-Stream"),
            ..text_info(3 * 1024 * 1024)
        };
        assert_eq!(
            body_excerpt(b"abc", octets, 1024),
            "<binary, 3.0 MiB, Application/Octet-Stream>"
        );
        // A hostile content type is cleaned too.
        let odd = BodyInfo {
            content_type: Some("image/\0x"),
            ..text_info(1)
        };
        assert!(!body_excerpt(b"x", odd, 1024).contains('\0'));
    }
}

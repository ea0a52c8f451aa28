//! Keeping passwords out of messages: what in a database URL is secret, and how to hide it.
//!
//! Every message that shows a database URL, or text a driver built from one, passes through
//! [`redact`] (the URL alone) or [`scrub`] (a message, given the URL it is about). Both prefer
//! hiding too much to showing a secret:
//!
//! - The password of the user info becomes `***`. When the user info is ambiguous (more than one
//!   `@`, or an `@` after a `/`, `?` or `#`, as when a password holds one of them unencoded),
//!   everything from the scheme up to the last `@` becomes `***`, user name included.
//! - The value of every key libpq keeps secret ([`SECRET_KEYS`]) becomes `***`, in URI queries
//!   and in `key = value` connection strings alike, whatever the key's case or percent-encoding
//!   (libpq decodes `pass%77ord` to `password`), quoted or not.
//! - [`scrub`] also removes from a message every secret value of the URL, in the forms a driver
//!   may echo (as written, percent-decoded, and split at the characters that end a URL part, as in
//!   libpq's `invalid port number: "s3cr"`). Pieces shorter than [`MIN_ANYWHERE`] characters are
//!   only removed where they stand alone, so a password `a` does not turn every `a` into `***`.

use std::ops::Range;

/// Connection keys whose values libpq itself hides (`dispchar` `*` in libpq's option table).
pub const SECRET_KEYS: [&str; 3] = ["password", "sslpassword", "oauth_client_secret"];

/// What a secret value becomes.
const HIDDEN: &str = "***";

/// Secret pieces at least this long are removed from messages wherever they appear.
// Only PostgreSQL's client library echoes a URL's pieces in its errors, so only it scrubs them.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub const MIN_ANYWHERE: usize = 4;

/// Characters at which libpq splits a URL or connection string into parts.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
const PART_ENDS: &[char] = &['?', '#', '/', '@', ':', '=', '&', ',', ';', '\'', '"', '\\'];

/// `text` (a URL, a `key=value` connection string, or a message quoting one) with its password,
/// secret parameters and any ambiguous user info replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut hidden: Vec<Range<usize>> = user_info(text).map(|u| u.hidden).into_iter().collect();
    hidden.extend(
        pairs(text)
            .into_iter()
            .filter(|p| p.is_secret() && !p.value.is_empty())
            .map(|p| p.value),
    );
    replace_spans(text, hidden)
}

/// `message` (say, a driver's error) with every secret of `url` removed, then [`redact`]ed.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub fn scrub(message: &str, url: &str) -> String {
    let mut pieces = secret_pieces(url);
    pieces.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    pieces.dedup();
    let mut text = message.to_string();
    for piece in &pieces {
        text = remove_piece(&text, piece);
    }
    redact(&text)
}

/// The percent-decoded, lowercase keys of the `key=value` pairs in `text`, in order.
pub(crate) fn keys(text: &str) -> Vec<String> {
    pairs(text).into_iter().map(|p| p.key).collect()
}

/// Where the user info of a URL-shaped text lies and which part of it to hide.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
struct UserInfo {
    /// The whole user info, between the scheme and the `@` before the host.
    whole: Range<usize>,
    /// What [`redact`] hides: the password, or `whole` when the user info is ambiguous.
    hidden: Range<usize>,
    /// The password as far as it can be told: after the first `:` in `whole`, or all of `whole`.
    password: Range<usize>,
}

/// The user info of `text`, if it has one. Without `://`, a text without whitespace that holds
/// an `@` is read as starting with user info: `user:pw@host/db`, or `mysql:user:pw@host`, whose
/// "password" `user:pw` is hidden whole.
fn user_info(text: &str) -> Option<UserInfo> {
    let start = match text.find("://") {
        Some(i) => i + 3,
        None if !text.contains(char::is_whitespace) => 0,
        None => return None,
    };
    let rest = &text[start..];
    let last_at = rest.rfind('@')?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let ambiguous = last_at > authority_end || rest[..last_at].contains('@');
    let whole = start..start + last_at;
    let password = match rest[..last_at].find(':') {
        Some(colon) => start + colon + 1..whole.end,
        None if ambiguous => whole.clone(),
        None => whole.end..whole.end,
    };
    let hidden = if ambiguous {
        whole.clone()
    } else {
        password.clone()
    };
    Some(UserInfo {
        whole,
        hidden,
        password,
    })
}

/// The length of `text`'s URL scheme, if it starts with one (`scheme:`; not a drive letter).
pub(crate) fn scheme_len(text: &str) -> Option<usize> {
    let (scheme, _) = text.split_once(':')?;
    let valid = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(scheme.len())
}

/// One `key=value` pair of a URI query or a libpq connection string.
struct Pair {
    /// The key, percent-decoded, trimmed and lowercase.
    key: String,
    /// The value as written (quotes included), without the whitespace around `=`.
    value: Range<usize>,
}

impl Pair {
    fn is_secret(&self) -> bool {
        SECRET_KEYS.contains(&self.key.as_str())
    }
}

/// Every `key = value` pair in `text`: a key starts the text or follows whitespace, `?`, `&`,
/// `#`, `;`, `,`, `(` or a quote. A value in single quotes ends at the closing quote (`\'`
/// escapes one); after `?`, `&`, `#` or `;` a value runs to the next `&` that starts another
/// `key=value` (so `password=a&b` hides `a&b`); otherwise to the next whitespace. Keys inside
/// values are found too, so `sslmode=require password=x` still hides `x`.
fn pairs(text: &str) -> Vec<Pair> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for (key_start, _) in text.char_indices() {
        let after = key_start.checked_sub(1).map(|i| bytes[i]);
        let at_boundary =
            after.is_none_or(|b| b.is_ascii_whitespace() || b"?&#;,(\"'".contains(&b));
        if !at_boundary || ends_key(bytes[key_start]) {
            continue;
        }
        let key_end = position(bytes, key_start, ends_key);
        let equals = skip_whitespace(bytes, key_end);
        if bytes.get(equals) != Some(&b'=') {
            continue;
        }
        let start = skip_whitespace(bytes, equals + 1);
        let end = if bytes.get(start) == Some(&b'\'') {
            quoted_end(bytes, start)
        } else if after.is_some_and(|b| b"?&#;".contains(&b)) {
            query_value_end(text, start)
        } else {
            position(bytes, start, |b| b.is_ascii_whitespace())
        };
        found.push(Pair {
            key: decoded_key(&text[key_start..key_end]),
            value: start..end,
        });
    }
    found
}

fn ends_key(b: u8) -> bool {
    b.is_ascii_whitespace() || b"=&?#;,'\"".contains(&b)
}

/// The first index from `from` whose byte satisfies `stop`, or the end.
fn position(bytes: &[u8], from: usize, stop: impl Fn(u8) -> bool) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| stop(b))
        .map_or(bytes.len(), |i| from + i)
}

fn skip_whitespace(bytes: &[u8], from: usize) -> usize {
    position(bytes, from, |b| !b.is_ascii_whitespace())
}

/// Just past the quote closing the value that opens at `open`, or the end.
fn quoted_end(bytes: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Where a URI query value starting at `start` ends: at an `&` followed by another `key=`.
fn query_value_end(text: &str, start: usize) -> usize {
    let mut end = start;
    loop {
        match text[end..].find('&') {
            None => return text.len(),
            Some(i) => {
                end += i;
                let next = &text[end + 1..];
                let segment = &next[..next.find('&').unwrap_or(next.len())];
                if segment.contains('=') {
                    return end;
                }
                end += 1;
            }
        }
    }
}

/// `key` percent-decoded (as often as it stays encoded, up to three times), trimmed, lowercase.
fn decoded_key(key: &str) -> String {
    let mut key = key.to_string();
    for _ in 0..3 {
        let decoded = percent_decode(&key);
        if decoded == key {
            break;
        }
        key = decoded;
    }
    key.trim().to_ascii_lowercase()
}

/// `text` with each valid `%XX` escape decoded; invalid escapes are kept as written.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every form in which a driver may echo a secret of `url`.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn secret_pieces(url: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut values: Vec<&str> = Vec::new();
    if let Some(info) = user_info(url).filter(|u| !u.password.is_empty()) {
        pieces.push(url[info.whole].to_string());
        values.push(&url[info.password]);
    }
    let pairs = pairs(url);
    values.extend(
        pairs
            .iter()
            .filter(|p| p.is_secret())
            .map(|p| url[p.value.clone()].trim_matches('\'')),
    );
    let unescaped: Vec<String> = values
        .iter()
        .filter(|v| v.contains('\\'))
        .map(|v| v.replace("\\\\", "\\").replace("\\'", "'"))
        .collect();
    values.extend(unescaped.iter().map(String::as_str));
    for value in values.into_iter().filter(|v| !v.is_empty()) {
        for form in [value.to_string(), percent_decode(value)] {
            pieces.extend(
                form.split(|c: char| PART_ENDS.contains(&c) || c.is_whitespace())
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            );
            pieces.push(form);
        }
    }
    pieces
}

/// `text` with `piece` replaced by `***`: everywhere if it is long enough, else only where it
/// is not part of a longer word.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn remove_piece(text: &str, piece: &str) -> String {
    let anywhere = piece.chars().count() >= MIN_ANYWHERE;
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let spans = text
        .match_indices(piece)
        .map(|(i, _)| i..i + piece.len())
        .filter(|span| {
            anywhere
                || !(word(text[..span.start].chars().next_back())
                    || word(text[span.end..].chars().next()))
        })
        .collect();
    replace_spans(text, spans)
}

/// `text` with each span (which may overlap) replaced by `***`.
fn replace_spans(text: &str, mut spans: Vec<Range<usize>>) -> String {
    spans.sort_by_key(|s| s.start);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for span in spans.into_iter().filter(|s| !s.is_empty()) {
        if span.start >= copied {
            out.push_str(&text[copied..span.start]);
            out.push_str(HIDDEN);
            copied = span.end;
        } else if span.end > copied {
            copied = span.end;
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_secrets_and_keeps_the_rest() {
        for (text, shown) in [
            ("postgresql://u:p@h:5/d?x=1", "postgresql://u:***@h:5/d?x=1"),
            ("postgresql://u@h/d", "postgresql://u@h/d"),
            ("postgresql://u:@h/d", "postgresql://u:@h/d"),
            ("sqlite:///x.db", "sqlite:///x.db"),
            (
                "postgres://h/d?password=pw&sslmode=require",
                "postgres://h/d?password=***&sslmode=require",
            ),
            (
                "postgres://h/d?pass%77ord=pw&a=1",
                "postgres://h/d?pass%77ord=***&a=1",
            ),
            (
                "postgres://h/d?PassWord=a&b&c=1",
                "postgres://h/d?PassWord=***&c=1",
            ),
            ("postgres://u:a@b@h/d", "postgres://***@h/d"),
            ("postgres://u:a/b@h/d", "postgres://***@h/d"),
            ("postgres://u:pw@h/d?user=a@b", "postgres://***@b"),
            (
                "host=h password = 'a b\\' c' port=5",
                "host=h password = *** port=5",
            ),
            (
                "host=h\tsslpassword\t=\tx\tport=5",
                "host=h\tsslpassword\t=\t***\tport=5",
            ),
            ("sslmode=require password=x", "sslmode=require password=***"),
            ("u:pw@h/d", "u:***@h/d"),
            ("mysql:u:pw@h", "mysql:***@h"),
            ("keep passwords out", "keep passwords out"),
        ] {
            assert_eq!(redact(text), shown, "{text:?}");
        }
    }

    #[test]
    fn scrubbing_removes_echoed_pieces_and_spares_unrelated_words() {
        let url = "postgresql://u:ab/s3cr3t@h/db";
        assert_eq!(
            scrub("invalid port number: \"ab\"; host \"s3cr3t@h\"", url),
            "invalid port number: \"***\"; host \"***@h\""
        );
        assert_eq!(
            scrub("a cab in abc", "postgresql://u:ab@h/db"),
            "a cab in abc"
        );
        assert_eq!(
            scrub("user \"u\" at postgresql://u@h/db", "postgresql://u@h/db"),
            "user \"u\" at postgresql://u@h/db"
        );
        assert_eq!(
            scrub("bad token \"s3%zz\"", "host=h password='s3%zz'"),
            "bad token \"***\""
        );
    }
}

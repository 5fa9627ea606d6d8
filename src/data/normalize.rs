//! Caption normalisation in the style of dalle-mini's `TextNormalizer`, so
//! captions are tokenised the way the released models saw them.
//!
//! Replicated in the reference's order: HTML entity unescaping (twice),
//! lower-casing, `<person>` tokens, wiki references, HTML tags, URLs, commas
//! inside numbers, the protection of dots in numbers / contractions / dates,
//! spaces around `% & / $ *`, word-joining hyphens, dropping `_ # \`, quotes
//! simplified and merged, punctuation turned into commas, runs of 4+ equal
//! characters collapsed, commas and whitespace merged, leading/trailing commas
//! removed, and the leading space.
//!
//! Not replicated, and why:
//! - `ftfy.fix_text` (mojibake repair): needs ftfy's large heuristic tables;
//!   we apply Unicode NFKD and drop combining marks, which covers accents,
//!   ligatures, full-width forms and non-breaking spaces;
//! - `unidecode` of non-Latin scripts (e.g. CJK to pinyin): needs unidecode's
//!   transliteration tables; such characters are kept and the byte-level BPE
//!   encodes them; common typographic punctuation is mapped to ASCII;
//! - hashtag splitting (`#sunsetbeach` -> `sunset beach`): needs the
//!   Wikipedia word-frequency list; the `#` is dropped and the word kept;
//! - `<person>` is replaced by a random choice weighted by word frequency in
//!   the reference; we always use the most frequent, "a person", so the
//!   output is a pure function of the caption.

use regex::Regex;
use std::sync::LazyLock;
use tokenizers::normalizers::{StripAccents, NFKD};
use tokenizers::{NormalizedString, Normalizer};

/// Placeholder protecting characters through the punctuation rules (the reference's choice).
const TEMP: &str = "xtokx";

fn re(pattern: &str) -> Regex {
    // Patterns are constants of this file, checked by the tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

struct Rules {
    person_group: Regex,
    wiki_start: Regex,
    wiki_end: Regex,
    html_tag: Regex,
    url: Regex,
    comma_number: Regex,
    dot_number: Regex,
    quote: Regex,
    date: Regex,
    word_hyphen: Regex,
    spaced_chars: Regex,
    ignored_chars: Regex,
    quotes: Regex,
    punctuation: Regex,
    merge_quotes: Regex,
    merge_commas: Regex,
    spaces: Regex,
}

static RULES: LazyLock<Rules> = LazyLock::new(|| Rules {
    person_group: re(r"<person>([,\s]*(and)*[,\s]*<person>)+"),
    wiki_start: re(r"\A\s*\[\d+\]"),
    wiki_end: re(r"\[\d+\]\s*\z"),
    html_tag: re(r"<[^<]+?>"),
    url: re(r"http\S+"),
    comma_number: re(r"(\d),(\d{3})"),
    dot_number: re(r"(\w)\.(\w)"),
    // The reference uses a look-ahead; capturing the suffix and putting it back is equivalent.
    quote: re(r"'([stdm]|ll|re|ve)\b"),
    date: re(r"(\d)/(\d)"),
    word_hyphen: re(r"(\w)-(\w)"),
    spaced_chars: re(r"([%&/$*])"),
    ignored_chars: re(r"[_#\\]"),
    quotes: re(r#"['"`]"#),
    punctuation: re(r"[()\[\].,|:;?!=+~\-/{}]"),
    merge_quotes: re(r#"(\s*"+\s*)+"#),
    merge_commas: re(r"(\s*,+\s*)+"),
    spaces: re(r"\s+"),
});

/// Normalises one caption; the result starts with a space, as in dalle-mini.
pub fn normalize_caption(caption: &str) -> String {
    let r = &*RULES;
    let t = unescape_html(&unescape_html(caption));
    let t = simplify_unicode(&t).to_lowercase();
    let t = r.person_group.replace_all(&t, " people ");
    let t = t.replace("<person>", " a person ");
    let t = r.wiki_start.replace(&t, "");
    let t = r.wiki_end.replace(&t, "");
    let t = r.html_tag.replace_all(&t, "");
    let t = r.url.replace_all(&t, "");
    let t = r.comma_number.replace_all(&t, "${1}${2}");
    let t = r.comma_number.replace_all(&t, "${1}${2}");
    let t = r.dot_number.replace_all(&t, format!("${{1}}{TEMP}dot{TEMP}${{2}}").as_str());
    let t = r.quote.replace_all(&t, format!("{TEMP}quote{TEMP}${{1}}").as_str());
    let t = r.date.replace_all(&t, format!("${{1}}{TEMP}slash{TEMP}${{2}}").as_str());
    let t = r.word_hyphen.replace_all(&t, "${1} ${2}");
    let t = r.spaced_chars.replace_all(&t, " ${1} ");
    let t = r.ignored_chars.replace_all(&t, " ");
    let t = r.quotes.replace_all(&t, " \" ");
    let t = r.punctuation.replace_all(&t, ",");
    let t = t.replace(&format!("{TEMP}dot{TEMP}"), ".");
    let t = t.replace(&format!("{TEMP}quote{TEMP}"), "'");
    let t = t.replace(&format!("{TEMP}slash{TEMP}"), "/");
    let t = collapse_repeats(&t);
    let t = r.merge_quotes.replace_all(&t, " \" ");
    let t = r.merge_commas.replace_all(&t, ", ");
    let t = r.spaces.replace_all(&t, " ");
    format!(" {}", strip_edge_commas(&t))
}

/// NFKD without combining marks, then common typographic punctuation as ASCII.
fn simplify_unicode(text: &str) -> String {
    let mut n = NormalizedString::from(text);
    // Both normalizers are infallible on a string; keep the input if one ever is not.
    if NFKD.normalize(&mut n).is_err() || StripAccents.normalize(&mut n).is_err() {
        return text.to_string();
    }
    n.get()
        .chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{00B4}' => '\'',
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{00AB}' | '\u{00BB}' => '"',
            '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
            c => c,
        })
        .collect()
}

/// Runs of 4+ identical non-digit characters become one (3 are kept for roman numerals like "viii").
fn collapse_repeats(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut j = i + 1;
        while j < chars.len() && chars[j] == c {
            j += 1;
        }
        let run = j - i;
        let keep = if run >= 4 && !c.is_numeric() { 1 } else { run };
        out.extend(std::iter::repeat_n(c, keep));
        i = j;
    }
    out
}

fn strip_edge_commas(text: &str) -> &str {
    let t = text.trim();
    let t = t.strip_suffix(',').unwrap_or(t);
    let t = t.strip_prefix(',').unwrap_or(t);
    t.trim()
}

/// Python's `html.unescape` for the entities captions contain: numeric ones and the common named ones.
fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        match decode_entity(tail) {
            Some((decoded, used)) => {
                out.push(decoded);
                rest = &tail[used..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the entity at the start of `s` (which starts with `&`): the character and the bytes used.
fn decode_entity(s: &str) -> Option<(char, usize)> {
    let end = s.find(';').filter(|&e| e <= 12)?;
    let body = &s[1..end];
    let c = if let Some(num) = body.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        char::from_u32(code)?
    } else {
        match body {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => ' ',
            "ndash" => '-',
            "mdash" => '-',
            "lsquo" | "rsquo" => '\'',
            "ldquo" | "rdquo" => '"',
            "hellip" => '\u{2026}',
            "copy" => '\u{00A9}',
            "reg" => '\u{00AE}',
            "deg" => '\u{00B0}',
            "eacute" => '\u{00E9}',
            _ => return None,
        }
    };
    Some((c, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_patterns_compile() {
        LazyLock::force(&RULES);
    }
}

//! Caption normalisation as dalle-mini's `TextNormalizer` does it, so
//! captions are tokenised the way the released models saw them.
//!
//! In the reference's order: mojibake repair (the part of `ftfy.fix_text`
//! captions need), HTML entities unescaped twice, emoji to their names,
//! transliteration to ASCII, lower-casing, `<person>` tokens, wiki
//! references, HTML tags, URLs, commas inside numbers, the protection of dots
//! in numbers / contractions / dates, spaces around `% & / $ *`, word-joining
//! hyphens, hashtags split into words with a word-frequency table, dropping
//! `_ # \`, quotes simplified and merged, punctuation turned into commas,
//! runs of 4+ equal characters collapsed, commas and whitespace merged,
//! leading/trailing commas removed, and the leading space.
//!
//! Differences that remain:
//! - hashtag splitting needs dalle-mini's `enwiki-words-frequency.txt`, which
//!   does not come with the tokenizer: give its path (`data.word_frequency`);
//!   without it the `#` is dropped and the word kept, and the user is told once;
//! - `<person>` is replaced by a random choice weighted by word frequency in
//!   the reference; we always use the most frequent, "a person", so the
//!   output is a pure function of the caption;
//! - `ftfy`'s rarer repairs (terminal escapes, C1 controls, surrogates) are
//!   not replicated; transliteration uses `deunicode`, whose tables differ
//!   from `unidecode`'s for a few scripts.

use super::hashtags::HashtagSplitter;
use super::unicode_text::{demojize, fix_mojibake, transliterate};
use crate::error::Result;
use regex::Regex;
use std::path::Path;
use std::sync::{LazyLock, Once};

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
    hashtag: Regex,
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
    hashtag: re(r"#(\w+)"),
    ignored_chars: re(r"[_#\\]"),
    quotes: re(r#"['"`]"#),
    punctuation: re(r"[()\[\].,|:;?!=+~\-/{}]"),
    merge_quotes: re(r#"(\s*"+\s*)+"#),
    merge_commas: re(r"(\s*,+\s*)+"),
    spaces: re(r"\s+"),
});

/// dalle-mini's normaliser, with or without its word-frequency table for hashtags.
#[derive(Default)]
pub struct TextNormalizer {
    hashtags: Option<HashtagSplitter>,
}

static NO_WORD_TABLE: Once = Once::new();

impl TextNormalizer {
    /// With the word-frequency table at `path` (dalle-mini's `enwiki-words-frequency.txt` format).
    pub fn with_word_frequency(path: &Path) -> Result<TextNormalizer> {
        Ok(TextNormalizer { hashtags: Some(HashtagSplitter::load(path)?) })
    }

    /// Normalises one caption; the result starts with a space, as in dalle-mini.
    pub fn normalize(&self, caption: &str) -> String {
        let r = &*RULES;
        let t = fix_mojibake(caption);
        let t = unescape_html(&unescape_html(&t));
        let t = transliterate(&demojize(&t)).to_lowercase();
        let t = r.person_group.replace_all(&t, " people ");
        let t = t.replace("<person>", " a person ");
        let t = r.wiki_start.replace(&t, "");
        let t = r.wiki_end.replace(&t, "");
        let t = r.html_tag.replace_all(&t, " ");
        let t = r.url.replace_all(&t, "");
        let t = r.comma_number.replace_all(&t, "${1}${2}");
        let t = r.comma_number.replace_all(&t, "${1}${2}");
        let t = r.dot_number.replace_all(&t, format!("${{1}}{TEMP}dot{TEMP}${{2}}").as_str());
        let t = r.quote.replace_all(&t, format!("{TEMP}quote{TEMP}${{1}}").as_str());
        let t = r.date.replace_all(&t, format!("${{1}}{TEMP}slash{TEMP}${{2}}").as_str());
        let t = r.word_hyphen.replace_all(&t, "${1} ${2}");
        let t = r.spaced_chars.replace_all(&t, " ${1} ");
        let t = match &self.hashtags {
            Some(split) => r.hashtag.replace_all(&t, |c: &regex::Captures| split.split(&c[1])).into_owned(),
            None => {
                if t.contains('#') {
                    NO_WORD_TABLE.call_once(|| {
                        tracing::warn!(
                            "hashtags are kept as single words: no word-frequency file was given (dalle-mini's enwiki-words-frequency.txt, see data.word_frequency)"
                        )
                    });
                }
                t.into_owned()
            }
        };
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
}

/// Normalises one caption without a word-frequency table (hashtags stay whole words).
pub fn normalize_caption(caption: &str) -> String {
    static DEFAULT: LazyLock<TextNormalizer> = LazyLock::new(TextNormalizer::default);
    DEFAULT.normalize(caption)
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

/// Python's `html.unescape` (HTML5 named and numeric entities).
fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    html_escape::decode_html_entities(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_patterns_compile() {
        LazyLock::force(&RULES);
    }
}

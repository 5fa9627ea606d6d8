//! The Unicode steps of dalle-mini's normaliser: mojibake repair (the part of
//! `ftfy.fix_text` captions need), emoji names (`emoji.demojize`) and
//! transliteration to ASCII (`unidecode`).

/// Windows-1252's characters for bytes 0x80..0x9F (the others are Latin-1); `None` where undefined.
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'), None, Some('‚'), Some('ƒ'), Some('„'), Some('…'), Some('†'), Some('‡'), Some('ˆ'), Some('‰'), Some('Š'), Some('‹'), Some('Œ'), None, Some('Ž'), None,
    None, Some('‘'), Some('’'), Some('“'), Some('”'), Some('•'), Some('–'), Some('—'), Some('˜'), Some('™'), Some('š'), Some('›'), Some('œ'), None, Some('ž'), None,
];

fn cp1252_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 0x80 || (0xA0..=0xFF).contains(&u) {
        return Some(u as u8);
    }
    CP1252_HIGH.iter().position(|&x| x == Some(c)).map(|i| 0x80 + i as u8)
}

/// UTF-8 text that was decoded as Windows-1252/Latin-1 (`cafÃ©`, `donâ€™t`)
/// decoded again; text that is not such mojibake is returned unchanged.
pub fn fix_mojibake(text: &str) -> String {
    // Mojibake of UTF-8 always has a lead byte Ã..ï (0xC3..0xEF) as a character.
    if !text.chars().any(|c| ('\u{C2}'..='\u{EF}').contains(&c)) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    // Re-decode maximal runs of characters that map to single bytes, keeping a run only when it is valid UTF-8 that uses multi-byte sequences.
    let mut run: Vec<u8> = Vec::new();
    let mut run_text = String::new();
    let flush = |run: &mut Vec<u8>, run_text: &mut String, out: &mut String| {
        match std::str::from_utf8(run) {
            Ok(s) if s.len() != s.chars().count() => out.push_str(s),
            _ => out.push_str(run_text),
        }
        run.clear();
        run_text.clear();
    };
    for c in text.chars() {
        match cp1252_byte(c) {
            Some(b) => {
                run.push(b);
                run_text.push(c);
            }
            None => {
                flush(&mut run, &mut run_text, &mut out);
                out.push(c);
            }
        }
    }
    flush(&mut run, &mut run_text, &mut out);
    out
}

/// The name `emoji.demojize` gives: the CLDR name without `:` and `,`, words joined by `_`; flags by their country.
fn emoji_name(e: &emojis::Emoji) -> String {
    let name = e.name();
    let name = name.strip_prefix("flag: ").unwrap_or(name);
    let cleaned: String = name.chars().filter(|c| !matches!(c, ':' | ',' | '“' | '”' | '’')).collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join("_")
}

/// Replaces every emoji by `:its_name:`, as `emoji.demojize` does (longest sequence first).
pub fn demojize(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let indices: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i + 1 < indices.len() {
        let start = indices[i];
        if text.as_bytes()[start] < 0x80 {
            out.push_str(&text[start..indices[i + 1]]);
            i += 1;
            continue;
        }
        // The longest emoji sequence starting here (ZWJ families run to ~10 code points).
        let mut found = None;
        for j in (i + 1..indices.len().min(i + 12)).rev() {
            let candidate = &text[start..indices[j]];
            let hit = emojis::get(candidate).or_else(|| emojis::get(&format!("{candidate}\u{FE0F}")));
            if let Some(e) = hit {
                found = Some((e, j));
                break;
            }
        }
        match found {
            Some((e, j)) => {
                out.push(':');
                out.push_str(&emoji_name(e));
                out.push(':');
                i = j;
                // A variation selector left after the match belongs to it.
                if i + 1 < indices.len() && &text[indices[i]..indices[i + 1]] == "\u{FE0F}" {
                    i += 1;
                }
            }
            None => {
                out.push_str(&text[start..indices[i + 1]]);
                i += 1;
            }
        }
    }
    out
}

/// ASCII transliteration (`unidecode`): characters without one are dropped.
pub fn transliterate(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    deunicode::deunicode_with_tofu(text, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_mojibake_and_leaves_good_text() {
        assert_eq!(fix_mojibake("cafÃ© au lait"), "café au lait");
        assert_eq!(fix_mojibake("donâ€™t stop"), "don\u{2019}t stop");
        assert_eq!(fix_mojibake("café crème"), "café crème");
        assert_eq!(fix_mojibake("Ærø"), "Ærø");
    }

    #[test]
    fn emoji_become_their_names() {
        assert_eq!(demojize("a dog 🐶"), "a dog :dog_face:");
        assert_eq!(demojize("I ❤️ pizza"), "I :red_heart: pizza");
        assert_eq!(demojize("👍🏽"), ":thumbs_up_medium_skin_tone:");
        assert_eq!(demojize("🇫🇷"), ":France:");
        assert_eq!(demojize("👨\u{200d}👩\u{200d}👧"), ":family_man_woman_girl:");
        assert_eq!(demojize("plain"), "plain");
    }

    #[test]
    fn transliterates_to_ascii() {
        assert_eq!(transliterate("Zürich Łódź œuvre"), "Zurich Lodz oeuvre");
        assert!(transliterate("Москва").is_ascii());
    }
}

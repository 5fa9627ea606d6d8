//! Hashtag splitting as dalle-mini does it (`#sunsetbeach` -> `sunset beach`):
//! the most probable split under a word-frequency table (wordninja's dynamic
//! programme: a word of rank r costs ln(r + 1), an unknown one is impossible),
//! with the same tie-breaks and re-joined `'s` and digit runs.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

pub struct HashtagSplitter {
    cost: HashMap<String, f64>,
    max_word: usize,
}

impl HashtagSplitter {
    /// Reads a frequency table: one word per line, most frequent first (further columns, such as counts, are ignored).
    pub fn load(path: &Path) -> Result<HashtagSplitter> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading the word-frequency file {}", path.display()), e))?;
        let words: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
        if words.is_empty() {
            return Err(Error::Invalid(format!("the word-frequency file {} has no words", path.display())));
        }
        Ok(Self::from_words(&words))
    }

    pub fn from_words(words: &[&str]) -> HashtagSplitter {
        let mut cost = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            // A later duplicate overwrites an earlier one, as building a Python dict does.
            cost.insert(w.to_string(), ((i + 1) as f64).ln());
        }
        let max_word = cost.keys().map(|w| w.chars().count()).max().unwrap_or(1);
        HashtagSplitter { cost, max_word }
    }

    /// The words of a hashtag body, joined by spaces.
    pub fn split(&self, text: &str) -> String {
        let mut words = Vec::new();
        for part in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '\'')) {
            words.extend(self.split_part(part));
        }
        words.join(" ")
    }

    fn split_part(&self, s: &str) -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        let word_cost = |from: usize, to: usize| -> f64 {
            let w: String = chars[from..to].iter().collect::<String>().to_lowercase();
            self.cost.get(&w).copied().unwrap_or(f64::INFINITY)
        };
        // (cost, length) of the best last word ending at i; ties go to the shorter word, as Python's min over tuples.
        let best = |cost: &[f64], i: usize| -> (f64, usize) {
            let lo = i.saturating_sub(self.max_word);
            let mut best = (f64::INFINITY, usize::MAX);
            for (k, c) in cost[lo..i].iter().rev().enumerate() {
                let cand = (c + word_cost(i - k - 1, i), k + 1);
                if cand.0 < best.0 || (cand.0 == best.0 && cand.1 < best.1) {
                    best = cand;
                }
            }
            best
        };
        let mut cost = vec![0.0];
        for i in 1..=n {
            let (c, _) = best(&cost, i);
            cost.push(c);
        }
        let mut out: Vec<String> = Vec::new();
        let mut i = n;
        while i > 0 {
            let (_, k) = best(&cost, i);
            let k = k.min(i);
            let piece: String = chars[i - k..i].iter().collect();
            let mut new_token = true;
            if piece != "'" {
                if let Some(last) = out.last_mut() {
                    let digits = chars[i - 1].is_ascii_digit() && last.chars().next().is_some_and(|c| c.is_ascii_digit());
                    if last == "'s" || digits {
                        *last = format!("{piece}{last}");
                        new_token = false;
                    }
                }
            }
            if new_token {
                out.push(piece);
            }
            i -= k;
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_into_the_most_frequent_words() {
        let s = HashtagSplitter::from_words(&["the", "a", "sunset", "beach", "red", "car", "new", "york"]);
        assert_eq!(s.split("sunsetbeach"), "sunset beach");
        assert_eq!(s.split("NewYork"), "New York");
        assert_eq!(s.split("redcar2020"), "red car 2020");
        // Unknown words fall apart into letters, as in the reference.
        assert_eq!(s.split("xyz"), "x y z");
    }
}

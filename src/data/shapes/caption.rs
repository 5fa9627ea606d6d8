//! Reading captions back into what they claim: a list of shape specs.
//!
//! Grammar (case-insensitive, commas allowed as separators):
//! `object ("and" object)*`, where
//! `object = [a|an|one] (size|colour)* kind [(at|in|on) [the] position]`.
//! Size, colour and position may be left out; a spec then leaves them open.

use super::vocab::{Color, Kind, Position, Size};
use crate::error::{Error, Result};

/// What a caption says about one object; `None` means "any".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeSpec {
    pub kind: Kind,
    pub color: Option<Color>,
    pub size: Option<Size>,
    pub position: Option<Position>,
}

impl std::fmt::Display for ShapeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a")?;
        if let Some(size) = self.size {
            write!(f, " {size}")?;
        }
        if let Some(color) = self.color {
            write!(f, " {color}")?;
        }
        write!(f, " {}", self.kind)?;
        if let Some(position) = self.position {
            write!(f, " {}", position.phrase())?;
        }
        Ok(())
    }
}

fn color_word(word: &str) -> Option<Color> {
    match word {
        "violet" => Some(Color::Purple),
        w => Color::from_name(w),
    }
}

/// Spelling variants captions may use for a position word.
fn canonical_position_word(word: &str) -> &str {
    match word {
        "centre" | "middle" => "center",
        "upper" => "top",
        "lower" => "bottom",
        w => w,
    }
}

struct Words<'a> {
    caption: &'a str,
    words: Vec<String>,
    next: usize,
}

impl Words<'_> {
    fn peek(&self) -> Option<&str> {
        self.words.get(self.next).map(String::as_str)
    }

    fn peek_at(&self, ahead: usize) -> Option<&str> {
        self.words.get(self.next + ahead).map(String::as_str)
    }

    fn error(&self, expected: &str) -> Error {
        let found = match self.peek() {
            Some(word) => format!("the word {word:?} (word {})", self.next + 1),
            None => "the end of the caption".to_string(),
        };
        Error::Invalid(format!("cannot parse caption {:?}: expected {expected}, found {found}", self.caption))
    }
}

/// Parses a caption into one spec per object, in caption order.
pub fn parse_caption(caption: &str) -> Result<Vec<ShapeSpec>> {
    let words: Vec<String> = caption
        .to_lowercase()
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let mut words = Words { caption, words, next: 0 };
    if words.peek().is_none() {
        return Err(Error::Invalid(format!("cannot parse caption {caption:?}: it names no shape")));
    }
    let mut specs = Vec::new();
    loop {
        specs.push(parse_object(&mut words)?);
        match words.peek() {
            None => return Ok(specs),
            Some("and") => words.next += 1,
            Some(_) => return Err(words.error("\"and\" or the end of the caption")),
        }
    }
}

fn parse_object(words: &mut Words) -> Result<ShapeSpec> {
    if matches!(words.peek(), Some("a" | "an" | "one")) {
        words.next += 1;
    }
    let (mut color, mut size) = (None, None);
    loop {
        let Some(word) = words.peek() else { break };
        if let Some(s) = Size::from_name(word) {
            if size.replace(s).is_some() {
                return Err(words.error("one size per object"));
            }
        } else if let Some(c) = color_word(word) {
            if color.replace(c).is_some() {
                return Err(words.error("one colour per object"));
            }
        } else {
            break;
        }
        words.next += 1;
    }
    let kinds = Kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ");
    let kind = match words.peek().and_then(Kind::from_name) {
        Some(kind) => kind,
        None => return Err(words.error(&format!("a size, a colour or a shape ({kinds})"))),
    };
    words.next += 1;
    let mut position = None;
    if matches!(words.peek(), Some("at" | "in" | "on")) {
        words.next += 1;
        if words.peek() == Some("the") {
            words.next += 1;
        }
        position = Some(parse_position(words)?);
    }
    Ok(ShapeSpec { kind, color, size, position })
}

fn parse_position(words: &mut Words) -> Result<Position> {
    let first = words.peek().map(canonical_position_word);
    let second = words.peek_at(1).map(canonical_position_word);
    if let (Some(a), Some(b)) = (first, second) {
        if let Some(p) = Position::from_name(&format!("{a} {b}")) {
            words.next += 2;
            return Ok(p);
        }
    }
    match first.and_then(Position::from_name) {
        Some(p) => {
            words.next += 1;
            Ok(p)
        }
        None => {
            let names = Position::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ");
            Err(words.error(&format!("a position ({names})")))
        }
    }
}

//! Rows as stored (`caption` + `encoding`), their validation, and the counts
//! of what was skipped.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One dataset row as written by the encoding step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    pub caption: String,
    /// Image tokens, `image_length` of them, each in `[0, image_vocab)`.
    pub encoding: Vec<i64>,
}

/// A row as decoded from a file, before validation: fields may be absent.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRow {
    pub caption: Option<String>,
    pub encoding: Option<Vec<i64>>,
}

/// Why a row was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRowKind {
    MissingCaption,
    MissingEncoding,
    WrongEncodingLength,
    TokenOutOfRange,
    Unparsable,
}

impl fmt::Display for BadRowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadRowKind::MissingCaption => "missing caption",
            BadRowKind::MissingEncoding => "missing encoding",
            BadRowKind::WrongEncodingLength => "wrong encoding length",
            BadRowKind::TokenOutOfRange => "token out of range",
            BadRowKind::Unparsable => "unparsable row",
        })
    }
}

/// A rejected row: its kind and a description of the problem.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRow {
    pub kind: BadRowKind,
    pub detail: String,
}

/// What the decoders produce for each row: a row to validate, or one that could not be parsed.
pub type ParsedRow = Result<RawRow, BadRow>;

/// The shape every row must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowSpec {
    pub image_length: usize,
    pub image_vocab: i64,
}

impl RowSpec {
    /// Checks a decoded row and returns it as a [`Record`].
    pub fn validate(&self, row: RawRow) -> Result<Record, BadRow> {
        let bad = |kind, detail: String| Err(BadRow { kind, detail });
        let caption = match row.caption {
            Some(c) if !c.trim().is_empty() => c,
            Some(_) => return bad(BadRowKind::MissingCaption, "caption is empty".into()),
            None => return bad(BadRowKind::MissingCaption, "caption is missing or null".into()),
        };
        let Some(encoding) = row.encoding else {
            return bad(BadRowKind::MissingEncoding, "encoding is missing or null".into());
        };
        if encoding.len() != self.image_length {
            return bad(
                BadRowKind::WrongEncodingLength,
                format!("encoding has {} tokens, expected {}", encoding.len(), self.image_length),
            );
        }
        if let Some((i, t)) = encoding.iter().enumerate().find(|(_, &t)| t < 0 || t >= self.image_vocab) {
            return bad(BadRowKind::TokenOutOfRange, format!("encoding[{i}] = {t} is outside [0, {})", self.image_vocab));
        }
        Ok(Record { caption, encoding })
    }
}

/// Examples read and skipped so far; saved with the data position so totals survive a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataCounts {
    /// Examples delivered in batches.
    pub examples: u64,
    pub missing_caption: u64,
    pub missing_encoding: u64,
    pub wrong_encoding_length: u64,
    pub token_out_of_range: u64,
    pub unparsable: u64,
    /// Files that could not be read or decoded (each time an epoch reaches them).
    pub unreadable_files: u64,
    /// Rows of the training files set aside for validation by `eval_fraction`.
    pub held_out: u64,
}

impl std::fmt::Display for DataCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} examples served", self.examples)?;
        let parts = [
            (self.missing_caption, "without a caption"),
            (self.missing_encoding, "without an encoding"),
            (self.wrong_encoding_length, "with an encoding of the wrong length"),
            (self.token_out_of_range, "with a token out of range"),
            (self.unparsable, "unparsable"),
        ];
        for (n, what) in parts.iter().filter(|(n, _)| *n > 0) {
            write!(f, ", {n} rows {what}")?;
        }
        if self.unreadable_files > 0 {
            write!(f, ", {} unreadable file(s)", self.unreadable_files)?;
        }
        if self.held_out > 0 {
            write!(f, ", {} rows held out for validation", self.held_out)?;
        }
        Ok(())
    }
}

impl DataCounts {
    pub fn add_bad(&mut self, kind: BadRowKind) {
        match kind {
            BadRowKind::MissingCaption => self.missing_caption += 1,
            BadRowKind::MissingEncoding => self.missing_encoding += 1,
            BadRowKind::WrongEncodingLength => self.wrong_encoding_length += 1,
            BadRowKind::TokenOutOfRange => self.token_out_of_range += 1,
            BadRowKind::Unparsable => self.unparsable += 1,
        }
    }

    /// All skipped rows (unreadable files not included).
    pub fn bad_rows(&self) -> u64 {
        self.missing_caption + self.missing_encoding + self.wrong_encoding_length + self.token_out_of_range + self.unparsable
    }
}

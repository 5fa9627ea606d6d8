//! JSONL shards: one `{"caption": "...", "encoding": [...]}` object per line.
//! Blank lines are not rows; other fields are ignored.

use super::record::{BadRow, BadRowKind, ParsedRow, RawRow, Record};
use crate::error::{Error, Result};
use serde::Deserialize;

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    encoding: Option<Vec<i64>>,
}

/// The row lines of a file (blank lines dropped); row `i` is the `i`-th of these.
fn row_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

pub fn count_rows(bytes: &[u8]) -> usize {
    row_lines(bytes).count()
}

pub fn decode(bytes: &[u8]) -> Vec<ParsedRow> {
    row_lines(bytes)
        .map(|line| {
            let unparsable = |detail: String| BadRow { kind: BadRowKind::Unparsable, detail };
            let text = std::str::from_utf8(line).map_err(|e| unparsable(format!("not UTF-8: {e}")))?;
            let parsed: Line = serde_json::from_str(text).map_err(|e| unparsable(format!("not a caption/encoding JSON object: {e}")))?;
            Ok(RawRow { caption: parsed.caption, encoding: parsed.encoding })
        })
        .collect()
}

pub fn encode(records: &[Record]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for r in records {
        let line = serde_json::json!({ "caption": r.caption, "encoding": r.encoding });
        serde_json::to_writer(&mut out, &line).map_err(|e| Error::Invalid(format!("cannot encode JSONL row: {e}")))?;
        out.push(b'\n');
    }
    Ok(out)
}

//! A small RFC 4180 reader: comma-separated fields, fields in double quotes
//! may hold commas, newlines and doubled quotes. Enough for caption lists
//! without pulling in a CSV dependency.

/// One record with the 1-based line it starts on (for error messages).
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Splits `text` into records; an unterminated quote is an error naming
/// the line where it opened.
pub fn parse(text: &str) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut line, mut record_line) = (1, 1);
    let (mut quoted, mut quote_line) = (false, 0);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                quoted = true;
                quote_line = line;
            }
            ',' => fields.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].is_empty()) {
                    records.push(Record { line: record_line, fields: std::mem::take(&mut fields) });
                }
                fields.clear();
                line += 1;
                record_line = line;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {quote_line}: a quoted field is never closed"));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push(Record { line: record_line, fields });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_blank_lines_and_crlf() {
        let records = parse("path,caption\r\na.png,\"red, round\"\n\nb.png,\"say \"\"hi\"\"\nthere\"\nc.png,plain").unwrap();
        let rows: Vec<(usize, Vec<String>)> = records.into_iter().map(|r| (r.line, r.fields)).collect();
        assert_eq!(rows[0], (1, vec!["path".to_string(), "caption".to_string()]));
        assert_eq!(rows[1], (2, vec!["a.png".to_string(), "red, round".to_string()]));
        assert_eq!(rows[2], (4, vec!["b.png".to_string(), "say \"hi\"\nthere".to_string()]));
        assert_eq!(rows[3], (6, vec!["c.png".to_string(), "plain".to_string()]));
    }

    #[test]
    fn unterminated_quote_names_its_line() {
        let err = parse("path,caption\na.png,\"open\nstill open").err().unwrap();
        assert!(err.contains("line 2"), "{err}");
    }
}

//! Parquet shards in the layout of dalle-mini's encoding notebook: a string
//! column `caption` and a list column `encoding` of integer image tokens
//! (list, large list or fixed-size list; any integer width). Other columns
//! are not read.

use super::record::{BadRow, BadRowKind, ParsedRow, RawRow, Record};
use super::storage_io;
use crate::error::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::metadata::ParquetMetaDataReader;
use std::sync::Arc;

/// Number of rows, from the footer alone (two small range reads).
pub fn count_rows(store: &dyn ObjectStore, path: &ObjectPath, name: &str) -> Result<usize> {
    let (size, tail) = storage_io::get_tail(store, path, name, 8)?;
    let bad = |m: String| Error::Invalid(format!("'{name}' is not a readable parquet file: {m}"));
    if size < 12 || tail.len() != 8 || &tail[4..] != b"PAR1" {
        return Err(bad("no PAR1 footer".into()));
    }
    let meta_len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if meta_len + 8 > size {
        return Err(bad(format!("footer claims {meta_len} bytes of metadata in a {size}-byte file")));
    }
    let meta = storage_io::get_range(store, path, name, size - 8 - meta_len..size - 8)?;
    let metadata = ParquetMetaDataReader::decode_metadata(&meta).map_err(|e| bad(e.to_string()))?;
    usize::try_from(metadata.file_metadata().num_rows()).map_err(|_| bad("negative row count".into()))
}

/// Decodes every row of a parquet file. A file-level problem (not parquet,
/// missing column, unsupported type) is an error; a row-level one is a bad row.
pub fn decode(bytes: Bytes, name: &str) -> Result<Vec<ParsedRow>> {
    let bad = |m: String| Error::Invalid(format!("'{name}' is not a readable parquet file: {m}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| bad(e.to_string()))?;
    let fields = builder.schema().fields().clone();
    let column = |wanted: &str| -> Result<usize> {
        fields.iter().position(|f| f.name() == wanted).ok_or_else(|| {
            let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            bad(format!("no '{wanted}' column (columns: {})", names.join(", ")))
        })
    };
    let (caption_col, encoding_col) = (column("caption")?, column("encoding")?);
    let mask = ProjectionMask::roots(builder.parquet_schema(), [caption_col, encoding_col]);
    let reader = builder.with_projection(mask).build().map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let (captions, encodings) = (column_of(&batch, "caption", name)?, column_of(&batch, "encoding", name)?);
        let captions = strings(captions).map_err(bad)?;
        for (i, caption) in captions.into_iter().enumerate() {
            let encoding = match list_value(encodings, i).map_err(&bad)? {
                None => None,
                Some(values) => match ints(&values) {
                    Ok(v) => Some(v),
                    Err(IntsError::Null(j)) => {
                        rows.push(Err(BadRow { kind: BadRowKind::TokenOutOfRange, detail: format!("encoding[{j}] is null") }));
                        continue;
                    }
                    Err(IntsError::Type(t)) => return Err(bad(format!("column 'encoding' holds {t}, expected integers"))),
                },
            };
            rows.push(Ok(RawRow { caption, encoding }));
        }
    }
    Ok(rows)
}

fn column_of<'a>(batch: &'a RecordBatch, wanted: &str, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(wanted).ok_or_else(|| Error::Invalid(format!("'{name}': column '{wanted}' missing from a row group")))
}

fn strings(array: &ArrayRef) -> Result<Vec<Option<String>>, String> {
    let out = |get: &dyn Fn(usize) -> String| (0..array.len()).map(|i| (!array.is_null(i)).then(|| get(i))).collect();
    match array.data_type() {
        DataType::Utf8 => Ok(out(&|i| array.as_string::<i32>().value(i).to_string())),
        DataType::LargeUtf8 => Ok(out(&|i| array.as_string::<i64>().value(i).to_string())),
        DataType::Utf8View => Ok(out(&|i| array.as_string_view().value(i).to_string())),
        other => Err(format!("column 'caption' has type {other}, expected a string")),
    }
}

/// The list at row `i` of the encoding column, or `None` when null.
fn list_value(array: &ArrayRef, i: usize) -> Result<Option<ArrayRef>, String> {
    if array.is_null(i) {
        return Ok(None);
    }
    match array.data_type() {
        DataType::List(_) => Ok(Some(array.as_list::<i32>().value(i))),
        DataType::LargeList(_) => Ok(Some(array.as_list::<i64>().value(i))),
        DataType::FixedSizeList(_, _) => Ok(Some(array.as_fixed_size_list().value(i))),
        other => Err(format!("column 'encoding' has type {other}, expected a list of integers")),
    }
}

enum IntsError {
    Null(usize),
    Type(DataType),
}

fn ints(values: &ArrayRef) -> Result<Vec<i64>, IntsError> {
    if let Some(j) = (0..values.len()).find(|&j| values.is_null(j)) {
        return Err(IntsError::Null(j));
    }
    macro_rules! widen {
        ($t:ty) => {
            values.as_primitive::<$t>().values().iter().map(|&v| i64::try_from(v).unwrap_or(i64::MAX)).collect()
        };
    }
    Ok(match values.data_type() {
        DataType::Int64 => values.as_primitive::<Int64Type>().values().to_vec(),
        DataType::Int32 => widen!(Int32Type),
        DataType::Int16 => widen!(Int16Type),
        DataType::Int8 => widen!(Int8Type),
        // Values past i64::MAX saturate, which validation then reports as out of range.
        DataType::UInt64 => widen!(UInt64Type),
        DataType::UInt32 => widen!(UInt32Type),
        DataType::UInt16 => widen!(UInt16Type),
        DataType::UInt8 => widen!(UInt8Type),
        other => return Err(IntsError::Type(other.clone())),
    })
}

/// Encodes records as a parquet file: `caption` string, `encoding` list of int64.
pub fn encode(records: &[Record]) -> Result<Vec<u8>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("caption", DataType::Utf8, true),
        Field::new("encoding", DataType::List(Arc::new(Field::new("item", DataType::Int64, true))), true),
    ]));
    let captions = StringArray::from_iter_values(records.iter().map(|r| r.caption.as_str()));
    let encodings =
        ListArray::from_iter_primitive::<Int64Type, _, _>(records.iter().map(|r| Some(r.encoding.iter().map(|&t| Some(t)))));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(captions), Arc::new(encodings)])
        .map_err(|e| Error::Invalid(format!("cannot build parquet batch: {e}")))?;
    let mut out = Vec::new();
    let failed = |e: parquet::errors::ParquetError| Error::Invalid(format!("cannot encode parquet: {e}"));
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).map_err(failed)?;
    writer.write(&batch).map_err(failed)?;
    writer.close().map_err(failed)?;
    Ok(out)
}

//! flax's msgpack checkpoints (`flax.serialization.msgpack_serialize`, the
//! `flax_model.msgpack` of released models), read and written without holding
//! the file in memory.
//!
//! The layout: nested maps with string keys; every array is a msgpack
//! extension record (code 1 for arrays, 3 for numpy scalars) whose payload is
//! itself msgpack `[shape, dtype name, raw C-order bytes]`; arrays over
//! [`MAX_CHUNK_SIZE`] bytes are stored as a map
//! `{"__msgpack_chunked_array__": true, "shape": {"0": d0, ...}, "chunks": {"0": array, ...}}`
//! of 1-D pieces. Reading first indexes the file (names, shapes, dtypes and
//! where each array's bytes lie, skipping the bytes themselves), then reads
//! tensors one at a time on demand.

use crate::error::{Error, Result};
use crate::host::{numel, HostTensor};
use crate::DType;
use rmp::Marker;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// flax splits arrays larger than this many bytes into chunks (`flax.serialization.MAX_CHUNK_SIZE`).
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;
const EXT_NDARRAY: i8 = 1;
const EXT_NPSCALAR: i8 = 3;
const CHUNKED: &str = "__msgpack_chunked_array__";
/// Deeper trees than this are not parameter trees (and would only exhaust the stack).
const MAX_DEPTH: usize = 64;

/// numpy's dtype name of a dtype, as flax writes it.
pub fn numpy_name(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "bool",
        DType::U8 => "uint8",
        DType::U32 => "uint32",
        DType::I32 => "int32",
        DType::I64 => "int64",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F32 => "float32",
        DType::F64 => "float64",
    }
}

fn from_numpy_name(name: &str) -> Option<DType> {
    DType::ALL.into_iter().find(|d| numpy_name(*d) == name)
}

/// One array of the file: its shape, dtype and the byte ranges holding it (several when chunked).
#[derive(Clone, Debug, PartialEq)]
pub struct FlaxArray {
    pub shape: Vec<i64>,
    pub dtype: DType,
    pieces: Vec<(u64, u64)>,
}

impl FlaxArray {
    pub fn byte_len(&self) -> u64 {
        self.pieces.iter().map(|p| p.1).sum()
    }
}

/// An indexed flax msgpack file: every array by its dotted path (`model.encoder.embed_tokens.embedding`).
pub struct FlaxFile {
    pub path: PathBuf,
    file: File,
    pub arrays: BTreeMap<String, FlaxArray>,
    /// Leaves that are not arrays (numbers, strings, ...), by path: reported, never used.
    pub other_leaves: Vec<String>,
}

/// A reader that knows its offset in the file, for error messages and the index.
struct Cursor {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
    origin: String,
}

impl Read for Cursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Cursor {
    fn err(&self, at: &str, what: impl std::fmt::Display) -> Error {
        let place = if at.is_empty() { "at the top level".to_string() } else { format!("in '{at}'") };
        Error::Invalid(format!("{}: not a valid flax msgpack file: {what} {place} (byte {})", self.origin, self.pos))
    }

    fn truncated(&self, at: &str) -> Error {
        let place = if at.is_empty() { String::new() } else { format!(" inside '{at}'") };
        Error::Invalid(format!("{}: the file is truncated{place} (it ends at byte {})", self.origin, self.len))
    }

    fn io(&self, at: &str, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.truncated(at)
        } else {
            Error::io(format!("reading {}", self.origin), e)
        }
    }

    fn marker(&mut self, at: &str) -> Result<Marker> {
        rmp::decode::read_marker(self).map_err(|e| self.io(at, e.0))
    }

    fn skip(&mut self, n: u64, at: &str) -> Result<()> {
        if self.pos + n > self.len {
            return Err(self.truncated(at));
        }
        self.inner.seek_relative(n as i64).map_err(|e| self.io(at, e))?;
        self.pos += n;
        Ok(())
    }

    fn bytes(&mut self, n: u64, at: &str) -> Result<Vec<u8>> {
        if self.pos + n > self.len {
            return Err(self.truncated(at));
        }
        let mut buf = vec![0u8; n as usize];
        self.read_exact(&mut buf).map_err(|e| self.io(at, e))?;
        Ok(buf)
    }

    fn be(&mut self, n: usize, at: &str) -> Result<u64> {
        let b = self.bytes(n as u64, at)?;
        Ok(b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64))
    }

    fn string_len(&mut self, m: Marker, at: &str) -> Result<Option<u64>> {
        Ok(Some(match m {
            Marker::FixStr(n) => n as u64,
            Marker::Str8 | Marker::Bin8 => self.be(1, at)?,
            Marker::Str16 | Marker::Bin16 => self.be(2, at)?,
            Marker::Str32 | Marker::Bin32 => self.be(4, at)?,
            _ => return Ok(None),
        }))
    }

    fn string(&mut self, at: &str) -> Result<String> {
        let m = self.marker(at)?;
        let n = self.string_len(m, at)?.ok_or_else(|| self.err(at, format!("expected a string key, found {m:?}")))?;
        let b = self.bytes(n, at)?;
        String::from_utf8(b).map_err(|_| self.err(at, "a key is not UTF-8"))
    }

    fn map_len(&self, m: Marker) -> Option<MapLen> {
        match m {
            Marker::FixMap(n) => Some(MapLen::Known(n as u64)),
            Marker::Map16 => Some(MapLen::Read(2)),
            Marker::Map32 => Some(MapLen::Read(4)),
            _ => None,
        }
    }

    fn array_len(&mut self, m: Marker, at: &str) -> Result<Option<u64>> {
        Ok(Some(match m {
            Marker::FixArray(n) => n as u64,
            Marker::Array16 => self.be(2, at)?,
            Marker::Array32 => self.be(4, at)?,
            _ => return Ok(None),
        }))
    }

    fn uint(&mut self, at: &str) -> Result<u64> {
        let m = self.marker(at)?;
        Ok(match m {
            Marker::FixPos(n) => n as u64,
            Marker::U8 => self.be(1, at)?,
            Marker::U16 => self.be(2, at)?,
            Marker::U32 => self.be(4, at)?,
            Marker::U64 => self.be(8, at)?,
            Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                let n = match m {
                    Marker::I8 => 1,
                    Marker::I16 => 2,
                    Marker::I32 => 4,
                    _ => 8,
                };
                let v = self.be(n, at)?;
                let signed = (v << (64 - 8 * n)) as i64 >> (64 - 8 * n);
                u64::try_from(signed).map_err(|_| self.err(at, format!("negative dimension {signed}")))?
            }
            other => return Err(self.err(at, format!("expected a dimension, found {other:?}"))),
        })
    }

    /// Skips one value of any kind (a leaf that is not an array).
    fn skip_value(&mut self, m: Marker, at: &str, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.err(at, "nesting deeper than 64 levels"));
        }
        match m {
            Marker::Null | Marker::True | Marker::False | Marker::FixPos(_) | Marker::FixNeg(_) => {}
            Marker::U8 | Marker::I8 => self.skip(1, at)?,
            Marker::U16 | Marker::I16 => self.skip(2, at)?,
            Marker::U32 | Marker::I32 | Marker::F32 => self.skip(4, at)?,
            Marker::U64 | Marker::I64 | Marker::F64 => self.skip(8, at)?,
            Marker::FixExt1 => self.skip(2, at)?,
            Marker::FixExt2 => self.skip(3, at)?,
            Marker::FixExt4 => self.skip(5, at)?,
            Marker::FixExt8 => self.skip(9, at)?,
            Marker::FixExt16 => self.skip(17, at)?,
            Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => {
                let n = self.be(ext_len_bytes(m), at)?;
                self.skip(n + 1, at)?;
            }
            Marker::Reserved => return Err(self.err(at, "reserved marker 0xc1")),
            _ => {
                if let Some(n) = self.string_len(m, at)? {
                    self.skip(n, at)?;
                } else if let Some(n) = self.array_len(m, at)? {
                    for _ in 0..n {
                        let m = self.marker(at)?;
                        self.skip_value(m, at, depth + 1)?;
                    }
                } else if let Some(len) = self.map_len(m) {
                    let n = len.get(self, at)?;
                    for _ in 0..2 * n {
                        let m = self.marker(at)?;
                        self.skip_value(m, at, depth + 1)?;
                    }
                } else {
                    return Err(self.err(at, format!("unexpected marker {m:?}")));
                }
            }
        }
        Ok(())
    }
}

enum MapLen {
    Known(u64),
    Read(usize),
}

impl MapLen {
    fn get(self, c: &mut Cursor, at: &str) -> Result<u64> {
        match self {
            MapLen::Known(n) => Ok(n),
            MapLen::Read(b) => c.be(b, at),
        }
    }
}

fn ext_len_bytes(m: Marker) -> usize {
    match m {
        Marker::Ext8 => 1,
        Marker::Ext16 => 2,
        _ => 4,
    }
}

/// What a value in the tree turned out to be.
enum Node {
    Array(FlaxArray),
    Map,
    Other,
}

impl FlaxFile {
    /// Indexes `path`: reads the structure and skips the array bytes.
    pub fn open(path: &Path) -> Result<FlaxFile> {
        let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
        let reader = file.try_clone().map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut c = Cursor { inner: BufReader::with_capacity(1 << 16, reader), pos: 0, len, origin: path.display().to_string() };
        let mut out = FlaxFile { path: path.to_path_buf(), file, arrays: BTreeMap::new(), other_leaves: Vec::new() };
        if len == 0 {
            return Err(Error::Invalid(format!("{}: the file is empty", path.display())));
        }
        let m = c.marker("")?;
        match out.value(&mut c, m, "", 0)? {
            Node::Map => {}
            _ => return Err(c.err("", "the top level is not a map of parameters")),
        }
        if c.pos != len {
            return Err(Error::Invalid(format!("{}: {} bytes of garbage after the parameter tree (at byte {})", path.display(), len - c.pos, c.pos)));
        }
        Ok(out)
    }

    fn value(&mut self, c: &mut Cursor, m: Marker, at: &str, depth: usize) -> Result<Node> {
        if depth > MAX_DEPTH {
            return Err(c.err(at, "nesting deeper than 64 levels"));
        }
        if let Some(len) = c.map_len(m) {
            let n = len.get(c, at)?;
            let mut chunked: Option<(bool, Vec<(usize, u64)>, Vec<(usize, FlaxArray)>)> = None;
            for _ in 0..n {
                let key = c.string(at)?;
                let child = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
                if key == CHUNKED || chunked.is_some() && (key == "shape" || key == "chunks") {
                    let state = chunked.get_or_insert_with(|| (false, Vec::new(), Vec::new()));
                    let m = c.marker(&child)?;
                    match key.as_str() {
                        CHUNKED => {
                            state.0 = true;
                            c.skip_value(m, &child, depth + 1)?;
                        }
                        "shape" => state.1 = c.tuple_dict(m, &child, |c| c.uint(&child))?,
                        _ => {
                            state.2 = c.tuple_dict(m, &child, |c| {
                                let m = c.marker(&child)?;
                                c.ext_array(m, &child)
                            })?
                        }
                    }
                    continue;
                }
                let m = c.marker(&child)?;
                match self.value(c, m, &child, depth + 1)? {
                    Node::Array(a) => {
                        self.arrays.insert(child, a);
                    }
                    Node::Other => self.other_leaves.push(child),
                    Node::Map => {}
                }
            }
            if let Some((_, shape, chunks)) = chunked {
                let shape: Vec<i64> = shape.into_iter().map(|(_, d)| d as i64).collect();
                let dtype = chunks.first().map(|c| c.1.dtype).ok_or_else(|| c.err(at, "a chunked array without chunks"))?;
                if let Some((_, bad)) = chunks.iter().find(|(_, a)| a.dtype != dtype) {
                    return Err(c.err(at, format!("chunks of different dtypes ({} and {})", dtype, bad.dtype)));
                }
                let pieces: Vec<(u64, u64)> = chunks.into_iter().flat_map(|(_, a)| a.pieces).collect();
                let array = FlaxArray { shape, dtype, pieces };
                let want = (numel(&array.shape) * dtype.size_in_bytes()) as u64;
                if array.byte_len() != want {
                    return Err(c.err(at, format!("the chunks hold {} bytes, shape {:?} of {} needs {want}", array.byte_len(), array.shape, dtype)));
                }
                return Ok(Node::Array(array));
            }
            return Ok(Node::Map);
        }
        if matches!(m, Marker::FixExt1 | Marker::FixExt2 | Marker::FixExt4 | Marker::FixExt8 | Marker::FixExt16 | Marker::Ext8 | Marker::Ext16 | Marker::Ext32) {
            return Ok(Node::Array(c.ext_array(m, at)?));
        }
        c.skip_value(m, at, depth)?;
        Ok(Node::Other)
    }

    /// The array of `name`, read from the file.
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        let a = self.array(name)?;
        let mut data = vec![0u8; a.byte_len() as usize];
        let mut at = 0usize;
        for &(offset, len) in &a.pieces {
            self.read_at(&mut data[at..at + len as usize], offset, name)?;
            at += len as usize;
        }
        Ok(HostTensor { dtype: a.dtype, shape: a.shape.clone(), data })
    }

    /// Row `index` of the leading axis of `name` (one layer of a stacked, `use_scan` array).
    pub fn read_row(&self, name: &str, index: usize) -> Result<HostTensor> {
        let a = self.array(name)?;
        let rows = *a.shape.first().ok_or_else(|| Error::Invalid(format!("{}: '{name}' is a scalar, not a stack of layers", self.path.display())))?;
        if index as i64 >= rows {
            return Err(Error::Invalid(format!("{}: '{name}' stacks {rows} layers, layer {index} was asked for", self.path.display())));
        }
        let row_bytes = a.byte_len() / rows as u64;
        let (start, end) = (index as u64 * row_bytes, (index as u64 + 1) * row_bytes);
        let mut data = vec![0u8; row_bytes as usize];
        // Copy the part of each piece that overlaps [start, end).
        let mut piece_start = 0u64;
        for &(offset, len) in &a.pieces {
            let (lo, hi) = (start.max(piece_start), end.min(piece_start + len));
            if lo < hi {
                self.read_at(&mut data[(lo - start) as usize..(hi - start) as usize], offset + lo - piece_start, name)?;
            }
            piece_start += len;
        }
        Ok(HostTensor { dtype: a.dtype, shape: a.shape[1..].to_vec(), data })
    }

    pub fn array(&self, name: &str) -> Result<&FlaxArray> {
        self.arrays.get(name).ok_or_else(|| Error::Invalid(format!("{} has no array '{name}'", self.path.display())))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64, name: &str) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| Error::io(format!("reading '{name}' from {}", self.path.display()), e))
    }
}

impl Cursor {
    /// A map `{"0": v0, "1": v1, ...}` (flax's form of a tuple), values parsed by `item`, in index order.
    fn tuple_dict<T>(&mut self, m: Marker, at: &str, mut item: impl FnMut(&mut Cursor) -> Result<T>) -> Result<Vec<(usize, T)>> {
        let n = self.map_len(m).ok_or_else(|| self.err(at, format!("expected a map, found {m:?}")))?.get(self, at)?;
        let mut out = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            let key = self.string(at)?;
            let i: usize = key.parse().map_err(|_| self.err(at, format!("key '{key}' is not an index")))?;
            out.push((i, item(self)?));
        }
        out.sort_by_key(|(i, _)| *i);
        if out.iter().enumerate().any(|(k, (i, _))| k != *i) {
            return Err(self.err(at, "tuple keys are not 0..n"));
        }
        Ok(out)
    }

    /// An extension record holding an array: indexes its bytes and skips them.
    fn ext_array(&mut self, m: Marker, at: &str) -> Result<FlaxArray> {
        let len = match m {
            Marker::FixExt1 => 1,
            Marker::FixExt2 => 2,
            Marker::FixExt4 => 4,
            Marker::FixExt8 => 8,
            Marker::FixExt16 => 16,
            Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => self.be(ext_len_bytes(m), at)?,
            other => return Err(self.err(at, format!("expected an array record, found {other:?}"))),
        };
        let code = self.be(1, at)? as u8 as i8;
        if code != EXT_NDARRAY && code != EXT_NPSCALAR {
            return Err(self.err(at, format!("extension type {code} is not an array (flax writes 1 for arrays, 3 for scalars)")));
        }
        let end = self.pos + len;
        let m = self.marker(at)?;
        if self.array_len(m, at)? != Some(3) {
            return Err(self.err(at, "an array record must hold [shape, dtype, bytes]"));
        }
        let m = self.marker(at)?;
        let rank = self.array_len(m, at)?.ok_or_else(|| self.err(at, format!("expected the shape, found {m:?}")))?;
        let shape = (0..rank).map(|_| self.uint(at).map(|d| d as i64)).collect::<Result<Vec<_>>>()?;
        let m = self.marker(at)?;
        let n = self.string_len(m, at)?.ok_or_else(|| self.err(at, format!("expected the dtype name, found {m:?}")))?;
        let name = String::from_utf8(self.bytes(n, at)?).map_err(|_| self.err(at, "the dtype name is not UTF-8"))?;
        let dtype = from_numpy_name(&name).ok_or_else(|| self.err(at, format!("unsupported dtype '{name}'")))?;
        let m = self.marker(at)?;
        let n = self.string_len(m, at)?.ok_or_else(|| self.err(at, format!("expected the array bytes, found {m:?}")))?;
        let want = (numel(&shape) * dtype.size_in_bytes()) as u64;
        if n != want {
            return Err(self.err(at, format!("shape {shape:?} of {dtype} needs {want} bytes, the record holds {n}")));
        }
        let offset = self.pos;
        self.skip(n, at)?;
        if self.pos != end {
            return Err(self.err(at, format!("the array record is {len} bytes long but its contents end {} bytes off", self.pos as i64 - end as i64)));
        }
        Ok(FlaxArray { shape, dtype, pieces: vec![(offset, n)] })
    }
}

/// Writes named tensors (dotted paths) as a flax msgpack file that
/// `flax.serialization.from_bytes` / transformers' `from_pretrained` read,
/// atomically (temporary name, then rename). `fetch` supplies each tensor when
/// it is written, so only one is in memory at a time.
pub fn write_flax_msgpack(path: &Path, names: &[String], mut fetch: impl FnMut(&str) -> Result<HostTensor>) -> Result<()> {
    // The nested tree of names; leaves hold the full dotted name.
    #[derive(Default)]
    struct Tree(BTreeMap<String, Leaf>);
    enum Leaf {
        Array(String),
        Map(Tree),
    }
    let mut root = Tree::default();
    for name in names {
        let parts: Vec<&str> = name.split('.').collect();
        let mut node = &mut root;
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                if node.0.insert(part.to_string(), Leaf::Array(name.clone())).is_some() {
                    return Err(Error::Invalid(format!("'{name}' is both an array and a group of arrays")));
                }
            } else {
                let entry = node.0.entry(part.to_string()).or_insert_with(|| Leaf::Map(Tree::default()));
                node = match entry {
                    Leaf::Map(t) => t,
                    Leaf::Array(_) => return Err(Error::Invalid(format!("'{name}' is both an array and a group of arrays"))),
                };
            }
        }
    }
    let tmp = super::partial_path(path);
    let file = File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let werr = |e: std::io::Error| Error::io(format!("writing {}", tmp.display()), e);
    fn write_tree(w: &mut BufWriter<File>, t: &Tree, fetch: &mut dyn FnMut(&str) -> Result<HostTensor>, werr: &dyn Fn(std::io::Error) -> Error) -> Result<()> {
        rmp::encode::write_map_len(w, t.0.len() as u32).map_err(|e| werr(e.into()))?;
        for (key, leaf) in &t.0 {
            rmp::encode::write_str(w, key).map_err(|e| werr(e.into()))?;
            match leaf {
                Leaf::Map(sub) => write_tree(w, sub, fetch, werr)?,
                Leaf::Array(name) => {
                    let t = fetch(name)?;
                    if (t.data.len() as u64) > MAX_CHUNK_SIZE {
                        write_chunked(w, &t).map_err(werr)?;
                    } else {
                        write_array(w, &t.shape, t.dtype, &t.data).map_err(werr)?;
                    }
                }
            }
        }
        Ok(())
    }
    let result = write_tree(&mut w, &root, &mut fetch, &werr).and_then(|()| w.flush().map_err(werr)).and_then(|()| w.get_ref().sync_all().map_err(werr));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(w);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), path.display()), e))
}

fn write_array(w: &mut impl Write, shape: &[i64], dtype: DType, data: &[u8]) -> std::io::Result<()> {
    let mut payload = Vec::with_capacity(32);
    rmp::encode::write_array_len(&mut payload, 3)?;
    rmp::encode::write_array_len(&mut payload, shape.len() as u32)?;
    for &d in shape {
        rmp::encode::write_uint(&mut payload, d as u64)?;
    }
    rmp::encode::write_str(&mut payload, numpy_name(dtype))?;
    rmp::encode::write_bin_len(&mut payload, data.len() as u32)?;
    let code = if shape.is_empty() { EXT_NPSCALAR } else { EXT_NDARRAY };
    rmp::encode::write_ext_meta(w, (payload.len() + data.len()) as u32, code)?;
    w.write_all(&payload)?;
    w.write_all(data)
}

fn write_chunked(w: &mut impl Write, t: &HostTensor) -> std::io::Result<()> {
    let item = t.dtype.size_in_bytes();
    let per_chunk = (MAX_CHUNK_SIZE as usize / item).max(1) * item;
    rmp::encode::write_map_len(w, 3)?;
    rmp::encode::write_str(w, CHUNKED)?;
    rmp::encode::write_bool(w, true)?;
    rmp::encode::write_str(w, "shape")?;
    rmp::encode::write_map_len(w, t.shape.len() as u32)?;
    for (i, &d) in t.shape.iter().enumerate() {
        rmp::encode::write_str(w, &i.to_string())?;
        rmp::encode::write_uint(w, d as u64)?;
    }
    rmp::encode::write_str(w, "chunks")?;
    let chunks: Vec<&[u8]> = t.data.chunks(per_chunk).collect();
    rmp::encode::write_map_len(w, chunks.len() as u32)?;
    for (i, c) in chunks.iter().enumerate() {
        rmp::encode::write_str(w, &i.to_string())?;
        write_array(w, &[(c.len() / item) as i64], t.dtype, c)?;
    }
    Ok(())
}

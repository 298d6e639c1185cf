//! A reader for MATLAB level-5 MAT-files (the `-v6`/`-v7` formats): numeric arrays, plain or
//! in zlib-compressed elements (`miCOMPRESSED`, how MATLAB saves by default and how the SVHN
//! files are stored). Cells, structs, strings and sparse arrays are skipped.
//!
//! Layout: a 128-byte header (text, subsystem offset, version 0x0100, endianness `IM` for
//! little-endian writers), then data elements. Each element is a tag (type, byte count) and
//! its data padded to 8 bytes; a tag whose upper 16 bits are set is the "small" form holding
//! up to 4 bytes of data inline. A matrix (`miMATRIX`) holds sub-elements: array flags
//! (class), dimensions, name, real part. Arrays are column-major.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// Numeric array classes (`mxDOUBLE_CLASS` .. `mxUINT64_CLASS`).
const NUMERIC_CLASSES: std::ops::RangeInclusive<u8> = 6..=15;

/// What [`read`] inflates at most from one compressed element by default (16 GiB): far
/// above any real dataset file, but a bound against zlib bombs.
pub const DEFAULT_INFLATE_LIMIT: u64 = 16 << 30;

/// One numeric variable of a MAT-file.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// The variable's name.
    pub name: String,
    /// Its dimensions, in MATLAB order (column-major storage).
    pub dims: Vec<usize>,
    /// The MATLAB class: 6 double, 7 single, 8 int8, 9 uint8, ... 15 uint64.
    pub class: u8,
    /// The values, in storage order.
    pub data: MatData,
}

/// Values of a [`MatArray`]: bytes stay bytes (images), anything else becomes `f64`.
#[derive(Debug, Clone, PartialEq)]
pub enum MatData {
    /// Stored as `miUINT8`.
    U8(Vec<u8>),
    /// Stored as any other numeric type.
    F64(Vec<f64>),
}

impl MatData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            MatData::U8(v) => v.len(),
            MatData::F64(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as `f64`.
    pub fn get(&self, i: usize) -> f64 {
        match self {
            MatData::U8(v) => f64::from(v[i]),
            MatData::F64(v) => v[i],
        }
    }
}

/// Reads every numeric variable of the MAT-file at `path`.
pub fn read(path: &Path) -> Result<Vec<MatArray>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, DEFAULT_INFLATE_LIMIT).map_err(|problem| Error::BadFile {
        path: path.to_path_buf(),
        problem,
        expected: "a MATLAB 5 MAT-file (as saved by MATLAB or scipy.io.savemat); \
                   download the file again"
            .to_string(),
    })
}

/// Parses a whole MAT-file held in memory. Errors describe the problem and its byte offset.
/// No compressed element may inflate to more than `inflate_limit` bytes.
pub fn parse(bytes: &[u8], inflate_limit: u64) -> std::result::Result<Vec<MatArray>, String> {
    if bytes.len() < 128 {
        return Err(format!(
            "{} bytes is shorter than the 128-byte MAT-file header",
            bytes.len()
        ));
    }
    let big_endian = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(format!(
                "bytes 126..128 are {other:?}, not the endianness mark \"IM\" or \"MI\" of a \
                 level-5 MAT-file (a v4 or v7.3/HDF5 file?)"
            ))
        }
    };
    let mut arrays = Vec::new();
    let mut cursor = Cursor {
        bytes,
        pos: 128,
        big_endian,
        base: 0,
    };
    while cursor.pos < bytes.len() {
        // Trailing padding of fewer than 8 bytes is not an element.
        if bytes.len() - cursor.pos < 8 {
            break;
        }
        let (kind, data, at) = cursor.element()?;
        match kind {
            MI_MATRIX => arrays.extend(matrix(data, at, big_endian)?),
            MI_COMPRESSED => {
                let inflated = inflate(data, at, inflate_limit)?;
                let mut inner = Cursor {
                    bytes: &inflated,
                    pos: 0,
                    big_endian,
                    base: 0,
                };
                while inner.pos + 8 <= inflated.len() {
                    let (kind, data, inner_at) = inner.element()?;
                    if kind == MI_MATRIX {
                        arrays.extend(
                            matrix(data, inner_at, big_endian).map_err(|e| {
                                format!("in the compressed element at byte {at}: {e}")
                            })?,
                        );
                    }
                }
            }
            // Other top-level elements carry no variable.
            _ => {}
        }
    }
    Ok(arrays)
}

fn inflate(data: &[u8], at: usize, limit: u64) -> std::result::Result<Vec<u8>, String> {
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(limit.saturating_add(1))
        .read_to_end(&mut inflated)
        .map_err(|e| format!("the compressed element at byte {at} does not inflate: {e}"))?;
    if inflated.len() as u64 > limit {
        return Err(format!(
            "the compressed element at byte {at} inflates past {limit} bytes"
        ));
    }
    Ok(inflated)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    big_endian: bool,
    /// Offset of `bytes` in the enclosing buffer, for messages.
    base: usize,
}

impl<'a> Cursor<'a> {
    fn u32_at(&self, at: usize) -> u32 {
        let word = [
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ];
        if self.big_endian {
            u32::from_be_bytes(word)
        } else {
            u32::from_le_bytes(word)
        }
    }

    /// The next element: its type, its data, and its offset. Data is padded to 8 bytes,
    /// except a compressed element's (its byte count is exact); the last element of a
    /// buffer may omit its padding.
    fn element(&mut self) -> std::result::Result<(u32, &'a [u8], usize), String> {
        let at = self.pos;
        if self.bytes.len() - at < 8 {
            return Err(format!(
                "byte {}: {} bytes left, too few for an element tag",
                self.base + at,
                self.bytes.len() - at
            ));
        }
        let first = self.u32_at(at);
        if first >> 16 != 0 {
            let kind = first & 0xffff;
            let len = (first >> 16) as usize;
            if len > 4 {
                return Err(format!(
                    "byte {}: a small element claims {len} bytes, at most 4 fit",
                    self.base + at
                ));
            }
            self.pos = at + 8;
            return Ok((kind, &self.bytes[at + 4..at + 4 + len], self.base + at));
        }
        let kind = first;
        let len = self.u32_at(at + 4) as usize;
        let start = at + 8;
        let left = self.bytes.len() - start;
        if len > left {
            return Err(format!(
                "byte {}: an element of type {kind} claims {len} bytes but only {left} remain \
                 (the file is truncated)",
                self.base + at
            ));
        }
        let end = start + len;
        self.pos = if kind == MI_COMPRESSED {
            end
        } else {
            (end.div_ceil(8) * 8).min(self.bytes.len())
        };
        Ok((kind, &self.bytes[start..end], self.base + at))
    }
}

/// Reads a matrix element's sub-elements. Returns `None` for classes that are not numeric.
fn matrix(
    data: &[u8],
    at: usize,
    big_endian: bool,
) -> std::result::Result<Option<MatArray>, String> {
    if data.is_empty() {
        return Ok(None);
    }
    let mut cursor = Cursor {
        bytes: data,
        pos: 0,
        big_endian,
        base: at + 8,
    };
    let (kind, flags, _) = cursor.element()?;
    if kind != MI_UINT32 || flags.len() < 8 {
        return Err(format!(
            "matrix at byte {at}: array flags are type {kind}, {} bytes; expected 8 bytes of \
             miUINT32",
            flags.len()
        ));
    }
    let flag_word = cursor_u32(flags, big_endian);
    let class = (flag_word & 0xff) as u8;
    let complex = flag_word & 0x0800 != 0;
    if !NUMERIC_CLASSES.contains(&class) || complex {
        return Ok(None);
    }
    let (kind, dims_bytes, _) = cursor.element()?;
    if kind != MI_INT32 || dims_bytes.len() % 4 != 0 {
        return Err(format!(
            "matrix at byte {at}: dimensions are type {kind}, {} bytes; expected miINT32",
            dims_bytes.len()
        ));
    }
    let mut dims = Vec::new();
    for word in dims_bytes.chunks_exact(4) {
        let d = cursor_u32(word, big_endian) as i32;
        if d < 0 {
            return Err(format!("matrix at byte {at}: negative dimension {d}"));
        }
        dims.push(d as usize);
    }
    let (_, name, _) = cursor.element()?;
    let name = String::from_utf8_lossy(name).into_owned();
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("variable `{name}`: dimensions {dims:?} overflow"))?;
    let (kind, real, _) = cursor.element()?;
    let values = numbers(kind, real, big_endian)
        .map_err(|e| format!("variable `{name}` (matrix at byte {at}): {e}"))?;
    if values.len() != count {
        return Err(format!(
            "variable `{name}` has dimensions {dims:?} ({count} values) but stores {}",
            values.len()
        ));
    }
    Ok(Some(MatArray {
        name,
        dims,
        class,
        data: values,
    }))
}

fn cursor_u32(bytes: &[u8], big_endian: bool) -> u32 {
    let word = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if big_endian {
        u32::from_be_bytes(word)
    } else {
        u32::from_le_bytes(word)
    }
}

/// Decodes a numeric element of type `kind`.
fn numbers(kind: u32, bytes: &[u8], big_endian: bool) -> std::result::Result<MatData, String> {
    if kind == MI_UINT8 {
        return Ok(MatData::U8(bytes.to_vec()));
    }
    let size = match kind {
        MI_INT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        other => return Err(format!("data of type {other} is not numeric")),
    };
    if !bytes.len().is_multiple_of(size) {
        return Err(format!(
            "{} bytes of type {kind} is not a whole number of {size}-byte values",
            bytes.len()
        ));
    }
    let values = bytes
        .chunks_exact(size)
        .map(|chunk| {
            let mut word = [0u8; 8];
            if big_endian {
                word[8 - size..].copy_from_slice(chunk);
                word.reverse();
            } else {
                word[..size].copy_from_slice(chunk);
            }
            let raw = u64::from_le_bytes(word);
            match kind {
                MI_INT8 => f64::from(raw as u8 as i8),
                MI_INT16 => f64::from(raw as u16 as i16),
                MI_UINT16 => f64::from(raw as u16),
                MI_INT32 => f64::from(raw as u32 as i32),
                MI_UINT32 => f64::from(raw as u32),
                MI_SINGLE => f64::from(f32::from_bits(raw as u32)),
                MI_DOUBLE => f64::from_bits(raw),
                MI_INT64 => raw as i64 as f64,
                _ => raw as f64,
            }
        })
        .collect();
    Ok(MatData::F64(values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{mat_header as header, mat_variable as variable};

    /// `scipy.io.savemat(f, {'a': np.arange(6, dtype=np.uint8).reshape(2, 3) * 7,
    /// 'b': np.array([[10.0], [3.0], [0.5]]), 'c': np.array([[-2, 300]], dtype=np.int16),
    /// 's': 'text'}, do_compression=True)` (scipy 1.16), after the 128-byte header.
    const SCIPY_BODY: &str = "0f0000002e000000789ce3636060b000623620e600624e06086085f2998098198819813011ca07a965106597e15366600000221001440f00000030000000789ce3636060f000623620e680d220c00ae5330331231833322401694e2096608001150708cd01a51fd80300400102cc0f0000002b000000789ce36360603000623620e600622e06086085f2198198094c3332240369660616867fff7518011f1802fd0f00000028000000789ce36360603000623620e600621606086085f219a1628c40580ca40580bc92d48a12001c8d02b1";

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn reads_a_file_written_by_scipy() {
        let mut bytes = header();
        bytes.extend(unhex(SCIPY_BODY));
        let arrays = parse(&bytes, 1 << 20).expect("parses");
        // The string `s` is not numeric and is skipped.
        assert_eq!(arrays.len(), 3);
        assert_eq!(arrays[0].name, "a");
        assert_eq!(arrays[0].dims, vec![2, 3]);
        assert_eq!(arrays[0].class, 9);
        // Column-major: a[0,0], a[1,0], a[0,1], ...
        assert_eq!(arrays[0].data, MatData::U8(vec![0, 21, 7, 28, 14, 35]));
        assert_eq!(arrays[1].name, "b");
        assert_eq!((arrays[1].dims.clone(), arrays[1].class), (vec![3, 1], 6));
        assert_eq!(arrays[1].data, MatData::F64(vec![10.0, 3.0, 0.5]));
        assert_eq!((arrays[2].name.as_str(), arrays[2].class), ("c", 10));
        assert_eq!(arrays[2].data, MatData::F64(vec![-2.0, 300.0]));
    }

    #[test]
    fn plain_and_compressed_elements_read_the_same() {
        let values: Vec<u8> = [1.5f64, -4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for compress in [false, true] {
            let mut bytes = header();
            bytes.extend(variable("y", 6, &[2, 1], MI_DOUBLE, &values, compress));
            bytes.extend(variable("X", 9, &[1, 3], MI_UINT8, &[7, 8, 9], compress));
            let arrays = parse(&bytes, 1 << 20).expect("parses");
            assert_eq!(arrays[0].data, MatData::F64(vec![1.5, -4.0]));
            assert_eq!(arrays[1].data, MatData::U8(vec![7, 8, 9]));
            assert_eq!(arrays[1].dims, vec![1, 3]);
        }
    }

    #[test]
    fn big_endian_files_are_read() {
        let mut bytes = header();
        bytes[126..128].copy_from_slice(b"MI");
        let be = |v: u32| v.to_be_bytes();
        // Matrix: flags (uint8 class), dims [1, 2], name "z", int16 data [-3, 513].
        let mut body = Vec::new();
        body.extend(be(MI_UINT32));
        body.extend(be(8));
        body.extend([0, 0, 0, 10, 0, 0, 0, 0]);
        body.extend(be(MI_INT32));
        body.extend(be(8));
        body.extend([0, 0, 0, 1, 0, 0, 0, 2]);
        body.extend(be(MI_INT8));
        body.extend(be(1));
        body.extend(b"z\0\0\0\0\0\0\0");
        body.extend(be(MI_INT16));
        body.extend(be(4));
        body.extend([0xff, 0xfd, 0x02, 0x01, 0, 0, 0, 0]);
        bytes.extend(be(MI_MATRIX));
        bytes.extend(be(body.len() as u32));
        bytes.extend(body);
        let arrays = parse(&bytes, 1 << 20).expect("parses");
        assert_eq!(arrays[0].name, "z");
        assert_eq!(arrays[0].data, MatData::F64(vec![-3.0, 513.0]));
    }

    #[test]
    fn damaged_files_say_what_is_wrong() {
        assert_eq!(
            parse(b"short", 1 << 20).unwrap_err(),
            "5 bytes is shorter than the 128-byte MAT-file header"
        );
        let mut v73 = header();
        v73[126..128].copy_from_slice(b"\x89H");
        assert!(parse(&v73, 1 << 20).unwrap_err().contains("v7.3/HDF5"));

        let mut bytes = header();
        bytes.extend(variable("X", 9, &[2, 2], MI_UINT8, &[1, 2, 3, 4], false));
        let whole = bytes.len();
        bytes.truncate(whole - 9);
        assert_eq!(
            parse(&bytes, 1 << 20).unwrap_err(),
            "byte 128: an element of type 14 claims 64 bytes but only 55 remain (the file is \
             truncated)"
        );

        let mut bytes = header();
        bytes.extend(variable("X", 9, &[2, 3], MI_UINT8, &[1, 2, 3, 4], false));
        assert_eq!(
            parse(&bytes, 1 << 20).unwrap_err(),
            "variable `X` has dimensions [2, 3] (6 values) but stores 4"
        );

        let mut bytes = header();
        bytes.extend(variable("X", 9, &[1, 4], MI_UINT8, &[0; 4], true));
        // The zlib header's first byte (0x78) right after the tag.
        bytes[136] = 0;
        let message = parse(&bytes, 1 << 20).unwrap_err();
        assert!(
            message.starts_with("the compressed element at byte 128 does not inflate"),
            "{message}"
        );

        let mut bytes = header();
        bytes.extend(variable("X", 9, &[1, 4000], MI_UINT8, &[0; 4000], true));
        assert_eq!(
            parse(&bytes, 1000).unwrap_err(),
            "the compressed element at byte 128 inflates past 1000 bytes"
        );
    }

    #[test]
    fn read_names_the_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("broken.mat");
        std::fs::write(&path, b"not a mat file")?;
        let message = read(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: 14 bytes is shorter than the 128-byte MAT-file header; expected a MATLAB 5 \
                 MAT-file (as saved by MATLAB or scipy.io.savemat); download the file again",
                path.display()
            )
        );
        Ok(())
    }
}

//! Small dataset files in the real formats, written from code: the tests of every reader,
//! the CLI tests, the fuzz seeds and the loader benchmark use them, so that nothing has to
//! be downloaded to check a reader.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// MAT-file data types used here.
pub mod mi {
    /// `miINT8`.
    pub const INT8: u32 = 1;
    /// `miUINT8`.
    pub const UINT8: u32 = 2;
    /// `miINT32`.
    pub const INT32: u32 = 5;
    /// `miUINT32`.
    pub const UINT32: u32 = 6;
    /// `miDOUBLE`.
    pub const DOUBLE: u32 = 9;
    /// `miMATRIX`.
    pub const MATRIX: u32 = 14;
    /// `miCOMPRESSED`.
    pub const COMPRESSED: u32 = 15;
}

/// A level-5 MAT-file header: text, zero subsystem offset, version 0x0100, little-endian
/// mark `IM`.
pub fn mat_header() -> Vec<u8> {
    let mut bytes = format!(
        "{:<116}",
        "MATLAB 5.0 MAT-file, written by auglocal fixtures"
    )
    .into_bytes();
    bytes.extend([0u8; 8]);
    bytes.extend(0x0100u16.to_le_bytes());
    bytes.extend(b"IM");
    bytes
}

fn tagged(kind: u32, data: &[u8]) -> Vec<u8> {
    let mut bytes = kind.to_le_bytes().to_vec();
    bytes.extend((data.len() as u32).to_le_bytes());
    bytes.extend(data);
    bytes.resize(bytes.len().div_ceil(8) * 8, 0);
    bytes
}

/// One MAT-file variable as MATLAB writes it: a matrix element (array flags with `class`,
/// dimensions, name, real part stored as type `kind`), inside a zlib-compressed element when
/// `compress` (MATLAB's default).
pub fn mat_variable(
    name: &str,
    class: u8,
    dims: &[usize],
    kind: u32,
    data: &[u8],
    compress: bool,
) -> Vec<u8> {
    let mut body = tagged(mi::UINT32, &[class, 0, 0, 0, 0, 0, 0, 0]);
    let dims: Vec<u8> = dims
        .iter()
        .flat_map(|&d| (d as i32).to_le_bytes())
        .collect();
    body.extend(tagged(mi::INT32, &dims));
    body.extend(tagged(mi::INT8, name.as_bytes()));
    body.extend(tagged(kind, data));
    let matrix = tagged(mi::MATRIX, &body);
    if !compress {
        return matrix;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&matrix)
        .and_then(|_| encoder.finish())
        .map(|zipped| {
            let mut bytes = mi::COMPRESSED.to_le_bytes().to_vec();
            bytes.extend((zipped.len() as u32).to_le_bytes());
            bytes.extend(zipped);
            bytes
        })
        .expect("writing to memory cannot fail")
}

/// Writes an SVHN file (`X` 32x32x3xN uint8 column-major, `y` N labels 1..10 stored as
/// doubles in `miUINT8`, both compressed). `pixel(image, channel, row, col)` gives the values.
pub fn write_svhn(
    path: &Path,
    labels: &[u8],
    pixel: impl Fn(usize, usize, usize, usize) -> u8,
) -> std::io::Result<()> {
    let n = labels.len();
    let mut x = vec![0u8; n * 3072];
    for i in 0..n {
        for c in 0..3 {
            for row in 0..32 {
                for col in 0..32 {
                    x[row + 32 * col + 1024 * c + 3072 * i] = pixel(i, c, row, col);
                }
            }
        }
    }
    let mut bytes = mat_header();
    bytes.extend(mat_variable("X", 9, &[32, 32, 3, n], mi::UINT8, &x, true));
    bytes.extend(mat_variable("y", 6, &[n, 1], mi::UINT8, labels, true));
    std::fs::write(path, bytes)
}

/// Writes STL-10's `{split}_X.bin` (96x96x3, column-major planes) and `{split}_y.bin`
/// (labels 1..10) into `dir`. `pixel(image, channel, row, col)` gives the values.
pub fn write_stl10(
    dir: &Path,
    split: &str,
    labels: &[u8],
    pixel: impl Fn(usize, usize, usize, usize) -> u8,
) -> std::io::Result<()> {
    const PLANE: usize = 96 * 96;
    let mut bytes = vec![0u8; labels.len() * 3 * PLANE];
    for (i, image) in bytes.chunks_exact_mut(3 * PLANE).enumerate() {
        for c in 0..3 {
            for row in 0..96 {
                for col in 0..96 {
                    image[c * PLANE + col * 96 + row] = pixel(i, c, row, col);
                }
            }
        }
    }
    std::fs::write(dir.join(format!("{split}_X.bin")), bytes)?;
    std::fs::write(dir.join(format!("{split}_y.bin")), labels)
}

/// One batch file of CIFAR's "python version" (what torchvision downloads) as Python 2's
/// `cPickle.dump(batch, f, 2)` wrote them: a dict of `data` (a numpy `uint8` array of
/// N x 3072, rows red, green then blue planes), one list of integers per entry of `labels`
/// (`labels` for CIFAR-10; `fine_labels` and `coarse_labels` for CIFAR-100), `batch_label`
/// and `filenames`.
pub fn cifar_pickle(images: &[u8], labels: &[(&str, &[u32])]) -> Vec<u8> {
    let n = images.len() / 3072;
    assert_eq!(images.len(), n * 3072, "whole 3072-byte images");
    fn string(out: &mut Vec<u8>, text: &[u8]) {
        if text.len() < 256 {
            out.push(b'U');
            out.push(text.len() as u8);
        } else {
            out.push(b'T');
            out.extend((text.len() as u32).to_le_bytes());
        }
        out.extend(text);
    }
    fn int(out: &mut Vec<u8>, value: usize) {
        match value {
            0..=0xff => out.extend([b'K', value as u8]),
            0x100..=0xffff => {
                out.push(b'M');
                out.extend((value as u16).to_le_bytes());
            }
            _ => {
                out.push(b'J');
                out.extend((value as i32).to_le_bytes());
            }
        }
    }
    // APPENDS in runs of 1000, as the pickler batches them.
    fn list(out: &mut Vec<u8>, items: &[Vec<u8>]) {
        out.push(b']');
        for run in items.chunks(1000) {
            out.push(b'(');
            run.iter().for_each(|item| out.extend(item));
            out.push(b'e');
        }
    }
    let mut out = vec![0x80, 2, b'}', b'q', 1, b'('];
    string(&mut out, b"data");
    out.extend(b"cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03");
    out.extend([b'K', 0, 0x85]);
    string(&mut out, b"b");
    out.extend([0x87, b'R', b'q', 4, b'(', b'K', 1]);
    int(&mut out, n);
    int(&mut out, 3072);
    out.push(0x86);
    out.extend(b"cnumpy\ndtype\nq\x05");
    string(&mut out, b"u1");
    out.extend([b'K', 0, b'K', 1, 0x87, b'R', b'q', 6, b'(', b'K', 3]);
    string(&mut out, b"|");
    out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89");
    out.push(b'T');
    out.extend((images.len() as u32).to_le_bytes());
    out.extend(images);
    out.extend([b't', b'b']);
    for (key, values) in labels {
        string(&mut out, key.as_bytes());
        let items: Vec<Vec<u8>> = values
            .iter()
            .map(|&value| {
                let mut item = Vec::new();
                int(&mut item, value as usize);
                item
            })
            .collect();
        list(&mut out, &items);
    }
    string(&mut out, b"batch_label");
    string(&mut out, b"batch 1 of 1");
    string(&mut out, b"filenames");
    let names: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut item = Vec::new();
            string(&mut item, format!("image_{i:05}.png").as_bytes());
            item
        })
        .collect();
    list(&mut out, &names);
    out.extend([b'u', b'.']);
    out
}

/// Writes a gzip-compressed tar file holding `members` (path inside the archive, bytes), as
/// the datasets' official tarballs are.
pub fn write_tar_gz(path: &Path, members: &[(&str, &[u8])]) -> std::io::Result<()> {
    let file = File::create(path)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *bytes)?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// An RGB image of `width x height` with `pixel(x, y)`, encoded as PNG or JPEG (quality 90).
pub fn encode(
    width: usize,
    height: usize,
    format: image::ImageFormat,
    pixel: impl Fn(usize, usize) -> [u8; 3],
) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
        image::Rgb(pixel(x as usize, y as usize))
    });
    let mut bytes = Vec::new();
    let mut cursor = std::io::Cursor::new(&mut bytes);
    let written = match format {
        image::ImageFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut cursor, 90).encode_image(&image)
        }
        other => image.write_to(&mut cursor, other),
    };
    written.expect("encoding to memory cannot fail");
    bytes
}

/// Writes a parquet file as Hugging Face `datasets` does: `image_column` a struct
/// `{bytes, path}` (path null), then one int64 column per entry of `labels`. Snappy pages.
pub fn write_image_parquet(
    path: &Path,
    image_column: &str,
    images: &[Vec<u8>],
    labels: &[(&str, Vec<i64>)],
) -> std::io::Result<()> {
    write_parquet(path, image_column, images, labels).map_err(std::io::Error::other)
}

fn write_parquet(
    path: &Path,
    image_column: &str,
    images: &[Vec<u8>],
    labels: &[(&str, Vec<i64>)],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let label_fields: String = labels
        .iter()
        .map(|(name, _)| format!("optional int64 {name}; "))
        .collect();
    let schema = format!(
        "message schema {{ optional group {image_column} {{ optional binary bytes; \
         optional binary path (STRING); }} {label_fields}}}"
    );
    let schema = Arc::new(parse_message_type(&schema)?);
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut writer = SerializedFileWriter::new(File::create(path)?, schema, properties)?;
    let mut group = writer.next_row_group()?;
    let n = images.len();
    let bytes: Vec<ByteArray> = images.iter().map(|b| ByteArray::from(b.clone())).collect();
    let mut column = group.next_column()?.ok_or("no image.bytes column")?;
    column
        .typed::<ByteArrayType>()
        .write_batch(&bytes, Some(&vec![2; n]), None)?;
    column.close()?;
    // image.path is null: defined up to the struct only.
    let mut column = group.next_column()?.ok_or("no image.path column")?;
    column
        .typed::<ByteArrayType>()
        .write_batch(&[], Some(&vec![1; n]), None)?;
    column.close()?;
    for (_, values) in labels {
        let mut column = group.next_column()?.ok_or("no label column")?;
        column
            .typed::<Int64Type>()
            .write_batch(values, Some(&vec![1; n]), None)?;
        column.close()?;
    }
    group.close()?;
    writer.close()?;
    Ok(())
}

/// Creates a dataset repository in a Hugging Face cache folder as `huggingface_hub` lays it
/// out (`datasets--owner--name/refs/main` holding `sha`, `snapshots/<sha>/`) and returns the
/// snapshot folder. Files written there can be moved into `blobs/` with [`hub_blob`].
pub fn hub_snapshot(cache: &Path, repo: &str, sha: &str) -> std::io::Result<PathBuf> {
    let folder = crate::hub::repo_folder(cache, repo);
    std::fs::create_dir_all(folder.join("refs"))?;
    std::fs::write(folder.join("refs").join("main"), sha)?;
    let snapshot = folder.join("snapshots").join(sha);
    std::fs::create_dir_all(&snapshot)?;
    Ok(snapshot)
}

/// Moves `snapshot/name` into the repository's `blobs/` and links it back (a copy where
/// there are no symlinks), as the real cache stores files.
pub fn hub_blob(snapshot: &Path, name: &str) -> std::io::Result<()> {
    let file = snapshot.join(name);
    let blobs = snapshot.join("..").join("..").join("blobs");
    std::fs::create_dir_all(&blobs)?;
    let target = blobs.join(name.replace('/', "_"));
    std::fs::rename(&file, &target)?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(std::fs::canonicalize(&target)?, &file)?;
    #[cfg(not(unix))]
    std::fs::copy(&target, &file).map(|_| ())?;
    Ok(())
}

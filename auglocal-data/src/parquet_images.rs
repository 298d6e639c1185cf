//! Image datasets stored as parquet, as on the Hugging Face Hub: an image column (a struct
//! with `bytes`, PNG or JPEG, and `path`) and an integer label column. Read with the parquet
//! crate's record reader, decoded in parallel into an in-memory [`ImageSet`].

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::basic::Type as PhysicalType;
use parquet::column::page::Page;
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;
use rayon::prelude::*;

use crate::{Error, ImageSet, Result};

/// Which columns to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    /// The label column; by default `label`, else the only integer column.
    pub label: Option<String>,
    /// The image column; by default the struct column with a `bytes` field (`image` or
    /// `img` if there are several).
    pub image: Option<String>,
}

/// Rows of one or more parquet files: encoded images and labels, in file and row order.
#[derive(Debug, Default)]
pub struct Rows {
    /// Encoded image bytes, with the file and row they came from.
    pub images: Vec<(Vec<u8>, usize, usize)>,
    /// One label per image.
    pub labels: Vec<i64>,
    /// The files read.
    pub files: Vec<PathBuf>,
}

fn bad(path: &Path, problem: String, expected: &str) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        problem,
        expected: expected.to_string(),
    }
}

const LAYOUT: &str = "an image column (struct with `bytes`) and an integer label column, as \
    Hugging Face `datasets` writes them";

const DAMAGED: &str =
    "an intact parquet file: download it again (delete it from the Hugging Face cache)";

/// Picks the image and label columns of a parquet schema.
fn pick_columns(root: &Type, columns: &Columns, path: &Path) -> Result<(usize, usize)> {
    let fields = root.get_fields();
    let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
    let find = |wanted: &str| -> Result<usize> {
        names
            .iter()
            .position(|n| *n == wanted)
            .ok_or_else(|| Error::Columns {
                path: path.to_path_buf(),
                problem: format!("no column `{wanted}` (columns: {})", names.join(", ")),
            })
    };
    let image = match &columns.image {
        Some(name) => find(name)?,
        None => {
            let structs: Vec<usize> = (0..fields.len())
                .filter(|&i| {
                    fields[i].is_group()
                        && fields[i].get_fields().iter().any(|f| f.name() == "bytes")
                })
                .collect();
            match structs[..] {
                [one] => one,
                [] => {
                    return Err(Error::Columns {
                        path: path.to_path_buf(),
                        problem: format!("no image column (columns: {})", names.join(", ")),
                    })
                }
                _ => structs
                    .iter()
                    .copied()
                    .find(|&i| matches!(names[i], "image" | "img"))
                    .ok_or_else(|| Error::Columns {
                        path: path.to_path_buf(),
                        problem: format!("several image columns ({})", names.join(", ")),
                    })?,
            }
        }
    };
    let label = match &columns.label {
        Some(name) => find(name)?,
        None if names.contains(&"label") => find("label")?,
        None => {
            let integers: Vec<usize> = (0..fields.len())
                .filter(|&i| {
                    !fields[i].is_group()
                        && matches!(
                            fields[i].get_physical_type(),
                            PhysicalType::INT32 | PhysicalType::INT64
                        )
                })
                .collect();
            match integers[..] {
                [one] => one,
                _ => {
                    let candidates: Vec<&str> = integers.iter().map(|&i| names[i]).collect();
                    return Err(Error::Columns {
                        path: path.to_path_buf(),
                        problem: format!(
                            "cannot tell the label column: integer columns are [{}]",
                            candidates.join(", ")
                        ),
                    });
                }
            }
        }
    };
    Ok((image, label))
}

/// Reads the image bytes and labels of every row of `files`.
pub fn read_rows(files: &[PathBuf], columns: &Columns) -> Result<Rows> {
    let mut rows = Rows::default();
    for (file_index, path) in files.iter().enumerate() {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        read_file_rows(file, path, file_index, columns, &mut rows)?;
    }
    Ok(rows)
}

/// [`read_rows`] of one parquet file held in memory; `path` only names it in errors.
pub fn parse_rows(bytes: Vec<u8>, path: &Path, columns: &Columns) -> Result<Rows> {
    let mut rows = Rows::default();
    read_file_rows(bytes::Bytes::from(bytes), path, 0, columns, &mut rows)?;
    Ok(rows)
}

/// Appends the rows of parquet file number `file_index` (read through `source`) to `rows`.
///
/// The parquet crate panics on some malformed files instead of returning an error (found
/// by fuzzing, e.g. "Decoder for dict should have been set" in its column decoder); such a
/// panic becomes an error naming the file.
fn read_file_rows<R: ChunkReader + 'static>(
    source: R,
    path: &Path,
    file_index: usize,
    columns: &Columns,
    rows: &mut Rows,
) -> Result<()> {
    let read = || read_file_rows_unguarded(source, path, file_index, columns, rows);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        Err(bad(
            path,
            format!("the parquet reader failed on it ({message}); the file is damaged"),
            DAMAGED,
        ))
    })
}

fn read_file_rows_unguarded<R: ChunkReader + 'static>(
    source: R,
    path: &Path,
    file_index: usize,
    columns: &Columns,
    rows: &mut Rows,
) -> Result<()> {
    let reader = SerializedFileReader::new(source)
        .map_err(|e| bad(path, format!("not a readable parquet file: {e}"), LAYOUT))?;
    let root = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema();
    let (image, label) = pick_columns(root, columns, path)?;
    let fields = root.get_fields();
    let projection = Type::group_type_builder(root.name())
        .with_fields(vec![fields[image].clone(), fields[label].clone()])
        .build()
        .map_err(|e| bad(path, format!("cannot select the columns: {e}"), LAYOUT))?;
    let (image_name, label_name) = (fields[image].name(), fields[label].name());
    check_dictionaries(&reader, [image_name, label_name], path)?;
    let iter = reader
        .get_row_iter(Some(projection))
        .map_err(|e| bad(path, format!("cannot read rows: {e}"), LAYOUT))?;
    for (row_index, row) in iter.enumerate() {
        let row = row.map_err(|e| bad(path, format!("row {row_index}: {e}"), LAYOUT))?;
        let (mut bytes, mut value) = (None, None);
        for (name, field) in row.get_column_iter() {
            if name == image_name {
                bytes = image_bytes(field);
            } else if name == label_name {
                value = integer(field);
            }
        }
        let Some(bytes) = bytes else {
            return Err(bad(
                path,
                format!("row {row_index}: column `{image_name}` holds no image bytes"),
                LAYOUT,
            ));
        };
        let Some(value) = value else {
            return Err(bad(
                path,
                format!("row {row_index}: column `{label_name}` holds no integer"),
                LAYOUT,
            ));
        };
        rows.images.push((bytes, file_index, row_index));
        rows.labels.push(value);
    }
    rows.files.push(path.to_path_buf());
    Ok(())
}

/// Checks the dictionary pages of the columns under `fields` before the row reader
/// decodes them: parquet 60 allocates a dictionary's declared number of values (a `u32` of
/// the page header, 24 bytes each) before decoding it, so a damaged header could ask for
/// ~100 GB (found by fuzzing). Every dictionary value takes at least one byte of the page.
/// Data pages are skipped unread.
fn check_dictionaries<R: ChunkReader + 'static>(
    reader: &SerializedFileReader<R>,
    fields: [&str; 2],
    path: &Path,
) -> Result<()> {
    let schema = reader.metadata().file_metadata().schema_descr();
    let unreadable = |e: parquet::errors::ParquetError| {
        bad(path, format!("not a readable parquet file: {e}"), LAYOUT)
    };
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(unreadable)?;
        for c in 0..schema.num_columns() {
            let column = schema.column(c);
            if !fields.contains(&column.path().parts()[0].as_str()) {
                continue;
            }
            let mut pages = group.get_column_page_reader(c).map_err(unreadable)?;
            while let Some(page) = pages.peek_next_page().map_err(unreadable)? {
                if !page.is_dict {
                    pages.skip_next_page().map_err(unreadable)?;
                    continue;
                }
                if let Some(Page::DictionaryPage {
                    buf, num_values, ..
                }) = pages.get_next_page().map_err(unreadable)?
                {
                    if num_values as usize > buf.len() {
                        return Err(bad(
                            path,
                            format!(
                                "row group {g}, column `{}`: a dictionary page declares \
                                 {num_values} values in {} bytes; the file is damaged",
                                column.path().string(),
                                buf.len()
                            ),
                            DAMAGED,
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn image_bytes(field: &Field) -> Option<Vec<u8>> {
    match field {
        Field::Group(group) => group.get_column_iter().find_map(|(name, f)| match f {
            Field::Bytes(b) if name == "bytes" => Some(b.data().to_vec()),
            _ => None,
        }),
        Field::Bytes(b) => Some(b.data().to_vec()),
        _ => None,
    }
}

fn integer(field: &Field) -> Option<i64> {
    match *field {
        Field::Byte(v) => Some(i64::from(v)),
        Field::Short(v) => Some(i64::from(v)),
        Field::Int(v) => Some(i64::from(v)),
        Field::Long(v) => Some(v),
        Field::UByte(v) => Some(i64::from(v)),
        Field::UShort(v) => Some(i64::from(v)),
        Field::UInt(v) => Some(i64::from(v)),
        Field::ULong(v) => i64::try_from(v).ok(),
        _ => None,
    }
}

/// Decodes rows into an [`ImageSet`] named `name`. Every image must have the size of the
/// first; labels must be in `0..classes` (`classes`: given, else the largest label + 1).
pub fn decode(name: &str, rows: Rows, classes: Option<usize>) -> Result<ImageSet> {
    let files = &rows.files;
    let path_of = |file: usize| files[file].as_path();
    let decoded: Vec<Result<(Vec<u8>, usize, usize)>> = rows
        .images
        .par_iter()
        .map(|(bytes, file, row)| {
            crate::image_folder::decode_chw(bytes).map_err(|e| {
                bad(
                    path_of(*file),
                    format!("row {row}: the image does not decode: {e}"),
                    "PNG or JPEG bytes in the image column",
                )
            })
        })
        .collect();
    let mut images = Vec::new();
    let mut size = None;
    for (result, (_, file, row)) in decoded.into_iter().zip(&rows.images) {
        let (chw, height, width) = result?;
        match size {
            None => size = Some((height, width)),
            Some(first) if first != (height, width) => {
                return Err(bad(
                    path_of(*file),
                    format!(
                        "row {row} is {height}x{width} but the first image is {}x{}",
                        first.0, first.1
                    ),
                    "images of one size (an image folder takes images of mixed sizes)",
                ))
            }
            Some(_) => {}
        }
        images.extend(chw);
    }
    let largest = rows.labels.iter().copied().max().unwrap_or(0);
    let classes = classes.unwrap_or(largest.max(0) as usize + 1);
    let mut labels = Vec::with_capacity(rows.labels.len());
    for (&label, (_, file, row)) in rows.labels.iter().zip(&rows.images) {
        if label < 0 || label as usize >= classes {
            return Err(bad(
                path_of(*file),
                format!("row {row} has label {label}"),
                &format!("labels in 0..{classes}"),
            ));
        }
        labels.push(label as u32);
    }
    let (height, width) = size.unwrap_or((0, 0));
    Ok(ImageSet {
        name: name.to_string(),
        images,
        labels,
        channels: 3,
        height,
        width,
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn two_rows() -> Vec<u8> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("train.parquet");
        let png = |v: u8| fixtures::encode(2, 1, image::ImageFormat::Png, |x, _| [v, x as u8, 0]);
        fixtures::write_image_parquet(&path, "image", &[png(5), png(6)], &[("label", vec![1, 0])])
            .unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_file_in_memory_reads_as_from_disk() {
        let path = Path::new("mem.parquet");
        let rows = parse_rows(two_rows(), path, &Columns::default()).unwrap();
        assert_eq!(rows.labels, [1, 0]);
        assert_eq!(rows.files, [path]);
        let set = decode("mem", rows, None).unwrap();
        assert_eq!((set.height, set.width, set.classes), (1, 2, 2));
        // CHW: red plane, green plane (x), blue plane, of each image in turn.
        assert_eq!(set.images, [5, 5, 0, 1, 0, 0, 6, 6, 0, 1, 0, 0]);
    }

    #[test]
    fn a_truncated_file_is_an_error_naming_it() {
        let bytes = two_rows();
        let cut = bytes[..bytes.len() - 10].to_vec();
        let err = parse_rows(cut, Path::new("cut.parquet"), &Columns::default()).unwrap_err();
        assert!(
            err.to_string().contains("cut.parquet")
                && err.to_string().contains("not a readable parquet file"),
            "{err}"
        );
    }

    /// A source whose every read panics, as the parquet crate does on some damaged files.
    struct Panicking;

    impl parquet::file::reader::Length for Panicking {
        fn len(&self) -> u64 {
            panic!("Decoder for dict should have been set")
        }
    }

    impl ChunkReader for Panicking {
        type T = std::io::Empty;

        fn get_read(&self, _start: u64) -> parquet::errors::Result<Self::T> {
            panic!("Decoder for dict should have been set")
        }

        fn get_bytes(&self, _start: u64, _length: usize) -> parquet::errors::Result<bytes::Bytes> {
            panic!("Decoder for dict should have been set")
        }
    }

    #[test]
    fn a_panic_inside_the_parquet_crate_is_an_error_naming_the_file() {
        let path = Path::new("fuzzed.parquet");
        let mut rows = Rows::default();
        let err = read_file_rows(Panicking, path, 0, &Columns::default(), &mut rows).unwrap_err();
        assert_eq!(
            err.to_string(),
            "fuzzed.parquet: the parquet reader failed on it (Decoder for dict should have been \
             set); the file is damaged; expected an intact parquet file: download it again \
             (delete it from the Hugging Face cache)"
        );
    }

    /// The error of reading `bytes` as `fuzzed.parquet`.
    fn fuzzed_error(bytes: &[u8]) -> String {
        let path = Path::new("fuzzed.parquet");
        let err = parse_rows(bytes.to_vec(), path, &Columns::default()).unwrap_err();
        err.to_string()
    }

    #[test]
    fn a_dictionary_encoded_page_without_a_dictionary_is_an_error() {
        // Found by `cargo fuzz run parquet`: this file made parquet 60's column decoder
        // panic ("Decoder for dict should have been set"); the dictionary check now stops
        // at its page of unknown type first.
        let bytes = include_bytes!("../tests/fuzz_cases/parquet-dict-decoder-unset.parquet");
        assert_eq!(
            fuzzed_error(bytes),
            format!("fuzzed.parquet: not a readable parquet file: Parquet error: Unexpected PageType 9; expected {LAYOUT}")
        );
    }

    #[test]
    fn an_oversized_dictionary_is_refused_before_it_is_allocated() {
        // Found by `cargo fuzz run parquet` (out of memory): a dictionary page header that
        // declares 101,455,920 values in 172 bytes, which parquet 60 allocates (24 bytes
        // each) before decoding them.
        let bytes = include_bytes!("../tests/fuzz_cases/parquet-dictionary-oversized.parquet");
        assert_eq!(
            fuzzed_error(bytes),
            "fuzzed.parquet: row group 0, column `image.bytes`: a dictionary page declares \
             101455920 values in 172 bytes; the file is damaged; expected an intact parquet \
             file: download it again (delete it from the Hugging Face cache)"
        );
    }
}

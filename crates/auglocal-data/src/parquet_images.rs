//! Image datasets stored as parquet, as on the Hugging Face Hub: an image column (a struct
//! with `bytes`, PNG or JPEG, and `path`) and an integer label column. Read with the parquet
//! crate's record reader, decoded in parallel into an in-memory [`ImageSet`].

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::basic::Type as PhysicalType;
use parquet::file::reader::{FileReader, SerializedFileReader};
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
    Hugging Face `datasets` writes them; name the label column with --label-column";

/// Picks the image and label columns of a parquet schema.
fn pick_columns(root: &Type, columns: &Columns, path: &Path) -> Result<(usize, usize)> {
    let fields = root.get_fields();
    let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
    let find = |wanted: &str| -> Result<usize> {
        names.iter().position(|n| *n == wanted).ok_or_else(|| {
            bad(
                path,
                format!("no column `{wanted}` (columns: {})", names.join(", ")),
                LAYOUT,
            )
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
                    return Err(bad(
                        path,
                        format!("no image column (columns: {})", names.join(", ")),
                        LAYOUT,
                    ))
                }
                _ => structs
                    .iter()
                    .copied()
                    .find(|&i| matches!(names[i], "image" | "img"))
                    .ok_or_else(|| {
                        bad(
                            path,
                            format!("several image columns ({})", names.join(", ")),
                            LAYOUT,
                        )
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
                    return Err(bad(
                        path,
                        format!(
                            "cannot tell the label column: integer columns are [{}]",
                            candidates.join(", ")
                        ),
                        LAYOUT,
                    ));
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
        let reader = SerializedFileReader::new(file)
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
        rows.files.push(path.clone());
    }
    Ok(rows)
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
            let image = image::load_from_memory(bytes)
                .map_err(|e| {
                    bad(
                        path_of(*file),
                        format!("row {row}: the image does not decode: {e}"),
                        "PNG or JPEG bytes in the image column",
                    )
                })?
                .to_rgb8();
            Ok(crate::resize::chw_from_rgb(&image))
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
                    "images of one size (use --dataset imagefolder for images of mixed sizes)",
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

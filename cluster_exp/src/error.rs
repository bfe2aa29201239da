//! Input errors that name the file, the line and the field.

use std::path::{Path, PathBuf};

/// An error in a user-supplied input file. Every variant says where, so a user
/// can fix the file without reading our source.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    // The OS error is the source, so `{:#}` prints it once.
    #[error("{file}: cannot read")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: the file is empty (expected a header line and at least one row)")]
    Empty { file: PathBuf },
    #[error("{file}: line 1: missing column `{column}` (header must contain: {expected})")]
    MissingColumn {
        file: PathBuf,
        column: String,
        expected: String,
    },
    #[error("{file}: line {line}: field `{field}`: {message} (got {value:?})")]
    BadField {
        file: PathBuf,
        line: usize,
        field: String,
        value: String,
        message: String,
    },
    #[error("{file}: line {line}: {message}")]
    BadRow {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// Reads a whole input file, naming it in the error.
pub fn read_input(file: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(file).map_err(|source| InputError::Io {
        file: file.to_path_buf(),
        source,
    })
}

/// A CSV reader over `text` (fields trimmed, ragged rows allowed so that the row checks can
/// name the bad field) and its header row; `file` labels errors.
pub fn csv_with_header<'a>(
    text: &'a str,
    file: &Path,
) -> Result<(csv::Reader<&'a [u8]>, csv::StringRecord), InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| InputError::BadRow {
            file: file.to_path_buf(),
            line: 1,
            message: e.to_string(),
        })?
        .clone();
    Ok((reader, headers))
}

//! Input errors that name the file, the line and the field.

use std::path::PathBuf;

/// An error in a user-supplied input file. Every variant says where, so a user
/// can fix the file without reading our source.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: cannot read: {source}")]
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

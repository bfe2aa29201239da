//! Input errors that name the file, the line and the field, and the reading helpers every
//! input parser shares: a size limit, line numbers as in the file whatever its line endings,
//! and strict rows.

use std::borrow::Cow;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

/// Largest input file read (128 MiB, about 1.5 million trace rows). Reading stops here, so a
/// device or a runaway file (`/dev/zero`) fails at once instead of filling memory.
pub const MAX_INPUT_BYTES: u64 = 128 << 20;

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
    #[error("{file}: larger than the {limit}-byte limit for input files (is it the right file?)")]
    TooLarge { file: PathBuf, limit: u64 },
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

/// Reads a whole input file as text, naming it in the error. Files over [`MAX_INPUT_BYTES`]
/// and text that is not UTF-8 (reported with its line) are refused.
pub fn read_input(file: &Path) -> Result<String, InputError> {
    let io_error = |source| InputError::Io {
        file: file.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .map_err(io_error)?
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge {
            file: file.to_path_buf(),
            limit: MAX_INPUT_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        InputError::BadRow {
            file: file.to_path_buf(),
            line: line_breaks(&e.as_bytes()[..valid]) + 1,
            message: "not UTF-8 text (is it the right file?)".into(),
        }
    })
}

/// Line breaks in `bytes`, counting CRLF, LF and a lone CR once each (as editors number lines).
fn line_breaks(bytes: &[u8]) -> usize {
    let lf = bytes.iter().filter(|&&b| b == b'\n').count();
    let lone_cr = bytes
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
        .count();
    lf + lone_cr
}

/// `text` with CRLF and lone CR line endings turned into LF, so that the CSV reader (which
/// counts only LF) reports lines as the file numbers them.
fn unix_line_endings(text: &str) -> Cow<'_, str> {
    if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A CSV reader over `text`, fields trimmed.
pub type CsvReader<'a> = csv::Reader<Cursor<Cow<'a, [u8]>>>;

/// A CSV reader over `text` (fields trimmed, any line endings) and its header row; `file`
/// labels errors. Rows are read with [`data_rows`], which checks their length against the
/// header and reports file line numbers.
pub fn csv_with_header<'a>(
    text: &'a str,
    file: &Path,
) -> Result<(CsvReader<'a>, csv::StringRecord), InputError> {
    let bytes = match unix_line_endings(text) {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    };
    // Row lengths are checked by `data_rows`, which can say which line and what it expected.
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(Cursor::new(bytes));
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

/// Where each of `columns` sits in `headers`; a missing one is an error naming the file and
/// the expected header (`expected`).
pub fn column_indices(
    headers: &csv::StringRecord,
    columns: &[&str],
    expected: &str,
    file: &Path,
) -> Result<Vec<usize>, InputError> {
    columns
        .iter()
        .map(|&name| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| InputError::MissingColumn {
                    file: file.to_path_buf(),
                    column: name.to_string(),
                    expected: expected.into(),
                })
        })
        .collect()
}

/// The data rows of `reader` with their line in the file. Blank rows (every field empty) are
/// skipped; a row with more or fewer fields than `headers` is an error naming its line, so a
/// missing field never shifts the others into the wrong columns.
pub fn data_rows<'r, 'a>(
    reader: &'r mut CsvReader<'a>,
    headers: &csv::StringRecord,
    file: &'r Path,
) -> impl Iterator<Item = Result<(usize, csv::StringRecord), InputError>> + use<'r, 'a> {
    let expected = headers.len();
    let lines = LineIndex::new(reader.get_ref().get_ref());
    reader.records().filter_map(move |record| {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_at(p.byte()));
                return Some(Err(InputError::BadRow {
                    file: file.to_path_buf(),
                    line,
                    message: e.to_string(),
                }));
            }
        };
        let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
        if record.iter().all(str::is_empty) {
            return None;
        }
        if record.len() != expected {
            return Some(Err(InputError::BadRow {
                file: file.to_path_buf(),
                line,
                message: format!(
                    "{} fields, but the header has {expected} (every row needs one value per column)",
                    record.len()
                ),
            }));
        }
        Some(Ok((line, record)))
    })
}

/// Line numbers from byte offsets. The CSV reader's own line count puts a record that follows
/// blank lines on the first blank one, so lines are counted here from the text instead.
struct LineIndex {
    /// Byte offset of every `\n` (line endings are LF after [`csv_with_header`]).
    newlines: Vec<u64>,
}

impl LineIndex {
    fn new(text: &[u8]) -> LineIndex {
        let newlines = text
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .map(|(i, _)| i as u64)
            .collect();
        LineIndex { newlines }
    }

    /// The 1-based line of the first character at or after `byte` that is not a line break
    /// (a record's offset points at the blank lines before it).
    fn line_at(&self, byte: u64) -> usize {
        let mut before = self.newlines.partition_point(|&p| p < byte);
        let mut at = byte;
        while self.newlines.get(before) == Some(&at) {
            before += 1;
            at += 1;
        }
        before + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_follow_the_file_for_every_line_ending() {
        for eol in ["\n", "\r\n", "\r"] {
            let text = ["a,b", "1,2", "", "3,4", "5"].join(eol);
            let file = Path::new("t.csv");
            let (mut reader, headers) = csv_with_header(&text, file).unwrap();
            let rows: Vec<_> = data_rows(&mut reader, &headers, file).collect();
            assert_eq!(rows.len(), 3, "{eol:?}");
            assert_eq!(rows[0].as_ref().unwrap().0, 2, "{eol:?}");
            assert_eq!(rows[1].as_ref().unwrap().0, 4, "{eol:?}");
            let err = rows[2].as_ref().unwrap_err().to_string();
            assert!(
                err.starts_with("t.csv: line 5: 1 fields, but the header has 2"),
                "{err}"
            );
        }
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin.csv");
        std::fs::write(&path, b"a,b\r\n1,2\r3,\xff\n").unwrap();
        let err = read_input(&path).unwrap_err().to_string();
        assert!(err.contains("bin.csv: line 3: not UTF-8"), "{err}");
    }
}

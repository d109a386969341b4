//! Parsing of tracepoint `format` files (`events/<category>/<name>/format` under tracefs).
//!
//! Rust eBPF programs cannot use CO-RE relocations, so field offsets come from here and are
//! handed to the programs as globals before loading.

use std::{collections::HashMap, path::Path};

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// Why a format could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be read (tracepoint missing, tracefs not mounted).
    #[error("cannot read tracepoint format {path}: {source}")]
    Read {
        /// The format file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A field the program needs is not in the format.
    #[error("tracepoint {tracepoint} has no field {field:?} (kernel layout differs)")]
    MissingField {
        /// `category/name`.
        tracepoint: String,
        /// The field.
        field: String,
    },
}

/// The fields of a tracepoint, by name.
#[derive(Debug, Clone, Default)]
pub struct Format {
    tracepoint: String,
    fields: HashMap<String, Field>,
}

impl Format {
    /// Reads `events/<category>/<name>/format` under the tracefs `root`.
    pub fn read(root: &Path, category: &str, name: &str) -> Result<Self, FormatError> {
        let path = root.join("events").join(category).join(name).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| FormatError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(&format!("{category}/{name}"), &text))
    }

    /// Parses the text of a format file.
    pub fn parse(tracepoint: &str, text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            // `field:<declaration>;\toffset:N;\tsize:N;\tsigned:N;`
            let mut parts = rest.split(';').map(str::trim);
            let Some(declaration) = parts.next() else {
                continue;
            };
            let mut offset = None;
            let mut size = None;
            for part in parts {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            let (Some(offset), Some(size)) = (offset, size) else {
                continue;
            };
            // The name is the last word of the declaration, without an array suffix.
            let Some(last) = declaration.split_whitespace().last() else {
                continue;
            };
            let name = last
                .split('[')
                .next()
                .unwrap_or(last)
                .trim_start_matches('*');
            fields.insert(name.to_owned(), Field { offset, size });
        }
        Self {
            tracepoint: tracepoint.to_owned(),
            fields,
        }
    }

    /// A field by name.
    pub fn field(&self, name: &str) -> Result<Field, FormatError> {
        self.fields
            .get(name)
            .copied()
            .ok_or_else(|| FormatError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sched:sched_process_exec` on Linux 6.x.
    const EXEC_FORMAT: &str = "name: sched_process_exec
ID: 310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;

print fmt: \"filename=%s pid=%d old_pid=%d\", __get_str(filename), REC->pid, REC->old_pid
";

    #[test]
    fn parses_exec_format() {
        let f = Format::parse("sched/sched_process_exec", EXEC_FORMAT);
        assert_eq!(f.field("filename").unwrap(), Field { offset: 8, size: 4 });
        assert_eq!(
            f.field("pid").unwrap(),
            Field {
                offset: 12,
                size: 4
            }
        );
        assert_eq!(
            f.field("old_pid").unwrap(),
            Field {
                offset: 16,
                size: 4
            }
        );
        assert_eq!(f.field("common_pid").unwrap().offset, 4);
        let err = f.field("nope").unwrap_err().to_string();
        assert!(
            err.contains("sched/sched_process_exec") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn array_and_pointer_fields() {
        let f = Format::parse(
            "x/y",
            "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
             \tfield:const char * buf;\toffset:24;\tsize:8;\tsigned:0;\n",
        );
        assert_eq!(
            f.field("comm").unwrap(),
            Field {
                offset: 8,
                size: 16
            }
        );
        assert_eq!(
            f.field("buf").unwrap(),
            Field {
                offset: 24,
                size: 8
            }
        );
    }
}

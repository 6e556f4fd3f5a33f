//! Parquet output with typed columns: the SQL on FHIR default type mapping
//! (boolean → BOOLEAN, integer/positiveInt/unsignedInt → INT,
//! integer64 → BIGINT, everything else — decimals and dates included — as
//! text in FHIR's canonical form), zstd-compressed, written in row groups.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::Value as Json;

use crate::{Row, View, ViewError};

/// Rows per record batch.
const BATCH: usize = 8192;

enum Builder {
    Bool(BooleanBuilder),
    Int(Int32Builder),
    Long(Int64Builder),
    Text(StringBuilder),
}

/// A Parquet file being written, one batch of rows at a time.
pub struct ParquetWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: Arc<Schema>,
    pending: Vec<Row>,
}

fn data_type(ty: Option<&str>, collection: bool) -> DataType {
    if collection {
        return DataType::Utf8;
    }
    match ty {
        Some("boolean") => DataType::Boolean,
        Some("integer" | "positiveInt" | "unsignedInt") => DataType::Int32,
        Some("integer64") => DataType::Int64,
        _ => DataType::Utf8,
    }
}

impl<W: Write + Send> ParquetWriter<W> {
    /// Starts a file whose schema comes from the view's columns.
    pub fn new(view: &View, out: W) -> Result<ParquetWriter<W>, ViewError> {
        let fields: Vec<Field> = view.column_defs().iter().map(|c| Field::new(&c.name, data_type(c.ty.as_deref(), c.collection), true)).collect();
        let schema = Arc::new(Schema::new(fields));
        let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(|e| ViewError(format!("parquet: {e}")))?;
        Ok(ParquetWriter { writer, schema, pending: Vec::with_capacity(BATCH) })
    }

    /// Adds a row.
    pub fn write(&mut self, row: Row) -> Result<(), ViewError> {
        self.pending.push(row);
        if self.pending.len() >= BATCH { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), ViewError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut builders: Vec<Builder> = self
            .schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
                DataType::Int32 => Builder::Int(Int32Builder::new()),
                DataType::Int64 => Builder::Long(Int64Builder::new()),
                _ => Builder::Text(StringBuilder::new()),
            })
            .collect();
        for row in self.pending.drain(..) {
            for (b, v) in builders.iter_mut().zip(row.values) {
                match (b, v) {
                    (Builder::Bool(b), Json::Bool(x)) => b.append_value(x),
                    (Builder::Bool(b), _) => b.append_null(),
                    (Builder::Int(b), Json::Number(n)) => b.append_option(n.as_i64().and_then(|i| i32::try_from(i).ok())),
                    (Builder::Int(b), _) => b.append_null(),
                    (Builder::Long(b), Json::Number(n)) => b.append_option(n.as_i64()),
                    (Builder::Long(b), _) => b.append_null(),
                    (Builder::Text(b), Json::Null) => b.append_null(),
                    (Builder::Text(b), Json::String(s)) => b.append_value(s),
                    // Decimals keep their written digits; collections are JSON text.
                    (Builder::Text(b), other) => b.append_value(other.to_string()),
                }
            }
        }
        let arrays: Vec<ArrayRef> = builders
            .into_iter()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Bool(mut b) => Arc::new(b.finish()),
                    Builder::Int(mut b) => Arc::new(b.finish()),
                    Builder::Long(mut b) => Arc::new(b.finish()),
                    Builder::Text(mut b) => Arc::new(b.finish()),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| ViewError(format!("parquet: {e}")))?;
        self.writer.write(&batch).map_err(|e| ViewError(format!("parquet: {e}")))
    }

    /// Writes what is pending and the file's footer.
    pub fn finish(mut self) -> Result<(), ViewError> {
        self.flush()?;
        self.writer.close().map(|_| ()).map_err(|e| ViewError(format!("parquet: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use serde_json::json;

    #[test]
    fn typed_columns_round_trip() {
        let view = View::parse(&json!({"resource": "Patient", "select": [{"column": [
            {"name": "id", "path": "id", "type": "id"},
            {"name": "active", "path": "active", "type": "boolean"},
            {"name": "births", "path": "multipleBirth.ofType(integer)", "type": "integer"},
            {"name": "given", "path": "name.given", "type": "string", "collection": true}
        ]}]}))
        .unwrap();
        let path = std::env::temp_dir().join(format!("veil-views-{}.parquet", std::process::id()));
        let mut w = ParquetWriter::new(&view, std::fs::File::create(&path).unwrap()).unwrap();
        for i in 0..10_000 {
            let p = json!({"resourceType": "Patient", "id": format!("p{i}"), "active": i % 2 == 0, "multipleBirthInteger": i, "name": [{"given": ["A", "B"]}]});
            for row in view.rows(&p).unwrap() {
                w.write(row).unwrap();
            }
        }
        w.finish().unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 10_000);
        let schema = reader.metadata().file_metadata().schema_descr();
        let types: Vec<String> = (0..4).map(|i| format!("{:?}", schema.column(i).physical_type())).collect();
        assert_eq!(types, ["BYTE_ARRAY", "BOOLEAN", "INT32", "BYTE_ARRAY"]);
        let first = reader.get_row_iter(None).unwrap().next().unwrap().unwrap();
        assert_eq!(first.to_string(), r#"{id: "p0", active: true, births: 0, given: "["A","B"]"}"#);
        std::fs::remove_file(&path).unwrap();
    }
}

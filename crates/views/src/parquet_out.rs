//! Parquet output with typed columns, zstd-compressed, written in row
//! groups. Views use the SQL on FHIR default type mapping (boolean →
//! BOOLEAN, integer/positiveInt/unsignedInt → INT, integer64 → BIGINT,
//! everything else — decimals and dates included — as text in FHIR's
//! canonical form); tables made elsewhere (study cubes) give their own
//! [`ColumnType`]s, which add DATE.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Date32Builder, Int32Builder, Int64Builder, StringBuilder};
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
    Date(Date32Builder),
    Text(StringBuilder),
}

/// A Parquet column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// BOOLEAN.
    Boolean,
    /// INT (32 bits).
    Integer,
    /// BIGINT.
    BigInt,
    /// DATE, from `YYYY-MM-DD` text (anything else is written as null).
    Date,
    /// VARCHAR.
    Text,
}

impl ColumnType {
    /// The SQL on FHIR default mapping of a view column's declared type.
    pub fn of_view_column(ty: Option<&str>, collection: bool) -> ColumnType {
        if collection {
            return ColumnType::Text;
        }
        match ty {
            Some("boolean") => ColumnType::Boolean,
            Some("integer" | "positiveInt" | "unsignedInt") => ColumnType::Integer,
            Some("integer64") => ColumnType::BigInt,
            _ => ColumnType::Text,
        }
    }

    /// The type's name in SQL, as DuckDB reports it.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Integer => "INTEGER",
            ColumnType::BigInt => "BIGINT",
            ColumnType::Date => "DATE",
            ColumnType::Text => "VARCHAR",
        }
    }

    /// The type named `name` by [`ColumnType::sql_name`].
    pub fn from_sql_name(name: &str) -> Option<ColumnType> {
        [ColumnType::Boolean, ColumnType::Integer, ColumnType::BigInt, ColumnType::Date, ColumnType::Text]
            .into_iter()
            .find(|t| t.sql_name() == name)
    }

    fn data_type(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Integer => DataType::Int32,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Date => DataType::Date32,
            ColumnType::Text => DataType::Utf8,
        }
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn epoch_days(text: &str) -> Option<i32> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (text[0..4].parse().ok()?, text[5..7].parse().ok()?, text[8..10].parse().ok()?);
    if !(1..=12).contains(&m) || d < 1 || d > veil_util::calendar::days_in_month(y, m) {
        return None;
    }
    i32::try_from(veil_util::calendar::days_from_civil(y, m, d)).ok()
}

/// A Parquet file being written, one batch of rows at a time.
pub struct ParquetWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: Arc<Schema>,
    pending: Vec<Row>,
}

impl<W: Write + Send> ParquetWriter<W> {
    /// Starts a file whose schema comes from the view's columns.
    pub fn new(view: &View, out: W) -> Result<ParquetWriter<W>, ViewError> {
        let columns: Vec<(&str, ColumnType)> = view
            .column_defs()
            .iter()
            .map(|c| (c.name.as_str(), ColumnType::of_view_column(c.ty.as_deref(), c.collection)))
            .collect();
        ParquetWriter::with_columns(&columns, out)
    }

    /// Starts a file with the given columns (all nullable).
    pub fn with_columns(columns: &[(&str, ColumnType)], out: W) -> Result<ParquetWriter<W>, ViewError> {
        let fields: Vec<Field> = columns.iter().map(|(name, ty)| Field::new(*name, ty.data_type(), true)).collect();
        let schema = Arc::new(Schema::new(fields));
        let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
        let writer =
            ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(|e| ViewError(format!("parquet: {e}")))?;
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
                DataType::Date32 => Builder::Date(Date32Builder::new()),
                _ => Builder::Text(StringBuilder::new()),
            })
            .collect();
        for row in self.pending.drain(..) {
            for (b, v) in builders.iter_mut().zip(row.values) {
                match (b, v) {
                    (Builder::Bool(b), Json::Bool(x)) => b.append_value(x),
                    (Builder::Bool(b), _) => b.append_null(),
                    (Builder::Int(b), Json::Number(n)) => {
                        b.append_option(n.as_i64().and_then(|i| i32::try_from(i).ok()))
                    }
                    (Builder::Int(b), _) => b.append_null(),
                    (Builder::Long(b), Json::Number(n)) => b.append_option(n.as_i64()),
                    (Builder::Long(b), _) => b.append_null(),
                    (Builder::Date(b), Json::String(s)) => b.append_option(epoch_days(&s)),
                    (Builder::Date(b), _) => b.append_null(),
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
                    Builder::Date(mut b) => Arc::new(b.finish()),
                    Builder::Text(mut b) => Arc::new(b.finish()),
                }
            })
            .collect();
        let batch =
            RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| ViewError(format!("parquet: {e}")))?;
        self.writer.write(&batch).map_err(|e| ViewError(format!("parquet: {e}")))
    }

    /// Writes what is pending and the file's footer.
    /// Writes what is pending and the file's footer; gives back the writer.
    pub fn finish(mut self) -> Result<W, ViewError> {
        self.flush()?;
        self.writer.into_inner().map_err(|e| ViewError(format!("parquet: {e}")))
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

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(epoch_days("1970-01-01"), Some(0));
        assert_eq!(epoch_days("2000-03-01"), Some(11017));
        assert_eq!(epoch_days("1969-12-31"), Some(-1));
        for bad in ["2021-02-29", "2021-13-01", "2021-1-01", "2021", "2021-01-01T00:00:00Z"] {
            assert_eq!(epoch_days(bad), None, "{bad}");
        }
    }
}

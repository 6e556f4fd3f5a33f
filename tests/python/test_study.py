"""The built-in `flu` study, checked from outside Veil.

The Synthea sample is de-identified with `veil export-preset flu --policy`'s
policy, then:

* `veil study build flu` and `veil study export flu` write the data package;
* DuckDB computes the same cubes independently, in SQL, from the same
  de-identified NDJSON (`GROUP BY CUBE`, `count(DISTINCT …)`, `HAVING >= 10`),
  and both the CSV and the Parquet files must hold exactly those rows, in
  Cumulus' order;
* DuckDB and pyarrow read every Parquet and CSV file with the column types
  `veil study show flu` declares;
* no exported cell is under the minimum, and the zip holds exactly the
  Parquet files and the manifest.

Run by scripts/test with VEIL (the binary) set (flu_export.py makes the
data package once for every test module):
    VEIL=target/debug/veil python -m unittest discover -s tests/python
"""
import json
import os
import unittest
import zipfile

import duckdb
import pyarrow.csv
import pyarrow.parquet

import flu_export
from flu_export import veil

# The CVX codes the flu view counts, restated here on purpose: the check
# must not read Veil's own view to decide what it expects.
FLU_CVX = ["15", "16", "88", "111", "135", "140", "141", "144", "149", "150", "151", "153", "155",
           "158", "161", "166", "168", "171", "185", "186", "194", "197", "200", "201", "202", "205", "231", "320"]

ARROW_TYPES = {"BIGINT": "int64", "INTEGER": "int32", "VARCHAR": "string", "DATE": "date32[day]"}


class FluStudy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        flu = flu_export.build()
        deid, cls.folder = flu.deid, flu.folder
        cls.shape = json.loads(veil("study", "show", "flu").stdout)
        cls.db = duckdb.connect()
        cls.db.execute(f"""
            CREATE TABLE vaccination AS
            WITH imm AS (
                SELECT json_extract_string(json, '$.id') AS immunization_ref,
                       regexp_extract(json_extract_string(json, '$.patient.reference'), '^Patient/([^/]+)$', 1) AS patient_ref,
                       json_extract_string(json, '$.occurrenceDateTime') AS occurred,
                       json_extract_string(json, '$.status') AS status,
                       list_filter(CAST(json_extract(json, '$.vaccineCode.coding') AS JSON[]),
                                   lambda c: json_extract_string(c, '$.system') = 'http://hl7.org/fhir/sid/cvx') AS cvx
                FROM read_ndjson_objects('{deid}/Immunization*.ndjson')
            ), pat AS (
                SELECT json_extract_string(json, '$.id') AS patient_ref,
                       json_extract_string(json, '$.birthDate') AS birth_date,
                       json_extract_string(json, '$.gender') AS sex
                FROM read_ndjson_objects('{deid}/Patient*.ndjson')
            ), joined AS (
                SELECT imm.*, pat.birth_date, pat.sex,
                       CASE WHEN length(pat.birth_date) >= 10 AND length(imm.occurred) >= 10 THEN
                         greatest(0, date_part('year', CAST(substr(imm.occurred, 1, 10) AS DATE)) - date_part('year', CAST(pat.birth_date AS DATE))
                           - CASE WHEN substr(imm.occurred, 6, 5) < substr(pat.birth_date, 6, 5) THEN 1 ELSE 0 END)
                       END AS age
                FROM imm LEFT JOIN pat USING (patient_ref)
                WHERE imm.status = 'completed'
                  AND len(list_filter(imm.cvx, lambda c: json_extract_string(c, '$.code') IN ({', '.join(repr(c) for c in FLU_CVX)}))) > 0
            )
            SELECT immunization_ref, patient_ref, occurred,
                   coalesce(substr(occurred, 1, 4), 'cumulus__none') AS year,
                   coalesce(nullif(substr(occurred, 6, 2), ''), 'cumulus__none') AS month,
                   coalesce(CASE WHEN age >= 90 THEN '90+' WHEN age IS NOT NULL
                                 THEN CAST(age // 10 * 10 AS VARCHAR) || '-' || CAST(age // 10 * 10 + 9 AS VARCHAR) END,
                            'cumulus__none') AS age_band,
                   coalesce(sex, 'cumulus__none') AS sex,
                   coalesce(json_extract_string(cvx[1], '$.code'), 'cumulus__none') AS vaccine_code
            FROM joined
        """)

    def expected_cube(self, counted, strata):
        cols = ", ".join(strata)
        return self.db.execute(f"""
            SELECT count(DISTINCT {counted}) AS cnt, {cols} FROM vaccination
            GROUP BY CUBE ({cols}) HAVING count(DISTINCT {counted}) >= 10
            ORDER BY ALL DESC NULLS FIRST
        """).fetchall()

    def table(self, name):
        return next(t for t in self.shape["tables"] if t["name"] == name)

    def path(self, name):
        return os.path.join(self.folder, f"{name}.{self.table(name)['kind']}")

    def read_csv_typed(self, name):
        types = {c["name"]: c["type"] for c in self.table(name)["columns"]}
        return self.db.execute(
            f"SELECT * FROM read_csv(?, header = true, columns = {types!r}, nullstr = '')", [self.path(name) + ".csv"]
        ).fetchall()

    def test_cubes_equal_an_independent_duckdb_computation(self):
        for name, counted, strata in [
            ("flu__count_vaccinated", "patient_ref", ["year", "month", "age_band", "sex", "vaccine_code"]),
            ("flu__count_doses", "immunization_ref", ["year", "month", "vaccine_code"]),
        ]:
            with self.subTest(name):
                want = self.expected_cube(counted, strata)
                self.assertGreater(len(want), 20, "the sample has enough flu vaccinations for a real cube")
                self.assertEqual([c["name"] for c in self.table(name)["columns"]], ["cnt", *strata])
                from_parquet = self.db.execute("SELECT * FROM read_parquet(?)", [self.path(name) + ".parquet"]).fetchall()
                self.assertEqual(from_parquet, want)
                self.assertEqual(self.read_csv_typed(name), want)

    def test_no_exported_cell_is_under_the_minimum(self):
        for t in self.shape["tables"]:
            if t["kind"] == "cube":
                rows = pyarrow.parquet.read_table(self.path(t["name"]) + ".parquet").to_pylist()
                self.assertTrue(rows)
                self.assertGreaterEqual(min(r["cnt"] for r in rows), t["min_cell"])

    def test_files_have_the_declared_types(self):
        for t in self.shape["tables"]:
            with self.subTest(t["name"]):
                declared = [(c["name"], c["type"]) for c in t["columns"]]
                # What docs/studies.md promises, so that a change of types shows
                # here even if `show` and the files changed together.
                promised = {"cube": lambda n: "BIGINT" if n == "cnt" else "VARCHAR",
                            "meta": {"min_date": "DATE", "max_date": "DATE", "data_package_version": "INTEGER"}.get}
                self.assertEqual(declared, [(n, promised[t["kind"]](n)) for n, _ in declared])
                parquet = self.path(t["name"]) + ".parquet"
                described = self.db.execute("DESCRIBE SELECT * FROM read_parquet(?)", [parquet]).fetchall()
                self.assertEqual([(r[0], r[1]) for r in described], declared)
                schema = pyarrow.parquet.read_schema(parquet)
                self.assertEqual([(f.name, str(f.type)) for f in schema], [(n, ARROW_TYPES[ty]) for n, ty in declared])
                # The CSV parses with the declared types and says the same.
                self.assertEqual(self.read_csv_typed(t["name"]), self.db.execute("SELECT * FROM read_parquet(?)", [parquet]).fetchall())
                options = pyarrow.csv.ConvertOptions(column_types={n: ARROW_TYPES[ty] for n, ty in declared}, strings_can_be_null=True)
                from_csv = pyarrow.csv.read_csv(self.path(t["name"]) + ".csv", convert_options=options)
                self.assertEqual(from_csv.to_pylist(), pyarrow.parquet.read_table(parquet).to_pylist())

    def test_meta_tables(self):
        version = pyarrow.parquet.read_table(self.path("flu__meta_version") + ".parquet").to_pylist()
        self.assertEqual(version, [{"data_package_version": self.shape["data_package_version"]}])
        got = self.db.execute("SELECT * FROM read_parquet(?)", [self.path("flu__meta_date") + ".parquet"]).fetchall()
        # A date given only to the year (Safe Harbor's) spans that year.
        want = self.db.execute(
            "SELECT CAST(min(CASE WHEN length(occurred) = 4 THEN occurred || '-01-01' ELSE substr(occurred, 1, 10) END) AS DATE), "
            "least(CAST(max(CASE WHEN length(occurred) = 4 THEN occurred || '-12-31' ELSE substr(occurred, 1, 10) END) AS DATE), current_date) "
            "FROM vaccination"
        ).fetchall()
        self.assertEqual(got, want)

    def test_the_zip_holds_the_parquet_files_and_the_manifest(self):
        with zipfile.ZipFile(os.path.join(self.folder, "flu.zip")) as z:
            members = sorted(z.namelist())
            self.assertEqual(members, sorted([f"{t['name']}.{t['kind']}.parquet" for t in self.shape["tables"]] + ["manifest.toml"]))
            for m in members:
                with open(os.path.join(self.folder, m), "rb") as f:
                    self.assertEqual(z.read(m), f.read(), m)


if __name__ == "__main__":
    unittest.main()

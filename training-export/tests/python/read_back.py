"""Reads an export back the way its consumers do and prints what they see as JSON.

    python read_back.py interactions.csv interactions.parquet

pandas (every column as text, no NA guessing) and Python's csv module read the CSV;
pyarrow reads the Parquet. The Rust test compares all three with what it wrote.
"""
import csv
import json
import sys

import pandas as pd
import pyarrow.parquet as pq

csv_path, parquet_path = sys.argv[1], sys.argv[2]

frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8")
with open(csv_path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
table = pq.read_table(parquet_path)

print(json.dumps({
    "pandas_header": list(frame.columns),
    "pandas": frame.values.tolist(),
    "csv_header": rows[0],
    "csv": rows[1:],
    "parquet_schema": [[f.name, str(f.type), f.nullable] for f in table.schema],
    "parquet": [list(r.values()) for r in table.to_pylist()],
    "parquet_compression": sorted({
        table_rg.column(c).compression
        for table_rg in (pq.ParquetFile(parquet_path).metadata.row_group(i)
                         for i in range(pq.ParquetFile(parquet_path).metadata.num_row_groups))
        for c in range(table_rg.num_columns)
    }),
}, ensure_ascii=False))

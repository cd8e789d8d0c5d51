"""The pandas + pyarrow side of scripts/bench-export: the same conversion as
the `bench_export` example's `convert` (raw interactions CSV -> Personalize CSV + zstd Parquet),
timed the same way, peak RSS from getrusage. Prints one JSON line.

    python bench_export_pandas.py raw.csv out_dir
"""
import json
import os
import resource
import sys
import time

import pandas as pd

source, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
started = time.perf_counter()
frame = pd.read_csv(
    source,
    dtype={"event_id": str, "user_id": str, "item_id": str, "timestamp": "int64", "event_type": str,
           "event_value": "float32"},
    keep_default_na=False,
    na_values={"event_value": [""]},
)
personalize = frame.rename(columns={
    "user_id": "USER_ID", "item_id": "ITEM_ID", "timestamp": "TIMESTAMP",
    "event_type": "EVENT_TYPE", "event_value": "EVENT_VALUE",
})[["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE", "EVENT_VALUE"]]
personalize.to_csv(os.path.join(out, "interactions.csv"), index=False)
personalize.to_parquet(os.path.join(out, "interactions.parquet"), engine="pyarrow", compression="zstd",
                       index=False)
elapsed = time.perf_counter() - started
rows = len(personalize)
print(json.dumps({
    "rows": rows,
    "seconds": elapsed,
    "rowsPerSecond": rows / elapsed,
    "peakRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "csvBytes": os.path.getsize(os.path.join(out, "interactions.csv")),
    "parquetBytes": os.path.getsize(os.path.join(out, "interactions.parquet")),
}))

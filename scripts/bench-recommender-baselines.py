"""Baselines for scripts/bench-recommender, on the split our `evaluate --dump-split` wrote.

    baselines SPLIT_DIR SEED   -> one JSON line per baseline (implicit ALS, numpy EASE, textbook ItemKNN)
    table PROTOCOL OURS.jsonl[,OURS2.jsonl...] THEIRS.jsonl[,...] [PROTOCOL OURS THEIRS ...]
        -> one comparison table, a row group per protocol, with our ratios to the baselines of
           the same protocol

Metrics follow the same protocol as `recommender evaluate`: full ranking over the training
items, the user's training items excluded, binary relevance, averaged over users with a test
item; test items never seen in training count as misses.
"""

import csv
import json
import sys
import time

import numpy as np
import scipy.sparse as sp


def load_split(split_dir):
    users, items = {}, {}
    rows, cols = [], []
    with open(f"{split_dir}/train.csv") as f:
        for r in csv.DictReader(f):
            u = users.setdefault(r["USER_ID"], len(users))
            i = items.setdefault(r["ITEM_ID"], len(items))
            rows.append(u)
            cols.append(i)
    x = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(users), len(items)))
    x.sum_duplicates()
    x.data[:] = 1.0
    test = {}
    with open(f"{split_dir}/test.csv") as f:
        for r in csv.DictReader(f):
            test.setdefault(r["USER_ID"], []).append(r["ITEM_ID"])
    return users, items, x, test


def evaluate(name, score_rows, users, items, x, test, fit_seconds, k=10):
    """score_rows(user_indices) -> dense scores (len(user_indices) x items)."""
    disc = 1.0 / np.log2(np.arange(2, 2 * k + 2))
    test_users = [u for u in test if u in users]
    sums = dict(recall_k=0.0, recall_2k=0.0, ndcg=0.0, precision=0.0)
    for start in range(0, len(test_users), 512):
        batch = test_users[start : start + 512]
        idx = np.array([users[u] for u in batch])
        scores = np.asarray(score_rows(idx), dtype=np.float64)
        seen = x[idx]
        scores[seen.nonzero()] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, : 2 * k]
        for row, u in enumerate(batch):
            relevant = {items[i] for i in test[u] if i in items}
            hits = np.array([t in relevant for t in top[row]])
            n_rel = len(test[u])
            sums["recall_k"] += hits[:k].sum() / n_rel
            sums["recall_2k"] += hits.sum() / n_rel
            sums["precision"] += hits[:k].sum() / k
            sums["ndcg"] += (hits[:k] * disc[:k]).sum() / disc[: min(k, n_rel)].sum()
    n = len(test) or 1
    return {
        "model": name,
        f"recall@{k}": sums["recall_k"] / n,
        f"recall@{2 * k}": sums["recall_2k"] / n,
        f"ndcg@{k}": sums["ndcg"] / n,
        f"precision@{k}": sums["precision"] / n,
        "fit_seconds": fit_seconds,
        "users": len(test),
    }


def baselines(split_dir, seed):
    users, items, x, test = load_split(split_dir)

    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_info

    als = AlternatingLeastSquares(factors=64, regularization=20, alpha=2, iterations=15, random_state=seed)
    t = time.perf_counter()
    als.fit(x, show_progress=False)
    fit = time.perf_counter() - t
    print(json.dumps(evaluate("implicit-als", lambda idx: als.user_factors[idx] @ als.item_factors.T,
                              users, items, x, test, fit)))

    t = time.perf_counter()
    xd = x.toarray().astype(np.float64)
    g = xd.T @ xd
    g[np.diag_indices_from(g)] += 500.0
    p = np.linalg.inv(g)
    b = p / (-np.diag(p))
    b[np.diag_indices_from(b)] = 0.0
    fit = time.perf_counter() - t
    print(json.dumps(evaluate("numpy-ease", lambda idx: xd[idx] @ b, users, items, x, test, fit)))

    # The textbook ItemKNN (as in Ferrari Dacrema et al. 2019 and RecBole): cosine between item
    # columns shrunk by 10, each candidate item keeping its 100 most similar items, a user's score
    # the sum of those similarities over their history.
    t = time.perf_counter()
    gram = xd.T @ xd
    norms = np.sqrt(np.diag(gram))
    sim = gram / (np.outer(norms, norms) + 10.0)
    np.fill_diagonal(sim, 0.0)
    knn = np.zeros_like(sim)
    top = np.argsort(-sim, axis=0, kind="stable")[:100]
    cols = np.arange(sim.shape[1])[None, :]
    knn[top, cols] = sim[top, cols]
    fit = time.perf_counter() - t
    print(json.dumps(evaluate("numpy-itemknn (k 100, shrink 10)", lambda idx: xd[idx] @ knn, users, items, x, test, fit)))

    t = time.perf_counter()
    pop = np.asarray(x.sum(axis=0)).ravel()
    fit = time.perf_counter() - t
    print(json.dumps(evaluate("numpy-mostpop", lambda idx: np.tile(pop, (len(idx), 1)), users, items, x, test, fit)))

    blas = [(i.get("internal_api"), i.get("num_threads"), i.get("architecture")) for i in threadpool_info()]
    print(f"BLAS: {blas}", file=sys.stderr)


def median_fits(paths):
    """Rows of the first run, with fit_seconds replaced by the median over all runs (fits vary with
    machine load; quality figures are seeded and identical run to run)."""
    runs = [[json.loads(l) for l in open(p) if l.strip()] for p in paths]
    rows = runs[0]
    for i, row in enumerate(rows):
        if "skipped" in row:  # over the memory budget: no figures
            continue
        fits = sorted(run[i]["fit_seconds"] for run in runs)
        row["fit_seconds"] = fits[len(fits) // 2]
        row["fit_range"] = (fits[0], fits[-1])
    return rows


def table(groups):
    """groups: [(protocol, ours_paths, theirs_paths)]; ratios compare rows of one protocol only."""
    runs = len(groups[0][1])
    header = (f"| {'protocol':<8} | {'model':<32} | {'NDCG@10':>8} | {'Recall@20':>9} "
              f"| {'fit s (median of ' + str(runs) + ')':>20} "
              f"| {'NDCG vs ALS':>11} | {'NDCG vs EASE':>12} | {'NDCG vs kNN':>11} | {'fit vs ALS':>10} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for protocol, ours_paths, theirs_paths in groups:
        ours = median_fits(ours_paths)
        theirs = {r["model"]: r for r in median_fits(theirs_paths)}
        rows = [(r["model"] + (f" ({r['chosen']})" if r.get("chosen") else ""), r, "ours") for r in ours]
        rows += [(name, r, "baseline") for name, r in theirs.items()]
        als, ease = theirs.get("implicit-als"), theirs.get("numpy-ease")
        knn = next((r for name, r in theirs.items() if name.startswith("numpy-itemknn")), None)
        for name, r, kind in rows:
            if "skipped" in r:
                print(f"| {protocol:<8} | {name:<32} | skipped: {r['skipped']}")
                continue
            ratio = lambda a, b: f"{a / b:.3f}" if b else "-"
            ours_row = kind == "ours"
            vs_als = ratio(r["ndcg@10"], als["ndcg@10"]) if als and ours_row else ""
            vs_ease = ratio(r["ndcg@10"], ease["ndcg@10"]) if ease and ours_row else ""
            vs_knn = ratio(r["ndcg@10"], knn["ndcg@10"]) if knn and ours_row and r["model"] == "item-knn" else ""
            fit_vs = ratio(r["fit_seconds"], als["fit_seconds"]) if als and ours_row else ""
            lo, hi = r["fit_range"]
            fit = f"{r['fit_seconds']:.2f} ({lo:.2f}-{hi:.2f})"
            print(f"| {protocol:<8} | {name:<32} | {r['ndcg@10']:>8.4f} | {r['recall@20']:>9.4f} | {fit:>20} "
                  f"| {vs_als:>11} | {vs_ease:>12} | {vs_knn:>11} | {fit_vs:>10} |")


if __name__ == "__main__":
    if sys.argv[1] == "baselines":
        baselines(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "table" and len(sys.argv) >= 5 and (len(sys.argv) - 2) % 3 == 0:
        args = sys.argv[2:]
        table([(args[i], args[i + 1].split(","), args[i + 2].split(",")) for i in range(0, len(args), 3)])
    else:
        sys.exit(__doc__)

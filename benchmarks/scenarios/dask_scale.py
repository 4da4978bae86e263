"""Scale-out on Dask: fits and a larger-than-memory loss on a LocalCluster.

The report's ``--dask`` section. Three measurements on a
``distributed.LocalCluster`` of ``--dask-workers`` processes (one thread
each, 127.0.0.1, no dashboard), each against the same work done in memory in
this process (Numba and BLAS on the report's ``--threads`` threads):

- **binary fit**: ``make_classification(n_samples, 100 features, 60
  informative)``, 75/25 split, the training rows in ``--dask-chunks`` row
  chunks persisted on the workers; ``CrossEntropyClassifier`` on the dask
  arrays, the same estimator in memory, and dask-ml's
  ``LogisticRegression(solver="lbfgs")`` (if installed) on the same chunks,
  with test accuracy;
- **multinomial fit**: the same with 50 classes (dask-ml has no
  multinomial solver);
- **loss over larger-than-memory logits**: ``--dask-loss-gib`` GiB of
  float32 logits generated chunk by chunk from a seed (``da.random``), on
  workers limited to ``--dask-memory-limit`` each, reduced by ``numxent.cross_entropy``
  ("mean", hard labels); against generating one chunk in memory with the
  same generator plus the in-memory call, per element. The workers' process
  ids before and after show whether any was restarted.

::

    python benchmarks/report.py --ops none --dask                     # full size
    python benchmarks/report.py --ops none --dask --quick             # 20,000, 0.25 GiB

Numba's compilation is kept out of the timings by a small warm-up fit on the
cluster and in memory.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from ._section import Section

__all__ = ["SECTION", "markdown", "run", "run_dask", "summary"]

OPTIONS = {
    "n_samples": (200_000, "samples of the fits (a quarter held out)"),
    "n_features": (100, "features of the fits"),
    "chunks": (8, "row chunks of the fits' training rows"),
    "multinomial_classes": (50, "classes of the multinomial fit"),
    "loss_gib": (4.0, "GiB of float32 logits the loss reduces"),
    "loss_classes": (1000, "classes of the loss's logits"),
    "workers": (2, "worker processes"),
    "memory_limit": ("1GiB", "memory limit of each worker"),
    "repeat": (3, "timed loss runs (the best is reported)"),
    "tasks": ("binary,multinomial,loss", "comma list of binary, multinomial, loss"),
}
QUICK = {"n_samples": 20_000, "loss_gib": 0.25}


def _cluster(n_workers: int, memory_limit: str):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=memory_limit,
    )
    return cluster, Client(cluster)


def _problem(n_samples, n_features, n_classes, seed):
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=min(60, n_features - 2),
        n_classes=n_classes,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return train_test_split(X, y, test_size=0.25, random_state=seed)


def _timed_fit(est, X, y, X_test, y_test):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(X, y)
        seconds = time.perf_counter() - t0
    pred = est.predict(X_test)
    if hasattr(pred, "compute"):
        pred = pred.compute()
    return {
        "fit_s": seconds,
        "n_iter": (  # dask-ml's LogisticRegression does not report it
            int(np.max(est.n_iter_)) if hasattr(est, "n_iter_") else None
        ),
        "converged": not any(
            issubclass(w.category, ConvergenceWarning) for w in caught
        ),
        "test_accuracy": float(np.mean(np.asarray(pred) == y_test)),
    }


def _fits(client, task, n_samples, n_features, n_classes, n_chunks, threads, seed,
          C, tol, max_iter, on_step):  # fmt: skip
    import dask.array as da
    import numba
    from threadpoolctl import threadpool_limits

    from numxent.sklearn import CrossEntropyClassifier

    X_train, X_test, y_train, y_test = _problem(n_samples, n_features, n_classes,
                                                seed)  # fmt: skip
    rows_per = -(-X_train.shape[0] // n_chunks)
    Xd = da.from_array(X_train, chunks=(rows_per, n_features)).persist()
    yd = da.from_array(y_train, chunks=rows_per).persist()
    Xt = da.from_array(X_test, chunks=(rows_per, n_features))
    params = dict(C=C, tol=tol, max_iter=max_iter)
    base = {"task": task, "n_samples": n_samples, "n_features": n_features,
            "n_classes": n_classes, "chunks": n_chunks}  # fmt: skip
    rows = []

    # in memory, on this process's threads
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            est = CrossEntropyClassifier(n_threads=threads, **params)
            r = _timed_fit(est, X_train, y_train, X_test, y_test)
        rows.append({**base, "model": "numxent in memory", **r})
        coef_mem = est.coef_
        if on_step:
            on_step(f"{task} in memory")
    finally:
        numba.set_num_threads(before)

    est = CrossEntropyClassifier(**params)
    r = _timed_fit(est, Xd, yd, Xt, y_test)
    r["coef_rel_diff"] = float(
        np.max(np.abs(est.coef_ - coef_mem)) / np.max(np.abs(coef_mem))
    )
    rows.append({**base, "model": "numxent on dask", **r})
    if on_step:
        on_step(f"{task} numxent on dask")

    if n_classes == 2:
        try:
            from dask_ml.linear_model import LogisticRegression
        except ImportError:
            rows.append({**base, "model": "dask-ml lbfgs", "skipped":
                         "dask-ml is not installed"})  # fmt: skip
        else:
            est = LogisticRegression(solver="lbfgs", C=C, tol=tol, max_iter=max_iter)
            r = _timed_fit(est, Xd, yd, Xt, y_test)
            rows.append({**base, "model": "dask-ml lbfgs", **r})
            if on_step:
                on_step(f"{task} dask-ml")
    del Xd, yd
    return rows


def _pids(client) -> dict:
    return client.run(os.getpid)


def _loss(client, loss_gib, n_classes, rows_per_chunk, threads, seed, repeat,
          memory_limit):  # fmt: skip
    import dask.array as da
    import numba

    import numxent as nx

    n_rows = int(loss_gib * 2**30 / 4 / n_classes)
    n_rows -= n_rows % rows_per_chunk
    n_rows = max(n_rows, rows_per_chunk)
    shape = (n_rows, n_classes)
    chunks = (rows_per_chunk, n_classes)

    def lazy():
        x = da.random.default_rng(seed).random(shape, dtype=np.float32, chunks=chunks)
        y = da.random.default_rng(seed + 1).integers(
            0, n_classes, n_rows, chunks=rows_per_chunk
        )
        return nx.cross_entropy(x, y)

    pids = _pids(client)
    lazy().compute()  # warm-up: compiles on the workers
    dask_s = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = float(lazy().compute())
        dask_s.append(time.perf_counter() - t0)
    restarted = sorted(set(pids.items()) ^ set(_pids(client).items()))

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, n_classes, rows_per_chunk)
        nx.cross_entropy(rng.random(chunks, dtype=np.float32), labels)
        gen_s, loss_s = [], []
        for _ in range(max(3, repeat)):
            t0 = time.perf_counter()
            block = np.random.default_rng(seed).random(chunks, dtype=np.float32)
            t1 = time.perf_counter()
            nx.cross_entropy(block, labels)
            t2 = time.perf_counter()
            gen_s.append(t1 - t0)
            loss_s.append(t2 - t1)
    finally:
        numba.set_num_threads(before)
    per_block = rows_per_chunk * n_classes
    elements = n_rows * n_classes
    return [{
        "task": "loss", "model": "numxent on dask", "n_rows": n_rows,
        "n_classes": n_classes, "chunks": n_rows // rows_per_chunk,
        "gib": elements * 4 / 2**30, "memory_limit": memory_limit,
        "seconds": min(dask_s), "ns_per_element": min(dask_s) / elements * 1e9,
        "loss": value, "workers_restarted": len(restarted) // 2,
    }, {
        "task": "loss", "model": "numxent in memory", "n_rows": rows_per_chunk,
        "n_classes": n_classes,
        "ns_per_element": (min(gen_s) + min(loss_s)) / per_block * 1e9,
        "loss_only_ns_per_element": min(loss_s) / per_block * 1e9,
        "generate_ns_per_element": min(gen_s) / per_block * 1e9,
    }]  # fmt: skip


def run_dask(
    n_samples=200_000,
    n_features=100,
    n_chunks=8,
    multinomial_classes=50,
    loss_gib=4.0,
    loss_classes=1000,
    loss_chunk_rows=16_384,
    workers=2,
    memory_limit="1GiB",
    threads=None,
    seed=0,
    C=1.0,
    tol=1e-4,
    max_iter=1000,
    repeat=3,
    tasks=("binary", "multinomial", "loss"),
    on_step=None,
) -> list[dict]:
    """Run the section's measurements on a fresh LocalCluster; one row per
    model and task. ``threads``: the in-memory peers' Numba and BLAS threads
    (default: Numba's count)."""
    import numba

    from numxent.sklearn import CrossEntropyClassifier

    threads = threads or numba.get_num_threads()
    cluster, client = _cluster(workers, memory_limit)
    rows: list[dict] = []
    try:
        import dask.array as da
        from sklearn.datasets import make_classification

        # compile the kernels on the workers and here, outside the timings
        Xw, yw = make_classification(2000, 20, n_informative=5, n_classes=3,
                                     random_state=0)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for y_w in (yw, (yw > 0).astype(int)):
                Xd = da.from_array(Xw, chunks=(500, 20))
                CrossEntropyClassifier(max_iter=5).fit(Xd, y_w)
                CrossEntropyClassifier(max_iter=5).fit(Xw, y_w)
        for task, n_classes in (("binary", 2), ("multinomial", multinomial_classes)):
            if task in tasks:
                rows += _fits(client, task, n_samples, n_features, n_classes,
                              n_chunks, threads, seed, C, tol, max_iter,
                              on_step)  # fmt: skip
        if "loss" in tasks:
            rows += _loss(client, loss_gib, loss_classes, loss_chunk_rows,
                          threads, seed, repeat, memory_limit)  # fmt: skip
            if on_step:
                on_step("loss")
    finally:
        client.close()
        cluster.close()
    for r in rows:
        r.update(workers=workers, threads=threads)
    return rows


def run(opts: dict, threads: int, on_step=lambda message: None) -> dict:
    """:func:`run_dask` with the section's options."""
    o = dict(opts)
    o["n_chunks"] = o.pop("chunks")
    o["tasks"] = tuple(o["tasks"].split(","))
    return {"rows": run_dask(threads=threads, on_step=on_step, **o)}


def _by(rows, task):
    return {r["model"]: r for r in rows if r["task"] == task and "skipped" not in r}


def summary(result: dict) -> list[str]:
    """One line per task: the ratios the section is about."""
    rows, out = result["rows"], []
    for task in ("binary", "multinomial"):
        by = _by(rows, task)
        d, m = by.get("numxent on dask"), by.get("numxent in memory")
        if not (d and m):
            continue
        line = (
            f"{task} fit: dask {d['fit_s']:.2f} s = {d['fit_s'] / m['fit_s']:.2f}× "
            f"the in-memory fit ({m['fit_s']:.2f} s); coefficients within "
            f"{d['coef_rel_diff']:.1e} relative; test accuracy "
            f"{d['test_accuracy']:.4f} vs {m['test_accuracy']:.4f}"
        )
        k = by.get("dask-ml lbfgs")
        if k:
            line += (
                f"; {k['fit_s'] / d['fit_s']:.2f}× faster than dask-ml lbfgs "
                f"({k['fit_s']:.2f} s, accuracy {k['test_accuracy']:.4f})"
            )
        out.append(line)
    by = _by(rows, "loss")
    d, m = by.get("numxent on dask"), by.get("numxent in memory")
    if d and m:
        out.append(
            f"loss over {d['gib']:.2f} GiB of logits (workers limited to "
            f"{d['memory_limit']}): {d['ns_per_element']:.2f} ns/element = "
            f"{d['ns_per_element'] / m['ns_per_element']:.2f}× in memory "
            f"(generate + loss, {m['ns_per_element']:.2f} ns/element); "
            f"{d['workers_restarted']} worker(s) restarted"
        )
    return out


def markdown(result: dict) -> str:
    """The rows as Markdown tables plus the summary lines."""
    from numxent.bench._report import table

    rows = result["rows"]
    fit_rows = [r for r in rows if r["task"] != "loss"]
    out = []
    if fit_rows:
        r0 = fit_rows[0]
        out += [
            f"`make_classification({r0['n_samples']:,}, {r0['n_features']} "
            f"features, 60 informative)`, 75/25 split, C=1, tol=1e-4; dask: the "
            f"training rows in {r0['chunks']} chunks persisted on a LocalCluster "
            f"of {r0['workers']} worker processes × 1 thread; in memory: "
            f"{r0['threads']} thread(s).",
            "",
        ]
        cells = [
            [r["task"], str(r["n_classes"]), r["model"],
             f"{r['fit_s']:.2f}" if "fit_s" in r else r.get("skipped", "—"),
             "—" if r.get("n_iter") is None else str(r["n_iter"]),
             f"{r['test_accuracy']:.4f}" if "test_accuracy" in r else "—"]
            for r in fit_rows
        ]  # fmt: skip
        out += [table(["task", "classes", "model", "fit s", "iterations",
                       "test accuracy"], cells, "lrlrrr"), ""]  # fmt: skip
    loss = _by(rows, "loss")
    d, m = loss.get("numxent on dask"), loss.get("numxent in memory")
    if d and m:
        cells = [
            ["numxent on dask", f"{d['n_rows']:,} × {d['n_classes']:,} "
             f"({d['gib']:.2f} GiB, {d['chunks']} chunks)",
             f"{d['seconds']:.2f}", f"{d['ns_per_element']:.2f}"],
            ["numxent in memory", f"{m['n_rows']:,} × {m['n_classes']:,} "
             "(one chunk)", "—", f"{m['ns_per_element']:.2f} "
             f"({m['generate_ns_per_element']:.2f} generate + "
             f"{m['loss_only_ns_per_element']:.2f} loss)"],
        ]  # fmt: skip
        out += [
            "`cross_entropy` (mean, hard labels) over float32 logits generated "
            "chunk by chunk (`da.random.default_rng(seed).random`), workers "
            f"limited to {d['memory_limit']} each; in memory: the same "
            "generator and call on one chunk.",
            "",
            table(["", "logits", "s (best)", "ns / element"], cells, "llrr"),
            "",
        ]
    out += [f"- {line}" for line in summary(result)]
    return "\n".join(out) + "\n"


SECTION = Section(
    key="dask_scale",
    flag="dask",
    help="fits and a larger-than-memory loss on a 2-worker dask LocalCluster "
    "(needs dask, distributed, scikit-learn; dask-ml as a peer)",
    title="Scale-out on Dask",
    intro="`CrossEntropyClassifier` on dask arrays on a `distributed.LocalCluster` "
    "(worker processes, one thread each) against the same estimator in memory "
    'and dask-ml\'s `LogisticRegression(solver="lbfgs")`, and `cross_entropy` '
    "over logits larger than the workers' memory limit; one timed run each after "
    "a warm-up (the loss: best of the repeats).",
    run=run,
    markdown=markdown,
    summary=summary,
    options=OPTIONS,
    quick=QUICK,
    requires=("distributed", "sklearn"),
    steps=lambda opts: 6,
)

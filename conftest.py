"""Root pytest configuration: doctests of optional bridges need their extras."""

import importlib.util

collect_ignore = [
    path
    for path, module in (
        ("src/numxent/torch.py", "torch"),
        ("src/numxent/sklearn.py", "sklearn"),
        ("src/numxent/bench/_torch_worker.py", "torch"),
        ("src/numxent/bench/sklearn_fit.py", "sklearn"),
    )
    if importlib.util.find_spec(module) is None
]

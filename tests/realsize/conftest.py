"""The realsize test runs only when asked for by name (`-m realsize`): a `-m` given for another reason (e.g.
`-m "not slow"`) replaces addopts' `-m 'not realsize'`, and would otherwise start a 6-minute, 8 GiB run."""


def pytest_collection_modifyitems(config, items):
    if "realsize" in (config.getoption("markexpr") or ""):
        return
    chosen = [item for item in items if item.get_closest_marker("realsize") is None]
    if len(chosen) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
        items[:] = chosen

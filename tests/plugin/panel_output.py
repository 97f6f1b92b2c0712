"""What a rendered Face Quality panel shows: the traces each of its plots carries in its view."""


def _plot_data(prop):
    view = prop.get("view") or {}
    return view.get("data") if view.get("name") == "PlotlyView" else None


def plots_of(output: dict) -> dict:
    """``{"histogram": [...], "maps": {"dense": [...], "pruned": [...]}, "edc": [...]}`` from a
    ``show_panel_output`` output; a plot the layout does not hold is absent."""
    plots = {}
    for name, prop in ((output.get("type") or {}).get("properties") or {}).items():
        data = _plot_data(prop)
        if data is not None:
            plots[name] = data
            continue
        inner = {k: _plot_data(p) for k, p in ((prop.get("type") or {}).get("properties") or {}).items()}
        inner = {k: v for k, v in inner.items() if v is not None}
        if inner:
            plots[name] = inner
    return plots


def shown_plots(requests) -> dict:
    """The plots of the last output among ``requests`` (an executor's requests), or {}."""
    outputs = [r.params["output"] for r in requests if r.operator_uri == "show_panel_output"]
    return plots_of(outputs[-1]) if outputs else {}
